//! Secrets encrypted at rest (docs/design.md §3, "Sealed values"; docs/encryption.md): age
//! X25519 keys, the sealed value form written in place of each Secret value, the keyed
//! fingerprint that lets an unchanged value keep its previous ciphertext (so unchanged Secrets
//! stay byte-identical blobs), and opening sealed values again with identities.
//!
//! A sealed value is one string: `k8s-snap:age:v1:<fingerprint>:<ciphertext>`, where
//! `<ciphertext>` is the binary age file (X25519 recipients) in standard base64 and
//! `<fingerprint>` the first 16 bytes, base64url without padding, of HMAC-SHA256 under the
//! fingerprint key of `content path NUL field NUL key NUL value`. Binding the object path and
//! key means equal values of two Secrets do not show as equal; the HMAC key means a reader of
//! the store cannot test guesses.
//!
//! Owns: keys and key files, sealing and unsealing values and whole Secrets, the fingerprint
//! key file of a mirror. Pure apart from those key files. Must not touch: git (callers hand it
//! file contents), clusters, what else is canonical in an object (`tree`).

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;

use crate::tree::{ContentPath, Node};

pub use crate::tree::sealed::{SEALED_PREFIX, is_sealed, parse_sealed, sealed_fingerprint};
/// Name of the fingerprint key file inside the mirror directory (`mirror.git/`).
pub const FINGERPRINT_KEY_FILE: &str = "k8s-snap-fingerprint.key";
/// The Secret fields whose values are sealed.
pub const SEALED_FIELDS: [&str; 2] = ["data", "stringData"];
/// The pseudo-field under which a sealed annotation (a copy of the Secret, such as
/// `kubectl.kubernetes.io/last-applied-configuration`) is fingerprinted.
const ANNOTATIONS: &str = "metadata.annotations";

const FINGERPRINT_BYTES: usize = 16;
const KEY_BYTES: usize = 32;

/// Errors of keys, sealing and unsealing. None quotes a value or a private key.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// An age recipient is not valid.
    #[error(
        "invalid age recipient {recipient:?}: {reason} (expected age1…, from `k8s-snap keygen`)"
    )]
    BadRecipient {
        /// The rejected recipient.
        recipient: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The identity file is not valid.
    #[error("identity file {path}: {reason}")]
    BadIdentityFile {
        /// The identity file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The identity file cannot be read or written.
    #[error("identity file {path}: {source}")]
    IdentityIo {
        /// The identity file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists already; it is never overwritten.
    #[error("{path} already exists; not overwriting a key")]
    KeyExists {
        /// The key file.
        path: PathBuf,
    },
    /// The fingerprint key is not valid.
    #[error("fingerprint key {path}: {reason}")]
    FingerprintKey {
        /// The fingerprint key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The fingerprint key cannot be read or written.
    #[error("fingerprint key {path}: {source}")]
    FingerprintKeyIo {
        /// The fingerprint key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encrypting a Secret value failed.
    #[error("encrypting a value of {path}: {reason}")]
    Encrypt {
        /// The Secret's content path.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// The snapshot holds sealed values and no identity was given.
    #[error(
        "snapshot {snapshot:?} holds Secrets encrypted to {}; nothing was written: give the identity of one of them (--identity FILE or K8S_SNAP_IDENTITY)",
        recipients_list(recipients)
    )]
    NoIdentity {
        /// The snapshot's name.
        snapshot: String,
        /// The recipients its values are sealed to.
        recipients: Vec<String>,
    },
    /// No identity given matches the recipients of a sealed value.
    #[error(
        "snapshot {snapshot:?}: {path} is encrypted to {}, and no identity given ({}) matches; nothing was written",
        recipients_list(recipients),
        recipients_list(given)
    )]
    WrongIdentity {
        /// The snapshot's name.
        snapshot: String,
        /// The Secret's content path.
        path: String,
        /// The recipients the value is sealed to.
        recipients: Vec<String>,
        /// The recipients of the identities given.
        given: Vec<String>,
    },
    /// A sealed value cannot be decoded or decrypted.
    #[error("snapshot {snapshot:?}: {path}: a sealed value is damaged: {reason}")]
    Damaged {
        /// The snapshot's name.
        snapshot: String,
        /// The Secret's content path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn recipients_list(r: &[String]) -> String {
    if r.is_empty() {
        "an unrecorded recipient".to_owned()
    } else {
        r.join(", ")
    }
}

/// A set of recipients (public keys, `age1…`), sorted and without duplicates.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    names: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl Recipients {
    /// Parses recipients as given on the command line or in a spec (`age1…` each; a comma- or
    /// space-separated list in one string is split).
    pub fn parse<S: AsRef<str>>(given: &[S]) -> Result<Recipients, CryptError> {
        let mut parsed = Vec::new();
        for s in given {
            for part in s
                .as_ref()
                .split([',', ' ', '\n', '\t'])
                .filter(|p| !p.is_empty())
            {
                let key: age::x25519::Recipient =
                    part.parse().map_err(|reason| CryptError::BadRecipient {
                        recipient: part.to_owned(),
                        reason,
                    })?;
                parsed.push((key.to_string(), key));
            }
        }
        parsed.sort_by(|a, b| a.0.cmp(&b.0));
        parsed.dedup_by(|a, b| a.0 == b.0);
        let (names, keys) = parsed.into_iter().unzip();
        Ok(Recipients { keys, names })
    }

    /// Whether there is no recipient.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The recipients as `age1…` strings, sorted (what `.k8s-snap/snapshot.yaml` records).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Encrypts `plaintext` to every recipient: a binary age file.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(plaintext.len() + 200 + 90 * self.keys.len());
        let mut w = encryptor.wrap_output(&mut out).map_err(|e| e.to_string())?;
        w.write_all(plaintext).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }
}

/// Identities (private keys) that open sealed values, with the recipients they answer to.
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    recipients: Vec<String>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities(for {:?})", self.recipients)
    }
}

impl Identities {
    /// Reads an age identity file: one `AGE-SECRET-KEY-1…` per line, `#` comments and blank
    /// lines ignored (the format `age-keygen` and `k8s-snap keygen` write).
    pub fn from_file(path: &Path) -> Result<Identities, CryptError> {
        let text = std::fs::read_to_string(path).map_err(|source| CryptError::IdentityIo {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| CryptError::BadIdentityFile {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses the text of an identity file (errors name the line, never quote it).
    pub fn parse(text: &str) -> Result<Identities, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key: age::x25519::Identity = line
                .parse()
                .map_err(|_| format!("line {}: not an age X25519 identity", i + 1))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no identity in the file".into());
        }
        let recipients = keys.iter().map(|k| k.to_public().to_string()).collect();
        Ok(Identities { keys, recipients })
    }

    /// The recipients (`age1…`) these identities open.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, age::DecryptError> {
        let decryptor = age::Decryptor::new_buffered(ciphertext)?;
        let mut reader = decryptor.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))?;
        let mut out = Vec::with_capacity(ciphertext.len());
        reader.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// A new identity: its file text (private; comments give the recipient) and its recipient.
pub fn generate_identity() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let text = format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    (text, recipient)
}

/// Writes a new identity to `path` (mode 0600, atomically, never over an existing file) and
/// returns its recipient.
pub fn write_new_identity(path: &Path) -> Result<String, CryptError> {
    let (text, recipient) = generate_identity();
    write_new_private_file(path, text.as_bytes()).map_err(|e| match e {
        NewFileError::Exists => CryptError::KeyExists {
            path: path.to_owned(),
        },
        NewFileError::Io(source) => CryptError::IdentityIo {
            path: path.to_owned(),
            source,
        },
    })?;
    Ok(recipient)
}

enum NewFileError {
    Exists,
    Io(std::io::Error),
}

/// Creates `path` with `bytes`, readable by the owner only, all or nothing.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), NewFileError> {
    if path.exists() {
        return Err(NewFileError::Exists);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates files with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(NewFileError::Io)?;
    tmp.write_all(bytes).map_err(NewFileError::Io)?;
    tmp.as_file().sync_all().map_err(NewFileError::Io)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            NewFileError::Exists
        } else {
            NewFileError::Io(e.error)
        }
    })?;
    Ok(())
}

/// The key of the keyed fingerprints: 32 random bytes, kept in the mirror directory
/// ([`FINGERPRINT_KEY_FILE`], mode 0600), never in a snapshot or the store.
#[derive(Clone)]
pub struct FingerprintKey([u8; KEY_BYTES]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FingerprintKey({})", self.id())
    }
}

impl FingerprintKey {
    /// A new random key (from the operating system, through age's own key generation).
    pub fn generate() -> FingerprintKey {
        // An age identity is 32 uniformly random bytes from the OS generator; hash it so the
        // key is unrelated to any usable X25519 key.
        let seed = age::x25519::Identity::generate();
        let digest = <Sha256 as sha2::Digest>::digest(seed.to_string().expose_secret().as_bytes());
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&digest);
        FingerprintKey(key)
    }

    /// The key of the mirror at `git_dir`, created on first use.
    pub fn load_or_create(git_dir: &Path) -> Result<FingerprintKey, CryptError> {
        let path = git_dir.join(FINGERPRINT_KEY_FILE);
        let io = |source| CryptError::FingerprintKeyIo {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(git_dir).map_err(io)?;
        let key = Self::generate();
        let text = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(key.0)
        );
        match write_new_private_file(&path, text.as_bytes()) {
            Ok(()) => Ok(key),
            // Another process created it first: use theirs.
            Err(NewFileError::Exists) => {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                Self::parse(&path, &text)
            }
            Err(NewFileError::Io(e)) => Err(io(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<FingerprintKey, CryptError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_BYTES)
            .ok_or_else(|| CryptError::FingerprintKey {
                path: path.to_owned(),
                reason: "not 32 bytes in base64; remove it to start a new key".into(),
            })?;
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&bytes);
        Ok(FingerprintKey(key))
    }

    /// A public name of the key (recorded in `snapshot.yaml`): ciphertexts are reused only
    /// from a snapshot fingerprinted with the same key.
    pub fn id(&self) -> String {
        let mac = self.mac(&[b"k8s-snap fingerprint key id"]);
        hex::encode(&mac[..8])
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        #[allow(
            clippy::expect_used,
            reason = "HMAC accepts keys of any length: new_from_slice cannot fail"
        )]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// The keyed fingerprint of one value of one object.
    pub fn fingerprint(&self, path: &str, field: &str, key: &str, value: &str) -> String {
        let mac = self.mac(&[
            b"k8s-snap/v1",
            path.as_bytes(),
            field.as_bytes(),
            key.as_bytes(),
            value.as_bytes(),
        ]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..FINGERPRINT_BYTES])
    }
}

/// The ciphertexts of a previous snapshot, by fingerprint.
pub type Previous = HashMap<String, String>;

/// Adds the sealed values of one object file of a previous snapshot to `previous`.
///
/// A text scan, not a YAML parse (a snapshot of many Secrets reads them all): a sealed value
/// is one token of `[A-Za-z0-9+/=_:-]` starting with the prefix, on one line, plain or inside
/// double quotes (it needs no escapes). Reuse is keyed by the fingerprint, which binds the
/// object path, field, key and value, so a token can only ever stand for its own value.
pub fn collect_sealed(yaml: &str, previous: &mut Previous) {
    let token =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | ':' | '-');
    let mut rest = yaml;
    while let Some(at) = rest.find(SEALED_PREFIX) {
        let from = &rest[at..];
        let end = from.find(|c: char| !token(c)).unwrap_or(from.len());
        let s = &from[..end];
        if let Some((fp, _)) = parse_sealed(s) {
            previous.insert(fp.to_owned(), s.to_owned());
        }
        rest = &from[end.max(1)..];
    }
}

/// What seals the Secrets of one snapshot: the recipients, the fingerprint key, and the
/// previous snapshot's ciphertexts (reused for unchanged values).
#[derive(Debug)]
pub struct Sealer {
    /// The recipients values are sealed to.
    pub recipients: Recipients,
    /// The key of the values' fingerprints.
    pub key: FingerprintKey,
    /// The previous snapshot's ciphertexts, reused for unchanged values.
    pub previous: Previous,
}

/// Whether an annotation value of a Secret holds a copy of its values (last-applied).
fn annotation_holds_copy(text: &str) -> bool {
    text.contains("\"data\"") || text.contains("\"stringData\"")
}

impl Sealer {
    /// The sealed form of `value` (field `field`, key `key` of the object at `path`): the
    /// previous snapshot's when its fingerprint matches, else a new encryption.
    pub fn seal(
        &self,
        path: &str,
        field: &str,
        key: &str,
        value: &str,
    ) -> Result<String, CryptError> {
        let fp = self.key.fingerprint(path, field, key, value);
        if let Some(sealed) = self.previous.get(&fp) {
            return Ok(sealed.clone());
        }
        let ct = self
            .recipients
            .encrypt(value.as_bytes())
            .map_err(|reason| CryptError::Encrypt {
                path: path.to_owned(),
                reason,
            })?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(ct);
        let mut out = String::with_capacity(SEALED_PREFIX.len() + fp.len() + 1 + b64.len());
        out.push_str(SEALED_PREFIX);
        out.push_str(&fp);
        out.push(':');
        out.push_str(&b64);
        Ok(out)
    }

    /// Seals a Secret in place (a canonical object of the snapshot pipeline): every value of
    /// `data` and `stringData`, and every annotation holding a copy of them. Other objects
    /// are left alone. Returns how many values were sealed.
    pub fn seal_node(&self, path: &ContentPath, obj: &mut Node<'_>) -> Result<usize, CryptError> {
        if obj.get("kind").and_then(Node::as_str) != Some("Secret") {
            return Ok(0);
        }
        let p = path.as_str();
        let mut n = 0;
        for field in SEALED_FIELDS {
            if let Some(Node::Object(entries)) = obj.get_mut(field) {
                for (k, v) in entries.iter_mut() {
                    if let Node::String(s) = v {
                        *v = Node::String(self.seal(p, field, k, s)?.into());
                        n += 1;
                    }
                }
            }
        }
        if let Some(Node::Object(entries)) = obj
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
        {
            for (k, v) in entries.iter_mut() {
                if let Node::String(s) = v
                    && annotation_holds_copy(s)
                {
                    *v = Node::String(self.seal(p, ANNOTATIONS, k, s)?.into());
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

impl Recipients {
    /// Re-encrypts a sealed value for these recipients, keeping its fingerprint (rekey).
    pub fn reseal(&self, sealed: &str, ids: &Identities, path: &str) -> Result<String, CryptError> {
        let (fp, _) = parse_sealed(sealed).ok_or_else(|| CryptError::Damaged {
            snapshot: String::new(),
            path: path.to_owned(),
            reason: "not a sealed value".into(),
        })?;
        let plain = open_value(sealed, ids).map_err(|e| match e {
            OpenError::NoMatch => CryptError::WrongIdentity {
                snapshot: String::new(),
                path: path.to_owned(),
                recipients: Vec::new(),
                given: ids.recipients.clone(),
            },
            OpenError::Damaged(reason) => CryptError::Damaged {
                snapshot: String::new(),
                path: path.to_owned(),
                reason,
            },
        })?;
        let ct = self.encrypt(&plain).map_err(|reason| CryptError::Encrypt {
            path: path.to_owned(),
            reason,
        })?;
        Ok(format!(
            "{SEALED_PREFIX}{fp}:{}",
            base64::engine::general_purpose::STANDARD.encode(ct)
        ))
    }
}

/// Why a sealed value did not open.
#[derive(Debug)]
pub enum OpenError {
    /// None of the identities is a recipient of the value.
    NoMatch,
    /// Not a well-formed sealed value, or it fails to authenticate.
    Damaged(String),
}

/// The plaintext of a sealed value.
pub fn open_value(sealed: &str, ids: &Identities) -> Result<Vec<u8>, OpenError> {
    let (_, b64) =
        parse_sealed(sealed).ok_or_else(|| OpenError::Damaged("not a sealed value".into()))?;
    let ct = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| OpenError::Damaged("not base64".into()))?;
    ids.decrypt(&ct).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => OpenError::NoMatch,
        other => OpenError::Damaged(other.to_string()),
    })
}

/// Whether a (canonical) object holds sealed values.
pub fn has_sealed(obj: &Value) -> bool {
    if obj.get("kind").and_then(Value::as_str) != Some("Secret") {
        return false;
    }
    let sealed_in = |m: Option<&serde_json::Map<String, Value>>| {
        m.is_some_and(|m| m.values().filter_map(Value::as_str).any(is_sealed))
    };
    SEALED_FIELDS
        .iter()
        .any(|f| sealed_in(obj.get(*f).and_then(Value::as_object)))
        || sealed_in(
            obj.pointer("/metadata/annotations")
                .and_then(Value::as_object),
        )
}

/// Opens every sealed value of an object in place. `recipients` (from the snapshot's
/// metadata) and `snapshot` only make errors precise.
pub fn open_object(
    obj: &mut Value,
    ids: &Identities,
    snapshot: &str,
    path: &str,
    recipients: &[String],
) -> Result<usize, CryptError> {
    if obj.get("kind").and_then(Value::as_str) != Some("Secret") {
        return Ok(0);
    }
    let mut n = 0;
    let mut open_map =
        |m: &mut serde_json::Map<String, Value>, what: &str| -> Result<(), CryptError> {
            for (k, v) in m.iter_mut() {
                let Some(s) = v.as_str().filter(|s| is_sealed(s)) else {
                    continue;
                };
                let plain = open_value(s, ids).map_err(|e| match e {
                    OpenError::NoMatch => CryptError::WrongIdentity {
                        snapshot: snapshot.to_owned(),
                        path: format!("{path} ({what}.{k})"),
                        recipients: recipients.to_vec(),
                        given: ids.recipients.clone(),
                    },
                    OpenError::Damaged(reason) => CryptError::Damaged {
                        snapshot: snapshot.to_owned(),
                        path: format!("{path} ({what}.{k})"),
                        reason,
                    },
                })?;
                let text = String::from_utf8(plain).map_err(|_| CryptError::Damaged {
                    snapshot: snapshot.to_owned(),
                    path: format!("{path} ({what}.{k})"),
                    reason: "the plaintext is not UTF-8".into(),
                })?;
                *v = Value::String(text);
                n += 1;
            }
            Ok(())
        };
    for field in SEALED_FIELDS {
        if let Some(m) = obj.get_mut(field).and_then(Value::as_object_mut) {
            open_map(m, field)?;
        }
    }
    if let Some(m) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        open_map(m, ANNOTATIONS)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keypair() -> (Identities, Recipients) {
        let (text, recipient) = generate_identity();
        (
            Identities::parse(&text).unwrap(),
            Recipients::parse(&[recipient]).unwrap(),
        )
    }

    fn sealer(r: Recipients) -> Sealer {
        Sealer {
            recipients: r,
            key: FingerprintKey::generate(),
            previous: Previous::new(),
        }
    }

    #[test]
    fn seal_open_round_trip_and_reuse() {
        let (ids, r) = keypair();
        let mut s = sealer(r);
        let a = s
            .seal("/api/v1/namespaces/a/secrets/x", "data", "k", "c2VjcmV0")
            .unwrap();
        assert!(
            a.starts_with(SEALED_PREFIX) && !a.contains("c2VjcmV0"),
            "{a}"
        );
        assert_eq!(open_value(&a, &ids).unwrap(), b"c2VjcmV0");
        // Encryption is randomized: without the previous ciphertext a new one differs.
        let b = s
            .seal("/api/v1/namespaces/a/secrets/x", "data", "k", "c2VjcmV0")
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(sealed_fingerprint(&a), sealed_fingerprint(&b));
        // With it, the same bytes come back.
        s.previous
            .insert(sealed_fingerprint(&a).unwrap().to_owned(), a.clone());
        let c = s
            .seal("/api/v1/namespaces/a/secrets/x", "data", "k", "c2VjcmV0")
            .unwrap();
        assert_eq!(a, c);
        // Another object or key with the same value: another fingerprint.
        let d = s
            .seal("/api/v1/namespaces/a/secrets/y", "data", "k", "c2VjcmV0")
            .unwrap();
        assert_ne!(sealed_fingerprint(&a), sealed_fingerprint(&d));
    }

    #[test]
    fn wrong_identity_and_several_recipients() {
        let (ids1, r1) = keypair();
        let (ids2, r2) = keypair();
        let (ids3, _) = keypair();
        let both = Recipients::parse(&[r1.names()[0].clone(), r2.names()[0].clone()]).unwrap();
        let s = sealer(both);
        let v = s.seal("/p", "data", "k", "dg==").unwrap();
        assert_eq!(open_value(&v, &ids1).unwrap(), b"dg==");
        assert_eq!(open_value(&v, &ids2).unwrap(), b"dg==");
        assert!(matches!(open_value(&v, &ids3), Err(OpenError::NoMatch)));
        let mut obj = serde_json::json!({"kind": "Secret", "data": {"k": v}});
        let e = open_object(&mut obj, &ids3, "s1", "/p", s.recipients.names()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&s.recipients.names()[0]) && msg.contains("s1"),
            "{msg}"
        );
        assert!(!msg.contains("dg=="), "{msg}");
    }

    #[test]
    fn bad_keys_are_named_not_quoted() {
        let e = Recipients::parse(&["age1nope"]).unwrap_err().to_string();
        assert!(e.contains("age1nope"), "{e}");
        let e = Identities::parse("# c\nAGE-SECRET-KEY-1SECRETPARTX\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("SECRETPART"), "{e}");
        assert!(Identities::parse("# only comments\n").is_err());
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        let recipient = write_new_identity(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ids = Identities::from_file(&path).unwrap();
        assert_eq!(ids.recipients(), [recipient]);
        assert!(matches!(
            write_new_identity(&path),
            Err(CryptError::KeyExists { .. })
        ));
        let k1 = FingerprintKey::load_or_create(dir.path()).unwrap();
        let k2 = FingerprintKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.id(), k2.id());
        let mode = std::fs::metadata(dir.path().join(FINGERPRINT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn secrets_are_sealed_whole_and_opened_back() {
        let (ids, r) = keypair();
        let s = sealer(r);
        let original = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "x", "namespace": "a", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"k\":\"c2VjcmV0\"}}",
                "note": "plain"}},
            "data": {"k": "c2VjcmV0", "e": ""},
            "stringData": {"t": "plain-token"},
        });
        let path = ContentPath::new("", "v1", "secrets", Some("a"), "x").unwrap();
        let mut node = Node::from(&original);
        assert_eq!(s.seal_node(&path, &mut node).unwrap(), 4);
        let yaml = crate::tree::emit(&node);
        assert!(
            !yaml.contains("c2VjcmV0") && !yaml.contains("plain-token"),
            "{yaml}"
        );
        assert!(
            yaml.contains("note: plain") && yaml.contains("type: Opaque"),
            "{yaml}"
        );
        let mut back = crate::tree::from_yaml(&yaml).unwrap();
        assert!(has_sealed(&back));
        let mut prev = Previous::new();
        collect_sealed(&yaml, &mut prev);
        assert_eq!(prev.len(), 4);
        assert_eq!(
            open_object(&mut back, &ids, "s", path.as_str(), &[]).unwrap(),
            4
        );
        assert_eq!(back, original);
        assert!(!has_sealed(&back));
        // Other kinds are untouched.
        let cm = serde_json::json!({"kind": "ConfigMap", "data": {"k": "v"}});
        let mut node = Node::from(&cm);
        assert_eq!(s.seal_node(&path, &mut node).unwrap(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_value_round_trips(value in ".{0,300}", key in "[a-zA-Z0-9._-]{1,20}") {
            let (text, recipient) = generate_identity();
            let ids = Identities::parse(&text).unwrap();
            let s = sealer(Recipients::parse(&[recipient]).unwrap());
            let sealed = s.seal("/api/v1/namespaces/n/secrets/s", "stringData", &key, &value).unwrap();
            prop_assert!(is_sealed(&sealed));
            prop_assert_eq!(open_value(&sealed, &ids).unwrap(), value.as_bytes().to_vec());
            // The fingerprint is a function of (path, field, key, value) under the key.
            let fp = s.key.fingerprint("/api/v1/namespaces/n/secrets/s", "stringData", &key, &value);
            prop_assert_eq!(sealed_fingerprint(&sealed), Some(fp.as_str()));
        }
    }
}
