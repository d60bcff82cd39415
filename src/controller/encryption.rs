//! Secrets encrypted at rest in the controller (docs/encryption.md): the `encryption` field of
//! Snapshot and ObjectstoreConfig specs (the recipients a snapshot's Secret values are sealed
//! to, listed or in a Secret), `identitySecretRef` of a Restore (the identity that opens
//! them), and resolving both through the API. Secret contents are never logged or put in a
//! status: errors name the field, the Secret and the key, never a value.
//!
//! Owns: those spec types and their resolution. Must not touch: the cryptography (`crypt`),
//! statuses, the snapshot and restore engines.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Context;
use super::target::{self, TargetError};
use crate::crypt::{Identities, Recipients, SealedPath};

/// A key of a Secret in the controller's namespace; the default key depends on the field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret's data (default: `recipients` for recipients, `identity` for an
    /// identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl KeyRef {
    fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or(default)
    }
}

/// Secrets encrypted at rest: the age recipients every Secret value of the snapshot is
/// sealed to (docs/encryption.md). Both lists add up; empty: Secrets are stored in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// age X25519 recipients (`age1…`, public keys, from `k8s-snap keygen`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// A Secret key holding more recipients, separated by commas, spaces or newlines (key
    /// default `recipients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_secret_ref: Option<KeyRef>,
    /// Also seal these fields of every object of a resource, each
    /// `<resource>[.<group>]:<field path>` (e.g. `widgets.example.com:spec.credentials.password`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

impl EncryptionSpec {
    fn is_empty(&self) -> bool {
        self.recipients.is_empty() && self.recipients_secret_ref.is_none() && self.paths.is_empty()
    }
}

/// The recipients a Snapshot is sealed to and the user-named fields to seal: its own
/// `spec.encryption`, else that of its ObjectstoreConfig (`store_spec`, named `store_field` in
/// errors); `None`: none configured.
pub(crate) async fn recipients(
    ctx: &Context,
    spec: Option<&EncryptionSpec>,
    store_spec: Option<&EncryptionSpec>,
    store_field: &str,
) -> Result<Option<(Recipients, Vec<SealedPath>)>, TargetError> {
    let (spec, field) = match (spec.filter(|s| !s.is_empty()), store_spec) {
        (Some(s), _) => (s, "spec.encryption".to_owned()),
        (None, Some(s)) if !s.is_empty() => (s, format!("{store_field}: spec.encryption")),
        _ => return Ok(None),
    };
    let mut given = spec.recipients.clone();
    if let Some(r) = &spec.recipients_secret_ref {
        let text = target::read_secret_key(ctx, &r.name, r.key_or("recipients"))
            .await
            .map_err(|e| e.in_field(&format!("{field}.recipientsSecretRef")))?;
        given.push(text);
    }
    let parsed =
        Recipients::parse(&given).map_err(|e| TargetError::Invalid(format!("{field}: {e}")))?;
    if parsed.is_empty() {
        return Err(TargetError::Invalid(format!(
            "{field}: no recipient (age1…) given"
        )));
    }
    let paths = spec
        .paths
        .iter()
        .map(|p| p.parse::<SealedPath>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TargetError::Invalid(format!("{field}.paths: {e}")))?;
    Ok(Some((parsed, paths)))
}

/// The identities of a Restore's `spec.identitySecretRef` (key default `identity`: an age
/// identity file, `AGE-SECRET-KEY-1…` lines); `None` when it names none.
pub(crate) async fn identities(
    ctx: &Context,
    secret_ref: Option<&KeyRef>,
) -> Result<Option<Identities>, TargetError> {
    let Some(r) = secret_ref.filter(|r| !r.name.is_empty()) else {
        return Ok(None);
    };
    let field = "spec.identitySecretRef";
    let key = r.key_or("identity");
    let text = target::read_secret_key(ctx, &r.name, key)
        .await
        .map_err(|e| e.in_field(field))?;
    // The parse error names a line, never its text.
    Identities::parse(&text).map(Some).map_err(|reason| {
        TargetError::Invalid(format!(
            "{field}: Secret {}/{} key {key:?}: {reason}",
            ctx.options.namespace, r.name
        ))
    })
}
