//! End-to-end: reviewed plans (issue 19) — `plan --out` writes a plan file, `apply` applies
//! exactly that plan, and refuses (writing nothing, naming each change) when a planned object
//! changed on the target since; `--allow-stale` applies a fresh plan instead. Source A is the
//! realistic emulator (or `$K8S_SNAP_TEST_KUBECONFIG`), target B an empty emulator (or
//! `$K8S_SNAP_TEST_KUBECONFIG_B`); everything restored is deleted again.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::restore::k8s_snap;
use crate::support::{DataDir, RestoreCleanup, TestCluster, created_paths};

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn paths_with(plan: &Value, action: &str) -> BTreeSet<String> {
    crate::support::paths_where(&plan["items"], "action", action)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_out_then_apply_and_refuse_stale() {
    let a = TestCluster::source().await;
    let b = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&b).await;
    let data = DataDir::new();
    let pref = data.path().join("pref.yaml");
    std::fs::write(&pref, crate::support::SYSTEM_EXCLUDED_PREFERENCE).unwrap();
    let pref = pref.to_str().unwrap();
    let kb = Some(b.kubeconfig.as_path());
    k8s_snap(&data, Some(&a.kubeconfig), &["snapshot", "s1"])
        .await
        .ok();
    let listed: Value = serde_json::from_str(
        &k8s_snap(&data, None, &["list", "--local-only", "-o", "json"])
            .await
            .ok()
            .stdout,
    )
    .unwrap();
    let commit = listed[0]["commit"].as_str().unwrap().to_string();

    // The plan file records the snapshot commit, the target and every decision.
    let p1 = data.path().join("p1.json");
    k8s_snap(
        &data,
        kb,
        &[
            "plan",
            "s1",
            "--preference",
            pref,
            "--out",
            p1.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let file = read_json(&p1);
    assert_eq!(file["apiVersion"], "k8s-snap.rywt.io/v1");
    assert_eq!(file["kind"], "RestorePlan");
    assert_eq!(file["snapshot"], json!({"name": "s1", "commit": commit}));
    let uid = b.get("/api/v1/namespaces/kube-system").await["metadata"]["uid"].clone();
    assert!(uid.as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(file["target"]["clusterUid"], uid);
    assert_eq!(
        file["preference"]["spec"]["excludeNamespaces"],
        json!(["kube-system", "kube-public", "kube-node-lease"])
    );
    let to_create = paths_with(&file, "create");
    assert!(!to_create.is_empty(), "{file}");
    assert_eq!(
        file["summary"]["toCreate"].as_u64().unwrap() as usize,
        to_create.len()
    );
    for i in file["items"].as_array().unwrap() {
        if i["action"] == "create" {
            assert!(i.get("liveResourceVersion").is_none(), "{i}");
        }
        if i["action"] == "exists" || i["action"] == "differs" {
            assert!(i["liveResourceVersion"].is_string(), "{i}");
        }
    }

    // The table: counts per namespace, then only what changes something or needs attention;
    // `--all` lists every object.
    let table = k8s_snap(&data, kb, &["plan", "s1", "--preference", pref])
        .await
        .ok()
        .stdout;
    assert!(table.starts_with("NAMESPACE "), "{table}");
    assert!(table.contains("\nTOTAL "), "{table}");
    let item_lines = |t: &str, action: &str| {
        t.lines()
            .filter(|l| l.starts_with(&format!("{action} ")))
            .count()
    };
    let n_items = file["items"].as_array().unwrap().len();
    assert_eq!(item_lines(&table, "create"), to_create.len(), "{table}");
    assert_eq!(item_lines(&table, "preference-excluded"), 0, "{table}");
    assert_eq!(item_lines(&table, "exists"), 0, "{table}");
    let all = k8s_snap(&data, kb, &["plan", "s1", "--preference", pref, "--all"])
        .await
        .ok()
        .stdout;
    let listed: usize = [
        "create",
        "exists",
        "differs",
        "update",
        "excluded",
        "preference-excluded",
        "unsupported",
    ]
    .iter()
    .map(|a| item_lines(&all, a))
    .sum();
    assert_eq!(listed, n_items, "{all}");
    assert!(!all.contains("--all lists every object"), "{all}");

    // `apply` creates exactly what the plan said.
    let applied = k8s_snap(&data, kb, &["apply", p1.to_str().unwrap(), "-o", "json"]).await;
    cleanup.record_run(&applied);
    let status: Value = serde_json::from_str(&applied.ok().stdout).unwrap();
    assert_eq!(status["numFailed"], 0, "{}", status["failed"]);
    let created = created_paths(&status);
    // Every planned create was made, except objects the cluster itself made meanwhile once
    // their namespace existed (a namespace's default ServiceAccount, kube-root-ca.crt), which
    // the POST found already there; nothing else was written.
    let existed: BTreeSet<String> = status["alreadyExisted"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(created.is_subset(&to_create), "{created:?}");
    for p in to_create.difference(&created) {
        assert!(existed.contains(p), "{p} neither created nor found");
        assert!(
            p.ends_with("/serviceaccounts/default") || p.ends_with("/configmaps/kube-root-ca.crt"),
            "{p} was planned `create` but not created"
        );
    }
    assert_eq!(status["numUpdated"], 0);

    // A second reviewed plan; then two planned objects change on the target.
    let p2 = data.path().join("p2.json");
    k8s_snap(
        &data,
        kb,
        &[
            "plan",
            "s1",
            "--preference",
            pref,
            "--out",
            p2.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let file2 = read_json(&p2);
    let cms: Vec<String> = paths_with(&file2, "exists")
        .into_iter()
        .filter(|p| {
            created.contains(p) && p.contains("/configmaps/") && !p.ends_with("/kube-root-ca.crt")
        })
        .take(2)
        .collect();
    assert_eq!(
        cms.len(),
        2,
        "two restored ConfigMaps planned `exists`: {file2}"
    );
    let (edited, deleted) = (&cms[0], &cms[1]);
    b.merge_patch(
        edited,
        &json!({"metadata": {"labels": {"edited-after-review": "yes"}}}),
    )
    .await;
    b.cluster()
        .await
        .request_bytes(http::Method::DELETE, deleted, None, None)
        .await
        .unwrap();
    let refused = k8s_snap(&data, kb, &["apply", p2.to_str().unwrap()]).await;
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    let stale_lines: Vec<&str> = refused
        .stderr
        .lines()
        .filter(|l| l.starts_with('/'))
        .collect();
    assert_eq!(stale_lines.len(), 2, "{}", refused.stderr);
    assert!(
        stale_lines
            .iter()
            .any(|l| l.starts_with(&format!("{edited}: planned exists"))
                && l.contains("now differs")),
        "{}",
        refused.stderr
    );
    assert!(
        stale_lines
            .iter()
            .any(|l| l.starts_with(&format!("{deleted}: planned exists"))
                && l.contains("now create")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing was written"),
        "{}",
        refused.stderr
    );
    // Nothing written: the deleted ConfigMap is still missing, the edit still there.
    assert!(!b.exists(deleted).await);
    assert_eq!(
        b.get(edited).await["metadata"]["labels"]["edited-after-review"],
        "yes"
    );

    // `--allow-stale` applies a fresh plan: the deleted ConfigMap comes back.
    let again = k8s_snap(
        &data,
        kb,
        &["apply", p2.to_str().unwrap(), "--allow-stale", "-o", "json"],
    )
    .await;
    cleanup.record_run(&again);
    let status: Value = serde_json::from_str(&again.ok().stdout).unwrap();
    assert_eq!(status["created"], json!([deleted]), "{status}");
    assert!(b.exists(deleted).await);

    // A plan file for another cluster is refused too (the target's identity).
    let mut other = file2.clone();
    other["target"]["clusterUid"] = json!("another-cluster");
    let p3 = data.path().join("p3.json");
    std::fs::write(&p3, other.to_string()).unwrap();
    let refused = k8s_snap(&data, kb, &["apply", p3.to_str().unwrap()]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("target: planned for")
            && refused.stderr.contains("another-cluster"),
        "{}",
        refused.stderr
    );
    assert!(cleanup.finish().await.is_empty());
}
