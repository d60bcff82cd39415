//! Benchmark: a snapshot vs a raw paginated LIST of the same objects.
//!
//! `cargo run --release --example bench_snapshot -- --objects 50000 [--threads 8] [--encrypt]`
//!
//! `--encrypt` seals every Secret value to a fresh age recipient (`--encrypt-to`, issue 18) in
//! both snapshots and prints the fixture's Secret share.
//!
//! The emulator (fixture `scale:N`) runs in this process; the raw list and the snapshots run in
//! child processes (this binary re-executed) so that each one's peak RSS is its own. Prints both
//! times, their ratio, the snapshot's peak RSS and the git objects an unchanged second snapshot
//! adds. Then, with 1% of the objects changed, a third snapshot, and times the commands a
//! user browses with (each run as `k8s-snap` runs it, in a child process): `list`,
//! `show <snap> <path>` and `diff --stat` of the first and third snapshots (`browse ...` line).
//! The last line is `snapshot/list ratio: X.XX`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "examples and benchmarks print their results and stop on setup errors"
)]

/// The CLI itself (it is the binary's, not the library's), to time `list`/`show`/`diff`.
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../src/cli/mod.rs"]
mod cli;
#[path = "common/mod.rs"]
mod common;
use common::{cpu_seconds, mib, peak_rss, raw_list};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_snap::cluster::{Cluster, ConnectOptions};
use k8s_snap::discovery::{self, Versions};
use k8s_snap::snapshot::{self, NoProgress, SnapshotOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    seconds: f64,
    /// CPU time (user + system) of the measured part, in seconds.
    #[serde(default)]
    cpu_seconds: f64,
    objects: u64,
    peak_rss_bytes: u64,
    new_objects: u64,
    new_bytes: u64,
    /// `browse` child: seconds of `list`, `show` and `diff --stat`.
    #[serde(default)]
    browse: Vec<(String, f64)>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// mimalloc: snapshots allocate and free millions of small JSON and YAML nodes; glibc's
/// allocator spends a tenth of a snapshot's CPU time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(mode) = arg(&args, "--child") {
        let kubeconfig = PathBuf::from(arg(&args, "--kubeconfig").context("--kubeconfig")?);
        let threads: usize = arg(&args, "--threads")
            .unwrap_or_else(|| "8".into())
            .parse()?;
        let report = rt.block_on(child(
            &mode,
            &kubeconfig,
            threads,
            arg(&args, "--data-dir"),
            arg(&args, "--name"),
            arg(&args, "--encrypt-to"),
        ))?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let objects: usize = arg(&args, "--objects")
        .unwrap_or_else(|| "50000".into())
        .parse()?;
    let threads: usize = arg(&args, "--threads")
        .unwrap_or_else(|| "8".into())
        .parse()?;
    let encrypt = args.iter().any(|a| a == "--encrypt");
    rt.block_on(parent(objects, threads, encrypt))
}

async fn parent(objects: usize, threads: usize, encrypt: bool) -> anyhow::Result<()> {
    let recipient = encrypt.then(|| k8s_snap::crypt::generate_identity().1);
    if encrypt {
        let all = kube_emulator::fixtures::scale::objects(objects);
        let secrets = all.iter().filter(|o| o["kind"] == "Secret").count();
        let values: usize = all
            .iter()
            .filter(|o| o["kind"] == "Secret")
            .map(|o| o["data"].as_object().map_or(0, |m| m.len()))
            .sum();
        println!(
            "encryption on: {secrets} of {} objects are Secrets ({:.0}%), {values} values sealed",
            all.len(),
            100.0 * secrets as f64 / all.len().max(1) as f64
        );
    }
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let emulator = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Scale(objects))
        .start()
        .await?;
    println!(
        "emulator scale:{objects} ready in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let kubeconfig = tmp.path().join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig, "bench")?;
    let data_dir = tmp.path().join("data");

    let run_child = |mode: &str, name: Option<&str>| -> anyhow::Result<ChildReport> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["--child", mode, "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--threads", &threads.to_string(), "--data-dir"])
            .arg(&data_dir);
        if let Some(n) = name {
            cmd.args(["--name", n]);
        }
        if let (Some(r), "snapshot") = (&recipient, mode) {
            cmd.args(["--encrypt-to", r]);
        }
        let out = tokio::task::block_in_place(|| cmd.output())?;
        if !out.status.success() {
            bail!(
                "child {mode} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        Ok(serde_json::from_str(
            line.trim().lines().last().unwrap_or_default(),
        )?)
    };

    let raw = run_child("raw", None)?;
    println!(
        "raw paginated LIST: {} objects in {:.3}s (user+sys {:.2}s) ({:.0} objects/s), peak RSS {:.1} MiB",
        raw.objects,
        raw.seconds,
        raw.cpu_seconds,
        raw.objects as f64 / raw.seconds,
        mib(raw.peak_rss_bytes)
    );
    let first = run_child("snapshot", Some("bench-1"))?;
    println!(
        "snapshot:           {} objects in {:.3}s (user+sys {:.2}s) ({:.0} objects/s), peak RSS {:.1} MiB, {} new git objects ({:.1} MiB)",
        first.objects,
        first.seconds,
        first.cpu_seconds,
        first.objects as f64 / first.seconds,
        mib(first.peak_rss_bytes),
        first.new_objects,
        mib(first.new_bytes)
    );
    let second = run_child("snapshot", Some("bench-2"))?;
    println!(
        "unchanged 2nd snapshot: {:.3}s (user+sys {:.2}s), adds {} git objects ({} bytes): the commit, the metadata blobs and the trees on their paths",
        second.seconds, second.cpu_seconds, second.new_objects, second.new_bytes
    );
    println!(
        "peak RSS of the snapshot: {:.1} MiB (target <= 256 MiB)",
        mib(first.peak_rss_bytes.max(second.peak_rss_bytes))
    );
    // Browsing: change 1% of the objects (ConfigMaps spread over all namespaces), snapshot
    // again, then time `list`, `show` and `diff --stat` of the first and this snapshot.
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await?;
    let changed = common::change_one_percent(&cluster, objects).await?;
    let third = run_child("snapshot", Some("bench-3"))?;
    println!(
        "changed {changed} objects; 3rd snapshot: {:.3}s, {} new git objects",
        third.seconds, third.new_objects
    );
    let browse = run_child("browse", None)?;
    let parts: Vec<String> = browse
        .browse
        .iter()
        .map(|(what, secs)| format!("`{what}` {secs:.3}s"))
        .collect();
    println!(
        "browse {} snapshots of {} objects: {} (target < 2 s each)",
        3,
        first.objects,
        parts.join(", ")
    );
    emulator.shutdown().await;
    if encrypt {
        // Steady state: an unchanged value reuses its ciphertext instead of being encrypted.
        println!(
            "unchanged 2nd snapshot/list ratio (sealed values reused): {:.2} (CPU user+sys: {:.2})",
            second.seconds / raw.seconds,
            second.cpu_seconds / raw.cpu_seconds.max(0.01)
        );
    }
    println!(
        "snapshot/list CPU (user+sys) ratio: {:.2}",
        first.cpu_seconds / raw.cpu_seconds.max(0.01)
    );
    println!("snapshot/list ratio: {:.2}", first.seconds / raw.seconds);
    Ok(())
}

/// Runs one `k8s-snap` command line (as the binary would) with its output discarded; its
/// wall time.
async fn time_command(argv: &[&str]) -> anyhow::Result<f64> {
    use clap::Parser as _;
    let started = Instant::now();
    let cli = cli::Cli::try_parse_from(argv)?;
    let code = cli::run(cli, &mut std::io::sink()).await?;
    if code != 0 {
        bail!("{argv:?} exited with {code}");
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn child(
    mode: &str,
    kubeconfig: &Path,
    threads: usize,
    data_dir: Option<String>,
    name: Option<String>,
    encrypt_to: Option<String>,
) -> anyhow::Result<ChildReport> {
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let cpu_start = cpu_seconds();
    match mode {
        "raw" => {
            let found = discovery::discover(&cluster, Versions::Preferred, threads).await?;
            let resources: Vec<_> = found.snapshotted().cloned().collect();
            let counts: Vec<u64> = stream::iter(resources)
                .map(|r| {
                    let cluster = cluster.clone();
                    async move { raw_list(&cluster, &r.collection_path(None)).await }
                })
                .buffer_unordered(threads)
                .try_collect()
                .await?;
            Ok(ChildReport {
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu_start,
                objects: counts.iter().sum(),
                peak_rss_bytes: peak_rss(),
                new_objects: 0,
                new_bytes: 0,
                browse: Vec::new(),
            })
        }
        "browse" => {
            let data = data_dir.context("--data-dir")?;
            let mut browse = Vec::new();
            for argv in [
                vec!["list"],
                vec![
                    "show",
                    "bench-1",
                    "/api/v1/namespaces/scale-0000/configmaps/obj-000000",
                ],
                vec!["diff", "--stat", "bench-1", "bench-3"],
            ] {
                let label = argv.join(" ");
                let mut full = vec!["k8s-snap", "--data-dir", data.as_str(), "-q"];
                full.extend(argv);
                browse.push((label, time_command(&full).await?));
            }
            Ok(ChildReport {
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu_start,
                objects: 0,
                peak_rss_bytes: peak_rss(),
                new_objects: 0,
                new_bytes: 0,
                browse,
            })
        }
        "snapshot" => {
            let git_dir = PathBuf::from(data_dir.context("--data-dir")?).join("mirror.git");
            let mut opts = SnapshotOptions::new(name.context("--name")?);
            opts.threads = threads;
            opts.encrypt_to = encrypt_to
                .map(|r| k8s_snap::crypt::Recipients::parse(&[r]))
                .transpose()?;
            let s = snapshot::take_snapshot(&cluster, git_dir, &opts, Arc::new(NoProgress)).await?;
            Ok(ChildReport {
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu_start,
                objects: s.number_of_contents,
                peak_rss_bytes: peak_rss(),
                new_objects: s.new_objects,
                new_bytes: s.new_bytes,
                browse: Vec::new(),
            })
        }
        other => bail!("unknown child mode {other}"),
    }
}
