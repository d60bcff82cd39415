//! `push`, `pull`, `verify`, and the store parts of `snapshot`, `list`, `delete` and `gc`:
//! opening the store the global flags name and printing what the store operations did.
//!
//! Must not touch git or HTTP directly (it calls `store::sync`), and never prints a
//! credential: store descriptions come from `ObjectStore::describe`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::mirror::SharedMirror;
use k8s_snap::store::{self, ObjectStore, S3Options, StoreUrl, sync};

/// The store URL: `--store`/`$K8S_SNAP_STORE`, else `<data-dir>/store`.
pub fn store_url(global: &GlobalArgs) -> anyhow::Result<StoreUrl> {
    match &global.store {
        Some(s) => Ok(s.parse()?),
        None => Ok(StoreUrl::Dir(global.data_dir()?.join("store"))),
    }
}

/// The S3 options the global flags give.
pub fn s3_options(global: &GlobalArgs) -> S3Options {
    S3Options {
        endpoint: global.s3_endpoint.clone(),
        region: global.s3_region.clone(),
        path_style: global.s3_path_style,
        insecure: global.insecure,
        access_key_id: global.s3_access_key_id.clone(),
        secret_access_key: global.s3_secret_access_key.clone(),
    }
}

/// Opens the store the global flags name.
pub async fn open_store(global: &GlobalArgs) -> anyhow::Result<Box<dyn ObjectStore>> {
    let url = store_url(global)?;
    Ok(store::open(&url, &s3_options(global)).await?)
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Snapshots to push (default: every local snapshot the store lacks).
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Snapshots to pull (default: every snapshot in the store).
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also download every pack, re-hash it, index it and check every snapshot is complete.
    #[arg(long)]
    pub deep: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Show what would be recovered; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `recover`: rebuilds the manifest from the store's packs.
pub async fn recover(
    global: &GlobalArgs,
    args: RecoverArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let store = open_store(global).await?;
    let report = store::recover::recover(store.as_ref(), args.dry_run)
        .await
        .with_context(|| format!("recovering the manifest of {}", store.describe()))?;
    match global.output {
        Format::Table => {
            let rows: Vec<Vec<String>> = report
                .recovered
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.entry.cluster.clone(),
                        s.entry.timestamp.to_string(),
                        output::time_or_none(s.entry.available_until),
                        s.entry.commit.to_string(),
                        s.entry.packs.len().to_string(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                output::write_table(
                    out,
                    &[
                        "NAME",
                        "CLUSTER",
                        "TIMESTAMP",
                        "AVAILABLE-UNTIL",
                        "COMMIT",
                        "PACKS",
                    ],
                    &rows,
                )?;
            }
            for p in &report.problems {
                writeln!(out, "PROBLEM {}: {}", p.subject, p.reason)?;
            }
            writeln!(
                out,
                "{} {} snapshot(s) from {} pack(s) in {} ({} already listed){}",
                if args.dry_run { "found" } else { "recovered" },
                report.recovered.len(),
                report.packs.len(),
                store.describe(),
                report.already_listed.len(),
                if args.dry_run && !report.recovered.is_empty() {
                    "; dry run: nothing was written"
                } else {
                    ""
                }
            )?;
        }
        format => output::write_data(out, format, &report)?,
    }
    Ok(super::exit::OK)
}

/// Pushes and prints one line (table) or the report; used by `push` and `snapshot`.
pub async fn push_and_report(
    global: &GlobalArgs,
    store: &dyn ObjectStore,
    names: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<sync::PushReport> {
    let mirror = SharedMirror::open(&global.mirror_dir()?).await?;
    let report = sync::push(store, &mirror, names)
        .await
        .with_context(|| format!("push to {} failed", store.describe()))?;
    if global.output == Format::Table {
        if report.pushed.is_empty() {
            writeln!(out, "{}: already up to date", store.describe())?;
        } else {
            writeln!(
                out,
                "pushed {} to {}: {} objects in {} ({})",
                report.pushed.join(", "),
                store.describe(),
                report.objects,
                output::bytes(report.pack_bytes + report.idx_bytes),
                match report.packs.as_slice() {
                    [] => "no new pack".to_string(),
                    [p] => format!("pack {p}"),
                    more => format!("{} packs", more.len()),
                }
            )?;
        }
        if !report.filters_recorded.is_empty() {
            writeln!(
                out,
                "recorded the filters of partial snapshots {} in {}",
                report.filters_recorded.join(", "),
                store.describe()
            )?;
        }
    }
    Ok(report)
}

pub async fn push(global: &GlobalArgs, args: PushArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    for n in &args.names {
        k8s_snap::mirror::validate_name("snapshot", n)?;
    }
    let store = open_store(global).await?;
    let report = push_and_report(global, store.as_ref(), &args.names, out).await?;
    if global.output != Format::Table {
        output::write_data(out, global.output, &report)?;
    }
    Ok(super::exit::OK)
}

pub async fn pull(global: &GlobalArgs, args: PullArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    for n in &args.names {
        k8s_snap::mirror::validate_name("snapshot", n)?;
    }
    let store = open_store(global).await?;
    let mirror = SharedMirror::open_or_init(&global.mirror_dir()?).await?;
    let report = sync::pull(store.as_ref(), &mirror, &args.names)
        .await
        .with_context(|| format!("pull from {} failed", store.describe()))?;
    match global.output {
        Format::Table => {
            for n in &report.pulled {
                writeln!(out, "pulled snapshot {n}")?;
            }
            writeln!(
                out,
                "{} pulled, {} up to date, {} failed; {} packs ({}) downloaded, {} already present, from {}",
                report.pulled.len(),
                report.up_to_date.len(),
                report.failed.len(),
                report.packs_downloaded,
                output::bytes(report.bytes_downloaded),
                report.packs_skipped,
                store.describe()
            )?;
        }
        format => output::write_data(out, format, &report)?,
    }
    if !report.failed.is_empty() {
        let lines: Vec<String> = report
            .failed
            .iter()
            .map(|(n, r)| format!("snapshot {n}: {r}"))
            .collect();
        bail!(
            "{} snapshot(s) not pulled:\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    Ok(super::exit::OK)
}

pub async fn verify(
    global: &GlobalArgs,
    args: VerifyArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let store = open_store(global).await?;
    let report = sync::verify(store.as_ref(), args.deep).await?;
    match global.output {
        Format::Table => {
            for p in &report.problems {
                writeln!(
                    out,
                    "PROBLEM {}: {} (snapshots: {})",
                    p.subject,
                    p.reason,
                    if p.snapshots.is_empty() {
                        "none".to_string()
                    } else {
                        p.snapshots.join(", ")
                    }
                )?;
            }
            writeln!(
                out,
                "{} {}: {} snapshots, {} packs, {} problems",
                if args.deep {
                    "deep-verified"
                } else {
                    "verified"
                },
                store.describe(),
                report.snapshots,
                report.packs,
                report.problems.len()
            )?;
        }
        format => output::write_data(out, format, &report)?,
    }
    if !report.ok() {
        bail!(
            "{} has {} problem(s): {}",
            store.describe(),
            report.problems.len(),
            report
                .problems
                .iter()
                .map(|p| format!("{} ({})", p.subject, p.snapshots.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(super::exit::OK)
}

/// Store side of `gc`: repack mostly dead packs (when the mirror has the snapshots), then gc.
pub async fn gc_store(
    global: &GlobalArgs,
    grace: Duration,
    repack_threshold: f64,
) -> anyhow::Result<(String, Option<sync::RepackReport>, sync::GcReport)> {
    let store = open_store(global).await?;
    let mirror_dir = global.mirror_dir()?;
    let repacked = if mirror_dir.exists() {
        let mirror = SharedMirror::open(&mirror_dir).await?;
        sync::repack(store.as_ref(), &mirror, repack_threshold)
            .await
            .with_context(|| format!("repacking {} failed", store.describe()))?
    } else {
        None
    };
    let report = sync::gc(
        store.as_ref(),
        sync::GcOptions {
            grace,
            now: jiff::Timestamp::now(),
        },
    )
    .await
    .with_context(|| format!("gc of {} failed", store.describe()))?;
    Ok((store.describe(), repacked, report))
}
