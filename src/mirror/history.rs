//! The history of one file across snapshots (`k8s-snap log`): in which snapshots it appeared,
//! changed or disappeared.
//!
//! Owns: walking the tree entry at one path along a list of snapshot commits, comparing entry
//! ids only. A directory on the path whose id equals the previous snapshot's is not read again
//! (its answer is the previous one), so unchanged subtrees and blobs are never read: a history
//! over hundreds of snapshots reads a few trees per snapshot that changed under the path.
//! Must not touch: blob contents (callers read the blobs they show), snapshot order (the
//! caller gives the snapshots in the order to walk).

use git2::{ObjectType, Oid};

use super::{BlobId, Mirror, MirrorError, Result, SnapshotInfo, names};

/// How a file changed from one snapshot to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryChange {
    /// Present here, absent in the snapshot before (or this is the first snapshot).
    Added,
    /// Present in both, with other content.
    Modified,
    /// Absent here, present in the snapshot before.
    Removed,
}

/// One step of a file's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryStep {
    /// The snapshot where the change is seen.
    pub snapshot: SnapshotInfo,
    /// The change.
    pub change: HistoryChange,
    /// The file's blob in the snapshot before (`None` when added).
    pub old: Option<BlobId>,
    /// The file's blob in this snapshot (`None` when removed).
    pub new: Option<BlobId>,
}

impl Mirror {
    /// The changes of the file at `path` along `snapshots` (in the order given, usually by
    /// time): each snapshot where it appeared, changed or disappeared. Only tree entry ids are
    /// compared; directories unchanged since the previous snapshot are not read.
    pub fn history(&self, snapshots: &[SnapshotInfo], path: &str) -> Result<Vec<HistoryStep>> {
        names::validate_path(path)?;
        let parts: Vec<&str> = path.split('/').collect();
        // The previous snapshot's directory ids along the path (root first) and its answer.
        let mut prev_dirs: Vec<Oid> = Vec::new();
        let mut prev: Option<Oid> = None;
        let mut out = Vec::new();
        for s in snapshots {
            let root = self.find_commit(&s.commit)?.tree_id();
            let (dirs, found) = self.lookup(root, &parts, &prev_dirs, prev, path, s)?;
            let change = match (prev, found) {
                (None, Some(_)) => Some(HistoryChange::Added),
                (Some(_), None) => Some(HistoryChange::Removed),
                (Some(a), Some(b)) if a != b => Some(HistoryChange::Modified),
                _ => None,
            };
            if let Some(change) = change {
                out.push(HistoryStep {
                    snapshot: s.clone(),
                    change,
                    old: prev.map(BlobId::from_oid),
                    new: found.map(BlobId::from_oid),
                });
            }
            prev_dirs = dirs;
            prev = found;
        }
        Ok(out)
    }

    /// The blob id at `parts` under the tree `root`, and the directory ids walked. Stops at
    /// the first directory equal to the previous snapshot's at the same depth (`prev_dirs`):
    /// everything below it is the same, so is the answer (`prev`).
    fn lookup(
        &self,
        root: Oid,
        parts: &[&str],
        prev_dirs: &[Oid],
        prev: Option<Oid>,
        path: &str,
        s: &SnapshotInfo,
    ) -> Result<(Vec<Oid>, Option<Oid>)> {
        let mut dirs = Vec::with_capacity(parts.len());
        let mut tree_id = root;
        for (depth, part) in parts.iter().enumerate() {
            if prev_dirs.get(depth) == Some(&tree_id) {
                // Unchanged from here down: keep the previous snapshot's ids below.
                dirs.extend_from_slice(&prev_dirs[depth..]);
                return Ok((dirs, prev));
            }
            dirs.push(tree_id);
            let tree = self.repo.find_tree(tree_id).map_err(|e| MirrorError::Git {
                context: format!("reading {path:?} in snapshot {:?}", s.name),
                source: super::GitError(e),
            })?;
            let Some(entry) = tree.get_name(part) else {
                return Ok((dirs, None));
            };
            let last = depth + 1 == parts.len();
            match (entry.kind(), last) {
                (Some(ObjectType::Blob), true) => return Ok((dirs, Some(entry.id()))),
                (Some(ObjectType::Tree), false) => tree_id = entry.id(),
                _ => return Ok((dirs, None)),
            }
        }
        Ok((dirs, None))
    }
}
