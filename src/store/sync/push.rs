//! [`push`]: local snapshots the store lacks go up as one pack of the objects the store's
//! snapshots do not already hold (packs the store has damaged are not relied upon), then one
//! manifest update by compare-and-swap.
//!
//! Owns: choosing what to upload and (with the `failpoints` feature, for tests) the failpoint
//! of a push killed before its manifest.
//! Must not touch: packs or snapshots it did not upload or add; git beyond the mirror's API.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt as _;
use futures::future::Either;
use serde::Serialize;

use super::{Result, SyncError, read_manifest, update_manifest, update_manifest_from};
use crate::mirror::{CommitId, SharedMirror};
use crate::store::ObjectStore;
use crate::store::PutOutcome;
use crate::store::manifest::{Manifest, PackEntry, SnapshotEntry, idx_key, pack_key};

/// Env var naming a failpoint (tests only, with the `failpoints` feature): `push-after-packs`
/// makes a push fail after uploading its packs and before writing the manifest, like a
/// killed process.
#[cfg(feature = "failpoints")]
pub const FAILPOINT_ENV: &str = "K8S_SNAP_FAILPOINT";

/// What [`push`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// Snapshots added to the manifest.
    pub pushed: Vec<String>,
    /// Snapshots the store already had.
    pub up_to_date: Vec<String>,
    /// The new packs (sha256), sorted: the stored copies of the snapshots' own mirror packs
    /// and at most one pack built of the other objects.
    pub packs: Vec<String>,
    /// Bytes of the new packs.
    pub pack_bytes: u64,
    /// Bytes of their indexes.
    pub idx_bytes: u64,
    /// Objects in the new packs.
    pub objects: u64,
    /// Whether some pack was uploaded by this push (false: the store had them all).
    pub uploaded: bool,
    /// Partial snapshots the store already had, whose entry now records their filter
    /// (entries pushed by releases before filters were recorded lacked it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters_recorded: Vec<String>,
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

/// What a push decided once it had the store's manifest.
enum Decided {
    /// Nothing to upload: the report is final.
    Done(PushReport),
    /// Snapshots to add.
    Push(Box<Planned>),
}

/// A push's snapshots to add, with what it uploads for them.
struct Planned {
    report: PushReport,
    manifest: Manifest,
    etag: Option<crate::store::Etag>,
    to_push: Vec<crate::mirror::SnapshotInfo>,
    backfill: Vec<Backfill>,
    /// Store packs the new snapshots rely on.
    deps: BTreeSet<String>,
    /// The offered stored copies holding objects the push needs (sha256).
    copies: Vec<String>,
    /// The upload of the pack built of the other objects.
    built: Option<(String, PackEntry, bool)>,
}

/// One push attempt. The stored copies of the snapshots asked for (those of every snapshot
/// when `names` is empty) start uploading at once, while the manifest downloads and the objects
/// to push are chosen: a snapshot's copies hold the objects that were new to the mirror when
/// it was written, which the store almost never has. A copy holding no object the push needs
/// is left unreferenced (store gc removes it); when nothing needs pushing, the uploads stop.
async fn push_once(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    names: &[String],
) -> Result<PushReport> {
    let (offered_tx, offered_rx) = tokio::sync::oneshot::channel();
    let speculative = upload_copies(store, mirror.git_dir().to_path_buf(), names, offered_tx);
    let decide = decide(store, mirror, names, offered_rx);
    futures::pin_mut!(speculative, decide);
    // Nothing to push (or an error): the copy uploads in flight stop when this returns.
    let (decided, uploaded) = match futures::future::select(decide, speculative).await {
        Either::Left((decided, speculative)) => match decided? {
            Decided::Push(planned) => (Decided::Push(planned), speculative.await),
            done => (done, Vec::new()),
        },
        Either::Right((uploaded, decide)) => (decide.await?, uploaded),
    };
    let mut p = match decided {
        Decided::Done(report) => {
            forget_copies(mirror, &report.up_to_date).await;
            return Ok(report);
        }
        Decided::Push(planned) => *planned,
    };
    let mut report = std::mem::take(&mut p.report);
    let copies = std::mem::take(&mut p.copies);
    let mut new_packs: Vec<(String, PackEntry)> = Vec::new();
    let mut unneeded = 0usize;
    for (sha, upload) in uploaded {
        if !copies.contains(&sha) {
            // Not counted: the store had all of its objects.
            match upload {
                Ok(_) => unneeded += 1,
                Err(e) => {
                    tracing::debug!(pack = %sha, "upload of an unneeded stored copy failed: {e}")
                }
            }
            continue;
        }
        let (sha, entry, uploaded) = upload?;
        report.uploaded |= uploaded;
        new_packs.push((sha, entry));
    }
    if new_packs.len() != copies.len() {
        return Err(SyncError::Mirror(crate::mirror::MirrorError::Io {
            context: "pushing the stored copies".into(),
            source: std::io::Error::other("a stored copy chosen for the push was not uploaded"),
        }));
    }
    if unneeded > 0 {
        tracing::info!(
            packs = unneeded,
            "stored copies uploaded but not needed (the store had all of their objects); gc removes them"
        );
    }
    if let Some((sha, entry, uploaded)) = p.built.take() {
        report.uploaded |= uploaded;
        new_packs.push((sha, entry));
    }
    for (_, entry) in &new_packs {
        report.pack_bytes += entry.size;
        report.idx_bytes += entry.idx_size;
        report.objects += entry.objects;
    }

    new_packs.sort_by(|a, b| a.0.cmp(&b.0));
    report.packs = new_packs.iter().map(|(sha, _)| sha.clone()).collect();
    #[cfg(feature = "failpoints")]
    if std::env::var(FAILPOINT_ENV).as_deref() == Ok("push-after-packs") {
        return Err(SyncError::Failpoint("push-after-packs".into()));
    }
    let deps = &p.deps;
    let mut packs: Vec<String> = deps.iter().cloned().collect();
    for (sha, _) in &new_packs {
        if !deps.contains(sha) {
            packs.push(sha.clone());
        }
    }
    packs.sort();
    let store_name = store.describe();
    let mut recorded = Vec::new();
    let (to_push, backfill) = (&p.to_push, &p.backfill);
    update_manifest_from(store, Some((p.manifest, p.etag)), |m| {
        let mut changed = false;
        for d in deps {
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
        for (sha, entry) in &new_packs {
            if !m.packs.contains_key(sha) {
                m.packs.insert(sha.clone(), entry.clone());
                changed = true;
            }
            if m.pending_delete.remove(sha).is_some() {
                changed = true;
            }
        }
        for s in to_push {
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
                            filter: s.meta.filter.clone(),
                        },
                    );
                    changed = true;
                }
            }
        }
        // The closure runs again on the read-back check (and then changes nothing).
        let set = set_filters(m, backfill);
        if !set.is_empty() {
            recorded = set;
            changed = true;
        }
        Ok(changed)
    })
    .await?;
    report.filters_recorded = recorded;
    report.pushed = to_push.iter().map(|s| s.name.clone()).collect();
    tracing::info!(pushed = ?report.pushed, "manifest updated");
    let mut landed = report.pushed.clone();
    landed.extend(report.up_to_date.iter().cloned());
    forget_copies(mirror, &landed).await;
    Ok(report)
}

/// Removes the stored copies of snapshots the store now has (a failure only costs disk space:
/// a later push would upload them again, unreferenced).
async fn forget_copies(mirror: &SharedMirror, snapshots: &[String]) {
    if snapshots.is_empty() {
        return;
    }
    let names = snapshots.to_vec();
    if let Err(e) = mirror.run(move |m| m.remove_stored_copies(&names)).await {
        tracing::warn!("removing the stored copies of pushed snapshots failed: {e}");
    }
}

/// An upload of a stored copy: its sha256 and the outcome of [`upload_pack`].
type CopyUpload = (String, Result<(String, PackEntry, bool)>);

/// Uploads the stored copies of `names` (all when empty) in the mirror at `git_dir`, each as
/// soon as it is read and checked, a few read ahead of the uploads and no more (memory stays
/// bounded however many there are); sends `(sha256, index)` of every copy to `offered` once
/// the last one is read. The copies are plain files: reading them takes no lock on the mirror,
/// so the push chooses its objects meanwhile.
async fn upload_copies(
    store: &dyn ObjectStore,
    git_dir: std::path::PathBuf,
    names: &[String],
    offered: tokio::sync::oneshot::Sender<Vec<(String, Vec<u8>)>>,
) -> Vec<CopyUpload> {
    let (copy_tx, copy_rx) = tokio::sync::mpsc::channel(UPLOADS_IN_FLIGHT);
    let wanted = names.to_vec();
    let reading = tokio::task::spawn_blocking(move || {
        let mut read: Vec<(String, Vec<u8>)> = Vec::new();
        crate::mirror::each_stored_copy(&git_dir, &wanted, |c| {
            read.push((c.sha256.clone(), c.idx.clone()));
            copy_tx.blocking_send(c).is_ok()
        });
        let _ = offered.send(read);
    });
    let copies =
        futures::stream::unfold(
            copy_rx,
            |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
        );
    let uploads = copies
        .map(|c: crate::mirror::StoredCopy| async move {
            let pack = super::PushPack {
                sha: c.sha256.clone(),
                pack: c.bytes,
                idx: c.idx,
                objects: c.objects,
            };
            (c.sha256, upload_pack(store, pack).await)
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .collect::<Vec<_>>();
    let (read, uploaded) = tokio::join!(reading, uploads);
    if let Err(e) = read {
        tracing::warn!(
            "reading the stored copies failed ({e}); the push builds the packs of the rest"
        );
    }
    uploaded
}

/// Reads the manifest and the mirror's snapshots, decides what to push and builds (and
/// uploads) the pack of the objects no offered copy holds.
async fn decide(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    names: &[String],
    offered: tokio::sync::oneshot::Receiver<Vec<(String, Vec<u8>)>>,
) -> Result<Decided> {
    // The mirror's snapshots are read while the manifest downloads.
    let (local, read) = tokio::join!(mirror.run(|m| m.snapshots()), read_manifest(store));
    let local = local?;
    let (manifest, etag) = read?;
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
    let mut report = PushReport::default();
    let mut to_push = Vec::new();
    let mut backfill = Vec::new();
    for s in selected {
        match manifest.snapshots.get(&s.name) {
            Some(e) if e.commit == s.commit => {
                if e.filter.is_none()
                    && let Some(f) = &s.meta.filter
                {
                    backfill.push((s.name.clone(), s.commit.clone(), f.clone()));
                }
                report.up_to_date.push(s.name)
            }
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
        if !backfill.is_empty() {
            report.filters_recorded = record_filters(store, &backfill).await?;
        }
        return Ok(Decided::Done(report));
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
    let offered = offered.await.unwrap_or_default();
    let (deps, (copies, built)) = mirror
        .run(move |m| -> Result<_> {
            let mut hide = Vec::new();
            let mut deps: BTreeSet<String> = BTreeSet::new();
            for (commit, packs) in candidates {
                if m.has_commit(&commit)? {
                    hide.push(commit);
                    deps.extend(packs);
                }
            }
            Ok((deps, super::build_push_packs(m, &include, &hide, &offered)?))
        })
        .await?;
    let built = match built {
        Some(pack) => Some(upload_pack(store, pack).await?),
        None => None,
    };
    Ok(Decided::Push(Box::new(Planned {
        report,
        manifest,
        etag,
        to_push,
        backfill,
        deps,
        copies,
        built,
    })))
}

/// Packs uploaded at the same time by one push.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Uploads one pack (its idx first); returns its name, its manifest entry and whether this
/// upload created it (false: the store had it, with the same sizes).
async fn upload_pack(
    store: &dyn ObjectStore,
    pack: super::PushPack,
) -> Result<(String, PackEntry, bool)> {
    let super::PushPack {
        sha,
        pack,
        idx,
        objects,
    } = pack;
    let entry = PackEntry {
        size: pack.len() as u64,
        idx_size: idx.len() as u64,
        objects,
        created: jiff::Timestamp::now(),
    };
    let mut uploaded = false;
    for (key, bytes, expected) in [
        (idx_key(&sha), idx, entry.idx_size),
        (pack_key(&sha), pack, entry.size),
    ] {
        match store.put_if_absent(&key, bytes).await? {
            PutOutcome::Created => uploaded = true,
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
    Ok((sha, entry, uploaded))
}

/// A partial snapshot's name, commit and filter, for a store entry lacking the filter.
type Backfill = (String, CommitId, crate::tree::SnapshotFilter);

/// Records in their store entries the filters of partial snapshots pushed without one (one
/// manifest update); returns the snapshots whose entry changed.
async fn record_filters(store: &dyn ObjectStore, backfill: &[Backfill]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    update_manifest(store, |m| {
        // The closure runs again on the read-back check (and then changes nothing).
        let set = set_filters(m, backfill);
        if set.is_empty() {
            return Ok(false);
        }
        done = set;
        Ok(true)
    })
    .await?;
    tracing::info!(snapshots = ?done, "filters of partial snapshots recorded in the manifest");
    Ok(done)
}

/// Sets the filter of each entry of `backfill` still at the same commit and without one.
fn set_filters(m: &mut Manifest, backfill: &[Backfill]) -> Vec<String> {
    let mut done = Vec::new();
    for (name, commit, filter) in backfill {
        if let Some(e) = m.snapshots.get_mut(name)
            && &e.commit == commit
            && e.filter.is_none()
        {
            e.filter = Some(filter.clone());
            done.push(name.clone());
        }
    }
    done
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
        .list(crate::store::PACKS_PREFIX)
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
