//! [`MemoryStore`]: an in-memory [`ObjectStore`] for unit tests and benchmarks, with the same
//! conditional-write semantics as the real backends. Touches nothing outside its map.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{Etag, Object, ObjectMeta, ObjectStore, PutOutcome, Result, StoreError, check_key};

/// Key → (bytes, modification time).
type Objects = BTreeMap<String, (Vec<u8>, jiff::Timestamp)>;

/// An in-memory store; clones share the same objects.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn map(&self) -> MutexGuard<'_, Objects> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an object unconditionally (tests: corrupt a pack).
    pub fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        self.map()
            .insert(key.to_owned(), (bytes, jiff::Timestamp::now()));
    }

    /// Sets an object's modification time (tests: age an orphan).
    #[cfg(test)]
    pub(crate) fn set_modified(&self, key: &str, t: jiff::Timestamp) {
        if let Some(v) = self.map().get_mut(key) {
            v.1 = t;
        }
    }

    fn sync_result<T>(r: Result<T>) -> BoxFuture<'static, Result<T>>
    where
        T: Send + 'static,
    {
        Box::pin(async move { r })
    }

    fn not_found(key: &str) -> StoreError {
        StoreError::NotFound {
            store: "memory store".into(),
            key: key.to_owned(),
        }
    }
}

fn etag_of(bytes: &[u8]) -> Etag {
    Etag(hex::encode(Sha256::digest(bytes)))
}

impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory store".into()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>> {
        let r = check_key("memory store", key).and_then(|()| {
            self.map()
                .get(key)
                .map(|(b, _)| Object {
                    etag: etag_of(b),
                    bytes: b.clone(),
                })
                .ok_or_else(|| Self::not_found(key))
        });
        Self::sync_result(r)
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        let r = check_key("memory store", key).and_then(|()| {
            self.map()
                .get(key)
                .map(|(b, t)| ObjectMeta {
                    key: key.to_owned(),
                    size: b.len() as u64,
                    last_modified: Some(*t),
                })
                .ok_or_else(|| Self::not_found(key))
        });
        Self::sync_result(r)
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<PutOutcome>> {
        let r = check_key("memory store", key).map(|()| {
            let mut map = self.map();
            if map.contains_key(key) {
                PutOutcome::AlreadyExists
            } else {
                map.insert(key.to_owned(), (bytes, jiff::Timestamp::now()));
                PutOutcome::Created
            }
        });
        Self::sync_result(r)
    }

    fn put_if_match<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        expected: Option<&'a Etag>,
    ) -> BoxFuture<'a, Result<Etag>> {
        let r = check_key("memory store", key).and_then(|()| {
            let mut map = self.map();
            let current = map.get(key).map(|(b, _)| etag_of(b));
            if current.as_ref() != expected {
                return Err(StoreError::PreconditionFailed {
                    store: "memory store".into(),
                    key: key.to_owned(),
                });
            }
            let etag = etag_of(&bytes);
            map.insert(key.to_owned(), (bytes, jiff::Timestamp::now()));
            Ok(etag)
        });
        Self::sync_result(r)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        let out = self
            .map()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, t))| ObjectMeta {
                key: k.clone(),
                size: b.len() as u64,
                last_modified: Some(*t),
            })
            .collect();
        Self::sync_result(Ok(out))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        self.map().remove(key);
        Self::sync_result(Ok(()))
    }
}
