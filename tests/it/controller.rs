//! The CRD-driven controller end to end: CRDs applied with the real kubectl to a management
//! emulator, the `k8s-snap controller` binary run as real processes against it, Snapshot and
//! Restore resources driven through their lifecycle, and a standby replica taking over.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_snap::controller::{Restore, RestoreSpec, Snapshot, SnapshotSpec};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube_emulator::{Emulator, EmulatorHandle, Fixture};
use tempfile::TempDir;

const NS: &str = "k8s-snap";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn deploy_crd_yaml_matches_the_generated_crds() {
    let generated = k8s_snap::controller::crds_yaml().unwrap();
    let on_disk = std::fs::read_to_string(repo_file("deploy/crd.yaml")).unwrap_or_default();
    assert!(
        generated == on_disk,
        "deploy/crd.yaml is out of date with the Rust CRD types; regenerate it with\n    cargo run -q -- crd > deploy/crd.yaml"
    );
    assert_eq!(generated.matches("kind: CustomResourceDefinition").count(), 4);
}

/// The management cluster: an emulator without a token (kubectl sends no credentials over
/// plain http), its kubeconfig file, and the CRDs applied with kubectl.
struct Management {
    emu: EmulatorHandle,
    kubeconfig: PathBuf,
    dir: TempDir,
}

impl Management {
    async fn start() -> Management {
        let emu = Emulator::builder()
            .fixture(Fixture::Empty)
            .crd_establish_delay(Duration::from_millis(50))
            .start()
            .await
            .expect("management emulator");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("mgmt.yaml");
        emu.write_kubeconfig(&kubeconfig, "mgmt").unwrap();
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
        let client = emu.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in [
            "snapshots",
            "restores",
            "restorepreferences",
            "objectstoreconfigs",
        ] {
            let full = format!("{name}.clustersnapshot.rywt.io");
            wait_for(Duration::from_secs(10), &format!("{full} Established"), || {
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
            })
            .await;
        }
        let namespaces: Api<Namespace> = Api::all(client);
        namespaces
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
            .await
            .unwrap();
        Management {
            emu,
            kubeconfig,
            dir,
        }
    }

    async fn snapshots(&self) -> Api<Snapshot> {
        Api::namespaced(self.emu.client().await, NS)
    }

    async fn restores(&self) -> Api<Restore> {
        Api::namespaced(self.emu.client().await, NS)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `k8s-snap controller` with short lease and retry times.
    fn controller(&self, identity: &str) -> ControllerProcess {
        let data = self.dir.path().join(format!("data-{identity}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_k8s-snap"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "controller",
                "--namespace",
                NS,
                "--metrics-addr",
                "127.0.0.1:0",
                "--lease-duration",
                "2s",
                "--maxretryelapsedsec",
                "3",
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--identity",
                identity,
            ])
            .env("RUST_LOG", "info")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("k8s-snap controller starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("metrics listening on http://") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("a socket address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "controller did not start; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        ControllerProcess {
            child,
            metrics: addr,
            log,
        }
    }
}

struct ControllerProcess {
    child: Child,
    metrics: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl ControllerProcess {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn get(&self, path: &str) -> (u16, String) {
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

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
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

fn snapshot(name: &str, spec: SnapshotSpec) -> Snapshot {
    let mut s = Snapshot::new(name, spec);
    s.metadata.namespace = Some(NS.into());
    s
}

async fn phase_of(api: &Api<Snapshot>, name: &str, want: &'static [&'static str]) -> Snapshot {
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
    let ctl = mgmt.controller("solo");
    let snaps = mgmt.snapshots().await;
    let pp = PostParams::default();

    // A Snapshot of source A through an inline kubeconfig.
    let kubeconfig = source.kubeconfig_yaml("cluster-a");
    snaps
        .create(
            &pp,
            &snapshot(
                "cluster-a-001",
                SnapshotSpec {
                    cluster_name: "cluster-a".into(),
                    kubeconfig: Some(kubeconfig.clone()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    // Wrong credentials: Failed with a reason, no retries.
    snaps
        .create(
            &pp,
            &snapshot(
                "bad-token",
                SnapshotSpec {
                    cluster_name: "cluster-a".into(),
                    kubeconfig: Some(kubeconfig.replace("source-secret-token", "wrong-token")),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    // availableUntil in the past.
    snaps
        .create(
            &pp,
            &snapshot(
                "in-the-past",
                SnapshotSpec {
                    cluster_name: "cluster-a".into(),
                    available_until: Some(Time("2020-07-01T02:03:04Z".parse().unwrap())),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();

    let done = phase_of(&snaps, "cluster-a-001", &["Completed", "Failed"]).await;
    let st = done.status.clone().unwrap();
    assert_eq!(st.phase, "Completed", "reason: {} log:\n{}", st.reason, ctl.log());
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
    assert!((expected.as_second() - until.as_second()).abs() < 120, "{until}");
    assert!(st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(
        done.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "clustersnapshot.rywt.io/snapshot-data")
    );

    let bad = phase_of(&snaps, "bad-token", &["Completed", "Failed"]).await;
    let bst = bad.status.unwrap();
    assert_eq!(bst.phase, "Failed");
    assert!(bst.reason.contains("401") || bst.reason.contains("Unauthorized"), "{}", bst.reason);
    assert!(!bst.reason.contains("wrong-token"), "credential in status: {}", bst.reason);
    // No retry storm: the status stays put.
    let rv = snaps.get("bad-token").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(snaps.get("bad-token").await.unwrap().metadata.resource_version, rv);

    let past = phase_of(&snaps, "in-the-past", &["Completed", "Failed"]).await;
    assert_eq!(past.status.unwrap().reason, "AvailableUntil is set as past.");

    // Everything the controller wrote is credential-free.
    let all = serde_json::to_string(&snaps.list(&Default::default()).await.unwrap().items).unwrap();
    let statuses: Vec<_> = snaps.list(&Default::default()).await.unwrap().items.into_iter().map(|s| s.status).collect();
    let statuses = serde_json::to_string(&statuses).unwrap();
    assert!(!statuses.contains("source-secret-token") && !statuses.contains("wrong-token"));
    assert!(all.contains("cluster-a-001"));

    // kubectl lists them (the emulator prints NAME/AGE only: no server-side tables).
    let listed = mgmt.kubectl(&["get", "snapshots", "-n", NS]);
    assert!(listed.contains("cluster-a-001"), "{listed}");

    // Restores: a missing snapshot, a not-completed one, and one the (not yet integrated)
    // engine must refuse rather than pretend.
    let restores = mgmt.restores().await;
    for (name, backup) in [
        ("r-missing", "no-such-snapshot"),
        ("r-failed-snap", "bad-token"),
        ("r-ok", "cluster-a-001"),
    ] {
        let mut r = Restore::new(
            name,
            RestoreSpec {
                cluster_name: "cluster-b".into(),
                backup_name: backup.into(),
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
                (s.restore.phase == "Failed" || s.restore.phase == "Completed")
                    .then_some((s.restore.phase, s.restore.reason, s.restore.preserve_until))
            })
            .await
        }
    };
    let (p, reason, _) = reason_of("r-missing").await;
    assert_eq!((p.as_str(), reason.as_str()), ("Failed", "Snapshot file not found"));
    let (_, reason, _) = reason_of("r-failed-snap").await;
    assert_eq!(reason, "Snapshot data is not in status 'Completed'");
    let (p, reason, preserve) = reason_of("r-ok").await;
    assert_eq!(p, "Failed");
    assert_eq!(reason, "restore engine not integrated yet");
    assert!(preserve.is_some());

    // TTL expiry deletes the CR and (through the finalizer) its mirror data.
    snaps
        .create(
            &pp,
            &snapshot(
                "short-lived",
                SnapshotSpec {
                    cluster_name: "cluster-a".into(),
                    kubeconfig: Some(kubeconfig.clone()),
                    ttl: Some("3s".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "short-lived deleted", || async {
        match snaps.get_opt("short-lived").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;

    // Deleting a snapshot removes it from the controller's mirror.
    snaps.delete("cluster-a-001", &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(15), "cluster-a-001 deleted", || async {
        matches!(snaps.get_opt("cluster-a-001").await, Ok(None)).then_some(())
    })
    .await;
    let list = Command::new(env!("CARGO_BIN_EXE_k8s-snap"))
        .arg("--data-dir")
        .arg(mgmt.dir.path().join("data-solo"))
        .args(["list", "-o", "json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(!listed.contains("cluster-a-001") && !listed.contains("short-lived"), "{listed}");

    // Probes and metrics.
    assert_eq!(ctl.get("/healthz").await.0, 200);
    assert_eq!(ctl.get("/readyz").await.0, 200);
    let (code, metrics) = ctl.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("k8s_snap_snapshots_total{result=\"completed\"} 2"), "{metrics}");
    assert!(metrics.contains("k8s_snap_snapshots_total{result=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("k8s_snap_restores_total{result=\"failed\"} 3"), "{metrics}");
    assert!(metrics.contains("k8s_snap_leader 1"), "{metrics}");
    let log = ctl.log();
    assert!(!log.contains("source-secret-token") && !log.contains("wrong-token"), "credential in log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_replica_takes_over() {
    let mgmt = Management::start().await;
    let source = Emulator::builder()
        .fixture(Fixture::Empty)
        .start()
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(mgmt.emu.client().await, NS);
    let holder = || async {
        leases
            .get_opt("k8s-snap-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let mut first = mgmt.controller("first");
    wait_for(Duration::from_secs(10), "first leads", || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let second = mgmt.controller("second");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder().await.as_deref(), Some("first"));
    assert!(second.get("/metrics").await.1.contains("k8s_snap_leader 0"));

    // The leader dies without releasing the lease.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let snaps = mgmt.snapshots().await;
    snaps
        .create(
            &PostParams::default(),
            &snapshot(
                "after-failover",
                SnapshotSpec {
                    cluster_name: "b".into(),
                    kubeconfig: Some(source.kubeconfig_yaml("b")),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    let s = phase_of(&snaps, "after-failover", &["Completed", "Failed"]).await;
    assert_eq!(s.status.unwrap().phase, "Completed", "log:\n{}", second.log());
    assert_eq!(holder().await.as_deref(), Some("second"));
}
