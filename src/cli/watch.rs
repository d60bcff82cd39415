//! `k8s-snap watch <dir>`: restores triggered by request files dropped into a directory
//! (docs/watch.md). The watching is `k8s_snap::watch`; the restores are `k8s_snap::restore` through
//! [`k8s_snap::watch::EngineExecutor`], with the identities of `--identity` (read once, here).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::{Format, GlobalArgs, output};
use k8s_snap::crypt::Identities;
use k8s_snap::restore::RestoreOptions;
use k8s_snap::watch::{self, EngineExecutor, WatchOptions};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The watched directory (results/, done/, failed/ and preferences/ are created in it).
    pub dir: PathBuf,
    /// A file is read once its size and mtime have not changed for this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub quiet_period: std::time::Duration,
    /// Process the requests present (and those arriving meanwhile), then exit.
    #[arg(long)]
    pub once: bool,
    /// Target clusters restored at once (requests of one target run one at a time).
    #[arg(long, default_value_t = 2)]
    pub parallel_targets: usize,
    /// Parsed requests waiting in memory; the rest wait on disk.
    #[arg(long, default_value_t = 256)]
    pub max_queued: usize,
    /// Writes in flight at once within a restore stage.
    #[arg(long, default_value_t = 2)]
    pub threads: u16,
    /// An age identity file that opens the encrypted Secret values of every request's
    /// snapshot (docs/encryption.md); repeatable. Read once at start.
    #[arg(long, value_name = "FILE", env = "K8S_SNAP_IDENTITY")]
    pub identity: Vec<PathBuf>,
}

/// The executor the global flags describe: the local mirror, the store to pull from, and
/// the default target; `identities` open sealed values.
pub fn executor(
    global: &GlobalArgs,
    threads: u16,
    identities: Option<Arc<Identities>>,
) -> anyhow::Result<EngineExecutor> {
    Ok(EngineExecutor {
        git_dir: global.mirror_dir()?,
        default_target: global.connect_options(),
        store: Some(std::sync::Arc::new(k8s_snap::watch::FixedStore {
            url: super::store::store_url(global)?,
            s3: super::store::s3_options(global),
        })),
        options: RestoreOptions {
            threads: usize::from(threads.max(1)),
            ..RestoreOptions::default()
        },
        identities,
    })
}

pub async fn run(global: &GlobalArgs, args: WatchArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    // Read once, before watching: a bad file stops the watcher here, naming it.
    let identities = Identities::from_files(&args.identity)?.map(Arc::new);
    let executor = executor(global, args.threads, identities)?;
    let opts = WatchOptions {
        dir: args.dir.clone(),
        quiet_period: args.quiet_period,
        max_queued: args.max_queued.max(1),
        max_parallel_targets: args.parallel_targets.max(1),
        once: args.once,
    };
    if !global.quiet {
        eprintln!(
            "watching {} for restore requests (results in {}/results)",
            args.dir.display(),
            args.dir.display()
        );
    }
    let stats = watch::run(
        opts,
        Arc::new(executor),
        super::controller::shutdown_signal(),
    )
    .await
    .with_context(|| format!("watching {}", args.dir.display()))?;
    match global.output {
        Format::Table => writeln!(out, "{} done, {} failed", stats.done, stats.failed)?,
        format => output::write_data(out, format, &stats)?,
    }
    Ok(if stats.failed == 0 {
        super::exit::OK
    } else {
        super::exit::FAILURE
    })
}
