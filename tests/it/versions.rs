//! Every resource at every server version (issue 13): per-resource versions in snapshots,
//! restores across versions, Jobs and server-generated fields. Emulator profiles only (each
//! test needs a given release); the version-independent end-to-end tests run on every
//! profile with `KUBE_EMULATOR_SERVER_VERSION`.

use kube_emulator::{Fixture, ServerVersion};
use serde_json::{Value, json};

use crate::support::{DataDir, RestoreCleanup, TestCluster};

pub fn cronjob(name: &str, api_version: &str) -> Value {
    json!({"apiVersion": api_version, "kind": "CronJob", "metadata": {"name": name},
        "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}})
}

fn files(data: &DataDir, snapshot: &str) -> Vec<String> {
    data.git(&[
        "ls-tree",
        "-r",
        "--name-only",
        &format!("snapshots/{snapshot}"),
    ])
    .ok()
    .stdout
    .lines()
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_19_snapshot_holds_cronjobs_at_v1beta1_and_ingresses_once() {
    let cluster = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Realistic).await;
    let ns = cluster.namespace("it-v119").await;
    cluster
        .post(
            &format!("/apis/batch/v1beta1/namespaces/{ns}/cronjobs"),
            &cronjob("nightly", "batch/v1beta1"),
        )
        .await;
    cluster
        .post(
            &format!("/apis/extensions/v1beta1/namespaces/{ns}/ingresses"),
            &json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "old"},
                "spec": {"backend": {"serviceName": "web", "servicePort": 80}}}),
        )
        .await;
    let data = DataDir::new();
    let kc = Some(cluster.kubeconfig.as_path());
    data.run(kc, &["snapshot", "s119", "--cluster", "old"]).ok();
    let files = files(&data, "s119");
    let cj = format!("apis/batch/v1beta1/namespaces/{ns}/cronjobs/nightly.yaml");
    assert!(files.contains(&cj), "{files:?}");
    // Ingresses once, under the non-deprecated group.
    let ingresses: Vec<&String> = files.iter().filter(|f| f.contains("/ingresses/")).collect();
    assert!(
        ingresses
            .iter()
            .all(|f| f.starts_with("apis/networking.k8s.io/v1/")),
        "{ingresses:?}"
    );
    assert!(ingresses.contains(&&format!(
        "apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/old.yaml"
    )));
    assert_eq!(ingresses.len(), 2, "{ingresses:?}"); // the fixture's and ours
    assert!(!files.iter().any(|f| f.starts_with("apis/extensions/")));
    let resources = data
        .git(&["show", "snapshots/s119:.k8s-snap/resources.yaml"])
        .ok()
        .stdout;
    let resources: Value = serde_saphyr::from_str(&resources).unwrap();
    let entry = |g: &str, r: &str| {
        resources
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["group"] == g && e["resource"] == r)
            .cloned()
            .collect::<Vec<_>>()
    };
    let cronjobs = entry("batch", "cronjobs");
    assert_eq!(cronjobs.len(), 1);
    assert_eq!(cronjobs[0]["version"], "v1beta1");
    assert_eq!(cronjobs[0]["count"], 2); // the fixture's and ours
    assert!(entry("extensions", "ingresses").is_empty());
    assert_eq!(
        entry("policy", "poddisruptionbudgets")[0]["version"],
        "v1beta1"
    );
    let meta = data
        .git(&["show", "snapshots/s119:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    assert!(meta.contains("v1.19.0"), "{meta}");
}

/// A preference restoring only namespace `ns`.
fn only(ns: &str) -> String {
    format!(
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: only\nspec:\n  includeNamespaces: [{ns}]\n  includeApiPathes: [/api/v1/namespaces/{ns}, /apis]\n"
    )
}

pub fn plan_actions(plan: &Value) -> Vec<(String, String)> {
    plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_string(),
                i["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A data dir holding snapshot `s` of `source` (cluster name `a`).
fn snapshotted(source: &TestCluster) -> DataDir {
    let data = DataDir::new();
    data.run(
        Some(&source.kubeconfig),
        &["snapshot", "s", "--cluster", "a"],
    )
    .ok();
    data
}

/// A new namespace `prefix-…` on `source` holding the ServiceAccount `account`.
async fn namespace_with_account(source: &TestCluster, prefix: &str, account: &str) -> String {
    let ns = source.namespace(prefix).await;
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}),
        )
        .await;
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_service_accounts_restore_onto_a_server_that_generates_their_fields() {
    let source = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let target = TestCluster::emulated_at(ServerVersion::Latest, Fixture::Empty).await;
    let ns = namespace_with_account(&source, "it-jobs", "worker").await;
    let job = source
        .post(
            &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
            &json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
                "spec": {"parallelism": 1, "template": {"metadata": {"labels": {"app": "once"}}, "spec": {
                    "restartPolicy": "Never", "serviceAccountName": "worker",
                    "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}),
        )
        .await;
    let source_uid = job["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["controller-uid"],
        source_uid
    );
    let sa = source
        .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/worker"))
        .await;
    assert_eq!(sa["secrets"].as_array().unwrap().len(), 1, "{sa}");

    let data = snapshotted(&source);
    let pref_path = data.path().join("pref.yaml");
    std::fs::write(&pref_path, only(&ns)).unwrap();
    let pref = pref_path.to_str().unwrap();
    let kb = Some(target.kubeconfig.as_path());
    restored(&data, &target.kubeconfig, pref).await;

    let job = target
        .get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/once"))
        .await;
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_ne!(uid, source_uid);
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["controller-uid"],
        uid
    );
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["app"], "once");
    // No reference to a Secret the target does not have.
    let sa = target
        .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/worker"))
        .await;
    for s in sa["secrets"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap();
        target
            .get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
            .await;
    }
    // Right after the restore, everything restored plans as `exists`.
    let plan = crate::restore::k8s_snap(
        &data,
        kb,
        &["plan", "s", "--preference", pref, "-o", "json"],
    )
    .await
    .ok();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    for (path, action) in plan_actions(&plan) {
        if path.contains(&ns) {
            assert!(
                action == "exists" || action == "excluded" || action == "preference-excluded",
                "{path}: {action}"
            );
        }
    }
    assert_eq!(plan["summary"]["toCreate"], 0, "{plan}");
    assert_eq!(plan["summary"]["differs"], 0, "{plan}");

    // Overwritten (`overwriteApiPathes`) after a change on the target: the PUT keeps the
    // selector and labels the target generated (a Job's selector and template are immutable).
    let job_path = format!("/apis/batch/v1/namespaces/{ns}/jobs/once");
    target
        .merge_patch(&job_path, &json!({"spec": {"parallelism": 3}}))
        .await;
    std::fs::write(
        &pref_path,
        format!("{}  overwriteApiPathes: [{job_path}]\n", only(&ns)),
    )
    .unwrap();
    let status = restored(&data, &target.kubeconfig, pref).await;
    assert_eq!(status["updated"], json!([job_path]), "{status}");
    let after = target.get(&job_path).await;
    assert_eq!(after["spec"]["parallelism"], 1, "{after}");
    assert_eq!(after["spec"]["selector"], job["spec"]["selector"]);
    assert_eq!(after["metadata"]["uid"], uid);
}

const EXCLUDE_SYSTEM: &str = "apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: no-system
spec:
  excludeNamespaces: [kube-system, kube-public, kube-node-lease]
  excludeApiPathes:
  - /api/v1/namespaces/default/services/kubernetes
  - /api/v1/namespaces/default/endpoints/kubernetes
  restoreNfsStorageClasses: [nfs]
";

async fn put(cluster: &TestCluster, path: &str, body: &Value) {
    cluster
        .cluster()
        .await
        .request_bytes(
            http::Method::PUT,
            path,
            Some(serde_json::to_vec(body).unwrap()),
            Some("application/json"),
        )
        .await
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
}

/// Waits (up to 5 s) until the scheduler has bound Pod `path` to a node.
async fn scheduled(cluster: &TestCluster, path: &str) {
    for _ in 0..100 {
        if cluster.get(path).await["spec"]["nodeName"].is_string() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} was not scheduled");
}

/// `restore s --preference PREF -o json` onto `kb`: its status, which must name no failure.
async fn restored(data: &DataDir, kb: &std::path::Path, pref: &str) -> Value {
    let run = crate::restore::k8s_snap(
        data,
        Some(kb),
        &["restore", "s", "--preference", pref, "-o", "json"],
    )
    .await
    .ok();
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["numFailed"], 0, "{status}");
    status
}

async fn plan_json(data: &DataDir, kb: &std::path::Path, pref: &str, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "s", "--preference", pref, "--diff", "-o", "json"];
    args.extend_from_slice(extra);
    let run = crate::restore::k8s_snap(data, Some(kb), &args).await.ok();
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_on_the_target_is_found_locally_and_by_a_server_side_diff() {
    drift_is_found(ServerVersion::Latest).await;
}

/// The same on a v1.19 server, which refuses an update of a Service without its clusterIP:
/// the server-side diff's dry runs carry what the target allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_found_by_a_server_side_diff_on_a_1_19_server() {
    drift_is_found(ServerVersion::V1_19).await;
}

async fn drift_is_found(v: ServerVersion) {
    let source = TestCluster::emulated_at(v, Fixture::Realistic).await;
    let target = TestCluster::emulated_at(v, Fixture::Empty).await;
    // A Pod no controller owns: restored without the node it ran on, then scheduled on the
    // target, whose server refuses any update that would unbind it.
    let pod = "/api/v1/namespaces/shop/pods/debug";
    source
        .post(
            "/api/v1/namespaces/shop/pods",
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await;
    scheduled(&source, pod).await;
    let data = snapshotted(&source);
    let pref_path = data.path().join("pref.yaml");
    std::fs::write(&pref_path, EXCLUDE_SYSTEM).unwrap();
    let pref = pref_path.to_str().unwrap();
    let kb = target.kubeconfig.as_path();
    restored(&data, kb, pref).await;
    scheduled(&target, pod).await;

    // A fresh restore: nothing differs, by either method.
    for extra in [&[][..], &["--server-side-diff"][..]] {
        let plan = plan_json(&data, kb, pref, extra).await;
        assert_eq!(plan["summary"]["differs"], 0, "{extra:?}: {plan}");
        assert_eq!(plan["summary"]["toCreate"], 0, "{extra:?}: {plan}");
    }
    // Every dry run was accepted (none fell back to the local comparison), the Pod's too.
    let plan = plan_json(&data, kb, pref, &["--server-side-diff"]).await;
    let items = plan["items"].as_array().unwrap();
    let refused: Vec<&Value> = items
        .iter()
        .filter(|i| i["reason"].is_string() && i["action"] == "exists")
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    let debug = items.iter().find(|i| i["path"] == pod).unwrap();
    assert_eq!(debug["method"], "server-side-diff", "{debug}");

    let cm = "/api/v1/namespaces/shop/configmaps/frontend-config";
    target
        .merge_patch(cm, &json!({"data": {"added": "1"}}))
        .await;
    let svc = "/api/v1/namespaces/shop/services/api";
    target
        .merge_patch(svc, &json!({"metadata": {"labels": {"drift-label": "x"}}}))
        .await;
    let secret = "/api/v1/namespaces/shop/secrets/api-credentials";
    target
        .merge_patch(
            secret,
            &json!({"metadata": {"annotations": {"drift-annotation": "x"}}}),
        )
        .await;
    let deploy = "/apis/apps/v1/namespaces/shop/deployments/api";
    let mut d = target.get(deploy).await;
    let container = d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["env"].is_array())
        .expect("a container with env vars");
    container["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "DRIFT_ENV", "value": "1"}));
    put(&target, deploy, &d).await;
    // An image is what a Pod's update may change.
    let mut p = target.get(pod).await;
    p["spec"]["containers"][0]["image"] = json!("busybox:2");
    put(&target, pod, &p).await;

    let changed = [
        (cm, "added"),
        (svc, "drift-label"),
        (secret, "drift-annotation"),
        (deploy, "DRIFT_ENV"),
        (pod, "busybox:2"),
    ];
    for (extra, method) in [
        (&[][..], "local"),
        (&["--server-side-diff"][..], "server-side-diff"),
    ] {
        let plan = plan_json(&data, kb, pref, extra).await;
        for (path, text) in changed {
            let item = plan["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["path"] == path)
                .unwrap_or_else(|| panic!("{path} not in plan"));
            assert_eq!(item["action"], "differs", "{method}: {item}");
            assert_eq!(item["method"], method, "{item}");
            let diff = item["diff"].as_str().unwrap();
            assert!(
                diff.lines().any(|l| l.starts_with('+') && l.contains(text)),
                "{method} {path}: {diff}"
            );
        }
        assert_eq!(
            plan["summary"]["differs"], 5,
            "{method}: {}",
            plan["summary"]
        );
    }

    // Overwritten, the Pod gets its image back and stays on its node.
    let node = target.get(pod).await["spec"]["nodeName"].clone();
    std::fs::write(
        &pref_path,
        format!("{EXCLUDE_SYSTEM}  overwriteApiPathes: [{pod}]\n"),
    )
    .unwrap();
    let status = restored(&data, kb, pref).await;
    assert_eq!(status["numUpdated"], 1, "{status}");
    let p = target.get(pod).await;
    assert_eq!(p["spec"]["containers"][0]["image"], "busybox", "{p}");
    assert_eq!(p["spec"]["nodeName"], node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_diff_catches_a_changed_default_the_snapshot_lacks() {
    // v1.19 had no internalTrafficPolicy: the snapshot's Service lacks it, the target
    // defaults it, and a change of it live is invisible to the local comparison.
    let source = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let target = TestCluster::emulated_at(ServerVersion::Latest, Fixture::Empty).await;
    let ns = source.namespace("it-ssd").await;
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/services"),
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .await;
    let data = snapshotted(&source);
    let pref_path = data.path().join("pref.yaml");
    std::fs::write(&pref_path, only(&ns)).unwrap();
    let pref = pref_path.to_str().unwrap();
    let kb = target.kubeconfig.as_path();
    crate::restore::k8s_snap(&data, Some(kb), &["restore", "s", "--preference", pref])
        .await
        .ok();
    let path = format!("/api/v1/namespaces/{ns}/services/web");
    assert_eq!(
        target.get(&path).await["spec"]["internalTrafficPolicy"],
        "Cluster"
    );
    target
        .merge_patch(&path, &json!({"spec": {"internalTrafficPolicy": "Local"}}))
        .await;
    let item = |plan: &Value| {
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == path.as_str())
            .cloned()
            .unwrap()
    };
    let local = plan_json(&data, kb, pref, &[]).await;
    assert_eq!(item(&local)["action"], "exists");
    let ssd = plan_json(&data, kb, pref, &["--server-side-diff"]).await;
    let i = item(&ssd);
    assert_eq!(i["action"], "differs", "{i}");
    assert_eq!(i["method"], "server-side-diff");
    assert!(
        i["diff"]
            .as_str()
            .unwrap()
            .contains("internalTrafficPolicy"),
        "{i}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_19_snapshot_restores_onto_latest_with_conversions() {
    let source = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let target = TestCluster::emulated_at(ServerVersion::Latest, Fixture::Empty).await;
    let cleanup = RestoreCleanup::new(&target).await;
    let ns = source.namespace("it-convert").await;
    source
        .post(
            &format!("/apis/batch/v1beta1/namespaces/{ns}/cronjobs"),
            &cronjob("nightly", "batch/v1beta1"),
        )
        .await;
    source
        .post(
            &format!("/apis/extensions/v1beta1/namespaces/{ns}/ingresses"),
            &json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "web"},
                "spec": {"rules": [{"host": "a.example", "http": {"paths": [{"path": "/",
                    "backend": {"serviceName": "web", "servicePort": 80}}]}}]}}),
        )
        .await;
    source
        .post(
            &format!("/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"),
            &json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        )
        .await;
    // An empty selector selects no Pods in policy/v1beta1 (and every Pod in policy/v1).
    source
        .post(
            &format!("/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"),
            &json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "none"},
                "spec": {"maxUnavailable": 0, "selector": {}}}),
        )
        .await;
    source
        .post(
            "/apis/policy/v1beta1/podsecuritypolicies",
            &json!({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "restricted"},
                "spec": {"privileged": false, "seLinux": {"rule": "RunAsAny"}, "runAsUser": {"rule": "MustRunAsNonRoot"},
                    "supplementalGroups": {"rule": "RunAsAny"}, "fsGroup": {"rule": "RunAsAny"}}}),
        )
        .await;
    source
        .post(
            "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions",
            &json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "gizmos.example.com"},
                "spec": {"group": "example.com", "version": "v1alpha1", "scope": "Namespaced",
                    "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
                    "validation": {"openAPIV3Schema": {"type": "object"}}}}),
        )
        .await;
    let gizmos = format!("/apis/example.com/v1alpha1/namespaces/{ns}/gizmos");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let c = source.cluster().await;
    while c
        .request_bytes(
            http::Method::POST,
            &gizmos,
            Some(
                serde_json::to_vec(
                    &json!({"apiVersion": "example.com/v1alpha1", "kind": "Gizmo",
                    "metadata": {"name": "g1"}, "spec": {"size": 3}}),
                )
                .unwrap(),
            ),
            Some("application/json"),
        )
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the CRD was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let data = DataDir::new();
    data.run(
        Some(&source.kubeconfig),
        &["snapshot", "s", "--cluster", "old"],
    )
    .ok();
    let pref_path = data.path().join("pref.yaml");
    std::fs::write(&pref_path, only(&ns)).unwrap();
    let pref = pref_path.to_str().unwrap();
    let kb = Some(target.kubeconfig.as_path());

    let plan = plan_json(&data, target.kubeconfig.as_path(), pref, &[]).await;
    let item = |p: &str| {
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} not in the plan"))
    };
    let cj = item(&format!(
        "/apis/batch/v1beta1/namespaces/{ns}/cronjobs/nightly"
    ));
    assert_eq!(cj["action"], "create", "{cj}");
    assert_eq!(cj["reason"], "convert batch/v1beta1 → batch/v1");
    assert_eq!(
        cj["target"],
        format!("/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")
    );
    let pdb = item(&format!(
        "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/pdb"
    ));
    assert_eq!(pdb["reason"], "convert policy/v1beta1 → policy/v1");
    let none = item(&format!(
        "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/none"
    ));
    assert!(
        none["reason"]
            .as_str()
            .unwrap()
            .contains("the empty spec.selector (no Pods in policy/v1beta1)"),
        "{none}"
    );
    let psp = item("/apis/policy/v1beta1/podsecuritypolicies/restricted");
    assert_eq!(psp["action"], "unsupported", "{psp}");
    assert!(
        psp["reason"]
            .as_str()
            .unwrap()
            .contains("PodSecurityPolicy"),
        "{psp}"
    );

    let restored = crate::restore::k8s_snap(
        &data,
        kb,
        &["restore", "s", "--preference", pref, "-o", "json"],
    )
    .await;
    cleanup.record_run(&restored);
    let status: Value = serde_json::from_str(&restored.stdout).unwrap();
    assert_eq!(
        status["numFailed"], 1,
        "only the PodSecurityPolicy: {status}"
    ); // unsupported
    let cj = target
        .get(&format!("/apis/batch/v1/namespaces/{ns}/cronjobs/nightly"))
        .await;
    assert_eq!(cj["spec"]["schedule"], "0 1 * * *");
    let ing = target
        .get(&format!(
            "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/web"
        ))
        .await;
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        json!({"name": "web", "port": {"number": 80}})
    );
    target
        .get(&format!(
            "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/pdb"
        ))
        .await;
    // Still no Pods: the selector a server keeps for v1beta1's empty one, not v1's (every Pod,
    // which with maxUnavailable 0 would block every eviction in the namespace).
    let none = target
        .get(&format!(
            "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/none"
        ))
        .await;
    assert_eq!(
        none["spec"]["selector"],
        json!({"matchExpressions": [{"key": "pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match", "operator": "Exists"}]}),
        "{none}"
    );
    let crd = target
        .get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.example.com")
        .await;
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    let g = target.get(&format!("{gizmos}/g1")).await;
    assert_eq!(g["spec"]["size"], 3);

    // A second run creates nothing.
    let again = plan_json(&data, target.kubeconfig.as_path(), pref, &[]).await;
    assert_eq!(again["summary"]["toCreate"], 0, "{again}");
    assert_eq!(again["summary"]["differs"], 0, "{again}");
    assert_eq!(again["summary"]["unsupported"], 1, "{again}");

    // The cleanup finds the converted objects at the versions the target serves them.
    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the target: {left:?}");
    for gone in [
        format!("/apis/batch/v1/namespaces/{ns}/cronjobs/nightly"),
        format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/web"),
        format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/pdb"),
        format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/none"),
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.example.com".to_string(),
        format!("/api/v1/namespaces/{ns}"),
    ] {
        assert!(!target.exists(&gone).await, "{gone} is still on the target");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_pairs_an_object_stored_under_another_version_and_shows_an_exact_path() {
    let old = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let new = TestCluster::emulated_at(ServerVersion::Latest, Fixture::Empty).await;
    let ns = "it-upgrade";
    for (c, av) in [(&old, "batch/v1beta1"), (&new, "batch/v1")] {
        c.post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
        c.post(
            &format!("/apis/{av}/namespaces/{ns}/cronjobs"),
            &cronjob("nightly", av),
        )
        .await;
        c.post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                "data": {"v": av}}),
        )
        .await;
    }
    let data = DataDir::new();
    data.run(
        Some(&old.kubeconfig),
        &["snapshot", "before", "--cluster", "c"],
    )
    .ok();
    data.run(
        Some(&new.kubeconfig),
        &["snapshot", "after", "--cluster", "c"],
    )
    .ok();
    let diff = |path: &str| -> Vec<Value> {
        let run = data
            .run(
                None,
                &["diff", "before", "after", "--path", path, "-o", "json"],
            )
            .ok();
        serde_json::from_str(&run.stdout).unwrap()
    };
    let cj_new = format!("/apis/batch/v1/namespaces/{ns}/cronjobs/nightly");
    for path in [
        cj_new.clone(),
        format!("/apis/batch/v1beta1/namespaces/{ns}/cronjobs/nightly"),
    ] {
        let items = diff(&path);
        assert_eq!(items.len(), 1, "{path}: {items:?}");
        assert_eq!(items[0]["path"], cj_new.as_str());
        assert_eq!(items[0]["change"], "changed");
        let d = items[0]["diff"].as_str().unwrap();
        assert!(d.contains("-apiVersion: batch/v1beta1"), "{d}");
        assert!(d.contains("+apiVersion: batch/v1"), "{d}");
    }
    // An exact path of an object that is not a directory.
    let cm = format!("/api/v1/namespaces/{ns}/configmaps/cfg");
    let items = diff(&cm);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["path"], cm.as_str());
    // The whole diff has no removed/added pair for the CronJob.
    let run = data
        .run(None, &["diff", "before", "after", "-o", "json"])
        .ok();
    let all: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        !all.iter()
            .any(|i| i["path"].as_str().unwrap().contains("/cronjobs/") && i["change"] != "changed"),
        "{all:?}"
    );
}

/// The latest release's realistic cluster with one more CronJob, `shop/zoned`, that has a
/// time zone.
async fn latest_with_zoned_cronjob() -> TestCluster {
    let source = TestCluster::emulated_at(ServerVersion::Latest, Fixture::Realistic).await;
    let mut zoned = cronjob("zoned", "batch/v1");
    zoned["spec"]["timeZone"] = json!("Europe/Berlin");
    source
        .post("/apis/batch/v1/namespaces/shop/cronjobs", &zoned)
        .await;
    source
}

/// Snapshot `s` of `source` in a new data dir, and a preference file leaving system objects
/// out (its path).
fn snapshotted_excluding_system(source: &TestCluster) -> (DataDir, String) {
    let data = DataDir::new();
    data.run(Some(&source.kubeconfig), &["snapshot", "s", "--no-push"])
        .ok();
    let pref_path = data.path().join("pref.yaml");
    std::fs::write(&pref_path, EXCLUDE_SYSTEM).unwrap();
    let pref = pref_path.to_str().unwrap().to_owned();
    (data, pref)
}

/// The plan item of `path` (`plan -o json`).
fn planned<'a>(plan: &'a Value, path: &str) -> &'a Value {
    plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == path)
        .unwrap_or_else(|| panic!("{path} is planned: {plan}"))
}

/// Onto an older server: a snapshot of the latest release's realistic cluster restores onto a
/// v1.19 server with nothing failed, the kinds 1.19 serves only at older versions converted
/// (a `batch/v1` CronJob to `batch/v1beta1`, a `policy/v1` PodDisruptionBudget to
/// `policy/v1beta1`, an `autoscaling/v2` HorizontalPodAutoscaler to `autoscaling/v2beta2`, the
/// version that holds all of it, not the preferred `autoscaling/v1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_snapshot_restores_onto_1_19_with_conversions() {
    // A time zone, which batch/v1beta1 (all a 1.19 server serves of CronJobs) has no field for.
    let source = latest_with_zoned_cronjob().await;
    let target = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    // An empty selector selects every Pod in policy/v1 (and no Pods in policy/v1beta1).
    source
        .post(
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
            &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "all"},
                "spec": {"minAvailable": 1, "selector": {}}}),
        )
        .await;
    let (data, pref) = snapshotted_excluding_system(&source);
    let pref = pref.as_str();
    let kb = target.kubeconfig.as_path();
    let plan = plan_json(&data, kb, pref, &[]).await;
    assert_eq!(plan["summary"]["unsupported"], 0, "{}", plan["summary"]);
    let zoned = planned(&plan, "/apis/batch/v1/namespaces/shop/cronjobs/zoned");
    assert!(
        zoned["reason"]
            .as_str()
            .unwrap()
            .contains("spec.timeZone \"Europe/Berlin\" dropped"),
        "{zoned}"
    );
    let status = restored(&data, kb, pref).await;
    assert!(status["numCreated"].as_u64().unwrap() > 20, "{status}");
    for (path, api_version) in [
        (
            "/apis/batch/v1beta1/namespaces/shop/cronjobs/nightly-report",
            "batch/v1beta1",
        ),
        (
            "/apis/policy/v1beta1/namespaces/shop/poddisruptionbudgets/frontend",
            "policy/v1beta1",
        ),
        (
            "/apis/autoscaling/v2beta2/namespaces/shop/horizontalpodautoscalers/api",
            "autoscaling/v2beta2",
        ),
    ] {
        assert_eq!(target.get(path).await["apiVersion"], api_version, "{path}");
    }
    // The autoscaler keeps its 70% CPU target (written at the preferred autoscaling/v1, whose
    // spec has no `metrics`, it would get the default 80%).
    let hpa = target
        .get("/apis/autoscaling/v2beta2/namespaces/shop/horizontalpodautoscalers/api")
        .await;
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70,
        "{hpa}"
    );
    let all = target
        .get("/apis/policy/v1beta1/namespaces/shop/poddisruptionbudgets/all")
        .await;
    assert_eq!(
        all["spec"]["selector"],
        json!({"matchExpressions": [{"key": "pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match", "operator": "DoesNotExist"}]}),
        "still every Pod: {all}"
    );
    // Planned again, by either method: everything exists, nothing differs.
    for extra in [&[][..], &["--server-side-diff"][..]] {
        let again = plan_json(&data, kb, pref, extra).await;
        assert_eq!(again["summary"]["toCreate"], 0, "{}", again["summary"]);
        assert_eq!(again["summary"]["differs"], 0, "{extra:?}: {again}");
    }
}

/// Onto a 1.22 server, which serves CronJobs at `batch/v1` but clears their `spec.timeZone`
/// (gate CronJobTimeZone, on from 1.25): the plan says so before the CronJob is created, and
/// only for the one that has a time zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_onto_1_22_says_a_cronjob_time_zone_will_be_dropped() {
    let source = latest_with_zoned_cronjob().await;
    let target = TestCluster::emulated_at(ServerVersion::V1_22, Fixture::Empty).await;
    let (data, pref) = snapshotted_excluding_system(&source);
    let pref = pref.as_str();
    let kb = target.kubeconfig.as_path();
    let plan = plan_json(&data, kb, pref, &[]).await;
    let zoned = planned(&plan, "/apis/batch/v1/namespaces/shop/cronjobs/zoned");
    assert_eq!(zoned["action"], "create", "{zoned}");
    assert!(
        zoned["reason"].as_str().unwrap_or_default().contains(
            "spec.timeZone \"Europe/Berlin\" will be dropped by the target (Kubernetes 1.22"
        ),
        "{zoned}"
    );
    let plain = planned(
        &plan,
        "/apis/batch/v1/namespaces/shop/cronjobs/nightly-report",
    );
    assert!(plain.get("reason").is_none(), "{plain}");
    // As said: created without it.
    restored(&data, kb, pref).await;
    let live = target
        .get("/apis/batch/v1/namespaces/shop/cronjobs/zoned")
        .await;
    assert!(live["spec"].get("timeZone").is_none(), "{live}");
}

/// A Pod restored without its ServiceAccount (a selective restore) is refused by the target's
/// ServiceAccount admission; the restore names the Pod and the missing account, and creates it
/// once the account comes along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_restored_without_its_service_account_fails_naming_it() {
    let source = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let target = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let ns = namespace_with_account(&source, "it-sa", "robot").await;
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await;
    let data = snapshotted(&source);
    let kb = target.kubeconfig.as_path();
    let pod = format!("/api/v1/namespaces/{ns}/pods/p");
    let run = crate::restore::k8s_snap(
        &data,
        Some(kb),
        &[
            "restore",
            "s",
            "--include",
            &pod,
            "--create-namespaces",
            "-o",
            "json",
        ],
    )
    .await;
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["numFailed"], 1, "{status}");
    let failed = status["failed"].to_string();
    assert!(
        failed.contains(&pod)
            && failed.contains("error looking up service account")
            && failed.contains("serviceaccount \\\"robot\\\" not found"),
        "{failed}"
    );
    assert!(!target.exists(&pod).await);

    let sa = format!("/api/v1/namespaces/{ns}/serviceaccounts/robot");
    let args = [
        "restore",
        "s",
        "--include",
        &sa,
        "--include",
        &pod,
        "-o",
        "json",
    ];
    let run = crate::restore::k8s_snap(&data, Some(kb), &args).await.ok();
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["numFailed"], 0, "{status}");
    assert_eq!(status["numCreated"], 2, "{status}");
    assert_eq!(
        target.get(&pod).await["spec"]["serviceAccountName"],
        "robot"
    );
}
