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
        identities: None,
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

/// A file drop of a snapshot whose Secrets are sealed (`snapshot --encrypt-to`): a watcher
/// without an identity fails that request naming the recipient and the missing identity,
/// creating nothing, while the other request goes on; a bad identity file stops the watcher
/// at start, naming the file and never its content; with `--identity` the Secret comes back
/// with its original data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_snapshot_restores_from_a_file_drop_only_with_the_identity() {
    use base64::Engine as _;

    let data = DataDir::new();
    let a = TestCluster::source().await;
    let sealed_ns = a.namespace("it-watch-enc").await;
    let plain_ns = a.namespace("it-watch-plain").await;
    let plaintext = "watch-drop-secret-plaintext-7f3a";
    let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
    a.post(
        &format!("/api/v1/namespaces/{sealed_ns}/secrets"),
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "dropped-secret", "namespace": sealed_ns},
                "data": {"password": b64}}),
    )
    .await;
    a.post(
        &format!("/api/v1/namespaces/{plain_ns}/configmaps"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "dropped", "namespace": plain_ns}, "data": {"k": "v"}}),
    )
    .await;
    let (identity, recipient) = crate::encryption::keygen(&data, "id.txt");
    let ak = Some(a.kubeconfig.as_path());
    data.run(
        ak,
        &[
            "snapshot",
            "sealed",
            "-q",
            "--include-namespaces",
            &sealed_ns,
            "--encrypt-to",
            &recipient,
        ],
    )
    .ok();
    data.run(
        ak,
        &["snapshot", "plain", "-q", "--include-namespaces", &plain_ns],
    )
    .ok();
    // The stored Secret is sealed (no plaintext in the mirror's file).
    let stored = data.git(&[
        "show",
        &format!("snapshots/sealed:api/v1/namespaces/{sealed_ns}/secrets/dropped-secret.yaml"),
    ]);
    assert!(
        stored.stdout.contains("k8s-snap:v2:") && !stored.stdout.contains(&b64),
        "{}",
        stored.stdout
    );

    let b = TestCluster::target().await;
    let drop_dir = tempfile::tempdir().unwrap();
    let d = drop_dir.path();
    let cleanup = RestoreCleanup::new(&b).await;
    cleanup.record_watch_results(&d.join("results"));
    let watch = |identity: Option<&Path>| {
        let mut cmd = data.command(Some(&b.kubeconfig));
        cmd.env_remove("K8S_SNAP_IDENTITY").args([
            "watch",
            "--once",
            "--quiet-period",
            "300ms",
            "-o",
            "json",
        ]);
        if let Some(id) = identity {
            cmd.arg("--identity").arg(id);
        }
        cmd.arg(d);
        run(cmd)
    };

    // 1. No identity: the sealed request fails, nothing of it is created; the plain one runs.
    std::fs::write(d.join("sealed.yaml"), request("sealed", &sealed_ns)).unwrap();
    std::fs::write(d.join("plain.yaml"), request("plain", &plain_ns)).unwrap();
    let out = watch(None).exit_code(1);
    let stats: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(stats, json!({"done": 1, "failed": 1}));
    assert_eq!(names(&d.join("failed")), ["sealed.yaml"]);
    assert_eq!(names(&d.join("done")), ["plain.yaml"]);
    let r = result(d, "sealed");
    assert_eq!(r["status"]["phase"], "Failed", "{r}");
    let reason = r["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&recipient)
            && reason.contains("--identity")
            && reason.contains("nothing was written"),
        "{reason}"
    );
    assert!(!b.exists(&format!("/api/v1/namespaces/{sealed_ns}")).await);
    assert!(
        b.exists(&format!("/api/v1/namespaces/{plain_ns}/configmaps/dropped"))
            .await
    );

    // 2. A bad identity file: one line naming it, no key material, the request left pending.
    std::fs::write(d.join("sealed-again.yaml"), request("sealed", &sealed_ns)).unwrap();
    let bad = data.path().join("bad-id.txt");
    let key_line = std::fs::read_to_string(&identity)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_owned();
    // A real key cut short: not an identity, and its text must not be echoed.
    std::fs::write(&bad, format!("{}\n", &key_line[..key_line.len() - 4])).unwrap();
    let out = watch(Some(&bad)).failed();
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad-id.txt") && err.contains("line 1"),
        "{err}"
    );
    assert!(!err.contains(&key_line[20..40]), "{err}");
    assert!(d.join("sealed-again.yaml").exists(), "not processed");

    // 3. With the identity: the Secret is created with its original data.
    let out = watch(Some(&identity)).ok();
    let stats: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(stats, json!({"done": 1, "failed": 0}));
    let r = result(d, "sealed-again");
    assert_eq!(r["status"]["phase"], "Completed", "{r}");
    let secret = b
        .get(&format!(
            "/api/v1/namespaces/{sealed_ns}/secrets/dropped-secret"
        ))
        .await;
    assert_eq!(secret["data"]["password"], b64);
    let status_text = std::fs::read_to_string(d.join("results/sealed-again.status.yaml")).unwrap();
    assert!(!status_text.contains(&b64) && !status_text.contains(plaintext));

    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the target: {left:?}");
}
