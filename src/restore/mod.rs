//! Restore: preference filter, rules, plan (diff tree vs live) and create-only apply
//! (DESIGN.md §6).
//!
//! Owns: which snapshot objects are restored, in what order and with which cluster-specific
//! fields removed; the plan and the Restore status in the original project's shape.
//! Must not touch: git (reads trees through `mirror`), the source cluster, the store.

pub mod preference;
pub mod status;

pub use preference::{Preference, PreferenceError, RestorePreferenceSpec};
pub use status::RestoreStatus;
