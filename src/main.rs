//! The `k8s-snap` binary: parses the command line, runs it, maps errors to exit codes.

#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary's edge prints errors"
)]

use std::io::Write;

mod cli;

use clap::Parser;
use cli::{Cli, exit};

/// mimalloc: snapshots allocate and free millions of small JSON and YAML nodes; glibc's
/// allocator spends a tenth of a snapshot's CPU time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    owner_only_files();
    // Go-style `-namespace=x` flags of the original controller are accepted too.
    let cli = Cli::parse_from(cli::controller::go_style_args(std::env::args_os()));
    cli::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match runtime.block_on(cli::run(cli, &mut out)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => exit::OK,
        Err(e) => {
            let _ = out.flush();
            eprintln!("error: {}", cli::error_message(&e));
            exit::FAILURE
        }
    };
    if let Err(e) = out.flush()
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: writing output: {e}");
        std::process::exit(exit::FAILURE);
    }
    drop(out);
    drop(runtime);
    std::process::exit(code);
}

/// `k8s-snap list | head -1` is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    // serde_json's error hides its io error from `source()`: ask it for the kind.
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                c.downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Everything the tool writes (the mirror's packs hold Secret data, the default store, temp
/// files) is owner-only — 0600 files, 0700 directories — whatever the caller's umask, and
/// stays so when gc or repack rewrite files: the process umask is 077.
#[cfg(unix)]
fn owner_only_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[cfg(not(unix))]
fn owner_only_files() {}
