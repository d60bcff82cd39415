//! `k8s-snap import` (issue 20): archives of the original Go k8s-snap, built here exactly as its
//! `Snapshot` wrote them (every resource with `list get create delete` except nodes and events,
//! here at every served version, full server JSON from the API, token Secrets, `<selfLink>.json`
//! entries, Namespaces under `namespaces/`, CRDs under `crds/`, a marker ConfigMap,
//! `snapshot.json` with the kubeconfig in clear text), imported and compared with a live
//! snapshot of the same cluster; restores of both compared; each bad archive refused with its
//! own message and no tag. Runs unchanged against `K8S_SNAP_TEST_KUBECONFIG`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::restore::k8s_snap;
use crate::support::{DataDir, Run, TestCluster};

/// The kubeconfig text the test puts into snapshot.json: it must never reach the mirror.
const KUBECONFIG_SECRET: &str = "tok-3f9a1c-never-in-the-mirror";

/// One archive entry.
#[derive(Clone)]
pub struct Entry {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Reads `cluster` through the API as the original did and returns the entries of the archive
/// of snapshot `name` (snapshot.json last).
pub async fn original_entries(
    cluster: &k8s_snap::cluster::Cluster,
    name: &str,
    cluster_name: &str,
) -> Vec<Entry> {
    use k8s_snap::discovery::{self, REQUIRED_VERBS, Versions};
    let found = discovery::discover(cluster, Versions::All, 4)
        .await
        .unwrap();
    let rv: Value = cluster
        .get_json("/api/v1/namespaces?limit=1")
        .await
        .unwrap();
    let rv = rv["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut contents = Vec::new();
    for r in &found.resources {
        if r.resource == "nodes" || r.resource == "events" {
            continue;
        }
        if !REQUIRED_VERBS.iter().all(|v| r.supports(v)) {
            continue;
        }
        let list: Value = cluster.get_json(&r.collection_path(None)).await.unwrap();
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            // The dynamic client's items carry apiVersion and kind.
            item["apiVersion"] = json!(r.api_version());
            item["kind"] = json!(r.kind);
            let obj_name = item["metadata"]["name"].as_str().unwrap().to_owned();
            let ns = item["metadata"]["namespace"].as_str().map(str::to_owned);
            let self_link = r.object_path(ns.as_deref().filter(|_| r.namespaced), &obj_name);
            let item_path = match r.kind.as_str() {
                "Namespace" => format!("/namespaces/{obj_name}"),
                "CustomResourceDefinition" => format!("/crds/{obj_name}"),
                _ => self_link,
            };
            // Namespaces and CRDs of other versions land on the same path: the first (the
            // preferred version, listed first) is the one the original's preferred list held.
            if !seen.insert(item_path.clone()) {
                continue;
            }
            contents.push(item_path.clone());
            entries.push(Entry {
                path: format!("{name}{item_path}.json"),
                bytes: serde_json::to_vec(&item).unwrap(),
            });
        }
    }
    // The marker ConfigMap, seen by a watch between the start and end markers.
    let marker = format!(
        "/api/v1/namespaces/default/configmaps/{}abcdefghij",
        k8s_snap::import::MARKER_PREFIX
    );
    entries.push(Entry {
        path: format!("{name}{marker}.json"),
        bytes: serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{}abcdefghij", k8s_snap::import::MARKER_PREFIX),
                "namespace": "default", "uid": "0d9c3f3e-marker", "resourceVersion": rv,
                "selfLink": marker, "creationTimestamp": "2020-01-02T03:04:05Z"}
        }))
        .unwrap(),
    });
    contents.push(marker);
    contents.sort();
    let snapshot = json!({
        "kind": "Snapshot",
        "apiVersion": "clustersnapshot.rywt.io/v1alpha1",
        "metadata": {"name": name, "namespace": "k8s-snap", "creationTimestamp": "2020-01-02T03:04:00Z"},
        "spec": {
            "clusterName": cluster_name,
            "kubeconfig": format!("apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: {KUBECONFIG_SECRET}\n"),
            "ttl": "720h0m0s",
            "availableUntil": null
        },
        "status": {
            "phase": "",
            "reason": "",
            "numberOfContents": contents.len(),
            "contents": contents,
            "snapshotResourceVersion": rv,
            "snapshotTimestamp": "2020-01-02T03:04:05Z",
            "availableUntil": "2020-02-01T03:04:05Z",
            "ttl": "720h0m0s",
            "storedFileSize": 0,
            "storedTimestamp": null
        }
    });
    entries.push(Entry {
        path: format!("{name}/snapshot.json"),
        bytes: serde_json::to_vec(&snapshot).unwrap(),
    });
    entries
}

/// A gzip'ed tar of `entries` as Go's archive/tar writes them (regular files, mode 0755). Names
/// are written raw into the header (so that bad paths can be built too); long ones through a
/// GNU long-name entry.
pub fn tgz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(e.bytes.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(1_577_934_245);
        let name = e.path.as_bytes();
        if name.len() < 100 {
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, e.bytes.as_slice()).unwrap();
        } else {
            b.append_data(&mut h, &e.path, e.bytes.as_slice()).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn write_archive(dir: &Path, file_name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(file_name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

fn tags(data: &DataDir) -> String {
    let r = data.git(&["tag", "-l", "snapshots/*"]);
    r.stdout
}

/// The object files (path → bytes) of a snapshot under `scope` prefixes.
fn object_files(
    data: &DataDir,
    snapshot: &str,
    scope: &[String],
) -> std::collections::BTreeMap<String, String> {
    let mut args = vec!["ls-tree", "-r", "--name-only", snapshot, "--"];
    args.extend(scope.iter().map(String::as_str));
    let list = data.git(&args).ok().stdout;
    list.lines()
        .map(|f| {
            let body = data.git(&["show", &format!("{snapshot}:{f}")]).ok().stdout;
            (f.to_owned(), body)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_archive_imports_as_a_live_snapshot_of_the_same_cluster() {
    let source = TestCluster::source().await;
    let ns = source.namespace("it-import").await;
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "namespace": ns}, "data": {"k": "v"}}),
        )
        .await;
    let data = DataDir::new();
    let kc = Some(source.kubeconfig.as_path());
    k8s_snap(
        &data,
        kc,
        &["snapshot", "live", "--cluster", "c1", "--no-push"],
    )
    .await
    .ok();
    let client = source.cluster().await;
    let entries = original_entries(&client, "c1-001", "c1").await;
    // (Real clusters from v1.24 on make no token Secrets for ServiceAccounts.)
    if !source.is_real() {
        assert!(
            entries.iter().any(|e| String::from_utf8_lossy(&e.bytes)
                .contains("kubernetes.io/service-account-token")),
            "the archive holds token Secrets, as the original's did"
        );
    }
    let archive = write_archive(data.path(), "c1-001.tgz", &tgz(&entries));
    let run = k8s_snap(&data, None, &["import", archive.to_str().unwrap()])
        .await
        .ok();
    assert!(
        run.stdout.contains("as snapshot c1-001 of c1 at rv"),
        "{}",
        run.stdout
    );

    // The same objects, byte for byte, as the live snapshot (the emulator does not change
    // between the two reads; on a real cluster only our namespace is stable).
    let scope: Vec<String> = if source.is_real() {
        vec![format!("api/v1/namespaces/{ns}")]
    } else {
        vec!["api".into(), "apis".into()]
    };
    let live = object_files(&data, "snapshots/live", &scope);
    let imported = object_files(&data, "snapshots/c1-001", &scope);
    let only_live: Vec<&String> = live.keys().filter(|k| !imported.contains_key(*k)).collect();
    let only_imported: Vec<&String> = imported.keys().filter(|k| !live.contains_key(*k)).collect();
    assert!(
        only_live.is_empty() && only_imported.is_empty(),
        "only in the live snapshot: {only_live:?}\nonly in the import: {only_imported:?}"
    );
    for (path, body) in &live {
        assert_eq!(body, &imported[path], "{path} differs");
    }
    assert!(
        live.keys()
            .any(|k| k.contains(&format!("namespaces/{ns}/configmaps/app")))
    );
    if !source.is_real() {
        // Whole trees equal: same git tree ids for api/ and apis/.
        for dir in ["api", "apis"] {
            let a = data
                .git(&["rev-parse", &format!("snapshots/live:{dir}")])
                .ok()
                .stdout;
            let b = data
                .git(&["rev-parse", &format!("snapshots/c1-001:{dir}")])
                .ok()
                .stdout;
            assert_eq!(a, b, "{dir}/ differs");
        }
    }

    // The metadata: the original's name, cluster, time, resourceVersion, expiry; where from.
    let meta = data
        .git(&["show", "snapshots/c1-001:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    let snapshot_json: Value = serde_json::from_slice(&entries.last().unwrap().bytes).unwrap();
    let rv = snapshot_json["status"]["snapshotResourceVersion"]
        .as_str()
        .unwrap();
    let archive_label = archive.display().to_string();
    for (key, value) in [
        ("name", "c1-001"),
        ("clusterName", "c1"),
        ("resourceVersion", rv),
        ("timestamp", "2020-01-02T03:04:05Z"),
        ("availableUntil", "2020-02-01T03:04:05Z"),
        ("importedFrom", archive_label.as_str()),
        ("reason", "token-secret"),
        ("reason", "original-marker"),
    ] {
        let found = meta.lines().any(|l| {
            let l = l.trim_start_matches("- ").trim();
            l == format!("{key}: {value}") || l == format!("{key}: \"{value}\"")
        });
        assert!(found, "{key}: {value} missing:\n{meta}");
    }

    // No kubeconfig, token or token Secret anywhere in the imported tree.
    let all = data
        .git(&["ls-tree", "-r", "--name-only", "snapshots/c1-001"])
        .ok()
        .stdout;
    for f in all.lines() {
        let body = data
            .git(&["show", &format!("snapshots/c1-001:{f}")])
            .ok()
            .stdout;
        assert!(
            !body.contains(KUBECONFIG_SECRET),
            "{f} holds the kubeconfig's token"
        );
        assert!(
            !body.contains("kubernetes.io/service-account-token"),
            "{f} is a token Secret"
        );
        // The original's Snapshot resource itself (a cluster running k8s-snap also holds
        // its CRD, whose `names.kind` is Snapshot: that is an object like any other).
        let doc = k8s_snap::tree::from_yaml(&body).unwrap_or_default();
        assert!(
            !(doc["kind"] == "Snapshot"
                && doc["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("clustersnapshot.rywt.io/"))),
            "{f} is the original's Snapshot"
        );
    }
    let list = k8s_snap(&data, None, &["list", "--local-only", "-o", "json"])
        .await
        .ok();
    assert!(list.stdout.contains("\"c1-001\""), "{}", list.stdout);

    // A second import under the same name is refused; --name imports it again.
    let again = k8s_snap(&data, None, &["import", archive.to_str().unwrap()]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    k8s_snap(
        &data,
        None,
        &[
            "import",
            archive.to_str().unwrap(),
            "--name",
            "c1-001-again",
        ],
    )
    .await
    .ok();
    let a = data
        .git(&["rev-parse", "snapshots/c1-001:apis"])
        .ok()
        .stdout;
    let b = data
        .git(&["rev-parse", "snapshots/c1-001-again:apis"])
        .ok()
        .stdout;
    assert_eq!(a, b);

    // Restores of the import and of the live snapshot onto empty clusters do the same.
    if !source.is_real() {
        let restore = |snapshot: &'static str| {
            let data = &data;
            let ns = ns.clone();
            async move {
                let target = TestCluster::emulated(
                    kube_emulator::Emulator::builder()
                        .fixture(kube_emulator::Fixture::Empty)
                        .server_version(kube_emulator::ServerVersion::from_env()),
                )
                .await;
                let run = k8s_snap(
                    data,
                    Some(&target.kubeconfig),
                    &["restore", snapshot, "-o", "json"],
                )
                .await
                .ok();
                let status: Value = serde_json::from_str(&run.stdout).unwrap();
                let names = |k: &str| {
                    let mut v: Vec<String> = status[k]
                        .as_array()
                        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default();
                    v.sort();
                    v
                };
                let configmap: Value = target
                    .get(&format!("/api/v1/namespaces/{ns}/configmaps/app"))
                    .await;
                (
                    status["phase"].clone(),
                    names("created"),
                    names("excluded"),
                    names("failed"),
                    configmap["data"].clone(),
                )
            }
        };
        let from_live = restore("live").await;
        let from_import = restore("c1-001").await;
        assert_eq!(from_import.0, "Completed");
        assert!(!from_import.1.is_empty());
        assert_eq!(from_import.4, json!({"k": "v"}));
        assert_eq!(from_live, from_import);
    }
}

/// Runs `import` on a bad archive: exit 1, the message names the fault, nothing is tagged.
async fn refused(data: &DataDir, file: &Path, wants: &[&str]) -> Run {
    let run = k8s_snap(data, None, &["import", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}: {}", file.display(), run.stdout);
    for want in wants {
        assert!(run.stderr.contains(want), "{want:?} not in: {}", run.stderr);
    }
    assert!(run.stderr.contains("nothing was tagged"), "{}", run.stderr);
    assert!(!run.stderr.contains(KUBECONFIG_SECRET));
    assert_eq!(tags(data), "", "a bad archive left a tag");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_archive_is_refused_with_its_own_message_and_leaves_no_tag() {
    let data = DataDir::new();
    let dir = data.path();
    let configmap = |name: &str| Entry {
        path: format!("c1/api/v1/namespaces/default/configmaps/{name}.json"),
        bytes: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")}}))
        .unwrap(),
    };
    let snapshot_json = |name: &str| {
        Entry {
        path: format!("{name}/snapshot.json"),
        bytes: serde_json::to_vec(&json!({"kind": "Snapshot",
            "apiVersion": "clustersnapshot.rywt.io/v1alpha1",
            "metadata": {"name": name},
            "spec": {"clusterName": "c1", "kubeconfig": KUBECONFIG_SECRET},
            "status": {"snapshotResourceVersion": "42", "snapshotTimestamp": "2020-01-02T03:04:05Z"}}))
        .unwrap(),
    }
    };
    let good = vec![configmap("a"), configmap("b"), snapshot_json("c1")];

    // A good one imports (the baseline the bad ones differ from), into another data dir.
    let ok_dir = DataDir::new();
    let f = write_archive(ok_dir.path(), "c1.tgz", &tgz(&good));
    k8s_snap(&ok_dir, None, &["import", f.to_str().unwrap()])
        .await
        .ok();

    let f = write_archive(dir, "plain.tgz", b"apiVersion: v1\nkind: ConfigMap\n");
    refused(&data, &f, &["plain.tgz", "not a gzip'ed tar archive"]).await;

    let whole = tgz(&good);
    let f = write_archive(dir, "c1.tgz", &whole[..whole.len() / 2]);
    refused(&data, &f, &["c1.tgz", "truncated or damaged"]).await;
    // Cut after the tar's data but before the gzip trailer: still refused.
    let f = write_archive(dir, "c1.tgz", &whole[..whole.len() - 4]);
    refused(&data, &f, &["truncated or damaged"]).await;

    let mut escaping = good.clone();
    escaping.insert(
        0,
        Entry {
            path: "c1/../../etc/cron.d/x.json".into(),
            bytes: b"{}".to_vec(),
        },
    );
    let f = write_archive(dir, "c1.tgz", &tgz(&escaping));
    refused(
        &data,
        &f,
        &[
            "\"c1/../../etc/cron.d/x.json\"",
            "leaves the snapshot directory c1/",
        ],
    )
    .await;
    let mut absolute = good.clone();
    absolute.insert(
        0,
        Entry {
            path: "/etc/x.json".into(),
            bytes: b"{}".to_vec(),
        },
    );
    let f = write_archive(dir, "c1.tgz", &tgz(&absolute));
    refused(
        &data,
        &f,
        &["\"/etc/x.json\"", "leaves the snapshot directory"],
    )
    .await;

    let mut not_json = good.clone();
    not_json.insert(
        1,
        Entry {
            path: "c1/api/v1/namespaces/default/configmaps/c.json".into(),
            bytes: b"kind: ConfigMap".to_vec(),
        },
    );
    let f = write_archive(dir, "c1.tgz", &tgz(&not_json));
    refused(&data, &f, &["configmaps/c.json", "is not valid JSON"]).await;
    let mut not_json_file = good.clone();
    not_json_file.insert(
        1,
        Entry {
            path: "c1/README.txt".into(),
            bytes: b"hello".to_vec(),
        },
    );
    let f = write_archive(dir, "c1.tgz", &tgz(&not_json_file));
    refused(&data, &f, &["\"c1/README.txt\"", "is not a .json file"]).await;

    // The directory inside differs from the archive's name (a renamed archive).
    let f = write_archive(dir, "c2.tgz", &tgz(&good));
    refused(
        &data,
        &f,
        &[
            "c2.tgz",
            "\"c1/api/v1/namespaces/default/configmaps/a.json\"",
            "is under the directory c1/",
            "named c2.tgz",
        ],
    )
    .await;

    let f = write_archive(dir, "c1.tgz", &tgz(&good[..2]));
    refused(&data, &f, &["there is no \"c1/snapshot.json\""]).await;

    // Kubernetes ≥ 1.20: every object at `<name>/.json`, each overwriting the last.
    let no_self_link = vec![
        Entry {
            path: "c1/.json".into(),
            bytes: configmap("a").bytes,
        },
        Entry {
            path: "c1/.json".into(),
            bytes: configmap("b").bytes,
        },
        snapshot_json("c1"),
    ];
    let f = write_archive(dir, "c1.tgz", &tgz(&no_self_link));
    refused(
        &data,
        &f,
        &[
            "\"c1/.json\"",
            "no selfLink",
            "cannot be imported faithfully",
        ],
    )
    .await;

    // A body that is not the object its path names.
    let mut wrong_name = good.clone();
    wrong_name[0].path = "c1/api/v1/namespaces/default/configmaps/other.json".into();
    let f = write_archive(dir, "c1.tgz", &tgz(&wrong_name));
    refused(
        &data,
        &f,
        &["configmaps/other.json", "metadata.name is \"a\""],
    )
    .await;

    // snapshot.json of another snapshot, or of one that never completed.
    let mut other = good.clone();
    other[2] = snapshot_json("c9");
    other[2].path = "c1/snapshot.json".into();
    let f = write_archive(dir, "c1.tgz", &tgz(&other));
    refused(&data, &f, &["c1/snapshot.json", "names snapshot \"c9\""]).await;

    // A symbolic link entry.
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(
        &mut h,
        "c1/api/v1/namespaces/default/configmaps/l.json",
        "/etc/passwd",
    )
    .unwrap();
    let f = write_archive(dir, "c1.tgz", &b.into_inner().unwrap().finish().unwrap());
    refused(&data, &f, &["configmaps/l.json", "symbolic link"]).await;
}

/// The built-in `/status` table an import uses in place of discovery agrees with the discovery
/// of every emulated release (v1.19's recorded from a real server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_status_table_agrees_with_discovery_of_every_release() {
    use k8s_snap::discovery::{self, Versions};
    let mut wrong = Vec::new();
    for v in kube_emulator::ServerVersion::ALL {
        let c = TestCluster::emulated_at(v, kube_emulator::Fixture::Empty).await;
        let found = discovery::discover(&c.cluster().await, Versions::All, 4)
            .await
            .unwrap();
        let mut checked = 0;
        for r in found.resources.iter().filter(|r| r.is_snapshotted()) {
            let table =
                k8s_snap::import::layout::builtin_has_status(&r.group, &r.version, &r.resource);
            if table != r.has_status_subresource {
                wrong.push(format!(
                    "{v:?}: {}/{} {}: table {table}, discovery {}",
                    r.group, r.version, r.resource, r.has_status_subresource
                ));
            }
            checked += 1;
        }
        assert!(checked > 30, "{v:?}: {checked}");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Against moto: an archive of the original controller at the bucket root becomes, after a
/// controller start with `--restoresnapshots`, a `Completed` Snapshot CR annotated as
/// imported, which a Restore CR restores; `--housekeepstore` leaves the archive alone; deleting
/// the imported CR deletes the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_imports_the_original_archives_at_the_bucket_root() {
    use crate::controller::{Management, NS, phase_of, store_config, test_store, wait_for};
    use k8s_snap::controller::{Restore, RestoreSpec};
    use k8s_snap::store::ObjectStore as _;
    use kube::api::{DeleteParams, PostParams};
    use std::time::Duration;

    let moto = crate::store_support::Moto::start();
    let mgmt = Management::start().await;
    let source = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Realistic)
        .start()
        .await
        .unwrap();
    let target = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Empty)
        .service_cidr("10.200.0.0/16")
        .start()
        .await
        .unwrap();
    store_config(&mgmt, &moto).await;
    // The bucket as the original controller left it: `<name>.tgz` at its root.
    let root = k8s_snap::store::S3Store::connect(
        "ctl",
        "",
        &k8s_snap::store::S3Options {
            endpoint: Some(moto.endpoint()),
            region: Some("us-east-1".into()),
            path_style: true,
            insecure: false,
            access_key_id: Some(k8s_snap::store::Secret::new(
                crate::controller::STORE_KEY_ID,
            )),
            secret_access_key: Some(k8s_snap::store::Secret::new(
                crate::controller::STORE_SECRET,
            )),
        },
    )
    .await
    .unwrap();
    root.ensure_bucket().await.unwrap();
    let client = k8s_snap::cluster::Cluster::connect(&k8s_snap::cluster::ConnectOptions {
        kubeconfig_text: Some(source.kubeconfig_yaml("cluster-a")),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut entries = original_entries(&client, "cluster-a-001", "cluster-a").await;
    // Not expired yet: availableUntil a day from now.
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24))
        .unwrap();
    let last = entries.last_mut().unwrap();
    let mut snapshot: Value = serde_json::from_slice(&last.bytes).unwrap();
    snapshot["status"]["availableUntil"] = json!(until.to_string());
    last.bytes = serde_json::to_vec(&snapshot).unwrap();
    root.put_if_absent("cluster-a-001.tgz", tgz(&entries))
        .await
        .unwrap();
    // An expired one (availableUntil 2020-02-01): not imported, left alone.
    let expired = original_entries(&client, "cluster-a-000", "cluster-a").await;
    root.put_if_absent("cluster-a-000.tgz", tgz(&expired))
        .await
        .unwrap();
    // A bad archive next to it is logged and left alone; it does not stop the good one.
    root.put_if_absent("broken-001.tgz", b"not gzip".to_vec())
        .await
        .unwrap();

    let ctl = mgmt.controller_with("imp", &[]).await;
    let snaps = mgmt.snapshots().await;
    let done = phase_of(&snaps, "cluster-a-001", &["Completed", "Failed"]).await;
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase, "Completed", "reason: {}", st.reason);
    assert_eq!(
        done.metadata.annotations.as_ref().unwrap()["clustersnapshot.rywt.io/imported-from"],
        "s3://ctl/cluster-a-001.tgz"
    );
    assert_eq!(st.cluster_name, "cluster-a");
    assert_eq!(
        st.snapshot_resource_version,
        snapshot["status"]["snapshotResourceVersion"]
            .as_str()
            .unwrap()
    );
    assert!(st.number_of_contents > 10);
    assert_eq!(
        st.available_until.as_ref().unwrap().0.as_second(),
        until.as_second()
    );
    assert!(st.stored_timestamp.is_some(), "pushed to the store");
    assert!(snaps.get_opt("broken-001").await.unwrap().is_none());
    assert!(snaps.get_opt("cluster-a-000").await.unwrap().is_none());
    let in_store: Vec<String> = k8s_snap::store::sync::list(&test_store(&moto).await)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(in_store, vec!["cluster-a-001".to_string()]);

    // A Restore CR restores it onto an empty cluster.
    let restores = mgmt.restores().await;
    let mut r = Restore::new(
        "r-imported",
        RestoreSpec {
            cluster_name: "cluster-b".into(),
            backup_name: "cluster-a-001".into(),
            kubeconfig: Some(target.kubeconfig_yaml("cluster-b")),
            ..Default::default()
        },
    );
    r.metadata.namespace = Some(NS.into());
    restores.create(&PostParams::default(), &r).await.unwrap();
    let restored = wait_for(Duration::from_secs(60), "r-imported finished", || async {
        let s = restores.get("r-imported").await.ok()?.status?;
        (s.restore.phase == "Failed" || s.restore.phase == "Completed").then_some(s)
    })
    .await;
    assert_eq!(
        restored.restore.phase, "Completed",
        "{}",
        restored.restore.reason
    );
    assert!(restored.restore.num_created > 0);
    let target_client = k8s_snap::cluster::Cluster::connect(&k8s_snap::cluster::ConnectOptions {
        kubeconfig_text: Some(target.kubeconfig_yaml("cluster-b")),
        ..Default::default()
    })
    .await
    .unwrap();
    let shop: Value = target_client
        .get_json("/api/v1/namespaces/shop")
        .await
        .unwrap();
    assert_eq!(shop["metadata"]["name"], "shop");
    ctl.stop().await.unwrap();

    // Housekeeping of the store never deletes the original's archives.
    let h = k8s_snap::store::sync::gc(
        &test_store(&moto).await,
        k8s_snap::store::sync::GcOptions {
            grace: Duration::ZERO,
            now: jiff::Timestamp::now(),
        },
    )
    .await
    .unwrap();
    assert!(h.orphans.iter().all(|o| !o.ends_with(".tgz")), "{h:?}");
    root.head("cluster-a-001.tgz").await.unwrap();
    root.head("broken-001.tgz").await.unwrap();
    root.head("cluster-a-000.tgz").await.unwrap();

    // Deleting the imported Snapshot CR deletes its archive (and its data in the store).
    let ctl = mgmt
        .controller_with("imp-2", &["--housekeepstore=false"])
        .await;
    snaps
        .delete("cluster-a-001", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "cluster-a-001 gone", || async {
        matches!(snaps.get_opt("cluster-a-001").await, Ok(None)).then_some(())
    })
    .await;
    assert!(matches!(
        root.head("cluster-a-001.tgz").await,
        Err(k8s_snap::store::StoreError::NotFound { .. })
    ));
    root.head("broken-001.tgz").await.unwrap();
    ctl.stop().await.unwrap();
}

/// `k8s-snap import <key>` reads the key from the root of the `--store` bucket (where the
/// original controller kept its archives), `import s3://bucket/key` from any bucket; the
/// import records where it came from. Against moto, or real S3 from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_at_the_bucket_root_imports_by_key() {
    let store = crate::store_support::TestStore::s3().await;
    let name = format!("imp-{:08x}", fastrand::u32(..));
    let key = format!("{name}.tgz");
    let entries = vec![
        Entry {
            path: format!("{name}/api/v1/namespaces/default/configmaps/a.json"),
            bytes: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "default", "uid": "u-a",
                    "resourceVersion": "7", "managedFields": []},
                "data": {"k": "v"}}))
            .unwrap(),
        },
        Entry {
            path: format!("{name}/snapshot.json"),
            bytes: serde_json::to_vec(&json!({"kind": "Snapshot",
                "apiVersion": "clustersnapshot.rywt.io/v1alpha1",
                "metadata": {"name": name},
                "spec": {"clusterName": "c9", "kubeconfig": KUBECONFIG_SECRET},
                "status": {"snapshotResourceVersion": "42",
                    "snapshotTimestamp": "2020-01-02T03:04:05Z"}}))
            .unwrap(),
        },
    ];
    let (root, _) = store.open_root().await;
    root.put_if_absent(&key, tgz(&entries)).await.unwrap();

    let data = DataDir::new();
    let run = store.run(&data, None, &["import", &key]).ok();
    let label = format!("s3://{}/{key}", store.bucket);
    assert!(
        run.stdout.contains(&format!(
            "imported {label} as snapshot {name} of c9 at rv 42"
        )),
        "{}",
        run.stdout
    );
    let body = data
        .git(&[
            "show",
            &format!("snapshots/{name}:api/v1/namespaces/default/configmaps/a.yaml"),
        ])
        .ok()
        .stdout;
    assert_eq!(
        body,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: default\ndata:\n  k: v\n"
    );
    let meta = data
        .git(&["show", &format!("snapshots/{name}:.k8s-snap/snapshot.yaml")])
        .ok()
        .stdout;
    assert!(meta.contains(&format!("importedFrom: {label}")), "{meta}");
    store
        .run(
            &data,
            None,
            &["import", &label, "--name", "again", "-o", "json"],
        )
        .ok();
    // A key that is not there: the error names it; nothing is tagged.
    let missing = store.run(&data, None, &["import", "nope-001.tgz"]);
    assert_eq!(missing.code, 1, "{}", missing.stdout);
    assert!(
        missing.stderr.contains("nope-001.tgz"),
        "{}",
        missing.stderr
    );
    assert!(!tags(&data).contains("nope-001"));
    // The temporary download is gone.
    let tmp = data.path().join("tmp");
    assert!(
        std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0,
        "left in {}",
        tmp.display()
    );
    root.delete(&key).await.unwrap();
}
