//! The Restore reconciler: `""` → `InQueue` → `InProgress` → `Completed`/`Failed` with the
//! original messages, `preserveUntil` from `availableUntil` or ttl (168h) and deletion of
//! expired Restore CRs. The restore itself is [`super::work::run_restore`].
//!
//! Owns: Restore status transitions, capping its lists. Must not touch: the target cluster
//! directly, the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::crd::{
    self, Restore, RestoreCrStatus, RestorePreference, Snapshot, condition, set_condition,
    set_finished,
};
use super::snapshot::available_until;
use super::work::{self, RestoreJob};
use super::{Context, ControllerError, RESTORE_TTL, messages, target};
use crate::restore::status::phase;

/// Errors of one reconcile (a restore's own failure is status, not an error).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReconcileError(#[from] ControllerError);

/// Reconciles one Restore.
pub fn reconcile(
    cached: Arc<Restore>,
    ctx: Arc<Context>,
) -> futures::future::BoxFuture<'static, Result<Action, ReconcileError>> {
    Box::pin(async move {
        let key = failure_key(&cached, &ctx);
        let result = reconcile_inner(cached, ctx.clone()).await;
        if result.is_ok() {
            ctx.failures.clear(&key);
        }
        result
    })
}

fn failure_key(obj: &Restore, ctx: &Context) -> String {
    format!("restore {}/{}", ctx.options.namespace, obj.name_any())
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
    match status.restore.phase.as_str() {
        phase::NEW => {
            let now = jiff::Timestamp::now();
            match available_until(
                obj.spec.available_until.as_ref(),
                obj.spec.ttl.as_deref(),
                RESTORE_TTL,
                now,
            ) {
                Err(reason) => fail(&mut status, &reason, generation),
                Ok(t) if t <= now => fail(&mut status, messages::AVAILABLE_UNTIL_PAST, generation),
                Ok(t) => {
                    status.restore.preserve_until = Some(format_time(t));
                    status.restore.phase = phase::IN_QUEUE.into();
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
        phase::IN_QUEUE => run(&api, &obj, status, &ctx).await,
        phase::IN_PROGRESS => {
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
pub fn error_policy(obj: Arc<Restore>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.on_error(
        "restore",
        obj.as_ref(),
        err.0.event_reason(),
        &err.to_string(),
    )
}

fn format_time(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn fail(status: &mut RestoreCrStatus, reason: &str, generation: Option<i64>) {
    status.restore.phase = phase::FAILED.into();
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
    // The snapshot must be Completed (or at least present in the mirror when its CR is gone).
    let snapshots: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let snap_name = &obj.spec.backup_name;
    let snapshot = snapshots
        .get_opt(snap_name)
        .await
        .map_err(|e| ControllerError::kube(format!("reading snapshot {snap_name}"), e))?;
    let precheck = match &snapshot {
        Some(s) if s.status.as_ref().map(|st| st.phase.as_str()) != Some(phase::COMPLETED) => {
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
        fail(&mut status, &reason, generation);
        ctx.metrics.restore_finished(false, 0.0, 0);
        patch_status(api, &name, &status).await?;
        return expire(api, &name, &status).await;
    }
    status.restore.phase = phase::IN_PROGRESS.into();
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
    match restore(obj, snapshot.as_ref(), ctx).await {
        Ok(result) => {
            let keep = (
                status.restore.preserve_until.clone(),
                status.conditions.clone(),
            );
            status.restore = result;
            status.restore.preserve_until = keep.0;
            status.conditions = keep.1;
            status.restore.phase = phase::COMPLETED.into();
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
            set_finished(&mut status.conditions, true, "Completed", &msg, generation);
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
        }
    }
    patch_status(api, &name, &status).await?;
    expire(api, &name, &status).await
}

async fn restore(
    obj: &Restore,
    snapshot: Option<&Snapshot>,
    ctx: &Context,
) -> Result<crate::restore::RestoreStatus, String> {
    let spec = &obj.spec;
    let cluster = target::cluster(
        ctx,
        spec.kubeconfig.as_deref(),
        spec.kubeconfig_secret_ref.as_ref(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let preference = match spec
        .restore_preference_name
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        Some(p) => {
            let prefs: Api<RestorePreference> =
                Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
            let found = prefs
                .get_opt(p)
                .await
                .map_err(|e| format!("reading RestorePreference {p}: {e}"))?;
            Some(
                found
                    .ok_or_else(|| {
                        format!("RestorePreference {}/{p} not found", ctx.options.namespace)
                    })?
                    .spec,
            )
        }
        None => None,
    };
    let store_name = spec
        .objectstore_config
        .clone()
        .or_else(|| snapshot.and_then(|s| s.spec.objectstore_config.clone()))
        .filter(|s| !s.is_empty());
    let store = match store_name {
        Some(c) => Some(target::store(ctx, &c).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let job = RestoreJob {
        name: &obj.name_any(),
        spec,
        target: &cluster,
        git_dir: &ctx.options.git_dir(),
        preference: preference.as_ref(),
        store: store.as_ref(),
    };
    let result = work::run_restore(job).await.map_err(|e| e.to_string());
    result.map_err(|m| match spec.kubeconfig.as_deref() {
        Some(kc) => target::redact(&m, kc),
        None => m,
    })
}
