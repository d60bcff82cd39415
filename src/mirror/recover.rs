//! Finding snapshots in packs whose manifest was lost (`k8s-snap recover`, `verify`, `gc`):
//! the ids a pack holds, the snapshot commits an object database holds (parentless commits
//! whose tree has a valid `.k8s-snap/snapshot.yaml`), every object a snapshot commit needs,
//! and the fewest packs that hold them.
//!
//! Owns only these read-only queries; never writes a ref or talks to the store.

use git2::{ObjectType, Oid};

use super::transfer::{ObjectSet, key_of};
use super::{CommitId, GitContext, Mirror, MirrorError, Result, parse_meta};
use crate::tree::SnapshotMeta;
use crate::tree::meta::SNAPSHOT_META_FILE;

impl Mirror {
    /// Indexes a pack into the object database (as [`Mirror::index_pack`]) and returns the ids
    /// it holds and the index libgit2 wrote.
    pub(crate) fn index_pack_ids(&self, pack: &[u8]) -> Result<(ObjectSet, Vec<u8>)> {
        self.index_pack(pack)?;
        if pack.len() < 32 {
            return Err(MirrorError::Io {
                context: "indexing a pack".into(),
                source: std::io::Error::other("not a git pack"),
            });
        }
        let tail = hex::encode(&pack[pack.len() - 20..]);
        let path = self
            .git_dir()
            .join("objects")
            .join("pack")
            .join(format!("pack-{tail}.idx"));
        let idx = std::fs::read(&path).map_err(|source| MirrorError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        let ids = super::transfer::check_pack_index(pack, &idx)?;
        Ok((ids, idx))
    }

    /// Every parentless commit of the object database whose tree holds a valid
    /// `.k8s-snap/snapshot.yaml`, with that metadata, sorted by timestamp then name. Commits
    /// whose metadata is unreadable are skipped (and logged at debug).
    pub(crate) fn find_snapshot_commits(&self) -> Result<Vec<(CommitId, SnapshotMeta)>> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut commits: Vec<Oid> = Vec::new();
        odb.foreach(|id| {
            if let Ok((_, ObjectType::Commit)) = odb.read_header(*id) {
                commits.push(*id);
            }
            true
        })
        .ctx(|| "listing the object database".into())?;
        let mut out = Vec::new();
        for id in commits {
            let commit = self
                .repo
                .find_commit(id)
                .ctx(|| format!("reading commit {id}"))?;
            if commit.parent_count() != 0 {
                continue;
            }
            let cid = CommitId::from_oid(id);
            let Some(bytes) = self.read_file(&cid, SNAPSHOT_META_FILE).ok().flatten() else {
                continue;
            };
            let name = probe_name(&bytes);
            match parse_meta(&name, &bytes) {
                Ok(meta) if super::validate_name("snapshot", &meta.name).is_ok() => {
                    out.push((cid, meta));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(commit = %id, error = %e, "not a snapshot commit"),
            }
        }
        out.sort_by(|a, b| {
            a.1.timestamp
                .cmp(&b.1.timestamp)
                .then_with(|| a.1.name.cmp(&b.1.name))
        });
        Ok(out)
    }

    /// The ids of the commit, its trees and its blobs; an error when one is missing.
    pub(crate) fn commit_closure(&self, commit: &CommitId) -> Result<ObjectSet> {
        let c = self
            .repo
            .find_commit(commit.oid())
            .ctx(|| format!("reading commit {commit}"))?;
        let mut set = ObjectSet::default();
        set.insert_key(key_of(&commit.oid()));
        let mut stack = vec![c.tree_id()];
        set.insert_key(key_of(&c.tree_id()));
        while let Some(t) = stack.pop() {
            let tree = self
                .repo
                .find_tree(t)
                .ctx(|| format!("reading tree {t} of commit {commit}"))?;
            for e in tree.iter() {
                if set.insert_key(key_of(&e.id())) && e.kind() == Some(ObjectType::Tree) {
                    stack.push(e.id());
                }
            }
        }
        Ok(set)
    }
}

/// The `name:` of a snapshot.yaml, for error messages only.
fn probe_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .find_map(|l| l.strip_prefix("name:").map(|n| n.trim().to_owned()))
        .unwrap_or_else(|| "(unknown)".into())
}

/// The fewest packs (greedy) that together hold every id of `needed`, by name; `None` when
/// they cannot.
pub fn choose_packs(needed: &ObjectSet, packs: &[(String, ObjectSet)]) -> Option<Vec<String>> {
    let mut left = needed.clone();
    let mut chosen = Vec::new();
    while !left.is_empty() {
        let (best, covered) = packs
            .iter()
            .filter(|(name, _)| !chosen.contains(name))
            .map(|(name, set)| (name, left.count_in(set)))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))?;
        if covered == 0 {
            return None;
        }
        let set = &packs.iter().find(|(n, _)| n == best)?.1;
        left.remove_all(set);
        chosen.push(best.clone());
    }
    chosen.sort();
    Some(chosen)
}
