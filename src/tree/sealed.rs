//! The sealed value form of the tree format (docs/design.md §3, "Sealed values"): a value
//! encrypted at rest is one string, `k8s-snap:v2:<key id>:<fingerprint>:<ciphertext>` (sealed
//! under the data key `.k8s-snap/keys/<key id>.age` of the snapshot), or, as written before
//! data keys, `k8s-snap:age:v1:<fingerprint>:<ciphertext>` (one age file per value; still
//! read).
//!
//! Owns: recognising and splitting those forms, and the key files' paths. Must not touch: keys
//! and cryptography (in `crypt`, which writes and opens these values).

/// What every value sealed under a data key starts with.
pub const SEALED_PREFIX: &str = "k8s-snap:v2:";
/// What every value sealed as one age file (the first format) starts with.
pub const SEALED_PREFIX_V1: &str = "k8s-snap:age:v1:";
/// The directory of a snapshot tree holding its wrapped data keys (`<key id>.age`).
pub const KEYS_DIR: &str = ".k8s-snap/keys";

/// The parts of a sealed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The id of the data key the value is sealed under; `None` for the age form (v1).
    pub key_id: Option<&'a str>,
    /// The keyed fingerprint of the plaintext.
    pub fingerprint: &'a str,
    /// The ciphertext, standard base64.
    pub ciphertext: &'a str,
}

/// The parts of a sealed value; `None` when the string is not one. (A Secret's `data` values
/// are base64, which has no `:`, so none is mistaken for one.)
pub fn parse_sealed(s: &str) -> Option<Sealed<'_>> {
    if let Some(rest) = s.strip_prefix(SEALED_PREFIX) {
        let (key_id, rest) = rest.split_once(':')?;
        let (fingerprint, ciphertext) = rest.split_once(':')?;
        if !is_key_id(key_id) || fingerprint.is_empty() || ciphertext.contains(':') {
            return None;
        }
        return Some(Sealed {
            key_id: Some(key_id),
            fingerprint,
            ciphertext,
        });
    }
    let rest = s.strip_prefix(SEALED_PREFIX_V1)?;
    let (fingerprint, ciphertext) = rest.split_once(':')?;
    Some(Sealed {
        key_id: None,
        fingerprint,
        ciphertext,
    })
}

/// Whether `id` has the form of a data key id: 16 lowercase hex digits.
pub fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The path in a snapshot tree of the wrapped data key `id`.
pub fn key_file(id: &str) -> String {
    format!("{KEYS_DIR}/{id}.age")
}

/// The key id of a file path under [`KEYS_DIR`]; `None` for any other path.
pub fn key_id_of_file(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix(KEYS_DIR)?
        .strip_prefix('/')?
        .strip_suffix(".age")?;
    is_key_id(id).then_some(id)
}

/// Whether the string is a sealed value (either form).
pub fn is_sealed(s: &str) -> bool {
    parse_sealed(s).is_some()
}

/// The fingerprint of a sealed value: two sealed values of the same object and key with the
/// same fingerprint hold the same plaintext, whatever their ciphertexts.
pub fn sealed_fingerprint(s: &str) -> Option<&str> {
    parse_sealed(s).map(|p| p.fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let v2 = "k8s-snap:v2:0123456789abcdef:fp_-x:YWJj+/==";
        assert_eq!(
            parse_sealed(v2),
            Some(Sealed {
                key_id: Some("0123456789abcdef"),
                fingerprint: "fp_-x",
                ciphertext: "YWJj+/=="
            })
        );
        let v1 = "k8s-snap:age:v1:fp:YWJj";
        assert_eq!(
            parse_sealed(v1).map(|p| (p.key_id, p.fingerprint)),
            Some((None, "fp"))
        );
        for not in [
            "c2VjcmV0",
            "k8s-snap:v2:short:fp:YWJj",
            "k8s-snap:v2:0123456789abcdef:fp",
            "k8s-snap:v2:0123456789ABCDEF:fp:YWJj",
            "k8s-snap:v2:0123456789abcdef::YWJj",
        ] {
            assert!(!is_sealed(not), "{not}");
        }
        assert_eq!(
            key_file("0123456789abcdef"),
            ".k8s-snap/keys/0123456789abcdef.age"
        );
        assert_eq!(
            key_id_of_file(".k8s-snap/keys/0123456789abcdef.age"),
            Some("0123456789abcdef")
        );
        assert_eq!(key_id_of_file(".k8s-snap/keys/x.age"), None);
        assert_eq!(key_id_of_file(".k8s-snap/snapshot.yaml"), None);
    }
}
