//! [`pull`]: store snapshots into the mirror. Indexes first (packs whose objects the mirror
//! has are skipped), packs streamed into staging files and checked against their size and
//! hash, installed with their index (or indexed locally), and a snapshot tagged only when its
//! whole tree is present and valid.
//!
//! Owns: downloading and checking packs and indexes. Must not touch: the store (read only),
//! snapshots it was not asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, stream};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Result, SyncError, read_manifest};
use crate::mirror::{MirrorError, ObjectSet, Scanned, SharedMirror, StageError, StagedPack};
use crate::packcodec::StreamDecoder;
use crate::store::ObjectStore;
use crate::store::manifest::{Manifest, SnapshotEntry, idx_key, pack_key};

/// Packs (or indexes) downloaded at once by a pull.
const FETCH_PARALLELISM: usize = 4;

/// Stored bytes from which a pack downloaded alone is hashed on a thread of its own.
const SCAN_ASIDE_MIN: u64 = 1 << 20;

/// What [`pull`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    /// Snapshots tagged in the mirror by this pull.
    pub pulled: Vec<String>,
    /// Snapshots the mirror already had.
    pub up_to_date: Vec<String>,
    /// Snapshots not tagged, with the reason (naming the pack at fault).
    pub failed: BTreeMap<String, String>,
    /// Packs downloaded whole.
    pub packs_downloaded: u64,
    /// Packs whose objects the mirror already had (only their index was downloaded).
    pub packs_skipped: u64,
    /// Bytes downloaded (packs and indexes).
    pub bytes_downloaded: u64,
}

/// Pulls store snapshots (`names`, or all when empty) into the mirror: downloads and checks the
/// packs they need, indexes them, and tags each snapshot whose commit is complete. Failures are
/// per snapshot, in [`PullReport::failed`]; nothing incomplete is ever tagged.
pub async fn pull(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    names: &[String],
) -> Result<PullReport> {
    let started = std::time::Instant::now();
    let (manifest, _) = read_manifest(store).await?;
    let selected: Vec<(String, SnapshotEntry)> = if names.is_empty() {
        manifest.snapshots.clone().into_iter().collect()
    } else {
        let mut v = Vec::new();
        for n in names {
            let e = manifest
                .snapshots
                .get(n)
                .ok_or_else(|| SyncError::NotInStore {
                    name: n.clone(),
                    store: store.describe(),
                })?;
            v.push((n.clone(), e.clone()));
        }
        v
    };
    let mut report = PullReport::default();
    // Phase 1 (git): the selection's local state, which commits are already complete, and
    // whether the mirror has any snapshot at all.
    let (selected, complete, fresh) = mirror
        .run(move |m| -> Result<_> {
            let mut out = Vec::with_capacity(selected.len());
            let mut complete = BTreeSet::new();
            for (name, entry) in selected {
                let local = m.snapshot(&name)?.map(|s| s.commit);
                if local.is_none() && m.commit_is_complete(&entry.commit)? {
                    complete.insert(entry.commit.clone());
                }
                out.push((name, entry, local));
            }
            Ok((out, complete, m.snapshots()?.is_empty()))
        })
        .await?;
    let mut to_pull = Vec::new();
    for (name, entry, local) in selected {
        match local {
            Some(local) if local == entry.commit => report.up_to_date.push(name),
            Some(local) => {
                report.failed.insert(
                    name.clone(),
                    format!(
                        "the local snapshot has commit {local}, the store's is {}",
                        entry.commit
                    ),
                );
            }
            None => to_pull.push((name, entry)),
        }
    }
    // Packs to fetch: those of snapshots whose commit is not already complete locally.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for (_, e) in &to_pull {
        if !complete.contains(&e.commit) {
            wanted.extend(e.packs.iter().cloned());
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), packs = wanted.len(), "pull: manifest read");
    let mut bad_packs: BTreeMap<String, String> = BTreeMap::new();
    // Into a mirror without snapshots every pack is needed: fetch pack and index together.
    let manifest_ref = &manifest;
    // Stage 1 (a mirror with snapshots): fetch the small indexes and skip packs whose objects
    // the mirror already has (e.g. from an earlier pull).
    // (An index error only makes the pull index the pack itself: shared, not re-typed.)
    type Fetch = std::result::Result<Vec<u8>, Arc<PackError>>;
    let mut indexes: BTreeMap<String, Fetch> = BTreeMap::new();
    if !fresh {
        let fetched: Vec<(String, Fetch)> = stream::iter(wanted.iter().cloned())
            .map(|sha: String| async move {
                let idx = fetch_idx(store, manifest_ref, &sha).await.map_err(Arc::new);
                (sha, idx)
            })
            .buffered(FETCH_PARALLELISM)
            .collect()
            .await;
        // Phase 2 (git): which of those packs hold objects the mirror lacks.
        let checked = mirror
            .run(move |m| -> Result<_> {
                let mut out = Vec::with_capacity(fetched.len());
                for (sha, idx) in fetched {
                    let skip = match &idx {
                        Ok(bytes) => m.objects_missing_from_idx(bytes)? == Some(0),
                        Err(_) => false,
                    };
                    out.push((sha, idx, skip));
                }
                Ok(out)
            })
            .await?;
        for (sha, idx, skip) in checked {
            if skip {
                if let Ok(bytes) = &idx {
                    report.bytes_downloaded += bytes.len() as u64;
                }
                report.packs_skipped += 1;
                continue;
            }
            indexes.insert(sha, idx);
        }
    }
    let needed: Vec<String> = if fresh {
        wanted.iter().cloned().collect()
    } else {
        indexes.keys().cloned().collect()
    };
    // Stage 2: download packs (hashed while they stream) with their indexes a few at a time;
    // each verified pack is checked against its index and written into the mirror on a
    // blocking thread while the other downloads go on. With fewer packs than cores, a big
    // pack's entries are hashed on a thread of their own beside its decoding and writing
    // (one pack of 500k objects: 3.5 s on one core otherwise).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let alone = cores > 1 && needed.len() < cores;
    let scan_aside = |sha: &str| alone && stored_len(manifest_ref, sha) >= SCAN_ASIDE_MIN;
    let indexes_ref = &indexes;
    let git_dir = mirror.git_dir().to_path_buf();
    let git_dir_ref = &git_dir;
    let mut downloads = stream::iter(needed)
        .map(|sha| async move {
            let aside = scan_aside(&sha);
            let (pack, idx) = match indexes_ref.get(&sha) {
                Some(idx) => (
                    fetch_pack_staged(store, manifest_ref, &sha, git_dir_ref, aside).await,
                    idx.clone(),
                ),
                None => futures::join!(
                    fetch_pack_staged(store, manifest_ref, &sha, git_dir_ref, aside),
                    async { fetch_idx(store, manifest_ref, &sha).await.map_err(Arc::new) }
                ),
            };
            let outcome = match (pack, idx) {
                (Err(reason), _) => Fetched::Bad(reason),
                (Ok(staged), Err(reason)) => {
                    tracing::warn!(pack = %sha, "{reason}; re-indexing");
                    Fetched::Unindexed {
                        staged,
                        idx_bytes: 0,
                    }
                }
                (Ok(staged), Ok(idx)) => {
                    let idx_bytes = idx.len() as u64;
                    let bytes = stored_len(manifest_ref, &sha) + idx_bytes;
                    match tokio::task::spawn_blocking(move || staged.install(&idx)).await {
                        Ok(Ok((objects, scanned))) => Fetched::Installed {
                            bytes,
                            objects,
                            scanned,
                        },
                        Ok(Err(StageError::BadIndex(staged, e))) => {
                            tracing::warn!(pack = %sha, "index from the store unusable ({e}); re-indexing");
                            Fetched::Unindexed {
                                staged: *staged,
                                idx_bytes,
                            }
                        }
                        Ok(Err(StageError::Failed(e))) => Fetched::Bad(PackError::Install {
                            sha: sha.clone(),
                            source: e,
                        }),
                        Err(e) => Fetched::Bad(PackError::Worker {
                            sha: sha.clone(),
                            doing: "installing it",
                            source: e,
                        }),
                    }
                }
            };
            (sha, outcome)
        })
        .buffer_unordered(FETCH_PARALLELISM);
    let mut present = ObjectSet::default();
    let mut scanned = Scanned::default();
    let mut installed = 0usize;
    let mut unindexed = Vec::new();
    while let Some((sha, outcome)) = downloads.next().await {
        tracing::debug!(elapsed = ?started.elapsed(), pack = %sha, "pull: pack downloaded");
        match outcome {
            Fetched::Installed {
                bytes,
                objects,
                scanned: found,
            } => {
                report.packs_downloaded += 1;
                report.bytes_downloaded += bytes;
                installed += 1;
                present.extend(objects);
                if let Some(found) = found {
                    scanned.extend(found);
                }
            }
            Fetched::Unindexed { staged, idx_bytes } => {
                report.packs_downloaded += 1;
                report.bytes_downloaded += stored_len(&manifest, &sha) + idx_bytes;
                unindexed.push((sha, staged));
            }
            Fetched::Bad(reason) => {
                bad_packs.insert(sha, reason.to_string());
            }
        }
    }
    drop(downloads);
    // Phase 3 (git): index what came without a usable index, then check and tag.
    let indexed_bad = mirror
        .run(move |m| -> Result<_> {
            if installed > 0 {
                m.refresh_objects()?;
            }
            // Slow path: index the packs whose index was missing or unusable ourselves.
            let mut bad = Vec::new();
            for (sha, staged) in unindexed {
                if let Err(e) = staged.read_back().and_then(|pack| m.index_pack(&pack)) {
                    bad.push((sha.clone(), format!("pack {sha} cannot be indexed: {e}")));
                }
            }
            Ok(bad)
        })
        .await?;
    bad_packs.extend(indexed_bad);
    tracing::debug!(
        elapsed = ?started.elapsed(),
        scanned = scanned.len(),
        "pull: packs installed"
    );
    let mut ready = Vec::new();
    for (name, entry) in to_pull {
        let bad: Vec<&String> = entry
            .packs
            .iter()
            .filter_map(|p| bad_packs.get(p))
            .collect();
        if bad.is_empty() {
            ready.push((name, entry.commit));
        } else {
            let reasons: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
            report.failed.insert(name, reasons.join("; "));
        }
    }
    let (ready, results) = mirror
        .run(move |m| -> Result<_> {
            let results = m.create_snapshot_tags_checked(&ready, &present, &scanned);
            Ok((ready, results))
        })
        .await?;
    tracing::debug!(elapsed = ?started.elapsed(), "pull: snapshots checked and tagged");
    for ((name, _), result) in ready.iter().zip(results) {
        match result {
            Ok(_) => report.pulled.push(name.clone()),
            Err(e) => {
                report.failed.insert(name.clone(), e.to_string());
            }
        }
    }
    Ok(report)
}

/// Bytes of a pack as stored (what a download of it transfers).
fn stored_len(manifest: &Manifest, sha: &str) -> u64 {
    manifest.packs.get(sha).map_or(0, |e| e.size)
}

/// A downloaded pack, as [`pull`] handles it.
enum Fetched {
    /// Checked and written into the mirror with its index, which lists `objects`; `scanned`
    /// when every object was hashed as it streamed in.
    Installed {
        bytes: u64,
        objects: ObjectSet,
        scanned: Option<Scanned>,
    },
    /// Checked, but its index was missing or unusable: to index locally.
    Unindexed { staged: StagedPack, idx_bytes: u64 },
    /// Missing, truncated or corrupted (the reason names the pack).
    Bad(PackError),
}

/// Why a pack (or its index) from the store cannot be used; each names the pack.
#[derive(Debug, thiserror::Error)]
pub(super) enum PackError {
    #[error("pack {sha} is not listed in the manifest")]
    NotListed { sha: String },
    #[error("pack {sha}: {source}")]
    Mirror {
        sha: String,
        #[source]
        source: MirrorError,
    },
    #[error("pack {sha}: {source}")]
    Download {
        sha: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("pack {sha}: {doing} failed: {source}")]
    Worker {
        sha: String,
        doing: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("pack {sha}: installing it failed: {source}")]
    Install {
        sha: String,
        #[source]
        source: MirrorError,
    },
    #[error("pack {sha} has more than the {limit} bytes the manifest says (corrupted)")]
    TooLong { sha: String, limit: u64 },
    #[error("pack {sha} has {found} bytes, the manifest says {expected} (truncated or corrupted)")]
    Size {
        sha: String,
        found: u64,
        expected: u64,
    },
    #[error("pack {sha} cannot be decoded: {source}")]
    Decode {
        sha: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pack {sha} is corrupted: its sha256 is {actual}")]
    Digest { sha: String, actual: String },
    #[error("index of pack {sha}: {source}")]
    IndexDownload {
        sha: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("index of pack {sha} has {found} bytes, the manifest says {expected}")]
    IndexSize {
        sha: String,
        found: u64,
        expected: u64,
    },
}

/// Downloads a pack straight into a [`StagedPack`] of the mirror at `git_dir`: a blocking
/// thread hashes and writes each chunk while the next ones arrive (with `scan_aside`, the
/// entries are checked on a thread of their own). Checks the size (never
/// writing more than the manifest says) and the sha256 against the manifest; a reason naming
/// the pack otherwise (the staging file is then deleted).
async fn fetch_pack_staged(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
    git_dir: &std::path::Path,
    scan_aside: bool,
) -> std::result::Result<StagedPack, PackError> {
    let sha_owned = || sha.to_string();
    let Some(entry) = manifest.packs.get(sha) else {
        return Err(PackError::NotListed { sha: sha_owned() });
    };
    let mirror_err = |source| PackError::Mirror {
        sha: sha_owned(),
        source,
    };
    let staged = StagedPack::create(git_dir, scan_aside).map_err(mirror_err)?;
    let (tx, rx) = std::sync::mpsc::channel::<bytes::Bytes>();
    let stored_size = entry.size;
    let writer = tokio::task::spawn_blocking(move || {
        // Stored packs are zstd frames (or, from older pushes, plain git packs): the git pack
        // is decoded into the staging file as the bytes arrive.
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        // A decoding error does not stop the download: the pack's hash then tells whether
        // the store's bytes are corrupt (the likely cause) or the pack was pushed bad.
        let mut decoder = Some(StreamDecoder::new(staged, stored_size));
        let mut failed = None;
        for chunk in rx {
            hasher.update(&chunk);
            received += chunk.len() as u64;
            if let Some(d) = &mut decoder
                && let Err(e) = d.feed(&chunk)
            {
                failed = Some(e);
                decoder = None;
            }
        }
        let decoded = match (decoder, failed) {
            (Some(d), _) => d.finish(),
            (None, Some(e)) => Err(e),
            (None, None) => Err(std::io::Error::other("the decoder stopped")),
        };
        Ok::<_, std::io::Error>((decoded, received, hasher.finalize()))
    });
    let limit = entry.size;
    let mut received = 0u64;
    let mut too_long = false;
    let mut sink = |chunk: bytes::Bytes| {
        received += chunk.len() as u64;
        if received > limit {
            too_long = true;
            return Err(std::io::Error::other("longer than the manifest says"));
        }
        tx.send(chunk)
            .map_err(|_| std::io::Error::other("the pack writer stopped"))
    };
    let got = store.get_streamed(&pack_key(sha), &mut sink).await;
    drop(tx);
    let written = writer.await.map_err(|source| PackError::Worker {
        sha: sha_owned(),
        doing: "writing it",
        source,
    })?;
    if too_long {
        return Err(PackError::TooLong {
            sha: sha_owned(),
            limit,
        });
    }
    got.map_err(|source| PackError::Download {
        sha: sha_owned(),
        source,
    })?;
    let (decoded, received, digest) = written.map_err(|e| PackError::Decode {
        sha: sha_owned(),
        source: e,
    })?;
    if received != entry.size {
        return Err(PackError::Size {
            sha: sha_owned(),
            found: received,
            expected: entry.size,
        });
    }
    let actual = hex::encode(digest);
    if actual != sha {
        return Err(PackError::Digest {
            sha: sha_owned(),
            actual,
        });
    }
    decoded.map_err(|e| PackError::Decode {
        sha: sha_owned(),
        source: e,
    })
}

/// A stored file of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PackFile {
    Pack,
    Idx,
}

/// Downloads a pack's index and checks its size against the manifest.
pub(super) async fn fetch_idx(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
) -> std::result::Result<Vec<u8>, PackError> {
    fetch_sized(store, manifest, sha, PackFile::Idx).await
}

/// Downloads a pack's file and checks its size against the manifest.
pub(super) async fn fetch_sized(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
    file: PackFile,
) -> std::result::Result<Vec<u8>, PackError> {
    let Some(entry) = manifest.packs.get(sha) else {
        return Err(PackError::NotListed {
            sha: sha.to_string(),
        });
    };
    let (key, expected) = match file {
        PackFile::Pack => (pack_key(sha), entry.size),
        PackFile::Idx => (idx_key(sha), entry.idx_size),
    };
    let sha = sha.to_string();
    let obj = store.get(&key).await.map_err(|source| match file {
        PackFile::Pack => PackError::Download {
            sha: sha.clone(),
            source,
        },
        PackFile::Idx => PackError::IndexDownload {
            sha: sha.clone(),
            source,
        },
    })?;
    let found = obj.bytes.len() as u64;
    if found != expected {
        return Err(match file {
            PackFile::Pack => PackError::Size {
                sha,
                found,
                expected,
            },
            PackFile::Idx => PackError::IndexSize {
                sha,
                found,
                expected,
            },
        });
    }
    Ok(obj.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::PackEntry;
    use crate::store::{MemoryStore, sync::sha256_hex};
    #[tokio::test]
    async fn staged_fetch_rejects_long_short_and_corrupt_packs() {
        let store = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let good = b"PACK-some-bytes".to_vec();
        let sha = sha256_hex(&good);
        let mut m = Manifest::default();
        m.packs.insert(
            sha.clone(),
            PackEntry {
                size: good.len() as u64,
                idx_size: 1,
                objects: 1,
                created: jiff::Timestamp::UNIX_EPOCH,
            },
        );
        let pack_dir = dir.path().join("objects").join("pack");
        let fetch = || fetch_pack_staged(&store, &m, &sha, dir.path(), false);
        store.overwrite(&pack_key(&sha), good.clone());
        let staged = fetch().await.unwrap();
        assert_eq!(staged.len(), good.len() as u64);
        assert_eq!(staged.read_back().unwrap(), good);
        drop(staged);
        for (bytes, want) in [
            ([good.as_slice(), b"x"].concat(), "more than"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([b"X", &good[1..]].concat(), "corrupted: its sha256"),
        ] {
            store.overwrite(&pack_key(&sha), bytes);
            let err = fetch().await.unwrap_err().to_string();
            assert!(err.contains(&sha) && err.contains(want), "{err}");
        }
        // Nothing staged is left behind in the pack directory.
        assert_eq!(std::fs::read_dir(&pack_dir).unwrap().count(), 0);
    }
}
