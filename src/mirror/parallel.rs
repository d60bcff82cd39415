//! Reading all the files of a snapshot on several threads: [`Mirror::map_files`].
//!
//! A restore reads every object of a snapshot (20,000 blobs and as many YAML documents in
//! ~0.7 s on one core). The tree is walked once on the calling thread (trees only); the blobs
//! are then read and handed to the caller's function in chunks, on up to `threads` threads
//! with one repository handle each (a libgit2 repository is not shared between threads), so
//! that reading and parsing use every core. Results come back in git tree order. A blob that
//! is an undeltified entry of a pack (snapshot packs, pulled store packs) is read straight from
//! the pack file (`packread`: its content hashed against its id with the CPU's SHA extensions
//! instead of libgit2's slower collision-detecting SHA-1), the entries of a chunk through a
//! window of their size (`packread::WindowReader`): one positioned read when they lie together
//! in one pack, as a snapshot writes them.
//!
//! Owns: that fan-out. Must not touch: what the files mean (the caller's function), writing.

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use git2::{ObjectType, Oid, Repository};

use super::packread::{Entry, Location, PackFiles, WindowReader, parse_entry};
use super::{CommitId, GitContext, Mirror, MirrorError, Result, names};

/// Files per unit of work handed to a thread.
const CHUNK: usize = 256;

/// What [`Mirror::map_files`] gives back: the mapped files in tree order, or the first
/// failure of the caller's function (in tree order) with the file's path.
pub type MapResult<T, E> = std::result::Result<Vec<T>, (String, E)>;

impl Mirror {
    /// Calls `f(path, content)` for every file under each directory of `prefixes` for which
    /// `want(path)` holds, on up to `threads` threads, and returns the `Some` results in git
    /// tree order (prefixes in the order given). The first error of `f` in that order stops
    /// the work and is returned with its file's path; a git error is the outer error.
    pub fn map_files<T, E>(
        &self,
        commit: &CommitId,
        prefixes: &[&str],
        threads: usize,
        want: impl Fn(&str) -> bool,
        f: impl Fn(&str, &[u8]) -> std::result::Result<Option<T>, E> + Sync,
    ) -> Result<MapResult<T, E>>
    where
        T: Send,
        E: Send,
    {
        let mut files: Vec<(String, Oid)> = Vec::new();
        for prefix in prefixes {
            let Some(tree) = self.subtree(commit, prefix)? else {
                continue;
            };
            let mut base = names::normalize_prefix(prefix)?.to_owned();
            let _ = self.visit(&tree, &mut base, &mut |path, oid| {
                if want(path) {
                    files.push((path.to_owned(), oid));
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        // Blobs are read straight from the pack files when they are undeltified entries
        // (snapshot packs, pulled store packs), their content hashed against the id; others
        // (deltas after a local gc, loose objects) through libgit2.
        let packs = PackFiles::open(&self.git_dir)?;
        let read_chunk = |repo: &Repository, chunk: &[(String, Oid)]| -> Result<MapResult<T, E>> {
            let mut out = Vec::with_capacity(chunk.len());
            let located: Vec<Option<Location>> =
                chunk.iter().map(|(_, oid)| packs.locate(*oid)).collect();
            // A chunk's entries lie together in one pack when a snapshot wrote them (in tree
            // order): a window of their size reads them in one positioned read instead of one
            // per entry.
            let size = located.iter().flatten().map(|at| at.len).sum::<u64>();
            let mut window = WindowReader::with_window(&packs, size);
            for ((path, oid), at) in chunk.iter().zip(&located) {
                let mut fast = None;
                if let Some(at) = *at {
                    let bytes = window.entry(at)?;
                    if let Ok(entry) = parse_entry(bytes)
                        && entry.verified(ObjectType::Blob, *oid)
                        && let Entry::Whole { data, .. } = entry
                    {
                        fast = Some(f(path, &data));
                    }
                }
                let result = match fast {
                    Some(r) => r,
                    None => {
                        let blob = repo
                            .find_blob(*oid)
                            .ctx(|| format!("reading {path:?} of commit {commit}"))?;
                        f(path, blob.content())
                    }
                };
                match result {
                    Ok(Some(t)) => out.push(t),
                    Ok(None) => {}
                    Err(e) => return Ok(Err((path.clone(), e))),
                }
            }
            Ok(Ok(out))
        };
        let chunks: Vec<&[(String, Oid)]> = files.chunks(CHUNK).collect();
        let threads = threads.clamp(1, chunks.len().max(1));
        if threads == 1 {
            let mut out = Vec::with_capacity(files.len());
            for chunk in chunks {
                match read_chunk(&self.repo, chunk)? {
                    Ok(part) => out.extend(part),
                    Err(e) => return Ok(Err(e)),
                }
            }
            return Ok(Ok(out));
        }

        // Chunks are taken in order from a shared counter; a failing chunk stops the chunks
        // after it (those before it still run, so the failure reported is the first in order).
        let next = AtomicUsize::new(0);
        let stop_after = AtomicUsize::new(usize::MAX);
        /// One chunk's outcome, filled in by the thread that read it.
        type Slot<T, E> = Mutex<Option<Result<MapResult<T, E>>>>;
        let results: Vec<Slot<T, E>> = chunks.iter().map(|_| Mutex::new(None)).collect();
        let git_dir = self.git_dir.clone();
        std::thread::scope(|scope| {
            let worker = || {
                // The calling thread works with the mirror's own handle (`None`); the others
                // open one each.
                let run = |repo: &Repository| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() || i > stop_after.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = read_chunk(repo, chunks[i]);
                    if !matches!(r, Ok(Ok(_))) {
                        stop_after.fetch_min(i, Ordering::Relaxed);
                    }
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                };
                (run, &git_dir)
            };
            for _ in 1..threads {
                let (run, git_dir) = worker();
                let spawned = std::thread::Builder::new()
                    .name("k8s-snap-read".into())
                    .spawn_scoped(scope, move || match Repository::open_bare(git_dir) {
                        Ok(repo) => run(&repo),
                        // The calling thread reads every chunk left: no failure is lost.
                        Err(e) => {
                            tracing::debug!(error = %e, "opening the mirror on a reading thread")
                        }
                    });
                if let Err(e) = spawned {
                    tracing::debug!(error = %e, "starting a reading thread");
                }
            }
            let (run, _) = worker();
            run(&self.repo);
        });

        let mut out = Vec::with_capacity(files.len());
        for slot in results {
            let r = slot
                .into_inner()
                .map_err(|_| MirrorError::Io {
                    context: format!("reading the files of commit {commit}"),
                    source: std::io::Error::other("a reading thread panicked"),
                })?
                .ok_or_else(|| MirrorError::Io {
                    context: format!("reading the files of commit {commit}"),
                    source: std::io::Error::other("a part was not read"),
                })?;
            match r? {
                Ok(part) => out.extend(part),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    }
}
