//! End-to-end: `k8s-snap diff <snapshot> --live` (issue 19) — a snapshot against the live
//! cluster, both ways, with `diff`'s exit codes. Source A is the realistic emulator (or
//! `$K8S_SNAP_TEST_KUBECONFIG`: the first test works in a namespace of its own, deleted
//! afterwards); the restore target B an empty emulator (or `$K8S_SNAP_TEST_KUBECONFIG_B`,
//! cleaned up).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::restore::k8s_snap;
use crate::support::{DataDir, RestoreCleanup, TestCluster, created_paths};

fn changes(run_stdout: &str, change: &str) -> BTreeSet<String> {
    let items: Value = serde_json::from_str(run_stdout).unwrap();
    crate::support::paths_where(&items, "change", change)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_diff_reports_the_edit_and_the_extra_object() {
    let a = TestCluster::source().await;
    let data = DataDir::new();
    let ka = Some(a.kubeconfig.as_path());
    let ns = a.namespace("live").await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    for name in ["kept", "edited"] {
        a.post(
            &cms,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}}),
        )
        .await;
    }
    k8s_snap(&data, ka, &["snapshot", "s1", "--no-push"])
        .await
        .ok();
    let under = format!("/api/v1/namespaces/{ns}/");

    // Equal right after the snapshot.
    let same = k8s_snap(&data, ka, &["diff", "s1", "--live", "--path", &under]).await;
    assert_eq!(same.code, 0, "{}", same.stdout);
    assert!(
        same.stdout.starts_with("0 missing, 0 extra, 0 changed"),
        "{}",
        same.stdout
    );

    a.merge_patch(&format!("{cms}/edited"), &json!({"data": {"k": "changed"}}))
        .await;
    a.post(
        &cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "added", "namespace": ns}, "data": {"k": "v"}}),
    )
    .await;
    let run = k8s_snap(
        &data,
        ka,
        &["diff", "s1", "--live", "--path", &under, "-o", "json"],
    )
    .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        changes(&run.stdout, "changed"),
        BTreeSet::from([format!("{cms}/edited")])
    );
    assert_eq!(
        changes(&run.stdout, "extra"),
        BTreeSet::from([format!("{cms}/added")])
    );
    assert!(changes(&run.stdout, "missing").is_empty(), "{}", run.stdout);
    let items: Value = serde_json::from_str(&run.stdout).unwrap();
    let diff = items[0]["diff"]
        .as_str()
        .or(items[1]["diff"].as_str())
        .unwrap();
    assert!(
        diff.contains("-  k: v") && diff.contains("+  k: changed"),
        "{diff}"
    );

    // The whole emulated cluster: nothing else differs.
    if !a.is_real() {
        let run = k8s_snap(&data, ka, &["diff", "s1", "--live", "-o", "json"]).await;
        assert_eq!(run.code, 1);
        let items: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 2, "{}", run.stdout);
    }

    // --stat: one line per object and the counts.
    let stat = k8s_snap(
        &data,
        ka,
        &["diff", "s1", "--live", "--stat", "--path", &under],
    )
    .await;
    assert_eq!(stat.code, 1);
    assert!(
        stat.stdout.contains(&format!("changed  {cms}/edited\n")),
        "{}",
        stat.stdout
    );
    assert!(
        stat.stdout.contains(&format!("extra    {cms}/added\n")),
        "{}",
        stat.stdout
    );
    assert!(
        stat.stdout.contains("0 missing, 1 extra, 1 changed"),
        "{}",
        stat.stdout
    );

    // An error exits 2 (1 means "different").
    let unknown = k8s_snap(&data, ka, &["diff", "nope", "--live"]).await;
    assert_eq!(unknown.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_changed_right_after_a_restore() {
    let a = TestCluster::source().await;
    let b = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&b).await;
    let data = DataDir::new();
    let pref = data.path().join("pref.yaml");
    std::fs::write(&pref, crate::support::SYSTEM_EXCLUDED_PREFERENCE).unwrap();
    let pref = pref.to_str().unwrap();
    let kb = Some(b.kubeconfig.as_path());
    k8s_snap(&data, Some(&a.kubeconfig), &["snapshot", "s1", "--no-push"])
        .await
        .ok();
    let restored = k8s_snap(
        &data,
        kb,
        &["restore", "s1", "--preference", pref, "-o", "json"],
    )
    .await;
    cleanup.record_run(&restored);
    let status: Value = serde_json::from_str(&restored.ok().stdout).unwrap();
    let created = created_paths(&status);
    assert!(!created.is_empty());

    let run = k8s_snap(
        &data,
        kb,
        &["diff", "s1", "--live", "--preference", pref, "-o", "json"],
    )
    .await;
    assert!(
        run.code == 0 || run.code == 1,
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let changed = changes(&run.stdout, "changed");
    if b.is_real() {
        // A real target may hold other objects that differ: none of those restored may.
        assert!(changed.is_disjoint(&created), "{changed:?}");
    } else {
        assert!(changed.is_empty(), "{changed:?}");
    }
    // Nothing restored is missing.
    assert!(changes(&run.stdout, "missing").is_disjoint(&created));
    assert!(cleanup.finish().await.is_empty());
}
