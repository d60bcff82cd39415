//! Prometheus metrics and the `/healthz`, `/readyz`, `/metrics` HTTP endpoints.
//!
//! Owns: metric names and the probe semantics (`/healthz`: the process serves; `/readyz`: the
//! management cluster answered and, on the leader, the controllers run; a standby replica is
//! ready too, so rolling updates are not blocked by the Lease).
//! Must not touch: CRs or the mirror.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of a finished run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `completed` or `failed`.
    pub result: String,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `snapshot` or `restore`.
    pub kind: String,
    /// The Event reason (`StatusWriteRefused`, `ReconcileError`, ...).
    pub reason: String,
}

/// Labels of a SnapshotSchedule run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleRunLabels {
    /// The SnapshotSchedule's name.
    pub schedule: String,
    /// `completed`, `failed` or `skipped` (Forbid).
    pub result: String,
}

/// Label of a SnapshotSchedule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabel {
    /// The SnapshotSchedule's name.
    pub schedule: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// `k8s_snap_snapshots`: snapshot runs finished, by result.
    pub snapshots: Family<ResultLabel, Counter>,
    /// `k8s_snap_restores`: restore runs finished, by result.
    pub restores: Family<ResultLabel, Counter>,
    /// `k8s_snap_snapshot_duration_seconds`: duration of snapshot runs.
    pub snapshot_duration: Histogram,
    /// `k8s_snap_restore_duration_seconds`: duration of restore runs.
    pub restore_duration: Histogram,
    /// `k8s_snap_snapshot_objects`: objects written by completed snapshots.
    pub snapshot_objects: Counter,
    /// `k8s_snap_restore_objects`: objects created or updated by completed restores.
    pub restore_objects: Counter,
    /// `k8s_snap_leader`: 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Whether `/readyz` answers ok.
    pub ready: AtomicBool,
    /// Failed reconciles (retried with backoff), by kind and reason.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `k8s_snap_schedule_runs_total{schedule,result}`.
    pub schedule_runs: Family<ScheduleRunLabels, Counter>,
    /// `k8s_snap_schedule_missed_runs_total{schedule}`.
    pub schedule_missed_runs: Family<ScheduleLabel, Counter>,
    /// `k8s_snap_schedule_last_success_timestamp_seconds{schedule}`.
    pub schedule_last_success: Family<ScheduleLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric (prefix `k8s_snap`), not ready yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("k8s_snap");
        let snapshots = Family::<ResultLabel, Counter>::default();
        let restores = Family::<ResultLabel, Counter>::default();
        let snapshot_duration = Histogram::new(exponential_buckets(0.1, 2.0, 14));
        let restore_duration = Histogram::new(exponential_buckets(0.1, 2.0, 14));
        let snapshot_objects = Counter::default();
        let restore_objects = Counter::default();
        let leader = Gauge::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let schedule_runs = Family::<ScheduleRunLabels, Counter>::default();
        let schedule_missed_runs = Family::<ScheduleLabel, Counter>::default();
        let schedule_last_success = Family::<ScheduleLabel, Gauge>::default();
        registry.register(
            "schedule_runs",
            "SnapshotSchedule runs, by schedule and result (completed, failed, skipped)",
            schedule_runs.clone(),
        );
        registry.register(
            "schedule_missed_runs",
            "SnapshotSchedule runs missed (past the starting deadline, or skipped by Forbid)",
            schedule_missed_runs.clone(),
        );
        registry.register(
            "schedule_last_success_timestamp_seconds",
            "Scheduled time of the newest completed run of each SnapshotSchedule",
            schedule_last_success.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles (retried with backoff), by kind and reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "snapshots",
            "Snapshot runs finished, by result (completed, failed)",
            snapshots.clone(),
        );
        registry.register(
            "restores",
            "Restore runs finished, by result (completed, failed)",
            restores.clone(),
        );
        registry.register(
            "snapshot_duration_seconds",
            "Duration of snapshot runs",
            snapshot_duration.clone(),
        );
        registry.register(
            "restore_duration_seconds",
            "Duration of restore runs",
            restore_duration.clone(),
        );
        registry.register(
            "snapshot_objects",
            "Objects written by completed snapshots",
            snapshot_objects.clone(),
        );
        registry.register(
            "restore_objects",
            "Objects created or updated by completed restores",
            restore_objects.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            snapshots,
            restores,
            snapshot_duration,
            restore_duration,
            snapshot_objects,
            restore_objects,
            leader,
            ready: AtomicBool::new(false),
            reconcile_errors,
            schedule_runs,
            schedule_missed_runs,
            schedule_last_success,
        }
    }

    /// Counts a finished snapshot.
    pub(crate) fn snapshot_finished(&self, ok: bool, seconds: f64, objects: u64) {
        self.snapshots.get_or_create(&result(ok)).inc();
        self.snapshot_duration.observe(seconds);
        self.snapshot_objects.inc_by(objects);
    }

    /// Counts a finished restore.
    pub(crate) fn restore_finished(&self, ok: bool, seconds: f64, objects: u64) {
        self.restores.get_or_create(&result(ok)).inc();
        self.restore_duration.observe(seconds);
        self.restore_objects.inc_by(objects);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("encoding metrics failed");
        }
        out
    }
}

fn result(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "completed" } else { "failed" }.into(),
    }
}

/// Serves the probes and metrics on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    axum::serve(listener, app).await
}

/// Binds the metrics address (`0.0.0.0:8080`; port 0 picks one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}
