//! `kube-emulator serve`: run the Kubernetes API server emulator as a process.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube_emulator::{Emulator, FaultRule, Fixture, ServerVersion};

#[derive(Parser)]
#[command(
    name = "kube-emulator",
    version,
    about = "An emulator of the Kubernetes API server (plain HTTP, JSON)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until killed; prints `listening on http://ADDR` once ready.
    Serve(Serve),
}

#[derive(Parser)]
struct Serve {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Initial objects: empty | realistic | scale:N
    #[arg(long, default_value = "empty")]
    fixture: Fixture,
    /// Require this bearer token.
    #[arg(long, env = "KUBE_EMULATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write a kubeconfig (cluster/context/user named `emulator`) to this file.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Fault rule, repeatable. Comma-separated items: `method=GET`, `path=/api/v1/configmaps`
    /// (prefix), actions `status=503`, `retry-after=1` (seconds; implies 429 without status),
    /// `latency=200ms`, `drop` (close the connection), limits `times=3`, `probability=0.2`.
    /// Examples: `method=GET,path=/api/v1/configmaps,status=503,times=3`,
    /// `path=/apis,status=429,retry-after=1`, `path=/api,latency=200ms`,
    /// `path=/apis/apps,drop,probability=0.2`.
    #[arg(long = "fault", value_name = "RULE")]
    faults: Vec<FaultRule>,
    /// Service cluster IP range.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Delay before a new CRD is Established.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    crd_establish_delay: Duration,
    /// Revisions of history kept for lists/watches at a resourceVersion.
    #[arg(long, default_value_t = 100_000)]
    compaction_window: u64,
    /// 1.19-style token Secrets for every new ServiceAccount (always on before 1.24).
    #[arg(long)]
    legacy_token_secrets: bool,
    /// The Kubernetes release to play: 1.19 | 1.22 | 1.25 | latest (its groups, versions,
    /// resources and preferred versions).
    #[arg(long, default_value = "latest", env = "KUBE_EMULATOR_SERVER_VERSION")]
    server_version: ServerVersion,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve(s) = Cli::parse().command;
    let mut b = Emulator::builder()
        .listen(s.listen)
        .fixture(s.fixture)
        .service_cidr(&s.service_cidr)
        .crd_establish_delay(s.crd_establish_delay)
        .compaction_window(s.compaction_window)
        .legacy_token_secrets(s.legacy_token_secrets)
        .server_version(s.server_version);
    if let Some(t) = s.token {
        b = b.token(t);
    }
    for f in s.faults {
        b = b.fault(f);
    }
    let emu = b.start().await.context("starting the emulator")?;
    if let Some(p) = &s.write_kubeconfig {
        emu.write_kubeconfig(p, "emulator")
            .with_context(|| format!("writing kubeconfig {}", p.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", emu.url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    emu.shutdown().await;
    Ok(())
}
