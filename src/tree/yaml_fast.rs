//! A fast reader for canonical YAML: the exact subset [`super::yaml`] writes, read in one pass
//! straight into a `serde_json::Value`, ~10× faster than the general parser. Reading a
//! snapshot's tree for a restore is dominated by parsing (docs/decisions.md).
//!
//! Owns: recognising canonical documents only. It returns `None` for anything it is not sure
//! to read exactly as serde-saphyr does (flow style, comments, anchors, tags, floats, other
//! indentation, duplicate keys, very deep or large documents, ...), and
//! [`from_yaml`](super::from_yaml) then uses the general parser, which also produces every
//! error message. Must not touch: emitting, or which fields an object has.
//!
//! The grammar accepted: a root block mapping; mappings of `key: scalar`, `key:` followed by a
//! mapping indented by two or a sequence at the key's column; sequence items `- scalar`,
//! `- key: ...` (a mapping continuing at the item's column + 2) or `- - ...`. Keys are plain
//! (as the emitter's `plain_ok` allows) or double-quoted; scalars are `null`, `true`,
//! `false`, integers, `[]`, `{}`, plain strings (`plain_ok`), single-line double-quoted
//! strings with the emitter's escapes, and literal blocks `|`, `|-`, `|+` indented by two.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use super::yaml::{is_special_char, plain_ok};

/// Deeper documents go to the general parser (whose default limit is 64 levels).
const MAX_DEPTH: usize = 40;
/// Documents with more nodes go to the general parser (default limit 250,000).
const MAX_NODES: usize = 100_000;
/// Larger documents go to the general parser (default limits: 64 MiB of scalars).
const MAX_BYTES: usize = 16 << 20;

/// Reads a canonical YAML document; `None` when it is not one (then nothing is claimed about
/// it: the general parser decides).
pub(super) fn parse(s: &str) -> Option<Value> {
    let mut sink = ValueSink::default();
    read(s, &mut sink)?;
    sink.root
}

/// Writes a canonical YAML document as compact JSON text into `out` (exactly what
/// `serde_json::to_writer` writes of [`parse`]'s value), without building the value; `None`
/// (and `out` left partly written) when it is not one, or when its keys are not in the order
/// the emitter writes them (the value's, which JSON text must follow).
pub(super) fn to_json(s: &str, out: &mut Vec<u8>) -> Option<()> {
    let mut sink = JsonSink {
        out,
        frames: Vec::new(),
        depth: 0,
        root: Vec::new(),
    };
    read(s, &mut sink)
}

/// The identity fields of a YAML document whose head is canonical: exactly what [`parse`]'s
/// value (or the general parser's) holds at `apiVersion`, `kind`, `metadata.name` and
/// `metadata.namespace` (strings only), read without building the value and without reading
/// past the root entries that hold them (the rest is left to whoever parses the document: if
/// the parser refuses it, nobody reads an identity from it). `None` when the head is not
/// canonical (the general parser decides).
pub(super) fn identity(s: &str) -> Option<super::identity::Identity> {
    let mut sink = IdentitySink::default();
    read(s, &mut sink)?;
    Some(sink.id)
}

/// Keeps the identity fields only. A duplicate of one of those keys refuses the document, as
/// the value path does; other duplicates make the value path refuse it too, so no identity
/// read here ever differs from the value's.
#[derive(Default)]
struct IdentitySink {
    /// Open containers: `Some((kind of mapping, what its current key is))`, `None` for a
    /// sequence.
    stack: Vec<Option<(MapKind, Slot)>>,
    id: super::identity::Identity,
    /// Identity keys met so far: apiVersion, kind, metadata, name, namespace.
    met: [bool; 5],
}

#[derive(Clone, Copy, PartialEq)]
enum MapKind {
    Root,
    Metadata,
    Other,
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Ignored,
    ApiVersion,
    Kind,
    Metadata,
    Name,
    Namespace,
}

impl Sink for IdentitySink {
    fn begin_map(&mut self) {
        let kind = match self.stack.last() {
            None => MapKind::Root,
            Some(Some((MapKind::Root, Slot::Metadata))) => MapKind::Metadata,
            Some(_) => MapKind::Other,
        };
        self.stack.push(Some((kind, Slot::Ignored)));
    }

    fn key(&mut self, key: Cow<'_, str>) -> Option<()> {
        let Some(Some((kind, slot))) = self.stack.last_mut() else {
            return None;
        };
        let (next, flag) = match (*kind, key.as_ref()) {
            (MapKind::Root, "apiVersion") => (Slot::ApiVersion, 0),
            (MapKind::Root, "kind") => (Slot::Kind, 1),
            (MapKind::Root, "metadata") => (Slot::Metadata, 2),
            (MapKind::Metadata, "name") => (Slot::Name, 3),
            (MapKind::Metadata, "namespace") => (Slot::Namespace, 4),
            _ => {
                *slot = Slot::Ignored;
                return Some(());
            }
        };
        if std::mem::replace(&mut self.met[flag], true) {
            return None;
        }
        *slot = next;
        Some(())
    }

    fn end_map(&mut self) -> Option<()> {
        self.stack.pop();
        Some(())
    }

    fn begin_seq(&mut self) {
        self.stack.push(None);
    }

    fn end_seq(&mut self) {
        self.stack.pop();
    }

    fn scalar(&mut self, v: Scalar<'_>) {
        let Some(Some((_, slot))) = self.stack.last() else {
            return;
        };
        let Scalar::Str(text) = v else {
            return;
        };
        let field = match slot {
            Slot::ApiVersion => &mut self.id.api_version,
            Slot::Kind => &mut self.id.kind,
            Slot::Name => &mut self.id.name,
            Slot::Namespace => &mut self.id.namespace,
            Slot::Metadata | Slot::Ignored => return,
        };
        *field = Some(text.into_owned());
    }

    fn enough(&self) -> bool {
        // apiVersion, kind and the whole of metadata read: nothing after them can change what
        // the parser reads there. A later duplicate of one of those keys, or anything else the
        // parser refuses, makes it refuse the whole document, so a restore never reads another
        // identity from it than this one.
        self.met[..3].iter().all(|m| *m)
    }
}

fn read<S: Sink>(s: &str, sink: &mut S) -> Option<()> {
    if s.len() > MAX_BYTES || !s.ends_with('\n') {
        return None;
    }
    let mut r = Reader {
        s,
        b: s.as_bytes(),
        pos: 0,
        nodes: 0,
        sink,
        stopped: false,
    };
    if r.line_indent() != 0 || r.b.starts_with(b"- ") {
        return None;
    }
    r.map(0, 0)?;
    (r.stopped || r.pos == r.b.len()).then_some(())
}

/// A scalar as read.
enum Scalar<'a> {
    Null,
    Bool(bool),
    /// An integer: its value and its text (canonical: what serde_json prints of it).
    Int(Number, &'a str),
    Str(Cow<'a, str>),
    EmptySeq,
    EmptyMap,
}

/// Where the reader's nodes go, in document order.
trait Sink {
    fn begin_map(&mut self);
    /// A key of the innermost mapping; `None` refuses the document (a duplicate key).
    fn key(&mut self, key: Cow<'_, str>) -> Option<()>;
    /// The end of the innermost mapping; `None` refuses the document.
    fn end_map(&mut self) -> Option<()>;
    fn begin_seq(&mut self);
    fn end_seq(&mut self);
    fn scalar(&mut self, v: Scalar<'_>);
    /// Whether the root entries read so far are all the sink needs: the reader then stops at
    /// the next root key (see [`identity`]).
    fn enough(&self) -> bool {
        false
    }
}

/// Builds the `serde_json::Value`.
#[derive(Default)]
struct ValueSink {
    stack: Vec<Frame>,
    root: Option<Value>,
}

enum Frame {
    Map(Map<String, Value>, Option<String>),
    Seq(Vec<Value>),
}

impl ValueSink {
    fn put(&mut self, v: Value) {
        match self.stack.last_mut() {
            Some(Frame::Map(m, key)) => {
                if let Some(k) = key.take() {
                    m.insert(k, v);
                }
            }
            Some(Frame::Seq(items)) => items.push(v),
            None => self.root = Some(v),
        }
    }
}

impl Sink for ValueSink {
    fn begin_map(&mut self) {
        self.stack.push(Frame::Map(Map::new(), None));
    }

    fn key(&mut self, key: Cow<'_, str>) -> Option<()> {
        let Some(Frame::Map(m, pending)) = self.stack.last_mut() else {
            return None;
        };
        if m.contains_key(key.as_ref()) {
            return None; // duplicate keys are the general parser's error
        }
        *pending = Some(key.into_owned());
        Some(())
    }

    fn end_map(&mut self) -> Option<()> {
        if let Some(Frame::Map(m, _)) = self.stack.pop() {
            self.put(Value::Object(m));
        }
        Some(())
    }

    fn begin_seq(&mut self) {
        self.stack.push(Frame::Seq(Vec::new()));
    }

    fn end_seq(&mut self) {
        if let Some(Frame::Seq(items)) = self.stack.pop() {
            self.put(Value::Array(items));
        }
    }

    fn scalar(&mut self, v: Scalar<'_>) {
        self.put(match v {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(n, _) => Value::Number(n),
            Scalar::Str(s) => Value::String(s.into_owned()),
            Scalar::EmptySeq => Value::Array(Vec::new()),
            Scalar::EmptyMap => Value::Object(Map::new()),
        });
    }
}

/// Writes compact JSON text. The keys of a mapping must come in increasing order (the order
/// of a `serde_json::Map`, in which the value path would write them), any other refuses the
/// document, which then takes the value path; except at the root, whose first keys the
/// emitter writes first (`apiVersion`, `kind`, `metadata`): its entries are put in order when
/// it ends.
struct JsonSink<'o> {
    out: &'o mut Vec<u8>,
    /// Open containers; entries past `depth` are kept to reuse their key buffers.
    frames: Vec<JsonFrame>,
    depth: usize,
    /// The root mapping's keys, each with the offset of its entry (`"key":value`) in `out`.
    root: Vec<(String, usize)>,
}

#[derive(Default)]
struct JsonFrame {
    /// Nothing written in it yet.
    first: bool,
    /// A mapping (keys are checked), or a sequence.
    map: bool,
    /// The last key written (mappings).
    last_key: String,
}

impl JsonSink<'_> {
    /// Before a value: a comma between two items of a sequence (a mapping's value follows its
    /// key's colon).
    fn value_start(&mut self) {
        if let Some(f) = self
            .depth
            .checked_sub(1)
            .and_then(|d| self.frames.get_mut(d))
            && !f.map
        {
            if !f.first {
                self.out.push(b',');
            }
            f.first = false;
        }
    }

    fn open(&mut self, map: bool, bracket: u8) {
        self.value_start();
        self.out.push(bracket);
        if self.frames.len() == self.depth {
            self.frames.push(JsonFrame::default());
        }
        if let Some(f) = self.frames.get_mut(self.depth) {
            f.first = true;
            f.map = map;
            f.last_key.clear();
        }
        self.depth += 1;
    }

    fn close(&mut self, bracket: u8) {
        self.depth = self.depth.saturating_sub(1);
        self.out.push(bracket);
    }

    fn string(&mut self, s: &str) {
        json_string(self.out, s);
    }

    /// [`Self::string`] of a plain scalar or key, which has no control characters: only
    /// quotes and backslashes would need escaping.
    fn plain_string(&mut self, s: &str) {
        if memchr::memchr2(b'"', b'\\', s.as_bytes()).is_some() {
            return self.string(s);
        }
        self.out.push(b'"');
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(b'"');
    }

    /// Puts the root mapping's entries (all of `out` after its `{`) in key order.
    fn sort_root(&mut self) {
        if self.root.is_sorted_by(|a, b| a.0 < b.0) {
            return;
        }
        let ends: Vec<usize> = self
            .root
            .iter()
            .skip(1)
            .map(|(_, at)| at - 1) // before the comma
            .chain([self.out.len()])
            .collect();
        let mut entries: Vec<(&str, usize, usize)> = self
            .root
            .iter()
            .zip(ends)
            .map(|((k, at), end)| (k.as_str(), *at, end))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let start = entries.iter().map(|e| e.1).min().unwrap_or(self.out.len());
        let mut sorted = Vec::with_capacity(self.out.len() - start);
        for (i, (_, from, to)) in entries.iter().enumerate() {
            if i > 0 {
                sorted.push(b',');
            }
            sorted.extend_from_slice(&self.out[*from..*to]);
        }
        self.out.truncate(start);
        self.out.extend_from_slice(&sorted);
    }
}

impl Sink for JsonSink<'_> {
    fn begin_map(&mut self) {
        self.open(true, b'{');
    }

    fn key(&mut self, key: Cow<'_, str>) -> Option<()> {
        let root = self.depth == 1;
        let f = self.frames.get_mut(self.depth.checked_sub(1)?)?;
        if root {
            if self.root.iter().any(|(k, _)| *k == key) {
                return None; // a duplicate: the general parser's error
            }
        } else if !f.first && key.as_ref() <= f.last_key.as_str() {
            return None; // out of order (or a duplicate): the value path sorts (or refuses)
        }
        let comma = !f.first;
        f.first = false;
        f.last_key.clear();
        f.last_key.push_str(&key);
        if comma {
            self.out.push(b',');
        }
        if root {
            self.root.push((key.to_string(), self.out.len()));
        }
        match &key {
            Cow::Borrowed(k) => self.plain_string(k),
            Cow::Owned(k) => self.string(k),
        }
        self.out.push(b':');
        Some(())
    }

    fn end_map(&mut self) -> Option<()> {
        if self.depth == 1 {
            self.sort_root();
        }
        self.close(b'}');
        Some(())
    }

    fn begin_seq(&mut self) {
        self.open(false, b'[');
    }

    fn end_seq(&mut self) {
        self.close(b']');
    }

    fn scalar(&mut self, v: Scalar<'_>) {
        self.value_start();
        match v {
            Scalar::Null => self.out.extend_from_slice(b"null"),
            Scalar::Bool(true) => self.out.extend_from_slice(b"true"),
            Scalar::Bool(false) => self.out.extend_from_slice(b"false"),
            Scalar::Int(_, text) => self.out.extend_from_slice(text.as_bytes()),
            Scalar::Str(Cow::Borrowed(s)) => self.plain_string(s),
            Scalar::Str(Cow::Owned(s)) => self.string(&s),
            Scalar::EmptySeq => self.out.extend_from_slice(b"[]"),
            Scalar::EmptyMap => self.out.extend_from_slice(b"{}"),
        }
    }
}

struct Reader<'a, 's, S> {
    s: &'a str,
    b: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// Nodes read so far.
    nodes: usize,
    sink: &'s mut S,
    /// Stopped early, at a root key, because the sink had enough.
    stopped: bool,
}

impl<'a, S: Sink> Reader<'a, '_, S> {
    /// The number of spaces at `pos`.
    fn line_indent(&self) -> usize {
        self.b[self.pos..]
            .iter()
            .take_while(|&&c| c == b' ')
            .count()
    }

    /// The rest of the current line (without its line feed) from `pos`.
    fn rest_of_line(&self) -> Option<&'a str> {
        let end = memchr_newline(&self.b[self.pos..])?;
        Some(&self.s[self.pos..self.pos + end])
    }

    fn count_node(&mut self, depth: usize) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= MAX_NODES && depth <= MAX_DEPTH).then_some(())
    }

    /// A block mapping whose keys are at column `col`; `pos` is at its first key (after the
    /// indentation, or after `- ` for a mapping that starts a sequence item).
    fn map(&mut self, col: usize, depth: usize) -> Option<()> {
        self.count_node(depth)?;
        self.sink.begin_map();
        loop {
            let key = self.key()?;
            self.sink.key(key)?;
            match self.b.get(self.pos)? {
                b'\n' => {
                    self.pos += 1;
                    if self.pos == self.b.len() {
                        return None; // an empty value: not canonical
                    }
                    let indent = self.line_indent();
                    if indent == col && self.b[self.pos + indent..].starts_with(b"- ") {
                        self.pos += indent;
                        self.seq(col, depth + 1)?;
                    } else if indent == col + 2 {
                        self.pos += indent;
                        if self.b[self.pos..].starts_with(b"- ") {
                            return None;
                        }
                        self.map(col + 2, depth + 1)?;
                    } else {
                        return None;
                    }
                }
                b' ' => {
                    self.pos += 1;
                    self.scalar(col, depth + 1)?;
                }
                _ => return None,
            }
            if self.pos == self.b.len() {
                break;
            }
            let indent = self.line_indent();
            if indent > col {
                return None;
            }
            if indent < col {
                break;
            }
            if self.b[self.pos + indent..].starts_with(b"- ") {
                // Items of a sequence that is a value start right after their key, and those
                // of an enclosing sequence left of this mapping's keys.
                return None;
            }
            self.pos += indent;
            if depth == 0 && self.sink.enough() {
                // What follows is another root entry: a key, at column 0 (nothing before it is
                // left open: every scalar read is on one line or a literal block).
                self.key()?;
                self.stopped = true;
                return Some(());
            }
        }
        self.sink.end_map()
    }

    /// A block sequence whose `- ` are at column `col`; `pos` is at the first `- `.
    fn seq(&mut self, col: usize, depth: usize) -> Option<()> {
        self.count_node(depth)?;
        self.sink.begin_seq();
        loop {
            if !self.b[self.pos..].starts_with(b"- ") {
                return None;
            }
            self.pos += 2;
            if self.b[self.pos..].starts_with(b"- ") {
                self.seq(col + 2, depth + 1)?;
            } else if self.starts_key()? {
                self.map(col + 2, depth + 1)?;
            } else {
                self.scalar(col, depth + 1)?;
            }
            if self.pos == self.b.len() {
                break;
            }
            let indent = self.line_indent();
            if indent > col {
                return None;
            }
            if indent < col || !self.b[self.pos + indent..].starts_with(b"- ") {
                break;
            }
            self.pos += indent;
        }
        self.sink.end_seq();
        Some(())
    }

    /// Whether the line at `pos` starts with a mapping key (`key:` then a space or the line's
    /// end), as opposed to a scalar.
    fn starts_key(&self) -> Option<bool> {
        let line = self.rest_of_line()?;
        if line.starts_with('"') {
            let (_, used) = double_quoted(line)?;
            return Some(line[used..].starts_with(':'));
        }
        Some(plain_key_end(line).is_some())
    }

    /// Reads `key:` (leaving `pos` after the colon).
    fn key(&mut self) -> Option<Cow<'a, str>> {
        let line = self.rest_of_line()?;
        let (key, used) = if line.starts_with('"') {
            let (key, used) = double_quoted(line)?;
            (Cow::Owned(key), used)
        } else {
            let end = plain_key_end(line)?;
            let key = &line[..end];
            if !plain_ok(key) {
                return None;
            }
            (Cow::Borrowed(key), end)
        };
        if !line[used..].starts_with(':') {
            return None;
        }
        self.pos += used + 1;
        Some(key)
    }

    /// A scalar (or a literal block) from `pos` to the end of its line (or block), whose parent
    /// key or `- ` is at column `col`; leaves `pos` at the next line.
    fn scalar(&mut self, col: usize, depth: usize) -> Option<()> {
        self.count_node(depth)?;
        let line = self.rest_of_line()?;
        self.pos += line.len() + 1;
        let v = match line {
            "null" => Scalar::Null,
            "true" => Scalar::Bool(true),
            "false" => Scalar::Bool(false),
            "[]" => Scalar::EmptySeq,
            "{}" => Scalar::EmptyMap,
            "|" | "|-" | "|+" => Scalar::Str(Cow::Owned(self.literal(col + 2, line)?)),
            _ if line.starts_with('"') => {
                let (s, used) = double_quoted(line)?;
                if used != line.len() {
                    return None;
                }
                Scalar::Str(Cow::Owned(s))
            }
            _ => match integer(line) {
                Some(n) => Scalar::Int(n, line),
                None if plain_ok(line) => Scalar::Str(Cow::Borrowed(line)),
                None => return None,
            },
        };
        self.sink.scalar(v);
        Some(())
    }

    /// The content of a literal block whose lines are indented by `indent`, `pos` at its first
    /// line; `header` is `|`, `|-` or `|+`.
    fn literal(&mut self, indent: usize, header: &str) -> Option<String> {
        let mut out = String::new();
        let mut pending_empty = 0usize;
        let mut first = true;
        while self.pos < self.b.len() {
            let line = self.rest_of_line()?;
            if line.is_empty() {
                if first {
                    return None;
                }
                pending_empty += 1;
                self.pos += 1;
                continue;
            }
            let spaces = line.bytes().take_while(|&c| c == b' ').count();
            if spaces < indent {
                if spaces == line.len() {
                    return None; // a line of spaces only: left to the general parser
                }
                break;
            }
            if first && spaces != indent {
                return None;
            }
            let content = &line[indent..];
            if content.is_empty() {
                return None; // the emitter writes empty lines without spaces
            }
            if content.ends_with([' ', '\t']) || !literal_text_ok(content) {
                return None;
            }
            if !first {
                out.push('\n');
            }
            for _ in 0..pending_empty {
                out.push('\n');
            }
            pending_empty = 0;
            out.push_str(content);
            first = false;
            self.pos += line.len() + 1;
        }
        if first {
            return None;
        }
        match header {
            "|" => out.push('\n'),
            "|+" => {
                for _ in 0..=pending_empty {
                    out.push('\n');
                }
            }
            _ => {}
        }
        Some(out)
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

/// The end of a plain key in `line`: the first `:` followed by a space or the line's end.
fn plain_key_end(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&c| c == b':') {
        let at = from + i;
        if matches!(b.get(at + 1), None | Some(b' ')) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// An integer as serde_json prints one (no sign but `-`, no leading zero, fits 64 bits).
fn integer(s: &str) -> Option<Number> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|c| c.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || s == "-0"
    {
        return None;
    }
    if s.starts_with('-') {
        s.parse::<i64>().ok().map(Number::from)
    } else {
        s.parse::<u64>().ok().map(Number::from)
    }
}

/// Bytes [`json_string`] copies at once when none of them needs an escape.
const COPY_BLOCK: usize = 16;

/// Writes `s` as a JSON string, byte for byte what `serde_json::to_writer` writes of it: `"`
/// and `\` escaped, `\b \t \n \f \r` short, other control characters as `\u00XX`, everything
/// else (DEL and non-ASCII too) as is. Blocks of bytes that need no escape are tested with
/// comparisons only (vector instructions) and copied whole; literal texts are mostly such
/// blocks, with a newline to escape every line.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Bytes before `i` are written, or are plain ones from `start` on.
    let (mut start, mut i) = (0, 0);
    let plain = |b: u8| (b >= 0x20) & (b != b'"') & (b != b'\\');
    while i < bytes.len() {
        // The block from `i`; at the end of a longer text the block that ends it (overlapping
        // bytes before `i`: when one of them needs an escape, the bytes from `i` are tested one
        // by one); a shorter text padded with a plain byte.
        let len = (bytes.len() - i).min(COPY_BLOCK);
        let mut padded = [b'a'; COPY_BLOCK];
        let at = i.min(bytes.len().saturating_sub(COPY_BLOCK));
        let block: &[u8; COPY_BLOCK] = match bytes.get(at..at + COPY_BLOCK) {
            Some(block) => block.try_into().unwrap_or(&padded),
            None => {
                padded[..len].copy_from_slice(&bytes[i..]);
                &padded
            }
        };
        if block.iter().fold(true, |ok, &b| ok & plain(b)) {
            i += len;
            continue;
        }
        // Some byte of the block needs an escape: write up to the first one, and its escape.
        let Some((at, b)) = (i..i + len)
            .map(|k| (k, bytes[k]))
            .find(|&(_, b)| !plain(b))
        else {
            i += len;
            continue;
        };
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            _ => b'u',
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(&[b'\\', short]);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
        i = at + 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Text the emitter writes raw in a literal block: no special characters (tabs aside).
fn literal_text_ok(s: &str) -> bool {
    // Printable ASCII and tabs, tested 32 bytes at a time without an early exit inside a block
    // (so that the compiler tests a block with vector instructions).
    let printable = |c: u8| (0x20..0x7f).contains(&c) || c == b'\t';
    if s.as_bytes()
        .chunks(32)
        .all(|block| block.iter().fold(true, |ok, &c| ok & printable(c)))
    {
        return true;
    }
    s.chars()
        .all(|c| c == '\t' || (!is_special_char(c) && c != '\n'))
}

/// A double-quoted string at the start of `line`, on that line, with the escapes the emitter
/// writes: the string and the bytes used (quotes included).
fn double_quoted(line: &str) -> Option<(String, usize)> {
    let body = line.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 2)),
            '\\' => {
                let (_, e) = chars.next()?;
                let decoded = match e {
                    '"' => '"',
                    '\\' => '\\',
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    'N' => '\u{85}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    'x' | 'u' => {
                        let n = if e == 'x' { 2 } else { 4 };
                        let mut cp = 0u32;
                        for _ in 0..n {
                            let (_, h) = chars.next()?;
                            cp = cp * 16 + h.to_digit(16)?;
                        }
                        char::from_u32(cp)?
                    }
                    _ => return None,
                };
                out.push(decoded);
            }
            c if is_special_char(c) => return None,
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// The block-wise test of literal text decides as the character-wise definition, for
        /// texts spanning several 32-byte blocks.
        #[test]
        fn literal_text_ok_matches_its_definition(s in "[a \t~\u{7f}\u{1}]{0,100}|[a \t\n\u{7f}\u{85}\u{1}~é\u{2028}]{0,100}") {
            let defined = s.chars().all(|c| c == '\t' || (!is_special_char(c) && c != '\n'));
            proptest::prop_assert_eq!(literal_text_ok(&s), defined, "{:?}", s);
        }

        /// `json_string` writes what serde_json writes: texts with escapes here and there
        /// across blocks, and any text at all.
        #[test]
        fn json_string_is_serde_json(
            s in "([a-z =:/-]{0,40}[\"\\\\\n\t\r\u{8}\u{c}\u{0}\u{1f}\u{7f}é€\u{2028}]?){0,6}|\\PC{0,80}|.{0,80}",
        ) {
            let mut ours = Vec::new();
            json_string(&mut ours, &s);
            let theirs = serde_json::to_vec(&s).expect("a string serialises");
            proptest::prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    fn general(s: &str) -> Option<Value> {
        super::super::yaml::from_yaml_general(s).ok()
    }

    #[test]
    fn reads_canonical_objects_as_the_general_parser_does() {
        let objects = [
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "ns", "labels": {"app.kubernetes.io/name": "x"}},
                "data": {"script.sh": "#!/bin/sh\necho hi\n\n\tindented\n", "n": "1", "s": "a: b",
                         "keep": "x\n\n\n", "strip": "x\ny", "empty": "", "q": "on", "u": "é\u{2028}"}
            }),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "annotations": {"a": "{\"json\": [1, 2]}"}},
                "spec": {"replicas": 3, "paused": false, "x": null, "big": u64::MAX, "neg": -42,
                         "template": {"spec": {"containers": [
                             {"name": "app", "args": ["--flag", "-x", "a b"], "ports": [{"containerPort": 8080}]},
                             {"name": "side", "env": [], "resources": {}}
                         ]}},
                         "nested": [[1, [2, {"k": "v"}]], [], {}],
                         "script": ["line1\nline2\n"]}
            }),
        ];
        for v in objects {
            let y = super::super::yaml::to_yaml(&v).unwrap();
            let fast = parse(&y);
            assert_eq!(fast.as_ref(), Some(&v), "{y}");
            assert_eq!(general(&y).as_ref(), Some(&v), "{y}");
            let mut json = Vec::new();
            assert_eq!(to_json(&y, &mut json), Some(()), "{y}");
            assert_eq!(json, serde_json::to_vec(&v).unwrap(), "{y}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_general_parser() {
        for doc in [
            "a: 1\na: 2\n",         // duplicate key
            "a: 1 # comment\n",     // comment
            "# c\na: 1\n",          // comment line
            "a: [1, 2]\n",          // flow sequence
            "a: {b: 1}\n",          // flow mapping
            "a: &x 1\nb: *x\n",     // anchor and alias
            "a: !!str 1\n",         // tag
            "a: 1.5\n",             // float
            "a: 'x'\n",             // single quotes
            "a:\n    b: 1\n",       // other indentation
            "a:\n  - 1\n",          // indented sequence
            "a: >\n  folded\n",     // folded block
            "a: |2\n   x\n",        // indentation indicator
            "a: |\n    x\n",        // block more indented than canonical
            "a: |\n  x\n  \n  y\n", // line of spaces in a block
            "a: x\n",               // fine...
            "---\na: 1\n",          // document marker
            "a: 1",                 // no final line feed
            "- a\n",                // root sequence
            "x\n",                  // root scalar
            "a: \"x\ty\"\n",        // raw tab in double quotes
            "a: \"\\q\"\n",         // unknown escape
            "a: yes\n",             // YAML 1.1 bool
            "a: 0777\n",            // octal-like
            "a: -0\n",              // negative zero
            "a:\n",                 // empty value
            "a: 1\n b: 2\n",        // bad indentation
            "\"a\": 1\n\"a\": 2\n", // duplicate quoted key
            "a: \"x\" y\n",         // text after a quoted string
        ] {
            let fast = parse(doc);
            if let Some(v) = &fast {
                assert_eq!(Some(v), general(doc).as_ref(), "{doc:?}");
            }
            if doc != "a: x\n" {
                assert_eq!(fast, None, "{doc:?}");
            }
        }
    }

    #[test]
    fn json_text_needs_keys_in_the_order_of_the_value() {
        // Readable, but JSON text written in this order would not be the value's.
        assert_eq!(
            parse("a:\n  y1: 1\n  x: 1\n"),
            Some(json!({"a": {"x": 1, "y1": 1}}))
        );
        assert_eq!(to_json("a:\n  y1: 1\n  x: 1\n", &mut Vec::new()), None);
        assert_eq!(to_json("a:\n  x: 1\n  x: 2\n", &mut Vec::new()), None);
        assert_eq!(to_json("a: 1\nb: 2\na: 2\n", &mut Vec::new()), None);
        // Order is per mapping: inner keys start afresh; the root's are put in order.
        let doc = "kind: K\nb:\n- y1: 1\n- x: 1\n  y1: \"\\t\"\na:\n  a: []\n  b: {}\n";
        let mut json = Vec::new();
        assert_eq!(to_json(doc, &mut json), Some(()));
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"a":{"a":[],"b":{}},"b":[{"y1":1},{"x":1,"y1":"\t"}],"kind":"K"}"#
        );
        assert_eq!(
            serde_json::to_value(parse(doc)).unwrap()["b"][1]["y1"],
            "\t"
        );
    }

    #[test]
    fn limits_leave_large_documents_to_the_general_parser() {
        let mut deep = String::new();
        for i in 0..60 {
            deep.push_str(&" ".repeat(2 * i));
            deep.push_str("a:\n");
        }
        deep.push_str(&" ".repeat(120));
        deep.push_str("b: 1\n");
        assert_eq!(parse(&deep), None);
        assert_eq!(to_json(&deep, &mut Vec::new()), None);
    }
}
