//! `k8s-snap crd` and `k8s-snap controller`: the original Go controller's flags mapped onto
//! `controller::ControllerOptions`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::GlobalArgs;
use k8s_snap::controller::{self, ControllerOptions};

/// Flags of `k8s-snap controller` (names and defaults of the original controller).
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The address of the Kubernetes API server; overrides the kubeconfig's.
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// Namespace of the custom resources, Secrets and the leader Lease.
    #[arg(long, default_value = "k8s-snap")]
    pub namespace: String,
    /// Snapshots taken at once.
    #[arg(long = "backupthreads", visible_alias = "snapshotthreads", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub backup_threads: u16,
    /// Restores run at once.
    #[arg(long = "restorethreads", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub restore_threads: u16,
    /// Check and clean up the object store every 300 seconds.
    #[arg(long = "housekeepstore", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub housekeep_store: bool,
    /// Recreate Snapshot resources from the object store on start.
    #[arg(long = "restoresnapshots", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub restore_snapshots: bool,
    /// Validate size and timestamp of files on the object store.
    #[arg(long = "validatefileinfo", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub validate_file_info: bool,
    /// Longest time (minutes) to retry a failing snapshot (the original's spelling).
    #[arg(
        long = "maxretryelaspsedminutes",
        visible_alias = "maxretryelapsedminutes",
        default_value_t = 5,
        value_name = "MINUTES",
        value_parser = clap::value_parser!(u64).range(0..=10_080)
    )]
    pub max_retry_minutes: u64,
    /// Longest time (seconds) to retry a failing snapshot; wins over the minutes flag.
    #[arg(long = "maxretryelapsedsec", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub max_retry_seconds: Option<u64>,
    /// Create the bucket when it does not exist.
    #[arg(long = "createbucket", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub create_bucket: bool,
    /// Accept plain http and unverified TLS object-store endpoints.
    #[arg(long, default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure: bool,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
    /// Run only while holding the Lease `k8s-snap-controller` (several replicas: one works).
    #[arg(long, default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub leader_election: bool,
    /// Lease duration: a standby takes over this long after the leader stops renewing.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub lease_duration: Duration,
    /// Leader-election identity (default: $POD_NAME or the host name, plus the pid).
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// Directory of file-drop restores (docs/watch.md), served by the leader.
    #[arg(long, value_name = "DIR")]
    pub watch_dir: Option<PathBuf>,
    /// An age identity file that opens the encrypted Secret values of the snapshots file drops
    /// restore (docs/encryption.md); repeatable; read once at start, with --watch-dir only.
    #[arg(long, value_name = "FILE", env = "K8S_SNAP_IDENTITY")]
    pub watch_identity_file: Vec<PathBuf>,
    /// On SIGTERM, how long in-flight snapshots and restores may run on; those still running
    /// then are marked Failed (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, default_value = "25s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace_period: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    k8s_snap::duration::parse_duration(s)
}

/// The options the flags describe.
pub fn options(global: &GlobalArgs, args: ControllerArgs) -> anyhow::Result<ControllerOptions> {
    let mut o = ControllerOptions::new(args.namespace, global.data_dir()?);
    o.kubeconfig = global.kubeconfig.clone();
    o.context = global.context.clone();
    o.master = args.master;
    o.snapshot_threads = args.backup_threads;
    o.restore_threads = args.restore_threads;
    o.housekeep_store = args.housekeep_store;
    o.restore_snapshots = args.restore_snapshots;
    o.validate_file_info = args.validate_file_info;
    o.max_retry_elapsed = match args.max_retry_seconds {
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(args.max_retry_minutes.saturating_mul(60)),
    };
    o.create_bucket = args.create_bucket;
    o.insecure = args.insecure;
    o.metrics_addr = args.metrics_addr;
    o.leader_election = args.leader_election;
    o.lease_duration = args.lease_duration;
    o.identity = args.identity;
    // Read once, before anything starts: a bad file stops the controller here, naming it.
    if args.watch_dir.is_some() {
        o.watch_identities =
            k8s_snap::crypt::Identities::from_files(&args.watch_identity_file)?.map(Arc::new);
    } else if !args.watch_identity_file.is_empty() {
        tracing::warn!("--watch-identity-file / K8S_SNAP_IDENTITY ignored: no --watch-dir");
    }
    o.watch_dir = args.watch_dir;
    o.shutdown_grace_period = args.shutdown_grace_period;
    Ok(o)
}

/// `k8s-snap controller`: runs until SIGINT/SIGTERM.
pub async fn run(global: &GlobalArgs, args: ControllerArgs) -> anyhow::Result<i32> {
    let opts = options(global, args)?;
    controller::run(opts, shutdown_signal(), |addr| {
        // Tests and scripts read the bound address (useful with port 0).
        eprintln!("metrics listening on http://{addr}");
    })
    .await?;
    Ok(super::exit::OK)
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `k8s-snap crd`: the five CRDs as one YAML stream.
pub fn crd(out: &mut dyn Write) -> anyhow::Result<i32> {
    out.write_all(controller::crds_yaml()?.as_bytes())?;
    Ok(super::exit::OK)
}

/// The original controller's flag names, which Go also accepts with one dash.
const GO_FLAGS: &[&str] = &[
    "kubeconfig",
    "master",
    "namespace",
    "backupthreads",
    "snapshotthreads",
    "restorethreads",
    "housekeepstore",
    "restoresnapshots",
    "validatefileinfo",
    "maxretryelaspsedminutes",
    "maxretryelapsedsec",
    "createbucket",
    "insecure",
];

/// Rewrites Go-style single-dash long flags of the original controller (`-namespace=x`,
/// `-backupthreads 3`) to `--` when the command is `controller`; other arguments unchanged.
pub fn go_style_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    if !args.iter().skip(1).any(|a| a == "controller") {
        return args;
    }
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            let Some(rest) = s.strip_prefix('-').filter(|r| !r.starts_with('-')) else {
                return a;
            };
            let name = rest.split_once('=').map_or(rest, |(n, _)| n);
            if GO_FLAGS.contains(&name) {
                format!("-{s}").into()
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> ControllerOptions {
        let argv = go_style_args(args.iter().map(std::ffi::OsString::from));
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Controller(c) = cli.command else {
            panic!("not controller")
        };
        options(&cli.global, c).unwrap()
    }

    #[test]
    fn original_flags_and_defaults() {
        let o = parse(&["k8s-snap", "--data-dir", "/d", "controller"]);
        assert_eq!(o.namespace, "k8s-snap");
        assert_eq!((o.snapshot_threads, o.restore_threads), (5, 2));
        assert!(o.housekeep_store && o.restore_snapshots && o.validate_file_info);
        assert_eq!(o.max_retry_elapsed, Duration::from_secs(300));
        assert!(o.leader_election && !o.create_bucket && !o.insecure);
        assert_eq!(o.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(o.git_dir(), PathBuf::from("/d/mirror.git"));

        let o = parse(&[
            "k8s-snap",
            "--data-dir=/d",
            "controller",
            "-namespace=backup",
            "-snapshotthreads",
            "3",
            "--restorethreads=1",
            "-housekeepstore=false",
            "--restoresnapshots",
            "false",
            "--maxretryelaspsedminutes=2",
            "-createbucket",
            "--master=https://10.0.0.1:6443",
        ]);
        assert_eq!(o.namespace, "backup");
        assert_eq!((o.snapshot_threads, o.restore_threads), (3, 1));
        assert!(!o.housekeep_store && !o.restore_snapshots && o.create_bucket);
        assert_eq!(o.max_retry_elapsed, Duration::from_secs(120));
        assert_eq!(o.master.as_deref(), Some("https://10.0.0.1:6443"));
        let o = parse(&[
            "k8s-snap",
            "--data-dir=/d",
            "controller",
            "--maxretryelaspsedminutes=2",
            "--maxretryelapsedsec=7",
        ]);
        assert_eq!(o.max_retry_elapsed, Duration::from_secs(7));
    }

    #[test]
    fn watch_identity_files_are_read_at_start_with_the_watch_dir() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("id.txt");
        let (text, recipient) = k8s_snap::crypt::generate_identity();
        std::fs::write(&id, text).unwrap();
        let id = id.to_str().unwrap();
        let o = parse(&[
            "k8s-snap",
            "--data-dir=/d",
            "controller",
            "--watch-dir=/drops",
            "--watch-identity-file",
            id,
        ]);
        let ids = o.watch_identities.expect("identities read");
        assert_eq!(ids.recipients(), [recipient]);
        assert_eq!(o.identity, None, "not the leader-election identity");

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let argv = [
            "k8s-snap",
            "--data-dir=/d",
            "controller",
            "--watch-dir=/drops",
            "--watch-identity-file",
            bad.to_str().unwrap(),
        ];
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Controller(c) = cli.command else {
            panic!("not controller")
        };
        let e = format!("{:#}", options(&cli.global, c).unwrap_err());
        assert!(e.contains("bad.txt") && e.contains("line 1"), "{e}");
        assert!(!e.contains("NOTAKEY"), "{e}");
    }

    #[test]
    fn single_dash_rewrite_only_touches_controller_flags() {
        let v = go_style_args(
            ["k8s-snap", "-v", "controller", "-namespace=x", "-o", "json"]
                .iter()
                .map(std::ffi::OsString::from),
        );
        assert_eq!(
            v,
            [
                "k8s-snap",
                "-v",
                "controller",
                "--namespace=x",
                "-o",
                "json"
            ]
        );
        let v = go_style_args(
            ["k8s-snap", "list", "-namespace=x"]
                .iter()
                .map(std::ffi::OsString::from),
        );
        assert_eq!(v[2], "-namespace=x");
    }
}
