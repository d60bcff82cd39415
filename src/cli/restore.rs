//! `k8s-snap plan` and `k8s-snap restore`: a snapshot from the local mirror onto the target
//! cluster (`--kubeconfig/--context`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::cluster::Cluster;
use k8s_snap::restore::plan_file::{self, PlanFile, PlannedSnapshot};
use k8s_snap::restore::{self, LoadedSnapshot, Plan, Preference, RestoreOptions, RestoreStatus};

/// Flags shared by `plan` and `restore`.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Snapshot name (in the local mirror).
    pub snapshot: String,
    /// A RestorePreference YAML file (apiVersion clustersnapshot.rywt.io/v1alpha1).
    #[arg(long, value_name = "FILE")]
    pub preference: Option<PathBuf>,
    /// Keep Service nodePorts even when last-applied does not name them.
    #[arg(long)]
    pub preserve_nodeports: bool,
    /// Requests in flight at once (per stage).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// An age identity file that opens the snapshot's encrypted Secret values
    /// (docs/encryption.md).
    #[arg(long, value_name = "FILE", env = "K8S_SNAP_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Only objects whose content path matches this glob (`*` within a path segment, `**`
    /// across); repeatable. Nothing implicit: see --create-namespaces.
    #[arg(long, value_name = "PATH-GLOB")]
    pub include: Vec<String>,
    /// Restore the objects of namespace OLD in NEW, references rewritten (docs/restore.md);
    /// repeatable.
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_mapping)]
    pub namespace_mapping: Vec<(String, String)>,
    /// Also create the Namespace of every restored object (the snapshot's, or a bare one).
    #[arg(long)]
    pub create_namespaces: bool,
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) => Ok((old.trim().to_string(), new.trim().to_string())),
        None => Err(format!("{s:?}: expected OLD=NEW (e.g. shop=shop-copy)")),
    }
}

/// The preference with the selection flags (`--include`, `--namespace-mapping`,
/// `--create-namespaces`) added to it, validated again.
fn with_selection_flags(pref: Preference, common: &CommonArgs) -> anyhow::Result<Preference> {
    if common.include.is_empty() && common.namespace_mapping.is_empty() && !common.create_namespaces
    {
        return Ok(pref);
    }
    let mut spec = pref.spec;
    for glob in &common.include {
        if !glob.starts_with('/') {
            anyhow::bail!(
                "--include {glob:?}: a content path glob starts with '/' (e.g. /api/v1/namespaces/shop/configmaps/*)"
            );
        }
    }
    spec.include_paths.extend(common.include.iter().cloned());
    for (old, new) in &common.namespace_mapping {
        restore::mapping::check_entry(old, new)
            .map_err(|e| anyhow::anyhow!("--namespace-mapping {old}={new}: {e}"))?;
        if let Some(prev) = spec.namespace_mapping.insert(old.clone(), new.clone())
            && &prev != new
        {
            anyhow::bail!("--namespace-mapping {old}={new}: {old} is already mapped onto {prev}");
        }
    }
    spec.create_namespaces |= common.create_namespaces;
    Ok(Preference::from_spec(pref.name, spec, "of the flags")?)
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Show a unified diff for objects that differ.
    #[arg(long)]
    pub diff: bool,
    /// Show Secret values in diffs (masked by default).
    #[arg(long)]
    pub show_secrets: bool,
    /// Validate every create with a server-side dry run (dryRun=All).
    #[arg(long)]
    pub server_dry_run: bool,
    /// Decide exists/differs of objects present on the target with a dry-run (dryRun=All)
    /// update of the snapshot object compared with the live object, as `kubectl diff` does:
    /// exact for every field, defaults included; one GET and one PUT per object.
    #[arg(long)]
    pub server_side_diff: bool,
    /// Exit with 2 when anything would be created or updated.
    #[arg(long)]
    pub exit_code: bool,
    /// List every object in the table (by default only those that would change something or
    /// need attention: create, update, differs, unsupported, excluded by a rule).
    #[arg(long)]
    pub all: bool,
    /// Also write the plan to this file, for review and `k8s-snap apply` (docs/plan-files.md).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file written by `plan --out`.
    pub plan_file: PathBuf,
    /// When something changed since the plan was made, apply a fresh plan instead of refusing
    /// (the changes are logged as warnings).
    #[arg(long)]
    pub allow_stale: bool,
    /// Requests in flight at once (per stage).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// An age identity file that opens the snapshot's encrypted Secret values
    /// (docs/encryption.md).
    #[arg(long, value_name = "FILE", env = "K8S_SNAP_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Seconds to wait for a CRD, Namespace or PV/PVC pair to become ready.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub wait_timeout: u64,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Plan only and print the status the restore would give; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for a CRD, Namespace or PV/PVC pair to become ready.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub wait_timeout: u64,
}

/// Loads the preference, the snapshot and connects: everything that can fail before a request.
async fn prepare(
    global: &GlobalArgs,
    common: &CommonArgs,
) -> anyhow::Result<(Preference, LoadedSnapshot, Cluster, restore::Discovering)> {
    let pref = match &common.preference {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading preference {}", file.display()))?;
            Preference::from_yaml(&text, &file.display().to_string())?
        }
        None => Preference::default(),
    };
    let pref = with_selection_flags(pref, common)?;
    let (snapshot, cluster, discovering) =
        load_and_connect(global, &common.snapshot, common.identity.as_deref(), &pref).await?;
    Ok((pref, snapshot, cluster, discovering))
}

/// Connects to the target and loads the snapshot (pulled from the store when only there),
/// its sealed Secret values opened with `identity`.
pub(super) async fn load_and_connect(
    global: &GlobalArgs,
    name: &str,
    identity: Option<&std::path::Path>,
    pref: &Preference,
) -> anyhow::Result<(LoadedSnapshot, Cluster, restore::Discovering)> {
    let git_dir = global.mirror_dir()?;
    let name = name.to_string();
    k8s_snap::mirror::validate_name("snapshot", &name)?;
    let identities = super::crypt::load_identities(identity)?;
    let cluster = Cluster::connect(&global.connect_options()).await?;
    // Only in the store (another machine took it): `prepare` pulls it first.
    let store = super::store::open_store(global).await?;
    let prepared = restore::prepare(&git_dir, &name, Some(store.as_ref()), &cluster, pref).await?;
    let discovering = prepared.discovering;
    let mut snapshot = prepared.snapshot;
    let opened = snapshot.open_sealed(identities.as_ref())?;
    if opened > 0 {
        tracing::info!(snapshot = %name, values = opened, "encrypted Secret values opened");
    }
    Ok((snapshot, cluster, discovering))
}

fn options(common: &CommonArgs) -> RestoreOptions {
    RestoreOptions {
        threads: usize::from(common.threads),
        preserve_nodeports: common.preserve_nodeports,
        ..Default::default()
    }
}

pub async fn plan(global: &GlobalArgs, args: PlanArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let (pref, snapshot, cluster, discovering) = prepare(global, &args.common).await?;
    let opts = RestoreOptions {
        diff: args.diff,
        show_secrets: args.show_secrets,
        server_dry_run: args.server_dry_run,
        server_side_diff: args.server_side_diff,
        ..options(&args.common)
    };
    let name = snapshot.name.clone();
    let planned = PlannedSnapshot {
        name: name.clone(),
        commit: snapshot.commit.clone(),
    };
    // The target's identity is read before the plan: a plan file never records a target
    // other than the one planned against.
    let target = match &args.out {
        Some(_) => Some(plan_file::target_identity(&cluster).await.context(
            "target cluster: reading the kube-system namespace (the cluster's identity)",
        )?),
        None => None,
    };
    let plan = restore::plan_with(&cluster, snapshot, discovering, &pref, &opts)
        .await
        .with_context(|| format!("planning the restore of {name:?}"))?;
    if let (Some(file), Some(target)) = (&args.out, target) {
        let text = PlanFile::new(planned, target, &pref, &opts, &plan).to_json();
        k8s_snap::watch::write_atomic(file, text.as_bytes())
            .with_context(|| format!("writing the plan file {}", file.display()))?;
    }
    match global.output {
        Format::Table => write_plan_table(out, &plan, args.all)?,
        format => output::write_data(out, format, &plan)?,
    }
    Ok(if args.exit_code && plan.has_changes() {
        super::exit::USAGE_OR_CHANGES
    } else {
        super::exit::OK
    })
}

/// Whether a plan item would change something or needs attention: shown by default.
fn needs_attention(action: restore::Action) -> bool {
    use restore::Action::*;
    match action {
        Create | Update | Differs | Unsupported | Excluded => true,
        Exists | PreferenceExcluded => false,
    }
}

/// The plan as people read it: counts per action and per namespace, then one row per object
/// that would change something or needs attention (every object with `all`), diffs below, and
/// a summary line.
pub fn write_plan_table(out: &mut dyn Write, plan: &Plan, all: bool) -> anyhow::Result<()> {
    use restore::Action;
    use std::collections::BTreeMap;
    const ACTIONS: [Action; 7] = [
        Action::Create,
        Action::Update,
        Action::Differs,
        Action::Exists,
        Action::Excluded,
        Action::PreferenceExcluded,
        Action::Unsupported,
    ];
    let column = |a: Action| ACTIONS.iter().position(|x| *x == a).unwrap_or(0);
    // Counts per namespace ("" = cluster-scoped objects) and per action.
    let mut per_ns: BTreeMap<&str, [u64; 7]> = BTreeMap::new();
    for i in &plan.items {
        per_ns.entry(i.path.namespace().unwrap_or("")).or_default()[column(i.action)] += 1;
    }
    let mut headers = vec!["NAMESPACE"];
    headers.extend(ACTIONS.iter().map(|a| match a {
        Action::PreferenceExcluded => "PREF-EXCLUDED",
        Action::Create => "CREATE",
        Action::Update => "UPDATE",
        Action::Differs => "DIFFERS",
        Action::Exists => "EXISTS",
        Action::Excluded => "EXCLUDED",
        Action::Unsupported => "UNSUPPORTED",
    }));
    let mut totals = [0u64; 7];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (ns, counts) in &per_ns {
        let mut row = vec![if ns.is_empty() {
            "(cluster-scoped)".to_string()
        } else {
            ns.to_string()
        }];
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
            row.push(c.to_string());
        }
        rows.push(row);
    }
    let mut total_row = vec!["TOTAL".to_string()];
    total_row.extend(totals.iter().map(u64::to_string));
    rows.push(total_row);
    output::write_table(out, &headers, &rows)?;

    let shown: Vec<&restore::PlanItem> = plan
        .items
        .iter()
        .filter(|i| all || needs_attention(i.action))
        .collect();
    if !shown.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|i| {
                vec![
                    i.action.as_str().to_string(),
                    i.path.to_string(),
                    i.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::write_table(out, &["ACTION", "PATH", "REASON"], &rows)?;
    }
    for i in &shown {
        if let Some(d) = &i.diff {
            writeln!(out)?;
            out.write_all(d.as_bytes())?;
        }
    }
    let s = &plan.summary;
    writeln!(
        out,
        "\n{} objects: {} to create, {} to update, {} already exist, {} differ, {} excluded, {} preference-excluded, {} unsupported",
        s.num_snapshot_contents,
        s.to_create,
        s.to_update,
        s.already_existed,
        s.differs,
        s.num_excluded,
        s.num_preference_excluded,
        s.unsupported
    )?;
    let hidden = plan.items.len() - shown.len();
    if hidden > 0 {
        writeln!(
            out,
            "{hidden} objects that already exist or that the preference leaves out are not listed (--all lists every object)."
        )?;
    }
    Ok(())
}

pub async fn run(
    global: &GlobalArgs,
    args: RestoreArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (pref, snapshot, cluster, discovering) = prepare(global, &args.common).await?;
    let opts = RestoreOptions {
        wait_timeout: std::time::Duration::from_secs(args.wait_timeout),
        ..options(&args.common)
    };
    let name = snapshot.name.clone();
    let plan = restore::plan_with(&cluster, snapshot, discovering, &pref, &opts)
        .await
        .with_context(|| format!("restore of {name:?}: planning failed; nothing was created"))?;
    let status = if args.dry_run {
        restore::dry_run_status(&plan)
    } else {
        let report = restore::apply_plan(&cluster, &name, &plan, &opts).await;
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        report.status
    };
    write_status(global, &name, &status, out)
}

/// Prints a restore status (table or data); exit code 1 when objects failed.
fn write_status(
    global: &GlobalArgs,
    name: &str,
    status: &RestoreStatus,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match global.output {
        Format::Table => {
            let rows = vec![vec![
                name.to_string(),
                status
                    .restore_timestamp
                    .clone()
                    .unwrap_or_else(|| "<none>".into()),
                status.restore_resource_version.clone(),
                status.num_excluded.to_string(),
                status.num_created.to_string(),
                status.num_updated.to_string(),
                status.num_already_existed.to_string(),
                status.num_failed.to_string(),
                status.phase.to_string(),
            ]];
            output::write_table(
                out,
                &[
                    "SNAPSHOT",
                    "TIMESTAMP",
                    "RV",
                    "EXCLUDED",
                    "CREATED",
                    "UPDATED",
                    "EXIST",
                    "FAILED",
                    "STATUS",
                ],
                &rows,
            )?;
            for f in status.failed.iter().flatten() {
                writeln!(out, "failed: {f}")?;
            }
        }
        format => output::write_data(out, format, status)?,
    }
    if status.num_failed > 0 {
        // Scripts must be able to tell: the status is printed, and the exit code says it failed.
        out.flush()?;
        eprintln!(
            "error: restore of {:?}: {} object(s) failed (listed above); the others were restored",
            name, status.num_failed
        );
        return Ok(super::exit::FAILURE);
    }
    Ok(super::exit::OK)
}

pub async fn apply(
    global: &GlobalArgs,
    args: ApplyArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let origin = args.plan_file.display().to_string();
    let text = std::fs::read_to_string(&args.plan_file)
        .with_context(|| format!("reading the plan file {origin}"))?;
    let file = PlanFile::parse(&text, &origin)?;
    // The plan's preference selects and maps the snapshot's objects as when it was made.
    let pref = file.preference(&origin)?;
    let (snapshot, cluster, discovering) =
        load_and_connect(global, &file.snapshot.name, args.identity.as_deref(), &pref).await?;
    let base = RestoreOptions {
        threads: usize::from(args.threads),
        wait_timeout: std::time::Duration::from_secs(args.wait_timeout),
        ..Default::default()
    };
    let name = snapshot.name.clone();
    let applied = plan_file::apply_reviewed(
        &cluster,
        snapshot,
        discovering,
        &file,
        &origin,
        args.allow_stale,
        &base,
    )
    .await
    .with_context(|| format!("apply {origin}"))?;
    for line in &applied.stale {
        tracing::warn!("changed since the plan was made (--allow-stale): {line}");
    }
    for w in &applied.report.warnings {
        tracing::warn!("{w}");
    }
    write_status(global, &name, &applied.report.status, out)
}
