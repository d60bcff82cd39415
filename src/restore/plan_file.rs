//! Reviewed plans (docs/plan-files.md): the plan file `k8s-snap plan --out` writes, and the
//! one way to apply it exactly — `k8s-snap apply`, and a Restore's `spec.planRef`.
//!
//! Owns: the versioned file format (snapshot commit, target identity, preference, options, one
//! item per snapshot object with the live resourceVersion it was decided against), the
//! target's identity (server URL and the `kube-system` namespace's uid), and the staleness
//! check of a fresh plan against a recorded one. Applying re-plans with what the file
//! records and writes only when every decision is unchanged; the writes themselves go through
//! [`super::apply_plan`] (a `create` POSTs, so an object created since fails as
//! AlreadyExists; an `update` PUTs at the recorded resourceVersion). Must not touch: git
//! (snapshots come loaded), the store, the CLI.

use serde::{Deserialize, Serialize};

use super::plan::{Action, Plan, PlanSummary};
use super::preference::{Preference, PreferenceError, RestorePreferenceSpec};
use super::{ApplyReport, LoadedSnapshot, RestoreError, RestoreOptions};
use crate::cluster::{Cluster, ClusterError};
use crate::tree::ContentPath;

/// The `apiVersion` of plan files this version writes and reads.
pub const PLAN_API_VERSION: &str = "k8s-snap.rywt.io/v1";
/// The `kind` of plan files.
pub const PLAN_KIND: &str = "RestorePlan";

/// A reviewed plan, as written by `plan --out` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanFile {
    /// Always [`PLAN_API_VERSION`].
    pub api_version: String,
    /// Always [`PLAN_KIND`].
    pub kind: String,
    /// When the plan was made.
    pub created: jiff::Timestamp,
    /// The snapshot planned.
    pub snapshot: PlannedSnapshot,
    /// The cluster it was planned against.
    pub target: PlanTarget,
    /// The preference it was planned with.
    pub preference: PlannedPreference,
    /// The options that change decisions.
    pub options: PlannedOptions,
    /// The counts (for reviewers; the items are what is checked).
    pub summary: PlanSummary,
    /// One item per snapshot object, in plan order.
    pub items: Vec<PlannedItem>,
}

/// The snapshot of a plan file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedSnapshot {
    /// Its name.
    pub name: String,
    /// Its commit (a snapshot taken again under the same name is another commit).
    pub commit: String,
}

/// The identity of a target cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanTarget {
    /// The API server URL.
    pub server: String,
    /// The uid of the `kube-system` namespace: it names a cluster whatever its URL.
    pub cluster_uid: String,
}

/// The preference of a plan file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedPreference {
    /// The RestorePreference's name, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its spec.
    #[serde(default)]
    pub spec: RestorePreferenceSpec,
}

/// The options of a plan that change its decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedOptions {
    /// `--preserve-nodeports`.
    #[serde(default)]
    pub preserve_nodeports: bool,
    /// `--server-side-diff`.
    #[serde(default)]
    pub server_side_diff: bool,
}

/// One decision of a plan file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedItem {
    /// The object's path in the snapshot.
    pub path: ContentPath,
    /// What the restore does with it.
    pub action: Action,
    /// Where it goes when that is not `path` (a conversion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ContentPath>,
    /// The resourceVersion of the live object it was decided against (`None`: there was
    /// none, or the object was not compared: excluded, unsupported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_resource_version: Option<String>,
    /// Why, when there is a reason (for reviewers; not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a plan file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// Not a plan file (bad JSON, missing or unknown fields).
    #[error("plan file {origin}: {message}")]
    Parse {
        /// Where the file came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A plan file of another version.
    #[error(
        "plan file {origin}: apiVersion {found:?}, kind {kind:?}: this k8s-snap reads {PLAN_API_VERSION} {PLAN_KIND}"
    )]
    Version {
        /// Where the file came from.
        origin: String,
        /// The file's apiVersion.
        found: String,
        /// The file's kind.
        kind: String,
    },
    /// Its preference is not valid.
    #[error("plan file {origin}: preference: {source}")]
    Preference {
        /// Where the file came from.
        origin: String,
        /// The preference error.
        #[source]
        source: PreferenceError,
    },
}

impl PlanFile {
    /// The plan file of `plan`, made from `snapshot` onto `target` with `pref` and `opts`.
    pub fn new(
        snapshot: PlannedSnapshot,
        target: PlanTarget,
        pref: &Preference,
        opts: &RestoreOptions,
        plan: &Plan,
    ) -> PlanFile {
        let now = jiff::Timestamp::now();
        PlanFile {
            api_version: PLAN_API_VERSION.into(),
            kind: PLAN_KIND.into(),
            created: jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
            snapshot,
            target,
            preference: PlannedPreference {
                name: pref.name.clone(),
                spec: pref.spec.clone(),
            },
            options: PlannedOptions {
                preserve_nodeports: opts.preserve_nodeports,
                server_side_diff: opts.server_side_diff,
            },
            summary: plan.summary.clone(),
            items: planned_items(plan),
        }
    }

    /// The file's JSON text (pretty, one field a line; ends with a newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Reads a plan file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PlanFile, PlanFileError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            #[serde(default)]
            api_version: String,
            #[serde(default)]
            kind: String,
        }
        let parse_err = |e: serde_json::Error| PlanFileError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        };
        let head: Head = serde_json::from_str(text).map_err(parse_err)?;
        if head.api_version != PLAN_API_VERSION || head.kind != PLAN_KIND {
            return Err(PlanFileError::Version {
                origin: origin.to_string(),
                found: head.api_version,
                kind: head.kind,
            });
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| PlanFileError::Parse {
            origin: origin.to_string(),
            message: format!("{}: {}", e.path(), e.inner()),
        })
    }

    /// The preference the plan was made with (validated again).
    pub fn preference(&self, origin: &str) -> Result<Preference, PlanFileError> {
        Preference::from_spec(
            self.preference.name.clone(),
            self.preference.spec.clone(),
            origin,
        )
        .map_err(|source| PlanFileError::Preference {
            origin: origin.to_string(),
            source,
        })
    }

    /// `base` with the options the plan was made with.
    pub fn restore_options(&self, base: RestoreOptions) -> RestoreOptions {
        RestoreOptions {
            preserve_nodeports: self.options.preserve_nodeports,
            server_side_diff: self.options.server_side_diff,
            diff: false,
            server_dry_run: false,
            ..base
        }
    }
}

/// The items of a plan as a plan file records them.
pub fn planned_items(plan: &Plan) -> Vec<PlannedItem> {
    plan.items
        .iter()
        .map(|i| PlannedItem {
            path: i.path.clone(),
            action: i.action,
            target: i.target.clone(),
            live_resource_version: i.live_resource_version.clone(),
            reason: i.reason.clone(),
        })
        .collect()
}

/// The identity of `cluster`: its server URL and the uid of its `kube-system` namespace.
pub async fn target_identity(cluster: &Cluster) -> Result<PlanTarget, ClusterError> {
    #[derive(Deserialize)]
    struct Ns {
        metadata: NsMeta,
    }
    #[derive(Deserialize)]
    struct NsMeta {
        #[serde(default)]
        uid: String,
    }
    let ns: Ns = cluster.get_json("/api/v1/namespaces/kube-system").await?;
    Ok(PlanTarget {
        server: cluster.server().to_string(),
        cluster_uid: ns.metadata.uid,
    })
}

fn state(action: Action, rv: Option<&str>) -> String {
    match (action, rv) {
        (Action::Create, None) => "create (no live object)".into(),
        (a, Some(rv)) => format!("{} (live resourceVersion {rv})", a.as_str()),
        (a, None) => a.as_str().to_string(),
    }
}

/// What changed since a plan file was made, one line each (empty: nothing): the snapshot's
/// commit, the target's identity, and every item whose decision (action, target path) or live
/// resourceVersion differs in `fresh`, a plan made now with the file's preference and options.
pub fn stale_lines(
    recorded: &PlanFile,
    snapshot_commit: &str,
    target: &PlanTarget,
    fresh: &Plan,
) -> Vec<String> {
    let mut out = Vec::new();
    if recorded.snapshot.commit != snapshot_commit {
        out.push(format!(
            "snapshot {:?}: planned at commit {}, now at commit {snapshot_commit}",
            recorded.snapshot.name, recorded.snapshot.commit
        ));
    }
    if recorded.target != *target {
        out.push(format!(
            "target: planned for {} (cluster uid {}), now {} (cluster uid {})",
            recorded.target.server, recorded.target.cluster_uid, target.server, target.cluster_uid
        ));
    }
    let now: std::collections::HashMap<&str, &super::PlanItem> =
        fresh.items.iter().map(|i| (i.path.as_str(), i)).collect();
    let mut seen = std::collections::HashSet::new();
    for r in &recorded.items {
        seen.insert(r.path.as_str());
        match now.get(r.path.as_str()) {
            None => out.push(format!(
                "{}: planned {}, no longer in the plan",
                r.path,
                state(r.action, r.live_resource_version.as_deref())
            )),
            Some(f) => {
                if f.action != r.action
                    || f.target != r.target
                    || f.live_resource_version != r.live_resource_version
                {
                    out.push(format!(
                        "{}: planned {}, now {}",
                        r.path,
                        state(r.action, r.live_resource_version.as_deref()),
                        state(f.action, f.live_resource_version.as_deref())
                    ));
                }
            }
        }
    }
    for f in &fresh.items {
        if !seen.contains(f.path.as_str()) {
            out.push(format!(
                "{}: not in the reviewed plan, now {}",
                f.path,
                state(f.action, f.live_resource_version.as_deref())
            ));
        }
    }
    out
}

/// Why a reviewed plan was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReviewedError {
    /// The plan file names another snapshot than the one given.
    #[error("the plan file is for snapshot {planned:?}, not {given:?}")]
    WrongSnapshot {
        /// The plan file's snapshot.
        planned: String,
        /// The snapshot given.
        given: String,
    },
    /// The plan file cannot be used.
    #[error(transparent)]
    File(#[from] PlanFileError),
    /// The target's identity cannot be read.
    #[error("target cluster: reading the kube-system namespace (the cluster's identity): {0}")]
    Target(#[source] Box<ClusterError>),
    /// Planning again failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Something changed since the plan was made: nothing was written.
    #[error(
        "the plan is stale, nothing was written ({} change(s) since it was made; re-plan, or apply with --allow-stale):\n{}",
        .0.len(),
        .0.join("\n")
    )]
    Stale(Vec<String>),
}

/// The result of applying a reviewed plan.
#[derive(Debug)]
pub struct ReviewedApply {
    /// The plan applied (made again; equal in every decision to the file's unless stale
    /// changes were allowed).
    pub plan: Plan,
    /// What the writes did.
    pub report: ApplyReport,
    /// What had changed since the plan was made (only with `allow_stale`).
    pub stale: Vec<String>,
}

/// Applies the plan file `file` (`origin` names it) of `snapshot` onto `cluster`: plans again
/// with the file's preference and options (`discovering`: the target's discovery, started by
/// [`super::prepare()`] while it read the tree), and writes only when the snapshot's commit, the
/// target and every decision are unchanged — else returns [`ReviewedError::Stale`] naming what
/// changed, having written nothing. `allow_stale` applies the fresh plan instead.
pub async fn apply_reviewed(
    cluster: &Cluster,
    snapshot: LoadedSnapshot,
    discovering: super::Discovering,
    file: &PlanFile,
    origin: &str,
    allow_stale: bool,
    base: &RestoreOptions,
) -> Result<ReviewedApply, ReviewedError> {
    if snapshot.name != file.snapshot.name {
        return Err(ReviewedError::WrongSnapshot {
            planned: file.snapshot.name.clone(),
            given: snapshot.name,
        });
    }
    let pref = file.preference(origin)?;
    let opts = file.restore_options(*base);
    let target = target_identity(cluster)
        .await
        .map_err(|e| ReviewedError::Target(Box::new(e)))?;
    let name = snapshot.name.clone();
    let commit = snapshot.commit.clone();
    let fresh = super::plan_with(cluster, snapshot, discovering, &pref, &opts).await?;
    let stale = stale_lines(file, &commit, &target, &fresh);
    if !stale.is_empty() && !allow_stale {
        return Err(ReviewedError::Stale(stale));
    }
    let report = super::apply_plan(cluster, &name, &fresh, &opts).await;
    Ok(ReviewedApply {
        plan: fresh,
        report,
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::PlanItem;

    fn item(path: &str, action: Action, rv: Option<&str>) -> PlanItem {
        PlanItem {
            path: ContentPath::parse(path).unwrap(),
            action,
            reason: None,
            diff: None,
            stage: None,
            body: None,
            live_resource_version: rv.map(str::to_string),
            method: None,
            target: None,
        }
    }

    fn file_of(plan: &Plan) -> PlanFile {
        PlanFile::new(
            PlannedSnapshot {
                name: "s1".into(),
                commit: "c1".into(),
            },
            PlanTarget {
                server: "https://b".into(),
                cluster_uid: "u1".into(),
            },
            &Preference::default(),
            &RestoreOptions::default(),
            plan,
        )
    }

    #[test]
    fn round_trip_and_staleness() {
        let plan = Plan {
            summary: PlanSummary::default(),
            items: vec![
                item("/api/v1/namespaces/a/configmaps/new", Action::Create, None),
                item(
                    "/api/v1/namespaces/a/configmaps/same",
                    Action::Exists,
                    Some("7"),
                ),
            ],
        };
        let file = file_of(&plan);
        let text = file.to_json();
        assert!(text.contains("\"liveResourceVersion\": \"7\""), "{text}");
        let back = PlanFile::parse(&text, "p.json").unwrap();
        assert_eq!(back, file);
        let target = file.target.clone();
        assert!(stale_lines(&back, "c1", &target, &plan).is_empty());

        // The planned object was changed, the one to create now exists.
        let now = Plan {
            summary: PlanSummary::default(),
            items: vec![
                item(
                    "/api/v1/namespaces/a/configmaps/new",
                    Action::Exists,
                    Some("9"),
                ),
                item(
                    "/api/v1/namespaces/a/configmaps/same",
                    Action::Differs,
                    Some("8"),
                ),
            ],
        };
        let other = PlanTarget {
            server: "https://b".into(),
            cluster_uid: "u2".into(),
        };
        let lines = stale_lines(&back, "c2", &other, &now);
        assert_eq!(
            lines,
            [
                "snapshot \"s1\": planned at commit c1, now at commit c2",
                "target: planned for https://b (cluster uid u1), now https://b (cluster uid u2)",
                "/api/v1/namespaces/a/configmaps/new: planned create (no live object), now exists (live resourceVersion 9)",
                "/api/v1/namespaces/a/configmaps/same: planned exists (live resourceVersion 7), now differs (live resourceVersion 8)",
            ]
        );
    }

    #[test]
    fn bad_files_name_the_fault() {
        let e = PlanFile::parse("{", "p.json").unwrap_err().to_string();
        assert!(e.starts_with("plan file p.json: "), "{e}");
        let e = PlanFile::parse(r#"{"apiVersion": "v0", "kind": "RestorePlan"}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion \"v0\""), "{e}");
        let plan = Plan::default();
        let mut v = serde_json::to_value(file_of(&plan)).unwrap();
        v["items"] =
            serde_json::json!([{"path": "/api/v1/namespaces/a/configmaps/x", "action": "explode"}]);
        let e = PlanFile::parse(&v.to_string(), "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("items[0].action"), "{e}");
    }
}
