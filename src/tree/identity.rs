//! The identity an object file's body claims (apiVersion, kind, metadata.name and
//! metadata.namespace), and the check that it is the object its path names: a tree from a
//! store is untrusted, and a body that disagrees with its path would make `restore` create
//! another object than the plan shows.
//!
//! Pure code. Bodies are read exactly as the restore reads them: canonical YAML by the canonical
//! reader (without building the document), anything else by the general parser. A cheaper line
//! scan of the header was not exact: a multi-line quoted scalar could hide a `name:` line that
//! the parser reads as part of another value.

use serde_json::Value;

use super::ContentPath;

/// What a body says it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The body's `apiVersion`.
    pub api_version: Option<String>,
    /// The body's `kind`.
    pub kind: Option<String>,
    /// The body's `metadata.name`.
    pub name: Option<String>,
    /// The body's `metadata.namespace`.
    pub namespace: Option<String>,
}

/// Reads the identity of an object file's body (`None`: not a YAML mapping): exactly what the
/// restore reads of it ([`super::from_yaml`]).
pub fn read_identity(body: &[u8]) -> Option<Identity> {
    let text = std::str::from_utf8(body).ok()?;
    super::yaml_fast::identity(text).or_else(|| {
        let v = super::from_yaml(text).ok()?;
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let meta = v.get("metadata");
        Some(Identity {
            api_version: s(v.get("apiVersion")),
            kind: s(v.get("kind")),
            name: s(meta.and_then(|m| m.get("name"))),
            namespace: s(meta.and_then(|m| m.get("namespace"))),
        })
    })
}

/// Checks that the body at `path` is the object the path names: same name, namespace (none for
/// cluster-scoped paths), apiVersion, and `kind` when known. The reason names the field.
pub fn check_identity(path: &ContentPath, body: &[u8], kind: Option<&str>) -> Result<(), String> {
    let id = read_identity(body).ok_or_else(|| "the body is not a YAML mapping".to_owned())?;
    compare_identity(path, id.view(), kind)
}

/// The identity of a body in canonical form, read by the canonical reader without building the
/// document (`None`: not UTF-8, or not canonical: then [`read_identity`] has the last word).
pub fn quick_identity(body: &[u8]) -> Option<Identity> {
    super::yaml_fast::identity(std::str::from_utf8(body).ok()?)
}

/// An [`Identity`] borrowed (from an [`Identity`] or a compact copy of one).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IdentityView<'a> {
    /// The body's `apiVersion`.
    pub api_version: Option<&'a str>,
    /// The body's `kind`.
    pub kind: Option<&'a str>,
    /// The body's `metadata.name`.
    pub name: Option<&'a str>,
    /// The body's `metadata.namespace`.
    pub namespace: Option<&'a str>,
}

impl Identity {
    /// The identity, borrowed.
    pub fn view(&self) -> IdentityView<'_> {
        IdentityView {
            api_version: self.api_version.as_deref(),
            kind: self.kind.as_deref(),
            name: self.name.as_deref(),
            namespace: self.namespace.as_deref(),
        }
    }
}

/// [`check_identity`] for an identity already read from the body.
pub fn compare_identity(
    path: &ContentPath,
    id: IdentityView<'_>,
    kind: Option<&str>,
) -> Result<(), String> {
    Expected {
        name: path.name(),
        namespace: path.namespace(),
        api_version: &path.api_version(),
        kind,
    }
    .compare(id)
}

/// What a path names, for [`Expected::compare`]: its object's name, namespace (`None` for a
/// cluster-scoped path), apiVersion, and kind when known.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The object's name.
    pub name: &'a str,
    /// Its namespace; `None` for a cluster-scoped path.
    pub namespace: Option<&'a str>,
    /// `group/version`, or the version for the core group.
    pub api_version: &'a str,
    /// The kind, when known.
    pub kind: Option<&'a str>,
}

impl Expected<'_> {
    /// Checks an identity read from a body against what the path names; the reason names the
    /// field.
    pub fn compare(&self, id: IdentityView<'_>) -> Result<(), String> {
        let differs = |field: &str, body: Option<&str>, want: &str| {
            format!(
                "the body's {field} is {} but the path names {want:?}",
                body.map_or("missing".to_owned(), |b| format!("{b:?}"))
            )
        };
        if id.name != Some(self.name) {
            return Err(differs("metadata.name", id.name, self.name));
        }
        let namespace = id.namespace.filter(|n| !n.is_empty());
        if namespace != self.namespace {
            return Err(match self.namespace {
                Some(ns) => differs("metadata.namespace", namespace, ns),
                None => format!(
                    "the body's metadata.namespace is {:?} but the path names a cluster-scoped object",
                    namespace.unwrap_or_default()
                ),
            });
        }
        if id.api_version != Some(self.api_version) {
            return Err(differs("apiVersion", id.api_version, self.api_version));
        }
        if let Some(kind) = self.kind
            && id.kind != Some(kind)
        {
            return Err(differs("kind", id.kind, kind));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> ContentPath {
        ContentPath::parse(p).unwrap()
    }

    #[test]
    fn a_key_given_twice_is_left_to_the_parser() {
        // After the head: the parser refuses the document, so a restore never reads "other".
        let late = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: ns\nmetadata:\n  name: other\n";
        assert!(crate::tree::from_yaml(late).is_err());
        assert_eq!(
            quick_identity(late.as_bytes()).unwrap().name.as_deref(),
            Some("cm")
        );
        for body in [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  name: other\n",
            "apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata:\n  name: cm\n",
        ] {
            assert_eq!(quick_identity(body.as_bytes()), None, "{body}");
            // The parser refuses duplicate keys: the body is not an identity at all.
            assert_eq!(read_identity(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn bodies_must_match_their_paths() {
        let body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: ns\n  labels:\n    name: x\ndata:\n  name: other\n";
        let p = path("/api/v1/namespaces/ns/configmaps/cm");
        assert_eq!(check_identity(&p, body, Some("ConfigMap")), Ok(()));
        let other = path("/api/v1/namespaces/ns/configmaps/mismatch");
        assert!(
            check_identity(&other, body, None)
                .unwrap_err()
                .contains("metadata.name")
        );
        let ns = path("/api/v1/namespaces/other/configmaps/cm");
        assert!(
            check_identity(&ns, body, None)
                .unwrap_err()
                .contains("namespace")
        );
        let gv = path("/apis/apps/v1/namespaces/ns/configmaps/cm");
        assert!(
            check_identity(&gv, body, None)
                .unwrap_err()
                .contains("apiVersion")
        );
        assert!(
            check_identity(&p, body, Some("Secret"))
                .unwrap_err()
                .contains("kind")
        );
        // Quoted scalars, and the YAML fallback for flow style.
        let quoted = b"apiVersion: \"v1\"\nkind: 'Namespace'\nmetadata:\n  name: \"123\"\n";
        assert_eq!(
            check_identity(&path("/api/v1/namespaces/123"), quoted, None),
            Ok(())
        );
        let flow = b"{apiVersion: v1, kind: Namespace, metadata: {name: a}}";
        assert_eq!(
            check_identity(&path("/api/v1/namespaces/a"), flow, None),
            Ok(())
        );
        assert!(check_identity(&path("/api/v1/namespaces/a"), b"[1]", None).is_err());
    }

    #[test]
    fn a_name_line_inside_a_multi_line_scalar_is_not_the_name() {
        // The parser reads these `name: victim` lines as part of a quoted scalar spanning lines,
        // and the name as "other" (from a quoted key): the check must see "other".
        let victim = path("/api/v1/namespaces/ns/configmaps/victim");
        for body in [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  annotations: \"x\n  name: victim\n  y: z\"\n  \"name\": other\n  namespace: ns\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  annotations:\n    a: \"x\n  name: victim\n  y: z\"\n  \"name\": other\n  namespace: ns\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  annotations:\n    a: 'x\n  name: victim\n  y: z'\n  \"name\": other\n  namespace: ns\n",
        ] {
            let parsed = crate::tree::from_yaml(body).unwrap();
            assert_eq!(parsed["metadata"]["name"], "other", "{body}");
            assert_eq!(quick_identity(body.as_bytes()), None, "{body}");
            let err = check_identity(&victim, body.as_bytes(), None).unwrap_err();
            assert!(err.contains("\"other\""), "{err}");
        }
    }

    #[test]
    fn the_canonical_reader_gives_what_the_parser_gives() {
        for body in [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: ns\ndata:\n  a: |\n    x\n\n    y\n",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  finalizers:\n  - a\n  name: sa\n  namespace: ns\nsecrets:\n- name: t\n",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  labels:\n    name: x\n  name: \"123\"\n",
            "apiVersion: 1\nkind: Namespace\nmetadata:\n  name: n\n",
            "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
        ] {
            // Canonical (the canonical reader reads it), or read by the general parser.
            let canonical = !body.starts_with("apiVersion: 1");
            assert_eq!(
                quick_identity(body.as_bytes()).is_some(),
                canonical,
                "{body}"
            );
            let fast = read_identity(body.as_bytes()).expect(body);
            let v = crate::tree::from_yaml(body).unwrap();
            let s = |v: &Value| v.as_str().map(str::to_owned);
            assert_eq!(fast.api_version, s(&v["apiVersion"]), "{body}");
            assert_eq!(fast.kind, s(&v["kind"]), "{body}");
            assert_eq!(fast.name, s(&v["metadata"]["name"]), "{body}");
            assert_eq!(fast.namespace, s(&v["metadata"]["namespace"]), "{body}");
        }
    }

    /// Lines of documents that are canonical or nearly so: identity keys at their places or
    /// not, quoted scalars that close or span lines, literal blocks, sequences, duplicates.
    fn line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let indent = prop_oneof![Just(""), Just("  "), Just("    "), Just("   ")];
        let key = prop_oneof![
            Just("apiVersion"),
            Just("kind"),
            Just("metadata"),
            Just("name"),
            Just("namespace"),
            Just("\"name\""),
            Just("labels"),
            Just("a"),
            Just("- name"),
            Just("-"),
        ];
        let value = prop_oneof![
            Just(""),
            Just(" v1"),
            Just(" victim"),
            Just(" other"),
            Just(" \"x"),
            Just(" y\""),
            Just(" 'x"),
            Just(" \"q\""),
            Just(" |"),
            Just(" 7"),
            Just(" {}"),
            Just(" [a]"),
            Just(" &x a"),
            Just(" *x"),
        ];
        (
            indent,
            key,
            prop_oneof![Just(":"), Just(""), Just(" :")],
            value,
        )
            .prop_map(|(i, k, c, v)| format!("{i}{k}{c}{v}\n"))
    }

    fn parsed_identity(v: &Value) -> Identity {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let meta = v.get("metadata");
        Identity {
            api_version: s(v.get("apiVersion")),
            kind: s(v.get("kind")),
            name: s(meta.and_then(|m| m.get("name"))),
            namespace: s(meta.and_then(|m| m.get("namespace"))),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Whatever the canonical reader claims is what the parser reads (when the parser
        /// reads the document at all), and `read_identity` is the parser's reading.
        #[test]
        fn the_identity_read_is_the_parsers(
            named: bool,
            head in proptest::collection::vec(line(), 0..4),
            lines in proptest::collection::vec(line(), 0..10),
        ) {
            let body = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n{}{}{}",
                if named { "  name: victim\n" } else { "" },
                head.concat(),
                lines.concat()
            );
            if let Ok(v) = crate::tree::from_yaml(&body) {
                let parsed = parsed_identity(&v);
                if let Some(fast) = quick_identity(body.as_bytes()) {
                    proptest::prop_assert_eq!(&fast, &parsed, "{}", body);
                }
                proptest::prop_assert_eq!(read_identity(body.as_bytes()), Some(parsed), "{}", body);
            }
        }
    }
}
