//! The metadata files under `.k8s-snap/` in every snapshot tree.

use serde::{Deserialize, Serialize};

/// File path (in the tree) of [`SnapshotMeta`].
pub const SNAPSHOT_META_FILE: &str = ".k8s-snap/snapshot.yaml";
/// File path (in the tree) of the list of [`ResourceEntry`].
pub(crate) const RESOURCES_FILE: &str = ".k8s-snap/resources.yaml";
/// The tree format this code writes and understands.
pub const FORMAT_VERSION: u32 = 1;

/// How consistent the lists of a snapshot are with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Every list was read at the snapshot's resourceVersion (`resourceVersionMatch=Exact`).
    Exact,
    /// The server did not support exact lists; lists were read one after another.
    BestEffort,
}

/// An object that was seen but deliberately not written, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// Content path (`/api/v1/namespaces/x/secrets/y`).
    pub path: String,
    /// Why it was not written (e.g. `token-secret`).
    pub reason: String,
}

/// `.k8s-snap/snapshot.yaml`: what a snapshot is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    /// Version of this tree format ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The snapshot's name.
    pub name: String,
    /// The name of the cluster it was taken from.
    pub cluster_name: String,
    /// The resourceVersion every list was read at.
    pub resource_version: String,
    /// When the snapshot was taken (RFC 3339, second precision).
    pub timestamp: jiff::Timestamp,
    /// `gitVersion` of the server (`/version`).
    pub server_version: String,
    /// Whether all lists were read at the same resourceVersion.
    pub consistency: Consistency,
    /// Number of object files in the tree (metadata files not counted).
    pub number_of_contents: u64,
    /// The TTL as given (e.g. `720h`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// When the snapshot expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<jiff::Timestamp>,
    /// The archive of the original Go k8s-snap this snapshot was imported from (`k8s-snap
    /// import`), e.g. `cluster01-001.tgz` or `s3://bucket/cluster01-001.tgz`; absent for a
    /// live snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// `k8s-snap <version>` that wrote the tree.
    pub tool_version: String,
    /// Objects seen but deliberately not written.
    #[serde(default)]
    pub skipped: Vec<SkippedEntry>,
    /// Present when Secret values are sealed (docs/design.md §3, "Sealed values").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Present when the snapshot holds part of the cluster: the filter it was taken with
    /// (docs/design.md §3, "Partial snapshots"). Absent: every resource the server serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<SnapshotFilter>,
    /// Group versions the server lists but did not serve when the snapshot was taken (an
    /// aggregated API whose backend did not answer): their objects are not in the tree
    /// (docs/design.md §2). Absent: every listed group version was read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable_apis: Vec<UnavailableApi>,
}

/// A group version a server lists in discovery but does not serve: an aggregated API
/// (`APIService`) whose backend does not answer (`503 service unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnavailableApi {
    /// `group/version`.
    pub group_version: String,
    /// The server's answer, e.g. `503 Service Unavailable`.
    pub reason: String,
}

/// What part of a cluster a snapshot holds (the `snapshot` flags `--include-namespaces` ...,
/// the Snapshot spec fields of the same names). Every field empty: the whole cluster.
/// Matching lives in `crate::snapshot::filter`; this is the recorded form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotFilter {
    /// Only objects of these namespaces (glob patterns: `shop`, `team-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<String>,
    /// No objects of these namespaces (glob patterns); wins over `includeNamespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    /// Only these resources: `configmaps`, `deployments.apps`, `*.example.com`, or a kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    /// Not these resources (same forms); wins over `includeResources`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    /// Only objects whose labels match (Kubernetes label selector syntax, applied by the
    /// server: the `labelSelector` of every LIST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Cluster-scoped objects: unset (auto) = only when no namespace filter is given;
    /// `true` = always; `false` = never (Namespace objects follow the namespace filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_cluster_resources: Option<bool>,
}

impl SnapshotFilter {
    /// Whether this filter selects every object (a snapshot of the whole cluster).
    pub fn is_whole_cluster(&self) -> bool {
        self.include_namespaces.is_empty()
            && self.exclude_namespaces.is_empty()
            && self.include_resources.is_empty()
            && self.exclude_resources.is_empty()
            && self
                .label_selector
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
            && self.include_cluster_resources != Some(false)
    }

    /// The filter in the `snapshot` command's flags (`--include-namespaces shop ...`), for
    /// display.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (flag, values) in [
            ("--include-namespaces", &self.include_namespaces),
            ("--exclude-namespaces", &self.exclude_namespaces),
            ("--include-resources", &self.include_resources),
            ("--exclude-resources", &self.exclude_resources),
        ] {
            if !values.is_empty() {
                parts.push(format!("{flag} {}", values.join(",")));
            }
        }
        if let Some(s) = self
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            parts.push(format!("--selector {s}"));
        }
        if let Some(c) = self.include_cluster_resources {
            parts.push(format!("--include-cluster-resources {c}"));
        }
        parts.join(" ")
    }
}

/// How a snapshot's Secret values are sealed: to which recipients, fingerprinted under which
/// key (its public id; the key itself never leaves the mirror directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `age` X25519 recipients (`age1…`, public keys), sorted: an identity of one of them
    /// opens the snapshot's sealed values.
    pub recipients: Vec<String>,
    /// The id of the fingerprint key (`crypt::FingerprintKey::id`).
    pub fingerprint_key_id: String,
    /// User-named fields sealed besides Secrets' values (`--encrypt-path`), as given
    /// (`<resource>[.<group>]:<field path>`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// One served resource of one group version: what discovery finds and what
/// `.k8s-snap/resources.yaml` records of each resource a snapshot listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceInfo {
    /// API group, `""` for core.
    pub group: String,
    /// API version (`v1`).
    pub version: String,
    /// Plural name (`configmaps`).
    pub resource: String,
    /// Kind (`ConfigMap`).
    pub kind: String,
    /// Whether objects of the resource live in namespaces.
    pub namespaced: bool,
    /// The verbs the server lists for the resource.
    pub verbs: Vec<String>,
    /// Whether the resource has a `/status` subresource.
    pub has_status_subresource: bool,
}

/// One entry of `.k8s-snap/resources.yaml`: a resource the snapshot listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceEntry {
    /// The resource.
    #[serde(flatten)]
    pub api: ApiResourceInfo,
    /// Objects of this resource written to the tree.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resources.yaml` keeps its bytes: the resource's fields beside `count`, in one map.
    #[test]
    fn a_resource_entry_is_one_flat_map() {
        let entry = ResourceEntry {
            api: ApiResourceInfo {
                group: "apps".into(),
                version: "v1".into(),
                resource: "deployments".into(),
                kind: "Deployment".into(),
                namespaced: true,
                verbs: vec!["get".into(), "list".into()],
                has_status_subresource: true,
            },
            count: 3,
        };
        let text = crate::tree::to_yaml_string(&vec![entry.clone()]).unwrap();
        assert_eq!(
            text,
            "- count: 3\n  group: apps\n  hasStatusSubresource: true\n  kind: Deployment\n  namespaced: true\n  resource: deployments\n  verbs:\n  - get\n  - list\n  version: v1\n"
        );
        let back: Vec<ResourceEntry> = crate::tree::from_yaml_str(&text).unwrap();
        assert_eq!(back, vec![entry]);
    }
}
