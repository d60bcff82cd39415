//! Canonical YAML (docs/design.md §3): a small hand-written emitter that decides every byte of a
//! snapshot file, and a parser (serde-saphyr) for reading files back as untrusted input.
//!
//! Owns: key order, layout and scalar style. Must not touch: which fields an object has
//! (see `canonical`).
//!
//! Layout rules:
//! - the root mapping starts with `apiVersion`, `kind`, `metadata` (when present); every other
//!   mapping key is sorted bytewise (the order is built here, never taken from
//!   `serde_json::Map`, whose order depends on serde_json features);
//! - block style, 2-space indent, sequences not indented under their key;
//! - empty mappings `{}` and empty sequences `[]`; exactly one trailing newline, no `---`.
//!
//! Scalar rules:
//! - strings are plain only when they read back as the same string in YAML 1.1 and 1.2
//!   (conservative: a small alphabet, no indicator first, nothing number-, bool- or
//!   null-like);
//! - multi-line strings are literal blocks (`|`, `|-`, `|+`) when that round-trips without
//!   doubt, otherwise double-quoted;
//! - everything else is double-quoted with escapes for non-printable characters;
//! - numbers exactly as serde_json prints them (floats keep a `.` or an exponent).

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::TreeError;
use super::node::Node;

/// Keys that come first, in this order, in the root mapping.
const TOP_LEVEL_FIRST: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Emits `v` as canonical YAML.
pub fn to_yaml(v: &Value) -> Result<String, TreeError> {
    Ok(emit(&Node::from(v)))
}

/// Emits `node` as canonical YAML (the same bytes as [`to_yaml`] of the equal `Value`).
pub fn emit(node: &Node<'_>) -> String {
    let mut out = String::with_capacity(256);
    emit_into(node, &mut out);
    out
}

/// [`emit`] into `out` (cleared first), so that a caller emitting many documents reuses one
/// grown buffer.
pub fn emit_into(node: &Node<'_>, out: &mut String) {
    out.clear();
    match node {
        Node::Object(m) if !m.is_empty() => emit_map(out, m, 0, false, true, true),
        Node::Array(a) if !a.is_empty() => emit_seq(out, a, 0, false, true),
        scalar => emit_scalar(out, scalar, 2, true),
    }
}

/// Emits any serializable value as canonical YAML (through `serde_json::Value`).
pub fn to_yaml_string<T: Serialize>(v: &T) -> Result<String, TreeError> {
    let value = serde_json::to_value(v).map_err(|e| TreeError::Serialize {
        message: e.to_string(),
    })?;
    to_yaml(&value)
}

/// Parses one YAML document into a JSON value. The input is untrusted: parsing is budgeted
/// (serde-saphyr's default limits), duplicate keys are errors, and error messages do not quote
/// the input (it may hold secret data).
///
/// Canonical documents (what [`to_yaml`] writes) are read by a fast reader of that subset,
/// which gives the same value; anything else goes to the general parser.
pub fn from_yaml(s: &str) -> Result<Value, TreeError> {
    match super::yaml_fast::parse(s) {
        Some(v) => Ok(v),
        None => from_yaml_general(s),
    }
}

/// Writes one YAML document as compact JSON text into `out` (cleared first): exactly what
/// `serde_json::to_writer` writes of [`from_yaml`]'s value, with the same errors. Canonical
/// documents are written straight from their text, without building the value (what a
/// restore holds of each object, `restore::CompactObject`).
pub fn yaml_to_json(s: &str, out: &mut Vec<u8>) -> Result<(), TreeError> {
    out.clear();
    if super::yaml_fast::to_json(s, out).is_some() {
        return Ok(());
    }
    out.clear();
    let value = from_yaml_general(s)?;
    serde_json::to_writer(&mut *out, &value).map_err(|e| TreeError::Serialize {
        message: e.to_string(),
    })
}

/// [`from_yaml`] by the general parser alone (serde-saphyr), never the fast reader of
/// canonical documents: tests compare the two.
pub fn from_yaml_general(s: &str) -> Result<Value, TreeError> {
    serde_saphyr::from_str_with_options::<Value>(s, parse_options()).map_err(|e| TreeError::Yaml {
        message: e.to_string(),
    })
}

/// Parses one YAML document into `T` (through `serde_json::Value`, so that it reads exactly
/// what [`to_yaml_string`] writes).
pub fn from_yaml_str<T: DeserializeOwned>(s: &str) -> Result<T, TreeError> {
    let value = from_yaml(s)?;
    serde_json::from_value(value).map_err(|e| TreeError::Deserialize {
        message: e.to_string(),
    })
}

fn parse_options() -> serde_saphyr::Options {
    let mut opts = serde_saphyr::Options::default();
    opts.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    opts.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    opts.with_snippet = false;
    opts
}

// ---------------------------------------------------------------------------------------------
// Layout

fn push_indent(out: &mut String, indent: usize) {
    const SPACES: &str = "                                                                ";
    let mut left = indent;
    while left > 0 {
        let n = left.min(SPACES.len());
        out.push_str(&SPACES[..n]);
        left -= n;
    }
}

/// Canonical key order: at the top level `apiVersion`, `kind`, `metadata` first; everywhere
/// else (and after those) by the bytes of the key.
fn key_order(top: bool, a: &str, b: &str) -> std::cmp::Ordering {
    let rank = |k: &str| {
        if top {
            TOP_LEVEL_FIRST
                .iter()
                .position(|f| *f == k)
                .unwrap_or(TOP_LEVEL_FIRST.len())
        } else {
            0
        }
    };
    rank(a)
        .cmp(&rank(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Emits a non-empty mapping whose keys sit at column `indent`. With `inline_first` the first
/// key continues the current line (after `- `).
fn emit_map(
    out: &mut String,
    m: &[(Cow<'_, str>, Node<'_>)],
    indent: usize,
    inline_first: bool,
    top: bool,
    last: bool,
) {
    // Mappings often come in canonical order already (and then have no duplicate keys): no
    // entry list is built or sorted. Otherwise sort stably and keep the last of equal keys.
    if !top && m.is_sorted_by(|(a, _), (b, _)| a.as_bytes() < b.as_bytes()) {
        emit_entries(
            out,
            m.iter().map(|(k, v)| (k.as_ref(), v)),
            m.len(),
            indent,
            inline_first,
            last,
        );
    } else {
        let mut entries: Vec<(&str, &Node<'_>)> = m.iter().map(|(k, v)| (k.as_ref(), v)).collect();
        entries.sort_by(|(a, _), (b, _)| key_order(top, a, b));
        let mut unique: Vec<(&str, &Node<'_>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match unique.last_mut() {
                Some(prev) if prev.0 == entry.0 => *prev = entry,
                _ => unique.push(entry),
            }
        }
        let n = unique.len();
        emit_entries(out, unique.into_iter(), n, indent, inline_first, last);
    }
}

fn emit_entries<'a, 'n: 'a>(
    out: &mut String,
    entries: impl Iterator<Item = (&'a str, &'a Node<'n>)>,
    n: usize,
    indent: usize,
    inline_first: bool,
    last: bool,
) {
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 || !inline_first {
            push_indent(out, indent);
        }
        emit_key(out, k);
        out.push(':');
        let is_last = last && i + 1 == n;
        match v {
            Node::Object(child) if !child.is_empty() => {
                out.push('\n');
                emit_map(out, child, indent + 2, false, false, is_last);
            }
            Node::Array(items) if !items.is_empty() => {
                out.push('\n');
                emit_seq(out, items, indent, false, is_last);
            }
            scalar => {
                out.push(' ');
                emit_scalar(out, scalar, indent + 2, is_last);
            }
        }
    }
}

/// Emits a non-empty sequence whose `- ` sit at column `indent`.
fn emit_seq(out: &mut String, items: &[Node<'_>], indent: usize, inline_first: bool, last: bool) {
    let n = items.len();
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            push_indent(out, indent);
        }
        out.push_str("- ");
        let is_last = last && i + 1 == n;
        match item {
            Node::Object(child) if !child.is_empty() => {
                emit_map(out, child, indent + 2, true, false, is_last);
            }
            Node::Array(inner) if !inner.is_empty() => {
                emit_seq(out, inner, indent + 2, true, is_last);
            }
            scalar => emit_scalar(out, scalar, indent + 2, is_last),
        }
    }
}

fn emit_key(out: &mut String, k: &str) {
    if plain_ok(k) {
        out.push_str(k);
    } else {
        push_double_quoted(out, k);
    }
}

/// Emits a scalar (or an empty collection) and its line end. `block_indent` is the indentation
/// of literal block content; `last` tells whether nothing follows in the document (then a
/// keep-chomped block, which would end the file with blank lines, is not used).
fn emit_scalar(out: &mut String, v: &Node<'_>, block_indent: usize, last: bool) {
    match v {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Number(n) => push_number(out, n),
        Node::String(s) => {
            if plain_ok(s) {
                out.push_str(s);
            } else if let Some(chomp) = literal_chomping(s, last) {
                push_literal(out, s, chomp, block_indent);
                return; // the block ends with its own line end
            } else {
                push_double_quoted(out, s);
            }
        }
        Node::Array(_) => out.push_str("[]"),
        Node::Object(_) => out.push_str("{}"),
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------------
// Scalars

/// Writes a number as serde_json prints it, except that a float always has a `.` in its
/// mantissa and a sign in its exponent (`1e300` becomes `1.0e+300`), so that YAML 1.1
/// resolvers read it as a float too.
fn push_number(out: &mut String, n: &serde_json::Number) {
    let s = n.to_string();
    if !n.is_f64() {
        out.push_str(&s);
        return;
    }
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s.as_str(), None),
    };
    out.push_str(mantissa);
    if !mantissa.contains('.') {
        out.push_str(".0");
    }
    if let Some(exp) = exponent {
        out.push('e');
        if !exp.starts_with(['+', '-']) {
            out.push('+');
        }
        out.push_str(exp);
    }
}

/// Characters that are always escaped in double quotes and never written raw anywhere:
/// C0/C1 controls, DEL, the YAML 1.1 line separators, BOM and non-characters.
pub(super) fn is_special_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}'
        | '\u{fffe}' | '\u{ffff}')
}

/// Whether `s` can be written as a plain scalar and read back as the same string by YAML 1.1
/// and 1.2 parsers. Deliberately conservative.
pub(super) fn plain_ok(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let first_ok = match first {
        c if c.is_ascii_alphanumeric() || c == '/' || c == '_' => true,
        '-' => {
            // `-x` and `--x` are fine; `-`, `- x`, `---x`, `-1`, `-.5` are not.
            let rest = s.trim_start_matches('-');
            s.len() - rest.len() <= 2 && rest.starts_with(|c: char| c.is_ascii_alphabetic())
        }
        c => !c.is_ascii() && c.is_alphanumeric(),
    };
    if !first_ok {
        return false;
    }
    // One pass over the bytes: blocks of simple bytes at once (long values such as base64 are
    // nothing else), then ASCII through a table, non-ASCII must be alphanumeric; `: `, ` #`
    // and a trailing space or colon are refused.
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // The last bytes of a longer value are tested as the block that ends the value (it
        // overlaps bytes already found simple); a shorter value is padded with a simple byte.
        let mut padded = [b'a'; SIMPLE_BLOCK];
        let block: &[u8; SIMPLE_BLOCK] = match bytes.len().checked_sub(SIMPLE_BLOCK) {
            Some(last) => {
                let at = i.min(last);
                bytes[at..at + SIMPLE_BLOCK].try_into().unwrap_or(&padded)
            }
            None => {
                padded[..bytes.len()].copy_from_slice(bytes);
                &padded
            }
        };
        if simple_block(block) {
            i += SIMPLE_BLOCK;
            continue;
        }
        // Byte by byte to the end of this block (a character may end past it).
        let stop = (i + SIMPLE_BLOCK).min(bytes.len());
        while i < stop {
            let b = bytes[i];
            if b.is_ascii() {
                if PLAIN_SIMPLE[usize::from(b)] {
                    i += 1;
                    continue;
                }
                if !PLAIN_BODY[usize::from(b)] {
                    return false;
                }
                let next = bytes.get(i + 1).copied();
                if (b == b':' && matches!(next, Some(b' ') | None))
                    || (b == b' ' && matches!(next, Some(b'#') | None))
                {
                    return false;
                }
                i += 1;
            } else {
                // Decode one non-ASCII character (s is valid UTF-8).
                let width = match b {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                let c = s[i..i + width].chars().next().unwrap_or('\0');
                if !c.is_alphanumeric() {
                    return false;
                }
                i += width;
            }
        }
    }
    !is_reserved_word(s) && !looks_numeric(s)
}

/// Bytes [`plain_ok`] tests at once before going byte by byte.
const SIMPLE_BLOCK: usize = 16;

/// Whether every byte of `block` is a [`PLAIN_SIMPLE`] byte: printable ASCII but space, `:`,
/// `[`, `]`, `{` and `}`. Comparisons only, with no exit inside the block, so that the
/// compiler tests a block with vector instructions.
#[inline]
fn simple_block(block: &[u8; SIMPLE_BLOCK]) -> bool {
    block.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(0x21) < 0x5e)
            & (b != b':')
            & (b != b'[')
            & (b != b']')
            & (b != b'{')
            & (b != b'}')
    })
}

/// [`PLAIN_BODY`] bytes with no rule about their neighbours (all but `:` and space).
static PLAIN_SIMPLE: [bool; 128] = {
    let mut t = PLAIN_BODY;
    t[b':' as usize] = false;
    t[b' ' as usize] = false;
    t
};

/// ASCII bytes allowed in the body of a plain scalar: alphanumerics and
/// `` -_./:=+@%~^$()<>!?*&|;'"\`#,``.
static PLAIN_BODY: [bool; 128] = {
    let mut t = [false; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b" -_./:=+@%~^$()<>!?*&|;'\"\\`#,";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

/// Null, bool (YAML 1.1 and 1.2 spellings) and non-finite float words, in any case.
fn is_reserved_word(s: &str) -> bool {
    if s.len() > 9 {
        return false;
    }
    let unsigned = s.trim_start_matches(['-', '+']);
    ["null", "true", "false", "yes", "no", "on", "off", "y", "n"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
        || ["inf", "infinity", "nan"]
            .iter()
            .any(|w| unsigned.eq_ignore_ascii_case(w))
}

/// Whether `s` could be read as a number or timestamp by some YAML 1.1 or 1.2 resolver
/// (ints in any base, floats, sexagesimal numbers, dates). Over-approximates, except for
/// dotted digit groups such as IP addresses (`10.96.0.1`), which no resolver reads as a number.
fn looks_numeric(s: &str) -> bool {
    let t = s.trim_start_matches(['-', '+']);
    let starts_numeric = t.starts_with(|c: char| c.is_ascii_digit())
        || (t.starts_with('.') && t[1..].starts_with(|c: char| c.is_ascii_digit()));
    if !starts_numeric {
        return false;
    }
    let dotted_groups = t.split('.').count() >= 3
        && t.split('.')
            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()));
    if dotted_groups {
        return false;
    }
    if t.chars()
        .all(|c| c.is_ascii_hexdigit() || "xXoO_.:+-".contains(c))
    {
        return true;
    }
    // YAML 1.1 timestamps: `2001-12-14t21:59:43.10-05:00`, `2001-12-14 21:59:43.10 -5`.
    let b = t.as_bytes();
    b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// The chomping indicator for writing `s` as a literal block, or `None` when a literal block
/// is not used (single line, special characters, leading or trailing whitespace on a line,
/// empty first line, or trailing blank lines at the end of the document).
fn literal_chomping(s: &str, last: bool) -> Option<&'static str> {
    let b = s.as_bytes();
    if matches!(b.first(), None | Some(b' ' | b'\t' | b'\n')) {
        return None;
    }
    match ascii_literal_ok(b) {
        Some(true) => return chomping(s, last),
        Some(false) => return None,
        None => {} // not plain ASCII text: the exact check below
    }
    // One pass over the bytes: no special character (tab and line feed aside), no line of
    // content ending in a space or tab, at least one line feed.
    let mut has_newline = false;
    let mut prev = 0u8;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                if matches!(prev, b' ' | b'\t') {
                    return None;
                }
                has_newline = true;
            }
            b'\t' => {}
            0..=0x1f | 0x7f => return None,
            0x80.. => {
                // Specials outside ASCII: U+0080-009F, U+2028, U+2029, U+FEFF, U+FFFE, U+FFFF.
                let width = match c {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                let ch = s[i..i + width].chars().next().unwrap_or('\0');
                if is_special_char(ch) {
                    return None;
                }
                prev = c;
                i += width;
                continue;
            }
            _ => {}
        }
        prev = c;
        i += 1;
    }
    if !has_newline || matches!(prev, b' ' | b'\t') {
        return None;
    }
    chomping(s, last)
}

/// The literal-block decision for text of printable ASCII, tabs and line feeds, in chunks the
/// compiler vectorises: `Some(ok)` for such text, `None` (undecided) for anything else.
fn ascii_literal_ok(b: &[u8]) -> Option<bool> {
    const CHUNK: usize = 64;
    let (Some(&first), Some(&end)) = (b.first(), b.last()) else {
        return Some(false);
    };
    let clean = |c: u8| (0x20..0x7f).contains(&c) || c == b'\n' || c == b'\t';
    if !clean(first) {
        return None;
    }
    let mut has_newline = false;
    let mut offset = 1;
    while offset < b.len() {
        let to = (offset + CHUNK).min(b.len());
        let (prev, cur) = (&b[offset - 1..to - 1], &b[offset..to]);
        let (mut other, mut space_before_newline, mut newline) = (false, false, false);
        for (&p, &c) in prev.iter().zip(cur) {
            other |= !clean(c);
            space_before_newline |= c == b'\n' && (p == b' ' || p == b'\t');
            newline |= c == b'\n';
        }
        if other {
            return None;
        }
        if space_before_newline {
            return Some(false);
        }
        has_newline |= newline;
        offset = to;
    }
    Some(has_newline && end != b' ' && end != b'\t')
}

/// The chomping indicator of a string that can be a literal block: by its trailing line feeds.
fn chomping(s: &str, last: bool) -> Option<&'static str> {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    match trailing {
        0 => Some("|-"),
        1 => Some("|"),
        _ if last => None,
        _ => Some("|+"),
    }
}
fn push_literal(out: &mut String, s: &str, chomp: &str, indent: usize) {
    out.push_str(chomp);
    out.push('\n');
    let core = s.trim_end_matches('\n');
    for line in core.split('\n') {
        if !line.is_empty() {
            push_indent(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    // Keep chomping: the blank lines after the last line are content.
    let trailing = s.len() - core.len();
    for _ in 1..trailing {
        out.push('\n');
    }
}

fn push_double_quoted(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if is_special_char(c) => {
                let cp = u32::from(c);
                // Writing to a String cannot fail.
                let _ = if cp <= 0xff {
                    write!(out, "\\x{cp:02X}")
                } else {
                    write!(out, "\\u{cp:04X}")
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward formulation `plain_ok` is an optimisation of.
    fn plain_ok_reference(s: &str) -> bool {
        let Some(first) = s.chars().next() else {
            return false;
        };
        let first_ok = match first {
            c if c.is_ascii_alphanumeric() || c == '/' || c == '_' => true,
            '-' => {
                let rest = s.trim_start_matches('-');
                s.len() - rest.len() <= 2 && rest.starts_with(|c: char| c.is_ascii_alphabetic())
            }
            c => !c.is_ascii() && c.is_alphanumeric(),
        };
        let body_ok = s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || " -_./:=+@%~^$()<>!?*&|;'\"\\`#,".contains(c)
                || (!c.is_ascii() && c.is_alphanumeric())
        });
        let lower = s.to_ascii_lowercase();
        let unsigned = lower.trim_start_matches(['-', '+']);
        let reserved = s.len() <= 9
            && (matches!(
                lower.as_str(),
                "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
            ) || matches!(unsigned, "inf" | "infinity" | "nan"));
        first_ok
            && body_ok
            && !s.ends_with(' ')
            && !s.ends_with(':')
            && !s.contains(": ")
            && !s.contains(" #")
            && !reserved
            && !looks_numeric(s)
    }

    proptest::proptest! {
        #[test]
        fn plain_ok_matches_its_reference(s in "[a-zA-Z0-9 :#_./\\-+\"'@é€\u{2028}\t\n{}\\[\\],&*!|>%]{0,12}") {
            proptest::prop_assert_eq!(plain_ok(&s), plain_ok_reference(&s), "{:?}", s);
        }

        /// Long values go through `simple_block`: mostly simple bytes (as base64 is), with
        /// the bytes that need a rule or refuse the value here and there, across blocks, and
        /// sometimes a trailing colon.
        #[test]
        fn long_plain_ok_matches_its_reference(
            s in "([a-zA-Z0-9+/=]{0,40}[ :#{}\\[\\]é€\u{2028}\t]?){1,6}:?",
        ) {
            proptest::prop_assert_eq!(plain_ok(&s), plain_ok_reference(&s), "{:?}", s);
        }
    }

    #[test]
    fn simple_block_is_the_simple_table() {
        for b in 0..=u8::MAX {
            let table = b.is_ascii() && PLAIN_SIMPLE[usize::from(b)];
            let mut one = [b'a'; SIMPLE_BLOCK];
            one[SIMPLE_BLOCK / 2] = b;
            assert_eq!(simple_block(&one), table, "byte {b:#04x}");
            assert_eq!(simple_block(&[b; SIMPLE_BLOCK]), table, "block of {b:#04x}");
        }
    }

    /// The multi-pass definition that `literal_chomping` implements in one pass.
    fn literal_chomping_reference(s: &str, last: bool) -> Option<&'static str> {
        if !s.contains('\n')
            || s.chars()
                .any(|c| c != '\n' && c != '\t' && is_special_char(c))
        {
            return None;
        }
        if s.starts_with([' ', '\t', '\n']) {
            return None;
        }
        let core = s.trim_end_matches('\n');
        if core.split('\n').any(|l| l.ends_with([' ', '\t'])) {
            return None;
        }
        match s.len() - core.len() {
            0 => Some("|-"),
            1 => Some("|"),
            _ if last => None,
            _ => Some("|+"),
        }
    }

    proptest::proptest! {
        #[test]
        fn literal_chomping_matches_its_reference(
            s in "[ab \t\n\r\u{85}\u{2028}\u{feff}é€\u{7f}\u{1}]{0,10}|[ab \t\n]{0,300}|[a\n]{60,140}[ \t]\n[a\n]{0,100}",
            last: bool,
        ) {
            proptest::prop_assert_eq!(literal_chomping(&s, last), literal_chomping_reference(&s, last), "{:?}", s);
        }
    }

    #[test]
    fn plain_ok_examples() {
        for s in [
            "a",
            "a:b",
            "http://x",
            "-x",
            "ä",
            "a b",
            "No",
            "NaN",
            "-Inf",
            "on",
            "ON",
            "10.96.0.1",
            "a: b",
            "a #b",
            "a ",
            "a:",
            "",
            "1",
            "null",
            "0x1f",
        ] {
            assert_eq!(plain_ok(s), plain_ok_reference(s), "{s:?}");
        }
    }

    #[test]
    fn floats_are_yaml_1_1_floats() {
        let emit = |f: f64| {
            let mut out = String::new();
            push_number(&mut out, &serde_json::Number::from_f64(f).expect("finite"));
            out
        };
        assert_eq!(emit(1.0), "1.0");
        assert_eq!(emit(1e300), "1.0e+300");
        assert_eq!(emit(-2.5e-8), "-2.5e-8");
        assert_eq!(emit(1.5e300), "1.5e+300");
        let mut out = String::new();
        push_number(&mut out, &serde_json::Number::from(-7i64));
        assert_eq!(out, "-7");
    }

    #[test]
    fn plain_decisions() {
        for s in [
            "abc",
            "app.kubernetes.io/name",
            "10.96.0.1",
            "100Mi",
            "500m",
            "30s",
            "--port=8080",
            "-v",
            "nginx:1.25",
            "http://x:80/y",
            "a b",
        ] {
            assert!(plain_ok(s), "{s} should be plain");
        }
        for s in [
            "",
            "on",
            "Yes",
            "y",
            "NULL",
            "~",
            "0777",
            "1e3",
            "1.0",
            "0x1F",
            "2001-01-01",
            " a",
            "a ",
            "a: b",
            "a #b",
            "-",
            "- a",
            "---x",
            "-1",
            ".5",
            "inf",
            "-.inf",
            "NaN",
            "1:20",
            "a:",
            "<<",
            "=",
            "@x",
            "*x",
            "&x",
            "!x",
            "|x",
            ">x",
            "%x",
            "'x",
            "\"x",
            "[x",
            "{x",
            "#x",
            "?x",
            ":x",
            ",x",
            ".inf",
            "1_000",
            "+1",
        ] {
            assert!(!plain_ok(s), "{s:?} should be quoted");
        }
    }
}
