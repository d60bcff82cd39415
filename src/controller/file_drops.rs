//! The stores of `controller --watch-dir`: a dropped request pulls a snapshot the mirror
//! lacks from its `spec.objectstoreConfig`, else from the ObjectstoreConfig of the Snapshot CR
//! of that name, the same store a Restore CR would use (resolved and opened as
//! [`super::work`] does for Restores).
//!
//! Owns: that choice. Must not touch: the watched directory, CR statuses, the restore itself
//! (the shared [`crate::watch::EngineExecutor`] runs it).

use std::sync::Arc;

use kube::Api;

use super::crd::Snapshot;
use super::{Context, target, work};
use crate::store::ObjectStore;
use crate::watch::{BoxFuture, RestoreRequest, StoreSource};

/// The [`StoreSource`] of the controller's file drops.
pub(super) struct ControllerStores(pub(super) Arc<Context>);

impl std::fmt::Debug for ControllerStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControllerStores")
    }
}

impl StoreSource for ControllerStores {
    fn store_for<'a>(
        &'a self,
        request: &'a RestoreRequest,
    ) -> BoxFuture<'a, Result<Option<Box<dyn ObjectStore>>, String>> {
        Box::pin(async move {
            let ctx = &self.0;
            let config = match &request.objectstore_config {
                Some(c) => Some(c.clone()),
                None => {
                    let ns = &ctx.options.namespace;
                    let snapshots: Api<Snapshot> = Api::namespaced(ctx.client.clone(), ns);
                    snapshots
                        .get_opt(&request.backup_name)
                        .await
                        .map_err(|e| format!("reading Snapshot {ns}/{}: {e}", request.backup_name))?
                        .and_then(|s| s.spec.objectstore_config)
                        .filter(|c| !c.trim().is_empty())
                }
            };
            let Some(config) = config else {
                return Ok(None);
            };
            let target = target::store(ctx, &config)
                .await
                .map_err(|e| format!("spec.objectstoreConfig: {e}"))?;
            let store = work::open_store(&target).await.map_err(|e| e.to_string())?;
            Ok(Some(Box::new(store) as Box<dyn ObjectStore>))
        })
    }
}
