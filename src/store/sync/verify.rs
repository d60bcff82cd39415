//! [`verify`]: every pack the manifest names exists with its recorded sizes and every
//! snapshot's packs are listed; `deep` re-downloads and re-hashes the needed packs, checks
//! their stored indexes and each snapshot's tree in a scratch repository.
//!
//! Owns: the problems report. Must not touch: the store (read only) or the local mirror.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::pull::{PackFile, fetch_idx, fetch_sized};
use super::{Result, SyncError, read_manifest, sha256_hex};
use crate::mirror::{CommitId, MirrorError, ObjectSet, SharedMirror};
use crate::store::ObjectStore;
use crate::store::manifest::{Manifest, idx_key, pack_key};

/// One problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyProblem {
    /// The pack (sha256) or snapshot at fault.
    pub subject: String,
    /// The snapshots affected.
    pub snapshots: Vec<String>,
    /// What is wrong.
    pub reason: String,
}

/// What [`verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Snapshots the manifest names.
    pub snapshots: usize,
    /// Packs the manifest names.
    pub packs: usize,
    /// Whether every needed pack was downloaded and re-hashed.
    pub deep: bool,
    /// Everything found wrong (empty when the store is sound).
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks that every pack the manifest names exists with its recorded sizes, and every
/// snapshot's packs are listed. `deep` also downloads and re-hashes every needed pack,
/// indexes it into a scratch repository and checks each snapshot is complete and valid.
pub async fn verify(store: &dyn ObjectStore, deep: bool) -> Result<VerifyReport> {
    let (manifest, _) = read_manifest(store).await?;
    let mut report = VerifyReport {
        snapshots: manifest.snapshots.len(),
        packs: manifest.packs.len(),
        deep,
        problems: Vec::new(),
    };
    let listing = store.list(crate::store::PACKS_PREFIX).await?;
    let listed: BTreeMap<String, u64> = listing.iter().map(|o| (o.key.clone(), o.size)).collect();
    let needed = manifest.needed_packs();
    // Packs no manifest names: left by a crashed push, or the manifest was lost or rolled back.
    let (orphans, orphan_problems) =
        crate::store::recover::unreferenced(store, &manifest, &listing, deep).await?;
    for (sha, snapshots) in orphans {
        report.problems.push(VerifyProblem {
            reason: if snapshots.is_empty() && deep {
                format!("unreferenced: the manifest does not list pack {sha} (it holds no snapshot the manifest lacks; gc removes it after the grace period)")
            } else {
                format!("unreferenced: the manifest does not list pack {sha}; `k8s-snap recover` adds the snapshots it holds")
            },
            subject: sha,
            snapshots,
        });
    }
    report.problems.extend(orphan_problems);
    let mut broken: BTreeSet<String> = BTreeSet::new();
    for (sha, entry) in &manifest.packs {
        let pending = manifest.pending_delete.contains_key(sha) && !needed.contains(sha);
        if pending {
            continue;
        }
        for (key, expected) in [(pack_key(sha), entry.size), (idx_key(sha), entry.idx_size)] {
            let reason = match listed.get(&key) {
                None => Some(format!("{key} is missing")),
                Some(&n) if n != expected => {
                    Some(format!("{key} has {n} bytes, the manifest says {expected}"))
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                broken.insert(sha.clone());
                report.problems.push(VerifyProblem {
                    subject: sha.clone(),
                    snapshots: manifest.snapshots_needing(sha),
                    reason,
                });
            }
        }
    }
    for (name, s) in &manifest.snapshots {
        for p in &s.packs {
            if !manifest.packs.contains_key(p) {
                broken.insert(p.clone());
                report.problems.push(VerifyProblem {
                    subject: name.clone(),
                    snapshots: vec![name.clone()],
                    reason: format!("needs pack {p}, which the manifest does not list"),
                });
            }
        }
    }
    if deep {
        deep_verify(store, &manifest, &broken, &mut report).await?;
    }
    Ok(report)
}

async fn deep_verify(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    broken: &BTreeSet<String>,
    report: &mut VerifyReport,
) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| {
        SyncError::Mirror(MirrorError::Io {
            context: "creating a scratch directory for verify --deep".into(),
            source: e,
        })
    })?;
    let repo = SharedMirror::open_or_init(&scratch.path().join("verify.git")).await?;
    let mut bad = broken.clone();
    for sha in manifest.needed_packs() {
        if bad.contains(&sha) {
            continue;
        }
        let result = match fetch_pack(store, manifest, &sha).await {
            Ok(bytes) => {
                // The stored index is what a pull installs: check it against the pack too.
                let idx = fetch_idx(store, manifest, &sha)
                    .await
                    .map_err(|e| e.to_string());
                let expected = manifest.packs.get(&sha).map(|e| e.objects);
                let pack_sha = sha.clone();
                repo.run(move |m| -> Result<_> {
                    let indexed = m
                        .index_pack(&bytes)
                        .map_err(|e| format!("pack {pack_sha} cannot be indexed: {e}"));
                    let idx_checked =
                        idx.and_then(|idx| check_stored_idx(expected, &pack_sha, &bytes, &idx));
                    Ok(indexed.and(idx_checked))
                })
                .await?
            }
            Err(reason) => Err(reason),
        };
        if let Err(reason) = result {
            bad.insert(sha.clone());
            report.problems.push(VerifyProblem {
                subject: sha.clone(),
                snapshots: manifest.snapshots_needing(&sha),
                reason,
            });
        }
    }
    let items: Vec<(String, CommitId)> = manifest
        .snapshots
        .iter()
        // A snapshot needing a bad pack was already reported with its pack.
        .filter(|(_, s)| !s.packs.iter().any(|p| bad.contains(p)))
        .map(|(name, s)| (name.clone(), s.commit.clone()))
        .collect();
    let problems = repo
        .run(move |m| -> Result<_> {
            let mut problems = Vec::new();
            for item in items {
                let tagged = m
                    .create_snapshot_tags_checked(
                        std::slice::from_ref(&item),
                        &ObjectSet::default(),
                        &crate::mirror::Scanned::default(),
                    )
                    .pop()
                    .unwrap_or(Ok(false));
                if let Err(e) = tagged {
                    problems.push(VerifyProblem {
                        subject: item.0.clone(),
                        snapshots: vec![item.0],
                        reason: e.to_string(),
                    });
                }
            }
            Ok(problems)
        })
        .await?;
    report.problems.extend(problems);
    Ok(())
}

/// A stored `.idx` against its (already checked) pack and the manifest's object count.
fn check_stored_idx(
    expected: Option<u64>,
    sha: &str,
    pack: &[u8],
    idx: &[u8],
) -> std::result::Result<(), String> {
    let count = crate::mirror::check_pack_index(pack, idx)
        .map_err(|e| format!("index of pack {sha} is corrupted: {}", io_reason(&e)))?
        .len() as u64;
    match expected {
        Some(objects) if objects != count => Err(format!(
            "pack {sha} holds {count} objects, the manifest says {objects}"
        )),
        _ => Ok(()),
    }
}

/// The reason of a mirror error without its generic context.
fn io_reason(e: &MirrorError) -> String {
    match e {
        MirrorError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Downloads a pack, checks its size and hash against the manifest and decodes it (the git
/// pack); a reason naming the pack otherwise.
async fn fetch_pack(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
) -> std::result::Result<Vec<u8>, String> {
    let bytes = fetch_sized(store, manifest, sha, PackFile::Pack)
        .await
        .map_err(|e| e.to_string())?;
    let actual = sha256_hex(&bytes);
    if actual != sha {
        return Err(format!("pack {sha} is corrupted: its sha256 is {actual}"));
    }
    match crate::packcodec::decode(&bytes) {
        Ok(std::borrow::Cow::Borrowed(_)) => Ok(bytes),
        Ok(std::borrow::Cow::Owned(pack)) => Ok(pack),
        Err(e) => Err(format!("pack {sha} cannot be decoded: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::entry;
    use super::*;
    use crate::store::manifest::PackEntry;
    use crate::store::{MANIFEST_KEY, MemoryStore};
    #[tokio::test]
    async fn verify_names_missing_and_truncated_packs() {
        let store = MemoryStore::new();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut m = Manifest::default();
        for sha in [&a, &b] {
            m.packs.insert(
                sha.clone(),
                PackEntry {
                    size: 4,
                    idx_size: 2,
                    objects: 1,
                    created: jiff::Timestamp::UNIX_EPOCH,
                },
            );
            store.overwrite(&idx_key(sha), vec![0; 2]);
        }
        store.overwrite(&pack_key(&a), vec![0; 3]);
        m.snapshots.insert("s1".into(), entry(&[&a], None));
        m.snapshots.insert("s2".into(), entry(&[&a, &b], None));
        store
            .put_if_match(MANIFEST_KEY, m.to_bytes(), None)
            .await
            .unwrap();
        let r = verify(&store, false).await.unwrap();
        assert_eq!(r.problems.len(), 2, "{r:?}");
        let pa = r.problems.iter().find(|p| p.subject == a).unwrap();
        assert_eq!(pa.snapshots, vec!["s1".to_string(), "s2".to_string()]);
        assert!(pa.reason.contains("3 bytes"), "{}", pa.reason);
        let pb = r.problems.iter().find(|p| p.subject == b).unwrap();
        assert_eq!(pb.snapshots, vec!["s2".to_string()]);
        assert!(pb.reason.contains("missing"), "{}", pb.reason);
    }
}
