//! [`SharedMirror`]: the one way async code reaches the mirror. A [`Mirror`] wraps a libgit2
//! repository, which is `Send` but not `Sync`; this handle is `Send + Sync + Clone` (the mirror
//! behind a mutex, as jj wraps its repository) and runs every piece of git work on a blocking
//! thread, so async callers (store sync, the controller, the file-drop executor) never block a
//! runtime thread with git and never need to block on a future.
//!
//! Owns only the handle and its blocking-thread bridge; must not know about stores, clusters
//! or restores (callers pass the closure doing their git work).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Mirror, MirrorError, Result};

/// A mirror shared by async tasks; each [`SharedMirror::run`] is one blocking-thread phase.
#[derive(Clone)]
pub struct SharedMirror {
    inner: Arc<Mutex<Mirror>>,
    git_dir: PathBuf,
}

impl std::fmt::Debug for SharedMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMirror")
            .field("git_dir", &self.git_dir)
            .finish()
    }
}

impl SharedMirror {
    /// Shares an open mirror.
    pub fn new(mirror: Mirror) -> SharedMirror {
        SharedMirror {
            git_dir: mirror.git_dir().to_path_buf(),
            inner: Arc::new(Mutex::new(mirror)),
        }
    }

    /// Opens (creating if missing) the mirror at `git_dir` on a blocking thread.
    pub async fn open_or_init(git_dir: &Path) -> Result<SharedMirror> {
        let dir = git_dir.to_path_buf();
        join(
            "opening the mirror",
            tokio::task::spawn_blocking(move || Mirror::open_or_init(&dir)),
        )
        .await?
        .map(SharedMirror::new)
    }

    /// Opens the existing mirror at `git_dir` on a blocking thread.
    pub async fn open(git_dir: &Path) -> Result<SharedMirror> {
        let dir = git_dir.to_path_buf();
        join(
            "opening the mirror",
            tokio::task::spawn_blocking(move || Mirror::open(&dir)),
        )
        .await?
        .map(SharedMirror::new)
    }

    /// The repository's directory (`.../mirror.git`).
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// Runs `f` on the mirror on a blocking thread (calls are serialized: one repository).
    pub async fn run<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<MirrorError> + Send + 'static,
        F: FnOnce(&Mirror) -> std::result::Result<T, E> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        join(
            "git work on the mirror",
            tokio::task::spawn_blocking(move || {
                // A panic in another call leaves the repository itself usable.
                let mirror = inner.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mirror)
            }),
        )
        .await?
    }
}

/// Awaits a blocking task, turning a panic or cancellation into a [`MirrorError`].
async fn join<T>(context: &str, task: tokio::task::JoinHandle<T>) -> Result<T> {
    task.await.map_err(|source| MirrorError::Blocking {
        context: context.to_owned(),
        source,
    })
}
