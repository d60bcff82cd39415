//! The Restore status, exactly in the original project's shape (plus `conditions`-free extras
//! kept out): lists `alreadyExisted created excluded failed updated`, the `num*` counts,
//! `phase`, `reason`, `restoreResourceVersion`, `restoreTimestamp`, `preserveUntil`.

use serde::{Deserialize, Serialize};

/// Longest failure message kept in a `failed` entry (as the original).
pub const FAILED_MESSAGE_MAX: usize = 300;

/// Restore phases (as the original).
pub mod phase {
    pub const NEW: &str = "";
    pub const IN_QUEUE: &str = "InQueue";
    pub const IN_PROGRESS: &str = "InProgress";
    pub const FAILED: &str = "Failed";
    pub const COMPLETED: &str = "Completed";
}

/// Status of a restore. Lists are `null` when empty, like the original's Go nil slices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RestoreStatus {
    pub already_existed: Option<Vec<String>>,
    pub created: Option<Vec<String>>,
    pub excluded: Option<Vec<String>>,
    pub failed: Option<Vec<String>>,
    pub updated: Option<Vec<String>>,
    pub num_already_existed: u64,
    pub num_created: u64,
    pub num_excluded: u64,
    pub num_failed: u64,
    pub num_preference_excluded: u64,
    pub num_snapshot_contents: u64,
    pub num_updated: u64,
    pub phase: String,
    pub reason: String,
    pub restore_resource_version: String,
    pub restore_timestamp: Option<String>,
    pub preserve_until: Option<String>,
}

/// `"<path>,(<reason>)"`.
pub fn excluded_entry(path: &str, reason: &str) -> String {
    format!("{path},({reason})")
}

/// `"<path>,<message cut to 300 chars>"`.
pub fn failed_entry(path: &str, message: &str) -> String {
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
}
