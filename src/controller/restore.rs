//! The Restore reconciler: `""` → `InQueue` → `InProgress` → `Completed`/`Failed` with the
//! original messages, `preserveUntil` = `availableUntil` from `spec.availableUntil` or ttl
//! (168h) and deletion of expired Restore CRs. A Restore that cannot start (no snapshot name,
//! an unknown ObjectstoreConfig or RestorePreference, a missing Secret, a malformed
//! kubeconfig) is `Failed` at once with a reason naming the spec field and a Warning Event.
//! The restore itself is `work::run_restore`.
//!
//! Owns: Restore status transitions, capping its lists. Must not touch: the target cluster
//! directly, the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::crd::RestorePreferenceCrSpec;
use super::crd::{
    self, Restore, RestoreCrStatus, RestorePreference, Snapshot, condition, set_condition,
    set_finished,
};
use super::snapshot::available_until;
use super::target::TargetError;
use super::work::{self, RestoreJob, StoreTarget};
use super::{Context, ControllerError, RESTORE_TTL, messages, target};
use crate::cluster::Cluster;
use crate::restore::status::Phase;

/// Errors of one reconcile (a restore's own failure is status, not an error); retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// A transient API failure while resolving the target or the store the Restore names.
    #[error(transparent)]
    Target(TargetError),
    /// A transient API failure while reading the RestorePreference the Restore names.
    #[error("spec.restorePreferenceName: reading RestorePreference {what}: {source}")]
    Preference {
        /// `namespace/name`.
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Everything a Restore names, resolved before it starts.
struct Resolved {
    snapshot: String,
    cluster: Cluster,
    preference: Option<RestorePreferenceCrSpec>,
    /// From `spec.objectstoreConfig` (else, later, the Snapshot's).
    store: Option<StoreTarget>,
    /// From `spec.identitySecretRef`: opens the snapshot's encrypted Secret values.
    identities: Option<crate::crypt::Identities>,
    /// From `spec.planRef`: the reviewed plan and where it came from.
    plan: Option<(crate::restore::plan_file::PlanFile, String)>,
}

/// Why a Restore cannot start.
enum StartError {
    /// Its spec is at fault: the status reason, naming the field.
    Invalid(String),
    /// The API failed; worth retrying.
    Transient(ReconcileError),
}

impl From<TargetError> for StartError {
    fn from(e: TargetError) -> StartError {
        if e.is_transient() {
            StartError::Transient(ReconcileError::Target(e))
        } else {
            StartError::Invalid(e.to_string())
        }
    }
}

/// Reconciles one Restore.
pub(crate) fn reconcile(
    cached: Arc<Restore>,
    ctx: Arc<Context>,
) -> futures::future::BoxFuture<'static, Result<Action, ReconcileError>> {
    ctx.reconcile_tracked("restore", cached, reconcile_inner)
}

async fn reconcile_inner(
    cached: Arc<Restore>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let name = cached.name_any();
    let Some(obj) = super::fresh(&api, "restore", &name).await? else {
        return Ok(Action::await_change());
    };
    let generation = obj.metadata.generation;
    let mut status = obj.status.clone().unwrap_or_default();
    // Statuses written before `availableUntil` existed get it with their next update.
    if status.available_until.is_none() {
        status.available_until = status.restore.preserve_until.clone();
    }
    match status.restore.phase {
        Phase::New => {
            let now = jiff::Timestamp::now();
            let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
            match available_until(
                obj.spec.available_until.as_ref(),
                obj.spec.ttl.as_deref(),
                RESTORE_TTL,
                now,
            ) {
                Err(reason) => fail(&mut status, &reason, generation),
                Ok(t) if t <= now => fail(&mut status, messages::AVAILABLE_UNTIL_PAST, generation),
                Ok(t) => {
                    let ttl = go_duration(t.as_second() - now.as_second());
                    status.set_expiry(Some(format_time(t)), ttl);
                    status.restore.phase = Phase::InQueue;
                    set_condition(
                        &mut status.conditions,
                        condition::READY,
                        false,
                        "InQueue",
                        "waiting for a restore worker",
                        generation,
                    );
                }
            }
            patch_status(&api, &name, &status).await?;
            Ok(Action::requeue(Duration::from_millis(10)))
        }
        Phase::InQueue => run(&api, &obj, status, &ctx).await,
        Phase::InProgress => {
            tracing::warn!(restore = %name, "found InProgress from a stopped controller");
            fail(&mut status, messages::STOPPED_WHILE_RESTORE, generation);
            ctx.metrics.restore_finished(false, 0.0, 0);
            patch_status(&api, &name, &status).await?;
            expire(&api, &name, &status).await
        }
        _ => expire(&api, &name, &status).await,
    }
}

/// Retries API failures with a growing delay per object, logging each distinct error once
/// (the CR's status holds run failures).
pub(crate) fn error_policy(obj: Arc<Restore>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.on_error(
        "restore",
        obj.as_ref(),
        match err {
            ReconcileError::Controller(e) => e.event_reason(),
            ReconcileError::Target(_) | ReconcileError::Preference { .. } => "ReconcileError",
        },
        &err.to_string(),
    )
}

/// A duration of whole seconds as Go prints it (`168h0m0s`, `5m0s`, `2s`), the format of the
/// original's `metav1.Duration` fields.
pub(crate) fn go_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn format_time(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn fail(status: &mut RestoreCrStatus, reason: &str, generation: Option<i64>) {
    status.restore.phase = Phase::Failed;
    status.restore.reason = reason.to_string();
    set_finished(&mut status.conditions, false, "Failed", reason, generation);
}

async fn patch_status(
    api: &Api<Restore>,
    name: &str,
    status: &RestoreCrStatus,
) -> Result<(), ReconcileError> {
    Ok(super::patch_status(api, "restore", name, status).await?)
}

async fn expire(
    api: &Api<Restore>,
    name: &str,
    status: &RestoreCrStatus,
) -> Result<Action, ReconcileError> {
    let at = status
        .restore
        .preserve_until
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    Ok(super::expire(api, "restore", name, at).await?)
}

async fn run(
    api: &Api<Restore>,
    obj: &Restore,
    mut status: RestoreCrStatus,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    let _running = ctx.in_flight.start("restore", &name);
    let resolved = match resolve(obj, ctx).await {
        Ok(r) => r,
        Err(StartError::Invalid(reason)) => {
            tracing::warn!(restore = %name, "cannot start: {reason}");
            return finish_failed(api, obj, status, &reason, "CannotStart", ctx).await;
        }
        Err(StartError::Transient(e)) => return Err(e),
    };
    // The snapshot must be Completed (or at least present in the mirror when its CR is gone).
    let snapshots: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let snap_name = &resolved.snapshot;
    let snapshot = snapshots
        .get_opt(snap_name)
        .await
        .map_err(|e| ControllerError::kube(format!("reading snapshot {snap_name}"), e))?;
    let precheck = match &snapshot {
        Some(s) if s.status.as_ref().map(|st| &st.phase) != Some(&Phase::Completed) => {
            Some(messages::SNAPSHOT_NOT_COMPLETED.to_string())
        }
        Some(_) => None,
        None => match work::has_local_snapshot(&ctx.options.git_dir(), snap_name).await {
            Ok(true) => None,
            Ok(false) => Some(messages::SNAPSHOT_FILE_NOT_FOUND.to_string()),
            Err(e) => Some(e.to_string()),
        },
    };
    if let Some(reason) = precheck {
        tracing::warn!(restore = %name, "restore failed: {reason}");
        return finish_failed(api, obj, status, &reason, "Failed", ctx).await;
    }
    status.restore.phase = Phase::InProgress;
    set_condition(
        &mut status.conditions,
        condition::READY,
        false,
        "InProgress",
        "restoring",
        generation,
    );
    patch_status(api, &name, &status).await?;

    let started = Instant::now();
    ctx.publish(
        obj.object_ref(&()),
        EventType::Normal,
        "Started",
        &format!("restoring snapshot {snap_name}"),
    );
    match restore(obj, resolved, snapshot.as_ref(), ctx).await {
        Ok(result) => {
            let keep = (
                status.restore.preserve_until.clone(),
                status.conditions.clone(),
            );
            status.restore = result;
            status.restore.preserve_until = keep.0;
            status.conditions = keep.1;
            status.restore.phase = Phase::Completed;
            status.restore.reason = String::new();
            let r = &mut status.restore;
            let mut cut = false;
            for list in [
                &mut r.already_existed,
                &mut r.created,
                &mut r.excluded,
                &mut r.failed,
                &mut r.updated,
            ] {
                cut |= crd::cap_list(list);
            }
            if cut {
                set_condition(
                    &mut status.conditions,
                    condition::TRUNCATED,
                    true,
                    "ListTruncated",
                    &format!(
                        "status lists hold at most {} entries; counts are exact",
                        crd::STATUS_LIST_MAX
                    ),
                    generation,
                );
            }
            let msg = format!(
                "{} created, {} updated, {} failed",
                status.restore.num_created, status.restore.num_updated, status.restore.num_failed
            );
            // Phase `Completed` as the original says for a run that finished; the conditions
            // (and the Event) tell whether every object made it.
            let all_ok = status.restore.num_failed == 0;
            let reason = if all_ok { "Completed" } else { "ObjectsFailed" };
            set_finished(&mut status.conditions, all_ok, reason, &msg, generation);
            let type_ = if all_ok {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.publish(obj.object_ref(&()), type_, reason, &msg);
            ctx.metrics.restore_finished(
                true,
                started.elapsed().as_secs_f64(),
                status.restore.num_created + status.restore.num_updated,
            );
        }
        Err(reason) => {
            tracing::warn!(restore = %name, "restore failed: {reason}");
            fail(&mut status, &reason, generation);
            ctx.metrics
                .restore_finished(false, started.elapsed().as_secs_f64(), 0);
            patch_status(api, &name, &status).await?;
            super::warning_event(ctx, obj, "Failed", &reason).await;
            return expire(api, &name, &status).await;
        }
    }
    patch_status(api, &name, &status).await?;
    expire(api, &name, &status).await
}

/// Ends a Restore `Failed` with `reason` before it started: status, metric, a Warning Event
/// (`event_reason`), then only its expiry is awaited (no retries).
async fn finish_failed(
    api: &Api<Restore>,
    obj: &Restore,
    mut status: RestoreCrStatus,
    reason: &str,
    event_reason: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = obj.name_any();
    fail(&mut status, reason, obj.metadata.generation);
    ctx.metrics.restore_finished(false, 0.0, 0);
    patch_status(api, &name, &status).await?;
    super::warning_event(ctx, obj, event_reason, reason).await;
    expire(api, &name, &status).await
}

/// Resolves what the Restore names (snapshot name, target cluster, store, preference) without
/// contacting the target or the store; a spec at fault gives a reason naming the field.
async fn resolve(obj: &Restore, ctx: &Context) -> Result<Resolved, StartError> {
    let spec = &obj.spec;
    let snapshot = spec
        .snapshot()
        .map_err(|e| StartError::Invalid(e.to_string()))?
        .to_string();
    let field = if spec.snapshot_name.trim().is_empty() {
        "spec.backupName"
    } else {
        "spec.snapshotName"
    };
    crate::mirror::validate_name("snapshot", &snapshot)
        .map_err(|e| StartError::Invalid(format!("{field}: {e}")))?;
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
    if spec.plan_ref.as_deref().is_some_and(|p| !p.is_empty())
        && (spec
            .restore_preference_name
            .as_deref()
            .is_some_and(|p| !p.is_empty())
            || !spec.include_paths.is_empty()
            || !spec.namespace_mapping.is_empty()
            || spec.create_namespaces.is_some())
    {
        return Err(StartError::Invalid(
            "spec.planRef: a reviewed plan records its preference; do not set spec.restorePreferenceName, includePaths, namespaceMapping or createNamespaces with it".into(),
        ));
    }
    let preference = match spec
        .restore_preference_name
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        Some(p) => {
            let ns = &ctx.options.namespace;
            let prefs: Api<RestorePreference> = Api::namespaced(ctx.client.clone(), ns);
            match prefs.get_opt(p).await {
                Ok(Some(found)) => Some(found.spec),
                Ok(None) => {
                    return Err(StartError::Invalid(format!(
                        "spec.restorePreferenceName: RestorePreference {ns}/{p} not found"
                    )));
                }
                Err(e) => {
                    let transient =
                        !matches!(&e, kube::Error::Api(s) if s.code < 500 && s.code != 429);
                    let e = ReconcileError::Preference {
                        what: format!("{ns}/{p}"),
                        source: e,
                    };
                    return Err(if transient {
                        StartError::Transient(e)
                    } else {
                        StartError::Invalid(e.to_string())
                    });
                }
            }
        }
        None => None,
    };
    let identities = super::encryption::identities(ctx, spec.identity_secret_ref.as_ref()).await?;
    let plan = match spec.plan_ref.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let (file, origin) = target::read_plan(ctx, p)
                .await
                .map_err(|e| StartError::from(e.in_field("spec.planRef")))?;
            if file.snapshot.name != snapshot {
                return Err(StartError::Invalid(format!(
                    "spec.planRef: {origin} is a plan of snapshot {:?}, not {snapshot:?}",
                    file.snapshot.name
                )));
            }
            Some((file, origin))
        }
        None => None,
    };
    Ok(Resolved {
        snapshot,
        cluster,
        preference,
        store,
        identities,
        plan,
    })
}

async fn restore(
    obj: &Restore,
    resolved: Resolved,
    snapshot: Option<&Snapshot>,
    ctx: &Context,
) -> Result<crate::restore::RestoreStatus, String> {
    let spec = &obj.spec;
    // Without its own store, a Restore pulls from the store its Snapshot was pushed to.
    let store = match resolved.store {
        Some(s) => Some(s),
        None => match snapshot
            .and_then(|s| s.spec.objectstore_config.clone())
            .filter(|s| !s.is_empty())
        {
            Some(c) => Some(target::store(ctx, &c).await.map_err(|e| e.to_string())?),
            None => None,
        },
    };
    let cluster = resolved.cluster;
    let preference = resolved.preference;
    let job = RestoreJob {
        name: &obj.name_any(),
        snapshot: &resolved.snapshot,
        spec,
        target: &cluster,
        git_dir: &ctx.options.git_dir(),
        preference: preference.as_ref(),
        store: store.as_ref(),
        identities: resolved.identities.as_ref(),
        plan: resolved.plan.as_ref(),
    };
    let result = work::run_restore(job).await.map_err(|e| e.to_string());
    result.map_err(|m| match spec.kubeconfig.as_deref() {
        Some(kc) => target::redact(&m, kc),
        None => m,
    })
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(168 * 3600), "168h0m0s");
        assert_eq!(go_duration(2), "2s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(3661), "1h1m1s");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(-5), "0s");
    }
}
