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
    /// Paths of the namespaces made by [`TestCluster::namespace`] and the cluster-scoped
    /// objects made by [`TestCluster::post_owned`]: deleted again (last first) on a real
    /// cluster.
    created: std::sync::Mutex<Vec<String>>,
    _dir: TempDir,
}

impl Drop for TestCluster {
    /// On a real cluster, deletes the namespaces (their contents go with them) and
    /// cluster-scoped objects this test made, on a thread of its own so that dropping inside a
    /// runtime is fine.
    fn drop(&mut self) {
        let mut paths =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if self.emulator.is_some() || paths.is_empty() {
            return;
        }
        paths.reverse();
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
                for path in paths {
                    let delete = c.request_bytes(http::Method::DELETE, &path, None, None);
                    if let Err(e) =
                        tokio::time::timeout(std::time::Duration::from_secs(30), delete).await
                    {
                        eprintln!("cleanup of {path}: {e}");
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

    /// The server's minor version, from `/version` (a real server may say `27+`).
    pub async fn server_minor(&self) -> u32 {
        let v = self.get("/version").await;
        let digits: String = v["minor"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect("a minor version")
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
            .push(format!("/api/v1/namespaces/{name}"));
        name
    }

    /// POSTs `body` once (no retry): the created object, or the server's error.
    pub async fn try_post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, kube::Error> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let request = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .unwrap();
        client.request::<serde_json::Value>(request).await
    }

    /// POSTs a cluster-scoped object to `collection` (its name is in `body`) and deletes it
    /// again when this cluster is dropped, on a real cluster.
    pub async fn post_owned(
        &self,
        collection: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let out = self.post(collection, body).await;
        let name = out["metadata"]["name"].as_str().expect("a named object");
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{collection}/{name}"));
        out
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

    /// Whether `path` exists on the cluster (a 404 is `false`, any other error fails the test).
    pub async fn exists(&self, path: &str) -> bool {
        match self
            .cluster()
            .await
            .request_bytes(http::Method::GET, path, None, None)
            .await
        {
            Ok(_) => true,
            Err(e) if e.code() == Some(404) => false,
            Err(e) => panic!("GET {path}: {e}"),
        }
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

/// Restores onto a real target run one at a time: each plans against a target holding none of
/// the others' objects, and its cleanup cannot delete what another is restoring.
static REAL_TARGET_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest wait for deleted objects (terminating namespaces above all) to be gone.
const CLEANUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// Deadline of one cleanup request.
const CLEANUP_REQUEST: std::time::Duration = std::time::Duration::from_secs(30);

/// Deletes from a restore target every object the restores of one test created, when the test
/// ends, passing or failing: the `created` entries of each recorded restore status, in reverse
/// order, Namespaces last, a missing object (404) being fine; then waits (with a deadline) until
/// they are gone. It runs on every target, emulated or real, so that the code that keeps real
/// clusters clean is the code the emulator runs exercise; on a real target it also holds a
/// process-wide lock from its creation to the end of the cleanup, so that restores onto a
/// real cluster never run concurrently.
///
/// Create it right after the target (it borrows it, so it is dropped first) and before the
/// first restore; record every restore's status as soon as it is returned.
pub struct RestoreCleanup<'a> {
    target: &'a TestCluster,
    /// `created` entries recorded so far (content paths, in creation order).
    created: std::sync::Mutex<Vec<String>>,
    /// Directories of `k8s-snap watch` results (`*.status.yaml`), read at cleanup time.
    result_dirs: std::sync::Mutex<Vec<PathBuf>>,
    done: bool,
    /// Dropped after the cleanup ran (fields drop after `Drop::drop`).
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl<'a> RestoreCleanup<'a> {
    /// A cleanup for restores onto `target`; on a real cluster waits for the restores of other
    /// tests onto it to be cleaned up first.
    pub async fn new(target: &'a TestCluster) -> RestoreCleanup<'a> {
        let serial = if target.is_real() {
            Some(REAL_TARGET_SERIAL.lock().await)
        } else {
            None
        };
        RestoreCleanup {
            target,
            created: Default::default(),
            result_dirs: Default::default(),
            done: false,
            _serial: serial,
        }
    }

    /// Records a restore status: `{"created": [...]}` as printed by `restore -o json`, or a
    /// document with that status under `status` (a Restore, a watch result).
    pub fn record(&self, status: &serde_json::Value) {
        let list = status
            .get("created")
            .or_else(|| status.get("status").and_then(|s| s.get("created")));
        let paths = list
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string));
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(paths);
    }

    /// Runs `restore <args> -o json` (in-process) onto this cleanup's target and records what
    /// it created at once: the status it printed (the restore must succeed).
    pub async fn restore_json(&self, data: &DataDir, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["restore"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let run = crate::restore::k8s_snap(data, Some(&self.target.kubeconfig), &all).await;
        self.record_run(&run);
        json_of(&run.ok())
    }

    /// Records what a `restore -o json` run printed (a run that printed no JSON created
    /// nothing it reported).
    pub fn record_run(&self, run: &Run) {
        if let Ok(status) = serde_json::from_str::<serde_json::Value>(&run.stdout) {
            self.record(&status);
        }
    }

    /// Records the results directory of a `k8s-snap watch` run: every `*.status.yaml` in it is
    /// read when the cleanup runs (so restores of a watcher that a failing test left are
    /// cleaned up too). The directory must outlive this cleanup.
    pub fn record_watch_results(&self, dir: &Path) {
        self.result_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_path_buf());
    }

    /// Runs the cleanup now and returns the recorded paths still present on the target
    /// afterwards (empty when all is gone).
    pub async fn finish(mut self) -> Vec<String> {
        self.done = true;
        let paths = self.paths();
        delete_created(&self.target.kubeconfig, paths).await
    }

    /// Every recorded `created` path, watch results included.
    fn paths(&self) -> Vec<String> {
        let dirs = std::mem::take(&mut *self.result_dirs.lock().unwrap_or_else(|e| e.into_inner()));
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".status.yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if let Ok(v) = k8s_snap::tree::from_yaml(&text) {
                    self.record(&v);
                }
            }
        }
        let mut paths =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        // Once each, keeping the first occurrence (creation order).
        let mut seen = std::collections::HashSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        paths
    }
}

impl Drop for RestoreCleanup<'_> {
    /// The cleanup of a test that did not call [`RestoreCleanup::finish`] (a failing one above
    /// all), on a thread of its own so that dropping inside a runtime is fine.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let paths = self.paths();
        if paths.is_empty() {
            return;
        }
        let kubeconfig = self.target.kubeconfig.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("cleanup: no runtime; left on the target: {paths:?}");
                return;
            };
            let left = rt.block_on(delete_created(&kubeconfig, paths));
            if !left.is_empty() {
                eprintln!("cleanup: still on the target after the deadline: {left:?}");
            }
        });
        let _ = cleanup.join();
    }
}

/// Deletes `created` (content paths of a snapshot, as a restore status lists them) from the
/// cluster of `kubeconfig` and waits until they are gone; returns those still present (or not
/// checkable) at the deadline. An object converted on restore (`batch/v1beta1` → `batch/v1`,
/// `extensions` → `networking.k8s.io`) is deleted at a version the target serves.
async fn delete_created(kubeconfig: &Path, created: Vec<String>) -> Vec<String> {
    use k8s_snap::tree::ContentPath;
    if created.is_empty() {
        return Vec::new();
    }
    let options = k8s_snap::cluster::ConnectOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..Default::default()
    };
    let connect = k8s_snap::cluster::Cluster::connect(&options);
    let cluster = match tokio::time::timeout(CLEANUP_REQUEST, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("cleanup: cannot connect to the target: {e}");
            return created;
        }
        Err(_) => {
            eprintln!("cleanup: the target did not answer in {CLEANUP_REQUEST:?}");
            return created;
        }
    };
    let discovered = match tokio::time::timeout(
        CLEANUP_REQUEST,
        k8s_snap::discovery::discover(&cluster, k8s_snap::discovery::Versions::All, 4),
    )
    .await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            eprintln!("cleanup: discovery of the target failed: {e}");
            return created;
        }
        Err(_) => {
            eprintln!("cleanup: discovery of the target took over {CLEANUP_REQUEST:?}");
            return created;
        }
    };
    // Where each object is on the target; objects whose kind the target does not serve (any
    // more) are not there to delete.
    let mut targets: Vec<(String, String)> = Vec::new();
    for p in &created {
        let Ok(path) = ContentPath::parse(p) else {
            eprintln!("cleanup: not a content path: {p}");
            continue;
        };
        let served = discovered
            .find(path.group(), path.version(), path.resource())
            .or_else(|| {
                let moved = k8s_snap::discovery::DEPRECATED_GROUPS.contains(&path.group());
                discovered
                    .resources
                    .iter()
                    .filter(|r| {
                        r.resource == path.resource()
                            && (r.group == path.group() || moved)
                            && r.namespaced == path.namespace().is_some()
                    })
                    .max_by_key(|r| {
                        (
                            r.group == path.group(),
                            k8s_snap::discovery::version_priority(&r.version),
                        )
                    })
            });
        match served {
            Some(r) => targets.push((p.clone(), r.object_path(path.namespace(), path.name()))),
            None => eprintln!("cleanup: the target does not serve {p} any more"),
        }
    }
    // Reverse creation order (custom resources before their definitions, contents before
    // their namespaces), Namespaces last.
    targets.reverse();
    targets
        .sort_by_key(|(_, t)| t.starts_with("/api/v1/namespaces/") && t.matches('/').count() == 4);
    let mut failed = Vec::new();
    for (recorded, path) in &targets {
        let with_policy = format!("{path}?propagationPolicy=Background");
        let delete = cluster.request_bytes(http::Method::DELETE, &with_policy, None, None);
        match tokio::time::timeout(CLEANUP_REQUEST, delete).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.code() == Some(404) => {}
            Ok(Err(e)) => {
                eprintln!("cleanup: DELETE {path}: {e}");
                failed.push(recorded.clone());
            }
            Err(_) => {
                eprintln!("cleanup: DELETE {path}: no answer in {CLEANUP_REQUEST:?}");
                failed.push(recorded.clone());
            }
        }
    }
    // Gone means 404 (a Namespace terminates, its contents go first). Finalizers the restore
    // carried over from the source (`kubernetes.io/pvc-protection`, a custom resource's
    // `example.com/cleanup` that no controller on the target handles) are removed from
    // objects being deleted: they are the test's own objects, and nothing else would.
    let started = std::time::Instant::now();
    let mut pending: Vec<&(String, String)> = targets
        .iter()
        .filter(|(recorded, _)| !failed.contains(recorded))
        .collect();
    loop {
        let mut still = Vec::new();
        for t in pending {
            let get = cluster.request_bytes(http::Method::GET, &t.1, None, None);
            match tokio::time::timeout(CLEANUP_REQUEST, get).await {
                Ok(Err(e)) if e.code() == Some(404) => {}
                Ok(Ok(body)) => {
                    still.push(t);
                    let live: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let meta = &live["metadata"];
                    let finalized = meta["finalizers"].as_array().is_some_and(|f| !f.is_empty());
                    if finalized && !meta["deletionTimestamp"].is_null() {
                        let patch = cluster.request_bytes(
                            http::Method::PATCH,
                            &t.1,
                            Some(br#"{"metadata":{"finalizers":null}}"#.to_vec()),
                            Some("application/merge-patch+json"),
                        );
                        match tokio::time::timeout(CLEANUP_REQUEST, patch).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) if e.code() == Some(404) => {}
                            Ok(Err(e)) => eprintln!("cleanup: finalizers of {}: {e}", t.1),
                            Err(_) => eprintln!("cleanup: finalizers of {}: no answer", t.1),
                        }
                    }
                }
                _ => still.push(t),
            }
        }
        pending = still;
        if pending.is_empty() || started.elapsed() > CLEANUP_DEADLINE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    failed.extend(pending.into_iter().map(|(recorded, _)| recorded.clone()));
    failed
}

/// A RestorePreference leaving out the system namespaces and the API server's own Service and
/// Endpoints (what every cluster has): plans and diffs between two clusters compare the rest.
pub const SYSTEM_EXCLUDED_PREFERENCE: &str = "apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: exclude-kube-system
spec:
  excludeNamespaces: [kube-system, kube-public, kube-node-lease]
  excludeApiPathes:
  - /api/v1/namespaces/default/services/kubernetes
  - /api/v1/namespaces/default/endpoints/kubernetes
";

/// The `path` of every item of a JSON array (`items`) whose `field` is `value`.
pub fn paths_where(
    items: &serde_json::Value,
    field: &str,
    value: &str,
) -> std::collections::BTreeSet<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i[field] == value)
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect()
}

/// The JSON a command printed with `-o json` (panics with its output when it is not JSON).
pub fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr))
}

/// The content paths a restore's JSON status lists as `created`.
pub fn created_paths(status: &serde_json::Value) -> std::collections::BTreeSet<String> {
    status["created"]
        .as_array()
        .unwrap_or_else(|| panic!("no `created` list: {status}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// `snapshot <name> --no-push --include-namespaces <ns>` (and `extra` flags) of the cluster
/// `kubeconfig` reaches, into `data` (in-process; it must succeed).
pub async fn snapshot_namespace(
    data: &DataDir,
    kubeconfig: &Path,
    name: &str,
    ns: &str,
    extra: &[&str],
) {
    let mut args = vec!["snapshot", name, "--no-push", "--include-namespaces", ns];
    args.extend_from_slice(extra);
    crate::restore::k8s_snap(data, Some(kubeconfig), &args)
        .await
        .ok();
}

/// `plan <args> -o json` against the cluster `kubeconfig` reaches (in-process; it must
/// succeed): the plan.
pub async fn plan_json(data: &DataDir, kubeconfig: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    json_of(
        &crate::restore::k8s_snap(data, Some(kubeconfig), &all)
            .await
            .ok(),
    )
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound,
/// never listening, so no other test (or emulator) can be given it meanwhile — unlike a port
/// taken from a listener that is closed again.
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind");
    let port = socket
        .local_addr()
        .expect("local address")
        .as_socket()
        .expect("an IP address")
        .port();
    (socket, port)
}
