//! The real `kubectl` (v1.32) against a served emulator through a written kubeconfig.

use std::path::Path;

use kube_emulator::{Emulator, EmulatorHandle, Fixture};
use serde_json::json;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(kc: &Path, args: &[&str]) -> Out {
    let o = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .env("HOME", kc.parent().unwrap())
        .output()
        .await
        .expect("kubectl runs");
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

async fn ok(kc: &Path, args: &[&str]) -> String {
    let o = kubectl(kc, args).await;
    assert!(o.ok, "kubectl {args:?} failed: {}", o.stderr);
    o.stdout
}

fn objects() -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "shop", "uid": "22222222-2222-4222-8222-222222222222"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1-abcde", "namespace": "shop", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "22222222-2222-4222-8222-222222222222", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"}, "data": {"a": "1"}}),
    ]
}

/// The emulator with [`objects`] and its kubeconfig in a temp dir (kept with them), or `None`
/// (the test is skipped) where kubectl is absent. No token: kubectl sends credentials only
/// over TLS, and the emulator serves plain HTTP.
async fn serve() -> Option<(tempfile::TempDir, EmulatorHandle, std::path::PathBuf)> {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is absent");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::builder()
        .fixture(Fixture::Objects(objects()))
        .start()
        .await
        .unwrap();
    let kc = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kc, "emu").unwrap();
    Some((dir, emu, kc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_emulator_like_a_cluster() {
    let Some((_dir, emu, kc)) = serve().await else {
        return;
    };
    let kc = kc.as_path();
    let resources = ok(kc, &["api-resources"]).await;
    for needle in [
        "apps/v1",
        "batch/v1",
        "networking.k8s.io/v1",
        "rbac.authorization.k8s.io/v1",
        "storage.k8s.io/v1",
        "apiextensions.k8s.io/v1",
        "policy/v1",
        "autoscaling/v2",
        "coordination.k8s.io/v1",
        "events.k8s.io/v1",
        "discovery.k8s.io/v1",
        "scheduling.k8s.io/v1",
        "componentstatuses",
        "persistentvolumeclaims",
    ] {
        assert!(
            resources.contains(needle),
            "api-resources lacks {needle}:\n{resources}"
        );
    }
    let all = ok(kc, &["get", "all", "-A"]).await;
    assert!(
        all.contains("web-1-abcde") && all.contains("kubernetes") && all.contains("web-1"),
        "{all}"
    );
    let unchunked = ok(kc, &["get", "configmaps", "-A", "-o", "name"]).await;
    let chunked = ok(
        kc,
        &["get", "configmaps", "-A", "-o", "name", "--chunk-size=2"],
    )
    .await;
    assert_eq!(chunked, unchunked);
    assert!(unchunked.lines().count() >= 6, "{unchunked}");
    let version = ok(kc, &["get", "--raw", "/version"]).await;
    assert!(version.contains("\"gitVersion\":\"v1.32.0\""), "{version}");
    let pods = ok(kc, &["get", "pods", "-A", "-o", "yaml"]).await;
    assert!(
        pods.contains("ownerReferences:") && pods.contains("kind: ReplicaSet"),
        "{pods}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_applies_and_waits() {
    let Some((dir, emu, kc)) = serve().await else {
        return;
    };
    let kc = kc.as_path();
    ok(kc, &["create", "configmap", "cm1", "--from-literal=a=b"]).await;
    let again = kubectl(kc, &["create", "configmap", "cm1"]).await;
    assert!(
        !again.ok && again.stderr.contains("AlreadyExists")
            || again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    let missing = kubectl(kc, &["create", "configmap", "cm1", "-n", "nope"]).await;
    assert!(
        !missing.ok && missing.stderr.contains("namespaces \"nope\" not found"),
        "{}",
        missing.stderr
    );
    ok(kc, &["create", "service", "clusterip", "x", "--tcp=80:80"]).await;
    let ip = ok(
        kc,
        &["get", "service", "x", "-o", "jsonpath={.spec.clusterIP}"],
    )
    .await;
    assert!(ip.starts_with("10.96."), "{ip}");
    let crd = dir.path().join("crd.yaml");
    std::fs::write(&crd, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Gadget, plural: gadgets, singular: gadget, shortNames: [gd]}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n").unwrap();
    ok(kc, &["apply", "-f", crd.to_str().unwrap()]).await;
    ok(
        kc,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/gadgets.example.com",
            "--timeout=20s",
        ],
    )
    .await;
    let cr = dir.path().join("cr.yaml");
    std::fs::write(&cr, "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g1\n  namespace: default\nspec:\n  size: 2\n").unwrap();
    let applied = ok(kc, &["apply", "-f", cr.to_str().unwrap()]).await;
    assert!(applied.contains("created"), "{applied}");
    let applied = ok(kc, &["apply", "-f", cr.to_str().unwrap()]).await;
    assert!(applied.contains("unchanged"), "{applied}");
    let got = ok(kc, &["get", "gd", "g1", "-o", "jsonpath={.spec.size}"]).await;
    assert_eq!(got, "2");
    ok(kc, &["delete", "configmap", "cm1"]).await;
    let gone = kubectl(kc, &["get", "configmap", "cm1"]).await;
    assert!(!gone.ok && gone.stderr.contains("not found"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_owns_conflicts_and_prunes() {
    let Some((dir, emu, kc)) = serve().await else {
        return;
    };
    let kc = kc.as_path();
    let file = dir.path().join("cm.yaml");
    let f = file.to_str().unwrap();
    let write = |data: &str| {
        std::fs::write(
            &file,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: shop\ndata:\n{data}"),
        )
        .unwrap()
    };
    write("  a: \"1\"\n  b: \"2\"\n");
    let out = ok(kc, &["apply", "--server-side", "-f", f]).await;
    assert!(out.contains("serverside-applied"), "{out}");
    write("  a: \"9\"\n");
    let refused = kubectl(
        kc,
        &["apply", "--server-side", "--field-manager=other", "-f", f],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"),
        "{}",
        refused.stderr
    );
    ok(
        kc,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            f,
        ],
    )
    .await;
    // kubectl drops b (and a, now another manager's): b goes, a stays.
    write("  c: \"3\"\n");
    ok(kc, &["apply", "--server-side", "-f", f]).await;
    // `kubectl get configmap ssa -n shop --show-managed-fields -o jsonpath=<path>`.
    let get = |path: &'static str| async move {
        let arg = format!("jsonpath={path}");
        ok(
            kc,
            &[
                "get",
                "configmap",
                "ssa",
                "-n",
                "shop",
                "--show-managed-fields",
                "-o",
                &arg,
            ],
        )
        .await
    };
    let data: serde_json::Value = serde_json::from_str(&get("{.data}").await).unwrap();
    assert_eq!(data, json!({"a": "9", "c": "3"}));
    let managers = get("{range .metadata.managedFields[*]}{.manager}/{.operation} {end}").await;
    // Entries are in (operation, time, manager) order, as a real server writes them: which
    // apply comes first depends on whether the steps fell within the same second.
    let mut managers: Vec<&str> = managers.split_whitespace().collect();
    managers.sort_unstable();
    assert_eq!(managers, ["kubectl/Apply", "other/Apply"]);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_new_objects() {
    let Some((_dir, emu, kc)) = serve().await else {
        return;
    };
    let mut child = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "configmaps", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    ok(&kc, &["create", "configmap", "watched"]).await;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("configmap/watched") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found.ok(),
        Some(true),
        "kubectl get -w printed the new object"
    );
    let _ = child.kill().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn the_binary_prints_its_address_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc.yaml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--fixture",
            "empty",
            "--write-kubeconfig",
        ])
        .arg(&kc)
        .args(["--fault", "path=/api/v1/secrets,status=403"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .strip_prefix("listening on ")
        .expect("the documented first line");
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{line}"
    );
    let yaml = std::fs::read_to_string(&kc).unwrap();
    assert!(yaml.contains(url));
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&yaml).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let ns = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(ns.items.len(), 4);
    let e = kube::Api::<k8s_openapi::api::core::v1::Secret>::all(client)
        .list(&Default::default())
        .await;
    assert!(e.is_err(), "the --fault rule is active");
    let _ = child.kill().await;
}
