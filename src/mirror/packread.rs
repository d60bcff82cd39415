//! Whole objects read straight out of the mirror's pack files, without libgit2.
//!
//! libgit2 reads an object of a deltified pack in ~48 µs (delta chains, a small base cache),
//! which made checking the 50k object files of a pulled snapshot take 2.5 s. The packs this
//! project writes (snapshot packs, store packs) hold *undeltified* objects in stored deflate
//! blocks, so an object is a slice of its pack: [`PackFiles`] finds it through the packs'
//! `.idx` files and reads it with one positioned read. Compressed (non-delta) entries are
//! inflated; delta entries are reported as [`Entry::Delta`] for the caller to read through
//! libgit2. Every caller that trusts content hashes it ([`Entry::verified`]).
//!
//! Also owns the encoding of one undeltified pack entry ([`write_stored_entry`]), shared by the
//! snapshot's pack sink and the store's pack builder.
//!
//! Owns: reading `.idx`/`.pack` files of `objects/pack`. Must not touch: refs, the odb's
//! caches, anything outside the pack directory.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};
use sha1::{Digest, Sha1};

use super::{MirrorError, Result, io_ctx};

/// Largest payload of one stored deflate block.
pub(super) const STORED_BLOCK: usize = 65_535;

const IDX_V2_MAGIC: [u8; 8] = [0xff, b't', b'O', b'c', 0, 0, 0, 2];
const IDX_FANOUT_END: usize = 8 + 256 * 4;

/// Object id -> (pack, position of the id in that pack's index).
type IdTable = std::collections::HashMap<
    [u8; 20],
    (u32, u32),
    std::hash::BuildHasherDefault<super::transfer::OidHasher>,
>;

/// The ids listed by a v2 index of `n` objects (as checked by [`idx_object_count`]), in order.
pub(super) fn idx_ids(idx: &[u8], n: usize) -> impl Iterator<Item = [u8; 20]> + '_ {
    idx.get(IDX_FANOUT_END..IDX_FANOUT_END + n * 20)
        .unwrap_or_default()
        .chunks_exact(20)
        .map(|c| {
            let mut id = [0u8; 20];
            id.copy_from_slice(c);
            id
        })
}

/// One pack of the mirror: its index in memory, its entries' offsets sorted (to know where
/// each entry ends), and the pack file opened for positioned reads.
struct OnePack {
    path: PathBuf,
    idx: Vec<u8>,
    count: usize,
    /// Every entry's offset, sorted, then the offset of the trailer.
    bounds: Vec<u64>,
    file: File,
}

/// The packs of a mirror, for lookups by object id and positioned reads. Packs with an index
/// of another version than 2 are left out (their objects are simply not found here).
///
/// Ids are looked up in one table for all packs (pack and position in its index): a snapshot
/// of 500k objects spans ~45 packs, and a binary search in each of them in turn cost
/// ~150 comparisons per lookup.
pub(super) struct PackFiles {
    packs: Vec<OnePack>,
    by_id: IdTable,
}

/// Where one object's entry is (ordered by pack, then offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Location {
    pack: usize,
    /// Offset of the entry in its pack.
    pub(super) offset: u64,
    /// Length of the whole entry (header and zlib stream).
    pub(super) len: u64,
    /// The CRC-32 of the raw entry, as its index records it.
    pub(super) crc32: u32,
}

/// An entry read from a pack.
#[derive(Debug)]
pub(super) enum Entry<'a> {
    /// A whole object: its kind and content (borrowed from the read buffer when the entry is
    /// stored uncompressed).
    Whole {
        /// Commit, tree, blob or tag.
        kind: ObjectType,
        /// The object's content.
        data: Cow<'a, [u8]>,
    },
    /// A delta against another object: read it through libgit2.
    Delta,
}

impl Entry<'_> {
    /// Whether this is a whole object of `kind` whose content hashes to `id`.
    pub(super) fn verified(&self, kind: ObjectType, id: Oid) -> bool {
        match self {
            Entry::Whole { kind: k, data } => {
                *k == kind && super::pack::object_id(kind, data).is_ok_and(|o| o == id)
            }
            Entry::Delta => false,
        }
    }
}

impl PackFiles {
    /// Opens every `pack-*.idx` of `<git dir>/objects/pack` with its pack. A pack removed by a
    /// concurrent gc between listing and opening is skipped (its objects are elsewhere).
    pub(super) fn open(git_dir: &Path) -> Result<PackFiles> {
        let dir = git_dir.join("objects").join("pack");
        let mut packs = Vec::new();
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PackFiles {
                    packs,
                    by_id: IdTable::default(),
                });
            }
            Err(e) => {
                return Err(MirrorError::Io {
                    context: format!("listing {}", dir.display()),
                    source: e,
                });
            }
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in listing {
            let entry = io_ctx(entry, || format!("listing {}", dir.display()))?;
            let path = entry.path();
            let is_idx = path.extension().is_some_and(|e| e == "idx")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pack-"));
            if is_idx {
                paths.push(path);
            }
        }
        paths.sort();
        for idx_path in paths {
            let pack_path = idx_path.with_extension("pack");
            let (Ok(idx), Ok(file)) = (std::fs::read(&idx_path), File::open(&pack_path)) else {
                continue;
            };
            let Some(count) = idx_object_count(&idx) else {
                continue;
            };
            let pack_len = io_ctx(file.metadata(), || {
                format!("reading the size of {}", pack_path.display())
            })?
            .len();
            if pack_len < 32 {
                continue;
            }
            let mut bounds: Vec<u64> = (0..count).map(|i| idx_offset(&idx, count, i)).collect();
            bounds.sort_unstable();
            bounds.push(pack_len - 20);
            packs.push(OnePack {
                path: pack_path,
                idx,
                count,
                bounds,
                file,
            });
        }
        let mut by_id = IdTable::default();
        by_id.reserve(packs.iter().map(|p| p.count).sum());
        for (n, p) in packs.iter().enumerate() {
            let Ok(pack) = u32::try_from(n) else { break };
            for (i, id) in idx_ids(&p.idx, p.count).enumerate() {
                let Ok(i) = u32::try_from(i) else { break };
                by_id.entry(id).or_insert((pack, i));
            }
        }
        Ok(PackFiles { packs, by_id })
    }

    /// Where the entry of `id` is, if some pack's index lists it.
    pub(super) fn locate(&self, id: Oid) -> Option<Location> {
        let (n, i) = *self.by_id.get(&super::transfer::key(&id))?;
        let (n, i) = (n as usize, i as usize);
        let p = self.packs.get(n)?;
        let offset = idx_offset(&p.idx, p.count, i);
        let at = p.bounds.partition_point(|&b| b <= offset);
        let end = p.bounds.get(at).copied()?;
        if end <= offset {
            return None;
        }
        Some(Location {
            pack: n,
            offset,
            len: end - offset,
            crc32: idx_crc32(&p.idx, p.count, i),
        })
    }

    /// Reads the raw bytes of an entry (header and zlib stream) into `buf`.
    pub(super) fn read_raw(&self, at: Location, buf: &mut Vec<u8>) -> Result<()> {
        let p = &self.packs[at.pack];
        let len = usize::try_from(at.len).map_err(|_| MirrorError::Io {
            context: format!("reading {}", p.path.display()),
            source: std::io::Error::other("an entry larger than memory"),
        })?;
        buf.clear();
        buf.resize(len, 0);
        io_ctx(p.file.read_exact_at(buf, at.offset), || {
            format!("reading {} at offset {}", p.path.display(), at.offset)
        })
    }
}

/// Bytes read at once by a [`WindowReader`].
const WINDOW: u64 = 4 << 20;

/// Reads raw entries visited in offset order through a window of consecutive pack bytes: one
/// positioned read per 4 MiB instead of one per entry (~1.5 µs a system call here).
pub(super) struct WindowReader<'f> {
    files: &'f PackFiles,
    pack: usize,
    start: u64,
    buf: Vec<u8>,
    /// Bytes a read takes at most (more for an entry longer than that).
    window: u64,
}

impl<'f> WindowReader<'f> {
    /// A reader with an empty window of [`WINDOW`] bytes.
    pub(super) fn new(files: &'f PackFiles) -> WindowReader<'f> {
        WindowReader::with_window(files, WINDOW)
    }

    /// A reader whose reads take at most `window` bytes (a caller that visits a few entries
    /// lying together reads just those).
    pub(super) fn with_window(files: &'f PackFiles, window: u64) -> WindowReader<'f> {
        WindowReader {
            files,
            pack: usize::MAX,
            start: 0,
            buf: Vec::new(),
            window,
        }
    }

    /// The raw bytes of the entry at `at` (header and zlib stream).
    pub(super) fn entry(&mut self, at: Location) -> Result<&[u8]> {
        let end = at.offset.saturating_add(at.len);
        let inside = self.pack == at.pack
            && at.offset >= self.start
            && end <= self.start + self.buf.len() as u64;
        if !inside {
            let p = &self.files.packs[at.pack];
            let data_end = p.bounds.last().copied().unwrap_or(end).max(end);
            let len = (data_end - at.offset).min(self.window).max(at.len);
            let len = usize::try_from(len).map_err(|_| MirrorError::Io {
                context: format!("reading {}", p.path.display()),
                source: std::io::Error::other("an entry larger than memory"),
            })?;
            self.buf.clear();
            self.buf.resize(len, 0);
            io_ctx(p.file.read_exact_at(&mut self.buf, at.offset), || {
                format!("reading {} at offset {}", p.path.display(), at.offset)
            })?;
            self.pack = at.pack;
            self.start = at.offset;
        }
        let from = usize::try_from(at.offset - self.start).unwrap_or(usize::MAX);
        let to = from.saturating_add(usize::try_from(at.len).unwrap_or(usize::MAX));
        self.buf.get(from..to).ok_or_else(|| MirrorError::Io {
            context: "reading a pack entry".into(),
            source: std::io::Error::other("an entry outside its window"),
        })
    }
}

/// The object kind of a raw pack entry from its header alone (`None`: a delta), or why the
/// header is invalid.
pub(super) fn entry_kind(raw: &[u8]) -> std::result::Result<Option<ObjectType>, String> {
    let (type_code, _, _) = entry_header(raw)?;
    kind_of(type_code)
}

/// The kind of a whole object's entry type code; `None` for a delta.
pub(super) fn kind_of(type_code: u8) -> std::result::Result<Option<ObjectType>, String> {
    Ok(Some(match type_code {
        1 => ObjectType::Commit,
        2 => ObjectType::Tree,
        3 => ObjectType::Blob,
        4 => ObjectType::Tag,
        6 | 7 => return Ok(None),
        t => return Err(format!("an entry of unknown type {t}")),
    }))
}

/// An entry header's type code, the object size it gives, and the header's length.
pub(super) fn entry_header(raw: &[u8]) -> std::result::Result<(u8, u64, usize), String> {
    let mut i = 0usize;
    let first = *raw.first().ok_or("an empty entry")?;
    let type_code = (first >> 4) & 7;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4u32;
    let mut byte = first;
    while byte & 0x80 != 0 {
        i += 1;
        byte = *raw.get(i).ok_or("a truncated entry header")?;
        if shift > 57 {
            return Err("an entry size that overflows".into());
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    Ok((type_code, size, i + 1))
}

/// Parses one raw pack entry (as read by [`PackFiles::read_raw`]): a whole object, inflated
/// only when its deflate blocks are compressed, or [`Entry::Delta`].
pub(super) fn parse_entry(raw: &[u8]) -> std::result::Result<Entry<'_>, String> {
    let (type_code, size, i) = entry_header(raw)?;
    let Some(kind) = kind_of(type_code)? else {
        return Ok(Entry::Delta);
    };
    let size = usize::try_from(size).map_err(|_| "an entry larger than memory")?;
    let stream = &raw[i..];
    if let Some(data) = stored_blocks(stream, size) {
        return Ok(Entry::Whole { kind, data });
    }
    let mut out = Vec::with_capacity(size);
    let mut z = flate2::Decompress::new(true);
    z.decompress_vec(stream, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("a corrupt zlib stream: {e}"))?;
    if out.len() != size {
        return Err(format!(
            "an entry of {} bytes where its header says {size}",
            out.len()
        ));
    }
    Ok(Entry::Whole {
        kind,
        data: Cow::Owned(out),
    })
}

/// The content of a zlib stream made only of stored deflate blocks holding `size` bytes
/// (borrowed when it is one block), or `None` if the stream is anything else.
pub(super) fn stored_blocks(stream: &[u8], size: usize) -> Option<Cow<'_, [u8]>> {
    if stream.len() < 2 || stream[0] & 0x0f != 8 || stream[1] & 0x20 != 0 {
        return None;
    }
    if (u16::from(stream[0]) << 8 | u16::from(stream[1])) % 31 != 0 {
        return None;
    }
    let mut at = 2usize;
    let mut parts: Vec<&[u8]> = Vec::new();
    loop {
        let header = *stream.get(at)?;
        // BFINAL in bit 0, BTYPE 00 (stored) in bits 1-2; the rest of the byte is padding.
        if header & 0b110 != 0 {
            return None;
        }
        let len = u16::from_le_bytes([*stream.get(at + 1)?, *stream.get(at + 2)?]);
        let nlen = u16::from_le_bytes([*stream.get(at + 3)?, *stream.get(at + 4)?]);
        if len != !nlen {
            return None;
        }
        let start = at + 5;
        let end = start + usize::from(len);
        parts.push(stream.get(start..end)?);
        at = end;
        if header & 1 == 1 {
            break;
        }
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total != size {
        return None;
    }
    let adler = stream.get(at..at + 4)?;
    let data: Cow<'_, [u8]> = if parts.len() == 1 {
        Cow::Borrowed(parts[0])
    } else {
        Cow::Owned(parts.concat())
    };
    (adler == super::pack::adler32(&data).to_be_bytes()).then_some(data)
}

/// Writes one undeltified pack entry (header, zlib stream of stored blocks, Adler-32) of
/// `data` to `out`; returns its length and CRC-32 (for the index).
pub(super) fn write_stored_entry<W: Write>(
    out: &mut W,
    kind: ObjectType,
    data: &[u8],
) -> std::io::Result<(u64, u32)> {
    let type_code: u8 = match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        _ => 4,
    };
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut put = |bytes: &[u8], out: &mut W| {
        crc.update(bytes);
        len += bytes.len() as u64;
        out.write_all(bytes)
    };
    // Entry header: type and size, little-endian base-128.
    let mut header = [0u8; 10];
    let mut n = 0;
    let mut size = data.len();
    let mut byte = (type_code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        header[n] = byte | 0x80;
        n += 1;
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    header[n] = byte;
    n += 1;
    put(&header[..n], out)?;
    put(&[0x78, 0x01], out)?;
    let mut chunks = data.chunks(STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        put(&[0x01, 0x00, 0x00, 0xff, 0xff], out)?;
    }
    while let Some(chunk) = chunks.next() {
        let block_len = chunk.len() as u16;
        let mut block_header = [0u8; 5];
        block_header[0] = u8::from(chunks.peek().is_none());
        block_header[1..3].copy_from_slice(&block_len.to_le_bytes());
        block_header[3..5].copy_from_slice(&(!block_len).to_le_bytes());
        put(&block_header, out)?;
        put(chunk, out)?;
    }
    put(&super::pack::adler32(data).to_be_bytes(), out)?;
    Ok((len, crc.finalize()))
}

/// A pack written as a stream: header first (the object count must be known), then entries,
/// then the SHA-1 trailer; remembers each entry for the `.idx`.
pub(super) struct PackStream<W: Write> {
    out: W,
    sum: Sha1,
    offset: u64,
    entries: Vec<super::pack::IdxEntry>,
}

impl<W: Write> PackStream<W> {
    /// Starts a pack of `count` objects.
    pub(super) fn new(mut out: W, count: u32) -> std::io::Result<PackStream<W>> {
        let mut header = [0u8; 12];
        header[..8].copy_from_slice(b"PACK\0\0\0\x02");
        header[8..].copy_from_slice(&count.to_be_bytes());
        out.write_all(&header)?;
        let mut sum = Sha1::new();
        sum.update(header);
        Ok(PackStream {
            out,
            sum,
            offset: 12,
            entries: Vec::with_capacity(count as usize),
        })
    }

    /// Appends an entry copied verbatim from another pack, whose CRC-32 is `crc32`.
    pub(super) fn copy_entry(&mut self, id: Oid, raw: &[u8], crc32: u32) -> std::io::Result<()> {
        self.out.write_all(raw)?;
        self.sum.update(raw);
        self.entries.push(super::pack::IdxEntry {
            oid: id,
            offset: self.offset,
            crc32,
        });
        self.offset += raw.len() as u64;
        Ok(())
    }

    /// Appends a whole object as a stored entry.
    pub(super) fn write_object(
        &mut self,
        id: Oid,
        kind: ObjectType,
        data: &[u8],
    ) -> std::io::Result<()> {
        let mut tee = Tee {
            out: &mut self.out,
            sum: &mut self.sum,
        };
        let (len, crc32) = write_stored_entry(&mut tee, kind, data)?;
        self.entries.push(super::pack::IdxEntry {
            oid: id,
            offset: self.offset,
            crc32,
        });
        self.offset += len;
        Ok(())
    }

    /// Writes the trailer; returns the writer, the pack's v2 index and the pack's length.
    pub(super) fn finish(mut self) -> std::io::Result<(W, Vec<u8>, u64)> {
        let sum: [u8; 20] = self.sum.finalize().into();
        self.out.write_all(&sum)?;
        let idx = super::pack::pack_index(&mut self.entries, &sum);
        Ok((self.out, idx, self.offset + 20))
    }
}

/// Writes to the pack's output and its running SHA-1 at once.
struct Tee<'a, W: Write> {
    out: &'a mut W,
    sum: &'a mut Sha1,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The object count of a v2 `.idx`, if `bytes` is one of plausible length.
pub(super) fn idx_object_count(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < IDX_FANOUT_END + 40 || bytes[..8] != IDX_V2_MAGIC {
        return None;
    }
    let at = IDX_FANOUT_END - 4;
    let n = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
    (bytes.len() >= IDX_FANOUT_END + n * 28 + 40).then_some(n)
}

/// The CRC-32 the v2 index of `n` objects records for the raw entry of its `i`-th object.
pub(super) fn idx_crc32(idx: &[u8], n: usize, i: usize) -> u32 {
    let at = IDX_FANOUT_END + n * 20 + i * 4;
    idx.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// The pack offset of the `i`-th object of a v2 index with `n` objects (0 when the index
/// points into a 64-bit table it does not have: such an entry is then never found valid).
pub(super) fn idx_offset(idx: &[u8], n: usize, i: usize) -> u64 {
    let at = IDX_FANOUT_END + n * 24 + i * 4;
    let small = u32::from_be_bytes([idx[at], idx[at + 1], idx[at + 2], idx[at + 3]]);
    if small & 0x8000_0000 == 0 {
        return u64::from(small);
    }
    let k = (small & 0x7fff_ffff) as usize;
    let big = IDX_FANOUT_END + n * 28 + k * 8;
    idx.get(big..big + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_compressed_entries_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let big = vec![b'x'; STORED_BLOCK * 2 + 17];
        let objects: Vec<(ObjectType, Vec<u8>)> = vec![
            (
                ObjectType::Blob,
                b"apiVersion: v1\nkind: ConfigMap\n".to_vec(),
            ),
            (ObjectType::Blob, Vec::new()),
            (ObjectType::Blob, big),
        ];
        // A pack written by `PackStream` and installed as it is.
        let mut stream = PackStream::new(Vec::new(), objects.len() as u32).unwrap();
        let mut ids = Vec::new();
        for (kind, data) in &objects {
            let id = Oid::hash_object(*kind, data).unwrap();
            stream.write_object(id, *kind, data).unwrap();
            ids.push(id);
        }
        let (pack, idx, len) = stream.finish().unwrap();
        assert_eq!(len, pack.len() as u64);
        let name = hex::encode(&pack[pack.len() - 20..]);
        let pack_dir = dir.path().join("objects/pack");
        std::fs::write(pack_dir.join(format!("pack-{name}.pack")), &pack).unwrap();
        std::fs::write(pack_dir.join(format!("pack-{name}.idx")), &idx).unwrap();
        // libgit2 reads it.
        let odb = repo.odb().unwrap();
        odb.refresh().unwrap();
        for ((_, data), id) in objects.iter().zip(&ids) {
            assert_eq!(odb.read(*id).unwrap().data(), &data[..]);
        }
        // And so does `PackFiles`.
        let files = PackFiles::open(dir.path()).unwrap();
        let mut buf = Vec::new();
        for ((kind, data), id) in objects.iter().zip(&ids) {
            let at = files.locate(*id).unwrap();
            files.read_raw(at, &mut buf).unwrap();
            let entry = parse_entry(&buf).unwrap();
            assert!(entry.verified(*kind, *id));
            match entry {
                Entry::Whole { data: got, .. } => assert_eq!(&got[..], &data[..]),
                Entry::Delta => panic!("not a delta"),
            }
        }
        // A compressed entry (as git writes them) is inflated.
        let mut raw = vec![0x30 | 5, 0]; // blob, size 5 (two header bytes: 0x35 then... )
        raw.truncate(0);
        raw.push(0x35);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(b"hello").unwrap();
        raw.extend(z.finish().unwrap());
        match parse_entry(&raw).unwrap() {
            Entry::Whole { kind, data } => {
                assert_eq!(kind, ObjectType::Blob);
                assert_eq!(&data[..], b"hello");
            }
            Entry::Delta => panic!("not a delta"),
        }
        // Deltas and garbage.
        assert!(matches!(parse_entry(&[0x65]).unwrap(), Entry::Delta));
        assert!(parse_entry(&[]).is_err());
        assert!(parse_entry(&[0x35, 0x78, 0x01, 0x00]).is_err());
    }

    #[test]
    fn a_tampered_stored_entry_is_not_verified() {
        let mut raw = Vec::new();
        let data = b"metadata:\n  name: a\n";
        write_stored_entry(&mut raw, ObjectType::Blob, data).unwrap();
        let id = Oid::hash_object(ObjectType::Blob, data).unwrap();
        assert!(parse_entry(&raw).unwrap().verified(ObjectType::Blob, id));
        // Same length, other content, fixed-up Adler-32: parses, but does not hash to `id`.
        let n = raw.len();
        let other = b"metadata:\n  name: b\n";
        let start = n - 4 - other.len();
        raw[start..n - 4].copy_from_slice(other);
        raw[n - 4..].copy_from_slice(&super::super::pack::adler32(other).to_be_bytes());
        let entry = parse_entry(&raw).unwrap();
        assert!(!entry.verified(ObjectType::Blob, id));
        assert!(!entry.verified(ObjectType::Tree, id));
    }
}
