//! How a pack is stored: the git pack stream compressed with zstd, in independent frames of
//! [`FRAME_BYTES`] compressed on two threads while the pack is still being built (docs/store.md),
//! or, for a pack the mirror has just written, in one go by [`encode`] (the mirror keeps that
//! copy beside the pack so that a push uploads it as it is).
//!
//! The mirror's packs hold undeltified objects, and neighbouring objects of a snapshot are
//! alike (ConfigMaps of one namespace, Deployments of one application), so compressing the
//! whole stream finds what git's delta search finds, at a fraction of its cost: 50k objects
//! (74 MB) give 4.4 MB in 0.1 s of CPU, against 13.6 MB in 4.5 s for libgit2's deltified pack
//! and 17.8 MB for `git repack -adf` (docs/benchmarks.md). Packs written before this encoding
//! are plain git packs; readers tell them apart by their first bytes (`PACK` or the zstd
//! magic), so both kinds are read everywhere.
//!
//! Owns: the encoding and decoding of stored packs. Must not touch: the store, the mirror (both
//! call it: it sits below them).

use std::borrow::Cow;
use std::io::Write;
use std::sync::mpsc;

/// The first bytes of a zstd frame.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Pack bytes compressed per frame: large enough for the compressor's window to see many
/// similar objects, small enough to keep two threads busy and memory bounded.
pub(crate) const FRAME_BYTES: usize = 8 << 20;

/// The zstd level: level 1 is within 7% of level 3's size on snapshot packs at 60% of its
/// CPU time.
const LEVEL: i32 = 1;

/// The level of a pack that fits in one frame (an incremental push): 5-10% smaller than at
/// [`LEVEL`] (a 1% change of a 50k-object snapshot, 0.9 MB: 101 KB instead of 106 KB), for
/// at most ~70 ms of one thread (a full 8 MiB frame).
const SMALL_PACK_LEVEL: i32 = 6;

/// Threads compressing frames.
const THREADS: usize = 2;

/// A decompressed pack may be at most this many times larger than its stored bytes (plus
/// [`BOMB_SLACK`]): a hostile store cannot fill the disk with a tiny "pack".
const MAX_RATIO: u64 = 1024;
const BOMB_SLACK: u64 = 64 << 20;

/// The most bytes a stored pack of `stored` bytes may decompress to.
pub(crate) fn decoded_limit(stored: u64) -> u64 {
    stored.saturating_mul(MAX_RATIO).saturating_add(BOMB_SLACK)
}

/// Whether stored pack bytes start like a zstd frame (else they are a plain git pack).
pub(crate) fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&ZSTD_MAGIC)
}

/// Packs up to this size get [`SMALL_PACK_LEVEL`] from [`encode`]: a larger one is a first
/// snapshot's, whose copy is made on the snapshot's own time.
const SMALL_PACK_BYTES: usize = 1 << 20;

/// Encodes a whole git pack of `len` bytes read from `pack` as the store keeps it (the same
/// frames as [`FrameEncoder`]; level [`SMALL_PACK_LEVEL`] up to [`SMALL_PACK_BYTES`], else
/// [`LEVEL`]), on the calling thread, holding one frame at a time.
pub(crate) fn encode(mut pack: impl std::io::Read, len: u64) -> std::io::Result<Vec<u8>> {
    let level = if len <= SMALL_PACK_BYTES as u64 {
        SMALL_PACK_LEVEL
    } else {
        LEVEL
    };
    let mut out = Vec::with_capacity(usize::try_from(len / 8).unwrap_or(0) + 64);
    let mut left = len;
    while left > 0 {
        let take = left.min(FRAME_BYTES as u64);
        // A streaming encoder per frame: no frame-sized input or output buffer is held.
        let mut encoder = zstd::stream::write::Encoder::new(&mut out, level)?;
        encoder.set_pledged_src_size(Some(take))?;
        encoder.include_contentsize(true)?;
        let copied = std::io::copy(&mut std::io::Read::take(&mut pack, take), &mut encoder)?;
        if copied != take {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the pack is shorter than its size",
            ));
        }
        encoder.finish()?;
        left -= take;
    }
    Ok(out)
}

/// Compressed frames with their sequence numbers.
type Frames = Vec<(usize, Vec<u8>)>;

/// A [`Write`] sink compressing what it is given into zstd frames on background threads; the
/// stored bytes come back from [`FrameEncoder::finish`].
pub(crate) struct FrameEncoder {
    frame: Vec<u8>,
    next: usize,
    senders: Vec<mpsc::SyncSender<(usize, Vec<u8>, i32)>>,
    workers: Vec<std::thread::JoinHandle<std::io::Result<Frames>>>,
}

impl FrameEncoder {
    /// Starts the compressing threads.
    pub(crate) fn new() -> std::io::Result<FrameEncoder> {
        let mut senders = Vec::with_capacity(THREADS);
        let mut workers = Vec::with_capacity(THREADS);
        for n in 0..THREADS {
            let (tx, rx) = mpsc::sync_channel::<(usize, Vec<u8>, i32)>(1);
            let worker = std::thread::Builder::new()
                .name(format!("k8s-snap-zstd-{n}"))
                .spawn(move || {
                    let mut out = Vec::new();
                    for (seq, frame, level) in rx {
                        out.push((seq, zstd::bulk::compress(&frame, level)?));
                    }
                    Ok(out)
                })?;
            senders.push(tx);
            workers.push(worker);
        }
        Ok(FrameEncoder {
            frame: Vec::with_capacity(FRAME_BYTES),
            next: 0,
            senders,
            workers,
        })
    }

    fn send_frame(&mut self, level: i32) -> std::io::Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let frame = std::mem::replace(&mut self.frame, Vec::with_capacity(FRAME_BYTES));
        let seq = self.next;
        self.next += 1;
        self.senders[seq % THREADS]
            .send((seq, frame, level))
            .map_err(|_| std::io::Error::other("a compressing thread stopped"))
    }

    /// Compresses what is left and returns the stored bytes: the frames in order.
    pub(crate) fn finish(mut self) -> std::io::Result<Vec<u8>> {
        let level = if self.next == 0 {
            SMALL_PACK_LEVEL
        } else {
            LEVEL
        };
        self.send_frame(level)?;
        self.senders.clear();
        let mut frames = Vec::with_capacity(self.next);
        for worker in self.workers.drain(..) {
            let done = worker
                .join()
                .map_err(|_| std::io::Error::other("a compressing thread panicked"))??;
            frames.extend(done);
        }
        frames.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(frames.into_iter().flat_map(|(_, f)| f).collect())
    }
}

impl Write for FrameEncoder {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let room = FRAME_BYTES - self.frame.len();
            let take = room.min(buf.len());
            self.frame.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.frame.len() == FRAME_BYTES {
                self.send_frame(LEVEL)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The git pack held by stored pack bytes (decompressed when they are zstd frames), refusing
/// to decompress beyond [`decoded_limit`].
pub(crate) fn decode(stored: &[u8]) -> std::io::Result<Cow<'_, [u8]>> {
    if !is_compressed(stored) {
        return Ok(Cow::Borrowed(stored));
    }
    let mut out = LimitedVec {
        bytes: Vec::new(),
        limit: decoded_limit(stored.len() as u64),
    };
    zstd::stream::copy_decode(stored, &mut out)?;
    Ok(Cow::Owned(out.bytes))
}

/// A growable buffer that refuses to grow past a limit.
struct LimitedVec {
    bytes: Vec<u8>,
    limit: u64,
}

impl Write for LimitedVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() as u64 + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(format!(
                "it decompresses to more than {} bytes",
                self.limit
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A streaming decoder for a pack download: bytes go in as they arrive, the git pack comes out
/// into the writer (a plain git pack passes through unchanged).
pub(crate) struct StreamDecoder<W: Write> {
    state: Option<State<W>>,
}

enum State<W: Write> {
    /// Not enough bytes yet to tell the encoding: the writer, the first bytes, the limit.
    Undecided(W, Vec<u8>, u64),
    /// A plain git pack.
    Plain(W),
    /// zstd frames.
    Zstd(zstd::stream::write::Decoder<'static, Limited<W>>),
}

/// A writer that refuses to write more than a limit.
pub(crate) struct Limited<W: Write> {
    out: W,
    left: u64,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other(
                "it decompresses to more bytes than its size allows",
            ));
        }
        let n = self.out.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn stopped() -> std::io::Error {
    std::io::Error::other("the pack decoder failed earlier")
}

impl<W: Write> StreamDecoder<W> {
    /// A decoder writing into `out`, for a stored pack of `stored` bytes.
    pub(crate) fn new(out: W, stored: u64) -> StreamDecoder<W> {
        StreamDecoder {
            state: Some(State::Undecided(
                out,
                Vec::with_capacity(4),
                decoded_limit(stored),
            )),
        }
    }

    /// Feeds downloaded bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.state.take().ok_or_else(stopped)? {
            State::Plain(mut out) => {
                out.write_all(bytes)?;
                self.state = Some(State::Plain(out));
            }
            State::Zstd(mut z) => {
                z.write_all(bytes)?;
                self.state = Some(State::Zstd(z));
            }
            State::Undecided(mut out, mut head, limit) => {
                let take = (4 - head.len()).min(bytes.len());
                head.extend_from_slice(&bytes[..take]);
                if head.len() < 4 {
                    self.state = Some(State::Undecided(out, head, limit));
                    return Ok(());
                }
                let rest = &bytes[take..];
                if is_compressed(&head) {
                    let mut z = zstd::stream::write::Decoder::new(Limited { out, left: limit })?;
                    z.write_all(&head)?;
                    z.write_all(rest)?;
                    self.state = Some(State::Zstd(z));
                } else {
                    out.write_all(&head)?;
                    out.write_all(rest)?;
                    self.state = Some(State::Plain(out));
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: the writer back, or an error if the zstd stream is incomplete.
    pub(crate) fn finish(self) -> std::io::Result<W> {
        match self.state.ok_or_else(stopped)? {
            State::Plain(out) => Ok(out),
            State::Undecided(mut out, head, _) => {
                out.write_all(&head)?;
                Ok(out)
            }
            State::Zstd(mut z) => {
                z.flush()?;
                Ok(z.into_inner().out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let mut v = b"PACK\0\0\0\x02".to_vec();
        for i in 0..n {
            v.extend_from_slice(
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: obj-{i:06}\n")
                    .as_bytes(),
            );
        }
        v
    }

    #[test]
    fn a_whole_pack_encoded_at_once_round_trips() {
        for n in [0usize, 10, 300_000] {
            let pack = sample(n);
            assert!(encode(pack.as_slice(), pack.len() as u64 + 1).is_err());
            let stored = encode(pack.as_slice(), pack.len() as u64).unwrap();
            assert!(is_compressed(&stored));
            assert_eq!(decode(&stored).unwrap().as_ref(), pack.as_slice());
            let mut dec = StreamDecoder::new(Vec::new(), stored.len() as u64);
            for chunk in stored.chunks(4096) {
                dec.feed(chunk).unwrap();
            }
            assert_eq!(dec.finish().unwrap(), pack);
        }
    }

    #[test]
    fn frames_round_trip_through_every_decoder() {
        for n in [0usize, 10, 300_000] {
            let pack = sample(n);
            let mut enc = FrameEncoder::new().unwrap();
            for chunk in pack.chunks(70_001) {
                enc.write_all(chunk).unwrap();
            }
            let stored = enc.finish().unwrap();
            if pack.len() > FRAME_BYTES {
                assert!(
                    stored.len() * 5 < pack.len(),
                    "{} of {}",
                    stored.len(),
                    pack.len()
                );
            }
            assert!(is_compressed(&stored));
            assert_eq!(&decode(&stored).unwrap()[..], &pack[..]);
            for chunk_size in [1usize, 3, 4096, 1 << 20] {
                let mut d = StreamDecoder::new(Vec::new(), stored.len() as u64);
                for chunk in stored.chunks(chunk_size) {
                    d.feed(chunk).unwrap();
                }
                assert_eq!(d.finish().unwrap(), pack, "chunks of {chunk_size}");
            }
        }
    }

    #[test]
    fn plain_packs_pass_through() {
        let pack = sample(3);
        assert!(!is_compressed(&pack));
        assert_eq!(&decode(&pack).unwrap()[..], &pack[..]);
        let mut d = StreamDecoder::new(Vec::new(), pack.len() as u64);
        d.feed(&pack[..2]).unwrap();
        d.feed(&pack[2..]).unwrap();
        assert_eq!(d.finish().unwrap(), pack);
        let short = StreamDecoder::new(Vec::new(), 2);
        assert_eq!(short.finish().unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn truncated_and_bomb_streams_fail() {
        let pack = sample(20_000);
        let mut enc = FrameEncoder::new().unwrap();
        enc.write_all(&pack).unwrap();
        let stored = enc.finish().unwrap();
        let cut = &stored[..stored.len() / 2];
        assert!(decode(cut).is_err());
        let mut d = StreamDecoder::new(Vec::new(), cut.len() as u64);
        if d.feed(cut).is_ok() {
            // The decoder may not notice the end is missing; the output is then short (the
            // pull's sha256 check of the stored bytes refuses such a pack first anyway).
            assert!(d.finish().map_or(true, |out| out.len() < pack.len()));
        }
        // A stream that expands beyond its limit.
        let zeros = vec![0u8; (BOMB_SLACK + (16 << 20)) as usize];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(decode(&bomb).is_err());
        let mut d = StreamDecoder::new(Vec::new(), bomb.len() as u64);
        assert!(d.feed(&bomb).is_err() || d.finish().is_err());
    }
}
