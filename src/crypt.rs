//! Secrets encrypted at rest (docs/design.md §3, "Sealed values"; docs/encryption.md): age
//! X25519 keys, the data key of a snapshot (wrapped with age to the recipients, stored in the
//! snapshot tree), the sealed value form written in place of each Secret value, the keyed
//! fingerprint that lets an unchanged value keep its previous sealed bytes (so unchanged
//! Secrets stay byte-identical blobs), and opening sealed values again with identities.
//!
//! A sealed value is one string: `k8s-snap:v2:<key id>:<fingerprint>:<ciphertext>`, where
//! `<ciphertext>` is, in standard base64, a random 24-byte nonce followed by the
//! XChaCha20-Poly1305 encryption under the data key `<key id>` (associated data: the object
//! path, field and key) of one form byte and the value (`1` and its decoded bytes when it is
//! canonical base64, else `0` and its text), and `<fingerprint>` the first 16 bytes, base64url without
//! padding, of HMAC-SHA256 under the fingerprint key of `content path NUL field NUL key NUL
//! value`. Binding the object path and key means equal values of two Secrets do not show as
//! equal; the HMAC key means a reader of the store cannot test guesses. The first form,
//! `k8s-snap:age:v1:<fingerprint>:<age file>`, is still opened and rekeyed.
//!
//! Owns: keys and key files, data keys, sealing and unsealing values, whole Secrets and the
//! user-named fields of other objects (`--encrypt-path`, with their annotation copies), the
//! fingerprint key file and the sealed-values cache of a mirror. Pure apart from those files.
//! Must not touch: git (callers hand it file contents), clusters, what else is canonical in an
//! object (`tree`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use age::secrecy::ExposeSecret as _;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::tree::{ContentPath, Node};

pub use crate::tree::sealed::{
    KEYS_DIR, SEALED_PREFIX, SEALED_PREFIX_V1, Sealed, is_sealed, key_file, key_id_of_file,
    parse_sealed, sealed_fingerprint,
};
/// Name of the fingerprint key file inside the mirror directory (`mirror.git/`).
pub const FINGERPRINT_KEY_FILE: &str = "k8s-snap-fingerprint.key";
/// The Secret fields whose values are sealed.
pub const SEALED_FIELDS: [&str; 2] = ["data", "stringData"];
/// The pseudo-field under which a sealed annotation (a copy of the Secret, such as
/// `kubectl.kubernetes.io/last-applied-configuration`) is fingerprinted.
const ANNOTATIONS: &str = "metadata.annotations";

const FINGERPRINT_BYTES: usize = 16;
/// The first plaintext byte of a value sealed under a data key: the value is text as given.
const FORM_TEXT: u8 = 0;
/// The first plaintext byte of a value sealed under a data key: the value is the standard
/// base64 of the bytes that follow.
const FORM_BASE64: u8 = 1;
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
        "snapshot {snapshot:?} holds Secrets encrypted to {}; nothing was written: give the identity of one of them (--identity FILE or K8S_SNAP_IDENTITY; a Restore's spec.identitySecretRef; controller --watch-identity-file for file drops)",
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

    /// Reads several identity files (a repeated `--identity`) into one set; `None` when
    /// `paths` is empty. The first file that cannot be read or parsed is the error.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Option<Identities>, CryptError> {
        let mut all: Option<Identities> = None;
        for path in paths {
            let ids = Self::from_file(path.as_ref())?;
            match &mut all {
                None => all = Some(ids),
                Some(all) => {
                    for (key, recipient) in ids.keys.into_iter().zip(ids.recipients) {
                        if !all.recipients.contains(&recipient) {
                            all.keys.push(key);
                            all.recipients.push(recipient);
                        }
                    }
                }
            }
        }
        Ok(all)
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
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
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

/// A user-named field to seal in the objects of one resource (`--encrypt-path`), written
/// `<resource>[.<group>]:<field path>`, e.g. `widgets.example.com:spec.credentials.password`
/// or `configmaps:data` (core group). The field path is a dotted list of map keys; a string
/// there is sealed, and a map there has each of its string values sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPath {
    /// API group (`""` for the core group).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// The map keys leading to the field.
    pub fields: Vec<String>,
}

impl std::str::FromStr for SealedPath {
    type Err = String;

    fn from_str(s: &str) -> Result<SealedPath, String> {
        let bad = |why: &str| {
            format!(
                "{s:?}: {why} (expected <resource>[.<group>]:<field path>, e.g. widgets.example.com:spec.credentials.password)"
            )
        };
        let (target, path) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let (resource, group) = target.split_once('.').unwrap_or((target, ""));
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !name_ok(resource) || (!group.is_empty() && !name_ok(group)) {
            return Err(bad("not a resource name"));
        }
        let fields: Vec<String> = path.split('.').map(str::to_owned).collect();
        if fields.iter().any(String::is_empty) {
            return Err(bad("an empty field name"));
        }
        if fields[0] == "metadata" || fields[0] == "apiVersion" || fields[0] == "kind" {
            return Err(bad("metadata, apiVersion and kind stay readable"));
        }
        Ok(SealedPath {
            group: group.to_owned(),
            resource: resource.to_owned(),
            fields,
        })
    }
}

impl std::fmt::Display for SealedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        write!(f, ":{}", self.fields.join("."))
    }
}

impl SealedPath {
    /// Whether it names fields of `group`/`resource`.
    pub fn applies_to(&self, group: &str, resource: &str) -> bool {
        self.group == group && self.resource == resource
    }
}

/// The sealed values of a previous snapshot, by fingerprint (reused for unchanged values).
pub type Previous = HashMap<String, String>;

/// Adds the values sealed under data keys in one file of a previous snapshot (or in the
/// sealed-values cache) to `previous`.
///
/// A text scan, not a YAML parse (a snapshot of many Secrets reads them all): a sealed value
/// is one token of `[A-Za-z0-9+/=_:-]` starting with the prefix, on one line, plain or inside
/// double quotes (it needs no escapes). Reuse is keyed by the fingerprint, which binds the
/// object path, field, key and value, so a token can only ever stand for its own value. Values
/// of the first (age per value) form are not reused: they are sealed anew under a data key.
pub fn collect_sealed(yaml: &str, previous: &mut Previous) {
    let token =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | ':' | '-');
    let mut rest = yaml;
    while let Some(at) = rest.find(SEALED_PREFIX) {
        let from = &rest[at..];
        let end = from.find(|c: char| !token(c)).unwrap_or(from.len());
        let s = &from[..end];
        if let Some(p) = parse_sealed(s)
            && p.key_id.is_some()
        {
            previous.insert(p.fingerprint.to_owned(), s.to_owned());
        }
        rest = &from[end.max(1)..];
    }
}

/// The associated data of a value sealed under a data key: the value can only be opened at
/// the object path, field and key it was sealed for (moving it elsewhere fails to open).
fn associated_data(path: &str, field: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + path.len() + field.len() + key.len());
    aad.extend_from_slice(b"k8s-snap/v2\0");
    aad.extend_from_slice(path.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key.as_bytes());
    aad
}

/// A data key: 32 random bytes under which values are sealed with XChaCha20-Poly1305 (a
/// random 24-byte nonce per value), stored in the snapshot tree wrapped with age to the
/// recipients (`.k8s-snap/keys/<id>.age`). One age encryption per snapshot instead of one
/// per value.
pub struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

fn random_bytes<const N: usize>(what: &str) -> Result<[u8; N], CryptError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|e| CryptError::Encrypt {
        path: what.to_owned(),
        reason: format!("the system's random generator failed: {e}"),
    })?;
    Ok(out)
}

impl DataKey {
    fn from_bytes(id: String, key: &[u8; KEY_BYTES]) -> DataKey {
        DataKey {
            id,
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// The key's id (16 hex digits), named by every value sealed under it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sealed form of `value`, with fingerprint `fp`, for `field`/`key` of the object at
    /// `path`. The plaintext is one form byte and the value: `1` and the decoded bytes when
    /// the value is canonical standard base64 (every Secret `data` value: the sealed value is
    /// then no larger than a base64 value in the clear), else `0` and the text.
    fn seal(
        &self,
        fp: &str,
        path: &str,
        field: &str,
        key: &str,
        value: &str,
    ) -> Result<String, CryptError> {
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut plain = Vec::with_capacity(value.len() + 1);
        // `STANDARD` refuses non-canonical padding and trailing bits: a value it decodes, of
        // the length its bytes encode to, is exactly their encoding.
        match engine.decode(value) {
            Ok(bytes) if base64::encoded_len(bytes.len(), true) == Some(value.len()) => {
                plain.push(FORM_BASE64);
                plain.extend_from_slice(&bytes);
            }
            _ => {
                plain.push(FORM_TEXT);
                plain.extend_from_slice(value.as_bytes());
            }
        }
        let value = plain.as_slice();
        let nonce = random_bytes::<24>(path)?;
        let aad = associated_data(path, field, key);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptError::Encrypt {
                path: path.to_owned(),
                reason: "the cipher refused the value".into(),
            })?;
        let mut raw = Vec::with_capacity(nonce.len() + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut out = String::with_capacity(SEALED_PREFIX.len() + 18 + fp.len() + 1 + b64.len());
        out.push_str(SEALED_PREFIX);
        out.push_str(&self.id);
        out.push(':');
        out.push_str(fp);
        out.push(':');
        out.push_str(&b64);
        Ok(out)
    }

    fn open(&self, b64: &str, path: &str, field: &str, key: &str) -> Result<Vec<u8>, OpenError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| OpenError::Damaged("not base64".into()))?;
        if raw.len() < 24 + 16 {
            return Err(OpenError::Damaged("too short".into()));
        }
        let (nonce, ct) = raw.split_at(24);
        let aad = associated_data(path, field, key);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| {
                OpenError::Damaged(
                    "it fails to authenticate (altered, or moved from another object or key)"
                        .into(),
                )
            })?;
        match plain.split_first() {
            Some((&FORM_TEXT, text)) => Ok(text.to_vec()),
            Some((&FORM_BASE64, bytes)) => Ok(base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into_bytes()),
            _ => Err(OpenError::Damaged("unknown plaintext form".into())),
        }
    }
}

impl Identities {
    /// Unwraps the data key `id` from its key file.
    pub fn unwrap_key(&self, id: &str, wrapped: &[u8]) -> Result<DataKey, OpenError> {
        let plain = self.decrypt(wrapped).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoMatch,
            other => OpenError::Damaged(other.to_string()),
        })?;
        let key: [u8; KEY_BYTES] = plain
            .as_slice()
            .try_into()
            .map_err(|_| OpenError::Damaged("a data key is not 32 bytes".into()))?;
        Ok(DataKey::from_bytes(id.to_owned(), &key))
    }
}

impl Recipients {
    /// A key file re-wrapped for these recipients (rekey): the data key, and so every value
    /// sealed under it, is unchanged.
    pub fn rewrap(&self, wrapped: &[u8], ids: &Identities) -> Result<Vec<u8>, OpenError> {
        let plain = ids.decrypt(wrapped).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoMatch,
            other => OpenError::Damaged(other.to_string()),
        })?;
        if plain.len() != KEY_BYTES {
            return Err(OpenError::Damaged("a data key is not 32 bytes".into()));
        }
        self.encrypt(&plain).map_err(OpenError::Damaged)
    }
}

/// What seals the values of one snapshot: the recipients, the fingerprint key, the
/// snapshot's new data key (wrapped once), and the previous snapshot's sealed values and key
/// files (reused for unchanged values, so their bytes stay the same).
pub struct Sealer {
    /// The recipients values are sealed to.
    pub recipients: Recipients,
    /// The key of the values' fingerprints.
    pub key: FingerprintKey,
    previous: Previous,
    previous_keys: BTreeMap<String, Vec<u8>>,
    data_key: DataKey,
    wrapped: Vec<u8>,
    /// User-named fields sealed besides Secrets' values.
    paths: Vec<SealedPath>,
    /// Where the sealed-values cache goes (the mirror directory), if anywhere.
    cache_dir: Option<PathBuf>,
    /// What the current attempt's sealed values need (key files, the cache).
    written: Mutex<Record>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("recipients", &self.recipients)
            .field("key", &self.key)
            .field("previous", &self.previous.len())
            .field("data_key", &self.data_key)
            .finish()
    }
}

/// Whether an annotation value of a Secret holds a copy of its values (last-applied).
fn annotation_holds_copy(text: &str) -> bool {
    text.contains("\"data\"") || text.contains("\"stringData\"")
}

/// Whether an annotation value holds a copy of an object with one of these user-named fields
/// (the last-applied configuration of a ConfigMap with `data.token`): a JSON object with a
/// value at one of the paths, or text naming a path's first key that does not parse (kept
/// from view all the same).
fn annotation_holds_path_copy(text: &str, paths: &[&SealedPath]) -> bool {
    let named = |p: &&SealedPath| {
        p.fields
            .first()
            .is_some_and(|f| text.contains(&format!("\"{f}\"")))
    };
    if !paths.iter().any(named) {
        return false;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(copy) => paths.iter().any(|p| {
            p.fields
                .iter()
                .try_fold(&copy, |v, k| v.as_object()?.get(k))
                .is_some()
        }),
        Err(_) => true,
    }
}

impl Sealer {
    /// A sealer with a new data key wrapped to `recipients`. `previous` are the sealed values
    /// of the previous snapshot and `previous_keys` its key files (by id): a previous value is
    /// reused only when its key file is there to go with it.
    pub fn new(
        recipients: Recipients,
        key: FingerprintKey,
        mut previous: Previous,
        previous_keys: BTreeMap<String, Vec<u8>>,
    ) -> Result<Sealer, CryptError> {
        let raw = random_bytes::<KEY_BYTES>("a new data key")?;
        let id = hex::encode(random_bytes::<8>("a new data key")?);
        let data_key = DataKey::from_bytes(id, &raw);
        let wrapped = recipients
            .encrypt(&raw)
            .map_err(|reason| CryptError::Encrypt {
                path: key_file(data_key.id()),
                reason,
            })?;
        previous.retain(|_, sealed| {
            parse_sealed(sealed)
                .and_then(|p| p.key_id)
                .is_some_and(|id| previous_keys.contains_key(id))
        });
        Ok(Sealer {
            recipients,
            key,
            previous,
            previous_keys,
            data_key,
            wrapped,
            paths: Vec::new(),
            cache_dir: None,
            written: Mutex::new(Record::default()),
        })
    }

    /// Also seals these user-named fields (`--encrypt-path`).
    pub fn with_paths(mut self, paths: Vec<SealedPath>) -> Sealer {
        self.paths = paths;
        self
    }

    /// The user-named fields it seals.
    pub fn paths(&self) -> &[SealedPath] {
        &self.paths
    }

    /// Whether objects of `group`/`resource` have user-named fields to seal.
    pub fn seals_paths_of(&self, group: &str, resource: &str) -> bool {
        self.paths.iter().any(|p| p.applies_to(group, resource))
    }

    /// Seals the user-named fields of an object of `group`/`resource` in place (a canonical
    /// object of the snapshot pipeline), and every annotation holding a copy of the object
    /// with one of those fields (`kubectl.kubernetes.io/last-applied-configuration`), sealed
    /// whole as a Secret's copies are. A field that is absent, or neither a string nor a map,
    /// is left alone. Returns how many values were sealed.
    pub fn seal_paths(
        &self,
        group: &str,
        resource: &str,
        path: &ContentPath,
        obj: &mut Node<'_>,
    ) -> Result<usize, CryptError> {
        let p = path.as_str();
        let mut sealed = Vec::new();
        for sp in self
            .paths
            .iter()
            .filter(|sp| sp.applies_to(group, resource))
        {
            let Some((last, parents)) = sp.fields.split_last() else {
                continue;
            };
            let mut at: Option<&mut Node<'_>> = Some(&mut *obj);
            for f in parents {
                at = at.and_then(|n| n.get_mut(f));
            }
            let Some(at) = at else {
                continue;
            };
            let parent_field = parents.join(".");
            let full_field = sp.fields.join(".");
            match at.get_mut(last) {
                Some(n) if n.as_str().is_some_and(|s| !is_sealed(s)) => {
                    let v = self.seal(p, &parent_field, last, n.as_str().unwrap_or_default())?;
                    *n = Node::String(v.clone().into());
                    sealed.push(v);
                }
                Some(Node::Object(entries)) => {
                    self.seal_entries(p, &full_field, entries, |s| !is_sealed(s), &mut sealed)?;
                }
                _ => {}
            }
        }
        let applicable: Vec<&SealedPath> = self
            .paths
            .iter()
            .filter(|sp| sp.applies_to(group, resource))
            .collect();
        if let Some(Node::Object(entries)) = obj
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
        {
            let pick = |s: &str| !is_sealed(s) && annotation_holds_path_copy(s, &applicable);
            self.seal_entries(p, ANNOTATIONS, entries, pick, &mut sealed)?;
        }
        Ok(self.sealed_count(&sealed))
    }

    /// The previous sealed values available for reuse.
    pub fn reusable(&self) -> usize {
        self.previous.len()
    }

    /// Records the sealed-values cache in `dir` (the mirror directory): each attempt streams
    /// its values to a temporary file there, which [`Sealer::write_cache`] installs.
    pub fn with_cache_dir(mut self, dir: PathBuf) -> Sealer {
        self.cache_dir = Some(dir);
        self
    }

    /// Forgets what an earlier attempt wrote (a snapshot restarted at a new resourceVersion).
    pub fn begin_attempt(&self) {
        let mut r = self.written();
        r.key_ids.clear();
        r.pending.clear();
        r.cache = self.cache_dir.as_deref().and_then(|d| {
            tempfile::NamedTempFile::new_in(d)
                .map_err(|e| tracing::debug!(error = %e, "no sealed-values cache this time"))
                .ok()
                .map(CacheWriter::start)
        });
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Record> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes the data keys `sealed` values name and streams them to the cache file (one per
    /// line; memory stays flat whatever the size of the values).
    /// Seals, in place, every string of `entries` (a map's entries) that `pick` chooses, as
    /// field `field` of the object at `p` with the entry's key, adding each to `sealed`.
    fn seal_entries(
        &self,
        p: &str,
        field: &str,
        entries: &mut [(std::borrow::Cow<'_, str>, Node<'_>)],
        pick: impl Fn(&str) -> bool,
        sealed: &mut Vec<String>,
    ) -> Result<(), CryptError> {
        for (k, v) in entries.iter_mut() {
            if let Node::String(s) = v
                && pick(s.as_ref())
            {
                let s = self.seal(p, field, k.as_ref(), s.as_ref())?;
                *v = Node::String(s.clone().into());
                sealed.push(s);
            }
        }
        Ok(())
    }

    /// Records the values an object's sealing wrote (see [`Sealer::record`]); how many.
    fn sealed_count(&self, sealed: &[String]) -> usize {
        if !sealed.is_empty() {
            self.record(sealed);
        }
        sealed.len()
    }

    fn record(&self, sealed: &[String]) {
        let mut r = self.written();
        for s in sealed {
            if let Some(id) = parse_sealed(s).and_then(|p| p.key_id)
                && !r.key_ids.contains(id)
            {
                r.key_ids.insert(id.to_owned());
            }
        }
        if r.cache.is_none() {
            return;
        }
        for s in sealed {
            r.pending.extend_from_slice(s.as_bytes());
            r.pending.push(b'\n');
        }
        // No file I/O here (page tasks call this): the cache's own thread writes the lines,
        // a batch at a time.
        if r.pending.len() >= CACHE_BATCH {
            r.send_pending();
        }
    }

    /// The sealed form of `value` (field `field`, key `key` of the object at `path`): the
    /// previous snapshot's when its fingerprint matches, else sealed anew under the data key.
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
        self.data_key.seal(&fp, path, field, key, value)
    }

    /// Seals a Secret in place (a canonical object of the snapshot pipeline): every value of
    /// `data` and `stringData`, and every annotation holding a copy of them. Other objects
    /// are left alone. Returns how many values were sealed.
    pub fn seal_node(&self, path: &ContentPath, obj: &mut Node<'_>) -> Result<usize, CryptError> {
        if obj.get("kind").and_then(Node::as_str) != Some("Secret") {
            return Ok(0);
        }
        let p = path.as_str();
        let mut sealed = Vec::new();
        for field in SEALED_FIELDS {
            if let Some(Node::Object(entries)) = obj.get_mut(field) {
                self.seal_entries(p, field, entries, |_| true, &mut sealed)?;
            }
        }
        if let Some(Node::Object(entries)) = obj
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
        {
            self.seal_entries(p, ANNOTATIONS, entries, annotation_holds_copy, &mut sealed)?;
        }
        Ok(self.sealed_count(&sealed))
    }

    /// The key files the values written so far need (`.k8s-snap/keys/<id>.age`): the new
    /// data key's if a value was sealed anew, and the previous snapshot's (same bytes) for
    /// the values reused.
    pub fn key_files(&self) -> Vec<(String, Vec<u8>)> {
        let ids: BTreeSet<String> = self.written().key_ids.iter().cloned().collect();
        ids.into_iter()
            .filter_map(|id| {
                let bytes = if id == self.data_key.id {
                    Some(self.wrapped.clone())
                } else {
                    self.previous_keys.get(&id).cloned()
                };
                bytes.map(|b| (key_file(&id), b))
            })
            .collect()
    }

    /// Records the values written by the snapshot whose commit is `commit` in the mirror's
    /// sealed-values cache of `cluster`, so that the cluster's next snapshot finds them
    /// without reading every Secret file back (atomic; ciphertexts only, no key).
    /// Without a cache directory ([`Sealer::with_cache_dir`]) there is nothing to install.
    pub fn write_cache(&self, git_dir: &Path, cluster: &str, commit: &str) -> std::io::Result<()> {
        let cache = {
            let mut r = self.written();
            r.send_pending();
            r.cache.take()
        };
        let Some(cache) = cache else {
            return Ok(());
        };
        let CacheWriter { tx, handle } = cache;
        drop(tx);
        let mut w = handle
            .join()
            .map_err(|_| std::io::Error::other("the cache writer thread panicked"))??;
        w.write_all(cache_trailer(commit).as_bytes())?;
        w.write_all(b"\n")?;
        let tmp = w
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        tmp.persist(cache_file(git_dir, cluster))
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// What the sealed values of one attempt need: the data keys they name and the cache file
/// being written.
#[derive(Default)]
struct Record {
    key_ids: std::collections::HashSet<String>,
    cache: Option<CacheWriter>,
    /// Lines not yet handed to the cache's thread: sent in batches of [`CACHE_BATCH`] bytes,
    /// so that sealing a page of Secrets does not wake that thread once per Secret.
    pending: Vec<u8>,
}

/// Bytes of cache lines handed to the cache's thread at once.
const CACHE_BATCH: usize = 256 << 10;

/// The thread writing one attempt's sealed values to a temporary cache file, so that page
/// tasks never wait on file I/O (or on the kernel throttling a process that writes a lot).
struct CacheWriter {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    handle: std::thread::JoinHandle<std::io::Result<std::io::BufWriter<tempfile::NamedTempFile>>>,
}

impl Record {
    /// Hands the pending lines to the cache's thread (dropping the cache if it stopped).
    fn send_pending(&mut self) {
        let lines = std::mem::take(&mut self.pending);
        if lines.is_empty() {
            return;
        }
        if let Some(w) = self.cache.as_ref()
            && w.tx.send(lines).is_err()
        {
            tracing::debug!("sealed-values cache dropped");
            self.cache = None;
        }
    }
}

impl CacheWriter {
    fn start(file: tempfile::NamedTempFile) -> CacheWriter {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, file);
            // Ends when every sender is gone (the attempt is over).
            for lines in rx {
                w.write_all(&lines)?;
            }
            Ok(w)
        });
        CacheWriter { tx, handle }
    }
}

/// The last line of a cache file: the commit of the snapshot whose values it holds (last, so
/// a file cut short is never taken for a complete one).
fn cache_trailer(commit: &str) -> String {
    format!("# k8s-snap sealed values of commit {commit}")
}

fn cache_file(git_dir: &Path, cluster: &str) -> PathBuf {
    git_dir.join(format!("k8s-snap-sealed-{cluster}.cache"))
}

/// The sealed values the mirror's cache holds for `cluster`, if it was written for the
/// snapshot `commit` (else the caller reads that snapshot's files).
pub fn read_cache(git_dir: &Path, cluster: &str, commit: &str) -> Option<Previous> {
    let text = std::fs::read_to_string(cache_file(git_dir, cluster)).ok()?;
    let body = text.strip_suffix('\n')?;
    let (values, trailer) = body.rsplit_once('\n').unwrap_or(("", body));
    if trailer != cache_trailer(commit) {
        return None;
    }
    let mut previous = Previous::with_capacity(values.len() / 256);
    for line in values.lines() {
        if let Some(p) = parse_sealed(line)
            && p.key_id.is_some()
        {
            previous.insert(p.fingerprint.to_owned(), line.to_owned());
        }
    }
    Some(previous)
}

impl Recipients {
    /// Re-encrypts a value of the first form (age per value) for these recipients, keeping
    /// its fingerprint (rekey).
    pub fn reseal(&self, sealed: &str, ids: &Identities, path: &str) -> Result<String, CryptError> {
        let fp = parse_sealed(sealed)
            .filter(|p| p.key_id.is_none())
            .ok_or_else(|| CryptError::Damaged {
                snapshot: String::new(),
                path: path.to_owned(),
                reason: "not a sealed value of the age form".into(),
            })?
            .fingerprint;
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
            "{SEALED_PREFIX_V1}{fp}:{}",
            base64::engine::general_purpose::STANDARD.encode(ct)
        ))
    }
}

/// Why a sealed value did not open.
#[derive(Debug)]
pub enum OpenError {
    /// None of the identities is a recipient of the value (or of its data key).
    NoMatch,
    /// Not a well-formed sealed value, or it fails to authenticate.
    Damaged(String),
}

/// The plaintext of a sealed value of the first form (age per value).
pub fn open_value(sealed: &str, ids: &Identities) -> Result<Vec<u8>, OpenError> {
    let p = parse_sealed(sealed)
        .filter(|p| p.key_id.is_none())
        .ok_or_else(|| OpenError::Damaged("not a sealed value of the age form".into()))?;
    let ct = base64::engine::general_purpose::STANDARD
        .decode(p.ciphertext)
        .map_err(|_| OpenError::Damaged("not base64".into()))?;
    ids.decrypt(&ct).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => OpenError::NoMatch,
        other => OpenError::Damaged(other.to_string()),
    })
}

/// Opens the sealed values of one snapshot: its identities and its data keys, unwrapped once.
pub struct Opener<'a> {
    ids: &'a Identities,
    keys: HashMap<String, DataKey>,
}

impl std::fmt::Debug for Opener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opener({:?}, keys {:?})", self.ids, self.keys.keys())
    }
}

impl<'a> Opener<'a> {
    /// Unwraps every key file of the snapshot (`key_files`: id → file bytes) with `ids`, all
    /// or nothing; `snapshot` and `recipients` (from its metadata) only make errors precise.
    pub fn new(
        ids: &'a Identities,
        key_files: &BTreeMap<String, Vec<u8>>,
        snapshot: &str,
        recipients: &[String],
    ) -> Result<Opener<'a>, CryptError> {
        let mut keys = HashMap::with_capacity(key_files.len());
        for (id, wrapped) in key_files {
            let key = ids.unwrap_key(id, wrapped).map_err(|e| match e {
                OpenError::NoMatch => CryptError::WrongIdentity {
                    snapshot: snapshot.to_owned(),
                    path: key_file(id),
                    recipients: recipients.to_vec(),
                    given: ids.recipients.clone(),
                },
                OpenError::Damaged(reason) => CryptError::Damaged {
                    snapshot: snapshot.to_owned(),
                    path: key_file(id),
                    reason,
                },
            })?;
            keys.insert(id.clone(), key);
        }
        Ok(Opener { ids, keys })
    }

    /// The plaintext of a sealed value (either form) of `field`/`key` of the object at `path`.
    pub fn open(
        &self,
        sealed: &str,
        path: &str,
        field: &str,
        key: &str,
    ) -> Result<Vec<u8>, OpenError> {
        let p =
            parse_sealed(sealed).ok_or_else(|| OpenError::Damaged("not a sealed value".into()))?;
        match p.key_id {
            None => open_value(sealed, self.ids),
            Some(id) => self
                .keys
                .get(id)
                .ok_or_else(|| {
                    OpenError::Damaged(format!(
                        "its data key {} is not in the snapshot",
                        key_file(id)
                    ))
                })?
                .open(p.ciphertext, path, field, key),
        }
    }
}

/// Whether an object holds a sealed value in its maps, at any depth (not inside lists).
pub fn has_sealed(obj: &Value) -> bool {
    obj.as_object().is_some_and(|m| {
        m.values().any(|v| match v {
            Value::String(s) => is_sealed(s),
            Value::Object(_) => has_sealed(v),
            _ => false,
        })
    })
}

/// Opens every sealed value of an object in place: in its maps at any depth, each sealed
/// under its dotted parent path as the field and its map key as the key (`data` and `password`
/// for a Secret's `data.password`). `recipients` (from the snapshot's metadata) and `snapshot`
/// only make errors precise.
pub fn open_object(
    obj: &mut Value,
    opener: &Opener<'_>,
    snapshot: &str,
    path: &str,
    recipients: &[String],
) -> Result<usize, CryptError> {
    let mut n = 0;
    if let Some(m) = obj.as_object_mut() {
        let ctx = OpenContext {
            opener,
            snapshot,
            path,
            recipients,
        };
        ctx.open_map(m, &mut Vec::new(), &mut n)?;
    }
    Ok(n)
}

struct OpenContext<'a, 'b> {
    opener: &'a Opener<'b>,
    snapshot: &'a str,
    path: &'a str,
    recipients: &'a [String],
}

impl OpenContext<'_, '_> {
    fn open_map(
        &self,
        m: &mut serde_json::Map<String, Value>,
        parents: &mut Vec<String>,
        n: &mut usize,
    ) -> Result<(), CryptError> {
        for (k, v) in m.iter_mut() {
            match v {
                Value::Object(inner) => {
                    parents.push(k.clone());
                    let r = self.open_map(inner, parents, n);
                    parents.pop();
                    r?;
                }
                Value::String(s) if is_sealed(s) => {
                    let field = parents.join(".");
                    let at = || format!("{} ({field}.{k})", self.path);
                    let plain = self
                        .opener
                        .open(s, self.path, &field, k)
                        .map_err(|e| match e {
                            OpenError::NoMatch => CryptError::WrongIdentity {
                                snapshot: self.snapshot.to_owned(),
                                path: at(),
                                recipients: self.recipients.to_vec(),
                                given: self.opener.ids.recipients.clone(),
                            },
                            OpenError::Damaged(reason) => CryptError::Damaged {
                                snapshot: self.snapshot.to_owned(),
                                path: at(),
                                reason,
                            },
                        })?;
                    let text = String::from_utf8(plain).map_err(|_| CryptError::Damaged {
                        snapshot: self.snapshot.to_owned(),
                        path: at(),
                        reason: "the plaintext is not UTF-8".into(),
                    })?;
                    *v = Value::String(text);
                    *n += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }
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
        Sealer::new(
            r,
            FingerprintKey::generate(),
            Previous::new(),
            BTreeMap::new(),
        )
        .unwrap()
    }

    /// The key files of what `s` sealed, by id (as a snapshot tree holds them).
    fn keys_of(s: &Sealer) -> BTreeMap<String, Vec<u8>> {
        s.key_files()
            .into_iter()
            .map(|(path, bytes)| (key_id_of_file(&path).unwrap().to_owned(), bytes))
            .collect()
    }

    /// Opens every sealed value of `object` (at `path`) as a restore does: how many opened.
    fn open_all(s: &Sealer, ids: &Identities, path: &str, object: &mut Value) -> usize {
        let opener = Opener::new(ids, &keys_of(s), "s", &[]).unwrap();
        open_object(object, &opener, "s", path, &[]).unwrap()
    }

    fn open(s: &Sealer, ids: &Identities, v: &str, path: &str, field: &str, key: &str) -> Vec<u8> {
        Opener::new(ids, &keys_of(s), "s", &[])
            .unwrap()
            .open(v, path, field, key)
            .unwrap()
    }

    const P: &str = "/api/v1/namespaces/a/secrets/x";

    /// Seals the Secret at [`P`] whose `data.k` is `value`; the sealed string.
    fn seal_one(s: &Sealer, value: &str) -> String {
        let v = serde_json::json!({"kind": "Secret", "data": {"k": value}});
        let mut node = Node::from(&v);
        let path = ContentPath::new("", "v1", "secrets", Some("a"), "x").unwrap();
        s.seal_node(&path, &mut node).unwrap();
        node.get("data")
            .unwrap()
            .get("k")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn several_identity_files_add_up_and_a_bad_one_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let (a_text, a) = generate_identity();
        let (b_text, b) = generate_identity();
        let a_path = dir.path().join("a.txt");
        let b_path = dir.path().join("b.txt");
        std::fs::write(&a_path, &a_text).unwrap();
        // b's file holds a again: counted once.
        std::fs::write(&b_path, format!("{b_text}{a_text}")).unwrap();
        let ids = Identities::from_files(&[&a_path, &b_path])
            .unwrap()
            .unwrap();
        assert_eq!(ids.recipients(), [a.clone(), b.clone()]);
        assert_eq!(ids.keys.len(), 2);
        assert!(Identities::from_files::<&Path>(&[]).unwrap().is_none());

        let bad = dir.path().join("bad.txt");
        let secret_line = a_text.lines().last().unwrap().replace('1', "2");
        std::fs::write(&bad, format!("{secret_line}\n")).unwrap();
        let e = Identities::from_files(&[&a_path, &bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.txt") && e.contains("line 1"), "{e}");
        assert!(!e.contains("AGE-SECRET-KEY"), "{e}");
        let e = Identities::from_files(&[dir.path().join("missing.txt")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.txt"), "{e}");
    }

    #[test]
    fn seal_open_round_trip_and_reuse() {
        let (ids, r) = keypair();
        let s = sealer(r.clone());
        let a = seal_one(&s, "c2VjcmV0");
        assert!(
            a.starts_with(SEALED_PREFIX) && !a.contains("c2VjcmV0"),
            "{a}"
        );
        assert_eq!(open(&s, &ids, &a, P, "data", "k"), b"c2VjcmV0");
        // Moved to another object or key, it does not open.
        let opener = Opener::new(&ids, &keys_of(&s), "s", &[]).unwrap();
        assert!(matches!(
            opener.open(&a, P, "data", "j"),
            Err(OpenError::Damaged(_))
        ));
        assert!(matches!(
            opener.open(&a, "/api/v1/namespaces/a/secrets/y", "data", "k"),
            Err(OpenError::Damaged(_))
        ));
        // Sealing is randomized: without the previous value a new one differs.
        let b = s.seal(P, "data", "k", "c2VjcmV0").unwrap();
        assert_ne!(a, b);
        assert_eq!(sealed_fingerprint(&a), sealed_fingerprint(&b));
        // The next snapshot's sealer, given the previous value and key file: the same bytes,
        // and the previous key file is carried along (the new key is not written).
        let mut prev = Previous::new();
        collect_sealed(&format!("data:\n  k: {a}\n"), &mut prev);
        let next = Sealer::new(r.clone(), s.key.clone(), prev.clone(), keys_of(&s)).unwrap();
        assert_eq!(seal_one(&next, "c2VjcmV0"), a);
        assert_eq!(keys_of(&next), keys_of(&s));
        // Without its key file a previous value is not reused.
        let orphan = Sealer::new(r, s.key.clone(), prev, BTreeMap::new()).unwrap();
        assert_eq!(orphan.reusable(), 0);
        // Another object or key with the same value: another fingerprint.
        let d = s
            .seal("/api/v1/namespaces/a/secrets/y", "data", "k", "c2VjcmV0")
            .unwrap();
        assert_ne!(sealed_fingerprint(&a), sealed_fingerprint(&d));
    }

    #[test]
    fn sealed_values_cache_is_tied_to_its_commit() {
        let (_, r) = keypair();
        let dir = tempfile::tempdir().unwrap();
        let s = sealer(r).with_cache_dir(dir.path().to_owned());
        s.begin_attempt();
        let v3 = serde_json::json!({"kind": "Secret", "data": {"k": "dg==", "l": "dw=="}});
        let mut node = Node::from(&v3);
        let path = ContentPath::new("", "v1", "secrets", Some("a"), "x").unwrap();
        s.seal_node(&path, &mut node).unwrap();
        s.write_cache(dir.path(), "c1", "abc").unwrap();
        let cached = read_cache(dir.path(), "c1", "abc").unwrap();
        assert_eq!(cached.len(), 2);
        assert!(
            cached
                .values()
                .all(
                    |v| node.get("data").unwrap().get("k").unwrap().as_str() == Some(v)
                        || node.get("data").unwrap().get("l").unwrap().as_str() == Some(v)
                )
        );
        assert!(read_cache(dir.path(), "c1", "abd").is_none());
        assert!(read_cache(dir.path(), "c2", "abc").is_none());
    }

    #[test]
    fn wrong_identity_and_several_recipients() {
        let (ids1, r1) = keypair();
        let (ids2, r2) = keypair();
        let (ids3, _) = keypair();
        let both = Recipients::parse(&[r1.names()[0].clone(), r2.names()[0].clone()]).unwrap();
        let s = sealer(both);
        let v = seal_one(&s, "dg==");
        assert_eq!(open(&s, &ids1, &v, P, "data", "k"), b"dg==");
        assert_eq!(open(&s, &ids2, &v, P, "data", "k"), b"dg==");
        let e = Opener::new(&ids3, &keys_of(&s), "s1", s.recipients.names()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&s.recipients.names()[0])
                && msg.contains("s1")
                && msg.contains(".k8s-snap/keys/"),
            "{msg}"
        );
        assert!(!msg.contains("dg=="), "{msg}");
        // A value whose key file is missing: damaged, naming the key.
        let opener = Opener::new(&ids1, &BTreeMap::new(), "s1", &[]).unwrap();
        let mut obj = serde_json::json!({"kind": "Secret", "data": {"k": v}});
        let e = open_object(&mut obj, &opener, "s1", P, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(".k8s-snap/keys/") && e.contains("not in the snapshot"),
            "{e}"
        );
    }

    #[test]
    fn first_form_values_still_open_and_rekey() {
        let (ids, r) = keypair();
        let (ids2, r2) = keypair();
        let fp = FingerprintKey::generate().fingerprint(P, "data", "k", "dg==");
        let ct = r.encrypt(b"dg==").unwrap();
        let v1 = format!(
            "{SEALED_PREFIX_V1}{fp}:{}",
            base64::engine::general_purpose::STANDARD.encode(ct)
        );
        let opener = Opener::new(&ids, &BTreeMap::new(), "s", &[]).unwrap();
        assert_eq!(opener.open(&v1, P, "data", "k").unwrap(), b"dg==");
        let moved = r2.reseal(&v1, &ids, P).unwrap();
        assert_eq!(sealed_fingerprint(&moved), Some(fp.as_str()));
        assert_eq!(open_value(&moved, &ids2).unwrap(), b"dg==");
        assert!(matches!(open_value(&moved, &ids), Err(OpenError::NoMatch)));
        // Not reused: the next snapshot seals it under a data key.
        let mut prev = Previous::new();
        collect_sealed(&v1, &mut prev);
        assert!(prev.is_empty());
    }

    #[test]
    fn rewrapped_keys_open_with_the_new_identity_only() {
        let (ids, r) = keypair();
        let (ids2, r2) = keypair();
        let s = sealer(r);
        let v = s.seal(P, "data", "k", "dg==").unwrap();
        let v5 = serde_json::json!({"kind": "Secret", "data": {"k": "dg=="}});
        let mut node = Node::from(&v5);
        let path = ContentPath::new("", "v1", "secrets", Some("a"), "x").unwrap();
        s.seal_node(&path, &mut node).unwrap();
        let keys: BTreeMap<String, Vec<u8>> = keys_of(&s)
            .into_iter()
            .map(|(id, b)| (id, r2.rewrap(&b, &ids).unwrap()))
            .collect();
        let opener = Opener::new(&ids2, &keys, "s", &[]).unwrap();
        assert_eq!(opener.open(&v, P, "data", "k").unwrap(), b"dg==");
        assert!(Opener::new(&ids, &keys, "s", &[]).is_err());
        assert!(matches!(
            r2.rewrap(&keys_of(&s).into_values().next().unwrap(), &ids2),
            Err(OpenError::NoMatch)
        ));
    }

    #[test]
    fn user_named_paths_parse_seal_and_open() {
        let sp: SealedPath = "widgets.example.com:spec.credentials.password"
            .parse()
            .unwrap();
        assert_eq!(
            (sp.group.as_str(), sp.resource.as_str()),
            ("example.com", "widgets")
        );
        assert_eq!(sp.fields, ["spec", "credentials", "password"]);
        assert_eq!(
            sp.to_string(),
            "widgets.example.com:spec.credentials.password"
        );
        let cm: SealedPath = "configmaps:data".parse().unwrap();
        assert_eq!(
            (cm.group.as_str(), cm.to_string().as_str()),
            ("", "configmaps:data")
        );
        for bad in [
            "configmaps",
            "configmaps:",
            "configmaps:a..b",
            "Widgets:spec.x",
            "configmaps:metadata.name",
            ":data",
        ] {
            let e = bad.parse::<SealedPath>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }

        let (ids, r) = keypair();
        let s = sealer(r).with_paths(vec![sp, "widgets.example.com:spec.tokens".parse().unwrap()]);
        assert!(s.seals_paths_of("example.com", "widgets"));
        assert!(!s.seals_paths_of("", "widgets"));
        let original = serde_json::json!({"kind": "Widget", "spec": {
            "credentials": {"password": "pw-1234567", "user": "bob"},
            "tokens": {"a": "tok-a-123456", "b": "tok-b-123456", "n": 3},
            "other": "plain"}});
        let path = ContentPath::new("example.com", "v1", "widgets", Some("n"), "w").unwrap();
        let mut node = Node::from(&original);
        assert_eq!(
            s.seal_paths("example.com", "widgets", &path, &mut node)
                .unwrap(),
            3
        );
        let yaml = crate::tree::emit(&node);
        assert!(
            !yaml.contains("pw-1234567") && !yaml.contains("tok-a-123456"),
            "{yaml}"
        );
        assert!(
            yaml.contains("user: bob") && yaml.contains("other: plain"),
            "{yaml}"
        );
        // Absent fields are left alone; sealing twice does not seal a sealed value again.
        let sealed_once = crate::tree::from_yaml(&yaml).unwrap();
        let mut again = Node::from(&sealed_once);
        assert_eq!(
            s.seal_paths("example.com", "widgets", &path, &mut again)
                .unwrap(),
            0
        );
        let mut back = crate::tree::from_yaml(&yaml).unwrap();
        assert!(has_sealed(&back));
        assert_eq!(open_all(&s, &ids, path.as_str(), &mut back), 3);
        assert_eq!(back, original);
    }

    /// A copy of the object in an annotation (what `kubectl apply` leaves) holding a
    /// user-named field is sealed whole; other annotations, and copies without the field, stay
    /// readable; a restore opens it back to the exact text.
    #[test]
    fn path_copies_in_annotations_are_sealed() {
        let (ids, r) = keypair();
        let s = sealer(r).with_paths(vec!["configmaps:data.token".parse().unwrap()]);
        let copy = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app"}, "data": {"token": "tok-plain-123456", "mode": "m"}})
        .to_string();
        let no_token = serde_json::json!({"data": {"mode": "m"}}).to_string();
        let original = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": copy,
                "other-copy": no_token,
                "broken": "{\"data\": [unclosed tok-broken-123456",
                "note": "plain note"}},
            "data": {"token": "tok-plain-123456", "mode": "m"}});
        let path = ContentPath::new("", "v1", "configmaps", Some("n"), "app").unwrap();
        let mut node = Node::from(&original);
        assert_eq!(s.seal_paths("", "configmaps", &path, &mut node).unwrap(), 3);
        let yaml = crate::tree::emit(&node);
        assert!(
            !yaml.contains("tok-plain-123456") && !yaml.contains("tok-broken-123456"),
            "{yaml}"
        );
        // Sealing again seals nothing more; other resources are left alone.
        let sealed_once = crate::tree::from_yaml(&yaml).unwrap();
        let annotations = &sealed_once["metadata"]["annotations"];
        assert_eq!(annotations["note"], "plain note");
        assert_eq!(annotations["other-copy"], no_token.as_str());
        assert!(is_sealed(
            annotations["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap()
        ));
        let mut again = Node::from(&sealed_once);
        assert_eq!(
            s.seal_paths("", "configmaps", &path, &mut again).unwrap(),
            0
        );
        let mut other = Node::from(&original);
        assert_eq!(s.seal_paths("", "secrets", &path, &mut other).unwrap(), 0);
        let mut back = sealed_once;
        assert_eq!(open_all(&s, &ids, path.as_str(), &mut back), 3);
        assert_eq!(back, original);
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
        assert_eq!(open_all(&s, &ids, path.as_str(), &mut back), 4);
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
            let p = "/api/v1/namespaces/n/secrets/s";
            let v6 = serde_json::json!({"kind": "Secret", "stringData": {key.clone(): value.clone()}});
            let mut node = Node::from(&v6);
            let path = ContentPath::new("", "v1", "secrets", Some("n"), "s").unwrap();
            s.seal_node(&path, &mut node).unwrap();
            let sealed = node.get("stringData").unwrap().get(&key).unwrap().as_str().unwrap().to_owned();
            prop_assert!(is_sealed(&sealed));
            prop_assert_eq!(open(&s, &ids, &sealed, p, "stringData", &key), value.as_bytes().to_vec());
            // The fingerprint is a function of (path, field, key, value) under the key.
            let fp = s.key.fingerprint(p, "stringData", &key, &value);
            prop_assert_eq!(sealed_fingerprint(&sealed), Some(fp.as_str()));
        }
    }
}
