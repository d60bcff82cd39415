//! Benchmark: a restore vs raw POSTs of the same objects, `--threads 8` vs `--threads 1`, and a
//! plan vs a raw LIST of the target.
//!
//! `cargo run --release --example bench_restore -- --objects 20000 [--threads 8] [--latency-ms 1] [--repeat 3]`
//!
//! A `scale:N` emulator is snapshotted into a temporary mirror; every measurement then runs in
//! a child process (this binary re-executed, so each peak RSS is its own) against a fresh
//! `empty` emulator served from this process. The restore and the plan are timed from the start
//! of the call with the snapshot in the mirror: reading its tree (reported as a part), then
//! planning and applying, what `k8s-snap restore` pays; the raw POSTs start with their bodies in
//! memory. The raw POSTs and the restores alternate, and so do the raw LISTs and the plans, so
//! that both sides of a ratio meet the machine in the same state; each side is the best of
//! `--repeat` runs. Each child also reports its CPU time (user + system), steadier than wall
//! time on a shared machine. `--load-only` times just the tree read. The threads comparison
//! injects a per-POST latency into the emulator (a fault rule) to model a real API server's
//! round trip; the output says so. The last line is `restore/raw-create ratio: X.XX`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "examples and benchmarks print their results and stop on setup errors"
)]

/// The allocator of the `k8s-snap` binary, so that times and peak RSS are what it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
use k8s_snap::restore::{self, Preference, RestoreOptions, RuleOptions, Selection, Stage};
use k8s_snap::snapshot::{self, NoProgress, SnapshotOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct ChildReport {
    seconds: f64,
    /// CPU time (user + system) of the child over the timed part.
    cpu_seconds: f64,
    load_seconds: f64,
    objects: u64,
    created: u64,
    failed: u64,
    peak_rss_bytes: u64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

const SNAPSHOT: &str = "bench";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let threads: usize = arg(&args, "--threads")
        .unwrap_or_else(|| "8".into())
        .parse()?;
    if let Some(mode) = arg(&args, "--child") {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let kubeconfig = PathBuf::from(arg(&args, "--kubeconfig").context("--kubeconfig")?);
        let data_dir = PathBuf::from(arg(&args, "--data-dir").context("--data-dir")?);
        let report = rt.block_on(child(&mode, &kubeconfig, threads, &data_dir))?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let objects: usize = arg(&args, "--objects")
        .unwrap_or_else(|| "20000".into())
        .parse()?;
    let latency_ms: u64 = arg(&args, "--latency-ms")
        .unwrap_or_else(|| "1".into())
        .parse()?;
    let repeat: usize = arg(&args, "--repeat")
        .unwrap_or_else(|| "3".into())
        .parse()?;
    // `--plan-only`: skip the raw-create and threads measurements (a quicker loop while
    // working on the plan; the plan and its baseline are measured exactly as in a full run).
    let plan_only = args.iter().any(|a| a == "--plan-only");
    // `--load-only`: only time reading the snapshot tree from the mirror (`repeat` times).
    let load_only = args.iter().any(|a| a == "--load-only");
    rt.block_on(parent(
        objects, threads, latency_ms, repeat, plan_only, load_only,
    ))
}

async fn empty_target(
    dir: &Path,
    name: &str,
) -> anyhow::Result<(kube_emulator::EmulatorHandle, PathBuf)> {
    let emulator = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Empty)
        .start()
        .await?;
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    emulator.write_kubeconfig(&kubeconfig, name)?;
    Ok((emulator, kubeconfig))
}

async fn parent(
    objects: usize,
    threads: usize,
    latency_ms: u64,
    repeat: usize,
    plan_only: bool,
    load_only: bool,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    let started = Instant::now();
    let source = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Scale(objects))
        .start()
        .await?;
    let source_kc = tmp.path().join("source.kubeconfig");
    source.write_kubeconfig(&source_kc, "source")?;
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(source_kc),
        ..Default::default()
    })
    .await?;
    let s = snapshot::take_snapshot(
        &cluster,
        data_dir.join("mirror.git"),
        &SnapshotOptions::new(SNAPSHOT),
        Arc::new(NoProgress),
    )
    .await?;
    source.shutdown().await;
    println!(
        "source scale:{objects} snapshotted: {} objects in {:.2}s",
        s.number_of_contents,
        started.elapsed().as_secs_f64()
    );

    let run_child =
        |mode: &str, kubeconfig: &Path, threads: usize| -> anyhow::Result<ChildReport> {
            let exe = std::env::current_exe()?;
            let out = tokio::task::block_in_place(|| {
                let mut cmd = Command::new(exe);
                if std::env::var_os("RUST_LOG").is_some() {
                    cmd.stderr(std::process::Stdio::inherit());
                }
                cmd.args(["--child", mode, "--kubeconfig"])
                    .arg(kubeconfig)
                    .args(["--threads", &threads.to_string(), "--data-dir"])
                    .arg(&data_dir)
                    .output()
            })?;
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

    if load_only {
        for _ in 0..repeat {
            let r = run_child("load", Path::new("-"), threads)?;
            println!(
                "tree read from the mirror: {} objects in {:.3}s (cpu {:.2}s), peak RSS {:.1} MiB",
                r.objects,
                r.seconds,
                r.cpu_seconds,
                mib(r.peak_rss_bytes)
            );
        }
        return Ok(());
    }

    // Each measurement is the best of `repeat` runs (the machine may be shared), each into a
    // fresh empty target.
    let best = |a: ChildReport, b: ChildReport| if b.seconds < a.seconds { b } else { a };

    // 1. Raw POSTs of the restorable objects into an empty target, and 2. the restore (plan +
    //    staged apply with waits) into another empty target: the runs alternate (raw,
    //    restore, raw, restore, ...), so that both sides see the machine in the same state
    //    (a shared machine drifts over a run; three raw runs then three restores let the drift
    //    count for one side).
    let mut raw: Option<ChildReport> = None;
    let mut rs: Option<ChildReport> = None;
    let mut populated = None;
    for i in 0..repeat {
        if !plan_only {
            let (b1, kc1) = empty_target(tmp.path(), &format!("raw-{i}")).await?;
            let r = run_child("raw-create", &kc1, threads)?;
            b1.shutdown().await;
            raw = Some(match raw {
                Some(prev) => best(prev, r),
                None => r,
            });
        }
        let (b2, kc2) = empty_target(tmp.path(), &format!("restore-{i}")).await?;
        let r = run_child("restore", &kc2, threads)?;
        if r.failed > 0 {
            bail!("the restore had {} failures", r.failed);
        }
        if let Some((old, _)) = populated.replace((b2, kc2)) {
            kube_emulator::EmulatorHandle::shutdown(old).await;
        }
        rs = Some(match rs {
            Some(prev) => best(prev, r),
            None => r,
        });
    }
    let raw = raw.unwrap_or_default();
    if !plan_only {
        println!(
            "raw create (--threads {threads}): {} objects POSTed in {:.3}s ({:.0}/s, client cpu {:.2}s), best of {repeat}",
            raw.objects,
            raw.seconds,
            raw.objects as f64 / raw.seconds,
            raw.cpu_seconds
        );
    }
    let rs = rs.context("--repeat must be at least 1")?;
    let (b2, kc2) = populated.context("a populated target")?;
    println!(
        "restore   (--threads {threads}): {} created, {} failed in {:.3}s ({:.0}/s, client cpu {:.2}s) from the start of the restore call, the tree read from the mirror included ({:.3}s of it), best of {repeat}; peak RSS {:.1} MiB",
        rs.created,
        rs.failed,
        rs.seconds,
        rs.created as f64 / rs.seconds,
        rs.cpu_seconds,
        rs.load_seconds,
        mib(rs.peak_rss_bytes)
    );

    // 3. Plan against the now populated target vs a raw LIST of it.
    let mut list: Option<ChildReport> = None;
    let mut plan: Option<ChildReport> = None;
    for _ in 0..repeat {
        let l = run_child("raw-list", &kc2, threads)?;
        list = Some(match list {
            Some(prev) => best(prev, l),
            None => l,
        });
        let p = run_child("plan", &kc2, threads)?;

        plan = Some(match plan {
            Some(prev) => best(prev, p),
            None => p,
        });
    }
    let (list, plan) = (list.context("list")?, plan.context("plan")?);
    // `plan --server-side-diff`: one GET and one dry-run PUT per object present (once).
    let ssd = run_child("plan-ssd", &kc2, threads)?;
    b2.shutdown().await;
    println!(
        "raw LIST of the target: {} objects in {:.3}s (cpu {:.2}s); plan: {} objects in {:.3}s (cpu {:.2}s; tree read {:.3}s of it), peak RSS {:.1} MiB; plan/list ratio: {:.2} (target <= 1.5), best of {repeat}",
        list.objects,
        list.seconds,
        list.cpu_seconds,
        plan.objects,
        plan.seconds,
        plan.cpu_seconds,
        plan.load_seconds,
        mib(plan.peak_rss_bytes),
        plan.seconds / list.seconds
    );
    println!(
        "plan --server-side-diff: {} objects in {:.3}s, peak RSS {:.1} MiB; plan-ssd/list ratio: {:.2} (no target: a GET and a dry-run PUT per object)",
        ssd.objects,
        ssd.seconds,
        mib(ssd.peak_rss_bytes),
        ssd.seconds / list.seconds
    );

    if plan_only {
        return Ok(());
    }
    // 4. --threads 8 vs --threads 1, with a per-POST latency injected into the emulator.
    let mut times = Vec::new();
    for t in [1usize, 8] {
        let (b, kc) = empty_target(tmp.path(), &format!("threads-{t}")).await?;
        b.faults().add(
            format!("method=POST,latency={latency_ms}ms")
                .parse()
                .map_err(|e| anyhow::anyhow!("fault rule: {e:?}"))?,
        );
        let r = run_child("restore", &kc, t)?;
        b.shutdown().await;
        println!(
            "restore --threads {t} with {latency_ms} ms injected per POST (fault rule modelling API-server latency): {} created in {:.3}s",
            r.created, r.seconds
        );
        times.push(r.seconds);
    }
    println!(
        "speed-up of --threads 8 over --threads 1: {:.2}x (target >= 3)",
        times[0] / times[1]
    );
    println!(
        "peak RSS of the restore: {:.1} MiB (target <= 512 MiB)",
        mib(rs.peak_rss_bytes.max(plan.peak_rss_bytes))
    );
    println!("restore/raw-create ratio: {:.2}", rs.seconds / raw.seconds);
    Ok(())
}

async fn child(
    mode: &str,
    kubeconfig: &Path,
    threads: usize,
    data_dir: &Path,
) -> anyhow::Result<ChildReport> {
    let git_dir = data_dir.join("mirror.git");
    if mode == "load" {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let snapshot = restore::load_snapshot(&git_dir, SNAPSHOT)?;
        return Ok(ChildReport {
            seconds: started.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds() - cpu,
            objects: snapshot.objects.len() as u64,
            peak_rss_bytes: peak_rss(),
            ..Default::default()
        });
    }
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..Default::default()
    })
    .await?;
    if mode == "raw-list" {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let found = discovery::discover(&cluster, Versions::Preferred, threads).await?;
        let resources: Vec<_> = found.snapshotted().cloned().collect();
        let counts: Vec<u64> = stream::iter(resources)
            .map(|r| {
                let cluster = cluster.clone();
                async move { raw_list(&cluster, &r.collection_path(None)).await }
            })
            .buffer_unordered(threads.max(4))
            .try_collect()
            .await?;
        return Ok(ChildReport {
            seconds: started.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds() - cpu,
            objects: counts.iter().sum(),
            peak_rss_bytes: peak_rss(),
            ..Default::default()
        });
    }
    // Restore and plan are timed from here, the start of what `k8s-snap restore` pays once
    // the snapshot is in the mirror: reading its tree, then planning and applying. The raw
    // POSTs start with their bodies in memory.
    let (started, cpu) = (Instant::now(), cpu_seconds());
    // As `restore::prepare` does: the target's discovery starts, then the tree is read on a
    // blocking thread while it runs.
    let discovering = restore::Discovering::start(&cluster);
    let dir = git_dir.clone();
    let snapshot =
        tokio::task::spawn_blocking(move || restore::load_snapshot(&dir, SNAPSHOT)).await??;
    let load_seconds = started.elapsed().as_secs_f64();
    let pref = Preference::default();
    let opts = RestoreOptions {
        threads,
        ..Default::default()
    };
    match mode {
        "raw-create" => {
            // The baseline sends no discovery: stop it before anything is timed.
            drop(discovering);
            // The same bodies the restore would send, namespaces first (they must exist).
            let selections = restore::select(snapshot.objects, &pref, &RuleOptions::default());
            let mut bodies: Vec<(Stage, String, Vec<u8>)> = Vec::new();
            for (path, s) in selections {
                if let Selection::Restore { stage, object } = s {
                    let collection = path
                        .as_str()
                        .rsplit_once('/')
                        .map_or(path.as_str(), |(c, _)| c)
                        .to_string();
                    bodies.push((stage, collection, object.as_str().as_bytes().to_vec()));
                }
            }
            let (namespaces, rest): (Vec<_>, Vec<_>) = bodies
                .into_iter()
                .partition(|(stage, _, _)| *stage <= Stage::Namespaces);
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let mut n = 0u64;
            for batch in [namespaces, rest] {
                n += batch.len() as u64;
                stream::iter(batch)
                    .map(|(_, url, body)| {
                        let cluster = cluster.clone();
                        async move {
                            match cluster
                                .request_bytes(
                                    http::Method::POST,
                                    &url,
                                    Some(body),
                                    Some("application/json"),
                                )
                                .await
                            {
                                Ok(_) => Ok(()),
                                Err(e) if e.code() == Some(409) => Ok(()),
                                Err(e) => Err(e),
                            }
                        }
                    })
                    .buffer_unordered(threads)
                    .try_collect::<Vec<()>>()
                    .await?;
            }
            Ok(ChildReport {
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu,
                load_seconds,
                objects: n,
                peak_rss_bytes: peak_rss(),
                ..Default::default()
            })
        }
        "restore" => {
            let (_plan, report) =
                restore::restore_with(&cluster, snapshot, discovering, &pref, &opts).await?;
            Ok(ChildReport {
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu,
                load_seconds,
                objects: report.status.num_snapshot_contents,
                created: report.status.num_created,
                failed: report.status.num_failed,
                peak_rss_bytes: peak_rss(),
            })
        }
        "plan" | "plan-ssd" => {
            let opts = RestoreOptions {
                server_side_diff: mode == "plan-ssd",
                ..opts
            };
            let plan = restore::plan_with(&cluster, snapshot, discovering, &pref, &opts).await?;
            Ok(ChildReport {
                seconds: started.elapsed().as_secs_f64(),
                cpu_seconds: cpu_seconds() - cpu,
                load_seconds,
                objects: plan.summary.num_snapshot_contents,
                peak_rss_bytes: peak_rss(),
                ..Default::default()
            })
        }
        other => bail!("unknown child mode {other}"),
    }
}
