//! Push, pull, verify, delete and gc between the local [`Mirror`] and an [`ObjectStore`]
//! (docs/design.md §5).
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
//! Git work is done through [`SharedMirror::run`], on blocking threads, in a few phases per
//! operation (never per object); the store requests in between are awaited here, so these
//! futures are `Send` and never block a runtime thread.
//!
//! Must not import git2 (the mirror does the git work) and must not print.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt, stream};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::manifest::{Manifest, PackEntry, SnapshotEntry, idx_key, is_pack_name, pack_key};
use super::{Etag, MANIFEST_KEY, ObjectStore, PutOutcome, ROOT, StoreError};
use crate::mirror::{CommitId, MirrorError, ObjectSet, SharedMirror, StageError, StagedPack};

/// Env var naming a failpoint (tests only): `push-after-packs` makes a push fail after
/// uploading its packs and before writing the manifest, like a killed process.
pub const FAILPOINT_ENV: &str = "K8S_SNAP_FAILPOINT";

/// Packs (or indexes) downloaded at once by a pull.
const FETCH_PARALLELISM: usize = 4;

/// How many times a manifest compare-and-swap is retried after losing a race.
const CAS_ATTEMPTS: u32 = 30;

/// Errors of the store operations; each names the snapshot, pack or store at fault.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("{store}: the manifest is invalid: {reason}")]
    BadManifest { store: String, reason: String },
    #[error("snapshot {name:?} not found in the local mirror")]
    NotLocal { name: String },
    #[error("snapshot {name:?} not found in {store}")]
    NotInStore { name: String, store: String },
    #[error(
        "snapshot {name:?} is in {store} with commit {theirs}, the local one is {ours}; \
         delete one of them or use another name"
    )]
    Conflict {
        name: String,
        store: String,
        ours: CommitId,
        theirs: CommitId,
    },
    #[error("{store}: pack {sha} already exists with {found} bytes, expected {expected}")]
    PackMismatch {
        store: String,
        sha: String,
        found: u64,
        expected: u64,
    },
    #[error("{store}: the manifest kept changing; gave up after {attempts} attempts")]
    Contention { store: String, attempts: u32 },
    #[error("snapshot {name:?} could not be pulled from {store}: {reason}")]
    PullFailed {
        name: String,
        store: String,
        reason: String,
    },
    #[error("failpoint {0} hit")]
    Failpoint(String),
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

/// A snapshot as the store lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreSnapshot {
    pub name: String,
    #[serde(flatten)]
    pub entry: SnapshotEntry,
}

/// What [`push`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// Snapshots added to the manifest.
    pub pushed: Vec<String>,
    /// Snapshots the store already had.
    pub up_to_date: Vec<String>,
    /// The new pack (sha256), if any.
    pub pack: Option<String>,
    pub pack_bytes: u64,
    pub idx_bytes: u64,
    pub objects: u64,
    /// Whether the pack was uploaded by this push (false: the store had it).
    pub uploaded: bool,
}

/// What [`pull`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    pub pulled: Vec<String>,
    pub up_to_date: Vec<String>,
    /// Snapshots not tagged, with the reason (naming the pack at fault).
    pub failed: BTreeMap<String, String>,
    pub packs_downloaded: u64,
    /// Packs whose objects the mirror already had (only their index was downloaded).
    pub packs_skipped: u64,
    pub bytes_downloaded: u64,
}

/// One problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyProblem {
    /// The pack (sha256) or snapshot at fault.
    pub subject: String,
    /// The snapshots affected.
    pub snapshots: Vec<String>,
    pub reason: String,
}

/// What [`verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub snapshots: usize,
    pub packs: usize,
    pub deep: bool,
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`delete`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    pub deleted: Vec<String>,
    pub not_found: Vec<String>,
}

/// Options of [`gc`].
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// How long an unneeded pack stays in `pendingDelete`, and how old an orphan key must be.
    pub grace: Duration,
    /// The current time (injectable for tests).
    pub now: jiff::Timestamp,
}

/// What [`gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Snapshots removed because their `availableUntil` passed.
    pub expired: Vec<String>,
    /// Packs newly moved to `pendingDelete`.
    pub pending: Vec<String>,
    /// Packs deleted after the grace period.
    pub deleted_packs: Vec<String>,
    /// Keys under `k8s-snap/` that no manifest named, deleted.
    pub orphans: Vec<String>,
    /// Packs no manifest names that hold snapshots (or cannot be read): kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
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
pub(super) async fn update_manifest(
    store: &dyn ObjectStore,
    mut change: impl FnMut(&mut Manifest) -> Result<bool>,
) -> Result<Manifest> {
    for attempt in 0..CAS_ATTEMPTS {
        let (current, etag) = read_manifest(store).await?;
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

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
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

/// Pushes local snapshots (`names`, or all when empty) that the store lacks: one pack with the
/// objects the store's snapshots do not already hold, then one manifest update.
pub async fn push(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    names: &[String],
) -> Result<PushReport> {
    // A concurrent gc may remove a snapshot whose objects the pack relies on: start over then.
    let mut last = None;
    for _ in 0..3 {
        match push_once(store, mirror, names).await {
            Err(SyncError::Contention { store, attempts }) => {
                last = Some(SyncError::Contention { store, attempts })
            }
            other => return other,
        }
    }
    Err(last.unwrap_or(SyncError::Contention {
        store: store.describe(),
        attempts: 3,
    }))
}

async fn push_once(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    names: &[String],
) -> Result<PushReport> {
    let local = mirror.run(|m| m.snapshots()).await?;
    let selected: Vec<_> = if names.is_empty() {
        local
    } else {
        let mut v = Vec::new();
        for n in names {
            let s = local
                .iter()
                .find(|s| &s.name == n)
                .ok_or_else(|| SyncError::NotLocal { name: n.clone() })?;
            v.push(s.clone());
        }
        v
    };
    let (manifest, _) = read_manifest(store).await?;
    let mut report = PushReport::default();
    let mut to_push = Vec::new();
    for s in selected {
        match manifest.snapshots.get(&s.name) {
            Some(e) if e.commit == s.commit => report.up_to_date.push(s.name),
            Some(e) => {
                return Err(SyncError::Conflict {
                    name: s.name,
                    store: store.describe(),
                    ours: s.commit,
                    theirs: e.commit.clone(),
                });
            }
            None => to_push.push(s),
        }
    }
    if to_push.is_empty() {
        return Ok(report);
    }
    // Packs that are missing or truncated in the store (sizes from the manifest): a snapshot
    // needing one of them is not relied upon, so its objects go into the new pack again.
    let damaged = damaged_packs(store, &manifest).await?;
    for (sha, reason) in &damaged {
        tracing::warn!(
            store = %store.describe(),
            pack = %sha,
            snapshots = ?manifest.snapshots_needing(sha),
            "{reason}; the new pack will not rely on it (run `k8s-snap verify`)"
        );
    }
    // Hide every store snapshot we have locally; the new snapshots then depend on its packs.
    let candidates: Vec<(CommitId, Vec<String>)> = manifest
        .snapshots
        .values()
        .filter(|e| !e.packs.iter().any(|p| damaged.contains_key(p)))
        .map(|e| (e.commit.clone(), e.packs.clone()))
        .collect();
    let include: Vec<CommitId> = to_push.iter().map(|s| s.commit.clone()).collect();
    let (deps, pack) = mirror
        .run(move |m| -> Result<_> {
            let mut hide = Vec::new();
            let mut deps: BTreeSet<String> = BTreeSet::new();
            for (commit, packs) in candidates {
                if m.has_commit(&commit)? {
                    hide.push(commit);
                    deps.extend(packs);
                }
            }
            Ok((deps, m.build_pack(&include, &hide)?))
        })
        .await?;
    let mut new_pack = None;
    if let Some(pack) = pack {
        let sha = sha256_hex(&pack.pack);
        let entry = PackEntry {
            size: pack.pack.len() as u64,
            idx_size: pack.idx.len() as u64,
            objects: pack.objects,
            created: jiff::Timestamp::now(),
        };
        report.pack_bytes = entry.size;
        report.idx_bytes = entry.idx_size;
        report.objects = entry.objects;
        // The idx first, the pack last: a present pack implies a present idx.
        for (key, bytes, expected) in [
            (idx_key(&sha), pack.idx, entry.idx_size),
            (pack_key(&sha), pack.pack, entry.size),
        ] {
            match store.put_if_absent(&key, bytes).await? {
                PutOutcome::Created => report.uploaded = true,
                PutOutcome::AlreadyExists => {
                    let found = store.head(&key).await?.size;
                    if found != expected {
                        return Err(SyncError::PackMismatch {
                            store: store.describe(),
                            sha: sha.clone(),
                            found,
                            expected,
                        });
                    }
                }
            }
        }
        tracing::info!(pack = %sha, bytes = entry.size, objects = entry.objects, "pack uploaded");
        report.pack = Some(sha.clone());
        new_pack = Some((sha, entry));
    }
    if std::env::var(FAILPOINT_ENV).as_deref() == Ok("push-after-packs") {
        return Err(SyncError::Failpoint("push-after-packs".into()));
    }
    let mut packs: Vec<String> = deps.iter().cloned().collect();
    if let Some((sha, _)) = &new_pack
        && !deps.contains(sha)
    {
        packs.push(sha.clone());
    }
    packs.sort();
    let store_name = store.describe();
    update_manifest(store, |m| {
        let mut changed = false;
        for d in &deps {
            if !m.packs.contains_key(d) {
                // A pack our new pack relies on was garbage-collected meanwhile.
                return Err(SyncError::Contention {
                    store: store_name.clone(),
                    attempts: 1,
                });
            }
            if m.pending_delete.remove(d).is_some() {
                changed = true;
            }
        }
        if let Some((sha, entry)) = &new_pack {
            if !m.packs.contains_key(sha) {
                m.packs.insert(sha.clone(), entry.clone());
                changed = true;
            }
            if m.pending_delete.remove(sha).is_some() {
                changed = true;
            }
        }
        for s in &to_push {
            match m.snapshots.get(&s.name) {
                Some(e) if e.commit == s.commit => {}
                Some(e) => {
                    return Err(SyncError::Conflict {
                        name: s.name.clone(),
                        store: store_name.clone(),
                        ours: s.commit.clone(),
                        theirs: e.commit.clone(),
                    });
                }
                None => {
                    m.snapshots.insert(
                        s.name.clone(),
                        SnapshotEntry {
                            commit: s.commit.clone(),
                            cluster: s.meta.cluster_name.clone(),
                            timestamp: s.meta.timestamp,
                            resource_version: s.meta.resource_version.clone(),
                            number_of_contents: s.meta.number_of_contents,
                            available_until: s.meta.available_until,
                            packs: packs.clone(),
                        },
                    );
                    changed = true;
                }
            }
        }
        Ok(changed)
    })
    .await?;
    report.pushed = to_push.into_iter().map(|s| s.name).collect();
    tracing::info!(pushed = ?report.pushed, "manifest updated");
    Ok(report)
}

/// Packs some snapshot of the manifest needs whose `.pack` or `.idx` is missing from the
/// store or has another size than the manifest records, with the reason. One LIST request.
async fn damaged_packs(
    store: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<BTreeMap<String, String>> {
    let needed = manifest.needed_packs();
    if needed.is_empty() {
        return Ok(BTreeMap::new());
    }
    let listed: BTreeMap<String, u64> = store
        .list(super::PACKS_PREFIX)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut out = BTreeMap::new();
    for sha in needed {
        let Some(entry) = manifest.packs.get(&sha) else {
            out.insert(sha, "the manifest does not list this pack".to_owned());
            continue;
        };
        for (key, expected) in [
            (pack_key(&sha), entry.size),
            (idx_key(&sha), entry.idx_size),
        ] {
            let reason = match listed.get(&key) {
                None => format!("{key} is missing"),
                Some(&n) if n != expected => {
                    format!("{key} has {n} bytes, the manifest says {expected}")
                }
                Some(_) => continue,
            };
            out.insert(sha.clone(), reason);
            break;
        }
    }
    Ok(out)
}

/// What [`repack`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepackReport {
    /// Snapshots now served by the new pack alone.
    pub snapshots: Vec<String>,
    /// The packs they needed before.
    pub old_packs: Vec<String>,
    pub new_pack: Option<String>,
    /// Objects in the old packs and in the new one.
    pub objects_before: u64,
    pub objects_after: u64,
}

/// Repacks when the packs the store's snapshots need are mostly dead: if the live objects of
/// the store snapshots present in the mirror are fewer than `(1 - threshold)` of the objects
/// in the packs those snapshots list, uploads one new pack of exactly their objects and
/// points them at it (CAS). The old packs then become unneeded and [`gc`] removes them after
/// the grace period. `Ok(None)` when nothing was worth repacking.
pub async fn repack(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    threshold: f64,
) -> Result<Option<RepackReport>> {
    let (manifest, _) = read_manifest(store).await?;
    let pack_objects: BTreeMap<String, u64> = manifest
        .packs
        .iter()
        .map(|(sha, p)| (sha.clone(), p.objects))
        .collect();
    let snapshots: Vec<(String, CommitId, Vec<String>)> = manifest
        .snapshots
        .iter()
        .map(|(n, e)| (n.clone(), e.commit.clone(), e.packs.clone()))
        .collect();
    // One blocking phase: which store snapshots the mirror has, how many objects they need,
    // and (when the old packs are mostly dead) the new pack.
    let phase = mirror
        .run(move |m| -> Result<_> {
            let mut set: Vec<(String, CommitId)> = Vec::new();
            let mut old: BTreeSet<String> = BTreeSet::new();
            for (name, commit, packs) in snapshots {
                if m.has_commit(&commit)? && m.commit_is_complete(&commit)? {
                    set.push((name, commit));
                    old.extend(packs);
                }
            }
            if old.is_empty() {
                return Ok(None);
            }
            let objects_before: u64 = old.iter().filter_map(|p| pack_objects.get(p)).sum();
            let commits: Vec<CommitId> = set.iter().map(|(_, c)| c.clone()).collect();
            let live = m.count_objects(&commits)?;
            if set.is_empty() || (live as f64) > (1.0 - threshold) * objects_before as f64 {
                return Ok(None);
            }
            Ok(m.build_pack(&commits, &[])?
                .map(|pack| (set, old, objects_before, live, pack)))
        })
        .await?;
    let Some((set, old, objects_before, live, pack)) = phase else {
        return Ok(None);
    };
    let sha = sha256_hex(&pack.pack);
    let entry = PackEntry {
        size: pack.pack.len() as u64,
        idx_size: pack.idx.len() as u64,
        objects: pack.objects,
        created: jiff::Timestamp::now(),
    };
    store.put_if_absent(&idx_key(&sha), pack.idx).await?;
    store.put_if_absent(&pack_key(&sha), pack.pack).await?;
    let mut moved = Vec::new();
    update_manifest(store, |m| {
        let mut changed = false;
        if !m.packs.contains_key(&sha) {
            m.packs.insert(sha.clone(), entry.clone());
            changed = true;
        }
        changed |= m.pending_delete.remove(&sha).is_some();
        let mut now_moved = Vec::new();
        for (name, commit) in &set {
            if let Some(e) = m.snapshots.get_mut(name)
                && &e.commit == commit
            {
                if e.packs != [sha.clone()] {
                    e.packs = vec![sha.clone()];
                    changed = true;
                }
                now_moved.push(name.clone());
            }
        }
        if changed || moved.is_empty() {
            moved = now_moved;
        }
        Ok(changed)
    })
    .await?;
    tracing::info!(pack = %sha, snapshots = moved.len(), live, objects_before, "store repacked");
    Ok(Some(RepackReport {
        snapshots: moved,
        old_packs: old.into_iter().filter(|p| p != &sha).collect(),
        new_pack: Some(sha),
        objects_before,
        objects_after: entry.objects,
    }))
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
    let mut indexes: BTreeMap<String, std::result::Result<Vec<u8>, String>> = BTreeMap::new();
    if !fresh {
        let fetched: Vec<(String, std::result::Result<Vec<u8>, String>)> =
            stream::iter(wanted.iter().cloned())
                .map(|sha: String| async move {
                    let idx = fetch_idx(store, manifest_ref, &sha).await;
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
    // blocking thread while the other downloads go on.
    let indexes_ref = &indexes;
    let git_dir = mirror.git_dir().to_path_buf();
    let git_dir_ref = &git_dir;
    let mut downloads = stream::iter(needed)
        .map(|sha| async move {
            let (pack, idx) = match indexes_ref.get(&sha) {
                Some(idx) => (
                    fetch_pack_staged(store, manifest_ref, &sha, git_dir_ref).await,
                    idx.clone(),
                ),
                None => futures::join!(
                    fetch_pack_staged(store, manifest_ref, &sha, git_dir_ref),
                    fetch_idx(store, manifest_ref, &sha)
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
                    let bytes = staged.len() + idx_bytes;
                    match tokio::task::spawn_blocking(move || staged.install(&idx)).await {
                        Ok(Ok(objects)) => Fetched::Installed { bytes, objects },
                        Ok(Err(StageError::BadIndex(staged, e))) => {
                            tracing::warn!(pack = %sha, "index from the store unusable ({e}); re-indexing");
                            Fetched::Unindexed {
                                staged: *staged,
                                idx_bytes,
                            }
                        }
                        Ok(Err(StageError::Failed(e))) => {
                            Fetched::Bad(format!("pack {sha}: installing it failed: {e}"))
                        }
                        Err(e) => Fetched::Bad(format!("pack {sha}: installing it failed: {e}")),
                    }
                }
            };
            (sha, outcome)
        })
        .buffer_unordered(FETCH_PARALLELISM);
    let mut present = ObjectSet::default();
    let mut installed = 0usize;
    let mut unindexed = Vec::new();
    while let Some((sha, outcome)) = downloads.next().await {
        tracing::debug!(elapsed = ?started.elapsed(), pack = %sha, "pull: pack downloaded");
        match outcome {
            Fetched::Installed { bytes, objects } => {
                report.packs_downloaded += 1;
                report.bytes_downloaded += bytes;
                installed += 1;
                present.extend(objects);
            }
            Fetched::Unindexed { staged, idx_bytes } => {
                report.packs_downloaded += 1;
                report.bytes_downloaded += staged.len() + idx_bytes;
                unindexed.push((sha, staged));
            }
            Fetched::Bad(reason) => {
                bad_packs.insert(sha, reason);
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
    tracing::debug!(elapsed = ?started.elapsed(), "pull: packs installed");
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
            let results = m.create_snapshot_tags_checked(&ready, &present);
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

/// A downloaded pack, as [`pull`] handles it.
enum Fetched {
    /// Checked and written into the mirror with its index, which lists `objects`.
    Installed { bytes: u64, objects: ObjectSet },
    /// Checked, but its index was missing or unusable: to index locally.
    Unindexed { staged: StagedPack, idx_bytes: u64 },
    /// Missing, truncated or corrupted (the reason names the pack).
    Bad(String),
}

/// Downloads a pack and checks its size and hash against the manifest; a reason naming the
/// pack otherwise.
async fn fetch_pack(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
) -> std::result::Result<Vec<u8>, String> {
    let Some(entry) = manifest.packs.get(sha) else {
        return Err(format!("pack {sha} is not listed in the manifest"));
    };
    let obj = store
        .get(&pack_key(sha))
        .await
        .map_err(|e| format!("pack {sha}: {e}"))?;
    if obj.bytes.len() as u64 != entry.size {
        return Err(format!(
            "pack {sha} has {} bytes, the manifest says {} (truncated or corrupted)",
            obj.bytes.len(),
            entry.size
        ));
    }
    let actual = sha256_hex(&obj.bytes);
    if actual != sha {
        return Err(format!("pack {sha} is corrupted: its sha256 is {actual}"));
    }
    Ok(obj.bytes)
}

/// Downloads a pack straight into a [`StagedPack`] of the mirror at `git_dir`: a blocking
/// thread hashes and writes each chunk while the next ones arrive. Checks the size (never
/// writing more than the manifest says) and the sha256 against the manifest; a reason naming
/// the pack otherwise (the staging file is then deleted).
async fn fetch_pack_staged(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
    git_dir: &std::path::Path,
) -> std::result::Result<StagedPack, String> {
    let Some(entry) = manifest.packs.get(sha) else {
        return Err(format!("pack {sha} is not listed in the manifest"));
    };
    let mut staged = StagedPack::create(git_dir).map_err(|e| format!("pack {sha}: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<bytes::Bytes>();
    let writer = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        for chunk in rx {
            hasher.update(&chunk);
            staged.write_all(&chunk)?;
        }
        Ok::<_, MirrorError>((staged, hasher.finalize()))
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
    let written = writer
        .await
        .map_err(|e| format!("pack {sha}: writing it failed: {e}"))?;
    if too_long {
        return Err(format!(
            "pack {sha} has more than the {limit} bytes the manifest says (corrupted)"
        ));
    }
    got.map_err(|e| format!("pack {sha}: {e}"))?;
    let (staged, digest) = written.map_err(|e| format!("pack {sha}: {e}"))?;
    if staged.len() != entry.size {
        return Err(format!(
            "pack {sha} has {} bytes, the manifest says {} (truncated or corrupted)",
            staged.len(),
            entry.size
        ));
    }
    let actual = hex::encode(digest);
    if actual != sha {
        return Err(format!("pack {sha} is corrupted: its sha256 is {actual}"));
    }
    Ok(staged)
}

/// Downloads a pack's index and checks its size against the manifest.
async fn fetch_idx(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    sha: &str,
) -> std::result::Result<Vec<u8>, String> {
    let Some(entry) = manifest.packs.get(sha) else {
        return Err(format!("pack {sha} is not listed in the manifest"));
    };
    let obj = store
        .get(&idx_key(sha))
        .await
        .map_err(|e| format!("index of pack {sha}: {e}"))?;
    if obj.bytes.len() as u64 != entry.idx_size {
        return Err(format!(
            "index of pack {sha} has {} bytes, the manifest says {}",
            obj.bytes.len(),
            entry.idx_size
        ));
    }
    Ok(obj.bytes)
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
    let listing = store.list(super::PACKS_PREFIX).await?;
    let listed: BTreeMap<String, u64> = listing.iter().map(|o| (o.key.clone(), o.size)).collect();
    let needed = manifest.needed_packs();
    // Packs no manifest names: left by a crashed push, or the manifest was lost or rolled back.
    let (orphans, orphan_problems) =
        super::recover::unreferenced(store, &manifest, &listing, deep).await?;
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
                let idx = fetch_idx(store, manifest, &sha).await;
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

/// Removes snapshots from the store's manifest (their packs are freed by [`gc`]).
pub async fn delete(store: &dyn ObjectStore, names: &[String]) -> Result<DeleteReport> {
    let mut report: Option<DeleteReport> = None;
    update_manifest(store, |m| {
        let mut r = DeleteReport::default();
        for n in names {
            if m.snapshots.remove(n).is_some() {
                r.deleted.push(n.clone());
            } else {
                r.not_found.push(n.clone());
            }
        }
        let changed = !r.deleted.is_empty();
        // The read-back check re-runs this closure; keep the report of the real change.
        if changed || report.is_none() {
            report = Some(r);
        }
        Ok(changed)
    })
    .await?;
    Ok(report.unwrap_or_default())
}

/// Garbage-collects the store: expires snapshots past `availableUntil`, moves packs no snapshot
/// needs to `pendingDelete`, deletes them once older than the grace period, then deletes keys
/// under `k8s-snap/` that the manifest does not name and that are older than the grace period.
pub async fn gc(store: &dyn ObjectStore, opts: GcOptions) -> Result<GcReport> {
    let grace = jiff::SignedDuration::try_from(opts.grace).unwrap_or(jiff::SignedDuration::MAX);
    let cutoff = opts.now.checked_sub(grace).unwrap_or(jiff::Timestamp::MIN);
    let mut report = GcReport::default();
    let mut first = true;
    let manifest = update_manifest(store, |m| {
        let mut r = GcReport::default();
        let expired: Vec<String> = m
            .snapshots
            .iter()
            .filter(|(_, s)| s.available_until.is_some_and(|t| t <= opts.now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &expired {
            m.snapshots.remove(n);
        }
        r.expired = expired;
        let needed = m.needed_packs();
        let before = m.pending_delete.len();
        m.pending_delete.retain(|sha, _| !needed.contains(sha));
        let mut changed = m.pending_delete.len() != before || !r.expired.is_empty();
        for sha in m.packs.keys() {
            if !needed.contains(sha) && !m.pending_delete.contains_key(sha) {
                m.pending_delete.insert(sha.clone(), opts.now);
                r.pending.push(sha.clone());
                changed = true;
            }
        }
        let due: Vec<String> = m
            .pending_delete
            .iter()
            .filter(|(_, since)| **since <= cutoff)
            .map(|(sha, _)| sha.clone())
            .collect();
        for sha in &due {
            m.pending_delete.remove(sha);
            m.packs.remove(sha);
            changed = true;
        }
        r.deleted_packs = due;
        // The read-back check re-runs this closure; keep the report of the real change.
        if first || changed {
            report = r;
        }
        first = false;
        Ok(changed)
    })
    .await?;
    // Objects of packs dropped from the manifest, and orphans (crashed pushes, temp files).
    let listing = store.list(ROOT).await?;
    // An unlisted pack that holds a snapshot the manifest does not name is kept (the manifest
    // was lost or rolled back: `recover` brings the snapshot back); only packs the manifest
    // itself dropped, after their grace period, are deleted.
    let old_orphan_packs: Vec<super::ObjectMeta> = listing
        .iter()
        .filter(|o| {
            o.key.ends_with(".pack")
                && !is_named(&manifest, &o.key)
                && o.last_modified.is_some_and(|t| t <= cutoff)
                && !report
                    .deleted_packs
                    .iter()
                    .any(|sha| o.key == pack_key(sha))
        })
        .cloned()
        .collect();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    if !old_orphan_packs.is_empty() {
        let (found, problems) =
            super::recover::unreferenced(store, &manifest, &old_orphan_packs, true).await?;
        for (sha, snapshots) in found {
            if !snapshots.is_empty() {
                tracing::warn!(pack = %sha, snapshots = ?snapshots, "the manifest does not list this pack, which holds snapshots: kept (run `k8s-snap recover`)");
                keep.insert(sha);
            }
        }
        // A pack that could not be downloaded is not deleted either (it may hold a snapshot);
        // a corrupted one (wrong sha256, not a pack) holds nothing usable and goes.
        for p in problems {
            if p.reason.starts_with(super::recover::UNREADABLE) {
                tracing::warn!(pack = %p.subject, reason = %p.reason, "unlisted pack kept");
                keep.insert(p.subject);
            }
        }
    }
    report.kept = keep.iter().cloned().collect();
    for o in listing {
        if o.key == MANIFEST_KEY || is_named(&manifest, &o.key) {
            continue;
        }
        if keep
            .iter()
            .any(|sha| o.key == pack_key(sha) || o.key == idx_key(sha))
        {
            continue;
        }
        let dropped = report
            .deleted_packs
            .iter()
            .any(|sha| o.key == pack_key(sha) || o.key == idx_key(sha));
        let old = o.last_modified.is_some_and(|t| t <= cutoff);
        if dropped || old {
            store.delete(&o.key).await?;
            if !dropped {
                report.orphans.push(o.key);
            }
        }
    }
    tracing::info!(
        expired = report.expired.len(),
        deleted_packs = report.deleted_packs.len(),
        orphans = report.orphans.len(),
        "store gc done"
    );
    Ok(report)
}

/// Whether `key` is the `.pack` or `.idx` of a pack the manifest lists.
fn is_named(m: &Manifest, key: &str) -> bool {
    key.strip_prefix(super::PACKS_PREFIX)
        .and_then(|f| f.strip_suffix(".pack").or_else(|| f.strip_suffix(".idx")))
        .is_some_and(|sha| is_pack_name(sha) && m.packs.contains_key(sha))
}

/// Makes sure snapshot `name` is in `mirror`, pulling it from `store` when it is only there;
/// true when it was pulled. A pull that could not tag it is [`SyncError::PullFailed`].
pub async fn ensure_local(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    name: &str,
) -> Result<bool> {
    let owned = name.to_owned();
    if mirror.run(move |m| m.snapshot(&owned)).await?.is_some() {
        return Ok(false);
    }
    let report = pull(store, mirror, &[name.to_owned()]).await?;
    match report.failed.get(name) {
        Some(reason) => Err(SyncError::PullFailed {
            name: name.to_owned(),
            store: store.describe(),
            reason: reason.clone(),
        }),
        None => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn entry(packs: &[&str], until: Option<jiff::Timestamp>) -> SnapshotEntry {
        SnapshotEntry {
            commit: "1".repeat(40).parse().expect("commit id"),
            cluster: "prod".into(),
            timestamp: jiff::Timestamp::UNIX_EPOCH,
            resource_version: "1".into(),
            number_of_contents: 1,
            available_until: until,
            packs: packs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn gc_expires_pends_and_deletes_after_grace() {
        let store = MemoryStore::new();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let hour = jiff::SignedDuration::from_hours(1);
        let mut m = Manifest::default();
        for sha in [&a, &b] {
            m.packs.insert(
                sha.clone(),
                PackEntry {
                    size: 1,
                    idx_size: 1,
                    objects: 1,
                    created: t0,
                },
            );
            store.overwrite(&pack_key(sha), vec![0]);
            store.overwrite(&idx_key(sha), vec![0]);
        }
        m.snapshots.insert("keep".into(), entry(&[&a], None));
        m.snapshots
            .insert("old".into(), entry(&[&a, &b], Some(t0 - hour)));
        store
            .put_if_match(MANIFEST_KEY, m.to_bytes(), None)
            .await
            .unwrap();
        // An orphan from a crashed push: young, then old.
        let orphan = pack_key(&"c".repeat(64));
        store.overwrite(&orphan, vec![1]);
        store.set_modified(&orphan, t0);
        let grace = Duration::from_secs(24 * 3600);

        let r = gc(&store, GcOptions { grace, now: t0 }).await.unwrap();
        assert_eq!(r.expired, vec!["old".to_string()]);
        assert_eq!(r.pending, vec![b.clone()]);
        assert!(r.deleted_packs.is_empty() && r.orphans.is_empty());
        assert!(store.head(&pack_key(&b)).await.is_ok());
        let (m, _) = read_manifest(&store).await.unwrap();
        assert_eq!(m.pending_delete.get(&b), Some(&t0));
        assert_eq!(m.generation, 1);

        // Within the grace period nothing more happens.
        let later = t0 + jiff::SignedDuration::from_hours(23);
        let r = gc(&store, GcOptions { grace, now: later }).await.unwrap();
        assert_eq!(r, GcReport::default());

        // After it, the pack and the orphan go; the needed pack stays.
        let after = t0 + jiff::SignedDuration::from_hours(25);
        let r = gc(&store, GcOptions { grace, now: after }).await.unwrap();
        assert_eq!(r.deleted_packs, vec![b.clone()]);
        assert_eq!(r.orphans, vec![orphan.clone()]);
        assert!(store.head(&pack_key(&b)).await.is_err());
        assert!(store.head(&orphan).await.is_err());
        assert!(store.head(&pack_key(&a)).await.is_ok());
        let (m, _) = read_manifest(&store).await.unwrap();
        assert_eq!(m.packs.keys().collect::<Vec<_>>(), vec![&a]);
        assert!(m.pending_delete.is_empty());
        let report = verify(&store, false).await.unwrap();
        assert!(report.ok(), "{report:?}");
    }

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
        let fetch = || fetch_pack_staged(&store, &m, &sha, dir.path());
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
            let err = fetch().await.unwrap_err();
            assert!(err.contains(&sha) && err.contains(want), "{err}");
        }
        // Nothing staged is left behind in the pack directory.
        assert_eq!(std::fs::read_dir(&pack_dir).unwrap().count(), 0);
    }

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
