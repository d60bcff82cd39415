//! The sealed value form of the tree format (docs/design.md §3, "Sealed values"): a Secret
//! value encrypted at rest is the string `k8s-snap:age:v1:<fingerprint>:<ciphertext>`.
//!
//! Owns: recognising and splitting that form. Must not touch: keys and cryptography (in
//! `crypt`, which writes and opens these values).

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "k8s-snap:age:v1:";

/// The fingerprint and the base64 ciphertext of a sealed value; `None` when the string is not
/// one. (A Secret's `data` values are base64, which has no `:`, so none is mistaken for one.)
pub fn parse_sealed(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix(SEALED_PREFIX)?;
    rest.split_once(':')
}

/// Whether the string is a sealed value.
pub fn is_sealed(s: &str) -> bool {
    parse_sealed(s).is_some()
}

/// The fingerprint of a sealed value: two sealed values of the same object and key with the
/// same fingerprint hold the same plaintext, whatever their ciphertexts.
pub fn sealed_fingerprint(s: &str) -> Option<&str> {
    parse_sealed(s).map(|(fp, _)| fp)
}
