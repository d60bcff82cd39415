//! The manifest `k8s-snap/manifest.json` (docs/design.md §5): which packs exist and which
//! snapshots they hold. Owns its (de)serialization, validation of untrusted content and the
//! merge rules; holds no credentials by construction (there is no field for any).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::mirror::{CommitId, validate_name};

/// The newest manifest format this code reads and writes. Version 2: packs may be stored as
/// zstd frames (`packcodec`); version 1 stores (plain git packs only) are read and
/// upgraded on their next write, and a k8s-snap that only knows version 1 refuses a version 2
/// store instead of misreading its packs. Version 3: snapshot entries may carry the `filter`
/// of a partial snapshot; a manifest is written as version 3 only while it lists a partial
/// snapshot (see [`Manifest::written_version`]), so that a k8s-snap that knows version 2 (and
/// refuses unknown fields) refuses such a store with a clear error and keeps reading the
/// others.
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 3;

/// The format of a manifest that lists no partial snapshot.
const WHOLE_FORMAT_VERSION: u32 = 2;

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
    /// The filter of a partial snapshot, as its `.k8s-snap/snapshot.yaml` records it (so
    /// `list` can mark it without the snapshot in the mirror); absent for a snapshot of a
    /// whole cluster, and in manifests of format version 1 and 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::tree::SnapshotFilter>,
}

/// `k8s-snap/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Version of the manifest format as read; written as [`Manifest::written_version`]
    /// (2, or 3 while a partial snapshot is listed; 1 is read).
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
            format_version: WHOLE_FORMAT_VERSION,
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
        // The version first (other fields ignored): a newer format is refused as such, not as
        // an unknown field. A document without one gets the full parse's error.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let check = |v: u32| {
            if (OLDEST_FORMAT_VERSION..=MANIFEST_FORMAT_VERSION).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "formatVersion {v} is not supported (this k8s-snap reads {OLDEST_FORMAT_VERSION} to {MANIFEST_FORMAT_VERSION})"
                ))
            }
        };
        if let Ok(v) = serde_json::from_slice::<Version>(bytes) {
            check(v.format_version)?;
        }
        let mut m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        check(m.format_version)?;
        // Whatever this code writes back is the current format.
        m.format_version = m.written_version();
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

    /// The format version the manifest is written as: the oldest that holds its content (3
    /// while some snapshot entry carries a `filter`, 2 otherwise), so a store without partial
    /// snapshots stays readable by a k8s-snap that knows version 2.
    pub fn written_version(&self) -> u32 {
        if self.snapshots.values().any(|s| s.filter.is_some()) {
            MANIFEST_FORMAT_VERSION
        } else {
            WHOLE_FORMAT_VERSION
        }
    }

    /// The JSON text written to the store (as [`Manifest::written_version`]).
    #[allow(
        clippy::expect_used,
        reason = "an invariant: plain data with string keys always serializes"
    )]
    pub fn to_bytes(&self) -> Vec<u8> {
        let version = self.written_version();
        let mut v = if version == self.format_version {
            serde_json::to_vec_pretty(self)
        } else {
            serde_json::to_vec_pretty(&Manifest {
                format_version: version,
                ..self.clone()
            })
        }
        .expect("a manifest always serializes");
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
                filter: None,
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

    fn entry(filter: Option<crate::tree::SnapshotFilter>) -> SnapshotEntry {
        SnapshotEntry {
            commit: "1".repeat(40).parse().unwrap(),
            cluster: "prod".into(),
            timestamp: jiff::Timestamp::UNIX_EPOCH,
            resource_version: "1".into(),
            number_of_contents: 3,
            available_until: None,
            packs: Vec::new(),
            filter,
        }
    }

    fn shop_filter() -> crate::tree::SnapshotFilter {
        crate::tree::SnapshotFilter {
            include_namespaces: vec!["shop".into()],
            exclude_resources: vec!["secrets".into()],
            label_selector: Some("app in (a,b)".into()),
            ..Default::default()
        }
    }

    #[test]
    fn partial_snapshots_are_recorded_as_version_3() {
        let mut m = Manifest::default();
        m.snapshots.insert("whole".into(), entry(None));
        // Without a partial snapshot: version 2, byte for byte what a version 2 writer wrote
        // (no `filter` key), so a k8s-snap that knows version 2 keeps reading the store.
        assert_eq!(m.written_version(), 2);
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.contains("\"formatVersion\": 2"), "{text}");
        assert!(!text.contains("filter"), "{text}");

        m.snapshots
            .insert("part".into(), entry(Some(shop_filter())));
        assert_eq!(m.written_version(), 3);
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.contains("\"formatVersion\": 3"), "{text}");
        assert_eq!(
            text.matches("\"filter\"").count(),
            1,
            "only the partial one: {text}"
        );
        for field in ["includeNamespaces", "excludeResources", "labelSelector"] {
            assert!(text.contains(field), "{field} missing in {text}");
        }
        let read = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(read.format_version, 3);
        assert_eq!(read.snapshots["part"].filter, Some(shop_filter()));
        assert_eq!(read.snapshots["whole"].filter, None);

        // The partial snapshot deleted: written as version 2 again.
        let mut read = read;
        read.snapshots.remove("part");
        let text = String::from_utf8(read.to_bytes()).unwrap();
        assert!(text.contains("\"formatVersion\": 2"), "{text}");
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap().format_version, 2);

        // A version 1 or 2 manifest (no filter anywhere) is read; a newer one is refused, as
        // is an unknown field of an entry.
        for v in [1, 2] {
            let old = text.replace("\"formatVersion\": 2", &format!("\"formatVersion\": {v}"));
            let m = Manifest::parse(old.as_bytes()).unwrap();
            assert!(m.snapshots.values().all(|e| e.filter.is_none()));
        }
        let newer = text.replace("\"formatVersion\": 2", "\"formatVersion\": 4");
        let err = Manifest::parse(newer.as_bytes()).unwrap_err();
        assert!(err.contains("formatVersion 4 is not supported"), "{err}");
        let unknown = text.replace("\"cluster\":", "\"partial\": true, \"cluster\":");
        let err = Manifest::parse(unknown.as_bytes()).unwrap_err();
        assert!(err.contains("unknown field `partial`"), "{err}");
        // A newer format is refused by its version, whatever fields it has.
        let err = Manifest::parse(
            unknown
                .replace("\"formatVersion\": 2", "\"formatVersion\": 4")
                .as_bytes(),
        )
        .unwrap_err();
        assert!(err.contains("formatVersion 4 is not supported"), "{err}");
    }

    proptest::proptest! {
        /// Whatever snapshots are partial, the manifest reads back as written, and is version
        /// 3 exactly when one is.
        #[test]
        fn filters_round_trip(partial in proptest::collection::vec(proptest::option::of("[a-z*-]{1,12}"), 0..6)) {
            let mut m = Manifest::default();
            for (i, ns) in partial.iter().enumerate() {
                let filter = ns.as_ref().map(|ns| crate::tree::SnapshotFilter {
                    include_namespaces: vec![ns.clone()],
                    ..Default::default()
                });
                m.snapshots.insert(format!("s{i}"), entry(filter));
            }
            let any_partial = partial.iter().any(Option::is_some);
            proptest::prop_assert_eq!(m.written_version(), if any_partial { 3 } else { 2 });
            let read = Manifest::parse(&m.to_bytes()).unwrap();
            proptest::prop_assert_eq!(read.format_version, m.written_version());
            proptest::prop_assert_eq!(&read.snapshots, &m.snapshots);
            proptest::prop_assert_eq!(read.to_bytes(), m.to_bytes());
        }
    }
}
