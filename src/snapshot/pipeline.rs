//! The snapshot pipeline: one attempt at one resourceVersion. Listers (at most `threads`
//! resources at once) fetch pages, page tasks decode, canonicalise and emit each page's objects
//! while the next page is fetched, and one git writer on a blocking thread commits the files.
//!
//! Owns: the tasks, the channel to the writer, per-object preparation (canonical form, skipped
//! objects), and handing the metadata files over last. Must not touch: request and page
//! formats (in `protocol`), git internals (through `mirror`), the byte format (through `tree`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::stream::{self, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::crypt::Sealer;
use crate::discovery::ApiResourceInfo;
use crate::mirror::{CommitId, Mirror};
use crate::tree::{self, Consistency, ContentPath, Node, SkippedEntry, SnapshotMeta};

use super::filter::Filter;
use super::metadata::{self, MetaBase};
use super::protocol::{self, Page};
use super::{Observer, Result, SnapshotError, SnapshotOptions};

/// Pages in flight between the listers and the git writer.
const WRITE_QUEUE: usize = 16;

/// What a successful attempt wrote.
pub(super) struct AttemptDone {
    pub commit: CommitId,
    pub number_of_contents: u64,
    pub skipped: usize,
    pub consistency: Consistency,
    pub new_objects: u64,
    pub new_bytes: u64,
    pub encrypted_secrets: u64,
    pub unencrypted_secrets: u64,
}

/// Why an attempt stopped: its resourceVersion expired (the caller starts over), or a failure.
pub(super) enum AttemptError {
    Expired,
    Failed(SnapshotError),
}

impl<E: Into<SnapshotError>> From<E> for AttemptError {
    fn from(e: E) -> Self {
        AttemptError::Failed(e.into())
    }
}

/// What the listers send the git writer.
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
    /// Seals Secret values (`--encrypt-to`); `None`: they are written in the clear.
    sealer: Option<Arc<Sealer>>,
    encrypted_secrets: AtomicU64,
    unencrypted_secrets: AtomicU64,
    /// Which objects are written (`--include-namespaces` ...), and the label selector sent.
    filter: Arc<Filter>,
}

/// What every object of an attempt goes through besides the canonical form: the filter that
/// keeps it or not, and the sealer of Secret values (`None`: written in the clear).
pub(super) struct ObjectPolicy {
    pub filter: Arc<Filter>,
    pub sealer: Option<Arc<Sealer>>,
}

/// One attempt: lists every resource at `base.resource_version` into a new snapshot of the
/// mirror at `git_dir`; nothing is tagged unless every list succeeded.
pub(super) async fn attempt_snapshot(
    cluster: &Cluster,
    git_dir: &std::path::Path,
    opts: &SnapshotOptions,
    resources: &[ApiResourceInfo],
    base: MetaBase,
    policy: ObjectPolicy,
    observer: Arc<dyn Observer>,
) -> Result<AttemptDone, AttemptError> {
    let ObjectPolicy { filter, sealer } = policy;
    let (tx, mut rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE);
    if let Some(sealer) = &sealer {
        sealer.begin_attempt();
    }
    let dir = git_dir.to_path_buf();
    let name = opts.name.clone();
    let stored_copies = opts.stored_copies;
    let cluster_name = base.cluster_name.clone();
    // The git writer owns the repository on a blocking thread; listers stream files to it.
    // `writer` takes the mirror lock (held until finish or drop) and refuses an existing name.
    let writer =
        tokio::task::spawn_blocking(move || -> Result<Option<crate::mirror::WrittenSnapshot>> {
            let mirror = Mirror::open_or_init(&dir)?;
            let mut w = mirror.writer(&name, &cluster_name)?;
            if stored_copies {
                w.keep_stored_copies();
            }
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
        sealer,
        encrypted_secrets: AtomicU64::new(0),
        unencrypted_secrets: AtomicU64::new(0),
        filter,
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

    let skipped = state.skipped.into_inner();
    let encrypted_secrets = state.encrypted_secrets.into_inner();
    let unencrypted_secrets = state.unencrypted_secrets.into_inner();
    let consistency = if state.best_effort.load(Ordering::Relaxed) {
        Consistency::BestEffort
    } else {
        Consistency::Exact
    };
    let metadata::Built { meta, mut files } = metadata::build(base, counts, skipped, consistency)?;
    if let Some(sealer) = &state.sealer {
        // The data keys the sealed values name (`.k8s-snap/keys/<id>.age`).
        files.splice(0..0, sealer.key_files());
    }
    let number_of_contents = meta.number_of_contents;
    let skipped_count = meta.skipped.len();
    let tx = state.tx;
    for file in files {
        if tx.send(WriteMsg::Add(vec![file])).await.is_err() {
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
        encrypted_secrets,
        unencrypted_secrets,
    })
}

/// Lists one resource at the attempt's resourceVersion, across all namespaces or, when the
/// filter makes that cheaper, namespace by namespace. Returns the number of object files
/// written.
async fn list_resource(
    cluster: &Cluster,
    r: &Arc<ApiResourceInfo>,
    state: &Arc<ListState>,
    mut seen: Option<&mut HashSet<String>>,
) -> Result<u64, AttemptError> {
    match state.filter.list_namespaces().filter(|_| r.namespaced) {
        Some(namespaces) => {
            let mut count = 0;
            for ns in namespaces {
                let collection = r.collection_path(Some(&ns));
                count +=
                    list_collection(cluster, r, &collection, state, seen.as_deref_mut()).await?;
            }
            Ok(count)
        }
        None => list_collection(cluster, r, &r.collection_path(None), state, seen).await,
    }
}

/// Lists one collection of a resource page by page at the attempt's resourceVersion and
/// streams its objects to the writer. Returns the number of object files written.
///
/// Pages are pipelined: the lister reads only a page's metadata (its continue token), and a
/// task of its own decodes, canonicalises and emits the page's objects while the next page is
/// fetched, so a large resource's chain of requests is not held up by decoding and YAML work.
/// At most [`PAGES_IN_PROCESS`] pages per resource are being processed at once.
async fn list_collection(
    cluster: &Cluster,
    r: &Arc<ApiResourceInfo>,
    collection: &str,
    state: &Arc<ListState>,
    mut seen: Option<&mut HashSet<String>>,
) -> Result<u64, AttemptError> {
    let what = format!("{} ({})", r.resource, r.api_version());
    let collection = collection.to_string();
    let mut exact = !state.best_effort.load(Ordering::Relaxed);
    let mut token: Option<String> = None;
    let mut count = 0u64;
    let mut processing = tokio::task::JoinSet::new();
    loop {
        let first_exact = token.is_none() && exact;
        let exact_rv = exact.then_some(state.rv.as_str());
        let path = protocol::page_path(
            &collection,
            state.page_size,
            token.as_deref(),
            exact_rv,
            state.filter.label_selector(),
        );
        let (bytes, metadata) = match protocol::fetch_page(
            cluster,
            &what,
            &collection,
            &path,
            first_exact,
        )
        .await?
        {
            Page::Read { bytes, metadata } => (bytes, metadata),
            Page::Expired => return Err(AttemptError::Expired),
            Page::ExactUnsupported => {
                tracing::warn!(resource = %what, "server does not support resourceVersionMatch=Exact; listing best-effort");
                state.best_effort.store(true, Ordering::Relaxed);
                exact = false;
                continue;
            }
        };
        if first_exact && metadata.resource_version.as_deref() != Some(state.rv.as_str()) {
            // An old server ignores resourceVersionMatch and answers from its cache.
            state.best_effort.store(true, Ordering::Relaxed);
        }
        while processing.len() >= PAGES_IN_PROCESS {
            count += joined(processing.join_next().await)?;
        }
        if let Some(seen) = seen.as_deref_mut() {
            // A kind served by several groups (rare, small): decode here, and write each
            // object (uid) once, under the first group.
            let mut items = protocol::decode_items(cluster, &what, &collection, &bytes)?;
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
                    let items = protocol::decode_items(&cluster, &what, &collection, &bytes)?;
                    write_page(&r, &state, items).await
                }
                .in_current_span(),
            );
        }
        match metadata.continue_ {
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
        if !filter_keeps(&state.filter, r, &obj) {
            continue;
        }
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

/// Whether the snapshot filter keeps a listed object (its namespace, or a Namespace's name).
fn filter_keeps(filter: &Filter, r: &ApiResourceInfo, obj: &Node<'_>) -> bool {
    let meta = obj.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Node::as_str);
    filter.keeps(r, field("namespace"), field("name").unwrap_or_default())
}

/// Turns a listed item into its canonical form; `None` when it is not written (recorded as
/// skipped).
async fn prepare_object<'a>(
    r: &'a ApiResourceInfo,
    obj: &mut Node<'a>,
    state: &ListState,
) -> Result<Option<ContentPath>, AttemptError> {
    match prepare_node(r, obj)? {
        Prepared::Write(path) => {
            if r.group.is_empty() && r.resource == "secrets" {
                match &state.sealer {
                    Some(sealer) => {
                        sealer.seal_node(&path, obj).map_err(SnapshotError::from)?;
                        state.encrypted_secrets.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        state.unencrypted_secrets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Some(sealer) = &state.sealer
                && sealer.seals_paths_of(&r.group, &r.resource)
            {
                sealer
                    .seal_paths(&r.group, &r.resource, &path, obj)
                    .map_err(SnapshotError::from)?;
            }
            Ok(Some(path))
        }
        Prepared::Skip(entry) => {
            state.skipped.lock().await.push(entry);
            Ok(None)
        }
    }
}

/// What becomes of one object of resource `r`: written at its content path (in canonical form),
/// or skipped with the reason recorded in `.k8s-snap/snapshot.yaml`.
pub(crate) enum Prepared {
    Write(ContentPath),
    Skip(SkippedEntry),
}

/// The per-object rules of a snapshot, shared by live snapshots and imports of the original's
/// archives (`crate::import`): `apiVersion`/`kind` set from the resource, an object with an
/// unusable name skipped (`invalid-name`), a service-account token Secret skipped
/// (`token-secret`), and the rest canonicalised in place (`tree::canonicalize_node`).
pub(crate) fn prepare_node<'a>(
    r: &'a ApiResourceInfo,
    obj: &mut Node<'a>,
) -> Result<Prepared, SnapshotError> {
    if !obj.is_object() {
        return Err(SnapshotError::Options(format!(
            "{}: a list item is not an object",
            r.resource
        )));
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
            return Ok(Prepared::Skip(SkippedEntry {
                path,
                reason: "invalid-name".into(),
            }));
        }
    };
    if tree::is_token_secret_node(obj) {
        return Ok(Prepared::Skip(SkippedEntry {
            path: path.as_str().to_string(),
            reason: "token-secret".into(),
        }));
    }
    tree::canonicalize_node(obj, r.has_status_subresource);
    Ok(Prepared::Write(path))
}
