//! Push, pull, verify, delete and gc between the local mirror and an [`ObjectStore`]
//! (docs/design.md §5), one file per operation: [`push`](push()), [`repack`](repack()),
//! [`pull`](pull()), [`verify`](verify()), [`delete`](delete()), [`gc`](gc()) and
//! [`ensure_local`]. This file owns what they share: [`SyncError`], reading the manifest and
//! changing it by compare-and-swap, and [`list`].
//!
//! Consistency model: packs are immutable and named by their sha256, written with
//! create-if-absent; the manifest is the only mutable object and is changed only by
//! compare-and-swap (re-read, re-apply the change, retry on a lost race). After each write the
//! manifest is read back and the change re-checked, so a backend that ignored the condition is
//! caught in most interleavings (see docs/store.md for the residual window). A manifest is
//! written only after every pack it names is fully uploaded. Everything read from the store is
//! untrusted: the manifest is validated, packs are checked against their hash and size and
//! indexed by libgit2, and a snapshot is tagged only when its commit is complete.
//!
//! Git work is done through [`SharedMirror::run`](crate::mirror::SharedMirror::run), on
//! blocking threads, in a few phases per operation (never per object); the store requests in
//! between are awaited here, so these futures are `Send` and never block a runtime thread.
//!
//! Must not import git2 (the mirror does the git work) and must not print.

mod delete;
mod ensure_local;
mod gc;
mod pull;
mod push;
mod repack;
mod verify;

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::manifest::{Manifest, SnapshotEntry};
use super::{Etag, MANIFEST_KEY, ObjectStore, StoreError};
use crate::mirror::{CommitId, MirrorError, PackData};

pub use delete::{DeleteReport, delete};
pub use ensure_local::ensure_local;
pub use gc::{GcOptions, GcReport, gc};
pub use pull::{PullReport, pull};
#[cfg(feature = "failpoints")]
pub use push::FAILPOINT_ENV;
pub use push::{PushReport, push};
pub use repack::{RepackReport, repack};
pub use verify::{VerifyProblem, VerifyReport, verify};

/// Builds the stored form of the pack of every object reachable from `include` but not from
/// `hide` (see [`Mirror::build_pack_to`](crate::mirror::Mirror::build_pack_to)): the git pack
/// streamed through the zstd frame encoder as it is built, and its index. `None` when there
/// is nothing to pack.
pub(super) fn build_stored_pack(
    m: &crate::mirror::Mirror,
    include: &[CommitId],
    hide: &[CommitId],
) -> Result<Option<PackData>> {
    m.build_pack_to(include, hide, frame_encoder()?)?
        .map(finish_stored)
        .transpose()
}

/// The zstd frame encoder a built pack streams through.
fn frame_encoder() -> Result<crate::packcodec::FrameEncoder> {
    Ok(crate::packcodec::FrameEncoder::new().map_err(compressing)?)
}

fn compressing(e: std::io::Error) -> MirrorError {
    MirrorError::Io {
        context: "compressing a pack".into(),
        source: e,
    }
}

/// The stored bytes and index of a pack built through [`frame_encoder`].
fn finish_stored(
    (encoder, built): (crate::packcodec::FrameEncoder, crate::mirror::BuiltPack),
) -> Result<PackData> {
    let pack = encoder.finish().map_err(compressing)?;
    tracing::debug!(
        objects = built.objects,
        reused = built.reused,
        pack_bytes = built.pack_len,
        stored_bytes = pack.len(),
        "pack built"
    );
    Ok(PackData {
        pack,
        idx: built.idx,
        objects: built.objects,
    })
}

/// One pack a push uploads, in its stored form.
pub(super) struct PushPack {
    /// The sha256 of `pack`, hex: the pack's name in the store.
    pub(super) sha: String,
    /// The stored bytes (zstd frames of the git pack).
    pub(super) pack: Vec<u8>,
    /// Its index (version 2).
    pub(super) idx: Vec<u8>,
    /// Objects in it.
    pub(super) objects: u64,
}

/// The packs holding every object reachable from `include` but not from `hide`, in their
/// stored form: of the `offered` stored copies (`(sha256, index)`), those whose pack holds
/// nothing else (their sha256), and one pack built of the rest as [`build_stored_pack`]
/// builds it.
pub(super) fn build_push_packs(
    m: &crate::mirror::Mirror,
    include: &[CommitId],
    hide: &[CommitId],
    offered: &[(String, Vec<u8>)],
) -> Result<(Vec<String>, Option<PushPack>)> {
    let parts = m.build_push_packs(include, hide, offered, frame_encoder()?)?;
    let built = match parts.built {
        Some(built) => {
            let p = finish_stored(built)?;
            Some(PushPack {
                sha: sha256_hex(&p.pack),
                pack: p.pack,
                idx: p.idx,
                objects: p.objects,
            })
        }
        None => None,
    };
    tracing::debug!(
        copied = parts.copies.len(),
        built = built.is_some(),
        "packs to push"
    );
    Ok((parts.copies, built))
}

/// How many times a manifest compare-and-swap is retried after losing a race.
const CAS_ATTEMPTS: u32 = 30;

/// Errors of the store operations; each names the snapshot, pack or store at fault.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The local git mirror failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The store's manifest cannot be parsed or is inconsistent.
    #[error("{store}: the manifest is invalid: {reason}")]
    BadManifest {
        /// The store (no credentials).
        store: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot is not in the local mirror.
    #[error("snapshot {name:?} not found in the local mirror")]
    NotLocal {
        /// The snapshot's name.
        name: String,
    },
    /// The snapshot is not in the store.
    #[error("snapshot {name:?} not found in {store}")]
    NotInStore {
        /// The snapshot's name.
        name: String,
        /// The store (no credentials).
        store: String,
    },
    /// The store and the local mirror hold different snapshots of the same name.
    #[error(
        "snapshot {name:?} is in {store} with commit {theirs}, the local one is {ours}; \
         delete one of them or use another name"
    )]
    Conflict {
        /// The snapshot's name.
        name: String,
        /// The store (no credentials).
        store: String,
        /// The local snapshot's commit.
        ours: CommitId,
        /// The store's snapshot's commit.
        theirs: CommitId,
    },
    /// A pack of the same name but another size is already in the store.
    #[error("{store}: pack {sha} already exists with {found} bytes, expected {expected}")]
    PackMismatch {
        /// The store (no credentials).
        store: String,
        /// The pack's checksum (its name).
        sha: String,
        /// Size of the pack in the store, in bytes.
        found: u64,
        /// Size of the local pack, in bytes.
        expected: u64,
    },
    /// Concurrent writers kept changing the manifest; the update gave up.
    #[error("{store}: the manifest kept changing; gave up after {attempts} attempts")]
    Contention {
        /// The store (no credentials).
        store: String,
        /// How many updates were tried.
        attempts: u32,
    },
    /// A snapshot could not be fetched from the store.
    #[error("snapshot {name:?} could not be pulled from {store}: {reason}")]
    PullFailed {
        /// The snapshot's name.
        name: String,
        /// The store (no credentials).
        store: String,
        /// Why it could not be fetched.
        reason: String,
    },
    /// A test's failpoint (the `failpoints` feature) stopped the operation.
    #[cfg(feature = "failpoints")]
    #[error("failpoint {0} hit")]
    Failpoint(String),
}

/// Result of a sync operation.
pub type Result<T, E = SyncError> = std::result::Result<T, E>;

/// A snapshot as the store lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreSnapshot {
    /// The snapshot's name.
    pub name: String,
    /// Its manifest entry (flattened into this object when serialized).
    #[serde(flatten)]
    pub entry: SnapshotEntry,
}

/// The manifest and its etag; an empty manifest (and no etag) when the store has none.
pub async fn read_manifest(store: &dyn ObjectStore) -> Result<(Manifest, Option<Etag>)> {
    match store.get(MANIFEST_KEY).await {
        Ok(o) => {
            let m = Manifest::parse(&o.bytes).map_err(|reason| SyncError::BadManifest {
                store: store.describe(),
                reason,
            })?;
            Ok((m, Some(o.etag)))
        }
        Err(StoreError::NotFound { .. }) => Ok((Manifest::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Applies `change` to the manifest by compare-and-swap. `change` returns whether it changed
/// anything; it is re-run on a fresh copy after every lost race, so it must be idempotent.
/// Returns the manifest as written (or as read, when nothing changed).
pub(crate) async fn update_manifest(
    store: &dyn ObjectStore,
    change: impl FnMut(&mut Manifest) -> Result<bool>,
) -> Result<Manifest> {
    update_manifest_from(store, None, change).await
}

/// [`update_manifest`], starting from a manifest the caller has just read (with its etag)
/// instead of reading it again: if it changed meanwhile, the conditional write fails and the
/// update goes on as usual from a fresh read.
pub(crate) async fn update_manifest_from(
    store: &dyn ObjectStore,
    mut read: Option<(Manifest, Option<Etag>)>,
    mut change: impl FnMut(&mut Manifest) -> Result<bool>,
) -> Result<Manifest> {
    for attempt in 0..CAS_ATTEMPTS {
        let (current, etag) = match read.take() {
            Some(read) => read,
            None => read_manifest(store).await?,
        };
        let mut next = current.clone();
        if !change(&mut next)? {
            return Ok(current);
        }
        next.generation = current.generation + 1;
        match store
            .put_if_match(MANIFEST_KEY, next.to_bytes(), etag.as_ref())
            .await
        {
            Ok(_) => {
                // Read back: a backend that ignored the condition may have let another writer
                // overwrite us (or we them); re-apply if our change is missing.
                let (after, _) = read_manifest(store).await?;
                let mut check = after.clone();
                if !change(&mut check)? {
                    tracing::debug!(generation = next.generation, "manifest updated");
                    return Ok(after);
                }
                tracing::warn!(store = %store.describe(), "manifest write was lost; retrying");
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                tracing::debug!(attempt, "manifest changed concurrently; re-reading");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    Err(SyncError::Contention {
        store: store.describe(),
        attempts: CAS_ATTEMPTS,
    })
}

fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            % 50,
    );
    Duration::from_millis(10 * u64::from(attempt.min(10)) + jitter)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The store's snapshots, sorted by timestamp then name.
pub async fn list(store: &dyn ObjectStore) -> Result<Vec<StoreSnapshot>> {
    let (m, _) = read_manifest(store).await?;
    let mut out: Vec<StoreSnapshot> = m
        .snapshots
        .into_iter()
        .map(|(name, entry)| StoreSnapshot { name, entry })
        .collect();
    out.sort_by(|a, b| {
        a.entry
            .timestamp
            .cmp(&b.entry.timestamp)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

#[cfg(test)]
pub(super) mod test_support {
    use super::SnapshotEntry;

    /// A manifest entry of a snapshot needing `packs`.
    pub(in crate::store) fn entry(packs: &[&str], until: Option<jiff::Timestamp>) -> SnapshotEntry {
        SnapshotEntry {
            commit: "1".repeat(40).parse().expect("commit id"),
            cluster: "prod".into(),
            timestamp: jiff::Timestamp::UNIX_EPOCH,
            resource_version: "1".into(),
            number_of_contents: 1,
            available_until: until,
            packs: packs.iter().map(|s| s.to_string()).collect(),
            filter: None,
        }
    }
}
