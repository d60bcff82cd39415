//! The custom resources of `clustersnapshot.rywt.io/v1alpha1` (Snapshot, Restore,
//! RestorePreference, ObjectstoreConfig; SnapshotSchedule lives in `schedule_crd`), their status shapes, conditions and the generated
//! CustomResourceDefinitions (`k8s-snap crd`, `deploy/crd.yaml`).
//!
//! Owns: field names on the wire (the original project's), printer columns, the schema rules
//! that let users' existing manifests apply unchanged (`spec` keeps unknown fields, as the
//! original schema-less CRDs did). Reuses `crate::restore::{RestorePreferenceSpec,
//! RestoreStatus}` as the single source of truth for those shapes.
//! Must not touch: the cluster, the mirror, the store.

// Several `printcolumn(type_ = ..)` items are not duplicates (clippy misreads the derive).
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::restore::status::Phase;
use crate::restore::{RestorePreferenceSpec, RestoreStatus};

/// The finalizer the controller puts on Snapshots (removes their stored data on deletion).
pub(crate) const SNAPSHOT_FINALIZER: &str = "clustersnapshot.rywt.io/snapshot-data";
/// Most entries kept in one status list (`contents`, `created`, ...); counts stay exact.
pub(crate) const STATUS_LIST_MAX: usize = 1000;

/// Condition types.
pub mod condition {
    /// The resource finished successfully and is usable (a snapshot available for restore).
    pub(crate) const READY: &str = "Ready";
    /// The snapshot/restore run finished (status True) or failed (False).
    pub(crate) const SUCCEEDED: &str = "Succeeded";
    /// A status list was cut to [`super::STATUS_LIST_MAX`] entries.
    pub(crate) const TRUNCATED: &str = "Truncated";
    /// The server listed group versions it did not serve; their objects are not in the
    /// snapshot.
    pub(crate) const INCOMPLETE: &str = "Incomplete";
}

/// A reference to a key of a Secret in the resource's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret's data (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key, defaulting to `kubeconfig`.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("kubeconfig")
    }
}

/// A snapshot of a cluster (the original `Snapshot`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "clustersnapshot.rywt.io",
    version = "v1alpha1",
    kind = "Snapshot",
    plural = "snapshots",
    namespaced,
    status = "SnapshotStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A snapshot of every resource of a cluster, kept in the controller's mirror and object store.",
    printcolumn(
        name = "ClusterName",
        type_ = "string",
        json_path = ".spec.clusterName"
    ),
    printcolumn(
        name = "BackupDate",
        type_ = "string",
        json_path = ".status.snapshotTimestamp"
    ),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// Name of the snapshotted cluster (recorded with the snapshot).
    #[serde(default)]
    pub cluster_name: String,
    /// Inline kubeconfig of the cluster to snapshot (the original's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// A Secret key holding the kubeconfig (instead of `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// How long to keep the snapshot (Go duration, e.g. `720h`; default 720h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Keep the snapshot until this time; wins over `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<Time>,
    /// Name of the ObjectstoreConfig the snapshot is pushed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectstore_config: Option<String>,
    /// The part of the cluster to snapshot (`includeNamespaces`, `excludeNamespaces`,
    /// `includeResources`, `excludeResources`, `labelSelector`, `includeClusterResources`);
    /// none set: the whole cluster.
    #[serde(flatten)]
    pub filter: crate::tree::SnapshotFilter,
    /// Seal Secret values to these recipients (else to the ObjectstoreConfig's; docs/encryption.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::encryption::EncryptionSpec>,
}

/// Status of a Snapshot (the original's fields plus `conditions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// `""`, `InQueue`, `InProgress`, `Completed` or `Failed`.
    #[serde(default)]
    pub phase: Phase,
    /// Why the snapshot failed (empty otherwise).
    #[serde(default)]
    pub reason: String,
    /// Name of the snapshotted cluster.
    #[serde(default)]
    pub cluster_name: String,
    /// The spec's ttl as given.
    #[serde(default)]
    pub ttl: String,
    /// The Snapshot and its data are deleted at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<Time>,
    /// Content paths, at most 1,000 (see the `Truncated` condition); `k8s-snap show` lists all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<Vec<String>>,
    /// Number of objects in the snapshot (exact, even when `contents` is cut).
    #[serde(default)]
    pub number_of_contents: u64,
    /// The resourceVersion every object of the snapshot was read at.
    #[serde(default)]
    pub snapshot_resource_version: String,
    /// When the snapshot was taken (the time of its resourceVersion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_timestamp: Option<Time>,
    /// Bytes pushed to the object store.
    #[serde(default)]
    pub stored_file_size: u64,
    /// When the snapshot was pushed to the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_timestamp: Option<Time>,
    /// The snapshot's git commit in the mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Standard conditions (`Ready`, `Succeeded`, `Truncated`, and `Incomplete` when the
    /// server listed APIs it did not serve).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A restore of a snapshot onto a cluster (the original `Restore`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "clustersnapshot.rywt.io",
    version = "v1alpha1",
    kind = "Restore",
    plural = "restores",
    namespaced,
    status = "RestoreCrStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A create-only restore of a snapshot onto a cluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    // Whichever of the two names is set (a JSONPath union; the first present wins).
    printcolumn(
        name = "Snapshot",
        type_ = "string",
        json_path = ".spec['snapshotName','backupName']"
    ),
    printcolumn(
        name = "Timestamp",
        type_ = "string",
        json_path = ".status.restoreTimestamp"
    ),
    printcolumn(
        name = "RV",
        type_ = "string",
        json_path = ".status.restoreResourceVersion"
    ),
    printcolumn(
        name = "Excluded",
        type_ = "integer",
        json_path = ".status.numExcluded"
    ),
    printcolumn(name = "Created", type_ = "integer", json_path = ".status.numCreated"),
    printcolumn(name = "Updated", type_ = "integer", json_path = ".status.numUpdated"),
    printcolumn(
        name = "Exist",
        type_ = "integer",
        json_path = ".status.numAlreadyExisted"
    ),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.numFailed"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Name of the target cluster.
    #[serde(default)]
    pub cluster_name: String,
    /// The Snapshot to restore (the original's later API; `backupName` is the same field
    /// under the README's name). Set either; both set must be equal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_name: String,
    /// The Snapshot to restore (the original README's name for `snapshotName`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backup_name: String,
    /// A RestorePreference in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_preference_name: Option<String>,
    /// Inline kubeconfig of the target cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// A Secret key holding the target's kubeconfig (instead of `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// How long to keep this Restore resource (default 168h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Keep this Restore resource until this time; wins over `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_until: Option<Time>,
    /// ObjectstoreConfig to pull the snapshot from when it is not in the local mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectstore_config: Option<String>,
    /// Only objects whose content path matches one of these globs (as the RestorePreference
    /// field of the same name, which this replaces when set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_paths: Vec<String>,
    /// Objects of namespace `old` restored in `new` (`{old: new}`; as the RestorePreference
    /// field of the same name, which this replaces when set).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub namespace_mapping: std::collections::BTreeMap<String, String>,
    /// Also create the Namespace of every restored object (replaces the RestorePreference's
    /// `createNamespaces` when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespaces: Option<bool>,
    /// A Secret key holding the age identity that opens the snapshot's encrypted Secret
    /// values (key default `identity`; docs/encryption.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret_ref: Option<super::encryption::KeyRef>,
    /// A reviewed plan to apply exactly: the name of a ConfigMap in the same namespace whose
    /// key `plan.json` holds a plan file (`k8s-snap plan --out`). The restore is refused,
    /// writing nothing, when anything changed since the plan was made. The plan records its
    /// preference: not with `restorePreferenceName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_ref: Option<String>,
}

impl RestoreSpec {
    /// The Snapshot to restore: `snapshotName` or `backupName` (see
    /// `restore::snapshot_name_of`); the error names the field at fault.
    pub fn snapshot(&self) -> Result<&str, crate::restore::SnapshotNameError> {
        crate::restore::snapshot_name_of(&self.snapshot_name, &self.backup_name)
    }
}

/// Status of a Restore: the original shape (`crate::restore::RestoreStatus`, with the README's
/// `preserveUntil`), the later API's `availableUntil` (always equal to `preserveUntil`) and
/// `ttl` (from the start of the restore to `availableUntil`, a Go duration such as
/// `168h0m0s`), plus `conditions`. Reads partial statuses too (missing fields take their
/// defaults), so one odd object never breaks the controller's watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreCrStatus {
    /// The restore's outcome, in the original's fields.
    #[serde(flatten)]
    pub restore: RestoreStatus,
    /// The Restore resource is deleted at this time (the same as `preserveUntil`).
    pub available_until: Option<String>,
    /// How long the Restore resource is kept (Go duration, e.g. `168h0m0s`).
    #[serde(default)]
    pub ttl: String,
    /// Standard conditions (`Ready`, `Succeeded`, `Truncated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl RestoreCrStatus {
    /// Sets `preserveUntil` and `availableUntil` to `until` and `ttl` to `ttl`.
    pub(crate) fn set_expiry(&mut self, until: Option<String>, ttl: String) {
        self.restore.preserve_until = until.clone();
        self.available_until = until;
        self.ttl = ttl;
    }
}

impl<'de> Deserialize<'de> for RestoreCrStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let given = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut merged = match serde_json::to_value(RestoreStatus::default()) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let mut conditions = serde_json::Value::Null;
        let mut available_until = None;
        let mut ttl = String::new();
        for (k, v) in given {
            match (k.as_str(), v) {
                ("conditions", v) => conditions = v,
                ("availableUntil", serde_json::Value::String(t)) => available_until = Some(t),
                ("ttl", serde_json::Value::String(t)) => ttl = t,
                ("availableUntil" | "ttl", _) => {}
                (_, v) if !v.is_null() => {
                    merged.insert(k, v);
                }
                _ => {}
            }
        }
        let restore = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| D::Error::custom(format!("restore status: {e}")))?;
        let conditions = if conditions.is_null() {
            Vec::new()
        } else {
            serde_json::from_value(conditions)
                .map_err(|e| D::Error::custom(format!("restore status conditions: {e}")))?
        };
        Ok(RestoreCrStatus {
            restore,
            available_until,
            ttl,
            conditions,
        })
    }
}

#[cfg(test)]
mod restore_compat_tests {
    use super::*;

    #[test]
    fn restores_name_their_snapshot_either_way() {
        let later = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nmetadata:\n  name: r\nspec:\n  clusterName: dst\n  snapshotName: s1\n";
        let r: Restore = serde_saphyr::from_str(later).unwrap();
        assert_eq!(r.spec.snapshot().unwrap(), "s1");
        let readme = later.replace("snapshotName", "backupName");
        let r: Restore = serde_saphyr::from_str(&readme).unwrap();
        assert_eq!(r.spec.snapshot().unwrap(), "s1");
        // Only the field that is set goes on the wire.
        let v = serde_json::to_value(&r.spec).unwrap();
        assert_eq!(v["backupName"], "s1");
        assert!(v.get("snapshotName").is_none(), "{v}");
        let neither = Restore::new("r", RestoreSpec::default());
        assert!(
            neither
                .spec
                .snapshot()
                .unwrap_err()
                .to_string()
                .starts_with("spec.snapshotName: required")
        );
        // The printer column shows whichever is set.
        let crd = Restore::crd();
        let col = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.name == "Snapshot")
            .unwrap()
            .json_path
            .clone();
        assert_eq!(col, ".spec['snapshotName','backupName']");
    }

    #[test]
    fn restore_status_carries_available_until_and_ttl() {
        let mut s = RestoreCrStatus::default();
        s.set_expiry(Some("2026-12-06T10:00:00Z".into()), "168h0m0s".into());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["preserveUntil"], "2026-12-06T10:00:00Z");
        assert_eq!(v["availableUntil"], v["preserveUntil"]);
        assert_eq!(v["ttl"], "168h0m0s");
        let back: RestoreCrStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        // Statuses written before these fields existed still read.
        let old: RestoreCrStatus = serde_json::from_value(
            serde_json::json!({"phase": "Completed", "preserveUntil": null}),
        )
        .unwrap();
        assert_eq!(old.available_until, None);
        assert_eq!(old.ttl, "");
    }
}

/// Spec of the RestorePreference custom resource: exactly
/// `crate::restore::RestorePreferenceSpec`; unknown fields of users' manifests are ignored.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "clustersnapshot.rywt.io",
    version = "v1alpha1",
    kind = "RestorePreference",
    plural = "restorepreferences",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "Which objects a restore leaves out, restores last, or may overwrite."
)]
pub struct RestorePreferenceCrSpec {
    /// The preference, in the original's fields.
    #[serde(flatten)]
    pub preference: RestorePreferenceSpec,
}

/// Where snapshots are stored (the original `ObjectstoreConfig`).
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "clustersnapshot.rywt.io",
    version = "v1alpha1",
    kind = "ObjectstoreConfig",
    plural = "objectstoreconfigs",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "An S3-compatible bucket for snapshots and the Secret holding its credentials.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.bucket")
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectstoreConfigSpec {
    /// The bucket's region.
    #[serde(default)]
    pub region: String,
    /// Host (`s3.amazonaws.com`) or URL (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: String,
    /// The bucket's name.
    #[serde(default)]
    pub bucket: String,
    /// Secret (same namespace) with `accesskey` and `secretkey`.
    #[serde(default)]
    pub cloud_credential_secret: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Path-style addressing (MinIO, moto...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Accept plain http / unverified TLS for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Seal the Secret values of snapshots pushed here to these recipients, unless the
    /// Snapshot names its own (docs/encryption.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::encryption::EncryptionSpec>,
}

/// The five CRDs (the four above and SnapshotSchedule), with `spec` of each accepting unknown fields (the original CRDs had no
/// schema, so existing manifests may carry fields we do not know).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Snapshot::crd(),
        Restore::crd(),
        RestorePreference::crd(),
        ObjectstoreConfig::crd(),
        super::schedule_crd::SnapshotSchedule::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            else {
                continue;
            };
            if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
                spec.x_kubernetes_preserve_unknown_fields = Some(true);
                spec.additional_properties = None;
            }
            portable_schema(schema);
        }
    }
    crds
}

/// Makes a generated schema one every supported server accepts: no `default` (the generator
/// emits the Rust zero value of every `#[serde(default)]` field — `""`, `0` — which carries
/// no meaning, and kube-apiserver v1.19 refuses `default: ""` as `null`), and integer formats
/// a server knows (`int32`/`int64` instead of Rust's `uint*`, kept non-negative by `minimum`).
fn portable_schema(schema: &mut JSONSchemaProps) {
    schema.default = None;
    if let Some(f) = schema.format.as_deref() {
        let portable = match f {
            "uint8" | "uint16" | "uint32" | "int8" | "int16" => Some("int32"),
            "uint64" | "uint" => Some("int64"),
            _ => None,
        };
        if let Some(p) = portable {
            schema.format = Some(p.to_string());
        }
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.iter_mut().flat_map(|i| match i {
            JSONSchemaPropsOrArray::Schema(s) => std::slice::from_mut(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(v) => v.as_mut_slice(),
        }))
        .chain(
            schema
                .additional_properties
                .iter_mut()
                .filter_map(|a| match a {
                    JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
                    JSONSchemaPropsOrBool::Bool(_) => None,
                }),
        );
    for child in children {
        portable_schema(child);
    }
}

/// Errors of rendering the CRDs.
#[derive(Debug, thiserror::Error)]
#[error("rendering the CRDs as YAML: {0}")]
pub struct CrdRenderError(String);

/// The CRDs as one multi-document YAML stream (the content of `deploy/crd.yaml`).
pub fn crds_yaml() -> Result<String, CrdRenderError> {
    let mut out = String::from(
        "# Generated by `k8s-snap crd`; do not edit. Regenerate with:\n#   cargo run -q -- crd > deploy/crd.yaml\n",
    );
    for crd in crds() {
        let yaml = serde_saphyr::to_string(&crd).map_err(|e| CrdRenderError(e.to_string()))?;
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// A condition with `lastTransitionTime` kept when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let now = Time(jiff::Timestamp::now());
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now;
        }
        c.status = status;
        c.reason = reason.to_string();
        c.message = message.to_string();
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now,
        });
    }
}

/// Marks a run finished: `Succeeded` and `Ready` both `True` (completed) or both `False`
/// (failed), with the same reason and message.
pub fn set_finished(
    conditions: &mut Vec<Condition>,
    succeeded: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    for type_ in [condition::SUCCEEDED, condition::READY] {
        set_condition(conditions, type_, succeeded, reason, message, generation);
    }
}

/// Cuts a status list to `STATUS_LIST_MAX`; returns whether it was cut.
pub fn cap_list(list: &mut Option<Vec<String>>) -> bool {
    match list {
        Some(l) if l.len() > STATUS_LIST_MAX => {
            l.truncate(STATUS_LIST_MAX);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_manifests_deserialize_with_unknown_fields() {
        let text = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: p\n  namespace: k8s-snap\nspec:\n  excludeNamespaces: [kube-system]\n  restoreOptions: [overwriteExisting]\n";
        let p: RestorePreference = serde_saphyr::from_str(text).unwrap();
        assert_eq!(p.spec.preference.exclude_namespaces, vec!["kube-system"]);
        let text = "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Snapshot\nmetadata:\n  name: cluster01-001\n  namespace: k8s-snap\nspec:\n  clusterName: cluster01\n  ttl: 720h\n  availableUntil: 2020-07-01T02:03:04Z\n  somethingElse: 1\n";
        let s: Snapshot = serde_saphyr::from_str(text).unwrap();
        assert_eq!(s.spec.cluster_name, "cluster01");
        assert_eq!(
            s.spec.available_until.unwrap().0.to_string(),
            "2020-07-01T02:03:04Z"
        );
    }

    #[test]
    fn crds_keep_unknown_spec_fields_and_declare_status() {
        for crd in crds() {
            let v = &crd.spec.versions[0];
            let schema = v
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            let spec = &schema.properties.as_ref().unwrap()["spec"];
            assert_eq!(spec.x_kubernetes_preserve_unknown_fields, Some(true));
            assert_eq!(crd.spec.scope, "Namespaced");
        }
        let snap = Snapshot::crd();
        assert!(
            snap.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
        let cols: Vec<String> = snap.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.to_uppercase())
            .collect();
        assert_eq!(cols, ["CLUSTERNAME", "BACKUPDATE", "STATUS"]);
    }

    #[test]
    fn restore_status_keeps_the_original_shape() {
        let s = RestoreCrStatus::default();
        let v = serde_json::to_value(&s).unwrap();
        assert!(v["created"].is_null());
        assert_eq!(v["numCreated"], 0);
        assert!(v.get("conditions").is_none());
    }

    #[test]
    fn partial_restore_status_reads() {
        let s: RestoreCrStatus =
            serde_json::from_value(serde_json::json!({"phase": "InProgress", "numCreated": 3}))
                .unwrap();
        assert_eq!(s.restore.phase, "InProgress");
        assert_eq!(s.restore.num_created, 3);
        assert!(s.conditions.is_empty());
        let back: RestoreCrStatus =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn lists_are_capped() {
        let mut l = Some((0..1500).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(cap_list(&mut l));
        assert_eq!(l.unwrap().len(), STATUS_LIST_MAX);
        let mut small = Some(vec!["a".to_string()]);
        assert!(!cap_list(&mut small));
    }
}
