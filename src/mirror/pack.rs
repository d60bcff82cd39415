//! A streaming packfile writer for the hot path of [`SnapshotWriter`](super::SnapshotWriter).
//!
//! Writing 50,000 loose objects through libgit2 costs ~125 µs each (temp file, rename, odb
//! refresh per object), so new objects of a snapshot are appended, undeltified, to temporary
//! packs in `objects/pack` instead. The sink writes each pack's v2 `.idx` itself (it knows
//! every id, offset and CRC-32 already): handing a pack to libgit2's indexer would re-read,
//! re-inflate and re-hash every object (with its slower, collision-detecting SHA-1) and copy
//! the whole pack once more. A pack that reaches [`SEAL_OBJECTS`] objects (its SHA-1 trailer
//! hashed as it was written) or [`SEAL_BYTES`] is completed (count, trailer, index, sync) by a
//! background thread while writing goes on in a new one; at commit the last
//! pack is completed and all are renamed into place, each pack before its index. Memory holds
//! ~60 bytes per new object. `git verify-pack` and `fsck` accept the result (tested).
//!
//! Whether an object exists is answered by [`KnownObjects`] (the `.idx` files and the loose
//! object names, read once), not by a libgit2 lookup that stats a path per missing object.
//!
//! Objects are zlib-wrapped with *stored* (uncompressed) deflate blocks: no compression cost on
//! the hot path and no extra dependency; [`Mirror::gc`](super::Mirror::gc) re-packs with
//! compression and deltas, and a push copies these entries into the store's pack
//! (`packbuild`), which the store compresses as a whole. Touches only its temp files and the
//! pack directory.

use std::collections::HashSet;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use git2::{ObjectType, Odb, OdbLookupFlags, Oid};
use sha1::{Digest, Sha1};

use super::{GitContext, MirrorError, Result, io_ctx};

/// The git object id of `data` (SHA-1 of `"<kind> <len>\0" + data`). The `sha1` crate uses
/// the CPU's SHA extensions: several times faster than libgit2's collision-detecting SHA-1,
/// which the hot path would otherwise pay once per object.
pub(super) fn object_id(kind: ObjectType, data: &[u8]) -> Result<Oid> {
    let mut h = Sha1::new();
    h.update(format!("{kind} {}\0", data.len()).as_bytes());
    h.update(data);
    Oid::from_bytes(&h.finalize()).ctx(|| format!("hashing a {kind} object"))
}

/// One object of a pack being written, for its index.
pub(super) struct IdxEntry {
    pub(super) oid: Oid,
    pub(super) offset: u64,
    pub(super) crc32: u32,
}

/// Which objects the mirror already holds, answered without a syscall per object.
///
/// libgit2's `exists` stats `objects/xx/yyyy` for every object that is in no pack, which is
/// every object of a first snapshot: ~1.3 µs of path lookup each. This set reads every pack's
/// `.idx` (v2: fan-out table, then sorted ids) into one hash set and lists the loose objects
/// once (a binary search per pack instead cost ~150 comparisons per lookup once a 500k-object
/// snapshot spanned ~45 packs). Anything it cannot read (an index of another version, alternates) makes it
/// fall back to libgit2 for the ids it does not find, so it never claims an object is missing
/// that the odb has.
pub(super) struct KnownObjects {
    /// Ids listed by the packs' indexes.
    packed: super::transfer::OidSet,
    loose: HashSet<Oid>,
    /// Ask libgit2 about ids not found here.
    fallback: bool,
}

impl KnownObjects {
    /// Reads the indexes of `<git dir>/objects/pack` and the names of loose objects.
    pub(super) fn load(git_dir: &Path) -> Result<KnownObjects> {
        let objects = git_dir.join("objects");
        let mut known = KnownObjects {
            packed: Default::default(),
            loose: HashSet::new(),
            fallback: objects.join("info").join("alternates").exists(),
        };
        let read_dir = |dir: &Path| {
            io_ctx(std::fs::read_dir(dir), || {
                format!("listing {}", dir.display())
            })
        };
        for entry in read_dir(&objects)? {
            let entry = io_ctx(entry, || format!("listing {}", objects.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == "pack" {
                for pack_entry in read_dir(&entry.path())? {
                    let pack_entry =
                        io_ctx(pack_entry, || format!("listing {}", entry.path().display()))?;
                    let path = pack_entry.path();
                    let is_idx = path.extension().is_some_and(|e| e == "idx")
                        && path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("pack-"));
                    if !is_idx {
                        continue;
                    }
                    // A pack removed by a concurrent gc between listing and reading is fine:
                    // its objects are in another pack, which libgit2 will find.
                    match std::fs::read(&path) {
                        Ok(bytes) => match super::packread::idx_object_count(&bytes) {
                            Some(n) => {
                                known.packed.reserve(n);
                                known.packed.extend(super::packread::idx_ids(&bytes, n));
                            }
                            None => known.fallback = true,
                        },
                        Err(_) => known.fallback = true,
                    }
                }
            } else if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                for loose in read_dir(&entry.path())? {
                    let loose = io_ctx(loose, || format!("listing {}", entry.path().display()))?;
                    let rest = loose.file_name();
                    match rest
                        .to_str()
                        .and_then(|r| Oid::from_str(&format!("{name}{r}")).ok())
                    {
                        Some(oid) if rest.len() == 38 => {
                            known.loose.insert(oid);
                        }
                        _ => {} // temp files of other writers
                    }
                }
            }
        }
        Ok(known)
    }

    /// Whether the mirror holds `oid` (consulting `odb` only in fallback mode).
    pub(super) fn contains(&self, odb: &Odb<'_>, oid: Oid) -> bool {
        self.loose.contains(&oid)
            || self.packed.contains(&super::transfer::key(&oid))
            || (self.fallback && odb.exists_ext(oid, OdbLookupFlags::NO_REFRESH))
    }
}

/// A pack is sealed (completed in the background) once it holds this many bytes, so that
/// finishing a large snapshot only has to complete its last pack.
pub(super) const SEAL_BYTES: u64 = 16 << 20;

/// A pack is also sealed once it holds this many objects. Its header announces this count
/// from the start, so its SHA-1 trailer is computed as it is written; only a pack sealed
/// with another count (the last one, or one of large objects sealed at [`SEAL_BYTES`]) is
/// read back to be hashed. At 500k objects the read-back cost ~5% of a snapshot's CPU.
pub(super) const SEAL_OBJECTS: u32 = 10_000;

pub(super) struct PackSink {
    dir: std::path::PathBuf,
    current: Option<OpenPack>,
    known: KnownObjects,
    seen: super::transfer::OidSet,
    seal_bytes: u64,
    seal_objects: u32,
    /// Packs being completed by background threads.
    sealing: Vec<std::thread::JoinHandle<Result<SealedPack>>>,
    /// Where each pack's stored copy goes (`stored`); `None` unless asked for (a push follows)
    /// or when that directory cannot be made (the snapshot goes on; a push then builds).
    stored: Option<std::path::PathBuf>,
}

/// The pack being appended to.
struct OpenPack {
    file: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
    entries: Vec<IdxEntry>,
    offset: u64,
    /// The object count its header announces.
    announced: u32,
}

/// Hashes (SHA-1) what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha1,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A complete pack and its index, both synced, still under temporary names.
struct SealedPack {
    pack: tempfile::NamedTempFile,
    idx: tempfile::NamedTempFile,
    sum: [u8; 20],
    /// Its stored copy, when one could be made.
    copy: Option<super::stored::StagedCopy>,
}

impl PackSink {
    /// A sink whose temp files live in `<git dir>/objects/pack` (removed when dropped, renamed
    /// into place by [`commit`](Self::commit)).
    pub(super) fn new(git_dir: &Path) -> Result<PackSink> {
        let dir = git_dir.join("objects").join("pack");
        io_ctx(std::fs::create_dir_all(&dir), || {
            format!("creating {}", dir.display())
        })?;
        Ok(PackSink {
            dir,
            stored: None,
            current: None,
            known: KnownObjects::load(git_dir)?,
            seen: Default::default(),
            seal_bytes: SEAL_BYTES,
            seal_objects: SEAL_OBJECTS,
            sealing: Vec::new(),
        })
    }

    /// Keeps a stored copy of each pack completed from now on (`stored`, in the directory of
    /// `snapshot`), for a push that follows. Without the directory the sink goes on without
    /// copies (a push then builds).
    pub(super) fn keep_stored_copies(&mut self, git_dir: &Path, snapshot: &str) {
        let stored = super::stored::snapshot_dir(git_dir, snapshot);
        self.stored = match std::fs::create_dir_all(&stored) {
            Ok(()) => Some(stored),
            Err(e) => {
                tracing::warn!(dir = %stored.display(), error = %e, "cannot keep stored copies of new packs; a push will build them");
                None
            }
        };
    }

    /// Seals packs at `bytes` instead of [`SEAL_BYTES`] (tests use tiny packs).
    #[cfg(test)]
    fn with_seal_bytes(mut self, bytes: u64) -> PackSink {
        self.seal_bytes = bytes;
        self
    }

    /// Seals packs at `objects` instead of [`SEAL_OBJECTS`].
    #[cfg(test)]
    fn with_seal_objects(mut self, objects: u32) -> PackSink {
        self.seal_objects = objects;
        self
    }

    fn open_pack(&self) -> Result<OpenPack> {
        let file = io_ctx(
            tempfile::Builder::new()
                .prefix("tmp_pack_")
                .tempfile_in(&self.dir),
            || format!("creating a temporary pack file in {}", self.dir.display()),
        )?;
        let mut file = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha1::new(),
        };
        // The header, announcing a full pack (`seal` corrects it for any other count).
        let announced = self.seal_objects;
        let mut header = *b"PACK\0\0\0\x02\0\0\0\0";
        header[8..].copy_from_slice(&announced.to_be_bytes());
        io_ctx(file.write_all(&header), || {
            "writing the temporary pack file".into()
        })?;
        Ok(OpenPack {
            file,
            entries: Vec::new(),
            offset: 12,
            announced,
        })
    }

    /// Appends the object unless the odb or this sink already has it.
    /// Returns the id and whether it was new.
    pub(super) fn write(
        &mut self,
        odb: &Odb<'_>,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<(Oid, bool)> {
        let oid = object_id(kind, data)?;
        if self.seen.contains(&super::transfer::key(&oid)) || self.known.contains(odb, oid) {
            return Ok((oid, false));
        }
        let pack = match &mut self.current {
            Some(p) => p,
            None => self.current.insert(self.open_pack()?),
        };
        pack.append(oid, kind, data)?;
        self.seen.insert(super::transfer::key(&oid));
        if (pack.offset >= self.seal_bytes || pack.entries.len() >= self.seal_objects as usize)
            && let Some(full) = self.current.take()
        {
            let stored = self.stored.clone();
            let handle = std::thread::Builder::new()
                .name("k8s-snap-pack".into())
                .spawn(move || full.seal(stored.as_deref()))
                .map_err(|e| MirrorError::Io {
                    context: "starting a thread to complete a pack".into(),
                    source: e,
                })?;
            self.sealing.push(handle);
        }
        Ok((oid, true))
    }

    /// Completes every pack (object count, SHA-1 trailer, synced v2 index) and renames them
    /// into `objects/pack`, each pack before its index, so readers never see a partial pack.
    /// A no-op when nothing was written. The caller refreshes the odb.
    pub(super) fn commit(&mut self) -> Result<()> {
        let mut sealed = Vec::new();
        if let Some(last) = self.current.take() {
            sealed.push(last.seal(self.stored.as_deref()));
        }
        for handle in self.sealing.drain(..) {
            sealed.push(handle.join().unwrap_or_else(|_| {
                Err(MirrorError::Io {
                    context: "completing a pack".into(),
                    source: std::io::Error::other("the pack thread panicked"),
                })
            }));
        }
        for pack in sealed {
            let pack = pack?;
            let base = self.dir.join(format!("pack-{}", hex::encode(pack.sum)));
            let install = |file: tempfile::NamedTempFile, ext: &str| {
                let path = base.with_extension(ext);
                file.persist(&path).map_err(|e| MirrorError::Io {
                    context: format!("installing {}", path.display()),
                    source: e.error,
                })
            };
            install(pack.pack, "pack")?;
            install(pack.idx, "idx")?;
            if let (Some(dir), Some(copy)) = (&self.stored, pack.copy)
                && let Err(e) = super::stored::install(dir, copy, &pack.sum)
            {
                tracing::warn!(dir = %dir.display(), error = %e, "a stored copy of a new pack was not kept; a push will build it");
            }
        }
        Ok(())
    }
}

impl Drop for PackSink {
    fn drop(&mut self) {
        // Let background threads finish (their temp files are removed with them).
        for handle in self.sealing.drain(..) {
            let _ = handle.join();
        }
    }
}

impl OpenPack {
    /// Appends one undeltified object: header, zlib stream of stored blocks, Adler-32.
    /// Written straight into the buffered file (no per-object buffer: a 50k-object snapshot
    /// would allocate, fault in and free 70 MiB of them), CRC-32 computed on the way.
    fn append(&mut self, oid: Oid, kind: ObjectType, data: &[u8]) -> Result<()> {
        let (len, crc32) = io_ctx(
            super::packread::write_stored_entry(&mut self.file, kind, data),
            || "writing the temporary pack file".into(),
        )?;
        self.entries.push(IdxEntry {
            oid,
            offset: self.offset,
            crc32,
        });
        self.offset += len;
        Ok(())
    }

    /// Completes the pack: object count, SHA-1 trailer (hashed while writing when the header
    /// announced the right count, else re-reading the file after correcting it), sync, and its
    /// v2 index in a synced temp file; and its stored copy in `stored` (best effort).
    fn seal(self, stored: Option<&Path>) -> Result<SealedPack> {
        let OpenPack {
            file,
            mut entries,
            announced,
            ..
        } = self;
        let count = u32::try_from(entries.len()).map_err(|_| MirrorError::Io {
            context: "writing a pack".into(),
            source: std::io::Error::other("more than 2^32 objects in one pack"),
        })?;
        let io = |what: &'static str| {
            move |e: std::io::Error| MirrorError::Io {
                context: format!("{what} a new pack"),
                source: e,
            }
        };
        let HashingWriter { inner, hasher } = file;
        let mut pack = inner.into_inner().map_err(|e| MirrorError::Io {
            context: "flushing a new pack".into(),
            source: e.into_error(),
        })?;
        let f = pack.as_file_mut();
        let sum: [u8; 20] = if count == announced {
            hasher.finalize().into()
        } else {
            f.seek(SeekFrom::Start(8)).map_err(io("writing"))?;
            f.write_all(&count.to_be_bytes()).map_err(io("writing"))?;
            f.seek(SeekFrom::Start(0)).map_err(io("rereading"))?;
            let mut hasher = Sha1::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(io("rereading"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hasher.finalize().into()
        };
        f.seek(SeekFrom::End(0)).map_err(io("writing"))?;
        f.write_all(&sum).map_err(io("writing"))?;
        f.sync_data().map_err(io("syncing"))?;

        let index = pack_index(&mut entries, &sum);
        let dir = pack
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut idx = tempfile::Builder::new()
            .prefix("tmp_idx_")
            .tempfile_in(&dir)
            .map_err(io("indexing"))?;
        idx.write_all(&index).map_err(io("indexing"))?;
        idx.as_file().sync_data().map_err(io("syncing"))?;
        let copy = stored.and_then(|dir| {
            super::stored::stage(dir, pack.as_file_mut())
                .inspect_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "no stored copy of a new pack; a push will build it"))
                .ok()
        });
        Ok(SealedPack {
            pack,
            idx,
            sum,
            copy,
        })
    }
}

/// The pack index (version 2) of `entries`: fan-out table, sorted ids, CRC-32s, offsets
/// (large ones in the 64-bit table), the pack's checksum and the index's own.
pub(super) fn pack_index(entries: &mut [IdxEntry], pack_sum: &[u8; 20]) -> Vec<u8> {
    entries.sort_unstable_by(|a, b| a.oid.as_bytes().cmp(b.oid.as_bytes()));
    let n = entries.len();
    let mut out = Vec::with_capacity(8 + 1024 + n * 28 + 40);
    out.extend_from_slice(&[0xff, b't', b'O', b'c', 0, 0, 0, 2]);
    let mut fanout = [0u32; 256];
    for e in entries.iter() {
        fanout[usize::from(e.oid.as_bytes()[0])] += 1;
    }
    let mut total = 0u32;
    for f in fanout {
        total += f;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for e in entries.iter() {
        out.extend_from_slice(e.oid.as_bytes());
    }
    for e in entries.iter() {
        out.extend_from_slice(&e.crc32.to_be_bytes());
    }
    let mut large = Vec::new();
    for e in entries.iter() {
        if e.offset < 0x8000_0000 {
            out.extend_from_slice(&(e.offset as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&(0x8000_0000u32 | large.len() as u32).to_be_bytes());
            large.push(e.offset);
        }
    }
    for o in large {
        out.extend_from_slice(&o.to_be_bytes());
    }
    out.extend_from_slice(pack_sum);
    let idx_sum: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&idx_sum);
    out
}

/// The zlib checksum of `data` (SIMD: the scalar loop cost ~0.4 ns per snapshot byte).
pub(super) fn adler32(data: &[u8]) -> u32 {
    let mut a = simd_adler32::Adler32::new();
    a.write(data);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_match_libgit2() {
        for (kind, data) in [
            (ObjectType::Blob, &b""[..]),
            (ObjectType::Blob, &b"apiVersion: v1\nkind: ConfigMap\n"[..]),
            (ObjectType::Tree, &[7u8; 300][..]),
        ] {
            assert_eq!(
                object_id(kind, data).unwrap(),
                Oid::hash_object(kind, data).unwrap()
            );
        }
    }

    #[test]
    fn known_objects_reads_packs_and_loose_objects() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        let loose = odb.write(ObjectType::Blob, b"loose\n").unwrap();
        let mut sink = PackSink::new(dir.path()).unwrap();
        let mut packed = Vec::new();
        for i in 0..300 {
            let data = format!("object {i}\n");
            let (oid, new) = sink.write(&odb, ObjectType::Blob, data.as_bytes()).unwrap();
            assert!(new);
            packed.push(oid);
        }
        // The loose object is known to the sink already: not written again.
        assert_eq!(
            sink.write(&odb, ObjectType::Blob, b"loose\n").unwrap(),
            (loose, false)
        );
        sink.commit().unwrap();
        odb.refresh().unwrap();

        let known = KnownObjects::load(dir.path()).unwrap();
        assert!(!known.fallback);
        assert!(known.contains(&odb, loose));
        for oid in &packed {
            assert!(known.contains(&odb, *oid), "{oid}");
            assert!(odb.exists(*oid));
        }
        for i in 300..400 {
            let absent = object_id(ObjectType::Blob, format!("object {i}\n").as_bytes()).unwrap();
            assert!(!known.contains(&odb, absent), "{absent}");
        }
    }

    #[test]
    fn full_packs_are_sealed_in_the_background_and_all_installed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        let mut sink = PackSink::new(dir.path()).unwrap().with_seal_bytes(4096);
        let mut written = Vec::new();
        for i in 0..200 {
            let data = format!("object {i}\n{}", "x".repeat(i * 7));
            let (oid, new) = sink.write(&odb, ObjectType::Blob, data.as_bytes()).unwrap();
            assert!(new);
            written.push((oid, data));
        }
        assert!(!sink.sealing.is_empty());
        sink.commit().unwrap();
        drop(sink);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let packs = names.iter().filter(|n| n.ends_with(".pack")).count();
        let idxs = names.iter().filter(|n| n.ends_with(".idx")).count();
        assert!(packs > 5, "{names:?}");
        assert_eq!(packs, idxs, "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("tmp_")), "{names:?}");
        odb.refresh().unwrap();
        for (oid, data) in &written {
            let obj = odb.read(*oid).unwrap();
            assert_eq!(obj.data(), data.as_bytes());
        }
    }

    #[test]
    fn packs_hashed_while_written_and_read_back_are_both_valid() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        // 10 full packs of 25 objects (trailer hashed while writing), one of 7 (read back).
        let mut sink = PackSink::new(dir.path()).unwrap().with_seal_objects(25);
        for i in 0..257 {
            sink.write(&odb, ObjectType::Blob, format!("object {i}\n").as_bytes())
                .unwrap();
        }
        sink.commit().unwrap();
        drop(sink);
        let idxs: Vec<_> = std::fs::read_dir(dir.path().join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .collect();
        assert_eq!(idxs.len(), 11);
        let mut objects = 0;
        for idx in idxs {
            let out = std::process::Command::new("git")
                .args(["verify-pack", "-v"])
                .arg(&idx)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            objects += text.lines().filter(|l| l.contains(" blob ")).count();
        }
        assert_eq!(objects, 257);
    }

    #[test]
    fn a_dropped_sink_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        let mut sink = PackSink::new(dir.path()).unwrap().with_seal_bytes(1024);
        for i in 0..100 {
            sink.write(&odb, ObjectType::Blob, format!("{i:0>200}").as_bytes())
                .unwrap();
        }
        drop(sink);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("objects/pack"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn adler32_known_values() {
        assert_eq!(super::adler32(b""), 1);
        assert_eq!(super::adler32(b"Wikipedia"), 0x11E6_0398);
        let big = vec![0xffu8; 100_000];
        // Reference: naive per-byte modulo.
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &big {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(super::adler32(&big), ((b << 16) | a) as u32);
    }
}
