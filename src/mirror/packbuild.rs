//! Building the pack of the objects some snapshot commits need and others do not (what a push
//! uploads), without delta compression: each object's entry is copied from the mirror's own
//! packs (snapshot packs hold undeltified objects), or written as a stored entry when it is a
//! delta or loose. The store compresses the whole stream instead (`packcodec`), which
//! is both smaller and two orders of magnitude faster than libgit2's delta search (4.5 s for
//! 50k objects; docs/benchmarks.md).
//!
//! Owns: choosing the objects (a walk of the included commits' trees that skips whatever the
//! hidden commits' trees hold) and streaming the pack and its index. Must not touch: refs, the
//! store, object contents (every copied entry is checked against its index's CRC-32 first).

use std::io::Write;

use git2::{ObjectType, Oid};

use super::packread::{PackFiles, PackStream, entry_kind};
use super::transfer::{OidSet, PackData, key};
use super::{CommitId, GitContext, Mirror, MirrorError, Result};

/// What [`Mirror::build_pack_to`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPack {
    /// The pack's index (version 2).
    pub idx: Vec<u8>,
    /// Number of objects in the pack.
    pub objects: u64,
    /// Bytes of the pack written.
    pub pack_len: u64,
    /// Objects whose entry was copied from a mirror pack (the others were read through
    /// libgit2: deltas, loose objects).
    pub reused: u64,
}

impl Mirror {
    /// Builds one pack with every object reachable from `include` but not from `hide` (commits
    /// of `hide` missing from the mirror are ignored), in memory. `None` when there is nothing
    /// to pack. See [`Mirror::build_pack_to`].
    pub fn build_pack(&self, include: &[CommitId], hide: &[CommitId]) -> Result<Option<PackData>> {
        Ok(self
            .build_pack_to(include, hide, Vec::new())?
            .map(|(pack, built)| PackData {
                pack,
                idx: built.idx,
                objects: built.objects,
            }))
    }

    /// Streams into `out` one pack (git format v2, undeltified) with every object reachable
    /// from `include` but not from `hide`, and returns `out` with the pack's index. `None`
    /// (nothing written) when there is nothing to pack.
    pub fn build_pack_to<W: Write>(
        &self,
        include: &[CommitId],
        hide: &[CommitId],
        out: W,
    ) -> Result<Option<(W, BuiltPack)>> {
        let objects = self.objects_to_pack(include, hide)?;
        self.write_pack(objects, out)
    }

    /// Streams into `out` one pack of `objects` (in that order), and returns `out` with the
    /// pack's index. `None` (nothing written) when `objects` is empty.
    pub(super) fn write_pack<W: Write>(
        &self,
        objects: Vec<(Oid, ObjectType)>,
        out: W,
    ) -> Result<Option<(W, BuiltPack)>> {
        if objects.is_empty() {
            return Ok(None);
        }
        let count = u32::try_from(objects.len()).map_err(|_| MirrorError::Io {
            context: "building a pack".into(),
            source: std::io::Error::other("more than 2^32 objects in one pack"),
        })?;
        let files = PackFiles::open(&self.git_dir)?;
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let write_err = |e: std::io::Error| MirrorError::Io {
            context: "writing a pack".into(),
            source: e,
        };
        let mut pack = PackStream::new(out, count).map_err(write_err)?;
        let mut raw = Vec::new();
        let mut reused = 0u64;
        for (id, kind) in objects {
            // A reused entry is checked as git checks the entries it reuses (`pack-objects`):
            // its CRC-32 against the one its index records, and its kind from its header. The
            // id was hashed when the entry was written; hashing it again cost 40% of a push.
            let copied = match files.locate(id) {
                Some(at) => {
                    files.read_raw(at, &mut raw)?;
                    match entry_kind(&raw) {
                        Ok(Some(k)) if k == kind && crc32fast::hash(&raw) == at.crc32 => {
                            Some(at.crc32)
                        }
                        Ok(None) => None,
                        _ => {
                            return Err(MirrorError::Io {
                                context: format!("reading object {id} to pack it"),
                                source: std::io::Error::other(
                                    "its pack entry is corrupt or holds another object",
                                ),
                            });
                        }
                    }
                }
                None => None,
            };
            if let Some(crc32) = copied {
                reused += 1;
                pack.copy_entry(id, &raw, crc32).map_err(write_err)?;
            } else {
                let object = odb
                    .read(id)
                    .ctx(|| format!("reading object {id} to pack it"))?;
                pack.write_object(id, object.kind(), object.data())
                    .map_err(write_err)?;
            }
        }
        let (out, idx, pack_len) = pack.finish().map_err(write_err)?;
        Ok(Some((
            out,
            BuiltPack {
                idx,
                objects: u64::from(count),
                pack_len,
                reused,
            },
        )))
    }

    /// How many objects [`Mirror::build_pack`] would pack for `include` (nothing hidden).
    pub(crate) fn count_objects(&self, include: &[CommitId]) -> Result<u64> {
        Ok(self.objects_to_pack(include, &[])?.len() as u64)
    }

    /// The objects reachable from `include` and not from `hide`, commits first, then each
    /// tree followed by its entries in tree order (objects of neighbouring paths are alike,
    /// which the store's compression exploits). Hidden trees are read, their blobs are not.
    pub(super) fn objects_to_pack(
        &self,
        include: &[CommitId],
        hide: &[CommitId],
    ) -> Result<Vec<(Oid, ObjectType)>> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut hidden = OidSet::default();
        for c in hide {
            if !odb.exists(c.oid()) {
                continue;
            }
            let commit = self
                .repo
                .find_commit(c.oid())
                .ctx(|| format!("reading commit {c} to hide it from the pack"))?;
            hidden.insert(key(&c.oid()));
            self.mark_tree(commit.tree_id(), &mut hidden)?;
        }
        let mut seen = OidSet::default();
        let mut out = Vec::new();
        let mut commits: Vec<Oid> = include.iter().map(CommitId::oid).collect();
        while let Some(id) = commits.pop() {
            if hidden.contains(&key(&id)) || !seen.insert(key(&id)) {
                continue;
            }
            let commit = self
                .repo
                .find_commit(id)
                .ctx(|| format!("walking commit {id} to pack it"))?;
            out.push((id, ObjectType::Commit));
            commits.extend(commit.parent_ids());
            let tree = commit.tree_id();
            if !hidden.contains(&key(&tree)) && seen.insert(key(&tree)) {
                self.collect_tree(tree, &hidden, &mut seen, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Adds the tree and every tree and blob id under it to `set` (blobs are not read).
    fn mark_tree(&self, id: Oid, set: &mut OidSet) -> Result<()> {
        if !set.insert(key(&id)) {
            return Ok(());
        }
        let tree = self
            .repo
            .find_tree(id)
            .ctx(|| format!("reading tree {id} to hide it from the pack"))?;
        for entry in tree.iter() {
            match entry.kind() {
                Some(ObjectType::Tree) => self.mark_tree(entry.id(), set)?,
                _ => {
                    set.insert(key(&entry.id()));
                }
            }
        }
        Ok(())
    }

    /// Appends the tree `id` (already in `seen`) and what it holds that is neither hidden nor
    /// seen.
    fn collect_tree(
        &self,
        id: Oid,
        hidden: &OidSet,
        seen: &mut OidSet,
        out: &mut Vec<(Oid, ObjectType)>,
    ) -> Result<()> {
        out.push((id, ObjectType::Tree));
        let tree = self
            .repo
            .find_tree(id)
            .ctx(|| format!("reading tree {id} to pack it"))?;
        for entry in tree.iter() {
            let child = entry.id();
            if hidden.contains(&key(&child)) || !seen.insert(key(&child)) {
                continue;
            }
            match entry.kind() {
                Some(ObjectType::Tree) => self.collect_tree(child, hidden, seen, out)?,
                Some(ObjectType::Blob) => out.push((child, ObjectType::Blob)),
                _ => {
                    return Err(MirrorError::Io {
                        context: format!("packing tree {id}"),
                        source: std::io::Error::other(format!(
                            "entry {child} is neither a tree nor a blob"
                        )),
                    });
                }
            }
        }
        Ok(())
    }
}
