//! `k8s-snap keygen` (and the key flags of other commands): age X25519 identities for
//! Secrets encrypted at rest (docs/encryption.md).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity (private key; created with mode 0600, never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Writes a new identity to `--out` and prints its recipient (public key) on stdout.
pub fn keygen(_global: &GlobalArgs, args: KeygenArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let recipient = k8s_snap::crypt::write_new_identity(&args.out)?;
    writeln!(out, "{recipient}")?;
    Ok(super::exit::OK)
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// The new recipients (age1…); repeatable or comma-separated.
    #[arg(
        long = "to",
        value_name = "RECIPIENT",
        required = true,
        value_delimiter = ','
    )]
    pub to: Vec<String>,
    /// An identity file that opens the snapshots as they are sealed now.
    #[arg(long, value_name = "FILE", env = "K8S_SNAP_IDENTITY")]
    pub identity: PathBuf,
    /// Rewrite the mirror only; do not replace the snapshots in the store.
    #[arg(long)]
    pub local_only: bool,
    /// Snapshots to re-encrypt (default: every encrypted snapshot of the mirror).
    pub names: Vec<String>,
}

/// Re-encrypts snapshots for new recipients in the mirror, then replaces them in the store.
pub async fn rekey(
    global: &GlobalArgs,
    args: RekeyArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let to = k8s_snap::crypt::Recipients::parse(&args.to).context("--to")?;
    let ids = k8s_snap::crypt::Identities::from_file(&args.identity)?;
    let store = if args.local_only {
        None
    } else {
        Some(super::store::open_store(global).await?)
    };
    let git_dir = global.mirror_dir()?;
    let names = args.names.clone();
    let done =
        tokio::task::spawn_blocking(move || k8s_snap::rekey::rekey(&git_dir, &names, &to, &ids))
            .await??;
    let rekeyed: Vec<String> = done
        .iter()
        .filter(|r| r.result == "rekeyed")
        .map(|r| r.name.clone())
        .collect();
    if global.output == super::Format::Table {
        for r in &done {
            writeln!(
                out,
                "{}: {} ({} data keys re-wrapped, {} values re-encrypted)",
                r.name, r.result, r.keys, r.values
            )?;
        }
    } else {
        super::output::write_data(out, global.output, &done)?;
    }
    if let (Some(store), false) = (store, rekeyed.is_empty()) {
        // The store's entries point at the old commits: replace them with the new ones.
        let deleted = k8s_snap::store::sync::delete(store.as_ref(), &rekeyed)
            .await
            .with_context(|| format!("replacing the rekeyed snapshots in {}", store.describe()))?
            .deleted;
        if !deleted.is_empty() {
            let mut sink = std::io::sink();
            let target: &mut dyn Write = if global.output == super::Format::Table {
                out
            } else {
                &mut sink
            };
            super::store::push_and_report(global, store.as_ref(), &deleted, target)
                .await
                .with_context(|| {
                    format!(
                        "{} rekeyed in the mirror but not in the store; retry with `k8s-snap push {}`",
                        deleted.join(", "),
                        deleted.join(" ")
                    )
                })?;
        }
    }
    Ok(super::exit::OK)
}

/// The identities of `--identity` / `K8S_SNAP_IDENTITY`, if given.
pub fn load_identities(
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<k8s_snap::crypt::Identities>> {
    file.map(k8s_snap::crypt::Identities::from_file)
        .transpose()
        .map_err(anyhow::Error::from)
}
