//! Restore request files: parsing and validation of a dropped `Restore` manifest (the CRD's
//! schema), with its preference inline or by name from `<dir>/preferences/`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::restore::preference::{API_VERSION, Preference, RestorePreferenceSpec};

/// Why a request file cannot be run. The message names the file and the field at fault and
/// never quotes a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The request file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The request file is not valid YAML of the expected shape.
    #[error("{file}: malformed: {message}")]
    Malformed {
        /// The request file.
        file: PathBuf,
        /// What is malformed.
        message: String,
    },
    /// A field of the request is not valid.
    #[error("{file}: field {field}: {message}")]
    Field {
        /// The request file.
        file: PathBuf,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request's restore preference is not valid.
    #[error("{file}: {message}")]
    Preference {
        /// The request file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The `spec` of a dropped `Restore` (the CRD's fields, plus `preference` inline).
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestSpec {
    /// The snapshot: `snapshotName` or `backupName` (either; both must agree).
    #[serde(default)]
    snapshot_name: String,
    #[serde(default)]
    backup_name: String,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    restore_preference_name: Option<String>,
    #[serde(default)]
    preference: Option<RestorePreferenceSpec>,
    /// The ObjectstoreConfig to pull from (used by `controller --watch-dir`).
    #[serde(default)]
    objectstore_config: Option<String>,
    /// As the Restore CR's: replace the preference's fields of the same names when set.
    #[serde(default)]
    include_paths: Vec<String>,
    #[serde(default)]
    namespace_mapping: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    create_namespaces: Option<bool>,
    // Accepted for compatibility with Restore CRs; a file-drop result has no lifetime.
    #[serde(default)]
    #[allow(dead_code)]
    ttl: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    available_until: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestDocument {
    api_version: String,
    kind: String,
    spec: RequestSpec,
}

/// A validated restore request, ready to run.
#[derive(Clone)]
pub struct RestoreRequest {
    /// The request's name: the file stem (`restore-a.yaml` → `restore-a`).
    pub name: String,
    /// The snapshot to restore.
    pub backup_name: String,
    /// The cluster the snapshot was taken of, when the request names it.
    pub cluster_name: Option<String>,
    /// An inline kubeconfig of the target; `None` = the watcher's own target.
    pub kubeconfig: Option<String>,
    /// The preference, inline or by name; `None` = restore everything restorable.
    pub preference: Option<Preference>,
    /// `spec.objectstoreConfig`: where `controller --watch-dir` pulls a missing snapshot from
    /// (`k8s-snap watch` pulls from its own store flags).
    pub objectstore_config: Option<String>,
}

impl std::fmt::Debug for RestoreRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreRequest")
            .field("name", &self.name)
            .field("backup_name", &self.backup_name)
            .field("cluster_name", &self.cluster_name)
            .field(
                "kubeconfig",
                &self.kubeconfig.as_ref().map(|_| "<redacted>"),
            )
            .field("preference", &self.preference.as_ref().map(|p| &p.name))
            .finish()
    }
}

impl RestoreRequest {
    /// A key naming the target cluster: requests with the same key run one at a time.
    pub(crate) fn target_key(&self) -> String {
        use sha2::Digest;
        match &self.kubeconfig {
            Some(k) => hex::encode(&sha2::Sha256::digest(k.as_bytes())[..8]),
            None => "default".to_string(),
        }
    }
}

/// Reads and validates the request in `file`, resolving a named preference in `preferences`.
pub(crate) fn load(file: &Path, preferences: &Path) -> Result<RestoreRequest, RequestError> {
    let text = std::fs::read_to_string(file).map_err(|source| RequestError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text, file, preferences)
}

/// Validates the text of a request read from `file`.
pub fn parse(text: &str, file: &Path, preferences: &Path) -> Result<RestoreRequest, RequestError> {
    let malformed = |message: String| RequestError::Malformed {
        file: file.to_path_buf(),
        message,
    };
    let field = |field: &str, message: String| RequestError::Field {
        file: file.to_path_buf(),
        field: field.to_string(),
        message,
    };
    if text.trim().is_empty() {
        return Err(malformed("the file is empty".into()));
    }
    // JSON is YAML; one parser for both. Its messages carry positions, not contents.
    let value = crate::tree::from_yaml(text).map_err(|e| malformed(e.to_string()))?;
    let doc: RequestDocument = serde_path_to_error::deserialize(value)
        .map_err(|e| field(&e.path().to_string(), redact(&e.inner().to_string())))?;
    if doc.api_version != API_VERSION {
        return Err(field(
            "apiVersion",
            format!("expected {API_VERSION}, got {:?}", doc.api_version),
        ));
    }
    if doc.kind != "Restore" {
        return Err(field(
            "kind",
            format!("expected Restore, got {:?}", doc.kind),
        ));
    }
    let spec = doc.spec;
    let snapshot = crate::restore::snapshot_name_of(&spec.snapshot_name, &spec.backup_name)
        .map_err(|e| field(e.field, e.message))?
        .to_string();
    let snapshot_field = if spec.snapshot_name.trim().is_empty() {
        "spec.backupName"
    } else {
        "spec.snapshotName"
    };
    crate::mirror::validate_name("snapshot", &snapshot)
        .map_err(|e| field(snapshot_field, e.to_string()))?;
    if let Some(k) = &spec.kubeconfig
        && k.trim().is_empty()
    {
        return Err(field("spec.kubeconfig", "empty".into()));
    }
    let origin = file.display().to_string();
    let preference = match (&spec.restore_preference_name, spec.preference) {
        (Some(_), Some(_)) => {
            return Err(field(
                "spec",
                "restorePreferenceName and preference are exclusive".into(),
            ));
        }
        (Some(name), None) => Some(load_named_preference(name, file, preferences)?),
        (None, Some(inline)) => Some(
            Preference::from_spec(None, inline, &format!("{origin}: spec.preference")).map_err(
                |e| RequestError::Preference {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                },
            )?,
        ),
        (None, None) => None,
    };
    let selects = !spec.include_paths.is_empty()
        || !spec.namespace_mapping.is_empty()
        || spec.create_namespaces.is_some();
    let preference = match preference {
        p if !selects => p,
        p => {
            let base = p.unwrap_or_default();
            let mut merged = base.spec.clone();
            if !spec.include_paths.is_empty() {
                merged.include_paths = spec.include_paths;
            }
            if !spec.namespace_mapping.is_empty() {
                merged.namespace_mapping = spec.namespace_mapping;
            }
            if let Some(c) = spec.create_namespaces {
                merged.create_namespaces = c;
            }
            Some(
                Preference::from_spec(base.name.clone(), merged, &format!("{origin}: spec"))
                    .map_err(|e| RequestError::Preference {
                        file: file.to_path_buf(),
                        message: e.to_string(),
                    })?,
            )
        }
    };
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(RestoreRequest {
        name,
        backup_name: snapshot,
        cluster_name: spec.cluster_name,
        kubeconfig: spec.kubeconfig,
        preference,
        objectstore_config: spec.objectstore_config.filter(|s| !s.trim().is_empty()),
    })
}

/// serde messages may quote an unexpected string value (`invalid type: string "…"`); keep
/// only the part before it. Field names are in backticks and stay.
fn redact(message: &str) -> String {
    match message.find('"') {
        Some(i) if i > 0 => format!("{}…", &message[..i]),
        _ => message.to_string(),
    }
}

fn load_named_preference(
    name: &str,
    file: &Path,
    preferences: &Path,
) -> Result<Preference, RequestError> {
    let err = |message: String| RequestError::Field {
        file: file.to_path_buf(),
        field: "spec.restorePreferenceName".into(),
        message,
    };
    crate::tree::validate_name(name).map_err(|e| err(e.to_string()))?;
    for ext in ["yaml", "yml", "json"] {
        let path = preferences.join(format!("{name}.{ext}"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Preference::from_yaml(&text, &path.display().to_string()).map_err(|e| {
                    RequestError::Preference {
                        file: file.to_path_buf(),
                        message: e.to_string(),
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(format!("{}: {e}", path.display()))),
        }
    }
    Err(err(format!(
        "no preference {name:?} in {} (expected {name}.yaml)",
        preferences.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<RestoreRequest, RequestError> {
        parse(text, Path::new("/drop/r1.yaml"), Path::new("/nonexistent"))
    }

    #[test]
    fn a_minimal_request_parses() {
        let r = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nmetadata:\n  name: x\nspec:\n  backupName: s1\n",
        )
        .unwrap();
        assert_eq!(r.name, "r1");
        assert_eq!(r.backup_name, "s1");
        assert!(r.preference.is_none());
        assert_eq!(r.target_key(), "default");
    }

    #[test]
    fn json_and_inline_preferences_parse() {
        let r = parse_str(
            r#"{"apiVersion":"clustersnapshot.rywt.io/v1alpha1","kind":"Restore","spec":{"backupName":"s1","preference":{"excludeNamespaces":["kube-system"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            r.preference.unwrap().spec.exclude_namespaces,
            vec!["kube-system".to_string()]
        );
    }

    #[test]
    fn selection_fields_replace_the_preference_s() {
        let r = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: s1\n  preference:\n    includePaths: [/apis/**]\n    createNamespaces: false\n  includePaths: ['/api/v1/namespaces/shop/configmaps/*']\n  namespaceMapping: {shop: shop-copy}\n  createNamespaces: true\n",
        )
        .unwrap();
        let spec = r.preference.unwrap().spec;
        assert_eq!(spec.include_paths, ["/api/v1/namespaces/shop/configmaps/*"]);
        assert_eq!(spec.namespace_mapping["shop"], "shop-copy");
        assert!(spec.create_namespaces);
        // Without them, no preference means none.
        let r = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: s1\n",
        )
        .unwrap();
        assert!(r.preference.is_none());
        let e = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: s1\n  namespaceMapping: {shop: Shop}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.namespaceMapping.shop"), "{e}");
    }

    #[test]
    fn snapshot_name_is_accepted_as_backup_name() {
        let r = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nmetadata:\n  name: x\nspec:\n  snapshotName: s1\n",
        )
        .unwrap();
        assert_eq!(r.backup_name, "s1");
        let e = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  snapshotName: s1\n  backupName: s2\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.snapshotName") && e.contains("spec.backupName"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e =
            parse_str("apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec: {}\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("backupName"), "{e}");
        let e = parse_str("apiVersion: v1\nkind: Restore\nspec:\n  backupName: s1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion"), "{e}");
        let e = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: ../x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.backupName"), "{e}");
        let e = parse_str("spec: [\n").unwrap_err().to_string();
        assert!(e.contains("malformed") && e.contains("r1.yaml"), "{e}");
        let e = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: s1\n  restorePreferenceName: missing\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no preference \"missing\""), "{e}");
    }

    #[test]
    fn kubeconfigs_are_not_shown_in_debug() {
        let r = parse_str(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: s1\n  kubeconfig: 'token: hunter2'\n",
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
        assert_ne!(r.target_key(), "default");
    }
}
