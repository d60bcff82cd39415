//! What a user sees of the controller's work in `kubectl describe` (Events), and what a
//! SIGTERM does to a snapshot in flight: it finishes within the grace period, or is marked
//! Failed with a reason — never left `InProgress`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use k8s_snap::controller::SnapshotSpec;
use kube::Api;
use kube::api::ListParams;

use crate::controller::{
    Management, NS, create_restore, create_snapshot, phase_of, realistic_source, restore_final,
    spec_of, wait_for,
};

async fn reasons(mgmt: &Management, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(mgmt.client().await, &NS);
    let mut r: Vec<String> = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    r.sort();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_events_of_completed_and_failed_snapshots() {
    let mgmt = Management::start().await;
    let ctl = mgmt.controller("events").await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(&snapshots, "ok", SnapshotSpec::default()).await;
    create_snapshot(
        &snapshots,
        "bad",
        SnapshotSpec {
            ttl: Some("forever".into()),
            ..Default::default()
        },
    )
    .await;
    phase_of(&snapshots, "ok", &["Completed"]).await;
    phase_of(&snapshots, "bad", &["Failed"]).await;
    wait_for(Duration::from_secs(5), "Events", || async {
        (reasons(&mgmt, "ok").await == ["Completed", "Started"]
            && reasons(&mgmt, "bad").await == ["Failed"])
        .then_some(())
    })
    .await;
    let described = mgmt.kubectl(&["describe", "snapshot", "ok", "-n", &NS]);
    assert!(
        described.contains("Started") && described.contains("Completed"),
        "{described}"
    );
    let described = mgmt.kubectl(&["describe", "snapshot", "bad", "-n", &NS]);
    assert!(
        described.contains("Warning") && described.contains("spec.ttl"),
        "{described}"
    );
    ctl.stop().await.unwrap();
}

/// A snapshot of the management emulator whose ConfigMap LIST answers after `latency`;
/// `false` (the test is skipped) on a real management cluster.
async fn slow_snapshot(mgmt: &Management, name: &str, latency: &str) -> bool {
    let Some(emu) = mgmt.emulator() else {
        return false;
    };
    emu.faults().add(
        format!("method=GET,path=/api/v1/configmaps,latency={latency}")
            .parse()
            .unwrap(),
    );
    create_snapshot(&mgmt.snapshots().await, name, SnapshotSpec::default()).await;
    phase_of(&mgmt.snapshots().await, name, &["InProgress"]).await;
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_snapshot_in_flight_finish() {
    let mgmt = Management::start().await;
    let ctl = mgmt.controller("graceful").await;
    if !slow_snapshot(&mgmt, "inflight", "1500ms").await {
        return;
    }
    ctl.stop().await.unwrap();
    let s = mgmt.snapshots().await.get("inflight").await.unwrap();
    assert_eq!(s.status.unwrap().phase, "Completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_marks_the_snapshot_failed() {
    let mgmt = Management::start().await;
    let ctl = mgmt
        .controller_with(
            "impatient",
            &[
                "--housekeepstore=false",
                "--restoresnapshots",
                "false",
                "--shutdown-grace-period",
                "300ms",
            ],
        )
        .await;
    if !slow_snapshot(&mgmt, "cut", "5s").await {
        return;
    }
    ctl.stop().await.unwrap();
    let status = mgmt
        .snapshots()
        .await
        .get("cut")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.phase, "Failed");
    assert_eq!(
        status.reason,
        "Controller stopped while taking the snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_failed_objects_says_so_in_its_conditions() {
    let mgmt = Management::start().await;
    let ctl = mgmt.controller("partial").await;
    let source = realistic_source().await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(&snapshots, "src", spec_of(&source)).await;
    phase_of(&snapshots, "src", &["Completed"]).await;
    // Every namespaced core create on the target is refused.
    let target = kube_emulator::Emulator::builder().start().await.unwrap();
    target.faults().add(
        "method=POST,path=/api/v1/namespaces/,status=422"
            .parse()
            .unwrap(),
    );
    let restores = mgmt.restores().await;
    create_restore(
        &restores,
        "partial",
        k8s_snap::controller::RestoreSpec {
            backup_name: "src".into(),
            kubeconfig: Some(target.kubeconfig_yaml("dst")),
            ..Default::default()
        },
    )
    .await;
    let st = restore_final(&restores, "partial").await;
    assert_eq!(st.restore.phase, "Completed", "{}", st.restore.reason);
    assert!(st.restore.num_failed > 0);
    let succeeded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .expect("Succeeded condition");
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", "ObjectsFailed")
    );
    wait_for(Duration::from_secs(5), "an ObjectsFailed Event", || async {
        reasons(&mgmt, "partial")
            .await
            .contains(&"ObjectsFailed".to_string())
            .then_some(())
    })
    .await;
    ctl.stop().await.unwrap();
}

/// A snapshot of a cluster that lists an API it cannot serve (an APIService whose backend
/// does not run) completes without that group version, and says so: an `Incomplete`
/// condition and a Warning Event naming it. Emulator only (on a shared real cluster the
/// APIService would disturb the other tests' discovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_without_an_unavailable_api_is_marked_incomplete() {
    let mgmt = Management::start().await;
    if mgmt.emulator().is_none() {
        return;
    }
    let services: Api<kube::api::DynamicObject> = Api::all_with(
        mgmt.client().await,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
        )),
    );
    services
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService", "metadata": {"name": "v1.gadgets.k8s-snap.test"},
                "spec": {"group": "gadgets.k8s-snap.test", "version": "v1", "groupPriorityMinimum": 100,
                    "versionPriority": 10, "service": {"namespace": "default", "name": "gadgets"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let ctl = mgmt.controller("incomplete").await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(&snapshots, "partial-apis", SnapshotSpec::default()).await;
    let done = phase_of(&snapshots, "partial-apis", &["Completed", "Failed"]).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, "Completed", "{}", status.reason);
    let incomplete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Incomplete")
        .expect("an Incomplete condition");
    assert_eq!(incomplete.status, "True");
    assert!(
        incomplete.message.contains("gadgets.k8s-snap.test/v1"),
        "{}",
        incomplete.message
    );
    wait_for(Duration::from_secs(5), "the Warning Event", || async {
        reasons(&mgmt, "partial-apis")
            .await
            .contains(&"UnavailableApis".to_string())
            .then_some(())
    })
    .await;
    ctl.stop().await.unwrap();
}
