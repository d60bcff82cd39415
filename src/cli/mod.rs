//! The command line: flag parsing, validated options, output formats (`-o table|json|yaml`),
//! progress and exit codes.
//!
//! Owns: everything a person or script sees. It is the only module that prints; the others
//! return values. Commands write to an `out: &mut dyn Write` so that every output is testable.
//! Must not touch: git, HTTP or the tree format directly — it calls `snapshot`, `mirror`,
//! `tree` and friends.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is the only module that prints"
)]

mod browse;
pub mod controller;
mod crypt;
mod history;
mod import;
mod live_diff;
pub mod output;
mod prune;
mod restore;
mod snapshot;
mod store;
mod watch;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use output::Format;

/// Exit codes (documented in `docs/cli.md`).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The command failed (cluster, store, mirror or input error).
    pub const FAILURE: i32 = 1;
    /// Invalid command line (clap's own code), or, with `--exit-code`, "there are changes".
    pub const USAGE_OR_CHANGES: i32 = 2;
}

/// Snapshot every resource of a Kubernetes cluster into git, and restore it safely.
#[derive(Debug, Parser)]
#[command(
    name = "k8s-snap",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Where the git mirror (and the default store) live.
    #[arg(long, global = true, env = "K8S_SNAP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// More logging (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors; no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// The object store: a path, file:///abs/path or s3://bucket[/prefix] (default: <data-dir>/store).
    #[arg(long, global = true, env = "K8S_SNAP_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// S3 endpoint URL (S3-compatible servers); plain http needs http:// or --insecure.
    #[arg(long, global = true, env = "K8S_SNAP_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: the AWS environment/profile, else us-east-1).
    #[arg(long, global = true, env = "K8S_SNAP_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing (endpoint/bucket/key), for most S3-compatible servers.
    #[arg(long, global = true, env = "K8S_SNAP_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Allow plain http to an S3 endpoint given without a scheme.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// S3 access key id (prefer the env var; default: the standard AWS credential chain).
    #[arg(
        long,
        global = true,
        env = "K8S_SNAP_S3_ACCESS_KEY_ID",
        hide_env_values = true,
        value_name = "ID"
    )]
    pub s3_access_key_id: Option<k8s_snap::store::Secret>,
    /// S3 secret access key (prefer the env var; default: the standard AWS credential chain).
    #[arg(
        long,
        global = true,
        env = "K8S_SNAP_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub s3_secret_access_key: Option<k8s_snap::store::Secret>,
    /// Longest time one request (to the cluster or the store) may take before it is retried or
    /// fails (like kubectl's; e.g. 30s, 2m).
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s", value_parser = parse_limit)]
    pub request_timeout: humantime::Duration,
    /// Longest time to open a connection.
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_limit)]
    pub connect_timeout: humantime::Duration,
    /// Attempts of one request on transient failures (429, 5xx, timeouts, dropped connections),
    /// the first included.
    #[arg(long, global = true, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retry_attempts: u32,
    /// Longest time one request may take, all its retries and waits (Retry-After) included.
    #[arg(long, global = true, value_name = "DURATION", default_value = "3m", value_parser = parse_limit)]
    pub retry_budget: humantime::Duration,
}

/// A timeout or budget: a positive duration of at most a day.
pub fn parse_limit(s: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = s
        .parse()
        .map_err(|e| format!("not a duration (e.g. 30s, 2m): {e}"))?;
    if d.is_zero() {
        return Err("must be more than zero (every request needs a deadline)".into());
    }
    if *d > std::time::Duration::from_secs(86_400) {
        return Err("must be at most 24h".into());
    }
    Ok(d)
}

impl GlobalArgs {
    /// The data directory: flag, `$K8S_SNAP_DATA_DIR`, `$XDG_DATA_HOME/k8s-snap`,
    /// `~/.local/share/k8s-snap`.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return Ok(PathBuf::from(x).join("k8s-snap"));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("cannot find a data directory: set --data-dir or K8S_SNAP_DATA_DIR")
            })?;
        Ok(PathBuf::from(home).join(".local/share/k8s-snap"))
    }

    /// The bare git mirror inside the data directory.
    pub fn mirror_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self.data_dir()?.join("mirror.git"))
    }

    /// The timeouts and retry budget the flags give.
    pub fn limits(&self) -> k8s_snap::cluster::Limits {
        k8s_snap::cluster::Limits {
            connect_timeout: *self.connect_timeout,
            request_timeout: *self.request_timeout,
            attempts: self.retry_attempts,
            retry_budget: *self.retry_budget,
        }
    }

    pub fn connect_options(&self) -> k8s_snap::cluster::ConnectOptions {
        k8s_snap::cluster::ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            kubeconfig_text: None,
            context: self.context.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot of the cluster into the local git mirror.
    Snapshot(snapshot::SnapshotArgs),
    /// Import a snapshot archive of the original Go k8s-snap (`<name>.tgz`) into the mirror.
    Import(import::ImportArgs),
    /// List snapshots.
    #[command(visible_alias = "ls")]
    List(browse::ListArgs),
    /// Show a snapshot's contents, or one object's YAML.
    Show(browse::ShowArgs),
    /// Compare two snapshots (added, removed, changed objects), or a snapshot with the live
    /// cluster (--live: missing, extra, changed).
    Diff(browse::DiffArgs),
    /// The history of one object across a cluster's snapshots: added, changed, removed.
    Log(history::LogArgs),
    /// Delete a snapshot.
    #[command(visible_alias = "rm")]
    Delete(browse::DeleteArgs),
    /// Remove expired snapshots and unreachable git objects, locally and in the store.
    Gc(browse::GcArgs),
    /// Remove a cluster's snapshots that a retention policy (--keep-*) does not keep.
    Prune(prune::PruneArgs),
    /// Push local snapshots to the store (only the objects it lacks).
    Push(store::PushArgs),
    /// Pull snapshots from the store into the local mirror.
    Pull(store::PullArgs),
    /// Check the store: every pack present with its size (--deep: re-hash and index).
    Verify(store::VerifyArgs),
    /// Rebuild the store's manifest from its packs (after manifest.json was lost or damaged).
    Recover(store::RecoverArgs),
    /// Show what restoring a snapshot onto the target cluster would do (read-only).
    Plan(restore::PlanArgs),
    /// Restore a snapshot onto the target cluster: create what is missing, never overwrite.
    Restore(restore::RestoreArgs),
    /// Apply a reviewed plan file (`plan --out`) exactly, or refuse when anything changed.
    Apply(restore::ApplyArgs),
    /// Run restores dropped as request files into a directory (docs/watch.md).
    Watch(watch::WatchArgs),
    /// Print the CustomResourceDefinitions (Snapshot, Restore, RestorePreference,
    /// ObjectstoreConfig, SnapshotSchedule) as YAML.
    Crd,
    /// Run the CRD-driven controller (Snapshot, Restore and SnapshotSchedule resources).
    Controller(controller::ControllerArgs),
    /// Write a new age identity for encrypted Secrets; print its recipient (docs/encryption.md).
    Keygen(crypt::KeygenArgs),
    /// Re-encrypt snapshots' Secret values for new recipients, in the mirror and the store.
    Rekey(crypt::RekeyArgs),
}

/// The error and its causes on one line, `outer: cause: root cause`, leaving out a cause whose
/// text the message before it already shows (library errors often print their source).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// What a command asks `main` to exit with (errors are returned as `Err`).
pub type ExitCode = i32;

/// Runs a parsed command line, writing results to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    k8s_snap::cluster::set_limits(cli.global.limits());
    match cli.command {
        Command::Snapshot(args) => snapshot::run(&cli.global, args, out).await,
        Command::Import(args) => import::run(&cli.global, args, out).await,
        Command::List(args) => browse::list(&cli.global, args, out).await,
        Command::Show(args) => browse::show(&cli.global, args, out),
        Command::Diff(args) if args.live.live => live_diff::run(&cli.global, args, out).await,
        Command::Diff(args) => browse::diff(&cli.global, args, out),
        Command::Log(args) => history::log(&cli.global, args, out),
        Command::Delete(args) => browse::delete(&cli.global, args, out).await,
        Command::Gc(args) => browse::gc(&cli.global, args, out).await,
        Command::Prune(args) => prune::prune(&cli.global, args, out).await,
        Command::Push(args) => store::push(&cli.global, args, out).await,
        Command::Pull(args) => store::pull(&cli.global, args, out).await,
        Command::Verify(args) => store::verify(&cli.global, args, out).await,
        Command::Recover(args) => store::recover(&cli.global, args, out).await,
        Command::Plan(args) => restore::plan(&cli.global, args, out).await,
        Command::Restore(args) => restore::run(&cli.global, args, out).await,
        Command::Apply(args) => restore::apply(&cli.global, args, out).await,
        Command::Watch(args) => watch::run(&cli.global, args, out).await,
        Command::Crd => controller::crd(out),
        Command::Controller(args) => controller::run(&cli.global, args).await,
        Command::Keygen(args) => crypt::keygen(&cli.global, args, out),
        Command::Rekey(args) => crypt::rekey(&cli.global, args, out).await,
    }
}

/// Library log targets silenced below `-vvv`: they print raw client errors at ERROR for
/// requests that are retried (and usually succeed).
pub const QUIET_LIBRARY_LOGS: &str = "kube_client::client::builder=off,aws_smithy_runtime=off,aws_config=off,rustls_platform_verifier=off";

/// Sets up `tracing` to stderr from `-v/-q` (or `RUST_LOG`).
pub fn init_logging(global: &GlobalArgs) {
    let default = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info,k8s_snap=info",
            2 => "info,k8s_snap=debug",
            _ => "trace",
        }
    };
    // kube's HTTP trace layer logs every failed attempt (a 503 that the next attempt cures, a
    // refused connection) at ERROR with the raw client error; our own retry loop reports what
    // matters — one error line when the budget is spent, debug lines for retries.
    let quiet_libraries = if global.verbose >= 3 {
        String::new()
    } else {
        format!(",{QUIET_LIBRARY_LOGS}")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default}{quiet_libraries}"))
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs captured to files or by CI stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
