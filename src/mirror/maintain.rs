//! Maintenance of the mirror: snapshot deletion, the derived per-cluster branches, garbage
//! collection and object statistics (the writer lock is `lock`, object encoding `encode`).
//!
//! Owns the refs `refs/heads/clusters/*` and the files under `objects/`; never rewrites a
//! snapshot tag except to delete it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository};

use super::encode::{commit_message, encode_commit, write_object};
use super::{
    CLUSTER_BRANCH_PREFIX, GitContext, Mirror, MirrorError, Result, SNAPSHOT_TAG_PREFIX, io_ctx,
    validate_name,
};

/// Object counts and sizes of the repository on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Loose objects.
    pub loose_objects: u64,
    /// Bytes of the loose objects' files.
    pub loose_bytes: u64,
    /// Pack files.
    pub packs: u64,
    /// Objects in the packs.
    pub pack_objects: u64,
    /// Bytes of `.pack` and `.idx` files.
    pub pack_bytes: u64,
}

impl ObjectStats {
    /// Loose plus packed objects (an object in two packs counts twice).
    pub fn total_objects(&self) -> u64 {
        self.loose_objects + self.pack_objects
    }
    /// Bytes on disk of loose objects and packs.
    pub fn total_bytes(&self) -> u64 {
        self.loose_bytes + self.pack_bytes
    }
}

/// What [`Mirror::gc`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// The repository before the collection.
    pub before: ObjectStats,
    /// The repository after the collection.
    pub after: ObjectStats,
    /// Objects reachable from the refs, now in one pack.
    pub reachable_objects: u64,
}

impl Mirror {
    /// Deletes the tag of snapshot `name` and rebuilds its cluster's branch. Its unique objects
    /// are freed by the next [`Mirror::gc`].
    pub fn delete_snapshot(&self, name: &str) -> Result<()> {
        validate_name("snapshot", name)?;
        let _lock = self.lock()?;
        let info = self
            .snapshot(name)?
            .ok_or_else(|| MirrorError::SnapshotNotFound {
                name: name.to_owned(),
            })?;
        let refname = format!("{SNAPSHOT_TAG_PREFIX}{name}");
        self.repo
            .find_reference(&refname)
            .and_then(|mut r| r.delete())
            .ctx(|| format!("deleting tag {refname}"))?;
        self.rebuild_cluster_branch_locked(&info.meta.cluster_name)?;
        tracing::info!(snapshot = name, "snapshot deleted from the mirror");
        Ok(())
    }

    /// Rebuilds `refs/heads/clusters/<cluster>` from scratch (taking the lock): one commit per
    /// snapshot of that cluster, with the snapshot's tree, ordered by timestamp then name.
    /// Deterministic: the same set of snapshots gives the same commit ids. Deletes the branch
    /// when the cluster has no snapshot left.
    pub fn rebuild_cluster_branch(&self, cluster: &str) -> Result<()> {
        validate_name("cluster", cluster)?;
        let _lock = self.lock()?;
        self.rebuild_cluster_branch_locked(cluster)
    }

    pub(super) fn rebuild_cluster_branch_locked(&self, cluster: &str) -> Result<()> {
        let refname = format!("{CLUSTER_BRANCH_PREFIX}{cluster}");
        let odb = self
            .repo
            .odb()
            .ctx(|| format!("opening the object database of {}", self.git_dir.display()))?;
        let mut parent: Option<Oid> = None;
        // snapshots() is sorted by timestamp, ties by name.
        for snap in self
            .snapshots()?
            .into_iter()
            .filter(|s| s.meta.cluster_name == cluster)
        {
            let tree = self.tree_id(&snap.commit)?.oid();
            let body = encode_commit(
                tree,
                parent,
                snap.meta.timestamp.as_second(),
                &commit_message(&snap.meta),
            );
            let (oid, _) = write_object(&odb, ObjectType::Commit, &body)?;
            parent = Some(oid);
        }
        match parent {
            Some(head) => {
                self.repo
                    .reference(&refname, head, true, "k8s-snap: rebuild cluster branch")
                    .ctx(|| format!("updating branch {refname}"))?;
            }
            None => match self.repo.find_reference(&refname) {
                Ok(mut r) => r.delete().ctx(|| format!("deleting branch {refname}"))?,
                Err(e) if e.code() == git2::ErrorCode::NotFound => {}
                Err(e) => return Err(e).ctx(|| format!("reading branch {refname}")),
            },
        }
        Ok(())
    }

    /// Removes every object not reachable from a ref: packs all reachable objects into one
    /// new pack, then deletes loose objects and the other packs. Takes the lock.
    pub fn gc(&mut self) -> Result<GcStats> {
        let _lock = self.lock()?;
        remove_stale_temp_packs(&self.git_dir)?;
        let before = self.object_stats()?;
        let pack_dir = self.git_dir.join("objects").join("pack");
        let mut pb = self
            .repo
            .packbuilder()
            .ctx(|| "creating a pack builder".into())?;
        pb.set_threads(0);
        let mut walk = self.repo.revwalk().ctx(|| "creating a revwalk".into())?;
        let refs = self
            .repo
            .references()
            .ctx(|| format!("listing refs of {}", self.git_dir.display()))?;
        for r in refs {
            let r = r.ctx(|| "reading a ref".into())?;
            let name = r.name().unwrap_or("<non-UTF-8 ref>").to_owned();
            let commit = r
                .peel_to_commit()
                .ctx(|| format!("ref {name} does not point to a commit"))?;
            walk.push(commit.id())
                .ctx(|| format!("walking ref {name}"))?;
        }
        pb.insert_walk(&mut walk)
            .ctx(|| "collecting reachable objects".into())?;
        let reachable = pb.object_count() as u64;
        let keep = if reachable > 0 {
            io_ctx(std::fs::create_dir_all(&pack_dir), || {
                format!("creating {}", pack_dir.display())
            })?;
            pb.write(&pack_dir, 0)
                .ctx(|| format!("writing a pack into {}", pack_dir.display()))?;
            pb.name().ok().flatten().map(|n| format!("pack-{n}"))
        } else {
            None
        };
        drop(pb);
        drop(walk);
        if reachable > 0 && keep.is_none() {
            return Err(MirrorError::Io {
                context: format!("gc of {}", self.git_dir.display()),
                source: std::io::Error::other("the new pack has no name; nothing deleted"),
            });
        }
        // The new pack holds every reachable object: everything else can go.
        remove_loose_objects(&self.git_dir.join("objects"))?;
        remove_packs_except(&pack_dir, keep.as_deref())?;
        io_ctx(super::stored::prune(&self.git_dir), || {
            format!(
                "removing stored copies of packs gc removed from {}",
                self.git_dir.display()
            )
        })?;
        // Reopen so no handle keeps deleted packs mapped.
        self.repo = Repository::open_bare(&self.git_dir)
            .ctx(|| format!("reopening {}", self.git_dir.display()))?;
        let after = self.object_stats()?;
        tracing::info!(
            before = before.total_objects(),
            after = after.total_objects(),
            "mirror gc done"
        );
        Ok(GcStats {
            before,
            after,
            reachable_objects: reachable,
        })
    }

    /// Counts and sizes of loose objects and packs.
    pub fn object_stats(&self) -> Result<ObjectStats> {
        let objects = self.git_dir.join("objects");
        let mut stats = ObjectStats::default();
        for_each_loose(&objects, |_, len| {
            stats.loose_objects += 1;
            stats.loose_bytes += len;
            Ok(())
        })?;
        let pack_dir = objects.join("pack");
        for (path, name) in read_dir_names(&pack_dir)? {
            let len = io_ctx(std::fs::metadata(&path), || {
                format!("reading {}", path.display())
            })?
            .len();
            if name.ends_with(".pack") {
                stats.packs += 1;
                stats.pack_bytes += len;
            } else if name.ends_with(".idx") {
                stats.pack_bytes += len;
                stats.pack_objects += idx_object_count(&path)?;
            }
        }
        Ok(stats)
    }
}

/// Entries (path, file name) of a directory; empty if it does not exist.
fn read_dir_names(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let iter = match std::fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(MirrorError::Io {
                context: format!("reading {}", dir.display()),
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for entry in iter {
        let entry = io_ctx(entry, || format!("reading {}", dir.display()))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((entry.path(), name));
        }
    }
    Ok(out)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Calls `f(path, size)` for every loose object file `objects/xx/<38 hex>`.
fn for_each_loose(objects: &Path, mut f: impl FnMut(&Path, u64) -> Result<()>) -> Result<()> {
    for (dir, name) in read_dir_names(objects)? {
        if !is_hex(&name, 2) {
            continue;
        }
        for (file, fname) in read_dir_names(&dir)? {
            if !is_hex(&fname, 38) {
                continue;
            }
            let len = io_ctx(std::fs::metadata(&file), || {
                format!("reading {}", file.display())
            })?
            .len();
            f(&file, len)?;
        }
    }
    Ok(())
}

fn remove_loose_objects(objects: &Path) -> Result<()> {
    for_each_loose(objects, |file, _| {
        io_ctx(std::fs::remove_file(file), || {
            format!("removing {}", file.display())
        })
    })?;
    for (dir, name) in read_dir_names(objects)? {
        if is_hex(&name, 2) {
            // Only succeeds when empty; leftovers (temp files of a crashed writer) stay.
            let _ = std::fs::remove_dir(&dir);
        }
    }
    Ok(())
}

/// Temp files a downloader (which writes without the lock) may still be using are removed
/// only once older than this.
const STALE_DOWNLOAD: Duration = Duration::from_secs(24 * 3600);

/// Removes the temp packs and indexes of killed writers from `objects/pack`. Call under the
/// writer lock: `tmp_pack_*`/`tmp_idx_*` are written only by the lock holder, so any found
/// then belong to a dead process; downloads' temp files (`.tmp*`, libgit2's `pack_git2_*`) are
/// written without the lock and go only when older than a day. Returns the bytes freed.
pub(crate) fn remove_stale_temp_packs(git_dir: &Path) -> Result<u64> {
    let pack_dir = git_dir.join("objects").join("pack");
    if !pack_dir.is_dir() {
        return Ok(0);
    }
    let mut freed = 0;
    let copies = super::stored::temp_copies(git_dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((p, name))
        });
    for (path, name) in read_dir_names(&pack_dir)?.into_iter().chain(copies) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let ours = name.starts_with("tmp_pack_")
            || name.starts_with("tmp_idx_")
            || name.starts_with(super::stored::TEMP_PREFIX);
        let download = name.starts_with(".tmp") || name.starts_with("pack_git2_");
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= STALE_DOWNLOAD);
        if ours || (download && old) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    freed += meta.len();
                    tracing::info!(file = %path.display(), bytes = meta.len(), "removed a temp file left by a killed process");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(MirrorError::Io {
                        context: format!("removing {}", path.display()),
                        source: e,
                    });
                }
            }
        }
    }
    Ok(freed)
}

fn remove_packs_except(pack_dir: &Path, keep: Option<&str>) -> Result<()> {
    for (path, name) in read_dir_names(pack_dir)? {
        let Some(stem) = name.strip_prefix("pack-").and_then(|s| s.split('.').next()) else {
            continue;
        };
        if keep.is_some_and(|k| k.strip_prefix("pack-") == Some(stem)) {
            continue;
        }
        io_ctx(std::fs::remove_file(&path), || {
            format!("removing {}", path.display())
        })?;
    }
    Ok(())
}

/// Number of objects in a version-2 pack index (the last fan-out entry).
fn idx_object_count(path: &Path) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = || MirrorError::Io {
        context: format!("reading pack index {}", path.display()),
        source: std::io::Error::other("not a version 2 pack index"),
    };
    let mut f = io_ctx(File::open(path), || format!("opening {}", path.display()))?;
    let mut head = [0u8; 8];
    io_ctx(f.read_exact(&mut head), || {
        format!("reading {}", path.display())
    })?;
    if head != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad());
    }
    io_ctx(f.seek(SeekFrom::Start(8 + 255 * 4)), || {
        format!("reading {}", path.display())
    })?;
    let mut n = [0u8; 4];
    io_ctx(f.read_exact(&mut n), || {
        format!("reading {}", path.display())
    })?;
    Ok(u64::from(u32::from_be_bytes(n)))
}
