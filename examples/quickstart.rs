//! The README's quickstart: an emulated cluster, two snapshots around a change, and the plain
//! git commands to browse them.
//!
//! `cargo run --release --example quickstart [DATA_DIR]` (default `target/quickstart`).

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
    emulator.shutdown().await;
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
