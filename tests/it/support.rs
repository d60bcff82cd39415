//! Shared test helpers: clusters (the emulator, or real ones from the environment), data dirs,
//! the `k8s-snap` binary and a sandboxed `git`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_emulator::{Emulator, EmulatorHandle, Fixture, ServerVersion};
use tempfile::TempDir;

/// Env var naming a real cluster's kubeconfig to run the end-to-end tests against.
pub const REAL_A: &str = "K8S_SNAP_TEST_KUBECONFIG";
/// A second real cluster (restore targets).
pub const REAL_B: &str = "K8S_SNAP_TEST_KUBECONFIG_B";

/// A cluster for one test: an emulator by default, or a real cluster from the environment.
pub struct TestCluster {
    pub kubeconfig: PathBuf,
    pub emulator: Option<EmulatorHandle>,
    /// Namespaces made by [`TestCluster::namespace`]: deleted again on a real cluster.
    created: std::sync::Mutex<Vec<String>>,
    _dir: TempDir,
}

impl Drop for TestCluster {
    /// On a real cluster, deletes the namespaces this test made (their contents go with
    /// them), on a thread of its own so that dropping inside a runtime is fine.
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if self.emulator.is_some() || names.is_empty() {
            return;
        }
        let kubeconfig = self.kubeconfig.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(c) =
                    k8s_snap::cluster::Cluster::connect(&k8s_snap::cluster::ConnectOptions {
                        kubeconfig: Some(kubeconfig),
                        ..Default::default()
                    })
                    .await
                else {
                    return;
                };
                for n in names {
                    let path = format!("/api/v1/namespaces/{n}");
                    let delete = c.request_bytes(http::Method::DELETE, &path, None, None);
                    if let Err(e) =
                        tokio::time::timeout(std::time::Duration::from_secs(30), delete).await
                    {
                        eprintln!("cleanup of namespace {n}: {e}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl TestCluster {
    /// The source cluster: `$K8S_SNAP_TEST_KUBECONFIG`, else an emulator with the realistic fixture.
    pub async fn source() -> TestCluster {
        Self::from_env_or(REAL_A, Fixture::Realistic).await
    }

    /// The restore target: `$K8S_SNAP_TEST_KUBECONFIG_B`, else an empty emulator.
    pub async fn target() -> TestCluster {
        Self::from_env_or(REAL_B, Fixture::Empty).await
    }

    async fn from_env_or(var: &str, fixture: Fixture) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return TestCluster {
                kubeconfig: PathBuf::from(path),
                emulator: None,
                created: Default::default(),
                _dir: dir,
            };
        }
        Self::emulated(
            Emulator::builder()
                .fixture(fixture)
                .server_version(ServerVersion::from_env()),
        )
        .await
    }

    /// An emulator playing release `v` (tests of version handling; emulator only).
    pub async fn emulated_at(v: ServerVersion, fixture: Fixture) -> TestCluster {
        Self::emulated(Emulator::builder().fixture(fixture).server_version(v)).await
    }

    /// Always an emulator (tests of emulator-only features such as fault injection).
    pub async fn emulated(builder: kube_emulator::EmulatorBuilder) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let emulator = builder.start().await.expect("emulator starts");
        let kubeconfig = dir.path().join("kubeconfig");
        emulator
            .write_kubeconfig(&kubeconfig, "emulated")
            .expect("kubeconfig written");
        TestCluster {
            kubeconfig,
            emulator: Some(emulator),
            created: Default::default(),
            _dir: dir,
        }
    }

    pub fn is_real(&self) -> bool {
        self.emulator.is_none()
    }

    /// The emulator, for tests that need one; `None` (and the test returns early) on a real cluster.
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        if self.emulator.is_none() {
            eprintln!("skipped on a real cluster: this test needs the emulator");
        }
        self.emulator.as_ref()
    }

    pub async fn cluster(&self) -> k8s_snap::cluster::Cluster {
        k8s_snap::cluster::Cluster::connect(&k8s_snap::cluster::ConnectOptions {
            kubeconfig: Some(self.kubeconfig.clone()),
            ..Default::default()
        })
        .await
        .expect("connect")
    }

    /// Creates a namespace unique to this test and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{:08x}", fastrand::u32(..));
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        self.post("/api/v1/namespaces", &body).await;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        name
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let c = self.cluster().await;
        let bytes = c
            .request_bytes(
                http::Method::POST,
                path,
                Some(serde_json::to_vec(body).unwrap()),
                Some("application/json"),
            )
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        serde_json::from_slice(&bytes).unwrap()
    }

    pub async fn merge_patch(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let c = self.cluster().await;
        let bytes = c
            .request_bytes(
                http::Method::PATCH,
                path,
                Some(serde_json::to_vec(body).unwrap()),
                Some("application/merge-patch+json"),
            )
            .await
            .unwrap_or_else(|e| panic!("PATCH {path}: {e}"));
        serde_json::from_slice(&bytes).unwrap()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.cluster()
            .await
            .get_json(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

/// A fresh data directory and a way to run the `k8s-snap` binary against it.
pub struct DataDir {
    pub dir: TempDir,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn exit_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failed(self) -> Run {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded:\nstdout: {}",
            self.stdout
        );
        self
    }
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git_dir(&self) -> PathBuf {
        self.dir.path().join("mirror.git")
    }

    /// Runs `k8s-snap --data-dir <dir> [--kubeconfig <kc>] <args>`.
    pub fn run(&self, kubeconfig: Option<&Path>, args: &[&str]) -> Run {
        let mut cmd = self.command(kubeconfig);
        cmd.args(args);
        run(cmd)
    }

    /// `k8s-snap --data-dir <dir> [--kubeconfig <kc>]`, sandboxed, ready for more arguments.
    pub fn command(&self, kubeconfig: Option<&Path>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-snap"));
        cmd.arg("--data-dir").arg(self.path());
        if let Some(kc) = kubeconfig {
            cmd.arg("--kubeconfig").arg(kc);
        }
        cmd.env_remove("KUBECONFIG")
            .env_remove("K8S_SNAP_STORE")
            .env_remove("RUST_LOG");
        sandbox_git_env(&mut cmd, self.path());
        cmd
    }

    /// Runs plain `git --git-dir <mirror> <args>` with a sandboxed config.
    pub fn git(&self, args: &[&str]) -> Run {
        git(&self.git_dir(), args)
    }
}

pub fn run(mut cmd: Command) -> Run {
    let out: Output = cmd.output().expect("spawn");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Plain git on a mirror, with no user/global/system config leaking in.
pub fn git(git_dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(git_dir).args(args);
    sandbox_git_env(&mut cmd, git_dir.parent().unwrap_or(git_dir));
    run(cmd)
}

fn sandbox_git_env(cmd: &mut Command, home: &Path) {
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("GIT_DIR");
}
