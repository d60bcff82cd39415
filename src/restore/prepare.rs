//! [`prepare`]: the one preparation of every restore (the CLI's `plan`/`restore`, the
//! file-drop executor of `k8s-snap watch` and `controller --watch-dir`, and the controller's
//! Restores): pull the snapshot from the store when the mirror lacks it, load its tree on a
//! blocking thread, take the part the preference asks for (`includePaths`,
//! `createNamespaces`, `namespaceMapping`: [`super::subset`]), then probe the target so an
//! unreachable cluster fails before anything is planned or written.
//!
//! Owns: that order and its errors. Must not touch: git (through [`SharedMirror`] and
//! [`load_snapshot`]), the store beyond [`crate::store::sync::ensure_local`], planning or
//! applying.

use std::path::{Path, PathBuf};

use super::preference::Preference;
use super::subset::{self, SubsetError};
use super::{Discovering, LoadedSnapshot, RestoreError, load_snapshot};
use crate::cluster::{Cluster, ClusterError, RetryPolicy};
use crate::mirror::{MirrorError, SharedMirror};
use crate::store::ObjectStore;
use crate::store::sync::{SyncError, ensure_local};

/// Why a restore could not be prepared; each names the snapshot, mirror, store or target.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The local mirror cannot be opened.
    #[error("opening the mirror {path}: {source}")]
    Mirror {
        /// The mirror's directory.
        path: PathBuf,
        /// The mirror error.
        #[source]
        source: MirrorError,
    },
    /// The snapshot could not be pulled from the store.
    #[error("pulling snapshot {name:?} from the store: {source}")]
    Pull {
        /// The snapshot's name.
        name: String,
        /// The sync error.
        #[source]
        source: SyncError,
    },
    /// The snapshot is neither in the mirror nor in the store.
    #[error("snapshot {name:?} not found: neither in the mirror {} nor in {store}", git_dir.display())]
    NotFound {
        /// The snapshot's name.
        name: String,
        /// The mirror's directory.
        git_dir: PathBuf,
        /// The store (no credentials).
        store: String,
    },
    /// Reading the snapshot from the mirror failed.
    #[error(transparent)]
    Load(#[from] RestoreError),
    /// The blocking task reading the snapshot panicked or was cancelled.
    #[error("loading snapshot {name:?}: {source}")]
    LoadTask {
        /// The snapshot's name.
        name: String,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The preference's `includePaths` or `namespaceMapping` cannot be applied.
    #[error(transparent)]
    Subset(#[from] SubsetError),
    /// The target cluster does not answer; nothing was created.
    #[error("the target cluster does not answer; nothing was created: {source}")]
    Unreachable {
        /// The cluster error.
        #[source]
        source: ClusterError,
    },
}

impl PrepareError {
    /// Whether the snapshot is in neither the mirror nor the store.
    pub(crate) fn is_unknown_snapshot(&self) -> bool {
        matches!(
            self,
            PrepareError::NotFound { .. }
                | PrepareError::Load(RestoreError::UnknownSnapshot { .. })
        )
    }
}

/// A prepared restore: the snapshot's tree, and whether it was pulled from the store.
#[derive(Debug)]
pub struct Prepared {
    /// The snapshot's objects.
    pub snapshot: LoadedSnapshot,
    /// Whether the snapshot was pulled from the store (it was not in the mirror).
    pub pulled: bool,
    /// The target's discovery, started while the tree was read: pass it to
    /// [`super::plan_with`] or [`super::restore_with`].
    pub discovering: Discovering,
}

/// Prepares the restore of snapshot `name` from the mirror at `git_dir` onto `target`:
/// pulls it from `store` when only the store has it, loads its tree (blocking thread), keeps
/// and maps the objects `pref` asks for ([`subset::apply`]), and probes the target
/// (`/version`, two retries) so nothing is planned against a dead cluster.
pub async fn prepare(
    git_dir: &Path,
    name: &str,
    store: Option<&dyn ObjectStore>,
    target: &Cluster,
    pref: &Preference,
) -> Result<Prepared, PrepareError> {
    let mut pulled = false;
    let mut not_in_store = None;
    if let Some(store) = store {
        let mirror = SharedMirror::open_or_init(git_dir)
            .await
            .map_err(|source| PrepareError::Mirror {
                path: git_dir.to_path_buf(),
                source,
            })?;
        match ensure_local(store, &mirror, name).await {
            Ok(p) => pulled = p,
            Err(SyncError::NotInStore { store, .. }) => not_in_store = Some(store),
            Err(source) => {
                return Err(PrepareError::Pull {
                    name: name.to_owned(),
                    source,
                });
            }
        }
        if pulled {
            tracing::info!(snapshot = %name, store = %store.describe(), "pulled from the store");
        }
    }
    // Discovery of the target (network) overlaps the tree's read (CPU, disk).
    let discovering = Discovering::start(target);
    let (dir, owned) = (git_dir.to_path_buf(), name.to_owned());
    let loaded = tokio::task::spawn_blocking(move || load_snapshot(&dir, &owned))
        .await
        .map_err(|source| PrepareError::LoadTask {
            name: name.to_owned(),
            source,
        })?;
    let snapshot = match (loaded, not_in_store) {
        (Err(RestoreError::UnknownSnapshot { .. }), Some(store)) => {
            return Err(PrepareError::NotFound {
                name: name.to_owned(),
                git_dir: git_dir.to_path_buf(),
                store,
            });
        }
        (loaded, _) => loaded?,
    };
    let snapshot = subset::apply(snapshot, &pref.spec)?;
    // Fail fast on a target that does not answer at all (a wrong kubeconfig or context);
    // transient errors during the restore itself keep the full retry policy.
    target
        .clone()
        .with_retry(RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        })
        .get_json::<serde_json::Value>("/version")
        .await
        .map_err(|source| PrepareError::Unreachable { source })?;
    Ok(Prepared {
        snapshot,
        pulled,
        discovering,
    })
}
