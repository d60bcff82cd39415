//! Namespace mapping (`--namespace-mapping old=new`, RestorePreference `namespaceMapping`):
//! the objects of namespace `old` are restored in `new`. A transformation of the loaded
//! snapshot's objects before the rules and the plan, so every caller of
//! [`super::prepare()`] restores the mapped objects.
//!
//! Rewritten, exactly (docs/restore.md, "Namespace mapping"):
//! - a namespaced object of `old`: its path and `metadata.namespace`;
//! - the Namespace `old` itself: its path, `metadata.name` and the
//!   `kubernetes.io/metadata.name` label;
//! - RoleBindings and ClusterRoleBindings (anywhere): `subjects[].namespace` of
//!   `ServiceAccount` subjects in `old`;
//! - PersistentVolumes: `spec.claimRef.namespace` when the claim is in `old`;
//! - the `kubectl.kubernetes.io/last-applied-configuration` of each object rewritten, the
//!   same rewrite applied to it;
//! - Services moved to `new` lose their node ports (the originals are in use wherever the
//!   source namespace runs; the target allocates new ones).
//!
//! Owns: those rewrites and their errors. Must not touch: the network, git, the rules.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::rules::SnapshotObject;
use crate::tree::ContentPath;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Why a namespace mapping cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// Two objects of the snapshot would land at the same path.
    #[error(
        "namespace mapping: {path} would be restored twice (from {first} and {second}); restore one of them (--include) or map elsewhere"
    )]
    Collision {
        /// The path on the target.
        path: String,
        /// The first object's snapshot path.
        first: String,
        /// The second object's snapshot path.
        second: String,
    },
    /// A mapped path is not a valid content path.
    #[error("namespace mapping: {path}: {message}")]
    Path {
        /// The object's snapshot path.
        path: String,
        /// Why the mapped path is not valid.
        message: String,
    },
}

/// Checks one mapping entry: both sides namespace names (DNS-1123 labels), different.
pub fn check_entry(old: &str, new: &str) -> Result<(), String> {
    for n in [old, new] {
        let b = n.as_bytes();
        let ok = !n.is_empty()
            && n.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err(format!(
                "{n:?} is not a namespace name (at most 63 lower-case letters, digits and '-')"
            ));
        }
    }
    if old == new {
        return Err(format!("{old:?} is mapped onto itself"));
    }
    Ok(())
}

/// Applies `mapping` to the objects of a snapshot (see the module's documentation).
pub fn apply(
    objects: Vec<SnapshotObject>,
    mapping: &BTreeMap<String, String>,
) -> Result<Vec<SnapshotObject>, MappingError> {
    if mapping.is_empty() {
        return Ok(objects);
    }
    let mut out = Vec::with_capacity(objects.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    for SnapshotObject { path, object } in objects {
        let mut object = object.value();
        let mapped = map_path(&path, mapping).map_err(|message| MappingError::Path {
            path: path.as_str().to_string(),
            message,
        })?;
        rewrite(&path, &mut object, mapping);
        let applied_text = object
            .pointer(&format!(
                "/metadata/annotations/{}",
                LAST_APPLIED.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(text) = applied_text
            && let Ok(mut applied) = serde_json::from_str::<Value>(&text)
        {
            let before = applied.clone();
            rewrite(&path, &mut applied, mapping);
            // Only a configuration that changed is written again (an untouched one keeps its
            // bytes, so it never shows as a difference).
            if applied != before
                && let Ok(mut json) = serde_json::to_string(&applied)
            {
                if text.ends_with('\n') {
                    json.push('\n');
                }
                if let Some(a) = object
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                {
                    a.insert(LAST_APPLIED.into(), Value::String(json));
                }
            }
        }
        let new_path = mapped.unwrap_or_else(|| path.clone());
        if let Some(first) = seen.insert(new_path.as_str().to_string(), path.as_str().to_string()) {
            return Err(MappingError::Collision {
                path: new_path.as_str().to_string(),
                first,
                second: path.as_str().to_string(),
            });
        }
        out.push(SnapshotObject::new(new_path, &object));
    }
    Ok(out)
}

/// The path of a moved object (`None`: it stays where it is).
fn map_path(
    path: &ContentPath,
    mapping: &BTreeMap<String, String>,
) -> Result<Option<ContentPath>, String> {
    let (ns, name) = match path.namespace() {
        Some(ns) => match mapping.get(ns) {
            Some(new) => (Some(new.as_str()), path.name()),
            None => return Ok(None),
        },
        None if is_namespace(path) => match mapping.get(path.name()) {
            Some(new) => (None, new.as_str()),
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    ContentPath::new(path.group(), path.version(), path.resource(), ns, name)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn is_namespace(path: &ContentPath) -> bool {
    path.group().is_empty() && path.resource() == "namespaces" && path.namespace().is_none()
}

/// The rewrites of one object (or of its last-applied configuration) of `path`.
fn rewrite(path: &ContentPath, object: &mut Value, mapping: &BTreeMap<String, String>) {
    let moved = path.namespace().and_then(|ns| mapping.get(ns));
    if let Some(new) = moved
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.contains_key("namespace")
    {
        meta.insert("namespace".into(), Value::String(new.clone()));
    }
    if is_namespace(path)
        && let Some(new) = mapping.get(path.name())
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("name".into(), Value::String(new.clone()));
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut)
            && labels.contains_key(NAME_LABEL)
        {
            labels.insert(NAME_LABEL.into(), Value::String(new.clone()));
        }
    }
    let (group, resource) = (path.group(), path.resource());
    if group == RBAC_GROUP && (resource == "rolebindings" || resource == "clusterrolebindings") {
        for s in object
            .get_mut("subjects")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if s.get("kind").and_then(Value::as_str) != Some("ServiceAccount") {
                continue;
            }
            let new = s
                .get("namespace")
                .and_then(Value::as_str)
                .and_then(|ns| mapping.get(ns));
            if let (Some(new), Some(map)) = (new.cloned(), s.as_object_mut()) {
                map.insert("namespace".into(), Value::String(new));
            }
        }
    }
    if group.is_empty()
        && resource == "persistentvolumes"
        && let Some(claim) = object
            .pointer_mut("/spec/claimRef")
            .and_then(Value::as_object_mut)
        && let Some(new) = claim
            .get("namespace")
            .and_then(Value::as_str)
            .and_then(|ns| mapping.get(ns))
            .cloned()
    {
        claim.insert("namespace".into(), Value::String(new));
    }
    if moved.is_some()
        && group.is_empty()
        && resource == "services"
        && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("healthCheckNodePort");
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(path: &str, object: Value) -> SnapshotObject {
        SnapshotObject::new(ContentPath::parse(path).unwrap(), &object)
    }

    fn mapping() -> BTreeMap<String, String> {
        [("shop".to_string(), "shop-copy".to_string())].into()
    }

    #[test]
    fn moves_objects_and_rewrites_references() {
        let applied = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"fe","namespace":"shop"},"spec":{"ports":[{"nodePort":30080,"port":80}]}}"#;
        let objects = vec![
            obj(
                "/api/v1/namespaces/shop",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {NAME_LABEL: "shop", "team": "shop"}}}),
            ),
            obj(
                "/api/v1/namespaces/shop/configmaps/c",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}}),
            ),
            obj(
                "/api/v1/namespaces/blog/configmaps/c",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "blog"}}),
            ),
            obj(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/rb",
                json!({"metadata": {"name": "rb", "namespace": "shop"}, "subjects": [
                    {"kind": "ServiceAccount", "name": "a", "namespace": "shop"},
                    {"kind": "ServiceAccount", "name": "b", "namespace": "other"},
                    {"kind": "User", "name": "shop"}]}),
            ),
            obj(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/crb",
                json!({"metadata": {"name": "crb"}, "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "shop"}]}),
            ),
            obj(
                "/api/v1/persistentvolumes/pv1",
                json!({"metadata": {"name": "pv1"}, "spec": {"claimRef": {"namespace": "shop", "name": "data"}}}),
            ),
            obj(
                "/api/v1/namespaces/shop/services/fe",
                json!({"metadata": {"name": "fe", "namespace": "shop", "annotations": {LAST_APPLIED: format!("{applied}\n")}},
                       "spec": {"ports": [{"port": 80, "nodePort": 30080}], "healthCheckNodePort": 31000}}),
            ),
        ];
        let out = apply(objects, &mapping()).unwrap();
        let paths: Vec<&str> = out.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/api/v1/namespaces/shop-copy",
                "/api/v1/namespaces/shop-copy/configmaps/c",
                "/api/v1/namespaces/blog/configmaps/c",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop-copy/rolebindings/rb",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/crb",
                "/api/v1/persistentvolumes/pv1",
                "/api/v1/namespaces/shop-copy/services/fe",
            ]
        );
        assert_eq!(out[0].object.value()["metadata"]["name"], "shop-copy");
        assert_eq!(
            out[0].object.value()["metadata"]["labels"][NAME_LABEL],
            "shop-copy"
        );
        assert_eq!(
            out[0].object.value()["metadata"]["labels"]["team"],
            "shop",
            "other labels stay"
        );
        assert_eq!(out[1].object.value()["metadata"]["namespace"], "shop-copy");
        assert_eq!(out[2].object.value()["metadata"]["namespace"], "blog");
        let subjects = &out[3].object.value()["subjects"];
        assert_eq!(subjects[0]["namespace"], "shop-copy");
        assert_eq!(subjects[1]["namespace"], "other");
        assert_eq!(subjects[2], json!({"kind": "User", "name": "shop"}));
        assert_eq!(
            out[4].object.value()["subjects"][0]["namespace"],
            "shop-copy"
        );
        assert_eq!(
            out[5].object.value()["spec"]["claimRef"]["namespace"],
            "shop-copy"
        );
        let svc = &out[6].object.value();
        assert_eq!(svc["spec"]["ports"][0], json!({"port": 80}));
        assert!(svc["spec"].get("healthCheckNodePort").is_none());
        let applied = svc["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert!(applied.ends_with('\n'));
        let applied: Value = serde_json::from_str(applied).unwrap();
        assert_eq!(applied["metadata"]["namespace"], "shop-copy");
    }

    #[test]
    fn collisions_and_bad_entries_are_errors() {
        let objects = vec![
            obj(
                "/api/v1/namespaces/shop/configmaps/c",
                json!({"metadata": {"name": "c", "namespace": "shop"}}),
            ),
            obj(
                "/api/v1/namespaces/shop-copy/configmaps/c",
                json!({"metadata": {"name": "c", "namespace": "shop-copy"}}),
            ),
        ];
        let e = apply(objects, &mapping()).unwrap_err().to_string();
        assert!(
            e.contains("/api/v1/namespaces/shop-copy/configmaps/c would be restored twice"),
            "{e}"
        );
        assert!(check_entry("shop", "shop-copy").is_ok());
        assert!(
            check_entry("shop", "shop")
                .unwrap_err()
                .contains("onto itself")
        );
        assert!(check_entry("shop", "Shop").is_err());
        assert!(check_entry("", "a").is_err());
        assert!(check_entry("a", "-a").is_err());
    }
}
