//! The deploy/ manifests: parse every YAML document and check the properties that keep the
//! controller safe to run (non-root, read-only root, probes, least-privilege RBAC).

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
