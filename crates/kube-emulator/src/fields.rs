//! Field ownership as a real API server keeps it (structured-merge-diff behind
//! `k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager`): field sets per manager and
//! operation in `metadata.managedFields` (`FieldsV1`: `f:`/`k:`/`v:`/`i:` elements, `.` for a
//! node that is itself a member), server-side apply (merge, removal of fields a manager no
//! longer applies, conflicts with other managers unless forced) and the `Update` entries of
//! every other write.
//!
//! Owns the typed walk of objects (struct fields, granular maps, atomic values, lists keyed by
//! the merge keys of built-in types or by a CRD schema's `x-kubernetes-list-*` markers).
//! Pure functions over JSON values: no store, no HTTP, no locking (`api.rs` calls it with the
//! state lock held and decides what is stored).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// One element of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pe {
    /// A struct field or map entry.
    Field(String),
    /// A list item of an associative list: the compact JSON of its key fields, sorted.
    Key(String),
    /// A list item of a set list: the compact JSON of the value.
    Value(String),
    /// A list item by position (never produced here; decoded and kept).
    Index(usize),
}

impl Pe {
    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Pe> {
        let (p, rest) = s.split_at_checked(2)?;
        match p {
            "f:" => Some(Pe::Field(rest.to_string())),
            "k:" => Some(Pe::Key(rest.to_string())),
            "v:" => Some(Pe::Value(rest.to_string())),
            "i:" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }

    /// As structured-merge-diff prints paths: `.spec`, `[name="c"]`, `[="v"]`, `[0]`.
    fn display(&self) -> String {
        match self {
            Pe::Field(f) => format!(".{f}"),
            Pe::Key(k) => {
                let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                format!("[{}]", fields.join(","))
            }
            Pe::Value(v) => format!("[={v}]"),
            Pe::Index(i) => format!("[{i}]"),
        }
    }
}

/// Prints a path as a real server's conflict messages do.
pub(crate) fn path_string(path: &[Pe]) -> String {
    path.iter().map(Pe::display).collect()
}

/// A set of field paths, as a tree: `member` says the node's own path is in the set.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Set {
    member: bool,
    children: BTreeMap<Pe, Set>,
}

impl Set {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(Set::is_empty)
    }

    fn child_mut(&mut self, pe: Pe) -> &mut Set {
        self.children.entry(pe).or_default()
    }

    fn insert(&mut self, path: &[Pe]) {
        match path.split_first() {
            None => self.member = true,
            Some((pe, rest)) => match self.children.get_mut(pe) {
                Some(c) => c.insert(rest),
                None => self.child_mut(pe.clone()).insert(rest),
            },
        }
    }

    fn union(&mut self, o: &Set) {
        self.member |= o.member;
        for (pe, c) in &o.children {
            self.child_mut(pe.clone()).union(c);
        }
    }

    fn difference(&self, o: &Set) -> Set {
        let mut out = Set {
            member: self.member && !o.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match o.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    fn intersection(&self, o: &Set) -> Set {
        let mut out = Set {
            member: self.member && o.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(oc) = o.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// The member paths, in order.
    pub fn paths(&self) -> Vec<Vec<Pe>> {
        fn walk(s: &Set, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
            if s.member && !prefix.is_empty() {
                out.push(prefix.clone());
            }
            for (pe, c) in &s.children {
                prefix.push(pe.clone());
                walk(c, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `fieldsV1` form.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (pe, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            m.insert(pe.encode(), c.to_json());
        }
        Value::Object(m)
    }

    /// Parses `fieldsV1`; `None` when it is not of that form.
    pub fn from_json(v: &Value) -> Option<Set> {
        let m = v.as_object()?;
        let mut s = Set::default();
        for (k, cv) in m {
            if k == "." {
                s.member = true;
                continue;
            }
            let pe = Pe::decode(k)?;
            let mut c = Set::from_json(cv)?;
            if c.children.is_empty() {
                c.member = true;
            }
            s.children.insert(pe, c);
        }
        Some(s)
    }
}

/// The type of a node, enough to walk it as structured-merge-diff does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty<'a> {
    /// A built-in kind; the name of the field holding this node.
    Builtin(&'a str),
    /// No schema: maps are granular, lists atomic.
    Deduced,
    /// A node of a CRD's structural schema.
    Schema(&'a Value),
    /// The root of a custom resource (its metadata is ObjectMeta), with its schema if any.
    CrRoot(Option<&'a Value>),
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Leaf,
    Atomic,
    Struct,
    Map,
    ListAtomic,
    ListSet,
    ListMap(Vec<String>),
}

/// Built-in fields that are `map[string]...` (entries are fields of their own).
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "binaryData",
    "stringData",
    "nodeSelector",
    "capacity",
    "allocatable",
    "limits",
    "requests",
    "hard",
    "used",
    "parameters",
    "overhead",
    "volumeAttributes",
];

/// Built-in fields that are atomic structs or maps (label selectors, Service selectors).
const ATOMIC_FIELDS: &[&str] = &[
    "selector",
    "podSelector",
    "namespaceSelector",
    "labelSelector",
];

/// The list type of a built-in list field: merge keys, set, or atomic.
fn builtin_list(field: &str, items: &[Value]) -> Kind {
    let keys: &[&str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "hostAliases" => &["ip"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => {
            &["containerPort", "protocol"]
        }
        "ports" if items.iter().any(|i| i.get("port").is_some()) => &["port", "protocol"],
        "finalizers" => return Kind::ListSet,
        _ => return Kind::ListAtomic,
    };
    Kind::ListMap(keys.iter().map(|k| (*k).to_string()).collect())
}

fn kind(ty: Ty, v: &Value) -> Kind {
    match v {
        Value::Object(_) => match ty {
            Ty::Builtin(f) if ATOMIC_FIELDS.contains(&f) => Kind::Atomic,
            Ty::Builtin(f) if MAP_FIELDS.contains(&f) => Kind::Map,
            Ty::Builtin(_) | Ty::CrRoot(_) => Kind::Struct,
            Ty::Deduced => Kind::Map,
            Ty::Schema(s) => {
                if s["x-kubernetes-map-type"] == "atomic"
                    || s["type"].is_string() && s["type"] != "object"
                {
                    Kind::Atomic
                } else if s.get("properties").is_some() {
                    Kind::Struct
                } else {
                    Kind::Map
                }
            }
        },
        Value::Array(items) => match ty {
            Ty::Builtin(f) => builtin_list(f, items),
            Ty::Deduced | Ty::CrRoot(_) => Kind::ListAtomic,
            Ty::Schema(s) => match s["x-kubernetes-list-type"].as_str() {
                Some("map") => Kind::ListMap(
                    s["x-kubernetes-list-map-keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect(),
                ),
                Some("set") => Kind::ListSet,
                _ => Kind::ListAtomic,
            },
        },
        _ => Kind::Leaf,
    }
}

/// The type of field `key` of a struct or map node, and whether it is a declared struct
/// field (a map entry is a member of the set on its own).
fn field_child<'a>(ty: Ty<'a>, parent: &Kind, key: &'a str) -> (Ty<'a>, bool) {
    match ty {
        Ty::Builtin(_) if *parent == Kind::Struct => (Ty::Builtin(key), true),
        Ty::Builtin(_) | Ty::Deduced => (Ty::Deduced, false),
        Ty::CrRoot(_) if key == "metadata" => (Ty::Builtin("metadata"), true),
        Ty::CrRoot(_) if key == "apiVersion" || key == "kind" => (Ty::Deduced, true),
        Ty::CrRoot(None) => (Ty::Deduced, false),
        Ty::CrRoot(Some(s)) | Ty::Schema(s) => {
            if let Some(p) = s["properties"].get(key) {
                (Ty::Schema(p), true)
            } else if s["additionalProperties"].is_object() {
                (Ty::Schema(&s["additionalProperties"]), false)
            } else {
                (Ty::Deduced, false)
            }
        }
    }
}

fn item_child(ty: Ty) -> Ty {
    match ty {
        Ty::Builtin(f) => Ty::Builtin(f),
        Ty::Schema(s) if s["items"].is_object() => Ty::Schema(&s["items"]),
        _ => Ty::Deduced,
    }
}

/// The path elements of a keyed or set list's items; `None` when an item has no key (the
/// list is then handled as atomic).
fn list_pes(kind: &Kind, items: &[Value]) -> Option<Vec<Pe>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let pe = match kind {
            Kind::ListSet => Pe::Value(item.to_string()),
            Kind::ListMap(keys) => {
                let o = item.as_object()?;
                let mut k = BTreeMap::new();
                for key in keys {
                    let v = match o.get(key) {
                        Some(v) if !v.is_null() => v.clone(),
                        // Defaulted key fields (ports' protocol) key as their default.
                        _ if key == "protocol" => json!("TCP"),
                        _ => return None,
                    };
                    k.insert(key.clone(), v);
                }
                Pe::Key(serde_json::to_string(&k).ok()?)
            }
            _ => return None,
        };
        if out.contains(&pe) {
            return None;
        }
        out.push(pe);
    }
    Some(out)
}

fn empty_or_null(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        _ => false,
    }
}

/// The fields set in `v` (structured-merge-diff's `ToFieldSet`).
fn to_set(v: &Value, ty: Ty, set: &mut Set) {
    let k = kind(ty, v);
    match &k {
        Kind::Leaf | Kind::Atomic | Kind::ListAtomic => set.member = true,
        Kind::Struct | Kind::Map => {
            for (key, cv) in v.as_object().into_iter().flatten() {
                let (cty, declared) = field_child(ty, &k, key);
                let c = set.child_mut(Pe::Field(key.clone()));
                to_set(cv, cty, c);
                if !declared || empty_or_null(Some(cv)) {
                    c.member = true;
                }
            }
        }
        Kind::ListSet | Kind::ListMap(_) => {
            let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
            match list_pes(&k, items) {
                None => set.member = true,
                Some(pes) => {
                    for (item, pe) in items.iter().zip(pes) {
                        let c = set.child_mut(pe);
                        to_set(item, item_child(ty), c);
                        c.member = true;
                    }
                }
            }
        }
    }
}

/// What changed between two versions of an object (structured-merge-diff's `Compare`).
#[derive(Default)]
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

fn compare(path: &mut Vec<Pe>, l: Option<&Value>, r: Option<&Value>, ty: Ty, c: &mut Comparison) {
    let l = l.filter(|v| !v.is_null());
    let r = r.filter(|v| !v.is_null());
    let (lk, rk) = (l.map(|v| kind(ty, v)), r.map(|v| kind(ty, v)));
    let Some(k) = rk.clone().or(lk.clone()) else {
        return;
    };
    let mismatched = matches!((&lk, &rk), (Some(a), Some(b)) if std::mem::discriminant(a) != std::mem::discriminant(b));
    let leaf = matches!(k, Kind::Leaf | Kind::Atomic | Kind::ListAtomic)
        || mismatched
        || empty_or_null(l) && empty_or_null(r);
    let mark = |c: &mut Comparison, path: &[Pe]| {
        if path.is_empty() {
            return;
        }
        if l.is_none() {
            c.added.insert(path);
        } else if r.is_none() {
            c.removed.insert(path);
        }
    };
    // Compared whole: modified when both sides differ, else added or removed.
    let whole = |c: &mut Comparison, path: &[Pe]| {
        if l.is_some() && r.is_some() {
            if l != r {
                c.modified.insert(path);
            }
        } else {
            mark(c, path);
        }
    };
    if leaf {
        whole(c, path);
        return;
    }
    match &k {
        Kind::Struct | Kind::Map => {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            let keys = lm.into_iter().flat_map(|m| m.keys()).chain(
                rm.into_iter()
                    .flat_map(|m| m.keys())
                    .filter(|k| !lm.is_some_and(|m| m.contains_key(*k))),
            );
            for key in keys {
                if key == "managedFields" && matches!(ty, Ty::Builtin("metadata")) {
                    continue;
                }
                let (cty, _) = field_child(ty, &k, key);
                path.push(Pe::Field(key.clone()));
                compare(
                    path,
                    lm.and_then(|m| m.get(key)),
                    rm.and_then(|m| m.get(key)),
                    cty,
                    c,
                );
                path.pop();
            }
            // Built-in structs exist (empty) in a new Go object: they are not members.
            if k == Kind::Map || !matches!(ty, Ty::Builtin(_)) {
                mark(c, path);
            }
        }
        Kind::ListSet | Kind::ListMap(_) => {
            let la = l
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ra = r
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let lp = list_pes(&k, la);
            let rp = list_pes(&k, ra);
            let (Some(lp), Some(rp)) = (lp, rp) else {
                whole(c, path);
                return;
            };
            let ity = item_child(ty);
            for (i, pe) in lp.iter().enumerate() {
                let ri = rp.iter().position(|p| p == pe).map(|j| &ra[j]);
                path.push(pe.clone());
                compare(path, Some(&la[i]), ri, ity, c);
                if ri.is_none() {
                    c.removed.insert(path);
                }
                path.pop();
            }
            for (j, pe) in rp.iter().enumerate() {
                if lp.contains(pe) {
                    continue;
                }
                path.push(pe.clone());
                compare(path, None, Some(&ra[j]), ity, c);
                c.added.insert(path);
                path.pop();
            }
            mark(c, path);
        }
        Kind::Leaf | Kind::Atomic | Kind::ListAtomic => {}
    }
}

/// Merges an applied configuration into the live object (structured-merge-diff's `Merge`).
fn merge(l: Option<&Value>, r: &Value, ty: Ty) -> Value {
    let Some(l) = l.filter(|v| !v.is_null()) else {
        return r.clone();
    };
    let (lk, rk) = (kind(ty, l), kind(ty, r));
    if std::mem::discriminant(&lk) != std::mem::discriminant(&rk) {
        return r.clone();
    }
    match &rk {
        Kind::Struct | Kind::Map => {
            let mut out = l.as_object().cloned().unwrap_or_default();
            for (key, rv) in r.as_object().into_iter().flatten() {
                if rv.is_null() {
                    out.remove(key);
                    continue;
                }
                let (cty, _) = field_child(ty, &rk, key);
                let merged = merge(out.get(key), rv, cty);
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        Kind::ListSet | Kind::ListMap(_) => {
            let la = l.as_array().map(Vec::as_slice).unwrap_or_default();
            let ra = r.as_array().map(Vec::as_slice).unwrap_or_default();
            let (Some(lp), Some(rp)) = (list_pes(&lk, la), list_pes(&rk, ra)) else {
                return r.clone();
            };
            let ity = item_child(ty);
            let mut out = la.to_vec();
            for (ri, rpe) in ra.iter().zip(&rp) {
                match lp.iter().position(|p| p == rpe) {
                    Some(i) => out[i] = merge(Some(&la[i]), ri, ity),
                    None => out.push(ri.clone()),
                }
            }
            Value::Array(out)
        }
        _ => r.clone(),
    }
}

/// Removes what the applier applied last time (`last`) and nobody owns any more (`owned`,
/// every manager's set after this apply); key fields of list items stay.
fn prune(v: &mut Value, last: &Set, owned: Option<&Set>, ty: Ty, keep: &[String]) {
    let k = kind(ty, v);
    match &k {
        Kind::Struct | Kind::Map => {
            let Some(m) = v.as_object_mut() else {
                return;
            };
            for (pe, lc) in &last.children {
                let Pe::Field(name) = pe else {
                    continue;
                };
                if keep.contains(name) || lc.is_empty() {
                    continue;
                }
                let oc = owned
                    .and_then(|o| o.children.get(pe))
                    .filter(|s| !s.is_empty());
                // An object's metadata stays: only what is in it goes.
                let metadata = matches!(ty, Ty::Builtin("") | Ty::CrRoot(_)) && name == "metadata";
                match oc {
                    None if metadata => {
                        if let Some(cv) = m.get_mut(name) {
                            prune(cv, lc, None, Ty::Builtin("metadata"), &[]);
                        }
                    }
                    None => {
                        m.remove(name);
                    }
                    Some(oc) if oc.member && oc.children.is_empty() => {}
                    Some(oc) => {
                        let (cty, _) = field_child(ty, &k, name);
                        if let Some(cv) = m.get_mut(name) {
                            prune(cv, lc, Some(oc), cty, &[]);
                        }
                    }
                }
            }
        }
        Kind::ListSet | Kind::ListMap(_) => {
            let Some(items) = v.as_array_mut() else {
                return;
            };
            let Some(pes) = list_pes(&k, items) else {
                return;
            };
            let keys = match &k {
                Kind::ListMap(keys) => keys.clone(),
                _ => Vec::new(),
            };
            let ity = item_child(ty);
            let mut out = Vec::with_capacity(items.len());
            for (mut item, pe) in std::mem::take(items).into_iter().zip(pes) {
                let Some(lc) = last.children.get(&pe).filter(|s| !s.is_empty()) else {
                    out.push(item);
                    continue;
                };
                match owned
                    .and_then(|o| o.children.get(&pe))
                    .filter(|s| !s.is_empty())
                {
                    None => continue,
                    Some(oc) if oc.member && oc.children.is_empty() => out.push(item),
                    Some(oc) => {
                        prune(&mut item, lc, Some(oc), ity, &keys);
                        out.push(item);
                    }
                }
            }
            *items = out;
        }
        _ => {}
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: Set,
}

impl Entry {
    fn same_id(&self, o: &Entry) -> bool {
        self.manager == o.manager
            && self.operation == o.operation
            && self.subresource == o.subresource
            && (self.operation == "Apply" || self.api_version == o.api_version)
    }

    /// As a real server names a manager in conflict messages.
    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_json());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

fn decode(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str().unwrap_or_default().to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().map(str::to_string),
                subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
                set: Set::from_json(e.get("fieldsV1").unwrap_or(&json!({})))?,
            })
        })
        .collect()
}

/// Sorted as a real server writes them: operation, time, manager, apiVersion, subresource.
fn encode(mut entries: Vec<Entry>) -> Value {
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(entries.iter().map(Entry::to_json).collect())
}

/// Where and how a write records ownership.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    /// The type of the object's root.
    pub root: Ty<'a>,
    /// The apiVersion the request was made at.
    pub api_version: String,
    /// `status` for writes to that subresource on servers recording subresources (1.22+).
    pub subresource: String,
    /// A top-level field the write cannot change (`status` for main writes of a resource
    /// with a status subresource, `spec` for status writes): never owned by it.
    pub ignored: Option<&'static str>,
}

impl Ctx<'_> {
    /// Removes the fields a real server never records (structured-merge-diff's strip set).
    fn strip(&self, s: &mut Set) {
        for f in ["apiVersion", "kind"] {
            s.children.remove(&Pe::Field(f.into()));
        }
        if let Some(f) = self.ignored {
            s.children.remove(&Pe::Field(f.into()));
        }
        if let Some(m) = s.children.get_mut(&Pe::Field("metadata".into())) {
            m.member = false;
            for f in [
                "name",
                "namespace",
                "creationTimestamp",
                "selfLink",
                "uid",
                "clusterName",
                "generation",
                "managedFields",
                "resourceVersion",
            ] {
                m.children.remove(&Pe::Field(f.into()));
            }
        }
    }

    fn comparison(&self, old: &Value, new: &Value) -> Comparison {
        let mut c = Comparison::default();
        compare(&mut Vec::new(), Some(old), Some(new), self.root, &mut c);
        self.strip(&mut c.added);
        self.strip(&mut c.modified);
        self.strip(&mut c.removed);
        c
    }

    fn entry(&self, manager: &str, operation: &str) -> Entry {
        Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: self.api_version.clone(),
            time: None,
            subresource: self.subresource.clone(),
            set: Set::default(),
        }
    }
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let entries: Vec<Entry> = entries.into_iter().filter(|e| !e.set.is_empty()).collect();
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), encode(entries));
    }
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// Records a non-apply write (create, update, merge/JSON/strategic patch) of `new` over
/// `old` by `manager`: it owns (in an `Update` entry) the fields it changed, taken from
/// other managers. `new`'s own `managedFields`, when given, replace the old ones.
pub(crate) fn record_update(
    ctx: &Ctx,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    now: &str,
) {
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let mut entries = decode(new);
    if entries.is_empty() {
        entries = decode(old);
    }
    let c = ctx.comparison(old, new);
    let mut changed = c.added;
    changed.union(&c.modified);
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&c.removed);
    }
    if !changed.is_empty() {
        let me = ctx.entry(manager, "Update");
        match entries.iter_mut().find(|e| e.same_id(&me)) {
            Some(e) => {
                e.set.union(&changed);
                e.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                set: changed,
                time: Some(now.to_string()),
                ..me
            }),
        }
    }
    write_entries(new, entries);
}

/// A refused apply: fields owned by other managers that it would change.
#[derive(Debug, Clone)]
pub(crate) struct Conflicts(Vec<(String, Vec<Pe>)>);

impl Conflicts {
    /// The message of a real server's 409.
    pub fn message(&self) -> String {
        if let [(m, p)] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {m}: {}",
                path_string(p)
            );
        }
        let mut lines = Vec::new();
        let mut last: Option<&str> = None;
        for (m, p) in &self.0 {
            if last != Some(m.as_str()) {
                lines.push(format!("conflicts with {m}:"));
                last = Some(m);
            }
            lines.push(format!("- {}", path_string(p)));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }

    /// `details.causes` of that 409.
    pub fn causes(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|(m, p)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": path_string(p)})
                })
                .collect(),
        )
    }
}

/// Server-side apply of `config` by `manager` over `live` (`None`: the apply creates the
/// object). Returns the object to store, its `managedFields` set, or the conflicts.
pub(crate) fn apply(
    ctx: &Ctx,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Conflicts> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut entries = decode(live);
    let live_plain = without_managed_fields(live);
    if entries.is_empty() && live.get("metadata").is_some() {
        // An object no manager owns yet: what it holds belongs to "before-first-apply".
        let mut s = Set::default();
        to_set(&live_plain, ctx.root, &mut s);
        ctx.strip(&mut s);
        entries.push(Entry {
            set: s,
            time: Some(now.to_string()),
            ..ctx.entry("before-first-apply", "Update")
        });
    }
    let mut merged = merge(Some(&live_plain), config, ctx.root);
    let mut new_set = Set::default();
    to_set(config, ctx.root, &mut new_set);
    ctx.strip(&mut new_set);
    let me = ctx.entry(manager, "Apply");
    let idx = match entries.iter().position(|e| e.same_id(&me)) {
        Some(i) => i,
        None => {
            entries.push(me);
            entries.len() - 1
        }
    };
    let last = std::mem::replace(&mut entries[idx].set, new_set);
    if !last.is_empty() {
        let mut owned = Set::default();
        for e in &entries {
            owned.union(&e.set);
        }
        prune(&mut merged, &last, Some(&owned), ctx.root, &[]);
    }
    let c = ctx.comparison(&live_plain, &merged);
    let mut changed = c.added;
    changed.union(&c.modified);
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == idx {
            continue;
        }
        let both = e.set.intersection(&changed);
        if !both.is_empty() {
            conflicts.push((i, both));
        }
    }
    if !force && !conflicts.is_empty() {
        let mut list: Vec<(String, Vec<Pe>)> = conflicts
            .iter()
            .flat_map(|(i, s)| {
                let m = entries[*i].printed();
                s.paths().into_iter().map(move |p| (m.clone(), p))
            })
            .collect();
        list.sort();
        return Err(Conflicts(list));
    }
    for (i, both) in conflicts {
        entries[i].set = entries[i].set.difference(&both);
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if i != idx {
            e.set = e.set.difference(&c.removed);
        }
    }
    if merged != live_plain || entries[idx].time.is_none() {
        entries[idx].time = Some(now.to_string());
    }
    write_entries(&mut merged, entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            root: Ty::Builtin(""),
            api_version: "apps/v1".into(),
            subresource: String::new(),
            ignored: Some("status"),
        }
    }

    fn deployment(image: &str, extra_env: bool) -> Value {
        let mut env = vec![json!({"name": "A", "value": "1"})];
        if extra_env {
            env.push(json!({"name": "B", "value": "2"}));
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "x"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                "template": {"spec": {"containers": [{"name": "c", "image": image, "env": env,
                    "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn fields_v1_round_trips_in_the_real_format() {
        let mut s = Set::default();
        to_set(&deployment("x", true), Ty::Builtin(""), &mut s);
        ctx().strip(&mut s);
        let j = s.to_json();
        assert_eq!(j["f:spec"]["f:selector"], json!({}));
        assert_eq!(j["f:metadata"]["f:labels"], json!({"f:app": {}}));
        let c = &j["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert_eq!(c["."], json!({}));
        assert_eq!(
            c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"],
            json!({})
        );
        assert_eq!(Set::from_json(&j), Some(s));
    }

    /// `manager` applies the Deployment of image `y` (no env) over `first`, at time `t1`.
    fn reapply(first: &Value, manager: &str, force: bool) -> Result<Value, Conflicts> {
        apply(
            &ctx(),
            Some(first),
            &deployment("y", false),
            manager,
            force,
            "t1",
        )
    }

    #[test]
    fn apply_prunes_what_the_manager_dropped() {
        let first = apply(&ctx(), None, &deployment("x", true), "m", false, "t0").unwrap();
        let second = reapply(&first, "m", false).unwrap();
        let env = &second["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env, &json!([{"name": "A", "value": "1"}]));
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"][0]["image"],
            "y"
        );
        assert_eq!(
            second["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn conflicts_name_manager_and_path() {
        let first = apply(&ctx(), None, &deployment("x", false), "a", false, "t0").unwrap();
        let err = reapply(&first, "b", false).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.template.spec.containers[name=\"c\"].image"
        );
        let forced = reapply(&first, "b", true).unwrap();
        let mf = forced["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
    }
}
