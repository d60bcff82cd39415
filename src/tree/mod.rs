//! The snapshot tree format v1 (DESIGN.md §3): content paths and their file paths, the
//! canonical object form, canonical YAML, and the `.k8s-snap/` metadata files.
//!
//! Owns: every rule that decides which bytes a snapshot file holds. Pure code: no I/O, no
//! network, no git. Must not touch: clusters (`discovery`, `snapshot`), git (`mirror`).

pub mod meta;

pub use meta::{Consistency, ResourceEntry, SkippedEntry, SnapshotMeta};
