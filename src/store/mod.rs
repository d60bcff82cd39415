//! The object store the mirror is pushed to (docs/design.md §5): a small async [`ObjectStore`]
//! trait with a local-directory backend ([`LocalDirStore`]), an S3 backend ([`S3Store`]) and an
//! in-memory one for tests ([`MemoryStore`]); the [`Manifest`]; store URLs; and the operations
//! push, pull, verify, delete and gc ([`sync`]).
//!
//! Owns everything under `<prefix>/k8s-snap/` in the store. Must not import `git2` (packs are
//! built and indexed by `mirror`), must not print, and never puts a credential into a log line,
//! an error, the manifest or the tree: credentials live only inside the S3 client.

mod local;
pub mod manifest;
mod memory;
pub mod recover;
mod s3;
pub mod sync;
mod url;

use std::fmt;

use futures::future::BoxFuture;

pub use local::LocalDirStore;
pub use manifest::{Manifest, PackEntry, SnapshotEntry};
pub use memory::MemoryStore;
pub use recover::RecoverReport;
pub use s3::{S3Options, S3Store, Secret};
pub use sync::{
    DeleteReport, GcOptions, GcReport, PullReport, PushReport, RepackReport, StoreSnapshot,
    VerifyProblem, VerifyReport,
};
pub use url::StoreUrl;

/// Key prefix of everything k8s-snap writes in a store.
pub(crate) const ROOT: &str = "k8s-snap/";
/// Key of the manifest: the only mutable object.
pub const MANIFEST_KEY: &str = "k8s-snap/manifest.json";
/// Key prefix of the packs.
pub(crate) const PACKS_PREFIX: &str = "k8s-snap/packs/";

/// Result type of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An entity tag: an opaque version of one object, for compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Etag(pub String);

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bytes of an object and their etag.
#[derive(Debug, Clone)]
pub struct Object {
    /// The object's content.
    pub bytes: Vec<u8>,
    /// The object's etag (for conditional writes).
    pub etag: Etag,
}

/// An object's key (relative to the store prefix), size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, relative to the store prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, if the store reports it.
    pub last_modified: Option<jiff::Timestamp>,
}

/// Whether a conditional create wrote the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Created,
    /// The key existed already; nothing was written.
    AlreadyExists,
}

/// Everything that can go wrong talking to a store. Each variant names the store (without
/// credentials) and the key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under that key.
    #[error("{store}: {key} not found")]
    NotFound {
        /// The store (no credentials).
        store: String,
        /// The key.
        key: String,
    },
    /// Another writer changed the object since it was read.
    #[error("{store}: {key} was changed by another writer (precondition failed)")]
    PreconditionFailed {
        /// The store (no credentials).
        store: String,
        /// The key.
        key: String,
    },
    /// The store refused or failed an operation.
    #[error("{store}: {op} {key}: {reason}")]
    Backend {
        /// The store (no credentials).
        store: String,
        /// The operation (e.g. `GET`).
        op: &'static str,
        /// The key.
        key: String,
        /// The store's answer.
        reason: String,
    },
    /// A local filesystem operation failed.
    #[error("{store}: {context}: {source}")]
    Io {
        /// The store (no credentials).
        store: String,
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist ({store}); nothing was written")]
    NoSuchBucket {
        /// The store (no credentials).
        store: String,
        /// The bucket's name.
        bucket: String,
    },
    /// The store's credentials are missing or refused.
    #[error("{store}: {reason}")]
    Credentials {
        /// The store (no credentials).
        store: String,
        /// What is wrong with them.
        reason: String,
    },
    /// The store cannot be reached (no answer).
    #[error("cannot reach {store}: {op} {key}: {failure}")]
    Unreachable {
        /// The store (no credentials).
        store: String,
        /// The operation (e.g. `GET`).
        op: &'static str,
        /// The key.
        key: String,
        /// The classified network failure.
        failure: crate::cluster::NetFailure,
    },
    /// The store URL is not valid.
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl {
        /// The rejected URL.
        url: String,
        /// Why it is not valid.
        reason: String,
    },
    /// A key is not valid for the store.
    #[error("{store}: invalid key {key:?}: {reason}")]
    BadKey {
        /// The store (no credentials).
        store: String,
        /// The rejected key.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// A small async key/value object store. Keys are relative to the store's prefix and use `/`.
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// A credential-free description (`s3://bucket/prefix at https://...`, a path).
    fn describe(&self) -> String;
    /// The object's bytes and etag; [`StoreError::NotFound`] when missing.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>>;
    /// Hands the object's bytes to `sink` chunk by chunk as they arrive (the default: in one
    /// chunk after [`ObjectStore::get`]). An error of `sink` aborts the download.
    fn get_streamed<'a>(
        &'a self,
        key: &'a str,
        sink: &'a mut (dyn FnMut(bytes::Bytes) -> std::io::Result<()> + Send),
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let o = self.get(key).await?;
            sink(bytes::Bytes::from(o.bytes)).map_err(|e| StoreError::Io {
                store: self.describe(),
                context: format!("receiving {key}"),
                source: e,
            })
        })
    }
    /// Size and modification time; [`StoreError::NotFound`] when missing.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectMeta>>;
    /// Creates the object unless the key exists (`If-None-Match: *`).
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<PutOutcome>>;
    /// Compare-and-swap: replaces the object if its etag is `expected` (`If-Match`), or creates
    /// it if `expected` is `None` and the key does not exist. [`StoreError::PreconditionFailed`]
    /// otherwise. Returns the new etag.
    fn put_if_match<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        expected: Option<&'a Etag>,
    ) -> BoxFuture<'a, Result<Etag>>;
    /// Every object whose key starts with `prefix`, all pages, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>>;
    /// Deletes the object; deleting a missing key is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Rejects keys that could escape the store's prefix or directory.
pub(crate) fn check_key(store: &str, key: &str) -> Result<()> {
    let bad = |reason: &str| StoreError::BadKey {
        store: store.to_owned(),
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.starts_with('/') || key.contains('\\') || key.contains('\0') {
        return Err(bad("absolute, or contains a backslash or NUL"));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad("empty, '.' or '..' segment"));
    }
    Ok(())
}

/// Opens the store a URL names.
pub async fn open(url: &StoreUrl, s3: &S3Options) -> Result<Box<dyn ObjectStore>> {
    match url {
        StoreUrl::Dir(path) => Ok(Box::new(LocalDirStore::new(path.clone()))),
        StoreUrl::S3 { bucket, prefix } => {
            Ok(Box::new(S3Store::connect(bucket, prefix, s3).await?))
        }
    }
}
