//! Every resource at every server version (issue 13): per-resource versions in snapshots,
//! restores across versions, Jobs and server-generated fields. Emulator profiles only (each
//! test needs a given release); the version-independent end-to-end tests run on every
//! profile with `KUBE_EMULATOR_SERVER_VERSION`.

use kube_emulator::{Fixture, ServerVersion};
use serde_json::{Value, json};

use crate::support::{DataDir, TestCluster};

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
