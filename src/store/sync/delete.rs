//! [`delete`]: snapshots removed from the store's manifest (their packs are freed by gc).
//!
//! Owns: the manifest change only. Must not touch: packs, the local mirror.

use serde::Serialize;

use super::{Result, update_manifest};
use crate::store::ObjectStore;

/// What [`delete`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    /// Snapshots removed from the manifest.
    pub deleted: Vec<String>,
    /// Snapshots the manifest did not name.
    pub not_found: Vec<String>,
}

/// Removes snapshots from the store's manifest (their packs are freed by [`gc`](super::gc())).
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
