//! [`gc`]: expires snapshots past `availableUntil`, moves unneeded packs to `pendingDelete`,
//! deletes them after the grace period, and deletes old orphans (keeping an unlisted pack
//! that holds a snapshot the manifest lacks).
//!
//! Owns: what the store deletes. Must not touch: the local mirror; a pack holding a snapshot
//! the manifest does not name.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::{Result, update_manifest};
use crate::store::manifest::{Manifest, idx_key, is_pack_name, pack_key};
use crate::store::{MANIFEST_KEY, ObjectStore, ROOT};

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
    let old_orphan_packs: Vec<crate::store::ObjectMeta> = listing
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
            crate::store::recover::unreferenced(store, &manifest, &old_orphan_packs, true).await?;
        for (sha, snapshots) in found {
            if !snapshots.is_empty() {
                tracing::warn!(pack = %sha, snapshots = ?snapshots, "the manifest does not list this pack, which holds snapshots: kept (run `k8s-snap recover`)");
                keep.insert(sha);
            }
        }
        // A pack that could not be downloaded is not deleted either (it may hold a snapshot);
        // a corrupted one (wrong sha256, not a pack) holds nothing usable and goes.
        for p in problems {
            if p.reason.starts_with(crate::store::recover::UNREADABLE) {
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
    key.strip_prefix(crate::store::PACKS_PREFIX)
        .and_then(|f| f.strip_suffix(".pack").or_else(|| f.strip_suffix(".idx")))
        .is_some_and(|sha| is_pack_name(sha) && m.packs.contains_key(sha))
}

#[cfg(test)]
mod tests {
    use super::super::verify;
    use super::super::{read_manifest, test_support::entry};
    use super::*;
    use crate::store::manifest::PackEntry;
    use crate::store::{MANIFEST_KEY, MemoryStore};
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
}
