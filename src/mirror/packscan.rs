//! Checking a downloaded pack while it streams in, as `git index-pack` does on a fetch: each
//! whole entry is hashed to its object id as its bytes arrive (on the thread that decodes the
//! download, while the other downloads go on), so that the pull does not read every object
//! back from disk afterwards.
//!
//! What a scan keeps ([`Scanned`]): each entry's id, offset and CRC-32 (to check the pack's
//! downloaded index against: an index that maps an id to another entry is refused), the
//! content of trees and commits (the pull walks them in memory), and for each blob the identity
//! its body claims (apiVersion, kind, name, namespace, read by the quick scan of canonical
//! YAML): the pull compares it with the blob's path without reading the body again.
//!
//! Only entries this project writes are scanned: whole objects in stored deflate blocks. A
//! pack with anything else (a delta, a compressed entry: packs pushed by old versions) stops
//! its scan, and the pull checks its objects by reading them as before.
//!
//! Owns: parsing a pack stream. Must not touch: files, the object database, the store.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use git2::ObjectType;
use sha1::{Digest, Sha1};

use super::transfer::OidHasher;
use crate::tree::identity::IdentityView;

/// Id-keyed map with the cheap id hasher.
pub(super) type IdMap<V> = HashMap<[u8; 20], V, BuildHasherDefault<OidHasher>>;

/// The identity a blob's body claims, in one allocation: apiVersion, kind, name, then the
/// namespace (if any), back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claimed {
    text: Box<str>,
    /// Ends of apiVersion, kind and name in `text`.
    ends: [u32; 3],
    has_namespace: bool,
}

impl Claimed {
    fn new(id: &crate::tree::identity::Identity) -> Option<Claimed> {
        let (a, k, n) = (
            id.api_version.as_deref()?,
            id.kind.as_deref()?,
            id.name.as_deref()?,
        );
        let ns = id.namespace.as_deref();
        let mut text = String::with_capacity(a.len() + k.len() + n.len() + ns.map_or(0, str::len));
        let mut ends = [0u32; 3];
        for (i, part) in [a, k, n].into_iter().enumerate() {
            text.push_str(part);
            ends[i] = u32::try_from(text.len()).ok()?;
        }
        text.push_str(ns.unwrap_or_default());
        Some(Claimed {
            text: text.into_boxed_str(),
            ends,
            has_namespace: ns.is_some(),
        })
    }

    /// The identity, borrowed.
    pub(super) fn view(&self) -> IdentityView<'_> {
        let [a, k, n] = self.ends.map(|e| e as usize);
        let t = &self.text;
        IdentityView {
            api_version: t.get(..a),
            kind: t.get(a..k),
            name: t.get(k..n),
            namespace: if self.has_namespace { t.get(n..) } else { None },
        }
    }
}

/// What the scan of one or more packs found; every object in it was hashed to its id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Blob id -> the identity its body claims (`None`: not canonical YAML, read it again).
    pub(super) blobs: IdMap<Option<Claimed>>,
    /// Tree id -> its content.
    pub(super) trees: IdMap<Box<[u8]>>,
    /// Commit id -> its content.
    pub(super) commits: IdMap<Box<[u8]>>,
}

impl Scanned {
    /// Adds what another scan found.
    pub fn extend(&mut self, other: Scanned) {
        if self.blobs.is_empty() && self.trees.is_empty() && self.commits.is_empty() {
            *self = other;
            return;
        }
        self.blobs.extend(other.blobs);
        self.trees.extend(other.trees);
        self.commits.extend(other.commits);
    }

    /// Objects found.
    pub fn len(&self) -> usize {
        self.blobs.len() + self.trees.len() + self.commits.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scan of one pack stream, fed as the bytes arrive.
#[derive(Debug, Default)]
pub(super) struct PackScanner {
    /// The 12-byte pack header, while it is incomplete.
    header: Vec<u8>,
    /// Objects the header announces.
    count: u32,
    /// The bytes of an entry that began in an earlier chunk.
    carry: Vec<u8>,
    /// Pack offset of the next entry.
    offset: u64,
    /// Bytes after the last entry (the trailer).
    trailer: u64,
    /// Why the scan stopped (the pack is then checked another way).
    stopped: Option<String>,
    /// Id, offset and CRC-32 of each entry, in pack order.
    entries: Vec<([u8; 20], u64, u32)>,
    found: Scanned,
}

/// Bytes handed to a scan thread at a time.
const SCAN_BATCH: usize = 1 << 20;

/// Batches a scan thread may have waiting (bounds the memory a slow scan holds).
const SCAN_QUEUE: usize = 4;

/// A [`PackScanner`] fed on the caller's thread, or on a thread of its own: a pull of one big
/// pack (nothing else to download beside it) then hashes and reads its entries while the
/// caller decodes the download and writes it to disk, on two cores instead of one.
#[derive(Debug)]
pub(super) enum ScanFeed {
    /// Fed on the caller's thread.
    Inline(PackScanner),
    /// Fed in batches to a thread of its own.
    Thread(ScanThread),
}

/// The feeding end of a scan thread. Dropping it ends the thread once it has scanned what it
/// was sent (no more than [`SCAN_QUEUE`] batches).
#[derive(Debug)]
pub(super) struct ScanThread {
    pending: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    handle: Option<std::thread::JoinHandle<PackScanner>>,
}

impl Default for ScanFeed {
    fn default() -> Self {
        ScanFeed::Inline(PackScanner::new())
    }
}

impl ScanFeed {
    /// A scan of a pack that starts with the next bytes fed; on its own thread if `aside`
    /// (inline if the thread cannot be started).
    pub(super) fn new(aside: bool) -> ScanFeed {
        if !aside {
            return ScanFeed::default();
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SCAN_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("k8s-snap-pack-scan".into())
            .spawn(move || {
                let mut scanner = PackScanner::new();
                for batch in rx {
                    scanner.feed(&batch);
                }
                scanner
            });
        match spawned {
            Ok(handle) => ScanFeed::Thread(ScanThread {
                pending: Vec::with_capacity(SCAN_BATCH),
                tx: Some(tx),
                handle: Some(handle),
            }),
            Err(e) => {
                tracing::debug!("no thread for the pack scan ({e}): scanning inline");
                ScanFeed::default()
            }
        }
    }

    /// Feeds the next bytes of the pack.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        match self {
            ScanFeed::Inline(scanner) => scanner.feed(bytes),
            ScanFeed::Thread(t) => {
                t.pending.extend_from_slice(bytes);
                if t.pending.len() >= SCAN_BATCH {
                    t.send();
                }
            }
        }
    }

    /// [`PackScanner::finish`], once the scan thread (if any) has scanned every byte fed.
    pub(super) fn finish(self, idx: &[u8]) -> Result<Option<Scanned>, String> {
        match self {
            ScanFeed::Inline(scanner) => scanner.finish(idx),
            ScanFeed::Thread(mut t) => {
                t.send();
                t.tx = None;
                match t.handle.take().map(std::thread::JoinHandle::join) {
                    Some(Ok(scanner)) => scanner.finish(idx),
                    // Only a panic ends the thread early: nothing is vouched for, and the pull
                    // checks the pack by reading it, as for a pack a scan cannot read.
                    _ => Ok(None),
                }
            }
        }
    }
}

impl ScanThread {
    fn send(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(SCAN_BATCH));
        // A send fails only if the thread is gone (it panicked): `finish` then vouches for
        // nothing, and the pull reads the pack to check it.
        if self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_err()) {
            self.tx = None;
        }
    }
}

/// How far one entry at the start of a buffer extends.
enum Span {
    /// The entry is this many bytes.
    Complete(usize),
    /// Its length is not known before the buffer holds at least this many bytes.
    Need(usize),
    /// Not an entry a scan reads (the reason).
    Unsupported(String),
}

impl PackScanner {
    /// A scan of a pack that starts with the next bytes fed.
    pub(super) fn new() -> PackScanner {
        PackScanner {
            header: Vec::with_capacity(12),
            ..PackScanner::default()
        }
    }

    /// Feeds the next bytes of the pack.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        if self.stopped.is_some() {
            return;
        }
        if self.header.len() < 12 {
            let take = (12 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() < 12 {
                return;
            }
            let h = &self.header;
            let version = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            if &h[..4] != b"PACK" || !(2..=3).contains(&version) {
                return self.stop("not a git pack".into());
            }
            self.count = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            self.offset = 12;
            self.entries.reserve(self.count.min(1 << 20) as usize);
        }
        while !bytes.is_empty() {
            if self.entries.len() as u64 == u64::from(self.count) {
                self.trailer += bytes.len() as u64;
                return;
            }
            if !self.carry.is_empty() {
                // Complete the entry begun in an earlier chunk, copying only its own bytes.
                match span(&self.carry) {
                    Span::Complete(n) => {
                        let raw = std::mem::take(&mut self.carry);
                        self.entry(&raw[..n]);
                        if self.stopped.is_some() {
                            return;
                        }
                    }
                    Span::Need(n) => {
                        let take = (n - self.carry.len()).min(bytes.len());
                        self.carry.extend_from_slice(&bytes[..take]);
                        bytes = &bytes[take..];
                    }
                    Span::Unsupported(reason) => return self.stop(reason),
                }
                continue;
            }
            match span(bytes) {
                Span::Complete(n) => {
                    self.entry(&bytes[..n]);
                    if self.stopped.is_some() {
                        return;
                    }
                    bytes = &bytes[n..];
                }
                Span::Need(_) => {
                    self.carry.extend_from_slice(bytes);
                    return;
                }
                Span::Unsupported(reason) => return self.stop(reason),
            }
        }
        // An entry whose carried bytes are already complete (the chunk ended with it).
        if !self.carry.is_empty()
            && let Span::Complete(n) = span(&self.carry)
        {
            let raw = std::mem::take(&mut self.carry);
            self.entry(&raw[..n]);
        }
    }

    fn stop(&mut self, reason: String) {
        tracing::debug!("pack scan stopped: {reason}");
        self.stopped = Some(reason);
        self.carry = Vec::new();
        self.entries = Vec::new();
        self.found = Scanned::default();
    }

    /// One whole entry of `raw.len()` bytes at the current offset.
    fn entry(&mut self, raw: &[u8]) {
        let offset = self.offset;
        self.offset += raw.len() as u64;
        let parsed = super::packread::entry_header(raw).and_then(|(code, size, at)| {
            let kind = super::packread::kind_of(code)?.ok_or("a delta entry")?;
            let size =
                usize::try_from(size).map_err(|_| "an entry larger than memory".to_owned())?;
            let data = super::packread::stored_blocks(&raw[at..], size)
                .ok_or_else(|| format!("a corrupt entry at offset {offset}"))?;
            Ok((kind, data))
        });
        let (kind, data): (ObjectType, Cow<'_, [u8]>) = match parsed {
            Ok(x) => x,
            Err(reason) => return self.stop(reason),
        };
        let mut h = Sha1::new();
        h.update(format!("{kind} {}\0", data.len()).as_bytes());
        h.update(&data);
        let id: [u8; 20] = h.finalize().into();
        self.entries.push((id, offset, crc32fast::hash(raw)));
        match kind {
            ObjectType::Blob => {
                let claimed = crate::tree::identity::quick_identity(&data)
                    .as_ref()
                    .and_then(Claimed::new);
                self.found.blobs.insert(id, claimed);
            }
            ObjectType::Tree => {
                self.found
                    .trees
                    .insert(id, data.into_owned().into_boxed_slice());
            }
            ObjectType::Commit => {
                self.found
                    .commits
                    .insert(id, data.into_owned().into_boxed_slice());
            }
            _ => {}
        }
    }

    /// The scan of a whole pack, checked against the pack's version-2 index of `n` objects
    /// (as structurally checked by the caller): every id at the offset and with the CRC-32 the
    /// index records. `Ok(None)` when the scan stopped (the pack is checked another way);
    /// `Err` when the index does not describe the pack's objects.
    pub(super) fn finish(mut self, idx: &[u8]) -> Result<Option<Scanned>, String> {
        if self.stopped.is_some() {
            return Ok(None);
        }
        if self.entries.len() as u64 != u64::from(self.count) || self.trailer != 20 {
            // Cut short or with bytes after its entries: the pack's own checks say why.
            return Ok(None);
        }
        let n = self.entries.len();
        if super::packread::idx_object_count(idx) != Some(n) {
            return Err("the index lists another number of objects than the pack has".into());
        }
        self.entries.sort_unstable_by_key(|e| e.0);
        for (i, ((id, offset, crc), listed)) in self
            .entries
            .iter()
            .zip(super::packread::idx_ids(idx, n))
            .enumerate()
        {
            if *id != listed {
                return Err(format!(
                    "the index lists object {} that the pack does not hold",
                    hex::encode(listed)
                ));
            }
            if super::packread::idx_offset(idx, n, i) != *offset
                || super::packread::idx_crc32(idx, n, i) != *crc
            {
                return Err(format!(
                    "the index gives object {} another place in the pack",
                    hex::encode(id)
                ));
            }
        }
        Ok(Some(self.found))
    }
}

/// How far the entry at the start of `raw` extends: its header, a zlib header, stored deflate
/// blocks up to the final one, and the Adler-32.
fn span(raw: &[u8]) -> Span {
    // Header: continuation bit on each byte but the last.
    let Some(last) = raw.iter().position(|b| b & 0x80 == 0) else {
        return if raw.len() >= 10 {
            Span::Unsupported("an entry size that overflows".into())
        } else {
            Span::Need(raw.len() + 1)
        };
    };
    match super::packread::kind_of((raw[0] >> 4) & 0x07) {
        Ok(Some(_)) => {}
        Ok(None) => return Span::Unsupported("a delta entry".into()),
        Err(reason) => return Span::Unsupported(reason),
    }
    let zlib = last + 1;
    let Some(head) = raw.get(zlib..zlib + 2) else {
        return Span::Need(zlib + 2);
    };
    if head[0] & 0x0f != 8
        || head[1] & 0x20 != 0
        || (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 != 0
    {
        return Span::Unsupported("an entry that is not a zlib stream".into());
    }
    let mut at = zlib + 2;
    loop {
        let Some(block) = raw.get(at..at + 5) else {
            return Span::Need(at + 5);
        };
        if block[0] & 0b110 != 0 {
            return Span::Unsupported("a compressed entry".into());
        }
        let len = u16::from_le_bytes([block[1], block[2]]);
        if len != !u16::from_le_bytes([block[3], block[4]]) {
            return Span::Unsupported("a corrupt stored block".into());
        }
        at += 5 + usize::from(len);
        if block[0] & 1 == 1 {
            break;
        }
    }
    let end = at + 4;
    if raw.len() >= end {
        Span::Complete(end)
    } else {
        Span::Need(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::packread::{PackStream, write_stored_entry};

    fn blob(name: &str) -> Vec<u8> {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: ns\ndata:\n  k: {}\n", "v".repeat(name.len() * 5000)).into_bytes()
    }

    /// A pack of `objects` in stored blocks, with its index.
    fn pack(objects: &[(ObjectType, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
        let mut s = PackStream::new(Vec::new(), objects.len() as u32).unwrap();
        for (kind, data) in objects {
            let id = crate::mirror::pack::object_id(*kind, data).unwrap();
            s.write_object(id, *kind, data).unwrap();
        }
        let (pack, idx, _) = s.finish().unwrap();
        (pack, idx)
    }

    fn scan(pack: &[u8], chunk: usize) -> PackScanner {
        let mut s = PackScanner::new();
        for c in pack.chunks(chunk) {
            s.feed(c);
        }
        s
    }

    #[test]
    fn a_scan_on_its_own_thread_finds_what_an_inline_scan_finds() {
        // Over a batch, so that batches and the last partial one are both sent.
        let objects: Vec<_> = (0..60)
            .map(|i| (ObjectType::Blob, blob(&format!("obj-{i:03}"))))
            .collect();
        let (_, other) = pack(&objects[..2]);
        let (pack, idx) = pack(&objects);
        assert!(pack.len() > SCAN_BATCH);
        let inline = scan(&pack, 70_000).finish(&idx).unwrap().unwrap();
        for chunk in [1000, 70_000, pack.len()] {
            let mut feed = ScanFeed::new(true);
            assert!(matches!(feed, ScanFeed::Thread(_)));
            for c in pack.chunks(chunk) {
                feed.feed(c);
            }
            let aside = feed.finish(&idx).unwrap().unwrap();
            assert_eq!(aside, inline, "chunks of {chunk}");
            assert_eq!(aside.blobs.len(), 60);
        }
        // A wrong index is refused the same way.
        let mut feed = ScanFeed::new(true);
        feed.feed(&pack);
        assert!(feed.finish(&other).is_err());
    }

    #[test]
    fn every_chunking_finds_every_object_and_checks_the_index() {
        let objects = vec![
            (ObjectType::Blob, blob("a")),
            (ObjectType::Blob, blob("bbbbbbbbbbbbbbbb")),
            (ObjectType::Blob, b"- not: canonical\n".to_vec()),
            (ObjectType::Blob, Vec::new()),
            (ObjectType::Tree, vec![7u8; 300]),
            (ObjectType::Commit, b"tree 0000\n".to_vec()),
        ];
        let (pack, idx) = pack(&objects);
        for chunk in [1, 2, 3, 7, 64, 4096, 70_000, pack.len()] {
            let found = scan(&pack, chunk).finish(&idx).unwrap().unwrap();
            assert_eq!(found.blobs.len(), 4, "chunk {chunk}");
            assert_eq!(found.trees.len(), 1);
            assert_eq!(found.commits.len(), 1);
            let a = crate::mirror::pack::object_id(ObjectType::Blob, &objects[0].1).unwrap();
            let claimed = found.blobs[&crate::mirror::transfer::key(&a)]
                .as_ref()
                .unwrap();
            assert_eq!(claimed.view().name, Some("a"));
            assert_eq!(claimed.view().namespace, Some("ns"));
            assert_eq!(claimed.view().kind, Some("ConfigMap"));
            assert_eq!(claimed.view().api_version, Some("v1"));
            let odd = crate::mirror::pack::object_id(ObjectType::Blob, &objects[2].1).unwrap();
            assert_eq!(found.blobs[&crate::mirror::transfer::key(&odd)], None);
        }
    }

    #[test]
    fn an_index_that_does_not_describe_the_pack_is_refused() {
        let (pack_a, idx_a) = pack(&[(ObjectType::Blob, blob("a")), (ObjectType::Blob, blob("b"))]);
        let (_, idx_c) = pack(&[(ObjectType::Blob, blob("a")), (ObjectType::Blob, blob("c"))]);
        let err = scan(&pack_a, 100).finish(&idx_c).unwrap_err();
        assert!(err.contains("does not hold"), "{err}");
        // The same ids, offsets swapped.
        let (pack_ba, idx_ba) =
            pack(&[(ObjectType::Blob, blob("b")), (ObjectType::Blob, blob("a"))]);
        assert_ne!(pack_ba, pack_a);
        let err = scan(&pack_a, 100).finish(&idx_ba).unwrap_err();
        assert!(err.contains("another place"), "{err}");
        assert!(scan(&pack_a, 100).finish(&idx_a).unwrap().is_some());
    }

    #[test]
    fn a_tampered_body_gets_another_id() {
        let (mut pack, idx) = pack(&[(ObjectType::Blob, blob("a"))]);
        let at = pack.windows(7).position(|w| w == b"name: a").unwrap();
        pack[at + 6] = b'z';
        // Its adler-32 no longer matches: the scan stops, nothing is vouched for.
        assert!(scan(&pack, 9).finish(&idx).unwrap().is_none());
    }

    #[test]
    fn packs_it_cannot_read_stop_the_scan() {
        let (pack_ok, idx) = pack(&[(ObjectType::Blob, blob("a"))]);
        // A compressed entry (as git writes them).
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, b"hello").unwrap();
        let stream = z.finish().unwrap();
        let mut p = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
        p.push(0x35);
        p.extend_from_slice(&stream);
        p.extend_from_slice(&[0u8; 20]);
        assert!(scan(&p, 5).finish(&idx).unwrap().is_none());
        // Cut short.
        assert!(
            scan(&pack_ok[..pack_ok.len() - 30], 5)
                .finish(&idx)
                .unwrap()
                .is_none()
        );
        // Not a pack.
        assert!(
            scan(b"PAKC\0\0\0\x02\0\0\0\x01", 5)
                .finish(&idx)
                .unwrap()
                .is_none()
        );
        // Bytes written by write_stored_entry for an empty object scan.
        let mut e = Vec::new();
        write_stored_entry(&mut e, ObjectType::Blob, b"").unwrap();
        assert!(matches!(span(&e), Span::Complete(n) if n == e.len()));
    }
}
