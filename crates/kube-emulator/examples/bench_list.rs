//! Benchmark: a full paginated LIST (limit 500) of every listable resource holding objects,
//! against an in-process emulator seeded with `scale:N`.
//!
//! `cargo run --release -p kube-emulator --example bench_list -- --objects 50000`
//! Until the scale fixture produces objects, ConfigMaps are generated here instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "examples and benchmarks print their results and stop on setup errors"
)]

use std::time::Instant;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};
use kube_emulator::{Emulator, Fixture};
use serde_json::json;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn generated(n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::with_capacity(n + 20);
    for ns in 0..20 {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("bench-{ns}")}}));
    }
    for i in 0..n {
        out.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i:06}"), "namespace": format!("bench-{}", i % 20),
                "labels": {"app": format!("app-{}", i % 50), "bench": "true"},
                "uid": format!("00000000-0000-4000-9000-{i:012}"), "creationTimestamp": "2024-01-01T00:00:00Z"},
            "data": {"config.yaml": format!("key: value-{i}\nreplicas: {}\nenabled: true\n", i % 7), "id": i.to_string()}}));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut n = 50_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--objects" {
            n = args
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("--objects needs a number"))?;
        }
    }
    let seed_start = Instant::now();
    let fixture = if kube_emulator::fixtures::scale::objects(1).is_empty() {
        Fixture::Objects(generated(n))
    } else {
        Fixture::Scale(n)
    };
    let emu = Emulator::builder().fixture(fixture).start().await?;
    let seed_secs = seed_start.elapsed().as_secs_f64();
    let client = emu.client().await;
    let discovery = Discovery::new(client.clone()).run().await?;
    let start = Instant::now();
    let (mut objects, mut pages, mut resources) = (0usize, 0usize, 0usize);
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let mut lp = ListParams::default().limit(500);
            let mut held = 0;
            loop {
                let page = api.list(&lp).await?;
                pages += 1;
                held += page.items.len();
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = ListParams::default().limit(500).continue_token(&c),
                    None => break,
                }
            }
            if held > 0 {
                resources += 1;
            }
            objects += held;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("seeded {n} objects in {seed_secs:.2}s");
    println!(
        "listed objects={objects} resources={resources} pages={pages} seconds={secs:.3} objects/s={:.0} peak_rss_mib={:.1}",
        objects as f64 / secs,
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    emu.shutdown().await;
    Ok(())
}
