//! End-to-end: snapshots of part of a cluster, restores of part of a snapshot, and namespace
//! mapping (issue 19). The source is the realistic emulator (its namespace `shop`) or, with
//! `$K8S_SNAP_TEST_KUBECONFIG`, a real cluster where the test makes a namespace of its own
//! holding the same kinds of objects (deleted again when the test ends, as is every object a
//! restore created: `RestoreCleanup`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::restore::k8s_snap;
use crate::support::{
    DataDir, RestoreCleanup, TestCluster, created_paths, json_of, plan_json, snapshot_namespace,
};

const PART_OF: &str = "app.kubernetes.io/part-of";

/// The namespace the test works on: the fixture's `shop` on the emulator; on a real cluster a
/// new namespace holding ConfigMaps, an Opaque Secret, a ServiceAccount, a Role and a
/// RoleBinding naming the ServiceAccount (some labelled `app.kubernetes.io/part-of: <ns>`,
/// as the fixture's are), once the namespace's own controllers have filled it in.
async fn namespace(source: &TestCluster) -> String {
    if !source.is_real() {
        return "shop".into();
    }
    let ns = source.namespace("sel").await;
    let labels = json!({ PART_OF: ns });
    let objects = [
        (
            "/api/v1/namespaces/{ns}/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frontend-config", "labels": labels}, "data": {"nginx.conf": "server {}\n"}}),
        ),
        (
            "/api/v1/namespaces/{ns}/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api-scripts"}, "data": {"LOG_LEVEL": "info"}}),
        ),
        (
            "/api/v1/namespaces/{ns}/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-credentials", "labels": labels}, "type": "Opaque", "stringData": {"KEY": "fixture"}}),
        ),
        (
            "/api/v1/namespaces/{ns}/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop-api"}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "config-reader", "labels": labels},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "api-config-reader"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "shop-api", "namespace": ns}]}),
        ),
    ];
    for (collection, body) in objects {
        source.post(&collection.replace("{ns}", &ns), &body).await;
    }
    // A real cluster's controllers add these to every namespace (the CA bundle from 1.20);
    // wait for them so that the snapshots compared below see the same namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut made = vec![format!("/api/v1/namespaces/{ns}/serviceaccounts/default")];
    if source.server_minor().await >= 20 {
        made.push(format!(
            "/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"
        ));
    }
    for path in made {
        while !source.exists(&path).await && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    ns
}

/// The content paths of a snapshot, from `show -o json`.
async fn contents(data: &DataDir, name: &str) -> BTreeSet<String> {
    let run = k8s_snap(data, None, &["show", name, "-o", "json"])
        .await
        .ok();
    let v: Value = serde_json::from_str(&run.stdout).expect("show -o json");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|p| p.as_str().expect("a path").to_string())
        .collect()
}

/// Whether a content path is in namespace `ns` (or is the Namespace `ns` itself).
fn in_namespace(path: &str, ns: &str) -> bool {
    path == format!("/api/v1/namespaces/{ns}") || path.contains(&format!("/namespaces/{ns}/"))
}

fn resource_of(path: &str) -> &str {
    let parts: Vec<&str> = path.split('/').collect();
    parts[parts.len() - 2]
}

fn snapshot_objects(data: &DataDir, name: &str) -> Vec<k8s_snap::restore::SnapshotObject> {
    k8s_snap::restore::load_snapshot(&data.git_dir(), name)
        .expect("snapshot loads")
        .objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_snapshots_hold_only_what_the_filter_selects() {
    let source = TestCluster::source().await;
    let kc = Some(source.kubeconfig.as_path());
    let ns = namespace(&source).await;
    let data = DataDir::new();

    let filter = [
        "--include-namespaces",
        &ns,
        "--exclude-resources",
        "secrets",
    ];
    let mut args = vec!["snapshot", "part", "--no-push"];
    args.extend(filter);
    let part = k8s_snap(&data, kc, &args).await.ok();
    assert!(
        part.stdout.contains(&format!(
            "partial snapshot: --include-namespaces {ns} --exclude-resources secrets"
        )),
        "{}",
        part.stdout
    );
    let selector = format!("{PART_OF}={ns}");
    k8s_snap(
        &data,
        kc,
        &["snapshot", "sel", "--no-push", "-l", &selector],
    )
    .await
    .ok();
    k8s_snap(&data, kc, &["snapshot", "full", "--no-push"])
        .await
        .ok();

    // Exactly the namespace's objects other than Secrets, its Namespace object included, and
    // nothing cluster-scoped besides.
    let full = contents(&data, "full").await;
    let expected: BTreeSet<String> = full
        .iter()
        .filter(|p| in_namespace(p, &ns) && resource_of(p) != "secrets")
        .cloned()
        .collect();
    assert!(expected.len() > 5, "{expected:?}");
    assert!(
        full.iter()
            .any(|p| in_namespace(p, &ns) && resource_of(p) == "secrets"),
        "the namespace holds Secrets to leave out"
    );
    let got = contents(&data, "part").await;
    assert_eq!(got, expected);
    assert!(got.iter().all(|p| p.contains("/namespaces/")));
    // The same through a glob (each resource listed across all namespaces, then filtered).
    let glob = format!("{}?", &ns[..ns.len() - 1]);
    k8s_snap(
        &data,
        kc,
        &[
            "snapshot",
            "glob",
            "--no-push",
            "--include-namespaces",
            &glob,
            "--exclude-resources",
            "Secret",
        ],
    )
    .await
    .ok();
    assert_eq!(contents(&data, "glob").await, expected);

    // The label selector: every object carrying the label, and no other.
    let labelled = |o: &k8s_snap::restore::SnapshotObject| {
        o.object
            .value()
            .pointer(&format!("/metadata/labels/{}", PART_OF.replace('/', "~1")))
            .cloned()
            == Some(json!(ns))
    };
    let expected: BTreeSet<String> = snapshot_objects(&data, "full")
        .iter()
        .filter(|o| labelled(o))
        .map(|o| o.path.as_str().to_string())
        .collect();
    let sel = snapshot_objects(&data, "sel");
    assert!(!sel.is_empty());
    assert!(sel.iter().all(labelled));
    let got: BTreeSet<String> = sel.iter().map(|o| o.path.as_str().to_string()).collect();
    assert_eq!(got, expected);

    // The filter is recorded; list and show mark partial snapshots.
    let mirror = k8s_snap::mirror::Mirror::open(&data.git_dir()).expect("mirror");
    let meta = |name: &str| mirror.snapshot(name).expect("read").expect("exists").meta;
    let recorded = meta("part").filter.expect("filter recorded");
    assert_eq!(recorded.include_namespaces, vec![ns.clone()]);
    assert_eq!(recorded.exclude_resources, ["secrets"]);
    assert_eq!(
        meta("sel").filter.and_then(|f| f.label_selector),
        Some(selector.clone())
    );
    assert_eq!(meta("full").filter, None);
    let list = k8s_snap(&data, None, &["list", "--local-only", "-o", "json"])
        .await
        .ok();
    let list = json_of(&list);
    for item in list.as_array().unwrap() {
        let partial = item["name"] != "full";
        assert_eq!(item.get("filter").is_some(), partial, "{item}");
    }
    let table = k8s_snap(&data, None, &["list", "--local-only"]).await.ok();
    let line = |name: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {}", table.stdout))
            .to_string()
    };
    assert!(line("part").contains("(partial)") && !line("full").contains("(partial)"));

    // A resource filter naming nothing the server serves fails, and no snapshot is tagged.
    let bad = k8s_snap(
        &data,
        kc,
        &[
            "snapshot",
            "bad",
            "--no-push",
            "--include-resources",
            "configmaps,confimgaps",
        ],
    )
    .await
    .failed();
    assert!(
        bad.stderr
            .contains("includeResources \"confimgaps\": no resource the server serves matches"),
        "{}",
        bad.stderr
    );
    // A malformed selector is refused before the cluster is asked anything.
    let bad_selector = k8s_snap(
        &data,
        kc,
        &["snapshot", "bad", "--no-push", "-l", "app=a b"],
    )
    .await
    .failed();
    assert!(
        bad_selector.stderr.contains("labelSelector \"app=a b\""),
        "{}",
        bad_selector.stderr
    );
    assert!(mirror.snapshot("bad").expect("read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_restores_only_the_matching_objects() {
    let source = TestCluster::source().await;
    let kc = Some(source.kubeconfig.as_path());
    let ns = namespace(&source).await;
    let cleanup = RestoreCleanup::new(&source).await;
    let data = DataDir::new();
    snapshot_namespace(&data, &source.kubeconfig, "s1", &ns, &[]).await;
    let in_snapshot = contents(&data, "s1").await;

    // Delete the namespace's ConfigMaps (not the one a real cluster's controller recreates).
    let deleted: BTreeSet<String> = in_snapshot
        .iter()
        .filter(|p| p.starts_with(&format!("/api/v1/namespaces/{ns}/configmaps/")))
        .filter(|p| !p.ends_with("/kube-root-ca.crt"))
        .cloned()
        .collect();
    assert!(deleted.len() >= 2, "{in_snapshot:?}");
    let c = source.cluster().await;
    for p in &deleted {
        c.request_bytes(http::Method::DELETE, p, None, None)
            .await
            .unwrap_or_else(|e| panic!("DELETE {p}: {e}"));
    }

    let glob = format!("/api/v1/namespaces/{ns}/configmaps/*");
    let plan = plan_json(&data, &source.kubeconfig, &["s1", "--include", &glob]).await;
    let items = plan["items"].as_array().unwrap();
    assert!(
        items.iter().all(|i| {
            let p = i["path"].as_str().unwrap();
            p.starts_with(&format!("/api/v1/namespaces/{ns}/configmaps/"))
        }),
        "{plan}"
    );
    let status = cleanup
        .restore_json(&data, &["s1", "--include", &glob])
        .await;
    let created = created_paths(&status);
    assert_eq!(created, deleted, "{status}");
    assert_eq!(status["numFailed"], 0, "{status}");
    for p in &deleted {
        assert!(source.exists(p).await, "{p} not restored");
    }
    // A glob matching nothing is an error, not an empty restore.
    let none = k8s_snap(
        &data,
        kc,
        &["plan", "s1", "--include", "/api/v1/namespaces/nope/**"],
    )
    .await
    .failed();
    assert!(
        none.stderr.contains("no object matches --include"),
        "{}",
        none.stderr
    );
    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the cluster: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_onto_another_cluster_reports_or_creates_the_namespace() {
    let source = TestCluster::source().await;
    let ns = namespace(&source).await;
    let target = crate::restore::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let data = DataDir::new();
    snapshot_namespace(&data, &source.kubeconfig, "s1", &ns, &[]).await;
    let glob = format!("/api/v1/namespaces/{ns}/configmaps/*");
    // Without the Namespace: every ConfigMap is reported, nothing would be created.
    let plan = plan_json(&data, &target.kubeconfig, &["s1", "--include", &glob]).await;
    let items = plan["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for i in items {
        assert_eq!(i["action"], "excluded", "{i}");
        assert!(
            i["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("missing-namespace: {ns} ")),
            "{i}"
        );
    }
    assert_eq!(plan["summary"]["toCreate"], 0);
    // With --create-namespaces: the Namespace (the snapshot's) and the ConfigMaps.
    let status = cleanup
        .restore_json(&data, &["s1", "--include", &glob, "--create-namespaces"])
        .await;
    let created = created_paths(&status);
    // The target's own controller makes `kube-root-ca.crt` in the new namespace first.
    let mut expected: BTreeSet<String> = items
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .filter(|p| !p.ends_with("/kube-root-ca.crt"))
        .collect();
    expected.insert(format!("/api/v1/namespaces/{ns}"));
    assert_eq!(created, expected, "{status}");
    assert_eq!(status["numFailed"], 0, "{status}");
    let ns_object = target.get(&format!("/api/v1/namespaces/{ns}")).await;
    assert_eq!(
        ns_object["metadata"]["labels"]["kubernetes.io/metadata.name"],
        json!(ns)
    );
    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the target: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_mapping_makes_a_working_copy_on_the_source() {
    let source = TestCluster::source().await;
    let ns = namespace(&source).await;
    let copy = format!("{ns}-copy");
    let cleanup = RestoreCleanup::new(&source).await;
    let data = DataDir::new();
    snapshot_namespace(&data, &source.kubeconfig, "before", &ns, &[]).await;

    let mapping = format!("{ns}={copy}");
    let status = cleanup
        .restore_json(&data, &["before", "--namespace-mapping", &mapping])
        .await;
    assert_eq!(status["numFailed"], 0, "{status}");
    assert!(
        status["created"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| in_namespace(p.as_str().unwrap(), &copy)),
        "only the copy is created: {status}"
    );

    // Every object of the namespace a restore restores exists in the copy.
    let selected = k8s_snap::restore::select(
        snapshot_objects(&data, "before"),
        &k8s_snap::restore::Preference::default(),
        &k8s_snap::restore::RuleOptions::default(),
    );
    let mut checked = 0;
    for (path, s) in &selected {
        if !matches!(s, k8s_snap::restore::Selection::Restore { .. }) {
            continue;
        }
        let moved = match path.namespace() {
            Some(_) => path.as_str().replacen(
                &format!("/namespaces/{ns}/"),
                &format!("/namespaces/{copy}/"),
                1,
            ),
            None => format!("/api/v1/namespaces/{copy}"),
        };
        assert!(source.exists(&moved).await, "{moved} missing in the copy");
        checked += 1;
    }
    assert!(checked > 5, "{checked}");
    let ns_object = source.get(&format!("/api/v1/namespaces/{copy}")).await;
    assert_eq!(
        ns_object["metadata"]["labels"]["kubernetes.io/metadata.name"],
        json!(copy)
    );
    // RoleBinding subjects point at the copy.
    let rb = source
        .get(&format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{copy}/rolebindings/api-config-reader"
        ))
        .await;
    assert_eq!(rb["subjects"][0]["namespace"], json!(copy), "{rb}");
    assert_eq!(rb["subjects"][0]["name"], "shop-api");
    if !source.is_real() {
        // The fixture's NodePort Service got a port of its own (the original's is in use).
        let svc = |n: &str| format!("/api/v1/namespaces/{n}/services/frontend");
        let original = source.get(&svc(&ns)).await;
        let copied = source.get(&svc(&copy)).await;
        let port = |s: &Value| s["spec"]["ports"][0]["nodePort"].clone();
        assert!(
            port(&copied).is_u64() && port(&copied) != port(&original),
            "{copied}"
        );
    }

    // Nothing in the source namespace changed.
    snapshot_namespace(&data, &source.kubeconfig, "after", &ns, &[]).await;
    let objects = |name: &str| -> Vec<(String, Value)> {
        snapshot_objects(&data, name)
            .into_iter()
            .map(|o| (o.path.as_str().to_string(), o.object.value()))
            .collect()
    };
    assert_eq!(objects("after"), objects("before"));

    // Mapped onto a namespace that exists now, the same objects plan as existing: nothing
    // to create.
    let plan = plan_json(
        &data,
        &source.kubeconfig,
        &["before", "--namespace-mapping", &mapping],
    )
    .await;
    assert_eq!(plan["summary"]["toCreate"], 0, "{plan}");
    let left = cleanup.finish().await;
    assert!(left.is_empty(), "left on the cluster: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_takes_partial_snapshots_and_maps_namespaces() {
    use crate::controller::{
        Management, create_restore, create_snapshot, phase_of, realistic_source, restore_final,
        spec_of,
    };
    use k8s_snap::controller::{RestoreSpec, SnapshotSpec};

    let mgmt = Management::start().await;
    let ctl = mgmt.controller("selective").await;
    // Source and target: an in-process realistic emulator the controller reaches.
    let source = realistic_source().await;
    let snapshots = mgmt.snapshots().await;
    let filter = k8s_snap::tree::SnapshotFilter {
        include_namespaces: vec!["shop".into()],
        exclude_resources: vec!["secrets".into()],
        ..Default::default()
    };
    create_snapshot(
        &snapshots,
        "shop-only",
        SnapshotSpec {
            filter: filter.clone(),
            ..spec_of(&source)
        },
    )
    .await;
    create_snapshot(
        &snapshots,
        "typo",
        SnapshotSpec {
            filter: k8s_snap::tree::SnapshotFilter {
                include_resources: vec!["confimgaps".into()],
                ..Default::default()
            },
            ..spec_of(&source)
        },
    )
    .await;
    phase_of(&snapshots, "shop-only", &["Completed"]).await;
    phase_of(&snapshots, "typo", &["Failed"]).await;
    let typo = snapshots.get("typo").await.unwrap().status.unwrap();
    assert!(
        typo.reason.contains("includeResources \"confimgaps\""),
        "{}",
        typo.reason
    );
    let status = snapshots.get("shop-only").await.unwrap().status.unwrap();
    let contents = status.contents.unwrap_or_default();
    assert!(contents.len() > 5, "{contents:?}");
    assert!(
        contents
            .iter()
            .all(|p| in_namespace(p, "shop") && resource_of(p) != "secrets"),
        "{contents:?}"
    );

    // A Restore mapping shop onto shop-copy, back onto the source.
    let restores = mgmt.restores().await;
    create_restore(
        &restores,
        "copy",
        RestoreSpec {
            snapshot_name: "shop-only".into(),
            kubeconfig: Some(source.kubeconfig_yaml("src")),
            namespace_mapping: [("shop".to_string(), "shop-copy".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    let st = restore_final(&restores, "copy").await;
    assert_eq!(st.restore.phase, "Completed", "{}", st.restore.reason);
    assert_eq!(st.restore.num_failed, 0);
    let created = st.restore.created.clone().unwrap_or_default();
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|p| in_namespace(p, "shop-copy")),
        "{created:?}"
    );
    let client = source.client().await;
    let rb: kube::Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        kube::Api::namespaced(client, "shop-copy");
    let rb = rb.get("api-config-reader").await.unwrap();
    assert_eq!(
        rb.subjects.unwrap()[0].namespace.as_deref(),
        Some("shop-copy")
    );
    ctl.stop().await.unwrap();
}

#[tokio::test]
async fn bad_selection_flags_name_the_flag() {
    let data = DataDir::new();
    let refused = |args: &'static [&'static str], want: &'static str| {
        let data = &data;
        async move {
            let run = k8s_snap(data, None, args).await;
            assert_ne!(run.code, 0);
            assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
        }
    };
    refused(
        &["plan", "s1", "--namespace-mapping", "shop"],
        "expected OLD=NEW",
    )
    .await;
    refused(
        &["plan", "s1", "--namespace-mapping", "shop=Shop"],
        "--namespace-mapping shop=Shop: \"Shop\" is not a namespace name",
    )
    .await;
    refused(
        &[
            "plan",
            "s1",
            "--namespace-mapping",
            "a=c",
            "--namespace-mapping",
            "b=c",
        ],
        "both mapped onto \"c\"",
    )
    .await;
    refused(
        &["restore", "s1", "--include", "api/v1/namespaces/shop/**"],
        "--include \"api/v1/namespaces/shop/**\": a content path glob starts with '/'",
    )
    .await;
    refused(
        &["snapshot", "s1", "--include-namespaces", "shop/x"],
        "includeNamespaces \"shop/x\"",
    )
    .await;
    refused(
        &["snapshot", "s1", "--include-cluster-resources", "maybe"],
        "maybe",
    )
    .await;
}

/// A sealed Secret value is bound to the path it was sealed at: a restore that maps its
/// namespace elsewhere still opens it, and creates the Secret with its exact values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_secrets_restore_under_a_namespace_mapping() {
    let source = TestCluster::source().await;
    let ns = namespace(&source).await;
    let target = crate::restore::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let data = DataDir::new();
    let (identity, recipient) = crate::encryption::keygen(&data, "id.txt");
    let encrypt = ["--encrypt-to", recipient.as_str()];
    snapshot_namespace(&data, &source.kubeconfig, "s1", &ns, &encrypt).await;
    let copy = format!("{ns}-sealed");
    let mapping = format!("{ns}={copy}");
    let glob = format!("/api/v1/namespaces/{ns}/secrets/*");
    let status = cleanup
        .restore_json(
            &data,
            &[
                "s1",
                "--include",
                &glob,
                "--namespace-mapping",
                &mapping,
                "--create-namespaces",
                "--identity",
                identity.to_str().unwrap(),
            ],
        )
        .await;
    assert!(
        status["created"].as_array().is_some_and(|c| !c.is_empty()),
        "{status}"
    );
    let secrets = source
        .get(&format!("/api/v1/namespaces/{ns}/secrets"))
        .await;
    let mut compared = 0;
    for s in secrets["items"].as_array().unwrap() {
        if s["type"] == "kubernetes.io/service-account-token" {
            continue;
        }
        let name = s["metadata"]["name"].as_str().unwrap();
        let restored = target
            .get(&format!("/api/v1/namespaces/{copy}/secrets/{name}"))
            .await;
        assert_eq!(restored["data"], s["data"], "secret {name}");
        compared += 1;
    }
    assert!(compared > 0, "no Secret compared");
}
