//! Applying a plan: create-only writes in the stage order of docs/design.md §6.5 with waits, and
//! the resulting Restore status.
//!
//! Owns: POST/PUT of planned objects with bounded concurrency per stage, the waits (CRD
//! `Established`, Namespace `Active`, PV/PVC `Bound`), and the outcome of every object. One
//! object's failure never stops the others. Must not touch: git, the preference.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::plan::{Action, Plan, PlanItem};
use super::rules::Stage;
use super::status::{Phase, RestoreStatus, excluded_entry, failed_entry};
use crate::cluster::{Cluster, ClusterError};

/// How a plan is applied.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Writes in flight at once within a stage.
    pub threads: usize,
    /// How long to wait for a CRD, Namespace or PV/PVC pair to become ready.
    pub wait_timeout: Duration,
    /// Poll interval of the waits.
    pub poll_interval: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            threads: 2,
            wait_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Created,
    AlreadyExisted,
    Updated,
    Excluded(String),
    Failed(String),
    /// Left out by the preference (counted only).
    Skipped,
}

/// The result of applying a plan: the status, and warnings (waits that timed out).
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// The restore's status.
    pub status: RestoreStatus,
    /// Waits that timed out, and other problems that did not fail the restore (e.g. the resourceVersion could not be read).
    pub warnings: Vec<String>,
}

/// The outcome each plan item gets without any write (everything but `create`/`update`).
fn static_outcome(item: &PlanItem) -> Option<Outcome> {
    match item.action {
        Action::Exists | Action::Differs => Some(Outcome::AlreadyExisted),
        Action::Excluded => Some(Outcome::Excluded(excluded_entry(
            item.path.as_str(),
            item.reason.as_deref().unwrap_or_default(),
        ))),
        Action::PreferenceExcluded => Some(Outcome::Skipped),
        Action::Unsupported => Some(Outcome::Failed(failed_entry(
            item.path.as_str(),
            item.reason
                .as_deref()
                .unwrap_or("kind not served by the target"),
        ))),
        Action::Create | Action::Update => None,
    }
}

/// The status a plan would give if every write succeeded (`restore --dry-run`).
pub fn dry_run_status(plan: &Plan) -> RestoreStatus {
    let outcomes: Vec<Outcome> = plan
        .items
        .iter()
        .map(|i| {
            static_outcome(i).unwrap_or(match i.action {
                Action::Update => Outcome::Updated,
                _ => Outcome::Created,
            })
        })
        .collect();
    status_from(plan, &outcomes)
}

/// Builds the status lists and counts from the outcomes (in plan order).
fn status_from(plan: &Plan, outcomes: &[Outcome]) -> RestoreStatus {
    let mut s = RestoreStatus {
        num_snapshot_contents: plan.summary.num_snapshot_contents,
        phase: Phase::Completed,
        ..Default::default()
    };
    fn push(list: &mut Option<Vec<String>>, n: &mut u64, entry: String) {
        list.get_or_insert_with(Vec::new).push(entry);
        *n += 1;
    }
    for (item, outcome) in plan.items.iter().zip(outcomes) {
        match outcome {
            Outcome::Created => push(&mut s.created, &mut s.num_created, item.path.to_string()),
            Outcome::AlreadyExisted => push(
                &mut s.already_existed,
                &mut s.num_already_existed,
                item.path.to_string(),
            ),
            Outcome::Updated => push(&mut s.updated, &mut s.num_updated, item.path.to_string()),
            Outcome::Excluded(e) => push(&mut s.excluded, &mut s.num_excluded, e.clone()),
            Outcome::Failed(e) => push(&mut s.failed, &mut s.num_failed, e.clone()),
            Outcome::Skipped => s.num_preference_excluded += 1,
        }
    }
    s
}

/// The API error's own words (`<Reason>: <message>`) for a `failed` entry; other errors whole.
fn failure_message(e: &ClusterError) -> String {
    match e {
        ClusterError::Api {
            code,
            reason,
            message,
            ..
        } => {
            if message.is_empty() {
                format!("{code} {reason}")
            } else {
                format!("{reason}: {message}")
            }
        }
        other => other.to_string(),
    }
}

/// POSTs (or PUTs, for `update`) one item.
async fn write(cluster: &Cluster, item: &PlanItem) -> Outcome {
    let Some(body) = &item.body else {
        return Outcome::Failed(failed_entry(item.path.as_str(), "nothing to write"));
    };
    let serialized = match item.action {
        Action::Update => {
            let mut b = body.value();
            // The PUT replaces the whole object: it keeps what the target generated and a
            // restore dropped (a Job's selector and labels, a Service's clusterIP and node
            // ports, ...), as the server-side diff's dry run does; servers refuse changes to
            // those immutable fields. The resourceVersion stays the planned one (set below),
            // so an object that changed since the plan is still refused.
            match cluster.get_json::<Value>(item.target_path().as_str()).await {
                Ok(live) => {
                    super::plan::prepare_replacement(&mut b, &live);
                    // Not in the dry run's preparation: there a claim whose spec differs is
                    // refused and keeps the local verdict, which shows the difference.
                    keep_claim_spec(&mut b, &live);
                }
                Err(e) => {
                    return Outcome::Failed(failed_entry(item.path.as_str(), &failure_message(&e)));
                }
            }
            if let (Some(meta), Some(rv)) = (
                b.get_mut("metadata").and_then(Value::as_object_mut),
                &item.live_resource_version,
            ) {
                meta.insert("resourceVersion".into(), Value::String(rv.clone()));
            }
            serde_json::to_vec(&b)
        }
        // The body is already the JSON text to send.
        _ => Ok(body.as_str().as_bytes().to_vec()),
    };
    let bytes = match serialized {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(failed_entry(item.path.as_str(), &e.to_string())),
    };
    // A converted object goes to its path on the target.
    let target = item.target_path().as_str();
    let (method, url) = match item.action {
        Action::Update => (http::Method::PUT, target),
        _ => (
            http::Method::POST,
            target.rsplit_once('/').map_or(target, |(c, _)| c),
        ),
    };
    match cluster
        .request_bytes(method, url, Some(bytes), Some("application/json"))
        .await
    {
        Ok(_) if item.action == Action::Update => Outcome::Updated,
        Ok(_) => Outcome::Created,
        Err(e) if e.code() == Some(409) && e.reason() == Some("AlreadyExists") => {
            Outcome::AlreadyExisted
        }
        Err(e) => {
            tracing::warn!(path = %item.path, error = %failure_message(&e), "restore of an object failed");
            Outcome::Failed(failed_entry(item.path.as_str(), &failure_message(&e)))
        }
    }
}

/// A PersistentVolumeClaim's spec cannot change after creation but for a bound claim's
/// `resources.requests`: an overwrite keeps the live spec (what the target defaulted and
/// bound included) with the body's requests, and changes the claim's metadata.
fn keep_claim_spec(body: &mut Value, live: &Value) {
    if body.get("kind").and_then(Value::as_str) != Some("PersistentVolumeClaim") {
        return;
    }
    let Some(live_spec) = live.get("spec") else {
        return;
    };
    let requests = body.pointer("/spec/resources/requests").cloned();
    body["spec"] = live_spec.clone();
    if let Some(r) = requests
        && live.pointer("/status/phase").and_then(Value::as_str) == Some("Bound")
    {
        body["spec"]["resources"]["requests"] = r;
    }
}

/// Polls `path` until `ready` holds for it or the timeout passes; `false` on timeout.
async fn wait_for(
    cluster: &Cluster,
    path: &str,
    opts: &ApplyOptions,
    ready: impl Fn(&Value) -> bool,
) -> bool {
    let deadline = Instant::now() + opts.wait_timeout;
    loop {
        if let Ok(v) = cluster.get_json::<Value>(path).await
            && ready(&v)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}

fn crd_established(v: &Value) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Established")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn phase_is(expected: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v.pointer("/status/phase").and_then(Value::as_str) == Some(expected)
}

/// Writes `indices` of the plan, `threads` at a time, recording outcomes.
async fn write_batch(
    cluster: &Cluster,
    plan: &Plan,
    indices: Vec<usize>,
    threads: usize,
    outcomes: &mut [Outcome],
) {
    let results: Vec<(usize, Outcome)> = stream::iter(indices)
        .map(|i| async move { (i, write(cluster, &plan.items[i]).await) })
        .buffer_unordered(threads.max(1))
        .collect()
        .await;
    for (i, o) in results {
        outcomes[i] = o;
    }
}

/// Waits (concurrently) for the created objects among `indices` to satisfy `ready`.
async fn wait_batch(
    cluster: &Cluster,
    plan: &Plan,
    indices: &[usize],
    outcomes: &[Outcome],
    opts: &ApplyOptions,
    what: &str,
    ready: &(dyn Fn(&Value) -> bool + Sync),
) -> Vec<String> {
    let mut warnings = Vec::new();
    let waits: Vec<(usize, bool)> = stream::iter(
        indices
            .iter()
            .copied()
            .filter(|&i| outcomes[i] == Outcome::Created),
    )
    .map(|i| async move {
        (
            i,
            wait_for(cluster, plan.items[i].target_path().as_str(), opts, |v| {
                ready(v)
            })
            .await,
        )
    })
    .buffer_unordered(opts.threads.max(1) * 4)
    .collect()
    .await;
    for (i, ok) in waits {
        if !ok {
            let w = format!(
                "{}: not {what} after {:?}",
                plan.items[i].path, opts.wait_timeout
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    warnings
}

/// Applies a plan to the target in stage order and returns the Restore status (phase
/// `Completed`; failures are listed per object, they never stop the restore).
pub async fn apply(cluster: &Cluster, plan: &Plan, opts: &ApplyOptions) -> ApplyReport {
    let mut outcomes: Vec<Outcome> = plan
        .items
        .iter()
        .map(|i| static_outcome(i).unwrap_or(Outcome::Skipped))
        .collect();
    let mut warnings = Vec::new();
    for stage in Stage::ALL {
        let indices: Vec<usize> = plan
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.stage == Some(stage) && matches!(i.action, Action::Create | Action::Update)
            })
            .map(|(n, _)| n)
            .collect();
        if indices.is_empty() {
            continue;
        }
        tracing::info!(?stage, objects = indices.len(), "restoring stage");
        let stage_started = Instant::now();
        match stage {
            Stage::Volumes => {
                let (pvs, pvcs): (Vec<usize>, Vec<usize>) = indices
                    .iter()
                    .partition(|&&i| plan.items[i].path.resource() == "persistentvolumes");
                write_batch(cluster, plan, pvs.clone(), opts.threads, &mut outcomes).await;
                write_batch(cluster, plan, pvcs.clone(), opts.threads, &mut outcomes).await;
                let bound = phase_is("Bound");
                warnings.extend(
                    wait_batch(cluster, plan, &pvcs, &outcomes, opts, "Bound", &bound).await,
                );
                warnings.extend(
                    wait_batch(cluster, plan, &pvs, &outcomes, opts, "Bound", &bound).await,
                );
            }
            Stage::Crds => {
                write_batch(cluster, plan, indices.clone(), opts.threads, &mut outcomes).await;
                warnings.extend(
                    wait_batch(
                        cluster,
                        plan,
                        &indices,
                        &outcomes,
                        opts,
                        "Established",
                        &crd_established,
                    )
                    .await,
                );
            }
            Stage::Namespaces => {
                write_batch(cluster, plan, indices.clone(), opts.threads, &mut outcomes).await;
                let active = phase_is("Active");
                warnings.extend(
                    wait_batch(cluster, plan, &indices, &outcomes, opts, "Active", &active).await,
                );
            }
            _ => write_batch(cluster, plan, indices, opts.threads, &mut outcomes).await,
        }
        tracing::debug!(?stage, elapsed = ?stage_started.elapsed(), "stage done");
    }
    let mut status = status_from(plan, &outcomes);
    // The target's resourceVersion and time once everything is written (read-only).
    #[derive(serde::Deserialize)]
    struct ListMeta {
        #[serde(default, rename = "resourceVersion")]
        resource_version: String,
    }
    #[derive(serde::Deserialize)]
    struct List {
        metadata: ListMeta,
    }
    match cluster.get_json::<List>("/api/v1/namespaces?limit=1").await {
        Ok(l) => status.restore_resource_version = l.metadata.resource_version,
        Err(e) => warnings.push(format!("reading the target's resourceVersion: {e}")),
    }
    let now = jiff::Timestamp::now();
    status.restore_timestamp = jiff::Timestamp::from_second(now.as_second())
        .ok()
        .map(|t| t.to_string());
    ApplyReport { status, warnings }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn an_overwritten_claim_keeps_its_live_spec_but_for_a_bound_claims_requests() {
        let live = json!({"kind": "PersistentVolumeClaim", "status": {"phase": "Bound"},
            "spec": {"volumeName": "pv-1", "storageClassName": "fast",
                "resources": {"requests": {"storage": "1Gi"}}}});
        let mut body = json!({"kind": "PersistentVolumeClaim", "metadata": {"labels": {"a": "b"}},
            "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "2Gi"}}}});
        super::keep_claim_spec(&mut body, &live);
        assert_eq!(body["spec"]["volumeName"], "pv-1");
        assert_eq!(body["spec"]["resources"]["requests"]["storage"], "2Gi");
        assert_eq!(body["metadata"]["labels"]["a"], "b");
        let mut pending = live.clone();
        pending["status"]["phase"] = json!("Pending");
        let mut body2 = body.clone();
        super::keep_claim_spec(&mut body2, &pending);
        assert_eq!(body2["spec"]["resources"]["requests"]["storage"], "1Gi");
        let mut cm = json!({"kind": "ConfigMap", "spec": 1});
        super::keep_claim_spec(&mut cm, &live);
        assert_eq!(cm["spec"], 1);
    }
}
