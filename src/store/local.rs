//! [`LocalDirStore`]: the store as a plain directory (the embedded default, `<data-dir>/store`).
//!
//! Writes are atomic (temp file in the same directory, then rename or hard link); creating an
//! immutable object uses `link(2)`, which fails if the key exists (the local `If-None-Match`);
//! the manifest's compare-and-swap runs under an exclusive lock file, with etag = sha256 of the
//! content. Touches only files under its root directory.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{Etag, Object, ObjectMeta, ObjectStore, PutOutcome, Result, StoreError, check_key};

/// Lock file (outside the `k8s-snap/` key space) serializing compare-and-swap writes.
const LOCK_FILE: &str = ".k8s-snap-store.lock";

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

fn etag_of(bytes: &[u8]) -> Etag {
    Etag(hex::encode(Sha256::digest(bytes)))
}

impl LocalDirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> LocalDirStore {
        LocalDirStore { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(&self.describe(), key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, context: String) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            store: self.describe(),
            context,
            source,
        }
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            store: self.describe(),
            key: key.to_owned(),
        }
    }

    /// Writes `bytes` to a new temp file next to `path` and returns the temp file's path.
    fn write_temp(&self, path: &Path, bytes: &[u8]) -> Result<tempfile::TempPath> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(self.io(format!("creating {}", dir.display())))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(self.io(format!("creating a temp file in {}", dir.display())))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(self.io(format!("writing a temp file in {}", dir.display())))?;
        Ok(tmp.into_temp_path())
    }

    fn get_sync(&self, key: &str) -> Result<Object> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Object {
                etag: etag_of(&bytes),
                bytes,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.io(format!("reading {}", path.display()))(e)),
        }
    }

    fn head_sync(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(meta_of(key.to_owned(), &m)),
            Ok(_) => Err(self.not_found(key)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.io(format!("reading {}", path.display()))(e)),
        }
    }

    fn put_if_absent_sync(&self, key: &str, bytes: &[u8]) -> Result<PutOutcome> {
        let path = self.path(key)?;
        if path.exists() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let tmp = self.write_temp(&path, bytes)?;
        // link(2) never replaces an existing file: an atomic create-if-absent.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(PutOutcome::Created),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(self.io(format!("creating {}", path.display()))(e)),
        }
    }

    fn put_if_match_sync(&self, key: &str, bytes: &[u8], expected: Option<&Etag>) -> Result<Etag> {
        let path = self.path(key)?;
        std::fs::create_dir_all(&self.root)
            .map_err(self.io(format!("creating {}", self.root.display())))?;
        let lock_path = self.root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(format!("opening {}", lock_path.display())))?;
        File::lock(&lock).map_err(self.io(format!("locking {}", lock_path.display())))?;
        let current = match self.get_sync(key) {
            Ok(o) => Some(o.etag),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if current.as_ref() != expected {
            return Err(StoreError::PreconditionFailed {
                store: self.describe(),
                key: key.to_owned(),
            });
        }
        let tmp = self.write_temp(&path, bytes)?;
        tmp.persist(&path)
            .map_err(|e| self.io(format!("replacing {}", path.display()))(e.error))?;
        drop(lock);
        Ok(etag_of(bytes))
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk the deepest directory the prefix names completely.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() {
            check_key(&self.describe(), dir_part)?;
        }
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, dir_part.to_owned())];
        while let Some((dir, base)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(it) => it,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(format!("listing {}", dir.display()))(e)),
            };
            for entry in entries {
                let entry = entry.map_err(self.io(format!("listing {}", dir.display())))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let key = if base.is_empty() {
                    name
                } else {
                    format!("{base}/{name}")
                };
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Removed since the directory was read (another writer's temp file): it is
                    // not there to list.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(self.io(format!("reading {}", entry.path().display()))(e));
                    }
                };
                if meta.is_dir() {
                    stack.push((entry.path(), key));
                } else if meta.is_file() && key.starts_with(prefix) && key != LOCK_FILE {
                    out.push(meta_of(key, &meta));
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete_sync(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(format!("deleting {}", path.display()))(e)),
        }
    }
}

fn meta_of(key: String, m: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: m.len(),
        last_modified: m
            .modified()
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok()),
    }
}

/// Runs blocking file-system work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    store: &LocalDirStore,
    f: impl FnOnce(LocalDirStore) -> Result<T> + Send + 'static,
) -> Result<T> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(s))
        .await
        .map_err(|e| StoreError::Io {
            store: store.describe(),
            context: "a file-system task".into(),
            source: std::io::Error::other(e),
        })?
}

impl ObjectStore for LocalDirStore {
    fn describe(&self) -> String {
        format!("store {}", self.root.display())
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>> {
        let key = key.to_owned();
        Box::pin(blocking(self, move |s| s.get_sync(&key)))
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        let key = key.to_owned();
        Box::pin(blocking(self, move |s| s.head_sync(&key)))
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<PutOutcome>> {
        let key = key.to_owned();
        Box::pin(blocking(self, move |s| s.put_if_absent_sync(&key, &bytes)))
    }

    fn put_if_match<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        expected: Option<&'a Etag>,
    ) -> BoxFuture<'a, Result<Etag>> {
        let key = key.to_owned();
        let expected = expected.cloned();
        Box::pin(blocking(self, move |s| {
            s.put_if_match_sync(&key, &bytes, expected.as_ref())
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        let prefix = prefix.to_owned();
        Box::pin(blocking(self, move |s| s.list_sync(&prefix)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let key = key.to_owned();
        Box::pin(blocking(self, move |s| s.delete_sync(&key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A LIST while writers create and remove their temp files (another push's uploads, in
    /// this process or another) lists what exists and never fails on a file that vanished
    /// between reading the directory and reading its size.
    #[test]
    fn list_tolerates_files_vanishing_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path().to_path_buf());
        store
            .put_if_absent_sync("k8s-snap/packs/a.pack", b"a")
            .unwrap();
        let packs = dir.path().join("k8s-snap/packs");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let p = packs.join(format!(".tmp-{i}"));
                    std::fs::write(&p, b"x").unwrap();
                    std::fs::remove_file(&p).unwrap();
                    i += 1;
                }
            });
            for _ in 0..3000 {
                let listed = store.list_sync("k8s-snap/packs/");
                let listed = listed
                    .inspect_err(|_| stop.store(true, std::sync::atomic::Ordering::Relaxed))
                    .unwrap();
                assert!(listed.iter().any(|o| o.key == "k8s-snap/packs/a.pack"));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
