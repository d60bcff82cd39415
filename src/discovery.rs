//! API discovery: which resources a cluster serves, and which of them a snapshot reads.
//!
//! Owns: walking legacy discovery (`/api`, `/api/v1`, `/apis`, `/apis/<g>/<v>`) and going on
//! without the group versions listed but answered 503 (unavailable aggregated APIs, recorded
//! as [`UnavailableApi`]), the [`ApiResourceInfo`] model with its URL paths, the choice of one
//! version per resource (server-preferred resources, Kubernetes version priority), and the
//! snapshot filter of docs/design.md §2 (verbs `list get create delete`; not nodes, events, subresources, metrics
//! APIs; a deprecated group's copy of a resource another group serves).
//!
//! Must not touch: object contents, the tree format, git.

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIResourceList, APIVersions};

use crate::cluster::{Cluster, ClusterError};

/// Verbs a resource must support to be snapshotted (and so restorable).
pub const REQUIRED_VERBS: [&str; 4] = ["list", "get", "create", "delete"];

/// Groups never read: aggregated metrics APIs are computed, not stored.
const METRICS_GROUPS: [&str; 3] = [
    "metrics.k8s.io",
    "custom.metrics.k8s.io",
    "external.metrics.k8s.io",
];

/// Groups whose resources moved to other groups (`extensions` Ingresses to
/// `networking.k8s.io`, its Deployments/DaemonSets/ReplicaSets to `apps`, its
/// NetworkPolicies to `networking.k8s.io`, PodSecurityPolicies to `policy`). While both are
/// served, they are two views of the same objects; a snapshot reads the other group.
pub const DEPRECATED_GROUPS: [&str; 1] = ["extensions"];

/// Why discovering the served resources failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A discovery request failed.
    #[error("discovery of {what} failed: {source}")]
    Request {
        /// What was being discovered.
        what: String,
        /// The cluster error.
        #[source]
        source: ClusterError,
    },
}

impl DiscoveryError {
    /// The underlying cluster error.
    pub(crate) fn cluster_error(&self) -> &ClusterError {
        match self {
            DiscoveryError::Request { source, .. } => source,
        }
    }
}

pub use crate::tree::meta::{ApiResourceInfo, UnavailableApi};

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
    pub(crate) fn group_version_path(&self) -> String {
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

    /// Whether the resource supports `verb` (`list`, `create`, ...).
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
    /// The server-preferred resources (snapshots): each group's preferred version, plus the
    /// resources served only in other versions at their highest-priority version
    /// (`preferred_resources`).
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
    /// Group versions `/apis` lists whose discovery the server answered `503` (after the
    /// retries of any request): aggregated APIs whose backends do not answer. Their resources
    /// are unknown; every other group is discovered.
    pub unavailable: Vec<UnavailableApi>,
}

impl Discovered {
    /// The server's minor release (`22` of `v1.22.3-gke.100`), when `gitVersion` says.
    pub fn server_minor(&self) -> Option<u32> {
        let rest = self.server_version.strip_prefix('v')?;
        let mut parts = rest.split('.');
        if parts.next()? != "1" {
            return None;
        }
        let minor: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        minor.parse().ok()
    }

    /// The resources a snapshot reads. A resource of a [`DEPRECATED_GROUPS`] group that
    /// another group also serves (same plural and kind: the same objects) is left out, so
    /// those objects are stored once, under the non-deprecated group.
    pub fn snapshotted(&self) -> impl Iterator<Item = &ApiResourceInfo> {
        self.resources.iter().filter(|r| {
            r.is_snapshotted()
                && !(DEPRECATED_GROUPS.contains(&r.group.as_str())
                    && self.resources.iter().any(|o| {
                        o.group != r.group
                            && o.resource == r.resource
                            && o.kind == r.kind
                            && o.is_snapshotted()
                    }))
        })
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

    // Every served group version is read in both modes: a resource served only in a version
    // other than its group's preferred one (CronJobs at batch/v1beta1 on v1.19) must be found.
    let mut group_versions: Vec<(String, String)> = Vec::new();
    let mut preferred_of: Vec<(String, Option<String>)> = Vec::new();
    for v in &core.versions {
        group_versions.push((String::new(), v.clone()));
    }
    preferred_of.push((String::new(), core.versions.first().cloned()));
    for g in &groups.groups {
        if METRICS_GROUPS.contains(&g.name.as_str()) {
            continue;
        }
        let preferred = g
            .preferred_version
            .as_ref()
            .map(|p| p.version.clone())
            .or_else(|| g.versions.first().map(|v| v.version.clone()));
        // Preferred first, so lookups by kind find it first.
        if let Some(p) = &preferred {
            group_versions.push((g.name.clone(), p.clone()));
        }
        for v in &g.versions {
            if Some(&v.version) != preferred.as_ref() {
                group_versions.push((g.name.clone(), v.version.clone()));
            }
        }
        preferred_of.push((g.name.clone(), preferred));
    }

    // An aggregated API whose backend does not answer is listed in `/apis` but answers 503
    // (`service unavailable`): kubectl and client-go go on without it, and so does discovery,
    // recording it. Any other failure fails discovery.
    let fetched: Vec<Result<(String, String, APIResourceList), UnavailableApi>> = stream::iter(
        group_versions,
    )
    .map(|(group, version)| async move {
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        match cluster.get_json::<APIResourceList>(&path).await {
            Ok(list) => Ok(Ok((group, version, list))),
            Err(e) if !group.is_empty() && e.code() == Some(503) => {
                tracing::warn!(
                    group_version = %format!("{group}/{version}"),
                    "the server lists this API but does not serve it (503); going on without it"
                );
                Ok(Err(UnavailableApi {
                    group_version: format!("{group}/{version}"),
                    reason:
                        "503 Service Unavailable (an aggregated API whose backend does not answer)"
                            .to_string(),
                }))
            }
            Err(e) => Err(request(&path)(e)),
        }
    })
    .buffered(concurrency.max(1))
    .try_collect()
    .await?;
    let mut unavailable = Vec::new();
    let mut lists = Vec::new();
    for f in fetched {
        match f {
            Ok(l) => lists.push(l),
            Err(u) => unavailable.push(u),
        }
    }

    let mut all = Vec::new();
    for (group, version, list) in lists {
        let names: Vec<&str> = list.resources.iter().map(|r| r.name.as_str()).collect();
        for r in &list.resources {
            if r.name.contains('/') {
                continue;
            }
            let status = format!("{}/status", r.name);
            all.push(ApiResourceInfo {
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
    let resources = match versions {
        Versions::All => all,
        Versions::Preferred => preferred_resources(all, &preferred_of),
    };
    Ok(Discovered {
        server_version: version.git_version,
        resources,
        unavailable,
    })
}

/// The server-preferred resources (client-go's `ServerPreferredResources`): for each group,
/// every resource of its preferred version, then each resource served only in other versions
/// of the group, at the highest-priority version serving it ([`version_priority`]). Groups
/// keep their discovery order; `all` holds every served group version.
pub(crate) fn preferred_resources(
    all: Vec<ApiResourceInfo>,
    preferred_of: &[(String, Option<String>)],
) -> Vec<ApiResourceInfo> {
    let mut out: Vec<ApiResourceInfo> = Vec::new();
    for (group, preferred) in preferred_of {
        let mut of_group: Vec<&ApiResourceInfo> =
            all.iter().filter(|r| &r.group == group).collect();
        // Stable: within one version, discovery order is kept.
        of_group.sort_by_key(|r| {
            (
                Some(&r.version) != preferred.as_ref(),
                std::cmp::Reverse(version_priority(&r.version)),
            )
        });
        let start = out.len();
        for r in of_group {
            if !out[start..].iter().any(|o| o.resource == r.resource) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first (`v2` > `v1` >
/// `v2beta1` > `v1beta2` > `v1beta1` > `v1alpha1`); a version not of that form sorts last.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, n) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    match n.parse::<u32>() {
        Ok(n) => (level, major, n),
        Err(_) => (0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_minor_reads_git_versions() {
        let of = |v: &str| {
            Discovered {
                server_version: v.into(),
                resources: Vec::new(),
                unavailable: Vec::new(),
            }
            .server_minor()
        };
        assert_eq!(of("v1.22.3"), Some(22));
        assert_eq!(of("v1.24.17-gke.100"), Some(24));
        assert_eq!(of("v1.27+"), Some(27));
        assert_eq!(of("v2.1.0"), None);
        assert_eq!(of("1.22"), None);
        assert_eq!(of(""), None);
    }

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

    fn at(group: &str, version: &str, resource: &str, kind: &str) -> ApiResourceInfo {
        let mut r = info(group, resource, &ALL);
        r.version = version.into();
        r.kind = kind.into();
        r
    }

    #[test]
    fn version_priority_orders_ga_beta_alpha() {
        let mut v = vec![
            "v1alpha1", "v1beta1", "v2beta1", "v1", "v2", "v1beta2", "v10", "foo", "v3alpha2",
        ];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            v,
            [
                "v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v3alpha2", "v1alpha1", "foo"
            ]
        );
    }

    #[test]
    fn preferred_resources_add_those_served_only_elsewhere() {
        // batch on v1.19: v1 (preferred) serves jobs, v1beta1 and v2alpha1 serve cronjobs.
        let all = vec![
            at("batch", "v1", "jobs", "Job"),
            at("batch", "v2alpha1", "cronjobs", "CronJob"),
            at("batch", "v1beta1", "cronjobs", "CronJob"),
            at("autoscaling", "v2beta2", "horizontalpodautoscalers", "HPA"),
            at("autoscaling", "v1", "horizontalpodautoscalers", "HPA"),
        ];
        let preferred = vec![
            ("batch".to_string(), Some("v1".to_string())),
            ("autoscaling".to_string(), Some("v1".to_string())),
        ];
        let got: Vec<String> = preferred_resources(all, &preferred)
            .iter()
            .map(|r| format!("{}/{}/{}", r.group, r.version, r.resource))
            .collect();
        assert_eq!(
            got,
            [
                "batch/v1/jobs",
                "batch/v1beta1/cronjobs",
                "autoscaling/v1/horizontalpodautoscalers"
            ]
        );
    }

    #[test]
    fn a_deprecated_group_copy_is_not_snapshotted() {
        let d = Discovered {
            server_version: "v1.19.0".into(),
            resources: vec![
                at("extensions", "v1beta1", "ingresses", "Ingress"),
                at("extensions", "v1beta1", "widgets", "Widget"),
                at("networking.k8s.io", "v1", "ingresses", "Ingress"),
            ],
            unavailable: Vec::new(),
        };
        let got: Vec<String> = d.snapshotted().map(|r| r.api_version()).collect();
        assert_eq!(got, ["extensions/v1beta1", "networking.k8s.io/v1"]);
        assert_eq!(
            d.snapshotted()
                .filter(|r| r.resource == "ingresses")
                .count(),
            1
        );
    }

    #[test]
    fn paths() {
        let mut r = info("apps", "deployments", &ALL);
        assert_eq!(r.collection_path(None), "/apis/apps/v1/deployments");
        assert_eq!(
            r.collection_path(Some("x")),
            "/apis/apps/v1/namespaces/x/deployments"
        );
        r.group = String::new();
        r.namespaced = false;
        assert_eq!(r.collection_path(Some("x")), "/api/v1/deployments");
        assert_eq!(r.api_version(), "v1");
    }
}
