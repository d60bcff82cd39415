//! Benchmark: `k8s-snap log` (the history of one object) over many snapshots of a large cluster.
//!
//! `cargo run --release --example bench_log -- [--snapshots 300] [--objects 5000] [--changes 5] [--dir DIR]`
//!
//! With `--dir`, the mirror is kept there and reused by the next run (only the timing runs).
//!
//! Writes the snapshots straight through the mirror API into a temporary mirror (no cluster):
//! `--objects` ConfigMaps in 50 namespaces, `--changes` of them changed between consecutive
//! snapshots (the object followed changes every 10th snapshot and is deleted in the last
//! one). Then times what `k8s-snap log` does — open the mirror, read the snapshot list, walk
//! the object's history — and the same with `--patch` (the changed blobs read). The last line
//! is `log: X.XXX s over N snapshots` (the target: under a second for 300 snapshots of 5,000
//! objects).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "examples and benchmarks print their results and stop on setup errors"
)]

use std::time::Instant;

use k8s_snap::mirror::Mirror;
use k8s_snap::tree::meta::{SNAPSHOT_META_FILE, SnapshotMeta};
use k8s_snap::tree::{Consistency, ContentPath};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

const NAMESPACES: usize = 50;
const CLUSTER: &str = "bench";

fn object_path(i: usize) -> ContentPath {
    ContentPath::new(
        "",
        "v1",
        "configmaps",
        Some(&format!("ns-{:02}", i % NAMESPACES)),
        &format!("cm-{i:05}"),
    )
    .unwrap()
}

fn object_yaml(i: usize, version: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:05}\n  namespace: ns-{:02}\ndata:\n  key: value-{version}\n",
        i % NAMESPACES
    )
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let snapshots = arg(&args, "--snapshots", 300);
    let objects = arg(&args, "--objects", 5000).max(2);
    let changes = arg(&args, "--changes", 5);
    let temp = tempfile::tempdir()?;
    let dir = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let git_dir = dir.join("mirror.git");
    let followed = 1usize;
    let reuse =
        Mirror::open(&git_dir).is_ok_and(|m| m.snapshots().is_ok_and(|s| s.len() == snapshots));

    let started = Instant::now();
    let mirror = Mirror::open_or_init(&git_dir)?;
    // The version of each object's content; a few change between snapshots.
    let mut versions = vec![0usize; objects];
    let mut rng = fastrand::Rng::with_seed(19);
    let mut expected = 0usize;
    for s in 0..snapshots {
        if s > 0 && s % 10 == 0 {
            expected += 1;
        }
        if reuse {
            continue;
        }
        if s > 0 {
            for _ in 0..changes {
                let i = rng.usize(2..objects);
                versions[i] += 1;
            }
            if s % 10 == 0 {
                versions[followed] += 1;
            }
        }
        let name = format!("snap-{s:04}");
        let mut w = mirror.writer(&name, CLUSTER)?;
        for (i, v) in versions.iter().enumerate() {
            if i == followed && s + 1 == snapshots {
                continue; // deleted in the last snapshot
            }
            w.add(&object_path(i).file_path(), object_yaml(i, *v).as_bytes())?;
        }
        let meta = SnapshotMeta {
            format_version: 1,
            name: name.clone(),
            cluster_name: CLUSTER.into(),
            resource_version: (1000 + s).to_string(),
            timestamp: jiff::Timestamp::from_second(1_700_000_000 + s as i64 * 3600)?,
            server_version: "v1.32.0".into(),
            consistency: Consistency::Exact,
            number_of_contents: objects as u64,
            ttl: None,
            available_until: None,
            imported_from: None,
            tool_version: "bench_log".into(),
            skipped: vec![],
            encryption: None,
            filter: None,
            unavailable_apis: Vec::new(),
        };
        let yaml = serde_saphyr::to_string(&meta)?;
        w.add(SNAPSHOT_META_FILE, yaml.as_bytes())?;
        w.finish(&meta)?;
    }
    println!(
        "{} {snapshots} snapshots of {objects} objects ({changes} changed between snapshots) in {:.1} s",
        if reuse { "reused" } else { "wrote" },
        started.elapsed().as_secs_f64()
    );
    drop(mirror);

    let path = object_path(followed);
    for patch in [false, true] {
        let started = Instant::now();
        let mirror = Mirror::open(&git_dir)?;
        let all: Vec<_> = mirror
            .snapshots()?
            .into_iter()
            .filter(|s| s.meta.cluster_name == CLUSTER)
            .collect();
        let listed = started.elapsed().as_secs_f64();
        let steps = mirror.history(&all, &path.file_path())?;
        let walked = started.elapsed().as_secs_f64() - listed;
        let mut bytes = 0usize;
        if patch {
            for s in &steps {
                for id in [&s.old, &s.new].into_iter().flatten() {
                    bytes += mirror.read_blob(id)?.len();
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        // Added once, changed `expected` times, removed once.
        assert_eq!(steps.len(), expected + 2, "history of {path}");
        println!(
            "log{}: {secs:.3} s over {} snapshots (snapshot list {listed:.3} s, history walk {walked:.3} s), {} changes{}",
            if patch { " --patch" } else { "" },
            all.len(),
            steps.len(),
            if patch {
                format!(", {bytes} bytes of blobs read")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
