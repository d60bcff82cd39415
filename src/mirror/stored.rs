//! Stored copies: each pack a snapshot writes is also kept as the store keeps packs (zstd
//! frames, `packcodec`), in `<git dir>/k8s-snap/stored/<snapshot>/pack-<pack checksum>.<sha256>.zst`,
//! so that a push uploads it as it is instead of reading, checking and compressing the same
//! objects again (docs/decisions.md, "Pushes upload the copies a snapshot made").
//!
//! A copy is made by the thread that completes its pack (on the snapshot's time, mostly while
//! the snapshot waits for the server) from the complete, synced pack file. A push reads the
//! copies of the snapshots it was asked for ([`Mirror::stored_copies`]: their pack and index
//! still in `objects/pack`, the index naming that pack, the bytes hashing to the sha256 of the
//! name) and starts uploading them before it knows what the store lacks; it then counts a copy
//! when its pack holds any object the push needs ([`Mirror::build_push_packs`]; the others are
//! duplicates gc repacks away), and the needed objects no copy holds go into a pack built as
//! before. So a copy can make a push faster, never leave out what it must store: a missing,
//! stale or damaged copy costs the old path's time, an unneeded one an unreferenced upload
//! (store gc removes it). A snapshot's copies are removed once the store has it
//! ([`Mirror::remove_stored_copies`]); [`Mirror::gc`](super::Mirror::gc) removes copies whose
//! pack it repacked.
//!
//! Owns: the `k8s-snap/stored` directory of the mirror. Must not touch: `objects/` (it reads
//! packs and indexes only), refs.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};
use sha2::{Digest as _, Sha256};

use super::packbuild::BuiltPack;
use super::packread::{idx_ids, idx_object_count};
use super::transfer::{OidSet, key};
use super::{CommitId, Mirror, Result};

/// Where the copies live, under the git dir (outside `objects/`, which git owns).
const STORED_DIR: &str = "k8s-snap/stored";

/// Prefix of a copy being written (removed when dropped; [`prune`] removes leftovers).
pub(super) const TEMP_PREFIX: &str = "tmp_copy_";

/// The directory of the copies of the mirror at `git_dir`.
pub(super) fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join(STORED_DIR)
}

/// The directory of the copies of snapshot `snapshot` (a validated name) in the mirror at
/// `git_dir`.
pub(super) fn snapshot_dir(git_dir: &Path, snapshot: &str) -> PathBuf {
    dir(git_dir).join(snapshot)
}

/// The snapshot directories under `stored` (names that are not valid snapshot names skipped).
fn snapshot_dirs(stored: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(stored) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            super::validate_name("snapshot", &name).ok()?;
            Some((name, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Temporary copies (of writers that died) anywhere under the stored directory of `git_dir`.
pub(super) fn temp_copies(git_dir: &Path) -> Vec<PathBuf> {
    let stored = dir(git_dir);
    let mut dirs = vec![stored.clone()];
    dirs.extend(snapshot_dirs(&stored).into_iter().map(|(_, d)| d));
    let mut out = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && e.file_type().is_ok_and(|t| t.is_file())
            {
                out.push(e.path());
            }
        }
    }
    out
}

/// A copy written to a temporary file, to be installed under its pack's name.
pub(super) struct StagedCopy {
    file: tempfile::NamedTempFile,
    sha256: String,
}

/// Makes the stored copy of a complete pack (read back from `pack`, which the caller has just
/// written and synced) in a temporary file of `stored_dir`.
pub(super) fn stage(stored_dir: &Path, pack: &mut std::fs::File) -> std::io::Result<StagedCopy> {
    let len = pack.seek(SeekFrom::End(0))?;
    pack.seek(SeekFrom::Start(0))?;
    let copy = crate::packcodec::encode(std::io::BufReader::new(&mut *pack), len)?;
    let sha256 = hex::encode(Sha256::digest(&copy));
    let mut file = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(stored_dir)?;
    file.write_all(&copy)?;
    Ok(StagedCopy { file, sha256 })
}

/// Renames a staged copy into place for the pack whose checksum is `sum`. Called after the pack
/// and its index are installed. No sync: a copy that a crash damaged no longer matches the
/// sha256 of its name, and is then not used.
pub(super) fn install(
    stored_dir: &Path,
    staged: StagedCopy,
    sum: &[u8; 20],
) -> std::io::Result<()> {
    let path = stored_dir.join(format!("pack-{}.{}.zst", hex::encode(sum), staged.sha256));
    staged.file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// One copy found in the directory.
struct Candidate {
    /// The pack's checksum, hex (its file is `objects/pack/pack-<pack>.pack`).
    pack: String,
    /// The sha256 of the copy's bytes, hex.
    sha256: String,
    path: PathBuf,
}

/// The copies in `stored_dir`, sorted by pack name; names of any other form are skipped.
fn candidates(stored_dir: &Path) -> Vec<Candidate> {
    let Ok(entries) = std::fs::read_dir(stored_dir) else {
        return Vec::new();
    };
    let mut out: Vec<Candidate> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("pack-")?.strip_suffix(".zst")?;
            let (pack, sha256) = rest.split_once('.')?;
            let hex_of =
                |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            (hex_of(pack, 40) && hex_of(sha256, 64)).then(|| Candidate {
                pack: pack.to_owned(),
                sha256: sha256.to_owned(),
                path: e.path(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.pack.cmp(&b.pack));
    out
}

/// Removes copies whose pack is no longer in `objects/pack`, leftover temporary copies, any
/// file outside a snapshot's directory (copies of an older layout) and directories left
/// empty; returns how many files it removed.
pub(super) fn prune(git_dir: &Path) -> std::io::Result<u64> {
    let stored = dir(git_dir);
    let pack_dir = git_dir.join("objects").join("pack");
    let mut removed = 0;
    let remove = |path: &Path, removed: &mut u64| -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => *removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(())
    };
    let Ok(entries) = std::fs::read_dir(&stored) else {
        return Ok(0);
    };
    let snapshots = snapshot_dirs(&stored);
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if !snapshots.iter().any(|(_, d)| d == &path) {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
                removed += 1;
            } else {
                remove(&path, &mut removed)?;
            }
        }
    }
    for (_, d) in snapshots {
        let live: Vec<PathBuf> = candidates(&d)
            .into_iter()
            .filter(|c| pack_dir.join(format!("pack-{}.pack", c.pack)).exists())
            .map(|c| c.path)
            .collect();
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if !live.contains(&path) {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                    removed += 1;
                } else {
                    remove(&path, &mut removed)?;
                }
            }
        }
        if live.is_empty() {
            // Empty now (a writer that creates copies again re-creates it).
            let _ = std::fs::remove_dir(&d);
        }
    }
    Ok(removed)
}

/// Whether a v2 index is intact (its SHA-1 trailer) and names the pack `pack` (hex).
fn index_names_pack(idx: &[u8], pack: &str) -> bool {
    let Some(body) = idx.len().checked_sub(20) else {
        return false;
    };
    let Some(at) = body.checked_sub(20) else {
        return false;
    };
    <sha1::Sha1 as sha1::Digest>::digest(&idx[..body]).as_slice() == &idx[body..]
        && hex::encode(&idx[at..body]) == pack
}

/// A mirror pack's stored copy, as a push uploads it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCopy {
    /// The snapshot that wrote the pack.
    pub snapshot: String,
    /// The pack's checksum, hex (`objects/pack/pack-<pack>.pack`).
    pub pack: String,
    /// The copy's bytes (zstd frames of the pack).
    pub bytes: Vec<u8>,
    /// The sha256 of `bytes`, hex (checked when the copy was read).
    pub sha256: String,
    /// The pack's index (version 2), as in `objects/pack`.
    pub idx: Vec<u8>,
    /// Objects in the pack.
    pub objects: u64,
}

impl std::fmt::Debug for StoredCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCopy")
            .field("snapshot", &self.snapshot)
            .field("pack", &self.pack)
            .field("sha256", &self.sha256)
            .field("bytes", &self.bytes.len())
            .field("idx", &self.idx.len())
            .field("objects", &self.objects)
            .finish()
    }
}

/// What a push uploads: whole mirror packs as their stored copies, and one pack built of the
/// objects no copy holds.
pub struct PushPacks<W> {
    /// The copies offered to [`Mirror::build_push_packs`] that hold objects the push needs
    /// (their sha256), in the order offered.
    pub copies: Vec<String>,
    /// The pack of the other objects (see [`Mirror::build_pack_to`]), if any.
    pub built: Option<(W, BuiltPack)>,
}

impl Mirror {
    /// The stored copies of `snapshots` (of every snapshot with copies when empty), read and
    /// checked: the pack and its index still in `objects/pack`, the index intact and naming the
    /// pack, the bytes hashing to the sha256 of the copy's name. A copy that fails is skipped
    /// with a warning (its objects are then packed again).
    pub fn stored_copies(&self, snapshots: &[String]) -> Vec<StoredCopy> {
        let mut out = Vec::new();
        each_stored_copy(&self.git_dir, snapshots, |c| {
            out.push(c);
            true
        });
        out
    }

    /// Removes the stored copies of `snapshots` (once the store has them: a later push to it
    /// needs none of their objects).
    pub fn remove_stored_copies(&self, snapshots: &[String]) -> Result<()> {
        for name in snapshots {
            if super::validate_name("snapshot", name).is_err() {
                continue;
            }
            let d = snapshot_dir(&self.git_dir, name);
            match std::fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(super::MirrorError::Io {
                        context: format!("removing the stored copies in {}", d.display()),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// The objects reachable from `include` but not from `hide` (as
    /// [`Mirror::build_pack_to`]): the `offered` copies (`(sha256, index)` of
    /// [`Mirror::stored_copies`]) that hold any of them, plus one pack streamed into `out` with
    /// the rest. (The push has already started uploading the offered copies: using one that
    /// also holds objects the store has costs duplicates, leaving it out an unreferenced
    /// upload.)
    pub fn build_push_packs<W: std::io::Write>(
        &self,
        include: &[CommitId],
        hide: &[CommitId],
        offered: &[(String, Vec<u8>)],
        out: W,
    ) -> Result<PushPacks<W>> {
        let started = std::time::Instant::now();
        let objects = self.objects_to_pack(include, hide)?;
        let walked = started.elapsed();
        let mut needed: OidSet = objects.iter().map(|(id, _)| key(id)).collect();
        let mut copies = Vec::new();
        for (sha256, idx) in offered {
            let Some(n) = idx_object_count(idx) else {
                continue;
            };
            // A copy holding some object the push needs is used whole (the others are
            // duplicates the store's gc repacks away); one holding none is left out.
            if n == 0 || !idx_ids(idx, n).any(|id| needed.contains(&id)) {
                continue;
            }
            for id in idx_ids(idx, n) {
                needed.remove(&id);
            }
            copies.push(sha256.clone());
        }
        tracing::debug!(
            objects = objects.len(),
            offered = offered.len(),
            copies = copies.len(),
            walk_ms = walked.as_millis() as u64,
            "objects to push chosen"
        );
        let rest: Vec<(Oid, ObjectType)> = if copies.is_empty() {
            objects
        } else {
            objects
                .into_iter()
                .filter(|(id, _)| needed.contains(&key(id)))
                .collect()
        };
        let built = self.write_pack(rest, out)?;
        Ok(PushPacks { copies, built })
    }
}

/// [`Mirror::stored_copies`] of the mirror at `git_dir`, handing each copy to `f` as soon as it
/// is read and checked (a push uploads the first while the next is read) until `f` returns
/// false. Reads files only: no repository handle, no lock.
pub fn each_stored_copy(
    git_dir: &Path,
    snapshots: &[String],
    mut f: impl FnMut(StoredCopy) -> bool,
) {
    let stored = dir(git_dir);
    let dirs: Vec<(String, PathBuf)> = if snapshots.is_empty() {
        snapshot_dirs(&stored)
    } else {
        snapshots
            .iter()
            .filter(|n| super::validate_name("snapshot", n).is_ok())
            .map(|n| (n.clone(), snapshot_dir(git_dir, n)))
            .collect()
    };
    let pack_dir = git_dir.join("objects").join("pack");
    for (snapshot, d) in dirs {
        for c in candidates(&d) {
            if !pack_dir.join(format!("pack-{}.pack", c.pack)).exists() {
                continue;
            }
            let Ok(idx) = std::fs::read(pack_dir.join(format!("pack-{}.idx", c.pack))) else {
                continue;
            };
            let Some(n) = idx_object_count(&idx) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            if !index_names_pack(&idx, &c.pack) {
                tracing::warn!(pack = %c.pack, "the index of a pack with a stored copy fails its checksum; its objects are packed again");
                continue;
            }
            let bytes = match std::fs::read(&c.path) {
                Ok(b) => b,
                // Removed meanwhile (its snapshot was pushed, or gc ran): nothing to say.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(copy = %c.path.display(), error = %e, "a stored pack copy cannot be read; its objects are packed again");
                    continue;
                }
            };
            if hex::encode(Sha256::digest(&bytes)) != c.sha256 {
                tracing::warn!(copy = %c.path.display(), "a stored pack copy does not match the sha256 of its name; its objects are packed again");
                continue;
            }
            let go_on = f(StoredCopy {
                snapshot: snapshot.clone(),
                pack: c.pack,
                bytes,
                sha256: c.sha256,
                idx,
                objects: n as u64,
            });
            if !go_on {
                return;
            }
        }
    }
}
