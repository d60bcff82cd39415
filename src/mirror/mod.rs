//! The local git mirror: a bare repository (`<data-dir>/mirror.git`) holding every snapshot as a
//! parentless commit tagged `refs/tags/snapshots/<name>`, plus derived per-cluster history
//! branches `refs/heads/clusters/<cluster>` (docs/design.md §4).
//!
//! This is the ONLY module that imports `git2`; no git2 type appears in its public API (object
//! ids are the [`CommitId`], [`TreeId`] and [`BlobId`] newtypes, errors wrap git2 errors in the
//! opaque [`GitError`]). It does not know about clusters, the store or YAML canonicalization:
//! it stores bytes at paths and reads them back.
//!
//! Layout of the submodules:
//! - `names`: validation of snapshot/cluster names and tree paths;
//! - `writer`: [`SnapshotWriter`], the streaming write of one snapshot;
//! - `pack`: the temporary packfile the writer streams new objects into;
//! - `lock`: the writer lock;
//! - `encode`: the hand-written commit encoding and object writes;
//! - `history`: the history of one file across snapshots (`log`);
//! - `maintain`: deletion, branch rebuild, gc and object statistics;
//! - `transfer`: packs to and from the store, completeness checks, tagging pulled snapshots;
//! - `shared`: [`SharedMirror`], the `Send + Sync` handle async code runs git work through;
//! - `parallel`: [`Mirror::map_files`], reading a snapshot's files on several threads.

mod encode;
mod history;
mod lock;
mod maintain;
mod names;
mod pack;
mod packbuild;
mod packread;
mod packscan;
mod parallel;
mod recover;
mod shared;
mod stored;
mod transfer;
mod writer;

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use git2::{ErrorCode, ObjectType, Oid, Repository};

use crate::tree::meta::{SNAPSHOT_META_FILE, SnapshotMeta};

pub use history::{HistoryChange, HistoryStep};
pub use lock::MirrorLock;
pub use maintain::{GcStats, ObjectStats};
pub use names::{MAX_NAME_LEN, timestamped_name, validate_name, validate_path};
pub use packbuild::BuiltPack;
pub use packscan::Scanned;
pub use parallel::MapResult;
pub use recover::choose_packs;
pub use shared::SharedMirror;
pub use stored::{PushPacks, StoredCopy, each_stored_copy};
pub use transfer::{
    ObjectSet, PackData, StageError, StagedPack, check_pack_index, install_pack_files,
};
pub use writer::{SnapshotWriter, WrittenSnapshot};

/// Prefix of the snapshot tags.
pub(crate) const SNAPSHOT_TAG_PREFIX: &str = "refs/tags/snapshots/";
/// Prefix of the derived per-cluster history branches.
pub(crate) const CLUSTER_BRANCH_PREFIX: &str = "refs/heads/clusters/";
/// Name of the lock file inside the git dir.
pub(crate) const LOCK_FILE: &str = "k8s-snap.lock";
/// How long [`Mirror::lock`] waits by default.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Result type of this module.
pub type Result<T, E = MirrorError> = std::result::Result<T, E>;

/// An error of the underlying git library, kept opaque so git2 never leaks out of this module.
#[derive(Debug)]
pub struct GitError(git2::Error);

impl fmt::Display for GitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for GitError {}

/// Everything that can go wrong in the mirror. Each variant names the repository, snapshot,
/// path or object at fault.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The path holds no usable git mirror.
    #[error("no git mirror at {path}: {reason}")]
    NotARepository {
        /// The mirror's directory.
        path: PathBuf,
        /// Why it is not a mirror.
        reason: String,
    },
    /// A git operation failed.
    #[error("{context}: {source}")]
    Git {
        /// What was being done.
        context: String,
        /// The git error.
        #[source]
        source: GitError,
    },
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot or other name is not valid as a git ref or file name.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What the name names (e.g. "snapshot").
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A path to add to a snapshot tree is not valid.
    #[error("invalid path {path:?} in snapshot tree: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The same path was added twice to one snapshot.
    #[error("path {path:?} was already added to this snapshot")]
    DuplicatePath {
        /// The duplicated path.
        path: String,
    },
    /// A path is both a file and a directory in one snapshot.
    #[error("path {path:?} conflicts with {other:?} (a file and a directory of the same name)")]
    PathConflict {
        /// The path being added.
        path: String,
        /// The already-added path it conflicts with.
        other: String,
    },
    /// A snapshot of that name is already in the mirror.
    #[error("snapshot {name:?} already exists in the mirror")]
    SnapshotExists {
        /// The snapshot's name.
        name: String,
    },
    /// No snapshot of that name is in the mirror.
    #[error("snapshot {name:?} not found in the mirror")]
    SnapshotNotFound {
        /// The snapshot's name.
        name: String,
    },
    /// Another process holds the mirror's lock and did not release it in time.
    #[error(
        "mirror {path} is locked by another k8s-snap process (waited {waited:?}); \
         retry later or check for a hung process"
    )]
    Locked {
        /// The mirror's directory.
        path: PathBuf,
        /// How long this process waited for the lock.
        waited: Duration,
    },
    /// A snapshot's metadata file cannot be parsed.
    #[error("snapshot {snapshot:?}: bad {file}: {reason}")]
    BadMeta {
        /// The snapshot's name.
        snapshot: String,
        /// The metadata file (e.g. `.k8s-snap/snapshot.yaml`).
        file: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A string is not a git object id.
    #[error("invalid object id {value:?}: expected 40 lower-case hex digits")]
    BadObjectId {
        /// The rejected string.
        value: String,
    },
    /// A git object is not in the mirror.
    #[error("object {id} not found in the mirror")]
    ObjectNotFound {
        /// The object id.
        id: String,
    },
    /// A path in a commit's tree is a directory where a file was expected.
    #[error("{path:?} in commit {commit} is a directory, not a file")]
    NotAFile {
        /// The commit whose tree was read.
        commit: CommitId,
        /// The path in that tree.
        path: String,
    },
    /// The blocking thread doing git work panicked or was cancelled.
    #[error("{context}: the blocking task failed: {source}")]
    Blocking {
        /// What was being done.
        context: String,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

pub(crate) trait GitContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> GitContext<T> for std::result::Result<T, git2::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| MirrorError::Git {
            context: context(),
            source: GitError(e),
        })
    }
}

pub(crate) fn io_ctx<T>(r: std::io::Result<T>, context: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|source| MirrorError::Io {
        context: context(),
        source,
    })
}

macro_rules! object_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The 40 lower-case hex digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            fn from_oid(oid: Oid) -> Self {
                Self(oid.to_string())
            }
            fn oid(&self) -> Oid {
                Oid::from_str(&self.0).expect("validated 40-hex id")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = MirrorError;
            fn from_str(s: &str) -> Result<Self> {
                if s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(MirrorError::BadObjectId { value: s.to_owned() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = MirrorError;
            fn try_from(s: String) -> Result<Self> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

object_id!(
    /// A commit id (40 hex digits): the content address of a snapshot.
    CommitId
);
object_id!(
    /// A tree id (40 hex digits).
    TreeId
);
object_id!(
    /// A blob id (40 hex digits): the content address of one file.
    BlobId
);

/// A snapshot tag that cannot be read: its name and why.
pub(crate) type BadTag = (String, String);

/// A snapshot in the mirror: its tag name, commit and parsed `.k8s-snap/snapshot.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// The snapshot's name (its tag name).
    pub name: String,
    /// The commit the tag points to.
    pub commit: CommitId,
    /// The parsed `.k8s-snap/snapshot.yaml`.
    pub meta: SnapshotMeta,
}

/// How a file differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The file is only in the newer snapshot.
    Added,
    /// The file is only in the older snapshot.
    Removed,
    /// The file is in both, with different content.
    Modified,
}

/// One changed file between two snapshot trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Full path in the tree.
    pub path: String,
    /// How it differs.
    pub kind: ChangeKind,
    /// The blob in the first snapshot (`None` when added).
    pub old: Option<BlobId>,
    /// The blob in the second snapshot (`None` when removed).
    pub new: Option<BlobId>,
}

/// The bare git repository holding all local snapshots.
pub struct Mirror {
    repo: Repository,
    git_dir: PathBuf,
    lock_timeout: Duration,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("git_dir", &self.git_dir)
            .finish()
    }
}

impl Mirror {
    /// Opens the bare repository at `git_dir`, creating it (and its parents) if missing.
    pub fn open_or_init(git_dir: &Path) -> Result<Mirror> {
        if git_dir.join("HEAD").exists() || git_dir.join("objects").exists() {
            return Self::open(git_dir);
        }
        if git_dir.exists() {
            let is_empty = io_ctx(std::fs::read_dir(git_dir), || {
                format!("reading mirror directory {}", git_dir.display())
            })?
            .next()
            .is_none();
            if !is_empty {
                return Err(MirrorError::NotARepository {
                    path: git_dir.to_owned(),
                    reason: "the directory exists, is not empty and is not a git repository".into(),
                });
            }
        }
        // Initialise beside the target and rename into place, so processes racing to create
        // the mirror never see (or make) a half-initialised repository: one rename wins, the
        // others open the winner's.
        let parent = git_dir.parent().unwrap_or(Path::new("."));
        io_ctx(std::fs::create_dir_all(parent), || {
            format!("creating mirror directory {}", parent.display())
        })?;
        let staging = io_ctx(
            tempfile::Builder::new()
                .prefix(".mirror-init-")
                .tempdir_in(parent),
            || format!("creating a temporary directory in {}", parent.display()),
        )?;
        let repo_dir = staging.path().join("mirror.git");
        Repository::init_bare(&repo_dir)
            .ctx(|| format!("initializing bare mirror at {}", git_dir.display()))?;
        // An empty directory left by an earlier run is replaced (rename onto an empty dir
        // succeeds on Unix); a non-empty one means another process won.
        match std::fs::rename(&repo_dir, git_dir) {
            Ok(()) => tracing::info!(git_dir = %git_dir.display(), "initialized git mirror"),
            Err(_) if git_dir.join("HEAD").exists() => {}
            Err(e) => {
                return Err(MirrorError::Io {
                    context: format!("creating mirror {}", git_dir.display()),
                    source: e,
                });
            }
        }
        Self::open(git_dir)
    }

    /// Opens an existing bare repository; a clear error if it is missing or not a repository.
    pub fn open(git_dir: &Path) -> Result<Mirror> {
        if !git_dir.exists() {
            return Err(MirrorError::NotARepository {
                path: git_dir.to_owned(),
                reason: "the directory does not exist (take or pull a snapshot first)".into(),
            });
        }
        let repo = Repository::open_bare(git_dir).map_err(|e| MirrorError::NotARepository {
            path: git_dir.to_owned(),
            reason: e.message().to_owned(),
        })?;
        Ok(Self::from_repo(repo, git_dir))
    }

    fn from_repo(repo: Repository, git_dir: &Path) -> Mirror {
        Mirror {
            repo,
            git_dir: git_dir.to_owned(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// Sets how long [`Mirror::lock`] (and so [`Mirror::writer`], deletion, gc) waits for
    /// another process holding the lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Mirror {
        self.lock_timeout = timeout;
        self
    }

    /// The repository's directory (`.../mirror.git`).
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// All readable snapshots, sorted, and the tags that are not (name and reason): a tag
    /// pointing at a blob, a commit without valid metadata. For listings that show what they
    /// can.
    pub fn snapshots_lenient(&self) -> Result<(Vec<SnapshotInfo>, Vec<BadTag>)> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for (name, commit) in self.snapshot_tags()? {
            let info = commit
                .map_err(|e| format!("the tag does not point to a commit ({})", e.message()))
                .and_then(|c| self.info(name.clone(), c).map_err(|e| e.to_string()));
            match info {
                Ok(i) => out.push(i),
                Err(reason) => bad.push((name, reason)),
            }
        }
        sort_snapshots(&mut out);
        Ok((out, bad))
    }

    /// Every snapshot tag: its name and the commit it points to (or why it points to none).
    fn snapshot_tags(&self) -> Result<Vec<(String, std::result::Result<CommitId, git2::Error>)>> {
        let refs = self
            .repo
            .references_glob(&format!("{SNAPSHOT_TAG_PREFIX}*"))
            .ctx(|| format!("listing snapshot tags in {}", self.git_dir.display()))?;
        let mut tags = Vec::new();
        for r in refs {
            let r = r.ctx(|| "reading a snapshot tag".into())?;
            let Some(name) = r
                .name()
                .ok()
                .and_then(|n| n.strip_prefix(SNAPSHOT_TAG_PREFIX))
            else {
                continue;
            };
            let commit = r.peel_to_commit().map(|c| CommitId::from_oid(c.id()));
            tags.push((name.to_owned(), commit));
        }
        Ok(tags)
    }

    /// All snapshots (tags `refs/tags/snapshots/*`), sorted by timestamp, ties by name.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for (name, commit) in self.snapshot_tags()? {
            let commit =
                commit.ctx(|| format!("snapshot {name:?}: tag does not point to a commit"))?;
            out.push(self.info(name, commit)?);
        }
        sort_snapshots(&mut out);
        Ok(out)
    }

    /// The snapshot of that name, if present.
    pub fn snapshot(&self, name: &str) -> Result<Option<SnapshotInfo>> {
        validate_name("snapshot", name)?;
        let refname = format!("{SNAPSHOT_TAG_PREFIX}{name}");
        let r = match self.repo.find_reference(&refname) {
            Ok(r) => r,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading tag {refname}")),
        };
        let commit = r
            .peel_to_commit()
            .ctx(|| format!("snapshot {name:?}: tag does not point to a commit"))?;
        Ok(Some(
            self.info(name.to_owned(), CommitId::from_oid(commit.id()))?,
        ))
    }

    fn info(&self, name: String, commit: CommitId) -> Result<SnapshotInfo> {
        let bytes = self
            .read_file(&commit, SNAPSHOT_META_FILE)?
            .ok_or_else(|| MirrorError::BadMeta {
                snapshot: name.clone(),
                file: SNAPSHOT_META_FILE,
                reason: "missing".into(),
            })?;
        let meta = parse_meta(&name, &bytes)?;
        Ok(SnapshotInfo { name, commit, meta })
    }

    /// The names of all clusters that have at least one snapshot, sorted.
    pub fn clusters(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .snapshots()?
            .into_iter()
            .map(|s| s.meta.cluster_name)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn find_commit(&self, commit: &CommitId) -> Result<git2::Commit<'_>> {
        self.repo
            .find_commit(commit.oid())
            .map_err(|e| match e.code() {
                ErrorCode::NotFound => MirrorError::ObjectNotFound {
                    id: commit.to_string(),
                },
                _ => MirrorError::Git {
                    context: format!("reading commit {commit}"),
                    source: GitError(e),
                },
            })
    }

    fn commit_tree(&self, commit: &CommitId) -> Result<git2::Tree<'_>> {
        self.find_commit(commit)?
            .tree()
            .ctx(|| format!("reading the tree of commit {commit}"))
    }

    /// The subtree at `prefix` (`""` = root); `None` if missing or not a directory.
    fn subtree(&self, commit: &CommitId, prefix: &str) -> Result<Option<git2::Tree<'_>>> {
        let prefix = names::normalize_prefix(prefix)?;
        let root = self.commit_tree(commit)?;
        if prefix.is_empty() {
            return Ok(Some(root));
        }
        let entry = match root.get_path(Path::new(prefix)) {
            Ok(e) => e,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("looking up {prefix:?} in commit {commit}")),
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Ok(None);
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .ctx(|| format!("reading directory {prefix:?} of commit {commit}"))?;
        Ok(Some(tree))
    }

    /// The tree id of a commit (equal trees mean equal snapshot contents).
    pub fn tree_id(&self, commit: &CommitId) -> Result<TreeId> {
        Ok(TreeId::from_oid(self.find_commit(commit)?.tree_id()))
    }

    /// The content of the file at `path` in `commit`; `None` if there is no such path.
    pub fn read_file(&self, commit: &CommitId, path: &str) -> Result<Option<Vec<u8>>> {
        validate_path(path)?;
        let root = self.commit_tree(commit)?;
        let entry = match root.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("looking up {path:?} in commit {commit}")),
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Err(MirrorError::NotAFile {
                commit: commit.clone(),
                path: path.to_owned(),
            });
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .ctx(|| format!("reading {path:?} of commit {commit}"))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// The content of a blob (e.g. from a [`FileChange`]).
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let blob = self.repo.find_blob(id.oid()).map_err(|e| match e.code() {
            ErrorCode::NotFound => MirrorError::ObjectNotFound { id: id.to_string() },
            _ => MirrorError::Git {
                context: format!("reading blob {id}"),
                source: GitError(e),
            },
        })?;
        Ok(blob.content().to_vec())
    }

    /// The paths of all files under the directory `prefix` (`""` = everything), sorted bytewise.
    pub fn list_files(&self, commit: &CommitId, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let Some(tree) = self.subtree(commit, prefix)? else {
            return Ok(out);
        };
        let mut base = names::normalize_prefix(prefix)?.to_owned();
        let _ = self.visit(&tree, &mut base, &mut |path, _| {
            out.push(path.to_owned());
            Ok(ControlFlow::Continue(()))
        })?;
        out.sort();
        Ok(out)
    }

    /// Calls `f(path, content)` for every file under the directory `prefix`, one blob in memory
    /// at a time, in git tree order; stops early when `f` breaks.
    pub fn walk_files(
        &self,
        commit: &CommitId,
        prefix: &str,
        mut f: impl FnMut(&str, &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        let Some(tree) = self.subtree(commit, prefix)? else {
            return Ok(());
        };
        let mut base = names::normalize_prefix(prefix)?.to_owned();
        let _ = self.visit(&tree, &mut base, &mut |path, oid| {
            let blob = self
                .repo
                .find_blob(oid)
                .ctx(|| format!("reading {path:?} of commit {commit}"))?;
            Ok(f(path, blob.content()))
        })?;
        Ok(())
    }

    /// Calls `f(path, content)` for every file under `<namespaces>/<ns>/<resource>/` (e.g. the
    /// Secrets, `api/v1/namespaces` and `secrets`) without reading other resources' blobs.
    pub fn walk_namespaced_files(
        &self,
        commit: &CommitId,
        namespaces: &str,
        resource: &str,
        mut f: impl FnMut(&str, &[u8]),
    ) -> Result<()> {
        let Some(tree) = self.subtree(commit, namespaces)? else {
            return Ok(());
        };
        let base = names::normalize_prefix(namespaces)?.to_owned();
        for entry in tree.iter() {
            let (Ok(ns), Some(ObjectType::Tree)) = (entry.name(), entry.kind()) else {
                continue;
            };
            let ns_tree = self
                .repo
                .find_tree(entry.id())
                .ctx(|| format!("reading directory {base}/{ns}"))?;
            let Some(sub) = ns_tree.get_name(resource) else {
                continue;
            };
            if sub.kind() != Some(ObjectType::Tree) {
                continue;
            }
            let sub = self
                .repo
                .find_tree(sub.id())
                .ctx(|| format!("reading directory {base}/{ns}/{resource}"))?;
            let mut path = format!("{base}/{ns}/{resource}");
            let _ = self.visit(&sub, &mut path, &mut |p, oid| {
                let blob = self
                    .repo
                    .find_blob(oid)
                    .ctx(|| format!("reading {p:?} of commit {commit}"))?;
                f(p, blob.content());
                Ok(ControlFlow::Continue(()))
            })?;
        }
        Ok(())
    }

    /// Depth-first walk of the blobs under `tree`, whose path is `base`.
    fn visit(
        &self,
        tree: &git2::Tree<'_>,
        base: &mut String,
        f: &mut dyn FnMut(&str, Oid) -> Result<ControlFlow<()>>,
    ) -> Result<ControlFlow<()>> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else {
                continue; // not UTF-8: never written by k8s-snap
            };
            let len = base.len();
            if !base.is_empty() {
                base.push('/');
            }
            base.push_str(name);
            let flow = match entry.kind() {
                Some(ObjectType::Blob) => f(base, entry.id())?,
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .ctx(|| format!("reading directory {base:?}"))?;
                    self.visit(&sub, base, f)?
                }
                _ => ControlFlow::Continue(()),
            };
            base.truncate(len);
            if flow.is_break() {
                return Ok(flow);
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The files that differ between snapshots `a` and `b`, under the directory `prefix` if
    /// given, sorted by path. Unchanged subtrees are skipped without being read.
    pub fn diff(
        &self,
        a: &CommitId,
        b: &CommitId,
        prefix: Option<&str>,
    ) -> Result<Vec<FileChange>> {
        let prefix = prefix.unwrap_or("");
        let ta = self.subtree(a, prefix)?;
        let tb = self.subtree(b, prefix)?;
        let mut out = Vec::new();
        let base = names::normalize_prefix(prefix)?.to_owned();
        self.diff_trees(ta.as_ref(), tb.as_ref(), &base, &mut out)?;
        out.sort_by(|x, y| x.path.cmp(&y.path));
        Ok(out)
    }

    fn diff_trees(
        &self,
        a: Option<&git2::Tree<'_>>,
        b: Option<&git2::Tree<'_>>,
        base: &str,
        out: &mut Vec<FileChange>,
    ) -> Result<()> {
        use std::collections::BTreeMap;
        if let (Some(a), Some(b)) = (a, b)
            && a.id() == b.id()
        {
            return Ok(());
        }
        type Side = (Option<(Oid, bool)>, Option<(Oid, bool)>);
        let mut entries: BTreeMap<String, Side> = BTreeMap::new();
        for (tree, first) in [(a, true), (b, false)] {
            let Some(tree) = tree else { continue };
            for e in tree.iter() {
                let (Ok(name), Some(kind)) = (e.name(), e.kind()) else {
                    continue;
                };
                let is_tree = match kind {
                    ObjectType::Tree => true,
                    ObjectType::Blob => false,
                    _ => continue,
                };
                let slot = entries.entry(name.to_owned()).or_default();
                if first {
                    slot.0 = Some((e.id(), is_tree));
                } else {
                    slot.1 = Some((e.id(), is_tree));
                }
            }
        }
        for (name, (old, new)) in entries {
            let path = if base.is_empty() {
                name
            } else {
                format!("{base}/{name}")
            };
            if old == new {
                continue;
            }
            let tree_of = |side: Option<(Oid, bool)>| -> Result<Option<git2::Tree<'_>>> {
                match side {
                    Some((oid, true)) => Ok(Some(
                        self.repo
                            .find_tree(oid)
                            .ctx(|| format!("reading directory {path:?}"))?,
                    )),
                    _ => Ok(None),
                }
            };
            let blob_of = |side: Option<(Oid, bool)>| match side {
                Some((oid, false)) => Some(BlobId::from_oid(oid)),
                _ => None,
            };
            let (old_tree, new_tree) = (tree_of(old)?, tree_of(new)?);
            if old_tree.is_some() || new_tree.is_some() {
                self.diff_trees(old_tree.as_ref(), new_tree.as_ref(), &path, out)?;
            }
            let (old_blob, new_blob) = (blob_of(old), blob_of(new));
            let kind = match (&old_blob, &new_blob) {
                (None, None) => continue,
                (Some(_), None) => ChangeKind::Removed,
                (None, Some(_)) => ChangeKind::Added,
                (Some(_), Some(_)) => ChangeKind::Modified,
            };
            out.push(FileChange {
                path,
                kind,
                old: old_blob,
                new: new_blob,
            });
        }
        Ok(())
    }
}

fn sort_snapshots(list: &mut [SnapshotInfo]) {
    list.sort_by(|a, b| {
        a.meta
            .timestamp
            .cmp(&b.meta.timestamp)
            .then_with(|| a.name.cmp(&b.name))
    });
}

fn parse_meta(snapshot: &str, bytes: &[u8]) -> Result<SnapshotMeta> {
    let bad = |reason: String| MirrorError::BadMeta {
        snapshot: snapshot.to_owned(),
        file: SNAPSHOT_META_FILE,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))
}
