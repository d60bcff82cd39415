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

/// The identities of `--identity` / `K8S_SNAP_IDENTITY`, if given.
pub fn load_identities(
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<k8s_snap::crypt::Identities>> {
    file.map(k8s_snap::crypt::Identities::from_file)
        .transpose()
        .map_err(anyhow::Error::from)
}
