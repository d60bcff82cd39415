//! The CRD-driven controller (`k8s-snap controller`): Snapshot and Restore custom resources of
//! `clustersnapshot.rywt.io/v1alpha1` reconciled with kube-runtime, behind a Lease-based
//! leader election, with probes and Prometheus metrics (DESIGN.md §7).
//!
//! Owns: the CR types ([`crd`]), the reconcilers ([`snapshot`], [`restore`]), leader election
//! ([`leader`]), metrics ([`metrics`]) and the calls into the store and restore engines ([`work`]).
//! Must not touch: the store and restore internals (reached only through [`work`]), stdout.

pub mod crd;
pub mod leader;
pub mod metrics;
pub mod restore;
pub mod snapshot;
pub mod target;
pub mod work;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{Controller, controller, watcher};

pub use crd::{
    ObjectstoreConfig, ObjectstoreConfigSpec, Restore, RestoreCrStatus, RestorePreference,
    RestorePreferenceCrSpec, RestoreSpec, SecretKeyRef, Snapshot, SnapshotSpec, SnapshotStatus,
    crds, crds_yaml,
};
pub use metrics::Metrics;

/// Messages of the original controller (users and scripts match on them).
pub mod messages {
    pub const AVAILABLE_UNTIL_PAST: &str = "AvailableUntil is set as past.";
    pub const SNAPSHOT_NOT_COMPLETED: &str = "Snapshot data is not in status 'Completed'";
    pub const STOPPED_WHILE_SNAPSHOT: &str = "Controller stopped while taking the snapshot";
    pub const STOPPED_WHILE_RESTORE: &str = "Controller stopped while restoring the snapshot";
    pub const SNAPSHOT_FILE_NOT_FOUND: &str = "Snapshot file not found";
}

/// Default Snapshot TTL (720h).
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(720 * 3600);
/// Default Restore TTL (168h).
pub const RESTORE_TTL: Duration = Duration::from_secs(168 * 3600);
/// Interval of `--housekeepstore`.
pub const HOUSEKEEP_INTERVAL: Duration = Duration::from_secs(300);
/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "k8s-snap-controller";

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("management cluster: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl ControllerError {
    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> ControllerError {
        ControllerError::Kube {
            what: what.into(),
            source,
        }
    }
}

/// Validated `k8s-snap controller` options.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Overrides the kubeconfig's server URL.
    pub master: Option<String>,
    /// Namespace of the CRs, Secrets and the Lease.
    pub namespace: String,
    pub snapshot_threads: u16,
    pub restore_threads: u16,
    pub housekeep_store: bool,
    pub restore_snapshots: bool,
    pub validate_file_info: bool,
    /// Retries of a failing snapshot stop after this long.
    pub max_retry_elapsed: Duration,
    pub create_bucket: bool,
    pub insecure: bool,
    /// Holds the controller's mirror (`<data-dir>/mirror.git`).
    pub data_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_duration: Duration,
    /// Leader-election identity (default: `$POD_NAME` or the host name, plus the pid).
    pub identity: Option<String>,
    /// File-drop directory (`--watch-dir`, docs/watch.md), served by the leader.
    pub watch_dir: Option<PathBuf>,
}

impl ControllerOptions {
    pub fn new(namespace: impl Into<String>, data_dir: PathBuf) -> ControllerOptions {
        ControllerOptions {
            kubeconfig: None,
            context: None,
            master: None,
            namespace: namespace.into(),
            snapshot_threads: 5,
            restore_threads: 2,
            housekeep_store: true,
            restore_snapshots: true,
            validate_file_info: true,
            max_retry_elapsed: Duration::from_secs(300),
            create_bucket: false,
            insecure: false,
            data_dir,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            leader_election: true,
            lease_duration: Duration::from_secs(15),
            identity: None,
            watch_dir: None,
        }
    }

    pub fn git_dir(&self) -> PathBuf {
        self.data_dir.join("mirror.git")
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Client of the management cluster (where the CRs live).
    pub client: kube::Client,
    /// Configuration of the management cluster, for CRs that name no other cluster.
    pub own_config: kube::Config,
    pub options: ControllerOptions,
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events about the CRs (`events.k8s.io/v1`, see [`warning_event`]).
    pub recorder: kube::runtime::events::Recorder,
}

/// Name the controller's Events are reported under.
pub const EVENT_REPORTER: &str = "k8s-snap-controller";

/// Publishes a `Warning` Event about `obj` (shown by `kubectl describe`). Failing to publish
/// (no RBAC for events, API down) is logged at debug level only: the CR's status already
/// says the same.
pub(crate) async fn warning_event<K>(ctx: &Context, obj: &K, reason: &str, note: &str)
where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::runtime::events::{Event, EventType};
    // An Event note holds at most 1 kB.
    let mut note = note.to_string();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!("publishing an event: {e}");
    }
}

/// Builds the management cluster's configuration from the options.
pub async fn management_config(opts: &ControllerOptions) -> Result<kube::Config, ControllerError> {
    crate::cluster::install_crypto_provider();
    let kc_opts = kube::config::KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let mut config = match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                ControllerError::Config(format!("kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kc_opts)
                .await
                .map_err(|e| {
                    ControllerError::Config(format!("kubeconfig {}: {e}", path.display()))
                })?
        }
        None => match kube::Config::infer().await {
            Ok(c) => c,
            // `--master` alone (the original allowed it): an unauthenticated client.
            Err(_) if opts.master.is_some() => {
                kube::Config::new(http::Uri::from_static("http://localhost"))
            }
            Err(e) => return Err(ControllerError::Config(e.to_string())),
        },
    };
    if let Some(master) = &opts.master {
        config.cluster_url = master
            .parse()
            .map_err(|e| ControllerError::Config(format!("--master {master:?}: {e}")))?;
    }
    Ok(config)
}

/// The leader-election identity of this process.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "k8s-snap".into());
    format!("{host}-{}", std::process::id())
}

/// Runs the controller until `shutdown` resolves (clean exit, Lease released) or leadership
/// is lost (error). `on_listening` receives the bound metrics address.
pub async fn run(
    options: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ControllerError> {
    let config = management_config(&options).await?;
    let client = kube::Client::try_from(config.clone())
        .map_err(|e| ControllerError::Config(format!("building the client: {e}")))?;
    let metrics = Arc::new(Metrics::new());
    let listener = metrics::bind(options.metrics_addr)
        .await
        .map_err(|source| ControllerError::Metrics {
            addr: options.metrics_addr,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ControllerError::Metrics {
            addr: options.metrics_addr,
            source,
        })?;
    on_listening(bound);
    tracing::info!(addr = %bound, "serving /healthz /readyz /metrics");
    let server = tokio::spawn(metrics::serve(listener, metrics.clone()));

    // The CRDs must be installed; everything else waits on them.
    let snapshots: Api<Snapshot> = Api::namespaced(client.clone(), &options.namespace);
    snapshots
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            ControllerError::kube(
                format!(
                    "listing snapshots in namespace {} (are the CRDs installed? kubectl apply -f deploy/crd.yaml)",
                    options.namespace
                ),
                e,
            )
        })?;
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: EVENT_REPORTER.to_string(),
            instance: Some(options.identity.clone().unwrap_or_else(default_identity)),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        own_config: config,
        options: options.clone(),
        metrics: metrics.clone(),
        recorder,
    });
    let result = {
        let elector = options.leader_election.then(|| {
            leader::LeaderElector::new(
                client.clone(),
                &options.namespace,
                LEASE_NAME,
                &options.identity.clone().unwrap_or_else(default_identity),
                options.lease_duration,
            )
        });
        tokio::pin!(shutdown);
        let lead = async {
            if let Some(e) = &elector {
                e.acquire().await;
            }
            metrics.leader.set(1);
            let lost = async {
                match &elector {
                    Some(e) => e.keep_renewing().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = run_controllers(ctx.clone()) => Ok(()),
                lost = lost => Err(ControllerError::Leader(lost)),
            }
        };
        let outcome = tokio::select! {
            r = lead => r,
            () = &mut shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
        };
        if let Some(e) = &elector
            && outcome.is_ok()
        {
            e.release().await;
        }
        outcome
    };
    metrics.leader.set(0);
    server.abort();
    result
}

/// The Snapshot and Restore controllers plus the store jobs, until one stream ends.
async fn run_controllers(ctx: Arc<Context>) {
    let ns = ctx.options.namespace.clone();
    let snapshots: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ns);
    let snap_ctl = Controller::new(snapshots, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.options.snapshot_threads))
        .run(snapshot::reconcile, snapshot::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!("snapshot controller: {e}");
            }
        });
    let restore_ctl = Controller::new(restores, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.options.restore_threads))
        .run(restore::reconcile, restore::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!("restore controller: {e}");
            }
        });
    // File drops (`--watch-dir`) are served by the leader only, like the CRs.
    let file_drops = async {
        let Some(dir) = ctx.options.watch_dir.clone() else {
            return std::future::pending().await;
        };
        let executor = crate::watch::EngineExecutor {
            git_dir: ctx.options.git_dir(),
            default_target: crate::cluster::ConnectOptions {
                kubeconfig: ctx.options.kubeconfig.clone(),
                kubeconfig_text: None,
                context: ctx.options.context.clone(),
            },
            store: None,
            options: crate::restore::RestoreOptions::default(),
        };
        let opts = crate::watch::WatchOptions::new(&dir);
        if let Err(e) = crate::watch::run(opts, Arc::new(executor), std::future::pending()).await {
            tracing::error!("--watch-dir {}: {e}", dir.display());
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = snap_ctl => tracing::warn!("snapshot controller stopped"),
        () = restore_ctl => tracing::warn!("restore controller stopped"),
        () = snapshot::store_jobs(ctx.clone()) => {},
        () = file_drops => {},
    }
}

/// Deletes the CR `name` once `expires_at` has passed (its finalizer, if any, cleans up), or
/// requeues it for that time; `None` waits for a change. Shared by Snapshots
/// (`availableUntil`) and Restores (`preserveUntil`).
pub(crate) async fn expire<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    expires_at: Option<jiff::Timestamp>,
) -> Result<kube::runtime::controller::Action, ControllerError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::runtime::controller::Action;
    let Some(t) = expires_at else {
        return Ok(Action::await_change());
    };
    if t > jiff::Timestamp::now() {
        return Ok(Action::requeue(snapshot::until(t)));
    }
    tracing::info!(%kind, %name, "expired; deleting");
    match api.delete(name, &kube::api::DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(ControllerError::kube(
                format!("deleting expired {kind} {name}"),
                e,
            ));
        }
    }
    Ok(Action::await_change())
}

/// The CR `name` read afresh (the watch cache may lag behind our own status writes); `None`
/// when it is gone or being deleted.
pub(crate) async fn fresh<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
) -> Result<Option<K>, ControllerError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj = api
        .get_opt(name)
        .await
        .map_err(|e| ControllerError::kube(format!("reading {kind} {name}"), e))?;
    Ok(obj.filter(|o| o.meta().deletion_timestamp.is_none()))
}
