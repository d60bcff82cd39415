//! The work the reconcilers hand off: take a snapshot (real: into the controller's local
//! mirror) and push it, delete a snapshot's data, run a restore, and the store-wide jobs
//! (`restoresnapshots`, `housekeepstore`).
//!
//! Owns: the calls from the controller into the store and the restore engine, and the
//! mapping of an ObjectstoreConfig to an S3 store.
//! Must not touch: CR status (the reconcilers write it), the store or restore internals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeSet;

use tracing::Instrument;

use crate::cluster::Cluster;
use crate::mirror::{Mirror, SharedMirror};
use crate::restore::RestoreStatus;
use crate::restore::preference::Preference;
use crate::snapshot::{NoProgress, SnapshotError, SnapshotOptions, SnapshotSummary};
use crate::store::sync::{self, StoreSnapshot};
use crate::store::{S3Options, S3Store, Secret};
use crate::tree::ContentPath;

use super::crd::{ObjectstoreConfigSpec, RestorePreferenceCrSpec, RestoreSpec};

/// Errors of the controller's work items.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// Taking the snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The controller's mirror failed.
    #[error("mirror {path}: {source}")]
    Mirror {
        /// The mirror's directory.
        path: PathBuf,
        /// The mirror error.
        #[source]
        source: crate::mirror::MirrorError,
    },
    /// A blocking worker task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Join(#[source] tokio::task::JoinError),
    /// Pushing to or pulling from the store failed.
    #[error(transparent)]
    Sync(#[from] crate::store::sync::SyncError),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The ObjectstoreConfig names no bucket.
    #[error("ObjectstoreConfig {config}: spec.bucket is empty")]
    EmptyBucket {
        /// `namespace/name` of the ObjectstoreConfig.
        config: String,
    },
    /// The RestorePreference is not valid.
    #[error(transparent)]
    Preference(#[from] crate::restore::PreferenceError),
    /// The snapshot to restore is neither in the mirror nor in the store.
    #[error("{}", super::messages::SNAPSHOT_FILE_NOT_FOUND)]
    SnapshotFileNotFound(#[source] Box<crate::restore::PrepareError>),
    /// The restore failed.
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
    /// A reviewed plan (`spec.planRef`) was not applied.
    #[error(transparent)]
    Reviewed(#[from] crate::restore::plan_file::ReviewedError),
    /// Preparing the restore failed.
    #[error(transparent)]
    Prepare(#[from] Box<crate::restore::PrepareError>),
    /// Importing an original archive failed.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
}

impl WorkError {
    /// Whether retrying may succeed (transient cluster errors only; never auth errors).
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            WorkError::Snapshot(e) => e
                .cluster_error()
                .is_some_and(|c| c.is_transient() && !c.is_auth()),
            _ => false,
        }
    }
}

/// The object store a snapshot goes to (resolved from an ObjectstoreConfig and its Secret).
/// Credentials are kept out of `Debug`.
#[derive(Clone)]
pub struct StoreTarget {
    /// `namespace/name` of the ObjectstoreConfig.
    pub config_name: String,
    /// The ObjectstoreConfig's spec.
    pub spec: ObjectstoreConfigSpec,
    /// The access key, from the Secret's `accesskey`.
    pub access_key: String,
    /// The secret key, from the Secret's `secretkey`.
    pub secret_key: String,
    /// `--createbucket`.
    pub create_bucket: bool,
    /// `--insecure` (or the config's `insecure`).
    pub insecure: bool,
}

impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTarget")
            .field("config_name", &self.config_name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// What was stored, for the Snapshot status (`storedFileSize`, `storedTimestamp`).
#[derive(Debug, Clone)]
pub(crate) struct Pushed {
    pub stored_bytes: u64,
    pub stored_at: jiff::Timestamp,
}

/// A finished snapshot: the summary, its content paths (all of them) and where it was pushed.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotOutcome {
    pub summary: SnapshotSummary,
    pub contents: Vec<String>,
    pub pushed: Option<Pushed>,
}

/// Takes a snapshot of `cluster` into the mirror at `git_dir`, lists its contents and, when
/// `store` is given, pushes it there.
pub(crate) async fn take_and_push_snapshot(
    cluster: &Cluster,
    git_dir: &Path,
    opts: &SnapshotOptions,
    store: Option<&StoreTarget>,
) -> Result<SnapshotOutcome, WorkError> {
    let summary =
        crate::snapshot::take_snapshot(cluster, git_dir.to_path_buf(), opts, Arc::new(NoProgress))
            .await?;
    let contents = snapshot_contents(git_dir, &summary.name).await?;
    let pushed = match store {
        None => None,
        Some(target) => Some(push_snapshot(git_dir, &summary.name, target).await?),
    };
    Ok(SnapshotOutcome {
        summary,
        contents,
        pushed,
    })
}

/// Whether the local mirror holds the snapshot `name`.
pub async fn has_local_snapshot(git_dir: &Path, name: &str) -> Result<bool, WorkError> {
    let dir = git_dir.to_path_buf();
    let name = name.to_string();
    blocking(move || match Mirror::open(&dir) {
        Ok(m) => m
            .snapshot(&name)
            .map(|s| s.is_some())
            .map_err(|e| WorkError::Mirror {
                path: dir.clone(),
                source: e,
            }),
        Err(_) => Ok(false),
    })
    .await
}

/// The content paths (`/api/v1/...`) of a snapshot in the mirror, sorted.
pub(crate) async fn snapshot_contents(
    git_dir: &Path,
    name: &str,
) -> Result<Vec<String>, WorkError> {
    let dir = git_dir.to_path_buf();
    let name = name.to_string();
    blocking(move || {
        let err = |e: crate::mirror::MirrorError| WorkError::Mirror {
            path: dir.clone(),
            source: e,
        };
        let mirror = Mirror::open(&dir).map_err(err)?;
        let Some(snap) = mirror.snapshot(&name).map_err(err)? else {
            return Ok(Vec::new());
        };
        let files = mirror.list_files(&snap.commit, "").map_err(err)?;
        Ok(files
            .iter()
            .filter_map(|f| ContentPath::from_file_path(f).ok())
            .map(|p| p.as_str().to_string())
            .collect())
    })
    .await
}

/// Deletes a snapshot's data: the local mirror tag and, when it was pushed, the store
/// copy.
pub(crate) async fn delete_snapshot_data(
    git_dir: &Path,
    name: &str,
    store: Option<&StoreTarget>,
) -> Result<(), WorkError> {
    if let Some(target) = store {
        delete_from_store(name, target).await?;
    }
    let dir = git_dir.to_path_buf();
    let name = name.to_string();
    blocking(move || {
        let mirror = match Mirror::open(&dir) {
            Ok(m) => m,
            Err(_) => return Ok(()),
        };
        let err = |e: crate::mirror::MirrorError| WorkError::Mirror {
            path: dir.clone(),
            source: e,
        };
        if mirror.snapshot(&name).map_err(err)?.is_some() {
            mirror.delete_snapshot(&name).map_err(err)?;
        }
        Ok(())
    })
    .await
}

/// Opens the S3 store an ObjectstoreConfig names (creating the bucket with `--createbucket`).
pub async fn open_store(target: &StoreTarget) -> Result<S3Store, WorkError> {
    let spec = &target.spec;
    if spec.bucket.trim().is_empty() {
        return Err(WorkError::EmptyBucket {
            config: target.config_name.clone(),
        });
    }
    let endpoint = spec.endpoint.trim();
    let opts = S3Options {
        endpoint: Some(endpoint.to_string()).filter(|e| !e.is_empty()),
        region: Some(spec.region.trim().to_string()).filter(|r| !r.is_empty()),
        // S3-compatible servers (MinIO, Ceph, moto) want path-style; AWS virtual-hosted.
        path_style: spec
            .path_style
            .unwrap_or(!endpoint.is_empty() && !endpoint.contains("amazonaws.com")),
        insecure: target.insecure,
        access_key_id: Some(Secret::new(target.access_key.clone())),
        secret_access_key: Some(Secret::new(target.secret_key.clone())),
    };
    let store = S3Store::connect(
        spec.bucket.trim(),
        spec.prefix.as_deref().unwrap_or("").trim_matches('/'),
        &opts,
    )
    .await?;
    if target.create_bucket {
        store.ensure_bucket().await?;
    }
    Ok(store)
}

/// The controller's mirror at `git_dir`, shared by async code (git work on blocking threads).
async fn shared_mirror(git_dir: &Path) -> Result<SharedMirror, WorkError> {
    SharedMirror::open_or_init(git_dir)
        .await
        .map_err(|e| WorkError::Mirror {
            path: git_dir.to_path_buf(),
            source: e,
        })
}

/// Pushes the snapshot `name` from the mirror to the store (only the objects it lacks).
pub(crate) async fn push_snapshot(
    git_dir: &Path,
    name: &str,
    target: &StoreTarget,
) -> Result<Pushed, WorkError> {
    let store = open_store(target).await?;
    let mirror = shared_mirror(git_dir).await?;
    let report = sync::push(&store, &mirror, &[name.to_string()]).await?;
    Ok(Pushed {
        stored_bytes: report.pack_bytes + report.idx_bytes,
        stored_at: jiff::Timestamp::now(),
    })
}

/// Removes the snapshot `name` from the store's manifest (its packs go at the next gc).
pub(crate) async fn delete_from_store(name: &str, target: &StoreTarget) -> Result<(), WorkError> {
    let store = open_store(target).await?;
    sync::delete(&store, &[name.to_string()]).await?;
    Ok(())
}

/// Everything a restore needs, resolved by the reconciler (no credentials in `Debug`).
pub(crate) struct RestoreJob<'a> {
    pub name: &'a str,
    /// The snapshot to restore (`spec.snapshotName` or `spec.backupName`, resolved).
    pub snapshot: &'a str,
    pub spec: &'a RestoreSpec,
    pub target: &'a Cluster,
    pub git_dir: &'a Path,
    pub preference: Option<&'a RestorePreferenceCrSpec>,
    pub store: Option<&'a StoreTarget>,
    /// Opens the snapshot's encrypted Secret values (`spec.identitySecretRef`).
    pub identities: Option<&'a crate::crypt::Identities>,
    /// A reviewed plan (`spec.planRef`) and its origin: applied exactly, or refused.
    pub plan: Option<&'a (crate::restore::plan_file::PlanFile, String)>,
}

/// Plans and applies a restore (the engine of `k8s-snap restore`); returns the status in the
/// original shape (lists uncapped; the reconciler caps them). A snapshot only in the store
/// (another replica took it) is pulled first.
pub(crate) async fn run_restore(job: RestoreJob<'_>) -> Result<RestoreStatus, WorkError> {
    let snapshot = job.snapshot.to_string();
    // The Restore's own selection fields replace the preference's.
    let spec = job.spec;
    let selects = !spec.include_paths.is_empty()
        || !spec.namespace_mapping.is_empty()
        || spec.create_namespaces.is_some();
    let mut preference = match job.preference {
        Some(p) => Preference::from_spec(
            spec.restore_preference_name.clone(),
            p.preference.clone(),
            &format!(
                "RestorePreference {}",
                spec.restore_preference_name.as_deref().unwrap_or("")
            ),
        )?,
        None => Preference::default(),
    };
    if selects {
        let mut merged = preference.spec.clone();
        if !spec.include_paths.is_empty() {
            merged.include_paths = spec.include_paths.clone();
        }
        if !spec.namespace_mapping.is_empty() {
            merged.namespace_mapping = spec.namespace_mapping.clone();
        }
        if let Some(c) = spec.create_namespaces {
            merged.create_namespaces = c;
        }
        preference = Preference::from_spec(preference.name.clone(), merged, "Restore spec")?;
    }
    // A reviewed plan brings its own preference (selection and mapping included).
    if let Some((file, origin)) = job.plan {
        preference = file
            .preference(origin)
            .map_err(crate::restore::plan_file::ReviewedError::from)?;
    }
    let store = match job.store {
        Some(target) => Some(open_store(target).await?),
        None => None,
    };
    let store_ref = store.as_ref().map(|s| s as &dyn crate::store::ObjectStore);
    let (mut loaded, discovering) =
        match crate::restore::prepare(job.git_dir, &snapshot, store_ref, job.target, &preference)
            .await
        {
            Ok(prepared) => (prepared.snapshot, prepared.discovering),
            Err(e) if e.is_unknown_snapshot() => {
                return Err(WorkError::SnapshotFileNotFound(Box::new(e)));
            }
            Err(e) => return Err(Box::new(e).into()),
        };
    // All or nothing, before any write: without the identity (or with another) this fails
    // naming the recipients the snapshot is sealed to.
    loaded
        .open_sealed(job.identities)
        .map_err(crate::restore::RestoreError::from)?;
    let span = tracing::info_span!("restore", restore = %job.name, snapshot = %snapshot);
    if let Some((file, origin)) = job.plan {
        let applied = crate::restore::plan_file::apply_reviewed(
            job.target,
            loaded,
            discovering,
            file,
            origin,
            false,
            &crate::restore::RestoreOptions::default(),
        )
        .instrument(span)
        .await?;
        return Ok(applied.report.status);
    }
    let (_plan, report) = crate::restore::restore_with(
        job.target,
        loaded,
        discovering,
        &preference,
        &crate::restore::RestoreOptions::default(),
    )
    .instrument(span)
    .await?;
    Ok(report.status)
}

/// The snapshots listed in a store's manifest (`--restoresnapshots` recreates their CRs).
pub(crate) async fn stored_snapshots(
    target: &StoreTarget,
) -> Result<Vec<StoreSnapshot>, WorkError> {
    let store = open_store(target).await?;
    Ok(sync::list(&store).await?)
}

/// What one `--housekeepstore` round found.
#[derive(Debug, Clone, Default)]
pub struct Housekeeping {
    /// Snapshots the manifest lists after gc.
    pub stored: BTreeSet<String>,
    /// Problems `verify` found (pack or snapshot, and why).
    pub problems: Vec<String>,
    /// Snapshots gc removed because their `availableUntil` passed.
    pub expired: Vec<String>,
}

/// Grace period of the controller's store gc: packs unneeded for this long, and orphans
/// this old, are deleted (a concurrent push finishes well within it).
pub(crate) const STORE_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `--housekeepstore`: verifies the store (sizes of every pack, with `validate_file_info`),
/// garbage-collects it, and returns what it holds afterwards.
pub async fn housekeep_store(
    target: &StoreTarget,
    validate_file_info: bool,
) -> Result<Housekeeping, WorkError> {
    let store = open_store(target).await?;
    let mut out = Housekeeping::default();
    if validate_file_info {
        let report = sync::verify(&store, false).await?;
        out.problems = report
            .problems
            .iter()
            .map(|p| format!("{}: {} (snapshots {:?})", p.subject, p.reason, p.snapshots))
            .collect();
    }
    let gc = sync::gc(
        &store,
        sync::GcOptions {
            grace: STORE_GC_GRACE,
            now: jiff::Timestamp::now(),
        },
    )
    .await?;
    out.expired = gc.expired;
    out.stored = sync::list(&store)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WorkError> + Send + 'static,
) -> Result<T, WorkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(WorkError::Join)?
}
