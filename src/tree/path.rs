//! Content paths (`/api/v1/namespaces/default/configmaps/x`) and the file paths of the tree
//! (`api/v1/namespaces/default/configmaps/x.yaml`), with validation of every segment.
//!
//! Owns: the mapping between a resource identity and its place in the tree, and the name rules
//! that keep a tree read from an untrusted store from escaping its directory. Pure code: must
//! not touch the file system.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TreeError;

/// Maximum length in bytes of one path segment (a DNS subdomain name is at most 253 bytes).
pub const MAX_NAME_LEN: usize = 253;

/// Suffix of every object file in the tree.
pub const OBJECT_FILE_SUFFIX: &str = ".yaml";

/// Checks that `name` can be one segment of a tree path: not empty, at most
/// [`MAX_NAME_LEN`] bytes, no `/`, no NUL, and not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), TreeError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 253 bytes"
    } else if name == "." || name == ".." {
        "is `.` or `..`"
    } else if name.contains('/') {
        "contains `/`"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(TreeError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Whether `path` (relative to the tree root) is an object file: under `api/` or `apis/` and
/// ending in `.yaml`. Metadata files under `.k8s-snap/` are not object files.
pub fn is_object_file(path: &str) -> bool {
    (path.starts_with("api/") || path.starts_with("apis/")) && path.ends_with(OBJECT_FILE_SUFFIX)
}

/// The content path of one object: its API path, e.g. `/api/v1/namespaces/default/configmaps/x`
/// or `/apis/apps/v1/namespaces/shop/deployments/web`. A Namespace is
/// `/api/v1/namespaces/<ns>`.
///
/// Every segment is validated with [`validate_name`]; the value is immutable, so a
/// `ContentPath` is always a safe relative location inside a tree. Ordering is bytewise on the
/// string form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContentPath {
    path: Box<str>,
    // Every segment is a part of `path`: its byte range there (`group` empty for the core
    // group). One allocation per path instead of six: a restore holds a path per object.
    group: Span,
    version: Span,
    resource: Span,
    namespace: Option<Span>,
    name: Span,
}

/// A byte range of a content path (at most a few segments of 253 bytes: `u16` holds it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Span(u16, u16);

impl Span {
    /// The range from `start` to the end of `path`.
    fn to_end(path: &str, start: usize) -> Span {
        let at = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Span(at(start), at(path.len()))
    }
}

impl ContentPath {
    /// Builds the content path of an object. `group` is `""` for the core group;
    /// `namespace` is `None` for cluster-scoped resources.
    pub fn new(
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Self, TreeError> {
        if !group.is_empty() {
            validate_name(group)?;
        }
        validate_name(version)?;
        validate_name(resource)?;
        if let Some(ns) = namespace {
            validate_name(ns)?;
        }
        validate_name(name)?;
        // Exactly its length: the string is kept as it is, for as long as the path lives.
        let mut path = String::with_capacity(
            "/apis/".len()
                + group.len()
                + 1
                + version.len()
                + namespace.map_or(0, |ns| "/namespaces/".len() + ns.len())
                + 1
                + resource.len()
                + 1
                + name.len(),
        );
        let group_span = if group.is_empty() {
            path.push_str("/api/");
            Span(0, 0)
        } else {
            path.push_str("/apis/");
            let start = path.len();
            path.push_str(group);
            let span = Span::to_end(&path, start);
            path.push('/');
            span
        };
        let start = path.len();
        path.push_str(version);
        let version_span = Span::to_end(&path, start);
        let namespace_span = namespace.map(|ns| {
            path.push_str("/namespaces/");
            let start = path.len();
            path.push_str(ns);
            Span::to_end(&path, start)
        });
        path.push('/');
        let start = path.len();
        path.push_str(resource);
        let resource_span = Span::to_end(&path, start);
        path.push('/');
        let start = path.len();
        path.push_str(name);
        let name_span = Span::to_end(&path, start);
        Ok(Self {
            path: path.into_boxed_str(),
            group: group_span,
            version: version_span,
            resource: resource_span,
            namespace: namespace_span,
            name: name_span,
        })
    }

    /// The segment at `span`.
    fn segment(&self, span: Span) -> &str {
        self.path
            .get(usize::from(span.0)..usize::from(span.1))
            .unwrap_or_default()
    }

    /// Parses a content path (with its leading `/`), validating its shape and every segment.
    pub fn parse(s: &str) -> Result<Self, TreeError> {
        let invalid = |reason: &str| TreeError::InvalidPath {
            path: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = s
            .strip_prefix('/')
            .ok_or_else(|| invalid("does not start with `/`"))?;
        let segs: Vec<&str> = rest.split('/').collect();
        let (group, after_gv) = match segs.first() {
            Some(&"api") => ("", &segs[1..]),
            Some(&"apis") => match segs.get(1) {
                Some(g) => (*g, &segs[2..]),
                None => return Err(invalid("has no API group")),
            },
            _ => return Err(invalid("does not start with `/api/` or `/apis/`")),
        };
        if segs.first() == Some(&"apis") && group.is_empty() {
            return Err(invalid("has an empty API group"));
        }
        let (version, namespace, resource, name) = match after_gv {
            [version, resource, name] => (*version, None, *resource, *name),
            [version, "namespaces", ns, resource, name] => (*version, Some(*ns), *resource, *name),
            _ => return Err(invalid("has the wrong number of segments")),
        };
        let parsed = Self::new(group, version, resource, namespace, name).map_err(|e| {
            TreeError::InvalidPath {
                path: s.to_owned(),
                reason: e.to_string(),
            }
        })?;
        // `new` rebuilds the string; it must be exactly the input (no stray segments).
        if &*parsed.path != s {
            return Err(invalid("is not in canonical form"));
        }
        Ok(parsed)
    }

    /// Parses a tree file path (`api/v1/namespaces/default.yaml`, no leading `/`).
    pub fn from_file_path(p: &str) -> Result<Self, TreeError> {
        let invalid = |reason: String| TreeError::InvalidPath {
            path: p.to_owned(),
            reason,
        };
        if p.starts_with('/') {
            return Err(invalid("starts with `/`".to_owned()));
        }
        let stem = p
            .strip_suffix(OBJECT_FILE_SUFFIX)
            .ok_or_else(|| invalid("does not end with `.yaml`".to_owned()))?;
        Self::parse(&format!("/{stem}")).map_err(|e| match e {
            TreeError::InvalidPath { reason, .. } => invalid(reason),
            other => invalid(other.to_string()),
        })
    }

    /// The file path of the object in the tree: no leading `/`, with `.yaml` appended.
    pub fn file_path(&self) -> String {
        let mut s = String::with_capacity(self.path.len() + OBJECT_FILE_SUFFIX.len());
        s.push_str(&self.path[1..]);
        s.push_str(OBJECT_FILE_SUFFIX);
        s
    }

    /// The content path as a string, with its leading `/`.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// API group, `""` for the core group.
    pub fn group(&self) -> &str {
        self.segment(self.group)
    }

    /// API version (`v1`).
    pub fn version(&self) -> &str {
        self.segment(self.version)
    }

    /// Plural resource name (`configmaps`).
    pub fn resource(&self) -> &str {
        self.segment(self.resource)
    }

    /// Namespace of a namespaced object, `None` for cluster-scoped ones (including Namespaces).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.map(|span| self.segment(span))
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.segment(self.name)
    }

    /// `apiVersion` of the object: `v1` for the core group, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        if self.group().is_empty() {
            self.version().to_owned()
        } else {
            format!("{}/{}", self.group(), self.version())
        }
    }
}

impl fmt::Display for ContentPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl fmt::Debug for ContentPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentPath({:?})", self.path)
    }
}

impl FromStr for ContentPath {
    type Err = TreeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialOrd for ContentPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ContentPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.path.as_bytes().cmp(other.path.as_bytes())
    }
}

impl AsRef<str> for ContentPath {
    fn as_ref(&self) -> &str {
        &self.path
    }
}

impl Serialize for ContentPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.path)
    }
}

impl<'de> Deserialize<'de> for ContentPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}
