//! The README's quickstart: an emulated cluster, two snapshots around a change, the plain
//! git commands to browse them, then a restore of the second snapshot into a second (empty)
//! emulated cluster, showing the plan first.
//!
//! `cargo run --release --example quickstart [DATA_DIR]` (default `target/quickstart`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "examples and benchmarks print their results and stop on setup errors"
)]

/// The binary's command line (not part of the library's API), compiled into this example.
#[path = "../src/cli/mod.rs"]
#[allow(dead_code, unused_imports)]
mod cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_snap::cluster::{Cluster, ConnectOptions};
use k8s_snap::snapshot::{self, NoProgress, SnapshotOptions};
use kube_emulator::{Emulator, Fixture};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/quickstart"));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    let git_dir = data_dir.join("mirror.git");

    println!("== starting an emulated cluster (fixture: realistic)");
    let emulator = Emulator::builder()
        .fixture(Fixture::Realistic)
        .start()
        .await?;
    let kubeconfig = data_dir.join("kubeconfig");
    emulator.write_kubeconfig(&kubeconfig, "demo")?;
    println!(
        "   API server {} (kubeconfig {})",
        emulator.url(),
        kubeconfig.display()
    );

    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await?;

    let first = snapshot::take_snapshot(
        &cluster,
        git_dir.clone(),
        &SnapshotOptions::new("demo-1"),
        Arc::new(NoProgress),
    )
    .await?;
    println!(
        "== snapshot demo-1: {} objects from {} resources at rv {} in {:.2}s",
        first.number_of_contents,
        first.resources,
        first.snapshot_resource_version,
        first.duration_seconds
    );

    // A change between the two snapshots: edit one application ConfigMap.
    let (namespace, name) = pick_configmap(&cluster).await?;
    let patch =
        serde_json::json!({"data": {"quickstart-edit": "changed between demo-1 and demo-2\n"}});
    cluster
        .request_bytes(
            http::Method::PATCH,
            &format!("/api/v1/namespaces/{namespace}/configmaps/{name}"),
            Some(serde_json::to_vec(&patch)?),
            Some("application/merge-patch+json"),
        )
        .await?;
    println!("== patched configmap {namespace}/{name}");

    let second = snapshot::take_snapshot(
        &cluster,
        git_dir.clone(),
        &SnapshotOptions::new("demo-2"),
        Arc::new(NoProgress),
    )
    .await?;
    println!(
        "== snapshot demo-2: {} objects, {} new git objects ({} bytes) in {:.2}s",
        second.number_of_contents, second.new_objects, second.new_bytes, second.duration_seconds
    );

    let g = format!("git --git-dir {}", git_dir.display());
    let file = format!("api/v1/namespaces/{namespace}/configmaps/{name}.yaml");
    println!();
    println!("Browse the snapshots with plain git:");
    println!("  {g} tag -l 'snapshots/*'");
    println!("  {g} log --oneline clusters/{}", first.cluster_name);
    println!("  {g} diff --stat snapshots/demo-1 snapshots/demo-2 -- api apis");
    println!("  {g} diff snapshots/demo-1 snapshots/demo-2 -- {file}");
    println!("  {g} show snapshots/demo-2:{file}");
    println!("  {g} ls-tree -r --name-only snapshots/demo-2 -- apis/apps");
    println!();
    println!("Or with k8s-snap:");
    println!(
        "  cargo run --release -- --data-dir {} list",
        data_dir.display()
    );
    println!(
        "  cargo run --release -- --data-dir {} diff demo-1 demo-2",
        data_dir.display()
    );
    println!(
        "  cargo run --release -- --data-dir {} show demo-2 /api/v1/namespaces/{namespace}/configmaps/{name}",
        data_dir.display()
    );
    restore_into_second_cluster(&data_dir).await?;
    emulator.shutdown().await;
    Ok(())
}

/// Plan, then restore, `demo-2` into an empty emulated cluster with its own service range,
/// through the same command line a user types.
async fn restore_into_second_cluster(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::Parser as _;
    println!();
    println!("== starting a second, empty emulated cluster (service range 10.200.0.0/16)");
    let target = Emulator::builder()
        .fixture(Fixture::Empty)
        .service_cidr("10.200.0.0/16")
        .start()
        .await?;
    let kubeconfig_b = data_dir.join("kubeconfig-b");
    target.write_kubeconfig(&kubeconfig_b, "demo-b")?;
    let preference = data_dir.join("preference.yaml");
    std::fs::write(
        &preference,
        "apiVersion: clustersnapshot.rywt.io/v1alpha1
kind: RestorePreference
metadata:
  name: exclude-kube-system
spec:
  excludeNamespaces: [kube-system, kube-public, kube-node-lease]
  excludeApiPathes:
  - /api/v1/namespaces/default/services/kubernetes
  - /api/v1/namespaces/default/endpoints/kubernetes
  restoreNfsStorageClasses: [nfs]
",
    )?;
    let run = |args: &[&str]| {
        let mut argv = vec![
            "k8s-snap".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--kubeconfig".into(),
            kubeconfig_b.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        cli::Cli::try_parse_from(argv)
    };
    let pref = preference.display().to_string();
    let mut stdout = std::io::stdout();
    println!("== k8s-snap plan demo-2 --preference {pref}   (against the second cluster)");
    cli::run(
        run(&["plan", "demo-2", "--preference", &pref])?,
        &mut stdout,
    )
    .await?;
    println!();
    println!("== k8s-snap restore demo-2 --preference {pref}");
    cli::run(
        run(&["restore", "demo-2", "--preference", &pref])?,
        &mut stdout,
    )
    .await?;
    println!();
    println!("== k8s-snap restore demo-2 again: creates nothing");
    cli::run(
        run(&["restore", "demo-2", "--preference", &pref])?,
        &mut stdout,
    )
    .await?;
    let cluster_b = Cluster::connect(&ConnectOptions {
        kubeconfig: Some(kubeconfig_b.clone()),
        ..Default::default()
    })
    .await?;
    let services: serde_json::Value = cluster_b
        .get_json("/api/v1/namespaces/shop/services")
        .await?;
    println!();
    println!("Services on the second cluster got addresses from its own range:");
    for s in services["items"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} {}",
            s["metadata"]["name"].as_str().unwrap_or_default(),
            s["spec"]["clusterIP"].as_str().unwrap_or_default()
        );
    }
    let claims: serde_json::Value = cluster_b.get_json("/api/v1/persistentvolumeclaims").await?;
    println!("NFS claims re-bound to their restored volumes:");
    for c in claims["items"].as_array().into_iter().flatten() {
        println!(
            "  {}/{} -> {} ({})",
            c["metadata"]["namespace"].as_str().unwrap_or_default(),
            c["metadata"]["name"].as_str().unwrap_or_default(),
            c["spec"]["volumeName"].as_str().unwrap_or_default(),
            c["status"]["phase"].as_str().unwrap_or_default()
        );
    }
    println!(
        "Try: cargo run --release -- --data-dir {} --kubeconfig {} plan demo-2 --preference {pref} --diff",
        data_dir.display(),
        kubeconfig_b.display()
    );
    target.shutdown().await;
    Ok(())
}

/// The first ConfigMap outside the system namespaces.
async fn pick_configmap(cluster: &Cluster) -> anyhow::Result<(String, String)> {
    let list: serde_json::Value = cluster.get_json("/api/v1/configmaps").await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|cm| {
            let ns = cm["metadata"]["namespace"].as_str()?;
            let name = cm["metadata"]["name"].as_str()?;
            (!ns.starts_with("kube-") && name != "kube-root-ca.crt")
                .then(|| (ns.to_string(), name.to_string()))
        })
        .next()
        .context("the emulated cluster has no application ConfigMap")
}
