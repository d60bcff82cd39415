//! The SnapshotSchedule reconciler: creates Snapshot CRs `<schedule>-<yyyymmddhhmmss>` on a
//! cron schedule (CronJob semantics: one catch-up run within `startingDeadlineSeconds`, never
//! a burst; `Forbid` skips a run while the previous is unfinished; `paused`), applies the
//! retention policy (`crate::retention`, the same as `k8s-snap prune`) to its own Snapshots,
//! and writes the schedule's status.
//!
//! Owns: the schedule's decisions and status, the label and ownerReference of its Snapshots.
//! Must not touch: Snapshots it did not create (label and owner uid both checked), the mirror
//! or the store (a deleted Snapshot's data goes with it through the Snapshot finalizer).
//! Time comes from the injectable [`Clock`] in `ControllerOptions`, so tests run a day of
//! hourly runs in seconds.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::crd::{Snapshot, condition, set_condition};
use super::metrics::{ScheduleLabel, ScheduleRunLabels};
use super::schedule_crd::{ConcurrencyPolicy, SnapshotSchedule};
use super::{Context, ControllerError};
use crate::restore::status::Phase;
use crate::retention::{self, Item, State};

/// The label naming the schedule that created a Snapshot.
pub const SCHEDULE_LABEL: &str = "clustersnapshot.rywt.io/schedule";
/// The annotation holding a scheduled Snapshot's scheduled time (RFC 3339).
pub const SCHEDULED_TIME_ANNOTATION: &str = "clustersnapshot.rywt.io/scheduled-time";
/// Most due times counted when working out missed runs (a schedule down for long).
const MAX_DUE: u64 = 10_000;
/// Longest real wait between two reconciles of a schedule (clocks drift).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Where the reconciler's time comes from.
pub trait Clock: std::fmt::Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// The real time to wait until `d` of this clock's time has passed.
    fn wait(&self, d: Duration) -> Duration {
        d
    }
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock shared by the reconcilers.
pub type SharedClock = Arc<dyn Clock>;

/// A parsed `schedule` in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
}

impl Schedule {
    /// Parses a 5-field cron expression or `@hourly`-style nickname in the IANA `time_zone`
    /// (default UTC). The error names the field at fault.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        use croner::parser::{CronParser, Seconds, Year};
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr.trim())
            .map_err(|e| format!("spec.schedule {expr:?}: {e}"))?;
        let tz = match time_zone.map(str::trim).filter(|z| !z.is_empty()) {
            None => TimeZone::UTC,
            Some(z) => TimeZone::get(z)
                .map_err(|e| format!("spec.timeZone {z:?}: not a known IANA time zone ({e})"))?,
        };
        Ok(Schedule { cron, tz })
    }

    /// The time zone of the schedule.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The scheduled times in `(after, now]`: how many (counted up to a cap) and the latest.
    pub fn due(&self, after: Timestamp, now: Timestamp) -> (u64, Option<Timestamp>) {
        let mut count = 0;
        let mut latest = None;
        let mut t = after;
        while let Some(next) = self.next_after(t) {
            if next > now || count >= MAX_DUE {
                break;
            }
            count += 1;
            latest = Some(next);
            t = next;
        }
        if count >= MAX_DUE {
            // Too many to walk: the latest is the last one at or before `now`.
            latest = self
                .cron
                .find_previous_occurrence(&now.to_zoned(self.tz.clone()), true)
                .ok()
                .map(|z| z.timestamp())
                .or(latest);
        }
        (count, latest)
    }
}

/// What a reconcile does about due runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is due (or the schedule is paused).
    Wait,
    /// Start the run of `at`; `missed` earlier due times are passed over (never a burst).
    Start {
        /// The due time of the run.
        at: Timestamp,
        /// Earlier due times passed over.
        missed: u64,
    },
    /// The latest due run is past `startingDeadlineSeconds`: `missed` runs are missed.
    TooLate {
        /// The latest due time.
        at: Timestamp,
        /// Runs missed.
        missed: u64,
    },
    /// `Forbid` and a run is unfinished: the `missed` due runs (the latest `at`) are skipped.
    Overlap {
        /// The latest due time.
        at: Timestamp,
        /// Due runs skipped.
        missed: u64,
    },
}

/// The CronJob decision: the due times after `earliest` up to `now`, at most one run.
pub fn plan(
    schedule: &Schedule,
    earliest: Timestamp,
    now: Timestamp,
    deadline_seconds: Option<i64>,
    active: usize,
    policy: ConcurrencyPolicy,
    paused: bool,
) -> Plan {
    if paused {
        return Plan::Wait;
    }
    let (count, latest) = schedule.due(earliest, now);
    let Some(at) = latest else {
        return Plan::Wait;
    };
    if let Some(d) = deadline_seconds
        && now.duration_since(at) > jiff::SignedDuration::from_secs(d.max(0))
    {
        return Plan::TooLate { at, missed: count };
    }
    if policy == ConcurrencyPolicy::Forbid && active > 0 {
        return Plan::Overlap { at, missed: count };
    }
    Plan::Start {
        at,
        missed: count.saturating_sub(1),
    }
}

/// Errors of one reconcile (a bad spec becomes status, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A controller error.
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// Reconciles one SnapshotSchedule.
pub fn reconcile(
    obj: Arc<SnapshotSchedule>,
    ctx: Arc<Context>,
) -> futures::future::BoxFuture<'static, Result<Action, ScheduleError>> {
    ctx.reconcile_tracked("snapshotschedule", obj, reconcile_inner)
}

/// Retries with the shared backoff, one WARN line and Event per distinct error.
pub fn error_policy(obj: Arc<SnapshotSchedule>, err: &ScheduleError, ctx: Arc<Context>) -> Action {
    let ScheduleError::Controller(e) = err;
    ctx.on_error(
        "snapshotschedule",
        obj.as_ref(),
        e.event_reason(),
        &err.to_string(),
    )
}

fn time_of(s: &Snapshot) -> Option<Timestamp> {
    s.annotations()
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|t| t.parse().ok())
        .or_else(|| s.meta().creation_timestamp.as_ref().map(|t| t.0))
}

fn phase_of(s: &Snapshot) -> &Phase {
    static NEW: Phase = Phase::New;
    s.status.as_ref().map_or(&NEW, |st| &st.phase)
}

fn is_finished(s: &Snapshot) -> bool {
    matches!(phase_of(s), Phase::Completed | Phase::Failed)
}

async fn reconcile_inner(
    obj: Arc<SnapshotSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, ScheduleError> {
    let ns = ctx.options.namespace.clone();
    let name = obj.name_any();
    let api: Api<SnapshotSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let snaps: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(sched) = super::fresh(&api, "snapshotschedule", &name).await? else {
        return Ok(Action::await_change());
    };
    let clock = ctx.options.clock.clone();
    let now = clock.now();
    let generation = sched.metadata.generation;
    let uid = sched.metadata.uid.clone().unwrap_or_default();
    let mut status = sched.status.clone().unwrap_or_default();
    let spec = &sched.spec;
    let label = ScheduleLabel {
        schedule: name.clone(),
    };

    // This schedule's Snapshots: its label and its uid as owner (never anyone else's).
    let children: Vec<Snapshot> = snaps
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .map_err(|e| ControllerError::kube(format!("listing the snapshots of schedule {name}"), e))?
        .items
        .into_iter()
        .filter(|s| {
            s.owner_references().iter().any(|o| o.uid == uid)
                && s.meta().deletion_timestamp.is_none()
        })
        .collect();
    let mut active: Vec<String> = children
        .iter()
        .filter(|s| !is_finished(s))
        .map(ResourceExt::name_any)
        .collect();
    active.sort();

    // The last run's result, counted once.
    if let Some(last) = status.last_snapshot.clone()
        && let Some(child) = children.iter().find(|s| s.name_any() == last)
        && is_finished(child)
        && status.last_snapshot_phase.as_deref() != Some(phase_of(child).as_str())
    {
        let ok = *phase_of(child) == Phase::Completed;
        status.last_snapshot_phase = Some(phase_of(child).to_string());
        ctx.metrics
            .schedule_runs
            .get_or_create(&ScheduleRunLabels {
                schedule: name.clone(),
                result: if ok { "completed" } else { "failed" }.into(),
            })
            .inc();
        if ok {
            set_condition(
                &mut status.conditions,
                condition::READY,
                true,
                "LastRunSucceeded",
                &format!("snapshot {last} completed"),
                generation,
            );
        } else {
            let why = child.status.as_ref().map_or("", |s| s.reason.as_str());
            let message = format!("snapshot {last} failed: {why}");
            set_condition(
                &mut status.conditions,
                condition::READY,
                false,
                "LastRunFailed",
                &message,
                generation,
            );
            ctx.publish(
                sched.object_ref(&()),
                EventType::Warning,
                "RunFailed",
                &message,
            );
        }
    }
    if let Some(newest) = children
        .iter()
        .filter(|s| *phase_of(s) == Phase::Completed)
        .filter_map(time_of)
        .max()
        && status
            .last_successful_time
            .as_ref()
            .is_none_or(|t| t.0 < newest)
    {
        status.last_successful_time = Some(Time(newest));
    }
    if let Some(t) = &status.last_successful_time {
        ctx.metrics
            .schedule_last_success
            .get_or_create(&label)
            .set(t.0.as_second());
    }

    let parsed = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(_) if name.len() > 63 => Err(format!(
            "the schedule's name is longer than 63 characters: it cannot be the value of the label {SCHEDULE_LABEL}"
        )),
        other => other,
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(message) => {
            status.next_schedule_time = None;
            status.active = active;
            set_condition(
                &mut status.conditions,
                condition::READY,
                false,
                "InvalidSchedule",
                &message,
                generation,
            );
            super::patch_status(&api, "snapshotschedule", &name, &status).await?;
            return Ok(Action::await_change());
        }
    };

    // Retention over this schedule's Snapshots, after a success (idempotent: a policy that
    // kept a set keeps it again).
    if let Some(policy) = spec.retention.map(|r| r.policy()).filter(|p| !p.is_empty())
        && children.iter().any(|s| *phase_of(s) == Phase::Completed)
    {
        let items: Vec<Item> = children
            .iter()
            .filter_map(|s| {
                Some(Item {
                    name: s.name_any(),
                    time: time_of(s)?,
                    state: match phase_of(s) {
                        Phase::Completed => State::Completed,
                        Phase::Failed => State::Failed,
                        _ => State::Running,
                    },
                })
            })
            .collect();
        if let Ok(decisions) = retention::apply(&policy, &items, parsed.time_zone()) {
            let mut removed = Vec::new();
            for d in decisions.iter().filter(|d| !d.keep) {
                match snaps.delete(&d.name, &DeleteParams::default()).await {
                    Ok(_) => removed.push(format!("{} ({})", d.name, d.reasons[0])),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(ControllerError::kube(
                            format!(
                                "deleting snapshot {} (retention of schedule {name})",
                                d.name
                            ),
                            e,
                        )
                        .into());
                    }
                }
            }
            if !removed.is_empty() {
                tracing::info!(schedule = %name, removed = ?removed, "retention");
                ctx.publish(
                    sched.object_ref(&()),
                    EventType::Normal,
                    "Pruned",
                    &format!("retention deleted {}", removed.join(", ")),
                );
            }
        }
    }

    // The run due now, if any.
    let created = sched.meta().creation_timestamp.as_ref().map(|t| t.0);
    let earliest = [
        status.last_schedule_time.as_ref().map(|t| t.0),
        status.last_missed_time.as_ref().map(|t| t.0),
        created,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(now);
    let decision = plan(
        &parsed,
        earliest,
        now,
        spec.starting_deadline_seconds,
        active.len(),
        spec.concurrency_policy,
        spec.paused,
    );
    let mut missed = 0;
    match decision {
        Plan::Wait => {}
        Plan::Start { at, missed: m } => {
            let child = new_snapshot(&sched, at);
            let child_name = child.name_any();
            match snaps.create(&PostParams::default(), &child).await {
                Ok(_) => {}
                // Created by an earlier reconcile whose status write was lost.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(ControllerError::kube(
                        format!("creating snapshot {child_name} of schedule {name}"),
                        e,
                    )
                    .into());
                }
            }
            tracing::info!(schedule = %name, snapshot = %child_name, "scheduled run started");
            ctx.publish(
                sched.object_ref(&()),
                EventType::Normal,
                "SnapshotCreated",
                &format!("created snapshot {child_name} for {at}"),
            );
            status.last_schedule_time = Some(Time(at));
            status.last_snapshot = Some(child_name.clone());
            status.last_snapshot_phase = None;
            if !active.contains(&child_name) {
                active.push(child_name);
                active.sort();
            }
            missed = m;
        }
        Plan::TooLate { at, missed: m } => {
            status.last_missed_time = Some(Time(at));
            missed = m;
            ctx.publish(
                sched.object_ref(&()),
                EventType::Warning,
                "MissedSchedule",
                &format!(
                    "missed the run of {at}: more than startingDeadlineSeconds ({}) late",
                    spec.starting_deadline_seconds.unwrap_or_default()
                ),
            );
        }
        Plan::Overlap { at, missed: m } => {
            status.last_missed_time = Some(Time(at));
            missed = m;
            ctx.metrics
                .schedule_runs
                .get_or_create(&ScheduleRunLabels {
                    schedule: name.clone(),
                    result: "skipped".into(),
                })
                .inc();
            ctx.publish(
                sched.object_ref(&()),
                EventType::Warning,
                "Skipped",
                &format!(
                    "skipped the run of {at}: concurrencyPolicy Forbid and {} still running",
                    active.join(", ")
                ),
            );
        }
    }
    if missed > 0 {
        status.missed_runs = status.missed_runs.saturating_add(missed);
        ctx.metrics
            .schedule_missed_runs
            .get_or_create(&label)
            .inc_by(missed);
        set_condition(
            &mut status.conditions,
            condition::READY,
            false,
            "MissedRuns",
            &format!(
                "{missed} run(s) missed or skipped (total {})",
                status.missed_runs
            ),
            generation,
        );
    }
    status.active = active;
    let next = (!spec.paused).then(|| parsed.next_after(now)).flatten();
    status.next_schedule_time = next.map(Time);
    if spec.paused {
        set_condition(
            &mut status.conditions,
            condition::READY,
            true,
            "Paused",
            "paused: no new runs",
            generation,
        );
    } else if !status.conditions.iter().any(|c| {
        c.type_ == condition::READY && c.reason != "Paused" && c.reason != "InvalidSchedule"
    }) {
        set_condition(
            &mut status.conditions,
            condition::READY,
            true,
            "Scheduled",
            "waiting for the next run",
            generation,
        );
    }
    if sched.status.as_ref() != Some(&status) {
        super::patch_status(&api, "snapshotschedule", &name, &status).await?;
    }
    Ok(match next {
        None => Action::await_change(),
        Some(t) => {
            let left = t.duration_since(now).as_secs_f64().max(0.0);
            let wait = clock.wait(Duration::from_secs_f64(left)).min(MAX_WAIT);
            Action::requeue(wait.max(Duration::from_millis(10)))
        }
    })
}

/// The Snapshot of the run scheduled at `at`: the template, the schedule's own fields over it,
/// owned by and labelled with the schedule.
pub fn new_snapshot(sched: &SnapshotSchedule, at: Timestamp) -> Snapshot {
    let spec = &sched.spec;
    let name = crate::mirror::timestamped_name(&sched.name_any(), at);
    let mut s = spec.snapshot_template.clone().unwrap_or_default();
    // An absolute time in a template would expire every run at once: `ttl` is the way.
    s.available_until = None;
    if !spec.cluster_name.is_empty() {
        s.cluster_name = spec.cluster_name.clone();
    }
    if spec.kubeconfig.is_some() || spec.kubeconfig_secret_ref.is_some() {
        s.kubeconfig = spec.kubeconfig.clone();
        s.kubeconfig_secret_ref = spec.kubeconfig_secret_ref.clone();
    }
    if spec.objectstore_config.is_some() {
        s.objectstore_config = spec.objectstore_config.clone();
    }
    if spec.ttl.is_some() {
        s.ttl = spec.ttl.clone();
    }
    if spec.encryption.is_some() {
        s.encryption = spec.encryption.clone();
    }
    let mut snap = Snapshot::new(&name, s);
    snap.metadata.namespace = sched.namespace();
    snap.metadata.labels = Some([(SCHEDULE_LABEL.to_string(), sched.name_any())].into());
    snap.metadata.annotations =
        Some([(SCHEDULED_TIME_ANNOTATION.to_string(), at.to_string())].into());
    snap.metadata.owner_references = sched.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        vec![o]
    });
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cron_nicknames_and_time_zones() {
        let s = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-03-01T10:20:00Z")),
            Some(ts("2026-03-01T11:00:00Z"))
        );
        let s = Schedule::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
        // 03:00 in Berlin (UTC+1 in winter) is 02:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-01-10T12:00:00Z")),
            Some(ts("2026-01-11T02:00:00Z"))
        );
        for (expr, tz) in [
            ("61 * * * *", None),
            ("* * * *", None),
            ("0 0 * * * *", None),
            ("@daily", Some("Mars/Olympus")),
        ] {
            let e = Schedule::parse(expr, tz).unwrap_err();
            assert!(e.starts_with("spec."), "{e}");
        }
    }

    #[test]
    fn the_schedules_own_fields_win_over_the_template_encryption_included() {
        use super::super::crd::SnapshotSpec;
        use super::super::encryption::{EncryptionSpec, KeyRef};
        use super::super::schedule_crd::SnapshotScheduleSpec;
        let enc = |r: &str| EncryptionSpec {
            recipients: vec![r.to_owned()],
            ..Default::default()
        };
        let template = SnapshotSpec {
            cluster_name: "from-template".into(),
            ttl: Some("1h".into()),
            objectstore_config: Some("template-store".into()),
            encryption: Some(EncryptionSpec {
                paths: vec!["configmaps:data".into()],
                ..enc("age1template")
            }),
            ..Default::default()
        };
        let mut sched = SnapshotSchedule::new(
            "nightly",
            SnapshotScheduleSpec {
                schedule: "@daily".into(),
                snapshot_template: Some(template.clone()),
                ..Default::default()
            },
        );
        sched.metadata.namespace = Some("k8s-snap".into());
        sched.metadata.uid = Some("u-1".into());
        let at = ts("2026-03-01T03:00:00Z");

        // Only the template: its encryption is kept.
        let s = new_snapshot(&sched, at).spec;
        assert_eq!(s.encryption, template.encryption);
        assert_eq!(s.cluster_name, "from-template");

        // The schedule's own `encryption` replaces the template's as a whole (its paths too),
        // like clusterName, objectstoreConfig and ttl.
        sched.spec.encryption = Some(EncryptionSpec {
            recipients_secret_ref: Some(KeyRef {
                name: "schedule-recipients".into(),
                key: None,
            }),
            ..enc("age1schedule")
        });
        sched.spec.cluster_name = "prod".into();
        sched.spec.ttl = Some("48h".into());
        let snap = new_snapshot(&sched, at);
        assert_eq!(snap.spec.encryption, sched.spec.encryption);
        assert_eq!(snap.spec.cluster_name, "prod");
        assert_eq!(snap.spec.ttl.as_deref(), Some("48h"));
        assert_eq!(
            snap.spec.objectstore_config.as_deref(),
            Some("template-store")
        );
        assert_eq!(snap.metadata.namespace.as_deref(), Some("k8s-snap"));
        assert_eq!(
            snap.metadata.labels.unwrap()[SCHEDULE_LABEL],
            "nightly",
            "labelled with its schedule"
        );

        // No template: the schedule's own.
        sched.spec.snapshot_template = None;
        let s = new_snapshot(&sched, at).spec;
        assert_eq!(s.encryption, sched.spec.encryption);
        // Neither: none (the ObjectstoreConfig's applies when the Snapshot runs).
        sched.spec.encryption = None;
        assert_eq!(new_snapshot(&sched, at).spec.encryption, None);
    }

    #[test]
    fn catches_up_once_within_the_deadline_and_never_bursts() {
        let s = Schedule::parse("@hourly", None).unwrap();
        let last = ts("2026-03-01T10:00:00Z");
        // Down for 3h20m: three runs due; the latest started, two passed over.
        let now = ts("2026-03-01T13:20:00Z");
        let at = ts("2026-03-01T13:00:00Z");
        use ConcurrencyPolicy::{Allow, Forbid};
        // (deadline, running, policy, suspended) -> the plan at `now`.
        let cases = [
            ((None, 0, Forbid, false), Plan::Start { at, missed: 2 }),
            (
                (Some(3600), 0, Forbid, false),
                Plan::Start { at, missed: 2 },
            ),
            // Past the deadline: none.
            (
                (Some(600), 0, Forbid, false),
                Plan::TooLate { at, missed: 3 },
            ),
            ((None, 1, Forbid, false), Plan::Overlap { at, missed: 3 }),
            ((None, 1, Allow, false), Plan::Start { at, missed: 2 }),
            ((None, 0, Forbid, true), Plan::Wait),
        ];
        for ((deadline, running, policy, suspended), want) in cases {
            assert_eq!(
                plan(&s, last, now, deadline, running, policy, suspended),
                want,
                "{deadline:?} {running} {policy:?} {suspended}"
            );
        }
        assert_eq!(
            plan(&s, last, ts("2026-03-01T10:59:59Z"), None, 0, Forbid, false),
            Plan::Wait
        );
    }
}
