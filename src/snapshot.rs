//! Taking a snapshot: discovery → consistent paginated lists → canonical tree → mirror commit.
//!
//! Owns: the read protocol of docs/design.md §2 (one resourceVersion R for every list,
//! `resourceVersionMatch=Exact`, pages of 500, bounded parallelism, restart on 410, best-effort
//! fallback), streaming objects page by page into the mirror's writer (pages pipelined: fetched
//! by the lister, decoded and emitted by page tasks), and the `.k8s-snap/` metadata of the
//! snapshot.
//!
//! Must not touch: the source cluster beyond GET requests (snapshots need only read RBAC), git
//! internals (goes through `mirror`), the byte format (goes through `tree`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use tracing::Instrument;

use crate::cluster::{Cluster, ClusterError};
use crate::discovery::{self, ApiResourceInfo, DiscoveryError, Versions};
use crate::mirror::{CommitId, Mirror, MirrorError};
use crate::tree::{
    self, Consistency, ContentPath, Node, ResourceEntry, SkippedEntry, SnapshotMeta, TreeError,
};

/// How many times a snapshot starts over with a fresh resourceVersion after a 410 Gone.
const MAX_RV_RESTARTS: usize = 3;
/// Pages in flight between the listers and the git writer.
const WRITE_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    Discovery(Box<DiscoveryError>),
    #[error("listing {resource}: {source}")]
    List {
        resource: String,
        #[source]
        source: Box<ClusterError>,
    },
    #[error("reading the snapshot's resourceVersion: {0}")]
    ResourceVersion(#[source] Box<ClusterError>),
    #[error(
        "resourceVersion {rv} kept expiring (410 Gone) after {attempts} attempts; the cluster compacts faster than it can be listed"
    )]
    Expired { rv: String, attempts: usize },
    #[error("{what}: {source}")]
    Tree {
        what: String,
        #[source]
        source: TreeError,
    },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("the mirror writer stopped unexpectedly")]
    WriterGone,
    #[error("a listing task failed: {0}")]
    Task(String),
    #[error("invalid option: {0}")]
    Options(String),
}

impl SnapshotError {
    /// The cluster error behind this one, if any.
    pub fn cluster_error(&self) -> Option<&ClusterError> {
        match self {
            SnapshotError::Discovery(d) => Some(d.cluster_error()),
            SnapshotError::List { source, .. } | SnapshotError::ResourceVersion(source) => {
                Some(source)
            }
            _ => None,
        }
    }
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// What to snapshot and how.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub name: String,
    /// Defaults to the kubeconfig context's cluster name.
    pub cluster_name: Option<String>,
    /// Kept as given (`720h`) in the metadata; sets `availableUntil` when that is not given.
    pub ttl: Option<String>,
    pub available_until: Option<jiff::Timestamp>,
    /// Resources listed at once.
    pub threads: usize,
    /// Objects per LIST page.
    pub page_size: u32,
}

impl SnapshotOptions {
    pub fn new(name: impl Into<String>) -> Self {
        SnapshotOptions {
            name: name.into(),
            cluster_name: None,
            ttl: None,
            available_until: None,
            threads: 8,
            page_size: 500,
        }
    }
}

/// Progress callbacks (the CLI draws a bar from them). All methods have no-op defaults.
pub trait Observer: Send + Sync {
    fn started(&self, _resources: usize) {}
    fn objects_written(&self, _n: u64) {}
    fn resource_done(&self, _resource: &ApiResourceInfo, _count: u64) {}
}

/// An observer that ignores everything.
pub struct NoProgress;
impl Observer for NoProgress {}

/// The result of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSummary {
    pub name: String,
    pub cluster_name: String,
    pub commit: String,
    pub snapshot_resource_version: String,
    pub snapshot_timestamp: jiff::Timestamp,
    pub number_of_contents: u64,
    pub resources: usize,
    pub skipped: usize,
    pub consistency: Consistency,
    pub new_objects: u64,
    pub new_bytes: u64,
    pub duration_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_until: Option<jiff::Timestamp>,
}

/// Takes a snapshot of `cluster` into the mirror at `git_dir`.
pub async fn take_snapshot(
    cluster: &Cluster,
    git_dir: PathBuf,
    opts: &SnapshotOptions,
    observer: Arc<dyn Observer>,
) -> Result<SnapshotSummary> {
    let span = tracing::info_span!("snapshot", name = %opts.name, server = %cluster.server());
    async move {
        let started = Instant::now();
        crate::mirror::validate_name("snapshot", &opts.name).map_err(|e| SnapshotError::InvalidName {
            name: opts.name.clone(),
            reason: e.to_string(),
        })?;
        let cluster_name = opts
            .cluster_name
            .clone()
            .or_else(|| cluster.cluster_name().map(str::to_string))
            .unwrap_or_else(|| "default".to_string());
        crate::mirror::validate_name("cluster", &cluster_name).map_err(|e| SnapshotError::Options(format!("cluster name {cluster_name:?}: {e}")))?;
        if opts.threads == 0 || opts.page_size == 0 {
            return Err(SnapshotError::Options("--threads and the page size must be at least 1".into()));
        }
        let ttl = opts
            .ttl
            .as_deref()
            .map(|t| crate::duration::parse_ttl(t, now_seconds()).map_err(SnapshotError::Options))
            .transpose()?;
        {
            let dir = git_dir.clone();
            let name = opts.name.clone();
            let exists = tokio::task::spawn_blocking(move || -> Result<bool> {
                match Mirror::open(&dir) {
                    Ok(m) => Ok(m.snapshot(&name)?.is_some()),
                    Err(_) => Ok(false),
                }
            })
            .await
            .map_err(|_| SnapshotError::WriterGone)??;
            if exists {
                return Err(SnapshotError::AlreadyExists(opts.name.clone()));
            }
        }

        let discovered = discovery::discover(cluster, Versions::Preferred, opts.threads)
            .await
            .map_err(|e| SnapshotError::Discovery(Box::new(e)))?;
        let resources: Vec<ApiResourceInfo> = discovered.snapshotted().cloned().collect();
        observer.started(resources.len());
        tracing::info!(resources = resources.len(), server_version = %discovered.server_version, "discovered");

        let mut attempt = 0;
        loop {
            attempt += 1;
            let rv = current_resource_version(cluster).await?;
            let timestamp = now_seconds();
            let available_until = match (opts.available_until, ttl) {
                (Some(t), _) => Some(t),
                (None, Some(d)) => Some(timestamp.checked_add(d).map_err(|_| {
                    SnapshotError::Options(format!("--ttl {:?} ends after the year 9999", opts.ttl.as_deref().unwrap_or_default()))
                })?),
                (None, None) => None,
            };
            let base = MetaBase {
                name: opts.name.clone(),
                cluster_name: cluster_name.clone(),
                resource_version: rv.clone(),
                timestamp,
                server_version: discovered.server_version.clone(),
                ttl: opts.ttl.clone(),
                available_until,
            };
            match attempt_snapshot(cluster, &git_dir, opts, &resources, base, observer.clone()).await {
                Err(AttemptError::Expired) if attempt < MAX_RV_RESTARTS => {
                    tracing::warn!(rv = %rv, "resourceVersion expired while listing; starting over");
                    continue;
                }
                Err(AttemptError::Expired) => return Err(SnapshotError::Expired { rv, attempts: attempt }),
                Err(AttemptError::Failed(e)) => return Err(e),
                Ok(done) => {
                    return Ok(SnapshotSummary {
                        name: opts.name.clone(),
                        cluster_name,
                        commit: done.commit.to_string(),
                        snapshot_resource_version: rv,
                        snapshot_timestamp: timestamp,
                        number_of_contents: done.number_of_contents,
                        resources: resources.len(),
                        skipped: done.skipped,
                        consistency: done.consistency,
                        new_objects: done.new_objects,
                        new_bytes: done.new_bytes,
                        duration_seconds: started.elapsed().as_secs_f64(),
                        available_until,
                    });
                }
            }
        }
    }
    .instrument(span)
    .await
}

struct MetaBase {
    name: String,
    cluster_name: String,
    resource_version: String,
    timestamp: jiff::Timestamp,
    server_version: String,
    ttl: Option<String>,
    available_until: Option<jiff::Timestamp>,
}

struct AttemptDone {
    commit: CommitId,
    number_of_contents: u64,
    skipped: usize,
    consistency: Consistency,
    new_objects: u64,
    new_bytes: u64,
}

enum AttemptError {
    Expired,
    Failed(SnapshotError),
}

impl<E: Into<SnapshotError>> From<E> for AttemptError {
    fn from(e: E) -> Self {
        AttemptError::Failed(e.into())
    }
}

enum WriteMsg {
    /// The files of one page (one message per page, not per object: each message can wake the
    /// writer thread).
    Add(Vec<(String, Vec<u8>)>),
    Finish(Box<SnapshotMeta>),
}

/// Shared state of one attempt's listers.
struct ListState {
    tx: mpsc::Sender<WriteMsg>,
    rv: String,
    page_size: u32,
    best_effort: AtomicBool,
    skipped: Mutex<Vec<SkippedEntry>>,
    observer: Arc<dyn Observer>,
}

async fn attempt_snapshot(
    cluster: &Cluster,
    git_dir: &std::path::Path,
    opts: &SnapshotOptions,
    resources: &[ApiResourceInfo],
    base: MetaBase,
    observer: Arc<dyn Observer>,
) -> Result<AttemptDone, AttemptError> {
    let (tx, mut rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE);
    let dir = git_dir.to_path_buf();
    let name = opts.name.clone();
    let cluster_name = base.cluster_name.clone();
    // The git writer owns the repository on a blocking thread; listers stream files to it.
    // `writer` takes the mirror lock (held until finish or drop) and refuses an existing name.
    let writer =
        tokio::task::spawn_blocking(move || -> Result<Option<crate::mirror::WrittenSnapshot>> {
            let mirror = Mirror::open_or_init(&dir)?;
            let mut w = mirror.writer(&name, &cluster_name)?;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    WriteMsg::Add(files) => {
                        for (path, bytes) in files {
                            w.add(&path, &bytes)?;
                        }
                    }
                    WriteMsg::Finish(meta) => return Ok(Some(w.finish(&meta)?)),
                }
            }
            Ok(None)
        });

    let state = Arc::new(ListState {
        tx,
        rv: base.resource_version.clone(),
        page_size: opts.page_size,
        best_effort: AtomicBool::new(false),
        skipped: Mutex::new(Vec::new()),
        observer,
    });

    // Kinds served by more than one group are listed one after another in discovery order, so
    // an object seen twice (same uid) is written once, under the first group.
    let mut kind_count = std::collections::HashMap::<&str, usize>::new();
    for r in resources {
        *kind_count.entry(r.kind.as_str()).or_default() += 1;
    }
    let (shared, single): (Vec<&ApiResourceInfo>, Vec<&ApiResourceInfo>) = resources
        .iter()
        .partition(|r| kind_count[r.kind.as_str()] > 1);
    let mut jobs: Vec<Vec<ApiResourceInfo>> = single.into_iter().map(|r| vec![r.clone()]).collect();
    if !shared.is_empty() {
        jobs.insert(0, shared.into_iter().cloned().collect());
    }

    // Each job is its own task, so decoding, canonicalising and emitting YAML use every core
    // while the git writer hashes on its blocking thread; at most `threads` run at once.
    let results: Vec<Result<Vec<(ApiResourceInfo, u64)>, AttemptError>> = stream::iter(jobs)
        .map(|job| {
            let state = state.clone();
            let cluster = cluster.clone();
            let task = tokio::spawn(
                async move {
                    let mut seen = (job.len() > 1).then(HashSet::new);
                    let mut counts = Vec::new();
                    for r in job {
                        let r = Arc::new(r);
                        let n = list_resource(&cluster, &r, &state, seen.as_mut()).await?;
                        state.observer.resource_done(&r, n);
                        counts.push((Arc::unwrap_or_clone(r), n));
                    }
                    Ok(counts)
                }
                .in_current_span(),
            );
            async move {
                task.await.unwrap_or_else(|e| {
                    Err(AttemptError::Failed(SnapshotError::Task(e.to_string())))
                })
            }
        })
        .buffer_unordered(opts.threads)
        .collect()
        .await;

    let mut counts = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => counts.extend(c),
            Err(AttemptError::Expired) => {
                if first_error.is_none() {
                    first_error = Some(AttemptError::Expired)
                }
            }
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    if let Some(e) = first_error {
        drop(state); // closes the channel: the writer stops without a tag
        let writer_result = writer.await;
        // Listers see only a closed channel when the writer failed: report its error.
        if let (AttemptError::Failed(SnapshotError::WriterGone), Ok(Err(writer_error))) =
            (&e, writer_result)
        {
            return Err(AttemptError::Failed(writer_error));
        }
        return Err(e);
    }
    let state = Arc::into_inner(state).ok_or(SnapshotError::WriterGone)?;

    counts.sort_by(|(a, _), (b, _)| {
        (a.group.as_str(), a.version.as_str(), a.resource.as_str()).cmp(&(
            b.group.as_str(),
            b.version.as_str(),
            b.resource.as_str(),
        ))
    });
    let number_of_contents: u64 = counts.iter().map(|(_, n)| n).sum();
    let entries: Vec<ResourceEntry> = counts
        .iter()
        .map(|(r, n)| ResourceEntry {
            group: r.group.clone(),
            version: r.version.clone(),
            resource: r.resource.clone(),
            kind: r.kind.clone(),
            namespaced: r.namespaced,
            verbs: r.verbs.clone(),
            has_status_subresource: r.has_status_subresource,
            count: *n,
        })
        .collect();
    let mut skipped = state.skipped.into_inner();
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let consistency = if state.best_effort.load(Ordering::Relaxed) {
        Consistency::BestEffort
    } else {
        Consistency::Exact
    };
    let meta = SnapshotMeta {
        format_version: tree::meta::FORMAT_VERSION,
        name: base.name,
        cluster_name: base.cluster_name,
        resource_version: base.resource_version,
        timestamp: base.timestamp,
        server_version: base.server_version,
        consistency,
        number_of_contents,
        ttl: base.ttl,
        available_until: base.available_until,
        tool_version: format!("k8s-snap {}", env!("CARGO_PKG_VERSION")),
        skipped,
    };
    let skipped_count = meta.skipped.len();
    let meta_yaml = tree::to_yaml_string(&meta).map_err(|source| SnapshotError::Tree {
        what: tree::meta::SNAPSHOT_META_FILE.into(),
        source,
    })?;
    let resources_yaml = tree::to_yaml_string(&entries).map_err(|source| SnapshotError::Tree {
        what: tree::meta::RESOURCES_FILE.into(),
        source,
    })?;
    let tx = state.tx;
    for (path, text) in [
        (tree::meta::RESOURCES_FILE, resources_yaml),
        (tree::meta::SNAPSHOT_META_FILE, meta_yaml),
    ] {
        if tx
            .send(WriteMsg::Add(vec![(path.to_string(), text.into_bytes())]))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = tx.send(WriteMsg::Finish(Box::new(meta))).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|_| SnapshotError::WriterGone)??
        .ok_or(SnapshotError::WriterGone)?;
    Ok(AttemptDone {
        commit: written.commit,
        number_of_contents,
        skipped: skipped_count,
        consistency,
        new_objects: written.new_objects,
        new_bytes: written.new_bytes,
    })
}

/// What a lister reads of a page: its metadata (the items are skipped, not built).
#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    metadata: ListMeta,
}

/// A list's `metadata`, read without building its items, and without even scanning them when
/// the metadata comes first (as Kubernetes API servers write it): parsing stops there. `None`
/// when the body is not a JSON object or is malformed before the metadata. The page task's
/// full decode still checks the whole body.
fn list_metadata(bytes: &[u8]) -> Option<ListMeta> {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

    struct Seed<'s>(&'s mut Option<ListMeta>);
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "metadata" {
                    *self.0 = Some(map.next_value()?);
                    // Stop here: the caller has what it needs.
                    return Err(de::Error::custom("metadata read"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            *self.0 = Some(ListMeta::default());
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // An error after `found` is set is the stop above; before, `found` stays `None`.
    let _ = Seed(&mut found).deserialize(&mut de);
    found
}

/// What a page task reads of a page: the items, borrowing from the response body.
#[derive(Deserialize)]
struct ListItems<'a> {
    #[serde(default, borrow)]
    items: Vec<Node<'a>>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: Option<String>,
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

/// Lists one resource page by page at the attempt's resourceVersion and streams its objects to
/// the writer. Returns the number of object files written.
///
/// Pages are pipelined: the lister reads only a page's metadata (its continue token), and a
/// task of its own decodes, canonicalises and emits the page's objects while the next page is
/// fetched, so a large resource's chain of requests is not held up by decoding and YAML work.
/// At most [`PAGES_IN_PROCESS`] pages per resource are being processed at once.
async fn list_resource(
    cluster: &Cluster,
    r: &Arc<ApiResourceInfo>,
    state: &Arc<ListState>,
    mut seen: Option<&mut HashSet<String>>,
) -> Result<u64, AttemptError> {
    let what = format!("{} ({})", r.resource, r.api_version());
    let collection = r.collection_path(None);
    let mut exact = !state.best_effort.load(Ordering::Relaxed);
    let mut token: Option<String> = None;
    let mut count = 0u64;
    let mut processing = tokio::task::JoinSet::new();
    loop {
        let path = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &state.page_size.to_string());
            match &token {
                Some(t) => {
                    query.append_pair("continue", t);
                }
                None if exact => {
                    query.append_pair("resourceVersion", &state.rv);
                    query.append_pair("resourceVersionMatch", "Exact");
                }
                None => {}
            }
            format!("{collection}?{}", query.finish())
        };
        let bytes = match cluster
            .request_bytes(http::Method::GET, &path, None, None)
            .await
        {
            Ok(b) => b,
            Err(e) if e.code() == Some(410) => return Err(AttemptError::Expired),
            Err(e)
                if token.is_none()
                    && exact
                    && e.code() == Some(400)
                    && e.to_string().contains("resourceVersionMatch") =>
            {
                tracing::warn!(resource = %what, "server does not support resourceVersionMatch=Exact; listing best-effort");
                state.best_effort.store(true, Ordering::Relaxed);
                exact = false;
                continue;
            }
            Err(source) => {
                return Err(SnapshotError::List {
                    resource: what,
                    source: Box::new(source),
                }
                .into());
            }
        };
        let page = match list_metadata(&bytes) {
            Some(metadata) => ListPage { metadata },
            // Not an object, or malformed before its metadata: the full decode names the fault.
            None => cluster
                .decode::<ListPage>("GET", &collection, &bytes)
                .map_err(|source| SnapshotError::List {
                    resource: what.clone(),
                    source: Box::new(source),
                })?,
        };
        if token.is_none()
            && exact
            && page.metadata.resource_version.as_deref() != Some(state.rv.as_str())
        {
            // An old server ignores resourceVersionMatch and answers from its cache.
            state.best_effort.store(true, Ordering::Relaxed);
        }
        while processing.len() >= PAGES_IN_PROCESS {
            count += joined(processing.join_next().await)?;
        }
        if let Some(seen) = seen.as_deref_mut() {
            // A kind served by several groups (rare, small): decode here, and write each
            // object (uid) once, under the first group.
            let mut items = decode_items(cluster, &what, &collection, &bytes)?;
            items.retain(|obj| {
                match obj
                    .get("metadata")
                    .and_then(|m| m.get("uid"))
                    .and_then(Node::as_str)
                {
                    Some(uid) => seen.insert(uid.to_string()),
                    None => true,
                }
            });
            count += write_page(r, state, items).await?;
        } else {
            let (r, state, cluster) = (r.clone(), state.clone(), cluster.clone());
            let (what, collection) = (what.clone(), collection.clone());
            processing.spawn(
                async move {
                    let items = decode_items(&cluster, &what, &collection, &bytes)?;
                    write_page(&r, &state, items).await
                }
                .in_current_span(),
            );
        }
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    while let Some(done) = processing.join_next().await {
        count += joined(Some(done))?;
    }
    Ok(count)
}

/// Pages of one resource being canonicalised and emitted while the next is fetched.
const PAGES_IN_PROCESS: usize = 2;

/// The result of a page task (`None`: the set was empty, which callers rule out).
fn joined(
    done: Option<Result<Result<u64, AttemptError>, tokio::task::JoinError>>,
) -> Result<u64, AttemptError> {
    match done {
        None => Ok(0),
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(SnapshotError::Task(e.to_string()).into()),
    }
}

/// The items of a page, borrowing from its body.
fn decode_items<'a>(
    cluster: &Cluster,
    what: &str,
    collection: &str,
    bytes: &'a [u8],
) -> Result<Vec<Node<'a>>, AttemptError> {
    let page: ListItems<'a> =
        cluster
            .decode("GET", collection, bytes)
            .map_err(|source| SnapshotError::List {
                resource: what.to_string(),
                source: Box::new(source),
            })?;
    Ok(page.items)
}

/// Canonicalises and emits the objects of one page and hands their files to the writer in one
/// message. Returns the number of files.
async fn write_page(
    r: &ApiResourceInfo,
    state: &ListState,
    items: Vec<Node<'_>>,
) -> Result<u64, AttemptError> {
    let mut files = Vec::with_capacity(items.len());
    // One buffer grows to the largest object; each file is then one exact-size copy.
    let mut yaml = String::with_capacity(4096);
    for mut obj in items {
        if let Some(path) = prepare_object(r, &mut obj, state).await? {
            tree::emit_into(&obj, &mut yaml);
            files.push((path.file_path(), yaml.as_bytes().to_vec()));
        }
    }
    let written = files.len() as u64;
    if !files.is_empty() {
        state
            .tx
            .send(WriteMsg::Add(files))
            .await
            .map_err(|_| SnapshotError::WriterGone)?;
    }
    state.observer.objects_written(written);
    Ok(written)
}

/// Turns a listed item into its canonical form; `None` when it is not written (recorded as
/// skipped).
async fn prepare_object<'a>(
    r: &'a ApiResourceInfo,
    obj: &mut Node<'a>,
    state: &ListState,
) -> Result<Option<ContentPath>, AttemptError> {
    if !obj.is_object() {
        return Err(SnapshotError::Options(format!(
            "{}: a list item is not an object",
            r.resource
        ))
        .into());
    }
    // Items of typed lists carry no apiVersion/kind.
    obj.set("apiVersion", Node::String(r.api_version().into()));
    obj.set("kind", Node::String(r.kind.as_str().into()));
    let meta = obj.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or_default();
    let namespace = if r.namespaced {
        meta.and_then(|m| m.get("namespace")).and_then(Node::as_str)
    } else {
        None
    };
    let path = match ContentPath::new(&r.group, &r.version, &r.resource, namespace, name) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(resource = %r.resource, error = %e, "object with an unusable name skipped");
            let path = format!("{}/{}", r.collection_path(namespace), name.escape_debug());
            state.skipped.lock().await.push(SkippedEntry {
                path,
                reason: "invalid-name".into(),
            });
            return Ok(None);
        }
    };
    if tree::is_token_secret_node(obj) {
        state.skipped.lock().await.push(SkippedEntry {
            path: path.as_str().to_string(),
            reason: "token-secret".into(),
        });
        return Ok(None);
    }
    tree::canonicalize_node(obj, r.has_status_subresource);
    Ok(Some(path))
}

/// The resourceVersion the whole snapshot is read at: that of a one-item namespace list.
async fn current_resource_version(cluster: &Cluster) -> Result<String> {
    #[derive(Deserialize)]
    struct Page {
        metadata: ListMeta,
    }
    let page: Page = cluster
        .get_json("/api/v1/namespaces?limit=1")
        .await
        .map_err(|e| SnapshotError::ResourceVersion(Box::new(e)))?;
    page.metadata
        .resource_version
        .filter(|rv| !rv.is_empty())
        .ok_or_else(|| {
            SnapshotError::ResourceVersion(Box::new(ClusterError::Decode {
                server: cluster.server().to_string(),
                method: "GET".into(),
                path: "/api/v1/namespaces".into(),
                message: "the list has no metadata.resourceVersion".into(),
            }))
        })
}

fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_metadata_is_read_wherever_it_is() {
        let meta =
            |text: &str| list_metadata(text.as_bytes()).map(|m| (m.resource_version, m.continue_));
        let want = Some((Some("7".to_string()), Some("t".to_string())));
        // First (parsing stops before the malformed items), last, or absent.
        let first = r#"{"kind":"L","metadata":{"resourceVersion":"7","continue":"t"},"items":[{"#;
        assert_eq!(meta(first), want);
        let last = r#"{"items":[{"a":"}"}],"metadata":{"continue":"t","resourceVersion":"7"}}"#;
        assert_eq!(meta(last), want);
        assert_eq!(meta(r#"{"items":[]}"#), Some((None, None)));
        // Not a list object, or broken before its metadata: the caller's full decode reports it.
        assert_eq!(meta("[]"), None);
        assert_eq!(meta(r#"{"items":[{]}, "metadata":{}}"#), None);
        assert_eq!(meta(r#"{"metadata":{"continue":5}}"#), None);
    }
}
