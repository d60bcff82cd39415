//! Moving objects between the mirror and the store: building a pack of the objects of some
//! snapshot commits (hiding those the store already has), indexing a downloaded pack, checking
//! that a commit's whole tree is present, and tagging a pulled snapshot.
//!
//! Owns only object transfer and the tag of a pulled snapshot; it never talks to the store
//! itself (the `store` module moves the bytes) and never trusts a downloaded pack or name.

use std::collections::HashSet;
use std::io::Write as _;

use git2::{ObjectType, Oid};

use super::{
    CommitId, GitContext, Mirror, MirrorError, Result, SNAPSHOT_TAG_PREFIX, io_ctx, parse_meta,
    validate_name,
};
use crate::tree::meta::SNAPSHOT_META_FILE;

/// A packfile and its index, as built by [`Mirror::build_pack`].
#[derive(Clone, PartialEq, Eq)]
pub struct PackData {
    /// The `.pack` bytes (git pack format v2, SHA-1 trailer).
    pub pack: Vec<u8>,
    /// The matching `.idx` bytes (version 2).
    pub idx: Vec<u8>,
    /// Number of objects in the pack.
    pub objects: u64,
}

impl std::fmt::Debug for PackData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackData")
            .field("pack_bytes", &self.pack.len())
            .field("idx_bytes", &self.idx.len())
            .field("objects", &self.objects)
            .finish()
    }
}

impl Mirror {
    /// Whether the mirror has the commit object itself (its tree may still be incomplete).
    pub fn has_commit(&self, commit: &CommitId) -> Result<bool> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        Ok(odb.exists(commit.oid()))
    }

    /// Builds one compressed, deltified pack with every object reachable from `include` but
    /// not from `hide` (commits of `hide` missing from the mirror are ignored). Returns `None`
    /// when there is nothing to pack.
    pub fn build_pack(&self, include: &[CommitId], hide: &[CommitId]) -> Result<Option<PackData>> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut walk = self.repo.revwalk().ctx(|| "creating a revwalk".into())?;
        for c in include {
            walk.push(c.oid())
                .ctx(|| format!("walking commit {c} to pack it"))?;
        }
        for c in hide {
            if odb.exists(c.oid()) {
                walk.hide(c.oid())
                    .ctx(|| format!("hiding commit {c} from the pack"))?;
            }
        }
        let mut pb = self
            .repo
            .packbuilder()
            .ctx(|| "creating a pack builder".into())?;
        pb.set_threads(0);
        pb.insert_walk(&mut walk)
            .ctx(|| "collecting the objects to pack".into())?;
        let objects = pb.object_count() as u64;
        if objects == 0 {
            return Ok(None);
        }
        let dir = io_ctx(tempfile::tempdir_in(&self.git_dir), || {
            format!(
                "creating a temporary directory in {}",
                self.git_dir.display()
            )
        })?;
        pb.write(dir.path(), 0)
            .ctx(|| format!("writing a pack of {objects} objects"))?;
        let name = pb
            .name()
            .ok()
            .flatten()
            .map(str::to_owned)
            .ok_or_else(|| MirrorError::Io {
                context: "building a pack".into(),
                source: std::io::Error::other("the pack builder gave the pack no name"),
            })?;
        let read = |ext: &str| {
            let path = dir.path().join(format!("pack-{name}.{ext}"));
            io_ctx(std::fs::read(&path), || {
                format!("reading {}", path.display())
            })
        };
        Ok(Some(PackData {
            pack: read("pack")?,
            idx: read("idx")?,
            objects,
        }))
    }

    /// Indexes the bytes of a downloaded pack into the object database (libgit2's indexer
    /// checks every object's encoding and the trailer checksum; a truncated or corrupted pack
    /// is an error and nothing is installed).
    pub fn index_pack(&self, pack: &[u8]) -> Result<()> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut writer = odb
            .packwriter()
            .ctx(|| "opening the odb pack writer".into())?;
        writer.write_all(pack).map_err(|e| MirrorError::Io {
            context: "streaming a downloaded pack into the object database".into(),
            source: e,
        })?;
        writer
            .commit()
            .ctx(|| "indexing a downloaded pack".into())?;
        odb.refresh()
            .ctx(|| "refreshing the object database after indexing a pack".into())?;
        Ok(())
    }

    /// Whether the commit and every tree and blob of its tree are in the mirror. Never fails
    /// because of a missing object (that is `Ok(false)`); fails on unreadable or corrupt ones.
    pub fn commit_is_complete(&self, commit: &CommitId) -> Result<bool> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        if !odb.exists(commit.oid()) {
            return Ok(false);
        }
        let c = self
            .repo
            .find_commit(commit.oid())
            .ctx(|| format!("reading commit {commit}"))?;
        let mut seen: HashSet<Oid> = HashSet::new();
        let mut stack = vec![c.tree_id()];
        while let Some(tree_id) = stack.pop() {
            if !seen.insert(tree_id) {
                continue;
            }
            if !odb.exists(tree_id) {
                return Ok(false);
            }
            let tree = self
                .repo
                .find_tree(tree_id)
                .ctx(|| format!("reading tree {tree_id} of commit {commit}"))?;
            for entry in tree.iter() {
                match entry.kind() {
                    Some(ObjectType::Tree) => stack.push(entry.id()),
                    Some(ObjectType::Blob) => {
                        if seen.insert(entry.id()) && !odb.exists(entry.id()) {
                            return Ok(false);
                        }
                    }
                    _ => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// Tags a complete commit (e.g. a pulled one) as snapshot `name` and rebuilds its
    /// cluster's branch. Untrusted input: re-validates the name, checks the commit is complete,
    /// that its every path is valid and that its `snapshot.yaml` names the same snapshot and a
    /// valid cluster. An existing tag with the same commit is a no-op (`Ok(false)`); with
    /// another commit it is [`MirrorError::SnapshotExists`].
    pub fn create_snapshot_tag(&self, name: &str, commit: &CommitId) -> Result<bool> {
        validate_name("snapshot", name)?;
        let _lock = self.lock()?;
        if let Some(existing) = self.snapshot(name)? {
            if &existing.commit == commit {
                return Ok(false);
            }
            return Err(MirrorError::SnapshotExists {
                name: name.to_owned(),
            });
        }
        if !self.commit_is_complete(commit)? {
            return Err(MirrorError::ObjectNotFound {
                id: format!("{commit} (snapshot {name:?} is incomplete)"),
            });
        }
        // Every path must be one k8s-snap could have written.
        let mut bad_path = None;
        self.walk_paths(commit, &mut |p| {
            if bad_path.is_none()
                && let Err(e) = super::validate_path(p)
            {
                bad_path = Some(e);
            }
        })?;
        if let Some(e) = bad_path {
            return Err(e);
        }
        let bytes =
            self.read_file(commit, SNAPSHOT_META_FILE)?
                .ok_or_else(|| MirrorError::BadMeta {
                    snapshot: name.to_owned(),
                    file: SNAPSHOT_META_FILE,
                    reason: "missing".into(),
                })?;
        let meta = parse_meta(name, &bytes)?;
        if meta.name != name {
            return Err(MirrorError::BadMeta {
                snapshot: name.to_owned(),
                file: SNAPSHOT_META_FILE,
                reason: format!("names snapshot {:?}", meta.name),
            });
        }
        validate_name("cluster", &meta.cluster_name)?;
        let refname = format!("{SNAPSHOT_TAG_PREFIX}{name}");
        self.repo
            .reference(&refname, commit.oid(), false, "k8s-snap: pull")
            .map_err(|e| match e.code() {
                git2::ErrorCode::Exists => MirrorError::SnapshotExists {
                    name: name.to_owned(),
                },
                _ => MirrorError::Git {
                    context: format!("creating tag {refname}"),
                    source: super::GitError(e),
                },
            })?;
        self.rebuild_cluster_branch_locked(&meta.cluster_name)?;
        tracing::info!(snapshot = name, %commit, "snapshot tagged from the store");
        Ok(true)
    }

    /// Calls `f` with the path of every entry (files and directories) of the commit's tree.
    fn walk_paths(&self, commit: &CommitId, f: &mut dyn FnMut(&str)) -> Result<()> {
        let root = self.commit_tree(commit)?;
        let mut stack: Vec<(Oid, String)> = vec![(root.id(), String::new())];
        while let Some((id, base)) = stack.pop() {
            let tree = self
                .repo
                .find_tree(id)
                .ctx(|| format!("reading directory {base:?} of commit {commit}"))?;
            for entry in tree.iter() {
                let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
                let path = if base.is_empty() {
                    name
                } else {
                    format!("{base}/{name}")
                };
                f(&path);
                if entry.kind() == Some(ObjectType::Tree) {
                    stack.push((entry.id(), path));
                }
            }
        }
        Ok(())
    }
}
