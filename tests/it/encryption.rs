//! Secrets encrypted at rest (issue 18 acceptance): `keygen`, `snapshot --encrypt-to`,
//! `plan/restore --identity`, byte-stable sealed values and `diff`, through the binary against
//! the realistic fixture (or real clusters from the environment) and a file and a moto S3 store.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::store_support::{Backend, TestStore};
use crate::support::{DataDir, RestoreCleanup, Run, TestCluster};

/// `keygen --out <dir>/<name>`: the identity file and its recipient.
pub(crate) fn keygen(data: &DataDir, name: &str) -> (PathBuf, String) {
    let path = data.path().join(name);
    let out = data
        .run(None, &["keygen", "--out", path.to_str().unwrap()])
        .ok();
    let recipient = out.stdout.trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (path, recipient)
}

/// Every Secret value written to a snapshot (token Secrets are never written): raw (as the
/// API gives it, base64) and decoded. Decoded values shorter than 8 bytes (`shop`, `wp`) are
/// left out: they are also ordinary names elsewhere in the cluster.
async fn secret_values(cluster: &TestCluster) -> Vec<String> {
    let list = cluster.get("/api/v1/secrets").await;
    let mut out = Vec::new();
    for s in list["items"].as_array().unwrap() {
        if s["type"] == "kubernetes.io/service-account-token" {
            continue;
        }
        for v in s["data"].as_object().into_iter().flatten().map(|(_, v)| v) {
            let raw = v.as_str().unwrap();
            if raw.len() >= 4 {
                out.push(raw.to_owned());
            }
            if let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(raw)
                && plain.len() >= 8
                && let Ok(text) = String::from_utf8(plain)
            {
                out.push(text);
            }
        }
    }
    assert!(out.len() >= 4, "the fixture has Secret values: {out:?}");
    out
}

/// Every file under `dir`, raw, and, for git repositories found there, every object
/// decompressed (`git cat-file --batch-all-objects`).
fn everything_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.join("objects").is_dir() && p.join("HEAD").is_file() {
                    let r =
                        crate::support::git(&p, &["cat-file", "--batch-all-objects", "--batch"]);
                    assert_eq!(r.code, 0, "{}", r.stderr);
                    out.extend_from_slice(r.stdout.as_bytes());
                }
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.extend_from_slice(&bytes);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[track_caller]
fn assert_no_value(haystack: &[u8], values: &[String], what: &str) {
    for v in values {
        assert!(
            !contains(haystack, v),
            "a Secret value ({} bytes) appears in {what}",
            v.len()
        );
    }
}

fn run_text(r: &Run) -> Vec<u8> {
    format!("{}\n{}", r.stdout, r.stderr).into_bytes()
}

async fn no_value_anywhere(backend: Backend) {
    let cluster = TestCluster::source().await;
    let kc = Some(cluster.kubeconfig.as_path());
    let values = secret_values(&cluster).await;

    // Control: without recipients the values are there to be found (and a notice says so).
    let plain = DataDir::new();
    let r = plain
        .run(kc, &["snapshot", "p1", "--cluster", "demo", "--no-push"])
        .ok();
    assert!(
        r.stderr.contains("Secrets stored unencrypted"),
        "{}",
        r.stderr
    );
    let all = everything_under(plain.path());
    assert!(values.iter().any(|v| contains(&all, v)), "control grep");

    let store = TestStore::new(backend).await;
    let keys = DataDir::new();
    let (identity, recipient) = keygen(&keys, "id.txt");
    let data = DataDir::new();
    let mut seen = Vec::new();
    let r = store
        .run(
            &data,
            kc,
            &[
                "-vvv",
                "-o",
                "json",
                "snapshot",
                "s1",
                "--cluster",
                "demo",
                "--encrypt-to",
                &recipient,
            ],
        )
        .ok();
    assert!(!r.stderr.contains("unencrypted"), "{}", r.stderr);
    let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        summary["encryptedSecrets"].as_u64().unwrap() >= 3,
        "{summary}"
    );
    assert_eq!(summary["unencryptedSecrets"], 0);
    seen.extend(run_text(&r));
    // The recipients are recorded.
    let meta = data
        .git(&["show", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    assert!(meta.contains(&recipient), "{meta}");
    for args in [
        &["-vvv", "-o", "json", "list"][..],
        &["-vvv", "-o", "json", "show", "s1"],
        &["-vvv", "-o", "json", "verify"],
    ] {
        seen.extend(run_text(&store.run(&data, kc, args)));
    }
    assert_no_value(&seen, &values, "logs at -vvv or -o json outputs");
    assert_no_value(&everything_under(data.path()), &values, "the data dir");

    // The store, raw, and what a fresh machine pulls from it.
    let (root, _) = store.open_root().await;
    let mut stored = Vec::new();
    for o in root.list("").await.unwrap() {
        stored.extend_from_slice(&root.get(&o.key).await.unwrap().bytes);
    }
    assert!(!stored.is_empty());
    assert_no_value(&stored, &values, "the store");
    let other = DataDir::new();
    let r = store.run(&other, None, &["-vvv", "pull", "s1"]).ok();
    assert_no_value(&run_text(&r), &values, "pull's logs");
    assert_no_value(&everything_under(other.path()), &values, "a pulled mirror");

    // With the identity, a plan on the source itself sees every Secret as existing.
    let r = store
        .run(
            &other,
            kc,
            &[
                "-vvv",
                "-o",
                "json",
                "plan",
                "s1",
                "--identity",
                identity.to_str().unwrap(),
            ],
        )
        .ok();
    assert_no_value(&run_text(&r), &values, "plan's output");
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let secrets: Vec<&serde_json::Value> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["path"].as_str().unwrap().contains("/secrets/"))
        .collect();
    assert!(!secrets.is_empty());
    for i in secrets {
        assert_eq!(i["action"], "exists", "{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_leaks_file_store() {
    no_value_anywhere(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_leaks_s3_store() {
    no_value_anywhere(Backend::S3).await;
}

/// Two snapshots of an unchanged cluster differ only in their metadata; a changed value shows
/// in `diff` as its key, never as a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_secrets_are_byte_stable_and_diffable() {
    let cluster = TestCluster::source().await;
    let kc = Some(cluster.kubeconfig.as_path());
    let ns = cluster.namespace("enc").await;
    cluster
        .post(
            &format!("/api/v1/namespaces/{ns}/secrets"),
            &serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "creds"}, "type": "Opaque",
                "data": {"password": "b2xkLXBhc3N3b3JkLTE=", "user": "YWRtaW4tdXNlcg=="}}),
        )
        .await;
    let data = DataDir::new();
    let (_, recipient) = keygen(&data, "id.txt");
    let snap = |name: &str| -> serde_json::Value {
        let r = data
            .run(
                kc,
                &[
                    "-o",
                    "json",
                    "snapshot",
                    name,
                    "--no-push",
                    "--encrypt-to",
                    &recipient,
                ],
            )
            .ok();
        serde_json::from_str(&r.stdout).unwrap()
    };
    let s1 = snap("s1");
    let s2 = snap("s2");
    let changed = |a: &str, b: &str| -> Vec<String> {
        data.git(&[
            "diff",
            "--name-only",
            &format!("snapshots/{a}"),
            &format!("snapshots/{b}"),
        ])
        .ok()
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
    };
    let secret_file = format!("api/v1/namespaces/{ns}/secrets/creds.yaml");
    if cluster.is_real() {
        assert!(!changed("s1", "s2").contains(&secret_file));
    } else {
        assert_eq!(changed("s1", "s2"), [".k8s-snap/snapshot.yaml"]);
        // As without encryption: the commit, the root and .k8s-snap trees and snapshot.yaml.
        let plain = DataDir::new();
        let p = |name: &str| -> serde_json::Value {
            let r = plain
                .run(kc, &["-o", "json", "snapshot", name, "--no-push"])
                .ok();
            serde_json::from_str(&r.stdout).unwrap()
        };
        p("p1");
        let p2 = p("p2");
        assert_eq!(s2["newObjects"], p2["newObjects"], "{s1} {s2} {p2}");
    }

    // One value changes: its file changes, and diff names the key, not the values.
    cluster
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}/secrets/creds"),
            &serde_json::json!({"data": {"password": "bmV3LXBhc3N3b3JkLTI="}}),
        )
        .await;
    snap("s3");
    assert!(changed("s2", "s3").contains(&secret_file));
    let r = data
        .run(
            None,
            &[
                "diff",
                "s2",
                "s3",
                "--path",
                &format!("/api/v1/namespaces/{ns}/secrets/creds"),
            ],
        )
        .ok();
    assert!(
        r.stdout.contains("password: '*** (s3)'")
            || r.stdout.contains("password: \"*** (s3)\"")
            || r.stdout.contains("password: *** (s3)"),
        "{}",
        r.stdout
    );
    for v in [
        "bmV3LXBhc3N3b3JkLTI=",
        "b2xkLXBhc3N3b3JkLTE=",
        "new-password",
        "old-password",
        "k8s-snap:v2",
    ] {
        assert!(!r.stdout.contains(v), "{}", r.stdout);
    }
    let user_lines: Vec<&str> = r.stdout.lines().filter(|l| l.contains("user:")).collect();
    assert!(
        user_lines.iter().all(|l| l.starts_with(' ')),
        "user unchanged: {}",
        r.stdout
    );
}

fn namespaces(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// Restore needs the identity: without it, or with another one, nothing is written and the
/// error names the recipient; with it every Secret comes back with its exact values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_opens_sealed_secrets_only_with_the_identity() {
    let source = TestCluster::source().await;
    let target = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let data = DataDir::new();
    let (identity, recipient) = keygen(&data, "id.txt");
    let (other, other_recipient) = keygen(&data, "other.txt");
    data.run(
        Some(&source.kubeconfig),
        &["snapshot", "s1", "--no-push", "--encrypt-to", &recipient],
    )
    .ok();
    let before = namespaces(&target.get("/api/v1/namespaces").await);
    let tk = Some(target.kubeconfig.as_path());

    let r = data.run(tk, &["restore", "s1"]).failed();
    assert!(
        r.stderr.contains(&recipient) && r.stderr.contains("--identity"),
        "{}",
        r.stderr
    );
    let r = data
        .run(tk, &["plan", "s1", "--identity", other.to_str().unwrap()])
        .failed();
    assert!(
        r.stderr.contains(&recipient) && r.stderr.contains(&other_recipient),
        "{}",
        r.stderr
    );
    let r = data
        .run(
            tk,
            &["restore", "s1", "--identity", other.to_str().unwrap()],
        )
        .failed();
    assert!(r.stderr.contains(&recipient), "{}", r.stderr);
    assert_eq!(
        namespaces(&target.get("/api/v1/namespaces").await),
        before,
        "nothing written"
    );

    let mut cmd = data.command(tk);
    cmd.args(["restore", "s1", "-o", "json"])
        .env("K8S_SNAP_IDENTITY", &identity);
    cleanup.record_run(&crate::support::run(cmd).ok());
    let after = namespaces(&target.get("/api/v1/namespaces").await);
    let created: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(!created.is_empty(), "the restore created namespaces");
    let mut compared = 0;
    for ns in created {
        let src = source
            .get(&format!("/api/v1/namespaces/{ns}/secrets"))
            .await;
        for s in src["items"].as_array().unwrap() {
            if s["type"] == "kubernetes.io/service-account-token" {
                continue;
            }
            let name = s["metadata"]["name"].as_str().unwrap();
            let t = target
                .get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
                .await;
            assert_eq!(t["data"], s["data"], "{ns}/{name}");
            assert_eq!(t["type"], s["type"], "{ns}/{name}");
            compared += 1;
        }
    }
    assert!(compared >= 3, "compared {compared} Secrets");
    // Keys are private files.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(cleanup.finish().await, Vec::<String>::new());
}

/// `rekey` re-encrypts a snapshot for new recipients in the mirror and the store, changing no
/// other file; the new identity opens it, the old one is refused, and snapshots not rekeyed
/// still open with the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_moves_snapshots_to_new_recipients() {
    let source = TestCluster::source().await;
    let target = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let data = DataDir::new();
    let (old_id, old_r) = keygen(&data, "old.txt");
    let (new_id, new_r) = keygen(&data, "new.txt");
    let sk = Some(source.kubeconfig.as_path());
    data.run(sk, &["snapshot", "s1", "--encrypt-to", &old_r])
        .ok();
    data.run(sk, &["snapshot", "s2", "--encrypt-to", &old_r])
        .ok();
    let before = data.git(&["rev-parse", "snapshots/s1"]).ok().stdout;

    let r = data
        .run(
            None,
            &[
                "rekey",
                "s1",
                "--to",
                &new_r,
                "--identity",
                new_id.to_str().unwrap(),
            ],
        )
        .failed();
    assert!(
        r.stderr.contains(&old_r),
        "the wrong identity is refused: {}",
        r.stderr
    );
    assert_eq!(data.git(&["rev-parse", "snapshots/s1"]).ok().stdout, before);

    let r = data
        .run(
            None,
            &[
                "rekey",
                "s1",
                "--to",
                &new_r,
                "--identity",
                old_id.to_str().unwrap(),
            ],
        )
        .ok();
    assert!(r.stdout.contains("s1: rekeyed"), "{}", r.stdout);
    let after = data.git(&["rev-parse", "snapshots/s1"]).ok().stdout;
    assert_ne!(before, after);
    let changed = data
        .git(&["diff", "--name-only", before.trim(), after.trim()])
        .ok()
        .stdout;
    // Only the data key files (re-wrapped) and the metadata change: every sealed value, and
    // so every Secret file, keeps its bytes.
    assert!(
        changed.lines().any(|f| f.starts_with(".k8s-snap/keys/")),
        "{changed}"
    );
    for f in changed.lines() {
        assert!(
            f == ".k8s-snap/snapshot.yaml"
                || (f.starts_with(".k8s-snap/keys/") && f.ends_with(".age")),
            "only the key files and the metadata change: {changed}"
        );
    }
    let meta = data
        .git(&["show", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    assert!(meta.contains(&new_r) && !meta.contains(&old_r), "{meta}");
    // diff sees no value change.
    let d = data.run(None, &["diff", "s1", "s2"]).ok();
    assert!(!d.stdout.contains("*** (s"), "{}", d.stdout);

    // The store holds the rekeyed commit: a fresh machine pulls it.
    let fresh = DataDir::new();
    let store = format!("file://{}", data.path().join("store").display());
    fresh.run(None, &["--store", &store, "pull", "s1"]).ok();
    assert_eq!(fresh.git(&["rev-parse", "snapshots/s1"]).ok().stdout, after);

    let tk = Some(target.kubeconfig.as_path());
    let r = fresh
        .run(
            tk,
            &[
                "--store",
                &store,
                "plan",
                "s1",
                "--identity",
                old_id.to_str().unwrap(),
            ],
        )
        .failed();
    assert!(r.stderr.contains(&new_r), "{}", r.stderr);
    data.run(tk, &["plan", "s2", "--identity", old_id.to_str().unwrap()])
        .ok();
    let restored = fresh
        .run(
            tk,
            &[
                "--store",
                &store,
                "restore",
                "s1",
                "--identity",
                new_id.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
        .ok();
    cleanup.record_run(&restored);
    // The fixture's Secret exists on the emulator only.
    if !source.is_real() {
        let src = source
            .get("/api/v1/namespaces/shop/secrets/api-credentials")
            .await;
        let t = target
            .get("/api/v1/namespaces/shop/secrets/api-credentials")
            .await;
        assert_eq!(t["data"], src["data"]);
    }
    assert_eq!(cleanup.finish().await, Vec::<String>::new());
}

/// The controller (issue 18): a Snapshot CR whose `spec.encryption` names a Secret holding the
/// recipient seals every Secret value; a Restore CR without `spec.identitySecretRef` fails
/// naming the recipient and writes nothing; with it, every Secret comes back with its exact
/// values. No value or identity appears in the mirror or in any status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_seals_snapshots_and_opens_them_with_an_identity_secret() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use k8s_snap::controller::encryption::{EncryptionSpec, KeyRef};
    use k8s_snap::controller::{RestoreSpec, SnapshotSpec};
    use kube::Api;
    use kube::api::PostParams;

    use crate::controller::{
        Management, NS, create_restore, create_snapshot, phase_of, realistic_source, restore_final,
        spec_of,
    };

    let mgmt = Management::start().await;
    let source = realistic_source().await;
    let (identity, recipient) = k8s_snap::crypt::generate_identity();
    let pp = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(mgmt.client().await, &NS);
    for (name, key, text) in [
        ("enc-recipients", "recipients", recipient.as_str()),
        ("enc-identity", "identity", identity.as_str()),
    ] {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some([(key.to_owned(), ByteString(text.as_bytes().to_vec()))].into());
        secrets.create(&pp, &s).await.unwrap();
    }
    let ctl = mgmt.controller("enc").await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(
        &snapshots,
        "enc-src",
        SnapshotSpec {
            encryption: Some(EncryptionSpec {
                recipients_secret_ref: Some(KeyRef {
                    name: "enc-recipients".into(),
                    key: None,
                }),
                ..Default::default()
            }),
            ..spec_of(&source)
        },
    )
    .await;
    let done = phase_of(&snapshots, "enc-src", &["Completed", "Failed"]).await;
    let st = done.status.unwrap();
    assert_eq!(st.phase, "Completed", "{}", st.reason);

    // Every Secret value of the source, raw and decoded.
    let src_secrets: Api<Secret> = Api::all(source.client().await);
    let originals: Vec<Secret> = src_secrets
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.type_.as_deref() != Some("kubernetes.io/service-account-token"))
        .collect();
    let mut values = Vec::new();
    for s in &originals {
        for v in s.data.iter().flat_map(|d| d.values()) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&v.0);
            if b64.len() >= 4 {
                values.push(b64);
            }
            if let Ok(text) = String::from_utf8(v.0.clone())
                && text.len() >= 8
            {
                values.push(text);
            }
        }
    }
    assert!(values.len() >= 4, "{values:?}");
    let git_dir = ctl.data.join("mirror.git");
    let meta = crate::support::git(
        &git_dir,
        &["show", "snapshots/enc-src:.k8s-snap/snapshot.yaml"],
    );
    assert!(meta.stdout.contains(&recipient), "{}", meta.stdout);
    assert_no_value(
        &everything_under(&ctl.data),
        &values,
        "the controller's data dir",
    );

    // A Restore without the identity fails naming the recipient, and writes nothing.
    let target = kube_emulator::Emulator::builder().start().await.unwrap();
    let target_ns: Api<Namespace> = Api::all(target.client().await);
    let before = target_ns
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    let restores = mgmt.restores().await;
    let restore = |identity: Option<KeyRef>| RestoreSpec {
        backup_name: "enc-src".into(),
        kubeconfig: Some(target.kubeconfig_yaml("dst")),
        identity_secret_ref: identity,
        ..Default::default()
    };
    create_restore(&restores, "enc-no-id", restore(None)).await;
    let st = restore_final(&restores, "enc-no-id").await;
    assert_eq!(st.restore.phase, "Failed");
    assert!(
        st.restore.reason.contains(&recipient) && st.restore.reason.contains("identitySecretRef"),
        "{}",
        st.restore.reason
    );
    assert_eq!(
        target_ns
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        before,
        "nothing written"
    );

    // With it: every Secret with its exact values.
    create_restore(
        &restores,
        "enc-with-id",
        restore(Some(KeyRef {
            name: "enc-identity".into(),
            key: None,
        })),
    )
    .await;
    let st = restore_final(&restores, "enc-with-id").await;
    assert_eq!(st.restore.phase, "Completed", "{}", st.restore.reason);
    let mut compared = 0;
    for s in &originals {
        let ns = s.metadata.namespace.as_deref().unwrap();
        if ns.starts_with("kube-") {
            continue;
        }
        let t: Api<Secret> = Api::namespaced(target.client().await, ns);
        let name = s.metadata.name.as_deref().unwrap();
        let Some(got) = t.get_opt(name).await.unwrap() else {
            continue;
        };
        assert_eq!(got.data, s.data, "{ns}/{name}");
        assert_eq!(got.type_, s.type_, "{ns}/{name}");
        compared += 1;
    }
    assert!(compared >= 3, "compared {compared} Secrets");

    // No value or identity in any status.
    let statuses = serde_json::to_string(&(
        snapshots.list(&Default::default()).await.unwrap().items,
        restores.list(&Default::default()).await.unwrap().items,
    ))
    .unwrap();
    assert_no_value(statuses.as_bytes(), &values, "the CRs");
    assert!(!statuses.contains("AGE-SECRET-KEY"), "identity in a CR");
    ctl.stop().await.unwrap();
}

/// `--encrypt-path`: a user-named field of another resource (here a ConfigMap's
/// `data.password`, and the copy of it `kubectl apply` leaves in an annotation) is sealed like
/// a Secret value, recorded in `.k8s-snap/snapshot.yaml`, byte-stable across snapshots, and
/// opened by restore with the identity (refused without).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_named_paths_are_sealed_and_restored() {
    let source = TestCluster::source().await;
    let target = TestCluster::target().await;
    let cleanup = RestoreCleanup::new(&target).await;
    let sk = Some(source.kubeconfig.as_path());
    let ns = source.namespace("encpath").await;
    let password = "cm-password-value-0123";
    let last_applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app", "namespace": ns},
        "data": {"password": password, "mode": "readable-mode"}})
    .to_string();
    source
        .post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": last_applied}},
                "data": {"password": password, "mode": "readable-mode"}}),
        )
        .await;
    let data = DataDir::new();
    let (identity, recipient) = keygen(&data, "id.txt");
    let snap = |name: &str| {
        data.run(
            sk,
            &[
                "snapshot",
                name,
                "--no-push",
                "--encrypt-to",
                &recipient,
                "--encrypt-path",
                "configmaps:data.password",
            ],
        )
        .ok();
    };
    // Without recipients the option is refused.
    let r = data
        .run(
            sk,
            &[
                "snapshot",
                "x",
                "--no-push",
                "--encrypt-path",
                "configmaps:data.password",
            ],
        )
        .failed();
    assert!(r.stderr.contains("--encrypt-to"), "{}", r.stderr);
    let r = data
        .run(
            sk,
            &[
                "snapshot",
                "x",
                "--no-push",
                "--encrypt-to",
                &recipient,
                "--encrypt-path",
                "configmaps",
            ],
        )
        .failed();
    assert!(r.stderr.contains("--encrypt-path"), "{}", r.stderr);

    snap("s1");
    let meta = data
        .git(&["show", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    assert!(meta.contains("configmaps:data.password"), "{meta}");
    let file = format!("api/v1/namespaces/{ns}/configmaps/app.yaml");
    let cm = data
        .git(&["show", &format!("snapshots/s1:{file}")])
        .ok()
        .stdout;
    assert!(
        cm.contains("k8s-snap:v2:") && cm.contains("readable-mode"),
        "{cm}"
    );
    assert_no_value(
        &everything_under(data.path()),
        &[password.to_owned()],
        "the data dir",
    );
    snap("s2");
    let changed = data
        .git(&["diff", "--name-only", "snapshots/s1", "snapshots/s2"])
        .ok()
        .stdout;
    assert!(!changed.contains(&file), "{changed}");

    let tk = Some(target.kubeconfig.as_path());
    let r = data.run(tk, &["restore", "s2"]).failed();
    assert!(r.stderr.contains(&recipient), "{}", r.stderr);
    assert!(
        !target
            .exists(&format!("/api/v1/namespaces/{ns}/configmaps/app"))
            .await,
        "nothing written"
    );
    let run = data
        .run(
            tk,
            &[
                "restore",
                "s2",
                "--identity",
                identity.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
        .ok();
    cleanup.record_run(&run);
    let restored = target
        .get(&format!("/api/v1/namespaces/{ns}/configmaps/app"))
        .await;
    assert_eq!(restored["data"]["password"], password);
    assert_eq!(restored["data"]["mode"], "readable-mode");
    assert_eq!(
        restored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        last_applied.as_str()
    );

    // A plan against a target whose value changed opens the snapshot's values to compare
    // them, and its diff masks them like Secret values: the key shows as changed, neither
    // value is shown (nor the annotation copies holding them).
    let live_password = "changed-on-the-target-4567";
    target
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}/configmaps/app"),
            &serde_json::json!({"data": {"password": live_password}}),
        )
        .await;
    let id = identity.to_str().unwrap();
    let plan = data
        .run(tk, &["plan", "s2", "--diff", "--identity", id])
        .ok()
        .stdout;
    assert!(
        plan.contains("*** (snapshot)") && plan.contains("*** (live)"),
        "{plan}"
    );
    assert!(plan.contains("password"), "{plan}");
    assert_no_value(
        plan.as_bytes(),
        &[password.to_owned(), live_password.to_owned()],
        "plan --diff",
    );
    let shown = data
        .run(
            tk,
            &["plan", "s2", "--diff", "--show-secrets", "--identity", id],
        )
        .ok()
        .stdout;
    assert!(
        shown.contains(live_password) && shown.contains(password),
        "{shown}"
    );
    assert_eq!(cleanup.finish().await, Vec::<String>::new());
}

/// `diff`, `show` and `log --patch` mask the fields `--encrypt-path` seals (recorded in
/// `encryption.paths`) as they mask Secret values: a changed value says which key changed,
/// never the plaintext nor the sealed string; a snapshot without the path (plaintext there) is
/// masked too when the other side records it (the union); `--show-secrets` shows what is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_masks_user_named_sealed_paths() {
    let source = TestCluster::source().await;
    let kc = Some(source.kubeconfig.as_path());
    let ns = source.namespace("encdiff").await;
    let (one, two) = ("token-value-one-0123", "token-value-two-4567");
    let cm = |token: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app", "annotations": {
                // What `kubectl apply` leaves: a copy of the object, its token in it.
                "kubectl.kubernetes.io/last-applied-configuration": serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "app", "namespace": ns},
                    "data": {"token": token, "mode": "readable-mode"}}).to_string()}},
            "data": {"token": token, "mode": "readable-mode"}})
    };
    let path = format!("/api/v1/namespaces/{ns}/configmaps/app");
    source
        .post(&format!("/api/v1/namespaces/{ns}/configmaps"), &cm(one))
        .await;
    let data = DataDir::new();
    let (_identity, recipient) = keygen(&data, "id.txt");
    let snap = |name: &str, sealed: bool| {
        let mut args = vec!["snapshot", name, "--no-push", "--include-namespaces", &ns];
        if sealed {
            args.extend([
                "--encrypt-to",
                &recipient,
                "--encrypt-path",
                "configmaps:data.token",
            ]);
        }
        data.run(kc, &args).ok();
    };
    snap("s0", false);
    snap("s1", true);
    source.merge_patch(&path, &cm(two)).await;
    snap("s2", true);
    let stored = data
        .git(&["show", &format!("snapshots/s2:{}.yaml", &path[1..])])
        .ok()
        .stdout;
    assert!(
        stored.contains("k8s-snap:v2:"),
        "sealed in the tree: {stored}"
    );
    // The annotation's copy is sealed whole: the value is nowhere in clear.
    assert!(!stored.contains(two), "{stored}");

    let hidden = |text: &str, what: &str| {
        for v in [one, two, "k8s-snap:v2"] {
            assert!(!text.contains(v), "{what} shows {v:?}: {text}");
        }
    };
    // The masked value of `token:` lines of a diff, by the line's first character.
    let token_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.trim_start_matches(['-', '+', ' ']).starts_with("token:"))
            .map(|l| l.replace(['\'', '"'], ""))
            .collect()
    };
    let diff = |args: &[&str]| {
        let mut all = vec!["diff"];
        all.extend(args);
        all.extend(["--path", &path]);
        data.run(None, &all).ok().stdout
    };
    // `diff a b`: the token shown as changed, labelled with each side's snapshot, nothing of
    // its values.
    let token_changed = |a: &str, b: &str| {
        let out = diff(&[a, b]);
        hidden(&out, &format!("diff {a} {b}"));
        assert_eq!(
            token_lines(&out),
            [
                format!("-  token: *** ({a})"),
                format!("+  token: *** ({b})")
            ],
            "{out}"
        );
        out
    };

    // Both sides sealed, the value changed: the key is named, with the snapshots' labels.
    let out = token_changed("s1", "s2");
    assert!(out.contains("0 added, 0 removed, 1 changed"), "{out}");
    assert!(
        out.lines()
            .filter(|l| l.contains("mode: readable-mode"))
            .all(|l| l.starts_with(' ')),
        "mode unchanged: {out}"
    );
    // The copy in last-applied-configuration (sealed whole) is masked as a value.
    let last_applied = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains("last-applied-configuration:"))
            .map(|l| l.replace(['\'', '"'], ""))
            .collect()
    };
    assert_eq!(
        last_applied(&out),
        [
            "-    kubectl.kubernetes.io/last-applied-configuration: *** (s1)",
            "+    kubectl.kubernetes.io/last-applied-configuration: *** (s2)"
        ],
        "{out}"
    );
    let json = data
        .run(None, &["-o", "json", "diff", "s1", "s2", "--path", &path])
        .ok()
        .stdout;
    hidden(&json, "diff -o json");
    assert!(json.contains("*** (s2)"), "{json}");

    // s0 records no sealed path (its token is plaintext), s1 does: the union is masked, in
    // s0's plaintext copy too.
    let out = token_changed("s0", "s1");
    assert!(
        out.contains(r#"\"token\":\"*** (s0)\""#) || out.contains(r#""token":"*** (s0)""#),
        "{out}"
    );

    // `--show-secrets` shows what is stored: the sealed strings (never the plaintext, which
    // the tree does not hold outside the annotation copy).
    let out = diff(&["s1", "s2", "--show-secrets"]);
    assert!(out.contains("token: k8s-snap:v2:"), "{out}");

    // `show`: masked, unlabelled; `--show-secrets`: as stored.
    let out = data.run(None, &["show", "s2", &path]).ok().stdout;
    hidden(&out, "show");
    assert!(out.contains("readable-mode"), "{out}");
    assert!(
        token_lines(&out).iter().any(|l| l == "  token: ***"),
        "{out}"
    );
    let out = data
        .run(None, &["show", "s2", &path, "--show-secrets"])
        .ok()
        .stdout;
    assert!(out.contains("token: k8s-snap:v2:"), "{out}");

    // `log --patch` masks every step (s0 to s2: the union again).
    let out = data.run(None, &["log", &path, "--patch"]).ok().stdout;
    hidden(&out, "log --patch");
    assert!(out.contains("*** (s2)"), "{out}");
}

/// `controller --watch-dir` with `--watch-identity-file` (beside the leader-election
/// `--identity`): a file drop of a snapshot the controller sealed restores its Secret with the
/// original data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_file_drops_open_sealed_snapshots_with_the_watch_identity_file() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_snap::controller::SnapshotSpec;
    use k8s_snap::controller::encryption::EncryptionSpec;
    use kube::Api;
    use std::time::Duration;

    use crate::controller::{Management, create_snapshot, phase_of, wait_for};

    let mgmt = Management::start().await;
    let (source, secret) =
        crate::controller::source_with_secret("drop-controller-plaintext-93d1").await;
    let target = kube_emulator::Emulator::builder().start().await.unwrap();

    let (identity, recipient) = k8s_snap::crypt::generate_identity();
    let id_file = mgmt.dir.path().join("watch-identity");
    std::fs::write(&id_file, identity).unwrap();
    let drops = mgmt.dir.path().join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let ctl = mgmt
        .controller_with(
            "sealed-drops",
            &[
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--watch-dir",
                drops.to_str().unwrap(),
                "--watch-identity-file",
                id_file.to_str().unwrap(),
            ],
        )
        .await;
    let snapshots = mgmt.snapshots().await;
    create_snapshot(
        &snapshots,
        "sealed-for-drops",
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            kubeconfig: Some(source.kubeconfig_yaml("cluster-a")),
            encryption: Some(EncryptionSpec {
                recipients: vec![recipient.clone()],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let done = phase_of(&snapshots, "sealed-for-drops", &["Completed", "Failed"]).await;
    assert_eq!(done.status.unwrap().phase, "Completed");
    let meta = crate::support::git(
        &ctl.data.join("mirror.git"),
        &["show", "snapshots/sealed-for-drops:.k8s-snap/snapshot.yaml"],
    );
    assert!(meta.stdout.contains(&recipient), "{}", meta.stdout);

    let kc = target.kubeconfig_yaml("cluster-b");
    let indented: String = kc.lines().map(|l| format!("    {l}\n")).collect();
    let request = format!(
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: sealed-for-drops\n  preference:\n    includeNamespaces: [vault]\n  kubeconfig: |\n{indented}"
    );
    std::fs::write(drops.join(".r1.yaml.tmp"), request).unwrap();
    std::fs::rename(drops.join(".r1.yaml.tmp"), drops.join("r1.yaml")).unwrap();
    wait_for(Duration::from_secs(30), "the file-drop result", || async {
        (drops.join("done/r1.yaml").exists() || drops.join("failed/r1.yaml").exists()).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(drops.join("results/r1.status.yaml")).unwrap();
    let status = k8s_snap::tree::from_yaml(&text).unwrap();
    assert_eq!(status["status"]["phase"], "Completed", "{status}");
    assert!(!text.contains("drop-controller-plaintext"), "{text}");
    let got = Api::<Secret>::namespaced(target.client().await, "vault")
        .get("db")
        .await
        .unwrap();
    assert_eq!(got.data, secret.data);
    ctl.stop().await.unwrap();
}
