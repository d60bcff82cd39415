//! OpenAPI v3 schemas of CustomResourceDefinitions, checked the way kube-apiserver's
//! apiextensions code checks them: the CRD's own schemas (structural rules, every `default`
//! valid against its own schema) and every custom resource written (unknown fields pruned,
//! defaults applied, then validated), with the causes a real server reports in its 422.
//!
//! Messages follow the real server's shapes: `field.Error` bodies (`Invalid value: "null":
//! status.reason in body must be of type string: "null"`, `Required value`, `Unsupported
//! value: ...`) over go-openapi's texts, and field paths as the real server prints them
//! (`spec.validation.openAPIV3Schema.properties[spec].properties[x].default` for a CRD whose
//! versions share one schema, `status.items.0.name` inside a custom resource).
//!
//! Owns: schema interpretation. Must not touch: the store, the catalogue (pure functions).

use serde_json::{Map, Value};

/// One cause of a 422 (`details.causes[]` of the Status).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueForbidden`,
    /// `FieldValueTooLong`.
    pub reason: &'static str,
    pub field: String,
    /// The error body without the field (`Invalid value: "null": ...`).
    pub message: String,
}

impl Cause {
    pub(crate) fn invalid(field: &str, value: &str, detail: String) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub(crate) fn required(field: &str, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.to_string(),
            message,
        }
    }

    pub(crate) fn forbidden(field: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.to_string(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// `field: message`, as in the Status message.
    pub fn text(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Behaviours that differ between server releases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Quirks {
    /// kube-apiserver v1.19 reads a CRD schema's `default: ""` as `null`, so such a default
    /// fails validation unless the field is nullable (recorded from a real v1.19.0 server).
    pub empty_string_default_is_null: bool,
}

/// go-openapi's name of a JSON value's type.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as Go's `field.Invalid` prints it: strings quoted, numbers and booleans bare.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".into(),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        Value::Array(_) | Value::Object(_) => {
            let s = v.to_string();
            let cut: String = s.chars().take(80).collect();
            format!("{cut:?}")
        }
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}.{child}")
    }
}

// ---------------------------------------------------------------------------------------------
// Custom resources: prune, default, validate.

/// Drops fields the schema does not specify (where it prunes), like the real server before
/// it stores a custom resource. `root` keeps `apiVersion`, `kind` and `metadata`.
pub(crate) fn prune(schema: &Value, value: &mut Value, root: bool) {
    if flag(schema, "x-kubernetes-preserve-unknown-fields") && schema.get("properties").is_none() {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(&k)) {
                    if let Some(v) = map.get_mut(&k) {
                        prune(sub, v, false);
                    }
                } else if let Some(add) = additional.filter(|a| a.is_object()) {
                    if let Some(v) = map.get_mut(&k) {
                        prune(add, v, false);
                    }
                } else if !(preserve || additional.and_then(Value::as_bool) == Some(true)) {
                    map.remove(&k);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for it in items {
                    prune(item_schema, it, false);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the `default` of every specified object field that is absent.
pub(crate) fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    match map.get_mut(k) {
                        Some(v) => apply_defaults(sub, v),
                        None => {
                            if let Some(d) = sub.get("default") {
                                let mut d = d.clone();
                                apply_defaults(sub, &mut d);
                                map.insert(k.clone(), d);
                            }
                        }
                    }
                }
            }
            if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let props = schema.get("properties").and_then(Value::as_object);
                for (k, v) in map.iter_mut() {
                    if props.is_none_or(|p| !p.contains_key(k)) {
                        apply_defaults(add, v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for it in items {
                    apply_defaults(item_schema, it);
                }
            }
        }
        _ => {}
    }
}

fn type_error(field: &str, name: &str, want: &str, value: &Value) -> Cause {
    let actual = type_name(value);
    let detail = if name.is_empty() {
        format!("in body must be of type {want}: \"{actual}\"")
    } else {
        format!("{name} in body must be of type {want}: \"{actual}\"")
    };
    Cause::invalid(field, &format!("\"{actual}\""), detail)
}

fn body_name(name: &str) -> String {
    if name.is_empty() {
        "in body".to_string()
    } else {
        format!("{name} in body")
    }
}

/// Validates `value` against `schema`; `name` is go-openapi's dotted name of the value
/// (`status.reason`), `field` the field path a cause is reported at.
fn validate_at(schema: &Value, value: &Value, name: &str, field: &str, out: &mut Vec<Cause>) {
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    if value.is_null() {
        if !flag(schema, "nullable") && !ty.is_empty() {
            out.push(type_error(field, name, ty, value));
        }
        return;
    }
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            out.push(type_error(field, name, "integer-or-string", value));
            return;
        }
    } else if !ty.is_empty() {
        let ok = match ty {
            "integer" => {
                type_name(value) == "integer"
                    || value
                        .as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
            }
            "number" => value.is_number(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => true,
        };
        if !ok {
            out.push(type_error(field, name, ty, value));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(go_value).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
        });
    }
    match value {
        Value::String(s) => validate_string(schema, s, value, name, field, out),
        Value::Number(_) => validate_number(schema, value, name, field, out),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                out.push(Cause {
                    reason: "FieldValueTooMany",
                    field: field.to_string(),
                    message: format!("Too many: {len}: must have at most {max} items"),
                });
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                out.push(Cause::invalid(
                    field,
                    &go_value(value),
                    format!("{} should have at least {min} items", body_name(name)),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    let n = join(name, &i.to_string());
                    validate_at(item_schema, it, &n, &n, out);
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, name, out),
        _ => {}
    }
}

fn validate_string(
    schema: &Value,
    s: &str,
    value: &Value,
    name: &str,
    field: &str,
    out: &mut Vec<Cause>,
) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        out.push(Cause {
            reason: "FieldValueTooLong",
            field: field.to_string(),
            message: format!("Too long: may not be longer than {max}"),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        out.push(Cause::invalid(
            field,
            &go_value(value),
            format!("{} should be at least {min} chars long", body_name(name)),
        ));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(p)
        && !re.is_match(s)
    {
        out.push(Cause::invalid(
            field,
            &go_value(value),
            format!("{} should match '{p}'", body_name(name)),
        ));
    }
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    let format_ok = match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        _ => true,
    };
    if !format_ok {
        out.push(Cause::invalid(
            field,
            &go_value(value),
            format!("{} must be of type {format}: {s:?}", body_name(name)),
        ));
    }
}

fn validate_number(schema: &Value, value: &Value, name: &str, field: &str, out: &mut Vec<Cause>) {
    let Some(x) = value.as_f64() else { return };
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let exclusive = |key: &str| flag(schema, key);
    let shown = |b: f64| {
        if b.fract() == 0.0 {
            format!("{}", b as i64)
        } else {
            b.to_string()
        }
    };
    if let Some(min) = bound("minimum") {
        let bad = if exclusive("exclusiveMinimum") {
            x <= min
        } else {
            x < min
        };
        if bad {
            let rel = if exclusive("exclusiveMinimum") {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(Cause::invalid(
                field,
                &go_value(value),
                format!("{} should be {rel} {}", body_name(name), shown(min)),
            ));
        }
    }
    if let Some(max) = bound("maximum") {
        let bad = if exclusive("exclusiveMaximum") {
            x >= max
        } else {
            x > max
        };
        if bad {
            let rel = if exclusive("exclusiveMaximum") {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(Cause::invalid(
                field,
                &go_value(value),
                format!("{} should be {rel} {}", body_name(name), shown(max)),
            ));
        }
    }
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => Some((i32::MIN as f64, i32::MAX as f64, "int32")),
        Some("int64") => Some((i64::MIN as f64, i64::MAX as f64, "int64")),
        _ => None,
    };
    if let Some((lo, hi, f)) = range
        && (x < lo || x > hi)
    {
        out.push(Cause::invalid(
            field,
            &go_value(value),
            format!(
                "{} must be of type {f}: {:?}",
                body_name(name),
                value.to_string()
            ),
        ));
    }
}

fn validate_object(schema: &Value, map: &Map<String, Value>, name: &str, out: &mut Vec<Cause>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                out.push(Cause::required(&join(name, r), ""));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in map {
        let n = join(name, k);
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            validate_at(sub, v, &n, &n, out);
        } else if let Some(add) = additional {
            validate_at(add, v, &n, &n, out);
        }
    }
}

/// Whether a CRD prunes unknown fields: not when it keeps `spec.preserveUnknownFields: true`
/// (the default of `apiextensions.k8s.io/v1beta1`, kept by servers that converted such a CRD).
pub(crate) fn crd_prunes(crd: &Value) -> bool {
    match crd["spec"]["preserveUnknownFields"].as_bool() {
        Some(p) => !p,
        None => crd["apiVersion"].as_str() != Some("apiextensions.k8s.io/v1beta1"),
    }
}

/// Prunes (when `prune`), defaults and validates a custom resource against its version's
/// schema. `metadata`, `apiVersion` and `kind` are the server's own and not checked here.
pub(crate) fn check_custom_resource(
    schema: &Value,
    obj: &mut Value,
    prune_unknown: bool,
) -> Vec<Cause> {
    if prune_unknown {
        prune(schema, obj, true);
    }
    apply_defaults(schema, obj);
    let mut out = Vec::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    let mut body = map.clone();
    for k in ["apiVersion", "kind", "metadata"] {
        body.remove(k);
    }
    let mut root = schema.clone();
    if let Some(r) = root.get_mut("required").and_then(Value::as_array_mut) {
        r.retain(|k| !matches!(k.as_str(), Some("apiVersion" | "kind" | "metadata")));
    }
    if let Some(p) = root.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("metadata");
    }
    validate_object(&root, &body, "", &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// CustomResourceDefinitions.

/// The schema of `version` in a CRD (`apiextensions.k8s.io/v1`, or v1beta1's per-version or
/// top-level `validation`).
pub(crate) fn version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    let versions = crd["spec"]["versions"].as_array();
    let per_version = versions
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str() == Some(version))
        .and_then(|v| {
            v.get("schema")
                .and_then(|s| s.get("openAPIV3Schema"))
                .filter(|s| s.is_object())
        });
    per_version.or_else(|| {
        crd["spec"]
            .get("validation")
            .and_then(|s| s.get("openAPIV3Schema"))
            .filter(|s| s.is_object())
    })
}

/// The causes for which a real server refuses this CRD's schemas (`apiextensions.k8s.io/v1`
/// rules: every version has a structural schema whose defaults validate).
pub(crate) fn check_crd(crd: &Value, quirks: Quirks) -> Vec<Cause> {
    let mut out = Vec::new();
    let v1 = crd["apiVersion"].as_str() != Some("apiextensions.k8s.io/v1beta1");
    let versions: Vec<&Value> = crd["spec"]["versions"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let schemas: Vec<Option<&Value>> = versions
        .iter()
        .map(|v| v.get("schema").and_then(|s| s.get("openAPIV3Schema")))
        .collect();
    // The internal form keeps one top-level schema when every version has the same one: the
    // real server reports paths under `spec.validation` then.
    let shared = !schemas.is_empty() && schemas.iter().all(|s| *s == schemas[0]);
    if shared && let Some(Some(s)) = schemas.first() {
        check_schema_root(s, "spec.validation.openAPIV3Schema", quirks, &mut out);
        return out;
    }
    if let Some(s) = crd["spec"]
        .get("validation")
        .and_then(|v| v.get("openAPIV3Schema"))
    {
        check_schema_root(s, "spec.validation.openAPIV3Schema", quirks, &mut out);
        return out;
    }
    for (i, s) in schemas.iter().enumerate() {
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        match s {
            Some(s) => check_schema_root(s, &path, quirks, &mut out),
            None if v1 => out.push(Cause::required(&path, "schemas are required")),
            None => {}
        }
    }
    out
}

fn check_schema_root(schema: &Value, path: &str, quirks: Quirks, out: &mut Vec<Cause>) {
    match schema.get("type").and_then(Value::as_str) {
        None | Some("") => {
            out.push(Cause::required(
                &format!("{path}.type"),
                "must not be empty at the root",
            ));
        }
        Some("object") => {}
        Some(t) => out.push(Cause::invalid(
            &format!("{path}.type"),
            &format!("{t:?}"),
            "must be object at the root".into(),
        )),
    }
    if let Some(meta) = schema
        .get("properties")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("properties"))
        .and_then(Value::as_object)
        && meta.keys().any(|k| k != "name" && k != "generateName")
    {
        out.push(Cause::forbidden(
            &format!("{path}.properties[metadata]"),
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
    check_node(schema, path, quirks, out);
}

fn check_node(schema: &Value, path: &str, quirks: Quirks, out: &mut Vec<Cause>) {
    if schema.get("properties").is_some() && schema.get("additionalProperties").is_some() {
        out.push(Cause::forbidden(
            &format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(d) = schema.get("default") {
        let mut d = d.clone();
        if quirks.empty_string_default_is_null && d == Value::String(String::new()) {
            d = Value::Null;
        }
        let mut pruned = d.clone();
        prune(schema, &mut pruned, false);
        let field = format!("{path}.default");
        if pruned != d {
            out.push(Cause::invalid(
                &field,
                &go_value(&d),
                "must not have unknown fields".into(),
            ));
        }
        let mut causes = Vec::new();
        validate_at(schema, &d, "", "", &mut causes);
        for c in causes {
            let at = if c.field.is_empty() {
                field.clone()
            } else {
                format!("{field}.{}", c.field)
            };
            out.push(Cause { field: at, ..c });
        }
    }
    let typed = |s: &Value| {
        s.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
            || flag(s, "x-kubernetes-int-or-string")
            || flag(s, "x-kubernetes-preserve-unknown-fields")
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            let p = format!("{path}.properties[{k}]");
            if !typed(sub) {
                out.push(Cause::required(
                    &format!("{p}.type"),
                    "must not be empty for specified object fields",
                ));
            }
            check_node(sub, &p, quirks, out);
        }
    }
    if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        let p = format!("{path}.additionalProperties");
        if !typed(add) {
            out.push(Cause::required(
                &format!("{p}.type"),
                "must not be empty for specified object fields",
            ));
        }
        check_node(add, &p, quirks, out);
    }
    if let Some(items) = schema.get("items") {
        let p = format!("{path}.items");
        if items.is_array() {
            out.push(Cause::forbidden(
                &p,
                "items must be a schema object and not an array",
            ));
        } else {
            if !typed(items) {
                out.push(Cause::required(
                    &format!("{p}.type"),
                    "must not be empty for specified array items",
                ));
            }
            check_node(items, &p, quirks, out);
        }
    } else if schema.get("type").and_then(Value::as_str) == Some("array") {
        out.push(Cause::required(
            &format!("{path}.items"),
            "must be specified",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(c: &[Cause]) -> Vec<String> {
        c.iter().map(Cause::text).collect()
    }

    #[test]
    fn a_null_in_a_non_nullable_string_is_refused_like_a_real_server() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object",
            "properties": {"reason": {"type": "string"}, "until": {"type": "string", "nullable": true}}}}});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "status": {"reason": null, "until": null, "unknown": 1}});
        let causes = check_custom_resource(&schema, &mut obj, true);
        assert_eq!(
            texts(&causes),
            [
                "status.reason: Invalid value: \"null\": status.reason in body must be of type string: \"null\""
            ]
        );
        assert!(obj["status"].get("unknown").is_none(), "pruned");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
    }

    #[test]
    fn empty_string_defaults_on_1_19() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "spec": {"versions": [{"name": "v1",
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                "properties": {"clusterName": {"type": "string", "default": ""}}}}}}}]}});
        assert!(check_crd(&crd, Quirks::default()).is_empty());
        let q = Quirks {
            empty_string_default_is_null: true,
        };
        assert_eq!(
            texts(&check_crd(&crd, q)),
            [
                "spec.validation.openAPIV3Schema.properties[spec].properties[clusterName].default: Invalid value: \"null\": in body must be of type string: \"null\""
            ]
        );
    }

    #[test]
    fn structural_rules() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "spec": {"versions": [
            {"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"properties": {"n": {"type": "integer", "default": "x"}}},
                "list": {"type": "array"}}}}},
            {"name": "v2"}]}});
        assert_eq!(
            texts(&check_crd(&crd, Quirks::default())),
            [
                "spec.versions[0].schema.openAPIV3Schema.properties[list].items: Required value: must be specified",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[n].default: Invalid value: \"string\": in body must be of type integer: \"string\"",
                "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
            ]
        );
    }

    #[test]
    fn required_enum_format_and_defaults() {
        let schema = json!({"type": "object", "required": ["spec"], "properties": {
            "spec": {"type": "object", "required": ["mode"], "properties": {
                "mode": {"type": "string", "enum": ["a", "b"]},
                "at": {"type": "string", "format": "date-time"},
                "n": {"type": "integer", "minimum": 1, "default": 3},
                "items": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "boolean"}}}}}}}});
        let mut obj = json!({"spec": {"mode": "c", "at": "yesterday", "items": [{"x": 1}]}});
        let causes = check_custom_resource(&schema, &mut obj, true);
        assert_eq!(obj["spec"]["n"], 3, "defaulted");
        assert_eq!(
            texts(&causes),
            [
                "spec.at: Invalid value: \"yesterday\": spec.at in body must be of type date-time: \"yesterday\"",
                "spec.items.0.x: Invalid value: \"integer\": spec.items.0.x in body must be of type boolean: \"integer\"",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            ]
        );
        let mut none = json!({"metadata": {"name": "x"}});
        assert_eq!(
            texts(&check_custom_resource(&schema, &mut none, true)),
            ["spec: Required value"]
        );
    }

    #[test]
    fn preserve_unknown_fields_keeps_and_int_or_string_accepts() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "port": {"x-kubernetes-int-or-string": true}}}}});
        let mut obj = json!({"spec": {"port": "http", "other": {"a": 1}}});
        assert!(check_custom_resource(&schema, &mut obj, true).is_empty());
        assert_eq!(obj["spec"]["other"]["a"], 1);
        // A CRD that keeps `preserveUnknownFields: true` (v1beta1's default) prunes nothing.
        let v1beta1 = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "spec": {}});
        assert!(!crd_prunes(&v1beta1));
        assert!(crd_prunes(
            &json!({"apiVersion": "apiextensions.k8s.io/v1", "spec": {}})
        ));
        let plain = json!({"type": "object"});
        let mut kept = json!({"spec": {"size": 3}});
        assert!(check_custom_resource(&plain, &mut kept, false).is_empty());
        assert_eq!(kept["spec"]["size"], 3);
        let mut bad = json!({"spec": {"port": true}});
        assert_eq!(check_custom_resource(&schema, &mut bad, true).len(), 1);
    }
}
