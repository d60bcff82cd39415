//! Server profiles: which Kubernetes release the emulator plays (`--server-version`), and the
//! catalogue of built-in groups, versions, resources and preferred versions of each.
//!
//! Owns the per-release data: v1.19 is read from discovery documents recorded from a real
//! kube-apiserver v1.19.0 (`testdata/v1.19/discovery/`); v1.22 and v1.25 are the latest
//! catalogue with the group versions those releases served (Kubernetes' API deprecation
//! guide); `latest` is `catalog::builtins`. Must not touch stored objects or conversions
//! (`convert`).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::catalog::{Catalog, ResourceDef, Subresource, builtins, sub};

/// The Kubernetes release an emulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum ServerVersion {
    /// v1.19: `batch/v1beta1` CronJobs, `extensions` Ingresses, `policy/v1beta1` only,
    /// `apiextensions.k8s.io/v1beta1` CRDs, token Secrets for ServiceAccounts.
    V1_19,
    /// v1.22: `batch/v1` CronJobs (and `v1beta1`), `policy/v1` (and `v1beta1`),
    /// `autoscaling/v2beta1|v2beta2`, no `extensions`, no `v1beta1` CRDs or Ingresses.
    V1_22,
    /// v1.25: `autoscaling/v2`, no `batch/v1beta1`, no `policy/v1beta1`.
    V1_25,
    /// The current release (v1.32).
    #[default]
    Latest,
}

impl ServerVersion {
    /// Every profile, oldest first.
    pub const ALL: [ServerVersion; 4] = [
        ServerVersion::V1_19,
        ServerVersion::V1_22,
        ServerVersion::V1_25,
        ServerVersion::Latest,
    ];

    /// `$KUBE_EMULATOR_SERVER_VERSION` when set and valid (so a whole test suite can run on
    /// one profile), else `Latest`.
    pub fn from_env() -> ServerVersion {
        std::env::var("KUBE_EMULATOR_SERVER_VERSION")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// `gitVersion` of `/version`.
    pub fn git_version(self) -> &'static str {
        match self {
            ServerVersion::V1_19 => "v1.19.0",
            ServerVersion::V1_22 => "v1.22.17",
            ServerVersion::V1_25 => "v1.25.16",
            ServerVersion::Latest => "v1.32.0",
        }
    }

    /// The minor version (19, 22, 25, 32).
    pub fn minor(self) -> u32 {
        match self {
            ServerVersion::V1_19 => 19,
            ServerVersion::V1_22 => 22,
            ServerVersion::V1_25 => 25,
            ServerVersion::Latest => 32,
        }
    }

    /// Whether the server answers aggregated discovery (`apidiscovery.k8s.io/v2`, 1.30+).
    pub fn aggregated_discovery(self) -> bool {
        self.minor() >= 30
    }

    /// Whether new ServiceAccounts get a token Secret (before 1.24).
    pub fn legacy_token_secrets(self) -> bool {
        self.minor() < 24
    }

    /// Whether `managedFields` entries name the subresource written (`status`, `scale`) and
    /// keep a manager's subresource writes apart from its main writes (from 1.22).
    pub(crate) fn managed_fields_subresource(self) -> bool {
        self.minor() >= 22
    }

    /// `/version`.
    pub(crate) fn version_json(self) -> Value {
        if self == ServerVersion::V1_19
            && let Ok(v) = serde_json::from_str(V1_19[0].1)
        {
            return v;
        }
        let (commit, date, go) = match self {
            ServerVersion::V1_22 => (
                "953be8927218ec8067e1af2641e540238ffd7576",
                "2022-12-08T19:51:45Z",
                "go1.16.15",
            ),
            ServerVersion::V1_25 => (
                "60e5135f758b6e43d0523b3277381d1a7e0bdd55",
                "2023-11-14T22:20:48Z",
                "go1.20.10",
            ),
            _ => (
                "70d3cc986aa8221cd1dfb1121852688902d3bf53",
                "2024-12-11T17:59:15Z",
                "go1.23.3",
            ),
        };
        serde_json::json!({
            "major": "1", "minor": self.minor().to_string(), "gitVersion": self.git_version(),
            "gitCommit": commit, "gitTreeState": "clean", "buildDate": date, "goVersion": go,
            "compiler": "gc", "platform": "linux/amd64", "emulator": "kube-emulator"
        })
    }

    /// The catalogue of built-in resources of this release.
    pub(crate) fn catalog(self) -> Catalog {
        match self {
            ServerVersion::V1_19 => recorded_v1_19(),
            ServerVersion::V1_22 => derived(self, V1_22_GROUPS),
            ServerVersion::V1_25 => derived(self, V1_25_GROUPS),
            ServerVersion::Latest => Catalog::new(),
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerVersion::Latest => f.write_str("latest"),
            v => write!(f, "1.{}", v.minor()),
        }
    }
}

impl FromStr for ServerVersion {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, crate::Error> {
        match s.trim().trim_start_matches('v') {
            "1.19" => Ok(ServerVersion::V1_19),
            "1.22" => Ok(ServerVersion::V1_22),
            "1.25" => Ok(ServerVersion::V1_25),
            "latest" | "1.32" => Ok(ServerVersion::Latest),
            _ => Err(crate::Error::ServerVersion(s.to_string())),
        }
    }
}

/// The recorded documents of v1.19.0: file name and content.
pub(crate) const V1_19: &[(&str, &str)] = &[
    (
        "version.json",
        include_str!("../testdata/v1.19/discovery/version.json"),
    ),
    (
        "api.json",
        include_str!("../testdata/v1.19/discovery/api.json"),
    ),
    (
        "api_v1.json",
        include_str!("../testdata/v1.19/discovery/api_v1.json"),
    ),
    (
        "apis.json",
        include_str!("../testdata/v1.19/discovery/apis.json"),
    ),
    (
        "apis_admissionregistration.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_admissionregistration.k8s.io_v1.json"),
    ),
    (
        "apis_admissionregistration.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_admissionregistration.k8s.io_v1beta1.json"),
    ),
    (
        "apis_apiextensions.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_apiextensions.k8s.io_v1.json"),
    ),
    (
        "apis_apiextensions.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_apiextensions.k8s.io_v1beta1.json"),
    ),
    (
        "apis_apiregistration.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_apiregistration.k8s.io_v1.json"),
    ),
    (
        "apis_apiregistration.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_apiregistration.k8s.io_v1beta1.json"),
    ),
    (
        "apis_apps_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_apps_v1.json"),
    ),
    (
        "apis_authentication.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_authentication.k8s.io_v1.json"),
    ),
    (
        "apis_authentication.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_authentication.k8s.io_v1beta1.json"),
    ),
    (
        "apis_authorization.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_authorization.k8s.io_v1.json"),
    ),
    (
        "apis_authorization.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_authorization.k8s.io_v1beta1.json"),
    ),
    (
        "apis_autoscaling_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_autoscaling_v1.json"),
    ),
    (
        "apis_autoscaling_v2beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_autoscaling_v2beta1.json"),
    ),
    (
        "apis_autoscaling_v2beta2.json",
        include_str!("../testdata/v1.19/discovery/apis_autoscaling_v2beta2.json"),
    ),
    (
        "apis_batch_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_batch_v1.json"),
    ),
    (
        "apis_batch_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_batch_v1beta1.json"),
    ),
    (
        "apis_certificates.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_certificates.k8s.io_v1.json"),
    ),
    (
        "apis_certificates.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_certificates.k8s.io_v1beta1.json"),
    ),
    (
        "apis_coordination.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_coordination.k8s.io_v1.json"),
    ),
    (
        "apis_coordination.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_coordination.k8s.io_v1beta1.json"),
    ),
    (
        "apis_discovery.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_discovery.k8s.io_v1beta1.json"),
    ),
    (
        "apis_events.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_events.k8s.io_v1.json"),
    ),
    (
        "apis_events.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_events.k8s.io_v1beta1.json"),
    ),
    (
        "apis_extensions_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_extensions_v1beta1.json"),
    ),
    (
        "apis_networking.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_networking.k8s.io_v1.json"),
    ),
    (
        "apis_networking.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_networking.k8s.io_v1beta1.json"),
    ),
    (
        "apis_node.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_node.k8s.io_v1beta1.json"),
    ),
    (
        "apis_policy_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_policy_v1beta1.json"),
    ),
    (
        "apis_rbac.authorization.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_rbac.authorization.k8s.io_v1.json"),
    ),
    (
        "apis_rbac.authorization.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_rbac.authorization.k8s.io_v1beta1.json"),
    ),
    (
        "apis_scheduling.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_scheduling.k8s.io_v1.json"),
    ),
    (
        "apis_scheduling.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_scheduling.k8s.io_v1beta1.json"),
    ),
    (
        "apis_storage.k8s.io_v1.json",
        include_str!("../testdata/v1.19/discovery/apis_storage.k8s.io_v1.json"),
    ),
    (
        "apis_storage.k8s.io_v1beta1.json",
        include_str!("../testdata/v1.19/discovery/apis_storage.k8s.io_v1beta1.json"),
    ),
];

fn recorded(name: &str) -> Value {
    V1_19
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The resources of one recorded `APIResourceList`, subresources attached to their resource.
fn resources_of(group: &str, version: &str, list: &Value) -> Vec<ResourceDef> {
    let entries = list["resources"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<ResourceDef> = Vec::new();
    for e in &entries {
        let name = e["name"].as_str().unwrap_or_default();
        let kind = e["kind"].as_str().unwrap_or_default().to_string();
        if let Some((parent, subname)) = name.split_once('/') {
            if let Some(r) = out.iter_mut().find(|r| r.plural == parent) {
                r.subresources.push(Subresource {
                    name: subname.to_string(),
                    kind,
                    group: e["group"].as_str().map(str::to_string),
                    version: e["version"].as_str().map(str::to_string),
                    verbs: strings(&e["verbs"]),
                });
            }
            continue;
        }
        out.push(ResourceDef {
            group: group.to_string(),
            version: version.to_string(),
            plural: name.to_string(),
            singular: e["singularName"].as_str().unwrap_or_default().to_string(),
            kind,
            namespaced: e["namespaced"].as_bool().unwrap_or(false),
            verbs: strings(&e["verbs"]),
            short_names: strings(&e["shortNames"]),
            categories: strings(&e["categories"]),
            subresources: Vec::new(),
            printer_columns: Vec::new(),
            storage_version_hash: e["storageVersionHash"].as_str().map(str::to_string),
            storage: false,
        });
    }
    out
}

/// v1.19.0 exactly as recorded.
fn recorded_v1_19() -> Catalog {
    let mut resources = resources_of("", "v1", &recorded("api_v1.json"));
    let mut order = vec![(String::new(), vec!["v1".to_string()])];
    for g in recorded("apis.json")["groups"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = g["name"].as_str().unwrap_or_default().to_string();
        let versions: Vec<String> = g["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_str().map(str::to_string))
            .collect();
        for v in &versions {
            resources.extend(resources_of(
                &name,
                v,
                &recorded(&format!("apis_{name}_{v}.json")),
            ));
        }
        order.push((name, versions));
    }
    Catalog::with_builtins(ServerVersion::V1_19, resources, Some(order))
}

type GroupTable = &'static [(
    &'static str,
    &'static [(&'static str, &'static [&'static str])],
)];

/// v1.22's built-in groups in discovery order: versions (preferred first) and their resources.
const V1_22_GROUPS: GroupTable = &[
    ("apiregistration.k8s.io", &[("v1", &["apiservices"])]),
    (
        "apps",
        &[(
            "v1",
            &[
                "controllerrevisions",
                "daemonsets",
                "deployments",
                "replicasets",
                "statefulsets",
            ],
        )],
    ),
    (
        "events.k8s.io",
        &[("v1", &["events"]), ("v1beta1", &["events"])],
    ),
    ("authentication.k8s.io", &[("v1", &["tokenreviews"])]),
    (
        "authorization.k8s.io",
        &[(
            "v1",
            &[
                "localsubjectaccessreviews",
                "selfsubjectaccessreviews",
                "selfsubjectrulesreviews",
                "subjectaccessreviews",
            ],
        )],
    ),
    (
        "autoscaling",
        &[
            ("v1", &["horizontalpodautoscalers"]),
            ("v2beta1", &["horizontalpodautoscalers"]),
            ("v2beta2", &["horizontalpodautoscalers"]),
        ],
    ),
    (
        "batch",
        &[("v1", &["cronjobs", "jobs"]), ("v1beta1", &["cronjobs"])],
    ),
    (
        "certificates.k8s.io",
        &[("v1", &["certificatesigningrequests"])],
    ),
    (
        "networking.k8s.io",
        &[("v1", &["ingressclasses", "ingresses", "networkpolicies"])],
    ),
    (
        "policy",
        &[
            ("v1", &["poddisruptionbudgets"]),
            ("v1beta1", &["poddisruptionbudgets", "podsecuritypolicies"]),
        ],
    ),
    (
        "rbac.authorization.k8s.io",
        &[(
            "v1",
            &[
                "clusterrolebindings",
                "clusterroles",
                "rolebindings",
                "roles",
            ],
        )],
    ),
    (
        "storage.k8s.io",
        &[
            (
                "v1",
                &[
                    "csidrivers",
                    "csinodes",
                    "storageclasses",
                    "volumeattachments",
                ],
            ),
            ("v1beta1", &["csistoragecapacities"]),
        ],
    ),
    (
        "admissionregistration.k8s.io",
        &[(
            "v1",
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
        )],
    ),
    (
        "apiextensions.k8s.io",
        &[("v1", &["customresourcedefinitions"])],
    ),
    ("scheduling.k8s.io", &[("v1", &["priorityclasses"])]),
    ("coordination.k8s.io", &[("v1", &["leases"])]),
    (
        "node.k8s.io",
        &[
            ("v1", &["runtimeclasses"]),
            ("v1beta1", &["runtimeclasses"]),
        ],
    ),
    (
        "discovery.k8s.io",
        &[
            ("v1", &["endpointslices"]),
            ("v1beta1", &["endpointslices"]),
        ],
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        &[("v1beta1", &["flowschemas", "prioritylevelconfigurations"])],
    ),
];

/// v1.25's built-in groups in discovery order.
const V1_25_GROUPS: GroupTable = &[
    ("apiregistration.k8s.io", &[("v1", &["apiservices"])]),
    (
        "apps",
        &[(
            "v1",
            &[
                "controllerrevisions",
                "daemonsets",
                "deployments",
                "replicasets",
                "statefulsets",
            ],
        )],
    ),
    ("events.k8s.io", &[("v1", &["events"])]),
    ("authentication.k8s.io", &[("v1", &["tokenreviews"])]),
    (
        "authorization.k8s.io",
        &[(
            "v1",
            &[
                "localsubjectaccessreviews",
                "selfsubjectaccessreviews",
                "selfsubjectrulesreviews",
                "subjectaccessreviews",
            ],
        )],
    ),
    (
        "autoscaling",
        &[
            ("v2", &["horizontalpodautoscalers"]),
            ("v1", &["horizontalpodautoscalers"]),
            ("v2beta2", &["horizontalpodautoscalers"]),
        ],
    ),
    ("batch", &[("v1", &["cronjobs", "jobs"])]),
    (
        "certificates.k8s.io",
        &[("v1", &["certificatesigningrequests"])],
    ),
    (
        "networking.k8s.io",
        &[("v1", &["ingressclasses", "ingresses", "networkpolicies"])],
    ),
    ("policy", &[("v1", &["poddisruptionbudgets"])]),
    (
        "rbac.authorization.k8s.io",
        &[(
            "v1",
            &[
                "clusterrolebindings",
                "clusterroles",
                "rolebindings",
                "roles",
            ],
        )],
    ),
    (
        "storage.k8s.io",
        &[
            (
                "v1",
                &[
                    "csidrivers",
                    "csinodes",
                    "csistoragecapacities",
                    "storageclasses",
                    "volumeattachments",
                ],
            ),
            ("v1beta1", &["csistoragecapacities"]),
        ],
    ),
    (
        "admissionregistration.k8s.io",
        &[(
            "v1",
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
        )],
    ),
    (
        "apiextensions.k8s.io",
        &[("v1", &["customresourcedefinitions"])],
    ),
    ("scheduling.k8s.io", &[("v1", &["priorityclasses"])]),
    ("coordination.k8s.io", &[("v1", &["leases"])]),
    ("node.k8s.io", &[("v1", &["runtimeclasses"])]),
    ("discovery.k8s.io", &[("v1", &["endpointslices"])]),
    (
        "flowcontrol.apiserver.k8s.io",
        &[
            ("v1beta2", &["flowschemas", "prioritylevelconfigurations"]),
            ("v1beta1", &["flowschemas", "prioritylevelconfigurations"]),
        ],
    ),
];

/// A release's catalogue from the latest definitions: the core group as today, each listed
/// group version serving the listed resources (definitions of the latest release with the
/// version changed; PodSecurityPolicy, gone since 1.25, defined here).
fn derived(v: ServerVersion, groups: GroupTable) -> Catalog {
    let latest = builtins();
    let mut resources: Vec<ResourceDef> = latest
        .iter()
        .filter(|r| r.group.is_empty())
        .cloned()
        .collect();
    let mut order = vec![(String::new(), vec!["v1".to_string()])];
    for (group, versions) in groups {
        for (version, plurals) in *versions {
            for plural in *plurals {
                let def = latest
                    .iter()
                    .find(|r| r.group == *group && r.plural == *plural)
                    .cloned()
                    .unwrap_or_else(|| extra_def(group, plural));
                resources.push(ResourceDef {
                    version: (*version).to_string(),
                    ..def
                });
            }
        }
        order.push((
            (*group).to_string(),
            versions.iter().map(|(v, _)| (*v).to_string()).collect(),
        ));
    }
    Catalog::with_builtins(v, resources, Some(order))
}

/// Definitions of built-in resources the latest release no longer serves.
fn extra_def(group: &str, plural: &str) -> ResourceDef {
    let (kind, namespaced, short, subs): (&str, bool, &[&str], &[&str]) = match plural {
        "podsecuritypolicies" => ("PodSecurityPolicy", false, &["psp"], &[]),
        _ => ("Unknown", true, &[], &[]),
    };
    ResourceDef {
        group: group.to_string(),
        version: String::new(),
        plural: plural.to_string(),
        singular: kind.to_ascii_lowercase(),
        kind: kind.to_string(),
        namespaced,
        verbs: [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect(),
        short_names: short.iter().map(|s| (*s).to_string()).collect(),
        categories: Vec::new(),
        subresources: subs.iter().map(|s| sub(s, kind)).collect(),
        printer_columns: Vec::new(),
        storage_version_hash: None,
        storage: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for v in ServerVersion::ALL {
            assert_eq!(v.to_string().parse::<ServerVersion>().unwrap(), v);
        }
        assert_eq!(
            "v1.19".parse::<ServerVersion>().unwrap(),
            ServerVersion::V1_19
        );
        assert!("1.20".parse::<ServerVersion>().is_err());
    }

    #[test]
    fn v1_19_serves_cronjobs_only_at_v1beta1() {
        let c = ServerVersion::V1_19.catalog();
        assert!(c.find("batch", "v1", "cronjobs").is_none());
        assert!(c.find("batch", "v1beta1", "cronjobs").is_some());
        let groups = c.groups();
        let autoscaling = groups.iter().find(|(g, _)| g == "autoscaling").unwrap();
        assert_eq!(autoscaling.1, ["v1", "v2beta1", "v2beta2"]);
        let ing = c.find("extensions", "v1beta1", "ingresses").unwrap();
        assert_eq!(
            c.storage_def(&ing.key()).unwrap().api_version(),
            "networking.k8s.io/v1"
        );
    }

    #[test]
    fn derived_profiles_serve_their_versions() {
        let c = ServerVersion::V1_22.catalog();
        assert!(c.find("batch", "v1beta1", "cronjobs").is_some());
        assert!(c.find("policy", "v1beta1", "podsecuritypolicies").is_some());
        assert!(
            c.find("autoscaling", "v2", "horizontalpodautoscalers")
                .is_none()
        );
        let c = ServerVersion::V1_25.catalog();
        assert!(c.find("batch", "v1beta1", "cronjobs").is_none());
        assert_eq!(
            c.find_any("autoscaling", "horizontalpodautoscalers")
                .unwrap()
                .version,
            "v2"
        );
    }
}
