//! The catalogue of served resources (built-ins and established CRDs) and the discovery
//! documents built from it (`/api`, `/apis`, group versions, a minimal OpenAPI).
//!
//! Owns what the server *serves*; it must not touch stored objects (see `store`).

use serde_json::{Value, json};

/// The full verb set of an ordinary resource.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A subresource entry (`pods/status`, `deployments/scale`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Subresource {
    pub name: String,
    pub kind: String,
    pub group: Option<String>,
    pub version: Option<String>,
    pub verbs: Vec<String>,
}

/// One served resource at one group/version.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<Subresource>,
    /// A CRD version's `additionalPrinterColumns` (server-side tables for kubectl).
    pub printer_columns: Vec<Value>,
    /// `storageVersionHash` of discovery (recorded profiles only).
    pub storage_version_hash: Option<String>,
    /// Whether objects of this resource are stored at this version (one per storage key:
    /// the preferred version of the owning group for built-ins, `storage: true` for CRDs).
    pub storage: bool,
}

impl ResourceDef {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the `status` subresource exists (status in main writes is ignored).
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s.name == "status")
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Storage identity: objects are stored per (group, plural), whatever the version; a
    /// deprecated group's copy of a resource shares the storage of its successor
    /// ([`storage_group`]), as on a real server.
    pub fn key(&self) -> ResKey {
        ResKey {
            group: storage_group(&self.group, &self.plural).to_string(),
            plural: self.plural.clone(),
        }
    }
}

/// The group whose storage holds `group`'s `plural` objects: `extensions` Ingresses,
/// NetworkPolicies and workloads are the objects of `networking.k8s.io`, `apps` and `policy`.
pub(crate) fn storage_group<'a>(group: &'a str, plural: &str) -> &'a str {
    match (group, plural) {
        ("extensions", "ingresses" | "networkpolicies") => "networking.k8s.io",
        ("extensions", "deployments" | "daemonsets" | "replicasets") => "apps",
        ("extensions", "podsecuritypolicies") => "policy",
        _ => group,
    }
}

/// Storage identity of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ResKey {
    pub group: String,
    pub plural: String,
}

/// Groups in their discovery order with versions in preference order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub resources: Vec<ResourceDef>,
    /// Built-in groups in the server's discovery order, each with its versions in the
    /// server's order (preferred first). CRD groups follow, sorted by name.
    pub builtin_groups: Vec<(String, Vec<String>)>,
    /// The release this catalogue is of.
    pub server_version: crate::ServerVersion,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

struct B {
    group: &'static str,
    version: &'static str,
}

impl B {
    #[allow(clippy::too_many_arguments)]
    fn r(
        &self,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
        cats: &[&str],
        subs: &[&str],
    ) -> ResourceDef {
        let singular = kind.to_ascii_lowercase();
        let subresources = subs
            .iter()
            .map(|s| sub(s, kind))
            .collect::<Vec<Subresource>>();
        ResourceDef {
            group: self.group.into(),
            version: self.version.into(),
            plural: plural.into(),
            singular,
            kind: kind.into(),
            namespaced,
            verbs: strs(ALL_VERBS),
            short_names: strs(short),
            categories: strs(cats),
            subresources,
            printer_columns: Vec::new(),
            storage_version_hash: None,
            storage: false,
        }
    }
}

pub(crate) fn sub(name: &str, kind: &str) -> Subresource {
    let (k, g, v, verbs): (&str, Option<&str>, Option<&str>, &[&str]) = match name {
        "status" => (kind, None, None, &["get", "patch", "update"]),
        "scale" => (
            "Scale",
            Some("autoscaling"),
            Some("v1"),
            &["get", "patch", "update"],
        ),
        "log" => (kind, None, None, &["get"]),
        "exec" | "attach" | "portforward" => ("PodExecOptions", None, None, &["create", "get"]),
        "proxy" => (
            "Proxy",
            None,
            None,
            &["create", "delete", "get", "patch", "update"],
        ),
        "binding" => ("Binding", None, None, &["create"]),
        "eviction" => ("Eviction", Some("policy"), Some("v1"), &["create"]),
        "ephemeralcontainers" => (kind, None, None, &["get", "patch", "update"]),
        "approval" => (kind, None, None, &["get", "patch", "update"]),
        "token" => (
            "TokenRequest",
            Some("authentication.k8s.io"),
            Some("v1"),
            &["create"],
        ),
        "finalize" => (kind, None, None, &["update"]),
        _ => (kind, None, None, &["get"]),
    };
    Subresource {
        name: name.into(),
        kind: k.into(),
        group: g.map(Into::into),
        version: v.map(Into::into),
        verbs: strs(verbs),
    }
}

fn with_verbs(mut r: ResourceDef, verbs: &[&str]) -> ResourceDef {
    r.verbs = strs(verbs);
    r
}

/// The built-in resources of a v1.32 cluster, in discovery order.
pub(crate) fn builtins() -> Vec<ResourceDef> {
    let core = B {
        group: "",
        version: "v1",
    };
    let all = &["all"][..];
    let mut v = vec![
        with_verbs(
            core.r("bindings", "Binding", true, &[], &[], &[]),
            &["create"],
        ),
        with_verbs(
            core.r(
                "componentstatuses",
                "ComponentStatus",
                false,
                &["cs"],
                &[],
                &[],
            ),
            &["get", "list"],
        ),
        core.r("configmaps", "ConfigMap", true, &["cm"], &[], &[]),
        core.r("endpoints", "Endpoints", true, &["ep"], &[], &[]),
        core.r("events", "Event", true, &["ev"], &[], &[]),
        core.r("limitranges", "LimitRange", true, &["limits"], &[], &[]),
        with_verbs(
            core.r(
                "namespaces",
                "Namespace",
                false,
                &["ns"],
                &[],
                &["finalize", "status"],
            ),
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
        ),
        core.r("nodes", "Node", false, &["no"], &[], &["proxy", "status"]),
        core.r(
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            &[],
            &["status"],
        ),
        core.r(
            "persistentvolumes",
            "PersistentVolume",
            false,
            &["pv"],
            &[],
            &["status"],
        ),
        core.r(
            "pods",
            "Pod",
            true,
            &["po"],
            all,
            &[
                "attach",
                "binding",
                "ephemeralcontainers",
                "eviction",
                "exec",
                "log",
                "portforward",
                "proxy",
                "status",
            ],
        ),
        core.r("podtemplates", "PodTemplate", true, &[], &[], &[]),
        core.r(
            "replicationcontrollers",
            "ReplicationController",
            true,
            &["rc"],
            all,
            &["scale", "status"],
        ),
        core.r(
            "resourcequotas",
            "ResourceQuota",
            true,
            &["quota"],
            &[],
            &["status"],
        ),
        core.r("secrets", "Secret", true, &[], &[], &[]),
        core.r(
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
            &["token"],
        ),
        core.r(
            "services",
            "Service",
            true,
            &["svc"],
            all,
            &["proxy", "status"],
        ),
    ];
    let apps = B {
        group: "apps",
        version: "v1",
    };
    v.extend([
        apps.r(
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
            &[],
            &[],
        ),
        apps.r("daemonsets", "DaemonSet", true, &["ds"], all, &["status"]),
        apps.r(
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            all,
            &["scale", "status"],
        ),
        apps.r(
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            all,
            &["scale", "status"],
        ),
        apps.r(
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            all,
            &["scale", "status"],
        ),
    ]);
    let events = B {
        group: "events.k8s.io",
        version: "v1",
    };
    v.push(events.r("events", "Event", true, &["ev"], &[], &[]));
    let authn = B {
        group: "authentication.k8s.io",
        version: "v1",
    };
    v.extend([
        with_verbs(
            authn.r(
                "selfsubjectreviews",
                "SelfSubjectReview",
                false,
                &[],
                &[],
                &[],
            ),
            &["create"],
        ),
        with_verbs(
            authn.r("tokenreviews", "TokenReview", false, &[], &[], &[]),
            &["create"],
        ),
    ]);
    let authz = B {
        group: "authorization.k8s.io",
        version: "v1",
    };
    for (plural, kind, namespaced) in [
        (
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
        ("subjectaccessreviews", "SubjectAccessReview", false),
    ] {
        v.push(with_verbs(
            authz.r(plural, kind, namespaced, &[], &[], &[]),
            &["create"],
        ));
    }
    let autoscaling = B {
        group: "autoscaling",
        version: "v2",
    };
    let autoscaling_v1 = B {
        group: "autoscaling",
        version: "v1",
    };
    for b in [autoscaling, autoscaling_v1] {
        v.push(b.r(
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
            &["hpa"],
            all,
            &["status"],
        ));
    }
    let batch = B {
        group: "batch",
        version: "v1",
    };
    v.extend([
        batch.r("cronjobs", "CronJob", true, &["cj"], all, &["status"]),
        batch.r("jobs", "Job", true, &[], all, &["status"]),
    ]);
    let net = B {
        group: "networking.k8s.io",
        version: "v1",
    };
    v.extend([
        net.r("ingressclasses", "IngressClass", false, &[], &[], &[]),
        net.r("ingresses", "Ingress", true, &["ing"], &[], &["status"]),
        net.r(
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            &[],
            &[],
        ),
    ]);
    let policy = B {
        group: "policy",
        version: "v1",
    };
    v.push(policy.r(
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[],
        &["status"],
    ));
    let rbac = B {
        group: "rbac.authorization.k8s.io",
        version: "v1",
    };
    v.extend([
        rbac.r(
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            &[],
            &[],
        ),
        rbac.r("clusterroles", "ClusterRole", false, &[], &[], &[]),
        rbac.r("rolebindings", "RoleBinding", true, &[], &[], &[]),
        rbac.r("roles", "Role", true, &[], &[], &[]),
    ]);
    let storage = B {
        group: "storage.k8s.io",
        version: "v1",
    };
    v.extend([
        storage.r("csidrivers", "CSIDriver", false, &[], &[], &[]),
        storage.r("csinodes", "CSINode", false, &[], &[], &[]),
        storage.r(
            "csistoragecapacities",
            "CSIStorageCapacity",
            true,
            &[],
            &[],
            &[],
        ),
        storage.r("storageclasses", "StorageClass", false, &["sc"], &[], &[]),
        storage.r(
            "volumeattachments",
            "VolumeAttachment",
            false,
            &[],
            &[],
            &["status"],
        ),
    ]);
    let ext = B {
        group: "apiextensions.k8s.io",
        version: "v1",
    };
    v.push(ext.r(
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        &["status"],
    ));
    let sched = B {
        group: "scheduling.k8s.io",
        version: "v1",
    };
    v.push(sched.r("priorityclasses", "PriorityClass", false, &["pc"], &[], &[]));
    let coord = B {
        group: "coordination.k8s.io",
        version: "v1",
    };
    v.push(coord.r("leases", "Lease", true, &[], &[], &[]));
    let disc = B {
        group: "discovery.k8s.io",
        version: "v1",
    };
    v.push(disc.r("endpointslices", "EndpointSlice", true, &[], &[], &[]));
    let flow = B {
        group: "flowcontrol.apiserver.k8s.io",
        version: "v1",
    };
    v.extend([
        flow.r("flowschemas", "FlowSchema", false, &[], &[], &["status"]),
        flow.r(
            "prioritylevelconfigurations",
            "PriorityLevelConfiguration",
            false,
            &[],
            &[],
            &["status"],
        ),
    ]);
    let node = B {
        group: "node.k8s.io",
        version: "v1",
    };
    v.push(node.r("runtimeclasses", "RuntimeClass", false, &[], &[], &[]));
    let certs = B {
        group: "certificates.k8s.io",
        version: "v1",
    };
    v.push(certs.r(
        "certificatesigningrequests",
        "CertificateSigningRequest",
        false,
        &["csr"],
        &[],
        &["approval", "status"],
    ));
    let adm = B {
        group: "admissionregistration.k8s.io",
        version: "v1",
    };
    v.extend([
        adm.r(
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            &[],
            &["api-extensions"],
            &[],
        ),
        adm.r(
            "validatingadmissionpolicies",
            "ValidatingAdmissionPolicy",
            false,
            &[],
            &["api-extensions"],
            &["status"],
        ),
        adm.r(
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
            false,
            &[],
            &["api-extensions"],
            &[],
        ),
        adm.r(
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            &["api-extensions"],
            &[],
        ),
    ]);
    let apireg = B {
        group: "apiregistration.k8s.io",
        version: "v1",
    };
    v.push(apireg.r(
        "apiservices",
        "APIService",
        false,
        &[],
        &["api-extensions"],
        &["status"],
    ));
    v
}

/// Groups served by every cluster (objects listed without `apiVersion`/`kind` per item).
const BUILTIN_GROUPS: &[&str] = &[
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "node.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "apiregistration.k8s.io",
    "extensions",
];

/// Whether a group is built in (not from a CRD).
pub(crate) fn is_builtin_group(g: &str) -> bool {
    g.is_empty() || BUILTIN_GROUPS.contains(&g)
}

/// Ordering of Kubernetes versions: GA > beta > alpha, higher numbers first.
pub(crate) fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
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
    (level, major, n.parse().unwrap_or(0))
}

impl Catalog {
    /// The latest release's catalogue.
    pub fn new() -> Self {
        Self::with_builtins(crate::ServerVersion::Latest, builtins(), None)
    }

    /// A catalogue of built-in resources; `order` gives the groups and their versions in the
    /// server's order (computed from `resources` when `None`: versions by priority).
    pub fn with_builtins(
        server_version: crate::ServerVersion,
        resources: Vec<ResourceDef>,
        order: Option<Vec<(String, Vec<String>)>>,
    ) -> Self {
        let mut c = Catalog {
            resources,
            builtin_groups: Vec::new(),
            server_version,
        };
        c.builtin_groups = order.unwrap_or_else(|| c.groups());
        let mut seen: Vec<ResKey> = Vec::new();
        let groups = c.builtin_groups.clone();
        // Storage version: the owning group's first (preferred) version serving the resource.
        for (g, vs) in &groups {
            for v in vs {
                for r in c.resources.iter_mut() {
                    if &r.group == g && &r.version == v && r.group == r.key().group {
                        let k = r.key();
                        if !seen.contains(&k) {
                            r.storage = true;
                            seen.push(k);
                        }
                    }
                }
            }
        }
        // A resource only a deprecated group serves is stored there.
        for r in c.resources.iter_mut() {
            let k = r.key();
            if !seen.contains(&k) {
                r.storage = true;
                seen.push(k);
            }
        }
        c
    }

    /// The version objects of `key` are stored at.
    pub fn storage_def(&self, key: &ResKey) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.storage && r.key() == *key)
            .or_else(|| self.resources.iter().find(|r| r.key() == *key))
    }

    /// The served resource of a kind at `group/version` (fixtures and conversions).
    pub fn find_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Any served version of a (group, plural): the storage version.
    pub fn find_any(&self, group: &str, plural: &str) -> Option<&ResourceDef> {
        self.storage_def(&ResKey {
            group: storage_group(group, plural).to_string(),
            plural: plural.to_string(),
        })
    }

    /// Groups in discovery order, each with its versions in preference order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .builtin_groups
            .iter()
            .filter(|(g, _)| !g.is_empty())
            .cloned()
            .collect();
        let fixed = out.len();
        for r in &self.resources {
            if r.group.is_empty() || out[..fixed].iter().any(|(g, _)| *g == r.group) {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (_, vs) in &mut out[fixed..] {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// Remove all resources of a CRD (by group and plural).
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.group == group && r.plural == plural));
    }

    /// `/api`.
    pub fn api_versions(&self, server: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]
        })
    }

    fn group_json(name: &str, versions: &[String]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        let preferred = vs.first().cloned().unwrap_or(Value::Null);
        json!({"name": name, "versions": vs, "preferredVersion": preferred})
    }

    /// Whether a resource of `group` is served at `version`.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    /// `/apis`.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| Self::group_json(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/<group>`.
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let groups = self.groups();
        let (g, vs) = groups.iter().find(|(g, _)| g == group)?;
        let mut v = Self::group_json(g, vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        Some(v)
    }

    /// `/api/v1` or `/apis/<group>/<version>`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut items = Vec::new();
        for r in self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            let mut e = json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                e["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                e["categories"] = json!(r.categories);
            }
            if let Some(h) = &r.storage_version_hash {
                e["storageVersionHash"] = json!(h);
            }
            items.push(e);
            for s in &r.subresources {
                let mut e = json!({
                    "name": format!("{}/{}", r.plural, s.name),
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": s.kind,
                    "verbs": s.verbs,
                });
                if let Some(g) = &s.group {
                    e["group"] = json!(g);
                }
                if let Some(v) = &s.version {
                    e["version"] = json!(v);
                }
                items.push(e);
            }
        }
        if items.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let mut list = json!({"kind": "APIResourceList", "groupVersion": gv, "resources": items});
        // As a real server: the lists of the core group and of `extensions` (both installed
        // by the legacy installer) carry no apiVersion.
        if !group.is_empty() && group != "extensions" {
            list["apiVersion"] = json!("v1");
        }
        Some(list)
    }

    /// Resource definitions of a CRD object (one per served version).
    pub fn defs_from_crd(crd: &Value) -> Vec<ResourceDef> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let names = &spec["names"];
        let plural = names["plural"].as_str().unwrap_or_default().to_string();
        let kind = names["kind"].as_str().unwrap_or_default().to_string();
        let singular = names["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_ascii_lowercase());
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let short_names: Vec<String> = names["shortNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let categories: Vec<String> = names["categories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for v in spec["versions"].as_array().into_iter().flatten() {
            if v["served"].as_bool() == Some(false) {
                continue;
            }
            let Some(version) = v["name"].as_str() else {
                continue;
            };
            let mut subresources = Vec::new();
            if v["subresources"]["status"].is_object() {
                subresources.push(sub("status", &kind));
            }
            if v["subresources"]["scale"].is_object() {
                subresources.push(sub("scale", &kind));
            }
            out.push(ResourceDef {
                group: group.clone(),
                version: version.into(),
                plural: plural.clone(),
                singular: singular.clone(),
                kind: kind.clone(),
                namespaced,
                verbs: strs(ALL_VERBS),
                short_names: short_names.clone(),
                categories: categories.clone(),
                subresources,
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                storage_version_hash: None,
                storage: v["storage"].as_bool() == Some(true),
            });
        }
        out
    }

    /// Add the resources of an established CRD (replacing an older registration).
    pub fn add_crd(&mut self, crd: &Value) {
        let defs = Self::defs_from_crd(crd);
        if let Some(first) = defs.first() {
            let (g, p) = (first.group.clone(), first.plural.clone());
            self.remove(&g, &p);
        }
        self.resources.extend(defs);
        // Keep built-ins first, CRD groups after them sorted by group name.
        let order: Vec<String> = self.builtin_groups.iter().map(|(g, _)| g.clone()).collect();
        let rank = |g: &str| {
            if g.is_empty() {
                Some(0)
            } else {
                order.iter().position(|b| b == g).map(|i| i + 1)
            }
        };
        self.resources.sort_by(|a, b| {
            let (ra, rb) = (rank(&a.group), rank(&b.group));
            match (ra, rb) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.group.cmp(&b.group),
            }
        });
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) of the core
    /// group (`core = true`, for `/api`) or of all named groups (for `/apis`).
    pub fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".to_string()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .resources
                            .iter()
                            .filter(|r| r.group == *g && r.version == *v)
                            .map(|r| {
                                let subs: Vec<Value> = r
                                    .subresources
                                    .iter()
                                    .map(|s| {
                                        json!({
                                            "subresource": s.name,
                                            "responseKind": {
                                                "group": s.group.clone().unwrap_or_else(|| r.group.clone()),
                                                "version": s.version.clone().unwrap_or_else(|| r.version.clone()),
                                                "kind": s.kind,
                                            },
                                            "verbs": s.verbs,
                                        })
                                    })
                                    .collect();
                                let mut e = json!({
                                    "resource": r.plural,
                                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": r.singular,
                                    "verbs": r.verbs,
                                });
                                if !r.short_names.is_empty() {
                                    e["shortNames"] = json!(r.short_names);
                                }
                                if !r.categories.is_empty() {
                                    e["categories"] = json!(r.categories);
                                }
                                if !subs.is_empty() {
                                    e["subresources"] = json!(subs);
                                }
                                e
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }

    /// `/openapi/v3`: one path per group version (enough for kubectl's field validation probe).
    pub fn openapi_v3_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        paths.insert(
            "api/v1".into(),
            json!({"serverRelativeURL": "/openapi/v3/api/v1"}),
        );
        for (g, vs) in self.groups() {
            for v in vs {
                paths.insert(
                    format!("apis/{g}/{v}"),
                    json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}")}),
                );
            }
        }
        json!({"paths": paths})
    }

    /// `/openapi/v3/<gv>`: operations with the `fieldValidation` parameter, no schemas.
    pub fn openapi_v3_group(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let param = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
        let op = |kind: &str, verb: &str| {
            json!({
                "parameters": param,
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                "responses": {}
            })
        };
        let mut any = false;
        for r in self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            any = true;
            let base = if r.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{prefix}/{}", r.plural)
            };
            paths.insert(
                base.clone(),
                json!({"post": op(&r.kind, "post"), "get": op(&r.kind, "list")}),
            );
            paths.insert(
                format!("{base}/{{name}}"),
                json!({"patch": op(&r.kind, "patch"), "put": op(&r.kind, "put"), "get": op(&r.kind, "get")}),
            );
        }
        if !any {
            return None;
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": self.server_version.git_version()},
            "paths": paths,
            "components": {"schemas": {}}
        }))
    }
}
