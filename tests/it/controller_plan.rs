//! The controller's reviewed plans (issue 19): a Restore naming a plan file in a ConfigMap
//! (`spec.planRef`) applies exactly that plan, and fails — writing nothing, naming the change —
//! when a planned object changed on the target since. The management cluster is an emulator
//! (or `$K8S_SNAP_TEST_KUBECONFIG`, cleaned up by `Management`); source and target are
//! emulators the in-process controller reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_snap::controller::{Restore, RestoreSpec};
use k8s_snap::restore::plan_file::{self, PlanFile, PlannedSnapshot};
use k8s_snap::restore::{self, Action, Preference, RestoreOptions};
use kube::Api;
use kube::api::PostParams;
use kube_emulator::{Emulator, Fixture};
use serde_json::json;

use crate::controller::{Management, NS, completed_snapshot, wait_for};

const PREFERENCE: &str = "apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: no-system
spec:
  excludeNamespaces: [kube-system, kube-public, kube-node-lease]
";

/// A plan file of `snapshot` (from the controller's mirror at `git_dir`) onto `target`.
async fn plan_file_of(
    git_dir: &std::path::Path,
    snapshot: &str,
    target: &k8s_snap::cluster::Cluster,
) -> (PlanFile, String) {
    let loaded = restore::load_snapshot(git_dir, snapshot).unwrap();
    let pref = Preference::from_yaml(PREFERENCE, "test").unwrap();
    let opts = RestoreOptions::default();
    let planned = PlannedSnapshot {
        name: loaded.name.clone(),
        commit: loaded.commit.clone(),
    };
    let identity = plan_file::target_identity(target).await.unwrap();
    let plan = restore::plan(target, loaded, &pref, &opts).await.unwrap();
    let file = PlanFile::new(planned, identity, &pref, &opts, &plan);
    let text = file.to_json();
    (file, text)
}

async fn plan_config_map(mgmt: &Management, name: &str, text: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(mgmt.client().await, &NS);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(BTreeMap::from([(
        "plan.json".to_string(),
        text.to_string(),
    )]));
    cms.create(&PostParams::default(), &cm).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_applies_its_reviewed_plan_or_refuses_a_stale_one() {
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Realistic)
        .start()
        .await
        .unwrap();
    let target = Emulator::builder()
        .fixture(Fixture::Empty)
        .service_cidr("10.200.0.0/16")
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target_kc = dir.path().join("target.yaml");
    target.write_kubeconfig(&target_kc, "cluster-b").unwrap();
    let target_cluster = k8s_snap::cluster::Cluster::connect(&k8s_snap::cluster::ConnectOptions {
        kubeconfig: Some(target_kc.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let ctl = mgmt.controller("plans").await;
    let snaps = mgmt.snapshots().await;
    completed_snapshot(&snaps, "planned-001", source.kubeconfig_yaml("cluster-a")).await;
    let git_dir = ctl.data.join("mirror.git");

    let (file, text) = plan_file_of(&git_dir, "planned-001", &target_cluster).await;
    let to_create: BTreeSet<String> = file
        .items
        .iter()
        .filter(|i| i.action == Action::Create)
        .map(|i| i.path.to_string())
        .collect();
    assert!(!to_create.is_empty());
    plan_config_map(&mgmt, "planned-001-plan", &text).await;

    let restores = mgmt.restores().await;
    let pp = PostParams::default();
    let create_restore = |name: &'static str, plan: &'static str, pref: Option<&str>| {
        let mut r = Restore::new(
            name,
            RestoreSpec {
                cluster_name: "cluster-b".into(),
                snapshot_name: "planned-001".into(),
                kubeconfig: Some(target.kubeconfig_yaml("cluster-b")),
                plan_ref: Some(plan.into()),
                restore_preference_name: pref.map(str::to_string),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some(NS.into());
        r
    };
    let finished = |name: &'static str| {
        let restores = restores.clone();
        async move {
            wait_for(Duration::from_secs(30), name, || async {
                let r = restores.get(name).await.ok()?;
                let s = r.status?;
                (s.restore.phase == "Failed" || s.restore.phase == "Completed").then_some(s)
            })
            .await
        }
    };
    restores
        .create(&pp, &create_restore("r-reviewed", "planned-001-plan", None))
        .await
        .unwrap();
    let st = finished("r-reviewed").await;
    assert_eq!(st.restore.phase, "Completed", "{}", st.restore.reason);
    assert_eq!(st.restore.num_failed, 0, "{:?}", st.restore.failed);
    let created: BTreeSet<String> = st
        .restore
        .created
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(created.is_subset(&to_create), "{created:?}");
    for p in to_create.difference(&created) {
        // Made by the target itself once the namespace existed.
        assert!(
            p.ends_with("/serviceaccounts/default") || p.ends_with("/configmaps/kube-root-ca.crt"),
            "{p} planned but not created"
        );
    }

    // A second reviewed plan; a planned ConfigMap changes on the target before it runs.
    let (file2, text2) = plan_file_of(&git_dir, "planned-001", &target_cluster).await;
    let edited = file2
        .items
        .iter()
        .find(|i| {
            i.action == Action::Exists
                && i.path.resource() == "configmaps"
                && created.contains(i.path.as_str())
        })
        .map(|i| i.path.to_string())
        .expect("a restored ConfigMap planned `exists`");
    let body = serde_json::to_vec(&json!({"metadata": {"labels": {"edited": "yes"}}})).unwrap();
    target_cluster
        .request_bytes(
            http::Method::PATCH,
            &edited,
            Some(body),
            Some("application/merge-patch+json"),
        )
        .await
        .unwrap();
    plan_config_map(&mgmt, "planned-001-plan2", &text2).await;
    restores
        .create(&pp, &create_restore("r-stale", "planned-001-plan2", None))
        .await
        .unwrap();
    let st = finished("r-stale").await;
    assert_eq!(st.restore.phase, "Failed");
    assert!(
        st.restore.reason.contains("nothing was written"),
        "{}",
        st.restore.reason
    );
    assert!(
        st.restore
            .reason
            .contains(&format!("{edited}: planned exists")),
        "{}",
        st.restore.reason
    );
    assert_eq!(st.restore.num_created, 0);

    // A planRef with a preference, and one naming no ConfigMap: refused at once.
    restores
        .create(
            &pp,
            &create_restore("r-both", "planned-001-plan", Some("no-system")),
        )
        .await
        .unwrap();
    let st = finished("r-both").await;
    assert_eq!(st.restore.phase, "Failed");
    assert!(
        st.restore.reason.starts_with("spec.planRef: "),
        "{}",
        st.restore.reason
    );
    restores
        .create(&pp, &create_restore("r-no-plan", "no-such-plan", None))
        .await
        .unwrap();
    let st = finished("r-no-plan").await;
    assert_eq!(
        st.restore.reason,
        format!("spec.planRef: ConfigMap {}/no-such-plan not found", &*NS)
    );
    drop(file);
}
