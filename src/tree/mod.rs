//! The snapshot tree format v1 (docs/design.md §3): content paths and their file paths, the
//! canonical object form, canonical YAML, and the `.k8s-snap/` metadata files.
//!
//! Owns: every rule that decides which bytes a snapshot file holds. Pure code: no I/O, no
//! network, no git. Must not touch: clusters (`discovery`, `snapshot`), git (`mirror`).

pub mod canonical;
pub mod diff;
pub mod identity;
pub mod meta;
pub mod node;
pub mod path;
pub mod sealed;
pub mod secret;
pub mod yaml;
mod yaml_fast;

pub use canonical::{
    SERVER_OWNED_METADATA, SERVICE_ACCOUNT_TOKEN_TYPE, canonicalize, canonicalize_node,
    is_token_secret, is_token_secret_node,
};
pub use diff::unified_diff;
pub use meta::{
    ApiResourceInfo, Consistency, Encryption, ResourceEntry, SkippedEntry, SnapshotFilter,
    SnapshotMeta, UnavailableApi,
};
pub use node::Node;
pub use path::{ContentPath, MAX_NAME_LEN, OBJECT_FILE_SUFFIX, is_object_file, validate_name};
pub use yaml::{
    emit, emit_into, from_yaml, from_yaml_general, from_yaml_str, to_yaml, to_yaml_string,
    yaml_to_json,
};

/// Errors of the tree format. Each names the input at fault; none quotes object contents
/// (which may be secret).
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A path segment (group, version, resource, namespace or name) is not allowed.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected segment.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A content path or tree file path is malformed.
    #[error("invalid tree path {path:?}: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A document is not valid YAML (or exceeds the parser's limits).
    #[error("invalid YAML: {message}")]
    Yaml {
        /// The parser's error.
        message: String,
    },
    /// A value could not be turned into JSON for emitting.
    #[error("cannot serialize value to YAML: {message}")]
    Serialize {
        /// The serializer's error.
        message: String,
    },
    /// A parsed document does not have the expected shape.
    #[error("YAML document does not match the expected type: {message}")]
    Deserialize {
        /// The mismatch.
        message: String,
    },
}
