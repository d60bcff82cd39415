//! [`Node`]: a JSON document tree that borrows its strings from the bytes it was parsed from.
//!
//! The snapshot hot path decodes every listed object, strips a few fields and emits YAML. With
//! `serde_json::Value` each key and string is copied into its own allocation and each mapping
//! is a B-tree; a `Node` keeps keys and unescaped strings as slices of the response body and
//! mappings as vectors in document order, which halves the decoding cost and makes dropping a
//! page cheap. Its meaning is exactly that of `serde_json::Value` (numbers go through
//! `serde_json::Number`; of a key given twice the last value counts), and the YAML emitter,
//! which works on `Node`, gives both the same bytes (tested).
//!
//! Owns: the tree type, its decoding and conversion from `Value`. Must not touch: which fields
//! are kept (`canonical`) or how they are written (`yaml`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON value whose strings borrow from the parsed bytes where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string, borrowed from the input when it has no escapes.
    String(Cow<'a, str>),
    /// A sequence.
    Array(Vec<Node<'a>>),
    /// Entries in document order; a key may occur more than once (the last one counts).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// The value of `key` in a mapping (the last occurrence), `None` for other nodes.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|e| &e.1),
            _ => None,
        }
    }

    /// Mutable access to the value of `key` (the last occurrence).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        match self {
            Node::Object(entries) => entries
                .iter_mut()
                .rev()
                .find(|(k, _)| k == key)
                .map(|e| &mut e.1),
            _ => None,
        }
    }

    /// Removes every occurrence of `key` from a mapping; other nodes are left unchanged.
    pub fn remove(&mut self, key: &str) {
        if let Node::Object(entries) = self {
            entries.retain(|(k, _)| k != key);
        }
    }

    /// Removes every entry whose key is one of `keys` (one pass); other nodes are left
    /// unchanged.
    pub(crate) fn remove_all(&mut self, keys: &[&str]) {
        if let Node::Object(entries) = self {
            entries.retain(|(k, _)| !keys.contains(&k.as_ref()));
        }
    }

    /// Sets `key` to `value` in a mapping (replacing every occurrence); other nodes are left
    /// unchanged.
    pub fn set(&mut self, key: &'a str, value: Node<'a>) {
        if let Node::Object(entries) = self {
            entries.retain(|(k, _)| k != key);
            entries.push((Cow::Borrowed(key), value));
        }
    }

    /// The string of a string node.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is a mapping.
    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }
}

impl<'a> From<&'a Value> for Node<'a> {
    fn from(v: &'a Value) -> Node<'a> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.clone()),
            Value::String(s) => Node::String(Cow::Borrowed(s)),
            Value::Array(items) => Node::Array(items.iter().map(Node::from).collect()),
            Value::Object(m) => Node::Object(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from(v)))
                    .collect(),
            ),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Node<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node<'de>, E> {
        // As serde_json::Value: a non-finite float (impossible in JSON text) is null.
        Ok(Number::from_f64(n).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(Key(k)) = map.next_key()? {
            entries.push((k, map.next_value()?));
        }
        Ok(Node::Object(entries))
    }
}

/// A mapping key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_unless_escaped() {
        let text = br#"{"a":"plain","b":"esc\naped","c\"k":[1,-2,2.5,true,null]}"#;
        let n: Node = serde_json::from_slice(text).unwrap();
        let Node::Object(entries) = &n else {
            panic!("{n:?}")
        };
        assert!(matches!(entries[0].1, Node::String(Cow::Borrowed("plain"))));
        assert!(matches!(&entries[1].1, Node::String(Cow::Owned(s)) if s == "esc\naped"));
        assert_eq!(entries[2].0, "c\"k");
        let v: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(Node::from(&v).get("c\"k"), n.get("c\"k"));
    }

    #[test]
    fn the_last_of_duplicate_keys_counts() {
        let mut n: Node = serde_json::from_slice(br#"{"k":1,"k":2}"#).unwrap();
        assert_eq!(n.get("k"), Some(&Node::Number(2.into())));
        n.set("k", Node::Bool(true));
        assert_eq!(n, Node::Object(vec![("k".into(), Node::Bool(true))]));
        n.remove("k");
        assert_eq!(n, Node::Object(vec![]));
    }
}
