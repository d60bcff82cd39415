//! Snapshots under failure (emulator only: fault injection, auth, consistency windows).

use std::time::Duration;

use kube_emulator::{Emulator, Fixture};
use serde_json::json;

use crate::support::{DataDir, TestCluster};

fn rule(s: &str) -> kube_emulator::FaultRule {
    s.parse().expect("fault rule")
}

fn tags(data: &DataDir) -> String {
    data.git(&["tag", "-l"]).stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_the_snapshot_succeeds() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let emu = cluster.emulator.as_ref().unwrap();
    let f503 = emu.faults().add(rule(
        "method=GET,path=/api/v1/configmaps,status=503,times=2",
    ));
    let f429 = emu.faults().add(rule(
        "method=GET,path=/apis/apps/v1/deployments,status=429,retry-after=1,times=1",
    ));
    let fdrop = emu
        .faults()
        .add(rule("method=GET,path=/api/v1/secrets,drop,times=1"));
    let data = DataDir::new();
    let started = std::time::Instant::now();
    let run = data
        .run(Some(&cluster.kubeconfig), &["snapshot", "s1"])
        .ok();
    // Retried requests that then succeeded are not errors (debug logs only).
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
    assert_eq!(emu.faults().fired(f503), 2);
    assert_eq!(emu.faults().fired(f429), 1);
    assert_eq!(emu.faults().fired(fdrop), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    data.git(&["rev-parse", "--verify", "snapshots/s1"]).ok();
    let files = data
        .git(&[
            "ls-tree",
            "-r",
            "--name-only",
            "snapshots/s1",
            "--",
            "api/v1",
        ])
        .ok()
        .stdout;
    assert!(
        files.lines().any(|f| f.contains("/configmaps/")),
        "configmaps were read after the retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_keeps_failing_fails_the_snapshot_naming_it() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let emu = cluster.emulator.as_ref().unwrap();
    let data = DataDir::new();
    data.run(Some(&cluster.kubeconfig), &["snapshot", "before"])
        .ok();
    let refs_before = data.git(&["for-each-ref"]).ok().stdout;
    emu.faults()
        .add(rule("method=GET,path=/apis/apps/v1/deployments,status=500"));
    let run = data
        .run(Some(&cluster.kubeconfig), &["snapshot", "s1"])
        .failed();
    assert!(
        run.stderr.contains("deployments"),
        "names the resource: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("500"),
        "names the cause: {}",
        run.stderr
    );
    assert_eq!(
        data.git(&["for-each-ref"]).ok().stdout,
        refs_before,
        "mirror refs unchanged"
    );
    data.git(&["fsck", "--no-dangling"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_wrong_token_fail_clearly() {
    let cluster = TestCluster::emulated(
        Emulator::builder()
            .fixture(Fixture::Empty)
            .token("right-token"),
    )
    .await;
    let data = DataDir::new();

    // Wrong token: 401, and the token never appears in the output.
    let kc = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap()
        .replace("right-token", "wrong-token-123");
    let bad = data.path().join("bad-token");
    std::fs::write(&bad, kc).unwrap();
    let run = data.run(Some(&bad), &["snapshot", "s1"]).failed();
    assert!(
        run.stderr.contains("401") && run.stderr.contains("Unauthorized"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("wrong-token-123") && !run.stdout.contains("wrong-token-123"));

    // Unreachable: a closed port.
    let (_refusing, port) = crate::support::refusing_port();
    let kc = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap()
        .replace(
            &cluster.emulator.as_ref().unwrap().url(),
            &format!("http://127.0.0.1:{port}"),
        );
    let gone = data.path().join("gone");
    std::fs::write(&gone, kc).unwrap();
    let run = data.run(Some(&gone), &["snapshot", "s1"]).failed();
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "names the server: {}",
        run.stderr
    );
    assert!(run.stderr.contains("connect"), "{}", run.stderr);
    assert_eq!(tags(&data).trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_equals_the_cluster_at_the_snapshot_resource_version() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let emu = cluster.emulator.as_ref().unwrap();
    let ns = cluster.namespace("it-consistency").await;
    for i in 0..20 {
        cluster
            .post(
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}, "data": {"v": "0"}}),
            )
            .await;
    }
    // Slow the configmap list down, and change objects once it has started (after R was chosen).
    let slow = emu
        .faults()
        .add(rule("method=GET,path=/api/v1/configmaps,latency=1500ms"));
    let data = DataDir::new();
    let kubeconfig = cluster.kubeconfig.clone();
    let snap = tokio::task::spawn_blocking(move || {
        let run = data.run(Some(&kubeconfig), &["snapshot", "s1", "--threads", "2"]);
        (run, data)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while emu.faults().fired(slow) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot never listed configmaps"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..20 {
        cluster
            .merge_patch(
                &format!("/api/v1/namespaces/{ns}/configmaps/cm-{i}"),
                &json!({"data": {"v": "1"}}),
            )
            .await;
    }
    cluster
        .post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}, "data": {"v": "1"}}),
        )
        .await;
    let (run, data) = snap.await.unwrap();
    run.ok();
    emu.faults().clear();

    let meta = data
        .git(&["show", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    let meta: k8s_snap::tree::SnapshotMeta = k8s_snap::tree::from_yaml_str(&meta).unwrap();
    assert_eq!(meta.consistency, k8s_snap::tree::Consistency::Exact);
    // What the server had at that resourceVersion, read back from its history.
    let at_rv = cluster
        .get(&format!(
            "/api/v1/namespaces/{ns}/configmaps?resourceVersion={}&resourceVersionMatch=Exact",
            meta.resource_version
        ))
        .await;
    let expected: Vec<String> = at_rv["items"]
        .as_array()
        .unwrap()
        .iter()
        // Skip ConfigMaps the server adds by itself (kube-root-ca.crt).
        .filter(|cm| cm["data"]["v"].is_string())
        .map(|cm| {
            format!(
                "{}={}",
                cm["metadata"]["name"].as_str().unwrap(),
                cm["data"]["v"].as_str().unwrap()
            )
        })
        .collect();
    let mut in_tree = Vec::new();
    let files = data
        .git(&[
            "ls-tree",
            "-r",
            "--name-only",
            "snapshots/s1",
            "--",
            &format!("api/v1/namespaces/{ns}/configmaps"),
        ])
        .ok()
        .stdout;
    for f in files.lines() {
        let text = data
            .git(&["show", &format!("snapshots/s1:{f}")])
            .ok()
            .stdout;
        let v = k8s_snap::tree::from_yaml(&text).unwrap();
        if !v["data"]["v"].is_string() {
            continue;
        }
        in_tree.push(format!(
            "{}={}",
            v["metadata"]["name"].as_str().unwrap(),
            v["data"]["v"].as_str().unwrap()
        ));
    }
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    in_tree.sort();
    assert_eq!(in_tree, expected_sorted);
    assert!(
        !in_tree.iter().any(|e| e.starts_with("late=")),
        "objects created after R are not in the tree"
    );
    assert!(
        in_tree.iter().all(|e| e.ends_with("=0")),
        "changes after R are not in the tree: {in_tree:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_snapshots_into_one_data_dir_at_once_do_not_corrupt_the_mirror() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let data = std::sync::Arc::new(DataDir::new());
    let handles: Vec<_> = ["p1", "p2", "p3"]
        .into_iter()
        .map(|name| {
            let data = data.clone();
            let kc = cluster.kubeconfig.clone();
            std::thread::spawn(move || data.run(Some(&kc), &["snapshot", name]))
        })
        .collect();
    for h in handles {
        h.join().unwrap().ok();
    }
    let t = tags(&data);
    assert_eq!(t.lines().count(), 3, "{t}");
    data.git(&["fsck", "--no-dangling"]).ok();
    let log = data
        .git(&["log", "--format=%s", "clusters/emulated"])
        .ok()
        .stdout;
    assert_eq!(log.lines().count(), 3, "{log}");
}

/// An aggregated API whose backend does not answer (an APIService naming a Service: listed in
/// `/apis`, its discovery answered 503 `service unavailable`, as a real aggregator does) does
/// not fail a snapshot or a plan: the snapshot names it on stderr, records it in
/// `snapshot.yaml` and its `-o json`, and `show` notes it. (Emulator only: on a shared real
/// cluster such an APIService would disturb the other tests' discovery and namespace
/// deletion.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_aggregated_api_is_recorded_and_does_not_fail_the_snapshot() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    cluster
        .post(
            "/apis/apiregistration.k8s.io/v1/apiservices",
            &json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": "v1alpha1.widgets.k8s-snap.test"},
                "spec": {"group": "widgets.k8s-snap.test", "version": "v1alpha1",
                    "service": {"namespace": "default", "name": "widgets"},
                    "groupPriorityMinimum": 1000, "versionPriority": 15,
                    "insecureSkipTLSVerify": true}}),
        )
        .await;
    let gv = "widgets.k8s-snap.test/v1alpha1";
    let data = DataDir::new();
    let run = data
        .run(Some(&cluster.kubeconfig), &["snapshot", "s1", "-o", "json"])
        .ok();
    assert!(
        run.stderr.contains(&format!(
            "warning: {gv} was not read: the server lists it but answered 503"
        )),
        "{}",
        run.stderr
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        summary["unavailableApis"][0]["groupVersion"], gv,
        "{summary}"
    );
    assert!(
        summary["numberOfContents"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let meta = data
        .git(&["show", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    assert!(
        meta.contains(&format!("unavailableApis:\n- groupVersion: {gv}\n")),
        "{meta}"
    );
    let show = data.run(None, &["show", "s1", "/api/v1/namespaces"]).ok();
    assert!(
        show.stderr
            .contains(&format!("note: s1 lacks the objects of {gv}")),
        "{}",
        show.stderr
    );
    // The same cluster as a restore target: its discovery goes on without the group too.
    let plan = data
        .run(Some(&cluster.kubeconfig), &["plan", "s1", "-o", "json"])
        .ok();
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["summary"]["toCreate"], 0, "{}", plan["summary"]);
}
