//! The CRD-driven controller (`k8s-snap controller`): Snapshot and Restore custom resources of
//! `clustersnapshot.rywt.io/v1alpha1` reconciled with kube-runtime, behind a Lease-based
//! leader election, with probes and Prometheus metrics (docs/design.md §7).
//!
//! Owns: the CR types ([`crd`], [`schedule_crd`]), the reconcilers ([`snapshot`], [`restore`],
//! [`schedule`]), leader election
//! ([`leader`]), metrics ([`metrics`]) and the calls into the store and restore engines ([`work`]).
//! Must not touch: the store and restore internals (reached only through [`work`]), stdout.

pub mod crd;
pub mod encryption;
mod file_drops;
pub mod import;
pub mod leader;
pub mod metrics;
pub mod restore;
pub mod schedule;
pub mod schedule_crd;
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
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{Controller, controller, watcher};

pub use crd::{
    ObjectstoreConfig, ObjectstoreConfigSpec, Restore, RestoreCrStatus, RestorePreference,
    RestorePreferenceCrSpec, RestoreSpec, SecretKeyRef, Snapshot, SnapshotSpec, SnapshotStatus,
    crds, crds_yaml,
};
pub use metrics::Metrics;

/// Messages of the original controller (users and scripts match on them).
pub mod messages {
    pub(crate) const AVAILABLE_UNTIL_PAST: &str = "AvailableUntil is set as past.";
    pub(crate) const SNAPSHOT_NOT_COMPLETED: &str = "Snapshot data is not in status 'Completed'";
    pub(crate) const STOPPED_WHILE_SNAPSHOT: &str = "Controller stopped while taking the snapshot";
    pub(crate) const STOPPED_WHILE_RESTORE: &str =
        "Controller stopped while restoring the snapshot";
    pub(crate) const SNAPSHOT_FILE_NOT_FOUND: &str = "Snapshot file not found";
}

/// Default Snapshot TTL (720h).
pub(crate) const SNAPSHOT_TTL: Duration = Duration::from_secs(720 * 3600);
/// Default Restore TTL (168h).
pub(crate) const RESTORE_TTL: Duration = Duration::from_secs(168 * 3600);
/// Interval of `--housekeepstore`.
pub(crate) const HOUSEKEEP_INTERVAL: Duration = Duration::from_secs(300);
/// Name of the leader-election Lease.
pub(crate) const LEASE_NAME: &str = "k8s-snap-controller";

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The management cluster's configuration cannot be loaded.
    #[error("management cluster: {0}")]
    Config(String),
    /// A Kubernetes API call of the controller failed.
    #[error("{what}: {}", kube_error_line(.source))]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The management cluster refused a status write (e.g. 422: the status does not match
    /// the installed CRD's schema).
    #[error("status write for {kind} {namespace}/{name} {}", kube_error_line(.source))]
    StatusWrite {
        /// The resource kind (e.g. "Snapshot").
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Leader election failed.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// The metrics endpoint cannot be served.
    #[error("metrics address {addr}: {source}")]
    Metrics {
        /// The address it was to listen on.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Something asked of the controller that it does not support (not constructed today).
    #[error("{0}")]
    Unsupported(String),
}

/// One line for a client error: the server's message, and for a 422 each refused field in
/// short form (`status.reason must be a string, got null`) — never kube's debug dump of the
/// whole Status.
pub(crate) fn kube_error_line(e: &kube::Error) -> String {
    let kube::Error::Api(status) = e else {
        return e.to_string();
    };
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| short_cause(&c.field, &c.message))
        .collect();
    if status.code == 422 && !causes.is_empty() {
        return format!("refused (422 Invalid): {}", causes.join("; "));
    }
    let message = if status.message.is_empty() {
        "no message"
    } else {
        status.message.as_str()
    };
    format!("{message} ({} {})", status.code, status.reason)
}

/// `status.reason must be a string, got null` from a real server's
/// `Invalid value: "null": status.reason in body must be of type string: "null"`.
fn short_cause(field: &str, message: &str) -> String {
    if let Some((_, rest)) = message.split_once(" must be of type ")
        && let Some((want, got)) = rest.split_once(": ")
    {
        let article = if want.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return format!(
            "{field} must be {article} {want}, got {}",
            got.trim_matches('"')
        );
    }
    if field.is_empty() {
        message.to_string()
    } else {
        format!("{field}: {message}")
    }
}

impl ControllerError {
    pub(crate) fn kube(what: impl Into<String>, source: kube::Error) -> ControllerError {
        ControllerError::Kube {
            what: what.into(),
            source,
        }
    }

    /// The `reason` of the Warning Event that reports this error on its object.
    pub(crate) fn event_reason(&self) -> &'static str {
        match self {
            ControllerError::StatusWrite { .. } => "StatusWriteRefused",
            _ => "ReconcileError",
        }
    }
}

/// The field manager of the controller's server-side applies.
pub(crate) const FIELD_MANAGER: &str = "k8s-snap-controller";

/// Writes `status` to the status subresource of `name` by server-side apply (the controller
/// owns the whole status; fields left unset are omitted, never sent as `null`).
pub(crate) async fn patch_status<K, S>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    status: &S,
) -> Result<(), ControllerError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let patch = kube::api::Patch::Apply(serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    }));
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &patch)
        .await
        .map_err(|source| ControllerError::StatusWrite {
            kind,
            namespace: api.namespace().unwrap_or_default().to_string(),
            name: name.to_string(),
            source,
        })?;
    Ok(())
}

/// Validated `k8s-snap controller` options.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Kubeconfig file of the management cluster (default: `KUBECONFIG`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current one).
    pub context: Option<String>,
    /// Overrides the kubeconfig's server URL.
    pub master: Option<String>,
    /// Namespace of the CRs, Secrets and the Lease.
    pub namespace: String,
    /// Snapshots run at once (default 5).
    pub snapshot_threads: u16,
    /// Restores run at once (default 2).
    pub restore_threads: u16,
    /// Check and clean up the object store periodically (`--housekeepstore`, default true).
    pub housekeep_store: bool,
    /// Recreate Snapshot resources from the object store on start (`--restoresnapshots`, default true).
    pub restore_snapshots: bool,
    /// Validate the sizes of the store's files when housekeeping (`--validatefileinfo`, default true).
    pub validate_file_info: bool,
    /// Retries of a failing snapshot stop after this long.
    pub max_retry_elapsed: Duration,
    /// Create the bucket when it does not exist (default false).
    pub create_bucket: bool,
    /// Accept plain http and unverified TLS object-store endpoints (default false).
    pub insecure: bool,
    /// Holds the controller's mirror (`<data-dir>/mirror.git`).
    pub data_dir: PathBuf,
    /// Address of the metrics endpoint (default `0.0.0.0:8080`).
    pub metrics_addr: SocketAddr,
    /// Run only while holding the Lease (default true).
    pub leader_election: bool,
    /// How long a Lease is valid without renewal (default 15 s).
    pub lease_duration: Duration,
    /// Leader-election identity (default: `$POD_NAME` or the host name, plus the pid).
    pub identity: Option<String>,
    /// File-drop directory (`--watch-dir`, docs/watch.md), served by the leader.
    pub watch_dir: Option<PathBuf>,
    /// Open the sealed values of file-drop restores (`--watch-identity-file`).
    pub watch_identities: Option<Arc<crate::crypt::Identities>>,
    /// How long in-flight runs may go on after shutdown is asked for.
    pub shutdown_grace_period: Duration,
    /// The time SnapshotSchedules run by (tests inject a faster one).
    pub clock: schedule::SharedClock,
}

impl ControllerOptions {
    /// Options with the original's defaults for CRs in `namespace`, keeping the mirror in `data_dir`.
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
            watch_identities: None,
            shutdown_grace_period: Duration::from_secs(25),
            clock: Arc::new(schedule::SystemClock),
        }
    }

    /// The controller's mirror: `<data_dir>/mirror.git`.
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
    /// The controller's options.
    pub options: ControllerOptions,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive reconcile failures per object (backoff, one log line per distinct error).
    pub failures: Failures,
    /// Publishes Events (`kubectl describe`) on the CRs.
    pub recorder: Recorder,
    /// Snapshots and restores being run by this process (`snapshot a-001`): marked Failed if
    /// they are still running when the shutdown grace period ends.
    pub in_flight: InFlight,
}

/// The runs of this process, so that a shutdown can tell which CRs it interrupts.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::BTreeSet<(&'static str, String)>>);

impl InFlight {
    /// Marks `kind`/`name` running until the guard is dropped.
    pub(crate) fn start(&self, kind: &'static str, name: &str) -> InFlightGuard<'_> {
        let key = (kind, name.to_string());
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        InFlightGuard { set: self, key }
    }

    fn take_all(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }
}

/// Removes its run from [`InFlight`] when dropped.
pub(crate) struct InFlightGuard<'a> {
    set: &'a InFlight,
    key: (&'static str, String),
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Marks the runs still in flight at the end of the shutdown grace period Failed, with the
/// original's reason, so that no CR is left `InProgress`.
async fn fail_interrupted(ctx: &Context) {
    use crate::restore::status::Phase;
    for (kind, name) in ctx.in_flight.take_all() {
        let ns = &ctx.options.namespace;
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let failed = |reason: &str| {
            serde_json::json!([{
                "type": crd::condition::SUCCEEDED, "status": "False", "reason": "Failed",
                "message": reason, "lastTransitionTime": now,
            }, {
                "type": crd::condition::READY, "status": "False", "reason": "Failed",
                "message": reason, "lastTransitionTime": now,
            }])
        };
        let result = match kind {
            "snapshot" => {
                let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), ns);
                let reason = messages::STOPPED_WHILE_SNAPSHOT;
                let status = serde_json::json!({"phase": Phase::Failed, "reason": reason,
                    "conditions": failed(reason)});
                patch_status(&api, "snapshot", &name, &status).await
            }
            _ => {
                let api: Api<Restore> = Api::namespaced(ctx.client.clone(), ns);
                let reason = messages::STOPPED_WHILE_RESTORE;
                let status = serde_json::json!({"phase": Phase::Failed, "reason": reason,
                    "conditions": failed(reason)});
                patch_status(&api, "restore", &name, &status).await
            }
        };
        match result {
            Ok(()) => {
                tracing::warn!("{kind} {ns}/{name}: interrupted by the shutdown; marked Failed")
            }
            Err(e) => tracing::warn!("{kind} {ns}/{name}: interrupted by the shutdown: {e}"),
        }
    }
}

impl Context {
    /// The error policy shared by both reconcilers: backoff per object, one WARN line per
    /// distinct error, and a Warning Event on the object for each new error.
    pub(crate) fn on_error<K>(&self, kind: &str, obj: &K, reason: &str, message: &str) -> Action
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let key = self.failure_key(kind, obj);
        let (delay, new) = self.failures.record(&key, message);
        self.metrics
            .reconcile_errors
            .get_or_create(&metrics::ErrorLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
        if new {
            self.publish(obj.object_ref(&()), EventType::Warning, reason, message);
        }
        Action::requeue(delay)
    }

    /// The key of `obj` in [`Failures`] (`snapshot k8s-snap/a-001`).
    fn failure_key<K: kube::Resource>(&self, kind: &str, obj: &K) -> String {
        let name = obj.meta().name.as_deref().unwrap_or_default();
        format!("{kind} {}/{name}", self.options.namespace)
    }

    /// Runs one reconcile of `obj`; a success forgets its earlier failures (backoff restarts).
    pub(crate) fn reconcile_tracked<K, E, F, Fut>(
        self: Arc<Self>,
        kind: &'static str,
        obj: Arc<K>,
        run: F,
    ) -> futures::future::BoxFuture<'static, Result<Action, E>>
    where
        K: kube::Resource + Send + Sync + 'static,
        F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
        Fut: std::future::Future<Output = Result<Action, E>> + Send + 'static,
    {
        let key = self.failure_key(kind, obj.as_ref());
        let fut = run(obj, self.clone());
        Box::pin(async move {
            let result = fut.await;
            if result.is_ok() {
                self.failures.clear(&key);
            }
            result
        })
    }

    /// Publishes an Event in the background; a failure to publish is only logged (Events are
    /// best effort and must never fail a reconcile).
    pub(crate) fn publish(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let recorder = self.recorder.clone();
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(event_note(note).to_string()),
            action: "Reconcile".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!("publishing an Event: {}", kube_error_line(&e));
            }
        });
    }
}

/// Event notes are cut to this many bytes: a real server refuses a note over 1024
/// (`NoteLengthLimit`; the emulator too).
const EVENT_NOTE_BYTES: usize = 1000;

/// `note` cut to [`EVENT_NOTE_BYTES`] at a character boundary.
fn event_note(note: &str) -> &str {
    let mut cut = note.len().min(EVENT_NOTE_BYTES);
    while !note.is_char_boundary(cut) {
        cut -= 1;
    }
    &note[..cut]
}

/// Consecutive reconcile failures per object: the retry delay doubles from 5 s up to 5 min,
/// and each distinct error is logged once at WARN (repeats at DEBUG), so a server that keeps
/// refusing a write neither floods the log nor is hammered every few seconds.
#[derive(Debug, Default)]
pub struct Failures(std::sync::Mutex<std::collections::HashMap<String, (String, u32)>>);

impl Failures {
    /// First retry delay.
    pub(crate) const BASE: Duration = Duration::from_secs(5);
    /// Longest retry delay.
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` (`snapshot k8s-snap/a-001`); returns the retry delay and
    /// whether this error differs from the previous one (it was logged at WARN).
    pub fn record(&self, key: &str, error: &str) -> (Duration, bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key.to_string()).or_default();
        entry.1 = entry.1.saturating_add(1);
        let delay = Self::BASE
            .saturating_mul(1u32 << (entry.1 - 1).min(6))
            .min(Self::MAX);
        let new = entry.0 != error;
        if new {
            entry.0 = error.to_string();
            tracing::warn!(object = key, retry_in = ?delay, "{error}");
        } else {
            tracing::debug!(object = key, failures = entry.1, retry_in = ?delay, "{error}");
        }
        (delay, new)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn clear(&self, key: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(key).is_some() {
            tracing::info!("{key}: reconciled again after failures");
        }
    }
}

/// Name the controller's Events are reported under.
pub(crate) const EVENT_REPORTER: &str = "k8s-snap-controller";

/// Publishes a `Warning` Event about `obj` (shown by `kubectl describe`); see
/// [`Context::publish`].
pub(crate) async fn warning_event<K>(ctx: &Context, obj: &K, reason: &str, note: &str)
where
    K: kube::Resource<DynamicType = ()>,
{
    ctx.publish(obj.object_ref(&()), EventType::Warning, reason, note);
}

/// Builds the management cluster's configuration from the options.
pub(crate) async fn management_config(
    opts: &ControllerOptions,
) -> Result<kube::Config, ControllerError> {
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
pub(crate) fn default_identity() -> String {
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
        failures: Failures::default(),
        in_flight: InFlight::default(),
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
        // Shutdown: the controllers stop taking new work and in-flight runs finish, within
        // the grace period.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopping = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
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
                () = run_controllers(ctx.clone(), stopping) => Ok(()),
                lost = lost => Err(ControllerError::Leader(lost)),
            }
        };
        tokio::pin!(lead);
        let outcome = tokio::select! {
            r = &mut lead => r,
            () = &mut shutdown => {
                let grace = options.shutdown_grace_period;
                tracing::info!("shutting down: letting in-flight runs finish (up to {grace:?})");
                let _ = stop_tx.send(true);
                match tokio::time::timeout(grace, &mut lead).await {
                    Ok(r) => r,
                    Err(_) => {
                        fail_interrupted(&ctx).await;
                        Ok(())
                    }
                }
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
async fn run_controllers<S, F>(ctx: Arc<Context>, stopping: S)
where
    S: Fn() -> F,
    F: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    let ns = ctx.options.namespace.clone();
    let snapshots: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let restores: Api<Restore> = Api::namespaced(ctx.client.clone(), &ns);
    let snap_ctl = Controller::new(snapshots, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.options.snapshot_threads))
        .graceful_shutdown_on(stopping())
        .run(snapshot::reconcile, snapshot::error_policy, ctx.clone())
        .for_each(|r| async move {
            match r {
                // Already reported (once per distinct error) by the error policy.
                Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                Err(e) => tracing::warn!("snapshot controller: {e}"),
            }
        });
    let schedules: Api<schedule_crd::SnapshotSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let schedule_ctl = Controller::new(schedules, watcher::Config::default())
        .owns(
            owned,
            watcher::Config::default().labels(schedule::SCHEDULE_LABEL),
        )
        .graceful_shutdown_on(stopping())
        .run(schedule::reconcile, schedule::error_policy, ctx.clone())
        .for_each(|r| async move {
            match r {
                // Already reported (once per distinct error) by the error policy.
                Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                Err(e) => tracing::warn!("snapshotschedule controller: {e}"),
            }
        });
    let restore_ctl = Controller::new(restores, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.options.restore_threads))
        .graceful_shutdown_on(stopping())
        .run(restore::reconcile, restore::error_policy, ctx.clone())
        .for_each(|r| async move {
            match r {
                // Already reported (once per distinct error) by the error policy.
                Err(controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                Err(e) => tracing::warn!("restore controller: {e}"),
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
            store: Some(Arc::new(file_drops::ControllerStores(ctx.clone()))),
            options: crate::restore::RestoreOptions::default(),
            identities: ctx.options.watch_identities.clone(),
        };
        let opts = crate::watch::WatchOptions::new(&dir);
        if let Err(e) = crate::watch::run(opts, Arc::new(executor), std::future::pending()).await {
            tracing::error!("--watch-dir {}: {e}", dir.display());
        }
        std::future::pending::<()>().await
    };
    // Both controllers end together after a graceful shutdown (each after its in-flight
    // runs); the store jobs and file drops simply stop with them.
    tokio::select! {
        _ = futures::future::join3(snap_ctl, restore_ctl, schedule_ctl) => tracing::info!("controllers stopped"),
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

#[cfg(test)]
mod tests {
    #[test]
    fn event_notes_fit_a_real_servers_limit_at_a_character_boundary() {
        assert_eq!(super::event_note("short"), "short");
        let long = "é".repeat(700); // 1400 bytes
        let cut = super::event_note(&long);
        assert!(cut.len() <= 1000 && cut.len() >= 999, "{}", cut.len());
        assert!(long.starts_with(cut));
    }
}
