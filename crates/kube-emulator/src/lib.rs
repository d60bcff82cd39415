//! An in-process emulator of the Kubernetes API server, for tests, benchmarks and demos.
//!
//! It serves plain HTTP (JSON only) that both the `kube` crate and the real `kubectl` accept:
//! discovery, generic storage with history (lists at old resourceVersions, watches), CRDs,
//! and the cluster behaviours restores rely on. See the crate README for the differences
//! from a real server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_emulator::Error> {
//! use kube_emulator::{Emulator, Fixture};
//! let emu = Emulator::builder().fixture(Fixture::Empty).start().await?;
//! let client = emu.client().await;
//! # drop(client); emu.shutdown().await; Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod admission;
mod aggregation;
mod api;
mod catalog;
mod convert;
mod events;
mod faults;
mod fields;
pub mod fixtures;
mod jobs;
mod meta;
mod profiles;
mod protobuf;
mod schema;
mod selector;
mod server;
mod store;
mod webhooks;
mod workloads;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use faults::{FaultRule, Faults};
pub use profiles::ServerVersion;

/// Errors of building or starting an emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad fixture name (`empty`, `realistic`, `scale:N`).
    #[error("unknown fixture {0:?}: expected empty, realistic or scale:N")]
    Fixture(String),
    /// A fixture object that cannot be stored.
    #[error("fixture: {0}")]
    Seed(String),
    /// A bad fault rule.
    #[error("fault rule {0}")]
    Fault(String),
    /// An unknown `--server-version`.
    #[error("unknown server version {0:?}: expected 1.19, 1.22, 1.25 or latest")]
    ServerVersion(String),
    /// A bad service CIDR.
    #[error("{0}")]
    Cidr(String),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The objects an emulator starts with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fixture {
    /// A freshly installed cluster (system namespaces, `kubernetes` Service, RBAC, a node).
    Empty,
    /// `Empty` plus `fixtures::realistic::objects()`.
    Realistic,
    /// `Empty` plus `fixtures::scale::objects(n)`.
    Scale(usize),
    /// `Empty` plus these objects.
    Objects(Vec<Value>),
}

impl std::str::FromStr for Fixture {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "empty" => Ok(Fixture::Empty),
            "realistic" => Ok(Fixture::Realistic),
            _ => s
                .strip_prefix("scale:")
                .and_then(|n| n.parse().ok())
                .map(Fixture::Scale)
                .ok_or_else(|| Error::Fixture(s.to_string())),
        }
    }
}

/// Entry point: `Emulator::builder()`.
pub struct Emulator;

impl Emulator {
    /// A builder with the defaults (see [`EmulatorBuilder`]).
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Configuration of an emulator before it starts.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    fixture: Fixture,
    token: Option<String>,
    window: u64,
    crd_delay: Duration,
    service_cidr: String,
    legacy_tokens: bool,
    listen: SocketAddr,
    faults: Vec<FaultRule>,
    server_version: ServerVersion,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            fixture: Fixture::Empty,
            token: None,
            window: 100_000,
            crd_delay: Duration::from_millis(20),
            service_cidr: "10.96.0.0/16".into(),
            legacy_tokens: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            faults: Vec::new(),
            server_version: ServerVersion::from_env(),
        }
    }
}

impl EmulatorBuilder {
    /// The objects to start with (default `Empty`).
    pub fn fixture(mut self, f: Fixture) -> Self {
        self.fixture = f;
        self
    }

    /// Require `Authorization: Bearer <t>` on every request (401 otherwise).
    pub fn token(mut self, t: impl Into<String>) -> Self {
        self.token = Some(t.into());
        self
    }

    /// How many revisions of history are kept for lists/watches at a resourceVersion
    /// (default 100,000); older ones answer 410 Gone.
    pub fn compaction_window(mut self, n_revisions: u64) -> Self {
        self.window = n_revisions.max(1);
        self
    }

    /// Delay between creating a CRD and it becoming `Established` (default 20 ms).
    pub fn crd_establish_delay(mut self, d: Duration) -> Self {
        self.crd_delay = d;
        self
    }

    /// Service cluster IP range (default `10.96.0.0/16`).
    pub fn service_cidr(mut self, cidr: &str) -> Self {
        self.service_cidr = cidr.to_string();
        self
    }

    /// The Kubernetes release to play: its groups, versions, resources and preferred versions;
    /// before 1.24, token Secrets for new ServiceAccounts. Default: `$KUBE_EMULATOR_SERVER_VERSION`
    /// when set (so a whole test suite runs on one profile), else `latest`.
    pub fn server_version(mut self, v: ServerVersion) -> Self {
        self.server_version = v;
        self
    }

    /// The release this builder plays.
    pub fn get_server_version(&self) -> ServerVersion {
        self.server_version
    }

    /// 1.19-style clusters: every new ServiceAccount gets a token Secret.
    pub fn legacy_token_secrets(mut self, on: bool) -> Self {
        self.legacy_tokens = on;
        self
    }

    /// Listen address (default `127.0.0.1:0`, an ephemeral port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// A fault rule active from the start.
    pub fn fault(mut self, rule: FaultRule) -> Self {
        self.faults.push(rule);
        self
    }

    /// Seed the fixture, bind and serve in the background.
    pub async fn start(self) -> Result<EmulatorHandle, Error> {
        let (cidr_base, cidr_size) = api::parse_cidr(&self.service_cidr).map_err(Error::Cidr)?;
        let config = api::Config {
            crd_delay: self.crd_delay,
            cidr_base,
            cidr_size,
            legacy_tokens: self.legacy_tokens || self.server_version.legacy_token_secrets(),
            server_version: self.server_version,
        };
        let mut state = api::State::new(config, self.window);
        let first_ip = Ipv4Addr::from(cidr_base + 1).to_string();
        let mut objects = fixtures::empty::objects(&first_ip);
        match self.fixture {
            Fixture::Empty => {}
            Fixture::Realistic => objects.extend(fixtures::realistic::objects()),
            Fixture::Scale(n) => objects.extend(fixtures::scale::objects(n)),
            Fixture::Objects(o) => objects.extend(o),
        }
        seed(&mut state, objects)?;
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: self.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: self.listen,
            source,
        })?;
        let faults = Faults::default();
        for f in self.faults {
            faults.add(f);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(server::Shared {
            state: Mutex::new(state),
            faults: faults.clone(),
            shutdown: stop_rx.clone(),
            token: self.token.clone(),
            crd_delay: self.crd_delay,
            server_addr: addr.to_string(),
        });
        let app = server::router(shared.clone());
        let mut stop = stop_rx;
        let task = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "kube-emulator server stopped");
            }
        });
        tracing::debug!(%addr, "kube-emulator listening");
        Ok(EmulatorHandle {
            addr,
            token: self.token,
            shared,
            faults,
            stop: stop_tx,
            task,
        })
    }
}

/// Seed objects: CRDs first (established at once), then namespaces, then the rest.
fn seed(state: &mut api::State, objects: Vec<Value>) -> Result<(), Error> {
    let rank = |o: &Value| match (o["apiVersion"].as_str(), o["kind"].as_str()) {
        (Some("apiextensions.k8s.io/v1"), Some("CustomResourceDefinition")) => 0,
        (Some("v1"), Some("Namespace")) => 1,
        _ => 2,
    };
    let mut objects = objects;
    objects.sort_by_key(|o| rank(o));
    for o in objects {
        state.seed(o).map_err(Error::Seed)?;
    }
    state.after.clear();
    state.store.compact_all();
    Ok(())
}

/// A running emulator. Dropping it without `shutdown` leaves the server running until the
/// runtime stops.
pub struct EmulatorHandle {
    addr: SocketAddr,
    token: Option<String>,
    shared: Arc<server::Shared>,
    faults: Faults,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client configuration for this emulator (token included when set).
    #[allow(
        clippy::expect_used,
        reason = "an invariant: a socket address always forms a URI"
    )]
    pub fn kube_config(&self) -> kube::Config {
        let uri: axum::http::Uri = self
            .url()
            .parse()
            .expect("a socket address always forms a valid URI");
        let mut c = kube::Config::new(uri);
        c.default_namespace = "default".into();
        if let Some(t) = &self.token {
            c.auth_info.token = Some(t.as_str().into());
        }
        c
    }

    /// A ready `kube::Client`.
    #[allow(
        clippy::expect_used,
        reason = "an invariant: a plain-http configuration is always valid"
    )]
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config())
            .expect("a plain-http client configuration is always valid")
    }

    /// A kubeconfig whose cluster, context and user are all named `name`.
    pub fn kubeconfig_yaml(&self, name: &str) -> String {
        let user = match &self.token {
            Some(t) => format!("    token: {t}\n"),
            None => "    {}\n".to_string(),
        };
        let user = if self.token.is_some() {
            format!("  user:\n{user}")
        } else {
            "  user: {}\n".to_string()
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\ncurrent-context: {name}\nusers:\n- name: {name}\n{user}preferences: {{}}\n",
            url = self.url()
        )
    }

    /// Write `kubeconfig_yaml(name)` to `path`.
    pub fn write_kubeconfig(&self, path: &Path, name: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(name))
    }

    /// The fault rules of this emulator.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The Kubernetes release this emulator plays.
    pub fn server_version(&self) -> ServerVersion {
        self.shared.lock().config.server_version
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.rv
    }

    /// Forget all history up to now (lists and watches at older revisions get 410).
    pub fn compact(&self) {
        self.shared.lock().store.compact_all();
    }

    /// Stop serving (open watches end) and wait for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
