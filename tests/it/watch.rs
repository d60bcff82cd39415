//! File-drop restores end to end (issue 8 acceptance): source A snapshotted as `s1`, a watcher
//! targeting cluster B, request files written the ways real writers do. Runs against the
//! emulators, or unchanged against real clusters from `K8S_SNAP_TEST_KUBECONFIG(_B)`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::{DataDir, RestoreCleanup, TestCluster, run};

/// A restore request for `snapshot` limited to namespace `ns` (inline preference).
fn request(snapshot: &str, ns: &str) -> String {
    format!(
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nmetadata:\n  name: r\nspec:\n  backupName: {snapshot}\n  preference:\n    includeNamespaces: [{ns}]\n"
    )
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

fn result(dir: &Path, stem: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("results/{stem}.status.yaml")))
        .unwrap_or_else(|e| panic!("results/{stem}.status.yaml: {e}"));
    k8s_snap::tree::from_yaml(&text).unwrap()
}

/// Source A with a namespace of our own holding a ConfigMap, snapshotted as `s1`.
async fn snapshot_source(data: &DataDir) -> (TestCluster, String) {
    let a = TestCluster::source().await;
    let ns = a.namespace("it-watch").await;
    a.post(
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "dropped", "namespace": ns}, "data": {"k": "v"}}),
    )
    .await;
    data.run(Some(&a.kubeconfig), &["snapshot", "s1", "-q"])
        .ok();
    (a, ns)
}

/// A watcher (the same executor `k8s-snap watch` builds) on `dir` targeting `b`, until `until`.
async fn watch_until(
    data: &DataDir,
    b: &TestCluster,
    dir: &Path,
    until: impl Fn() -> bool + Send + 'static,
) -> k8s_snap::watch::WatchStats {
    let executor = k8s_snap::watch::EngineExecutor {
        git_dir: data.git_dir(),
        default_target: k8s_snap::cluster::ConnectOptions {
            kubeconfig: Some(b.kubeconfig.clone()),
            ..Default::default()
        },
        store: None,
        options: Default::default(),
    };
    let mut opts = k8s_snap::watch::WatchOptions::new(dir);
    opts.quiet_period = Duration::from_millis(1500);
    let stop = async move {
        for _ in 0..600 {
            if until() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the watcher did not finish in 60 s");
    };
    k8s_snap::watch::run(opts, Arc::new(executor), stop)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_requests_restore_onto_the_target() {
    let data = DataDir::new();
    let (_a, ns) = snapshot_source(&data).await;
    let b = TestCluster::target().await;
    let drop_dir = tempfile::tempdir().unwrap();
    let d: PathBuf = drop_dir.path().to_path_buf();
    let cleanup = RestoreCleanup::new(&b).await;
    cleanup.record_watch_results(&d.join("results"));

    let writer = {
        let d = d.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            // 1. Written in two chunks a second apart.
            let text = request("s1", &ns);
            let (first, second) = text.split_at(text.len() / 2);
            let mut f = std::fs::File::create(d.join("chunked.yaml")).unwrap();
            f.write_all(first.as_bytes()).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            f.write_all(second.as_bytes()).unwrap();
            drop(f);
            // 2. Malformed, an unknown snapshot, and an unreachable target.
            std::fs::write(d.join("malformed.yaml"), "apiVersion: [\n").unwrap();
            std::fs::write(d.join("unknown.yaml"), request("never-taken", &ns)).unwrap();
            let unreachable = format!(
                "{}  kubeconfig: |\n    apiVersion: v1\n    kind: Config\n    clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:9'}}}}]\n    users: [{{name: u, user: {{token: drop-secret-token}}}}]\n    contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\n    current-context: x\n",
                request("s1", &ns)
            );
            std::fs::write(d.join("unreachable.yaml"), unreachable).unwrap();
            // 3. Twenty requests at once, each written to a dotfile then renamed.
            for i in 0..20 {
                let tmp = d.join(format!(".burst-{i:02}.yaml.tmp"));
                std::fs::write(&tmp, request("s1", &ns)).unwrap();
                std::fs::rename(&tmp, d.join(format!("burst-{i:02}.yaml"))).unwrap();
            }
        })
    };
    let done_dir = d.join("done");
    let failed_dir = d.join("failed");
    let stats = watch_until(&data, &b, &d, move || {
        names(&done_dir).len() + names(&failed_dir).len() >= 24
    })
    .await;
    writer.await.unwrap();
    assert_eq!((stats.done, stats.failed), (21, 3), "{stats:?}");

    // The chunked request completed and its objects exist on B.
    let chunked = result(&d, "chunked");
    assert_eq!(chunked["status"]["phase"], "Completed", "{chunked}");
    assert!(
        chunked["status"]["numCreated"].as_u64().unwrap() > 0,
        "{chunked}"
    );
    assert_eq!(
        chunked["status"]["plan"]["numSnapshotContents"],
        chunked["status"]["numSnapshotContents"]
    );
    assert_eq!(chunked["spec"]["backupName"], "s1");
    let cm = b
        .get(&format!("/api/v1/namespaces/{ns}/configmaps/dropped"))
        .await;
    assert_eq!(cm["data"]["k"], "v");

    // All twenty burst requests ran once each and completed (restores are idempotent, so
    // they find everything already there).
    let done = names(&d.join("done"));
    assert_eq!(
        done.iter().filter(|n| n.starts_with("burst-")).count(),
        20,
        "{done:?}"
    );
    assert!(done.contains(&"chunked.yaml".to_string()));
    for i in 0..20 {
        let r = result(&d, &format!("burst-{i:02}"));
        assert_eq!(r["status"]["phase"], "Completed", "{r}");
        assert_eq!(r["status"]["numCreated"], 0, "{r}");
    }

    // The bad ones failed with reasons naming the cause; no secret leaked.
    assert_eq!(
        names(&d.join("failed")),
        ["malformed.yaml", "unknown.yaml", "unreachable.yaml"]
    );
    let malformed = result(&d, "malformed");
    assert!(
        malformed["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed"),
        "{malformed}"
    );
    let unknown = result(&d, "unknown");
    assert!(
        unknown["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("never-taken"),
        "{unknown}"
    );
    let unreachable = std::fs::read_to_string(d.join("results/unreachable.status.yaml")).unwrap();
    assert!(unreachable.contains("does not answer"), "{unreachable}");
    assert!(!unreachable.contains("drop-secret-token"), "{unreachable}");
    // Nothing left pending; results and moves did not trigger work.
    assert!(
        names(&d).iter().all(|n| !n.ends_with(".yaml")),
        "{:?}",
        names(&d)
    );
    assert_eq!(names(&d.join("results")).len(), 24);

    // The cleanup reads what the watcher's restores created from their results and deletes it.
    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the target: {left:?}");
    assert!(!b.exists(&format!("/api/v1/namespaces/{ns}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_processes_pending_requests_once_and_exits() {
    let data = DataDir::new();
    let (_a, ns) = snapshot_source(&data).await;
    let b = TestCluster::target().await;
    let drop_dir = tempfile::tempdir().unwrap();
    let d = drop_dir.path();
    let cleanup = RestoreCleanup::new(&b).await;
    cleanup.record_watch_results(&d.join("results"));
    std::fs::create_dir_all(d.join("preferences")).unwrap();
    std::fs::write(
        d.join("preferences/only-ours.yaml"),
        format!("apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: only-ours\nspec:\n  includeNamespaces: [{ns}]\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("pending.yaml"),
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: s1\n  restorePreferenceName: only-ours\n",
    )
    .unwrap();
    let mut cmd = data.command(Some(&b.kubeconfig));
    cmd.args(["watch", "--once", "--quiet-period", "300ms", "-o", "json"])
        .arg(d);
    let out = run(cmd).ok();
    let stats: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(stats, json!({"done": 1, "failed": 0}));
    assert_eq!(names(&d.join("done")), ["pending.yaml"]);
    let r = result(d, "pending");
    assert_eq!(r["spec"]["restorePreferenceName"], "only-ours");
    assert!(r["status"]["numCreated"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["status"]["numPreferenceExcluded"].as_u64().unwrap() > 0,
        "{r}"
    );
}
