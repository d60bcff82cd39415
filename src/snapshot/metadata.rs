//! The `.k8s-snap/` metadata of a snapshot (docs/design.md §3): `resources.yaml`, the resources
//! listed at the version chosen for each with their object counts, and `snapshot.yaml`, what
//! the snapshot is (name, cluster, resourceVersion, time, consistency, skipped objects, TTL).
//!
//! Owns: turning one attempt's (or one import's, `crate::import`) results into those two files. Must not touch: the cluster or the
//! mirror (the pipeline sends the files to the writer).

use crate::discovery::ApiResourceInfo;
use crate::tree::{self, Consistency, ResourceEntry, SkippedEntry, SnapshotMeta};

use super::{Result, SnapshotError};

/// What is known of a snapshot before its objects are listed.
pub(crate) struct MetaBase {
    pub name: String,
    pub cluster_name: String,
    pub resource_version: String,
    pub timestamp: jiff::Timestamp,
    pub server_version: String,
    pub ttl: Option<String>,
    pub available_until: Option<jiff::Timestamp>,
    /// The archive an imported snapshot was read from (`None` for a live snapshot).
    pub imported_from: Option<String>,
    /// The recipients Secret values are sealed to (`None`: stored as read).
    pub encryption: Option<tree::Encryption>,
    /// The filter of a partial snapshot (`None`: the whole cluster).
    pub filter: Option<tree::SnapshotFilter>,
    /// Group versions listed but not served (their objects are not in the tree).
    pub unavailable_apis: Vec<tree::UnavailableApi>,
}

/// The metadata of a finished attempt and its two files, in the order they are written.
pub(crate) struct Built {
    pub meta: SnapshotMeta,
    pub files: Vec<(String, Vec<u8>)>,
}

/// Builds the metadata from the object count of each listed resource, the objects skipped and
/// whether every list was read at the snapshot's exact resourceVersion.
pub(crate) fn build(
    base: MetaBase,
    mut counts: Vec<(ApiResourceInfo, u64)>,
    mut skipped: Vec<SkippedEntry>,
    consistency: Consistency,
) -> Result<Built> {
    counts.sort_by(|(a, _), (b, _)| {
        (a.group.as_str(), a.version.as_str(), a.resource.as_str()).cmp(&(
            b.group.as_str(),
            b.version.as_str(),
            b.resource.as_str(),
        ))
    });
    let number_of_contents: u64 = counts.iter().map(|(_, n)| n).sum();
    let entries: Vec<ResourceEntry> = counts
        .into_iter()
        .map(|(api, count)| ResourceEntry { api, count })
        .collect();
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let meta = SnapshotMeta {
        format_version: tree::meta::FORMAT_VERSION,
        name: base.name,
        cluster_name: base.cluster_name,
        resource_version: base.resource_version,
        timestamp: base.timestamp,
        server_version: base.server_version,
        consistency,
        number_of_contents,
        ttl: base.ttl,
        available_until: base.available_until,
        imported_from: base.imported_from,
        tool_version: format!("k8s-snap {}", env!("CARGO_PKG_VERSION")),
        skipped,
        encryption: base.encryption,
        filter: base.filter,
        unavailable_apis: base.unavailable_apis,
    };
    let meta_yaml = tree::to_yaml_string(&meta).map_err(|source| SnapshotError::Tree {
        what: tree::meta::SNAPSHOT_META_FILE.into(),
        source,
    })?;
    let resources_yaml = tree::to_yaml_string(&entries).map_err(|source| SnapshotError::Tree {
        what: tree::meta::RESOURCES_FILE.into(),
        source,
    })?;
    Ok(Built {
        meta,
        files: vec![
            (
                tree::meta::RESOURCES_FILE.to_string(),
                resources_yaml.into_bytes(),
            ),
            (
                tree::meta::SNAPSHOT_META_FILE.to_string(),
                meta_yaml.into_bytes(),
            ),
        ],
    })
}
