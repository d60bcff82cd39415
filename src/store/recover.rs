//! Surviving the loss of `manifest.json`: finding the snapshots the store's packs hold
//! (`scan_packs`), rebuilding the manifest from them ([`recover`], `k8s-snap recover`), and
//! telling which packs hold snapshots the manifest does not name ([`unreferenced`], used by
//! `verify` and `gc` so that gc never deletes a pack holding a snapshot the manifest lost).
//!
//! Every snapshot commit carries `.k8s-snap/snapshot.yaml`, so names, clusters, timestamps and
//! expiry come back. The manifest is written with the same compare-and-swap as every other
//! update; entries already in it are kept. Must not print; git work goes through `mirror`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::manifest::{Manifest, PackEntry, SnapshotEntry, idx_key, is_pack_name};
use super::sync::{
    Result, StoreSnapshot, SyncError, VerifyProblem, read_manifest, sha256_hex, update_manifest,
};
use super::{ObjectMeta, ObjectStore, PutOutcome};
use crate::mirror::{CommitId, Mirror, MirrorError, ObjectSet};

/// What [`recover`] found, and added to the manifest unless it was a dry run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverReport {
    /// Packs read.
    pub packs: Vec<String>,
    /// Snapshots found that the manifest did not name (added, unless `dryRun`).
    pub recovered: Vec<StoreSnapshot>,
    /// Snapshots found that the manifest already names.
    pub already_listed: Vec<String>,
    /// Unreadable packs, incomplete snapshots, name clashes.
    pub problems: Vec<VerifyProblem>,
    /// Whether this was a dry run (the manifest was not changed).
    pub dry_run: bool,
}

/// How the reason of a pack that could not be downloaded starts.
pub(super) const UNREADABLE: &str = "cannot read";

/// One pack of the store, read and indexed.
struct ScannedPack {
    sha: String,
    entry: PackEntry,
    ids: ObjectSet,
    /// The index libgit2 wrote, uploaded when the store lacks one.
    idx: Vec<u8>,
    idx_missing: bool,
}

/// The packs of the store (all, or only `only`) indexed into the scratch repository at
/// `repo` (opened anew for each pack, so that no repository handle lives across an await and
/// the future stays `Send`). Problems (unreadable packs) are appended to `problems`.
async fn scan_packs(
    store: &dyn ObjectStore,
    repo: &std::path::Path,
    only: Option<&[String]>,
    problems: &mut Vec<VerifyProblem>,
) -> Result<Vec<ScannedPack>> {
    let listed: BTreeMap<String, ObjectMeta> = store
        .list(super::PACKS_PREFIX)
        .await?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let mut out = Vec::new();
    for (key, meta) in &listed {
        let Some(sha) = key
            .strip_prefix(super::PACKS_PREFIX)
            .and_then(|f| f.strip_suffix(".pack"))
            .filter(|s| is_pack_name(s))
        else {
            continue;
        };
        if only.is_some_and(|o| !o.iter().any(|s| s == sha)) {
            continue;
        }
        let problem = |reason: String| VerifyProblem {
            subject: sha.to_owned(),
            snapshots: Vec::new(),
            reason,
        };
        let bytes = match store.get(key).await {
            Ok(o) => o.bytes,
            Err(e) => {
                problems.push(problem(format!("{UNREADABLE}: {e}")));
                continue;
            }
        };
        let actual = sha256_hex(&bytes);
        if actual != sha {
            problems.push(problem(format!(
                "corrupted: its sha256 is {actual} (truncated or altered)"
            )));
            continue;
        }
        let pack = match crate::packcodec::decode(&bytes) {
            Ok(p) => p,
            Err(e) => {
                problems.push(problem(format!("cannot be decoded: {e}")));
                continue;
            }
        };
        let (ids, idx) = match Mirror::open(repo).and_then(|r| r.index_pack_ids(&pack)) {
            Ok(x) => x,
            Err(e) => {
                problems.push(problem(format!("cannot be indexed: {e}")));
                continue;
            }
        };
        let idx_meta = listed.get(&idx_key(sha));
        out.push(ScannedPack {
            sha: sha.to_owned(),
            entry: PackEntry {
                size: bytes.len() as u64,
                idx_size: idx_meta.map_or(idx.len() as u64, |m| m.size),
                objects: ids.len() as u64,
                created: meta.last_modified.unwrap_or_else(jiff::Timestamp::now),
            },
            ids,
            idx,
            idx_missing: idx_meta.is_none(),
        });
    }
    Ok(out)
}

/// A scratch repository in a temporary directory (deleted on drop) and its path.
fn scratch_repo(purpose: &str) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().map_err(|e| {
        SyncError::Mirror(MirrorError::Io {
            context: format!("creating a scratch directory for {purpose}"),
            source: e,
        })
    })?;
    let path = dir.path().join("scratch.git");
    Mirror::open_or_init(&path)?;
    Ok((dir, path))
}

/// Rebuilds the manifest from the packs: every snapshot commit found whose objects the packs
/// hold is added (with the fewest packs that hold it) unless the manifest names it already.
/// With several commits of one name, the newest wins and the others are reported. A pack the
/// store has without its index gets the index back.
pub async fn recover(store: &dyn ObjectStore, dry_run: bool) -> Result<RecoverReport> {
    let (manifest, _) = read_manifest(store).await?;
    let mut report = RecoverReport {
        dry_run,
        ..RecoverReport::default()
    };
    let (_dir, repo_dir) = scratch_repo("recover")?;
    let packs = scan_packs(store, &repo_dir, None, &mut report.problems).await?;
    report.packs = packs.iter().map(|p| p.sha.clone()).collect();
    let sets: Vec<(String, ObjectSet)> = packs
        .iter()
        .map(|p| (p.sha.clone(), p.ids.clone()))
        .collect();
    let mut found: BTreeMap<String, (CommitId, SnapshotEntry)> = BTreeMap::new();
    let repo = Mirror::open(&repo_dir)?;
    for (commit, meta) in repo.find_snapshot_commits()? {
        let name = meta.name.clone();
        let problem = |reason: String| VerifyProblem {
            subject: name.clone(),
            snapshots: vec![name.clone()],
            reason,
        };
        if let Some(e) = manifest.snapshots.get(&name) {
            if e.commit == commit {
                report.already_listed.push(name);
            } else {
                report.problems.push(problem(format!(
                    "commit {commit} has the name of a snapshot the manifest lists with commit {}; not recovered",
                    e.commit
                )));
            }
            continue;
        }
        let needs = match repo.commit_closure(&commit) {
            Ok(ids) => crate::mirror::choose_packs(&ids, &sets),
            Err(_) => None,
        };
        let Some(needs) = needs else {
            report.problems.push(problem(format!(
                "commit {commit} is incomplete: the packs do not hold all its objects"
            )));
            continue;
        };
        let entry = SnapshotEntry {
            commit: commit.clone(),
            cluster: meta.cluster_name.clone(),
            timestamp: meta.timestamp,
            resource_version: meta.resource_version.clone(),
            number_of_contents: meta.number_of_contents,
            available_until: meta.available_until,
            packs: needs,
            filter: meta.filter.clone(),
        };
        // Sorted by timestamp: a later commit of the same name replaces an earlier one.
        if let Some((older, _)) = found.insert(name.clone(), (commit.clone(), entry)) {
            report.problems.push(problem(format!(
                "an older commit {older} of the same name is not recovered (commit {commit} is newer)"
            )));
        }
    }
    drop(repo);
    report.recovered = found
        .into_iter()
        .map(|(name, (_, entry))| StoreSnapshot { name, entry })
        .collect();
    if dry_run || report.recovered.is_empty() {
        return Ok(report);
    }
    for p in packs.iter().filter(|p| p.idx_missing) {
        if report
            .recovered
            .iter()
            .any(|s| s.entry.packs.contains(&p.sha))
            && store.put_if_absent(&idx_key(&p.sha), p.idx.clone()).await? == PutOutcome::Created
        {
            tracing::info!(pack = %p.sha, "uploaded the missing index of a pack");
        }
    }
    let entries: BTreeMap<&str, &PackEntry> =
        packs.iter().map(|p| (p.sha.as_str(), &p.entry)).collect();
    let recovered = report.recovered.clone();
    update_manifest(store, |m| {
        let mut changed = false;
        for s in &recovered {
            if m.snapshots.contains_key(&s.name) {
                continue;
            }
            for sha in &s.entry.packs {
                if !m.packs.contains_key(sha)
                    && let Some(e) = entries.get(sha.as_str())
                {
                    m.packs.insert(sha.clone(), (*e).clone());
                }
                m.pending_delete.remove(sha);
            }
            m.snapshots.insert(s.name.clone(), s.entry.clone());
            changed = true;
        }
        Ok(changed)
    })
    .await?;
    tracing::info!(
        snapshots = report.recovered.len(),
        "manifest rebuilt from the packs"
    );
    Ok(report)
}

/// Packs the store has that `manifest` does not list, each with the snapshot commits it
/// holds that the manifest does not name (`deep`: packs are downloaded and indexed; without it
/// the snapshot lists are empty). Unreadable packs are reported as problems.
pub async fn unreferenced(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    listed: &[ObjectMeta],
    deep: bool,
) -> Result<(Vec<(String, Vec<String>)>, Vec<VerifyProblem>)> {
    let shas: Vec<String> = listed
        .iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(super::PACKS_PREFIX)
                .and_then(|f| f.strip_suffix(".pack"))
        })
        .filter(|s| is_pack_name(s) && !manifest.packs.contains_key(*s))
        .map(str::to_owned)
        .collect();
    let mut problems = Vec::new();
    if shas.is_empty() || !deep {
        return Ok((
            shas.into_iter().map(|s| (s, Vec::new())).collect(),
            problems,
        ));
    }
    let (_dir, repo_dir) = scratch_repo("finding unreferenced snapshots")?;
    let packs = scan_packs(store, &repo_dir, Some(&shas), &mut problems).await?;
    let named: Vec<&CommitId> = manifest.snapshots.values().map(|s| &s.commit).collect();
    let commits = Mirror::open(&repo_dir)?.find_snapshot_commits()?;
    let out = shas
        .iter()
        .map(|sha| {
            let names = packs
                .iter()
                .find(|p| &p.sha == sha)
                .map(|p| {
                    commits
                        .iter()
                        .filter(|(c, _)| p.ids.contains_commit(c) && !named.contains(&c))
                        .map(|(_, m)| m.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            (sha.clone(), names)
        })
        .collect();
    Ok((out, problems))
}
