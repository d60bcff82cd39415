//! Versioned object storage: every object with its history (for lists at an old
//! resourceVersion), one global revision counter, the watch event log and compaction.
//!
//! Owns bytes and revisions only; API semantics (validation, side effects) live in `api`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::catalog::ResKey;
use crate::selector::{FieldSelector, LabelSelector};

/// One stored object: its JSON in the order a real API server writes it, and its labels.
///
/// A real server encodes a built-in kind from its Go struct: `kind`, `apiVersion`, `metadata`,
/// then the type's own fields (`spec`, `data`, ..., `status`); a custom resource as a map, in
/// key order (`apiVersion`, ..., `kind`, `metadata`, ...). Here: built-in kinds as `kind`,
/// `apiVersion`, `metadata`, then the other fields in key order; custom resources as
/// `apiVersion`, `kind`, then the other fields in key order.
#[derive(Debug)]
pub(crate) struct Stored {
    /// `{<type>,<rest>}`: the type is `apiVersion` and `kind` in either order.
    pub bytes: Bytes,
    /// Offset of `<rest>` (starts with `,` or is `}`) so list items can omit the type.
    pub rest: usize,
    pub labels: Vec<(String, String)>,
}

impl Stored {
    pub fn from_value(v: &Value) -> Stored {
        let mut out = Vec::with_capacity(256);
        let group = v["apiVersion"]
            .as_str()
            .and_then(|av| av.split_once('/'))
            .map_or("", |(group, _)| group);
        let built_in = crate::catalog::is_builtin_group(group);
        out.push(b'{');
        if built_in {
            out.extend_from_slice(b"\"kind\":");
            let _ = serde_json::to_writer(&mut out, &v["kind"]);
            out.extend_from_slice(b",\"apiVersion\":");
            let _ = serde_json::to_writer(&mut out, &v["apiVersion"]);
        } else {
            out.extend_from_slice(b"\"apiVersion\":");
            let _ = serde_json::to_writer(&mut out, &v["apiVersion"]);
            out.extend_from_slice(b",\"kind\":");
            let _ = serde_json::to_writer(&mut out, &v["kind"]);
        }
        let rest = out.len();
        let first = if built_in { v.get("metadata") } else { None };
        if let Some(metadata) = first {
            out.extend_from_slice(b",\"metadata\":");
            let _ = serde_json::to_writer(&mut out, metadata);
        }
        if let Some(map) = v.as_object() {
            for (k, val) in map {
                if k == "apiVersion" || k == "kind" || (first.is_some() && k == "metadata") {
                    continue;
                }
                out.push(b',');
                let _ = serde_json::to_writer(&mut out, k);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, val);
            }
        }
        out.push(b'}');
        let labels = v["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Stored {
            bytes: Bytes::from(out),
            rest,
            labels,
        }
    }

    /// The object as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// Append the object as a list item (without `apiVersion`/`kind` when `typed` is false).
    pub fn write_item(&self, out: &mut Vec<u8>, typed: bool) {
        if typed {
            out.extend_from_slice(&self.bytes);
        } else {
            out.push(b'{');
            let rest = &self.bytes[self.rest..];
            out.extend_from_slice(rest.strip_prefix(b",").unwrap_or(rest));
        }
    }
}

/// One revision of one key; `None` marks a deletion.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub rv: u64,
    pub obj: Option<Arc<Stored>>,
}

/// Object key: (namespace, name); namespace is empty for cluster-scoped objects.
pub(crate) type ObjKey = (String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the event log and sent to watchers.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub res: ResKey,
    pub ns: String,
    pub name: String,
    pub etype: EventType,
    pub obj: Arc<Stored>,
}

/// All stored objects and their history.
pub(crate) struct Store {
    pub rv: u64,
    /// Lowest revision still answerable (lists at older ones get 410).
    pub compacted: u64,
    pub window: u64,
    tables: HashMap<ResKey, BTreeMap<ObjKey, Vec<Version>>>,
    log: VecDeque<Arc<Event>>,
    writes_since_sweep: u64,
    pub events: broadcast::Sender<Arc<Event>>,
}

/// What a list page found.
pub(crate) struct Page {
    pub items: Vec<Arc<Stored>>,
    /// Key of the last returned item when more may follow.
    pub next: Option<ObjKey>,
}

impl Store {
    pub fn new(window: u64) -> Self {
        let (events, _) = broadcast::channel(8192);
        Store {
            rv: 1,
            compacted: 1,
            window: window.max(1),
            tables: HashMap::new(),
            log: VecDeque::new(),
            writes_since_sweep: 0,
            events,
        }
    }

    /// The current object at (ns, name).
    pub fn get(&self, res: &ResKey, ns: &str, name: &str) -> Option<Arc<Stored>> {
        let versions = self
            .tables
            .get(res)?
            .get(&(ns.to_string(), name.to_string()))?;
        versions.last()?.obj.clone()
    }

    /// Write (create or update) an object: assigns the next revision and returns the stored form.
    pub fn put(
        &mut self,
        res: &ResKey,
        ns: &str,
        name: &str,
        mut v: Value,
        etype: EventType,
    ) -> (Arc<Stored>, Value) {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let stored = Arc::new(Stored::from_value(&v));
        self.record(
            res,
            ns,
            name,
            rv,
            Some(stored.clone()),
            etype,
            stored.clone(),
        );
        (stored, v)
    }

    /// Delete an object; `last` is its final state (sent with the DELETED event).
    pub fn delete(&mut self, res: &ResKey, ns: &str, name: &str, mut last: Value) -> Value {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let stored = Arc::new(Stored::from_value(&last));
        self.record(res, ns, name, rv, None, EventType::Deleted, stored);
        last
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        res: &ResKey,
        ns: &str,
        name: &str,
        rv: u64,
        obj: Option<Arc<Stored>>,
        etype: EventType,
        event_obj: Arc<Stored>,
    ) {
        let compacted = self.compacted_after(rv);
        let table = self.tables.entry(res.clone()).or_default();
        let key = (ns.to_string(), name.to_string());
        let versions = table.entry(key).or_default();
        versions.push(Version { rv, obj });
        prune(versions, compacted);
        let ev = Arc::new(Event {
            rv,
            res: res.clone(),
            ns: ns.to_string(),
            name: name.to_string(),
            etype,
            obj: event_obj,
        });
        self.log.push_back(ev.clone());
        let _ = self.events.send(ev);
        self.compact_to(compacted);
    }

    fn compacted_after(&self, rv: u64) -> u64 {
        self.compacted.max(rv.saturating_sub(self.window))
    }

    /// Forget history up to `to` (lists/watches at older revisions get 410).
    pub fn compact_to(&mut self, to: u64) {
        if to <= self.compacted {
            return;
        }
        self.compacted = to;
        while self.log.front().is_some_and(|e| e.rv <= to) {
            self.log.pop_front();
        }
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= 4096 {
            self.sweep();
        }
    }

    /// Drop compacted history of every key (amortised over many writes).
    pub fn sweep(&mut self) {
        self.writes_since_sweep = 0;
        let c = self.compacted;
        for table in self.tables.values_mut() {
            table.retain(|_, versions| {
                prune(versions, c);
                !versions.is_empty()
            });
        }
    }

    /// Mark everything so far as the start of history (used after seeding).
    pub fn compact_all(&mut self) {
        self.compact_to(self.rv);
        self.sweep();
    }

    /// Current objects of a resource (optionally in one namespace).
    pub fn current(&self, res: &ResKey, ns: Option<&str>) -> Vec<(ObjKey, Arc<Stored>)> {
        let Some(table) = self.tables.get(res) else {
            return Vec::new();
        };
        let iter: Box<dyn Iterator<Item = (&ObjKey, &Vec<Version>)>> = match ns {
            Some(ns) => Box::new(
                table
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |(k, _)| k.0 == ns),
            ),
            None => Box::new(table.iter()),
        };
        iter.filter_map(|(k, vs)| vs.last()?.obj.clone().map(|o| (k.clone(), o)))
            .collect()
    }

    /// Whether any current object of any namespaced table lives in `ns`.
    pub fn namespaced_keys(&self, ns: &str) -> Vec<(ResKey, String)> {
        let mut out = Vec::new();
        for (res, table) in &self.tables {
            for (k, vs) in table
                .range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
            {
                if vs.last().is_some_and(|v| v.obj.is_some()) {
                    out.push((res.clone(), k.1.clone()));
                }
            }
        }
        out
    }

    /// One page of a list at revision `at`, after `start` (exclusive).
    #[allow(clippy::too_many_arguments)]
    pub fn list_page(
        &self,
        res: &ResKey,
        ns: Option<&str>,
        at: u64,
        start: Option<&ObjKey>,
        limit: usize,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Page {
        let mut items = Vec::new();
        let Some(table) = self.tables.get(res) else {
            return Page { items, next: None };
        };
        let lower = match (start, ns) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        let needs_body = fields.needs_body();
        let mut last: Option<ObjKey> = None;
        for (k, versions) in table.range((lower, Bound::Unbounded)) {
            if let Some(ns) = ns
                && k.0 != ns
            {
                break;
            }
            let Some(obj) = versions
                .iter()
                .rev()
                .find(|v| v.rv <= at)
                .and_then(|v| v.obj.as_ref())
            else {
                continue;
            };
            if !labels.matches(&obj.labels) {
                continue;
            }
            if !fields.is_empty() {
                let body = needs_body.then(|| obj.value());
                if !fields.matches(&k.0, &k.1, body.as_ref()) {
                    continue;
                }
            }
            if items.len() == limit {
                return Page { next: last, items };
            }
            items.push(obj.clone());
            last = Some(k.clone());
        }
        Page { items, next: None }
    }

    /// Events after revision `after` (for watches that start in the past).
    pub fn events_after(&self, after: u64) -> Vec<Arc<Event>> {
        let idx = self.log.partition_point(|e| e.rv <= after);
        self.log.range(idx..).cloned().collect()
    }
}

/// Keep versions newer than `compacted` plus the state as of `compacted`.
fn prune(versions: &mut Vec<Version>, compacted: u64) {
    let old = versions.iter().filter(|v| v.rv <= compacted).count();
    if old == 0 {
        return;
    }
    let keep_from = old - 1;
    versions.drain(..keep_from);
    if versions[0].obj.is_none() && versions[0].rv <= compacted {
        versions.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn res() -> ResKey {
        ResKey {
            group: String::new(),
            plural: "configmaps".into(),
        }
    }

    /// Random writes and deletes; every list at a retained revision equals a naive model.
    #[test]
    fn lists_at_every_retained_revision_match_a_model() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut store = Store::new(40);
        let mut snapshots: BTreeMap<u64, BTreeMap<ObjKey, String>> = BTreeMap::new();
        let mut live: BTreeMap<ObjKey, String> = BTreeMap::new();
        for step in 0..400 {
            let key = (
                format!("ns{}", rng.usize(..3)),
                format!("o{}", rng.usize(..12)),
            );
            if live.contains_key(&key) && rng.bool() {
                let last = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": key.1, "namespace": key.0}});
                store.delete(&res(), &key.0, &key.1, last);
                live.remove(&key);
            } else {
                let v = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": key.1, "namespace": key.0}, "data": {"step": step.to_string()}});
                store.put(&res(), &key.0, &key.1, v, EventType::Modified);
                live.insert(key, step.to_string());
            }
            snapshots.insert(store.rv, live.clone());
            if step % 97 == 0 {
                store.sweep();
            }
        }
        let none = (LabelSelector::default(), FieldSelector::default());
        for (rv, model) in snapshots.range(store.compacted..) {
            let mut got = BTreeMap::new();
            let mut start: Option<ObjKey> = None;
            loop {
                let page = store.list_page(&res(), None, *rv, start.as_ref(), 5, &none.0, &none.1);
                for o in &page.items {
                    let v = o.value();
                    let k = (
                        v["metadata"]["namespace"].as_str().unwrap().to_string(),
                        v["metadata"]["name"].as_str().unwrap().to_string(),
                    );
                    got.insert(k, v["data"]["step"].as_str().unwrap().to_string());
                }
                match page.next {
                    Some(n) => start = Some(n),
                    None => break,
                }
            }
            assert_eq!(&got, model, "list at revision {rv}");
        }
        // the event log covers exactly the retained window
        let evs = store.events_after(store.compacted);
        assert_eq!(evs.len() as u64, store.rv - store.compacted);
    }
}
