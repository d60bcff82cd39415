//! The layout of the original Go k8s-snap's archives (docs/import.md): what each tar entry
//! path under `<snapshot-name>/` stands for, and which built-in resources have a `/status`
//! subresource (an archive carries no discovery data; custom resources are answered by the
//! CustomResourceDefinitions inside the archive).
//!
//! Owns: pure path and table logic. Must not touch: I/O, the mirror, the canonical form.

use crate::tree::ContentPath;

/// What one entry path (relative to the archive, `<dir>/...`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// `<dir>/snapshot.json`: the Snapshot resource.
    SnapshotJson,
    /// `<dir>/.json`: an object without `selfLink` (Kubernetes 1.20 and later).
    NoSelfLink,
    /// An object file: where it lives in the API.
    Object(ObjectLocation),
}

/// Where an object file of the archive says its object lives. `version` is `None` for the
/// top-level `namespaces/` and `crds/` files (their version is the body's `apiVersion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLocation {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, `None` for the top-level `namespaces/` and `crds/` files.
    pub version: Option<String>,
    /// Plural resource name.
    pub resource: String,
    /// Namespace, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

impl ObjectLocation {
    /// The content path once the version is known.
    pub fn content_path(&self, version: &str) -> Result<ContentPath, String> {
        ContentPath::new(
            &self.group,
            version,
            &self.resource,
            self.namespace.as_deref(),
            &self.name,
        )
        .map_err(|e| e.to_string())
    }
}

/// Why an entry path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathFault {
    /// Absolute, or with a `..`, `.` or empty segment: it would land outside the snapshot
    /// directory if unpacked.
    Escapes,
    /// Under another top-level directory than the archive's name calls for.
    OtherDirectory(String),
    /// Not a `.json` file.
    NotJson,
    /// A `.json` file at a place the original never writes one (the reason says what is wrong).
    Unknown(String),
}

/// Classifies the entry `path` of the archive whose snapshot directory is `dir`.
pub fn classify(dir: &str, path: &str) -> Result<EntryKind, PathFault> {
    // Go's archive/tar writes `name/...`; a trailing `/` marks a directory entry.
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(PathFault::Escapes);
    }
    let segs: Vec<&str> = path.split('/').collect();
    if segs.iter().any(|s| *s == ".." || *s == "." || s.is_empty()) {
        return Err(PathFault::Escapes);
    }
    let (first, rest) = (segs[0], &segs[1..]);
    if first != dir {
        return Err(PathFault::OtherDirectory(first.to_owned()));
    }
    let Some(last) = rest.last() else {
        return Err(PathFault::NotJson);
    };
    if *last == ".json" && rest.len() == 1 {
        return Ok(EntryKind::NoSelfLink);
    }
    let Some(stem) = last.strip_suffix(".json") else {
        return Err(PathFault::NotJson);
    };
    let loc = |group: &str, resource: &str, name: &str| ObjectLocation {
        group: group.to_owned(),
        version: None,
        resource: resource.to_owned(),
        namespace: None,
        name: name.to_owned(),
    };
    let top_level = |l: ObjectLocation| {
        // The version comes from the body; any valid one checks the name here.
        l.content_path("v1").map_err(PathFault::Unknown)?;
        Ok(EntryKind::Object(l))
    };
    match rest {
        ["snapshot.json"] => Ok(EntryKind::SnapshotJson),
        ["namespaces", _] => top_level(loc("", "namespaces", stem)),
        ["crds", _] => top_level(loc(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            stem,
        )),
        [top, ..] if *top == "api" || *top == "apis" => {
            let mut api_path = String::with_capacity(path.len());
            for s in &rest[..rest.len() - 1] {
                api_path.push('/');
                api_path.push_str(s);
            }
            api_path.push('/');
            api_path.push_str(stem);
            let p = ContentPath::parse(&api_path).map_err(|e| PathFault::Unknown(e.to_string()))?;
            Ok(EntryKind::Object(ObjectLocation {
                group: p.group().to_owned(),
                version: Some(p.version().to_owned()),
                resource: p.resource().to_owned(),
                namespace: p.namespace().map(str::to_owned),
                name: p.name().to_owned(),
            }))
        }
        _ => Err(PathFault::Unknown(
            "not snapshot.json, nor under api/, apis/, namespaces/ or crds/".into(),
        )),
    }
}

/// Built-in resources (group, plural) served with a `/status` subresource, from the discovery
/// documents of Kubernetes v1.19 (recorded from a real server) to the latest release. A live
/// snapshot reads this from discovery; an archive holds none, so an import looks it up here.
pub const BUILTIN_STATUS_SUBRESOURCES: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "nodes"),
    ("", "persistentvolumeclaims"),
    ("", "persistentvolumes"),
    ("", "pods"),
    ("", "replicationcontrollers"),
    ("", "resourcequotas"),
    ("", "services"),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("extensions", "daemonsets"),
    ("extensions", "deployments"),
    ("extensions", "ingresses"),
    ("extensions", "replicasets"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"),
    (
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
    ),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "servicecidrs"),
    ("policy", "poddisruptionbudgets"),
    ("resource.k8s.io", "resourceclaims"),
    ("storage.k8s.io", "volumeattachments"),
];

/// Versions of those resources served without `/status` (group, version, plural).
pub const BUILTIN_STATUS_EXCEPTIONS: &[(&str, &str, &str)] =
    &[("storage.k8s.io", "v1beta1", "volumeattachments")];

/// Whether the built-in resource `group`/`version`/`resource` has a `/status` subresource.
pub fn builtin_has_status(group: &str, version: &str, resource: &str) -> bool {
    BUILTIN_STATUS_SUBRESOURCES
        .iter()
        .any(|(g, r)| *g == group && *r == resource)
        && !BUILTIN_STATUS_EXCEPTIONS
            .iter()
            .any(|(g, v, r)| *g == group && *v == version && *r == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(
        group: &str,
        version: Option<&str>,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> EntryKind {
        EntryKind::Object(ObjectLocation {
            group: group.into(),
            version: version.map(Into::into),
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.into(),
        })
    }

    #[test]
    fn entries_of_the_original_layout() {
        let d = "cluster01-001";
        assert_eq!(
            classify(d, "cluster01-001/snapshot.json"),
            Ok(EntryKind::SnapshotJson)
        );
        assert_eq!(
            classify(d, "cluster01-001/.json"),
            Ok(EntryKind::NoSelfLink)
        );
        assert_eq!(
            classify(
                d,
                "cluster01-001/api/v1/namespaces/default/configmaps/x.json"
            ),
            Ok(object("", Some("v1"), "configmaps", Some("default"), "x"))
        );
        assert_eq!(
            classify(
                d,
                "cluster01-001/apis/apps/v1/namespaces/shop/deployments/web.json"
            ),
            Ok(object(
                "apps",
                Some("v1"),
                "deployments",
                Some("shop"),
                "web"
            ))
        );
        assert_eq!(
            classify(
                d,
                "cluster01-001/apis/rbac.authorization.k8s.io/v1/clusterroles/system:basic-user.json"
            ),
            Ok(object(
                "rbac.authorization.k8s.io",
                Some("v1"),
                "clusterroles",
                None,
                "system:basic-user"
            ))
        );
        assert_eq!(
            classify(d, "cluster01-001/namespaces/shop.json"),
            Ok(object("", None, "namespaces", None, "shop"))
        );
        assert_eq!(
            classify(d, "cluster01-001/crds/widgets.example.com.json"),
            Ok(object(
                "apiextensions.k8s.io",
                None,
                "customresourcedefinitions",
                None,
                "widgets.example.com"
            ))
        );
    }

    #[test]
    fn faults() {
        let d = "c1";
        assert_eq!(classify(d, "/etc/passwd.json"), Err(PathFault::Escapes));
        assert_eq!(classify(d, "c1/../../x.json"), Err(PathFault::Escapes));
        assert_eq!(classify(d, "c1//x.json"), Err(PathFault::Escapes));
        assert_eq!(
            classify(d, "c2/snapshot.json"),
            Err(PathFault::OtherDirectory("c2".into()))
        );
        assert_eq!(
            classify(d, "c1/api/v1/namespaces/a/configmaps/x.yaml"),
            Err(PathFault::NotJson)
        );
        assert!(matches!(
            classify(d, "c1/api/v1/x.json"),
            Err(PathFault::Unknown(_))
        ));
        assert!(matches!(
            classify(d, "c1/other/x.json"),
            Err(PathFault::Unknown(_))
        ));
    }

    #[test]
    fn status_table() {
        assert!(builtin_has_status("apps", "v1", "deployments"));
        assert!(builtin_has_status("", "v1", "pods"));
        assert!(!builtin_has_status("", "v1", "configmaps"));
        assert!(!builtin_has_status("example.com", "v1", "widgets"));
        assert!(builtin_has_status(
            "storage.k8s.io",
            "v1",
            "volumeattachments"
        ));
        assert!(!builtin_has_status(
            "storage.k8s.io",
            "v1beta1",
            "volumeattachments"
        ));
    }

    proptest::proptest! {
        /// Any entry path: no panic; an object entry is always a valid content path inside
        /// the snapshot directory, and nothing with `..`, `.`, an empty segment or a leading
        /// `/` is accepted.
        #[test]
        fn classify_never_lets_a_path_out(
            segs in proptest::collection::vec("[a-z0-9.:_-]{0,12}|\\.\\.|\\.|api|apis|v1|namespaces|crds|c1|snapshot\\.json|x\\.json|\\.json", 0..9),
            lead in proptest::bool::ANY,
        ) {
            let path = format!("{}{}", if lead { "/" } else { "" }, segs.join("/"));
            match classify("c1", &path) {
                Ok(kind) => {
                    proptest::prop_assert!(path.starts_with("c1/"), "{path}");
                    proptest::prop_assert!(!path.split('/').any(|s| s == ".." || s == "." || s.is_empty()), "{path}");
                    if let EntryKind::Object(loc) = kind {
                        let v = loc.version.clone().unwrap_or_else(|| "v1".into());
                        proptest::prop_assert!(loc.content_path(&v).is_ok(), "{path}");
                    }
                }
                Err(PathFault::OtherDirectory(d)) => proptest::prop_assert_ne!(d, "c1"),
                Err(_) => {}
            }
        }
    }
}
