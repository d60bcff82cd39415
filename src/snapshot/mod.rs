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
//!
//! The API (options, errors, summary, [`take_snapshot`]: validation, discovery, restarts on an
//! expired resourceVersion) is here; the request protocol in `protocol`, one attempt's tasks
//! and writer in `pipeline`, the `.k8s-snap/` files in `metadata`, the paths a snapshot taken
//! now would hold (for a diff against the live cluster) in `inventory`.

pub mod filter;
mod inventory;
mod metadata;
mod pipeline;
mod protocol;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::cluster::{Cluster, ClusterError};
use crate::discovery::{self, ApiResourceInfo, DiscoveryError, Versions};
use crate::mirror::{Mirror, MirrorError};
use crate::tree::{Consistency, TreeError};

pub use inventory::live_inventory;
pub(crate) use metadata::{MetaBase, build as build_metadata};
use pipeline::{AttemptError, ObjectPolicy, attempt_snapshot};
pub(crate) use pipeline::{Prepared, prepare_node};
use protocol::current_resource_version;

/// How many times a snapshot starts over with a fresh resourceVersion after a 410 Gone.
const MAX_RV_RESTARTS: usize = 3;

/// Why taking a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot name is not valid.
    #[error("invalid snapshot name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A snapshot of this name is already in the mirror.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// Discovering the cluster's resources failed.
    #[error(transparent)]
    Discovery(Box<DiscoveryError>),
    /// Listing one resource failed.
    #[error("listing {resource}: {source}")]
    List {
        /// The resource being listed.
        resource: String,
        /// The cluster error.
        #[source]
        source: Box<ClusterError>,
    },
    /// The cluster's current resourceVersion cannot be read.
    #[error("reading the snapshot's resourceVersion: {0}")]
    ResourceVersion(#[source] Box<ClusterError>),
    /// The snapshot's resourceVersion kept expiring (410 Gone) while listing.
    #[error(
        "resourceVersion {rv} kept expiring (410 Gone) after {attempts} attempts; the cluster compacts faster than it can be listed"
    )]
    Expired {
        /// The last resourceVersion tried.
        rv: String,
        /// How many times listing was started.
        attempts: usize,
    },
    /// Building the snapshot's file tree failed.
    #[error("{what}: {source}")]
    Tree {
        /// The object or path being added.
        what: String,
        /// The tree error.
        #[source]
        source: TreeError,
    },
    /// The git mirror failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The task writing to the mirror ended before the snapshot was complete.
    #[error("the mirror writer stopped unexpectedly")]
    WriterGone,
    /// A listing task panicked or was cancelled.
    #[error("a listing task failed: {0}")]
    Task(String),
    /// The snapshot options are not valid.
    #[error("invalid option: {0}")]
    Options(String),
    /// Sealing Secret values failed.
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    /// The snapshot filter is not valid, or names no resource the server serves.
    #[error("snapshot filter: {0}")]
    Filter(#[from] filter::FilterError),
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

/// Result of a snapshot operation.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// What to snapshot and how.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// The snapshot's name.
    pub name: String,
    /// Defaults to the kubeconfig context's cluster name.
    pub cluster_name: Option<String>,
    /// Kept as given (`720h`) in the metadata; sets `availableUntil` when that is not given.
    pub ttl: Option<String>,
    /// When the snapshot expires (overrides `ttl`).
    pub available_until: Option<jiff::Timestamp>,
    /// Resources listed at once.
    pub threads: usize,
    /// Objects per LIST page.
    pub page_size: u32,
    /// Seal Secret values to these recipients (docs/encryption.md); `None`: plaintext.
    pub encrypt_to: Option<crate::crypt::Recipients>,
    /// The part of the cluster to snapshot (default: all of it); see [`filter`].
    pub filter: crate::tree::SnapshotFilter,
    /// Also seal these user-named fields (`--encrypt-path`); needs `encrypt_to`.
    pub encrypt_paths: Vec<crate::crypt::SealedPath>,
    /// Keep the store's encoding of each new pack beside it, so that a push that follows
    /// uploads it as it is instead of building it (set when a push follows; see
    /// [`SnapshotWriter::keep_stored_copies`](crate::mirror::SnapshotWriter::keep_stored_copies)).
    pub stored_copies: bool,
}

impl SnapshotOptions {
    /// Options for a snapshot named `name`, with defaults: 8 threads, 500 objects per page, no TTL.
    pub fn new(name: impl Into<String>) -> Self {
        SnapshotOptions {
            name: name.into(),
            cluster_name: None,
            ttl: None,
            available_until: None,
            threads: 8,
            page_size: 500,
            encrypt_to: None,
            filter: crate::tree::SnapshotFilter::default(),
            encrypt_paths: Vec::new(),
            stored_copies: false,
        }
    }
}

/// Progress callbacks (the CLI draws a bar from them). All methods have no-op defaults.
pub trait Observer: Send + Sync {
    /// Listing begins; `_resources` resources will be listed.
    fn started(&self, _resources: usize) {}
    /// `_n` more objects were written to the mirror.
    fn objects_written(&self, _n: u64) {}
    /// All `_count` objects of one resource were listed.
    fn resource_done(&self, _resource: &ApiResourceInfo, _count: u64) {}
}

/// An observer that ignores everything.
pub struct NoProgress;
impl Observer for NoProgress {}

/// The result of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSummary {
    /// The snapshot's name.
    pub name: String,
    /// The cluster name recorded in the snapshot.
    pub cluster_name: String,
    /// The snapshot's commit id.
    pub commit: String,
    /// The resourceVersion the snapshot was taken at.
    pub snapshot_resource_version: String,
    /// When the snapshot was taken.
    pub snapshot_timestamp: jiff::Timestamp,
    /// Objects written to the snapshot.
    pub number_of_contents: u64,
    /// Resources listed.
    pub resources: usize,
    /// Objects seen but deliberately not written.
    pub skipped: usize,
    /// Whether all lists were read at the same resourceVersion.
    pub consistency: Consistency,
    /// Git objects the mirror did not hold before.
    pub new_objects: u64,
    /// Uncompressed bytes of those new git objects.
    pub new_bytes: u64,
    /// Wall-clock time the snapshot took, in seconds.
    pub duration_seconds: f64,
    /// When the snapshot expires, if it has a TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_until: Option<jiff::Timestamp>,
    /// Secrets written with their values sealed (`--encrypt-to`).
    #[serde(default)]
    pub encrypted_secrets: u64,
    /// Secrets written with their values in the clear (no recipients configured).
    #[serde(default)]
    pub unencrypted_secrets: u64,
    /// The filter of a partial snapshot (absent: the whole cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::tree::SnapshotFilter>,
    /// Group versions the server lists but did not serve: their objects are not in the
    /// snapshot (recorded in its `snapshot.yaml`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable_apis: Vec<crate::tree::UnavailableApi>,
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
        let filter = filter::Filter::new(&opts.filter)?;
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

        let sealer = match &opts.encrypt_to {
            Some(r) if !r.is_empty() => Some(Arc::new(sealer_for(&git_dir, &cluster_name, r.clone(), opts.encrypt_paths.clone()).await?)),
            _ if !opts.encrypt_paths.is_empty() => {
                return Err(SnapshotError::Options("--encrypt-path needs recipients (--encrypt-to)".into()));
            }
            _ => None,
        };
        let encryption = sealer.as_ref().map(|s| crate::tree::Encryption {
            recipients: s.recipients.names().to_vec(),
            fingerprint_key_id: s.key.id(),
            paths: path_names(s.paths()),
        });

        let discovered = discovery::discover(cluster, Versions::Preferred, opts.threads)
            .await
            .map_err(|e| SnapshotError::Discovery(Box::new(e)))?;
        let served: Vec<ApiResourceInfo> = discovered.snapshotted().cloned().collect();
        let resources = filter.resources(&served)?;
        let filter = Arc::new(filter);
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
                imported_from: None,
                encryption: encryption.clone(),
                filter: filter.recorded(),
                unavailable_apis: discovered.unavailable.clone(),
            };
            let policy = ObjectPolicy { filter: filter.clone(), sealer: sealer.clone() };
            match attempt_snapshot(cluster, &git_dir, opts, &resources, base, policy, observer.clone()).await {
                Err(AttemptError::Expired) if attempt < MAX_RV_RESTARTS => {
                    tracing::warn!(rv = %rv, "resourceVersion expired while listing; starting over");
                    continue;
                }
                Err(AttemptError::Expired) => return Err(SnapshotError::Expired { rv, attempts: attempt }),
                Err(AttemptError::Failed(e)) => return Err(e),
                Ok(done) => {
                    if let Some(sealer) = sealer {
                        // Best effort: without the cache, the next snapshot reads the Secret files.
                        let (dir, cluster, commit) = (git_dir.clone(), cluster_name.clone(), done.commit.to_string());
                        let written = tokio::task::spawn_blocking(move || sealer.write_cache(&dir, &cluster, &commit)).await;
                        if let Ok(Err(e)) = written {
                            tracing::warn!(error = %e, "could not write the sealed-values cache; the next snapshot reads the Secret files instead");
                        }
                    }
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
                        encrypted_secrets: done.encrypted_secrets,
                        unencrypted_secrets: done.unencrypted_secrets,
                        filter: filter.recorded(),
                        unavailable_apis: discovered.unavailable.clone(),
                    });
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// The sealer of a snapshot of `cluster_name`: the mirror's fingerprint key (created on first
/// use), a new data key, and the sealed values and key files of the cluster's latest snapshot
/// sealed to the same recipients under the same fingerprint key, so unchanged values keep
/// their bytes. Those values come from the mirror's sealed-values cache when it was written
/// for that snapshot, else from its Secret files.
async fn sealer_for(
    git_dir: &std::path::Path,
    cluster_name: &str,
    recipients: crate::crypt::Recipients,
    paths: Vec<crate::crypt::SealedPath>,
) -> Result<crate::crypt::Sealer> {
    let dir = git_dir.to_path_buf();
    let cluster = cluster_name.to_owned();
    tokio::task::spawn_blocking(move || -> Result<crate::crypt::Sealer> {
        // The key lives inside the mirror directory, which must be a repository first.
        let mirror = Mirror::open_or_init(&dir)?;
        let key = crate::crypt::FingerprintKey::load_or_create(&dir)?;
        let mut previous = crate::crypt::Previous::new();
        let mut keys = std::collections::BTreeMap::new();
        let wanted = crate::tree::Encryption {
            recipients: recipients.names().to_vec(),
            fingerprint_key_id: key.id(),
            paths: path_names(&paths),
        };
        let last = mirror
            .snapshots()?
            .into_iter()
            .rev()
            .find(|s| s.meta.cluster_name == cluster && s.meta.encryption.as_ref() == Some(&wanted));
        if let Some(last) = last {
            mirror.walk_files(&last.commit, crate::crypt::KEYS_DIR, |file, bytes| {
                if let Some(id) = crate::crypt::key_id_of_file(file) {
                    keys.insert(id.to_owned(), bytes.to_vec());
                }
                std::ops::ControlFlow::Continue(())
            })?;
            let commit = last.commit.to_string();
            let cached = crate::crypt::read_cache(&dir, &cluster, &commit);
            let from_cache = cached.is_some();
            match cached {
                Some(c) => previous = c,
                None => {
                    mirror.walk_namespaced_files(&last.commit, "api/v1/namespaces", "secrets", |_, bytes| {
                        if let Ok(text) = std::str::from_utf8(bytes) {
                            crate::crypt::collect_sealed(text, &mut previous);
                        }
                    })?;
                    // The files of resources with user-named sealed fields.
                    for p in &paths {
                        let prefix = if p.group.is_empty() { "api".to_owned() } else { format!("apis/{}", p.group) };
                        let segment = format!("/{}/", p.resource);
                        mirror.walk_files(&last.commit, &prefix, |file, bytes| {
                            if file.contains(&segment)
                                && let Ok(text) = std::str::from_utf8(bytes)
                            {
                                crate::crypt::collect_sealed(text, &mut previous);
                            }
                            std::ops::ControlFlow::Continue(())
                        })?;
                    }
                }
            }
            tracing::debug!(snapshot = %last.name, values = previous.len(), keys = keys.len(), from_cache, "reusing sealed values of the previous snapshot");
        }
        Ok(crate::crypt::Sealer::new(recipients, key, previous, keys)?.with_paths(paths).with_cache_dir(dir))
    })
    .await
    .map_err(|e| SnapshotError::Task(e.to_string()))?
}

/// The user-named sealed fields as `.k8s-snap/snapshot.yaml` records them: sorted, unique.
fn path_names(paths: &[crate::crypt::SealedPath]) -> Vec<String> {
    let mut names: Vec<String> = paths.iter().map(ToString::to_string).collect();
    names.sort();
    names.dedup();
    names
}

fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}
