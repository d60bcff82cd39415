//! Masking Secret values for display (`plan --diff`, `diff`, `show`): the values of `data` and
//! `stringData` (sealed values compared by fingerprint), and every annotation holding a copy of the object (such as
//! `kubectl.kubernetes.io/last-applied-configuration`, written by `kubectl apply`), whose own
//! `data`/`stringData` values are masked the same way.
//!
//! Owns only these pure transformations of JSON values; never used on what is stored or
//! restored, only on what is shown.

use serde_json::{Map, Value};

/// What a masked value shows.
pub(crate) const MASK: &str = "***";

/// Whether the object is a Secret.
pub(crate) fn is_secret(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// Masks one Secret: every value of `data`/`stringData` becomes `***`, and so does every copy
/// of them in annotations. Other objects are left alone.
pub fn mask(v: &mut Value) {
    if is_secret(v) {
        mask_pair_labelled(v, &mut Value::Null, "", "");
    }
}

/// Masks two versions of a Secret for a diff: equal values show as `***`, values that differ
/// as `*** (<label_a>)` / `*** (<label_b>)`, so a diff tells which keys changed, never their
/// values. Applied when either side is a Secret.
pub(crate) fn mask_pair(a: &mut Value, b: &mut Value, label_a: &str, label_b: &str) {
    if is_secret(a) || is_secret(b) {
        mask_pair_labelled(a, b, label_a, label_b);
    }
}

fn mask_pair_labelled(a: &mut Value, b: &mut Value, label_a: &str, label_b: &str) {
    for field in ["data", "stringData"] {
        let a_map = a.get(field).and_then(Value::as_object).cloned();
        let b_map = b.get(field).and_then(Value::as_object).cloned();
        mask_map(a.get_mut(field), b_map.as_ref(), label_a);
        mask_map(b.get_mut(field), a_map.as_ref(), label_b);
    }
    let a_ann = annotations(a).cloned();
    let b_ann = annotations(b).cloned();
    mask_annotations(a, b_ann.as_ref(), label_a);
    mask_annotations(b, a_ann.as_ref(), label_b);
}

fn annotations(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata")?.get("annotations")?.as_object()
}

fn mask_map(field: Option<&mut Value>, other: Option<&Map<String, Value>>, label: &str) {
    let Some(map) = field else { return };
    match map.as_object_mut() {
        Some(m) => {
            for (k, v) in m.iter_mut() {
                let same = other
                    .and_then(|o| o.get(k))
                    .is_some_and(|o| same_value(o, v));
                *v = Value::String(masked(same, label));
            }
        }
        // Not a map (malformed): hide it whole.
        None => *map = Value::String(MASK.into()),
    }
}

/// Equal values, or sealed values with the same fingerprint (the same plaintext even when
/// re-encrypted, as after `rekey`).
fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a.as_str(), b.as_str()) {
        (Some(x), Some(y)) => matches!(
            (super::sealed::sealed_fingerprint(x), super::sealed::sealed_fingerprint(y)),
            (Some(fx), Some(fy)) if fx == fy
        ),
        _ => false,
    }
}

fn masked(same: bool, label: &str) -> String {
    if same || label.is_empty() {
        MASK.to_owned()
    } else {
        format!("{MASK} ({label})")
    }
}

/// Annotations whose value is a JSON object with `data` or `stringData` (a copy of the
/// Secret) get those masked inside the copy; the copy is re-serialized compactly.
fn mask_annotations(v: &mut Value, other: Option<&Map<String, Value>>, label: &str) {
    let Some(ann) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (k, value) in ann.iter_mut() {
        let Some(text) = value.as_str() else { continue };
        if !(text.contains("\"data\"") || text.contains("\"stringData\"")) {
            continue;
        }
        let Ok(mut copy) = serde_json::from_str::<Value>(text) else {
            // Looks like a copy but does not parse: show nothing of it.
            *value = Value::String(MASK.into());
            continue;
        };
        let other_copy = other
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null);
        for field in ["data", "stringData"] {
            let o = other_copy.get(field).and_then(Value::as_object).cloned();
            mask_map(copy.get_mut(field), o.as_ref(), label);
        }
        // Nested copies inside the copy (an annotation of the copied object).
        mask_annotations(&mut copy, annotations(&other_copy), label);
        *value = Value::String(copy.to_string());
    }
}

/// Masks the Secret in an object file's YAML text for display; the text unchanged when it is
/// not a Secret or does not parse (then nothing of it is shown if it looks like a Secret).
pub fn mask_yaml(text: &str) -> String {
    mask_yaml_pair(text, "", "", "").0
}

/// [`mask_pair`] on two YAML texts, re-emitted as canonical YAML.
pub fn mask_yaml_pair(a: &str, b: &str, label_a: &str, label_b: &str) -> (String, String) {
    let parse = |t: &str| {
        if t.is_empty() {
            Some(Value::Null)
        } else {
            super::from_yaml(t).ok()
        }
    };
    let (Some(mut va), Some(mut vb)) = (parse(a), parse(b)) else {
        let looks = |t: &str| t.contains("kind: Secret");
        let hide = |t: &str| {
            if looks(t) {
                format!("# a Secret that does not parse: not shown ({MASK})\n")
            } else {
                t.to_owned()
            }
        };
        return (hide(a), hide(b));
    };
    if !(is_secret(&va) || is_secret(&vb)) {
        return (a.to_owned(), b.to_owned());
    }
    mask_pair_labelled(&mut va, &mut vb, label_a, label_b);
    let emit = |v: &Value, original: &str| {
        if v.is_null() {
            original.to_owned()
        } else {
            super::to_yaml(v).unwrap_or_else(|_| format!("{MASK}\n"))
        }
    };
    (emit(&va, a), emit(&vb, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn last_applied_copies_are_masked() {
        let last = json!({"apiVersion": "v1", "kind": "Secret", "data": {"password": "c2VjcmV0"}, "metadata": {"name": "s"}}).to_string();
        let mut v = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": last,
                "note": "plain"}},
            "data": {"password": "c2VjcmV0"},
            "stringData": {"token": "plain-token"},
        });
        mask(&mut v);
        let text = v.to_string();
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("plain-token"),
            "{text}"
        );
        assert!(text.contains("plain"), "other annotations stay: {text}");
        assert!(text.contains("password"), "keys stay: {text}");
    }

    #[test]
    fn pairs_show_which_keys_changed() {
        let mut a = json!({"kind": "Secret", "data": {"x": "MQ==", "y": "Mg=="}});
        let mut b = json!({"kind": "Secret", "data": {"x": "MQ==", "y": "Mw=="}});
        mask_pair(&mut a, &mut b, "s1", "s2");
        assert_eq!(a["data"]["x"], "***");
        assert_eq!(a["data"]["y"], "*** (s1)");
        assert_eq!(b["data"]["y"], "*** (s2)");
        let mut c = json!({"kind": "ConfigMap", "data": {"x": "1"}});
        mask(&mut c);
        assert_eq!(c["data"]["x"], "1");
    }

    #[test]
    fn sealed_values_compare_by_fingerprint() {
        let mut a = json!({"kind": "Secret", "data": {"x": "k8s-snap:age:v1:fp1:AAAA", "y": "k8s-snap:age:v1:fp2:BBBB"}});
        let mut b = json!({"kind": "Secret", "data": {"x": "k8s-snap:age:v1:fp1:CCCC", "y": "k8s-snap:age:v1:fp3:DDDD"}});
        mask_pair(&mut a, &mut b, "s1", "s2");
        assert_eq!(a["data"]["x"], "***");
        assert_eq!(a["data"]["y"], "*** (s1)");
        assert_eq!(b["data"]["y"], "*** (s2)");
    }

    #[test]
    fn yaml_texts_are_masked() {
        let a = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  k: dmFsdWU=\n";
        let (ma, mb) = mask_yaml_pair(a, "", "a", "b");
        assert!(!ma.contains("dmFsdWU="), "{ma}");
        assert_eq!(mb, "");
        assert!(!mask_yaml(a).contains("dmFsdWU="));
        let bad = "kind: Secret\ndata: [unclosed\n";
        assert!(!mask_yaml(bad).contains("unclosed"));
    }
}
