//! `k8s-snap diff <snapshot> --live`: a snapshot against the live cluster, both ways — objects
//! only in the snapshot (`missing`), only live (`extra`), and `changed` ones, compared as a
//! restore plan compares them (docs/history.md). Exit code 0 when equal, 1 when different,
//! 2 on error, as `diff` and `kubectl diff`.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::GlobalArgs;
use super::browse::DiffArgs;
use super::output::{self, Format};
use k8s_snap::restore::{self, Action, Preference, RestoreOptions};
use k8s_snap::tree::ContentPath;

/// The flags of `diff --live`.
#[derive(Debug, Args, Clone)]
pub struct LiveArgs {
    /// Compare the snapshot with the live cluster (--kubeconfig/--context) instead of another
    /// snapshot.
    #[arg(long)]
    pub live: bool,
    /// With --live: a RestorePreference YAML file; the objects it leaves out are not compared.
    #[arg(long, value_name = "FILE", requires = "live")]
    pub preference: Option<PathBuf>,
    /// With --live: an age identity file that opens the snapshot's encrypted Secret values.
    #[arg(long, value_name = "FILE", requires = "live")]
    pub identity: Option<PathBuf>,
    /// With --live: resources listed at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// The exit code of a live diff with differences.
const DIFFERENT: i32 = 1;
/// The exit code of a live diff that failed.
const ERROR: i32 = 2;

/// One object of `diff --live -o json`.
#[derive(Debug, Serialize)]
struct LiveItem {
    path: String,
    /// `missing` (only in the snapshot), `extra` (only live) or `changed`.
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

/// Runs the live diff; an error is printed here and exits with 2 (1 means "different").
pub async fn run(global: &GlobalArgs, args: DiffArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    match diff_live(global, args, out).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {}", super::error_message(&e));
            Ok(ERROR)
        }
    }
}

/// The identity of an object whatever the version it is served at.
fn identity(p: &ContentPath) -> (String, String, Option<String>, String) {
    super::browse::object_identity(p)
}

async fn diff_live(
    global: &GlobalArgs,
    args: DiffArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let pref = match &args.live.preference {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading preference {}", file.display()))?;
            Preference::from_yaml(&text, &file.display().to_string())?
        }
        None => Preference::default(),
    };
    let (snapshot, cluster, discovering) =
        super::restore::load_and_connect(global, &args.a, args.live.identity.as_deref(), &pref)
            .await?;
    let threads = usize::from(args.live.threads);
    let name = snapshot.name.clone();
    let in_snapshot: HashSet<_> = snapshot.objects.iter().map(|o| identity(&o.path)).collect();
    let inventory = async {
        k8s_snap::snapshot::live_inventory(&cluster, threads)
            .await
            .context("listing the live cluster")
    };
    let opts = RestoreOptions {
        threads,
        diff: !args.stat,
        show_secrets: args.show_secrets,
        ..Default::default()
    };
    let planning = async {
        restore::plan_with(&cluster, snapshot, discovering, &pref, &opts)
            .await
            .with_context(|| format!("comparing snapshot {name:?} with the live cluster"))
    };
    let (live, plan) = tokio::try_join!(inventory, planning)?;
    let live_ids: HashSet<_> = live.iter().map(identity).collect();

    let wanted = args.path.as_deref().map(|p| p.trim_end_matches('/'));
    let under = |p: &str| match wanted {
        None => true,
        Some(w) => p == w || p.starts_with(&format!("{w}/")),
    };
    let mut items = Vec::new();
    let (mut equal, mut not_compared) = (0u64, 0u64);
    for i in plan.items {
        if !under(i.path.as_str()) {
            continue;
        }
        let live_now = live_ids.contains(&identity(&i.path))
            || i.target
                .as_ref()
                .is_some_and(|t| live_ids.contains(&identity(t)));
        match i.action {
            Action::Exists => equal += 1,
            Action::Differs | Action::Update => items.push(LiveItem {
                path: i.path.to_string(),
                change: "changed",
                diff: i.diff,
            }),
            Action::Create => items.push(LiveItem {
                path: i.path.to_string(),
                change: "missing",
                diff: None,
            }),
            // Left out by a rule or the preference, or not served: compared by presence only.
            Action::Excluded | Action::PreferenceExcluded | Action::Unsupported => {
                if live_now {
                    not_compared += 1;
                } else {
                    items.push(LiveItem {
                        path: i.path.to_string(),
                        change: "missing",
                        diff: None,
                    });
                }
            }
        }
    }
    for p in &live {
        if under(p.as_str()) && !in_snapshot.contains(&identity(p)) {
            items.push(LiveItem {
                path: p.to_string(),
                change: "extra",
                diff: None,
            });
        }
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    match global.output {
        Format::Table => {
            for i in &items {
                match &i.diff {
                    Some(d) => write!(out, "{d}")?,
                    None => writeln!(out, "{:<8} {}", i.change, i.path)?,
                }
            }
            let count = |k| items.iter().filter(|i| i.change == k).count();
            writeln!(
                out,
                "{} missing, {} extra, {} changed ({equal} equal, {not_compared} not compared: left out by a restore rule or the preference)",
                count("missing"),
                count("extra"),
                count("changed"),
            )?;
        }
        format => output::write_data(out, format, &items)?,
    }
    Ok(if items.is_empty() {
        super::exit::OK
    } else {
        DIFFERENT
    })
}
