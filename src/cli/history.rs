//! `k8s-snap log`: the history of one object across a cluster's snapshots, from the mirror
//! (docs/history.md).

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::mirror::{HistoryChange, Mirror};
use k8s_snap::tree::{self, ContentPath};

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The object's content path (e.g. /api/v1/namespaces/shop/configmaps/settings).
    pub path: String,
    /// The cluster whose snapshots to read (needed when the mirror holds several).
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Show the changes as unified diffs.
    #[arg(long)]
    pub patch: bool,
    /// Show Secret values in diffs (masked by default: a diff tells which keys changed).
    #[arg(long)]
    pub show_secrets: bool,
}

/// One line of `log -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogItem {
    snapshot: String,
    snapshot_timestamp: jiff::Timestamp,
    commit: String,
    /// `added`, `changed` or `removed`.
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

pub fn log(global: &GlobalArgs, args: LogArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let path = ContentPath::parse(args.path.trim_end_matches('/'))
        .with_context(|| format!("{:?} is not an object's content path", args.path))?;
    let dir = global.mirror_dir()?;
    if !dir.exists() {
        bail!(
            "no snapshots yet (the mirror {} does not exist)",
            dir.display()
        );
    }
    let mirror = Mirror::open(&dir)?;
    let snapshots = mirror.snapshots()?;
    let cluster = match &args.cluster {
        Some(c) => c.clone(),
        None => {
            let mut clusters: Vec<&str> = snapshots
                .iter()
                .map(|s| s.meta.cluster_name.as_str())
                .collect();
            clusters.sort_unstable();
            clusters.dedup();
            match clusters.as_slice() {
                [] => bail!("no snapshots in the mirror {}", dir.display()),
                [one] => one.to_string(),
                many => bail!(
                    "the mirror holds snapshots of several clusters ({}): choose one with --cluster",
                    many.join(", ")
                ),
            }
        }
    };
    let snapshots: Vec<_> = snapshots
        .into_iter()
        .filter(|s| s.meta.cluster_name == cluster)
        .collect();
    if snapshots.is_empty() {
        bail!("no snapshots of cluster {cluster:?} (see `k8s-snap list`)");
    }
    // The sealed fields (`--encrypt-path`) any of the snapshots records are masked in every
    // step, as Secret values are.
    let sealed = if args.show_secrets || !args.patch {
        Vec::new()
    } else {
        super::browse::sealed_fields(snapshots.iter().map(|s| &s.meta))?
            .of(path.group(), path.resource())
    };
    let steps = mirror.history(&snapshots, &path.file_path())?;
    let mut items = Vec::with_capacity(steps.len());
    let mut last_present: Option<String> = None;
    for step in steps {
        let change = match step.change {
            HistoryChange::Added => "added",
            HistoryChange::Modified => "changed",
            HistoryChange::Removed => "removed",
        };
        let diff = if args.patch {
            let read = |id: &Option<k8s_snap::mirror::BlobId>| -> anyhow::Result<String> {
                Ok(match id {
                    Some(id) => String::from_utf8_lossy(&mirror.read_blob(id)?).into_owned(),
                    None => String::new(),
                })
            };
            let (old, new) = (read(&step.old)?, read(&step.new)?);
            let before = last_present.clone().unwrap_or_else(|| "(none)".into());
            let (old, new) = if args.show_secrets {
                (old, new)
            } else {
                tree::secret::mask_yaml_pair_fields(
                    &old,
                    &new,
                    &before,
                    &step.snapshot.name,
                    &sealed,
                )
            };
            Some(tree::unified_diff(
                &old,
                &new,
                &format!("{before}{path}"),
                &format!("{}{path}", step.snapshot.name),
            ))
        } else {
            None
        };
        if step.new.is_some() {
            last_present = Some(step.snapshot.name.clone());
        }
        items.push(LogItem {
            snapshot: step.snapshot.name,
            snapshot_timestamp: step.snapshot.meta.timestamp,
            commit: step.snapshot.commit.to_string(),
            change,
            diff,
        });
    }
    match global.output {
        Format::Table => {
            if items.is_empty() {
                writeln!(
                    out,
                    "{path} is in none of the {} snapshots of cluster {cluster:?}.",
                    snapshots.len()
                )?;
                return Ok(super::exit::OK);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        i.snapshot.clone(),
                        i.snapshot_timestamp.to_string(),
                        i.change.to_string(),
                    ]
                })
                .collect();
            if args.patch {
                for (row, i) in rows.iter().zip(&items) {
                    writeln!(out, "{} {} {}", row[2], row[0], row[1])?;
                    if let Some(d) = &i.diff {
                        out.write_all(d.as_bytes())?;
                    }
                }
            } else {
                output::write_table(out, &["SNAPSHOT", "TIMESTAMP", "CHANGE"], &rows)?;
            }
        }
        format => output::write_data(out, format, &items)?,
    }
    Ok(super::exit::OK)
}
