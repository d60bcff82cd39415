//! `rekey`: re-encrypting the sealed Secret values of snapshots in the mirror for new
//! recipients (docs/encryption.md). Each snapshot gets a new commit, written as a new
//! snapshot's is, whose tree differs only in its data key files (`.k8s-snap/keys/`, re-wrapped:
//! the values sealed under them keep their bytes) and `.k8s-snap/snapshot.yaml` (and, for
//! values of the first, age-per-value form, in the Secret files, fingerprints unchanged); its
//! tag moves to it. The old commit is left to `gc`.
//!
//! Owns: that rewrite. Must not touch: the cryptography (`crypt`), git internals (`mirror`),
//! the store (the CLI pushes afterwards).

use std::ops::ControlFlow;
use std::path::Path;

use serde_json::Value;

use crate::crypt::{CryptError, Identities, Recipients};
use crate::mirror::{Mirror, MirrorError};
use crate::tree::{self, meta::SNAPSHOT_META_FILE};

/// Why re-encrypting a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    /// The git mirror failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// Opening or sealing a value failed.
    #[error("snapshot {snapshot:?}: {source}")]
    Crypt {
        /// The snapshot's name.
        snapshot: String,
        /// The encryption error.
        #[source]
        source: CryptError,
    },
    /// A file of the snapshot cannot be parsed.
    #[error("snapshot {snapshot:?}: {file}: {message}")]
    BadFile {
        /// The snapshot's name.
        snapshot: String,
        /// The file's path in the snapshot.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The snapshot is not in the mirror.
    #[error("snapshot {0:?} not found in the mirror")]
    UnknownSnapshot(String),
}

/// What [`rekey`] did to one snapshot.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rekeyed {
    /// The snapshot's name.
    pub name: String,
    /// `rekeyed`, `unchanged` (already sealed to exactly these recipients) or `plaintext`
    /// (nothing sealed: left alone).
    pub result: &'static str,
    /// Data keys re-wrapped (the values sealed under them are unchanged).
    pub keys: usize,
    /// Sealed values of the first (age per value) form re-encrypted.
    pub values: usize,
    /// The new commit, when the snapshot was rekeyed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Re-encrypts snapshots `names` (all of the mirror when empty) for `to`, opening their
/// values with `ids`. Blocking (git). Each snapshot is all or nothing.
pub fn rekey(
    git_dir: &Path,
    names: &[String],
    to: &Recipients,
    ids: &Identities,
) -> Result<Vec<Rekeyed>, RekeyError> {
    let mirror = Mirror::open(git_dir)?;
    let all = mirror.snapshots()?;
    let selected: Vec<_> = if names.is_empty() {
        all
    } else {
        names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|s| &s.name == n)
                    .cloned()
                    .ok_or_else(|| RekeyError::UnknownSnapshot(n.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    // A data key shared by several snapshots is re-wrapped once: the same new blob in each.
    let mut rewrapped: std::collections::HashMap<String, Vec<u8>> = Default::default();
    for s in selected {
        let Some(enc) = s.meta.encryption.clone() else {
            out.push(Rekeyed {
                name: s.name,
                result: "plaintext",
                keys: 0,
                values: 0,
                commit: None,
            });
            continue;
        };
        if enc.recipients == to.names() {
            out.push(Rekeyed {
                name: s.name,
                result: "unchanged",
                keys: 0,
                values: 0,
                commit: None,
            });
            continue;
        }
        let mut w = mirror.rewriter(&s.name, &s.meta.cluster_name)?;
        let mut failure: Option<RekeyError> = None;
        let mut values = 0usize;
        let mut keys = 0usize;
        mirror.walk_files(&s.commit, "", |file, bytes| {
            if file == SNAPSHOT_META_FILE {
                return ControlFlow::Continue(());
            }
            let result = if let Some(id) = crate::crypt::key_id_of_file(file) {
                rewrap_key(
                    &s.name,
                    file,
                    id,
                    bytes,
                    to,
                    ids,
                    &enc.recipients,
                    &mut rewrapped,
                )
                .and_then(|new| {
                    keys += 1;
                    w.add(file, &new).map_err(RekeyError::from)
                })
            } else if file.starts_with("api/v1/namespaces/")
                && file.contains("/secrets/")
                && bytes
                    .windows(crate::crypt::SEALED_PREFIX_V1.len())
                    .any(|w| w == crate::crypt::SEALED_PREFIX_V1.as_bytes())
            {
                reseal_file(&s.name, file, bytes, to, ids, &enc.recipients).and_then(|(text, n)| {
                    values += n;
                    w.add(file, text.as_bytes()).map_err(RekeyError::from)
                })
            } else {
                w.add(file, bytes).map_err(RekeyError::from)
            };
            match result {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut meta = s.meta.clone();
        meta.encryption = Some(tree::Encryption {
            recipients: to.names().to_vec(),
            ..enc.clone()
        });
        let meta_yaml = tree::to_yaml_string(&meta).map_err(|e| RekeyError::BadFile {
            snapshot: s.name.clone(),
            file: SNAPSHOT_META_FILE.into(),
            message: e.to_string(),
        })?;
        w.add(SNAPSHOT_META_FILE, meta_yaml.as_bytes())?;
        let written = w.finish(&meta)?;
        tracing::info!(snapshot = %s.name, keys, values, commit = %written.commit, "rekeyed");
        out.push(Rekeyed {
            name: s.name,
            result: "rekeyed",
            keys,
            values,
            commit: Some(written.commit.to_string()),
        });
    }
    Ok(out)
}

/// A data key file re-wrapped for `to` (once per key id and run).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the context of its errors"
)]
fn rewrap_key(
    snapshot: &str,
    file: &str,
    id: &str,
    bytes: &[u8],
    to: &Recipients,
    ids: &Identities,
    old: &[String],
    rewrapped: &mut std::collections::HashMap<String, Vec<u8>>,
) -> Result<Vec<u8>, RekeyError> {
    if let Some(done) = rewrapped.get(id) {
        return Ok(done.clone());
    }
    let new = to.rewrap(bytes, ids).map_err(|e| RekeyError::Crypt {
        snapshot: snapshot.to_owned(),
        source: match e {
            crate::crypt::OpenError::NoMatch => CryptError::WrongIdentity {
                snapshot: snapshot.to_owned(),
                path: file.to_owned(),
                recipients: old.to_vec(),
                given: ids.recipients().to_vec(),
            },
            crate::crypt::OpenError::Damaged(reason) => CryptError::Damaged {
                snapshot: snapshot.to_owned(),
                path: file.to_owned(),
                reason,
            },
        },
    })?;
    rewrapped.insert(id.to_owned(), new.clone());
    Ok(new)
}

/// One Secret file with every sealed value re-encrypted for `to` (same fingerprints).
fn reseal_file(
    snapshot: &str,
    file: &str,
    bytes: &[u8],
    to: &Recipients,
    ids: &Identities,
    old: &[String],
) -> Result<(String, usize), RekeyError> {
    let bad = |message: String| RekeyError::BadFile {
        snapshot: snapshot.to_owned(),
        file: file.to_owned(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
    let mut v = tree::from_yaml(text).map_err(|e| bad(e.to_string()))?;
    let mut n = 0;
    let mut reseal_map = |m: &mut serde_json::Map<String, Value>| -> Result<(), RekeyError> {
        for (k, val) in m.iter_mut() {
            let Some(s) = val
                .as_str()
                .filter(|s| crate::crypt::parse_sealed(s).is_some_and(|p| p.key_id.is_none()))
            else {
                continue;
            };
            let new = to
                .reseal(
                    s,
                    ids,
                    &format!("/{} ({k})", file.trim_end_matches(".yaml")),
                )
                .map_err(|e| match e {
                    CryptError::WrongIdentity { path, given, .. } => CryptError::WrongIdentity {
                        snapshot: snapshot.to_owned(),
                        path,
                        recipients: old.to_vec(),
                        given,
                    },
                    other => other,
                })
                .map_err(|source| RekeyError::Crypt {
                    snapshot: snapshot.to_owned(),
                    source,
                })?;
            *val = Value::String(new);
            n += 1;
        }
        Ok(())
    };
    for field in crate::crypt::SEALED_FIELDS {
        if let Some(m) = v.get_mut(field).and_then(Value::as_object_mut) {
            reseal_map(m)?;
        }
    }
    if let Some(m) = v
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        reseal_map(m)?;
    }
    let out = tree::to_yaml(&v).map_err(|e| bad(e.to_string()))?;
    Ok((out, n))
}
