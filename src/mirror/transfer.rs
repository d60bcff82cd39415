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

    /// How many objects [`Mirror::build_pack`] would pack for `include` (nothing hidden),
    /// without compressing anything.
    pub fn count_objects(&self, include: &[CommitId]) -> Result<u64> {
        let mut walk = self.repo.revwalk().ctx(|| "creating a revwalk".into())?;
        for c in include {
            walk.push(c.oid())
                .ctx(|| format!("walking commit {c} to count its objects"))?;
        }
        let mut pb = self
            .repo
            .packbuilder()
            .ctx(|| "creating a pack builder".into())?;
        pb.insert_walk(&mut walk)
            .ctx(|| "collecting the objects to count".into())?;
        Ok(pb.object_count() as u64)
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

    /// Installs a downloaded pack with its downloaded index into `objects/pack` without
    /// re-indexing (fast path of a pull). The index is checked structurally first: version 2,
    /// its own SHA-1 trailer, the pack checksum it records equal to the pack's trailer, and the
    /// object count equal to the pack header's. Object contents stay protected by libgit2's
    /// hash verification on every read; [`Mirror::index_pack`] is the full check.
    pub fn install_pack(&self, pack: &[u8], idx: &[u8]) -> Result<()> {
        use sha1::{Digest, Sha1};
        let bad = |reason: &str| MirrorError::Io {
            context: "installing a downloaded pack".into(),
            source: std::io::Error::other(reason.to_owned()),
        };
        if pack.len() < 32 || &pack[..4] != b"PACK" {
            return Err(bad("not a git pack"));
        }
        let count = u32::from_be_bytes([pack[8], pack[9], pack[10], pack[11]]);
        // The caller checked the pack's sha256 against the manifest; its SHA-1 trailer is
        // what the index must record.
        let pack_sum = &pack[pack.len() - 20..];
        let min_len = 8 + 256 * 4 + 40;
        if idx.len() < min_len || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return Err(bad("the index is not a version 2 pack index"));
        }
        if Sha1::digest(&idx[..idx.len() - 20]).as_slice() != &idx[idx.len() - 20..] {
            return Err(bad("the index's SHA-1 trailer does not match its content"));
        }
        if &idx[idx.len() - 40..idx.len() - 20] != pack_sum {
            return Err(bad("the index belongs to another pack"));
        }
        let n = u32::from_be_bytes([idx[1028], idx[1029], idx[1030], idx[1031]]);
        if n != count {
            return Err(bad("the index and the pack disagree on the object count"));
        }
        let expected_len = 8 + 256 * 4 + (n as usize) * (20 + 4 + 4) + 40;
        if idx.len() < expected_len {
            return Err(bad("the index is truncated"));
        }
        let pack_dir = self.git_dir.join("objects").join("pack");
        io_ctx(std::fs::create_dir_all(&pack_dir), || {
            format!("creating {}", pack_dir.display())
        })?;
        let base = format!("pack-{}", hex_lower(pack_sum));
        // The .pack first, the .idx last: libgit2 finds packs by their index.
        for (ext, bytes) in [("pack", pack), ("idx", idx)] {
            let path = pack_dir.join(format!("{base}.{ext}"));
            if path.exists() {
                continue;
            }
            let mut tmp = io_ctx(tempfile::NamedTempFile::new_in(&pack_dir), || {
                format!("creating a temp file in {}", pack_dir.display())
            })?;
            io_ctx(tmp.write_all(bytes), || {
                format!("writing {}", path.display())
            })?;
            io_ctx(tmp.persist(&path).map_err(|e| e.error), || {
                format!("installing {}", path.display())
            })?;
        }
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        odb.refresh()
            .ctx(|| "refreshing the object database after installing a pack".into())?;
        Ok(())
    }

    /// How many of the objects a version-2 pack index lists are missing from the mirror
    /// (`None` if the bytes are not a well-formed index). Lets a pull skip packs it has.
    pub fn objects_missing_from_idx(&self, idx: &[u8]) -> Result<Option<u64>> {
        use sha1::{Digest, Sha1};
        if idx.len() < 8 + 256 * 4 + 40 || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return Ok(None);
        }
        if Sha1::digest(&idx[..idx.len() - 20]).as_slice() != &idx[idx.len() - 20..] {
            return Ok(None);
        }
        let n = u32::from_be_bytes([idx[1028], idx[1029], idx[1030], idx[1031]]) as usize;
        let start = 8 + 256 * 4;
        if idx.len() < start + n * 20 + 40 {
            return Ok(None);
        }
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut missing = 0u64;
        for chunk in idx[start..start + n * 20].chunks_exact(20) {
            let oid =
                Oid::from_bytes(chunk).ctx(|| "reading an object id of a pack index".into())?;
            if !odb.exists(oid) {
                missing += 1;
            }
        }
        Ok(Some(missing))
    }

    /// Whether the commit and every tree and blob of its tree are in the mirror. Never fails
    /// because of a missing object (that is `Ok(false)`); fails on unreadable or corrupt ones.
    pub fn commit_is_complete(&self, commit: &CommitId) -> Result<bool> {
        self.scan(commit, false, &mut HashSet::new())
    }

    /// One walk of the commit's tree: completeness, and (if `check_paths`) the validity of
    /// every path, returned as the error.
    ///
    /// `verified` holds objects already known present (and, for trees, complete and valid);
    /// it is extended only when the whole scan succeeds.
    fn scan(
        &self,
        commit: &CommitId,
        check_paths: bool,
        verified: &mut HashSet<Oid>,
    ) -> Result<bool> {
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
        let known = |id: &Oid, seen: &mut HashSet<Oid>| verified.contains(id) || !seen.insert(*id);
        // A path is valid when each of its segments is, so a tree is checked once whatever its
        // path.
        let mut stack: Vec<Oid> = Vec::new();
        if !known(&c.tree_id(), &mut seen) {
            stack.push(c.tree_id());
        }
        while let Some(tree_id) = stack.pop() {
            if !odb.exists(tree_id) {
                return Ok(false);
            }
            let tree = self
                .repo
                .find_tree(tree_id)
                .ctx(|| format!("reading tree {tree_id} of commit {commit}"))?;
            for entry in tree.iter() {
                if check_paths {
                    let name = String::from_utf8_lossy(entry.name_bytes());
                    if name.contains('/') {
                        return Err(MirrorError::InvalidPath {
                            path: name.into_owned(),
                            reason: "a tree entry name contains '/'".into(),
                        });
                    }
                    super::validate_path(&name)?;
                }
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        if !known(&entry.id(), &mut seen) {
                            stack.push(entry.id());
                        }
                    }
                    Some(ObjectType::Blob) => {
                        if !known(&entry.id(), &mut seen) && !odb.exists(entry.id()) {
                            return Ok(false);
                        }
                    }
                    _ => return Ok(false),
                }
            }
        }
        verified.extend(seen);
        Ok(true)
    }

    /// Tags a complete commit (e.g. a pulled one) as snapshot `name` and rebuilds its
    /// cluster's branch. Untrusted input: re-validates the name, checks the commit is complete,
    /// that its every path is valid and that its `snapshot.yaml` names the same snapshot and a
    /// valid cluster. An existing tag with the same commit is a no-op (`Ok(false)`); with
    /// another commit it is [`MirrorError::SnapshotExists`].
    pub fn create_snapshot_tag(&self, name: &str, commit: &CommitId) -> Result<bool> {
        self.create_snapshot_tags(&[(name.to_owned(), commit.clone())])
            .pop()
            .expect("one result per snapshot")
    }

    /// [`Mirror::create_snapshot_tag`] for many snapshots at once (objects shared between
    /// them are checked once, each cluster branch is rebuilt once). One result per snapshot.
    pub fn create_snapshot_tags(&self, items: &[(String, CommitId)]) -> Vec<Result<bool>> {
        let _lock = match self.lock() {
            Ok(l) => l,
            Err(e) => {
                let msg = e.to_string();
                return items
                    .iter()
                    .map(|_| {
                        Err(MirrorError::Io {
                            context: "locking the mirror".into(),
                            source: std::io::Error::other(msg.clone()),
                        })
                    })
                    .collect();
            }
        };
        let mut verified = HashSet::new();
        let mut clusters = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(items.len());
        for (name, commit) in items {
            let r = self.tag_one_locked(name, commit, &mut verified);
            if let Ok(Some(cluster)) = &r {
                clusters.insert(cluster.clone());
            }
            out.push(r.map(|c| c.is_some()));
        }
        for cluster in clusters {
            if let Err(e) = self.rebuild_cluster_branch_locked(&cluster) {
                tracing::warn!(%cluster, "rebuilding the cluster branch failed: {e}");
            }
        }
        out
    }

    /// Tags one snapshot under the lock; the cluster name when a tag was created.
    fn tag_one_locked(
        &self,
        name: &str,
        commit: &CommitId,
        verified: &mut HashSet<Oid>,
    ) -> Result<Option<String>> {
        validate_name("snapshot", name)?;
        if let Some(existing) = self.snapshot(name)? {
            if &existing.commit == commit {
                return Ok(None);
            }
            return Err(MirrorError::SnapshotExists {
                name: name.to_owned(),
            });
        }
        // Complete, and every path one k8s-snap could have written.
        if !self.scan(commit, true, verified)? {
            return Err(MirrorError::ObjectNotFound {
                id: format!("{commit} (snapshot {name:?} is incomplete)"),
            });
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
        tracing::info!(snapshot = name, %commit, "snapshot tagged from the store");
        Ok(Some(meta.cluster_name))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
