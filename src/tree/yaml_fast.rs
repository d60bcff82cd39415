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
    if s.len() > MAX_BYTES || !s.ends_with('\n') {
        return None;
    }
    let mut r = Reader {
        s,
        b: s.as_bytes(),
        pos: 0,
        nodes: 0,
    };
    if r.line_indent() != 0 || r.b.starts_with(b"- ") {
        return None;
    }
    let v = r.map(0, 0)?;
    (r.pos == r.b.len()).then_some(v)
}

struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// Nodes read so far.
    nodes: usize,
}

impl<'a> Reader<'a> {
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
    fn map(&mut self, col: usize, depth: usize) -> Option<Value> {
        self.count_node(depth)?;
        let mut map = Map::new();
        loop {
            let key = self.key()?;
            let value = match self.b.get(self.pos)? {
                b'\n' => {
                    self.pos += 1;
                    if self.pos == self.b.len() {
                        return None; // an empty value: not canonical
                    }
                    let indent = self.line_indent();
                    if indent == col && self.b[self.pos + indent..].starts_with(b"- ") {
                        self.pos += indent;
                        self.seq(col, depth + 1)?
                    } else if indent == col + 2 {
                        self.pos += indent;
                        if self.b[self.pos..].starts_with(b"- ") {
                            return None;
                        }
                        self.map(col + 2, depth + 1)?
                    } else {
                        return None;
                    }
                }
                b' ' => {
                    self.pos += 1;
                    self.scalar(col, depth + 1)?
                }
                _ => return None,
            };
            if map.insert(key, value).is_some() {
                return None; // duplicate keys are the general parser's error
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
        }
        Some(Value::Object(map))
    }

    /// A block sequence whose `- ` are at column `col`; `pos` is at the first `- `.
    fn seq(&mut self, col: usize, depth: usize) -> Option<Value> {
        self.count_node(depth)?;
        let mut items = Vec::new();
        loop {
            if !self.b[self.pos..].starts_with(b"- ") {
                return None;
            }
            self.pos += 2;
            let item = if self.b[self.pos..].starts_with(b"- ") {
                self.seq(col + 2, depth + 1)?
            } else if self.starts_key()? {
                self.map(col + 2, depth + 1)?
            } else {
                self.scalar(col, depth + 1)?
            };
            items.push(item);
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
        Some(Value::Array(items))
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
    fn key(&mut self) -> Option<String> {
        let line = self.rest_of_line()?;
        let (key, used) = if line.starts_with('"') {
            double_quoted(line)?
        } else {
            let end = plain_key_end(line)?;
            let key = &line[..end];
            if !plain_ok(key) {
                return None;
            }
            (key.to_owned(), end)
        };
        if !line[used..].starts_with(':') {
            return None;
        }
        self.pos += used + 1;
        Some(key)
    }

    /// A scalar (or a literal block) from `pos` to the end of its line (or block), whose parent
    /// key or `- ` is at column `col`; leaves `pos` at the next line.
    fn scalar(&mut self, col: usize, depth: usize) -> Option<Value> {
        self.count_node(depth)?;
        let line = self.rest_of_line()?;
        self.pos += line.len() + 1;
        let v = match line {
            "null" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "[]" => Value::Array(Vec::new()),
            "{}" => Value::Object(Map::new()),
            "|" | "|-" | "|+" => Value::String(self.literal(col + 2, line)?),
            _ if line.starts_with('"') => {
                let (s, used) = double_quoted(line)?;
                if used != line.len() {
                    return None;
                }
                Value::String(s)
            }
            _ => match integer(line) {
                Some(n) => Value::Number(n),
                None if plain_ok(line) => Value::String(line.to_owned()),
                None => return None,
            },
        };
        Some(v)
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
    b.iter().position(|&c| c == b'\n')
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

/// Text the emitter writes raw in a literal block: no special characters (tabs aside).
fn literal_text_ok(s: &str) -> bool {
    if s.bytes().all(|c| (0x20..0x7f).contains(&c) || c == b'\t') {
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
    fn limits_leave_large_documents_to_the_general_parser() {
        let mut deep = String::new();
        for i in 0..60 {
            deep.push_str(&" ".repeat(2 * i));
            deep.push_str("a:\n");
        }
        deep.push_str(&" ".repeat(120));
        deep.push_str("b: 1\n");
        assert_eq!(parse(&deep), None);
    }
}
