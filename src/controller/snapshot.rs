//! The Snapshot reconciler: `""` → `InQueue` → `InProgress` → `Completed`/`Failed`, TTL
//! expiry (the CR is deleted at `availableUntil`), a finalizer that removes the snapshot's
//! data, and the store jobs (`--restoresnapshots`, `--housekeepstore`).
//!
//! Owns: Snapshot status transitions and messages. Must not touch: the store (through
//! `work` only), Restore CRs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, Event};
use kube::{Api, Resource, ResourceExt};

use super::crd::{self, Snapshot, SnapshotStatus, condition, set_condition, set_finished};
use super::target::TargetError;
use super::work::{self, StoreTarget, WorkError};
use super::{Context, ControllerError, SNAPSHOT_TTL, messages, target};
use crate::restore::status::Phase;
use crate::snapshot::SnapshotOptions;
use crate::store::sync::StoreSnapshot;

/// Errors of one reconcile (the CR's own failures become status, not errors).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("{}", finalizer_message(.0))]
    Finalizer(Box<finalizer::Error<ReconcileError>>),
    #[error("cleaning up snapshot {name}: {source}")]
    Cleanup {
        name: String,
        #[source]
        source: AttemptError,
    },
}

/// The reconcile's own error when the finalizer helper only wrapped it.
fn finalizer_message(e: &finalizer::Error<ReconcileError>) -> String {
    match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.to_string(),
        other => format!("finalizer: {other}"),
    }
}

impl ReconcileError {
    /// The `reason` of the Warning Event that reports this error on the Snapshot.
    fn event_reason(&self) -> &'static str {
        match self {
            ReconcileError::Controller(e) => e.event_reason(),
            ReconcileError::Finalizer(f) => match f.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.event_reason()
                }
                _ => "FinalizerError",
            },
            ReconcileError::Cleanup { .. } => "CleanupFailed",
        }
    }
}

/// Reconciles one Snapshot.
pub(crate) fn reconcile(
    obj: Arc<Snapshot>,
    ctx: Arc<Context>,
) -> futures::future::BoxFuture<'static, Result<Action, ReconcileError>> {
    ctx.reconcile_tracked("snapshot", obj, reconcile_inner)
}

async fn reconcile_inner(obj: Arc<Snapshot>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let inner = api.clone();
    let handle = move |event: Event<Snapshot>| -> futures::future::BoxFuture<'static, Result<Action, ReconcileError>> {
        match event {
            Event::Apply(s) => Box::pin(apply(inner, s, ctx)),
            Event::Cleanup(s) => Box::pin(cleanup(s, ctx)),
        }
    };
    finalizer::finalizer(&api, crd::SNAPSHOT_FINALIZER, obj, handle)
        .await
        .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// Retries API failures with a growing delay per object, logging each distinct error once
/// (the CR's status holds run failures).
pub(crate) fn error_policy(obj: Arc<Snapshot>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.on_error(
        "snapshot",
        obj.as_ref(),
        err.event_reason(),
        &err.to_string(),
    )
}

/// `availableUntil` of a spec: the spec's time, else now + ttl (default 720h).
pub fn available_until(
    spec_until: Option<&Time>,
    ttl: Option<&str>,
    default_ttl: Duration,
    now: jiff::Timestamp,
) -> Result<jiff::Timestamp, String> {
    if let Some(t) = spec_until {
        return Ok(t.0);
    }
    let ttl = match ttl.filter(|t| !t.trim().is_empty()) {
        Some(t) => crate::duration::parse_duration(t).map_err(|e| format!("spec.ttl: {e}"))?,
        None => default_ttl,
    };
    let span = jiff::SignedDuration::try_from(ttl).map_err(|e| format!("spec.ttl: {e}"))?;
    now.checked_add(span).map_err(|e| format!("spec.ttl: {e}"))
}

/// Requeue delay until `until` (at least a second, at most an hour: clocks drift).
pub fn until(t: jiff::Timestamp) -> Duration {
    let left = t.duration_since(jiff::Timestamp::now());
    let secs = left.as_secs_f64().clamp(1.0, 3600.0);
    Duration::from_secs_f64(secs)
}

fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

async fn patch_status(
    api: &Api<Snapshot>,
    name: &str,
    status: &SnapshotStatus,
) -> Result<(), ReconcileError> {
    Ok(super::patch_status(api, "snapshot", name, status).await?)
}

fn fail(status: &mut SnapshotStatus, reason: &str, generation: Option<i64>) {
    status.phase = Phase::Failed;
    status.reason = reason.to_string();
    set_finished(&mut status.conditions, false, "Failed", reason, generation);
}

async fn apply(
    api: Api<Snapshot>,
    cached: Arc<Snapshot>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api = &api;
    let ctx = &*ctx;
    let name = cached.name_any();
    // The cache may lag behind our own status writes: decide on a fresh read.
    let Some(obj) = super::fresh(api, "snapshot", &name).await? else {
        return Ok(Action::await_change());
    };
    let generation = obj.metadata.generation;
    let mut status = obj.status.clone().unwrap_or_default();
    if status.phase == Phase::New && obj.annotations().contains_key(RESTORED_FROM_STORE) {
        // Recreated from the store: its status is being written by the store job.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    match status.phase {
        Phase::New => {
            let now = now_seconds();
            status.cluster_name = obj.spec.cluster_name.clone();
            status.ttl = obj.spec.ttl.clone().unwrap_or_default();
            match available_until(
                obj.spec.available_until.as_ref(),
                obj.spec.ttl.as_deref(),
                SNAPSHOT_TTL,
                now,
            ) {
                Err(reason) => fail(&mut status, &reason, generation),
                Ok(t) if t <= now => fail(&mut status, messages::AVAILABLE_UNTIL_PAST, generation),
                Ok(t) => {
                    status.available_until = Some(Time(t));
                    status.phase = Phase::InQueue;
                    set_condition(
                        &mut status.conditions,
                        condition::READY,
                        false,
                        "InQueue",
                        "waiting for a snapshot worker",
                        generation,
                    );
                }
            }
            patch_status(api, &name, &status).await?;
            if status.phase == Phase::Failed {
                ctx.publish(
                    obj.object_ref(&()),
                    EventType::Warning,
                    "Failed",
                    &status.reason,
                );
            }
            Ok(Action::requeue(Duration::from_millis(10)))
        }
        Phase::InQueue => {
            status.phase = Phase::InProgress;
            set_condition(
                &mut status.conditions,
                condition::READY,
                false,
                "InProgress",
                "taking the snapshot",
                generation,
            );
            patch_status(api, &name, &status).await?;
            ctx.publish(
                obj.object_ref(&()),
                EventType::Normal,
                "Started",
                "taking the snapshot",
            );
            run(api, &obj, status, ctx).await
        }
        Phase::InProgress => {
            // Nobody runs it (this controller would still be inside `run`): the controller
            // that started it stopped.
            tracing::warn!(snapshot = %name, "found InProgress from a stopped controller");
            fail(&mut status, messages::STOPPED_WHILE_SNAPSHOT, generation);
            ctx.metrics.snapshot_finished(false, 0.0, 0);
            patch_status(api, &name, &status).await?;
            ctx.publish(
                obj.object_ref(&()),
                EventType::Warning,
                "Failed",
                messages::STOPPED_WHILE_SNAPSHOT,
            );
            expire(api, &name, &status).await
        }
        _ => expire(api, &name, &status).await,
    }
}

/// Deletes an expired CR (its finalizer removes the data), or requeues at expiry.
async fn expire(
    api: &Api<Snapshot>,
    name: &str,
    status: &SnapshotStatus,
) -> Result<Action, ReconcileError> {
    let at = status.available_until.as_ref().map(|t| t.0);
    Ok(super::expire(api, "snapshot", name, at).await?)
}

async fn run(
    api: &Api<Snapshot>,
    obj: &Snapshot,
    mut status: SnapshotStatus,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    let started = Instant::now();
    let _running = ctx.in_flight.start("snapshot", &name);
    match take(obj, ctx).await {
        Ok(outcome) => {
            let s = &outcome.summary;
            status.phase = Phase::Completed;
            status.reason = String::new();
            status.cluster_name = s.cluster_name.clone();
            status.number_of_contents = s.number_of_contents;
            status.snapshot_resource_version = s.snapshot_resource_version.clone();
            status.snapshot_timestamp = Some(Time(s.snapshot_timestamp));
            status.commit = Some(s.commit.clone());
            if let Some(p) = &outcome.pushed {
                status.stored_file_size = p.stored_bytes;
                status.stored_timestamp = Some(Time(p.stored_at));
            }
            if !s.unavailable_apis.is_empty() {
                let apis: Vec<&str> = s
                    .unavailable_apis
                    .iter()
                    .map(|a| a.group_version.as_str())
                    .collect();
                let note = format!(
                    "not read (the server lists them but answered 503 Service Unavailable): {}",
                    apis.join(", ")
                );
                set_condition(
                    &mut status.conditions,
                    condition::INCOMPLETE,
                    true,
                    "UnavailableApis",
                    &note,
                    generation,
                );
                ctx.publish(
                    obj.object_ref(&()),
                    EventType::Warning,
                    "UnavailableApis",
                    &note,
                );
            }
            let mut contents = Some(outcome.contents);
            let total = contents.as_ref().map_or(0, Vec::len);
            if crd::cap_list(&mut contents) {
                set_condition(
                    &mut status.conditions,
                    condition::TRUNCATED,
                    true,
                    "ListTruncated",
                    &format!(
                        "contents lists {} of {total} paths; `k8s-snap show {name}` lists all",
                        crd::STATUS_LIST_MAX
                    ),
                    generation,
                );
            }
            status.contents = contents;
            let msg = format!(
                "{} objects at resourceVersion {}",
                s.number_of_contents, s.snapshot_resource_version
            );
            set_finished(&mut status.conditions, true, "Completed", &msg, generation);
            ctx.metrics.snapshot_finished(
                true,
                started.elapsed().as_secs_f64(),
                s.number_of_contents,
            );
            tracing::info!(snapshot = %name, objects = s.number_of_contents, "snapshot completed");
        }
        Err(reason) => {
            tracing::warn!(snapshot = %name, "snapshot failed: {reason}");
            fail(&mut status, &reason, generation);
            ctx.metrics
                .snapshot_finished(false, started.elapsed().as_secs_f64(), 0);
        }
    }
    patch_status(api, &name, &status).await?;
    let (type_, reason, note) = if status.phase == Phase::Completed {
        let n = status.number_of_contents;
        let rv = &status.snapshot_resource_version;
        let note = format!("{n} objects at resourceVersion {rv}");
        (EventType::Normal, "Completed", note)
    } else {
        (EventType::Warning, "Failed", status.reason.clone())
    };
    ctx.publish(obj.object_ref(&()), type_, reason, &note);
    expire(api, &name, &status).await
}

/// Resolves the targets and takes the snapshot, retrying transient failures with exponential
/// backoff for at most `--maxretryelaspsedminutes`. The error is the status reason.
async fn take(obj: &Snapshot, ctx: &Context) -> Result<work::SnapshotOutcome, String> {
    let name = obj.name_any();
    let deadline = Instant::now() + ctx.options.max_retry_elapsed;
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = attempt(obj, ctx).await;
        match attempt {
            Ok(o) => return Ok(o),
            Err(e) => {
                let retryable = e.is_retryable();
                // The status reason: never the kubeconfig's contents.
                let reason = match obj.spec.kubeconfig.as_deref() {
                    Some(kc) => target::redact(&e.to_string(), kc),
                    None => e.to_string(),
                };
                if !retryable || Instant::now() + delay >= deadline {
                    return Err(reason);
                }
                tracing::info!(snapshot = %name, "retrying in {delay:?}: {reason}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Why one attempt at a snapshot (or at removing its data) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Work(#[from] WorkError),
}

impl AttemptError {
    fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Target(e) => e.is_transient(),
            AttemptError::Work(e) => e.is_retryable(),
        }
    }
}

async fn attempt(obj: &Snapshot, ctx: &Context) -> Result<work::SnapshotOutcome, AttemptError> {
    let spec = &obj.spec;
    let cluster = target::spec_cluster(
        ctx,
        spec.kubeconfig.as_deref(),
        spec.kubeconfig_secret_ref.as_ref(),
    )
    .await?;
    let store = match spec.objectstore_config.as_deref().filter(|s| !s.is_empty()) {
        Some(c) => Some(target::spec_store(ctx, c).await?),
        None => None,
    };
    let mut opts = SnapshotOptions::new(obj.name_any());
    opts.cluster_name = Some(spec.cluster_name.clone()).filter(|c| !c.is_empty());
    opts.available_until = obj
        .status
        .as_ref()
        .and_then(|s| s.available_until.as_ref())
        .map(|t| t.0);
    opts.ttl = None;
    opts.threads = 4;
    opts.filter = spec.filter.clone();
    opts.stored_copies = store.is_some();
    if let Some((recipients, paths)) = super::encryption::recipients(
        ctx,
        spec.encryption.as_ref(),
        store.as_ref().and_then(|s| s.spec.encryption.as_ref()),
        "spec.objectstoreConfig",
    )
    .await?
    {
        opts.encrypt_to = Some(recipients);
        opts.encrypt_paths = paths;
    }
    Ok(
        work::take_and_push_snapshot(&cluster, &ctx.options.git_dir(), &opts, store.as_ref())
            .await?,
    )
}

async fn cleanup(obj: Arc<Snapshot>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ctx = &*ctx;
    let name = obj.name_any();
    let pushed = obj
        .status
        .as_ref()
        .is_some_and(|s| s.stored_timestamp.is_some());
    let store: Option<StoreTarget> = match obj.spec.objectstore_config.as_deref() {
        Some(c) if pushed && !c.is_empty() => match target::store(ctx, c).await {
            Ok(t) => Some(t),
            Err(e) => {
                return Err(ReconcileError::Cleanup {
                    name,
                    source: e.into(),
                });
            }
        },
        _ => None,
    };
    work::delete_snapshot_data(&ctx.options.git_dir(), &name, store.as_ref())
        .await
        .map_err(|e| ReconcileError::Cleanup {
            name: name.clone(),
            source: e.into(),
        })?;
    if let Some(target) = &store {
        super::import::delete_archive(&obj, target)
            .await
            .map_err(|e| ReconcileError::Cleanup {
                name: name.clone(),
                source: e.into(),
            })?;
    }
    tracing::info!(snapshot = %name, "snapshot data removed");
    let note = match &store {
        Some(_) => "the snapshot's data was removed from the mirror and the object store",
        None => "the snapshot's data was removed from the mirror",
    };
    ctx.publish(obj.object_ref(&()), EventType::Normal, "DataDeleted", note);
    Ok(Action::await_change())
}

/// Annotation on Snapshot CRs recreated from a store manifest: their status comes from the
/// store, so the reconciler must not take a new snapshot for them.
pub(crate) const RESTORED_FROM_STORE: &str = "clustersnapshot.rywt.io/restored-from-store";

/// `--restoresnapshots` once at start and `--housekeepstore` every 300 s, over every
/// ObjectstoreConfig of the namespace. Never returns.
pub(crate) async fn store_jobs(ctx: Arc<Context>) {
    let api: Api<crd::ObjectstoreConfig> =
        Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let mut first = true;
    loop {
        if ctx.options.restore_snapshots && first || ctx.options.housekeep_store {
            match api.list(&Default::default()).await {
                Ok(list) => {
                    for cfg in list {
                        let name = cfg.name_any();
                        let target = match target::store(&ctx, &name).await {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::warn!("store jobs: {e}");
                                continue;
                            }
                        };
                        if first && ctx.options.restore_snapshots {
                            match work::stored_snapshots(&target).await {
                                Ok(stored) => restore_snapshot_crs(&ctx, &name, stored).await,
                                Err(e) => {
                                    tracing::warn!(config = %name, "restoresnapshots: {e}")
                                }
                            }
                            // The original controller's `<name>.tgz` archives (issue 20).
                            super::import::import_archives(&ctx, &name, &target).await;
                        }
                        if ctx.options.housekeep_store {
                            match work::housekeep_store(&target, ctx.options.validate_file_info)
                                .await
                            {
                                Ok(h) => {
                                    for p in &h.problems {
                                        tracing::warn!(config = %name, "store verify: {p}");
                                    }
                                    if !h.expired.is_empty() {
                                        tracing::info!(config = %name, expired = ?h.expired, "store gc removed expired snapshots");
                                    }
                                    fail_vanished(&ctx, &name, &h.stored).await;
                                }
                                Err(e) => tracing::warn!(config = %name, "housekeepstore: {e}"),
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("store jobs: listing ObjectstoreConfigs: {e}"),
            }
        }
        first = false;
        tokio::time::sleep(super::HOUSEKEEP_INTERVAL).await;
    }
}

/// Creates a Completed Snapshot CR for every snapshot of the store that has none (a new
/// controller, or a namespace rebuilt after a disaster), as the original did.
async fn restore_snapshot_crs(ctx: &Context, config: &str, stored: Vec<StoreSnapshot>) {
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let existing: std::collections::HashSet<String> = match api.list(&Default::default()).await {
        Ok(l) => l.into_iter().map(|s| s.name_any()).collect(),
        Err(e) => {
            tracing::warn!("restoresnapshots: listing snapshots: {e}");
            return;
        }
    };
    let now = jiff::Timestamp::now();
    for s in stored {
        if existing.contains(&s.name) || s.entry.available_until.is_some_and(|t| t <= now) {
            continue;
        }
        let mut cr = Snapshot::new(
            &s.name,
            crd::SnapshotSpec {
                cluster_name: s.entry.cluster.clone(),
                available_until: s.entry.available_until.map(Time),
                objectstore_config: Some(config.to_string()),
                ..Default::default()
            },
        );
        cr.metadata.annotations = Some(
            [(RESTORED_FROM_STORE.to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        );
        // Born with the finalizer: deleting it at once must still remove the store data.
        cr.metadata.finalizers = Some(vec![crd::SNAPSHOT_FINALIZER.to_string()]);
        match api.create(&Default::default(), &cr).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => {
                tracing::warn!(snapshot = %s.name, "restoresnapshots: creating the CR: {e}");
                continue;
            }
        }
        let mut status = SnapshotStatus {
            phase: Phase::Completed,
            cluster_name: s.entry.cluster.clone(),
            available_until: s.entry.available_until.map(Time),
            number_of_contents: s.entry.number_of_contents,
            snapshot_resource_version: s.entry.resource_version.clone(),
            snapshot_timestamp: Some(Time(s.entry.timestamp)),
            stored_timestamp: Some(Time(now)),
            commit: Some(s.entry.commit.to_string()),
            ..Default::default()
        };
        let msg = format!("recreated from the object store ({config})");
        for c in [condition::SUCCEEDED, condition::READY] {
            set_condition(
                &mut status.conditions,
                c,
                true,
                "RestoredFromStore",
                &msg,
                Some(1),
            );
        }
        match patch_status(&api, &s.name, &status).await {
            Ok(()) => {
                tracing::info!(snapshot = %s.name, "recreated the Snapshot resource from the store")
            }
            Err(e) => tracing::warn!(snapshot = %s.name, "restoresnapshots: {e}"),
        }
    }
}

/// Fails the Completed Snapshot CRs of `config` whose data is no longer in the store.
async fn fail_vanished(ctx: &Context, config: &str, stored: &std::collections::BTreeSet<String>) {
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let list = match api.list(&Default::default()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("housekeepstore: listing snapshots: {e}");
            return;
        }
    };
    for cr in list {
        let name = cr.name_any();
        let Some(mut status) = cr.status.clone() else {
            continue;
        };
        let pushed_here = cr.spec.objectstore_config.as_deref() == Some(config)
            && status.stored_timestamp.is_some();
        if status.phase != Phase::Completed
            || !pushed_here
            || stored.contains(&name)
            || cr.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        tracing::warn!(snapshot = %name, "its data vanished from the store");
        fail(
            &mut status,
            messages::SNAPSHOT_FILE_NOT_FOUND,
            cr.metadata.generation,
        );
        if let Err(e) = patch_status(&api, &name, &status).await {
            tracing::warn!(snapshot = %name, "housekeepstore: {e}");
        }
    }
}
