//! A streaming packfile writer for the hot path of [`SnapshotWriter`](super::SnapshotWriter).
//!
//! Writing 50,000 loose objects through libgit2 costs ~125 µs each (temp file, rename, odb
//! refresh per object), so new objects of a snapshot are appended, undeltified, to a temporary
//! file instead, then streamed into the odb's pack writer (libgit2's indexer writes the `.idx`
//! and moves both into `objects/pack`) at finish. Memory holds only the ids seen so far.
//!
//! Objects are zlib-wrapped with *stored* (uncompressed) deflate blocks: no compression cost on
//! the hot path and no extra dependency; [`Mirror::gc`](super::Mirror::gc) and the store's
//! `PackBuilder` re-pack with compression and deltas. Touches only its temp file and the odb.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use git2::{ObjectType, Odb, OdbLookupFlags, Oid};
use sha1::{Digest, Sha1};

use super::{GitContext, MirrorError, Result, io_ctx};

/// Largest payload of one stored deflate block.
const STORED_BLOCK: usize = 65_535;

pub(super) struct PackSink {
    file: BufWriter<File>,
    seen: HashSet<Oid>,
    count: u32,
}

impl PackSink {
    /// A sink whose temp file lives in `dir` (inside the git dir, removed when dropped).
    pub(super) fn new(dir: &Path) -> Result<PackSink> {
        let file = io_ctx(tempfile::tempfile_in(dir), || {
            format!("creating a temporary pack file in {}", dir.display())
        })?;
        Ok(PackSink {
            file: BufWriter::with_capacity(1 << 20, file),
            seen: HashSet::new(),
            count: 0,
        })
    }

    /// Appends the object unless the odb or this pack already has it.
    /// Returns the id and whether it was new.
    pub(super) fn write(
        &mut self,
        odb: &Odb<'_>,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<(Oid, bool)> {
        let oid = Oid::hash_object(kind, data).ctx(|| format!("hashing a {kind} object"))?;
        if self.seen.contains(&oid) || odb.exists_ext(oid, OdbLookupFlags::NO_REFRESH) {
            return Ok((oid, false));
        }
        let type_code: u8 = match kind {
            ObjectType::Commit => 1,
            ObjectType::Tree => 2,
            ObjectType::Blob => 3,
            _ => 4,
        };
        let mut entry = Vec::with_capacity(data.len() + 32 + 5 * (data.len() / STORED_BLOCK + 1));
        // Entry header: type and size, little-endian base-128.
        let mut size = data.len();
        let mut byte = (type_code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            entry.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        entry.push(byte);
        // zlib stream of stored blocks.
        entry.extend_from_slice(&[0x78, 0x01]);
        let mut chunks = data.chunks(STORED_BLOCK).peekable();
        if chunks.peek().is_none() {
            entry.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
        }
        while let Some(chunk) = chunks.next() {
            entry.push(u8::from(chunks.peek().is_none()));
            let len = chunk.len() as u16;
            entry.extend_from_slice(&len.to_le_bytes());
            entry.extend_from_slice(&(!len).to_le_bytes());
            entry.extend_from_slice(chunk);
        }
        entry.extend_from_slice(&adler32(data).to_be_bytes());
        io_ctx(self.file.write_all(&entry), || {
            "writing the temporary pack file".into()
        })?;
        self.seen.insert(oid);
        self.count += 1;
        Ok((oid, true))
    }

    /// Streams the pack (header, entries, SHA-1 trailer) into the odb, which indexes it and
    /// installs it in `objects/pack`. A no-op when nothing was written.
    pub(super) fn commit(&mut self, odb: &Odb<'_>) -> Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        io_ctx(self.file.flush(), || {
            "flushing the temporary pack file".into()
        })?;
        let file = self.file.get_mut();
        io_ctx(file.seek(SeekFrom::Start(0)), || {
            "rewinding the temporary pack file".into()
        })?;
        let mut writer = odb
            .packwriter()
            .ctx(|| "opening the odb pack writer".into())?;
        let mut hasher = Sha1::new();
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(b"PACK");
        header.extend_from_slice(&2u32.to_be_bytes());
        header.extend_from_slice(&self.count.to_be_bytes());
        hasher.update(&header);
        let stream_err = |e: std::io::Error| MirrorError::Io {
            context: "streaming the new pack into the object database".into(),
            source: e,
        };
        writer.write_all(&header).map_err(stream_err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = io_ctx(file.read(&mut buf), || {
                "reading the temporary pack file".into()
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write_all(&buf[..n]).map_err(stream_err)?;
        }
        writer.write_all(&hasher.finalize()).map_err(stream_err)?;
        writer
            .commit()
            .ctx(|| format!("indexing a new pack of {} objects", self.count))?;
        Ok(())
    }
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the largest n with 255n(n+1)/2 + (n+1)(MOD-1) < 2^32.
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
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
