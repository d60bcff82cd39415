//! File drops (docs/design.md §8): a watched directory where dropping a `Restore` request file runs
//! a restore, and its result is written back beside it.
//!
//! Layout of the watched directory `<dir>`:
//! - `<dir>/*.yaml|*.yml|*.json`: pending requests (dotfiles and editor temp files ignored);
//! - `<dir>/preferences/<name>.yaml`: preferences named by `spec.restorePreferenceName`;
//! - `<dir>/results/<stem>.status.yaml`: the result of each request (written atomically);
//! - `<dir>/done/`, `<dir>/failed/`: requests once run.
//!
//! Owns: discovering complete request files (notify events, debounced, plus a quiet period
//! on size and mtime), their arrival order, a bounded queue that runs requests one at a time
//! per target cluster, and the result files and moves. Must not touch: how a restore is
//! planned or applied — that is the [`RestoreExecutor`] given by the caller (`cli`, `controller`).

pub mod executor;
pub mod request;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::RecursiveMode;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use executor::{EngineExecutor, FixedStore, StoreSource};
pub use request::{RequestError, RestoreRequest};

use crate::restore::status::{Phase, RestoreStatus};

/// Sub-directories of the watched directory.
pub(crate) const RESULTS_DIR: &str = "results";
pub(crate) const DONE_DIR: &str = "done";
pub(crate) const FAILED_DIR: &str = "failed";
pub(crate) const PREFERENCES_DIR: &str = "preferences";

/// Errors that stop the watcher (one request's failure never does).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watch directory (or one of its subdirectories) cannot be set up or read.
    #[error("watch directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file-system watch cannot be set up.
    #[error("cannot watch {path}: {message}")]
    Notify {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        message: String,
    },
}

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The watched directory.
    pub dir: PathBuf,
    /// A file is taken once its size and mtime have not changed for this long (writers that
    /// rename a complete file into place are taken after the same delay).
    pub quiet_period: Duration,
    /// Parsed requests waiting to run; beyond it, files wait on disk.
    pub max_queued: usize,
    /// Target clusters restored at once (requests of one target always run one at a time).
    pub max_parallel_targets: usize,
    /// Process the files present (and arriving meanwhile) and return once none is left.
    pub once: bool,
}

impl WatchOptions {
    /// Options for `dir` with defaults: 2 s quiet period, 256 queued, 2 parallel targets.
    pub fn new(dir: impl Into<PathBuf>) -> WatchOptions {
        WatchOptions {
            dir: dir.into(),
            quiet_period: Duration::from_secs(2),
            max_queued: 256,
            max_parallel_targets: 2,
            once: false,
        }
    }
}

/// What a successful restore reports back.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The Restore status in the original shape (its phase may be `Failed`).
    pub status: RestoreStatus,
    /// The plan summary (`numSnapshotContents`, `toCreate`, ...), when a plan was made.
    pub plan: Option<Value>,
}

/// A restore that could not run (unknown snapshot, unreachable target...).
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// Why; becomes the status `reason`. Must not hold credentials.
    pub reason: String,
}

/// A boxed, sendable future (the return type of [`RestoreExecutor::execute`]).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one restore request: plans and applies it against the request's target.
pub trait RestoreExecutor: Send + Sync + 'static {
    /// Runs `request`; `Err` when the restore could not run at all.
    fn execute(&self, request: RestoreRequest)
    -> BoxFuture<'_, Result<RestoreOutcome, JobFailure>>;
}

/// Counts of requests handled by a watcher.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WatchStats {
    /// Requests that ran and completed.
    pub done: u64,
    /// Requests that were rejected or did not complete.
    pub failed: u64,
}

/// The paths of a watched directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub dir: PathBuf,
    pub results: PathBuf,
    pub done: PathBuf,
    pub failed: PathBuf,
    pub preferences: PathBuf,
}

impl Layout {
    /// Creates the sub-directories when missing.
    pub fn create(dir: &Path) -> Result<Layout, WatchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WatchError::Dir { path, source }
        };
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        if !meta.is_dir() {
            return Err(WatchError::Dir {
                path: dir.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            });
        }
        let layout = Layout {
            dir: dir.to_path_buf(),
            results: dir.join(RESULTS_DIR),
            done: dir.join(DONE_DIR),
            failed: dir.join(FAILED_DIR),
            preferences: dir.join(PREFERENCES_DIR),
        };
        for d in [
            &layout.results,
            &layout.done,
            &layout.failed,
            &layout.preferences,
        ] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        Ok(layout)
    }

    /// `results/<stem>.status.yaml`.
    pub(crate) fn result_path(&self, request_file: &Path) -> PathBuf {
        self.results
            .join(format!("{}.status.yaml", file_stem(request_file)))
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a file name in the watched directory is a request: `.yaml`, `.yml` or `.json`, not
/// a dotfile (`.r1.yaml.swp`, `.tmp-x.yaml`), not an editor backup (`r1.yaml~`, `#r1.yaml#`).
pub(crate) fn is_request_file_name(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    let Some((stem, ext)) = name.rsplit_once('.') else {
        return false;
    };
    !stem.is_empty() && matches!(ext, "yaml" | "yml" | "json")
}

/// A file seen in the directory, not yet taken.
#[derive(Debug)]
struct Candidate {
    seq: u64,
    size: u64,
    mtime: Option<SystemTime>,
    changed_at: Instant,
}

/// The files of the directory waiting to become complete, in arrival order.
#[derive(Debug, Default)]
struct Tracker {
    candidates: HashMap<PathBuf, Candidate>,
    taken: HashSet<PathBuf>,
    next_seq: u64,
}

impl Tracker {
    /// Re-reads the directory: new files join in arrival order (by mtime, then name), changed
    /// files restart their quiet period, vanished files are forgotten.
    fn scan(&mut self, dir: &Path, now: Instant) -> Result<(), WatchError> {
        let entries = std::fs::read_dir(dir).map_err(|source| WatchError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut seen = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_request_file_name(name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            seen.push((
                meta.modified().ok(),
                name.to_string(),
                entry.path(),
                meta.len(),
            ));
        }
        seen.sort();
        let present: HashSet<&PathBuf> = seen.iter().map(|(_, _, p, _)| p).collect();
        self.candidates.retain(|p, _| present.contains(p));
        self.taken.retain(|p| present.contains(p));
        for (mtime, _, path, size) in seen {
            if self.taken.contains(&path) {
                continue;
            }
            match self.candidates.get_mut(&path) {
                Some(c) => {
                    if c.size != size || c.mtime != mtime {
                        c.size = size;
                        c.mtime = mtime;
                        c.changed_at = now;
                    }
                }
                None => {
                    self.next_seq += 1;
                    self.candidates.insert(
                        path,
                        Candidate {
                            seq: self.next_seq,
                            size,
                            mtime,
                            changed_at: now,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` complete files, oldest arrival first; they are marked taken.
    fn take_ready(&mut self, now: Instant, quiet: Duration, limit: usize) -> Vec<PathBuf> {
        let mut ready: Vec<(u64, PathBuf)> = self
            .candidates
            .iter()
            .filter(|(_, c)| {
                now.duration_since(c.changed_at) >= quiet
                    && c.mtime.is_none_or(|m| {
                        SystemTime::now()
                            .duration_since(m)
                            .is_ok_and(|age| age >= quiet)
                    })
            })
            .map(|(p, c)| (c.seq, p.clone()))
            .collect();
        ready.sort();
        ready.truncate(limit);
        for (_, p) in &ready {
            self.candidates.remove(p);
            self.taken.insert(p.clone());
        }
        ready.into_iter().map(|(_, p)| p).collect()
    }

    /// Forgets a taken file once it was moved away.
    fn release(&mut self, path: &Path) {
        self.taken.remove(path);
    }

    fn is_idle(&self) -> bool {
        self.candidates.is_empty() && self.taken.is_empty()
    }
}

struct Job {
    file: PathBuf,
    request: RestoreRequest,
}

/// Watches `opts.dir` and runs every request dropped into it until `shutdown` resolves (or,
/// with `once`, until no request is left). Requests already present are processed first.
pub async fn run(
    opts: WatchOptions,
    executor: Arc<dyn RestoreExecutor>,
    shutdown: impl Future<Output = ()>,
) -> Result<WatchStats, WatchError> {
    let layout = Arc::new(Layout::create(&opts.dir)?);
    let span = tracing::info_span!("watch", dir = %layout.dir.display());
    watch_loop(opts, layout, executor, shutdown)
        .instrument(span)
        .await
}

/// The body of [`run`], inside its span.
async fn watch_loop(
    opts: WatchOptions,
    layout: Arc<Layout>,
    executor: Arc<dyn RestoreExecutor>,
    shutdown: impl Future<Output = ()>,
) -> Result<WatchStats, WatchError> {
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(200),
        None,
        move |_events: notify_debouncer_full::DebounceEventResult| {
            let _ = wake_tx.send(());
        },
    )
    .map_err(|e| WatchError::Notify {
        path: layout.dir.clone(),
        message: e.to_string(),
    })?;
    debouncer
        .watch(&layout.dir, RecursiveMode::NonRecursive)
        .map_err(|e| WatchError::Notify {
            path: layout.dir.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(dir = %layout.dir.display(), "watching for restore requests");

    let mut tracker = Tracker::default();
    let mut queues: HashMap<String, VecDeque<Job>> = HashMap::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<(String, PathBuf, bool)> = JoinSet::new();
    let mut stats = WatchStats::default();
    // Events wake the loop at once; the tick ends quiet periods and catches missed events.
    let mut tick = tokio::time::interval(
        Duration::from_millis(250).min(opts.quiet_period.max(Duration::from_millis(50))),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let now = Instant::now();
        tracker.scan(&layout.dir, now)?;
        let queued: usize = queues.values().map(VecDeque::len).sum();
        let room = opts.max_queued.saturating_sub(queued);
        for file in tracker.take_ready(now, opts.quiet_period, room) {
            match request::load(&file, &layout.preferences) {
                Ok(request) => {
                    tracing::info!(request = %request.name, snapshot = %request.backup_name, "request queued");
                    queues
                        .entry(request.target_key())
                        .or_default()
                        .push_back(Job { file, request });
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "request rejected");
                    let status = failed_status(e.to_string());
                    if let Err(e) = finish(&layout, &file, None, &status, None, false) {
                        tracing::error!(file = %file.display(), error = %e, "cannot record the result");
                    }
                    tracker.release(&file);
                    stats.failed += 1;
                }
            }
        }
        // Start the oldest queued request of each idle target, up to the parallelism bound.
        let mut idle: Vec<(&String, &VecDeque<Job>)> = queues
            .iter()
            .filter(|(k, q)| !q.is_empty() && !busy.contains(*k))
            .collect();
        idle.sort_by_key(|(k, _)| k.as_str().to_owned());
        let starts: Vec<String> = idle.into_iter().map(|(k, _)| k.clone()).collect();
        for key in starts {
            if busy.len() >= opts.max_parallel_targets.max(1) {
                break;
            }
            let Some(job) = queues.get_mut(&key).and_then(VecDeque::pop_front) else {
                continue;
            };
            busy.insert(key.clone());
            let executor = executor.clone();
            let layout = layout.clone();
            tasks.spawn(async move {
                let ok = run_job(&layout, executor.as_ref(), &job).await;
                (key, job.file, ok)
            });
        }
        queues.retain(|_, q| !q.is_empty());
        if opts.once && tracker.is_idle() && queues.is_empty() && tasks.is_empty() {
            break;
        }
        tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next() => {
                match joined {
                    Ok((key, file, ok)) => {
                        busy.remove(&key);
                        tracker.release(&file);
                        if ok { stats.done += 1 } else { stats.failed += 1 }
                    }
                    Err(e) => {
                        // A panicking executor: the request stays in place and is retried
                        // after a restart; the watcher keeps serving others.
                        tracing::error!(error = %e, "a restore task died");
                        busy.clear();
                    }
                }
            }
            _ = wake_rx.recv() => {}
            _ = tick.tick() => {}
        }
    }
    // Requests still running stay in place: a restore is idempotent, so the next watcher
    // re-runs them safely.
    tasks.abort_all();
    drop(debouncer);
    Ok(stats)
}

/// Runs one request and records its result; true when it completed.
async fn run_job(layout: &Layout, executor: &dyn RestoreExecutor, job: &Job) -> bool {
    let span = tracing::info_span!("restore_request", request = %job.request.name, snapshot = %job.request.backup_name);
    let outcome = executor
        .execute(job.request.clone())
        .instrument(span.clone())
        .await;
    // The rest is synchronous: no `.await` inside the span.
    span.in_scope(|| {
        let (status, plan) = match outcome {
            Ok(o) => (o.status, o.plan),
            Err(f) => (failed_status(f.reason), None),
        };
        let ok = status.phase == Phase::Completed;
        tracing::info!(phase = %status.phase, created = status.num_created, failed = status.num_failed, "request finished");
        let result = tokio::task::block_in_place(|| {
            finish(
                layout,
                &job.file,
                Some(&job.request),
                &status,
                plan.as_ref(),
                ok,
            )
        });
        if let Err(e) = result {
            tracing::error!(file = %job.file.display(), error = %e, "cannot record the result");
        }
        ok
    })
}

fn failed_status(reason: String) -> RestoreStatus {
    RestoreStatus {
        phase: Phase::Failed,
        reason,
        restore_timestamp: Some(now_rfc3339()),
        ..RestoreStatus::default()
    }
}

/// Now, to the second (`2026-11-26T01:02:03Z`).
fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The result document: a `Restore` with the request's spec (never its kubeconfig) and status.
pub(crate) fn result_document(
    name: &str,
    request: Option<&RestoreRequest>,
    status: &RestoreStatus,
    plan: Option<&Value>,
) -> Value {
    let mut spec = serde_json::Map::new();
    if let Some(r) = request {
        spec.insert("backupName".into(), json!(r.backup_name));
        if let Some(c) = &r.cluster_name {
            spec.insert("clusterName".into(), json!(c));
        }
        if let Some(p) = r.preference.as_ref().and_then(|p| p.name.as_ref()) {
            spec.insert("restorePreferenceName".into(), json!(p));
        }
    }
    let mut status_value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let (Some(plan), Value::Object(m)) = (plan, &mut status_value) {
        m.insert("plan".into(), plan.clone());
    }
    json!({
        "apiVersion": crate::restore::preference::API_VERSION,
        "kind": "Restore",
        "metadata": {"name": name},
        "spec": spec,
        "status": status_value,
    })
}

/// Writes the result atomically, then moves the request to `done/` or `failed/`.
fn finish(
    layout: &Layout,
    file: &Path,
    request: Option<&RestoreRequest>,
    status: &RestoreStatus,
    plan: Option<&Value>,
    ok: bool,
) -> std::io::Result<PathBuf> {
    let doc = result_document(&file_stem(file), request, status, plan);
    let text = crate::tree::to_yaml(&doc).map_err(std::io::Error::other)?;
    write_atomic(&layout.result_path(file), text.as_bytes())?;
    let dest_dir = if ok { &layout.done } else { &layout.failed };
    let dest = free_name(dest_dir, file);
    std::fs::rename(file, &dest)?;
    Ok(dest)
}

/// Writes `bytes` to a temp file beside `path`, syncs it and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// `dir/<file name>`, or `dir/<stem>-<n>.<ext>` when taken (a request name dropped again).
fn free_name(dir: &Path, file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let first = dir.join(&name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name.as_str(), ""));
    (1..)
        .map(|n| dir.join(format!("{stem}-{n}.{ext}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_file_names() {
        for ok in ["r1.yaml", "r1.yml", "a.b.json"] {
            assert!(is_request_file_name(ok), "{ok}");
        }
        for no in [
            ".r1.yaml",
            ".r1.yaml.swp",
            "r1.yaml~",
            "#r1.yaml#",
            "r1.txt",
            ".yaml",
            "r1",
        ] {
            assert!(!is_request_file_name(no), "{no}");
        }
    }

    #[test]
    fn tracker_waits_for_quiet_files_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        for (name, age) in [("b.yaml", 30), ("a.yaml", 10), ("c.yaml", 50)] {
            let p = dir.path().join(name);
            std::fs::write(&p, "x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(old + Duration::from_secs(age)).unwrap();
        }
        std::fs::write(dir.path().join(".tmp.yaml"), "x").unwrap();
        let mut t = Tracker::default();
        let t0 = Instant::now();
        t.scan(dir.path(), t0).unwrap();
        assert!(
            t.take_ready(t0, Duration::from_secs(1), 10).is_empty(),
            "quiet period first"
        );
        let later = t0 + Duration::from_secs(2);
        t.scan(dir.path(), later).unwrap();
        let ready = t.take_ready(later, Duration::from_secs(1), 2);
        let names: Vec<_> = ready.iter().map(|p| file_stem(p)).collect();
        assert_eq!(names, ["a", "b"], "oldest mtime first, bounded");
        t.scan(dir.path(), later).unwrap();
        let rest = t.take_ready(later, Duration::from_secs(1), 10);
        assert_eq!(rest.len(), 1, "taken files are not offered twice");
    }
}
