//! The manifest `k8s-snap/manifest.json` (docs/design.md §5): which packs exist and which
//! snapshots they hold. Owns its (de)serialization, validation of untrusted content and the
//! merge rules; holds no credentials by construction (there is no field for any).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::mirror::{CommitId, validate_name};

/// The manifest format this code writes. Version 2: packs may be stored as zstd frames
/// (`store::packcodec`); version 1 stores (plain git packs only) are read and upgraded on
/// their next write, and a k8s-snap that only knows version 1 refuses a version 2 store
/// instead of misreading its packs.
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 2;

/// The oldest manifest format this code reads.
const OLDEST_FORMAT_VERSION: u32 = 1;

/// A pack in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackEntry {
    /// Bytes of the `.pack`.
    pub size: u64,
    /// Bytes of the `.idx`.
    pub idx_size: u64,
    /// Objects in the pack.
    pub objects: u64,
    /// When the pack was pushed.
    pub created: jiff::Timestamp,
}

/// A snapshot in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotEntry {
    /// The snapshot's commit id.
    pub commit: CommitId,
    /// The name of the cluster it was taken from.
    pub cluster: String,
    /// When it was taken.
    pub timestamp: jiff::Timestamp,
    /// The resourceVersion it was taken at.
    pub resource_version: String,
    /// Objects in the snapshot.
    pub number_of_contents: u64,
    /// When it expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<jiff::Timestamp>,
    /// Every pack needed to rebuild the snapshot's commit (sha256 of the pack).
    pub packs: Vec<String>,
}

/// `k8s-snap/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Version of the manifest format (2; 1 is read).
    pub format_version: u32,
    /// Incremented by every successful write.
    pub generation: u64,
    /// The packs in the store, by name.
    pub packs: BTreeMap<String, PackEntry>,
    /// The snapshots in the store, by name.
    pub snapshots: BTreeMap<String, SnapshotEntry>,
    /// Packs no snapshot needs, and since when; deleted after the grace period.
    #[serde(default)]
    pub pending_delete: BTreeMap<String, jiff::Timestamp>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            generation: 0,
            packs: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            pending_delete: BTreeMap::new(),
        }
    }
}

/// Whether `s` is a pack name: 64 lower-case hex digits (sha256).
pub(crate) fn is_pack_name(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Key of a pack's `.pack` object.
pub fn pack_key(sha: &str) -> String {
    format!("{}{sha}.pack", super::PACKS_PREFIX)
}

/// Key of a pack's `.idx` object.
pub fn idx_key(sha: &str) -> String {
    format!("{}{sha}.idx", super::PACKS_PREFIX)
}

impl Manifest {
    /// Parses and validates an untrusted manifest: format version, every name, pack name and
    /// commit id. A reason naming the offending entry otherwise.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let mut m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(OLDEST_FORMAT_VERSION..=MANIFEST_FORMAT_VERSION).contains(&m.format_version) {
            return Err(format!(
                "formatVersion {} is not supported (this k8s-snap reads {OLDEST_FORMAT_VERSION} to {MANIFEST_FORMAT_VERSION})",
                m.format_version
            ));
        }
        // Whatever this code writes back is the current format.
        m.format_version = MANIFEST_FORMAT_VERSION;
        for sha in m.packs.keys().chain(m.pending_delete.keys()) {
            if !is_pack_name(sha) {
                return Err(format!("pack name {sha:?} is not a sha256"));
            }
        }
        for (name, s) in &m.snapshots {
            validate_name("snapshot", name).map_err(|e| e.to_string())?;
            validate_name("cluster", &s.cluster).map_err(|e| format!("snapshot {name:?}: {e}"))?;
            for p in &s.packs {
                if !is_pack_name(p) {
                    return Err(format!(
                        "snapshot {name:?}: pack name {p:?} is not a sha256"
                    ));
                }
            }
        }
        Ok(m)
    }

    /// The JSON text written to the store.
    #[allow(
        clippy::expect_used,
        reason = "an invariant: plain data with string keys always serializes"
    )]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    /// Packs some snapshot needs.
    pub fn needed_packs(&self) -> BTreeSet<String> {
        self.snapshots
            .values()
            .flat_map(|s| s.packs.iter().cloned())
            .collect()
    }

    /// Snapshots that need pack `sha`.
    pub(crate) fn snapshots_needing(&self, sha: &str) -> Vec<String> {
        self.snapshots
            .iter()
            .filter(|(_, s)| s.packs.iter().any(|p| p == sha))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let mut m = Manifest::default();
        let sha = "a".repeat(64);
        m.packs.insert(
            sha.clone(),
            PackEntry {
                size: 10,
                idx_size: 5,
                objects: 3,
                created: jiff::Timestamp::UNIX_EPOCH,
            },
        );
        m.snapshots.insert(
            "s1".into(),
            SnapshotEntry {
                commit: "0".repeat(40).parse().unwrap(),
                cluster: "prod".into(),
                timestamp: jiff::Timestamp::UNIX_EPOCH,
                resource_version: "1".into(),
                number_of_contents: 3,
                available_until: None,
                packs: vec![sha.clone()],
            },
        );
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        for field in [
            "formatVersion",
            "generation",
            "packs",
            "idxSize",
            "snapshots",
            "resourceVersion",
            "numberOfContents",
            "pendingDelete",
        ] {
            assert!(text.contains(field), "{field} missing in {text}");
        }
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert_eq!(m.snapshots_needing(&sha), vec!["s1".to_string()]);

        let evil = text.replace("\"s1\"", "\"../x\"");
        assert!(Manifest::parse(evil.as_bytes()).is_err());
        let evil = text.replace(&sha, "../../etc/passwd");
        assert!(Manifest::parse(evil.as_bytes()).is_err());
        let evil = text.replace("\"prod\"", "\"a/b\"");
        assert!(Manifest::parse(evil.as_bytes()).is_err());
        let evil = text.replace("\"formatVersion\": 2", "\"formatVersion\": 9");
        assert!(Manifest::parse(evil.as_bytes()).is_err());
        // A version 1 manifest is read, and written back as version 2.
        let old = text.replace("\"formatVersion\": 2", "\"formatVersion\": 1");
        assert_ne!(old, text);
        assert_eq!(Manifest::parse(old.as_bytes()).unwrap(), m);
        assert!(Manifest::parse(b"{").is_err());
    }
}
