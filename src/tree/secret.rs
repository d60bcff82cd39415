//! Masking secret values for display (`plan --diff`, `diff`, `show`, `log --patch`): the
//! values of a Secret's `data` and `stringData`, and the user-named sealed fields of other
//! objects (`--encrypt-path`, recorded as `encryption.paths`: [`SealedFields`]); sealed values
//! are compared by fingerprint. Every annotation holding a copy of the object (such as
//! `kubectl.kubernetes.io/last-applied-configuration`, written by `kubectl apply`) has the
//! same fields masked inside the copy; a copy sealed whole is masked as one value.
//!
//! Owns only these pure transformations of JSON values; never used on what is stored or
//! restored, only on what is shown. Parsing the recorded paths is `crypt::SealedPath`'s.

use serde_json::{Map, Value};

/// What a masked value shows.
pub(crate) const MASK: &str = "***";

/// Whether the object is a Secret.
pub(crate) fn is_secret(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// A Secret's masked fields: every value of `data` and of `stringData`.
const SECRET_FIELDS: [&str; 2] = ["data", "stringData"];

/// User-named fields masked besides Secret values: the sealed paths (`--encrypt-path`) that
/// snapshots record, each naming a resource and the map keys leading to the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealedFields {
    entries: Vec<(String, String, Vec<String>)>,
}

impl SealedFields {
    /// Also masks the field at `fields` (map keys) of every object of `group`/`resource`
    /// (`group` `""` for the core group). An empty field path masks nothing.
    pub fn add(&mut self, group: &str, resource: &str, fields: Vec<String>) {
        if fields.is_empty() {
            return;
        }
        let entry = (group.to_owned(), resource.to_owned(), fields);
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// Whether no field is named.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The field paths masked in objects of `group`/`resource`.
    pub fn of(&self, group: &str, resource: &str) -> Vec<Vec<String>> {
        self.entries
            .iter()
            .filter(|(g, r, _)| g == group && r == resource)
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

/// Masks one Secret: every value of `data`/`stringData` becomes `***`, and so does every copy
/// of them in annotations. Other objects are left alone.
pub fn mask(v: &mut Value) {
    if is_secret(v) {
        mask_pair_labelled(v, &mut Value::Null, "", "", &[]);
    }
}

/// Masks two versions of an object for a diff: the values of a Secret (when either side is
/// one) and those at the field paths `extra` (the [`SealedFields`] of the objects' resource),
/// and their copies in annotations. Equal values show as `***`, values that differ as
/// `*** (<label_a>)` / `*** (<label_b>)`, so a diff tells which keys changed, never their
/// values.
pub(crate) fn mask_pair_fields(
    a: &mut Value,
    b: &mut Value,
    label_a: &str,
    label_b: &str,
    extra: &[Vec<String>],
) {
    mask_pair_labelled(a, b, label_a, label_b, extra);
}

/// Masks the Secret fields (when either side is a Secret) and the `extra` field paths of two
/// versions of an object, and the same fields in the copies of it in annotations.
fn mask_pair_labelled(
    a: &mut Value,
    b: &mut Value,
    label_a: &str,
    label_b: &str,
    extra: &[Vec<String>],
) {
    let mut paths: Vec<Vec<String>> = Vec::new();
    if is_secret(a) || is_secret(b) {
        paths.extend(SECRET_FIELDS.iter().map(|f| vec![(*f).to_owned()]));
    }
    paths.extend(extra.iter().filter(|p| !p.is_empty()).cloned());
    if paths.is_empty() {
        return;
    }
    mask_fields(a, b, label_a, label_b, &paths);
}

/// Masks the values at `paths` in both versions, then in their annotation copies.
fn mask_fields(a: &mut Value, b: &mut Value, label_a: &str, label_b: &str, paths: &[Vec<String>]) {
    for path in paths {
        let a_value = value_at(a, path).cloned();
        let b_value = value_at(b, path).cloned();
        mask_value(value_at_mut(a, path), b_value.as_ref(), label_a);
        mask_value(value_at_mut(b, path), a_value.as_ref(), label_b);
    }
    let a_ann = annotations(a).cloned();
    let b_ann = annotations(b).cloned();
    mask_annotations(a, b_ann.as_ref(), label_a, paths);
    mask_annotations(b, a_ann.as_ref(), label_b, paths);
}

/// The value at a path of map keys.
fn value_at<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn value_at_mut<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter()
        .try_fold(v, |v, k| v.as_object_mut()?.get_mut(k))
}

fn annotations(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata")?.get("annotations")?.as_object()
}

/// Masks a field's value: each value of a map (a Secret's `data`, `configmaps:data`), or the
/// value itself (a string, or anything else: a malformed `data` is hidden whole). `other` is
/// the other version's value of the field, to tell equal values from changed ones.
fn mask_value(field: Option<&mut Value>, other: Option<&Value>, label: &str) {
    let Some(value) = field else { return };
    match value.as_object_mut() {
        Some(m) => {
            for (k, v) in m.iter_mut() {
                let same = other
                    .and_then(|o| o.get(k))
                    .is_some_and(|o| same_value(o, v));
                *v = Value::String(masked(same, label));
            }
        }
        None => {
            let same = other.is_some_and(|o| same_value(o, value));
            *value = Value::String(masked(same, label));
        }
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

/// Annotations whose value is a JSON object holding one of the masked fields (a copy of the
/// object) get those masked inside the copy; the copy is re-serialized compactly. A copy that
/// was sealed whole (as snapshots seal them) is masked like a value.
fn mask_annotations(
    v: &mut Value,
    other: Option<&Map<String, Value>>,
    label: &str,
    paths: &[Vec<String>],
) {
    let Some(ann) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (k, value) in ann.iter_mut() {
        let Some(text) = value.as_str() else { continue };
        if super::sealed::is_sealed(text) {
            // A copy sealed whole: masked as a value (changed or not, by fingerprint).
            let same = other
                .and_then(|o| o.get(k))
                .is_some_and(|o| same_value(o, value));
            *value = Value::String(masked(same, label));
            continue;
        }
        let holds_copy = paths
            .iter()
            .filter_map(|p| p.first())
            .any(|f| text.contains(&format!("\"{f}\"")));
        if !holds_copy {
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
        for path in paths {
            mask_value(
                value_at_mut(&mut copy, path),
                value_at(&other_copy, path),
                label,
            );
        }
        // Nested copies inside the copy (an annotation of the copied object).
        mask_annotations(&mut copy, annotations(&other_copy), label, paths);
        *value = Value::String(copy.to_string());
    }
}

/// Masks the Secret in an object file's YAML text for display; the text unchanged when it is
/// not a Secret or does not parse (then nothing of it is shown if it looks like a Secret).
pub fn mask_yaml(text: &str) -> String {
    mask_yaml_fields(text, &[])
}

/// [`mask_yaml`], also masking the field paths `extra` (the [`SealedFields`] of the object's
/// resource): a text with such fields that does not parse is not shown.
pub fn mask_yaml_fields(text: &str, extra: &[Vec<String>]) -> String {
    mask_yaml_pair_fields(text, "", "", "", extra).0
}

/// `mask_pair_fields` of a Secret on two YAML texts, re-emitted as canonical YAML.
pub fn mask_yaml_pair(a: &str, b: &str, label_a: &str, label_b: &str) -> (String, String) {
    mask_yaml_pair_fields(a, b, label_a, label_b, &[])
}

/// [`mask_yaml_pair`], also masking the field paths `extra` (the [`SealedFields`] of either
/// version's resource) in both texts: a value that differs shows as `*** (<label>)`, equal
/// ones (or sealed ones of the same fingerprint) as `***`. Texts in which nothing is masked
/// are returned as they are.
pub fn mask_yaml_pair_fields(
    a: &str,
    b: &str,
    label_a: &str,
    label_b: &str,
    extra: &[Vec<String>],
) -> (String, String) {
    let parse = |t: &str| {
        if t.is_empty() {
            Some(Value::Null)
        } else {
            super::from_yaml(t).ok()
        }
    };
    let (Some(mut va), Some(mut vb)) = (parse(a), parse(b)) else {
        let hide = |t: &str| {
            if t.contains("kind: Secret") {
                format!("# a Secret that does not parse: not shown ({MASK})\n")
            } else if !extra.is_empty() && !t.is_empty() {
                format!("# an object with sealed fields that does not parse: not shown ({MASK})\n")
            } else {
                t.to_owned()
            }
        };
        return (hide(a), hide(b));
    };
    if !(is_secret(&va) || is_secret(&vb)) && extra.is_empty() {
        return (a.to_owned(), b.to_owned());
    }
    let (before_a, before_b) = (va.clone(), vb.clone());
    mask_pair_labelled(&mut va, &mut vb, label_a, label_b, extra);
    let emit = |v: &Value, before: &Value, original: &str| {
        if v.is_null() || v == before {
            original.to_owned()
        } else {
            super::to_yaml(v).unwrap_or_else(|_| format!("{MASK}\n"))
        }
    };
    (emit(&va, &before_a, a), emit(&vb, &before_b, b))
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
        mask_pair_fields(&mut a, &mut b, "s1", "s2", &[]);
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
        mask_pair_fields(&mut a, &mut b, "s1", "s2", &[]);
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

    fn fields(paths: &[&str]) -> Vec<Vec<String>> {
        paths
            .iter()
            .map(|p| p.split('.').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn sealed_fields_are_named_by_resource() {
        let mut f = SealedFields::default();
        assert!(f.is_empty());
        f.add("", "configmaps", vec!["data".into(), "token".into()]);
        f.add("", "configmaps", vec!["data".into(), "token".into()]);
        f.add(
            "example.com",
            "widgets",
            vec!["spec".into(), "password".into()],
        );
        f.add("", "configmaps", Vec::new());
        assert!(!f.is_empty());
        assert_eq!(f.of("", "configmaps"), fields(&["data.token"]));
        assert_eq!(f.of("example.com", "widgets"), fields(&["spec.password"]));
        assert!(f.of("", "widgets").is_empty());
        assert!(f.of("example.com", "configmaps").is_empty());
    }

    #[test]
    fn sealed_fields_of_other_objects_show_which_changed() {
        let a = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  mode: readable\n  token: k8s-snap:v2:0123456789abcdef:fp1:AAAA\n  same: k8s-snap:v2:0123456789abcdef:fp9:EEEE\n";
        let b = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  mode: readable\n  token: k8s-snap:v2:0123456789abcdef:fp2:BBBB\n  same: k8s-snap:v2:fedcba9876543210:fp9:FFFF\n";
        // Without sealed fields a ConfigMap is shown as it is.
        assert_eq!(
            mask_yaml_pair(a, b, "s1", "s2"),
            (a.to_owned(), b.to_owned())
        );
        let (ma, mb) = mask_yaml_pair_fields(a, b, "s1", "s2", &fields(&["data.token"]));
        for text in [&ma, &mb] {
            assert!(!text.contains("AAAA") && !text.contains("BBBB"), "{text}");
            assert!(text.contains("mode: readable"), "other keys stay: {text}");
        }
        // Not a sealed path: shown as stored.
        assert!(ma.contains("EEEE") && mb.contains("FFFF"), "{ma}{mb}");
        let value = |t: &str| tree_value(t)["data"]["token"].clone();
        assert_eq!(value(&ma), "*** (s1)");
        assert_eq!(value(&mb), "*** (s2)");
        // A whole map named: each of its values, equal ones (the same fingerprint, re-sealed
        // under another key) as ***.
        let (ma, mb) = mask_yaml_pair_fields(a, b, "s1", "s2", &fields(&["data"]));
        let (va, vb) = (tree_value(&ma), tree_value(&mb));
        assert_eq!(va["data"]["same"], "***");
        assert_eq!(va["data"]["mode"], "***");
        assert_eq!(va["data"]["token"], "*** (s1)");
        assert_eq!(vb["data"]["token"], "*** (s2)");
        // Unchanged: no label; shown alone (`show`): no label either.
        let (ma, mb) = mask_yaml_pair_fields(a, a, "s1", "s2", &fields(&["data.token"]));
        assert_eq!(ma, mb);
        assert_eq!(value(&ma), "***");
        assert_eq!(value(&mask_yaml_fields(a, &fields(&["data.token"]))), "***");
    }

    fn tree_value(text: &str) -> Value {
        super::super::from_yaml(text).unwrap()
    }

    #[test]
    fn sealed_fields_added_removed_or_absent() {
        let with = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  token: plain-token-value\n";
        let without = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  mode: x\n";
        let f = fields(&["data.token"]);
        // Added (or in a snapshot taken before the path was sealed: plaintext): still masked.
        let (ma, mb) = mask_yaml_pair_fields(without, with, "s1", "s2", &f);
        assert_eq!(ma, without, "nothing to mask: the text as stored");
        assert!(!mb.contains("plain-token-value"), "{mb}");
        assert_eq!(tree_value(&mb)["data"]["token"], "*** (s2)");
        // A new object (no old text) and a removed one.
        let (ma, mb) = mask_yaml_pair_fields("", with, "s1", "s2", &f);
        assert_eq!(ma, "");
        assert!(!mb.contains("plain-token-value"), "{mb}");
        let (ma, _) = mask_yaml_pair_fields(with, "", "s1", "s2", &f);
        assert!(!ma.contains("plain-token-value"), "{ma}");
        // A string where a map was expected, a map under the path: hidden.
        let odd =
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata: plain-data-string\n";
        let out = mask_yaml_fields(odd, &fields(&["data"]));
        assert!(!out.contains("plain-data-string"), "{out}");
        let nested = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  token:\n    inner: nested-plain\n";
        let out = mask_yaml_fields(nested, &f);
        assert!(!out.contains("nested-plain"), "{out}");
        // Does not parse: not shown at all.
        let bad = "kind: ConfigMap\ndata: [unclosed-token\n";
        let out = mask_yaml_fields(bad, &f);
        assert!(!out.contains("unclosed-token"), "{out}");
        assert_eq!(mask_yaml(bad), bad, "no sealed fields: shown as it is");
    }

    #[test]
    fn sealed_fields_in_last_applied_copies_are_masked() {
        let copy = |token: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                "data": {"token": token, "mode": "m"}})
            .to_string()
        };
        let object = |token: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": copy(token),
                    "note": "plain note"}},
                "data": {"token": "k8s-snap:v2:0123456789abcdef:fp1:AAAA", "mode": "m"}})
        };
        let (mut a, mut b) = (object("old-plain-token"), object("new-plain-token"));
        mask_pair_labelled(&mut a, &mut b, "s1", "s2", &fields(&["data.token"]));
        let (ta, tb) = (a.to_string(), b.to_string());
        for t in [&ta, &tb] {
            assert!(!t.contains("plain-token") && !t.contains("AAAA"), "{t}");
            assert!(t.contains("plain note"), "{t}");
        }
        let inner = |v: &Value| -> Value {
            let text =
                v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(inner(&a)["data"]["token"], "*** (s1)");
        assert_eq!(inner(&b)["data"]["token"], "*** (s2)");
        assert_eq!(inner(&a)["data"]["mode"], "m");
        assert_eq!(a["data"]["token"], "***", "same fingerprint: unchanged");
    }

    #[test]
    fn copies_sealed_whole_are_masked_as_values() {
        let object = |kind: &str, copy: &str| {
            json!({"kind": kind, "metadata": {"name": "x", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": copy, "note": "n"}},
                "data": {"token": "k8s-snap:v2:0123456789abcdef:fp1:AAAA"}})
        };
        let f = fields(&["data.token"]);
        let last = |v: &Value| {
            v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].clone()
        };
        for kind in ["ConfigMap", "Secret"] {
            let extra: &[Vec<String>] = if kind == "Secret" { &[] } else { &f };
            let (mut a, mut b) = (
                object(kind, "k8s-snap:v2:0123456789abcdef:fpA:CCCC"),
                object(kind, "k8s-snap:v2:0123456789abcdef:fpB:DDDD"),
            );
            mask_pair_labelled(&mut a, &mut b, "s1", "s2", extra);
            assert_eq!(last(&a), "*** (s1)", "{kind}");
            assert_eq!(last(&b), "*** (s2)", "{kind}");
            assert_eq!(a["metadata"]["annotations"]["note"], "n");
            // Re-sealed, the same fingerprint: unchanged.
            let (mut a, mut b) = (
                object(kind, "k8s-snap:v2:0123456789abcdef:fpA:CCCC"),
                object(kind, "k8s-snap:v2:fedcba9876543210:fpA:EEEE"),
            );
            mask_pair_labelled(&mut a, &mut b, "s1", "s2", extra);
            assert_eq!(last(&a), "***", "{kind}");
            assert_eq!(last(&b), "***", "{kind}");
        }
        // Nothing masked in an object without masked fields.
        let mut plain = object("ConfigMap", "k8s-snap:v2:0123456789abcdef:fpA:CCCC");
        mask_pair_labelled(&mut plain, &mut Value::Null, "", "", &[]);
        assert_eq!(last(&plain), "k8s-snap:v2:0123456789abcdef:fpA:CCCC");
    }

    proptest::proptest! {
        /// Whatever the values at a sealed path, neither side's value is ever shown, and a
        /// value is labelled exactly when the two differ.
        #[test]
        fn sealed_field_values_never_show(
            x in "[a-zA-Z0-9+/=]{12,40}",
            y in "[a-zA-Z0-9+/=]{12,40}",
            path in proptest::sample::select(vec!["data.token", "data", "spec.credentials.password"]),
        ) {
            let f = fields(&[path]);
            let build = |v: &str| {
                let mut o = json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}});
                let mut at = &mut o;
                for k in &f[0] {
                    at = at.as_object_mut().unwrap().entry(k.clone()).or_insert(json!({}));
                }
                *at = json!({"k": v});
                super::super::to_yaml(&o).unwrap()
            };
            let (a, b) = (build(&x), build(&y));
            let (ma, mb) = mask_yaml_pair_fields(&a, &b, "s1", "s2", &f);
            for t in [&ma, &mb] {
                proptest::prop_assert!(!t.contains(&x) && !t.contains(&y), "{}", t);
            }
            proptest::prop_assert_eq!(ma.contains("(s1)"), x != y);
            proptest::prop_assert_eq!(mb.contains("(s2)"), x != y);
        }
    }
}
