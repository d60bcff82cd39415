//! Benchmark: pushing and pulling snapshots through the object store.
//!
//! `cargo run --release --example bench_store -- --objects 50000 [--store moto|dir] [--no-git-repack] [--pull-repeat N]`
//!
//! Runs the emulator (fixture `scale:N`) in this process and, by default, a real moto S3 server
//! process on loopback (`--store dir` uses a local directory store instead). Measures:
//! 1. the first push (of the stored copies the snapshot kept, as the CLI's snapshot with a
//!    store keeps them): bytes (packs + idx) and time, against a plain upload of the same bytes
//!    (`first push/raw upload ratio: X.XX`) and the snapshot's time, and against that upload
//!    plus what a push without copies does locally (the same pack built and compressed in
//!    memory), and the stored packs' size against what `git repack -adf` makes of the same
//!    objects;
//! 2. a push after re-snapshotting with 1% of the objects changed, as % of the first push;
//! 3. a pull into an empty data dir vs a raw download (GET) of the same pack bytes, and vs that
//!    download plus the pull's local work alone (the same pull from a directory store).
//!
//! The last line is exactly `incremental push: X.XX% of full`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "examples and benchmarks print their results and stop on setup errors"
)]

/// The allocator of the `k8s-snap` binary, so that times are what it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_snap::cluster::{Cluster, ConnectOptions};
use k8s_snap::mirror::SharedMirror;
use k8s_snap::snapshot::{self, NoProgress, SnapshotOptions};
use k8s_snap::store::manifest::{idx_key, pack_key};
use k8s_snap::store::{LocalDirStore, ObjectStore, S3Options, S3Store, Secret, sync};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// moto's server, killed on drop.
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> anyhow::Result<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m moto.server")?;
    let moto = Moto(child, port);
    let started = Instant::now();
    loop {
        if http_put_bucket(port, "bench").is_ok() {
            return Ok(moto);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("moto did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_put_bucket(port: u16, bucket: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 409") {
        Ok(())
    } else {
        Err(std::io::Error::other("bucket not created"))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let objects: usize = arg(&args, "--objects")
        .unwrap_or_else(|| "50000".into())
        .parse()?;
    let backend = arg(&args, "--store").unwrap_or_else(|| "moto".into());
    // `git repack -adf` of 500k objects takes minutes: leave the size comparison out.
    let git_repack = !args.iter().any(|a| a == "--no-git-repack");
    let pull_repeat: usize = arg(&args, "--pull-repeat")
        .unwrap_or_else(|| "0".into())
        .parse()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(objects, &backend, git_repack, pull_repeat))
}

/// Bytes of the pack `git repack -adf` makes of a copy of the mirror.
fn git_repack_size(mirror: &Path) -> anyhow::Result<u64> {
    let tmp = tempfile::tempdir()?;
    let copy = tmp.path().join("copy.git");
    let status = Command::new("cp")
        .args(["-r"])
        .arg(mirror)
        .arg(&copy)
        .status()?;
    if !status.success() {
        bail!("copying the mirror failed");
    }
    let status = Command::new("git")
        .args(["-c", "gc.auto=0", "repack", "-adf", "-q"])
        .current_dir(&copy)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .context("running git repack -adf")?;
    if !status.success() {
        bail!("git repack -adf failed");
    }
    let mut total = 0;
    for e in std::fs::read_dir(copy.join("objects/pack"))? {
        let e = e?;
        if e.path().extension().is_some_and(|x| x == "pack") {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

/// Copies the directory tree `from` to `to` (replacing what `to` held).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

async fn take(cluster: &Cluster, data: &Path, name: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut opts = SnapshotOptions::new(name);
    // A push follows: keep the stored copies it uploads (as the CLI does with a store).
    opts.stored_copies = true;
    snapshot::take_snapshot(
        cluster,
        data.join("mirror.git"),
        &opts,
        Arc::new(NoProgress),
    )
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn run(
    objects: usize,
    backend: &str,
    git_repack: bool,
    pull_repeat: usize,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let emulator = kube_emulator::Emulator::builder()
        .fixture(kube_emulator::Fixture::Scale(objects))
        .start()
        .await?;
    let kubeconfig = tmp.path().join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig, "bench")?;
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await?;

    let (_moto, s3): (Option<Moto>, Option<S3Options>) = match backend {
        "moto" => {
            let moto = tokio::task::spawn_blocking(start_moto).await??;
            let opts = S3Options {
                endpoint: Some(format!("http://127.0.0.1:{}", moto.1)),
                region: Some("us-east-1".into()),
                path_style: true,
                insecure: false,
                access_key_id: Some(Secret::new("bench")),
                secret_access_key: Some(Secret::new("bench")),
            };
            (Some(moto), Some(opts))
        }
        "dir" => (None, None),
        other => bail!("--store {other}: expected moto or dir"),
    };
    // An empty store under `prefix` of the same backend.
    let open_store = |prefix: &str| {
        let s3 = s3.clone();
        let dir = tmp.path().join(prefix);
        let prefix = prefix.to_owned();
        async move {
            anyhow::Ok(match s3 {
                Some(opts) => Box::new(S3Store::connect("bench", &prefix, &opts).await?)
                    as Box<dyn ObjectStore>,
                None => Box::new(LocalDirStore::new(dir)),
            })
        }
    };
    let store = open_store("team").await?;
    println!("store: {}", store.describe());

    // 1. First snapshot and push.
    let a = tmp.path().join("a");
    let t = take(&cluster, &a, "bench-1").await?;
    println!("snapshot bench-1 of scale:{objects}: {t:.2}s");
    let mirror = SharedMirror::open(&a.join("mirror.git")).await?;
    // The store server's first request of each kind pays its own start-up (moto: 20-26 ms for
    // the first GET, 3-5 ms once any client, even curl, has made one; a second client of ours
    // in this process pays 3 ms). The raw upload below runs on a warm server; so does the timed
    // push: one GET, PUT and LIST of scratch keys first, untimed.
    let mut warm_up = Vec::new();
    for kind in ["GET", "PUT", "LIST"] {
        let t = Instant::now();
        match kind {
            "GET" => drop(store.get("bench-warm-up/missing").await),
            "PUT" => drop(
                store
                    .put_if_absent("bench-warm-up/x", b"x".to_vec())
                    .await?,
            ),
            _ => drop(store.list("bench-warm-up/").await?),
        }
        warm_up.push(format!("{kind} {:.3}s", t.elapsed().as_secs_f64()));
    }
    println!(
        "store server warm-up (untimed first requests): {}",
        warm_up.join(", ")
    );
    // The first push, three times from the same state into empty stores (the snapshot's stored
    // copies, which a push removes once the store has the snapshot, are put back before each
    // repeat, untimed): the fastest counts, as for the raw upload below. The first one is the
    // store the rest of the benchmark uses.
    let stored = a.join("mirror.git").join("k8s-snap").join("stored");
    let saved = tmp.path().join("stored-saved");
    copy_tree(&stored, &saved)?;
    let started = Instant::now();
    let first = sync::push(store.as_ref(), &mirror, &[]).await?;
    let mut rounds = vec![started.elapsed().as_secs_f64()];
    for round in 2..=3 {
        copy_tree(&saved, &stored)?;
        let again = open_store(&format!("team-{round}")).await?;
        let started = Instant::now();
        let report = sync::push(again.as_ref(), &mirror, &[]).await?;
        rounds.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(
            report.packs == first.packs,
            "the repeated push uploaded other packs"
        );
    }
    let first_secs = rounds.iter().copied().fold(f64::MAX, f64::min);
    let first_bytes = first.pack_bytes + first.idx_bytes;
    println!(
        "first push: {} objects, {} bytes (pack {} + idx {}) in {first_secs:.3}s (fastest of {}), {} pack(s)",
        first.objects,
        first_bytes,
        first.pack_bytes,
        first.idx_bytes,
        rounds
            .iter()
            .map(|r| format!("{r:.3}s"))
            .collect::<Vec<_>>()
            .join(", "),
        first.packs.len()
    );
    // A plain upload of the same bytes (each pack and idx under other keys, idx first, four
    // packs at a time as the push uploads them), three times: the fastest counts, so the
    // baseline is never the slower side.
    anyhow::ensure!(!first.packs.is_empty(), "the first push uploaded no pack");
    let mut blobs = Vec::new();
    for sha in &first.packs {
        let idx = store.get(&idx_key(sha)).await?.bytes;
        let pack = store.get(&pack_key(sha)).await?.bytes;
        blobs.push((sha.clone(), idx, pack));
    }
    let mut raw_upload = f64::MAX;
    for round in 0..3 {
        let started = Instant::now();
        let store = store.as_ref();
        let uploads = futures::stream::iter(blobs.iter().map(|(sha, idx, pack)| async move {
            store
                .put_if_absent(&format!("bench-raw/{round}/{sha}.idx"), idx.to_vec())
                .await?;
            store
                .put_if_absent(&format!("bench-raw/{round}/{sha}.pack"), pack.to_vec())
                .await
        }))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
        for u in uploads {
            u?;
        }
        raw_upload = raw_upload.min(started.elapsed().as_secs_f64());
    }
    println!("raw upload of the same {first_bytes} bytes: {raw_upload:.3}s");
    println!(
        "first push/raw upload ratio: {:.2}",
        first_secs / raw_upload
    );
    println!(
        "first push/snapshot ratio: {:.2} (push {first_secs:.2}s, snapshot {t:.2}s)",
        first_secs / t
    );
    // What a push would do besides the transfer without the stored copies the snapshot made
    // (a mirror after `gc`, or packs pulled from another store), with no store and no
    // manifest: the same pack built from the mirror (objects read and checked) and compressed
    // in 8 MiB zstd frames on two threads, as the store encodes it (level 1), all in memory.
    let git_dir = a.join("mirror.git");
    let local = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let m = k8s_snap::mirror::Mirror::open(&git_dir)?;
        let commit = m.snapshot("bench-1")?.context("bench-1")?.commit;
        let started = Instant::now();
        let (pack, _) = m
            .build_pack_to(&[commit], &[], Vec::new())?
            .context("an empty pack")?;
        let frames: Vec<&[u8]> = pack.chunks(8 << 20).collect();
        let stored: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    let frames = &frames;
                    s.spawn(move || {
                        frames
                            .iter()
                            .skip(w)
                            .step_by(2)
                            .map(|f| zstd::bulk::compress(f, 1).map_or(0, |c| c.len()))
                            .sum::<usize>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
        });
        anyhow::ensure!(stored > 0, "nothing compressed");
        Ok(started.elapsed().as_secs_f64())
    })
    .await??;
    println!(
        "local work of a push without stored copies (the same pack built and compressed in memory): {local:.3}s; first push/(raw upload + local work) ratio: {:.2}",
        first_secs / (raw_upload + local)
    );
    let repacked = if git_repack {
        git_repack_size(&a.join("mirror.git"))
    } else {
        Err(anyhow::anyhow!("--no-git-repack"))
    };
    match repacked {
        Ok(git) => println!(
            "store pack: {} bytes; `git repack -adf` of the same objects: {git} bytes; store/git pack size ratio: {:.2}",
            first.pack_bytes,
            first.pack_bytes as f64 / git as f64
        ),
        Err(e) => println!("git repack -adf not measured: {e:#}"),
    }

    // 2. Change 1% of the objects (ConfigMaps spread over all namespaces), re-snapshot, push.
    let changed = common::change_one_percent(&cluster, objects).await?;
    let t = take(&cluster, &a, "bench-2").await?;
    println!("changed {changed} objects; snapshot bench-2: {t:.2}s");
    let mirror = SharedMirror::open(&a.join("mirror.git")).await?;
    let started = Instant::now();
    let second = sync::push(store.as_ref(), &mirror, &[]).await?;
    let second_secs = started.elapsed().as_secs_f64();
    let second_bytes = second.pack_bytes + second.idx_bytes;
    println!(
        "incremental push: {} objects, {} bytes (pack {} + idx {}) in {second_secs:.3}s (target <= 0.2s)",
        second.objects, second_bytes, second.pack_bytes, second.idx_bytes
    );

    // 3. Pull into an empty data dir vs a raw download (GET) of the same pack and idx bytes.
    //    The raw download runs before and after the pull (the faster one counts), so that
    //    neither side profits from a warmer server.
    let (manifest, _) = sync::read_manifest(store.as_ref()).await?;
    let raw = || async {
        let started = Instant::now();
        let mut bytes = 0u64;
        for sha in manifest.needed_packs() {
            bytes += store.get(&pack_key(&sha)).await?.bytes.len() as u64;
            bytes += store.get(&idx_key(&sha)).await?.bytes.len() as u64;
        }
        anyhow::Ok((bytes, started.elapsed().as_secs_f64()))
    };
    let (raw_bytes, raw_before) = raw().await?;
    let b = tmp.path().join("b");
    let fresh = SharedMirror::open_or_init(&b.join("mirror.git")).await?;
    let (started, cpu) = (Instant::now(), common::cpu_seconds());
    let pulled = sync::pull(store.as_ref(), &fresh, &[]).await?;
    let pull_secs = started.elapsed().as_secs_f64();
    let pull_cpu = common::cpu_seconds() - cpu;
    if !pulled.failed.is_empty() || pulled.pulled.len() != 2 {
        bail!("pull failed: {:?}", pulled.failed);
    }
    let (_, raw_after) = raw().await?;
    let raw_secs = raw_before.min(raw_after);
    println!(
        "pull of 2 snapshots into an empty data dir: {} bytes in {pull_secs:.3}s (cpu of this process {pull_cpu:.2}s); raw download of the same {raw_bytes} bytes: {raw_secs:.3}s; pull/raw ratio {:.2}",
        pulled.bytes_downloaded,
        pull_secs / raw_secs
    );
    // What a pull must do besides the transfer: the same pull from a directory store holding
    // the same snapshots (pushed there first, untimed), whose reads come from the page cache.
    let dir_store = LocalDirStore::new(tmp.path().join("dir-store"));
    sync::push(&dir_store, &mirror, &[]).await?;
    let c = tmp.path().join("c");
    let local_mirror = SharedMirror::open_or_init(&c.join("mirror.git")).await?;
    let (started, cpu) = (Instant::now(), common::cpu_seconds());
    let local = sync::pull(&dir_store, &local_mirror, &[]).await?;
    let local_secs = started.elapsed().as_secs_f64();
    let local_cpu = common::cpu_seconds() - cpu;
    if !local.failed.is_empty() || local.pulled.len() != 2 {
        bail!("pull from the directory store failed: {:?}", local.failed);
    }
    println!(
        "local work of a pull (the same pull from a directory store): {local_secs:.3}s (cpu {local_cpu:.2}s); pull/(raw download + local work) ratio: {:.2}",
        pull_secs / (raw_secs + local_secs)
    );
    // `--pull-repeat N`: the local pull again N times into fresh mirrors (to profile it).
    for i in 0..pull_repeat {
        let m = SharedMirror::open_or_init(&tmp.path().join(format!("r{i}")).join("mirror.git"))
            .await?;
        let started = Instant::now();
        let again = sync::pull(&dir_store, &m, &[]).await?;
        if again.pulled.len() != 2 {
            bail!("repeated pull failed: {:?}", again.failed);
        }
        println!("local pull again: {:.3}s", started.elapsed().as_secs_f64());
    }
    emulator.shutdown().await;
    println!(
        "incremental push: {:.2}% of full",
        second_bytes as f64 * 100.0 / first_bytes as f64
    );
    Ok(())
}
