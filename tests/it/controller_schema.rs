//! The controller's CRDs and statuses against a server that validates like kube-apiserver:
//! custom resources that do not match their schema are refused with the real 422 shape, every
//! sample validates, the controller's own status writes are stored for CRs with every
//! optional field unset, and a refused status write is reported once, backed off and shown
//! as an Event in `kubectl describe`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use k8s_snap::controller::{RestoreSpec, SnapshotSpec};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::controller::{
    Management, NS, create_restore, create_snapshot, phase_of, repo_file, restore_final, wait_for,
};

/// The 422 of a status write carrying `null` for a non-nullable string, in the words of a real
/// kube-apiserver.
const NULL_REASON: &str = "status.reason: Invalid value: \"null\": status.reason in body must be of type string: \"null\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_validated_like_a_real_server() {
    let mgmt = Management::start().await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(&snapshots, "typed", SnapshotSpec::default()).await;

    // A status write with `null` where the schema says `type: string` (not nullable).
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/status", "value": {"phase": "", "reason": null}}
    ]))
    .unwrap();
    let err = snapshots
        .patch_status("typed", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .expect_err("a null status.reason is refused");
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        format!("Snapshot.clustersnapshot.rywt.io \"typed\" is invalid: {NULL_REASON}")
    );
    let causes = status.details.expect("details").causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "status.reason");
    assert_eq!(causes[0].reason, "FieldValueInvalid");

    // Every wrong type of a spec field, through the real kubectl: one cause each.
    let bad = mgmt.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Snapshot\nmetadata:\n  name: bad\n  namespace: {NS}\nspec:\n  clusterName: 5\n  ttl: true\n  availableUntil: yesterday\n  kubeconfigSecretRef: {{key: 1}}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&mgmt.kubeconfig)
        .args(["apply", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    for want in [
        "spec.clusterName: Invalid value: \"integer\": spec.clusterName in body must be of type string: \"integer\"",
        "spec.ttl: Invalid value: \"boolean\": spec.ttl in body must be of type string: \"boolean\"",
        "spec.availableUntil: Invalid value: \"yesterday\": spec.availableUntil in body must be of type date-time: \"yesterday\"",
        "spec.kubeconfigSecretRef.key: Invalid value: \"integer\": spec.kubeconfigSecretRef.key in body must be of type string: \"integer\"",
        "spec.kubeconfigSecretRef.name: Required value",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(snapshots.get_opt("bad").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_validates_against_the_generated_schemas() {
    let mgmt = Management::start().await;
    for path in ["deploy/objectstore-config.yaml", "deploy/preference.yaml"]
        .into_iter()
        .map(|f| repo_file(f).display().to_string())
        .chain(mgmt.samples())
    {
        mgmt.kubectl(&["apply", "--dry-run=server", "-f", &path]);
    }
    // The same server refuses a sample that breaks its schema: the check above is real.
    let text = std::fs::read_to_string(repo_file("deploy/samples/snapshot.yaml")).unwrap();
    assert!(text.contains("clusterName:"), "{text}");
    let broken = mgmt.dir.path().join("broken.yaml");
    let mut doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    doc["spec"]["clusterName"] = json!(["not", "a", "string"]);
    doc["metadata"]["namespace"] = json!(NS.to_string());
    std::fs::write(&broken, serde_json::to_string(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&mgmt.kubeconfig)
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("spec.clusterName in body must be of type string"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Warning Events on the controller's CRs.
async fn warnings(mgmt: &Management, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(mgmt.client().await, &NS);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crs_with_every_optional_field_unset_reach_a_final_phase() {
    let mgmt = Management::start().await;
    let ctl = mgmt.controller("minimal").await;
    let snapshots = mgmt.snapshots().await;
    // No cluster name, no kubeconfig (the controller's own cluster), no ttl, no store.
    create_snapshot(&snapshots, "bare", SnapshotSpec::default()).await;
    let s = phase_of(&snapshots, "bare", &["Completed", "Failed"]).await;
    let status = s.status.expect("status stored");
    assert_eq!(status.phase, "Completed", "{}", status.reason);
    assert!(status.available_until.is_some() && status.number_of_contents > 0);
    if mgmt.emulator().is_none() {
        // A restore of a whole real cluster onto itself is not something to do in a test.
        ctl.stop().await.unwrap();
        return;
    }

    let restores = mgmt.restores().await;
    create_restore(
        &restores,
        "bare",
        RestoreSpec {
            backup_name: "bare".into(),
            ..Default::default()
        },
    )
    .await;
    let st = restore_final(&restores, "bare").await;
    assert_eq!(st.restore.phase, "Completed", "{}", st.restore.reason);
    assert!(st.restore.preserve_until.is_some());
    // No status write was refused: no Warning Event on either object.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(warnings(&mgmt, "bare").await.is_empty());
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_write_is_reported_once_with_an_event_and_backs_off() {
    let mgmt = Management::start().await;
    // It changes the shared CRD and counts requests: the emulator only.
    let Some(emu) = mgmt.emulator() else {
        return;
    };
    // A CRD whose status schema refuses what the controller writes (a string phase).
    let crd = std::fs::read_to_string(repo_file("deploy/crd.yaml")).unwrap();
    let first = crd.split("\n---\n").nth(1).expect("the Snapshot CRD");
    let mut doc: serde_json::Value = serde_saphyr::from_str(first).unwrap();
    assert_eq!(doc["spec"]["names"]["kind"], "Snapshot");
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["phase"] = json!({"type": "integer"});
    let tampered = mgmt.dir.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_string(&doc).unwrap()).unwrap();
    mgmt.kubectl(&["apply", "-f", tampered.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let path =
        format!("/apis/clustersnapshot.rywt.io/v1alpha1/namespaces/{NS}/snapshots/refused/status");
    let counter = emu.faults().add(
        format!("method=PATCH,path={path},latency=1ms")
            .parse()
            .unwrap(),
    );
    let ctl = mgmt.controller("refused").await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(&snapshots, "refused", SnapshotSpec::default()).await;

    let events = wait_for(
        Duration::from_secs(10),
        "a StatusWriteRefused Event",
        || async {
            let w = warnings(&mgmt, "refused").await;
            (!w.is_empty()).then_some(w)
        },
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason.as_deref(), Some("StatusWriteRefused"));
    let message = events[0].message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!("status write for snapshot {NS}/refused refused (422 Invalid): status.phase must be an integer, got string")),
        "{message}"
    );
    assert!(!message.contains('\n') && message.len() < 300, "{message}");
    // `kubectl describe` shows it.
    let described = mgmt.kubectl(&["describe", "snapshot", "refused", "-n", &NS]);
    assert!(
        described.contains("StatusWriteRefused")
            && described.contains("status.phase must be an integer"),
        "{described}"
    );
    // Backoff: 5 s, then 10 s — in 7 s at most two writes were tried, not one per few ms.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tries = emu.faults().fired(counter);
    assert!((1..=2).contains(&tries), "{tries} status writes in ~7 s");
    assert_eq!(
        warnings(&mgmt, "refused").await.len(),
        1,
        "one Event per distinct error"
    );
    let s = snapshots.get("refused").await.unwrap();
    assert!(s.status.is_none(), "nothing was stored: {:?}", s.status);
    let (code, metrics) = ctl.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "k8s_snap_reconcile_errors_total{kind=\"snapshot\",reason=\"StatusWriteRefused\"}"
        ),
        "{metrics}"
    );
    ctl.stop().await.unwrap();
}

/// `kubectl apply` of a file against an emulator of `version`.
fn apply_on(emu: &kube_emulator::EmulatorHandle, file: &std::path::Path) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "profile").unwrap();
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["apply", "-f"])
        .arg(file)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_apply_on_every_server_profile_and_1_19_refuses_empty_string_defaults() {
    for version in kube_emulator::ServerVersion::ALL {
        let emu = kube_emulator::Emulator::builder()
            .server_version(version)
            .start()
            .await
            .unwrap();
        let out = apply_on(&emu, &repo_file("deploy/crd.yaml"));
        assert!(
            out.status.success(),
            "{version:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // What `k8s-snap crd` emitted before: `default: ""` on a string field. Accepted by
        // newer servers, refused by kube-apiserver v1.19 exactly so.
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-crd.yaml");
        std::fs::write(
            &old,
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: olds.clustersnapshot.rywt.io\nspec:\n  group: clustersnapshot.rywt.io\n  names: {kind: Old, plural: olds, singular: old}\n  scope: Namespaced\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              clusterName: {type: string, default: \"\"}\n",
        )
        .unwrap();
        let out = apply_on(&emu, &old);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if version == kube_emulator::ServerVersion::V1_19 {
            assert!(!out.status.success());
            assert!(
                stderr.contains(
                    "\"olds.clustersnapshot.rywt.io\" is invalid: spec.validation.openAPIV3Schema.properties[spec].properties[clusterName].default: Invalid value: \"null\": in body must be of type string: \"null\""
                ),
                "{stderr}"
            );
        } else {
            assert!(out.status.success(), "{version:?}: {stderr}");
        }
        emu.shutdown().await;
    }
}
