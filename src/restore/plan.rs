//! The restore plan: for each snapshot object, what a restore would do on the target
//! (docs/design.md §6.4). Pure code: the live state is given.
//!
//! Owns: the actions and their JSON shape, the comparison of a tree object with its live
//! counterpart (live pruned to the tree object's keys, so server defaults, status and
//! allocated fields are not differences — except in the maps servers never fill in, compared
//! exactly: ConfigMap/Secret data, labels, annotations minus server-written keys), the body
//! and comparison of a server-side diff, Secret masking in diffs. Must not touch: the
//! network, git.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::preference::{Preference, matches_any};
use super::rules::{CompactObject, Selection, Stage};
use crate::discovery::ApiResourceInfo;
use crate::tree::ContentPath;

/// What a restore does with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Missing on the target: POST.
    Create,
    /// Present and identical: nothing to do.
    Exists,
    /// Present and different: left alone (create-only).
    Differs,
    /// Present, different, and under `overwriteApiPathes`: PUT.
    Update,
    /// Left out by a rule (`reason` holds the original reason string).
    Excluded,
    /// Left out by the preference.
    PreferenceExcluded,
    /// The target does not serve this kind.
    Unsupported,
}

impl Action {
    /// The action's name as shown in plans (`create`, `exists`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Exists => "exists",
            Action::Differs => "differs",
            Action::Update => "update",
            Action::Excluded => "excluded",
            Action::PreferenceExcluded => "preference-excluded",
            Action::Unsupported => "unsupported",
        }
    }
}

/// One row of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    /// The object's path in the snapshot.
    pub path: ContentPath,
    /// What the restore does with it.
    pub action: Action,
    /// Why (rule reason, server-side diff fallback, ...), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The difference with the live object, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The apply stage (restored objects only).
    #[serde(skip)]
    pub stage: Option<Stage>,
    /// The body to POST/PUT (`create` and `update` only), as its JSON text.
    #[serde(skip)]
    pub body: Option<CompactObject>,
    /// The live object's resourceVersion the item was decided against (`None`: no live
    /// object, or not compared); an `update` PUTs at it.
    #[serde(skip)]
    pub live_resource_version: Option<String>,
    /// Which comparison decided a `differs`/`update` (or, with `--server-side-diff`, an
    /// `exists`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Where the object goes on the target when that is not `path` (a conversion to another
    /// version or group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ContentPath>,
}

impl PlanItem {
    /// The object's path on the target: `target` when converted, else `path`.
    pub(crate) fn target_path(&self) -> &ContentPath {
        self.target.as_ref().unwrap_or(&self.path)
    }
}

/// How a plan compared a tree object with its live counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The tree object against the live object (see [`covers`]).
    Local,
    /// A `dryRun=All` PUT of the tree object, compared with the live object.
    ServerSideDiff,
}

/// Counts of a plan (JSON names as in issue 6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Objects in the snapshot.
    pub num_snapshot_contents: u64,
    /// Objects left out by the preference.
    pub num_preference_excluded: u64,
    /// Objects left out by a rule.
    pub num_excluded: u64,
    /// Objects to create.
    pub to_create: u64,
    /// Objects present on the target and identical.
    pub already_existed: u64,
    /// Objects present on the target and different, left alone.
    pub differs: u64,
    /// Objects present, different and to be updated (PUT).
    pub to_update: u64,
    /// Objects of kinds the target does not serve.
    pub unsupported: u64,
}

/// A restore plan: the summary and one item per snapshot object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// The counts.
    pub summary: PlanSummary,
    /// One item per snapshot object.
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// Whether applying this plan would create or update anything (`--exit-code`).
    pub fn has_changes(&self) -> bool {
        self.summary.to_create > 0 || self.summary.to_update > 0
    }
}

/// Whether the target serves the resource of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Served now; whether it has a `/status` subresource.
    Yes {
        /// Whether the resource has a `/status` subresource.
        has_status_subresource: bool,
    },
    /// Served once a CRD restored by the same restore is established.
    AfterCrd,
    /// Not served.
    No,
}

/// Options of planning.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Compute unified diffs for `differs`/`update` items.
    pub diff: bool,
    /// Show Secret values in diffs.
    pub show_secrets: bool,
    /// Keep the tree object as `body` of `exists`/`differs` items (`--server-side-diff`).
    pub keep_bodies: bool,
    /// Fields masked in diffs besides Secret values: the snapshot's user-named sealed paths
    /// (`--encrypt-path`), whose values a plan holds opened.
    pub sealed: crate::tree::secret::SealedFields,
}

/// What a plan needs to know of one live object: whether it matches the tree object, its
/// resourceVersion (what a reviewed plan is decided against), and (only when it differs) the
/// live object pruned to the tree's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    /// The live object's resourceVersion.
    pub resource_version: Option<String>,
    /// `None` when the live object matches the tree object.
    pub differing: Option<Value>,
}

impl LiveObject {
    /// Compares a live object (as listed or read) with the tree object it would be restored
    /// from. Only the tree object's keys are compared, so server-owned metadata, status and
    /// defaults never count; `apiVersion`/`kind`, which list items of built-in kinds omit, are
    /// taken from `resource` when missing. The common case (equal) allocates nothing.
    pub fn compare(live: Value, tree: &Value, resource: &ApiResourceInfo) -> LiveObject {
        let resource_version = live
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let live = if resource.group.is_empty() && resource.resource == "pods" {
            without_admitted_token(live, tree)
        } else {
            live
        };
        if covers_top(&live, tree) {
            return LiveObject {
                resource_version,
                differing: None,
            };
        }
        let mut live = live;
        crate::tree::canonicalize(&mut live, resource.has_status_subresource);
        if let Some(map) = live.as_object_mut() {
            map.entry("apiVersion")
                .or_insert_with(|| Value::String(resource.api_version()));
            map.entry("kind")
                .or_insert_with(|| Value::String(resource.kind.clone()));
        }
        LiveObject {
            resource_version,
            differing: Some(prune_to(&live, tree)),
        }
    }
}

/// Label keys a server (or its controllers) writes; never a difference.
pub(crate) const SERVER_WRITTEN_LABELS: &[&str] = &[
    "kubernetes.io/metadata.name",
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "endpointslice.kubernetes.io/managed-by",
    "kubernetes.io/service-name",
];

/// Annotation keys a server (or its controllers) writes; never a difference.
pub(crate) const SERVER_WRITTEN_ANNOTATIONS: &[&str] = &[
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.daemonset.template.generation",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "pv.kubernetes.io/provisioned-by",
    "pv.kubernetes.io/migrated-to",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "kubernetes.io/service-account.uid",
    "endpoints.kubernetes.io/last-change-trigger-time",
    "control-plane.alpha.kubernetes.io/leader",
    "autoscaling.alpha.kubernetes.io/conditions",
    "autoscaling.alpha.kubernetes.io/current-metrics",
    "autoscaling.alpha.kubernetes.io/metrics",
    "batch.kubernetes.io/job-tracking",
];

/// Where in an object a comparison is: it decides whether keys only the live object has are
/// differences. Servers fill in defaults (extra keys, ignored) except in the maps they never
/// fill in: ConfigMap/Secret `data`/`binaryData`, `metadata.labels`, `metadata.annotations`
/// (minus the server-written keys above), which must match exactly.
#[derive(Debug, Clone, Copy)]
enum Ctx<'a> {
    /// The object itself (its kind decides the exact maps).
    Top(&'a str),
    /// `metadata` of an object of this kind.
    Meta(&'a str),
    /// A map compared exactly, except for these keys.
    Exact(&'static [&'static str]),
    /// Not compared (a list the server manages).
    Ignored,
    /// Anywhere else: only the tree's keys are compared.
    Inner,
}

impl<'a> Ctx<'a> {
    fn child(self, key: &str) -> Ctx<'a> {
        match self {
            Ctx::Top(kind) => match key {
                "metadata" => Ctx::Meta(kind),
                "data" | "binaryData" if kind == "ConfigMap" || kind == "Secret" => Ctx::Exact(&[]),
                "secrets" if kind == "ServiceAccount" => Ctx::Ignored,
                _ => Ctx::Inner,
            },
            // A Job's labels default to its template's when it has none.
            Ctx::Meta(kind) => match key {
                "labels" if kind != "Job" => Ctx::Exact(SERVER_WRITTEN_LABELS),
                "annotations" => Ctx::Exact(SERVER_WRITTEN_ANNOTATIONS),
                _ => Ctx::Inner,
            },
            _ => Ctx::Inner,
        }
    }

    /// Whether a key only the live object has is a difference here (a key missing from the
    /// tree object counts as an empty exact map).
    fn exact_child(self, key: &str) -> Option<&'static [&'static str]> {
        match self.child(key) {
            Ctx::Exact(ignored) => Some(ignored),
            _ => None,
        }
    }

    fn ignores(self, key: &str) -> bool {
        matches!(self, Ctx::Exact(ignored) if ignored.contains(&key))
    }
}

fn top_ctx(tree: &Value) -> Ctx<'_> {
    Ctx::Top(tree.get("kind").and_then(Value::as_str).unwrap_or(""))
}

static EMPTY_MAP: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));

/// [`covers`] at the top level, where a missing `apiVersion`/`kind` is not a difference.
fn covers_top(live: &Value, tree: &Value) -> bool {
    match (live, tree) {
        (Value::Object(l), Value::Object(_)) => {
            let top = top_ctx(tree);
            covers_map(l, tree, top, &|k| k == "apiVersion" || k == "kind")
        }
        _ => covers(live, tree),
    }
}

/// A live map against a tree value in context `ctx`; `may_miss` names tree keys whose
/// absence live is not a difference.
fn covers_map(
    l: &serde_json::Map<String, Value>,
    tree: &Value,
    ctx: Ctx<'_>,
    may_miss: &dyn Fn(&str) -> bool,
) -> bool {
    let Value::Object(t) = tree else {
        return false;
    };
    let tree_ok = t.iter().all(|(k, tv)| {
        if ctx.ignores(k) || matches!(ctx.child(k), Ctx::Ignored) {
            return true;
        }
        match l.get(k) {
            Some(lv) => covers_in(lv, tv, ctx.child(k)),
            None => may_miss(k),
        }
    });
    let live_ok = || {
        l.iter().all(|(k, lv)| {
            if t.contains_key(k) {
                return true;
            }
            if matches!(ctx, Ctx::Exact(_)) {
                return ctx.ignores(k);
            }
            match ctx.exact_child(k) {
                Some(ignored) => covers_in(lv, &EMPTY_MAP, Ctx::Exact(ignored)),
                None => true,
            }
        })
    };
    tree_ok && live_ok()
}

fn covers_in(live: &Value, tree: &Value, ctx: Ctx<'_>) -> bool {
    match (live, tree, ctx) {
        (_, _, Ctx::Ignored) => true,
        (Value::Object(l), Value::Object(_), _) => covers_map(l, tree, ctx, &|_| false),
        (Value::Array(l), Value::Array(t), _) if l.len() == t.len() => l
            .iter()
            .zip(t)
            .all(|(lv, tv)| covers_in(lv, tv, Ctx::Inner)),
        _ => live == tree,
    }
}

/// `covers_top` straight from JSON text: walks the live object's JSON against the tree
/// object's (parsed into a [`TreeRef`], its strings borrowed from the text), materialising
/// only the values the tree object has (everything else is skipped unparsed, except maps
/// compared exactly). This is what keeps a plan's comparison cheaper than parsing the LIST.
pub(crate) fn covers_json(live_json: &str, tree_json: &str) -> Result<bool, serde_json::Error> {
    let tree: TreeRef<'_> = serde_json::from_str(tree_json)?;
    let mut de = serde_json::Deserializer::from_str(live_json);
    serde::de::DeserializeSeed::deserialize(
        Covers {
            top: true,
            ctx: Ctx::Top(tree.get("kind").and_then(TreeRef::as_str).unwrap_or("")),
            tree: &tree,
        },
        &mut de,
    )
}

/// A tree object as a comparison reads it: strings borrowed from its JSON text (copied only
/// when escaped), mappings as entries sorted by key. Cheaper to build and drop than a
/// `serde_json::Value`, which a plan would otherwise parse for every object it compares.
#[derive(Debug, PartialEq)]
pub(crate) enum TreeRef<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(std::borrow::Cow<'a, str>),
    Array(Vec<TreeRef<'a>>),
    Object(Vec<(std::borrow::Cow<'a, str>, TreeRef<'a>)>),
}

/// The tree value a key missing from the tree object stands for where maps compare exactly.
static EMPTY_TREE_MAP: TreeRef<'static> = TreeRef::Object(Vec::new());

impl<'a> TreeRef<'a> {
    fn get(&self, key: &str) -> Option<&TreeRef<'a>> {
        let TreeRef::Object(entries) = self else {
            return None;
        };
        entries
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &entries[i].1)
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            TreeRef::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for TreeRef<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TreeRef<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<TreeRef<'de>, E> {
                Ok(serde_json::Number::from_f64(v).map_or(TreeRef::Null, TreeRef::Number))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::String(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::String(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E>(self) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::Null)
            }
            fn visit_none<E>(self) -> Result<TreeRef<'de>, E> {
                Ok(TreeRef::Null)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TreeRef<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(TreeRef::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TreeRef<'de>, A::Error> {
                let mut entries: Vec<(std::borrow::Cow<'de, str>, TreeRef<'de>)> = Vec::new();
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, TreeRef<'de>>()? {
                    entries.push((k, v));
                }
                // Text written from a `Value` has its keys in order already; a key given
                // twice keeps its last value, as a `Value` does.
                if !entries.is_sorted_by(|a, b| a.0 < b.0) {
                    entries.reverse();
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    entries.dedup_by(|later, kept| later.0 == kept.0);
                }
                Ok(TreeRef::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

struct Covers<'t> {
    tree: &'t TreeRef<'t>,
    top: bool,
    ctx: Ctx<'t>,
}

struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Covers<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if matches!(self.ctx, Ctx::Ignored) {
            serde::de::IgnoredAny::deserialize(d)?;
            return Ok(true);
        }
        d.deserialize_any(self)
    }
}

use serde::Deserialize as _;

impl<'de> serde::de::Visitor<'de> for Covers<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        use serde::de::IgnoredAny;
        let TreeRef::Object(t) = self.tree else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(false);
        };
        let ctx = self.ctx;
        // Inside an object's body (the common case) no key is special: skip the checks.
        let special = !matches!(ctx, Ctx::Inner);
        let skipped = |k: &str| special && (ctx.ignores(k) || matches!(ctx.child(k), Ctx::Ignored));
        let mut ok = true;
        let mut matched = 0usize;
        let (mut seen_api_version, mut seen_kind) = (false, false);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.tree.get(key.as_ref()) {
                Some(tv) => {
                    if skipped(&key) {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    matched += 1;
                    if self.top {
                        seen_api_version |= key == "apiVersion";
                        seen_kind |= key == "kind";
                    }
                    if ok {
                        let child = if special { ctx.child(&key) } else { Ctx::Inner };
                        ok = map.next_value_seed(Covers {
                            tree: tv,
                            top: false,
                            ctx: child,
                        })?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                None => {
                    if !ok || !special {
                        map.next_value::<IgnoredAny>()?;
                    } else if matches!(ctx, Ctx::Exact(_)) {
                        ok = ctx.ignores(&key);
                        map.next_value::<IgnoredAny>()?;
                    } else if let Some(ignored) = ctx.exact_child(&key) {
                        ok = map.next_value_seed(Covers {
                            tree: &EMPTY_TREE_MAP,
                            top: false,
                            ctx: Ctx::Exact(ignored),
                        })?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        // List items of built-in kinds omit apiVersion/kind: not a difference at the top.
        let allowed_missing = if self.top {
            usize::from(self.tree.get("apiVersion").is_some() && !seen_api_version)
                + usize::from(self.tree.get("kind").is_some() && !seen_kind)
        } else {
            0
        };
        // Tree keys the comparison ignores need not be there.
        let needed = if special {
            t.iter().filter(|(k, _)| !skipped(k)).count()
        } else {
            t.len()
        };
        Ok(ok && matched + allowed_missing == needed)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        use serde::de::IgnoredAny;
        let (t, mut ok): (&[TreeRef<'_>], bool) = match self.tree {
            TreeRef::Array(t) => (t, true),
            _ => (&[], false),
        };
        let mut n = 0usize;
        loop {
            let more = match t.get(n).filter(|_| ok) {
                Some(tv) => match seq.next_element_seed(Covers {
                    tree: tv,
                    top: false,
                    ctx: Ctx::Inner,
                })? {
                    Some(r) => {
                        ok = r;
                        true
                    }
                    None => false,
                },
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                break;
            }
            n += 1;
        }
        Ok(ok && n == t.len())
    }

    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        Ok(matches!(self.tree, TreeRef::Bool(b) if *b == v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
        Ok(matches!(self.tree, TreeRef::Number(n) if *n == serde_json::Number::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
        Ok(matches!(self.tree, TreeRef::Number(n) if *n == serde_json::Number::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<bool, E> {
        Ok(match serde_json::Number::from_f64(v) {
            Some(v) => matches!(self.tree, TreeRef::Number(n) if *n == v),
            None => matches!(self.tree, TreeRef::Null),
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(self.tree.as_str() == Some(v))
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(matches!(self.tree, TreeRef::Null))
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(matches!(self.tree, TreeRef::Null))
    }
}

/// Builds the plan from the rules' selections (see [`super::rules::select`]), what the target
/// serves, and the live objects of the paths concerned (keyed by content path).
pub fn build_plan<S: std::hash::BuildHasher>(
    selected: Vec<(ContentPath, Selection)>,
    served: &dyn Fn(&ContentPath) -> Served,
    live: &HashMap<String, LiveObject, S>,
    pref: &Preference,
    opts: &PlanOptions,
) -> Plan {
    let mut summary = PlanSummary {
        num_snapshot_contents: selected.len() as u64,
        ..Default::default()
    };
    let mut items = Vec::with_capacity(selected.len());
    // Paths come sorted, so consecutive objects share their resource: ask once per run.
    let mut last_served: Option<((String, String, String), Served)> = None;
    for (path, selection) in selected {
        let mut item = PlanItem {
            path,
            action: Action::Create,
            reason: None,
            diff: None,
            stage: None,
            body: None,
            live_resource_version: None,
            method: None,
            target: None,
        };
        match selection {
            Selection::PreferenceExcluded => {
                item.action = Action::PreferenceExcluded;
                summary.num_preference_excluded += 1;
            }
            Selection::Excluded(r) => {
                item.action = Action::Excluded;
                item.reason = Some(r.to_string());
                summary.num_excluded += 1;
            }
            Selection::Restore { stage, object } => {
                item.stage = Some(stage);
                let served_now = match &last_served {
                    Some(((g, v, r), served_then))
                        if g == item.path.group()
                            && v == item.path.version()
                            && r == item.path.resource() =>
                    {
                        *served_then
                    }
                    _ => {
                        let s = served(&item.path);
                        last_served = Some((
                            (
                                item.path.group().to_string(),
                                item.path.version().to_string(),
                                item.path.resource().to_string(),
                            ),
                            s,
                        ));
                        s
                    }
                };
                match served_now {
                    Served::No => {
                        item.action = Action::Unsupported;
                        item.reason = Some(unsupported_reason(&item.path));
                        summary.unsupported += 1;
                    }
                    Served::AfterCrd => {
                        item.action = Action::Create;
                        item.reason = Some("served once its CRD is established".into());
                        item.body = Some(object);
                        summary.to_create += 1;
                    }
                    Served::Yes { .. } => match live.get(item.path.as_str()) {
                        None => {
                            item.action = Action::Create;
                            item.body = Some(object);
                            summary.to_create += 1;
                        }
                        Some(LiveObject {
                            resource_version,
                            differing: None,
                        }) => {
                            item.action = Action::Exists;
                            item.live_resource_version = resource_version.clone();
                            if opts.keep_bodies {
                                item.body = Some(object);
                            }
                            summary.already_existed += 1;
                        }
                        Some(LiveObject {
                            resource_version,
                            differing: Some(pruned),
                        }) => {
                            if opts.diff {
                                item.diff = Some(object_diff(
                                    &object.value(),
                                    pruned,
                                    &item.path,
                                    opts.show_secrets,
                                    &opts.sealed,
                                ));
                            }
                            item.method = Some(Method::Local);
                            item.live_resource_version = resource_version.clone();
                            if matches_any(&pref.spec.overwrite_api_pathes, item.path.as_str()) {
                                item.action = Action::Update;
                                item.body = Some(object);
                                summary.to_update += 1;
                            } else {
                                item.action = Action::Differs;
                                if opts.keep_bodies {
                                    item.body = Some(object);
                                }
                                summary.differs += 1;
                            }
                        }
                    },
                }
            }
        }
        items.push(item);
    }
    Plan { summary, items }
}

/// The summary of `items` (after a step that changed actions).
pub(crate) fn summarize(items: &[PlanItem], num_snapshot_contents: u64) -> PlanSummary {
    let mut s = PlanSummary {
        num_snapshot_contents,
        ..Default::default()
    };
    for i in items {
        match i.action {
            Action::Create => s.to_create += 1,
            Action::Exists => s.already_existed += 1,
            Action::Differs => s.differs += 1,
            Action::Update => s.to_update += 1,
            Action::Excluded => s.num_excluded += 1,
            Action::PreferenceExcluded => s.num_preference_excluded += 1,
            Action::Unsupported => s.unsupported += 1,
        }
    }
    s
}

/// Copies into a Service `body` about to replace `live` what the target allocated and the body
/// leaves unset: `clusterIP`/`clusterIPs` (and their IP families), `healthCheckNodePort`, and
/// each port's `nodePort` (matched by port and protocol).
pub(crate) fn keep_allocated_service_fields(body: &mut Value, live: &Value) {
    let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let live_spec = &live["spec"];
    let unset = |spec: &serde_json::Map<String, Value>, f: &str| {
        spec.get(f).is_none_or(|v| v.is_null() || v == "")
    };
    for f in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "healthCheckNodePort",
    ] {
        if unset(spec, f) && !live_spec[f].is_null() {
            spec.insert(f.to_string(), live_spec[f].clone());
        }
    }
    let key = |p: &Value| {
        (
            p["port"].as_i64(),
            p["protocol"].as_str().unwrap_or("TCP").to_string(),
        )
    };
    let live_ports = live_spec["ports"].as_array().cloned().unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if !p["nodePort"].is_null() {
                continue;
            }
            if let Some(np) = live_ports
                .iter()
                .find(|l| key(l) == key(p))
                .map(|l| l["nodePort"].clone())
                .filter(|np| !np.is_null())
                && let Some(o) = p.as_object_mut()
            {
                o.insert("nodePort".into(), np);
            }
        }
    }
}

/// The body of a PUT of the tree object onto `live` (a server-side diff's `dryRun=All` one, or
/// an `update`): at the live object's resourceVersion, with the fields the server generated
/// and a restore dropped (a Job's selector and generated template labels, a Service's
/// allocations, a Pod's node, ...) taken from the live object.
pub(crate) fn prepare_replacement(body: &mut Value, live: &Value) {
    if let Some(rv) = live.pointer("/metadata/resourceVersion") {
        body["metadata"]["resourceVersion"] = rv.clone();
    }
    // Keys servers write, which a snapshot object may lack (or a restore dropped).
    for (field, keys) in [
        ("labels", SERVER_WRITTEN_LABELS),
        ("annotations", SERVER_WRITTEN_ANNOTATIONS),
    ] {
        let Some(live_map) = live
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for k in keys {
            if let Some(v) = live_map.get(*k)
                && body["metadata"][field].get(*k).is_none()
            {
                body["metadata"][field][*k] = v.clone();
            }
        }
    }
    let kind = body
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // What the target allocated a Service (a server before 1.20 refuses an update without
    // its clusterIP; a later one would allocate node ports anew).
    if kind == "Service" {
        keep_allocated_service_fields(body, live);
    }
    // The server manages a ServiceAccount's `secrets` (token Secrets before 1.24; the local
    // comparison ignores them too): the dry run keeps the live list.
    if kind == "ServiceAccount"
        && let (Some(b), Some(secrets)) = (body.as_object_mut(), live.get("secrets"))
    {
        b.insert("secrets".into(), secrets.clone());
    }
    if kind == "Pod" {
        keep_admitted_pod_fields(body, live);
    }
    // A bound PV's claimRef carries the claim's uid, which a restore dropped.
    if kind == "PersistentVolume"
        && let (Some(b), Some(l)) = (
            body.pointer("/spec/claimRef"),
            live.pointer("/spec/claimRef"),
        )
        && b.get("name") == l.get("name")
        && b.get("namespace") == l.get("namespace")
    {
        body["spec"]["claimRef"] = l.clone();
    }
    if kind == "Job" && body.pointer("/spec/manualSelector") != Some(&Value::Bool(true)) {
        if let Some(sel) = live.pointer("/spec/selector") {
            body["spec"]["selector"] = sel.clone();
        }
        if let Some(labels) = live
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object)
        {
            for k in super::rules::JOB_GENERATED_LABELS {
                if let Some(v) = labels.get(k) {
                    body["spec"]["template"]["metadata"]["labels"][k] = v.clone();
                }
            }
        }
    }
}

/// A restored Pod lost what the source's admission and scheduler gave it (`rules::clean_pod`);
/// the target's gave it its own, and a server refuses a Pod update that changes any of it (or
/// most of a Pod's spec): its node, priority, preemption policy, ephemeral containers and API
/// token volume with its mounts are taken from the live Pod.
fn keep_admitted_pod_fields(body: &mut Value, live: &Value) {
    let (Some(spec), Some(live_spec)) = (
        body.get_mut("spec").and_then(Value::as_object_mut),
        live.get("spec").and_then(Value::as_object),
    ) else {
        return;
    };
    for field in [
        "nodeName",
        "priority",
        "preemptionPolicy",
        "ephemeralContainers",
    ] {
        if !spec.contains_key(field)
            && let Some(v) = live_spec.get(field)
        {
            spec.insert(field.to_string(), v.clone());
        }
    }
    let has_volume = |spec: &serde_json::Map<String, Value>, name: &str| {
        spec.get("volumes")
            .and_then(Value::as_array)
            .is_some_and(|vs| {
                vs.iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
            })
    };
    for token in super::rules::admitted_token_volumes(live) {
        if has_volume(spec, &token) {
            continue;
        }
        let named = |v: &&Value| v.get("name").and_then(Value::as_str) == Some(token.as_str());
        if let Some(volume) = live_spec
            .get("volumes")
            .and_then(Value::as_array)
            .and_then(|vs| vs.iter().find(named))
        {
            push_to(spec, "volumes", volume.clone());
        }
        for list in super::rules::MOUNTING_CONTAINERS {
            let live_containers = live_spec.get(list).and_then(Value::as_array);
            let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in containers.iter_mut() {
                let live_c = live_containers.and_then(|lc| {
                    lc.iter()
                        .find(|l| l.get("name").is_some() && l.get("name") == c.get("name"))
                });
                let has_mount = c
                    .get("volumeMounts")
                    .and_then(Value::as_array)
                    .is_some_and(|ms| ms.iter().any(|m| named(&m)));
                let Some(mount) = live_c
                    .and_then(|l| l.get("volumeMounts"))
                    .and_then(Value::as_array)
                    .and_then(|ms| ms.iter().find(named))
                    .filter(|_| !has_mount)
                else {
                    continue;
                };
                if let Some(c) = c.as_object_mut() {
                    push_to(c, "volumeMounts", mount.clone());
                }
            }
        }
    }
}

/// Appends `v` to the list `key` of `map` (made when missing).
fn push_to(map: &mut serde_json::Map<String, Value>, key: &str, v: Value) {
    match map.get_mut(key).and_then(Value::as_array_mut) {
        Some(list) => list.push(v),
        None => {
            map.insert(key.to_string(), Value::Array(vec![v]));
        }
    }
}

/// A live Pod as a comparison reads it: without the API token volume (and mounts) its
/// server's admission added, which a restored Pod never carries (`rules::clean_pod`), unless
/// the tree object has a volume of that name itself.
fn without_admitted_token(mut live: Value, tree: &Value) -> Value {
    let tree_volumes: Vec<&str> = tree
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let mut tokens = super::rules::admitted_token_volumes(&live);
    tokens.retain(|t| !tree_volumes.contains(&t.as_str()));
    super::rules::remove_volumes(&mut live, &tokens);
    live
}

/// An object as a server-side diff compares it: without the metadata every write changes.
pub(crate) fn for_comparison(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["resourceVersion", "managedFields", "generation"] {
            m.remove(f);
        }
    }
    v
}

/// The message for a kind the target does not serve.
pub(crate) fn unsupported_reason(path: &ContentPath) -> String {
    format!(
        "the target does not serve {} {}",
        path.api_version(),
        path.resource()
    )
}

/// Whether `live` has every key of `tree` with the same value, recursively for maps and for
/// arrays of the same length, and no more keys in the maps compared exactly (see `Ctx`):
/// the allocation-free form of `prune_to(live, tree) == *tree`.
pub fn covers(live: &Value, tree: &Value) -> bool {
    match live {
        Value::Object(l) if tree.is_object() => covers_map(l, tree, top_ctx(tree), &|_| false),
        _ => covers_in(live, tree, Ctx::Inner),
    }
}

/// `live` restricted to the keys `tree` has, recursively for maps; arrays of the same length
/// are pruned element by element (server defaults inside containers, ports...). Maps compared
/// exactly keep the live object's own keys (an added label shows in a diff). Server-owned
/// metadata (resourceVersion, uid...) never appears in a tree object, so it is dropped too.
pub(crate) fn prune_to(live: &Value, tree: &Value) -> Value {
    prune_in(live, tree, top_ctx(tree))
}

fn prune_in(live: &Value, tree: &Value, ctx: Ctx<'_>) -> Value {
    match (live, tree) {
        (Value::Object(l), Value::Object(t)) => {
            let mut out = serde_json::Map::new();
            for (k, lv) in l {
                let child = ctx.child(k);
                if matches!(child, Ctx::Ignored) {
                    if let Some(tv) = t.get(k) {
                        out.insert(k.clone(), tv.clone());
                    }
                    continue;
                }
                match t.get(k) {
                    Some(tv) => {
                        out.insert(k.clone(), prune_in(lv, tv, child));
                    }
                    None if matches!(ctx, Ctx::Exact(_)) && !ctx.ignores(k) => {
                        out.insert(k.clone(), lv.clone());
                    }
                    None => {
                        if let Some(ignored) = ctx.exact_child(k) {
                            let pruned = prune_in(lv, &EMPTY_MAP, Ctx::Exact(ignored));
                            if pruned.as_object().is_some_and(|m| !m.is_empty()) {
                                out.insert(k.clone(), pruned);
                            }
                        }
                    }
                }
            }
            // Keep the tree's order of keys, then the live object's own.
            let mut ordered = serde_json::Map::new();
            for k in t.keys() {
                if let Some(v) = out.remove(k) {
                    ordered.insert(k.clone(), v);
                }
            }
            ordered.extend(out);
            Value::Object(ordered)
        }
        (Value::Array(l), Value::Array(t)) if l.len() == t.len() => Value::Array(
            l.iter()
                .zip(t)
                .map(|(lv, tv)| prune_in(lv, tv, Ctx::Inner))
                .collect(),
        ),
        _ => live.clone(),
    }
}

fn is_secret(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// Unified diff of the tree object (`-`) against the pruned live object (`+`), both as
/// canonical YAML. Unless `show_secrets`, the values of Secret `data`/`stringData` and of the
/// `sealed` fields of the object's resource are masked, with their copies in annotations
/// such as last-applied-configuration: equal values show as `***`, values that differ as
/// `*** (snapshot)` / `*** (live)`, so a diff shows which keys changed, never values.
pub(crate) fn object_diff(
    tree: &Value,
    live_pruned: &Value,
    path: &ContentPath,
    show_secrets: bool,
    sealed: &crate::tree::secret::SealedFields,
) -> String {
    let mut t = tree.clone();
    let mut l = live_pruned.clone();
    if !show_secrets {
        let fields = sealed.of(path.group(), path.resource());
        if !fields.is_empty() || is_secret(&t) || is_secret(&l) {
            crate::tree::secret::mask_pair_fields(&mut t, &mut l, "snapshot", "live", &fields);
        }
    }
    let ty = crate::tree::to_yaml(&t).unwrap_or_default();
    let ly = crate::tree::to_yaml(&l).unwrap_or_default();
    let path = path.as_str();
    crate::tree::unified_diff(&ty, &ly, &format!("snapshot{path}"), &format!("live{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::rules::tests::obj;
    use crate::restore::rules::{self, RuleOptions, SnapshotObject, select};
    use serde_json::json;

    /// A Pod restored from `tree` and admitted by the target: its node, priority and API token
    /// volume are the target's, which neither a comparison nor a replacement counts as drift.
    #[test]
    fn a_restored_pod_is_compared_and_replaced_with_what_the_target_admitted() {
        let mount =
            |n: &str| json!({"name": n, "mountPath": rules::TOKEN_MOUNT_PATH, "readOnly": true});
        let tree = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"serviceAccountName": "robot", "priorityClassName": "high",
                "containers": [{"name": "c", "image": "busybox:1", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                "volumes": [{"name": "d", "emptyDir": {}}]}});
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7"},
            "spec": {"serviceAccountName": "robot", "serviceAccount": "robot", "priorityClassName": "high",
                "priority": 2000, "preemptionPolicy": "PreemptLowerPriority", "nodeName": "node-1",
                "containers": [{"name": "c", "image": "busybox:1",
                    "volumeMounts": [{"name": "d", "mountPath": "/d"}, mount("robot-token-q8x2z")]}],
                "volumes": [{"name": "d", "emptyDir": {}},
                    {"name": "robot-token-q8x2z", "secret": {"secretName": "robot-token-q8x2z"}}]}});
        let pods = ApiResourceInfo {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            kind: "Pod".into(),
            namespaced: true,
            verbs: vec![],
            has_status_subresource: true,
        };
        assert_eq!(
            LiveObject::compare(live.clone(), &tree, &pods).differing,
            None
        );
        let mut body = tree.clone();
        prepare_replacement(&mut body, &live);
        // All but the deprecated `serviceAccount`, which a server defaults on every write.
        let mut expected = live["spec"].clone();
        expected.as_object_mut().unwrap().remove("serviceAccount");
        assert_eq!(body["spec"], expected);
        // A changed image is still a difference, and the replacement carries it.
        let mut drifted = live.clone();
        drifted["spec"]["containers"][0]["image"] = json!("busybox:2");
        let differing = LiveObject::compare(drifted.clone(), &tree, &pods).differing;
        assert_eq!(
            differing.unwrap()["spec"]["containers"][0]["image"],
            "busybox:2"
        );
        let mut body = tree.clone();
        prepare_replacement(&mut body, &drifted);
        assert_eq!(body["spec"]["containers"][0]["image"], "busybox:1");
        assert_eq!(body["spec"]["volumes"], live["spec"]["volumes"]);
        // The live Pod's ephemeral containers come as they are, their token mount once.
        let mut debugged = live.clone();
        debugged["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox", "volumeMounts": [mount("robot-token-q8x2z")]}]);
        let mut body = tree.clone();
        prepare_replacement(&mut body, &debugged);
        assert_eq!(
            body["spec"]["ephemeralContainers"],
            debugged["spec"]["ephemeralContainers"]
        );
    }

    #[test]
    fn a_replaced_service_keeps_what_the_target_allocated() {
        let live = json!({"spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
            "ipFamilies": ["IPv4"], "type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                      {"port": 53, "protocol": "UDP", "nodePort": 30053}]}});
        let mut body = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80}, {"port": 53, "protocol": "UDP", "nodePort": 31111}, {"port": 9}]}});
        super::keep_allocated_service_fields(&mut body, &live);
        assert_eq!(body["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(body["spec"]["clusterIPs"], json!(["10.96.0.7"]));
        assert_eq!(body["spec"]["ipFamilies"], json!(["IPv4"]));
        let ports = &body["spec"]["ports"];
        assert_eq!(ports[0]["nodePort"], 30080);
        assert_eq!(
            ports[1]["nodePort"], 31111,
            "a nodePort the body names is kept"
        );
        assert!(ports[2].get("nodePort").is_none());
        // A headless Service's "None" is the body's own value.
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        super::keep_allocated_service_fields(&mut headless, &live);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn exact_maps_and_list_lengths_are_differences() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"},
            "annotations": {"x": "y"}}, "data": {"k": "v"}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut l = cm.clone();
            l["metadata"]["uid"] = json!("u");
            f(&mut l);
            l
        };
        let cases: Vec<(Value, &Value, bool)> = vec![
            (with(&|_| {}), &cm, true),
            (with(&|l| l["data"]["added"] = json!("1")), &cm, false),
            (
                with(&|l| l["binaryData"] = json!({"b": "AA=="})),
                &cm,
                false,
            ),
            (
                with(&|l| l["metadata"]["labels"]["b"] = json!("2")),
                &cm,
                false,
            ),
            (
                with(&|l| l["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!("c")),
                &cm,
                true,
            ),
            (
                with(&|l| l["metadata"]["annotations"]["new"] = json!("1")),
                &cm,
                false,
            ),
            (
                with(&|l| {
                    l["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("4")
                }),
                &cm,
                true,
            ),
        ];
        for (live, tree, equal) in &cases {
            assert_eq!(covers_top(live, tree), *equal, "{live}");
            assert_eq!(
                covers_json(&live.to_string(), &tree.to_string()).unwrap(),
                *equal,
                "{live}"
            );
            assert_eq!(covers(live, tree), *equal, "{live}");
        }
        // A tree object without labels: any label added live is a difference.
        let bare = json!({"kind": "ConfigMap", "metadata": {"name": "c"}});
        let labelled =
            json!({"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"team": "x"}}});
        assert!(!covers_json(&labelled.to_string(), &bare.to_string()).unwrap());
        assert!(!covers_top(&labelled, &bare));
        assert_eq!(
            prune_to(&labelled, &bare),
            json!({"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"team": "x"}}})
        );
        // The pruned live object shows the added key.
        let added = with(&|l| l["data"]["added"] = json!("1"));
        assert_eq!(
            prune_to(&added, &cm)["data"],
            json!({"k": "v", "added": "1"})
        );
        // A Deployment's container gets an env var: the list grew.
        let dep = json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"name": "A", "value": "1"}]}]}}}});
        let mut more = dep.clone();
        more["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "B", "value": "2"}));
        more["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
            json!("/dev/termination-log");
        assert!(!covers_json(&more.to_string(), &dep.to_string()).unwrap());
        let mut defaulted = dep.clone();
        defaulted["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] =
            json!("/dev/termination-log");
        assert!(covers_json(&defaulted.to_string(), &dep.to_string()).unwrap());
        // The server manages a ServiceAccount's `secrets`.
        let sa = json!({"kind": "ServiceAccount", "metadata": {"name": "s"}, "secrets": [{"name": "a"}]});
        let live_sa = json!({"kind": "ServiceAccount", "metadata": {"name": "s"}, "secrets": [{"name": "s-token-x"}]});
        assert!(covers_json(&live_sa.to_string(), &sa.to_string()).unwrap());
        assert!(covers_top(&live_sa, &sa));
        // A Job's labels default to its template's.
        let job = json!({"kind": "Job", "metadata": {"name": "j"}});
        let live_job = json!({"kind": "Job", "metadata": {"name": "j", "labels": {"app": "x"}}});
        assert!(covers_json(&live_job.to_string(), &job.to_string()).unwrap());
    }

    #[test]
    fn live_only_fields_are_not_differences() {
        let tree = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}, "status": {}});
        assert_eq!(prune_to(&live, &tree), tree);
        assert!(covers(&live, &tree));
        for (l, t) in [
            (&live, &tree),
            (&json!({"a": [1, 2]}), &json!({"a": [1, 2, 3]})),
            (&json!({"a": [1, 2, 3]}), &json!({"a": [1, 2]})),
            (&json!({"a": {"b": "x\"y"}}), &json!({"a": {"b": "x\"y"}})),
            (&json!({"a": 1.5, "n": null}), &json!({"a": 1.5, "n": null})),
            (&json!({"a": -1}), &json!({"a": 1})),
            (&json!({"a": "s"}), &json!({"a": {"b": 1}})),
            (
                &json!({"metadata": {}}),
                &json!({"apiVersion": "v1", "kind": "K", "metadata": {}}),
            ),
            (
                &json!({"kind": "X", "metadata": {}}),
                &json!({"kind": "K", "metadata": {}}),
            ),
        ] {
            assert_eq!(
                covers_json(&l.to_string(), &t.to_string()).unwrap(),
                covers_top(l, t),
                "{l} vs {t}"
            );
        }
        let changed = json!({"metadata": {"name": "a", "labels": {"x": "2"}}, "spec": {"ports": [{"port": 80}]}});
        assert_ne!(prune_to(&changed, &tree), tree);
        assert!(!covers(&changed, &tree));
        // A key missing live is a difference.
        let missing = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}});
        assert_ne!(prune_to(&missing, &tree), tree);
        assert!(!covers(&missing, &tree));
    }

    #[test]
    fn actions_and_summary() {
        let cm = |name: &str, v: &str| {
            obj(
                &format!("/api/v1/namespaces/a/configmaps/{name}"),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "a"}, "data": {"k": v}}),
            )
        };
        let objects = vec![
            cm("new", "1"),
            cm("same", "1"),
            cm("changed", "1"),
            cm("overwrite", "1"),
            obj(
                "/apis/example.com/v1/namespaces/a/widgets/w",
                json!({"kind": "Widget"}),
            ),
            obj(
                "/api/v1/namespaces/a/pods/p",
                json!({"kind": "Pod", "metadata": {"ownerReferences": [{}]}}),
            ),
            obj(
                "/api/v1/namespaces/a/secrets/s",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"pw": "c2VjcmV0", "same": "eA=="}}),
            ),
        ];
        let pref = Preference::from_spec(
            None,
            crate::restore::RestorePreferenceSpec {
                overwrite_api_pathes: vec!["/api/v1,overwrite".into()],
                ..Default::default()
            },
            "t",
        )
        .unwrap();
        let sel = select(objects.clone(), &pref, &RuleOptions::default());
        let mut live = HashMap::new();
        let with_rv = |o: &SnapshotObject, v: &str| {
            let mut l = o.object.value();
            l["data"]["k"] = json!(v);
            l["metadata"]["resourceVersion"] = json!("42");
            l
        };
        live.insert(objects[1].path.to_string(), with_rv(&objects[1], "1"));
        live.insert(objects[2].path.to_string(), with_rv(&objects[2], "2"));
        live.insert(objects[3].path.to_string(), with_rv(&objects[3], "2"));
        let mut s = objects[6].object.value();
        s["data"]["pw"] = json!("b3RoZXI=");
        live.insert(objects[6].path.to_string(), s);
        let served = |p: &ContentPath| {
            if p.group() == "example.com" {
                Served::No
            } else {
                Served::Yes {
                    has_status_subresource: false,
                }
            }
        };
        let tree_of = |p: &str| {
            objects
                .iter()
                .find(|o| o.path.as_str() == p)
                .unwrap()
                .object
                .value()
        };
        let live: HashMap<String, LiveObject> = live
            .into_iter()
            .map(|(p, l): (String, Value)| {
                let resource = ApiResourceInfo {
                    group: String::new(),
                    version: "v1".into(),
                    resource: "configmaps".into(),
                    kind: "ConfigMap".into(),
                    namespaced: true,
                    verbs: vec![],
                    has_status_subresource: false,
                };
                let c = LiveObject::compare(l, &tree_of(&p), &resource);
                (p, c)
            })
            .collect();
        let plan = build_plan(
            sel,
            &served,
            &live,
            &pref,
            &PlanOptions {
                diff: true,
                show_secrets: false,
                keep_bodies: false,
                sealed: Default::default(),
            },
        );
        let actions: Vec<&str> = plan.items.iter().map(|i| i.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "create",
                "exists",
                "differs",
                "update",
                "unsupported",
                "excluded",
                "differs"
            ]
        );
        assert_eq!(plan.items[3].live_resource_version.as_deref(), Some("42"));
        let d = plan.items[2].diff.as_deref().unwrap();
        assert!(d.contains("-  k: '1'") || d.contains("-  k: \"1\""), "{d}");
        let secret_diff = plan.items[6].diff.as_deref().unwrap();
        assert!(
            !secret_diff.contains("c2VjcmV0") && !secret_diff.contains("b3RoZXI="),
            "{secret_diff}"
        );
        assert!(secret_diff.contains("*** (live)"), "{secret_diff}");
        assert_eq!(
            plan.summary,
            PlanSummary {
                num_snapshot_contents: 7,
                num_preference_excluded: 0,
                num_excluded: 1,
                to_create: 1,
                already_existed: 1,
                differs: 2,
                to_update: 1,
                unsupported: 1
            }
        );
        assert!(plan.has_changes());
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json["items"][0],
            json!({"path": "/api/v1/namespaces/a/configmaps/new", "action": "create"})
        );
        assert_eq!(json["summary"]["toCreate"], 1);
        assert_eq!(json["items"][5]["reason"], "owner-ref");
    }

    fn small_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-1i64..=1).prop_map(Value::from),
            Just(json!(1.5)),
            prop::sample::select(vec!["x", "y", "Secret", "v1"]).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "a",
                        "b",
                        "kind",
                        "apiVersion",
                        "metadata",
                        "labels",
                        "annotations",
                        "status",
                        "uid",
                        "finalizers",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The comparison from JSON text (tree parsed as a `TreeRef`) agrees with the one on
        /// values, on unrelated pairs and on a tree against itself with one change.
        #[test]
        fn covers_json_agrees_with_covers_top(
            tree in small_json(),
            other in small_json(),
            key in proptest::sample::select(vec!["a", "kind", "metadata", "status"]),
        ) {
            use proptest::prelude::*;
            let mut changed = tree.clone();
            if let Value::Object(m) = &mut changed {
                m.insert(key.to_owned(), other.clone());
            }
            for (l, t) in [(&other, &tree), (&tree, &tree), (&changed, &tree), (&tree, &changed)] {
                prop_assert_eq!(
                    covers_json(&l.to_string(), &t.to_string()).unwrap(),
                    covers_top(l, t),
                    "{} vs {}", l, t
                );
            }
        }
    }
}
