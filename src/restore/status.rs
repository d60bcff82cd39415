//! The Restore status, exactly in the original project's shape (plus `conditions`-free extras
//! kept out): lists `alreadyExisted created excluded failed updated`, the `num*` counts,
//! `phase`, `reason`, `restoreResourceVersion`, `restoreTimestamp`, `preserveUntil`.

use serde::{Deserialize, Serialize};

/// Longest failure message kept in a `failed` entry (as the original).
pub(crate) const FAILED_MESSAGE_MAX: usize = 300;

/// Phase of a Snapshot, a Restore or a watch request: `""` (new), `InQueue`, `InProgress`,
/// `Completed` or `Failed`, serialized as exactly these strings (the original's CRs).
///
/// A phase this version does not know (written by someone else) is kept as written in
/// [`Phase::Other`], so one odd object never makes a whole list unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Phase {
    /// `""`: not yet looked at.
    #[default]
    New,
    /// `InQueue`: accepted, waiting for a worker.
    InQueue,
    /// `InProgress`: being worked on.
    InProgress,
    /// `Completed`: finished (a restore may still list failed objects).
    Completed,
    /// `Failed`: finished without a result; `reason` says why.
    Failed,
    /// Any other text, kept as written.
    Other(String),
}

impl Phase {
    /// The phase as written in statuses.
    pub fn as_str(&self) -> &str {
        match self {
            Phase::New => "",
            Phase::InQueue => "InQueue",
            Phase::InProgress => "InProgress",
            Phase::Completed => "Completed",
            Phase::Failed => "Failed",
            Phase::Other(s) => s,
        }
    }
}

impl From<String> for Phase {
    fn from(s: String) -> Self {
        match s.as_str() {
            "" => Phase::New,
            "InQueue" => Phase::InQueue,
            "InProgress" => Phase::InProgress,
            "Completed" => Phase::Completed,
            "Failed" => Phase::Failed,
            _ => Phase::Other(s),
        }
    }
}

impl From<Phase> for String {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Phase {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Phase {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// In the CRD schemas a phase is a plain string (any value is accepted and kept).
impl schemars::JsonSchema for Phase {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// Status of a restore. Lists are `null` when empty, like the original's Go nil slices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RestoreStatus {
    /// Paths of objects that existed on the target already.
    pub already_existed: Option<Vec<String>>,
    /// Paths of objects created.
    pub created: Option<Vec<String>>,
    /// One entry per object left out by a rule (with the rule's reason).
    pub excluded: Option<Vec<String>>,
    /// One entry per object whose restore failed (with the error).
    pub failed: Option<Vec<String>>,
    /// Paths of objects updated (PUT).
    pub updated: Option<Vec<String>>,
    /// Number of `alreadyExisted` entries.
    pub num_already_existed: u64,
    /// Number of `created` entries.
    pub num_created: u64,
    /// Number of `excluded` entries.
    pub num_excluded: u64,
    /// Number of `failed` entries.
    pub num_failed: u64,
    /// Objects left out by the preference.
    pub num_preference_excluded: u64,
    /// Objects in the snapshot.
    pub num_snapshot_contents: u64,
    /// Number of `updated` entries.
    pub num_updated: u64,
    /// The restore's phase.
    pub phase: Phase,
    /// Why the restore failed (empty otherwise).
    pub reason: String,
    /// The target's resourceVersion read after the restore.
    pub restore_resource_version: String,
    /// When the restore finished (RFC 3339, whole seconds).
    pub restore_timestamp: Option<String>,
    /// When the Restore resource expires (RFC 3339), if it does.
    pub preserve_until: Option<String>,
}

/// `"<path>,(<reason>)"`.
pub(crate) fn excluded_entry(path: &str, reason: &str) -> String {
    format!("{path},({reason})")
}

/// `"<path>,<message cut to 300 chars>"`.
pub(crate) fn failed_entry(path: &str, message: &str) -> String {
    let cut: String = message.chars().take(FAILED_MESSAGE_MAX).collect();
    format!("{path},{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_have_the_original_shape() {
        assert_eq!(
            excluded_entry("/api/v1/namespaces/a/pods/p", "owner-ref"),
            "/api/v1/namespaces/a/pods/p,(owner-ref)"
        );
        let long = "x".repeat(500);
        assert_eq!(failed_entry("/p", &long).len(), "/p,".len() + 300);
        let json = serde_json::to_value(RestoreStatus::default()).unwrap();
        assert!(json["created"].is_null());
        assert_eq!(json["numCreated"], 0);
        assert_eq!(json["phase"], "");
    }

    #[test]
    fn phases_serialize_to_the_originals_strings() {
        for (phase, text) in [
            (Phase::New, ""),
            (Phase::InQueue, "InQueue"),
            (Phase::InProgress, "InProgress"),
            (Phase::Completed, "Completed"),
            (Phase::Failed, "Failed"),
            (Phase::Other("Paused".into()), "Paused"),
        ] {
            assert_eq!(serde_json::to_value(&phase).unwrap(), text);
            let back: Phase = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(back, phase);
        }
        let status: RestoreStatus =
            serde_json::from_value(serde_json::json!({"phase": "Completed"})).unwrap();
        assert_eq!(status.phase, Phase::Completed);
    }
}
