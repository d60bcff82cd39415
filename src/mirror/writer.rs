//! [`SnapshotWriter`]: streams the files of one snapshot into the object database, then builds
//! the nested trees, the parentless commit, the tag and the cluster branch at `finish`.
//!
//! Owns the git object encoding of trees (written by hand so that ids are deterministic and
//! new objects can be counted; commits are encoded by `encode`). Must not touch refs other
//! than the snapshot's tag and its cluster's branch.

use std::collections::BTreeMap;

use git2::{ObjectType, Odb, Oid};

use super::encode::{commit_message, encode_commit};
use super::lock::MirrorLock;
use super::names::{validate_name, validate_path};
use super::pack::PackSink;
use super::{CommitId, GitContext, Mirror, MirrorError, Result, SNAPSHOT_TAG_PREFIX, TreeId};
use crate::tree::meta::{SNAPSHOT_META_FILE, SnapshotMeta};

/// What [`SnapshotWriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSnapshot {
    /// The snapshot's commit.
    pub commit: CommitId,
    /// The commit's root tree.
    pub tree: TreeId,
    /// Objects (blobs, trees, commit) that were not in the mirror before this snapshot.
    pub new_objects: u64,
    /// Uncompressed bytes of those objects.
    pub new_bytes: u64,
    /// Number of files in the tree (metadata files included).
    pub files: u64,
}

#[derive(Default)]
struct Dir {
    entries: BTreeMap<String, Node>,
}

enum Node {
    File(Oid),
    Dir(Dir),
}

/// Writes one snapshot. Holds the mirror's writer lock until dropped or finished.
///
/// Dropping it without [`finish`](SnapshotWriter::finish) leaves no ref; the blobs written so
/// far are unreachable and disappear at the next [`Mirror::gc`].
pub struct SnapshotWriter<'m> {
    mirror: &'m Mirror,
    odb: Odb<'m>,
    _lock: MirrorLock,
    pack: PackSink,
    name: String,
    cluster: String,
    root: Dir,
    meta_bytes: Option<Vec<u8>>,
    files: u64,
    new_objects: u64,
    new_bytes: u64,
    /// Moves an existing tag to the new commit (`rekey`) instead of creating one.
    replace: bool,
}

impl Mirror {
    /// Starts rewriting existing snapshot `name` of `cluster` (re-encrypted Secrets, `rekey`):
    /// the same as [`Mirror::writer`], but `finish` moves the existing tag to the new commit.
    pub fn rewriter(&self, name: &str, cluster: &str) -> Result<SnapshotWriter<'_>> {
        validate_name("snapshot", name)?;
        let mut w = self.writer_unchecked(name, cluster)?;
        if !self.tag_exists(name)? {
            return Err(MirrorError::Git {
                context: format!("rewriting snapshot {name:?}"),
                source: super::GitError(git2::Error::from_str("no such snapshot")),
            });
        }
        w.replace = true;
        Ok(w)
    }

    /// Starts writing snapshot `name` of `cluster`: validates both names, takes the writer lock
    /// (waiting up to the lock timeout) and refuses a name that already exists, all before
    /// anything is written.
    pub fn writer(&self, name: &str, cluster: &str) -> Result<SnapshotWriter<'_>> {
        validate_name("snapshot", name)?;
        validate_name("cluster", cluster)?;
        let w = self.writer_unchecked(name, cluster)?;
        if self.tag_exists(name)? {
            return Err(MirrorError::SnapshotExists {
                name: name.to_owned(),
            });
        }
        Ok(w)
    }

    fn writer_unchecked(&self, name: &str, cluster: &str) -> Result<SnapshotWriter<'_>> {
        validate_name("cluster", cluster)?;
        let lock = self.lock()?;
        super::maintain::remove_stale_temp_packs(&self.git_dir)?;
        let odb = self
            .repo
            .odb()
            .ctx(|| format!("opening the object database of {}", self.git_dir.display()))?;
        // Pick up packs written by other processes once; lookups below do not refresh.
        odb.refresh().ctx(|| {
            format!(
                "refreshing the object database of {}",
                self.git_dir.display()
            )
        })?;
        let pack = PackSink::new(&self.git_dir)?;
        Ok(SnapshotWriter {
            mirror: self,
            odb,
            _lock: lock,
            pack,
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            root: Dir::default(),
            meta_bytes: None,
            files: 0,
            new_objects: 0,
            new_bytes: 0,
            replace: false,
        })
    }

    pub(super) fn tag_exists(&self, name: &str) -> Result<bool> {
        let refname = format!("{SNAPSHOT_TAG_PREFIX}{name}");
        match self.repo.find_reference(&refname) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e).ctx(|| format!("reading tag {refname}")),
        }
    }
}

impl SnapshotWriter<'_> {
    /// Adds one file. The blob is written at once (memory keeps only the path and blob id).
    /// Rejects invalid paths, a path added twice and file/directory clashes.
    pub fn add(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        validate_path(path)?;
        let mut segments = path.split('/').peekable();
        let mut dir = &mut self.root;
        let mut walked = 0usize;
        while let Some(seg) = segments.next() {
            walked += seg.len() + usize::from(walked > 0);
            if segments.peek().is_none() {
                if let Some(existing) = dir.entries.get(seg) {
                    return Err(match existing {
                        Node::File(_) => MirrorError::DuplicatePath {
                            path: path.to_owned(),
                        },
                        Node::Dir(_) => MirrorError::PathConflict {
                            path: path.to_owned(),
                            other: format!("{path}/..."),
                        },
                    });
                }
                let (oid, new) = self.pack.write(&self.odb, ObjectType::Blob, bytes)?;
                if new {
                    self.new_objects += 1;
                    self.new_bytes += bytes.len() as u64;
                }
                dir.entries.insert(seg.to_owned(), Node::File(oid));
                self.files += 1;
                if path == SNAPSHOT_META_FILE {
                    self.meta_bytes = Some(bytes.to_vec());
                }
                return Ok(());
            }
            let node = dir
                .entries
                .entry(seg.to_owned())
                .or_insert_with(|| Node::Dir(Dir::default()));
            dir = match node {
                Node::Dir(d) => d,
                Node::File(_) => {
                    return Err(MirrorError::PathConflict {
                        path: path.to_owned(),
                        other: path[..walked].to_owned(),
                    });
                }
            };
        }
        unreachable!("split yields at least one segment")
    }

    /// Number of files added so far.
    pub fn len(&self) -> u64 {
        self.files
    }

    /// Whether no file was added yet.
    pub fn is_empty(&self) -> bool {
        self.files == 0
    }

    /// Builds the trees and the parentless commit, creates the tag `refs/tags/snapshots/<name>`
    /// (refusing an existing one) and rebuilds the cluster's branch.
    ///
    /// `meta` must name the same snapshot and cluster as [`Mirror::writer`], and the caller must
    /// have added `.k8s-snap/snapshot.yaml` describing the same snapshot.
    pub fn finish(mut self, meta: &SnapshotMeta) -> Result<WrittenSnapshot> {
        let bad = |reason: String| MirrorError::BadMeta {
            snapshot: self.name.clone(),
            file: SNAPSHOT_META_FILE,
            reason,
        };
        if meta.name != self.name || meta.cluster_name != self.cluster {
            return Err(bad(format!(
                "metadata names snapshot {:?} of cluster {:?}, the writer was opened for {:?} of {:?}",
                meta.name, meta.cluster_name, self.name, self.cluster
            )));
        }
        let Some(meta_bytes) = self.meta_bytes.take() else {
            return Err(bad("was not added to the tree".into()));
        };
        let written = super::parse_meta(&self.name, &meta_bytes)?;
        if written.name != meta.name || written.cluster_name != meta.cluster_name {
            return Err(bad(format!(
                "the file in the tree names snapshot {:?} of cluster {:?}",
                written.name, written.cluster_name
            )));
        }

        let root = std::mem::take(&mut self.root);
        let tree = self.write_tree(root)?;
        let body = encode_commit(
            tree,
            None,
            meta.timestamp.as_second(),
            &commit_message(meta),
        );
        let (commit, new) = self.pack.write(&self.odb, ObjectType::Commit, &body)?;
        if new {
            self.new_objects += 1;
            self.new_bytes += body.len() as u64;
        }

        // All objects are durable in objects/pack before the tag can appear.
        self.pack.commit()?;
        self.odb
            .refresh()
            .ctx(|| "refreshing the object database after writing a pack".into())?;
        let refname = format!("{SNAPSHOT_TAG_PREFIX}{}", self.name);
        self.mirror
            .repo
            .reference(&refname, commit, self.replace, "k8s-snap: snapshot")
            .map_err(|e| match e.code() {
                git2::ErrorCode::Exists => MirrorError::SnapshotExists {
                    name: self.name.clone(),
                },
                _ => MirrorError::Git {
                    context: format!("creating tag {refname}"),
                    source: super::GitError(e),
                },
            })?;
        self.mirror.rebuild_cluster_branch_locked(&self.cluster)?;
        tracing::info!(
            snapshot = %self.name,
            cluster = %self.cluster,
            %commit,
            files = self.files,
            new_objects = self.new_objects,
            "snapshot written to the mirror"
        );
        Ok(WrittenSnapshot {
            commit: CommitId::from_oid(commit),
            tree: TreeId::from_oid(tree),
            new_objects: self.new_objects,
            new_bytes: self.new_bytes,
            files: self.files,
        })
    }

    /// Keeps a stored copy of each pack this snapshot writes (the store's encoding of it, made
    /// by the threads completing the packs), so that a push that follows uploads it as it is
    /// (`stored`). Costs ~0.1 s of CPU per 70 MB of new objects; call it when a push follows.
    pub fn keep_stored_copies(&mut self) {
        self.pack
            .keep_stored_copies(&self.mirror.git_dir, &self.name);
    }

    fn write_tree(&mut self, dir: Dir) -> Result<Oid> {
        // (sort key, name, mode, id); git orders directories as if their name ended in '/'.
        let mut entries: Vec<(Vec<u8>, String, &'static str, Oid)> =
            Vec::with_capacity(dir.entries.len());
        for (name, node) in dir.entries {
            let (mode, oid, key) = match node {
                Node::File(oid) => ("100644", oid, name.as_bytes().to_vec()),
                Node::Dir(sub) => {
                    let oid = self.write_tree(sub)?;
                    let mut key = name.as_bytes().to_vec();
                    key.push(b'/');
                    ("40000", oid, key)
                }
            };
            entries.push((key, name, mode, oid));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut body = Vec::with_capacity(entries.len() * 64);
        for (_, name, mode, oid) in &entries {
            body.extend_from_slice(mode.as_bytes());
            body.push(b' ');
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(oid.as_bytes());
        }
        let (oid, new) = self.pack.write(&self.odb, ObjectType::Tree, &body)?;
        if new {
            self.new_objects += 1;
            self.new_bytes += body.len() as u64;
        }
        Ok(oid)
    }
}
