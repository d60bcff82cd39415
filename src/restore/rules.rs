//! Which snapshot objects a restore creates, in which stage, and with which cluster-specific
//! fields removed (docs/design.md §6.1–6.3). Pure code: no I/O.
//!
//! Owns: the preference filter applied to content paths, the original project's exclusion
//! rules and reason strings, the stage order of §6.5, and the cleaning of server-generated
//! and cluster-specific fields: Services, PVs and PVCs (so that they re-bind on the target),
//! Jobs (generated selector and labels), ServiceAccounts (token Secret references), bare Pods
//! (node, priority, ephemeral containers, the source's token volume); and the form a restore holds its objects in from the load to the POST
//! ([`CompactObject`]: compact JSON text, parsed where a step reads fields). Must not touch:
//! the network, git.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use serde_json::Value;

use super::preference::{Preference, matches_any};
use crate::tree::ContentPath;

/// Reason strings of the original project (entry `"<path>,(<reason>)"`).
pub mod reason {
    /// An object with `ownerReferences` (its owner recreates it).
    pub const OWNER_REF: &str = "owner-ref";
    pub(crate) const TOKEN_SECRET: &str = "token-secret";
    pub(crate) const NOT_BINDED_TO_NS: &str = "not-binded-to-ns";
    pub(crate) const SERVICE_EXISTS: &str = "service-exists";
    pub(crate) const NO_PVC_SPEC: &str = "no-pvc-spec";
    pub(crate) const NO_STORAGECLASS: &str = "no-storageclass";
    pub(crate) const NOT_BOUNDED: &str = "not-bounded";
    pub(crate) const PV_NOT_FOUND: &str = "pv-not-found";
    pub(crate) const NO_PV_SPEC: &str = "no-pv-spec";
}

/// Annotations that record a past binding; dropped so PV and PVC bind afresh.
pub(crate) const BIND_ANNOTATIONS: [&str; 2] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
];

/// One object of a snapshot tree.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotObject {
    /// The object's content path.
    pub path: ContentPath,
    /// The object as stored in the tree (canonical form), held compactly.
    pub object: CompactObject,
}

impl SnapshotObject {
    /// The object at `path`.
    pub fn new(path: ContentPath, object: &Value) -> Self {
        SnapshotObject {
            path,
            object: CompactObject::new(object),
        }
    }
}

/// An object held compactly: its JSON text (what a POST sends), parsed where a step needs
/// the tree ([`CompactObject::value`]). A restore holds every object of a snapshot from the
/// load to its POST; as a `serde_json::Value` (each map a B-tree node of 11 slots, each
/// string its own allocation) one takes about four times the memory of its text. Whether it
/// has owners (read by the rules for every object) is noted when it is made.
#[derive(Clone, PartialEq, Eq)]
pub struct CompactObject {
    text: Box<str>,
    owned: bool,
}

impl CompactObject {
    /// The compact JSON text of `object`.
    pub fn new(object: &Value) -> Self {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // Written into a buffer reused by the thread, then copied at its exact size: a string
        // grown by doubling and shrunk keeps its block (the allocator keeps a block that is
        // at most half empty), up to twice the text for every object held.
        let text = SCRATCH.with(|scratch| {
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                return serde_json::to_string(object)
                    .unwrap_or_default()
                    .into_boxed_str();
            };
            buf.clear();
            // Serializing a `Value` cannot fail (its map keys are strings).
            let text: Box<str> = match serde_json::to_writer(&mut *buf, object) {
                Ok(()) => std::str::from_utf8(&buf).unwrap_or_default().into(),
                Err(_) => Box::default(),
            };
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
            text
        });
        CompactObject {
            text,
            owned: has_owner(object),
        }
    }

    /// The object of a snapshot file (canonical YAML), written as compact JSON straight from
    /// the YAML text ([`crate::tree::yaml_to_json`]): the same text as [`CompactObject::new`]
    /// of the parsed value, without building it.
    pub fn from_yaml(yaml: &str) -> Result<Self, crate::tree::TreeError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let from = |buf: &mut Vec<u8>| -> Result<Box<str>, crate::tree::TreeError> {
            crate::tree::yaml_to_json(yaml, buf)?;
            // JSON text written from a `str` is UTF-8.
            std::str::from_utf8(buf)
                .map(Box::from)
                .map_err(|e| crate::tree::TreeError::Serialize {
                    message: e.to_string(),
                })
        };
        // The text is copied out of a buffer reused by the thread, at its exact size (see
        // `new`).
        let text = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                let text = from(&mut buf);
                if buf.capacity() > 1 << 20 {
                    *buf = Vec::new();
                }
                text
            }
            Err(_) => from(&mut Vec::new()),
        })?;
        let owned = has_owner_json(&text);
        Ok(CompactObject { text, owned })
    }

    /// The object as a tree (parsed from its text; `Null` for an emptied slot).
    pub fn value(&self) -> Value {
        // The text was written from a `Value`: it parses back to the same value.
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `metadata.ownerReferences` is a non-empty list.
    pub fn has_owner(&self) -> bool {
        self.owned
    }

    /// Whether the text contains `s` (unescaped): a cheap test that rules out fields and
    /// values before the tree is built (JSON escapes only quotes, backslashes and control
    /// characters).
    pub(crate) fn mentions(&self, s: &str) -> bool {
        memchr::memmem::find(self.text.as_bytes(), s.as_bytes()).is_some()
    }

    /// [`crate::tree::is_token_secret`] of the object, without building the tree of a Secret
    /// of another type.
    pub(crate) fn is_token_secret(&self) -> bool {
        self.mentions(crate::tree::SERVICE_ACCOUNT_TOKEN_TYPE)
            && crate::tree::is_token_secret(&self.value())
    }
}

impl Default for CompactObject {
    /// An emptied slot: `null`.
    fn default() -> Self {
        CompactObject {
            text: "null".into(),
            owned: false,
        }
    }
}

impl From<Value> for CompactObject {
    fn from(v: Value) -> Self {
        CompactObject::new(&v)
    }
}

impl From<&Value> for CompactObject {
    fn from(v: &Value) -> Self {
        CompactObject::new(v)
    }
}

impl std::fmt::Debug for CompactObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Apply stages, in order (docs/design.md §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// CustomResourceDefinitions (then wait `Established`).
    Crds,
    /// Namespaces (then wait `Active`).
    Namespaces,
    /// StorageClasses.
    StorageClasses,
    /// PersistentVolumes then their claims (then wait `Bound`).
    Volumes,
    /// ServiceAccounts, Secrets, ConfigMaps, LimitRanges, ResourceQuotas, PriorityClasses,
    /// RuntimeClasses.
    Basics,
    /// Roles, ClusterRoles and their bindings.
    Rbac,
    /// Everything else.
    Rest,
    /// `restoreAppApiPathes` (default: Deployments, StatefulSets, DaemonSets).
    Apps,
    /// Admission webhook configurations and admission policies, after everything they could
    /// intercept: a webhook whose backend (restored above) does not run yet fails every
    /// request it matches.
    Admission,
}

impl Stage {
    /// Every stage, in apply order.
    pub const ALL: [Stage; 9] = [
        Stage::Crds,
        Stage::Namespaces,
        Stage::StorageClasses,
        Stage::Volumes,
        Stage::Basics,
        Stage::Rbac,
        Stage::Rest,
        Stage::Apps,
        Stage::Admission,
    ];
}

/// What the rules decide for one object, before the target is looked at.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Left out by the preference (counted in `numPreferenceExcluded`).
    PreferenceExcluded,
    /// Left out by a rule; the original reason string.
    Excluded(&'static str),
    /// To be restored in `stage`, as `object` (cluster-specific fields removed).
    Restore {
        /// The stage it is applied in.
        stage: Stage,
        /// The object to apply.
        object: CompactObject,
    },
}

/// Options of the rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleOptions {
    /// Keep Service nodePorts even when the last-applied configuration does not name them.
    pub preserve_nodeports: bool,
}

const CRD_GROUP: &str = "apiextensions.k8s.io";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn is(path: &ContentPath, group: &str, resource: &str) -> bool {
    // The resource first: it differs far more often, and mostly already in length.
    path.resource() == resource && path.group() == group
}

/// The string at a JSON pointer of plain `/`-separated keys (no `~` escapes, no array
/// indices). Unlike [`Value::pointer`] this allocates nothing: rules call it for every object.
fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    debug_assert!(pointer.starts_with('/') && !pointer.contains('~'));
    pointer
        .split('/')
        .skip(1)
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// Whether objects of `namespace` are restored according to the namespace lists.
pub(crate) fn namespace_selected(pref: &Preference, namespace: &str) -> bool {
    !pref.spec.exclude_namespaces.iter().any(|n| n == namespace)
        && (pref.spec.include_namespaces.is_empty()
            || pref.spec.include_namespaces.iter().any(|n| n == namespace))
}

fn class_selected(pref: &Preference, class: &str) -> bool {
    pref.spec
        .restore_nfs_storage_classes
        .iter()
        .any(|p| class.starts_with(p.as_str()))
}

/// `(group, plural)` of the custom resources of CRDs matched by `excludeCRDs`.
fn excluded_crd_resources(
    objects: &[SnapshotObject],
    pref: &Preference,
) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    if pref.spec.exclude_crds.is_empty() {
        return out;
    }
    for o in objects {
        if is(&o.path, CRD_GROUP, "customresourcedefinitions")
            && pref
                .spec
                .exclude_crds
                .iter()
                .any(|c| o.path.name().contains(c.as_str()))
        {
            let object = o.object.value();
            if let (Some(g), Some(p)) = (
                str_at(&object, "/spec/group"),
                str_at(&object, "/spec/names/plural"),
            ) {
                out.insert((g.to_string(), p.to_string()));
            }
        }
    }
    out
}

/// Whether the preference leaves `o` out.
fn preference_excludes(
    o: &SnapshotObject,
    pref: &Preference,
    excluded_crs: &HashSet<(String, String)>,
) -> bool {
    let path = &o.path;
    let p = path.as_str();
    // A Namespace object is `/api/v1/namespaces/<name>`.
    if is(path, "", "namespaces")
        && path.namespace().is_none()
        && !namespace_selected(pref, path.name())
    {
        return true;
    }
    if is(path, CRD_GROUP, "customresourcedefinitions")
        && pref
            .spec
            .exclude_crds
            .iter()
            .any(|c| path.name().contains(c.as_str()))
    {
        return true;
    }
    if !excluded_crs.is_empty()
        && excluded_crs.contains(&(path.group().to_string(), path.resource().to_string()))
    {
        return true;
    }
    if matches_any(&pref.spec.exclude_api_pathes, p) {
        return true;
    }
    if let Some(ns) = path.namespace()
        && !namespace_selected(pref, ns)
    {
        return true;
    }
    if !pref.spec.include_api_pathes.is_empty() && !matches_any(&pref.spec.include_api_pathes, p) {
        return true;
    }
    if is(path, "storage.k8s.io", "storageclasses") && !class_selected(pref, path.name()) {
        return true;
    }
    if is(path, "", "persistentvolumes") {
        let object = o.object.value();
        let class = str_at(&object, "/spec/storageClassName").unwrap_or("");
        if !class_selected(pref, class) {
            return true;
        }
    }
    false
}

/// The stage of an object that is restored (`app_pathes` from [`Preference::app_pathes`]).
pub(crate) fn stage_of(path: &ContentPath, app_pathes: &[String]) -> Stage {
    let (g, r) = (path.group(), path.resource());
    if g == CRD_GROUP && r == "customresourcedefinitions" {
        Stage::Crds
    } else if g.is_empty() && r == "namespaces" && path.namespace().is_none() {
        Stage::Namespaces
    } else if g == "storage.k8s.io" && r == "storageclasses" {
        Stage::StorageClasses
    } else if g.is_empty() && (r == "persistentvolumes" || r == "persistentvolumeclaims") {
        Stage::Volumes
    } else if g == "admissionregistration.k8s.io" {
        // Webhook configurations, ValidatingAdmissionPolicies and their bindings.
        Stage::Admission
    } else if matches_any(app_pathes, path.as_str()) {
        Stage::Apps
    } else if (g.is_empty()
        && matches!(
            r,
            "serviceaccounts" | "secrets" | "configmaps" | "limitranges" | "resourcequotas"
        ))
        || (g == "scheduling.k8s.io" && r == "priorityclasses")
        || (g == "node.k8s.io" && r == "runtimeclasses")
    {
        // PriorityClasses and RuntimeClasses: a Pod's admission looks them up.
        Stage::Basics
    } else if g == RBAC_GROUP {
        Stage::Rbac
    } else {
        Stage::Rest
    }
}

/// Decides every object of a snapshot: preference-excluded, excluded by a rule (with the
/// original reason), or restored in a stage with cluster-specific fields removed. The result
/// has one entry per input object, in the same order. Consumes the objects: a restored one is
/// moved into its selection, the others are dropped (memory stays at one copy of the tree).
pub fn select(
    objects: Vec<SnapshotObject>,
    pref: &Preference,
    opts: &RuleOptions,
) -> Vec<(ContentPath, Selection)> {
    let excluded_crs = excluded_crd_resources(&objects, pref);
    let app_pathes = pref.app_pathes();
    let pref_excluded: Vec<bool> = objects
        .iter()
        .map(|o| preference_excludes(o, pref, &excluded_crs))
        .collect();
    let kept = || {
        objects
            .iter()
            .zip(&pref_excluded)
            .filter(|(_, ex)| !**ex)
            .map(|(o, _)| o)
    };

    // Services restored (their Endpoints are made by the target's controllers).
    // Services whose Endpoints the target makes: those with a selector (its endpoints
    // controller) and `default/kubernetes` (the API server itself). Any other Service has
    // Endpoints its users (or their tools) wrote, which nothing on the target would make
    // again: those are restored.
    let services: HashSet<(String, String)> = kept()
        .filter(|o| is(&o.path, "", "services") && !o.object.has_owner())
        .filter(|o| {
            (o.path.namespace() == Some("default") && o.path.name() == "kubernetes")
                || o.object
                    .value()
                    .pointer("/spec/selector")
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
        })
        .filter_map(|o| Some((o.path.namespace()?.to_string(), o.path.name().to_string())))
        .collect();

    // Secrets restored with their ServiceAccounts (token Secrets never are).
    let secrets: HashSet<(String, String)> = kept()
        .filter(|o| {
            is(&o.path, "", "secrets") && !o.object.has_owner() && !o.object.is_token_secret()
        })
        .filter_map(|o| Some((o.path.namespace()?.to_string(), o.path.name().to_string())))
        .collect();

    // Bindings with a ServiceAccount subject in a restored namespace, and the ClusterRoles
    // they (or restored RoleBindings) refer to.
    let mut included_bindings: HashSet<String> = HashSet::new();
    let mut included_roles: HashSet<String> = HashSet::new();
    for o in kept() {
        let cluster_binding = is(&o.path, RBAC_GROUP, "clusterrolebindings");
        let role_binding = is(&o.path, RBAC_GROUP, "rolebindings");
        if !(cluster_binding || role_binding) || o.object.has_owner() {
            continue;
        }
        let object = o.object.value();
        let role_ref_kind = str_at(&object, "/roleRef/kind").unwrap_or("");
        let role_ref_name = str_at(&object, "/roleRef/name").unwrap_or("");
        let sa_in_restored_ns = object
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    str_at(s, "/kind") == Some("ServiceAccount")
                        && str_at(s, "/namespace").is_some_and(|ns| namespace_selected(pref, ns))
                })
            });
        if cluster_binding && sa_in_restored_ns {
            included_bindings.insert(o.path.name().to_string());
            included_roles.insert(role_ref_name.to_string());
        }
        if role_binding && role_ref_kind == "ClusterRole" {
            included_roles.insert(role_ref_name.to_string());
        }
    }

    // PVCs decide their PVs: a PV is restored only with the claim bound to it.
    let pvs: HashMap<&str, usize> = objects
        .iter()
        .enumerate()
        .filter(|(i, o)| !pref_excluded[*i] && is(&o.path, "", "persistentvolumes"))
        .map(|(i, o)| (o.path.name(), i))
        .collect();
    let mut pvc_decision: Vec<Option<Result<(), &'static str>>> = vec![None; objects.len()];
    let mut paired_pvs: HashMap<usize, (String, String)> = HashMap::new();
    for (i, o) in objects.iter().enumerate() {
        if pref_excluded[i] || !is(&o.path, "", "persistentvolumeclaims") || o.object.has_owner() {
            continue;
        }
        let object = o.object.value();
        let decision = (|| {
            let spec = object
                .get("spec")
                .filter(|s| s.is_object())
                .ok_or(reason::NO_PVC_SPEC)?;
            let class = str_at(spec, "/storageClassName").ok_or(reason::NO_STORAGECLASS)?;
            if !class_selected(pref, class) {
                return Err(reason::NO_STORAGECLASS);
            }
            let volume = str_at(spec, "/volumeName")
                .filter(|v| !v.is_empty())
                .ok_or(reason::NOT_BOUNDED)?;
            let pv = *pvs.get(volume).ok_or(reason::PV_NOT_FOUND)?;
            if !objects[pv]
                .object
                .value()
                .get("spec")
                .is_some_and(Value::is_object)
            {
                return Err(reason::NO_PV_SPEC);
            }
            let ns = o.path.namespace().unwrap_or_default().to_string();
            paired_pvs.insert(pv, (ns, o.path.name().to_string()));
            Ok(())
        })();
        pvc_decision[i] = Some(decision);
    }

    let decide = |i: usize, compact: CompactObject, path: &ContentPath| -> Selection {
        if pref_excluded[i] {
            return Selection::PreferenceExcluded;
        }

        if compact.has_owner() {
            return Selection::Excluded(reason::OWNER_REF);
        }
        if is(path, "", "secrets") && compact.is_token_secret() {
            return Selection::Excluded(reason::TOKEN_SECRET);
        }
        if is(path, RBAC_GROUP, "clusterroles") && !included_roles.contains(path.name()) {
            return Selection::Excluded(reason::NOT_BINDED_TO_NS);
        }
        if is(path, RBAC_GROUP, "clusterrolebindings") && !included_bindings.contains(path.name()) {
            return Selection::Excluded(reason::NOT_BINDED_TO_NS);
        }
        if is(path, "", "endpoints")
            && let Some(ns) = path.namespace()
            && services.contains(&(ns.to_string(), path.name().to_string()))
        {
            return Selection::Excluded(reason::SERVICE_EXISTS);
        }
        if let Some(Err(r)) = pvc_decision[i] {
            return Selection::Excluded(r);
        }
        let stage = stage_of(path, &app_pathes);
        // Only the kinds below are cleaned: every other object goes on as its text.
        let cleaned = [
            "persistentvolumes",
            "persistentvolumeclaims",
            "services",
            "pods",
        ]
        .iter()
        .any(|r| is(path, "", r))
            // A ServiceAccount is cleaned only in its `secrets`.
            || (is(path, "", "serviceaccounts") && compact.mentions("\"secrets\""))
            || is(path, "batch", "jobs")
            || (is(path, CRD_GROUP, "customresourcedefinitions") && path.version() == "v1");
        if !cleaned {
            return Selection::Restore {
                stage,
                object: compact,
            };
        }
        let mut object = compact.value();
        if is(path, "", "persistentvolumes") {
            match paired_pvs.get(&i) {
                Some((ns, name)) => clean_pv(&mut object, ns, name),
                None => return Selection::Excluded(reason::NOT_BOUNDED),
            }
        }
        if is(path, "", "persistentvolumeclaims") {
            clean_pvc(&mut object);
        }
        if is(path, "", "services") {
            clean_service(&mut object, opts.preserve_nodeports);
        }
        if is(path, "batch", "jobs") {
            clean_job(&mut object);
        }
        if is(path, CRD_GROUP, "customresourcedefinitions")
            && path.version() == "v1"
            && object.pointer("/spec/preserveUnknownFields") == Some(&Value::Bool(true))
        {
            // A v1 create refuses `preserveUnknownFields: true` (kept by servers that
            // converted a v1beta1 CRD): the schemas say it instead.
            super::convert::normalize_crd_v1(&mut object, &mut Vec::new());
        }
        if is(path, "", "serviceaccounts") {
            let ns = path.namespace().unwrap_or_default();
            clean_service_account(&mut object, |name| {
                secrets.contains(&(ns.to_string(), name.to_string()))
            });
        }
        if is(path, "", "pods") {
            clean_pod(&mut object);
        }
        Selection::Restore {
            stage,
            object: CompactObject::new(&object),
        }
    };
    objects
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let selection = decide(i, o.object, &o.path);
            (o.path, selection)
        })
        .collect()
}

/// [`has_owner`] of an object's compact JSON text, reading only `metadata.ownerReferences`
/// (and only when the text has a non-empty list of that name at all).
fn has_owner_json(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(rename = "ownerReferences")]
        owner_references: Option<Vec<serde::de::IgnoredAny>>,
    }
    // A prebuilt (vectorised) search: this runs over the text of every object of a plan.
    static OWNER_REFERENCES: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"ownerReferences\":["));
    if OWNER_REFERENCES.find(text.as_bytes()).is_none() {
        return false;
    }
    serde_json::from_str::<Object>(text)
        .ok()
        .and_then(|o| o.metadata?.owner_references)
        .is_some_and(|refs| !refs.is_empty())
}

fn has_owner(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn drop_bind_annotations(obj: &mut Value) {
    if let Some(annotations) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for a in BIND_ANNOTATIONS {
            annotations.remove(a);
        }
        if annotations.is_empty()
            && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
}

/// A PV keeps `claimRef {namespace, name}` only (no uid/resourceVersion), so it binds to the
/// restored claim of that name; status and bind annotations go.
pub(crate) fn clean_pv(pv: &mut Value, claim_namespace: &str, claim_name: &str) {
    drop_bind_annotations(pv);
    if let Some(map) = pv.as_object_mut() {
        map.remove("status");
    }
    if let Some(spec) = pv.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert(
            "claimRef".into(),
            serde_json::json!({ "namespace": claim_namespace, "name": claim_name }),
        );
    }
}

/// A PVC keeps `volumeName` (its PV is restored with it); status and bind annotations go.
pub(crate) fn clean_pvc(pvc: &mut Value) {
    drop_bind_annotations(pvc);
    if let Some(map) = pvc.as_object_mut() {
        map.remove("status");
    }
}

/// Template labels a server generates for a Job (with its selector) from the Job's uid and
/// name; a create carrying another Job's values is refused.
pub(crate) const JOB_GENERATED_LABELS: [&str; 4] = [
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
];

/// A Job loses the selector and template labels its server generated (unless
/// `spec.manualSelector` is true): the target generates its own from the new uid.
pub(crate) fn clean_job(job: &mut Value) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if let Some(map) = job.as_object_mut() {
        map.remove("status");
    }
    if let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
    if let Some(labels) = job
        .pointer_mut("/spec/template/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        for l in JOB_GENERATED_LABELS {
            labels.remove(l);
        }
        if labels.is_empty()
            && let Some(m) = job
                .pointer_mut("/spec/template/metadata")
                .and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
}

/// A ServiceAccount keeps in `secrets` only the Secrets restored with it: the source's token
/// Secrets are never snapshotted, and the target makes its own (before 1.24).
pub(crate) fn clean_service_account(sa: &mut Value, restored: impl Fn(&str) -> bool) {
    let Some(map) = sa.as_object_mut() else {
        return;
    };
    if let Some(list) = map.get_mut("secrets").and_then(Value::as_array_mut) {
        list.retain(|s| s.get("name").and_then(Value::as_str).is_some_and(&restored));
        if list.is_empty() {
            map.remove("secrets");
        }
    }
}

/// Where a server's ServiceAccount admission mounts a Pod's API credentials.
pub(crate) const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The container lists whose `volumeMounts` ServiceAccount admission extends.
pub(crate) const MOUNTING_CONTAINERS: [&str; 3] =
    ["containers", "initContainers", "ephemeralContainers"];

/// Names of the volumes of `pod` that its server's ServiceAccount admission added: the
/// account's token Secret (`<account>-token-xxxxx`, servers before 1.21) or a
/// `kube-api-access-xxxxx` projected token (1.21 and later), mounted nowhere but at
/// [`TOKEN_MOUNT_PATH`]. None when the Pod turns the automount off.
pub(crate) fn admitted_token_volumes(pod: &Value) -> Vec<String> {
    let Some(spec) = pod.get("spec") else {
        return Vec::new();
    };
    if spec.get("automountServiceAccountToken") == Some(&Value::Bool(false)) {
        return Vec::new();
    }
    let account = [spec.get("serviceAccountName"), spec.get("serviceAccount")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|a| !a.is_empty())
        .unwrap_or("default");
    let is_token = |v: &Value| {
        if let Some(secret) = v.pointer("/secret/secretName").and_then(Value::as_str) {
            // The token controller's names: the account, `-token-`, 5 random characters.
            return secret
                .strip_prefix(account)
                .and_then(|r| r.strip_prefix("-token-"))
                .is_some_and(|s| {
                    s.len() == 5
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                });
        }
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("kube-api-access-"))
            && v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|x| x.get("serviceAccountToken").is_some()))
    };
    let mounted_elsewhere = |name: &str| {
        MOUNTING_CONTAINERS
            .iter()
            .filter_map(|list| spec.get(*list).and_then(Value::as_array))
            .flatten()
            .filter_map(|c| c.get("volumeMounts").and_then(Value::as_array))
            .flatten()
            .any(|m| {
                m.get("name").and_then(Value::as_str) == Some(name)
                    && m.get("mountPath").and_then(Value::as_str) != Some(TOKEN_MOUNT_PATH)
            })
    };
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| is_token(v))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .filter(|n| !mounted_elsewhere(n))
        .map(str::to_string)
        .collect()
}

/// Removes volumes `names` from `pod`, with every container's mounts of them (and the mount
/// lists and volume list left empty).
pub(crate) fn remove_volumes(pod: &mut Value, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let named = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| names.iter().any(|x| x == n))
    };
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        volumes.retain(|v| !named(v));
        if volumes.is_empty() {
            spec.remove("volumes");
        }
    }
    for list in MOUNTING_CONTAINERS {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else {
                continue;
            };
            if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                mounts.retain(|m| !named(m));
                if mounts.is_empty() {
                    c.remove("volumeMounts");
                }
            }
        }
    }
}

/// A Pod (one no controller owns) is created afresh on the target, whose admission fills in
/// again what it computes. It loses:
/// - `spec.nodeName`: the node it ran on need not exist on the target, where a Pod bound to a
///   missing node never starts; the scheduler places it;
/// - `spec.priority` and `spec.preemptionPolicy`: Priority admission computes them from
///   `priorityClassName` and refuses a Pod whose values differ from the target's class;
/// - `spec.ephemeralContainers` (debugging sessions of the old Pod): a server refuses them on
///   create since 1.23 and drops them before;
/// - the API token volume of the source's ServiceAccount admission ([`admitted_token_volumes`])
///   and its mounts: before 1.21 it names the source's token Secret, which is never restored
///   (the Pod would wait for it forever); the target's admission mounts its own.
pub(crate) fn clean_pod(pod: &mut Value) {
    let tokens = admitted_token_volumes(pod);
    remove_volumes(pod, &tokens);
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        for field in [
            "nodeName",
            "priority",
            "preemptionPolicy",
            "ephemeralContainers",
        ] {
            spec.remove(field);
        }
    }
    if let Some(map) = pod.as_object_mut() {
        map.remove("status");
    }
}

/// A Service loses `clusterIP`/`clusterIPs` (unless headless `None`), and node ports that the
/// last-applied configuration does not name (unless `preserve_nodeports`); status goes.
pub(crate) fn clean_service(svc: &mut Value, preserve_nodeports: bool) {
    let applied_ports: Vec<(Option<String>, Option<i64>, i64)> = svc
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.pointer("/spec/ports").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let node_port = p.get("nodePort")?.as_i64()?;
            Some((
                p.get("name").and_then(Value::as_str).map(str::to_string),
                p.get("port").and_then(Value::as_i64),
                node_port,
            ))
        })
        .collect();
    if let Some(map) = svc.as_object_mut() {
        map.remove("status");
    }
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    if preserve_nodeports {
        return;
    }
    spec.remove("healthCheckNodePort");
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            let Some(p) = port.as_object_mut() else {
                continue;
            };
            let Some(node_port) = p.get("nodePort").and_then(Value::as_i64) else {
                continue;
            };
            let name = p.get("name").and_then(Value::as_str);
            let number = p.get("port").and_then(Value::as_i64);
            let declared = applied_ports.iter().any(|(n, num, np)| {
                *np == node_port && (n.as_deref() == name || (*num).is_some() && *num == number)
            });
            if !declared {
                p.remove("nodePort");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::restore::preference::RestorePreferenceSpec;
    use serde_json::json;

    /// A snapshot object at `path` (shared with the plan's tests).
    pub(crate) fn obj(path: &str, object: Value) -> SnapshotObject {
        SnapshotObject::new(ContentPath::parse(path).unwrap(), &object)
    }

    fn pref(spec: RestorePreferenceSpec) -> Preference {
        Preference::from_spec(None, spec, "test").unwrap()
    }

    fn reasons(objects: &[SnapshotObject], p: &Preference) -> Vec<String> {
        select(objects.to_vec(), p, &RuleOptions::default())
            .iter()
            .map(|(_, s)| match s {
                Selection::PreferenceExcluded => "pref".to_string(),
                Selection::Excluded(r) => r.to_string(),
                Selection::Restore { stage, .. } => format!("{stage:?}"),
            })
            .collect()
    }

    fn cm(ns: &str, name: &str) -> SnapshotObject {
        obj(
            &format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}}),
        )
    }

    #[test]
    fn owner_ref_token_secret_and_service_exists() {
        let objects = vec![
            obj(
                "/api/v1/namespaces/a/pods/p",
                json!({"kind": "Pod", "metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "name": "r"}]}}),
            ),
            obj(
                "/api/v1/namespaces/a/secrets/t",
                json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}}),
            ),
            obj(
                "/api/v1/namespaces/a/secrets/o",
                json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "o"}}),
            ),
            obj(
                "/api/v1/namespaces/a/services/web",
                json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"clusterIP": "10.0.0.3", "clusterIPs": ["10.0.0.3"], "selector": {"app": "web"}}}),
            ),
            obj(
                "/api/v1/namespaces/a/endpoints/web",
                json!({"kind": "Endpoints"}),
            ),
            obj(
                "/api/v1/namespaces/a/endpoints/manual",
                json!({"kind": "Endpoints"}),
            ),
            // A Service without a selector: its Endpoints are its users', restored with it.
            obj(
                "/api/v1/namespaces/a/services/db",
                json!({"kind": "Service", "metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}),
            ),
            obj(
                "/api/v1/namespaces/a/endpoints/db",
                json!({"kind": "Endpoints", "subsets": [{"addresses": [{"ip": "10.1.2.3"}]}]}),
            ),
        ];
        let p = pref(Default::default());
        assert_eq!(
            reasons(&objects, &p),
            [
                "owner-ref",
                "token-secret",
                "Basics",
                "Rest",
                "service-exists",
                "Rest",
                "Rest",
                "Rest"
            ]
        );
        let Selection::Restore { object, .. } =
            &select(objects.clone(), &p, &RuleOptions::default())[3].1
        else {
            panic!("service restored")
        };
        let object = object.value();
        assert!(object["spec"].get("clusterIP").is_none());
        assert!(object["spec"].get("clusterIPs").is_none());
    }

    #[test]
    fn cluster_roles_and_bindings_need_a_service_account_in_a_restored_namespace() {
        let crb = |name: &str, role: &str, subjects: Value| {
            obj(
                &format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}"),
                json!({"kind": "ClusterRoleBinding", "metadata": {"name": name},
                       "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": subjects}),
            )
        };
        let cr = |name: &str| {
            obj(
                &format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"),
                json!({"kind": "ClusterRole", "metadata": {"name": name}}),
            )
        };
        let objects = vec![
            crb(
                "app",
                "app-reader",
                json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "shop"}]),
            ),
            crb(
                "sys",
                "sys-role",
                json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "kube-system"}]),
            ),
            crb(
                "grp",
                "grp-role",
                json!([{"kind": "Group", "name": "system:authenticated"}]),
            ),
            cr("app-reader"),
            cr("sys-role"),
            cr("grp-role"),
            cr("used-by-rolebinding"),
            obj(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/rb",
                json!({"kind": "RoleBinding", "metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "used-by-rolebinding"}}),
            ),
        ];
        let p = pref(RestorePreferenceSpec {
            exclude_namespaces: vec!["kube-system".into()],
            ..Default::default()
        });
        assert_eq!(
            reasons(&objects, &p),
            [
                "Rbac",
                "not-binded-to-ns",
                "not-binded-to-ns",
                "Rbac",
                "not-binded-to-ns",
                "not-binded-to-ns",
                "Rbac",
                "Rbac"
            ]
        );
    }

    fn pvc(ns: &str, name: &str, spec: Option<Value>) -> SnapshotObject {
        let mut o = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "annotations": {"pv.kubernetes.io/bind-completed": "yes", "keep": "1"}},
            "status": {"phase": "Bound"}});
        if let Some(s) = spec {
            o["spec"] = s;
        }
        obj(
            &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}"),
            o,
        )
    }

    fn pv(name: &str, class: &str, spec: bool) -> SnapshotObject {
        let mut o = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name,
            "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}}, "status": {"phase": "Bound"}});
        if spec {
            o["spec"] = json!({"storageClassName": class, "claimRef": {"kind": "PersistentVolumeClaim",
                "namespace": "a", "name": "c1", "uid": "u-1", "resourceVersion": "9"}});
        }
        obj(&format!("/api/v1/persistentvolumes/{name}"), o)
    }

    #[test]
    fn pvc_rules_and_rebinding() {
        let objects = vec![
            pvc(
                "a",
                "c1",
                Some(json!({"storageClassName": "nfs-client", "volumeName": "pv1"})),
            ),
            pvc("a", "c2", None),
            pvc("a", "c3", Some(json!({"volumeName": "pv1"}))),
            pvc(
                "a",
                "c4",
                Some(json!({"storageClassName": "standard", "volumeName": "pv9"})),
            ),
            pvc("a", "c5", Some(json!({"storageClassName": "nfs-client"}))),
            pvc(
                "a",
                "c6",
                Some(json!({"storageClassName": "nfs-client", "volumeName": "missing"})),
            ),
            pvc(
                "a",
                "c7",
                Some(json!({"storageClassName": "nfs-client", "volumeName": "pv-nospec"})),
            ),
            pv("pv1", "nfs-client", true),
            pv("pv-nospec", "nfs-client", false),
            pv("pv9", "standard", true),
            pv("pv-orphan", "nfs-client", true),
        ];
        let p = pref(RestorePreferenceSpec {
            restore_nfs_storage_classes: vec!["nfs".into()],
            ..Default::default()
        });
        // pv-nospec has no class, so the preference leaves it out: its claim cannot find it.
        assert_eq!(
            reasons(&objects, &p),
            [
                "Volumes",
                "no-pvc-spec",
                "no-storageclass",
                "no-storageclass",
                "not-bounded",
                "pv-not-found",
                "pv-not-found",
                "Volumes",
                "pref",
                "pref",
                "not-bounded"
            ]
        );
        let sel: Vec<Selection> = select(objects.clone(), &p, &RuleOptions::default())
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let Selection::Restore { object: claim, .. } = &sel[0] else {
            panic!()
        };
        let claim = claim.value();
        assert_eq!(claim["spec"]["volumeName"], "pv1");
        assert!(claim.get("status").is_none());
        assert_eq!(claim["metadata"]["annotations"], json!({"keep": "1"}));
        let Selection::Restore { object: vol, .. } = &sel[7] else {
            panic!()
        };
        let vol = vol.value();
        assert_eq!(
            vol["spec"]["claimRef"],
            json!({"namespace": "a", "name": "c1"})
        );
        assert!(vol["metadata"].get("annotations").is_none());
    }

    #[test]
    fn no_pv_spec() {
        let mut objects = vec![
            pvc(
                "a",
                "c1",
                Some(json!({"storageClassName": "nfs", "volumeName": "pv1"})),
            ),
            pv("pv1", "nfs", true),
        ];
        let mut pv1 = objects[1].object.value();
        pv1["spec"] = json!("not-a-map");
        objects[1].object = pv1.into();
        // The PV's class cannot be read from a spec that is not a map: only a preference
        // matching every class (prefix "") keeps it, and then its claim reports no-pv-spec.
        let p = Preference {
            name: None,
            spec: RestorePreferenceSpec {
                restore_nfs_storage_classes: vec!["".into()],
                ..Default::default()
            },
        };
        assert_eq!(reasons(&objects, &p), ["no-pv-spec", "not-bounded"]);
    }

    #[test]
    fn preference_semantics() {
        let crd = obj(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.cattle.io",
            json!({"kind": "CustomResourceDefinition", "spec": {"group": "cattle.io", "names": {"plural": "widgets"}}}),
        );
        let cr = obj(
            "/apis/cattle.io/v1/namespaces/shop/widgets/w1",
            json!({"kind": "Widget"}),
        );
        let other_crd = obj(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com",
            json!({"kind": "CustomResourceDefinition", "spec": {"group": "example.com", "names": {"plural": "gadgets"}}}),
        );
        let objects = vec![
            obj(
                "/api/v1/namespaces/kube-system",
                json!({"kind": "Namespace"}),
            ),
            obj(
                "/api/v1/namespaces/kube-system-x",
                json!({"kind": "Namespace"}),
            ),
            cm("kube-system", "c"),
            cm("kube-system-x", "c"),
            crd,
            cr,
            other_crd,
            obj(
                "/apis/apps/v1/namespaces/shop/deployments/web",
                json!({"kind": "Deployment"}),
            ),
            obj(
                "/apis/apps/v1/namespaces/shop/deployments/system-web",
                json!({"kind": "Deployment"}),
            ),
            obj(
                "/apis/storage.k8s.io/v1/storageclasses/nfs-client",
                json!({"kind": "StorageClass"}),
            ),
            obj(
                "/apis/storage.k8s.io/v1/storageclasses/standard",
                json!({"kind": "StorageClass"}),
            ),
            obj(
                "/apis/batch/v1/namespaces/shop/jobs/j",
                json!({"kind": "Job"}),
            ),
        ];
        let p = pref(RestorePreferenceSpec {
            exclude_namespaces: vec!["kube-system".into()],
            exclude_crds: vec!["cattle".into()],
            exclude_api_pathes: vec!["/apis/apps/v1,system".into()],
            restore_nfs_storage_classes: vec!["nfs".into()],
            ..Default::default()
        });
        assert_eq!(
            reasons(&objects, &p),
            [
                "pref",
                "Namespaces",
                "pref",
                "Basics",
                "pref",
                "pref",
                "Crds",
                "Apps",
                "pref",
                "StorageClasses",
                "pref",
                "Rest"
            ]
        );
        // includeNamespaces / includeApiPathes / restoreAppApiPathes.
        let p = pref(RestorePreferenceSpec {
            include_namespaces: vec!["shop".into()],
            include_api_pathes: vec!["/apis/apps/v1".into(), "/apis/batch".into()],
            restore_app_api_pathes: vec!["/apis/batch/v1,jobs".into()],
            ..Default::default()
        });
        assert_eq!(
            reasons(&objects, &p),
            [
                "pref", "pref", "pref", "pref", "pref", "pref", "pref", "Rest", "Rest", "pref",
                "pref", "Apps"
            ]
        );
    }

    #[test]
    fn node_ports_kept_only_when_declared() {
        let applied = json!({"spec": {"ports": [{"name": "http", "port": 80, "nodePort": 30080}]}})
            .to_string();
        let mut svc = json!({"kind": "Service", "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": applied}},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "healthCheckNodePort": 31000, "ports": [
                {"name": "http", "port": 80, "nodePort": 30080},
                {"name": "https", "port": 443, "nodePort": 30443}]}, "status": {"loadBalancer": {}}});
        let mut kept = svc.clone();
        clean_service(&mut svc, false);
        assert_eq!(svc["spec"]["clusterIP"], "None");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
        assert!(svc["spec"]["ports"][1].get("nodePort").is_none());
        assert!(svc["spec"].get("healthCheckNodePort").is_none());
        assert!(svc.get("status").is_none());
        clean_service(&mut kept, true);
        assert_eq!(kept["spec"]["ports"][1]["nodePort"], 30443);
    }

    #[test]
    fn owners_are_read_from_the_json_text_as_from_the_tree() {
        for v in [
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"ownerReferences": []}}),
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}}),
            json!({"metadata": {"ownerReferences": "x"}}),
            json!({"metadata": "x", "spec": {"ownerReferences": [1]}}),
            json!({"metadata": {"annotations": {"a": "{\"ownerReferences\":[1]}"}}}),
            json!({"metadata": null}),
        ] {
            let yaml = crate::tree::to_yaml(&v).unwrap();
            let from_yaml = CompactObject::from_yaml(&yaml).unwrap();
            assert_eq!(from_yaml, CompactObject::new(&v), "{v}");
            assert_eq!(from_yaml.has_owner(), has_owner(&v), "{v}");
        }
    }

    #[test]
    fn server_generated_fields_are_dropped() {
        let mut job = json!({"kind": "Job", "spec": {"selector": {"matchLabels": {"controller-uid": "u"}},
            "template": {"metadata": {"labels": {"controller-uid": "u", "job-name": "j", "app": "x"}}}}});
        clean_job(&mut job);
        assert_eq!(
            job,
            json!({"kind": "Job", "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}})
        );
        let mut manual =
            json!({"spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        let before = manual.clone();
        clean_job(&mut manual);
        assert_eq!(manual, before);
        let mut sa = json!({"kind": "ServiceAccount", "secrets": [{"name": "sa-token-abcde"}, {"name": "registry"}]});
        clean_service_account(&mut sa, |n| n == "registry");
        assert_eq!(sa["secrets"], json!([{"name": "registry"}]));
        clean_service_account(&mut sa, |_| false);
        assert!(sa.get("secrets").is_none());
        let mut pod = json!({"spec": {"nodeName": "n1", "containers": []}, "status": {}});
        clean_pod(&mut pod);
        assert_eq!(pod, json!({"spec": {"containers": []}}));
    }

    /// What a Pod's admission looks up is created before the Pods (of the stage after), and
    /// admission webhooks after everything they could intercept.
    #[test]
    fn admission_decides_the_stages_of_classes_and_webhooks() {
        let apps = crate::restore::preference::DEFAULT_APP_PATHES.map(str::to_string);
        for (path, stage) in [
            (
                "/apis/scheduling.k8s.io/v1/priorityclasses/high",
                Stage::Basics,
            ),
            ("/apis/node.k8s.io/v1/runtimeclasses/gvisor", Stage::Basics),
            ("/api/v1/namespaces/a/configmaps/c", Stage::Basics),
            ("/api/v1/namespaces/a/pods/p", Stage::Rest),
            ("/apis/apps/v1/namespaces/a/deployments/d", Stage::Apps),
            (
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/w",
                Stage::Admission,
            ),
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/w",
                Stage::Admission,
            ),
        ] {
            let path = ContentPath::parse(path).unwrap();
            assert_eq!(stage_of(&path, &apps), stage, "{path:?}");
        }
    }

    /// What a server's admission put into a Pod goes; what its user wrote stays.
    #[test]
    fn a_pod_loses_what_the_source_admitted() {
        let token = TOKEN_MOUNT_PATH;
        let mut pod = json!({"spec": {
            "serviceAccountName": "robot", "priority": 1000, "priorityClassName": "high",
            "preemptionPolicy": "PreemptLowerPriority",
            "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
            "containers": [{"name": "c", "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "robot-token-x7k2p", "mountPath": token, "readOnly": true}]}],
            "initContainers": [{"name": "i", "volumeMounts": [
                {"name": "robot-token-x7k2p", "mountPath": token, "readOnly": true}]}],
            "volumes": [{"name": "data", "emptyDir": {}},
                {"name": "robot-token-x7k2p", "secret": {"secretName": "robot-token-x7k2p", "defaultMode": 420}}]}});
        clean_pod(&mut pod);
        assert_eq!(
            pod,
            json!({"spec": {"serviceAccountName": "robot", "priorityClassName": "high",
                "containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "initContainers": [{"name": "i"}],
                "volumes": [{"name": "data", "emptyDir": {}}]}})
        );
        // 1.21 and later: a projected token, for the default account.
        let mut pod = json!({"spec": {"containers": [{"name": "c", "volumeMounts": [
                {"name": "kube-api-access-5xq2n", "mountPath": token, "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access-5xq2n", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt"}}]}}]}});
        assert_eq!(admitted_token_volumes(&pod), ["kube-api-access-5xq2n"]);
        clean_pod(&mut pod);
        assert_eq!(pod, json!({"spec": {"containers": [{"name": "c"}]}}));
        // Not the admission's: another account's Secret, a token mounted elsewhere, a Pod
        // that turned the automount off, a name that is not the token controller's.
        for spec in [
            json!({"volumes": [{"name": "t", "secret": {"secretName": "other-token-abcde"}}]}),
            json!({"serviceAccountName": "robot", "volumes": [{"name": "t", "secret": {"secretName": "robot-token-abcdef"}}]}),
            json!({"containers": [{"name": "c", "volumeMounts": [{"name": "kube-api-access-1", "mountPath": "/token"}]}],
                "volumes": [{"name": "kube-api-access-1", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
            json!({"automountServiceAccountToken": false, "volumes": [{"name": "t", "secret": {"secretName": "default-token-abcde"}}]}),
            json!({"volumes": [{"name": "kube-api-access-1", "projected": {"sources": [{"configMap": {"name": "x"}}]}}]}),
        ] {
            let pod = json!({ "spec": spec });
            assert!(admitted_token_volumes(&pod).is_empty(), "{pod}");
        }
    }
}
