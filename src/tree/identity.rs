//! The identity an object file's body claims (apiVersion, kind, metadata.name and
//! metadata.namespace), and the check that it is the object its path names: a tree from a
//! store is untrusted, and a body that disagrees with its path would make `restore` create
//! another object than the plan shows.
//!
//! Pure code. The header of canonical YAML is read with a quick line scan; anything else falls
//! back to the YAML parser.

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

/// Reads the identity of an object file's body (`None`: not a YAML mapping).
pub fn read_identity(body: &[u8]) -> Option<Identity> {
    let text = std::str::from_utf8(body).ok()?;
    quick_scan(text).or_else(|| {
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

/// Canonical YAML: top-level keys unindented, metadata's children indented by two spaces,
/// plain or quoted scalars. `None` when the text does not look like that.
fn quick_scan(text: &str) -> Option<Identity> {
    let mut id = Identity::default();
    let mut in_meta = false;
    let mut seen_meta = false;
    // A key given twice is an error of the parser (duplicate keys), never "the last one wins".
    let set = |slot: &mut Option<String>, value: &str| -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(scalar(value)?);
        Some(())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("  ") {
            if in_meta && !rest.starts_with(' ') {
                let (key, value) = rest.split_once(':')?;
                match key {
                    "name" => set(&mut id.name, value)?,
                    "namespace" => set(&mut id.namespace, value)?,
                    _ => {}
                }
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('#') || line.starts_with('-') {
            return None;
        }
        let (key, value) = line.split_once(':')?;
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return None;
        }
        in_meta = key == "metadata";
        match key {
            "apiVersion" => set(&mut id.api_version, value)?,
            "kind" => set(&mut id.kind, value)?,
            "metadata" if !value.trim().is_empty() || seen_meta => return None,
            "metadata" => seen_meta = true,
            _ => {}
        }
    }
    // Anything missing: let the parser have the last word.
    (id.name.is_some() && id.api_version.is_some() && id.kind.is_some()).then_some(id)
}

/// A plain, double-quoted or single-quoted one-line scalar; `None` for anything else.
fn scalar(value: &str) -> Option<String> {
    let v = value.trim();
    if v.starts_with('"') {
        return serde_json::from_str::<String>(v).ok();
    }
    if let Some(inner) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Some(inner.replace("''", "'"));
    }
    if v.is_empty() || v.starts_with(['&', '*', '!', '|', '>', '{', '[']) || v.contains(" #") {
        return None;
    }
    Some(v.to_owned())
}

/// Checks that the body at `path` is the object the path names: same name, namespace (none for
/// cluster-scoped paths), apiVersion, and `kind` when known. The reason names the field.
pub fn check_identity(path: &ContentPath, body: &[u8], kind: Option<&str>) -> Result<(), String> {
    let id = read_identity(body).ok_or_else(|| "the body is not a YAML mapping".to_owned())?;
    let differs = |field: &str, body: Option<&str>, want: &str| {
        format!(
            "the body's {field} is {} but the path names {want:?}",
            body.map_or("missing".to_owned(), |b| format!("{b:?}"))
        )
    };
    if id.name.as_deref() != Some(path.name()) {
        return Err(differs("metadata.name", id.name.as_deref(), path.name()));
    }
    let namespace = id.namespace.as_deref().filter(|n| !n.is_empty());
    if namespace != path.namespace() {
        return Err(match path.namespace() {
            Some(ns) => differs("metadata.namespace", namespace, ns),
            None => format!(
                "the body's metadata.namespace is {:?} but the path names a cluster-scoped object",
                namespace.unwrap_or_default()
            ),
        });
    }
    let api_version = path.api_version();
    if id.api_version.as_deref() != Some(api_version.as_str()) {
        return Err(differs(
            "apiVersion",
            id.api_version.as_deref(),
            &api_version,
        ));
    }
    if let Some(kind) = kind
        && id.kind.as_deref() != Some(kind)
    {
        return Err(differs("kind", id.kind.as_deref(), kind));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> ContentPath {
        ContentPath::parse(p).unwrap()
    }

    #[test]
    fn a_key_given_twice_is_left_to_the_parser() {
        for body in [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: ns\nmetadata:\n  name: other\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  name: other\n",
            "apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata:\n  name: cm\n",
        ] {
            assert_eq!(quick_scan(body), None, "{body}");
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
}
