//! RestorePreference: which objects a restore leaves out, restores last, or may overwrite.
//!
//! The spec is the CRD's (`clustersnapshot.rywt.io/v1alpha1`, kind `RestorePreference`) with the
//! original project's field names and matching rules:
//! `excludeNamespaces` exact; `excludeCRDs` substring of the CRD name; `excludeApiPathes`,
//! `restoreAppApiPathes`, `includeApiPathes`, `overwriteApiPathes` entries `prefix` or
//! `prefix,contains`; `restoreNfsStorageClasses` prefixes of StorageClass names.

use serde::{Deserialize, Serialize};

/// API group and version of the CRDs.
pub(crate) const API_VERSION: &str = "clustersnapshot.rywt.io/v1alpha1";

/// Why a RestorePreference is not valid.
#[derive(Debug, thiserror::Error)]
pub enum PreferenceError {
    /// The preference is not valid YAML.
    #[error("preference {origin}: not valid YAML: {message}")]
    Yaml {
        /// Where the preference came from (as given by the caller, e.g. a file path).
        origin: String,
        /// The YAML error.
        message: String,
    },
    /// A field of the preference is not valid.
    #[error("preference {origin}: field {field}: {message}")]
    Field {
        /// Where the preference came from (as given by the caller, e.g. a file path).
        origin: String,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The preference is not valid as a whole.
    #[error("preference {origin}: {message}")]
    Invalid {
        /// Where the preference came from (as given by the caller, e.g. a file path).
        origin: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The spec of a RestorePreference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestorePreferenceSpec {
    /// Namespaces not restored (exact names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    /// CRDs not restored (substring of the CRD name), nor their custom resources.
    #[serde(default, rename = "excludeCRDs", skip_serializing_if = "Vec::is_empty")]
    pub exclude_crds: Vec<String>,
    /// Content paths not restored: `prefix` or `prefix,contains`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_api_pathes: Vec<String>,
    /// Content paths restored after everything else (`prefix` or `prefix,contains`).
    /// Default: deployments, statefulsets and daemonsets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_app_api_pathes: Vec<String>,
    /// StorageClass name prefixes whose StorageClasses, PVs and PVCs are restored and re-bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_nfs_storage_classes: Vec<String>,
    /// When set, only these namespaces (and cluster-scoped objects) are restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<String>,
    /// When set, only content paths matching one of these are restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_api_pathes: Vec<String>,
    /// Existing objects under these paths that differ are updated instead of left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overwrite_api_pathes: Vec<String>,
    /// Only objects whose snapshot content path matches one of these globs
    /// (`/api/v1/namespaces/shop/configmaps/*`: `*` within a path segment, `**` across), and
    /// nothing implicit (a Namespace only when matched, or with `createNamespaces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_paths: Vec<String>,
    /// Objects of namespace `old` are restored in `new` (`{old: new}`), with the references
    /// Kubernetes defines rewritten (docs/restore.md, "Namespace mapping").
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub namespace_mapping: std::collections::BTreeMap<String, String>,
    /// Also create the Namespace of every restored object (the snapshot's, or a bare one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_namespaces: bool,
    /// The original's `restoreOptions` (a to-do it never implemented): accepted and ignored,
    /// with a notice. Use `overwriteApiPathes` to update existing objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_options: Vec<String>,
}

/// A RestorePreference document (file form).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreferenceDocument {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    spec: RestorePreferenceSpec,
}

/// A validated preference, ready to match content paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preference {
    /// The preference's `metadata.name`, if it has one.
    pub name: Option<String>,
    /// Its validated spec.
    pub spec: RestorePreferenceSpec,
}

/// `prefix` or `prefix,contains`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathRule<'a> {
    prefix: &'a str,
    contains: Option<&'a str>,
}

fn path_rule(entry: &str) -> PathRule<'_> {
    match entry.split_once(',') {
        Some((prefix, contains)) => PathRule {
            prefix: prefix.trim(),
            contains: Some(contains.trim()).filter(|c| !c.is_empty()),
        },
        None => PathRule {
            prefix: entry.trim(),
            contains: None,
        },
    }
}

/// Whether `path` matches one of `entries` (`prefix` or `prefix,contains`).
pub(crate) fn matches_any(entries: &[String], path: &str) -> bool {
    entries.iter().any(|e| {
        let rule = path_rule(e);
        path.starts_with(rule.prefix) && rule.contains.is_none_or(|c| path.contains(c))
    })
}

/// Default app paths restored last (as the original).
pub(crate) const DEFAULT_APP_PATHES: [&str; 3] = [
    "/apis/apps/v1,deployments",
    "/apis/apps/v1,statefulsets",
    "/apis/apps/v1,daemonsets",
];

impl Preference {
    /// Parses a RestorePreference document (YAML or JSON).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Preference, PreferenceError> {
        let value = crate::tree::from_yaml(text).map_err(|e| PreferenceError::Yaml {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        Self::from_value(value, origin)
    }

    /// Validates a RestorePreference document given as JSON.
    pub fn from_value(
        value: serde_json::Value,
        origin: &str,
    ) -> Result<Preference, PreferenceError> {
        let doc: PreferenceDocument =
            serde_path_to_error::deserialize(value).map_err(|e| PreferenceError::Field {
                origin: origin.to_string(),
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        if doc.api_version != API_VERSION {
            return Err(PreferenceError::Field {
                origin: origin.into(),
                field: "apiVersion".into(),
                message: format!("expected {API_VERSION}, got {:?}", doc.api_version),
            });
        }
        if doc.kind != "RestorePreference" {
            return Err(PreferenceError::Field {
                origin: origin.into(),
                field: "kind".into(),
                message: format!("expected RestorePreference, got {:?}", doc.kind),
            });
        }
        let name = doc
            .metadata
            .as_ref()
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string);
        Self::from_spec(name, doc.spec, origin)
    }

    /// Validates a spec (from a CRD object or an inline preference).
    pub fn from_spec(
        name: Option<String>,
        spec: RestorePreferenceSpec,
        origin: &str,
    ) -> Result<Preference, PreferenceError> {
        for (field, entries) in [
            ("spec.excludeApiPathes", &spec.exclude_api_pathes),
            ("spec.restoreAppApiPathes", &spec.restore_app_api_pathes),
            ("spec.includeApiPathes", &spec.include_api_pathes),
            ("spec.overwriteApiPathes", &spec.overwrite_api_pathes),
        ] {
            for (i, e) in entries.iter().enumerate() {
                let rule = path_rule(e);
                if !rule.prefix.starts_with('/') {
                    return Err(PreferenceError::Field {
                        origin: origin.into(),
                        field: format!("{field}[{i}]"),
                        message: format!(
                            "{e:?}: an API path starts with '/' (e.g. /apis/apps/v1,deployments)"
                        ),
                    });
                }
            }
        }
        for (field, entries) in [
            ("spec.excludeNamespaces", &spec.exclude_namespaces),
            ("spec.includeNamespaces", &spec.include_namespaces),
            ("spec.excludeCRDs", &spec.exclude_crds),
            (
                "spec.restoreNfsStorageClasses",
                &spec.restore_nfs_storage_classes,
            ),
        ] {
            if let Some(i) = entries.iter().position(|e| e.trim().is_empty()) {
                return Err(PreferenceError::Field {
                    origin: origin.into(),
                    field: format!("{field}[{i}]"),
                    message: "empty entry".into(),
                });
            }
        }
        for (i, p) in spec.include_paths.iter().enumerate() {
            if !p.trim().starts_with('/') {
                return Err(PreferenceError::Field {
                    origin: origin.into(),
                    field: format!("spec.includePaths[{i}]"),
                    message: format!(
                        "{p:?}: a content path glob starts with '/' (e.g. /api/v1/namespaces/shop/configmaps/*)"
                    ),
                });
            }
        }
        let mut targets = std::collections::BTreeMap::new();
        for (old, new) in &spec.namespace_mapping {
            super::mapping::check_entry(old, new).map_err(|message| PreferenceError::Field {
                origin: origin.into(),
                field: format!("spec.namespaceMapping.{old}"),
                message,
            })?;
            if let Some(other) = targets.insert(new.as_str(), old.as_str()) {
                return Err(PreferenceError::Field {
                    origin: origin.into(),
                    field: format!("spec.namespaceMapping.{old}"),
                    message: format!("{other:?} and {old:?} are both mapped onto {new:?}"),
                });
            }
        }
        if !spec.restore_options.is_empty() {
            tracing::warn!(
                "preference {origin}: spec.restoreOptions {:?} ignored (the original never implemented them; overwriteApiPathes updates existing objects)",
                spec.restore_options
            );
        }
        Ok(Preference { name, spec })
    }

    /// The app paths restored last: the preference's, or the default.
    pub(crate) fn app_pathes(&self) -> Vec<String> {
        if self.spec.restore_app_api_pathes.is_empty() {
            DEFAULT_APP_PATHES.iter().map(|s| s.to_string()).collect()
        } else {
            self.spec.restore_app_api_pathes.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_sample() {
        let text = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: exclude-kube-system\n  namespace: k8s-snap\nspec:\n  excludeNamespaces:\n  - kube-system\n  excludeCRDs:\n  - cattle.io\n  excludeApiPathes:\n  - /api/v1,nodes\n  - /apis/rbac.authorization.k8s.io/v1/clusterrolebindings,system\n  restoreAppApiPathes:\n  - /apis/apps/v1,deployments\n  restoreNfsStorageClasses:\n  - nfs\n";
        let p = Preference::from_yaml(text, "test").unwrap();
        assert_eq!(p.name.as_deref(), Some("exclude-kube-system"));
        assert_eq!(p.spec.exclude_namespaces, vec!["kube-system"]);
        assert_eq!(p.spec.exclude_crds, vec!["cattle.io"]);
        assert!(matches_any(
            &p.spec.exclude_api_pathes,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:node"
        ));
        assert!(!matches_any(
            &p.spec.exclude_api_pathes,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/admin"
        ));
        assert!(matches_any(&p.spec.exclude_api_pathes, "/api/v1/nodes/n1"));
    }

    #[test]
    fn every_field_of_the_original_schema_is_accepted() {
        let text = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: p\nspec:\n  excludeNamespaces: [kube-system]\n  excludeCRDs: [crd.projectcalico.org]\n  excludeApiPathes: ['/api/v1,nodes']\n  restoreAppApiPathes: [/apis/apps]\n  restoreNfsStorageClasses: [managed-nfs-storage]\n  restoreOptions: []\n";
        let p = Preference::from_yaml(text, "p.yaml").unwrap();
        assert!(p.spec.restore_options.is_empty());
        let with_options =
            text.replace("restoreOptions: []", "restoreOptions: [overwriteExisting]");
        let p = Preference::from_yaml(&with_options, "p.yaml").unwrap();
        assert_eq!(p.spec.restore_options, ["overwriteExisting"]);
        // A typo is refused with the known fields listed.
        let typo = text.replace("excludeNamespaces:", "excludeNamespace:");
        let e = Preference::from_yaml(&typo, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `excludeNamespace`"), "{e}");
        for known in [
            "excludeNamespaces",
            "excludeCRDs",
            "restoreOptions",
            "includeNamespaces",
        ] {
            assert!(e.contains(known), "{known} not listed: {e}");
        }
    }

    #[test]
    fn malformed_preferences_name_the_field() {
        let bad_type = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nspec:\n  excludeNamespaces: kube-system\n";
        let e = Preference::from_yaml(bad_type, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.excludeNamespaces"), "{e}");
        let unknown = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nspec:\n  excludeNamespace: [a]\n";
        let e = Preference::from_yaml(unknown, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("excludeNamespace"), "{e}");
        let no_slash = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nspec:\n  excludeApiPathes: [api/v1]\n";
        let e = Preference::from_yaml(no_slash, "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.excludeApiPathes[0]"), "{e}");
        let kind = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec: {}\n";
        assert!(
            Preference::from_yaml(kind, "p.yaml")
                .unwrap_err()
                .to_string()
                .contains("kind")
        );
        assert!(
            Preference::from_yaml("[", "p.yaml")
                .unwrap_err()
                .to_string()
                .contains("p.yaml")
        );
    }
}
