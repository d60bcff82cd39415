//! The canonical object form (docs/design.md §3): which server-owned fields are removed before an
//! object is written, and which objects are never written at all.
//!
//! Owns: the list of stripped fields and the token-Secret rule. Must not touch: YAML text
//! (see `yaml`), paths (see `path`).

use serde_json::Value;

use super::node::Node;

/// `metadata` fields owned by the server, removed from every object.
pub const SERVER_OWNED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Secret type of service-account tokens, which are never written to a tree.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Strips server-owned fields in place: the [`SERVER_OWNED_METADATA`] fields, and `status`
/// when the resource has a `/status` subresource (a resource without one keeps its `status`:
/// there it is data). Labels, annotations, ownerReferences and finalizers are kept. Values
/// that are not objects are left unchanged.
pub fn canonicalize(obj: &mut Value, has_status_subresource: bool) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_OWNED_METADATA {
            meta.remove(*field);
        }
    }
    if has_status_subresource {
        map.remove("status");
    }
}

/// Whether `obj` is a Secret of type `kubernetes.io/service-account-token`.
pub fn is_token_secret(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("Secret")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && obj.get("type").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
}

/// [`canonicalize`] for a [`Node`] (the snapshot hot path).
pub fn canonicalize_node(obj: &mut Node<'_>, has_status_subresource: bool) {
    if !obj.is_object() {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata") {
        meta.remove_all(SERVER_OWNED_METADATA);
    }
    if has_status_subresource {
        obj.remove("status");
    }
}

/// [`is_token_secret`] for a [`Node`].
pub fn is_token_secret_node(obj: &Node<'_>) -> bool {
    let field = |k: &str| obj.get(k).and_then(Node::as_str);
    field("kind") == Some("Secret")
        && field("apiVersion") == Some("v1")
        && field("type") == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
}
