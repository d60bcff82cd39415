//! `k8s-snap import`: an archive of the original Go k8s-snap (a local `<name>.tgz`, or a key at
//! the root of the store's S3 bucket) becomes a snapshot of the local mirror.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::import::{self, ImportOptions};
use k8s_snap::store::{self, StoreUrl};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive: a local file `<name>.tgz`, `s3://bucket/<name>.tgz`, or a key `<name>.tgz`
    /// at the root of the bucket of the `--store` S3 URL (where the original controller kept
    /// its archives).
    #[arg(value_name = "ARCHIVE")]
    pub archive: String,
    /// Name of the imported snapshot (default: the archive's, `<name>` of `<name>.tgz`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Where the archive is read from.
enum Source {
    File(std::path::PathBuf),
    Bucket { bucket: String, key: String },
}

fn source(global: &GlobalArgs, arg: &str) -> anyhow::Result<Source> {
    if let Some(rest) = arg.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("{arg:?}: an S3 archive is named s3://<bucket>/<key>")
            })?;
        return Ok(Source::Bucket {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        });
    }
    let path = std::path::PathBuf::from(arg);
    if path.exists() {
        return Ok(Source::File(path));
    }
    match super::store::store_url(global)? {
        StoreUrl::S3 { bucket, .. } if !arg.contains('/') => Ok(Source::Bucket {
            bucket,
            key: arg.to_owned(),
        }),
        _ => anyhow::bail!(
            "{arg}: no such file (a key at the root of an S3 bucket needs --store s3://<bucket>)"
        ),
    }
}

pub async fn run(
    global: &GlobalArgs,
    args: ImportArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    if let Some(name) = &args.name {
        k8s_snap::mirror::validate_name("snapshot", name).context("invalid --name")?;
    }
    let git_dir = global.mirror_dir()?;
    let (file, label, _download) = match source(global, &args.archive)? {
        Source::File(path) => (path, args.archive.clone(), None),
        Source::Bucket { bucket, key } => {
            let url = StoreUrl::S3 {
                bucket: bucket.clone(),
                prefix: String::new(),
            };
            let store = store::open(&url, &super::store::s3_options(global)).await?;
            let tmp = import::fetch_archive(
                store.as_ref(),
                &key,
                &import::download_dir(&global.data_dir()?),
            )
            .await?;
            (
                tmp.path().to_path_buf(),
                format!("s3://{bucket}/{key}"),
                Some(tmp),
            )
        }
    };
    let opts = ImportOptions {
        name: args.name.clone(),
        source: label.clone(),
    };
    let summary = tokio::task::spawn_blocking(move || import::import_file(&file, &git_dir, &opts))
        .await
        .context("the import task stopped")?
        .with_context(|| format!("import of {label} failed; nothing was tagged"))?;
    match global.output {
        Format::Table => {
            writeln!(
                out,
                "imported {} as snapshot {} of {} at rv {} ({}): {} objects ({} of the archive's {} files dropped)",
                summary.imported_from,
                summary.name,
                summary.cluster_name,
                summary.snapshot_resource_version,
                summary.snapshot_timestamp,
                summary.number_of_contents,
                summary.dropped,
                summary.archive_entries,
            )?;
            output::write_commit_line(out, &summary.commit, &summary.name)?;
        }
        format => output::write_data(out, format, &summary)?,
    }
    Ok(super::exit::OK)
}
