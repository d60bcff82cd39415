//! Restores onto a cluster whose admission is in the way: Pods no controller owns, which its
//! admission fills in again (API token volume, priority), so a restore must not carry what
//! the source's admission put there (docs/restore.md, "Pods"); and admission webhooks, whose
//! backends do not run yet while a restore creates what they intercept. Runs on every
//! emulator profile and on real clusters.

use kube_emulator::{Fixture, ServerVersion};
use serde_json::{Value, json};

use crate::support::{DataDir, RestoreCleanup, TestCluster, snapshot_namespace};

/// Where ServiceAccount admission mounts the API token.
const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn priority_class(name: &str, value: i64) -> Value {
    json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value})
}

fn pod(name: &str, account: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"serviceAccountName": account, "priorityClassName": class,
            "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {}}]}})
}

/// The Secrets a Pod's volumes name, and how many volumes each container mounts at the token
/// path.
fn secrets_and_token_mounts(pod: &Value) -> (Vec<String>, Vec<usize>) {
    let secrets = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/secret/secretName").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let mounts = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["mountPath"] == TOKEN_MOUNT)
                .count()
        })
        .collect();
    (secrets, mounts)
}

/// Bare Pods of `source` restored onto `target`: each is created with the target's API token
/// (no Secret of the source), the target's priority for its class (a class of the same name
/// with another value there; a class only the snapshot has, restored before the Pod), without
/// the ephemeral container a debugging session added (1.23+), and plans as `exists` right
/// after.
async fn bare_pods_are_admitted_by_the_target(source: &TestCluster, target: &TestCluster) {
    let cleanup = RestoreCleanup::new(target).await;
    let ns = source.namespace("it-admit").await;
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}),
        )
        .await;
    let classes = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let shared = format!("it-shared-{:08x}", fastrand::u32(..));
    let only_source = format!("it-source-{:08x}", fastrand::u32(..));
    source
        .post_owned(classes, &priority_class(&shared, 1000))
        .await;
    source
        .post_owned(classes, &priority_class(&only_source, 500))
        .await;
    target
        .post_owned(classes, &priority_class(&shared, 2000))
        .await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let p = source.post(&pods, &pod("p", "robot", &shared)).await;
    let q = source.post(&pods, &pod("q", "default", &only_source)).await;
    // The source's admission gave each its token and priority.
    for (admitted, priority) in [(&p, 1000), (&q, 500)] {
        assert_eq!(secrets_and_token_mounts(admitted).1, [1], "{admitted}");
        assert_eq!(admitted["spec"]["priority"], priority, "{admitted}");
    }
    if source.server_minor().await >= 23 {
        let debugged = source
            .merge_patch(
                &format!("{pods}/p/ephemeralcontainers"),
                &json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox:1.36",
                    "command": ["sleep", "60"]}]}}),
            )
            .await;
        assert_eq!(
            debugged["spec"]["ephemeralContainers"][0]["name"], "debugger",
            "{debugged}"
        );
    }

    let data = DataDir::new();
    let cluster_scoped = ["--include-cluster-resources", "true"];
    snapshot_namespace(&data, &source.kubeconfig, "s", &ns, &cluster_scoped).await;
    let include = [
        format!("/api/v1/namespaces/{ns}/**"),
        format!("{classes}/{shared}"),
        format!("{classes}/{only_source}"),
    ];
    let mut args = vec!["s", "--create-namespaces"];
    for i in &include {
        args.extend(["--include", i.as_str()]);
    }
    let status = cleanup.restore_json(&data, &args).await;
    assert_eq!(status["numFailed"], 0, "{status}");
    let created = status["created"].to_string();
    for path in [
        format!("{pods}/p"),
        format!("{pods}/q"),
        format!("{classes}/{only_source}"),
    ] {
        assert!(created.contains(&path), "{path} not created: {status}");
    }

    for (name, priority) in [("p", 2000), ("q", 500)] {
        let restored = target.get(&format!("{pods}/{name}")).await;
        assert_eq!(restored["spec"]["priority"], priority, "{restored}");
        let (secrets, mounts) = secrets_and_token_mounts(&restored);
        assert_eq!(mounts, [1], "one token mount: {restored}");
        for secret in secrets {
            assert!(
                target
                    .exists(&format!("/api/v1/namespaces/{ns}/secrets/{secret}"))
                    .await,
                "{name} mounts Secret {secret}, which the target does not have: {restored}"
            );
        }
        assert!(
            restored["spec"].get("ephemeralContainers").is_none(),
            "{restored}"
        );
    }

    // Right after, the Pods plan as they are: the target's token, node and priority are not
    // differences.
    let mut args = vec!["plan", "s", "-o", "json"];
    for i in &include {
        args.extend(["--include", i.as_str()]);
    }
    let run = crate::restore::k8s_snap(&data, Some(&target.kubeconfig), &args)
        .await
        .ok();
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    for (path, action) in crate::versions::plan_actions(&plan) {
        if path.starts_with(&pods) {
            assert_eq!(action, "exists", "{path}: {plan}");
        }
    }
    assert!(cleanup.finish().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pods_restored_onto_another_cluster_are_admitted_by_it() {
    let source = TestCluster::source().await;
    let target = TestCluster::target().await;
    bare_pods_are_admitted_by_the_target(&source, &target).await;
}

/// From a 1.19 server, whose token volume names a Secret, onto the latest release (projected
/// tokens, ephemeral containers refused on create) and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_pods_restore_across_token_volume_forms() {
    let old = TestCluster::emulated_at(ServerVersion::V1_19, Fixture::Empty).await;
    let new = TestCluster::emulated_at(ServerVersion::Latest, Fixture::Empty).await;
    bare_pods_are_admitted_by_the_target(&old, &new).await;
    bare_pods_are_admitted_by_the_target(&new, &old).await;
}

/// A validating webhook (`failurePolicy: Fail`) restored before what it intercepts would fail
/// it: its backend does not run yet on the target. Restored last, it lets the restore create
/// the namespace's Deployment, and then intercepts as it did on the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_webhooks_are_restored_after_what_they_intercept() {
    let source = TestCluster::source().await;
    let target = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let ns = source.namespace("it-webhook").await;
    // The webhook selects this namespace only (on a real cluster, nothing else is touched).
    let label = "k8s-snap.test/webhook";
    source
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}"),
            &json!({"metadata": {"labels": {label: &ns}}}),
        )
        .await;
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/services"),
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
                "spec": {"selector": {"app": "no-such-backend"}, "ports": [{"port": 443, "targetPort": 8443}]}}),
        )
        .await;
    let deployments = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    let deployment = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}})
    };
    source.post(&deployments, &deployment("web")).await;
    let webhooks = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
    let hook = format!("it-webhook-{:08x}", fastrand::u32(..));
    source
        .post_owned(
            webhooks,
            &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": hook},
                "webhooks": [{"name": "deny.it.k8s-snap.io", "failurePolicy": "Fail", "sideEffects": "None",
                    "admissionReviewVersions": ["v1"], "timeoutSeconds": 2,
                    "clientConfig": {"service": {"namespace": ns, "name": "hook", "path": "/validate"}},
                    "namespaceSelector": {"matchLabels": {label: ns}},
                    "rules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
                        "resources": ["deployments"]}]}]}),
        )
        .await;
    let refused = |e: Result<Value, kube::Error>| {
        let e = e.expect_err("the webhook intercepts a new Deployment");
        assert!(
            e.to_string()
                .contains("failed calling webhook \"deny.it.k8s-snap.io\""),
            "{e}"
        );
    };
    refused(source.try_post(&deployments, &deployment("late")).await);

    let data = DataDir::new();
    let cluster_scoped = ["--include-cluster-resources", "true"];
    snapshot_namespace(&data, &source.kubeconfig, "s", &ns, &cluster_scoped).await;
    let all = format!("/api/v1/namespaces/{ns}/**");
    let apps = format!("/apis/apps/v1/namespaces/{ns}/**");
    let hook_path = format!("{webhooks}/{hook}");
    let status = cleanup
        .restore_json(
            &data,
            &[
                "s",
                "--create-namespaces",
                "--include",
                &all,
                "--include",
                &apps,
                "--include",
                &hook_path,
            ],
        )
        .await;
    assert_eq!(status["numFailed"], 0, "{status}");
    let created = status["created"].to_string();
    for path in [format!("{deployments}/web"), hook_path.clone()] {
        assert!(created.contains(&path), "{path} not created: {status}");
    }
    refused(target.try_post(&deployments, &deployment("late")).await);
    assert!(cleanup.finish().await.is_empty());
}
