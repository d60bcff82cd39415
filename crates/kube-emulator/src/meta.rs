//! `metadata` validation as kube-apiserver's `ValidateObjectMeta` does it for every write:
//! the name (and `generateName`) by the rule of the object's kind (a DNS-1123 subdomain for
//! most kinds and custom resources, a DNS-1123 label for Namespaces, a DNS-1035 label for
//! Services, a path segment for RBAC and flow-control objects, at most 52 characters for a
//! CronJob), and label keys and values and annotation keys and total size on creates and
//! updates alike, with the texts a real server answers in its 422 (they changed in v1.20:
//! "a DNS-1123 subdomain" became "a lowercase RFC 1123 subdomain").
//!
//! Owns: these rules. Must not touch: the store, object contents beyond `metadata`.

use serde_json::{Map, Value};

use crate::catalog::ResourceDef;
use crate::schema::Cause;

/// The most bytes of all annotation keys and values together (`TotalAnnotationSizeLimitB`).
const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// How an object's name is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

fn name_rule(def: &ResourceDef) -> NameRule {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) | ("flowcontrol.apiserver.k8s.io", _) => {
            NameRule::PathSegment
        }
        _ => NameRule::Subdomain,
    }
}

/// The error texts of one server release.
struct Texts {
    subdomain: &'static str,
    label: &'static str,
}

fn texts(minor: u32) -> Texts {
    if minor < 20 {
        Texts {
            subdomain: "a DNS-1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            label: "a DNS-1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        }
    } else {
        Texts {
            subdomain: "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            label: "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        }
    }
}

const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// apimachinery's `RegexError`: the message, examples, and the pattern.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = msg.to_string();
    if !examples.is_empty() {
        let quoted: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
        s.push_str(&format!(" (e.g. {}, ", quoted.join(",  or ")));
    } else {
        s.push_str(" (");
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_label)
}

fn is_dns1035(s: &str) -> bool {
    is_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b.iter().all(ok)
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `IsDNS1123Subdomain`.
fn subdomain_errors(s: &str, t: &Texts) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len(253));
    }
    if !is_subdomain(s) {
        errs.push(regex_error(t.subdomain, SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// `IsDNS1123Label`.
fn label_errors(s: &str, t: &Texts) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !is_label(s) {
        errs.push(regex_error(t.label, LABEL_FMT, &["my-name", "123-abc"]));
    }
    errs
}

/// `IsDNS1035Label`.
fn dns1035_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !is_dns1035(s) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `path.IsValidPathSegmentName`.
fn path_segment_errors(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if s.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// `IsQualifiedName` (label and annotation keys).
fn qualified_name_errors(s: &str, t: &Texts) -> Vec<String> {
    let parts: Vec<&str> = s.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    subdomain_errors(prefix, t)
                        .into_iter()
                        .map(|e| format!("prefix part {e}")),
                );
            }
            name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_MSG, QUALIFIED_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len(63)));
    }
    if !is_qualified_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_MSG,
                QUALIFIED_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsQualifiedName` in the texts of a server of minor version `minor`.
pub(crate) fn qualified_name_errors_for(s: &str, minor: u32) -> Vec<String> {
    qualified_name_errors(s, &texts(minor))
}

/// `IsValidLabelValue`.
fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A Go-quoted string, as `field.Invalid` prints string values.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn invalid(field: &str, value: &str, detail: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.to_string(),
        message: format!("Invalid value: {}: {detail}", quoted(value)),
    }
}

/// The name errors of `name` (a `generateName` prefix when `prefix`: its trailing `-` is
/// allowed), as the kind's name function returns them.
fn name_errors(def: &ResourceDef, name: &str, prefix: bool, t: &Texts) -> Vec<String> {
    let masked;
    let name = if prefix && name.ends_with('-') {
        masked = format!("{}a", &name[..name.len() - 1]);
        masked.as_str()
    } else {
        name
    };
    match name_rule(def) {
        NameRule::Subdomain => subdomain_errors(name, t),
        NameRule::Label => label_errors(name, t),
        NameRule::Dns1035 => dns1035_errors(name),
        NameRule::PathSegment => path_segment_errors(name),
    }
}

/// The causes of a create's 422 for `metadata` (the name already generated from
/// `generateName`), for a server of minor version `minor`.
pub(crate) fn check_create(def: &ResourceDef, body: &Value, minor: u32) -> Vec<Cause> {
    let t = texts(minor);
    let empty = Map::new();
    let m = body
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut causes = Vec::new();
    if let Some(g) = m.get("generateName").and_then(Value::as_str)
        && !g.is_empty()
    {
        for e in name_errors(def, g, true, &t) {
            causes.push(invalid("metadata.generateName", g, e));
        }
    }
    let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
    for e in name_errors(def, name, false, &t) {
        causes.push(invalid("metadata.name", name, e));
    }
    if (def.group.as_str(), def.plural.as_str()) == ("batch", "cronjobs") && name.len() > 52 {
        causes.push(invalid("metadata.name", name, max_len(52)));
    }
    causes.extend(check_labels_and_annotations(m, &t));
    causes
}

/// The causes of an update's 422 for `metadata` (labels and annotations; the name cannot
/// change).
pub(crate) fn check_update(body: &Value, minor: u32) -> Vec<Cause> {
    let empty = Map::new();
    let m = body
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    check_labels_and_annotations(m, &texts(minor))
}

fn check_labels_and_annotations(m: &Map<String, Value>, t: &Texts) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(labels) = m.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for e in qualified_name_errors(k, t) {
                causes.push(invalid("metadata.labels", k, e));
            }
            let v = v.as_str().unwrap_or_default();
            for e in label_value_errors(v) {
                causes.push(invalid("metadata.labels", v, e));
            }
        }
    }
    if let Some(annotations) = m.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in annotations {
            for e in qualified_name_errors(&k.to_lowercase(), t) {
                causes.push(invalid("metadata.annotations", k, e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_LIMIT {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!("Too long: must have at most {ANNOTATIONS_LIMIT} bytes"),
            });
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(group: &str, plural: &str) -> ResourceDef {
        crate::catalog::builtins()
            .into_iter()
            .find(|d| d.group == group && d.plural == plural)
            .unwrap()
    }

    #[test]
    fn names_follow_the_rule_of_their_kind() {
        let cm = def("", "configmaps");
        let t = texts(25);
        assert!(name_errors(&cm, "a.b-c", false, &t).is_empty());
        assert_eq!(name_errors(&cm, "A", false, &t).len(), 1);
        assert_eq!(name_errors(&cm, &"a".repeat(254), false, &t).len(), 1);
        assert!(name_errors(&cm, "web-", true, &t).is_empty());
        assert_eq!(name_errors(&cm, "web-", false, &t).len(), 1);
        let ns = def("", "namespaces");
        assert_eq!(name_errors(&ns, "a.b", false, &t).len(), 1);
        assert_eq!(name_errors(&ns, &"a".repeat(64), false, &t).len(), 1);
        let svc = def("", "services");
        assert_eq!(name_errors(&svc, "1abc", false, &t).len(), 1);
        assert!(name_errors(&svc, "abc-1", false, &t).is_empty());
        let role = def("rbac.authorization.k8s.io", "clusterroles");
        assert!(name_errors(&role, "system:controller:x", false, &t).is_empty());
        assert_eq!(name_errors(&role, "a/b%c", false, &t).len(), 2);
        assert_eq!(name_errors(&role, "..", false, &t), ["may not be '..'"]);
    }

    #[test]
    fn messages_are_the_servers_of_each_release() {
        let cm = def("", "configmaps");
        let new = check_create(&cm, &serde_json::json!({"metadata": {"name": "Web"}}), 22);
        assert_eq!(
            new[0].text(),
            "metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let old = check_create(&cm, &serde_json::json!({"metadata": {"name": "Web"}}), 19);
        assert!(
            old[0].message.contains(": a DNS-1123 subdomain must"),
            "{old:?}"
        );
    }

    #[test]
    fn labels_and_annotations_are_checked() {
        let long = "v".repeat(64);
        let body = serde_json::json!({"metadata": {
            "labels": {"ok": "", "app.kubernetes.io/name": "x_y.z", "bad key": "v", "k": long},
            "annotations": {"Example.COM/Key": "any value at all", "/x": ""}
        }});
        let causes = check_update(&body, 25);
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        assert_eq!(causes.len(), 3, "{texts:#?}");
        assert!(texts[0].starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters"), "{texts:#?}");
        assert_eq!(
            texts[1],
            format!(
                "metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters"
            )
        );
        assert_eq!(
            texts[2],
            "metadata.annotations: Invalid value: \"/x\": prefix part must be non-empty"
        );
        let big =
            serde_json::json!({"metadata": {"annotations": {"a": "x".repeat(ANNOTATIONS_LIMIT)}}});
        assert_eq!(
            check_update(&big, 19)[0].text(),
            "metadata.annotations: Too long: must have at most 262144 bytes"
        );
    }
}
