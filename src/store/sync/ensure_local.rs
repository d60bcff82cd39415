//! [`ensure_local`]: a snapshot the mirror lacks is pulled from the store (the step
//! `restore::prepare` takes before loading a snapshot).
//!
//! Owns: that check. Must not touch: snapshots other than the one asked for.

use super::{Result, SyncError, pull};
use crate::mirror::SharedMirror;
use crate::store::ObjectStore;

/// Makes sure snapshot `name` is in `mirror`, pulling it from `store` when it is only there;
/// true when it was pulled. A pull that could not tag it is [`SyncError::PullFailed`].
pub async fn ensure_local(
    store: &dyn ObjectStore,
    mirror: &SharedMirror,
    name: &str,
) -> Result<bool> {
    let owned = name.to_owned();
    if mirror.run(move |m| m.snapshot(&owned)).await?.is_some() {
        return Ok(false);
    }
    let report = pull(store, mirror, &[name.to_owned()]).await?;
    match report.failed.get(name) {
        Some(reason) => Err(SyncError::PullFailed {
            name: name.to_owned(),
            store: store.describe(),
            reason: reason.clone(),
        }),
        None => Ok(true),
    }
}
