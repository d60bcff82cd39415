//! Stored copies: each pack a snapshot writes is also kept as the store keeps packs (zstd
//! frames, `packcodec`), in `<git dir>/k8s-snap/stored/pack-<pack checksum>.<sha256>.zst`, so
//! that a push uploads it as it is instead of reading, checking and compressing the same
//! objects again (docs/decisions.md, "Pushes upload the copies a snapshot made").
//!
//! A copy is made by the thread that completes its pack (on the snapshot's time, mostly while
//! the snapshot waits for the server) from the complete, synced pack file. A push uses a copy
//! only when its pack and index are still in `objects/pack`, every object of that pack is one
//! the push needs, and the copy's bytes still hash to the sha256 in its name; the objects of
//! any other pack go into a pack built as before. So a copy can make a push faster, never
//! different in what it stores: a missing, stale or damaged copy costs the old path's time.
//! [`Mirror::gc`](super::Mirror::gc) removes copies whose pack it repacked.
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

/// Removes copies whose pack is no longer in `objects/pack` and leftover temporary copies;
/// returns how many files it removed.
pub(super) fn prune(git_dir: &Path) -> std::io::Result<u64> {
    let stored = dir(git_dir);
    let pack_dir = git_dir.join("objects").join("pack");
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(&stored) else {
        return Ok(0);
    };
    let live: Vec<PathBuf> = candidates(&stored)
        .into_iter()
        .filter(|c| pack_dir.join(format!("pack-{}.pack", c.pack)).exists())
        .map(|c| c.path)
        .collect();
    for entry in entries {
        let path = entry?.path();
        if !live.contains(&path) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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
    /// Stored copies of mirror packs whose every object the push needs.
    pub copies: Vec<StoredCopy>,
    /// The pack of the other objects (see [`Mirror::build_pack_to`]), if any.
    pub built: Option<(W, BuiltPack)>,
}

impl Mirror {
    /// The objects reachable from `include` but not from `hide` (as
    /// [`Mirror::build_pack_to`]), as the stored copies of the mirror packs that hold only such
    /// objects, plus one pack streamed into `out` with the rest.
    pub fn build_push_packs<W: std::io::Write>(
        &self,
        include: &[CommitId],
        hide: &[CommitId],
        out: W,
    ) -> Result<PushPacks<W>> {
        let started = std::time::Instant::now();
        let objects = self.objects_to_pack(include, hide)?;
        let walked = started.elapsed();
        let mut needed: OidSet = objects.iter().map(|(id, _)| key(id)).collect();
        let copies = self.usable_copies(&mut needed);
        tracing::debug!(
            objects = objects.len(),
            copies = copies.len(),
            walk_ms = walked.as_millis() as u64,
            copies_ms = (started.elapsed() - walked).as_millis() as u64,
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

    /// Reads the copies whose every object is in `needed` (removing those objects from it).
    /// A copy that cannot be read or does not match its name is skipped with a warning.
    fn usable_copies(&self, needed: &mut OidSet) -> Vec<StoredCopy> {
        let pack_dir = self.git_dir.join("objects").join("pack");
        let mut out = Vec::new();
        for c in candidates(&dir(&self.git_dir)) {
            if !pack_dir.join(format!("pack-{}.pack", c.pack)).exists() {
                continue;
            }
            let Ok(idx) = std::fs::read(pack_dir.join(format!("pack-{}.idx", c.pack))) else {
                continue;
            };
            let Some(n) = idx_object_count(&idx) else {
                continue;
            };
            // Most copies hold objects the push does not need (older snapshots): the first id
            // not needed ends the check, before the index's checksum is computed.
            if n == 0 || !idx_ids(&idx, n).all(|id| needed.contains(&id)) {
                continue;
            }
            if !index_names_pack(&idx, &c.pack) {
                tracing::warn!(pack = %c.pack, "the index of a pack with a stored copy fails its checksum; its objects are packed again");
                continue;
            }
            let bytes = match std::fs::read(&c.path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(copy = %c.path.display(), error = %e, "a stored pack copy cannot be read; its objects are packed again");
                    continue;
                }
            };
            if hex::encode(Sha256::digest(&bytes)) != c.sha256 {
                tracing::warn!(copy = %c.path.display(), "a stored pack copy does not match the sha256 of its name; its objects are packed again");
                continue;
            }
            for id in idx_ids(&idx, n) {
                needed.remove(&id);
            }
            out.push(StoredCopy {
                bytes,
                sha256: c.sha256,
                idx,
                objects: n as u64,
            });
        }
        out
    }
}
