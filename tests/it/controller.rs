//! The CRD-driven controller end to end: CRDs applied with the real kubectl to a management
//! emulator, the controller run in-process from `k8s-snap controller` flags against it, Snapshot and
//! Restore resources driven through their lifecycle, and a standby replica taking over.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_snap::controller::{Restore, RestoreCrStatus, RestoreSpec, Snapshot, SnapshotSpec};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube_emulator::{Emulator, EmulatorHandle, Fixture};
use tempfile::TempDir;

/// The controller's namespace in these tests: `k8s-snap` on the management emulator (so the
/// shipped manifests apply as they are), a namespace of this test run's own on a real
/// management cluster (`$K8S_SNAP_TEST_KUBECONFIG`), removed again when each test ends.
pub(crate) struct Ns;
pub(crate) const NS: Ns = Ns;

pub(crate) fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The drift check of docs/controller.md: `deploy/crd.yaml` is exactly what `k8s-snap crd`
/// prints from the Rust types.
#[test]
fn deploy_crd_yaml_matches_the_generated_crds() {
    let generated = k8s_snap::controller::crds_yaml().unwrap();
    let on_disk = std::fs::read_to_string(repo_file("deploy/crd.yaml")).unwrap_or_default();
    assert!(
        generated == on_disk,
        "deploy/crd.yaml is out of date with the Rust CRD types; regenerate it with\n    cargo run -q -- crd > deploy/crd.yaml"
    );
    assert_eq!(
        generated.matches("kind: CustomResourceDefinition").count(),
        5
    );
}

fn namespace() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        if real_management().is_some() {
            format!("k8s-snap-it-{:06x}", fastrand::u32(..0x100_0000))
        } else {
            "k8s-snap".to_string()
        }
    })
}

impl std::ops::Deref for Ns {
    type Target = str;
    fn deref(&self) -> &str {
        namespace()
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(namespace())
    }
}

impl From<Ns> for String {
    fn from(_: Ns) -> String {
        namespace().to_string()
    }
}

/// The real management cluster's kubeconfig, when the tests run against one.
fn real_management() -> Option<PathBuf> {
    std::env::var_os(crate::support::REAL_A)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The management cluster: an emulator without a token (kubectl sends no credentials over
/// plain http) or the real cluster of `$K8S_SNAP_TEST_KUBECONFIG`, its kubeconfig file, and
/// the CRDs applied with kubectl. Tests on a real cluster run one at a time (they share the
/// run's namespace and its Lease) and each removes what it created when it ends.
pub(crate) struct Management {
    emu: Option<EmulatorHandle>,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) dir: TempDir,
    _serial: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Management {
    pub(crate) async fn start() -> Management {
        let dir = tempfile::tempdir().unwrap();
        let (emu, kubeconfig, serial) = match real_management() {
            Some(path) => {
                static SERIAL: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
                    std::sync::OnceLock::new();
                let lock = SERIAL.get_or_init(Default::default).clone();
                (None, path, Some(lock.lock_owned().await))
            }
            None => {
                let emu = Emulator::builder()
                    .fixture(Fixture::Empty)
                    .crd_establish_delay(Duration::from_millis(50))
                    .start()
                    .await
                    .expect("management emulator");
                let kubeconfig = dir.path().join("mgmt.yaml");
                emu.write_kubeconfig(&kubeconfig, "mgmt").unwrap();
                (Some(emu), kubeconfig, None)
            }
        };
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f"])
            .arg(repo_file("deploy/crd.yaml"))
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl apply -f deploy/crd.yaml: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mgmt = Management {
            emu,
            kubeconfig,
            dir,
            _serial: serial,
        };
        let client = mgmt.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in [
            "snapshots",
            "restores",
            "restorepreferences",
            "objectstoreconfigs",
            "snapshotschedules",
        ] {
            let full = format!("{name}.clustersnapshot.rywt.io");
            wait_for(
                Duration::from_secs(10),
                &format!("{full} Established"),
                || {
                    let crds = crds.clone();
                    let full = full.clone();
                    async move {
                        let crd = crds.get(&full).await.ok()?;
                        crd.status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                            .then_some(())
                    }
                },
            )
            .await;
        }
        let namespaces: Api<Namespace> = Api::all(client);
        let created = namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(NS.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 && mgmt.emu.is_none() => {}
            Err(e) => panic!("creating namespace {NS}: {e}"),
        }
        mgmt
    }

    /// A client of the management cluster.
    pub(crate) async fn client(&self) -> kube::Client {
        match &self.emu {
            Some(emu) => emu.client().await,
            None => {
                let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                kube::Client::try_from(config).unwrap()
            }
        }
    }

    /// The management emulator, for tests of emulator-only features (fault injection); `None`
    /// (and the test returns early) on a real cluster.
    pub(crate) fn emulator(&self) -> Option<&EmulatorHandle> {
        if self.emu.is_none() {
            eprintln!("skipped on a real management cluster: this test needs the emulator");
        }
        self.emu.as_ref()
    }

    pub(crate) async fn snapshots(&self) -> Api<Snapshot> {
        Api::namespaced(self.client().await, &NS)
    }

    pub(crate) async fn restores(&self) -> Api<Restore> {
        Api::namespaced(self.client().await, &NS)
    }

    /// Runs kubectl against the management cluster. On a real cluster, files given with `-f`
    /// are applied in the test run's namespace instead of `k8s-snap`.
    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if self.emu.is_none() {
            for i in 1..args.len() {
                if args[i - 1] == "-f" {
                    args[i] = self.in_namespace(Path::new(&args[i]));
                }
            }
        }
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The files of `deploy/samples` this server can take: `cronjob-cli.yaml` is a `batch/v1`
    /// CronJob (Kubernetes 1.21 and later), left out where the server does not serve that.
    pub(crate) fn samples(&self) -> Vec<String> {
        let batch_v1 = self.kubectl(&["get", "--raw", "/apis/batch/v1"]);
        let cronjobs = batch_v1.contains("\"cronjobs\"");
        let mut files: Vec<String> = std::fs::read_dir(repo_file("deploy/samples"))
            .expect("deploy/samples")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .filter(|p| cronjobs || !p.ends_with("cronjob-cli.yaml"))
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        assert!(files.len() >= 4, "{files:?}");
        files
    }

    /// A copy of the manifests at `path` (a file or a directory of YAML files) with the
    /// namespace `k8s-snap` replaced by the test run's.
    fn in_namespace(&self, path: &Path) -> String {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut f: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            f.sort();
            f
        } else {
            vec![path.to_path_buf()]
        };
        let mut text = String::new();
        for f in files {
            text.push_str("---\n");
            text.push_str(&std::fs::read_to_string(&f).unwrap());
            text.push('\n');
        }
        let text = text.replace("namespace: k8s-snap\n", &format!("namespace: {NS}\n"));
        let out = self
            .dir
            .path()
            .join(format!("in-namespace-{}.yaml", fastrand::u32(..)));
        std::fs::write(&out, text).unwrap();
        out.display().to_string()
    }

    /// Starts the controller in-process, from the same flags `k8s-snap controller` takes,
    /// with short lease and retry times. (In-process, not the binary: parallel worktrees share
    /// one target directory, so the binary on disk may belong to another branch.)
    pub(crate) async fn controller(&self, identity: &str) -> ControllerTask {
        self.controller_with(
            identity,
            &["--housekeepstore=false", "--restoresnapshots", "false"],
        )
        .await
    }

    /// The controller with extra flags after the common ones.
    pub(crate) async fn controller_with(&self, identity: &str, extra: &[&str]) -> ControllerTask {
        self.controller_tweaked(identity, extra, |_| {}).await
    }

    /// The controller with extra flags, and options changed by `tweak` (e.g. a test clock).
    pub(crate) async fn controller_tweaked(
        &self,
        identity: &str,
        extra: &[&str],
        tweak: impl FnOnce(&mut k8s_snap::controller::ControllerOptions),
    ) -> ControllerTask {
        use clap::Parser;
        let data = self.dir.path().join(format!("data-{identity}"));
        let mut argv = vec![
            "k8s-snap",
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "controller",
            "--namespace",
            &NS,
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-duration",
            "2s",
            "--maxretryelapsedsec",
            "3",
            "--identity",
            identity,
        ];
        argv.extend_from_slice(extra);
        let cli = crate::k8s_snap_cli::Cli::try_parse_from(argv).expect("controller flags parse");
        let crate::k8s_snap_cli::Command::Controller(args) = cli.command else {
            panic!("not the controller command");
        };
        let mut opts = crate::k8s_snap_cli::controller::options(&cli.global, args).unwrap();
        assert_eq!(opts.max_retry_elapsed, Duration::from_secs(3));
        tweak(&mut opts);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(k8s_snap::controller::run(
            opts,
            async move {
                let _ = stop_rx.await;
            },
            move |addr| {
                let _ = addr_tx.send(addr);
            },
        ));
        let metrics = tokio::time::timeout(Duration::from_secs(20), addr_rx)
            .await
            .expect("controller starts")
            .expect("controller reports its address");
        ControllerTask {
            handle,
            metrics,
            stop: Some(stop_tx),
            data,
        }
    }
}

pub(crate) struct ControllerTask {
    handle: tokio::task::JoinHandle<Result<(), k8s_snap::controller::ControllerError>>,
    metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) data: PathBuf,
}

impl ControllerTask {
    /// Stops the controller as SIGTERM does and returns its result.
    pub(crate) async fn stop(mut self) -> Result<(), k8s_snap::controller::ControllerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("controller stops")
            .expect("controller task not aborted")
    }

    /// Stops the controller abruptly, as a crashed process would (the Lease is not released).
    fn kill(&self) {
        self.handle.abort();
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut buf = String::new();
        stream.read_to_string(&mut buf).await.unwrap();
        let code = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, buf)
    }
}

impl Drop for Management {
    /// On a real cluster: removes the test run's namespace and everything in it (Snapshot
    /// finalizers first: no controller runs any more to remove them).
    fn drop(&mut self) {
        if self.emu.is_some() {
            return;
        }
        let kubeconfig = self.kubeconfig.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                let client = kube::Client::try_from(config).unwrap();
                let snapshots: Api<Snapshot> = Api::namespaced(client.clone(), &NS);
                if let Ok(list) = snapshots.list(&Default::default()).await {
                    for s in list.items {
                        let name = s.metadata.name.unwrap_or_default();
                        let patch = serde_json::json!({"metadata": {"finalizers": null}});
                        let _ = snapshots
                            .patch(&name, &Default::default(), &kube::api::Patch::Merge(patch))
                            .await;
                    }
                }
                let namespaces: Api<Namespace> = Api::all(client);
                let _ = namespaces.delete(&NS, &DeleteParams::default()).await;
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline
                    && matches!(namespaces.get_opt(&NS).await, Ok(Some(_)))
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl Drop for ControllerTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub(crate) async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates Snapshot `name` in the controller's namespace.
pub(crate) async fn create_snapshot(api: &Api<Snapshot>, name: &str, spec: SnapshotSpec) {
    api.create(&PostParams::default(), &snapshot(name, spec))
        .await
        .unwrap();
}

/// Creates Restore `name` in the controller's namespace.
pub(crate) async fn create_restore(api: &Api<Restore>, name: &str, spec: RestoreSpec) {
    let mut r = Restore::new(name, spec);
    r.metadata.namespace = Some(NS.into());
    api.create(&PostParams::default(), &r).await.unwrap();
}

/// Waits (up to 60 s) until Restore `name` is `Completed` or `Failed`, and returns its status.
pub(crate) async fn restore_final(api: &Api<Restore>, name: &str) -> RestoreCrStatus {
    wait_for(
        Duration::from_secs(60),
        &format!("restore {name} final"),
        || async {
            let st = api.get(name).await.ok()?.status?;
            ["Completed", "Failed"]
                .contains(&st.restore.phase.as_str())
                .then_some(st)
        },
    )
    .await
}

/// An in-process emulator with the realistic fixture: a source cluster the controller reaches
/// through [`spec_of`].
pub(crate) async fn realistic_source() -> EmulatorHandle {
    Emulator::builder()
        .fixture(Fixture::Realistic)
        .start()
        .await
        .unwrap()
}

/// An emulator holding nothing but the Secret `vault/db` whose `password` is `plaintext` (the
/// Secret is returned as created): a source whose only secret value tests can look for.
pub(crate) async fn source_with_secret(
    plaintext: &str,
) -> (EmulatorHandle, k8s_openapi::api::core::v1::Secret) {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let source = Emulator::builder()
        .fixture(Fixture::Empty)
        .start()
        .await
        .unwrap();
    let client = source.client().await;
    let pp = PostParams::default();
    let mut ns = Namespace::default();
    ns.metadata.name = Some("vault".into());
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let mut secret = Secret::default();
    secret.metadata.name = Some("db".into());
    secret.data = Some([("password".to_owned(), ByteString(plaintext.into()))].into());
    let created = Api::<Secret>::namespaced(client, "vault")
        .create(&pp, &secret)
        .await
        .unwrap();
    (source, created)
}

/// The spec of a Snapshot of `source` (its kubeconfig inline, cluster `src`).
pub(crate) fn spec_of(source: &EmulatorHandle) -> SnapshotSpec {
    SnapshotSpec {
        kubeconfig: Some(source.kubeconfig_yaml("src")),
        ..Default::default()
    }
}

/// Creates Snapshot `name` of the cluster `kubeconfig` reaches (as `cluster-a`) and waits
/// until it completed.
pub(crate) async fn completed_snapshot(api: &Api<Snapshot>, name: &str, kubeconfig: String) {
    create_snapshot(
        api,
        name,
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            kubeconfig: Some(kubeconfig),
            ..Default::default()
        },
    )
    .await;
    let done = phase_of(api, name, &["Completed", "Failed"]).await;
    assert_eq!(done.status.unwrap().phase, "Completed");
}

pub(crate) fn snapshot(name: &str, spec: SnapshotSpec) -> Snapshot {
    let mut s = Snapshot::new(name, spec);
    s.metadata.namespace = Some(NS.into());
    s
}

pub(crate) async fn phase_of(
    api: &Api<Snapshot>,
    name: &str,
    want: &'static [&'static str],
) -> Snapshot {
    wait_for(
        Duration::from_secs(30),
        &format!("snapshot {name} in {want:?}"),
        || async {
            let s = api.get(name).await.ok()?;
            let p = s.status.as_ref()?.phase.clone();
            want.contains(&p.as_str()).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_restore_lifecycle() {
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Realistic)
        .token("source-secret-token")
        .start()
        .await
        .unwrap();
    let snaps = mgmt.snapshots().await;
    let pp = PostParams::default();
    // A snapshot a controller was taking when it died.
    snaps
        .create(&pp, &snapshot("orphaned", SnapshotSpec::default()))
        .await
        .unwrap();
    snaps
        .patch_status(
            "orphaned",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "InProgress"}})),
        )
        .await
        .unwrap();
    let restores = mgmt.restores().await;
    let mut r = Restore::new(
        "r-orphaned",
        RestoreSpec {
            backup_name: "whatever".into(),
            ..Default::default()
        },
    );
    r.metadata.namespace = Some(NS.into());
    restores.create(&pp, &r).await.unwrap();
    restores
        .patch_status(
            "r-orphaned",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "InProgress"}})),
        )
        .await
        .unwrap();
    let ctl = mgmt.controller("solo").await;

    // A Snapshot of source A through an inline kubeconfig.
    let kubeconfig = source.kubeconfig_yaml("cluster-a");
    create_snapshot(
        &snaps,
        "cluster-a-001",
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            kubeconfig: Some(kubeconfig.clone()),
            ..Default::default()
        },
    )
    .await;
    // Wrong credentials: Failed with a reason, no retries.
    create_snapshot(
        &snaps,
        "bad-token",
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            kubeconfig: Some(kubeconfig.replace("source-secret-token", "wrong-token")),
            ..Default::default()
        },
    )
    .await;
    // availableUntil in the past.
    create_snapshot(
        &snaps,
        "in-the-past",
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            available_until: Some(Time("2020-07-01T02:03:04Z".parse().unwrap())),
            ..Default::default()
        },
    )
    .await;

    let done = phase_of(&snaps, "cluster-a-001", &["Completed", "Failed"]).await;
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase, "Completed", "reason: {}", st.reason);
    assert!(st.number_of_contents > 0);
    assert_eq!(
        st.contents.as_ref().map(Vec::len),
        Some(st.number_of_contents as usize)
    );
    assert!(st.contents.unwrap().iter().all(|c| c.starts_with("/api")));
    assert_eq!(st.cluster_name, "cluster-a");
    assert!(!st.snapshot_resource_version.is_empty());
    assert!(st.snapshot_timestamp.is_some());
    let until = st.available_until.clone().unwrap().0;
    let expected = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(720);
    assert!(
        (expected.as_second() - until.as_second()).abs() < 120,
        "{until}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(
        done.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "clustersnapshot.rywt.io/snapshot-data")
    );

    let git_dir = ctl.data.join("mirror.git");
    assert!(
        k8s_snap::controller::work::has_local_snapshot(&git_dir, "cluster-a-001")
            .await
            .unwrap()
    );
    let orphaned = phase_of(&snaps, "orphaned", &["Completed", "Failed"]).await;
    assert_eq!(
        orphaned.status.unwrap().reason,
        "Controller stopped while taking the snapshot"
    );

    let bad = phase_of(&snaps, "bad-token", &["Completed", "Failed"]).await;
    let bst = bad.status.unwrap();
    assert_eq!(bst.phase, "Failed");
    assert!(
        bst.reason.contains("401") || bst.reason.contains("Unauthorized"),
        "{}",
        bst.reason
    );
    assert!(
        !bst.reason.contains("wrong-token"),
        "credential in status: {}",
        bst.reason
    );
    // No retry storm: the status stays put.
    let rv = snaps
        .get("bad-token")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        snaps
            .get("bad-token")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv
    );

    let past = phase_of(&snaps, "in-the-past", &["Completed", "Failed"]).await;
    assert_eq!(
        past.status.unwrap().reason,
        "AvailableUntil is set as past."
    );

    // A snapshot naming an ObjectstoreConfig: a missing config, then an unreachable bucket;
    // the credential never reaches the status.
    let client = mgmt.client().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &NS);
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("store-cred".into());
    secret.string_data = Some(
        [
            ("accesskey", "AKIDSECRETACCESS"),
            ("secretkey", "SECRETSECRETKEY"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    secrets.create(&pp, &secret).await.unwrap();
    let stores: Api<k8s_snap::controller::ObjectstoreConfig> = Api::namespaced(client, &NS);
    let mut cfg = k8s_snap::controller::ObjectstoreConfig::new(
        "store",
        k8s_snap::controller::ObjectstoreConfigSpec {
            region: "us-east-1".into(),
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            cloud_credential_secret: "store-cred".into(),
            ..Default::default()
        },
    );
    cfg.metadata.namespace = Some(NS.into());
    stores.create(&pp, &cfg).await.unwrap();
    for (name, store) in [("to-missing-store", "nope"), ("to-store", "store")] {
        create_snapshot(
            &snaps,
            name,
            SnapshotSpec {
                cluster_name: "cluster-a".into(),
                kubeconfig: Some(kubeconfig.clone()),
                objectstore_config: Some(store.into()),
                ..Default::default()
            },
        )
        .await;
    }
    let missing = phase_of(&snaps, "to-missing-store", &["Completed", "Failed"]).await;
    assert_eq!(
        missing.status.unwrap().reason,
        format!("spec.objectstoreConfig: ObjectstoreConfig {NS}/nope not found")
    );
    // An unreachable bucket: Failed with a reason naming the store, without credentials.
    let pushed = phase_of(&snaps, "to-store", &["Completed", "Failed"]).await;
    let reason = pushed.status.unwrap().reason;
    assert!(reason.contains("s3://b at http://127.0.0.1:9"), "{reason}");

    // Everything the controller wrote is credential-free.
    let all = serde_json::to_string(&snaps.list(&Default::default()).await.unwrap().items).unwrap();
    let statuses: Vec<_> = snaps
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.status)
        .collect();
    let statuses = serde_json::to_string(&statuses).unwrap();
    for secret in [
        "source-secret-token",
        "wrong-token",
        "AKIDSECRETACCESS",
        "SECRETSECRETKEY",
    ] {
        assert!(!statuses.contains(secret), "{secret} in a status");
    }
    assert!(all.contains("cluster-a-001"));

    // kubectl lists them (the emulator prints NAME/AGE only: no server-side tables).
    let listed = mgmt.kubectl(&["get", "snapshots", "-n", &NS]);
    assert!(listed.contains("cluster-a-001"), "{listed}");
    // The original printer columns (server-side tables).
    let header: Vec<&str> = listed
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "CLUSTERNAME", "BACKUPDATE", "STATUS"],
        "{listed}"
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with("cluster-a-001"))
        .unwrap();
    assert!(
        row.contains("cluster-a") && row.ends_with("Completed"),
        "{listed}"
    );

    // Restores: a missing snapshot, a not-completed one, a short-lived one, and a real one
    // into cluster B with a RestorePreference.
    // The target B of the real restore, and a RestorePreference for it.
    let target_b = Emulator::builder()
        .fixture(Fixture::Empty)
        .service_cidr("10.210.0.0/16")
        .start()
        .await
        .unwrap();
    let prefs: Api<k8s_snap::controller::RestorePreference> =
        Api::namespaced(mgmt.client().await, &NS);
    let mut pref = k8s_snap::controller::RestorePreference::new(
        "no-system",
        k8s_snap::controller::RestorePreferenceCrSpec {
            preference: k8s_snap::restore::preference::RestorePreferenceSpec {
                exclude_namespaces: vec!["kube-system".into(), "kube-public".into()],
                ..Default::default()
            },
        },
    );
    pref.metadata.namespace = Some(NS.into());
    prefs.create(&pp, &pref).await.unwrap();
    for (name, backup) in [
        ("r-missing", "no-such-snapshot"),
        ("r-failed-snap", "bad-token"),
        ("r-ok", "cluster-a-001"),
        ("r-short", "no-such-snapshot"),
    ] {
        let real = name == "r-ok";
        let mut r = Restore::new(
            name,
            RestoreSpec {
                cluster_name: "cluster-b".into(),
                backup_name: backup.into(),
                ttl: (name == "r-short").then(|| "2s".to_string()),
                kubeconfig: real.then(|| target_b.kubeconfig_yaml("cluster-b")),
                restore_preference_name: real.then(|| "no-system".to_string()),
                ..Default::default()
            },
        );
        r.metadata.namespace = Some(NS.into());
        restores.create(&pp, &r).await.unwrap();
    }
    let reason_of = |name: &'static str| {
        let restores = restores.clone();
        async move {
            wait_for(Duration::from_secs(20), name, || async {
                let r = restores.get(name).await.ok()?;
                let s = r.status?;
                (s.restore.phase == "Failed" || s.restore.phase == "Completed").then_some((
                    s.restore.phase,
                    s.restore.reason,
                    s.restore.preserve_until,
                ))
            })
            .await
        }
    };
    let listed = mgmt.kubectl(&["get", "restores", "-n", &NS]);
    let header: Vec<&str> = listed
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "CLUSTER",
            "SNAPSHOT",
            "TIMESTAMP",
            "RV",
            "EXCLUDED",
            "CREATED",
            "UPDATED",
            "EXIST",
            "FAILED",
            "STATUS"
        ],
        "{listed}"
    );
    let (p, reason, _) = reason_of("r-orphaned").await;
    assert_eq!(
        (p.as_str(), reason.as_str()),
        ("Failed", "Controller stopped while restoring the snapshot")
    );
    let (p, reason, _) = reason_of("r-missing").await;
    assert_eq!(
        (p.as_str(), reason.as_str()),
        ("Failed", "Snapshot file not found")
    );
    let (_, reason, _) = reason_of("r-failed-snap").await;
    assert_eq!(reason, "Snapshot data is not in status 'Completed'");
    let (_, _, preserve_short) = reason_of("r-short").await;
    assert!(preserve_short.is_some());
    let (p, reason, preserve) = reason_of("r-ok").await;
    assert_eq!(p, "Completed", "{reason}");
    assert!(preserve.is_some());
    let ok = restores.get("r-ok").await.unwrap().status.unwrap().restore;
    assert!(
        ok.num_created > 0 && ok.num_preference_excluded > 0,
        "{ok:?}"
    );
    assert_eq!(ok.num_failed, 0, "{:?}", ok.failed);
    // The CLI restoring the same snapshot with the same preference onto a fresh cluster gives
    // the same counts.
    let target_c = Emulator::builder()
        .fixture(Fixture::Empty)
        .service_cidr("10.220.0.0/16")
        .start()
        .await
        .unwrap();
    let kc_c = mgmt.dir.path().join("c.yaml");
    target_c.write_kubeconfig(&kc_c, "cluster-c").unwrap();
    let pref_file = mgmt.dir.path().join("pref.yaml");
    std::fs::write(
        &pref_file,
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: no-system\nspec:\n  excludeNamespaces: [kube-system, kube-public]\n",
    )
    .unwrap();
    let cli_status = {
        use clap::Parser;
        let cli = crate::k8s_snap_cli::Cli::try_parse_from([
            "k8s-snap",
            "--kubeconfig",
            kc_c.to_str().unwrap(),
            "--data-dir",
            ctl.data.to_str().unwrap(),
            "-o",
            "json",
            "restore",
            "cluster-a-001",
            "--preference",
            pref_file.to_str().unwrap(),
        ])
        .unwrap();
        let mut out = Vec::new();
        let code = crate::k8s_snap_cli::run(cli, &mut out).await.unwrap();
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    for (field, ours) in [
        ("numCreated", ok.num_created),
        ("numExcluded", ok.num_excluded),
        ("numPreferenceExcluded", ok.num_preference_excluded),
        ("numSnapshotContents", ok.num_snapshot_contents),
        ("numAlreadyExisted", ok.num_already_existed),
    ] {
        assert_eq!(
            cli_status[field].as_u64(),
            Some(ours),
            "{field}: {cli_status}"
        );
    }

    // TTL expiry deletes the CR and (through the finalizer) its mirror data.
    create_snapshot(
        &snaps,
        "short-lived",
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            kubeconfig: Some(kubeconfig.clone()),
            ttl: Some("3s".into()),
            ..Default::default()
        },
    )
    .await;
    wait_for(Duration::from_secs(30), "short-lived deleted", || async {
        match snaps.get_opt("short-lived").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;

    wait_for(Duration::from_secs(15), "r-short deleted", || async {
        matches!(restores.get_opt("r-short").await, Ok(None)).then_some(())
    })
    .await;

    // Deleting a snapshot removes it from the controller's mirror.
    snaps
        .delete("cluster-a-001", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(15), "cluster-a-001 deleted", || async {
        matches!(snaps.get_opt("cluster-a-001").await, Ok(None)).then_some(())
    })
    .await;
    for gone in ["cluster-a-001", "short-lived"] {
        assert!(
            !k8s_snap::controller::work::has_local_snapshot(&git_dir, gone)
                .await
                .unwrap(),
            "{gone} still in the mirror"
        );
    }

    // Probes and metrics.
    assert_eq!(ctl.get("/healthz").await.0, 200);
    assert_eq!(ctl.get("/readyz").await.0, 200);
    let (code, metrics) = ctl.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("k8s_snap_snapshots_total{result=\"completed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("k8s_snap_snapshots_total{result=\"failed\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("k8s_snap_restores_total{result=\"failed\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("k8s_snap_restores_total{result=\"completed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("k8s_snap_leader 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_replica_takes_over() {
    let mgmt = Management::start().await;
    // Over 1,000 objects: the status list is cut, the count is not.
    let source = Emulator::builder()
        .fixture(Fixture::Scale(1100))
        .start()
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(mgmt.client().await, &NS);
    let holder = || async {
        leases
            .get_opt("k8s-snap-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let first = mgmt.controller("first").await;
    wait_for(Duration::from_secs(10), "first leads", || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let second = mgmt.controller("second").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder().await.as_deref(), Some("first"));
    assert!(second.get("/metrics").await.1.contains("k8s_snap_leader 0"));

    // The leader dies without releasing the lease, in the middle of a (slow) snapshot.
    let slow = Emulator::builder()
        .fixture(Fixture::Empty)
        .fault("latency=300ms,times=40".parse().unwrap())
        .start()
        .await
        .unwrap();
    let snaps = mgmt.snapshots().await;
    create_snapshot(
        &snaps,
        "interrupted",
        SnapshotSpec {
            cluster_name: "slow".into(),
            kubeconfig: Some(slow.kubeconfig_yaml("slow")),
            ..Default::default()
        },
    )
    .await;
    phase_of(&snaps, "interrupted", &["InProgress"]).await;
    first.kill();
    create_snapshot(
        &snaps,
        "after-failover",
        SnapshotSpec {
            cluster_name: "b".into(),
            kubeconfig: Some(source.kubeconfig_yaml("b")),
            ..Default::default()
        },
    )
    .await;
    let s = phase_of(&snaps, "after-failover", &["Completed", "Failed"]).await;
    let st = s.status.unwrap();
    assert_eq!(st.phase, "Completed");
    assert!(st.number_of_contents > 1100, "{}", st.number_of_contents);
    assert_eq!(st.contents.map(|c| c.len()), Some(1000));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Truncated" && c.status == "True"),
        "{:?}",
        st.conditions
    );
    assert_eq!(holder().await.as_deref(), Some("second"));
    let interrupted = phase_of(&snaps, "interrupted", &["Completed", "Failed"]).await;
    assert_eq!(
        interrupted.status.unwrap().reason,
        "Controller stopped while taking the snapshot"
    );
    // A clean stop releases the Lease at once.
    second.stop().await.unwrap();
    assert_eq!(holder().await, None);
}

/// The original project's manifests (with a field this version does not know) and the deploy/
/// samples apply with kubectl and read back through the typed API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_manifests_apply_with_kubectl() {
    let mgmt = Management::start().await;
    let original = mgmt.dir.path().join("original.yaml");
    std::fs::write(
        &original,
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Snapshot\nmetadata:\n  name: cluster01-001\n  namespace: k8s-snap\nspec:\n  clusterName: cluster01\n  kubeconfig: |\n    apiVersion: v1\n    kind: Config\n  ttl: 720h\n  availableUntil: 2020-07-01T02:03:04Z\n  someFutureField: kept\n---\napiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nmetadata:\n  name: cluster02-cluster01-001-001\n  namespace: k8s-snap\nspec:\n  clusterName: cluster02\n  backupName: cluster01-001\n  restorePreferenceName: exclude-kube-system\n  ttl: 168h\n  availableUntil: 2020-07-01T01:02:03Z\n---\napiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nmetadata:\n  name: original-pref\n  namespace: k8s-snap\nspec:\n  excludeNamespaces: [kube-system]\n  restoreOptions: [overwriteExisting]\n",
    )
    .unwrap();
    for f in [
        original.to_str().unwrap().to_string(),
        repo_file("deploy/cloud-credential.yaml")
            .display()
            .to_string(),
        repo_file("deploy/objectstore-config.yaml")
            .display()
            .to_string(),
        repo_file("deploy/preference.yaml").display().to_string(),
    ]
    .into_iter()
    .chain(mgmt.samples())
    {
        mgmt.kubectl(&["apply", "-f", &f]);
    }
    let client = mgmt.client().await;
    let s = mgmt.snapshots().await.get("cluster01-001").await.unwrap();
    assert_eq!(s.spec.cluster_name, "cluster01");
    assert_eq!(s.spec.ttl.as_deref(), Some("720h"));
    let r = mgmt
        .restores()
        .await
        .get("cluster02-cluster01-001-001")
        .await
        .unwrap();
    assert_eq!(r.spec.backup_name, "cluster01-001");
    let prefs: Api<k8s_snap::controller::RestorePreference> = Api::namespaced(client.clone(), &NS);
    assert_eq!(
        prefs
            .get("original-pref")
            .await
            .unwrap()
            .spec
            .preference
            .exclude_namespaces,
        ["kube-system"]
    );
    assert!(
        !prefs
            .get("exclude-kube-system")
            .await
            .unwrap()
            .spec
            .preference
            .restore_app_api_pathes
            .is_empty()
    );
    let stores: Api<k8s_snap::controller::ObjectstoreConfig> = Api::namespaced(client.clone(), &NS);
    let cfg = stores.get("k8s-snap-ap-northeast-1").await.unwrap();
    assert_eq!(cfg.spec.cloud_credential_secret, "k8s-snap-ap-northeast-1");
    let listed = mgmt.kubectl(&["get", "snapshots,restores", "-n", &NS]);
    assert!(
        listed.contains("cluster01-001") && listed.contains("self-001"),
        "{listed}"
    );
    // The stored CRD carries the original printer columns (the emulator itself prints
    // NAME/AGE only; a real API server prints these).
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let cols = |crd: CustomResourceDefinition| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name.to_uppercase())
            .collect()
    };
    assert_eq!(
        cols(crds.get("snapshots.clustersnapshot.rywt.io").await.unwrap()),
        ["CLUSTERNAME", "BACKUPDATE", "STATUS"]
    );
    assert_eq!(
        cols(crds.get("restores.clustersnapshot.rywt.io").await.unwrap()),
        [
            "CLUSTER",
            "SNAPSHOT",
            "TIMESTAMP",
            "RV",
            "EXCLUDED",
            "CREATED",
            "UPDATED",
            "EXIST",
            "FAILED",
            "STATUS"
        ]
    );
}

pub(crate) const STORE_KEY_ID: &str = "AKIDCONTROLLERTEST01";
pub(crate) const STORE_SECRET: &str = "controller-store-secret-0123456789";

/// The credential Secret and an ObjectstoreConfig `s3` pointing at moto's bucket `ctl`.
pub(crate) async fn store_config(mgmt: &Management, moto: &crate::store_support::Moto) {
    let client = mgmt.client().await;
    let pp = PostParams::default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &NS);
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("s3-cred".into());
    secret.string_data = Some(
        [("accesskey", STORE_KEY_ID), ("secretkey", STORE_SECRET)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    secrets.create(&pp, &secret).await.unwrap();
    let configs: Api<k8s_snap::controller::ObjectstoreConfig> = Api::namespaced(client, &NS);
    let mut cfg = k8s_snap::controller::ObjectstoreConfig::new(
        "s3",
        k8s_snap::controller::ObjectstoreConfigSpec {
            region: "us-east-1".into(),
            endpoint: moto.endpoint(),
            bucket: "ctl".into(),
            cloud_credential_secret: "s3-cred".into(),
            prefix: Some("team".into()),
            ..Default::default()
        },
    );
    cfg.metadata.namespace = Some(NS.into());
    configs.create(&pp, &cfg).await.unwrap();
}

/// moto's bucket `ctl` under prefix `team`, through the store API.
pub(crate) async fn test_store(moto: &crate::store_support::Moto) -> k8s_snap::store::S3Store {
    k8s_snap::store::S3Store::connect(
        "ctl",
        "team",
        &k8s_snap::store::S3Options {
            endpoint: Some(moto.endpoint()),
            region: Some("us-east-1".into()),
            path_style: true,
            insecure: false,
            access_key_id: Some(k8s_snap::store::Secret::new(STORE_KEY_ID)),
            secret_access_key: Some(k8s_snap::store::Secret::new(STORE_SECRET)),
        },
    )
    .await
    .unwrap()
}

/// The snapshots moto's store lists, read with the store API.
pub(crate) async fn stored(
    moto: &crate::store_support::Moto,
) -> Vec<k8s_snap::store::sync::StoreSnapshot> {
    k8s_snap::store::sync::list(&test_store(moto).await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_go_to_the_object_store_and_come_back() {
    // No bucket yet: `--createbucket` makes it.
    let moto = crate::store_support::Moto::start();
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Realistic)
        .token("store-test-source-token")
        .start()
        .await
        .unwrap();
    store_config(&mgmt, &moto).await;
    let ctl = mgmt
        .controller_with(
            "one",
            &[
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--createbucket",
            ],
        )
        .await;
    let snaps = mgmt.snapshots().await;
    for name in ["nightly-1", "nightly-0"] {
        create_snapshot(
            &snaps,
            name,
            SnapshotSpec {
                cluster_name: "cluster-a".into(),
                kubeconfig: Some(source.kubeconfig_yaml("cluster-a")),
                objectstore_config: Some("s3".into()),
                ..Default::default()
            },
        )
        .await;
    }
    let zero = phase_of(&snaps, "nightly-0", &["Completed", "Failed"]).await;
    assert_eq!(zero.status.unwrap().phase, "Completed");
    let done = phase_of(&snaps, "nightly-1", &["Completed", "Failed"]).await;
    let st = done.status.unwrap();
    assert_eq!(st.phase, "Completed", "reason: {}", st.reason);
    assert!(st.stored_timestamp.is_some());
    assert!(st.stored_file_size > 0);
    let in_store = stored(&moto).await;
    assert_eq!(in_store.len(), 2);
    // Both were taken at once: their order in the store (by timestamp) is not fixed.
    let one = in_store.iter().find(|s| s.name == "nightly-1").unwrap();
    assert_eq!(one.entry.number_of_contents, st.number_of_contents);
    assert_eq!(one.entry.cluster, "cluster-a");
    ctl.stop().await.unwrap();

    // nightly-0's data vanishes from the store behind the controller's back: the next
    // `--housekeepstore` round fails its CR with the original message.
    {
        let store = test_store(&moto).await;
        k8s_snap::store::sync::delete(&store, &["nightly-0".to_string()])
            .await
            .unwrap();
    }
    let keeper = mgmt
        .controller_with("one-b", &["--restoresnapshots=false"])
        .await;
    let vanished = wait_for(Duration::from_secs(30), "nightly-0 failed", || async {
        let s = snaps.get("nightly-0").await.ok()?.status?;
        (s.phase == "Failed").then_some(s)
    })
    .await;
    assert_eq!(vanished.reason, "Snapshot file not found");
    assert_eq!(
        snaps.get("nightly-1").await.unwrap().status.unwrap().phase,
        "Completed"
    );
    keeper.stop().await.unwrap();
    snaps
        .delete("nightly-0", &DeleteParams::default())
        .await
        .unwrap();

    // A management cluster rebuilt from scratch: `--restoresnapshots` recreates the CR from
    // the store's manifest, Completed with the same counts. (A second, empty management
    // cluster is only to be had from the emulator.)
    if mgmt.emulator().is_none() {
        return;
    }
    let mgmt2 = Management::start().await;
    store_config(&mgmt2, &moto).await;
    let ctl2 = mgmt2
        .controller_with("two", &["--housekeepstore=false"])
        .await;
    let snaps2 = mgmt2.snapshots().await;
    let back = phase_of(&snaps2, "nightly-1", &["Completed", "Failed"]).await;
    let bst = back.status.clone().unwrap();
    assert_eq!(bst.phase, "Completed", "reason: {}", bst.reason);
    assert_eq!(bst.number_of_contents, st.number_of_contents);
    assert_eq!(bst.snapshot_resource_version, st.snapshot_resource_version);
    assert_eq!(back.spec.objectstore_config.as_deref(), Some("s3"));

    // Deleting the Snapshot removes it from the store's manifest.
    snaps2
        .delete("nightly-1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "nightly-1 deleted", || async {
        matches!(snaps2.get_opt("nightly-1").await, Ok(None)).then_some(())
    })
    .await;
    assert!(stored(&moto).await.is_empty());

    // No credential in any status or spec the controller wrote.
    for api in [&snaps, &snaps2] {
        let all =
            serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap();
        assert!(!all.contains(STORE_SECRET) && !all.contains(STORE_KEY_ID));
    }
    ctl2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_file_drops() {
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Realistic)
        .start()
        .await
        .unwrap();
    let target = Emulator::builder()
        .fixture(Fixture::Empty)
        .start()
        .await
        .unwrap();
    let drops = mgmt.dir.path().join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let ctl = mgmt
        .controller_with(
            "drops",
            &[
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--watch-dir",
                drops.to_str().unwrap(),
            ],
        )
        .await;
    let snaps = mgmt.snapshots().await;
    completed_snapshot(&snaps, "for-drops", source.kubeconfig_yaml("cluster-a")).await;
    let kc = target.kubeconfig_yaml("cluster-b");
    let indented: String = kc.lines().map(|l| format!("    {l}\n")).collect();
    let request = format!(
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: for-drops\n  preference:\n    excludeNamespaces: [kube-system]\n  kubeconfig: |\n{indented}"
    );
    std::fs::write(drops.join(".r1.yaml.tmp"), request).unwrap();
    std::fs::rename(drops.join(".r1.yaml.tmp"), drops.join("r1.yaml")).unwrap();
    let result = drops.join("results/r1.status.yaml");
    wait_for(Duration::from_secs(30), "the file-drop result", || async {
        drops.join("done/r1.yaml").exists().then_some(())
    })
    .await;
    let status = k8s_snap::tree::from_yaml(&std::fs::read_to_string(result).unwrap()).unwrap();
    assert_eq!(status["status"]["phase"], "Completed", "{status}");
    assert!(status["status"]["numCreated"].as_u64().unwrap() > 0);
    ctl.stop().await.unwrap();
}

/// A file drop in the controller's `--watch-dir` names a snapshot that only the store holds
/// (another replica took and pushed it): the controller pulls it from the Snapshot CR's
/// ObjectstoreConfig, as it does for a Restore CR, and restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_watch_dir_pulls_a_snapshot_only_in_the_store() {
    let moto = crate::store_support::Moto::start();
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Realistic)
        .start()
        .await
        .unwrap();
    let target = Emulator::builder()
        .fixture(Fixture::Empty)
        .start()
        .await
        .unwrap();
    store_config(&mgmt, &moto).await;
    // Replica "taker" takes the snapshot and pushes it, then goes away.
    let taker = mgmt
        .controller_with(
            "taker",
            &[
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--createbucket",
            ],
        )
        .await;
    let snaps = mgmt.snapshots().await;
    create_snapshot(
        &snaps,
        "only-stored",
        SnapshotSpec {
            cluster_name: "cluster-a".into(),
            kubeconfig: Some(source.kubeconfig_yaml("cluster-a")),
            objectstore_config: Some("s3".into()),
            ..Default::default()
        },
    )
    .await;
    let done = phase_of(&snaps, "only-stored", &["Completed", "Failed"]).await;
    assert_eq!(done.status.unwrap().phase, "Completed");
    assert_eq!(stored(&moto).await.len(), 1);
    taker.stop().await.unwrap();

    // Replica "drops" (its own, empty data dir) serves the file drop.
    let drops = mgmt.dir.path().join("drops");
    std::fs::create_dir_all(&drops).unwrap();
    let ctl = mgmt
        .controller_with(
            "drops",
            &[
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--watch-dir",
                drops.to_str().unwrap(),
            ],
        )
        .await;
    let kc = target.kubeconfig_yaml("cluster-b");
    let indented: String = kc.lines().map(|l| format!("    {l}\n")).collect();
    let request = format!(
        "apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: Restore\nspec:\n  backupName: only-stored\n  preference:\n    excludeNamespaces: [kube-system]\n  kubeconfig: |\n{indented}"
    );
    std::fs::write(drops.join(".r1.yaml.tmp"), request).unwrap();
    std::fs::rename(drops.join(".r1.yaml.tmp"), drops.join("r1.yaml")).unwrap();
    wait_for(Duration::from_secs(30), "the file-drop result", || async {
        (drops.join("done/r1.yaml").exists() || drops.join("failed/r1.yaml").exists()).then_some(())
    })
    .await;
    let result = drops.join("results/r1.status.yaml");
    let status = k8s_snap::tree::from_yaml(&std::fs::read_to_string(result).unwrap()).unwrap();
    assert_eq!(status["status"]["phase"], "Completed", "{status}");
    assert!(status["status"]["numCreated"].as_u64().unwrap() > 0);
    // The snapshot is now in this replica's mirror.
    let mirror =
        k8s_snap::mirror::Mirror::open(&mgmt.dir.path().join("data-drops").join("mirror.git"))
            .unwrap();
    assert!(mirror.snapshot("only-stored").unwrap().is_some());
    ctl.stop().await.unwrap();
}
