//! SnapshotSchedules end to end against the management emulator (or a real cluster): the
//! controller runs in-process with a test clock, so hours of `@hourly` runs pass in seconds;
//! the Snapshots are real (taken and, with a store, pushed to moto).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_snap::controller::Snapshot;
use k8s_snap::controller::schedule::{Clock, SCHEDULE_LABEL};
use k8s_snap::controller::schedule_crd::{RetentionSpec, SnapshotSchedule, SnapshotScheduleSpec};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};

use crate::controller::{Management, NS, wait_for};

/// A clock the test moves; the reconciler polls it every 100 ms of real time.
#[derive(Debug)]
struct TestClock(Mutex<Timestamp>);

impl TestClock {
    fn new(t: Timestamp) -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(t)))
    }
    fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    fn wait(&self, d: Duration) -> Duration {
        d.min(Duration::from_millis(100))
    }
}

/// The first full hour after the real time now (the schedule's creation time is real).
fn next_hour() -> Timestamp {
    let now = Timestamp::now().as_second();
    Timestamp::from_second((now / 3600 + 1) * 3600).unwrap()
}

fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y%m%d%H%M%S").to_string()
}

async fn create_schedule(mgmt: &Management, name: &str, spec: SnapshotScheduleSpec) {
    let api: Api<SnapshotSchedule> = Api::namespaced(mgmt.client().await, &NS);
    let mut s = SnapshotSchedule::new(name, spec);
    s.metadata.namespace = Some(NS.into());
    api.create(&PostParams::default(), &s).await.unwrap();
}

async fn schedule(mgmt: &Management, name: &str) -> SnapshotSchedule {
    let api: Api<SnapshotSchedule> = Api::namespaced(mgmt.client().await, &NS);
    api.get(name).await.unwrap()
}

/// The names of the Snapshots schedule `name` created (labelled and owned), sorted.
async fn children(mgmt: &Management, name: &str) -> Vec<String> {
    let api = mgmt.snapshots().await;
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| {
            s.metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty())
        })
        .map(|s| s.metadata.name.unwrap())
        .collect();
    names.sort();
    names
}

async fn completed(api: &Api<Snapshot>, name: &str) {
    let s = crate::controller::phase_of(api, name, &["Completed", "Failed"]).await;
    assert_eq!(
        s.status.as_ref().unwrap().phase,
        "Completed",
        "{name}: {:?}",
        s.status
    );
}

fn mirror_snapshots(data: &std::path::Path) -> Vec<String> {
    let dir = data.join("mirror.git");
    if !dir.exists() {
        return Vec::new();
    }
    let mut names: Vec<String> = k8s_snap::mirror::Mirror::open(&dir)
        .unwrap()
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_keep_last_3_over_six_hours_then_paused() {
    let moto = crate::store_support::Moto::start();
    let mgmt = Management::start().await;
    crate::controller::store_config(&mgmt, &moto).await;
    let start = next_hour();
    let clock = TestClock::new(start - SignedDuration::from_mins(30));
    let c = clock.clone();
    let ctl = mgmt
        .controller_tweaked(
            "sched",
            &[
                "--housekeepstore=false",
                "--restoresnapshots=false",
                "--createbucket",
            ],
            move |o| o.clock = c,
        )
        .await;
    create_schedule(
        &mgmt,
        "hourly",
        SnapshotScheduleSpec {
            schedule: "@hourly".into(),
            cluster_name: "mgmt".into(),
            objectstore_config: Some("s3".into()),
            retention: Some(RetentionSpec {
                keep_last: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let snaps = mgmt.snapshots().await;
    // A Snapshot with the schedule's label that the schedule did not create: never touched.
    let mut manual = crate::controller::snapshot(
        "hourly-manual",
        k8s_snap::controller::SnapshotSpec {
            cluster_name: "mgmt".into(),
            ..Default::default()
        },
    );
    manual.metadata.labels = Some([(SCHEDULE_LABEL.to_string(), "hourly".to_string())].into());
    snaps.create(&PostParams::default(), &manual).await.unwrap();
    completed(&snaps, "hourly-manual").await;
    let mut names = Vec::new();
    for i in 0..6 {
        let at = start + hours(i);
        clock.set(at + SignedDuration::from_mins(1));
        let name = format!("hourly-{}", stamp(at));
        wait_for(
            Duration::from_secs(20),
            &format!("{name} created"),
            || async { snaps.get_opt(&name).await.ok().flatten() },
        )
        .await;
        completed(&snaps, &name).await;
        // Owned by the schedule and labelled.
        let s = snaps.get(&name).await.unwrap();
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()[SCHEDULE_LABEL],
            "hourly"
        );
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("SnapshotSchedule", "hourly")
        );
        assert_eq!(s.spec.cluster_name, "mgmt");
        names.push(name);
    }
    let newest: Vec<String> = names[3..].to_vec();
    wait_for(
        Duration::from_secs(20),
        "retention leaves the 3 newest",
        || async { (children(&mgmt, "hourly").await == newest).then_some(()) },
    )
    .await;
    // Their data goes with them: the mirror and the store hold exactly the 3 newest.
    wait_for(
        Duration::from_secs(20),
        "the mirror holds the 3 newest",
        || async {
            let mut mirror = mirror_snapshots(&ctl.data);
            mirror.retain(|n| n != "hourly-manual");
            (mirror == newest).then_some(())
        },
    )
    .await;
    wait_for(
        Duration::from_secs(20),
        "the store holds the 3 newest",
        || async {
            let mut stored: Vec<String> = crate::controller::stored(&moto)
                .await
                .into_iter()
                .map(|s| s.name)
                .collect();
            stored.sort();
            (stored == newest).then_some(())
        },
    )
    .await;
    let st = wait_for(Duration::from_secs(10), "status caught up", || async {
        let st = schedule(&mgmt, "hourly").await.status?;
        (st.last_snapshot_phase.as_deref() == Some("Completed")).then_some(st)
    })
    .await;
    let last = start + hours(5);
    assert_eq!(st.last_schedule_time.unwrap().0, last);
    assert_eq!(st.last_successful_time.unwrap().0, last);
    assert_eq!(st.next_schedule_time.unwrap().0, last + hours(1));
    assert_eq!(st.last_snapshot.as_deref(), Some(names[5].as_str()));
    assert!(st.active.is_empty(), "{:?}", st.active);
    assert_eq!(st.missed_runs, 0);

    let (_, text) = ctl.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "k8s_snap_schedule_runs_total{schedule=\"hourly\",result=\"completed\"}"
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "k8s_snap_schedule_last_success_timestamp_seconds{schedule=\"hourly\"}"
        ),
        Some(last.as_second() as f64)
    );

    // kubectl shows the columns.
    let listed = mgmt.kubectl(&["get", "snapshotschedules", "-n", &NS]);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SCHEDULE", "PAUSED", "LAST", "SUCCESS", "NEXT"],
        "{listed}"
    );
    let row = listed.lines().nth(1).unwrap();
    assert!(
        row.starts_with("hourly") && row.contains("@hourly"),
        "{listed}"
    );
    assert!(row.contains(&(last + hours(1)).to_string()), "{listed}");

    // Paused: no new runs, no next time.
    let api: Api<SnapshotSchedule> = Api::namespaced(mgmt.client().await, &NS);
    api.patch(
        "hourly",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(10), "paused in the status", || async {
        let st = schedule(&mgmt, "hourly").await.status?;
        st.next_schedule_time.is_none().then_some(())
    })
    .await;
    clock.set(start + hours(8) + SignedDuration::from_mins(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        children(&mgmt, "hourly").await,
        newest,
        "no run while paused"
    );
    let listed = mgmt.kubectl(&["get", "snapshotschedules", "-n", &NS]);
    assert!(listed.lines().nth(1).unwrap().contains("true"), "{listed}");

    // Resumed with a new schedule: it takes effect for the next run (the latest run due
    // while paused is taken once, as a resumed CronJob does).
    api.patch(
        "hourly",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"paused": false, "schedule": "30 * * * *"}})),
    )
    .await
    .unwrap();
    let resumed = format!(
        "hourly-{}",
        stamp(start + hours(7) + SignedDuration::from_mins(30))
    );
    wait_for(
        Duration::from_secs(20),
        "the run after resuming",
        || async { snaps.get_opt(&resumed).await.ok().flatten() },
    )
    .await;
    completed(&snaps, &resumed).await;
    clock.set(start + hours(8) + SignedDuration::from_mins(31));
    let edited = format!(
        "hourly-{}",
        stamp(start + hours(8) + SignedDuration::from_mins(30))
    );
    wait_for(
        Duration::from_secs(20),
        "the run of the edited schedule",
        || async { snaps.get_opt(&edited).await.ok().flatten() },
    )
    .await;
    completed(&snaps, &edited).await;
    let mut want = vec![names[5].clone(), resumed, edited];
    want.sort();
    wait_for(
        Duration::from_secs(20),
        "retention after the edit",
        || async { (children(&mgmt, "hourly").await == want).then_some(()) },
    )
    .await;
    let manual = snaps.get("hourly-manual").await.unwrap();
    assert!(
        manual.metadata.deletion_timestamp.is_none(),
        "not the schedule's: kept"
    );
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_catches_up_once_inside_the_deadline_and_not_outside() {
    let mgmt = Management::start().await;
    let start = next_hour();
    let clock = TestClock::new(start + SignedDuration::from_mins(1));
    let quiet = ["--housekeepstore=false", "--restoresnapshots=false"];
    let c = clock.clone();
    let ctl = mgmt
        .controller_tweaked("one", &quiet, move |o| o.clock = c)
        .await;
    create_schedule(
        &mgmt,
        "catchup",
        SnapshotScheduleSpec {
            schedule: "@hourly".into(),
            cluster_name: "mgmt".into(),
            starting_deadline_seconds: Some(600),
            ..Default::default()
        },
    )
    .await;
    let snaps = mgmt.snapshots().await;
    let first = format!("catchup-{}", stamp(start));
    wait_for(Duration::from_secs(20), "the first run", || async {
        snaps.get_opt(&first).await.ok().flatten()
    })
    .await;
    completed(&snaps, &first).await;
    ctl.stop().await.unwrap();

    // Down for three runs; the last one is 5 minutes old: one catch-up run, two missed.
    clock.set(start + hours(3) + SignedDuration::from_mins(5));
    let c = clock.clone();
    let ctl = mgmt
        .controller_tweaked("two", &quiet, move |o| o.clock = c)
        .await;
    let caught_up = format!("catchup-{}", stamp(start + hours(3)));
    wait_for(Duration::from_secs(20), "the catch-up run", || async {
        snaps.get_opt(&caught_up).await.ok().flatten()
    })
    .await;
    completed(&snaps, &caught_up).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut want = vec![first.clone(), caught_up.clone()];
    want.sort();
    assert_eq!(
        children(&mgmt, "catchup").await,
        want,
        "exactly one catch-up run"
    );
    let st = schedule(&mgmt, "catchup").await.status.unwrap();
    assert_eq!(st.missed_runs, 2);
    ctl.stop().await.unwrap();

    // Down again; the last due run is 20 minutes old, past the 600 s deadline: no run.
    clock.set(start + hours(5) + SignedDuration::from_mins(20));
    let c = clock.clone();
    let ctl = mgmt
        .controller_tweaked("three", &quiet, move |o| o.clock = c)
        .await;
    let st = wait_for(
        Duration::from_secs(20),
        "the missed runs counted",
        || async {
            let st = schedule(&mgmt, "catchup").await.status?;
            (st.missed_runs == 4).then_some(st)
        },
    )
    .await;
    assert_eq!(st.last_missed_time.unwrap().0, start + hours(5));
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "MissedRuns")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        children(&mgmt, "catchup").await,
        want,
        "no run outside the deadline"
    );
    let (_, text) = ctl.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "k8s_snap_schedule_missed_runs_total{schedule=\"catchup\"}"
        ),
        Some(2.0),
        "this process missed two: {text}"
    );

    // A bad cron expression or time zone is the status's reason, naming the field.
    for (name, expr, tz, field) in [
        ("bad-cron", "every hour", None, "spec.schedule"),
        ("bad-zone", "@daily", Some("Mars/Olympus"), "spec.timeZone"),
    ] {
        create_schedule(
            &mgmt,
            name,
            SnapshotScheduleSpec {
                schedule: expr.into(),
                time_zone: tz.map(String::from),
                ..Default::default()
            },
        )
        .await;
        let ready = wait_for(Duration::from_secs(10), "InvalidSchedule", || async {
            let st = schedule(&mgmt, name).await.status?;
            st.conditions.into_iter().find(|c| c.type_ == "Ready")
        })
        .await;
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSchedule")
        );
        assert!(ready.message.starts_with(field), "{}", ready.message);
        assert!(children(&mgmt, name).await.is_empty());
    }
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_an_overlapping_run_and_counts_it() {
    let mgmt = Management::start().await;
    // The source answers its first /version request after 4 s: the first run stays
    // unfinished while the next one is due.
    let source = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Empty)
        .start()
        .await
        .unwrap();
    let slow = source.faults().add(kube_emulator::FaultRule {
        path_prefix: Some("/version".into()),
        latency: Some(Duration::from_secs(4)),
        times: Some(1),
        ..Default::default()
    });
    let start = next_hour();
    let clock = TestClock::new(start + SignedDuration::from_mins(1));
    let c = clock.clone();
    let ctl = mgmt
        .controller_tweaked(
            "forbid",
            &["--housekeepstore=false", "--restoresnapshots=false"],
            move |o| o.clock = c,
        )
        .await;
    create_schedule(
        &mgmt,
        "busy",
        SnapshotScheduleSpec {
            schedule: "@hourly".into(),
            cluster_name: "src".into(),
            kubeconfig: Some(source.kubeconfig_yaml("src")),
            ..Default::default()
        },
    )
    .await;
    let snaps = mgmt.snapshots().await;
    let first = format!("busy-{}", stamp(start));
    wait_for(Duration::from_secs(20), "the first run", || async {
        snaps.get_opt(&first).await.ok().flatten()
    })
    .await;
    wait_for(
        Duration::from_secs(10),
        "the first run is slowed",
        || async { (source.faults().fired(slow) > 0).then_some(()) },
    )
    .await;
    // Due while the first is in progress: skipped and counted.
    clock.set(start + hours(1) + SignedDuration::from_mins(1));
    let st = wait_for(
        Duration::from_secs(10),
        "the skipped run counted",
        || async {
            let st = schedule(&mgmt, "busy").await.status?;
            (st.missed_runs == 1).then_some(st)
        },
    )
    .await;
    assert_eq!(st.last_missed_time.unwrap().0, start + hours(1));
    assert_eq!(st.active, std::slice::from_ref(&first));
    completed(&snaps, &first).await;
    assert_eq!(
        children(&mgmt, "busy").await,
        std::slice::from_ref(&first),
        "no overlapping run"
    );
    let (_, text) = ctl.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "k8s_snap_schedule_runs_total{schedule=\"busy\",result=\"skipped\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "k8s_snap_schedule_missed_runs_total{schedule=\"busy\"}"
        ),
        Some(1.0)
    );
    // The next hour runs again.
    clock.set(start + hours(2) + SignedDuration::from_mins(1));
    let next = format!("busy-{}", stamp(start + hours(2)));
    wait_for(Duration::from_secs(20), "the next run", || async {
        snaps.get_opt(&next).await.ok().flatten()
    })
    .await;
    completed(&snaps, &next).await;
    ctl.stop().await.unwrap();
}

/// A schedule's own `encryption` wins over its template's: the Snapshot it creates carries
/// it, and the Secret values that Snapshot stores are sealed to its recipient only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedules_encryption_seals_the_snapshots_it_takes() {
    use base64::Engine as _;
    use k8s_snap::controller::SnapshotSpec;
    use k8s_snap::controller::encryption::EncryptionSpec;

    let mgmt = Management::start().await;
    let plaintext = "scheduled-secret-plaintext-51c2";
    let (source, _) = crate::controller::source_with_secret(plaintext).await;

    let (_, recipient) = k8s_snap::crypt::generate_identity();
    let (_, template_recipient) = k8s_snap::crypt::generate_identity();
    let start = next_hour();
    let clock = TestClock::new(start + SignedDuration::from_mins(1));
    let c = clock.clone();
    let ctl = mgmt
        .controller_tweaked(
            "sealed",
            &["--housekeepstore=false", "--restoresnapshots=false"],
            move |o| o.clock = c,
        )
        .await;
    let encryption = EncryptionSpec {
        recipients: vec![recipient.clone()],
        ..Default::default()
    };
    create_schedule(
        &mgmt,
        "sealed",
        SnapshotScheduleSpec {
            schedule: "@hourly".into(),
            cluster_name: "src".into(),
            kubeconfig: Some(source.kubeconfig_yaml("src")),
            encryption: Some(encryption.clone()),
            snapshot_template: Some(SnapshotSpec {
                encryption: Some(EncryptionSpec {
                    recipients: vec![template_recipient.clone()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let snaps = mgmt.snapshots().await;
    let name = format!("sealed-{}", stamp(start));
    wait_for(Duration::from_secs(20), "the scheduled run", || async {
        snaps.get_opt(&name).await.ok().flatten()
    })
    .await;
    completed(&snaps, &name).await;
    let snap = snaps.get(&name).await.unwrap();
    assert_eq!(snap.spec.encryption, Some(encryption));

    let git_dir = ctl.data.join("mirror.git");
    let meta = crate::support::git(
        &git_dir,
        &["show", &format!("snapshots/{name}:.k8s-snap/snapshot.yaml")],
    );
    assert!(
        meta.stdout.contains(&recipient) && !meta.stdout.contains(&template_recipient),
        "{}",
        meta.stdout
    );
    let stored = crate::support::git(
        &git_dir,
        &[
            "show",
            &format!("snapshots/{name}:api/v1/namespaces/vault/secrets/db.yaml"),
        ],
    );
    assert_eq!(stored.code, 0, "{}", stored.stderr);
    let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
    assert!(
        stored
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("password:") && l.contains("k8s-snap:v2:"))
            && !stored.stdout.contains(&b64)
            && !stored.stdout.contains(plaintext),
        "{}",
        stored.stdout
    );
    ctl.stop().await.unwrap();
}
