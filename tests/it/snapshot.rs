//! End-to-end: `k8s-snap snapshot` and browsing (issue 4 acceptance). Runs against the
//! emulator, or unchanged against a real cluster when `K8S_SNAP_TEST_KUBECONFIG` is set.

use serde_json::json;

use crate::support::{DataDir, TestCluster};

fn configmap(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "it"}},
        "data": {
            "run.sh": "#!/bin/sh\nset -eu\necho \"hello\"\n",
            "mode": "on",
            "count": "0777"
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_browse_diff_delete_round_trip() {
    let cluster = TestCluster::source().await;
    let ns = cluster.namespace("it-snap").await;
    cluster
        .post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &configmap(&ns, "app-config"),
        )
        .await;
    let kc = Some(cluster.kubeconfig.as_path());
    let data = DataDir::new();
    // On a real cluster other objects change between snapshots (leases, endpoints): compare our namespace.
    let scope: Vec<String> = if cluster.is_real() {
        vec![format!("api/v1/namespaces/{ns}")]
    } else {
        vec!["api".into(), "apis".into()]
    };
    let scope: Vec<&str> = scope.iter().map(String::as_str).collect();

    data.run(kc, &["snapshot", "s1", "--cluster", "demo"]).ok();
    let tag = data.git(&["rev-parse", "--verify", "snapshots/s1"]).ok();
    assert_eq!(tag.stdout.trim().len(), 40);

    // The tree holds exactly numberOfContents object files, none of the skipped kinds.
    let files = data
        .git(&[
            "ls-tree",
            "-r",
            "--name-only",
            "snapshots/s1",
            "--",
            "api",
            "apis",
        ])
        .ok()
        .stdout;
    let files: Vec<&str> = files.lines().collect();
    let list = data.run(None, &["list", "-o", "json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "s1");
    assert_eq!(list[0]["clusterName"], "demo");
    assert_eq!(
        list[0]["numberOfContents"].as_u64().unwrap() as usize,
        files.len()
    );
    assert!(files.len() > 10, "{files:?}");
    for f in &files {
        assert!(!f.starts_with("api/v1/nodes/"), "{f}");
        assert!(!f.contains("/events/"), "{f}");
        assert!(f.ends_with(".yaml"), "{f}");
    }
    for f in files.iter().filter(|f| f.contains("/secrets/")) {
        let text = data
            .git(&["show", &format!("snapshots/s1:{f}")])
            .ok()
            .stdout;
        assert!(
            !text.contains("kubernetes.io/service-account-token"),
            "{f} is a token secret"
        );
    }

    // The ConfigMap's file: canonical, no server-owned fields, data as the server has it.
    let file = format!("api/v1/namespaces/{ns}/configmaps/app-config.yaml");
    let text = data
        .git(&["show", &format!("snapshots/s1:{file}")])
        .ok()
        .stdout;
    assert!(
        text.starts_with("apiVersion: v1\nkind: ConfigMap\nmetadata:\n"),
        "{text}"
    );
    for field in [
        "uid:",
        "resourceVersion:",
        "creationTimestamp:",
        "managedFields:",
    ] {
        assert!(!text.contains(field), "{field} in {text}");
    }
    let parsed = k8s_snap::tree::from_yaml(&text).unwrap();
    let live = cluster
        .get(&format!("/api/v1/namespaces/{ns}/configmaps/app-config"))
        .await;
    assert_eq!(parsed["data"], live["data"]);
    assert!(
        text.contains("run.sh: |\n"),
        "multi-line data is a literal block:\n{text}"
    );

    // Change one ConfigMap: the next snapshot differs in exactly that file.
    cluster
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}/configmaps/app-config"),
            &json!({"data": {"mode": "off"}}),
        )
        .await;
    data.run(kc, &["snapshot", "s2", "--cluster", "demo"]).ok();
    let mut args = vec!["diff", "--name-only", "snapshots/s1", "snapshots/s2", "--"];
    args.extend(&scope);
    let changed = data.git(&args).ok().stdout;
    assert_eq!(changed.lines().collect::<Vec<_>>(), vec![file.as_str()]);

    // An unchanged cluster gives an identical tree.
    data.run(kc, &["snapshot", "s3", "--cluster", "demo"]).ok();
    let mut args = vec!["diff", "--quiet", "snapshots/s2", "snapshots/s3", "--"];
    args.extend(&scope);
    data.git(&args).ok();
    let log = data
        .git(&["log", "--format=%s", "clusters/demo"])
        .ok()
        .stdout;
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(
        log.lines()
            .next()
            .unwrap()
            .starts_with("snapshot s3 of demo at rv "),
        "{log}"
    );

    // k8s-snap diff and show.
    let diff = data
        .run(
            None,
            &[
                "diff",
                "s1",
                "s3",
                "--path",
                &format!("/api/v1/namespaces/{ns}"),
            ],
        )
        .ok()
        .stdout;
    assert!(
        diff.contains("-  mode: \"on\"") && diff.contains("+  mode: \"off\""),
        "{diff}"
    );
    let shown = data
        .run(
            None,
            &[
                "show",
                "s1",
                &format!("/api/v1/namespaces/{ns}/configmaps/app-config"),
            ],
        )
        .ok();
    assert_eq!(shown.stdout, text);
    let contents = data.run(None, &["show", "s1"]).ok().stdout;
    assert!(
        contents
            .lines()
            .any(|l| l == format!("/api/v1/namespaces/{ns}/configmaps/app-config")),
        "{contents}"
    );
    assert!(
        contents
            .lines()
            .any(|l| l == format!("/api/v1/namespaces/{ns}")),
        "the namespace itself is content"
    );

    // A duplicate name is refused before any work; the existing tag is untouched.
    let again = data
        .run(kc, &["snapshot", "s1", "--cluster", "demo"])
        .failed();
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(
        data.git(&["rev-parse", "snapshots/s1"]).ok().stdout,
        tag.stdout
    );

    // Delete s2: the cluster history has two commits left, and gc keeps the rest readable.
    data.run(None, &["delete", "s2"]).ok();
    let log = data
        .git(&["log", "--format=%s", "clusters/demo"])
        .ok()
        .stdout;
    assert_eq!(log.lines().count(), 2, "{log}");
    data.run(None, &["gc"]).ok();
    data.git(&["fsck", "--no-dangling"]).ok();
    data.git(&["show", &format!("snapshots/s1:{file}")]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kubeconfig_fails_and_leaves_no_tag() {
    let data = DataDir::new();
    let missing = data.path().join("missing-kubeconfig");
    let run = data.run(Some(&missing), &["snapshot", "s1"]).failed();
    assert!(
        run.stderr.contains("missing-kubeconfig"),
        "names the file: {}",
        run.stderr
    );

    let malformed = data.path().join("malformed");
    std::fs::write(
        &malformed,
        "apiVersion: v1\nclusters: [\n  token: supersecret-token-value\n",
    )
    .unwrap();
    let run = data.run(Some(&malformed), &["snapshot", "s1"]).failed();
    assert!(run.stderr.contains("malformed"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("supersecret"),
        "no secret in errors: {}",
        run.stderr
    );

    let run = data.run(None, &["list", "-o", "json"]).ok();
    assert_eq!(run.stdout.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_snapshot_names_are_refused_before_any_work() {
    let data = DataDir::new();
    // An unreachable kubeconfig: a name check that happens first never gets to connect.
    for name in ["../x", "Upper", "a/b", "", "-lead"] {
        let run = data
            .run(
                None,
                &["--kubeconfig", "/nonexistent", "snapshot", "--", name],
            )
            .failed();
        assert!(
            run.stderr.contains("invalid snapshot name"),
            "{name}: {}",
            run.stderr
        );
    }
    assert!(!data.git_dir().join("refs/tags/snapshots").exists());
}
