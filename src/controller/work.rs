//! The work the reconcilers hand off: take a snapshot (real: into the controller's local
//! mirror) and push it, delete a snapshot's data, run a restore, and the store-wide jobs
//! (`restoresnapshots`, `housekeepstore`).
//!
//! Owns: the seams between the controller and the store (issue 5) / restore engine (issue 6).
//! Every seam that is not integrated yet returns [`WorkError::NotIntegrated`]; none pretends
//! success. The lead replaces those bodies when merging the store and restore branches.
//! Must not touch: CR status (the reconcilers write it), the store or restore internals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::mirror::Mirror;
use crate::restore::RestoreStatus;
use crate::snapshot::{NoProgress, SnapshotError, SnapshotOptions, SnapshotSummary};
use crate::tree::ContentPath;

use super::crd::{ObjectstoreConfigSpec, RestorePreferenceCrSpec, RestoreSpec};

/// Errors of the controller's work items.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("mirror {path}: {message}")]
    Mirror { path: PathBuf, message: String },
    #[error("{0}")]
    NotIntegrated(&'static str),
    #[error("worker task failed: {0}")]
    Join(String),
}

impl WorkError {
    /// Whether retrying may succeed (transient cluster errors only; never auth errors).
    pub fn is_retryable(&self) -> bool {
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
    pub spec: ObjectstoreConfigSpec,
    pub access_key: String,
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
pub struct Pushed {
    pub stored_bytes: u64,
    pub stored_at: jiff::Timestamp,
}

/// A finished snapshot: the summary, its content paths (all of them) and where it was pushed.
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    pub summary: SnapshotSummary,
    pub contents: Vec<String>,
    pub pushed: Option<Pushed>,
}

/// Takes a snapshot of `cluster` into the mirror at `git_dir`, lists its contents and, when
/// `store` is given, pushes it there.
pub async fn take_and_push_snapshot(
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
                message: e.to_string(),
            }),
        Err(_) => Ok(false),
    })
    .await
}

/// The content paths (`/api/v1/...`) of a snapshot in the mirror, sorted.
pub async fn snapshot_contents(git_dir: &Path, name: &str) -> Result<Vec<String>, WorkError> {
    let dir = git_dir.to_path_buf();
    let name = name.to_string();
    blocking(move || {
        let err = |e: crate::mirror::MirrorError| WorkError::Mirror {
            path: dir.clone(),
            message: e.to_string(),
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

/// Deletes a snapshot's data: the local mirror tag (real) and, when it was pushed, the store
/// copy (seam).
pub async fn delete_snapshot_data(
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
            message: e.to_string(),
        };
        if mirror.snapshot(&name).map_err(err)?.is_some() {
            mirror.delete_snapshot(&name).map_err(err)?;
        }
        Ok(())
    })
    .await
}

/// SEAM (issue 5): push the snapshot `name` from the mirror to the store.
pub async fn push_snapshot(
    _git_dir: &Path,
    _name: &str,
    _target: &StoreTarget,
) -> Result<Pushed, WorkError> {
    Err(WorkError::NotIntegrated(
        "object store push not integrated yet",
    ))
}

/// SEAM (issue 5): remove the snapshot `name` from the store's manifest and its packs.
pub async fn delete_from_store(_name: &str, _target: &StoreTarget) -> Result<(), WorkError> {
    Err(WorkError::NotIntegrated(
        "object store delete not integrated yet",
    ))
}

/// Everything a restore needs, resolved by the reconciler (no credentials in `Debug`).
pub struct RestoreJob<'a> {
    pub name: &'a str,
    pub spec: &'a RestoreSpec,
    pub target: &'a Cluster,
    pub git_dir: &'a Path,
    pub preference: Option<&'a RestorePreferenceCrSpec>,
    pub store: Option<&'a StoreTarget>,
}

/// SEAM (issue 6): plan and apply a restore; returns the status in the original shape
/// (lists uncapped; the reconciler caps them).
pub async fn run_restore(_job: RestoreJob<'_>) -> Result<RestoreStatus, WorkError> {
    Err(WorkError::NotIntegrated(
        "restore engine not integrated yet",
    ))
}

/// SEAM (issue 5, `--restoresnapshots`): the snapshots listed in a store's manifest, to
/// recreate missing Snapshot CRs on start.
pub async fn stored_snapshots(_target: &StoreTarget) -> Result<Vec<String>, WorkError> {
    Err(WorkError::NotIntegrated(
        "restoring Snapshot resources from the store manifest is not integrated yet",
    ))
}

/// SEAM (issue 5, `--housekeepstore`): verify and garbage-collect the store; returns the
/// snapshot names whose data vanished (their CRs are failed with `Snapshot file not found`).
pub async fn housekeep_store(
    _target: &StoreTarget,
    _validate_file_info: bool,
) -> Result<Vec<String>, WorkError> {
    Err(WorkError::NotIntegrated(
        "store housekeeping is not integrated yet",
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WorkError> + Send + 'static,
) -> Result<T, WorkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WorkError::Join(e.to_string()))?
}
