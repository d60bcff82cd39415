//! Restores across versions: when the target does not serve a snapshot object's group/version
//! but serves its kind at another version (or in the successor of a deprecated group), the
//! object is converted. Pure code: what the target serves is given.
//!
//! Owns the conversion table (docs/restore.md, "Restore across versions"):
//!
//! | kind | from | to | changes |
//! |---|---|---|---|
//! | CronJob | `batch/v1beta1` ↔ `batch/v1` | the other | none; to `v1beta1`, `spec.timeZone` is dropped (it has none), noted in the plan |
//! | PodDisruptionBudget | `policy/v1beta1` ↔ `policy/v1` | the other | an empty selector (no Pods in v1beta1, every Pod in v1) becomes the other version's selector of the same Pods (`Exists` / `DoesNotExist` of `pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match`, as a server converts it) |
//! | Ingress | `extensions/v1beta1`, `networking.k8s.io/v1beta1` | `networking.k8s.io/v1` | `backend` → `defaultBackend`, `serviceName`/`servicePort` → `service.name`/`service.port.number|name`, `pathType` defaults to `ImplementationSpecific` |
//! | HorizontalPodAutoscaler | `autoscaling/v1`, `v2beta1`, `v2beta2` ↔ `autoscaling/v2` | the served version that holds most (`v2`, `v2beta2`, `v2beta1`, `v1`), not the preferred one | v1 CPU target → a Resource metric; v2beta1 `target*` fields → `target` |
//! | CustomResourceDefinition | `apiextensions.k8s.io/v1beta1` | `v1` | top-level version/validation/subresources/columns → per version; `preserveUnknownFields` → `x-kubernetes-preserve-unknown-fields` |
//! | EndpointSlice | `discovery.k8s.io/v1beta1` | `v1` | `topology` → `deprecatedTopology` (zone → `zone`) |
//! | Deployment, DaemonSet, ReplicaSet, StatefulSet | `extensions/v1beta1`, `apps/v1beta1|v1beta2` | `apps/v1` | none |
//! | NetworkPolicy | `extensions/v1beta1` | `networking.k8s.io/v1` | none |
//! | PodSecurityPolicy | `extensions/v1beta1` | `policy/v1beta1` | none |
//! | same-schema renames: PriorityClass, Lease, StorageClass, CSIDriver, CSINode, CSIStorageCapacity, VolumeAttachment, RuntimeClass, IngressClass, Role, ClusterRole, RoleBinding, ClusterRoleBinding, Mutating/ValidatingWebhookConfiguration, APIService, FlowSchema, PriorityLevelConfiguration, CertificateSigningRequest, Event | any served version of the same group | the target's preferred version | none |
//!
//! And, converted or not, what the target's release does to an object ([`release_note`]): a
//! `batch/v1` CronJob's `spec.timeZone` onto a 1.21–1.24 server, which clears it.
//!
//! Custom resources go to any version the target's CRD serves when the CRD has no conversion
//! webhook (only `apiVersion` changes, as a server with `strategy: None` does); with a
//! webhook, and for every other kind, the object is `unsupported` with a reason naming what
//! the target serves. Must not touch: the network.

use serde_json::{Map, Value, json};

use crate::discovery::ApiResourceInfo;
use crate::tree::ContentPath;

/// A converted object: where it goes and what changed.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Where the converted object goes on the target.
    pub target: ContentPath,
    /// The target's resource for it.
    pub resource: ApiResourceInfo,
    /// The converted object.
    pub object: Value,
    /// `convert batch/v1beta1 → batch/v1`, with the field changes when there are any.
    pub reason: String,
}

/// Deprecated groups and the groups their resources moved to.
fn successors(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("extensions", "ingresses" | "networkpolicies") => &["networking.k8s.io"],
        ("extensions", "deployments" | "daemonsets" | "replicasets") => &["apps"],
        ("extensions", "podsecuritypolicies") => &["policy"],
        _ => &[],
    }
}

/// The versions of HorizontalPodAutoscaler from the one that holds most to the one that holds
/// least: `autoscaling/v1` has only a CPU target (a 1.19 server prefers it, and drops the
/// `metrics` of a `v2` object written at it), `v2beta2` has the schema of `v2`.
const HPA_VERSIONS: [&str; 4] = ["v2", "v2beta2", "v2beta1", "v1"];

/// Built-in kinds the table converts (any other built-in kind is `unsupported`).
const CONVERTIBLE: &[&str] = &[
    "CronJob",
    "PodDisruptionBudget",
    "Ingress",
    "HorizontalPodAutoscaler",
    "CustomResourceDefinition",
    "EndpointSlice",
    "Deployment",
    "DaemonSet",
    "ReplicaSet",
    "StatefulSet",
    "NetworkPolicy",
    "PodSecurityPolicy",
    "PriorityClass",
    "Lease",
    "StorageClass",
    "CSIDriver",
    "CSINode",
    "CSIStorageCapacity",
    "VolumeAttachment",
    "RuntimeClass",
    "IngressClass",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "CertificateSigningRequest",
    "Event",
];

/// What is known of a custom resource's CRD on the target (from the snapshot when the
/// restore creates it, else from the target).
#[derive(Debug, Clone, Default)]
pub struct CrdInfo {
    /// Served versions.
    pub served: Vec<String>,
    /// The storage version (converted to when the object's version is not served).
    pub storage: Option<String>,
    /// `spec.conversion.strategy: Webhook`.
    pub webhook: bool,
}

impl CrdInfo {
    /// From a CRD object (`apiextensions.k8s.io/v1`).
    pub fn of(crd: &Value) -> CrdInfo {
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        CrdInfo {
            served: versions
                .iter()
                .filter(|v| v["served"].as_bool() != Some(false))
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect(),
            storage: versions
                .iter()
                .find(|v| v["storage"].as_bool() == Some(true))
                .and_then(|v| v["name"].as_str().map(str::to_string)),
            webhook: crd
                .pointer("/spec/conversion/strategy")
                .and_then(Value::as_str)
                == Some("Webhook"),
        }
    }

    /// The version a custom resource at `path` is created at: the storage version when it is
    /// served, else the first served one. Refused when the CRD converts through a webhook
    /// (`whose` names the CRD in that error).
    fn create_version(&self, path: &ContentPath, whose: &str) -> Result<Option<String>, String> {
        if self.webhook {
            return Err(format!(
                "{whose} serves {} of {}.{} through a conversion webhook, not {}",
                self.served.join(", "),
                path.resource(),
                path.group(),
                path.api_version()
            ));
        }
        Ok(self
            .storage
            .clone()
            .filter(|v| self.served.contains(v))
            .or_else(|| self.served.first().cloned()))
    }
}

/// Converts a snapshot object the target does not serve at `path`. `served` are every
/// resource the target serves (preferred version of each group first); `crd` describes the
/// CRD of a custom resource. `Err` is the `unsupported` reason, naming what the target serves.
pub fn convert(
    path: &ContentPath,
    object: &Value,
    served: &[ApiResourceInfo],
    builtin: bool,
    crd: Option<&CrdInfo>,
) -> Result<Converted, String> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let from = path.api_version();
    let mut groups = vec![path.group()];
    groups.extend_from_slice(successors(path.group(), path.resource()));
    let candidates: Vec<&ApiResourceInfo> = served
        .iter()
        .filter(|r| {
            groups.contains(&r.group.as_str())
                && r.resource == path.resource()
                && (kind.is_empty() || r.kind == kind)
                && r.supports("create")
        })
        .collect();
    let elsewhere = || {
        let all: Vec<String> = served
            .iter()
            .filter(|r| r.kind == kind || r.resource == path.resource())
            .map(|r| format!("{} {}", r.api_version(), r.resource))
            .collect();
        if all.is_empty() {
            format!(
                "the target does not serve {from} {} nor any version of {kind}",
                path.resource()
            )
        } else {
            format!(
                "the target does not serve {from} {}; it serves {}",
                path.resource(),
                all.join(", ")
            )
        }
    };
    let target = if builtin {
        if !CONVERTIBLE.contains(&kind) {
            return Err(format!("{} (no conversion of {kind})", elsewhere()));
        }
        // The successor group first; then, for a HorizontalPodAutoscaler, the version that
        // holds most of it; then the target's preferred version.
        candidates
            .iter()
            .find(|r| r.group != path.group())
            .or_else(|| {
                (kind == "HorizontalPodAutoscaler")
                    .then(|| {
                        HPA_VERSIONS
                            .iter()
                            .find_map(|v| candidates.iter().find(|r| r.version == *v))
                    })
                    .flatten()
            })
            .or_else(|| candidates.first())
            .copied()
    } else {
        let Some(crd) = crd else {
            return Err(elsewhere());
        };
        crd.create_version(path, "the target's CRD")?
            .and_then(|v| candidates.iter().find(|r| r.version == v).copied())
    };
    let Some(target) = target else {
        return Err(elsewhere());
    };
    let to = target.api_version();
    let mut obj = object.clone();
    let notes = if builtin {
        convert_object(&mut obj, kind, &from, &to)
    } else {
        Vec::new()
    };
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(to));
    }
    let ns = path.namespace().filter(|_| target.namespaced);
    let target_path = ContentPath::new(
        &target.group,
        &target.version,
        &target.resource,
        ns,
        path.name(),
    )
    .map_err(|e| e.to_string())?;
    let mut reason = format!("convert {from} → {to}");
    if !notes.is_empty() {
        reason.push_str(": ");
        reason.push_str(&notes.join("; "));
    }
    Ok(Converted {
        target: target_path,
        resource: target.clone(),
        object: obj,
        reason,
    })
}

/// What the target's release will do to an object written at the version it is restored at,
/// that the plan should say before it is created: a `batch/v1` CronJob's `spec.timeZone` is
/// cleared by servers 1.21–1.24 (gate `CronJobTimeZone`: absent before 1.24, alpha and off by
/// default in 1.24, on from 1.25), and the schedule then runs in the controller manager's time
/// zone. `None` when nothing happens or the release is unknown.
pub fn release_note(
    target: &ContentPath,
    object: &Value,
    server_minor: Option<u32>,
) -> Option<String> {
    let minor = server_minor?;
    if target.api_version() != "batch/v1"
        || target.resource() != "cronjobs"
        || !(21..=24).contains(&minor)
    {
        return None;
    }
    let tz = object.pointer("/spec/timeZone")?;
    Some(format!(
        "spec.timeZone {tz} will be dropped by the target (Kubernetes 1.{minor} clears it unless the CronJobTimeZone feature gate is on; the schedule then runs in the controller manager's time zone)"
    ))
}

/// Converts an object's schema between two versions of its kind; returns what changed.
fn convert_object(obj: &mut Value, kind: &str, from: &str, to: &str) -> Vec<String> {
    let mut notes = Vec::new();
    match kind {
        "Ingress" if to == "networking.k8s.io/v1" && from != to => ingress_to_v1(obj, &mut notes),
        "HorizontalPodAutoscaler" if to == "autoscaling/v2" => match from {
            "autoscaling/v1" => hpa_v1_to_v2(obj, &mut notes),
            "autoscaling/v2beta1" => hpa_v2beta1_to_v2(obj, &mut notes),
            _ => {}
        },
        "CustomResourceDefinition" if from.ends_with("/v1beta1") => crd_to_v1(obj, &mut notes),
        "EndpointSlice" if from.ends_with("/v1beta1") => endpointslice_to_v1(obj, &mut notes),
        "PodDisruptionBudget" if from != to => pdb_selector(obj, from, to, &mut notes),
        "CronJob" if to.ends_with("/v1beta1") => {
            // batch/v1beta1 has no time zone: a server drops it, and the schedule then runs
            // in its controller manager's time zone. Dropped here too (so that the object
            // compares equal once restored), and said.
            if let Some(tz) = obj
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .and_then(|s| take(s, "timeZone"))
            {
                notes.push(format!(
                    "spec.timeZone {tz} dropped ({to} has none: the schedule runs in the target controller manager's time zone)"
                ));
            }
        }
        _ => {}
    }
    notes
}

/// The label of the selectors that stand, in `policy/v1`, for `policy/v1beta1`'s empty
/// selector (`Exists`: no Pods) and, in `v1beta1`, for `v1`'s (`DoesNotExist`: every Pod).
const PDB_V1BETA1_LABEL: &str = "pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match";

fn pdb_label_selector(operator: &str) -> Value {
    json!({"matchExpressions": [{"key": PDB_V1BETA1_LABEL, "operator": operator}]})
}

/// A PodDisruptionBudget's empty selector selects no Pods in `policy/v1beta1` and every Pod in
/// `policy/v1`: each becomes the selector of the same Pods in the other version (what a
/// server from 1.21 serves for it there), so a converted budget protects what it protected.
fn pdb_selector(obj: &mut Value, from: &str, to: &str, notes: &mut Vec<String>) {
    let Some(sel) = obj.pointer_mut("/spec/selector") else {
        return;
    };
    let empty = sel.as_object().is_some_and(Map::is_empty);
    let (none_in_v1, all_in_v1beta1) = (
        pdb_label_selector("Exists"),
        pdb_label_selector("DoesNotExist"),
    );
    if from.ends_with("/v1beta1") && to.ends_with("/v1") {
        if empty {
            *sel = none_in_v1;
            notes.push(format!(
                "the empty spec.selector (no Pods in {from}) → Exists of {PDB_V1BETA1_LABEL}"
            ));
        } else if *sel == all_in_v1beta1 {
            *sel = json!({});
            notes.push("spec.selector (every Pod) → the empty selector".into());
        }
    } else if from.ends_with("/v1") && to.ends_with("/v1beta1") {
        if empty {
            *sel = all_in_v1beta1;
            notes.push(format!("the empty spec.selector (every Pod in {from}) → DoesNotExist of {PDB_V1BETA1_LABEL}"));
        } else if *sel == none_in_v1 {
            *sel = json!({});
            notes.push("spec.selector (no Pods) → the empty selector".into());
        }
    }
}

fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k).filter(|v| !v.is_null())
}

fn ingress_backend_to_v1(b: &mut Value) -> bool {
    let Some(m) = b.as_object_mut() else {
        return false;
    };
    let (Some(name), port) = (take(m, "serviceName"), take(m, "servicePort")) else {
        return false;
    };
    let port = match port {
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => json!({"number": n}),
            Err(_) => json!({"name": s}),
        },
        Some(Value::Number(n)) => json!({"number": n}),
        _ => json!({}),
    };
    m.insert("service".into(), json!({"name": name, "port": port}));
    true
}

fn ingress_to_v1(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut changed = false;
    if let Some(mut b) = take(spec, "backend") {
        changed |= ingress_backend_to_v1(&mut b);
        spec.insert("defaultBackend".into(), b);
        notes.push("spec.backend → spec.defaultBackend".into());
    }
    let mut defaulted = false;
    for rule in spec
        .get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for p in rule
            .pointer_mut("/http/paths")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(b) = p.get_mut("backend") {
                changed |= ingress_backend_to_v1(b);
            }
            if p.get("pathType").is_none_or(Value::is_null) {
                p["pathType"] = json!("ImplementationSpecific");
                defaulted = true;
            }
        }
    }
    if changed {
        notes.push("backends serviceName/servicePort → service.name/service.port".into());
    }
    if defaulted {
        notes.push("pathType set to ImplementationSpecific".into());
    }
}

fn hpa_v1_to_v2(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(cpu) = take(spec, "targetCPUUtilizationPercentage") {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
        );
        notes.push("targetCPUUtilizationPercentage → a cpu Resource metric".into());
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
}

fn hpa_v2beta1_to_v2(obj: &mut Value, notes: &mut Vec<String>) {
    let mut changed = false;
    for m in obj
        .pointer_mut("/spec/metrics")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let key = match m["type"].as_str() {
            Some("Resource") => "resource",
            Some("Pods") => "pods",
            Some("Object") => "object",
            Some("External") => "external",
            _ => continue,
        };
        let Some(src) = m.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        let mut target = Map::new();
        if let Some(u) = take(src, "targetAverageUtilization") {
            target.insert("type".into(), json!("Utilization"));
            target.insert("averageUtilization".into(), u);
        }
        if let Some(v) = take(src, "targetAverageValue") {
            target.insert("type".into(), json!("AverageValue"));
            target.insert("averageValue".into(), v);
        }
        if let Some(v) = take(src, "targetValue") {
            target.insert("type".into(), json!("Value"));
            target.insert("value".into(), v);
        }
        if let Some(name) = take(src, "metricName") {
            let mut metric = json!({"name": name});
            if let Some(sel) = take(src, "selector").or_else(|| take(src, "metricSelector")) {
                metric["selector"] = sel;
            }
            src.insert("metric".into(), metric);
        }
        if let Some(t) = take(src, "target") {
            src.insert("describedObject".into(), t);
        }
        src.insert("target".into(), Value::Object(target));
        changed = true;
    }
    if changed {
        notes.push("metric targets → spec.metrics[*].*.target".into());
    }
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
}

fn crd_to_v1(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let version = take(spec, "version");
    let validation = take(spec, "validation");
    let subresources = take(spec, "subresources");
    let columns = take(spec, "additionalPrinterColumns");
    let mut versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty()
        && let Some(v) = version
    {
        versions.push(json!({"name": v, "served": true, "storage": true}));
    }
    for v in &mut versions {
        for (k, top) in [
            ("schema", &validation),
            ("subresources", &subresources),
            ("additionalPrinterColumns", &columns),
        ] {
            if let Some(t) = top
                && v.get(k).is_none()
            {
                v[k] = t.clone();
            }
        }
        for c in v
            .get_mut("additionalPrinterColumns")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(m) = c.as_object_mut()
                && let Some(p) = take(m, "JSONPath")
            {
                m.insert("jsonPath".into(), p);
            }
        }
    }
    spec.insert("versions".into(), json!(versions));
    if let Some(c) = spec.get_mut("conversion").and_then(Value::as_object_mut) {
        let url = take(c, "webhookClientConfig");
        let review = take(c, "conversionReviewVersions");
        if let Some(u) = url {
            c.insert(
                "webhook".into(),
                json!({"clientConfig": u, "conversionReviewVersions": review.unwrap_or(json!(["v1beta1"]))}),
            );
        }
    }
    notes.push("version, validation, subresources and columns moved into spec.versions".into());
    // v1beta1 kept unknown fields by default.
    if spec.get("preserveUnknownFields").and_then(Value::as_bool) != Some(false) {
        spec.insert("preserveUnknownFields".into(), json!(true));
    }
    normalize_crd_v1(obj, notes);
}

/// A v1 CRD as a current server accepts it: `preserveUnknownFields: true` (kept by servers
/// that converted a v1beta1 CRD) becomes `x-kubernetes-preserve-unknown-fields: true` at the
/// root of each version's schema, and a version without a schema gets a permissive one.
pub(crate) fn normalize_crd_v1(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let preserve = spec
        .remove("preserveUnknownFields")
        .and_then(|v| v.as_bool())
        == Some(true);
    let mut added = false;
    for v in spec
        .get_mut("versions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            v["schema"] = json!({"openAPIV3Schema": {"type": "object"}});
        }
        if preserve {
            v["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"] = json!(true);
            added = true;
        }
    }
    if added {
        notes.push("preserveUnknownFields → x-kubernetes-preserve-unknown-fields".into());
    }
}

fn endpointslice_to_v1(obj: &mut Value, notes: &mut Vec<String>) {
    let mut changed = false;
    for ep in obj
        .get_mut("endpoints")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(m) = ep.as_object_mut() else {
            continue;
        };
        if let Some(mut topo) = take(m, "topology") {
            if let Some(zone) = topo
                .as_object_mut()
                .and_then(|t| t.remove("topology.kubernetes.io/zone"))
            {
                m.insert("zone".into(), zone);
            }
            if let Some(node) = topo
                .as_object_mut()
                .and_then(|t| t.remove("kubernetes.io/hostname"))
                .filter(|_| !m.contains_key("nodeName"))
            {
                m.insert("nodeName".into(), node);
            }
            if topo.as_object().is_some_and(|t| !t.is_empty()) {
                m.insert("deprecatedTopology".into(), topo);
            }
            changed = true;
        }
    }
    if changed {
        notes.push("endpoints[*].topology → zone, nodeName, deprecatedTopology".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, version: &str, resource: &str, kind: &str) -> ApiResourceInfo {
        ApiResourceInfo {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            kind: kind.into(),
            namespaced: true,
            verbs: ["create", "get", "list", "delete"]
                .map(String::from)
                .to_vec(),
            has_status_subresource: true,
        }
    }

    /// A `batch/v1` CronJob's time zone is said to be dropped by 1.21–1.24 servers only, and
    /// only when it has one.
    #[test]
    fn a_cronjob_time_zone_is_noted_for_the_releases_that_clear_it() {
        let p = ContentPath::parse("/apis/batch/v1/namespaces/a/cronjobs/c").unwrap();
        let zoned = json!({"spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin"}});
        for (minor, said) in [
            (20, false),
            (21, true),
            (24, true),
            (25, false),
            (32, false),
        ] {
            let note = release_note(&p, &zoned, Some(minor));
            assert_eq!(note.is_some(), said, "1.{minor}: {note:?}");
        }
        let note = release_note(&p, &zoned, Some(22)).unwrap();
        assert!(
            note.contains("\"Europe/Berlin\"") && note.contains("1.22"),
            "{note}"
        );
        assert!(release_note(&p, &zoned, None).is_none());
        let plain = json!({"spec": {"schedule": "0 3 * * *"}});
        assert!(release_note(&p, &plain, Some(22)).is_none());
        let beta = ContentPath::parse("/apis/batch/v1beta1/namespaces/a/cronjobs/c").unwrap();
        assert!(release_note(&beta, &zoned, Some(22)).is_none());
    }

    /// A `batch/v1` CronJob converted to `batch/v1beta1` loses its time zone, and says so.
    #[test]
    fn a_cronjob_to_v1beta1_drops_its_time_zone_and_says_so() {
        let served = vec![res("batch", "v1beta1", "cronjobs", "CronJob")];
        let p = ContentPath::parse("/apis/batch/v1/namespaces/a/cronjobs/c").unwrap();
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin"}});
        let c = convert(&p, &cj, &served, true, None).unwrap();
        assert!(c.object["spec"].get("timeZone").is_none(), "{}", c.object);
        assert_eq!(c.object["spec"]["schedule"], "0 3 * * *");
        assert!(
            c.reason.contains("spec.timeZone \"Europe/Berlin\" dropped"),
            "{}",
            c.reason
        );
    }

    /// An `autoscaling/v2` HorizontalPodAutoscaler goes to the served version that holds all of
    /// it (`v2beta2` on a 1.19 server), not to the preferred `autoscaling/v1`.
    #[test]
    fn an_hpa_goes_to_the_version_that_holds_it() {
        let served: Vec<_> = ["v1", "v2beta1", "v2beta2"]
            .iter()
            .map(|v| {
                res(
                    "autoscaling",
                    v,
                    "horizontalpodautoscalers",
                    "HorizontalPodAutoscaler",
                )
            })
            .collect();
        let p = ContentPath::parse("/apis/autoscaling/v2/namespaces/a/horizontalpodautoscalers/h")
            .unwrap();
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "spec": {"maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 60}}}]}});
        let c = convert(&p, &hpa, &served, true, None).unwrap();
        assert_eq!(c.reason, "convert autoscaling/v2 → autoscaling/v2beta2");
        assert_eq!(c.object["spec"], hpa["spec"]);
        assert_eq!(
            c.target.as_str(),
            "/apis/autoscaling/v2beta2/namespaces/a/horizontalpodautoscalers/h"
        );
    }

    /// An empty selector selects no Pods in `policy/v1beta1` and every Pod in `policy/v1`: a
    /// converted budget gets the other version's selector of the same Pods, both ways.
    #[test]
    fn pdb_selectors_keep_the_pods_they_select() {
        let served = |version: &str| {
            vec![res(
                "policy",
                version,
                "poddisruptionbudgets",
                "PodDisruptionBudget",
            )]
        };
        let pdb = |v: &str, sel: Value| {
            json!({"apiVersion": format!("policy/{v}"), "kind": "PodDisruptionBudget",
                "spec": {"minAvailable": 1, "selector": sel}})
        };
        let none_v1 =
            json!({"matchExpressions": [{"key": PDB_V1BETA1_LABEL, "operator": "Exists"}]});
        let all_v1beta1 =
            json!({"matchExpressions": [{"key": PDB_V1BETA1_LABEL, "operator": "DoesNotExist"}]});
        let web = json!({"matchLabels": {"app": "web"}});
        for (from, to, sel, want, noted) in [
            ("v1beta1", "v1", json!({}), none_v1.clone(), true),
            ("v1beta1", "v1", all_v1beta1.clone(), json!({}), true),
            ("v1beta1", "v1", web.clone(), web.clone(), false),
            ("v1", "v1beta1", json!({}), all_v1beta1.clone(), true),
            ("v1", "v1beta1", none_v1.clone(), json!({}), true),
            ("v1", "v1beta1", web.clone(), web.clone(), false),
        ] {
            let p = ContentPath::parse(&format!(
                "/apis/policy/{from}/namespaces/a/poddisruptionbudgets/p"
            ))
            .unwrap();
            let c = convert(&p, &pdb(from, sel.clone()), &served(to), true, None).unwrap();
            assert_eq!(c.object, pdb(to, want), "{from} {sel} → {to}");
            assert_eq!(
                c.reason.contains(PDB_V1BETA1_LABEL) || c.reason.contains("the empty selector"),
                noted,
                "{}",
                c.reason
            );
        }
    }

    #[test]
    fn cronjobs_ingresses_and_unsupported_kinds() {
        let served = vec![
            res("batch", "v1", "cronjobs", "CronJob"),
            res("networking.k8s.io", "v1", "ingresses", "Ingress"),
            res(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
            ),
        ];
        let p = ContentPath::parse("/apis/batch/v1beta1/namespaces/a/cronjobs/c").unwrap();
        let c = convert(
            &p,
            &json!({"apiVersion": "batch/v1beta1", "kind": "CronJob"}),
            &served,
            true,
            None,
        )
        .unwrap();
        assert_eq!(c.reason, "convert batch/v1beta1 → batch/v1");
        assert_eq!(c.target.as_str(), "/apis/batch/v1/namespaces/a/cronjobs/c");
        assert_eq!(c.object["apiVersion"], "batch/v1");

        let p = ContentPath::parse("/apis/extensions/v1beta1/namespaces/a/ingresses/i").unwrap();
        let c = convert(
            &p,
            &json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "spec": {"backend": {"serviceName": "s", "servicePort": 80}}}),
            &served,
            true,
            None,
        )
        .unwrap();
        assert_eq!(
            c.target.as_str(),
            "/apis/networking.k8s.io/v1/namespaces/a/ingresses/i"
        );
        assert_eq!(
            c.object["spec"],
            json!({"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}})
        );
        assert!(
            c.reason.contains("spec.backend → spec.defaultBackend"),
            "{}",
            c.reason
        );

        let p = ContentPath::parse("/apis/policy/v1beta1/podsecuritypolicies/p").unwrap();
        let e = convert(
            &p,
            &json!({"kind": "PodSecurityPolicy"}),
            &served,
            true,
            None,
        )
        .unwrap_err();
        assert!(e.contains("nor any version of PodSecurityPolicy"), "{e}");
    }

    #[test]
    fn custom_resources_follow_the_crd() {
        let served = vec![res("example.com", "v2", "gizmos", "Gizmo")];
        let p = ContentPath::parse("/apis/example.com/v1/namespaces/a/gizmos/g").unwrap();
        let crd = CrdInfo {
            served: vec!["v2".into()],
            storage: Some("v2".into()),
            webhook: false,
        };
        let c = convert(&p, &json!({"kind": "Gizmo"}), &served, false, Some(&crd)).unwrap();
        assert_eq!(c.object["apiVersion"], "example.com/v2");
        let hook = CrdInfo {
            webhook: true,
            ..crd
        };
        let e = convert(&p, &json!({"kind": "Gizmo"}), &served, false, Some(&hook)).unwrap_err();
        assert!(e.contains("conversion webhook"), "{e}");
    }

    #[test]
    fn crd_v1beta1_to_v1() {
        let mut v = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
            "spec": {"group": "x.io", "version": "v1", "validation": {"openAPIV3Schema": {"type": "object"}}}});
        let notes = convert_object(
            &mut v,
            "CustomResourceDefinition",
            "apiextensions.k8s.io/v1beta1",
            "apiextensions.k8s.io/v1",
        );
        assert_eq!(
            v["spec"]["versions"],
            json!([{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema":
                {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}])
        );
        assert!(v["spec"].get("preserveUnknownFields").is_none());
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
