//! [`repack`]: when the packs the store's snapshots need are mostly dead, one new pack of
//! exactly their live objects replaces them in the manifest.
//!
//! Owns: the repack decision and upload. Must not touch: old packs (gc removes them after the
//! grace period), snapshots the mirror lacks.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Result, read_manifest, sha256_hex, update_manifest};
use crate::mirror::{CommitId, SharedMirror};
use crate::store::ObjectStore;
use crate::store::manifest::{PackEntry, idx_key, pack_key};

/// What [`repack`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepackReport {
    /// Snapshots now served by the new pack alone.
    pub snapshots: Vec<String>,
    /// The packs they needed before.
    pub old_packs: Vec<String>,
    /// The new pack (sha256), if one was written.
    pub new_pack: Option<String>,
    /// Objects in the old packs and in the new one.
    pub objects_before: u64,
    /// Objects in the new pack.
    pub objects_after: u64,
}

/// Repacks when the packs the store's snapshots need are mostly dead: if the live objects of
/// the store snapshots present in the mirror are fewer than `(1 - threshold)` of the objects
/// in the packs those snapshots list, uploads one new pack of exactly their objects and
/// points them at it (CAS). The old packs then become unneeded and [`gc`](super::gc()) removes them after
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
            Ok(super::build_stored_pack(m, &commits, &[])?
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
