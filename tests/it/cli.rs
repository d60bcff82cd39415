//! CLI output, pinned with `insta` snapshots: the table, diff and contents formats people and
//! scripts read. Variable parts (namespace, times, counts, hashes) are filtered, so the same
//! snapshots hold against the emulator and against a real cluster.

use serde_json::json;

use crate::support::{DataDir, TestCluster};

fn settings(ns: &str) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(ns), "[ns]");
    s.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "[time]");
    s.add_filter(r"\b[0-9a-f]{40}\b", "[commit]");
    s.add_filter(r"\bat rv \d+", "at rv [rv]");
    s.set_prepend_module_to_snapshot(false);
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_diff_output() {
    let cluster = TestCluster::source().await;
    let ns = cluster.namespace("it-cli").await;
    let cm = format!("/api/v1/namespaces/{ns}/configmaps");
    cluster
        .post(
            &cm,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "settings", "namespace": ns},
                    "data": {"mode": "on", "script.sh": "#!/bin/sh\necho one\necho two\n"}}),
        )
        .await;
    cluster
        .post(
            &cm,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "gone", "namespace": ns}, "data": {"k": "v"}}),
        )
        .await;
    let kc = Some(cluster.kubeconfig.as_path());
    let data = DataDir::new();
    data.run(kc, &["snapshot", "before", "--cluster", "demo", "-q"])
        .ok();
    cluster
        .merge_patch(
            &format!("{cm}/settings"),
            &json!({"data": {"mode": "off", "script.sh": "#!/bin/sh\necho one\necho 2\n"}}),
        )
        .await;
    cluster
        .post(
            &cm,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "added", "namespace": ns}, "data": {"k": "v"}}),
        )
        .await;
    let client = cluster.cluster().await;
    client
        .request_bytes(http::Method::DELETE, &format!("{cm}/gone"), None, None)
        .await
        .unwrap();
    data.run(kc, &["snapshot", "after", "--cluster", "demo", "-q"])
        .ok();

    let prefix = format!("/api/v1/namespaces/{ns}/configmaps");
    let _guard = settings(&ns).bind_to_scope();

    let diff = data
        .run(None, &["diff", "before", "after", "--path", &prefix])
        .ok();
    insta::assert_snapshot!("diff", diff.stdout);
    let stat = data
        .run(
            None,
            &[
                "diff", "before", "after", "--stat", "--path", &prefix, "-o", "json",
            ],
        )
        .ok();
    insta::assert_snapshot!("diff_stat_json", stat.stdout);

    let show = data.run(None, &["show", "after", &prefix]).ok();
    // kube-root-ca.crt is added by the server in every namespace.
    let contents: Vec<&str> = show
        .stdout
        .lines()
        .filter(|l| !l.contains("kube-root-ca.crt"))
        .collect();
    insta::assert_snapshot!("show_contents", contents.join("\n"));
    let object = data
        .run(None, &["show", "after", &format!("{prefix}/settings")])
        .ok();
    insta::assert_snapshot!("show_object", object.stdout);

    // The list table: header and one row per snapshot.
    let list = data.run(None, &["list"]).ok();
    let mut lines = list.stdout.lines();
    let header = lines.next().unwrap_or_default();
    insta::assert_snapshot!("list_header", header);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{}", list.stdout);
    // Oldest first; snapshots taken within one second are ordered by name.
    let mut names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    names.sort();
    assert_eq!(names, ["after", "before"], "{}", list.stdout);
    assert!(rows.iter().all(|r| r[1] == "demo"), "{}", list.stdout);
}

#[test]
fn help_lists_the_commands() {
    let data = DataDir::new();
    let help = data.run(None, &["--help"]).ok();
    insta::assert_snapshot!("help", help.stdout);
}
