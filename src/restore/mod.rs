//! Restore: preference filter, rules, plan (diff tree vs live) and create-only apply
//! (docs/design.md §6).
//!
//! Owns: which snapshot objects are restored, in what order and with which cluster-specific
//! fields removed; the plan and the Restore status in the original project's shape.
//! Must not touch: git (reads trees through `mirror`), the source cluster, the store (only
//! [`prepare()`] reaches it, through `store::sync::ensure_local`).
//!
//! Entry points (shared by the CLI, the controller and the file-drop watcher):
//! [`prepare()`] (the one preparation: pull the snapshot from the store when the mirror lacks
//! it, load its tree on a blocking thread, take the part the preference asks for —
//! `includePaths`, `createNamespaces`, `namespaceMapping` in `subset` and `mapping` — and
//! probe the target), [`load_snapshot`] (the tree of a
//! snapshot in the mirror; it never pulls), [`plan()`] (read-only), [`apply_plan`], and
//! [`restore`] = plan + apply.

pub mod apply;
pub mod convert;
pub mod live;
pub mod mapping;
pub mod plan;
pub mod plan_file;
pub mod preference;
mod prepare;
pub mod rules;
mod sealed;
pub mod status;
pub mod subset;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument as _;

pub use apply::{ApplyOptions, ApplyReport, apply, dry_run_status};
pub use plan::{Action, LiveObject, Plan, PlanItem, PlanOptions, PlanSummary, Served, build_plan};
pub use preference::{Preference, PreferenceError, RestorePreferenceSpec};
pub use prepare::{PrepareError, Prepared, prepare};
pub use rules::{CompactObject, RuleOptions, Selection, SnapshotObject, Stage, select};
pub use status::RestoreStatus;

use crate::cluster::{Cluster, ClusterError};
use crate::discovery::{self, ApiResourceInfo, Discovered, DiscoveryError, Versions};
use crate::mirror::{Mirror, MirrorError};
use crate::tree::ContentPath;

/// Errors that stop a plan or a restore before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot is not in the mirror.
    #[error("snapshot {name:?} not found in the mirror {}", git_dir.display())]
    UnknownSnapshot {
        /// The snapshot's name.
        name: String,
        /// The mirror's directory.
        git_dir: PathBuf,
    },
    /// Reading the snapshot from the mirror failed.
    #[error("snapshot {name:?}: {source}")]
    Mirror {
        /// The snapshot's name.
        name: String,
        /// The mirror error.
        #[source]
        source: MirrorError,
    },
    /// A file of the snapshot is not a valid object.
    #[error("snapshot {name:?}: file {file}: {message}")]
    BadObject {
        /// The snapshot's name.
        name: String,
        /// The file's path in the snapshot.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// Discovering the target cluster's resources failed.
    #[error("target cluster: {0}")]
    Discovery(Box<DiscoveryError>),
    /// Sealed Secret values that were not opened (no identity, or a wrong one).
    #[error(transparent)]
    Sealed(#[from] crate::crypt::CryptError),
    /// Listing the target's live objects failed.
    #[error("target cluster: listing {collection}: {source}")]
    Live {
        /// The collection being listed.
        collection: String,
        /// The cluster error.
        #[source]
        source: Box<ClusterError>,
    },
}

impl From<DiscoveryError> for RestoreError {
    fn from(e: DiscoveryError) -> Self {
        RestoreError::Discovery(Box::new(e))
    }
}

/// A snapshot's objects, read from the mirror.
#[derive(Debug, Clone)]
pub struct LoadedSnapshot {
    /// The snapshot's name.
    pub name: String,
    /// The snapshot's commit id.
    pub commit: String,
    /// Its objects.
    pub objects: Vec<SnapshotObject>,
    /// How its Secret values are sealed (`None`: in the clear); see [`LoadedSnapshot::open_sealed`].
    pub encryption: Option<crate::tree::Encryption>,
    /// Its wrapped data keys (`.k8s-snap/keys/<id>.age`), by id.
    pub keys: std::collections::BTreeMap<String, Vec<u8>>,
    /// Objects a namespace mapping moved: their path in the snapshot, by their new path (a
    /// sealed value is bound to the path it was sealed at; see [`LoadedSnapshot::open_sealed`]).
    pub moved_from: std::collections::BTreeMap<String, String>,
}

/// Everything a plan or restore can be told.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions {
    /// Writes (and LISTs) in flight at once within a stage (`--threads`, default 2).
    pub threads: usize,
    /// Keep Service nodePorts not named in last-applied (`--preserve-nodeports`).
    pub preserve_nodeports: bool,
    /// Compute diffs of `differs`/`update` items (`plan --diff`).
    pub diff: bool,
    /// Show Secret values in diffs (`--show-secrets`).
    pub show_secrets: bool,
    /// Validate every `create` with a server-side `dryRun=All` POST (`plan --server-dry-run`).
    pub server_dry_run: bool,
    /// Decide `exists`/`differs` of every object present on the target with a `dryRun=All`
    /// PUT of the snapshot object, compared with the live object (`plan --server-side-diff`,
    /// the method of `kubectl diff`).
    pub server_side_diff: bool,
    /// How long to wait for CRDs, Namespaces and PV/PVC pairs.
    pub wait_timeout: Duration,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: 2,
            preserve_nodeports: false,
            diff: false,
            show_secrets: false,
            server_dry_run: false,
            server_side_diff: false,
            wait_timeout: Duration::from_secs(60),
        }
    }
}

/// Reads a snapshot's objects from the local mirror at `git_dir`. Blocking (git); call it
/// from `spawn_blocking` in async code. This is the one "load the snapshot tree" step: pulling
/// from the store when the snapshot is only there belongs here.
pub fn load_snapshot(git_dir: &Path, name: &str) -> Result<LoadedSnapshot, RestoreError> {
    let mirror_err = |source| RestoreError::Mirror {
        name: name.to_string(),
        source,
    };
    if !git_dir.exists() {
        return Err(RestoreError::UnknownSnapshot {
            name: name.to_string(),
            git_dir: git_dir.to_path_buf(),
        });
    }
    let mirror = Mirror::open(git_dir).map_err(mirror_err)?;
    let info = mirror.snapshot(name).map_err(mirror_err)?.ok_or_else(|| {
        RestoreError::UnknownSnapshot {
            name: name.to_string(),
            git_dir: git_dir.to_path_buf(),
        }
    })?;
    // Blobs are read and parsed on every core (one repository handle per thread), in tree
    // order: the same objects, in the same order, as one walk would give.
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8);
    let objects = mirror
        .map_files(
            &info.commit,
            &["api", "apis"],
            threads,
            crate::tree::is_object_file,
            |file, bytes| {
                let path = ContentPath::from_file_path(file).map_err(|e| e.to_string())?;
                let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
                // Held as compact text from here to the POST, written without a tree.
                let object = CompactObject::from_yaml(text).map_err(|e| e.to_string())?;
                Ok(Some(SnapshotObject { path, object }))
            },
        )
        .map_err(mirror_err)?
        .map_err(|(file, message)| RestoreError::BadObject {
            name: name.to_string(),
            file,
            message,
        })?;
    let keys = sealed::load_keys(&mirror, &info.commit).map_err(mirror_err)?;
    Ok(LoadedSnapshot {
        name: name.to_string(),
        commit: info.commit.to_string(),
        objects,
        encryption: info.meta.encryption,
        keys,
        moved_from: Default::default(),
    })
}

/// `(group, version, plural)` of the custom resources the restored CRDs will serve.
fn crd_served_resources(
    selected: &[(ContentPath, Selection)],
) -> HashSet<(String, String, String)> {
    let mut out = HashSet::new();
    for (_, s) in selected {
        let Selection::Restore {
            stage: Stage::Crds,
            object,
        } = s
        else {
            continue;
        };
        let object = &object.value();
        let group = object.pointer("/spec/group").and_then(Value::as_str);
        let plural = object.pointer("/spec/names/plural").and_then(Value::as_str);
        let (Some(group), Some(plural)) = (group, plural) else {
            continue;
        };
        for v in object
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = v.get("name").and_then(Value::as_str) {
                out.insert((group.to_string(), name.to_string(), plural.to_string()));
            }
        }
    }
    out
}

/// The target's discovery, started before the snapshot's tree is read so that the two overlap
/// (a plan needs both), and awaited by [`plan_with`]. Dropping it stops its requests.
#[derive(Debug)]
pub struct Discovering {
    task: tokio::task::JoinHandle<Result<Discovered, DiscoveryError>>,
    server: String,
}

impl Discovering {
    /// Starts discovering every API resource `cluster` serves, on its own task.
    pub fn start(cluster: &Cluster) -> Discovering {
        let target = cluster.clone();
        Discovering {
            task: tokio::spawn(
                async move { discovery::discover(&target, Versions::All, 8).await }
                    .in_current_span(),
            ),
            server: cluster.server().to_string(),
        }
    }

    async fn finish(mut self) -> Result<Discovered, RestoreError> {
        match (&mut self.task).await {
            Ok(d) => Ok(d?),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(RestoreError::Discovery(Box::new(DiscoveryError::Request {
                    what: "the target's API groups".into(),
                    source: ClusterError::Unreachable {
                        server: self.server.clone(),
                        message: format!("discovery task: {e}"),
                    },
                }))),
            },
        }
    }
}

impl Drop for Discovering {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plans a restore of `snapshot` onto `cluster`: discovery, one LIST per resource concerned
/// (compared page by page), then the pure planning of [`build_plan`]. Read-only (a server-side
/// dry run, if asked, writes nothing either). Consumes the snapshot: the restored objects move
/// into the plan as request bodies.
pub async fn plan(
    cluster: &Cluster,
    snapshot: LoadedSnapshot,
    pref: &Preference,
    opts: &RestoreOptions,
) -> Result<Plan, RestoreError> {
    plan_with(cluster, snapshot, Discovering::start(cluster), pref, opts).await
}

/// [`plan()`] with the target's discovery already started (by [`prepare()`], while it read the
/// snapshot's tree).
pub async fn plan_with(
    cluster: &Cluster,
    snapshot: LoadedSnapshot,
    discovering: Discovering,
    pref: &Preference,
    opts: &RestoreOptions,
) -> Result<Plan, RestoreError> {
    let span = tracing::info_span!("plan", snapshot = %snapshot.name, server = %cluster.server());
    // Never plan (let alone restore) ciphertext as Secret values: fail before any request.
    snapshot.ensure_opened()?;
    async move {
        let started = std::time::Instant::now();
        // Discovery (network) runs on its own task while the rules (pure CPU) run here: on a
        // small machine the two overlap instead of adding up.
        let rule_opts = RuleOptions {
            preserve_nodeports: opts.preserve_nodeports,
        };
        let sealed = snapshot.sealed_fields();
        let selected = select(snapshot.objects, pref, &rule_opts);
        tracing::debug!(elapsed = ?started.elapsed(), "rules applied");
        let discovered = discovering.finish().await?;
        tracing::debug!(elapsed = ?started.elapsed(), "discovery done");
        plan_with_discovery(cluster, &discovered, selected, pref, opts, sealed).await
    }
    .instrument(span)
    .await
}

async fn plan_with_discovery(
    cluster: &Cluster,
    discovered: &Discovered,
    selected: Vec<(ContentPath, Selection)>,
    pref: &Preference,
    opts: &RestoreOptions,
    sealed: crate::tree::secret::SealedFields,
) -> Result<Plan, RestoreError> {
    let started = std::time::Instant::now();
    let after_crd = crd_served_resources(&selected);
    let index: live::FastMap<(&str, &str, &str), &ApiResourceInfo> = discovered
        .resources
        .iter()
        .map(|r| {
            (
                (r.group.as_str(), r.version.as_str(), r.resource.as_str()),
                r,
            )
        })
        .collect();
    let lookup = |p: &ContentPath| index.get(&(p.group(), p.version(), p.resource())).copied();
    let served = |p: &ContentPath| match lookup(p) {
        Some(r) if r.supports("create") => Served::Yes {
            has_status_subresource: r.has_status_subresource,
        },
        _ if after_crd.contains(&(
            p.group().to_string(),
            p.version().to_string(),
            p.resource().to_string(),
        )) =>
        {
            Served::AfterCrd
        }
        _ => Served::No,
    };

    // Objects the target serves only at another version (or in a successor group) are
    // converted; the plan shows them at their snapshot path with `target` and a reason.
    let mut selected = selected;
    let mut converted: HashMap<usize, (ContentPath, String)> = HashMap::new();
    let mut not_convertible: HashMap<usize, String> = HashMap::new();
    let mut crd_cache: HashMap<(String, String), Option<convert::CrdInfo>> = HashMap::new();
    for (i, (path, s)) in selected.iter_mut().enumerate() {
        let Selection::Restore { object, .. } = s else {
            continue;
        };
        if served(path) != Served::No {
            continue;
        }
        if let Some(api) = discovered
            .unavailable
            .iter()
            .find(|u| u.group_version == path.api_version())
        {
            not_convertible.insert(
                i,
                format!(
                    "the target lists {} but does not serve it: {}",
                    api.group_version, api.reason
                ),
            );
            continue;
        }
        let builtin = is_builtin_group(path.group());
        let crd = if builtin {
            None
        } else {
            let key = (path.group().to_string(), path.resource().to_string());
            if !crd_cache.contains_key(&key) {
                let url = format!(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}.{}",
                    key.1, key.0
                );
                let info = cluster
                    .get_json::<Value>(&url)
                    .await
                    .ok()
                    .map(|crd| convert::CrdInfo::of(&crd));
                crd_cache.insert(key.clone(), info);
            }
            crd_cache.get(&key).cloned().flatten()
        };
        let tree = object.value();
        match convert::convert(path, &tree, &discovered.resources, builtin, crd.as_ref()) {
            Ok(c) => {
                let original = std::mem::replace(path, c.target);
                *object = CompactObject::new(&c.object);
                converted.insert(i, (original, c.reason));
            }
            Err(reason) => {
                not_convertible.insert(i, reason);
            }
        }
    }

    // What the target's release will do to objects as they are written (converted or not).
    let server_minor = discovered.server_minor();
    let mut release_notes: HashMap<usize, String> = HashMap::new();
    for (i, (path, s)) in selected.iter().enumerate() {
        if let Selection::Restore { object, .. } = s
            && path.resource() == "cronjobs"
            && let Some(note) = convert::release_note(path, &object.value(), server_minor)
        {
            release_notes.insert(i, note);
        }
    }

    // The live objects of every restorable path: one LIST per resource, compared as it comes.
    // The tree objects move into the listing tasks (so the ones found equal on the target are
    // freed there, in parallel) and come back by index.
    let live = {
        // One slot per resource listed, in the order first met. Selections come in tree
        // order, so the objects of one resource come in runs: the resource is looked up once
        // a run, not once an object (string compares were ~2% of a plan's CPU samples).
        let mut slots: Vec<(&ApiResourceInfo, live::TreeObjects)> = Vec::new();
        type Gvr<'a> = (&'a str, &'a str, &'a str);
        let mut slot_of: live::FastMap<Gvr<'_>, usize> = live::FastMap::default();
        let mut run: Option<(Gvr<'_>, Option<usize>)> = None;
        for (i, (path, s)) in selected.iter_mut().enumerate() {
            let Selection::Restore { object, .. } = s else {
                continue;
            };
            let path: &ContentPath = path;
            let gvr = (path.group(), path.version(), path.resource());
            let slot = match run {
                Some((last, slot)) if last == gvr => slot,
                _ => {
                    let slot = lookup(path)
                        .filter(|r| r.supports("create") && r.supports("list"))
                        .map(|r| {
                            *slot_of.entry(gvr).or_insert_with(|| {
                                slots.push((r, live::TreeObjects::default()));
                                slots.len() - 1
                            })
                        });
                    run = Some((gvr, slot));
                    slot
                }
            };
            if let Some((_, objects)) = slot.and_then(|n| slots.get_mut(n)) {
                objects.insert(
                    path.as_str().to_string(),
                    (i, std::sync::Mutex::new(std::mem::take(object))),
                );
            }
        }
        let wanted = slots
            .into_iter()
            .map(|(r, objects)| (r.clone(), objects))
            .collect();
        let read = live::read_live(cluster, wanted, opts.threads.max(4), opts.server_side_diff)
            .await
            .map_err(|(collection, source)| RestoreError::Live {
                collection,
                source: Box::new(source),
            })?;
        for (i, object) in read.objects {
            if let Some((_, Selection::Restore { object: slot, .. })) = selected.get_mut(i) {
                *slot = object;
            }
        }
        read.live
    };
    tracing::debug!(elapsed = ?started.elapsed(), live = live.len(), "live objects compared");
    let plan_opts = PlanOptions {
        diff: opts.diff,
        show_secrets: opts.show_secrets,
        keep_bodies: opts.server_side_diff,
        sealed,
    };
    let mut plan = build_plan(selected, &served, &live, pref, &plan_opts);
    // Items are in selection order: put converted objects back at their snapshot path.
    for (i, (original, reason)) in converted {
        if let Some(item) = plan.items.get_mut(i) {
            let target = std::mem::replace(&mut item.path, original);
            item.target = Some(target);
            item.reason = Some(match item.reason.take() {
                Some(r) => format!("{reason}; {r}"),
                None => reason,
            });
        }
    }
    for (i, note) in release_notes {
        if let Some(item) = plan.items.get_mut(i)
            && matches!(item.action, Action::Create | Action::Update)
        {
            item.reason = Some(match item.reason.take() {
                Some(r) => format!("{r}; {note}"),
                None => note,
            });
        }
    }
    for (i, reason) in not_convertible {
        if let Some(item) = plan.items.get_mut(i)
            && item.action == Action::Unsupported
        {
            item.reason = Some(reason);
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), summary = ?plan.summary, "plan built");
    // Nothing implicit: an object whose Namespace is neither live nor restored is reported.
    subset::mark_missing_namespaces(cluster, &mut plan).await?;
    if opts.server_side_diff {
        server_side_diff(cluster, &mut plan, pref, opts, &plan_opts.sealed).await;
        tracing::debug!(elapsed = ?started.elapsed(), summary = ?plan.summary, "server-side diff done");
    }
    if opts.server_dry_run {
        server_dry_run(cluster, &mut plan, opts.threads).await;
    }
    Ok(plan)
}

/// Whether a group is built into Kubernetes (dotless like `apps`, or `*.k8s.io`), as opposed
/// to a CRD's: built-in kinds convert by the table of [`convert`], custom resources by their
/// CRD's versions.
fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

/// Validates each `create` with `dryRun=All`; a refusal is recorded as the item's reason.
/// Objects in namespaces the restore itself creates are not validated (the namespace does
/// not exist yet), nor custom resources of CRDs it creates.
async fn server_dry_run(cluster: &Cluster, plan: &mut Plan, threads: usize) {
    use futures::stream::{self, StreamExt};
    // Objects in a namespace this restore creates cannot be validated before it exists.
    let new_namespaces: HashSet<&str> = plan
        .items
        .iter()
        .filter(|i| i.action == Action::Create && i.stage == Some(Stage::Namespaces))
        .map(|i| i.path.name())
        .collect();
    // Owned indices (not borrowed tuples) keep the stream's closures free of higher-ranked
    // lifetimes, so callers can prove the future `Send`.
    let candidates: Vec<usize> = plan
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.action == Action::Create
                && i.reason.is_none()
                && !i
                    .path
                    .namespace()
                    .is_some_and(|ns| new_namespaces.contains(ns))
        })
        .map(|(n, _)| n)
        .collect();
    let items = &plan.items;
    let checks: Vec<(usize, Option<String>)> = stream::iter(candidates)
        .map(|n| {
            let item = &items[n];
            async move {
                let target = item.target_path().as_str();
                let collection = target.rsplit_once('/').map_or(target, |(c, _)| c);
                let body = item
                    .body
                    .as_ref()
                    .map(|b| b.as_str().as_bytes().to_vec())
                    .unwrap_or_default();
                let url = format!("{collection}?dryRun=All");
                let r = cluster
                    .request_bytes(
                        http::Method::POST,
                        &url,
                        Some(body),
                        Some("application/json"),
                    )
                    .await;
                (n, r.err().map(|e| format!("server dry run refused: {e}")))
            }
        })
        .buffer_unordered(threads.max(1))
        .collect()
        .await;
    for (n, refusal) in checks {
        if let Some(r) = refusal {
            plan.items[n].reason = Some(r);
        }
    }
}

/// `--server-side-diff`: for every object present on the target, a `dryRun=All` PUT of the
/// snapshot object onto the live one (what the target would make of it, its defaults
/// included) is compared with the live object; that decides `exists` or `differs`
/// (`update` under `overwriteApiPathes`), with `method: server-side-diff`. A refused dry run
/// keeps the local verdict and says why in `reason`.
async fn server_side_diff(
    cluster: &Cluster,
    plan: &mut Plan,
    pref: &Preference,
    opts: &RestoreOptions,
    sealed: &crate::tree::secret::SealedFields,
) {
    use futures::stream::{self, StreamExt};
    let candidates: Vec<usize> = plan
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            matches!(i.action, Action::Exists | Action::Differs | Action::Update)
                && i.body.is_some()
        })
        .map(|(n, _)| n)
        .collect();
    let items = &plan.items;
    /// What a dry run decided for one item (its large inputs are dropped as soon as it is
    /// decided, so a plan of many objects never holds them all), or why it failed.
    struct Verdict {
        /// The live object's resourceVersion (an update PUTs at it).
        resource_version: Option<String>,
        equal: bool,
        diff: Option<String>,
    }
    let results: Vec<(usize, Result<Verdict, String>)> = stream::iter(candidates)
        .map(|n| {
            let item = &items[n];
            async move {
                let path = item.target_path().to_string();
                let r = async {
                    let live: Value = cluster.get_json(&path).await.map_err(|e| e.to_string())?;
                    let mut body = item
                        .body
                        .as_ref()
                        .map(CompactObject::value)
                        .unwrap_or_default();
                    plan::prepare_replacement(&mut body, &live);
                    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                    drop(body);
                    let out = cluster
                        .request_bytes(
                            http::Method::PUT,
                            &format!("{path}?dryRun=All"),
                            Some(bytes),
                            Some("application/json"),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let result: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
                    drop(out);
                    // Read before `for_comparison` drops it.
                    let resource_version = live
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let (result, live) = (plan::for_comparison(result), plan::for_comparison(live));
                    let equal = result == live;
                    let diff = (!equal && opts.diff).then(|| {
                        plan::object_diff(&result, &live, &item.path, opts.show_secrets, sealed)
                    });
                    Ok::<_, String>(Verdict {
                        resource_version,
                        equal,
                        diff,
                    })
                }
                .await;
                (n, r)
            }
        })
        .buffer_unordered(opts.threads.max(4))
        .collect()
        .await;
    for (n, r) in results {
        let item = &mut plan.items[n];
        match r {
            Ok(verdict) => {
                item.live_resource_version = verdict.resource_version;
                let overwrite =
                    preference::matches_any(&pref.spec.overwrite_api_pathes, item.path.as_str());
                item.method = Some(plan::Method::ServerSideDiff);
                item.diff = verdict.diff;
                item.action = if verdict.equal {
                    Action::Exists
                } else if overwrite {
                    Action::Update
                } else {
                    Action::Differs
                };
            }
            Err(e) => {
                item.reason = Some(format!("server-side diff refused, compared locally: {e}"));
            }
        }
        if item.action != Action::Update && item.action != Action::Create {
            item.body = None;
        }
    }
    plan.summary = plan::summarize(&plan.items, plan.summary.num_snapshot_contents);
}

/// Applies a plan (see [`apply()`]) inside a `restore` tracing span.
pub async fn apply_plan(
    cluster: &Cluster,
    snapshot_name: &str,
    plan: &Plan,
    opts: &RestoreOptions,
) -> ApplyReport {
    let span =
        tracing::info_span!("restore", snapshot = %snapshot_name, server = %cluster.server());
    let apply_opts = ApplyOptions {
        threads: opts.threads.max(1),
        wait_timeout: opts.wait_timeout,
        ..Default::default()
    };
    apply(cluster, plan, &apply_opts).instrument(span).await
}

/// Plans and applies a restore of `snapshot` onto `cluster`: the one call for the CLI, the
/// controller and the file-drop watcher. Errors (unreachable target, a LIST that fails) come
/// before anything is written; once writing starts, per-object failures are in the status.
pub async fn restore(
    cluster: &Cluster,
    snapshot: LoadedSnapshot,
    pref: &Preference,
    opts: &RestoreOptions,
) -> Result<(Plan, ApplyReport), RestoreError> {
    restore_with(cluster, snapshot, Discovering::start(cluster), pref, opts).await
}

/// [`restore()`] with the target's discovery already started (see [`plan_with`]).
pub async fn restore_with(
    cluster: &Cluster,
    snapshot: LoadedSnapshot,
    discovering: Discovering,
    pref: &Preference,
    opts: &RestoreOptions,
) -> Result<(Plan, ApplyReport), RestoreError> {
    let name = snapshot.name.clone();
    let plan = plan_with(cluster, snapshot, discovering, pref, opts).await?;
    let report = apply_plan(cluster, &name, &plan, opts).await;
    tracing::info!(
        snapshot = %name,
        created = report.status.num_created,
        already_existed = report.status.num_already_existed,
        failed = report.status.num_failed,
        "restore finished"
    );
    Ok((plan, report))
}

/// A Restore manifest naming no snapshot, or two different ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SnapshotNameError {
    /// The spec field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The snapshot a Restore manifest names: `spec.snapshotName` (the original's later API) or
/// `spec.backupName` (its README). Either may be set; both set must agree.
pub(crate) fn snapshot_name_of<'a>(
    snapshot_name: &'a str,
    backup_name: &'a str,
) -> Result<&'a str, SnapshotNameError> {
    match (snapshot_name.trim(), backup_name.trim()) {
        ("", "") => Err(SnapshotNameError {
            field: "spec.snapshotName",
            message: "required (the Snapshot to restore; spec.backupName is accepted too)".into(),
        }),
        (s, "") => Ok(s),
        ("", b) => Ok(b),
        (s, b) if s == b => Ok(s),
        (s, b) => Err(SnapshotNameError {
            field: "spec.snapshotName",
            message: format!(
                "{s:?} and spec.backupName {b:?} name different snapshots: set one of them"
            ),
        }),
    }
}

#[cfg(test)]
mod snapshot_name_tests {
    use super::snapshot_name_of;

    #[test]
    fn either_name_or_both_equal() {
        assert_eq!(snapshot_name_of("s1", ""), Ok("s1"));
        assert_eq!(snapshot_name_of("", "s1"), Ok("s1"));
        assert_eq!(snapshot_name_of("s1", "s1"), Ok("s1"));
        let e = snapshot_name_of("", " ").unwrap_err().to_string();
        assert!(e.starts_with("spec.snapshotName: required"), "{e}");
        let e = snapshot_name_of("a", "b").unwrap_err().to_string();
        assert!(
            e.contains("spec.snapshotName: \"a\"") && e.contains("spec.backupName \"b\""),
            "{e}"
        );
    }
}
