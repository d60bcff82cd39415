//! API discovery: which resources a cluster serves, and which of them a snapshot reads.
//!
//! Owns: walking legacy discovery (`/api`, `/api/v1`, `/apis`, `/apis/<g>/<v>`), the
//! [`ApiResourceInfo`] model with its URL paths, and the snapshot filter of docs/design.md §2
//! (verbs `list get create delete`; not nodes, events, subresources, metrics APIs).
//!
//! Must not touch: object contents, the tree format, git.

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList, APIVersions};
use serde::Serialize;

use crate::cluster::{Cluster, ClusterError};

/// Verbs a resource must support to be snapshotted (and so restorable).
pub const REQUIRED_VERBS: [&str; 4] = ["list", "get", "create", "delete"];

/// Groups never read: aggregated metrics APIs are computed, not stored.
const METRICS_GROUPS: [&str; 3] = [
    "metrics.k8s.io",
    "custom.metrics.k8s.io",
    "external.metrics.k8s.io",
];

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery of {what} failed: {source}")]
    Request {
        what: String,
        #[source]
        source: ClusterError,
    },
}

impl DiscoveryError {
    /// The underlying cluster error.
    pub fn cluster_error(&self) -> &ClusterError {
        match self {
            DiscoveryError::Request { source, .. } => source,
        }
    }
}

/// One served resource of one group version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceInfo {
    /// API group, `""` for core.
    pub group: String,
    pub version: String,
    /// Plural name (`configmaps`).
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub has_status_subresource: bool,
}

impl ApiResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// URL prefix of the group version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The collection URL, across all namespaces when `namespace` is `None`.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!(
                    "{}/namespaces/{}/{}",
                    self.group_version_path(),
                    ns,
                    self.resource
                )
            }
            _ => format!("{}/{}", self.group_version_path(), self.resource),
        }
    }

    /// The URL of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}", self.collection_path(namespace), name)
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether a snapshot reads this resource (docs/design.md §2).
    pub fn is_snapshotted(&self) -> bool {
        let skipped_kind = (self.group.is_empty()
            && (self.resource == "nodes" || self.resource == "events"))
            || (self.group == "events.k8s.io" && self.resource == "events");
        !skipped_kind
            && !METRICS_GROUPS.contains(&self.group.as_str())
            && REQUIRED_VERBS.iter().all(|v| self.supports(v))
    }
}

/// Which versions of each group to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Only each group's preferred version (snapshots).
    Preferred,
    /// Every served version (restores: a snapshot may hold an older version).
    All,
}

/// What discovery found.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// `gitVersion` from `/version`.
    pub server_version: String,
    /// Resources in discovery order: core first, then groups as the server lists them.
    pub resources: Vec<ApiResourceInfo>,
}

impl Discovered {
    /// The resources a snapshot reads.
    pub fn snapshotted(&self) -> impl Iterator<Item = &ApiResourceInfo> {
        self.resources.iter().filter(|r| r.is_snapshotted())
    }

    /// Finds a served resource by group, version and plural name.
    pub fn find(&self, group: &str, version: &str, resource: &str) -> Option<&ApiResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
    }
}

#[derive(serde::Deserialize)]
struct VersionInfo {
    #[serde(rename = "gitVersion", default)]
    git_version: String,
}

/// Discovers the served resources. Group versions are fetched concurrently (`concurrency` at once).
pub async fn discover(
    cluster: &Cluster,
    versions: Versions,
    concurrency: usize,
) -> Result<Discovered, DiscoveryError> {
    let request = |what: &str| {
        let what = what.to_string();
        move |source| DiscoveryError::Request { what, source }
    };
    let version: VersionInfo = cluster
        .get_json("/version")
        .await
        .map_err(request("/version"))?;
    let core: APIVersions = cluster.get_json("/api").await.map_err(request("/api"))?;
    let groups: APIGroupList = cluster.get_json("/apis").await.map_err(request("/apis"))?;

    let mut group_versions: Vec<(String, String)> = Vec::new();
    for v in &core.versions {
        if versions == Versions::All || Some(v) == core.versions.first() {
            group_versions.push((String::new(), v.clone()));
        }
    }
    for g in &groups.groups {
        if METRICS_GROUPS.contains(&g.name.as_str()) {
            continue;
        }
        let preferred = g
            .preferred_version
            .as_ref()
            .map(|p| p.version.clone())
            .or_else(|| g.versions.first().map(|v| v.version.clone()));
        match versions {
            Versions::Preferred => {
                if let Some(v) = preferred {
                    group_versions.push((g.name.clone(), v));
                }
            }
            Versions::All => {
                // Preferred first, so lookups by kind find it first.
                if let Some(p) = &preferred {
                    group_versions.push((g.name.clone(), p.clone()));
                }
                for v in &g.versions {
                    if Some(&v.version) != preferred.as_ref() {
                        group_versions.push((g.name.clone(), v.version.clone()));
                    }
                }
            }
        }
    }

    let lists: Vec<(String, String, APIResourceList)> = stream::iter(group_versions)
        .map(|(group, version)| async move {
            let path = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let list: APIResourceList = cluster.get_json(&path).await.map_err(request(&path))?;
            Ok::<_, DiscoveryError>((group, version, list))
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;

    let mut resources = Vec::new();
    for (group, version, list) in lists {
        let names: Vec<&str> = list.resources.iter().map(|r| r.name.as_str()).collect();
        for r in &list.resources {
            if r.name.contains('/') {
                continue;
            }
            let status = format!("{}/status", r.name);
            resources.push(ApiResourceInfo {
                group: group.clone(),
                version: version.clone(),
                resource: r.name.clone(),
                kind: r.kind.clone(),
                namespaced: r.namespaced,
                verbs: r.verbs.clone(),
                has_status_subresource: names.contains(&status.as_str()),
            });
        }
    }
    Ok(Discovered {
        server_version: version.git_version,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str, resource: &str, verbs: &[&str]) -> ApiResourceInfo {
        ApiResourceInfo {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            kind: "K".into(),
            namespaced: true,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            has_status_subresource: false,
        }
    }

    const ALL: [&str; 8] = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];

    #[test]
    fn snapshot_filter_follows_the_original_rules() {
        assert!(info("", "configmaps", &ALL).is_snapshotted());
        assert!(!info("", "nodes", &ALL).is_snapshotted());
        assert!(!info("", "events", &ALL).is_snapshotted());
        assert!(!info("events.k8s.io", "events", &ALL).is_snapshotted());
        assert!(!info("metrics.k8s.io", "pods", &ALL).is_snapshotted());
        assert!(!info("", "componentstatuses", &["get", "list"]).is_snapshotted());
        assert!(!info("", "bindings", &["create"]).is_snapshotted());
        assert!(info("example.com", "nodes", &ALL).is_snapshotted());
    }

    #[test]
    fn paths() {
        let mut r = info("apps", "deployments", &ALL);
        assert_eq!(r.collection_path(None), "/apis/apps/v1/deployments");
        assert_eq!(
            r.object_path(Some("x"), "d"),
            "/apis/apps/v1/namespaces/x/deployments/d"
        );
        r.group = String::new();
        r.namespaced = false;
        assert_eq!(r.object_path(Some("x"), "n"), "/api/v1/deployments/n");
        assert_eq!(r.api_version(), "v1");
    }
}
