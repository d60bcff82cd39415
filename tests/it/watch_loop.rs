//! The file-drop watcher's mechanics with real files and a recording executor: completeness
//! (slow writes, renames), arrival order, exactly-once under bursts, malformed files,
//! restarts with pending files. The end-to-end restores are in `watch.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_snap::restore::status::{Phase, RestoreStatus};
use k8s_snap::watch::{
    self, BoxFuture, JobFailure, RestoreExecutor, RestoreOutcome, RestoreRequest, WatchOptions,
};

/// Records every request it runs; snapshots named `missing*` fail like an unknown snapshot.
#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<String>>,
    delay: Duration,
}

impl RestoreExecutor for Recorder {
    fn execute(&self, r: RestoreRequest) -> BoxFuture<'_, Result<RestoreOutcome, JobFailure>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.runs.lock().unwrap().push(r.name.clone());
            if r.backup_name.starts_with("missing") {
                return Err(JobFailure {
                    reason: format!("snapshot {:?} not found", r.backup_name),
                });
            }
            Ok(RestoreOutcome {
                status: RestoreStatus {
                    phase: Phase::Completed,
                    num_created: 1,
                    ..RestoreStatus::default()
                },
                plan: None,
            })
        })
    }
}

fn request(snapshot: &str) -> String {
    format!(
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nmetadata:\n  name: r\nspec:\n  backupName: {snapshot}\n"
    )
}

fn opts(dir: &Path) -> WatchOptions {
    let mut o = WatchOptions::new(dir);
    o.quiet_period = Duration::from_millis(400);
    o
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn status(dir: &Path, stem: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("results/{stem}.status.yaml"))).unwrap();
    k8s_snap::tree::from_yaml(&text).unwrap()
}

/// Runs a watcher until `until` holds (checked every 100 ms) or 30 s pass; returns its stats.
async fn watch_until(
    o: WatchOptions,
    ex: Arc<Recorder>,
    until: impl Fn() -> bool + Send + 'static,
) -> watch::WatchStats {
    let stop = async move {
        for _ in 0..300 {
            if until() {
                // Let any stray duplicate show itself before stopping.
                tokio::time::sleep(Duration::from_millis(600)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("watcher did not reach the expected state in 30 s");
    };
    watch::run(o, ex, stop).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_renamed_files_is_processed_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ex = Arc::new(Recorder::default());
    let writer = {
        let d = d.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 0..100 {
                let tmp = d.join(format!(".r{i:03}.yaml.part"));
                std::fs::write(&tmp, request("s1")).unwrap();
                std::fs::rename(&tmp, d.join(format!("r{i:03}.yaml"))).unwrap();
            }
        })
    };
    let done = d.join("done");
    let stats = watch_until(opts(&d), ex.clone(), move || names(&done).len() >= 100).await;
    writer.await.unwrap();
    assert_eq!(stats.done, 100);
    let runs = ex.runs.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &runs {
        *counts.entry(r).or_default() += 1;
    }
    assert_eq!(counts.len(), 100);
    assert!(
        counts.values().all(|&c| c == 1),
        "each processed exactly once"
    );
    let mut sorted = runs.clone();
    sorted.sort();
    assert_eq!(
        runs, sorted,
        "one target: requests run one at a time in arrival order"
    );
    assert_eq!(names(&d.join("results")).len(), 100);
    assert_eq!(status(&d, "r042")["status"]["phase"], "Completed");
    assert!(
        names(&d).iter().all(|n| !n.ends_with(".yaml")),
        "{:?}",
        names(&d)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_write_is_read_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ex = Arc::new(Recorder::default());
    let writer = {
        let d = d.clone();
        tokio::spawn(async move {
            use std::io::Write;
            let text = request("s1");
            let (a, b) = text.split_at(text.len() / 2);
            let mut f = std::fs::File::create(d.join("slow.yaml")).unwrap();
            f.write_all(a.as_bytes()).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            f.write_all(b.as_bytes()).unwrap();
        })
    };
    let mut o = opts(&d);
    o.quiet_period = Duration::from_millis(1500);
    let done = d.join("done");
    let stats = watch_until(o, ex.clone(), move || !names(&done).is_empty()).await;
    writer.await.unwrap();
    assert_eq!(stats, watch::WatchStats { done: 1, failed: 0 });
    assert_eq!(names(&d.join("done")), ["slow.yaml"]);
    assert_eq!(status(&d, "slow")["spec"]["backupName"], "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_with_a_reason_and_the_watcher_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bad.yaml"), "spec: [\n").unwrap();
    std::fs::write(d.join("unknown.yaml"), request("missing-snap")).unwrap();
    std::fs::write(d.join("good.json"), r#"{"apiVersion":"clustersnapshot.rywt.io/v1alpha1","kind":"Restore","spec":{"backupName":"s1"}}"#).unwrap();
    std::fs::write(d.join(".hidden.yaml"), request("s1")).unwrap();
    std::fs::write(d.join("notes.txt"), "not a request").unwrap();
    let ex = Arc::new(Recorder::default());
    let mut o = opts(d);
    o.once = true;
    let stats = watch::run(o, ex.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(stats, watch::WatchStats { done: 1, failed: 2 });
    assert_eq!(names(&d.join("failed")), ["bad.yaml", "unknown.yaml"]);
    assert_eq!(names(&d.join("done")), ["good.json"]);
    let bad = status(d, "bad");
    assert_eq!(bad["status"]["phase"], "Failed");
    assert!(
        bad["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed"),
        "{bad}"
    );
    let unknown = status(d, "unknown");
    assert!(
        unknown["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("missing-snap"),
        "{unknown}"
    );
    // Ignored files stay where they are, untouched.
    assert!(d.join(".hidden.yaml").exists() && d.join("notes.txt").exists());
    assert_eq!(
        ex.runs.lock().unwrap().len(),
        2,
        "the malformed file never reaches a restore"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    for i in 0..3 {
        std::fs::write(d.join(format!("p{i}.yaml")), request("s1")).unwrap();
    }
    // A first watcher stops while a slow restore runs: that request stays in place.
    let slow = Arc::new(Recorder {
        delay: Duration::from_secs(30),
        ..Recorder::default()
    });
    let stop = tokio::time::sleep(Duration::from_millis(1500));
    let stats = watch::run(opts(&d), slow, stop).await.unwrap();
    assert_eq!(stats, watch::WatchStats::default());
    assert_eq!(names(&d).iter().filter(|n| n.ends_with(".yaml")).count(), 3);
    // The next watcher finds all three and runs them.
    let ex = Arc::new(Recorder::default());
    let mut o = opts(&d);
    o.once = true;
    let stats = watch::run(o, ex.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(stats.done, 3);
    assert_eq!(names(&d.join("done")), ["p0.yaml", "p1.yaml", "p2.yaml"]);
    // Moves into done/ and result writes never trigger work.
    assert_eq!(ex.runs.lock().unwrap().len(), 3);
}
