//! `list`, `show`, `diff`, `delete` and `gc`: reading and pruning the local mirror.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;

use super::GlobalArgs;
use super::output::{self, Format};
use k8s_snap::mirror::{ChangeKind, Mirror, SnapshotInfo};
use k8s_snap::tree::{self, ContentPath};

/// Opens the mirror, or `None` when the data dir has none yet.
fn open_mirror(global: &GlobalArgs) -> anyhow::Result<Option<Mirror>> {
    let dir = global.mirror_dir()?;
    if !dir.exists() {
        return Ok(None);
    }
    Ok(Some(Mirror::open(&dir)?))
}

/// The user-named sealed fields (`--encrypt-path`, recorded as `encryption.paths`) of these
/// snapshots, masked like Secret values: the union, when the snapshots record different paths.
pub(super) fn sealed_fields<'a>(
    metas: impl IntoIterator<Item = &'a k8s_snap::tree::SnapshotMeta>,
) -> anyhow::Result<tree::secret::SealedFields> {
    let mut fields = tree::secret::SealedFields::default();
    for meta in metas {
        for recorded in meta.encryption.iter().flat_map(|e| &e.paths) {
            let p: k8s_snap::crypt::SealedPath = recorded.parse().map_err(|e| {
                anyhow::anyhow!(
                    "snapshot {}: .k8s-snap/snapshot.yaml: encryption.paths: {e}",
                    meta.name
                )
            })?;
            fields.add(&p.group, &p.resource, p.fields);
        }
    }
    Ok(fields)
}

fn require_snapshot(mirror: Option<&Mirror>, name: &str) -> anyhow::Result<SnapshotInfo> {
    let found = match mirror {
        Some(m) => m.snapshot(name)?,
        None => None,
    };
    found.ok_or_else(|| anyhow::anyhow!("snapshot {name:?} not found (see `k8s-snap list`)"))
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only snapshots of this cluster.
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Option<String>,
    /// List the local mirror only, without reading the store.
    #[arg(long)]
    pub local_only: bool,
}

/// One row of `list -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListItem {
    name: String,
    cluster_name: String,
    snapshot_timestamp: jiff::Timestamp,
    snapshot_resource_version: String,
    number_of_contents: u64,
    available_until: Option<jiff::Timestamp>,
    commit: String,
    /// `local`, `store` or `both`.
    location: &'static str,
    /// The filter of a partial snapshot (from its snapshot.yaml, or the store's manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<k8s_snap::tree::SnapshotFilter>,
}

pub async fn list(global: &GlobalArgs, args: ListArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mirror = open_mirror(global)?;
    // A broken tag is named, and the others are still listed (exit code 1).
    let (snapshots, bad_tags) = match &mirror {
        Some(m) => m.snapshots_lenient()?,
        None => (Vec::new(), Vec::new()),
    };
    for (name, reason) in &bad_tags {
        eprintln!("error: snapshot {name:?} in the local mirror is unreadable: {reason}");
    }
    let code = if bad_tags.is_empty() {
        super::exit::OK
    } else {
        super::exit::FAILURE
    };
    // The store's snapshots. A store that cannot be read fails `list` (a script must not
    // mistake it for "no snapshots"); `--local-only` skips it.
    let remote = if args.local_only {
        Vec::new()
    } else {
        let store = super::store::open_store(global)
            .await
            .context("cannot open the store (use --local-only to list the mirror alone)")?;
        // The store errors name the store (`s3://bucket/prefix at endpoint`).
        k8s_snap::store::sync::list(store.as_ref())
            .await
            .context("cannot read the store (use --local-only to list the mirror alone)")?
    };
    let mut items: Vec<ListItem> = snapshots
        .into_iter()
        .map(|s| ListItem {
            location: if remote.iter().any(|r| r.name == s.name) {
                "both"
            } else {
                "local"
            },
            name: s.name,
            cluster_name: s.meta.cluster_name,
            snapshot_timestamp: s.meta.timestamp,
            snapshot_resource_version: s.meta.resource_version,
            number_of_contents: s.meta.number_of_contents,
            available_until: s.meta.available_until,
            commit: s.commit.to_string(),
            filter: s.meta.filter,
        })
        .collect();
    for r in remote {
        if items.iter().any(|i| i.name == r.name) {
            continue;
        }
        items.push(ListItem {
            name: r.name,
            cluster_name: r.entry.cluster,
            snapshot_timestamp: r.entry.timestamp,
            snapshot_resource_version: r.entry.resource_version,
            number_of_contents: r.entry.number_of_contents,
            available_until: r.entry.available_until,
            commit: r.entry.commit.to_string(),
            location: "store",
            filter: r.entry.filter,
        });
    }
    items.retain(|i| args.cluster.as_deref().is_none_or(|c| c == i.cluster_name));
    items.sort_by(|a, b| {
        a.snapshot_timestamp
            .cmp(&b.snapshot_timestamp)
            .then_with(|| a.name.cmp(&b.name))
    });
    match global.output {
        Format::Table => {
            if items.is_empty() {
                writeln!(out, "No snapshots found.")?;
                return Ok(code);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.cluster_name.clone(),
                        i.snapshot_timestamp.to_string(),
                        i.snapshot_resource_version.clone(),
                        match &i.filter {
                            Some(_) => format!("{} (partial)", i.number_of_contents),
                            None => i.number_of_contents.to_string(),
                        },
                        output::time_or_none(i.available_until),
                        i.location.to_string(),
                    ]
                })
                .collect();
            output::write_table(
                out,
                &[
                    "NAME",
                    "CLUSTER",
                    "TIMESTAMP",
                    "RV",
                    "OBJECTS",
                    "AVAILABLE-UNTIL",
                    "LOCATION",
                ],
                &rows,
            )?;
        }
        format => output::write_data(out, format, &items)?,
    }
    Ok(code)
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot name.
    pub name: String,
    /// A content path (`/api/v1/namespaces/x/configmaps/y`) or a prefix of one (`/apis/apps`).
    pub path: Option<String>,
    /// Show Secret values (masked as *** by default).
    #[arg(long)]
    pub show_secrets: bool,
}

pub fn show(global: &GlobalArgs, args: ShowArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mirror = open_mirror(global)?;
    let snap = require_snapshot(mirror.as_ref(), &args.name)?;
    let mirror = mirror.context("mirror vanished")?;
    if let Some(f) = &snap.meta.filter
        && !global.quiet
    {
        eprintln!(
            "note: {} is a partial snapshot: {}",
            args.name,
            f.describe()
        );
    }
    if !global.quiet {
        for api in &snap.meta.unavailable_apis {
            eprintln!(
                "note: {} lacks the objects of {}: the server did not serve it ({})",
                args.name, api.group_version, api.reason
            );
        }
    }
    let prefix = args.path.as_deref().unwrap_or("/").trim_end_matches('/');
    let object = match ContentPath::parse(prefix) {
        Ok(path) if !prefix.is_empty() => mirror
            .read_file(&snap.commit, &path.file_path())?
            .map(|bytes| (path, bytes)),
        _ => None,
    };
    if let Some((path, bytes)) = object {
        let text = String::from_utf8(bytes).with_context(|| format!("{path}: not UTF-8"))?;
        let text = if args.show_secrets {
            text
        } else {
            let sealed = sealed_fields([&snap.meta])?;
            tree::secret::mask_yaml_fields(&text, &sealed.of(path.group(), path.resource()))
        };
        match global.output {
            Format::Table | Format::Yaml => out.write_all(text.as_bytes())?,
            Format::Json => {
                let value = tree::from_yaml(&text)
                    .with_context(|| format!("{path} in snapshot {}", args.name))?;
                output::write_data(out, Format::Json, &value)?;
            }
        }
        return Ok(super::exit::OK);
    }
    // A prefix: the contents under it, as content paths.
    let dir = prefix.trim_start_matches('/');
    let contents: Vec<String> = mirror
        .list_files(&snap.commit, dir)?
        .into_iter()
        .filter(|f| tree::is_object_file(f))
        .filter_map(|f| ContentPath::from_file_path(&f).ok())
        .map(|p| p.as_str().to_string())
        .filter(|p| prefix.is_empty() || p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    if contents.is_empty() && !prefix.is_empty() {
        bail!(
            "{prefix}: no such object or prefix in snapshot {}",
            args.name
        );
    }
    match global.output {
        Format::Table => {
            for c in &contents {
                writeln!(out, "{c}")?;
            }
        }
        format => output::write_data(out, format, &contents)?,
    }
    Ok(super::exit::OK)
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot.
    pub a: String,
    /// The newer snapshot (not with --live).
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    pub b: Option<String>,
    #[command(flatten)]
    pub live: super::live_diff::LiveArgs,
    /// Only a summary line per object.
    #[arg(long)]
    pub stat: bool,
    /// Only this object (an exact content path, under any version of it) and the objects
    /// under it, or the objects under a prefix ending in `/` (e.g. /api/v1/namespaces/shop/).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Show Secret values (masked by default: a diff tells which keys changed, not values).
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Serialize)]
struct DiffItem {
    path: String,
    change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

/// The identity of an object across versions: a deprecated group's resources count as their
/// successor's (`extensions` Ingresses are `networking.k8s.io` ones).
pub(super) fn object_identity(p: &ContentPath) -> (String, String, Option<String>, String) {
    let group = match (p.group(), p.resource()) {
        ("extensions", "ingresses" | "networkpolicies") => "networking.k8s.io",
        ("extensions", "deployments" | "daemonsets" | "replicasets") => "apps",
        ("extensions", "podsecuritypolicies") => "policy",
        (g, _) => g,
    };
    (
        group.to_string(),
        p.resource().to_string(),
        p.namespace().map(str::to_string),
        p.name().to_string(),
    )
}

pub fn diff(global: &GlobalArgs, args: DiffArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mirror = open_mirror(global)?;
    let a = require_snapshot(mirror.as_ref(), &args.a)?;
    let b_name = args.b.clone().unwrap_or_default();
    let b = require_snapshot(mirror.as_ref(), &b_name)?;
    let mirror = mirror.context("mirror vanished")?;
    let wanted = args.path.as_deref().map(|p| p.trim_end_matches('/'));
    // An exact object path shows that object (under any version of it) and, like a prefix,
    // what lies under it (`/api/v1/namespaces/shop` is a Namespace and a directory).
    let exact = wanted
        .filter(|_| !args.path.as_deref().is_some_and(|p| p.ends_with('/')))
        .and_then(|p| ContentPath::parse(p).ok());
    let prefix = match &exact {
        Some(_) => None,
        None => wanted.map(|p| p.trim_matches('/').to_string()),
    };
    let under = |p: &str| match wanted {
        None => true,
        Some(w) => {
            let w = w.trim_end_matches('/');
            p == w || p.starts_with(&format!("{w}/"))
        }
    };
    // Fields either snapshot seals are masked in both (a path sealed only since `b` still
    // hides `a`'s plaintext value).
    let sealed = if args.show_secrets {
        tree::secret::SealedFields::default()
    } else {
        sealed_fields([&a.meta, &b.meta])?
    };
    let changes = mirror.diff(&a.commit, &b.commit, prefix.as_deref())?;
    let mut entries: Vec<(
        ContentPath,
        Option<ContentPath>,
        k8s_snap::mirror::FileChange,
    )> = Vec::new();
    for c in changes
        .into_iter()
        .filter(|c| tree::is_object_file(&c.path))
    {
        if let Ok(p) = ContentPath::from_file_path(&c.path) {
            entries.push((p, None, c));
        }
    }
    // The same object stored under another version (a cluster upgrade) is a change, not a
    // removal and an addition.
    let mut removed: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
    for (i, (p, _, c)) in entries.iter().enumerate() {
        if c.kind == ChangeKind::Removed {
            removed.insert(object_identity(p), i);
        }
    }
    let mut consumed = vec![false; entries.len()];
    for i in 0..entries.len() {
        if entries[i].2.kind != ChangeKind::Added {
            continue;
        }
        if let Some(&j) = removed.get(&object_identity(&entries[i].0))
            && !consumed[j]
        {
            consumed[j] = true;
            let old_path = entries[j].0.clone();
            let old_blob = entries[j].2.old.clone();
            let e = &mut entries[i];
            e.1 = Some(old_path);
            e.2.kind = ChangeKind::Modified;
            e.2.old = old_blob;
        }
    }
    let mut items = Vec::new();
    for (i, (new_path, old_path, c)) in entries.into_iter().enumerate() {
        if consumed[i] {
            continue;
        }
        let old_path = old_path.unwrap_or_else(|| new_path.clone());
        let matches = match &exact {
            Some(e) => {
                new_path == *e
                    || old_path == *e
                    || under(new_path.as_str())
                    || under(old_path.as_str())
            }
            None => true,
        };
        if !matches {
            continue;
        }
        let path = new_path.as_str().to_string();
        let change = match c.kind {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "changed",
        };
        let diff = if args.stat {
            None
        } else {
            let old = c
                .old
                .as_ref()
                .map(|id| mirror.read_blob(id))
                .transpose()?
                .unwrap_or_default();
            let new = c
                .new
                .as_ref()
                .map(|id| mirror.read_blob(id))
                .transpose()?
                .unwrap_or_default();
            let (old, new) = (String::from_utf8_lossy(&old), String::from_utf8_lossy(&new));
            let (old, new) = if args.show_secrets {
                (old.into_owned(), new.into_owned())
            } else {
                let mut fields = sealed.of(new_path.group(), new_path.resource());
                for f in sealed.of(old_path.group(), old_path.resource()) {
                    if !fields.contains(&f) {
                        fields.push(f);
                    }
                }
                tree::secret::mask_yaml_pair_fields(&old, &new, &args.a, &b_name, &fields)
            };
            Some(tree::unified_diff(
                &old,
                &new,
                &format!("{}{old_path}", args.a),
                &format!("{b_name}{path}"),
            ))
        };
        items.push(DiffItem { path, change, diff });
    }
    match global.output {
        Format::Table => {
            for i in &items {
                match (&i.diff, i.change) {
                    (Some(d), "changed") => write!(out, "{d}")?,
                    _ => writeln!(out, "{:<8} {}", i.change, i.path)?,
                }
            }
            let count = |k| items.iter().filter(|i| i.change == k).count();
            writeln!(
                out,
                "{} added, {} removed, {} changed",
                count("added"),
                count("removed"),
                count("changed")
            )?;
        }
        format => output::write_data(out, format, &items)?,
    }
    Ok(super::exit::OK)
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Snapshot name.
    pub name: String,
    /// Delete only from the local mirror, not from the store.
    #[arg(long)]
    pub local_only: bool,
}

pub async fn delete(
    global: &GlobalArgs,
    args: DeleteArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    k8s_snap::mirror::validate_name("snapshot", &args.name)?;
    let mirror = open_mirror(global)?;
    let mut local = false;
    if let Some(m) = &mirror
        && m.snapshot(&args.name)?.is_some()
    {
        m.delete_snapshot(&args.name)?;
        local = true;
    }
    let mut in_store = false;
    if !args.local_only {
        let store = super::store::open_store(global).await?;
        let report =
            k8s_snap::store::sync::delete(store.as_ref(), std::slice::from_ref(&args.name))
                .await
                .with_context(|| format!("deleting {:?} from {}", args.name, store.describe()))?;
        in_store = !report.deleted.is_empty();
    }
    if !local && !in_store {
        bail!("snapshot {:?} not found (see `k8s-snap list`)", args.name);
    }
    let location = match (local, in_store) {
        (true, true) => "the mirror and the store",
        (true, false) => "the mirror",
        _ => "the store",
    };
    match global.output {
        Format::Table => writeln!(
            out,
            "snapshot {} deleted from {location} (run `k8s-snap gc` to free its data)",
            args.name
        )?,
        format => output::write_data(
            out,
            format,
            &serde_json::json!({"deleted": args.name, "local": local, "store": in_store}),
        )?,
    }
    Ok(super::exit::OK)
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep unneeded store packs and orphan keys this long before deleting them (e.g. 24h, 0s).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// Collect only the local mirror, not the store.
    #[arg(long)]
    pub local_only: bool,
    /// Repack the store when more than this fraction of the objects in the packs its
    /// snapshots need is dead (0..1).
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub repack_threshold: f64,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GcReport {
    expired: Vec<String>,
    objects_before: u64,
    objects_after: u64,
    bytes_before: u64,
    bytes_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<k8s_snap::store::GcReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repack: Option<k8s_snap::store::RepackReport>,
}

pub async fn gc(global: &GlobalArgs, args: GcArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let now = jiff::Timestamp::now();
    let mut expired = Vec::new();
    let (mut before, mut after) = Default::default();
    if let Some(mut mirror) = open_mirror(global)? {
        for s in mirror.snapshots()? {
            if s.meta.available_until.is_some_and(|t| t <= now) {
                mirror.delete_snapshot(&s.name)?;
                expired.push(s.name);
            }
        }
        before = mirror.object_stats()?;
        mirror.gc()?;
        after = mirror.object_stats()?;
    }
    let store = if args.local_only {
        None
    } else {
        Some(super::store::gc_store(global, args.grace, args.repack_threshold).await?)
    };
    let report = GcReport {
        expired,
        objects_before: before.total_objects(),
        objects_after: after.total_objects(),
        bytes_before: before.total_bytes(),
        bytes_after: after.total_bytes(),
        store: store.as_ref().map(|(_, _, r)| r.clone()),
        repack: store.as_ref().and_then(|(_, r, _)| r.clone()),
    };
    match global.output {
        Format::Table => {
            for e in &report.expired {
                writeln!(out, "expired snapshot {e} deleted")?;
            }
            writeln!(
                out,
                "git objects: {} -> {} ({} -> {})",
                report.objects_before,
                report.objects_after,
                output::bytes(report.bytes_before),
                output::bytes(report.bytes_after)
            )?;
            if let Some((name, repack, r)) = &store {
                if let Some(p) = repack {
                    writeln!(
                        out,
                        "{name}: repacked {} snapshots: {} objects in {} packs -> {} in one",
                        p.snapshots.len(),
                        p.objects_before,
                        p.old_packs.len(),
                        p.objects_after
                    )?;
                }
                for e in &r.expired {
                    writeln!(out, "expired snapshot {e} removed from the store")?;
                }
                writeln!(
                    out,
                    "{name}: {} packs newly unneeded, {} packs deleted, {} orphans deleted",
                    r.pending.len(),
                    r.deleted_packs.len(),
                    r.orphans.len()
                )?;
            }
        }
        format => output::write_data(out, format, &report)?,
    }
    Ok(super::exit::OK)
}
