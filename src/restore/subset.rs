//! Restores of part of a snapshot, elsewhere: the transformation of a loaded snapshot that
//! [`super::prepare()`] applies before anything is planned — `--include` path globs (only the
//! matching objects, nothing implicit), `--create-namespaces` (the Namespace of every kept
//! object, from the snapshot or a bare one), then the namespace mapping
//! ([`super::mapping`]) — and, after planning, the report of objects whose Namespace is
//! neither on the target nor restored (`mark_missing_namespaces`).
//!
//! Owns: those steps, their order and their errors. Must not touch: git, the rules (which
//! run after, on the transformed objects), applying.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};

use super::mapping::{self, MappingError};
use super::plan::{self, Action, Plan};
use super::preference::RestorePreferenceSpec;
use super::rules::{SnapshotObject, Stage};
use super::{LoadedSnapshot, RestoreError};
use crate::cluster::Cluster;
use crate::tree::ContentPath;

/// Why the selection of a snapshot's objects failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubsetError {
    /// No object of the snapshot matches the `--include` patterns.
    #[error("snapshot {snapshot:?}: no object matches --include {patterns}")]
    NothingIncluded {
        /// The snapshot's name.
        snapshot: String,
        /// The patterns, comma-separated.
        patterns: String,
    },
    /// The namespace mapping cannot be applied.
    #[error("snapshot {snapshot:?}: {source}")]
    Mapping {
        /// The snapshot's name.
        snapshot: String,
        /// The mapping error.
        #[source]
        source: MappingError,
    },
}

/// Whether a content path matches an `--include` glob (`*` within a path segment, `**`
/// across segments; a pattern ending in `/` matches everything under it, as `<pattern>**`).
pub fn include_matches(pattern: &str, path: &str) -> bool {
    if pattern.ends_with('/') {
        crate::glob::matches(&format!("{pattern}**"), path, Some('/'))
    } else {
        crate::glob::matches(pattern, path, Some('/'))
    }
}

/// The objects of `snapshot` a restore under `spec` starts from (see the module's
/// documentation). Without `includePaths`, `createNamespaces` and `namespaceMapping` the
/// snapshot is returned unchanged.
pub fn apply(
    mut snapshot: LoadedSnapshot,
    spec: &RestorePreferenceSpec,
) -> Result<LoadedSnapshot, SubsetError> {
    if !spec.include_paths.is_empty() {
        let before = snapshot.objects.len();
        let all = std::mem::take(&mut snapshot.objects);
        let (kept, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|o| {
            spec.include_paths
                .iter()
                .any(|p| include_matches(p, o.path.as_str()))
        });
        if kept.is_empty() {
            return Err(SubsetError::NothingIncluded {
                snapshot: snapshot.name.clone(),
                patterns: spec.include_paths.join(","),
            });
        }
        tracing::info!(
            snapshot = %snapshot.name,
            kept = kept.len(),
            left_out = before - kept.len(),
            "--include applied"
        );
        snapshot.objects = kept;
        if spec.create_namespaces {
            add_namespaces(&mut snapshot.objects, rest);
        }
    } else if spec.create_namespaces {
        add_namespaces(&mut snapshot.objects, Vec::new());
    }
    if !spec.namespace_mapping.is_empty() {
        let objects = std::mem::take(&mut snapshot.objects);
        let old_paths: Vec<String> = objects.iter().map(|o| o.path.as_str().to_owned()).collect();
        snapshot.objects = mapping::apply(objects, &spec.namespace_mapping).map_err(|source| {
            SubsetError::Mapping {
                snapshot: snapshot.name.clone(),
                source,
            }
        })?;
        // `mapping::apply` keeps the objects' order: remember where each moved one was.
        for (o, old) in snapshot.objects.iter().zip(old_paths) {
            if o.path.as_str() != old {
                snapshot.moved_from.insert(o.path.as_str().to_owned(), old);
            }
        }
    }
    Ok(snapshot)
}

/// Adds the Namespace of every namespaced object of `objects` that has none among them: the
/// snapshot's (out of `rest`, the objects left out) or a bare one.
fn add_namespaces(objects: &mut Vec<SnapshotObject>, rest: Vec<SnapshotObject>) {
    let present: HashSet<String> = objects
        .iter()
        .filter(|o| is_namespace_object(&o.path))
        .map(|o| o.path.name().to_string())
        .collect();
    let wanted: BTreeSet<String> = objects
        .iter()
        .filter_map(|o| o.path.namespace())
        .filter(|ns| !present.contains(*ns))
        .map(str::to_string)
        .collect();
    let mut from_snapshot: HashMap<String, SnapshotObject> = rest
        .into_iter()
        .filter(|o| is_namespace_object(&o.path) && wanted.contains(o.path.name()))
        .map(|o| (o.path.name().to_string(), o))
        .collect();
    for ns in wanted {
        let object = match from_snapshot.remove(&ns) {
            Some(o) => o,
            None => match ContentPath::new("", "v1", "namespaces", None, &ns) {
                Ok(path) => SnapshotObject::new(
                    path,
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                ),
                // The name came from a validated content path: it is a valid one.
                Err(_) => continue,
            },
        };
        objects.push(object);
    }
}

fn is_namespace_object(path: &ContentPath) -> bool {
    path.group().is_empty() && path.resource() == "namespaces" && path.namespace().is_none()
}

/// The reason of an object left out because its Namespace is neither on the target nor
/// restored.
pub(crate) fn missing_namespace_reason(ns: &str) -> String {
    format!(
        "missing-namespace: {ns} is not on the target and not restored (--create-namespaces creates it)"
    )
}

/// Marks `create` items whose Namespace is neither on the target nor created by the plan as
/// `excluded` with [`missing_namespace_reason`] (a create there would fail): one GET per such
/// namespace. The summary is recomputed when anything changed.
pub(crate) async fn mark_missing_namespaces(
    cluster: &Cluster,
    plan: &mut Plan,
) -> Result<(), RestoreError> {
    let mut known: HashMap<String, bool> = HashMap::new();
    for item in &plan.items {
        if item.stage == Some(Stage::Namespaces) || is_namespace_object(item.target_path()) {
            let live_or_created = matches!(
                item.action,
                Action::Create | Action::Exists | Action::Differs | Action::Update
            );
            if live_or_created {
                known.insert(item.target_path().name().to_string(), true);
            }
        }
    }
    let unknown: BTreeSet<String> = plan
        .items
        .iter()
        .filter(|i| i.action == Action::Create)
        .filter_map(|i| i.target_path().namespace())
        .filter(|ns| !known.contains_key(*ns))
        .map(str::to_string)
        .collect();
    for ns in unknown {
        let path = format!("/api/v1/namespaces/{ns}");
        let exists = match cluster.get_json::<Value>(&path).await {
            Ok(_) => true,
            Err(e) if e.code() == Some(404) => false,
            Err(source) => {
                return Err(RestoreError::Live {
                    collection: path,
                    source: Box::new(source),
                });
            }
        };
        known.insert(ns, exists);
    }
    let mut changed = false;
    for item in &mut plan.items {
        if item.action != Action::Create {
            continue;
        }
        let Some(ns) = item.target_path().namespace() else {
            continue;
        };
        if known.get(ns) == Some(&false) {
            item.reason = Some(missing_namespace_reason(ns));
            item.action = Action::Excluded;
            item.body = None;
            item.stage = None;
            changed = true;
        }
    }
    if changed {
        plan.summary = plan::summarize(&plan.items, plan.summary.num_snapshot_contents);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn obj(path: &str) -> SnapshotObject {
        let p = ContentPath::parse(path).unwrap();
        let object = match p.namespace() {
            Some(ns) => json!({"metadata": {"name": p.name(), "namespace": ns}}),
            None => json!({"metadata": {"name": p.name(), "labels": {"kept": "yes"}}}),
        };
        SnapshotObject::new(p, &object)
    }

    fn snapshot() -> LoadedSnapshot {
        LoadedSnapshot {
            name: "s1".into(),
            commit: "0".repeat(40),
            objects: vec![
                obj("/api/v1/namespaces/shop"),
                obj("/api/v1/namespaces/shop/configmaps/a"),
                obj("/api/v1/namespaces/shop/configmaps/b"),
                obj("/api/v1/namespaces/shop/secrets/s"),
                obj("/api/v1/namespaces/blog/configmaps/a"),
                obj("/apis/apps/v1/namespaces/shop/deployments/d"),
                obj("/api/v1/nodes/n1"),
            ],
            encryption: None,
            keys: Default::default(),
            moved_from: Default::default(),
        }
    }

    fn paths(s: &LoadedSnapshot) -> Vec<&str> {
        s.objects.iter().map(|o| o.path.as_str()).collect()
    }

    #[test]
    fn include_keeps_only_matching_objects() {
        let spec = RestorePreferenceSpec {
            include_paths: vec!["/api/v1/namespaces/shop/configmaps/*".into()],
            ..Default::default()
        };
        let s = apply(snapshot(), &spec).unwrap();
        assert_eq!(
            paths(&s),
            [
                "/api/v1/namespaces/shop/configmaps/a",
                "/api/v1/namespaces/shop/configmaps/b"
            ]
        );
        let spec = RestorePreferenceSpec {
            include_paths: vec!["/api*/**/namespaces/shop/**".into()],
            create_namespaces: true,
            ..Default::default()
        };
        let s = apply(snapshot(), &spec).unwrap();
        assert_eq!(s.objects.len(), 5, "{:?}", paths(&s));
        // The snapshot's own Namespace object comes back with its labels.
        let ns = s
            .objects
            .iter()
            .find(|o| o.path.as_str() == "/api/v1/namespaces/shop")
            .unwrap();
        assert_eq!(ns.object.value()["metadata"]["labels"]["kept"], "yes");
        // A trailing `/`: everything under it.
        assert!(include_matches(
            "/api/v1/namespaces/shop/",
            "/api/v1/namespaces/shop/configmaps/a"
        ));
        assert!(!include_matches(
            "/api/v1/namespaces/shop/",
            "/api/v1/namespaces/shop"
        ));
        assert!(!include_matches(
            "/api/v1/namespaces/shop/configmaps/*",
            "/api/v1/namespaces/shop/configmaps"
        ));
        let e = apply(
            snapshot(),
            &RestorePreferenceSpec {
                include_paths: vec!["/api/v1/namespaces/nope/**".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot \"s1\": no object matches --include /api/v1/namespaces/nope/**"
        );
    }

    #[test]
    fn create_namespaces_adds_bare_ones_and_mapping_moves_them() {
        let spec = RestorePreferenceSpec {
            include_paths: vec!["/api/v1/namespaces/blog/configmaps/a".into()],
            create_namespaces: true,
            namespace_mapping: BTreeMap::from([("blog".to_string(), "blog2".to_string())]),
            ..Default::default()
        };
        let s = apply(snapshot(), &spec).unwrap();
        assert_eq!(
            paths(&s),
            [
                "/api/v1/namespaces/blog2/configmaps/a",
                "/api/v1/namespaces/blog2"
            ]
        );
        assert_eq!(
            s.objects[1].object.value(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "blog2"}})
        );
        // Nothing asked: unchanged.
        let s = apply(snapshot(), &RestorePreferenceSpec::default()).unwrap();
        assert_eq!(paths(&s), paths(&snapshot()));
    }
}
