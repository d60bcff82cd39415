//! Compatibility with the original Go controller (issue 22): the manifests it published — the
//! README's examples (Secret, ObjectstoreConfig, Snapshot, Restore with `backupName`) and its
//! later API's forms (Snapshot with `objectstoreConfig`, Restore with `snapshotName`,
//! RestorePreference with `restoreOptions`) — applied with kubectl to a management emulator
//! and reconciled to a final phase; Restores and Snapshots that cannot start; the CLI reading
//! the original's preference; `list` on a store that cannot be read.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube_emulator::{Emulator, EmulatorHandle, Fixture};

use crate::controller::{Management, NS, wait_for};
use crate::store_support::TestStore;
use crate::support::{DataDir, Run, run};

/// Every WARN-and-up log line of this test binary (the controller runs in-process), so that a
/// test can count the lines about one resource.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Capture;
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Some(logs) = LOGS.get() {
                    logs.lock().unwrap().extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(|| Capture)
            .with_ansi(false)
            .try_init()
            .expect("no other tracing subscriber in the test binary");
        Mutex::new(Vec::new())
    })
}

/// Captured log lines mentioning `needle`.
fn log_lines_about(needle: &str) -> Vec<String> {
    let logs = captured_logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// `text` indented by `n` spaces (a kubeconfig inside a YAML block scalar).
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

/// The README's examples, as published (only the Restore's namespace is the controller's:
/// the README puts it in `k8s-backup`, which no controller of the README watches).
const README_MANIFESTS: &str = r#"apiVersion: v1
kind: Secret
metadata:
  namespace: k8s-snap
  name: k8s-snap-ap-northeast-1
data:
  accesskey: QUtJRENPTVBBVFRFU1QwMDAwMDE=
  secretkey: Y29tcGF0LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: ObjectstoreConfig
metadata:
  name: k8s-snap-ap-northeast-1
  namespace: k8s-snap
spec:
  region: ap-northeast-1
  endpoint: ap-northeast-1.amazonaws.com
  bucket: k8s-snap
  cloudCredentialSecret: k8s-snap-ap-northeast-1
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Snapshot
metadata:
  name: cluster01-001
  namespace: k8s-snap
spec:
  clusterName: cluster01
  kubeconfig: |
    apiVersion: v1
    clusters:
    - cluster:
        certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUN3akND...
        server: https://cluster01.kubernetes.rywt.io:6443
      name: cluster
    contexts:
    - context:
        cluster: cluster
        user: remote-user
      name: context
    current-context: context
    kind: Config
    preferences: {}
    users:
    - name: remote-user
      user:
        token: eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVz....
  ttl: 720h
  availableUntil: 2020-07-01T02:03:04Z
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: cluster02-cluster01-001-001
  namespace: k8s-snap
spec:
  clusterName: cluster02
  backupName: cluster01-001
  restorePreferenceName: exclude-kube-system
  kubeconfig: |
    apiVersion: v1
    clusters:
    - cluster:
        certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUN3akND...
        server: https://cluster02.kubernetes.rywt.io:6443
      name: cluster
    contexts:
    - context:
        cluster: cluster
        user: remote-user
      name: context
    current-context: context
    kind: Config
    preferences: {}
    users:
    - name: remote-user
      user:
        token: eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVz....
  ttl: 168h
  availableUntil: 2020-07-01T01:02:03Z
"#;

/// Manifests in the published forms, pointing at live emulators and moto: `{…}` placeholders
/// are filled in by [`fill`].
const LIVE_MANIFESTS: &str = r#"apiVersion: v1
kind: Secret
metadata:
  namespace: k8s-snap
  name: compat-cred
data:
  accesskey: QUtJRENPTVBBVFRFU1QwMDAwMDE=
  secretkey: Y29tcGF0LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: ObjectstoreConfig
metadata:
  name: compat-store
  namespace: k8s-snap
spec:
  region: us-east-1
  endpoint: {ENDPOINT}
  bucket: compat
  cloudCredentialSecret: compat-cred
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: exclude-kube-system
  namespace: k8s-snap
spec:
  excludeNamespaces:
    - "kube-system"
    - "kube-public"
  excludeCRDs:
    - "crd.projectcalico.org"
  excludeApiPathes:
    - "/api/v1,nodes"
    - "/api/v1,events"
  restoreAppApiPathes:
    - "/apis/apps"
  restoreNfsStorageClasses:
    - "managed-nfs-storage"
  restoreOptions: []
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: with-options
  namespace: k8s-snap
spec:
  excludeNamespaces: ["kube-system"]
  restoreOptions: ["overwriteExistingResources"]
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Snapshot
metadata:
  name: s1
  namespace: k8s-snap
spec:
  clusterName: cluster01
  objectstoreConfig: compat-store
  kubeconfig: |
{SOURCE}  ttl: 720h
"#;

/// Restores of `s1` in the published forms (applied once `s1` is Completed).
const LIVE_RESTORES: &str = r#"apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: by-snapshot-name
  namespace: k8s-snap
spec:
  clusterName: dst
  snapshotName: s1
  restorePreferenceName: exclude-kube-system
  kubeconfig: |
{TARGET_B}  ttl: 168h
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: by-backup-name
  namespace: k8s-snap
spec:
  clusterName: dst
  backupName: s1
  restorePreferenceName: exclude-kube-system
  kubeconfig: |
{TARGET_C}  ttl: 168h
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: with-restore-options
  namespace: k8s-snap
spec:
  clusterName: dst
  snapshotName: s1
  backupName: s1
  restorePreferenceName: with-options
  kubeconfig: |
{TARGET_E}
"#;

/// Resources that cannot start: each must end `Failed` at once with a reason naming the field.
const CANNOT_START: &str = r#"apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: ObjectstoreConfig
metadata:
  name: no-secret
  namespace: k8s-snap
spec:
  region: us-east-1
  endpoint: http://127.0.0.1:9
  bucket: compat
  cloudCredentialSecret: absent-secret
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-no-name
  namespace: k8s-snap
spec:
  clusterName: dst
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-two-names
  namespace: k8s-snap
spec:
  snapshotName: s1
  backupName: s2
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-unknown-store
  namespace: k8s-snap
spec:
  snapshotName: s1
  objectstoreConfig: nope
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-missing-secret
  namespace: k8s-snap
spec:
  snapshotName: s1
  objectstoreConfig: no-secret
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-bad-kubeconfig
  namespace: k8s-snap
spec:
  snapshotName: s1
  kubeconfig: "this is not a kubeconfig"
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-missing-kubeconfig-secret
  namespace: k8s-snap
spec:
  snapshotName: s1
  kubeconfigSecretRef:
    name: absent-kubeconfig
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Restore
metadata:
  name: r-unknown-preference
  namespace: k8s-snap
spec:
  snapshotName: s1
  restorePreferenceName: nope
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Snapshot
metadata:
  name: s-bad-kubeconfig
  namespace: k8s-snap
spec:
  clusterName: x
  kubeconfig: "this is not a kubeconfig"
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Snapshot
metadata:
  name: s-unknown-store
  namespace: k8s-snap
spec:
  clusterName: x
  objectstoreConfig: nope
---
apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: Snapshot
metadata:
  name: s-missing-secret
  namespace: k8s-snap
spec:
  clusterName: x
  objectstoreConfig: no-secret
"#;

/// `template` with its `{…}` placeholders filled in.
fn fill(template: &str, endpoint: &str, source: &str, b: &str, c: &str, e: &str) -> String {
    template
        .replace("{ENDPOINT}", endpoint)
        .replace("{SOURCE}", &indent(source, 4))
        .replace("{TARGET_B}", &indent(b, 4))
        .replace("{TARGET_C}", &indent(c, 4))
        .replace("{TARGET_E}", indent(e, 4).trim_end_matches('\n'))
}

async fn empty_target(cidr: &str) -> EmulatorHandle {
    Emulator::builder()
        .fixture(Fixture::Empty)
        .service_cidr(cidr)
        .start()
        .await
        .unwrap()
}

/// `(phase, reason)` of a Snapshot or Restore once it is `Completed` or `Failed`.
async fn final_phase(mgmt: &Management, kind: &str, name: &str) -> (String, String) {
    let client = mgmt.client().await;
    let what = format!("{kind} {name} in a final phase");
    wait_for(Duration::from_secs(60), &what, || {
        let client = client.clone();
        async move {
            let (phase, reason) = if kind == "snapshot" {
                let api: Api<k8s_snap::controller::Snapshot> = Api::namespaced(client, &NS);
                let s = api.get(name).await.ok()?.status?;
                (s.phase.to_string(), s.reason)
            } else {
                let api: Api<k8s_snap::controller::Restore> = Api::namespaced(client, &NS);
                let s = api.get(name).await.ok()?.status?.restore;
                (s.phase.to_string(), s.reason)
            };
            (phase == "Completed" || phase == "Failed").then_some((phase, reason))
        }
    })
    .await
}

/// The events about `name` in the controller's namespace.
async fn events_about(mgmt: &Management, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(mgmt.client().await, &NS);
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// The CLI binary on the controller's mirror, restoring onto `kubeconfig`.
fn cli(data: &Path, kubeconfig: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-snap"));
    cmd.arg("--data-dir")
        .arg(data)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("K8S_SNAP_STORE")
        .env_remove("RUST_LOG")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", data);
    run(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_manifests_reconcile_to_a_final_phase() {
    captured_logs();
    let moto = tokio::task::spawn_blocking(crate::store_support::Moto::start)
        .await
        .unwrap();
    moto.create_bucket("compat");
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Realistic)
        .start()
        .await
        .unwrap();
    let (b, c, e) = (
        empty_target("10.231.0.0/16").await,
        empty_target("10.232.0.0/16").await,
        empty_target("10.233.0.0/16").await,
    );
    let ctl = mgmt.controller("compat").await;

    let dir = mgmt.dir.path();
    let readme = dir.join("readme.yaml");
    std::fs::write(&readme, README_MANIFESTS).unwrap();
    let kubeconfigs = [
        source.kubeconfig_yaml("cluster01"),
        b.kubeconfig_yaml("b"),
        c.kubeconfig_yaml("c"),
        e.kubeconfig_yaml("e"),
    ];
    let [kc_source, kc_b, kc_c, kc_e] = kubeconfigs.each_ref();
    let endpoint = moto.endpoint();
    let live = dir.join("live.yaml");
    let live_restores = dir.join("live-restores.yaml");
    for (file, template) in [(&live, LIVE_MANIFESTS), (&live_restores, LIVE_RESTORES)] {
        let text = fill(template, &endpoint, kc_source, kc_b, kc_c, kc_e);
        std::fs::write(file, text).unwrap();
    }
    let cannot = dir.join("cannot-start.yaml");
    std::fs::write(&cannot, CANNOT_START).unwrap();
    // The Restores of s1 wait for it (InQueue → Failed would race its snapshot): apply them
    // once it is Completed.
    mgmt.kubectl(&["apply", "-f", readme.to_str().unwrap()]);
    let created = Instant::now();
    mgmt.kubectl(&["apply", "-f", cannot.to_str().unwrap()]);

    // The README's Snapshot and Restore, as published: their availableUntil (2020) is past.
    for (kind, name) in [
        ("snapshot", "cluster01-001"),
        ("restore", "cluster02-cluster01-001-001"),
    ] {
        let (phase, reason) = final_phase(&mgmt, kind, name).await;
        assert_eq!(
            (phase.as_str(), reason.as_str()),
            ("Failed", "AvailableUntil is set as past."),
            "{kind} {name}"
        );
    }

    // A Restore without a snapshot name: Failed within seconds, naming the field, with one
    // Warning Event and one log line (no retry every 5 s).
    let (phase, reason) = final_phase(&mgmt, "restore", "r-no-name").await;
    assert!(
        created.elapsed() < Duration::from_secs(5),
        "{:?}",
        created.elapsed()
    );
    assert_eq!(phase, "Failed");
    assert!(
        reason.starts_with("spec.snapshotName: required"),
        "{reason}"
    );
    let failed_at = Instant::now();
    for (kind, name, fields) in [
        (
            "restore",
            "r-two-names",
            &["spec.snapshotName", "spec.backupName", "\"s2\""][..],
        ),
        (
            "restore",
            "r-unknown-store",
            &[
                "spec.objectstoreConfig",
                "ObjectstoreConfig k8s-snap/nope not found",
            ][..],
        ),
        (
            "restore",
            "r-missing-secret",
            &[
                "spec.objectstoreConfig",
                "spec.cloudCredentialSecret",
                "Secret k8s-snap/absent-secret not found",
            ][..],
        ),
        ("restore", "r-bad-kubeconfig", &["spec.kubeconfig: "][..]),
        (
            "restore",
            "r-missing-kubeconfig-secret",
            &["spec.kubeconfigSecretRef: Secret k8s-snap/absent-kubeconfig not found"][..],
        ),
        (
            "restore",
            "r-unknown-preference",
            &[
                "spec.restorePreferenceName",
                "RestorePreference k8s-snap/nope not found",
            ][..],
        ),
        ("snapshot", "s-bad-kubeconfig", &["spec.kubeconfig: "][..]),
        (
            "snapshot",
            "s-unknown-store",
            &[
                "spec.objectstoreConfig",
                "ObjectstoreConfig k8s-snap/nope not found",
            ][..],
        ),
        (
            "snapshot",
            "s-missing-secret",
            &[
                "spec.objectstoreConfig",
                "Secret k8s-snap/absent-secret not found",
            ][..],
        ),
    ] {
        let (phase, reason) = final_phase(&mgmt, kind, name).await;
        assert_eq!(phase, "Failed", "{kind} {name}: {reason}");
        for f in fields {
            let f = f.replace("k8s-snap/", &format!("{NS}/"));
            assert!(
                reason.contains(&f),
                "{kind} {name}: {f:?} not in {reason:?}"
            );
        }
        let events = wait_for(Duration::from_secs(5), &format!("event of {name}"), || {
            let mgmt = &mgmt;
            async move {
                // A Snapshot may also have a Normal `Started` Event before it failed.
                let ev: Vec<_> = events_about(mgmt, name)
                    .await
                    .into_iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .collect();
                (!ev.is_empty()).then_some(ev)
            }
        })
        .await;
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0].note.as_deref(), Some(reason.as_str()), "{name}");
    }
    assert!(
        created.elapsed() < Duration::from_secs(15),
        "cannot-start resources took {:?}",
        created.elapsed()
    );

    // The later API's forms: a Snapshot pushed through an ObjectstoreConfig, then Restores
    // naming it by snapshotName, by backupName, and by both (equal) with restoreOptions.
    mgmt.kubectl(&["apply", "-f", live.to_str().unwrap()]);
    let (phase, reason) = final_phase(&mgmt, "snapshot", "s1").await;
    assert_eq!(phase, "Completed", "{reason}");
    let snaps = mgmt.snapshots().await;
    assert!(
        snaps
            .get("s1")
            .await
            .unwrap()
            .status
            .unwrap()
            .stored_timestamp
            .is_some(),
        "s1 was pushed"
    );
    mgmt.kubectl(&["apply", "-f", live_restores.to_str().unwrap()]);
    let restores = mgmt.restores().await;
    let mut counts = Vec::new();
    for name in ["by-snapshot-name", "by-backup-name", "with-restore-options"] {
        let (phase, reason) = final_phase(&mgmt, "restore", name).await;
        assert_eq!(phase, "Completed", "{name}: {reason}");
        let st = restores.get(name).await.unwrap().status.unwrap();
        assert!(st.restore.num_created > 0, "{name}: {:?}", st.restore);
        assert_eq!(st.restore.num_failed, 0, "{name}: {:?}", st.restore.failed);
        // availableUntil beside preserveUntil, and the ttl they came from.
        assert!(st.restore.preserve_until.is_some(), "{name}");
        assert_eq!(st.available_until, st.restore.preserve_until, "{name}");
        if name != "with-restore-options" {
            assert_eq!(st.ttl, "168h0m0s", "{name}");
        }
        let until: jiff::Timestamp = st.available_until.as_deref().unwrap().parse().unwrap();
        let expected = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(168);
        assert!(
            (expected.as_second() - until.as_second()).abs() < 120,
            "{until}"
        );
        counts.push((
            st.restore.num_created,
            st.restore.num_excluded,
            st.restore.num_preference_excluded,
        ));
    }
    assert_eq!(
        counts[0], counts[1],
        "snapshotName and backupName restore alike"
    );
    // The printer column shows whichever name is set.
    let listed = mgmt.kubectl(&["get", "restores", "-n", &NS]);
    for name in ["by-snapshot-name", "by-backup-name"] {
        let row: Vec<&str> = listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[2], "s1", "{listed}");
    }

    // The original's published ObjectstoreConfig and preference read back through our types.
    let client = mgmt.client().await;
    let configs: Api<k8s_snap::controller::ObjectstoreConfig> =
        Api::namespaced(client.clone(), &NS);
    let cfg = configs.get("k8s-snap-ap-northeast-1").await.unwrap();
    assert_eq!(cfg.spec.endpoint, "ap-northeast-1.amazonaws.com");
    let prefs: Api<k8s_snap::controller::RestorePreference> = Api::namespaced(client, &NS);
    let p = prefs.get("with-options").await.unwrap();
    assert_eq!(
        p.spec.preference.restore_options,
        ["overwriteExistingResources"]
    );

    // The CLI reads the same preference: `restoreOptions: []` restores; a typo is refused
    // naming the known fields; non-empty restoreOptions get a one-line notice.
    let d = empty_target("10.234.0.0/16").await;
    let kc_d = dir.join("d.yaml");
    d.write_kubeconfig(&kc_d, "d").unwrap();
    let pref = |extra: &str| {
        format!(
            "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: p\nspec:\n  excludeNamespaces: [kube-system, kube-public]\n{extra}"
        )
    };
    let p_ok = dir.join("p.yaml");
    std::fs::write(&p_ok, pref("  restoreOptions: []\n")).unwrap();
    let out = cli(
        &ctl.data,
        &kc_d,
        &[
            "-o",
            "json",
            "restore",
            "s1",
            "--preference",
            p_ok.to_str().unwrap(),
        ],
    )
    .ok();
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["phase"], "Completed", "{}", out.stdout);
    assert_eq!(status["numCreated"].as_u64(), Some(counts[0].0), "{status}");
    assert!(!out.stderr.contains("restoreOptions"), "{}", out.stderr);
    let p_options = dir.join("p-options.yaml");
    std::fs::write(
        &p_options,
        pref("  restoreOptions: [overwriteExistingResources]\n"),
    )
    .unwrap();
    let out = cli(
        &ctl.data,
        &kc_d,
        &["plan", "s1", "--preference", p_options.to_str().unwrap()],
    )
    .ok();
    let notices: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("restoreOptions"))
        .collect();
    assert_eq!(notices.len(), 1, "{}", out.stderr);
    assert!(notices[0].contains("ignored"), "{}", notices[0]);
    let p_typo = dir.join("p-typo.yaml");
    std::fs::write(
        &p_typo,
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: p\nspec:\n  excludeNamespace: [kube-system]\n",
    )
    .unwrap();
    let out = cli(
        &ctl.data,
        &kc_d,
        &["restore", "s1", "--preference", p_typo.to_str().unwrap()],
    )
    .failed();
    assert_eq!(out.code, 1);
    for known in [
        "excludeNamespace`",
        "excludeNamespaces",
        "excludeApiPathes",
        "restoreOptions",
    ] {
        assert!(out.stderr.contains(known), "{known}: {}", out.stderr);
    }

    // No retry loop for the Restore that could not start: still one log line and one Event
    // after more than the 5 s retry interval.
    let waited = failed_at.elapsed();
    if waited < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_secs(6) - waited).await;
    }
    let lines = log_lines_about("r-no-name");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("spec.snapshotName"), "{}", lines[0]);
    let events = events_about(&mgmt, "r-no-name").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].series.is_none(), "published more than once");
    assert_eq!(events[0].reason.as_deref(), Some("CannotStart"));
    let _ = std::io::stderr().flush();
    ctl.stop().await.unwrap();
}

/// `list` exits 1 naming the store when the store cannot be read; `--local-only` lists the
/// mirror alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_fails_when_the_store_cannot_be_read() {
    let store = TestStore::s3().await;
    let data = DataDir::new();
    let bucket = format!("k8s-snap-missing-{:08x}", fastrand::u32(..));
    let url = format!("s3://{bucket}/x");
    let out = store.run(&data, None, &["--store", &url, "list"]).failed();
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("s3://{bucket}/x")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one error line: {}",
        out.stderr
    );
    let local = store
        .run(
            &data,
            None,
            &["--store", &url, "list", "--local-only", "-o", "json"],
        )
        .ok();
    assert_eq!(local.stdout.trim(), "[]");
    // The store that exists still lists (empty).
    let ok = store.run(&data, None, &["list", "-o", "json"]).ok();
    assert_eq!(ok.stdout.trim(), "[]");
}
