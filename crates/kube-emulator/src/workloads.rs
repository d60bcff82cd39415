//! What a real API server refuses in an update of a built-in workload, and the scheduler's
//! binding of new Pods:
//! - Pods (`ValidatePodUpdate`): the spec is immutable but for container images, an
//!   `activeDeadlineSeconds` that only shrinks, added tolerations and (1.21+) a negative
//!   `terminationGracePeriodSeconds` set to 1; containers may not be added or removed.
//! - StatefulSets (`ValidateStatefulSetUpdate`): only `replicas`, `template`, `updateStrategy`
//!   and the fields later releases made mutable may change.
//! - `apps/v1` Deployments, ReplicaSets and DaemonSets: `spec.selector` is immutable.
//! - PersistentVolumeClaims: the spec is immutable but for a bound claim's requests (Jobs'
//!   rules are in `jobs`).
//! - Pods' `ephemeralcontainers` subresource: ephemeral containers may be added, never
//!   changed or removed.
//! - The scheduler binds a new Pod that names no node to the first schedulable Node.
//!
//! Messages are the releases' own (the Pod's first line, without the spec diff a real server
//! appends). Like the server's semantic comparison, absent, `null` and empty values are equal
//! (a claim's spec is compared exactly).
//!
//! Owns only those checks and the choice of a node; must not touch storage.

use serde_json::{Map, Value};

use crate::schema::Cause;

/// A JSON value as a cause shows it (`null` quoted, as the server prints a nil).
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "\"null\"".to_string(),
        v => v.to_string(),
    }
}

/// `v` without the members a Go struct cannot tell from absent: `null`, empty strings, lists
/// and maps (apimachinery's semantic equality treats nil and empty alike).
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        v => v.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    normalized(a) == normalized(b)
}

/// The Pod spec fields an update may change, as each release words it.
fn pod_update_message(minor: u32) -> &'static str {
    if minor < 21 {
        "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)"
    } else if minor < 27 {
        "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
    } else {
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
    }
}

/// The causes of a 422 for updating Pod `old` to `new` on a server of release `1.minor`.
pub(crate) fn check_pod_update(new: &Value, old: &Value, minor: u32) -> Vec<Cause> {
    let (ns, os) = (&new["spec"], &old["spec"]);
    let mut causes = Vec::new();
    for list in ["containers", "initContainers"] {
        let (n, o) = (items(&ns[list]), items(&os[list]));
        if n.len() != o.len() {
            causes.push(Cause::forbidden(
                &format!("spec.{list}"),
                "pod updates may not add or remove containers",
            ));
            return causes;
        }
        for (i, c) in n.iter().enumerate() {
            let image = c["image"].as_str().unwrap_or_default();
            let field = format!("spec.{list}[{i}].image");
            if image.is_empty() {
                causes.push(Cause::required(&field, ""));
            } else if image.trim() != image {
                causes.push(Cause::invalid(
                    &field,
                    &shown(&c["image"]),
                    "must not have leading or trailing whitespace".into(),
                ));
            }
        }
    }
    // Only additions to tolerations (an existing one may change its tolerationSeconds).
    let new_tolerations = items(&ns["tolerations"]);
    for old_t in items(&os["tolerations"]) {
        let found = new_tolerations.iter().any(|t| {
            let mut o = old_t.clone();
            o["tolerationSeconds"] = t["tolerationSeconds"].clone();
            same(&o, t)
        });
        if !found {
            causes.push(Cause::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            return causes;
        }
    }
    let deadline = "spec.activeDeadlineSeconds";
    match (
        ns["activeDeadlineSeconds"].as_i64(),
        os["activeDeadlineSeconds"].as_i64(),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            causes.push(Cause::invalid(
                deadline,
                &shown(&ns["activeDeadlineSeconds"]),
                "must be between 0 and 2147483647, inclusive".into(),
            ));
            return causes;
        }
        (Some(n), Some(o)) if o < n => {
            causes.push(Cause::invalid(
                deadline,
                &shown(&ns["activeDeadlineSeconds"]),
                "must be less than or equal to previous value".into(),
            ));
            return causes;
        }
        (None, Some(_)) => causes.push(Cause::invalid(
            deadline,
            &shown(&Value::Null),
            "must not update from a positive integer to nil value".into(),
        )),
        _ => {}
    }
    // The spec with what may change taken from the old one must equal the old one.
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (c, o) in cs.iter_mut().zip(items(&os[list])) {
                    c["image"] = o["image"].clone();
                }
            }
        }
        for field in ["activeDeadlineSeconds", "tolerations"] {
            m.insert(field.into(), os[field].clone());
        }
        let grace = "terminationGracePeriodSeconds";
        if minor >= 21 && os[grace].as_i64().is_some_and(|g| g < 0) && ns[grace].as_i64() == Some(1)
        {
            m.insert(grace.into(), os[grace].clone());
        }
    }
    if !same(&munged, os) {
        causes.push(Cause::forbidden("spec", pod_update_message(minor)));
    }
    causes
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The StatefulSet spec fields an update may change, and how the release words it.
fn statefulset_mutable(minor: u32) -> (&'static [&'static str], &'static str) {
    match minor {
        ..22 => (
            &["replicas", "template", "updateStrategy"],
            "'replicas', 'template', and 'updateStrategy'",
        ),
        22 => (
            &["replicas", "template", "updateStrategy", "minReadySeconds"],
            "'replicas', 'template', 'updateStrategy' and 'minReadySeconds'",
        ),
        23..27 => (
            &[
                "replicas",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ],
            "'replicas', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds'",
        ),
        _ => (
            &[
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ],
            "'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds'",
        ),
    }
}

/// The causes of a 422 for updating StatefulSet `old` to `new` on a server of `1.minor`.
pub(crate) fn check_statefulset_update(new: &Value, old: &Value, minor: u32) -> Vec<Cause> {
    let (mutable, words) = statefulset_mutable(minor);
    let strip = |v: &Value| {
        let mut spec = v["spec"].clone();
        if let Some(m) = spec.as_object_mut() {
            for f in mutable {
                m.remove(*f);
            }
        }
        spec
    };
    if same(&strip(new), &strip(old)) {
        return Vec::new();
    }
    vec![Cause::forbidden(
        "spec",
        &format!("updates to statefulset spec for fields other than {words} are forbidden"),
    )]
}

/// The causes of a 422 for changing the selector of an `apps/v1` Deployment, ReplicaSet or
/// DaemonSet.
pub(crate) fn check_selector_update(new: &Value, old: &Value) -> Vec<Cause> {
    let (n, o) = (&new["spec"]["selector"], &old["spec"]["selector"]);
    if same(n, o) {
        return Vec::new();
    }
    vec![Cause::invalid(
        "spec.selector",
        &shown(n),
        "field is immutable".into(),
    )]
}

/// The causes of a 422 for updating PersistentVolumeClaim `old` to `new`
/// (`ValidatePersistentVolumeClaimUpdate`): only a bound claim's requests may change.
pub(crate) fn check_claim_update(new: &Value, old: &Value) -> Vec<Cause> {
    let bound = old["status"]["phase"] == "Bound";
    let strip = |v: &Value| {
        let mut spec = v["spec"].clone();
        if bound && let Some(r) = spec.get_mut("resources").and_then(Value::as_object_mut) {
            r.remove("requests");
        }
        spec
    };
    if strip(new) == strip(old) {
        return Vec::new();
    }
    vec![Cause::forbidden(
        "spec",
        "spec is immutable after creation except resources.requests for bound claims",
    )]
}

/// The node the scheduler binds a new Pod to: none when the Pod names one (or is being
/// deleted), else the first Node by name that is not cordoned.
pub(crate) fn node_for<'a>(pod: &Value, nodes: impl Iterator<Item = &'a Value>) -> Option<String> {
    if !is_empty(&pod["spec"]["nodeName"]) || !pod["metadata"]["deletionTimestamp"].is_null() {
        return None;
    }
    nodes
        .filter(|n| n["spec"]["unschedulable"] != Value::Bool(true))
        .filter_map(|n| n["metadata"]["name"].as_str())
        .min()
        .map(str::to_string)
}

/// The causes of a 422 for writing Pod `new` through `pods/ephemeralcontainers` over `old`:
/// ephemeral containers may be added, never removed or changed.
pub(crate) fn check_ephemeral_containers_update(new: &Value, old: &Value) -> Vec<Cause> {
    let field = "spec.ephemeralContainers";
    let new_list = items(&new["spec"]["ephemeralContainers"]);
    items(&old["spec"]["ephemeralContainers"])
        .iter()
        .filter_map(|o| {
            let name = o["name"].as_str().unwrap_or_default();
            match new_list.iter().find(|n| n["name"] == o["name"]) {
                None => Some(Cause::forbidden(
                    field,
                    &format!("existing ephemeral containers \"{name}\" may not be removed\n"),
                )),
                Some(n) if !same(n, o) => Some(Cause::forbidden(
                    field,
                    &format!("existing ephemeral containers \"{name}\" may not be changed\n"),
                )),
                Some(_) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_pod_may_change_its_images_but_not_its_node() {
        let old = pod(json!({"nodeName": "n1", "containers": [{"name": "c", "image": "a:1"}]}));
        let image = pod(json!({"nodeName": "n1", "containers": [{"name": "c", "image": "a:2"}]}));
        assert!(check_pod_update(&image, &old, 19).is_empty());
        let moved = pod(json!({"containers": [{"name": "c", "image": "a:1"}]}));
        let causes = check_pod_update(&moved, &old, 19);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec");
        assert!(causes[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
        ));
        assert!(
            check_pod_update(&moved, &old, 32)[0]
                .message
                .contains("`spec.containers[*].image`,`spec.initContainers[*].image`,")
        );
        // Empty and absent are the same.
        let empty = pod(
            json!({"nodeName": "n1", "volumes": [], "containers": [{"name": "c", "image": "a:1", "env": null}]}),
        );
        assert!(check_pod_update(&empty, &old, 25).is_empty());
    }

    #[test]
    fn containers_tolerations_and_deadlines() {
        let old = pod(json!({"containers": [{"name": "c", "image": "a"}],
            "activeDeadlineSeconds": 60,
            "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 300}]}));
        let added = pod(
            json!({"containers": [{"name": "c", "image": "a"}, {"name": "d", "image": "b"}],
            "activeDeadlineSeconds": 60, "tolerations": old["spec"]["tolerations"].clone()}),
        );
        assert_eq!(
            check_pod_update(&added, &old, 19)[0].text(),
            "spec.containers: Forbidden: pod updates may not add or remove containers"
        );
        let more = pod(
            json!({"containers": [{"name": "c", "image": "a"}], "activeDeadlineSeconds": 30,
            "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 10}, {"key": "x", "operator": "Exists"}]}),
        );
        assert!(check_pod_update(&more, &old, 19).is_empty());
        let dropped =
            pod(json!({"containers": [{"name": "c", "image": "a"}], "activeDeadlineSeconds": 60}));
        assert_eq!(
            check_pod_update(&dropped, &old, 19)[0].text(),
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        );
        let longer = pod(
            json!({"containers": [{"name": "c", "image": "a"}], "activeDeadlineSeconds": 90,
            "tolerations": old["spec"]["tolerations"].clone()}),
        );
        assert_eq!(
            check_pod_update(&longer, &old, 19)[0].text(),
            "spec.activeDeadlineSeconds: Invalid value: 90: must be less than or equal to previous value"
        );
    }

    #[test]
    fn statefulsets_change_only_their_mutable_fields() {
        let old = json!({"spec": {"replicas": 1, "serviceName": "s", "volumeClaimTemplates": [{"metadata": {"name": "d"}}]}});
        let scaled = json!({"spec": {"replicas": 3, "serviceName": "s", "minReadySeconds": 5, "volumeClaimTemplates": [{"metadata": {"name": "d"}}]}});
        assert!(check_statefulset_update(&scaled, &old, 22).is_empty());
        assert_eq!(
            check_statefulset_update(&scaled, &old, 19)[0].text(),
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'template', and 'updateStrategy' are forbidden"
        );
        let renamed = json!({"spec": {"replicas": 1, "serviceName": "t", "volumeClaimTemplates": [{"metadata": {"name": "d"}}]}});
        assert!(
            check_statefulset_update(&renamed, &old, 32)[0]
                .message
                .contains("'revisionHistoryLimit'")
        );
    }

    #[test]
    fn selectors_are_immutable_and_the_scheduler_picks_a_node() {
        let old = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
        let same_sel =
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}, "matchExpressions": []}}});
        assert!(check_selector_update(&same_sel, &old).is_empty());
        let other = json!({"spec": {"selector": {"matchLabels": {"a": "2"}}}});
        assert_eq!(
            check_selector_update(&other, &old)[0].text(),
            r#"spec.selector: Invalid value: {"matchLabels":{"a":"2"}}: field is immutable"#
        );
        let nodes = [
            json!({"metadata": {"name": "b"}}),
            json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true}}),
            json!({"metadata": {"name": "c"}}),
        ];
        assert_eq!(
            node_for(&pod(json!({})), nodes.iter()).as_deref(),
            Some("b")
        );
        assert_eq!(node_for(&pod(json!({"nodeName": "x"})), nodes.iter()), None);
        assert_eq!(node_for(&pod(json!({})), [].iter()), None);
    }
}
