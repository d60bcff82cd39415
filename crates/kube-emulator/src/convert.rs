//! Conversions between the versions of one resource, as a real API server does when it serves
//! objects stored once at every version (and through a deprecated group: `extensions`).
//!
//! Owns the schema changes between versions of the built-in kinds whose schema moved:
//! Ingress (`extensions|networking.k8s.io/v1beta1` ↔ `networking.k8s.io/v1`: backends,
//! `pathType`), HorizontalPodAutoscaler (`autoscaling/v1|v2beta1` ↔ `v2`/`v2beta2`: metrics),
//! CustomResourceDefinition (`apiextensions.k8s.io/v1beta1` ↔ `v1`: per-version schemas),
//! EndpointSlice (`discovery.k8s.io/v1beta1` ↔ `v1`: `topology` ↔ `zone`/`nodeName`),
//! PodDisruptionBudget (`policy/v1beta1` ↔ `v1`: an empty selector selects no Pods in v1beta1
//! and every Pod in v1, so each version's empty selector is served at the other as the
//! selector of `pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match` that keeps its
//! meaning — `pkg/apis/policy/{v1,v1beta1}/conversion.go` from 1.21).
//! Every other kind (CronJob, Lease, ..., custom resources without a conversion webhook) only
//! changes `apiVersion`. Pure: no store, no catalogue.

use serde_json::{Map, Value, json};

/// Converts `obj` (of `kind`) from `from` to `to` (`group/version` strings) in place.
pub(crate) fn convert(obj: &mut Value, kind: &str, from: &str, to: &str) {
    if from != to {
        match kind {
            "Ingress" => {
                if !from.ends_with("/v1") {
                    ingress_up(obj);
                }
                if !to.ends_with("/v1") {
                    ingress_down(obj);
                }
            }
            "HorizontalPodAutoscaler" => {
                match from {
                    "autoscaling/v1" => hpa_v1_up(obj),
                    "autoscaling/v2beta1" => hpa_v2beta1_up(obj),
                    _ => {}
                }
                match to {
                    "autoscaling/v1" => hpa_v1_down(obj),
                    "autoscaling/v2beta1" => hpa_v2beta1_down(obj),
                    _ => {}
                }
            }
            "EndpointSlice" => {
                if from.ends_with("/v1beta1") {
                    endpointslice_up(obj);
                }
                if to.ends_with("/v1beta1") {
                    endpointslice_down(obj);
                }
            }
            "PodDisruptionBudget" => {
                if from.ends_with("/v1beta1") {
                    pdb_up(obj);
                }
                if to.ends_with("/v1beta1") {
                    pdb_down(obj);
                }
            }
            "CustomResourceDefinition" => {
                if from.ends_with("/v1beta1") {
                    crd_up(obj);
                }
                if to.ends_with("/v1beta1") {
                    crd_down(obj);
                }
            }
            _ => {}
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(to));
    }
}

/// The label whose selectors stand for v1beta1's empty selector in v1 and the reverse.
const PDB_V1BETA1_LABEL: &str = "pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match";

/// The selector `{matchExpressions: [{key: PDB_V1BETA1_LABEL, operator}]}`.
fn pdb_label_selector(operator: &str) -> Value {
    json!({"matchExpressions": [{"key": PDB_V1BETA1_LABEL, "operator": operator}]})
}

/// `policy/v1beta1` → `v1`: the empty selector (no Pods) becomes `Exists` of the label (no
/// Pod has it), `DoesNotExist` of it (every Pod) becomes the empty selector; the label is
/// stripped from any other selector.
fn pdb_up(obj: &mut Value) {
    let Some(sel) = obj.pointer_mut("/spec/selector") else {
        return;
    };
    if sel.as_object().is_some_and(Map::is_empty) {
        *sel = pdb_label_selector("Exists");
    } else if *sel == pdb_label_selector("DoesNotExist") {
        *sel = json!({});
    } else {
        strip_pdb_label(sel);
    }
}

/// `policy/v1` → `v1beta1`: the reverse of [`pdb_up`].
fn pdb_down(obj: &mut Value) {
    let Some(sel) = obj.pointer_mut("/spec/selector") else {
        return;
    };
    if *sel == pdb_label_selector("Exists") {
        *sel = json!({});
    } else if sel.as_object().is_some_and(Map::is_empty) {
        *sel = pdb_label_selector("DoesNotExist");
    }
}

/// Removes the label from a user's selector (`policy.StripPDBV1beta1Label`).
fn strip_pdb_label(sel: &mut Value) {
    if let Some(labels) = sel.get_mut("matchLabels").and_then(Value::as_object_mut) {
        labels.remove(PDB_V1BETA1_LABEL);
    }
    if let Some(exprs) = sel
        .get_mut("matchExpressions")
        .and_then(Value::as_array_mut)
    {
        exprs.retain(|e| e["key"] != PDB_V1BETA1_LABEL);
    }
}

/// Drops what the Go type of a built-in kind's version has no field for, as a real server's
/// decoding does when an object is written at that version (silently before 1.25; from 1.25
/// with a warning unless the client asks for strict field validation), or clears a field its
/// release's feature gates leave off (`dropDisabledFields`). Modelled where a newer version's
/// fields would otherwise survive a write at an older one: HorizontalPodAutoscaler
/// `autoscaling/v1`, whose spec has no `metrics` or `behavior`; CronJob `spec.timeZone`, not in
/// `batch/v1beta1` and cleared before 1.25 (gate `CronJobTimeZone`, on by default from 1.25).
pub(crate) fn drop_unknown_fields(group: &str, version: &str, minor: u32, obj: &mut Value) {
    if group == "batch"
        && (version == "v1beta1" || minor < 25)
        && obj["kind"] == "CronJob"
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("timeZone");
    }
    if (group, version) == ("autoscaling", "v1")
        && obj["kind"] == "HorizontalPodAutoscaler"
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.retain(|k, _| {
            matches!(
                k.as_str(),
                "scaleTargetRef" | "minReplicas" | "maxReplicas" | "targetCPUUtilizationPercentage"
            )
        });
    }
}

fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k).filter(|v| !v.is_null())
}

/// Each backend in an Ingress spec (default backend and path backends).
fn ingress_backends(spec: &mut Map<String, Value>, default_key: &str, f: &dyn Fn(&mut Value)) {
    if let Some(b) = spec.get_mut(default_key) {
        f(b);
    }
    for rule in spec
        .get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for path in rule
            .pointer_mut("/http/paths")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(b) = path.get_mut("backend") {
                f(b);
            }
        }
    }
}

fn ingress_up(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(b) = take(spec, "backend") {
        spec.insert("defaultBackend".into(), b);
    }
    ingress_backends(spec, "defaultBackend", &|b| {
        let Some(m) = b.as_object_mut() else { return };
        let name = take(m, "serviceName");
        let port = take(m, "servicePort");
        if let Some(name) = name {
            let port = match port {
                Some(Value::String(s)) => match s.parse::<i64>() {
                    Ok(n) => json!({"number": n}),
                    Err(_) => json!({"name": s}),
                },
                Some(Value::Number(n)) => json!({"number": n}),
                _ => json!({}),
            };
            m.insert("service".into(), json!({"name": name, "port": port}));
        }
    });
    for rule in spec
        .get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for path in rule
            .pointer_mut("/http/paths")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if path.get("pathType").is_none_or(Value::is_null) {
                path["pathType"] = json!("ImplementationSpecific");
            }
        }
    }
}

fn ingress_down(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(b) = take(spec, "defaultBackend") {
        spec.insert("backend".into(), b);
    }
    ingress_backends(spec, "backend", &|b| {
        let Some(m) = b.as_object_mut() else { return };
        if let Some(svc) = take(m, "service") {
            m.insert("serviceName".into(), svc["name"].clone());
            let port = &svc["port"];
            let p = if port["number"].is_number() {
                port["number"].clone()
            } else {
                port["name"].clone()
            };
            m.insert("servicePort".into(), p);
        }
    });
}

const HPA_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";

fn hpa_v1_up(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut metrics: Vec<Value> = Vec::new();
    if let Some(cpu) = take(spec, "targetCPUUtilizationPercentage") {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": cpu}}}));
    }
    // Other metrics a v2 client set are kept by the server in an annotation.
    let kept = obj
        .pointer(&format!(
            "/metadata/annotations/{}",
            HPA_METRICS_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok());
    if let Some(kept) = kept {
        metrics.extend(kept);
        if let Some(a) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(HPA_METRICS_ANNOTATION);
        }
    }
    if !metrics.is_empty() {
        obj["spec"]["metrics"] = json!(metrics);
    }
    if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(cur) = take(st, "currentCPUUtilizationPercentage")
    {
        st.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cur}}}]),
        );
    }
}

fn hpa_v1_down(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let metrics = take(spec, "metrics")
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    spec.remove("behavior");
    let mut others = Vec::new();
    for m in metrics {
        let cpu = m["type"] == "Resource"
            && m["resource"]["name"] == "cpu"
            && m["resource"]["target"]["type"] == "Utilization";
        if cpu {
            spec.insert(
                "targetCPUUtilizationPercentage".into(),
                m["resource"]["target"]["averageUtilization"].clone(),
            );
        } else {
            others.push(m);
        }
    }
    if !others.is_empty() {
        let text = serde_json::to_string(&others).unwrap_or_default();
        obj["metadata"]["annotations"][HPA_METRICS_ANNOTATION] = json!(text);
    }
    if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = take(st, "currentMetrics");
        st.remove("conditions");
        if let Some(c) = current
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|m| m["resource"]["name"] == "cpu"))
        {
            st.insert(
                "currentCPUUtilizationPercentage".into(),
                c["resource"]["current"]["averageUtilization"].clone(),
            );
        }
    }
}

/// v2beta1 metric sources (`targetAverageUtilization`...) to v2 targets.
fn hpa_v2beta1_up(obj: &mut Value) {
    for m in obj
        .pointer_mut("/spec/metrics")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let ty = m["type"].as_str().unwrap_or_default().to_string();
        let key = match ty.as_str() {
            "Resource" => "resource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => continue,
        };
        let Some(src) = m.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        let mut target = Map::new();
        if let Some(u) = take(src, "targetAverageUtilization") {
            target.insert("type".into(), json!("Utilization"));
            target.insert("averageUtilization".into(), u);
        }
        if let Some(v) = take(src, "targetAverageValue") {
            target.insert("type".into(), json!("AverageValue"));
            target.insert("averageValue".into(), v);
        }
        if let Some(v) = take(src, "targetValue") {
            target.insert("type".into(), json!("Value"));
            target.insert("value".into(), v);
        }
        if let Some(name) = take(src, "metricName") {
            let mut metric = json!({"name": name});
            if let Some(sel) = take(src, "selector").or_else(|| take(src, "metricSelector")) {
                metric["selector"] = sel;
            }
            src.insert("metric".into(), metric);
        }
        if let Some(t) = take(src, "target") {
            src.insert("describedObject".into(), t);
        }
        src.insert("target".into(), Value::Object(target));
    }
}

fn hpa_v2beta1_down(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("behavior");
    }
    for m in obj
        .pointer_mut("/spec/metrics")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let ty = m["type"].as_str().unwrap_or_default().to_string();
        let key = match ty.as_str() {
            "Resource" => "resource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => continue,
        };
        let Some(src) = m.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        let target = take(src, "target").unwrap_or_default();
        if let Some(u) = target.get("averageUtilization") {
            src.insert("targetAverageUtilization".into(), u.clone());
        }
        if let Some(v) = target.get("averageValue") {
            src.insert("targetAverageValue".into(), v.clone());
        }
        if let Some(v) = target.get("value") {
            src.insert("targetValue".into(), v.clone());
        }
        if let Some(metric) = take(src, "metric") {
            src.insert("metricName".into(), metric["name"].clone());
            if let Some(sel) = metric.get("selector") {
                let k = if key == "external" {
                    "metricSelector"
                } else {
                    "selector"
                };
                src.insert(k.into(), sel.clone());
            }
        }
        if let Some(d) = take(src, "describedObject") {
            src.insert("target".into(), d);
        }
    }
}

/// `discovery.k8s.io/v1beta1` → `v1`: an endpoint's `topology` map becomes `zone`,
/// `nodeName` and `deprecatedTopology`.
fn endpointslice_up(obj: &mut Value) {
    for ep in obj
        .get_mut("endpoints")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(m) = ep.as_object_mut() else {
            continue;
        };
        let Some(Value::Object(mut topo)) = take(m, "topology") else {
            continue;
        };
        if let Some(z) = topo.remove("topology.kubernetes.io/zone") {
            m.insert("zone".into(), z);
        }
        if let Some(n) = topo.remove("kubernetes.io/hostname")
            && !m.contains_key("nodeName")
        {
            m.insert("nodeName".into(), n);
        }
        if !topo.is_empty() {
            m.insert("deprecatedTopology".into(), Value::Object(topo));
        }
    }
}

fn endpointslice_down(obj: &mut Value) {
    for ep in obj
        .get_mut("endpoints")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(m) = ep.as_object_mut() else {
            continue;
        };
        let mut topo = match take(m, "deprecatedTopology") {
            Some(Value::Object(t)) => t,
            _ => Map::new(),
        };
        if let Some(z) = take(m, "zone") {
            topo.insert("topology.kubernetes.io/zone".into(), z);
        }
        if let Some(n) = m.get("nodeName") {
            topo.insert("kubernetes.io/hostname".into(), n.clone());
        }
        if !topo.is_empty() {
            m.insert("topology".into(), Value::Object(topo));
        }
    }
}

/// `apiextensions.k8s.io/v1beta1` → `v1`: the top-level version, schema, subresources and
/// printer columns move into each version; `JSONPath` becomes `jsonPath`.
fn crd_up(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let version = take(spec, "version");
    let validation = take(spec, "validation");
    let subresources = take(spec, "subresources");
    let columns = take(spec, "additionalPrinterColumns");
    let mut versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty()
        && let Some(v) = version
    {
        versions.push(json!({"name": v, "served": true, "storage": true}));
    }
    for v in &mut versions {
        if let Some(s) = &validation
            && v.get("schema").is_none()
        {
            v["schema"] = s.clone();
        }
        if let Some(s) = &subresources
            && v.get("subresources").is_none()
        {
            v["subresources"] = s.clone();
        }
        if let Some(c) = &columns
            && v.get("additionalPrinterColumns").is_none()
        {
            v["additionalPrinterColumns"] = c.clone();
        }
        for c in v
            .get_mut("additionalPrinterColumns")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(m) = c.as_object_mut()
                && let Some(p) = take(m, "JSONPath")
            {
                m.insert("jsonPath".into(), p);
            }
        }
    }
    spec.insert("versions".into(), json!(versions));
    // v1beta1 defaults: unknown fields kept unless a structural schema prunes them.
    if spec.get("preserveUnknownFields").is_none() {
        spec.insert("preserveUnknownFields".into(), json!(true));
    }
    if let Some(c) = spec.get_mut("conversion").and_then(Value::as_object_mut) {
        let url = take(c, "webhookClientConfig");
        let review = take(c, "conversionReviewVersions");
        if url.is_some() || review.is_some() {
            let mut w = json!({});
            if let Some(u) = url {
                w["clientConfig"] = u;
            }
            w["conversionReviewVersions"] = review.unwrap_or(json!(["v1beta1"]));
            c.insert("webhook".into(), w);
        }
    }
}

fn crd_down(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(first) = versions.first() {
        spec.insert("version".into(), first["name"].clone());
    }
    // When every version shares a schema (the usual case), it is written once at the top.
    let same = |versions: &[Value], k: &str| {
        versions
            .first()
            .and_then(|f| f.get(k))
            .filter(|s| versions.iter().all(|v| v.get(k) == Some(*s)))
            .cloned()
    };
    for (k, top) in [
        ("schema", "validation"),
        ("subresources", "subresources"),
        ("additionalPrinterColumns", "additionalPrinterColumns"),
    ] {
        if let Some(s) = same(&versions, k) {
            spec.insert(top.into(), s);
            for v in &mut versions {
                if let Some(m) = v.as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    let rename = |c: &mut Value| {
        if let Some(m) = c.as_object_mut()
            && let Some(p) = take(m, "jsonPath")
        {
            m.insert("JSONPath".into(), p);
        }
    };
    for c in spec
        .get_mut("additionalPrinterColumns")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        rename(c);
    }
    for v in &mut versions {
        for c in v
            .get_mut("additionalPrinterColumns")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            rename(c);
        }
    }
    spec.insert("versions".into(), json!(versions));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hpa_written_at_autoscaling_v1_loses_what_v1_has_no_field_for() {
        let spec = json!({"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "minReplicas": 1,
            "maxReplicas": 5, "metrics": [{"type": "Resource"}], "behavior": {}});
        let mut v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": spec});
        drop_unknown_fields("autoscaling", "v1", 19, &mut v1);
        assert_eq!(
            v1["spec"],
            json!({"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "minReplicas": 1, "maxReplicas": 5})
        );
        let mut v2 = json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "spec": spec});
        drop_unknown_fields("autoscaling", "v2beta2", 19, &mut v2);
        assert_eq!(v2["spec"], spec);
    }

    #[test]
    fn a_cronjob_keeps_its_time_zone_only_at_batch_v1_from_1_25() {
        let cj = |v: &str| {
            json!({"apiVersion": v, "kind": "CronJob",
            "spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin"}})
        };
        for (version, minor, kept) in [
            ("v1", 25, true),
            ("v1", 24, false),
            ("v1beta1", 24, false),
            ("v1", 30, true),
        ] {
            let mut obj = cj(&format!("batch/{version}"));
            drop_unknown_fields("batch", version, minor, &mut obj);
            assert_eq!(
                obj["spec"].get("timeZone").is_some(),
                kept,
                "{version} {minor}"
            );
            assert_eq!(obj["spec"]["schedule"], "0 3 * * *");
        }
    }

    #[test]
    fn pdb_empty_selectors_keep_their_meaning_across_versions() {
        let pdb = |v: &str, sel: Value| json!({"apiVersion": v, "kind": "PodDisruptionBudget", "spec": {"selector": sel}});
        let none = pdb_label_selector("Exists");
        let all = pdb_label_selector("DoesNotExist");
        for (stored, from, to, served) in [
            (json!({}), "policy/v1beta1", "policy/v1", none.clone()),
            (all.clone(), "policy/v1beta1", "policy/v1", json!({})),
            (json!({}), "policy/v1", "policy/v1beta1", all.clone()),
            (none.clone(), "policy/v1", "policy/v1beta1", json!({})),
            (
                json!({"matchLabels": {"app": "web"}}),
                "policy/v1",
                "policy/v1beta1",
                json!({"matchLabels": {"app": "web"}}),
            ),
            (
                json!({"matchLabels": {"app": "web", PDB_V1BETA1_LABEL: "x"}}),
                "policy/v1beta1",
                "policy/v1",
                json!({"matchLabels": {"app": "web"}}),
            ),
        ] {
            let mut obj = pdb(from, stored.clone());
            convert(&mut obj, "PodDisruptionBudget", from, to);
            assert_eq!(obj, pdb(to, served.clone()), "{stored} {from} → {to}");
            if stored.get("matchLabels").is_none() {
                convert(&mut obj, "PodDisruptionBudget", to, from);
                assert_eq!(obj, pdb(from, stored), "and back");
            }
        }
    }

    #[test]
    fn ingress_round_trip() {
        let old = json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "spec": {
            "backend": {"serviceName": "web", "servicePort": 80},
            "rules": [{"host": "a", "http": {"paths": [{"path": "/", "backend": {"serviceName": "api", "servicePort": "http"}}]}}]}});
        let mut v = old.clone();
        convert(
            &mut v,
            "Ingress",
            "extensions/v1beta1",
            "networking.k8s.io/v1",
        );
        assert_eq!(
            v["spec"],
            json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
                "rules": [{"host": "a", "http": {"paths": [{"path": "/", "pathType": "ImplementationSpecific",
                    "backend": {"service": {"name": "api", "port": {"name": "http"}}}}]}}]})
        );
        convert(
            &mut v,
            "Ingress",
            "networking.k8s.io/v1",
            "extensions/v1beta1",
        );
        assert_eq!(v["spec"]["backend"], old["spec"]["backend"]);
        assert_eq!(v["apiVersion"], "extensions/v1beta1");
    }

    #[test]
    fn hpa_v2_to_v1_and_back() {
        let mut v = json!({"apiVersion": "autoscaling/v2", "metadata": {"name": "h"}, "spec": {"maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}]}});
        let orig = v.clone();
        convert(
            &mut v,
            "HorizontalPodAutoscaler",
            "autoscaling/v2",
            "autoscaling/v1",
        );
        assert_eq!(v["spec"]["targetCPUUtilizationPercentage"], 70);
        assert!(v["spec"].get("metrics").is_none());
        convert(
            &mut v,
            "HorizontalPodAutoscaler",
            "autoscaling/v1",
            "autoscaling/v2",
        );
        assert_eq!(v["spec"], orig["spec"]);
        let mut b = orig.clone();
        convert(
            &mut b,
            "HorizontalPodAutoscaler",
            "autoscaling/v2",
            "autoscaling/v2beta1",
        );
        assert_eq!(
            b["spec"]["metrics"][0]["resource"]["targetAverageUtilization"],
            70
        );
        assert_eq!(b["spec"]["metrics"][1]["pods"]["metricName"], "qps");
        convert(
            &mut b,
            "HorizontalPodAutoscaler",
            "autoscaling/v2beta1",
            "autoscaling/v2",
        );
        assert_eq!(b["spec"], orig["spec"]);
    }

    #[test]
    fn crd_v1beta1_to_v1() {
        let mut v = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "spec": {"group": "x.io", "version": "v1",
            "validation": {"openAPIV3Schema": {"type": "object"}},
            "additionalPrinterColumns": [{"name": "A", "type": "string", "JSONPath": ".spec.a"}]}});
        convert(
            &mut v,
            "CustomResourceDefinition",
            "apiextensions.k8s.io/v1beta1",
            "apiextensions.k8s.io/v1",
        );
        assert_eq!(
            v["spec"]["versions"],
            json!([{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}},
                "additionalPrinterColumns": [{"name": "A", "type": "string", "jsonPath": ".spec.a"}]}])
        );
        assert!(v["spec"].get("validation").is_none());
        convert(
            &mut v,
            "CustomResourceDefinition",
            "apiextensions.k8s.io/v1",
            "apiextensions.k8s.io/v1beta1",
        );
        assert_eq!(
            v["spec"]["validation"],
            json!({"openAPIV3Schema": {"type": "object"}})
        );
        assert_eq!(v["spec"]["version"], "v1");
    }

    #[test]
    fn endpointslice_topology() {
        let mut v = json!({"endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n1",
            "topology": {"topology.kubernetes.io/zone": "a", "kubernetes.io/hostname": "n1", "rack": "r1"}}]});
        convert(
            &mut v,
            "EndpointSlice",
            "discovery.k8s.io/v1beta1",
            "discovery.k8s.io/v1",
        );
        assert_eq!(
            v["endpoints"][0],
            json!({"addresses": ["10.0.0.1"], "nodeName": "n1", "zone": "a", "deprecatedTopology": {"rack": "r1"}})
        );
        convert(
            &mut v,
            "EndpointSlice",
            "discovery.k8s.io/v1",
            "discovery.k8s.io/v1beta1",
        );
        assert_eq!(
            v["endpoints"][0]["topology"],
            json!({"topology.kubernetes.io/zone": "a", "kubernetes.io/hostname": "n1", "rack": "r1"})
        );
    }
}
