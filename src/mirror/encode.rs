//! The hand-written git object encodings shared by the writer and maintenance: commits
//! (deterministic: fixed signature, UTC offset), snapshot commit messages, and writing an
//! object unless the odb has it.
//!
//! Owns those byte formats. Must not touch refs or the lock.

use git2::{ObjectType, Odb, OdbLookupFlags, Oid};

use super::{GitContext, Result};
use crate::tree::meta::SnapshotMeta;

/// Author and committer of every commit k8s-snap writes.
pub(super) const SIGNATURE: &str = "k8s-snap <k8s-snap@localhost>";

/// Writes `bytes` as an object of `kind` unless the odb already has it.
/// Returns the id and whether it was new.
pub(super) fn write_object(odb: &Odb<'_>, kind: ObjectType, bytes: &[u8]) -> Result<(Oid, bool)> {
    let oid = super::pack::object_id(kind, bytes)?;
    if odb.exists_ext(oid, OdbLookupFlags::NO_REFRESH) {
        return Ok((oid, false));
    }
    let written = odb
        .write(kind, bytes)
        .ctx(|| format!("writing {kind} object {oid}"))?;
    debug_assert_eq!(written, oid);
    Ok((oid, true))
}

/// Encodes a commit object (deterministic: fixed signature, UTC offset).
pub(super) fn encode_commit(tree: Oid, parent: Option<Oid>, time: i64, message: &str) -> Vec<u8> {
    let mut s = format!("tree {tree}\n");
    if let Some(p) = parent {
        s.push_str(&format!("parent {p}\n"));
    }
    s.push_str(&format!("author {SIGNATURE} {time} +0000\n"));
    s.push_str(&format!("committer {SIGNATURE} {time} +0000\n\n"));
    s.push_str(message);
    s.push('\n');
    s.into_bytes()
}

/// The commit message of a snapshot (and of its cluster-branch commit).
pub(super) fn commit_message(meta: &SnapshotMeta) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    format!(
        "snapshot {} of {} at rv {}",
        meta.name,
        meta.cluster_name,
        clean(&meta.resource_version)
    )
}
