//! Store test infrastructure: a real moto S3 server process on a free loopback port (killed on
//! drop), or real S3 from `K8S_SNAP_TEST_S3_ENDPOINT`/`K8S_SNAP_TEST_S3_BUCKET`; local directory
//! stores; and running the `k8s-snap` binary against either.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_snap::store::{LocalDirStore, ObjectStore, S3Options, S3Store, Secret};
use tempfile::TempDir;

use crate::support::{DataDir, Run, run};

/// Real S3 endpoint for the store tests (with `K8S_SNAP_TEST_S3_BUCKET` and AWS credentials).
pub const REAL_S3_ENDPOINT: &str = "K8S_SNAP_TEST_S3_ENDPOINT";
pub const REAL_S3_BUCKET: &str = "K8S_SNAP_TEST_S3_BUCKET";

/// The secret key given to moto: it must never appear in any output, manifest or tree.
pub const MOTO_SECRET: &str = "Zk8sSnapTestSecretKey0123456789abcdefXYZ";
const MOTO_KEY_ID: &str = "AKIAK8SSNAPTESTKEYID";

/// A moto S3 server process, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a port the OS picks (`-p 0`) and reads the port from what moto prints, so
    /// that parallel test runs never race for one "free" port.
    pub fn start() -> Moto {
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 -m moto.server (install with: python3 -m pip install 'moto[server]')");
        let stderr = child.stderr.take().expect("moto stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the port from " * Running on http://127.0.0.1:<port>", then keeps draining
        // moto's request log so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .split("Running on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.trim().parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("moto did not say which port it listens on within 60s");
            }
        };
        let moto = Moto { child, port };
        let start = Instant::now();
        loop {
            if let Ok((status, _)) = moto.http("GET", "/", b"")
                && status < 500
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One raw HTTP/1.1 request (moto does not check signatures).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, buf))
    }

    /// Creates `bucket`, retrying transient connection errors for up to 30s (moto is a
    /// single-threaded development server and a loaded machine can make it slow to accept).
    pub fn create_bucket(&self, bucket: &str) {
        let start = Instant::now();
        let (status, body) = loop {
            match self.http("PUT", &format!("/{bucket}"), b"") {
                Ok(answer) => break answer,
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    eprintln!("create bucket {bucket}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("create bucket {bucket} on port {}: {e}", self.port),
            }
        };
        assert!(
            status == 200 || status == 409,
            "create bucket: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which backend a store test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    S3,
    File,
}

/// A store for one test, and how the binary reaches it.
pub struct TestStore {
    pub backend: Backend,
    /// The `--store` URL.
    pub url: String,
    /// Env vars for the binary (endpoint, path style, credentials).
    pub env: Vec<(String, String)>,
    /// The secret that must never leak (S3 only).
    pub secret: Option<String>,
    pub bucket: String,
    /// Key prefix inside the bucket, or the directory of a file store.
    pub prefix: String,
    pub dir: Option<PathBuf>,
    s3: S3Options,
    _moto: Option<Moto>,
    _tmp: Option<TempDir>,
}

impl TestStore {
    pub async fn new(backend: Backend) -> TestStore {
        match backend {
            Backend::S3 => Self::s3().await,
            Backend::File => Self::file(),
        }
    }

    /// A local directory store at a `file://` URL.
    pub fn file() -> TestStore {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        TestStore {
            backend: Backend::File,
            url: format!("file://{}", dir.display()),
            env: Vec::new(),
            secret: None,
            bucket: String::new(),
            prefix: String::new(),
            dir: Some(dir),
            s3: S3Options::default(),
            _moto: None,
            _tmp: Some(tmp),
        }
    }

    /// moto on loopback (bucket `snaps`), or real S3 from the environment; a unique prefix.
    pub async fn s3() -> TestStore {
        let prefix = format!("team-{:08x}", fastrand::u32(..));
        if let (Some(endpoint), Some(bucket)) = (
            std::env::var(REAL_S3_ENDPOINT)
                .ok()
                .filter(|v| !v.is_empty()),
            std::env::var(REAL_S3_BUCKET).ok().filter(|v| !v.is_empty()),
        ) {
            let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok();
            let env = vec![("K8S_SNAP_S3_ENDPOINT".into(), endpoint.clone())];
            return TestStore {
                backend: Backend::S3,
                url: format!("s3://{bucket}/{prefix}"),
                env,
                secret,
                bucket,
                prefix,
                dir: None,
                s3: S3Options {
                    endpoint: Some(endpoint),
                    ..Default::default()
                },
                _moto: None,
                _tmp: None,
            };
        }
        let moto = tokio::task::spawn_blocking(Moto::start)
            .await
            .expect("moto starts");
        moto.create_bucket("snaps");
        let endpoint = moto.endpoint();
        let env = vec![
            ("K8S_SNAP_S3_ENDPOINT".into(), endpoint.clone()),
            ("K8S_SNAP_S3_PATH_STYLE".into(), "true".into()),
            ("K8S_SNAP_S3_REGION".into(), "us-east-1".into()),
            ("K8S_SNAP_S3_ACCESS_KEY_ID".into(), MOTO_KEY_ID.into()),
            ("K8S_SNAP_S3_SECRET_ACCESS_KEY".into(), MOTO_SECRET.into()),
        ];
        TestStore {
            backend: Backend::S3,
            url: format!("s3://snaps/{prefix}"),
            env,
            secret: Some(MOTO_SECRET.into()),
            bucket: "snaps".into(),
            prefix,
            dir: None,
            s3: S3Options {
                endpoint: Some(endpoint),
                region: Some("us-east-1".into()),
                path_style: true,
                insecure: false,
                access_key_id: Some(Secret::new(MOTO_KEY_ID)),
                secret_access_key: Some(Secret::new(MOTO_SECRET)),
            },
            _moto: Some(moto),
            _tmp: None,
        }
    }

    /// The store the binary uses, opened directly (keys relative to the prefix).
    pub async fn open(&self) -> Box<dyn ObjectStore> {
        match self.backend {
            Backend::File => Box::new(LocalDirStore::new(self.dir.clone().expect("dir"))),
            Backend::S3 => Box::new(
                S3Store::connect(&self.bucket, &self.prefix, &self.s3)
                    .await
                    .expect("S3 client"),
            ),
        }
    }

    /// The bucket root (S3) or the store directory (file), to check the key layout.
    pub async fn open_root(&self) -> (Box<dyn ObjectStore>, String) {
        match self.backend {
            Backend::File => (self.open().await, String::new()),
            Backend::S3 => (
                Box::new(
                    S3Store::connect(&self.bucket, "", &self.s3)
                        .await
                        .expect("S3 client"),
                ),
                format!("{}/", self.prefix),
            ),
        }
    }

    fn command(&self, data: &DataDir, kubeconfig: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-snap"));
        cmd.arg("--data-dir").arg(data.path());
        if let Some(kc) = kubeconfig {
            cmd.arg("--kubeconfig").arg(kc);
        }
        if !args.contains(&"--store") {
            cmd.arg("--store").arg(&self.url);
        }
        cmd.args(args)
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG")
            .env_remove("K8S_SNAP_STORE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", data.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `k8s-snap --data-dir <data> --store <url> <args>` with the store's env.
    pub fn run(&self, data: &DataDir, kubeconfig: Option<&Path>, args: &[&str]) -> Run {
        let r = run(self.command(data, kubeconfig, args));
        self.assert_no_secret(&r.stdout, "stdout");
        self.assert_no_secret(&r.stderr, "stderr");
        r
    }

    /// Same as [`TestStore::run`] with extra env vars.
    pub fn run_env(
        &self,
        data: &DataDir,
        kubeconfig: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let mut cmd = self.command(data, kubeconfig, args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let r = run(cmd);
        self.assert_no_secret(&r.stdout, "stdout");
        self.assert_no_secret(&r.stderr, "stderr");
        r
    }

    /// Starts the binary without waiting (concurrency tests).
    pub fn spawn(&self, data: &DataDir, args: &[&str]) -> Child {
        self.command(data, None, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn k8s-snap")
    }

    #[track_caller]
    pub fn assert_no_secret(&self, text: &str, what: &str) {
        if let Some(s) = &self.secret {
            assert!(
                !text.contains(s.as_str()),
                "the S3 secret leaked into {what}"
            );
        }
    }
}
