//! The restore engine as a [`RestoreExecutor`]: what `k8s-snap watch` and the controller's
//! `--watch-dir` run for each request. Connects to the request's target (its inline
//! kubeconfig, else the default one), prepares with [`crate::restore::prepare()`] (pulling the
//! snapshot from the request's store when the mirror lacks it, loading it, probing the
//! target), opens its sealed values with the watcher's identities (docs/encryption.md), then
//! plans and applies with [`crate::restore::restore`].
//!
//! Owns: the mapping from a request to a restore and back to a result, and [`StoreSource`]
//! (which store a request pulls from). Must not touch: the watched directory (the watcher
//! writes results and moves files).

use std::path::PathBuf;
use std::sync::Arc;

use super::{BoxFuture, JobFailure, RestoreExecutor, RestoreOutcome, RestoreRequest};
use crate::cluster::{Cluster, ConnectOptions, redact_kubeconfig};
use crate::crypt::Identities;
use crate::restore::RestoreOptions;
use crate::store::{ObjectStore, S3Options, StoreUrl};

/// Where the executor pulls a snapshot the mirror lacks from, per request.
pub trait StoreSource: Send + Sync + std::fmt::Debug {
    /// The store for `request`; `None` when it has none (only the mirror is used).
    fn store_for<'a>(
        &'a self,
        request: &'a RestoreRequest,
    ) -> BoxFuture<'a, Result<Option<Box<dyn ObjectStore>>, String>>;
}

/// One store for every request: `k8s-snap watch` and its global store flags.
#[derive(Debug, Clone)]
pub struct FixedStore {
    /// The store's URL.
    pub url: StoreUrl,
    /// How to reach it when it is S3.
    pub s3: S3Options,
}

impl StoreSource for FixedStore {
    fn store_for<'a>(
        &'a self,
        _request: &'a RestoreRequest,
    ) -> BoxFuture<'a, Result<Option<Box<dyn ObjectStore>>, String>> {
        Box::pin(async move {
            crate::store::open(&self.url, &self.s3)
                .await
                .map(Some)
                .map_err(|e| e.to_string())
        })
    }
}

/// Restores from the mirror at `git_dir`.
#[derive(Debug, Clone)]
pub struct EngineExecutor {
    /// The mirror (`<data-dir>/mirror.git`).
    pub git_dir: PathBuf,
    /// The target of requests without `spec.kubeconfig`.
    pub default_target: ConnectOptions,
    /// Where to pull snapshots the mirror lacks from.
    pub store: Option<Arc<dyn StoreSource>>,
    /// Restore options (threads, waits).
    pub options: RestoreOptions,
    /// Open the sealed values of every request's snapshot (`watch --identity`, `controller
    /// --watch-identity-file`); without them a snapshot holding sealed values fails its
    /// request, naming its recipients, before anything is written.
    pub identities: Option<Arc<Identities>>,
}

impl RestoreExecutor for EngineExecutor {
    fn execute(
        &self,
        request: RestoreRequest,
    ) -> BoxFuture<'_, Result<RestoreOutcome, JobFailure>> {
        Box::pin(async move {
            let kubeconfig = request.kubeconfig.clone();
            let fail = |message: String| JobFailure {
                reason: match &kubeconfig {
                    Some(kc) => redact_kubeconfig(&message, kc),
                    None => message,
                },
            };
            self.run(request).await.map_err(fail)
        })
    }
}

impl EngineExecutor {
    async fn run(&self, request: RestoreRequest) -> Result<RestoreOutcome, String> {
        let connect = match &request.kubeconfig {
            Some(text) => ConnectOptions {
                kubeconfig_text: Some(text.clone()),
                ..ConnectOptions::default()
            },
            None => self.default_target.clone(),
        };
        let cluster = Cluster::connect(&connect)
            .await
            .map_err(|e| format!("target cluster: {e}"))?;
        let store = match &self.store {
            Some(source) => source.store_for(&request).await?,
            None => None,
        };
        let preference = request.preference.clone().unwrap_or_default();
        let prepared = crate::restore::prepare(
            &self.git_dir,
            &request.backup_name,
            store.as_deref(),
            &cluster,
            &preference,
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut snapshot = prepared.snapshot;
        let opened = snapshot
            .open_sealed(self.identities.as_deref())
            .map_err(|e| e.to_string())?;
        if opened > 0 {
            tracing::info!(request = %request.name, values = opened, "encrypted values opened");
        }
        let (plan, report) = crate::restore::restore_with(
            &cluster,
            snapshot,
            prepared.discovering,
            &preference,
            &self.options,
        )
        .await
        .map_err(|e| e.to_string())?;
        for w in &report.warnings {
            tracing::warn!(request = %request.name, "{w}");
        }
        Ok(RestoreOutcome {
            status: report.status,
            plan: serde_json::to_value(&plan.summary).ok(),
        })
    }
}
