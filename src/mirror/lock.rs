//! The exclusive advisory writer lock of a mirror (`<git_dir>/k8s-snap.lock`): every writer
//! (snapshot, delete, gc, pull) holds it, so writers of one data dir are serialized.
//!
//! Owns the lock file only. Must not touch refs or objects.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{LOCK_FILE, Mirror, MirrorError, Result, io_ctx};

/// The exclusive advisory lock on a mirror (`<git_dir>/k8s-snap.lock`), held by writers.
/// Released when dropped (also when the process dies).
#[derive(Debug)]
pub struct MirrorLock {
    _file: File,
    path: PathBuf,
}

impl MirrorLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

const POLL: Duration = Duration::from_millis(50);

impl Mirror {
    /// Takes the exclusive writer lock, waiting up to the lock timeout
    /// ([`Mirror::with_lock_timeout`]); fails with [`MirrorError::Locked`] after that.
    pub fn lock(&self) -> Result<MirrorLock> {
        let path = self.git_dir.join(LOCK_FILE);
        let file = io_ctx(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path),
            || format!("opening lock file {}", path.display()),
        )?;
        let start = Instant::now();
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(MirrorLock { _file: file, path }),
                Err(TryLockError::WouldBlock) => {
                    let waited = start.elapsed();
                    if waited >= self.lock_timeout {
                        return Err(MirrorError::Locked { path, waited });
                    }
                    if !logged {
                        tracing::info!(lock = %path.display(), "mirror is locked by another k8s-snap process; waiting");
                        logged = true;
                    }
                    std::thread::sleep(POLL.min(self.lock_timeout - waited));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(MirrorError::Io {
                        context: format!("locking {}", path.display()),
                        source: e,
                    });
                }
            }
        }
    }
}
