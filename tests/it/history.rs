//! End-to-end: `k8s-snap log` (issue 19) — the history of one ConfigMap across five snapshots
//! of the source cluster (the realistic emulator, or `$K8S_SNAP_TEST_KUBECONFIG`: the test
//! works in a namespace of its own, deleted afterwards).

use serde_json::{Value, json};

use crate::restore::k8s_snap;
use crate::support::{DataDir, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lists_the_changes_and_the_deletion() {
    let a = TestCluster::source().await;
    let data = DataDir::new();
    let ka = Some(a.kubeconfig.as_path());
    let ns = a.namespace("log").await;
    let path = format!("/api/v1/namespaces/{ns}/configmaps/settings");
    a.post(
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": ns}, "data": {"mode": "one"}}),
    )
    .await;
    // A neighbour that changes in every snapshot: its changes are not the followed object's.
    a.post(
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "noisy", "namespace": ns}, "data": {"n": "0"}}),
    )
    .await;
    let noisy = format!("/api/v1/namespaces/{ns}/configmaps/noisy");
    for (n, name) in ["s1", "s2", "s3", "s4", "s5"].iter().enumerate() {
        match *name {
            "s3" => {
                a.merge_patch(&path, &json!({"data": {"mode": "two"}}))
                    .await;
            }
            "s4" => {
                a.merge_patch(&path, &json!({"data": {"mode": "three"}}))
                    .await;
            }
            "s5" => {
                a.cluster()
                    .await
                    .request_bytes(http::Method::DELETE, &path, None, None)
                    .await
                    .unwrap();
            }
            _ => {}
        }
        a.merge_patch(&noisy, &json!({"data": {"n": n.to_string()}}))
            .await;
        k8s_snap(
            &data,
            ka,
            &["snapshot", name, "--cluster", "hist", "--no-push"],
        )
        .await
        .ok();
    }

    let log = k8s_snap(&data, None, &["log", &path, "-o", "json"])
        .await
        .ok();
    let steps: Value = serde_json::from_str(&log.stdout).unwrap();
    let got: Vec<(String, String)> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s.get("diff").is_none(), "{s}");
            (
                s["snapshot"].as_str().unwrap().to_string(),
                s["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("s1", "added"),
        ("s3", "changed"),
        ("s4", "changed"),
        ("s5", "removed"),
    ]
    .iter()
    .map(|(s, c)| (s.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{}", log.stdout);

    // The table, and the changes as diffs.
    let table = k8s_snap(&data, None, &["log", &path, "--cluster", "hist"])
        .await
        .ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("SNAPSHOT"), "{}", table.stdout);
    assert_eq!(lines.len(), 5, "{}", table.stdout);
    assert!(
        lines[2].starts_with("s3 ") && lines[2].ends_with("changed"),
        "{}",
        table.stdout
    );
    let patch = k8s_snap(&data, None, &["log", &path, "--patch"]).await.ok();
    for line in [
        "-  mode: one",
        "+  mode: two",
        "-  mode: two",
        "+  mode: three",
        "-  mode: three",
    ] {
        assert!(patch.stdout.contains(line), "{line:?} in {}", patch.stdout);
    }
    assert!(
        patch.stdout.contains(&format!("+++ s3{path}")),
        "{}",
        patch.stdout
    );

    // An object in no snapshot; a path that is not an object's; an unknown cluster.
    let none = k8s_snap(
        &data,
        None,
        &["log", &format!("/api/v1/namespaces/{ns}/configmaps/never")],
    )
    .await
    .ok();
    assert!(
        none.stdout.contains("is in none of the 5 snapshots"),
        "{}",
        none.stdout
    );
    let bad = k8s_snap(&data, None, &["log", "/api/v1"]).await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("not an object's content path"),
        "{}",
        bad.stderr
    );
    let bad = k8s_snap(&data, None, &["log", &path, "--cluster", "other"]).await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("no snapshots of cluster \"other\""),
        "{}",
        bad.stderr
    );
}
