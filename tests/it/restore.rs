//! End-to-end: `k8s-snap plan` and `k8s-snap restore` (issue 6 acceptance). Source A is the
//! realistic emulator (or `$K8S_SNAP_TEST_KUBECONFIG`), target B an empty emulator with its own
//! service CIDR (or `$K8S_SNAP_TEST_KUBECONFIG_B`).
//!
//! Commands run in-process through the binary's `cli` module (compiled into this test binary) so that the test exercises exactly this
//! build of the library.

use std::path::Path;

use clap::Parser as _;
use kube_emulator::{Emulator, Fixture};
use serde_json::{Value, json};

use crate::support::{DataDir, REAL_B, RestoreCleanup, Run, TestCluster, json_of};

/// The target's service CIDR when emulated (the source uses the default 10.96.0.0/16).
const B_CIDR_PREFIX: &str = "10.200.";

const PREFERENCE: &str = "apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: exclude-kube-system
spec:
  excludeNamespaces: [kube-system, kube-public, kube-node-lease]
  excludeApiPathes:
  - /api/v1/namespaces/default/services/kubernetes
  - /api/v1/namespaces/default/endpoints/kubernetes
  restoreNfsStorageClasses: [nfs]
";

/// Runs `k8s-snap --data-dir <dir> [--kubeconfig kc] args...` in this process.
pub async fn k8s_snap(data: &DataDir, kubeconfig: Option<&Path>, args: &[&str]) -> Run {
    let mut argv: Vec<String> = vec![
        "k8s-snap".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ];
    if let Some(kc) = kubeconfig {
        argv.push("--kubeconfig".into());
        argv.push(kc.display().to_string());
    }
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = match crate::k8s_snap_cli::Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            return Run {
                code: 2,
                stdout: String::new(),
                stderr: e.to_string(),
            };
        }
    };
    let mut out = Vec::new();
    let result = crate::k8s_snap_cli::run(cli, &mut out).await;
    let stdout = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(code) => Run {
            code,
            stdout,
            stderr: String::new(),
        },
        Err(e) => Run {
            code: 1,
            stdout,
            stderr: format!("{e:#}"),
        },
    }
}

pub async fn target() -> TestCluster {
    if std::env::var_os(REAL_B).is_some_and(|v| !v.is_empty()) {
        return TestCluster::target().await;
    }
    TestCluster::emulated(
        Emulator::builder()
            .fixture(Fixture::Empty)
            .service_cidr("10.200.0.0/16"),
    )
    .await
}

fn items_with<'a>(plan: &'a Value, action: &str) -> Vec<&'a Value> {
    plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == action)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_restore_rerun_and_differs() {
    let a = TestCluster::source().await;
    let b = target().await;
    let cleanup = RestoreCleanup::new(&b).await;
    let data = DataDir::new();
    let pref = data.path().join("pref.yaml");
    std::fs::write(&pref, PREFERENCE).unwrap();
    let pref = pref.to_str().unwrap();
    let kb = Some(b.kubeconfig.as_path());
    k8s_snap(&data, Some(&a.kubeconfig), &["snapshot", "s1"])
        .await
        .ok();

    // Plan: creates, preference exclusions, owner-ref exclusions; --exit-code says "changes".
    let plan = k8s_snap(
        &data,
        kb,
        &["plan", "s1", "--preference", pref, "-o", "json"],
    )
    .await
    .ok();
    let plan = json_of(&plan);
    let summary = &plan["summary"];
    for key in [
        "numSnapshotContents",
        "numPreferenceExcluded",
        "numExcluded",
        "toCreate",
        "alreadyExisted",
        "differs",
        "toUpdate",
        "unsupported",
    ] {
        assert!(summary[key].is_u64(), "summary.{key} missing: {summary}");
    }
    // A real target may already hold these objects (left there by something else than this
    // test suite, whose restores onto it run one at a time and clean up after themselves).
    if !b.is_real() {
        assert!(!items_with(&plan, "create").is_empty(), "{plan}");
    }
    assert!(summary["numPreferenceExcluded"].as_u64().unwrap() > 0);
    assert!(
        items_with(&plan, "excluded")
            .iter()
            .any(|i| i["reason"] == "owner-ref"),
        "{plan}"
    );
    assert_eq!(
        summary["toCreate"].as_u64().unwrap() as usize,
        items_with(&plan, "create").len()
    );
    let exit = k8s_snap(
        &data,
        kb,
        &["plan", "s1", "--preference", pref, "--exit-code"],
    )
    .await;
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    // The table of the default (latest) emulator profile; other profiles store other versions.
    if !b.is_real()
        && !a.is_real()
        && kube_emulator::ServerVersion::from_env() == kube_emulator::ServerVersion::Latest
    {
        let table = k8s_snap(&data, kb, &["plan", "s1", "--preference", pref])
            .await
            .ok();
        insta::assert_snapshot!("plan_table_realistic_onto_empty", table.stdout);
    }

    // Restore.
    let first = k8s_snap(
        &data,
        kb,
        &["restore", "s1", "--preference", pref, "-o", "json"],
    )
    .await;
    cleanup.record_run(&first);
    let first = json_of(&first.ok());
    assert_eq!(first["phase"], "Completed", "{first}");
    let created = strings(&first["created"]);
    assert!(!created.is_empty());
    assert_eq!(
        first["numCreated"].as_u64().unwrap() as usize,
        created.len()
    );
    assert_eq!(first["numFailed"], 0, "{}", first["failed"]);
    assert!(first["failed"].is_null());
    let excluded = strings(&first["excluded"]);
    assert!(
        excluded.iter().any(|e| e.ends_with(",(owner-ref)")),
        "{excluded:?}"
    );
    assert!(
        excluded.iter().any(|e| e.ends_with(",(service-exists)")),
        "{excluded:?}"
    );
    assert!(
        created
            .iter()
            .all(|c| !c.contains("/namespaces/kube-system")),
        "{created:?}"
    );
    for key in [
        "alreadyExisted",
        "created",
        "excluded",
        "failed",
        "updated",
        "numAlreadyExisted",
        "numCreated",
        "numExcluded",
        "numFailed",
        "numPreferenceExcluded",
        "numSnapshotContents",
        "numUpdated",
        "phase",
        "reason",
        "restoreResourceVersion",
        "restoreTimestamp",
    ] {
        assert!(first.get(key).is_some(), "status.{key} missing: {first}");
    }
    assert!(!first["restoreResourceVersion"].as_str().unwrap().is_empty());

    if !a.is_real() {
        // The realistic fixture's apps, Services (with B's clusterIPs) and NFS pairs.
        for d in [
            "shop/deployments/api",
            "shop/deployments/frontend",
            "blog/deployments/wordpress",
        ] {
            let (ns, rest) = d.split_once('/').unwrap();
            b.get(&format!("/apis/apps/v1/namespaces/{ns}/{rest}"))
                .await;
        }
        for svc in ["api", "frontend", "postgres"] {
            let s = b
                .get(&format!("/api/v1/namespaces/shop/services/{svc}"))
                .await;
            let ip = s["spec"]["clusterIP"].as_str().unwrap_or_default();
            if !b.is_real() {
                assert!(ip.starts_with(B_CIDR_PREFIX), "service {svc} got {ip}");
            }
        }
        for (claim, pv) in [
            (
                "data-postgres-0",
                "pvc-3f1c9a52-7d1e-4c6b-9a0e-2b8f5d4c1a01",
            ),
            ("uploads", "pvc-8a2d4e61-0b3f-4f7a-8c1d-6e9b0a3f5c02"),
        ] {
            let c = b
                .get(&format!(
                    "/api/v1/namespaces/shop/persistentvolumeclaims/{claim}"
                ))
                .await;
            let v = b.get(&format!("/api/v1/persistentvolumes/{pv}")).await;
            assert_eq!(c["status"]["phase"], "Bound", "{c}");
            assert_eq!(v["status"]["phase"], "Bound", "{v}");
            assert_eq!(c["spec"]["volumeName"], pv);
            assert_eq!(v["spec"]["claimRef"]["name"], claim);
            assert_eq!(v["spec"]["claimRef"]["uid"], c["metadata"]["uid"]);
        }
        // Nothing of kube-system reached B beyond what B had itself.
        let cms = b.get("/api/v1/namespaces/kube-system/configmaps").await;
        assert!(
            cms["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["metadata"]["name"] != "coredns"),
            "{cms}"
        );
    }

    // Re-running creates nothing.
    let second = k8s_snap(
        &data,
        kb,
        &["restore", "s1", "--preference", pref, "-o", "json"],
    )
    .await;
    cleanup.record_run(&second);
    let second = json_of(&second.ok());
    assert_eq!(second["numCreated"], 0, "{second}");
    assert_eq!(
        second["numAlreadyExisted"].as_u64().unwrap(),
        first["numCreated"].as_u64().unwrap() + first["numAlreadyExisted"].as_u64().unwrap()
    );
    let exit = k8s_snap(
        &data,
        kb,
        &["plan", "s1", "--preference", pref, "--exit-code"],
    )
    .await;
    assert_eq!(exit.code, 0, "{}", exit.stdout);

    // A patched ConfigMap shows as differs, with the change in the diff.
    let cm = created
        .iter()
        .find(|c| c.contains("/configmaps/") && !c.ends_with("kube-root-ca.crt"))
        .expect("a restored ConfigMap")
        .clone();
    let live = b.get(&cm).await;
    let key = live["data"]
        .as_object()
        .and_then(|d| d.keys().next().cloned())
        .expect("the ConfigMap has data");
    b.merge_patch(&cm, &json!({"data": {key.clone(): "patched-value"}}))
        .await;
    let plan = k8s_snap(
        &data,
        kb,
        &["plan", "s1", "--preference", pref, "--diff", "-o", "json"],
    )
    .await
    .ok();
    let plan = json_of(&plan);
    let item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == cm.as_str())
        .unwrap();
    assert_eq!(item["action"], "differs", "{item}");
    let diff = item["diff"].as_str().unwrap();
    assert!(diff.contains(&format!("+  {key}: patched-value")), "{diff}");
    assert_eq!(plan["summary"]["differs"], 1, "{}", plan["summary"]);

    // The cleanup (which keeps a real target clean) deletes everything the restore created,
    // Namespaces (terminating first) included.
    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the target: {left:?}");
    for c in &created {
        assert!(!b.exists(c).await, "{c} is still on the target");
    }
    assert!(created.iter().any(|c| c == "/api/v1/namespaces/shop") || a.is_real());
    // What the target had before the restore is still there.
    b.get("/api/v1/namespaces/default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_kinds_fail_clearly_and_the_rest_is_restored() {
    let a = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let b = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let data = DataDir::new();
    let pref = data.path().join("pref.yaml");
    // The CRDs stay behind, so B does not serve their custom resources.
    std::fs::write(
        &pref,
        format!("{PREFERENCE}  overwriteApiPathes: [\"/api/v1/namespaces/shop/configmaps\", \"/api/v1/namespaces/shop/services/frontend\"]\n")
            .replace(
                "  excludeApiPathes:\n",
                "  excludeApiPathes:\n  - /apis/apiextensions.k8s.io\n",
            ),
    )
    .unwrap();
    let pref = pref.to_str().unwrap();
    let kb = Some(b.kubeconfig.as_path());
    k8s_snap(&data, Some(&a.kubeconfig), &["snapshot", "s1"])
        .await
        .ok();
    let plan = json_of(
        &k8s_snap(
            &data,
            kb,
            &["plan", "s1", "--preference", pref, "-o", "json"],
        )
        .await
        .ok(),
    );
    let unsupported = items_with(&plan, "unsupported");
    assert_eq!(unsupported.len(), 3, "{plan}");
    assert!(unsupported.iter().all(|i| {
        i["reason"]
            .as_str()
            .unwrap()
            .contains("does not serve example.com/v1")
    }));

    // One path refuses every POST: those objects fail, everything else is restored.
    b.emulator().unwrap().faults().add(
        "method=POST,path=/api/v1/namespaces/shop/secrets,status=403"
            .parse()
            .unwrap(),
    );
    let status = json_of(
        &k8s_snap(
            &data,
            kb,
            &["restore", "s1", "--preference", pref, "-o", "json"],
        )
        .await
        .exit_code(1),
    );
    let failed = strings(&status["failed"]);
    assert_eq!(status["numFailed"].as_u64().unwrap() as usize, failed.len());
    assert_eq!(
        failed
            .iter()
            .filter(|f| f.contains("does not serve example.com/v1"))
            .count(),
        3,
        "{failed:?}"
    );
    let secrets: Vec<&String> = failed
        .iter()
        .filter(|f| f.contains("/shop/secrets/"))
        .collect();
    assert_eq!(secrets.len(), 2, "{failed:?}");
    assert!(
        secrets.iter().all(|f| f.contains(",Forbidden")),
        "{secrets:?}"
    );
    assert!(
        failed
            .iter()
            .all(|f| f.len() <= f.find(',').unwrap() + 1 + 300)
    );
    b.get("/apis/apps/v1/namespaces/shop/deployments/api").await;
    b.get("/api/v1/namespaces/blog/secrets/wordpress-db").await;

    // overwriteApiPathes: a changed ConfigMap and a changed Service under it are planned as
    // updates and PUT back (the Service keeps the clusterIP the target gave it: a server
    // before 1.20 refuses an update without it).
    let svc = "/api/v1/namespaces/shop/services/frontend";
    let live_svc = b.get(svc).await;
    b.merge_patch(
        svc,
        &json!({"metadata": {"labels": {"changed": "on-the-target"}}}),
    )
    .await;
    let path = "/api/v1/namespaces/shop/configmaps/frontend-config";
    let original = b.get(path).await;
    let key = original["data"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    b.merge_patch(path, &json!({"data": {key: "changed"}}))
        .await;
    let plan = json_of(
        &k8s_snap(
            &data,
            kb,
            &[
                "plan",
                "s1",
                "--preference",
                pref,
                "-o",
                "json",
                "--exit-code",
            ],
        )
        .await,
    );
    let item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == path)
        .unwrap();
    assert_eq!(item["action"], "update");
    let status = json_of(
        &k8s_snap(
            &data,
            kb,
            &["restore", "s1", "--preference", pref, "-o", "json"],
        )
        .await
        // The unsupported kinds still fail: exit 1, with the status printed.
        .exit_code(1),
    );
    let updated = strings(&status["updated"]);
    assert!(updated.contains(&path.to_string()), "{status}");
    assert!(updated.contains(&svc.to_string()), "{status}");
    assert_eq!(b.get(path).await["data"], original["data"]);
    let now = b.get(svc).await;
    assert!(now["metadata"]["labels"].get("changed").is_none(), "{now}");
    assert_eq!(now["spec"]["clusterIP"], live_svc["spec"]["clusterIP"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_snapshot_or_unreachable_target_creates_nothing() {
    let a = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let b = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let data = DataDir::new();
    k8s_snap(&data, Some(&a.kubeconfig), &["snapshot", "s1"])
        .await
        .ok();
    let rv_before = b.emulator().unwrap().resource_version();
    let run = k8s_snap(&data, Some(&b.kubeconfig), &["restore", "nope"])
        .await
        .failed();
    assert!(run.stderr.contains("\"nope\" not found"), "{}", run.stderr);
    let run = k8s_snap(&data, Some(&b.kubeconfig), &["plan", "nope"])
        .await
        .failed();
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    assert_eq!(b.emulator().unwrap().resource_version(), rv_before);

    // A target that does not answer: an error, before anything.
    let dead = data.path().join("dead.yaml");
    std::fs::write(
        &dead,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let run = k8s_snap(&data, Some(&dead), &["restore", "s1"])
        .await
        .failed();
    assert!(run.stderr.contains("127.0.0.1:9"), "{}", run.stderr);

    // A malformed preference names the field.
    let pref = data.path().join("bad.yaml");
    std::fs::write(
        &pref,
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nspec:\n  excludeNamespaces: kube-system\n",
    )
    .unwrap();
    let run = k8s_snap(
        &data,
        Some(&b.kubeconfig),
        &["restore", "s1", "--preference", pref.to_str().unwrap()],
    )
    .await
    .failed();
    assert!(
        run.stderr.contains("spec.excludeNamespaces"),
        "{}",
        run.stderr
    );
    assert_eq!(b.emulator().unwrap().resource_version(), rv_before);

    // A server-side dry run validates creates without writing; on an empty target the
    // cluster-scoped creates are checked (the namespaced ones wait for their namespace).
    let plan = json_of(
        &k8s_snap(
            &data,
            Some(&b.kubeconfig),
            &["plan", "s1", "--server-dry-run", "-o", "json"],
        )
        .await
        .ok(),
    );
    assert!(plan["summary"]["toCreate"].as_u64().unwrap() > 0);
    assert!(
        items_with(&plan, "create")
            .iter()
            .all(|i| !i["reason"].as_str().unwrap_or("").contains("refused")),
        "{plan}"
    );
    assert_eq!(b.emulator().unwrap().resource_version(), rv_before);

    // --dry-run writes nothing either.
    let status = json_of(
        &k8s_snap(
            &data,
            Some(&b.kubeconfig),
            &["restore", "s1", "--dry-run", "-o", "json"],
        )
        .await
        .ok(),
    );
    assert!(status["numCreated"].as_u64().unwrap() > 0);
    assert_eq!(b.emulator().unwrap().resource_version(), rv_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_only_in_the_store_is_pulled_then_restored() {
    let source = TestCluster::source().await;
    let b = target().await;
    let cleanup = RestoreCleanup::new(&b).await;
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().display().to_string();
    // Machine 1 takes the snapshot and pushes it to a shared store.
    let one = DataDir::new();
    k8s_snap(
        &one,
        Some(&source.kubeconfig),
        &[
            "--store",
            &store_arg,
            "snapshot",
            "shared-1",
            "--cluster",
            "a",
        ],
    )
    .await
    .ok();
    // Machine 2 has an empty data dir: restore pulls the snapshot first.
    let two = DataDir::new();
    let run = k8s_snap(
        &two,
        Some(&b.kubeconfig),
        &[
            "--store",
            &store_arg,
            "-o",
            "json",
            "restore",
            "shared-1",
            "--preference",
            "/dev/null",
        ],
    )
    .await;
    cleanup.record_run(&run);
    // An empty preference file is malformed: nothing pulled is restored, the error names it.
    assert_ne!(run.code, 0);
    let pref = two.path().join("pref.yaml");
    std::fs::write(&pref, PREFERENCE).unwrap();
    let run = k8s_snap(
        &two,
        Some(&b.kubeconfig),
        &[
            "--store",
            &store_arg,
            "-o",
            "json",
            "restore",
            "shared-1",
            "--preference",
            pref.to_str().unwrap(),
        ],
    )
    .await;
    cleanup.record_run(&run);
    let status = json_of(&run.ok());
    assert_eq!(status["phase"], "Completed", "{status}");
    assert!(status["numCreated"].as_u64().unwrap() > 0, "{status}");
    // The pulled snapshot is browsable locally now.
    two.git(&["rev-parse", "--verify", "snapshots/shared-1"])
        .ok();
    // A name in neither the mirror nor the store: a clear error, nothing created.
    let run = k8s_snap(
        &two,
        Some(&b.kubeconfig),
        &["--store", &store_arg, "restore", "never-taken"],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("never-taken"), "{}", run.stderr);
}

/// The Endpoints of a Service without a selector (an external database, say) are written by
/// its users: nothing on the target makes them again, so they are restored with the Service.
/// Those of a Service with a selector are left to the target's endpoints controller
/// (`service-exists`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_a_service_without_a_selector_are_restored() {
    let source = TestCluster::source().await;
    let target = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let ns = source.namespace("it-endpoints").await;
    let services = format!("/api/v1/namespaces/{ns}/services");
    let service = |name: &str, selector: Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"port": 5432, "protocol": "TCP"}]}})
    };
    source.post(&services, &service("db", Value::Null)).await;
    source
        .post(&services, &service("web", json!({"app": "web"})))
        .await;
    let endpoints = format!("/api/v1/namespaces/{ns}/endpoints");
    let manual = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 5432, "protocol": "TCP"}]}]})
    };
    source.post(&endpoints, &manual("db")).await;
    // A real server's endpoints controller makes web's; the emulator runs none.
    if !source.exists(&format!("{endpoints}/web")).await {
        source.post(&endpoints, &manual("web")).await;
    }
    let data = DataDir::new();
    crate::support::snapshot_namespace(&data, &source.kubeconfig, "s", &ns, &[]).await;
    let all = format!("/api/v1/namespaces/{ns}/**");
    let status = cleanup
        .restore_json(&data, &["s", "--create-namespaces", "--include", &all])
        .await;
    assert_eq!(status["numFailed"], 0, "{status}");
    let created = strings(&status["created"]);
    assert!(created.contains(&format!("{endpoints}/db")), "{status}");
    assert!(
        strings(&status["excluded"]).contains(&format!("{endpoints}/web,(service-exists)")),
        "{status}"
    );
    let restored = target.get(&format!("{endpoints}/db")).await;
    assert_eq!(
        restored["subsets"][0]["addresses"][0]["ip"], "10.1.2.3",
        "{restored}"
    );
    assert!(cleanup.finish().await.is_empty());
}
