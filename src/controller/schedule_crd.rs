//! The SnapshotSchedule custom resource (`clustersnapshot.rywt.io/v1alpha1`): a cron schedule
//! of Snapshots with a retention policy, its status and printer columns (SCHEDULE, PAUSED,
//! LAST SUCCESS, NEXT). Generated into `deploy/crd.yaml` with the others by `crd::crds`.
//!
//! Owns: the SnapshotSchedule field names on the wire. Must not touch: the cluster, the
//! mirror, the store (the reconciler is `controller::schedule`).

// Several `printcolumn(type_ = ..)` items are not duplicates (clippy misreads the derive).
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::crd::{SecretKeyRef, SnapshotSpec};

/// Takes Snapshots on a cron schedule and keeps those a retention policy keeps.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "clustersnapshot.rywt.io",
    version = "v1alpha1",
    kind = "SnapshotSchedule",
    plural = "snapshotschedules",
    namespaced,
    status = "SnapshotScheduleStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Snapshots of a cluster on a cron schedule, with a retention policy.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleSpec {
    /// 5-field cron (`0 3 * * *`) or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub schedule: String,
    /// IANA time zone of the schedule and of the retention buckets (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Name of the snapshotted cluster (recorded with each snapshot).
    #[serde(default)]
    pub cluster_name: String,
    /// Inline kubeconfig of the cluster to snapshot (default: the controller's own cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// A Secret key holding the kubeconfig (instead of `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// Name of the ObjectstoreConfig the snapshots are pushed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectstore_config: Option<String>,
    /// How long to keep each snapshot (default 720h); applies besides `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Seal the snapshots' Secret values to these recipients (docs/encryption.md); wins over
    /// `snapshotTemplate.encryption`. Neither set: the ObjectstoreConfig's `encryption`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<super::encryption::EncryptionSpec>,
    /// Which of this schedule's snapshots to keep after each successful run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// No new runs while true.
    #[serde(default)]
    pub paused: bool,
    /// A run not started within this many seconds of its time is missed (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// `Forbid` (default): skip a run while the previous one is unfinished; `Allow`: run anyway.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Fields of the Snapshots' spec; the fields above win over the same fields here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_template: Option<SnapshotSpec>,
}

/// Retention of a schedule's snapshots: restic's `forget` rules (see `crate::retention`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep the `n` newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
}

impl RetentionSpec {
    /// The policy these fields give (absent rules are off).
    pub fn policy(&self) -> crate::retention::Policy {
        crate::retention::Policy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
        }
    }
}

/// What to do when a run is due while the previous one is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the run (counted as missed).
    #[default]
    Forbid,
    /// Start it anyway.
    Allow,
}

/// Status of a SnapshotSchedule. Every field is written on each status apply (an unset one as
/// `null`, all are nullable), so that a field the controller no longer sets goes away.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleStatus {
    /// The scheduled time of the last run started.
    #[serde(default)]
    pub last_schedule_time: Option<Time>,
    /// The scheduled time of the newest run that completed.
    #[serde(default)]
    pub last_successful_time: Option<Time>,
    /// When the next run is due (absent while paused).
    #[serde(default)]
    pub next_schedule_time: Option<Time>,
    /// The Snapshot of the last run started.
    #[serde(default)]
    pub last_snapshot: Option<String>,
    /// The phase of `lastSnapshot` when it last finished (`Completed` or `Failed`).
    #[serde(default)]
    pub last_snapshot_phase: Option<String>,
    /// This schedule's Snapshots not finished yet (always written, `[]` when none).
    #[serde(default)]
    pub active: Vec<String>,
    /// Runs missed (past `startingDeadlineSeconds`, passed over while the controller was
    /// down, or skipped by `Forbid`), in total.
    #[serde(default)]
    pub missed_runs: u64,
    /// The scheduled time of the last run missed or skipped.
    #[serde(default)]
    pub last_missed_time: Option<Time>,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
