//! `k8s-snap snapshot`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::cluster::Cluster;
use k8s_snap::snapshot::{self, Observer, SnapshotOptions};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Snapshot name (lower-case letters, digits, '-' and '.'; unique in the mirror; default
    /// `<cluster>-<yyyymmddhhmmss>`, UTC).
    pub name: Option<String>,
    /// Cluster name recorded with the snapshot (default: the kubeconfig context's cluster).
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Keep the snapshot this long (e.g. 720h); `gc` removes it afterwards.
    #[arg(long, value_name = "DURATION", conflicts_with = "available_until")]
    pub ttl: Option<String>,
    /// Keep the snapshot until this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub available_until: Option<jiff::Timestamp>,
    /// Resources listed in parallel.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Do not push the snapshot to the store when done.
    #[arg(long)]
    pub no_push: bool,
    /// Seal every Secret value to this age recipient (age1…, from `k8s-snap keygen`);
    /// repeatable, or comma-separated in K8S_SNAP_ENCRYPT_TO.
    #[arg(
        long,
        value_name = "RECIPIENT",
        env = "K8S_SNAP_ENCRYPT_TO",
        value_delimiter = ','
    )]
    pub encrypt_to: Vec<String>,
    /// Also seal this field of every object of a resource: `<resource>[.<group>]:<field
    /// path>` (e.g. `widgets.example.com:spec.credentials.password`); repeatable; needs
    /// --encrypt-to.
    #[arg(long = "encrypt-path", value_name = "RESOURCE:FIELD")]
    pub encrypt_path: Vec<String>,
    /// Only objects of these namespaces (glob patterns; repeatable or comma-separated).
    #[arg(long, value_name = "NS", value_delimiter = ',')]
    pub include_namespaces: Vec<String>,
    /// No objects of these namespaces (glob patterns; wins over --include-namespaces).
    #[arg(long, value_name = "NS", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
    /// Only these resources: configmaps, deployments.apps, *.example.com, or a kind.
    #[arg(long, value_name = "RESOURCE", value_delimiter = ',')]
    pub include_resources: Vec<String>,
    /// Not these resources (same forms; wins over --include-resources).
    #[arg(long, value_name = "RESOURCE", value_delimiter = ',')]
    pub exclude_resources: Vec<String>,
    /// Only objects whose labels match this selector (Kubernetes syntax, applied by the
    /// server to every list).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Cluster-scoped objects: auto (only without a namespace filter), true or false.
    /// Namespace objects follow the namespace filter.
    #[arg(long, value_name = "WHEN", default_value = "auto",
          value_parser = clap::builder::PossibleValuesParser::new(["auto", "true", "false"]))]
    pub include_cluster_resources: String,
}

impl SnapshotArgs {
    /// The snapshot filter the flags give.
    fn filter(&self) -> k8s_snap::tree::SnapshotFilter {
        k8s_snap::tree::SnapshotFilter {
            include_namespaces: self.include_namespaces.clone(),
            exclude_namespaces: self.exclude_namespaces.clone(),
            include_resources: self.include_resources.clone(),
            exclude_resources: self.exclude_resources.clone(),
            label_selector: self.selector.clone(),
            include_cluster_resources: match self.include_cluster_resources.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        }
    }
}

pub async fn run(
    global: &GlobalArgs,
    args: SnapshotArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let git_dir = global.mirror_dir()?;
    // Refuse a bad name or store URL before touching the kubeconfig or the cluster.
    if let Some(name) = &args.name {
        // The error names the snapshot name and says what is wrong with it.
        k8s_snap::mirror::validate_name("snapshot", name)?;
    }
    if let Some(cluster) = &args.cluster {
        k8s_snap::mirror::validate_name("cluster", cluster).context("invalid --cluster")?;
    }
    if let Some(ttl) = &args.ttl {
        k8s_snap::duration::parse_ttl(ttl, jiff::Timestamp::now())
            .map_err(|e| anyhow::anyhow!("invalid --ttl: {e}"))?;
    }
    let filter = args.filter();
    // A bad pattern or selector is refused before the cluster is asked anything.
    snapshot::filter::Filter::new(&filter).context("invalid snapshot filter")?;
    let encrypt_to = if args.encrypt_to.is_empty() {
        None
    } else {
        Some(k8s_snap::crypt::Recipients::parse(&args.encrypt_to).context("--encrypt-to")?)
    };
    let encrypt_paths = args
        .encrypt_path
        .iter()
        .map(|p| p.parse::<k8s_snap::crypt::SealedPath>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("invalid --encrypt-path {e}"))?;
    if !encrypt_paths.is_empty() && encrypt_to.is_none() {
        anyhow::bail!(
            "--encrypt-path needs recipients: give --encrypt-to (or K8S_SNAP_ENCRYPT_TO)"
        );
    }
    let store = if args.no_push {
        None
    } else {
        Some(super::store::open_store(global).await?)
    };
    let cluster = Cluster::connect(&global.connect_options()).await?;
    // No name: `<cluster>-<yyyymmddhhmmss>` (the cluster name as the snapshot records it).
    let name = match args.name {
        Some(n) => n,
        None => {
            let cluster_name = args
                .cluster
                .as_deref()
                .or(cluster.cluster_name())
                .unwrap_or("default");
            let name = k8s_snap::mirror::timestamped_name(cluster_name, jiff::Timestamp::now());
            k8s_snap::mirror::validate_name("snapshot", &name).map_err(|e| {
                anyhow::anyhow!("cannot name the snapshot after the cluster ({e}); give a name")
            })?;
            name
        }
    };
    let opts = SnapshotOptions {
        name: name.clone(),
        cluster_name: args.cluster,
        ttl: args.ttl,
        available_until: args.available_until,
        threads: usize::from(args.threads),
        page_size: 500,
        encrypt_to,
        filter,
        encrypt_paths,
        stored_copies: store.is_some(),
    };
    let show_progress = !global.quiet && std::io::stderr().is_terminal();
    let bar = Arc::new(ProgressBar::new(show_progress));
    let result = snapshot::take_snapshot(&cluster, git_dir, &opts, bar.clone()).await;
    bar.finish();
    let summary =
        result.with_context(|| format!("snapshot {name:?} failed; nothing was tagged"))?;
    for api in &summary.unavailable_apis {
        eprintln!(
            "warning: {} was not read: the server lists it but answered {}; its objects are not in snapshot {}",
            api.group_version, api.reason, summary.name
        );
    }
    if summary.unencrypted_secrets > 0 && !global.quiet {
        eprintln!(
            "notice: {} Secrets stored unencrypted; seal their values with --encrypt-to (docs/encryption.md)",
            summary.unencrypted_secrets
        );
    }
    match global.output {
        Format::Table => {
            writeln!(
                out,
                "snapshot {} of {} at rv {}: {} objects from {} resources ({} skipped), {} new git objects ({}), {:.1}s",
                summary.name,
                summary.cluster_name,
                summary.snapshot_resource_version,
                summary.number_of_contents,
                summary.resources,
                summary.skipped,
                summary.new_objects,
                output::bytes(summary.new_bytes),
                summary.duration_seconds
            )?;
            output::write_commit_line(out, &summary.commit, &summary.name)?;
            if let Some(f) = &summary.filter {
                writeln!(out, "partial snapshot: {}", f.describe())?;
            }
        }
        format => output::write_data(out, format, &summary)?,
    }
    if let Some(store) = store {
        let mut sink = std::io::sink();
        let target: &mut dyn Write = if global.output == Format::Table {
            out
        } else {
            &mut sink
        };
        super::store::push_and_report(global, store.as_ref(), std::slice::from_ref(&name), target)
            .await
            .with_context(|| {
                format!(
                    "snapshot {:?} is in the local mirror but was not pushed; retry with `k8s-snap push {}`",
                    name, name
                )
            })?;
    }
    Ok(super::exit::OK)
}

/// An indicatif bar on stderr when it is a terminal; nothing otherwise.
struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
    objects: std::sync::atomic::AtomicU64,
}

impl ProgressBar {
    fn new(visible: bool) -> Self {
        let bar = visible.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} resources, {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("0 objects");
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        ProgressBar {
            bar,
            objects: Default::default(),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for ProgressBar {
    fn started(&self, resources: usize) {
        if let Some(b) = &self.bar {
            b.set_length(resources as u64);
        }
    }

    fn objects_written(&self, n: u64) {
        if let Some(b) = &self.bar {
            let total = self
                .objects
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
                + n;
            b.set_message(format!("{total} objects"));
        }
    }

    fn resource_done(&self, _resource: &k8s_snap::discovery::ApiResourceInfo, _count: u64) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }
}
