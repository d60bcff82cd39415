//! `k8s-snap prune`: a retention policy applied to one cluster's snapshots in the mirror and
//! the store (snapshots written with controlled timestamps straight into the mirror, then
//! pushed with the CLI).

use k8s_snap::mirror::Mirror;
use k8s_snap::tree::meta::{Consistency, SNAPSHOT_META_FILE, SnapshotMeta};

use crate::support::DataDir;

/// Writes a one-object snapshot `name` of `cluster` taken at `time` into the mirror.
fn write_snapshot(m: &Mirror, name: &str, cluster: &str, time: &str) {
    let meta = SnapshotMeta {
        format_version: 1,
        name: name.into(),
        cluster_name: cluster.into(),
        resource_version: "100".into(),
        timestamp: time.parse().expect("timestamp"),
        server_version: "v1.32.0".into(),
        consistency: Consistency::Exact,
        number_of_contents: 1,
        ttl: None,
        available_until: None,
        tool_version: "k8s-snap test".into(),
        skipped: vec![],
        imported_from: None,
        encryption: None,
        filter: None,
        unavailable_apis: Vec::new(),
    };
    let mut w = m.writer(name, cluster).expect("writer");
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    w.add("api/v1/namespaces/default/configmaps/c.yaml", cm.as_bytes())
        .expect("add");
    let yaml = serde_saphyr::to_string(&meta).expect("meta yaml");
    w.add(SNAPSHOT_META_FILE, yaml.as_bytes())
        .expect("add meta");
    w.finish(&meta).expect("finish");
}

/// Ten snapshots of `prod` over five days (08:00 and 20:00 UTC), one of `other`, all pushed
/// to the data dir's default store.
fn five_days() -> DataDir {
    crate::mirror::sandbox_git_config();
    let data = DataDir::new();
    let m = Mirror::open_or_init(&data.git_dir()).expect("mirror");
    for day in 1..=5 {
        for hour in [8, 20] {
            let name = format!("prod-202603{day:02}{hour:02}0000");
            write_snapshot(
                &m,
                &name,
                "prod",
                &format!("2026-03-{day:02}T{hour:02}:00:00Z"),
            );
        }
    }
    write_snapshot(&m, "other-1", "other", "2026-03-01T01:00:00Z");
    drop(m);
    data.run(None, &["push"]).ok();
    data
}

/// Names listed by `list -o json` in the mirror (`local`/`both`) and in the store.
fn listed(data: &DataDir) -> (Vec<String>, Vec<String>) {
    let run = data.run(None, &["list", "-o", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let mut local = Vec::new();
    let mut store = Vec::new();
    for s in v.as_array().expect("array") {
        let name = s["name"].as_str().unwrap().to_string();
        match s["location"].as_str().unwrap() {
            "both" => {
                local.push(name.clone());
                store.push(name);
            }
            "local" => local.push(name),
            _ => store.push(name),
        }
    }
    local.sort();
    store.sort();
    (local, store)
}

#[test]
fn dry_run_lists_and_removes_nothing_then_prune_removes_from_mirror_and_store() {
    let data = five_days();
    let (before_local, before_store) = listed(&data);
    assert_eq!(before_local.len(), 11);
    assert_eq!(before_store, before_local);

    let dry = data
        .run(
            None,
            &[
                "prune",
                "--cluster",
                "prod",
                "--keep-daily",
                "2",
                "--dry-run",
            ],
        )
        .ok();
    insta::assert_snapshot!("prune_dry_run", dry.stdout);
    assert_eq!(
        listed(&data),
        (before_local.clone(), before_store),
        "a dry run removes nothing"
    );

    let json = data
        .run(
            None,
            &[
                "prune",
                "--cluster",
                "prod",
                "--keep-daily",
                "2",
                "--dry-run",
                "-o",
                "json",
            ],
        )
        .ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("kept"),
        ["prod-20260305200000", "prod-20260304200000"]
    );
    assert_eq!(names("removed").len(), 8);
    assert_eq!(v["kept"][0]["reasons"], serde_json::json!(["daily"]));
    assert_eq!(
        v["removed"][0]["reasons"],
        serde_json::json!(["outside the policy"])
    );
    assert_eq!(v["dryRun"], true);

    let real = data
        .run(None, &["prune", "--cluster", "prod", "--keep-daily", "2"])
        .ok();
    assert!(
        real.stdout
            .contains("8 snapshot(s) of prod removed, 2 kept"),
        "{}",
        real.stdout
    );
    let want: Vec<String> = ["other-1", "prod-20260304200000", "prod-20260305200000"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        listed(&data),
        (want.clone(), want),
        "removed from the mirror and the store"
    );
    // git agrees: the removed tags are gone.
    let tags = data.git(&["tag", "--list"]).ok().stdout;
    assert!(!tags.contains("prod-20260301"), "{tags}");

    // Idempotent: a second run removes nothing.
    let again = data
        .run(None, &["prune", "--cluster", "prod", "--keep-daily", "2"])
        .ok();
    assert!(
        again
            .stdout
            .contains("0 snapshot(s) of prod removed, 2 kept"),
        "{}",
        again.stdout
    );
}

#[test]
fn prune_without_a_keep_flag_refuses_with_exit_2() {
    let data = five_days();
    let run = data.run(None, &["prune", "--cluster", "prod"]).exit_code(2);
    assert!(run.stderr.contains("--keep-"), "{}", run.stderr);
    // A zero count is no rule either.
    data.run(None, &["prune", "--cluster", "prod", "--keep-last", "0"])
        .exit_code(2);
    assert_eq!(listed(&data).0.len(), 11, "nothing removed");
}

#[test]
fn local_only_prunes_the_mirror_and_leaves_the_store() {
    let data = five_days();
    data.run(
        None,
        &[
            "prune",
            "--cluster",
            "prod",
            "--keep-last",
            "3",
            "--local-only",
        ],
    )
    .ok();
    let (local, store) = listed(&data);
    assert_eq!(local.len(), 4, "{local:?}");
    assert_eq!(store.len(), 11);
}

/// `snapshot` without a name takes `<cluster>-<yyyymmddhhmmss>` (UTC, the time it started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_without_a_name_is_named_after_the_cluster_and_time() {
    let cluster = crate::support::TestCluster::source().await;
    let data = DataDir::new();
    let before = jiff::Timestamp::now();
    data.run(
        Some(cluster.kubeconfig.as_path()),
        &["snapshot", "--cluster", "demo", "--no-push", "-q"],
    )
    .ok();
    let after = jiff::Timestamp::now();
    let local = listed_local(&data);
    assert_eq!(local.len(), 1, "{local:?}");
    let stamp = local[0]
        .strip_prefix("demo-")
        .expect("named after the cluster");
    assert_eq!(stamp.len(), 14, "{stamp}");
    let t = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", stamp)
        .expect("yyyymmddhhmmss")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .expect("utc")
        .timestamp();
    // The name has whole seconds.
    let earliest = before - jiff::SignedDuration::from_secs(1);
    assert!(
        t >= earliest && t <= after,
        "{t} not in [{before}, {after}]"
    );
}

fn listed_local(data: &DataDir) -> Vec<String> {
    let run = data.run(None, &["list", "--local-only", "-o", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}
