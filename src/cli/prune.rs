//! `k8s-snap prune`: applies a retention policy (`--keep-*`, the `retention` module shared with
//! the controller's SnapshotSchedules) to one cluster's snapshots in the mirror and the store.
//!
//! Must not decide retention itself (that is `k8s_snap::retention`), nor touch git or the store
//! beyond `Mirror::delete_snapshot` and `store::sync::delete`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use serde::Serialize;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::mirror::Mirror;
use k8s_snap::retention::{self, Item, Policy, Reason, State};

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("keep")
        .required(true)
        .multiple(true)
        .args(["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"])
))]
pub struct PruneArgs {
    /// The cluster whose snapshots are pruned (only its snapshots are considered).
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: String,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days (UTC) that have snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,
    /// Only list what would be kept and removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune the local mirror only, without reading or changing the store.
    #[arg(long)]
    pub local_only: bool,
}

impl PruneArgs {
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
        }
    }
}

/// One snapshot in `prune -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneItem {
    name: String,
    timestamp: jiff::Timestamp,
    /// `local`, `store` or `both`.
    location: &'static str,
    /// Why it is kept (the rules that keep it) or removed.
    reasons: Vec<Reason>,
}

/// `prune -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneReport {
    cluster: String,
    dry_run: bool,
    kept: Vec<PruneItem>,
    removed: Vec<PruneItem>,
}

pub async fn prune(
    global: &GlobalArgs,
    args: PruneArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    k8s_snap::mirror::validate_name("cluster", &args.cluster).context("invalid --cluster")?;
    let policy = args.policy();
    // name -> (timestamp, in the mirror, in the store)
    let mut found: BTreeMap<String, (jiff::Timestamp, bool, bool)> = BTreeMap::new();
    let dir = global.mirror_dir()?;
    let mirror = if dir.exists() {
        Some(Mirror::open(&dir)?)
    } else {
        None
    };
    if let Some(m) = &mirror {
        for s in m.snapshots()? {
            if s.meta.cluster_name == args.cluster {
                found.insert(s.name, (s.meta.timestamp, true, false));
            }
        }
    }
    let store = if args.local_only {
        None
    } else {
        let store = super::store::open_store(global)
            .await
            .context("cannot open the store (use --local-only to prune the mirror alone)")?;
        for s in k8s_snap::store::sync::list(store.as_ref()).await? {
            if s.entry.cluster == args.cluster {
                found.entry(s.name).and_modify(|e| e.2 = true).or_insert((
                    s.entry.timestamp,
                    false,
                    true,
                ));
            }
        }
        Some(store)
    };
    let items: Vec<Item> = found
        .iter()
        .map(|(name, (time, _, _))| Item {
            name: name.clone(),
            time: *time,
            // Only complete snapshots are tagged in the mirror or named by the manifest.
            state: State::Completed,
        })
        .collect();
    let decisions = retention::apply(&policy, &items, &jiff::tz::TimeZone::UTC)?;
    let mut report = PruneReport {
        cluster: args.cluster.clone(),
        dry_run: args.dry_run,
        kept: Vec::new(),
        removed: Vec::new(),
    };
    for d in decisions {
        let (_, local, stored) = found.get(&d.name).copied().unwrap_or_default();
        let item = PruneItem {
            location: match (local, stored) {
                (true, true) => "both",
                (true, false) => "local",
                _ => "store",
            },
            name: d.name,
            timestamp: d.time,
            reasons: d.reasons,
        };
        if d.keep {
            report.kept.push(item);
        } else {
            report.removed.push(item);
        }
    }
    if !args.dry_run && !report.removed.is_empty() {
        if let Some(m) = &mirror {
            for r in report.removed.iter().filter(|r| r.location != "store") {
                m.delete_snapshot(&r.name)
                    .with_context(|| format!("deleting {:?} from the mirror", r.name))?;
            }
        }
        if let Some(store) = &store {
            let names: Vec<String> = report
                .removed
                .iter()
                .filter(|r| r.location != "local")
                .map(|r| r.name.clone())
                .collect();
            if !names.is_empty() {
                k8s_snap::store::sync::delete(store.as_ref(), &names)
                    .await
                    .with_context(|| format!("deleting snapshots from {}", store.describe()))?;
            }
        }
    }
    match global.output {
        Format::Table => {
            let reasons = |r: &[Reason]| {
                r.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut rows: Vec<Vec<String>> = Vec::new();
            for (action, list) in [("keep", &report.kept), ("remove", &report.removed)] {
                for i in list {
                    rows.push(vec![
                        i.name.clone(),
                        i.timestamp.to_string(),
                        i.location.to_string(),
                        action.to_string(),
                        reasons(&i.reasons),
                    ]);
                }
            }
            rows.sort_by(|a, b| b[1].cmp(&a[1]).then_with(|| b[0].cmp(&a[0])));
            output::write_table(
                out,
                &["NAME", "TIMESTAMP", "LOCATION", "ACTION", "REASON"],
                &rows,
            )?;
            let n = report.removed.len();
            if args.dry_run {
                writeln!(
                    out,
                    "dry run: {n} snapshot(s) of {} would be removed, {} kept",
                    args.cluster,
                    report.kept.len()
                )?;
            } else {
                writeln!(
                    out,
                    "{n} snapshot(s) of {} removed, {} kept{}",
                    args.cluster,
                    report.kept.len(),
                    if n > 0 {
                        " (run `k8s-snap gc` to free their data)"
                    } else {
                        ""
                    }
                )?;
            }
        }
        format => output::write_data(out, format, &report)?,
    }
    Ok(super::exit::OK)
}
