//! Resolving what a CR points at: the target cluster (`spec.kubeconfig`,
//! `spec.kubeconfigSecretRef`, or the controller's own cluster) and the object store
//! (`spec.objectstoreConfig` + its credential Secret).
//!
//! Owns: reading those Secrets and keeping their contents out of every message it returns
//! ([`redact`]). Must not touch: CR status.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::Context;
use super::crd::{ObjectstoreConfig, SecretKeyRef};
use super::work::StoreTarget;
use crate::cluster::{Cluster, ConnectOptions};

/// Why a target could not be resolved; messages never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The spec is at fault. Text only: a kubeconfig's connect error is redacted of the
    /// kubeconfig's contents ([`redact`]) before it is kept, so no source can leak them.
    #[error("{0}")]
    Invalid(String),
    /// A Kubernetes API call resolving the target failed (e.g. reading a Secret).
    #[error("{what}: {source}")]
    Api {
        /// What was being read.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
        /// Whether retrying may help (API unreachable, 5xx).
        transient: bool,
    },
}

impl TargetError {
    /// The same error with the spec field that led to it named first (`spec.kubeconfig: ...`).
    pub(crate) fn in_field(self, field: &str) -> TargetError {
        match self {
            TargetError::Invalid(m) => TargetError::Invalid(format!("{field}: {m}")),
            TargetError::Api {
                what,
                source,
                transient,
            } => TargetError::Api {
                what: format!("{field}: {what}"),
                source,
                transient,
            },
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            TargetError::Api {
                transient: true,
                ..
            }
        )
    }
}

fn api_error(what: String, e: kube::Error) -> TargetError {
    let transient = match &e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    };
    TargetError::Api {
        what,
        source: e,
        transient,
    }
}

/// The cluster a CR targets. `kubeconfig` wins over `secret_ref`; neither means our own.
pub async fn cluster(
    ctx: &Context,
    kubeconfig: Option<&str>,
    secret_ref: Option<&SecretKeyRef>,
) -> Result<Cluster, TargetError> {
    let text = match (kubeconfig.filter(|k| !k.trim().is_empty()), secret_ref) {
        (Some(k), _) => Some(k.to_string()),
        (None, Some(r)) => Some(read_secret_key(ctx, &r.name, r.key()).await?),
        (None, None) => None,
    };
    match text {
        Some(text) => {
            let opts = ConnectOptions {
                kubeconfig_text: Some(text.clone()),
                ..Default::default()
            };
            Cluster::connect(&opts)
                .await
                .map_err(|e| TargetError::Invalid(redact(&e.to_string(), &text)))
        }
        None => Cluster::from_config(ctx.own_config.clone(), None)
            .map_err(|e| TargetError::Invalid(e.to_string())),
    }
}

/// The cluster a CR's spec targets ([`cluster`]), errors naming the field at fault
/// (`spec.kubeconfig`, `spec.kubeconfigSecretRef`). Does not contact the cluster.
pub(crate) async fn spec_cluster(
    ctx: &Context,
    kubeconfig: Option<&str>,
    secret_ref: Option<&SecretKeyRef>,
) -> Result<Cluster, TargetError> {
    let field = match (kubeconfig.filter(|k| !k.trim().is_empty()), secret_ref) {
        (Some(_), _) => "spec.kubeconfig",
        (None, Some(_)) => "spec.kubeconfigSecretRef",
        (None, None) => "the controller's own cluster",
    };
    cluster(ctx, kubeconfig, secret_ref)
        .await
        .map_err(|e| e.in_field(field))
}

/// The store a CR's `spec.objectstoreConfig` names ([`store`]), errors naming that field.
/// Does not contact the store.
pub(crate) async fn spec_store(
    ctx: &Context,
    config_name: &str,
) -> Result<StoreTarget, TargetError> {
    store(ctx, config_name)
        .await
        .map_err(|e| e.in_field("spec.objectstoreConfig"))
}

/// The store an ObjectstoreConfig names, with its credentials.
pub async fn store(ctx: &Context, config_name: &str) -> Result<StoreTarget, TargetError> {
    let ns = &ctx.options.namespace;
    let api: Api<ObjectstoreConfig> = Api::namespaced(ctx.client.clone(), ns);
    let what = format!("ObjectstoreConfig {ns}/{config_name}");
    let config = api
        .get_opt(config_name)
        .await
        .map_err(|e| api_error(what.clone(), e))?
        .ok_or_else(|| TargetError::Invalid(format!("{what} not found")))?;
    let secret = &config.spec.cloud_credential_secret;
    if secret.is_empty() {
        return Err(TargetError::Invalid(format!(
            "{what}: spec.cloudCredentialSecret is empty"
        )));
    }
    let in_config = |e: TargetError| e.in_field(&format!("{what}: spec.cloudCredentialSecret"));
    let access_key = read_secret_key(ctx, secret, "accesskey")
        .await
        .map_err(in_config)?;
    let secret_key = read_secret_key(ctx, secret, "secretkey")
        .await
        .map_err(in_config)?;
    Ok(StoreTarget {
        config_name: format!("{ns}/{config_name}"),
        insecure: ctx.options.insecure || config.spec.insecure.unwrap_or(false),
        create_bucket: ctx.options.create_bucket,
        spec: config.spec,
        access_key,
        secret_key,
    })
}

/// One key of a Secret in the controller's namespace, as UTF-8 text.
pub(crate) async fn read_secret_key(
    ctx: &Context,
    name: &str,
    key: &str,
) -> Result<String, TargetError> {
    let ns = &ctx.options.namespace;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let what = format!("Secret {ns}/{name}");
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(what.clone(), e))?
        .ok_or_else(|| TargetError::Invalid(format!("{what} not found")))?;
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone())
            .map_err(|_| TargetError::Invalid(format!("{what}: key {key:?} is not UTF-8 text")));
    }
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Ok(v.clone());
    }
    Err(TargetError::Invalid(format!("{what}: no key {key:?}")))
}

/// The key of a plan ConfigMap (`spec.planRef`) holding the plan file.
pub(crate) const PLAN_KEY: &str = "plan.json";

/// The reviewed plan of a Restore's `spec.planRef`: the ConfigMap `name` in the controller's
/// namespace, its key [`PLAN_KEY`] parsed as a plan file; and the origin naming it.
pub(crate) async fn read_plan(
    ctx: &Context,
    name: &str,
) -> Result<(crate::restore::plan_file::PlanFile, String), TargetError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let ns = &ctx.options.namespace;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let what = format!("ConfigMap {ns}/{name}");
    let cm = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(what.clone(), e))?
        .ok_or_else(|| TargetError::Invalid(format!("{what} not found")))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(PLAN_KEY))
        .ok_or_else(|| TargetError::Invalid(format!("{what}: no key {PLAN_KEY:?}")))?;
    let origin = format!("{what} key {PLAN_KEY}");
    let file = crate::restore::plan_file::PlanFile::parse(text, &origin)
        .map_err(|e| TargetError::Invalid(e.to_string()))?;
    Ok((file, origin))
}

/// Removes every credential value of `kubeconfig` from `message`.
pub use crate::cluster::redact_kubeconfig as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        let kc =
            "users:\n- name: u\n  user:\n    token: s3cr3t-token\n    password: \"hunter22\"\n";
        let msg = "bad: token s3cr3t-token and hunter22 for https://x";
        let r = redact(msg, kc);
        assert!(
            !r.contains("s3cr3t-token") && !r.contains("hunter22"),
            "{r}"
        );
        assert!(r.contains("https://x"));
    }
}
