//! The deploy/ manifests: parse every YAML document and check the properties that keep the
//! controller safe to run (non-root, read-only root, probes, least-privilege RBAC), and the
//! kustomization behind `kubectl apply -k deploy/`: rendered by the real kubectl, with the
//! image and namespace overridden by an overlay, and accepted by an API server (the emulator).

use std::path::Path;

use serde_json::Value;

fn docs(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn every_manifest_parses_and_names_its_kind() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let samples = dir.join("samples");
    files.extend(
        std::fs::read_dir(&samples)
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    let mut n = 0;
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let rel = f.strip_prefix(&dir).unwrap().to_str().unwrap().to_string();
        for d in docs(&rel) {
            assert!(
                d["kind"].is_string() && d["apiVersion"].is_string(),
                "{rel}: {d}"
            );
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} documents");
}

#[test]
fn deployment_runs_hardened_with_probes() {
    let all = docs("deploy.yaml");
    let dep = all
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"controller"));
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "data")
        .expect("data mount");
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .expect("data volume");
    assert!(vol["emptyDir"].is_object());
    assert!(
        args.iter()
            .any(|a| a.ends_with(mount["mountPath"].as_str().unwrap()))
            || args.contains(&mount["mountPath"].as_str().unwrap())
    );
    assert_eq!(pod["serviceAccountName"], "k8s-snap");
}

fn verbs(rule: &Value) -> Vec<&str> {
    rule["verbs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn namespace_rbac_is_least_privilege() {
    let all = docs("namespace-rbac.yaml");
    let role = all
        .iter()
        .find(|d| d["kind"] == "Role")
        .expect("a namespaced Role");
    assert_eq!(role["metadata"]["namespace"], "k8s-snap");
    let rules = role["rules"].as_array().unwrap();
    for r in rules {
        assert!(!verbs(r).contains(&"*"), "wildcard verb: {r}");
        assert!(
            r["resources"].as_array().unwrap().iter().all(|x| x != "*"),
            "wildcard resource: {r}"
        );
    }
    let find = |res: &str| {
        rules
            .iter()
            .find(|r| r["resources"].as_array().unwrap().iter().any(|x| x == res))
            .unwrap_or_else(|| panic!("no rule for {res}"))
    };
    let crs = find("snapshots");
    for v in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(verbs(crs).contains(&v), "snapshots lacks {v}");
    }
    assert!(verbs(find("snapshots/status")).contains(&"patch"));
    assert!(verbs(find("snapshots/finalizers")).contains(&"update"));
    assert!(verbs(find("restores/status")).contains(&"patch"));
    let secrets = find("secrets");
    assert_eq!(verbs(secrets), ["get"], "secrets: read only");
    assert!(verbs(find("leases")).contains(&"update"));
    let events = find("events");
    assert_eq!(events["apiGroups"][0], "events.k8s.io");
    assert_eq!(verbs(events), ["create", "patch"], "events: publish only");
    // Nothing cluster-wide in the namespace RBAC file except the binding to the documented
    // ClusterRole for the own cluster.
    let cr = all
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("the own-cluster ClusterRole");
    let rules = cr["rules"].as_array().unwrap();
    assert!(rules.iter().all(|r| !verbs(r).contains(&"*")));
    assert!(
        all.iter()
            .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == "k8s-snap")
    );
}

/// `kubectl` with `args`, `stdin` piped in; the output, or `Err` with its stderr.
fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .map_err(|e| format!("kubectl stdin: {e}"))?;
    drop(input);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether kubectl can be run; prints why a test is skipped when it cannot.
fn have_kubectl(test: &str) -> bool {
    let ok = kubectl(&["version", "--client"], None).is_ok();
    if !ok {
        eprintln!("skipping {test}: kubectl is not installed");
    }
    ok
}

/// `kubectl kustomize <dir>`, parsed into its documents.
fn kustomize(dir: &Path) -> Vec<Value> {
    let text = kubectl(&["kustomize", dir.to_str().unwrap()], None).unwrap();
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .unwrap_or_else(|e| panic!("kubectl kustomize {}: {e}\n{text}", dir.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// An overlay in a temporary directory over the repository's deploy/ (kustomize takes bases
/// by relative path only).
fn overlay(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let ups = dir.path().components().count() - 1;
    let rel = format!(
        "{}{}",
        "../".repeat(ups),
        deploy.strip_prefix("/").unwrap().display()
    );
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!("resources:\n- {rel}\n{body}"),
    )
    .unwrap();
    dir
}

fn kinds(all: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = all
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

fn the<'a>(all: &'a [Value], kind: &str) -> &'a Value {
    all.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(all)))
}

fn container(all: &[Value]) -> &Value {
    &the(all, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// Kinds that live in a namespace (everything else rendered is cluster-scoped).
const NAMESPACED: &[&str] = &[
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "ObjectstoreConfig",
    "Deployment",
    "Service",
];

/// Every namespaced object, the Namespace itself and the ServiceAccount subjects of both
/// bindings are in `ns`, and the controller serves the namespace it runs in.
fn assert_namespace(all: &[Value], ns: &str) {
    assert_eq!(the(all, "Namespace")["metadata"]["name"], ns);
    for d in all {
        let kind = d["kind"].as_str().unwrap();
        if NAMESPACED.contains(&kind) {
            assert_eq!(d["metadata"]["namespace"], ns, "{kind}: {d}");
        } else {
            assert!(
                d["metadata"]["namespace"].is_null(),
                "{kind} is namespaced: {d}"
            );
        }
    }
    for binding in ["RoleBinding", "ClusterRoleBinding"] {
        let subject = &the(all, binding)["subjects"][0];
        assert_eq!(subject["kind"], "ServiceAccount");
        assert_eq!(subject["namespace"], ns, "{binding} subject");
    }
    let c = container(all);
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--namespace=$(POD_NAMESPACE)"),
        "the controller must serve its own namespace: {}",
        c["args"]
    );
    let env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE")
        .expect("POD_NAMESPACE");
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
}

fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn kustomization_installs_the_controller_and_nothing_else() {
    if !have_kubectl("kustomization_installs_the_controller_and_nothing_else") {
        return;
    }
    let all = kustomize(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"));
    let mut expected = vec![
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "ObjectstoreConfig",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ];
    expected.sort();
    // No samples and no RestorePreference: those are the user's to apply.
    assert_eq!(kinds(&all), expected);
    assert_namespace(&all, "k8s-snap");
    assert_eq!(container(&all)["image"], "ghcr.io/example/k8s-snap:0.1.0");
    // The CRDs pass through unchanged: the generated deploy/crd.yaml is what gets installed.
    let crds: Vec<&Value> = all
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    let mut generated = docs("crd.yaml");
    generated.sort_by_key(|d| d["metadata"]["name"].as_str().unwrap().to_string());
    let mut rendered: Vec<Value> = crds.into_iter().cloned().collect();
    rendered.sort_by_key(|d| d["metadata"]["name"].as_str().unwrap().to_string());
    // (Numbers compare by value: kustomize writes the generated `0.0` as `0`.)
    assert_eq!(rendered.len(), generated.len());
    for (r, g) in rendered.iter().zip(&generated) {
        assert_eq!(
            serde_json::to_string_pretty(&numbers_as_f64(r)).unwrap(),
            serde_json::to_string_pretty(&numbers_as_f64(g)).unwrap(),
            "kustomize changed the CRD"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_overlay_sets_image_and_namespace_and_the_server_accepts_it() {
    if !have_kubectl("kustomize_overlay_sets_image_and_namespace_and_the_server_accepts_it") {
        return;
    }
    let ns = "snap-deploy-test";
    let dir = overlay(&format!(
        "namespace: {ns}\nimages:\n- name: ghcr.io/example/k8s-snap\n  newName: registry.example.com/k8s-snap\n  newTag: \"0.2.0\"\n"
    ));
    let all = kustomize(dir.path());
    assert_eq!(
        container(&all)["image"],
        "registry.example.com/k8s-snap:0.2.0"
    );
    assert_namespace(&all, ns);

    // What `kubectl apply -k` sends, checked by an API server: the CRDs and the Namespace
    // installed first (as docs/controller.md says), then everything with a server dry run.
    let emu = kube_emulator::Emulator::builder()
        .start()
        .await
        .expect("emulator");
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    emu.write_kubeconfig(&kubeconfig, "deploy").unwrap();
    let kc = kubeconfig.to_str().unwrap().to_string();
    // A stream of JSON objects, one per line (kubectl reads concatenated JSON).
    let list = |items: Vec<&Value>| {
        items
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = list(
        all.iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition" || d["kind"] == "Namespace")
            .collect(),
    );
    let everything = list(all.iter().collect());
    let (applied, dry_run, deployments) = tokio::task::spawn_blocking(move || {
        kubectl(&["--kubeconfig", &kc, "apply", "-f", "-"], Some(&first)).unwrap();
        kubectl(
            &[
                "--kubeconfig",
                &kc,
                "wait",
                "--for",
                "condition=established",
                "--timeout=30s",
                "crd",
                "--all",
            ],
            None,
        )
        .unwrap();
        let dry_run = kubectl(
            &["--kubeconfig", &kc, "apply", "--dry-run=server", "-f", "-"],
            Some(&everything),
        );
        let deployments = kubectl(
            &[
                "--kubeconfig",
                &kc,
                "get",
                "deployments",
                "-A",
                "-o",
                "name",
            ],
            None,
        );
        (first.len(), dry_run, deployments)
    })
    .await
    .unwrap();
    assert!(applied > 0);
    let dry_run = dry_run.unwrap_or_else(|e| panic!("server dry run refused: {e}"));
    for (kind, name) in [
        ("deployment.apps", "k8s-snap-controller"),
        (
            "objectstoreconfig.clustersnapshot.rywt.io",
            "k8s-snap-ap-northeast-1",
        ),
        ("role.rbac.authorization.k8s.io", "k8s-snap-controller"),
        ("secret", "k8s-snap-ap-northeast-1"),
        ("service", "k8s-snap-metrics"),
        ("serviceaccount", "k8s-snap"),
    ] {
        assert!(
            dry_run.contains(&format!("{kind}/{name} created (server dry run)")),
            "{kind}/{name} not accepted:\n{dry_run}"
        );
    }
    // A dry run writes nothing.
    assert_eq!(deployments.unwrap().trim(), "");
    emu.shutdown().await;
}
