//! The restore engine as a [`RestoreExecutor`]: what `k8s-snap watch` and the controller's
//! `--watch-dir` run for each request. Connects to the request's target (its inline
//! kubeconfig, else the default one), pulls the snapshot from the store when it is only there,
//! then plans and applies with [`crate::restore::restore`].
//!
//! Owns: the mapping from a request to a restore and back to a result. Must not touch: the
//! watched directory (the watcher writes results and moves files).

use std::path::PathBuf;

use super::{BoxFuture, JobFailure, RestoreExecutor, RestoreOutcome, RestoreRequest};
use crate::cluster::{Cluster, ConnectOptions, RetryPolicy, redact_kubeconfig};
use crate::restore::RestoreOptions;
use crate::store::{S3Options, StoreUrl};

/// Restores from the mirror at `git_dir`.
#[derive(Debug, Clone)]
pub struct EngineExecutor {
    /// The mirror (`<data-dir>/mirror.git`).
    pub git_dir: PathBuf,
    /// The target of requests without `spec.kubeconfig`.
    pub default_target: ConnectOptions,
    /// Where to pull snapshots the mirror lacks from.
    pub store: Option<(StoreUrl, S3Options)>,
    /// Restore options (threads, waits).
    pub options: RestoreOptions,
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
        // An unreachable target fails fast, before anything else is done.
        cluster
            .clone()
            .with_retry(RetryPolicy {
                max_retries: 2,
                ..RetryPolicy::default()
            })
            .get_json::<serde_json::Value>("/version")
            .await
            .map_err(|e| format!("the target cluster does not answer: {e}"))?;

        let name = request.backup_name.clone();
        if let Some((url, s3)) = &self.store {
            let store = crate::store::open(url, s3)
                .await
                .map_err(|e| e.to_string())?;
            let mirror = crate::mirror::SharedMirror::open_or_init(&self.git_dir)
                .await
                .map_err(|e| e.to_string())?;
            match crate::store::sync::ensure_local(store.as_ref(), &mirror, &name).await {
                Ok(_) | Err(crate::store::sync::SyncError::NotInStore { .. }) => {}
                Err(e) => return Err(format!("pulling snapshot {name:?}: {e}")),
            }
        }
        let git_dir = self.git_dir.clone();
        let snapshot_name = name.clone();
        let snapshot = tokio::task::spawn_blocking(move || {
            crate::restore::load_snapshot(&git_dir, &snapshot_name)
        })
        .await
        .map_err(|e| format!("loading snapshot {name:?}: {e}"))?
        .map_err(|e| e.to_string())?;
        let preference = request.preference.clone().unwrap_or_default();
        let (plan, report) =
            crate::restore::restore(&cluster, snapshot, &preference, &self.options)
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
