//! Admission webhooks as a real server calls them, in a cluster where no webhook backend ever
//! answers (the emulator runs no workloads): a create or update that a
//! Validating/MutatingWebhookConfiguration's webhook intercepts fails as the server's call
//! would, unless the webhook's `failurePolicy` is `Ignore`.
//!
//! A webhook intercepts a request when one of its `rules` names the operation (`CREATE`,
//! `UPDATE` or `*`), the group, the version (any version of the same group and resource under
//! `matchPolicy: Equivalent`, the v1 default), the resource (`*`, `res`, `res/sub`, `*/*`,
//! `res/*`) and the scope, and its `namespaceSelector` (a namespaced object's namespace
//! labels, a Namespace's own) and `objectSelector` (the object's labels) select the request.
//! Requests for webhook configurations themselves are never intercepted, as on a real server.
//!
//! The answer is the server's: 500 `Internal error occurred: failed calling webhook "<name>":
//! Post "https://<service>.<ns>.svc:<port><path>?timeout=<t>s": service "<service>" not found`
//! (or `no endpoints available for service ...` when the Service exists; a `url` webhook's
//! connection is refused). Owns only the decision and the message; must not touch storage.

use serde_json::Value;

use crate::selector::selects;

/// What a write is, as the webhooks' rules see it.
pub(crate) struct Request<'a> {
    /// `CREATE` or `UPDATE`.
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    /// The resource, `res/sub` for a subresource.
    pub resource: &'a str,
    /// The object's namespace (empty: cluster-scoped).
    pub namespace: &'a str,
    /// The object written.
    pub object: &'a Value,
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn labels(obj: &Value) -> Vec<(&str, &str)> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect()
}

fn resource_matches(rule: &str, resource: &str) -> bool {
    let (res, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let (rule_res, rule_sub) = match rule.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (rule, None),
    };
    (rule_res == "*" || rule_res == res)
        && match (rule_sub, sub) {
            (None, None) => true,
            (Some("*"), Some(_)) => true,
            (Some(rs), Some(s)) => rs == s,
            _ => false,
        }
}

fn rule_matches(rule: &Value, req: &Request<'_>, exact: bool) -> bool {
    let any = |list: &[&str], v: &str| list.iter().any(|x| *x == "*" || *x == v);
    let scope = rule["scope"].as_str().unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => req.namespace.is_empty(),
        "Namespaced" => !req.namespace.is_empty(),
        _ => true,
    };
    any(&strs(&rule["operations"]), req.operation)
        && any(&strs(&rule["apiGroups"]), req.group)
        && (!exact || any(&strs(&rule["apiVersions"]), req.version))
        && strs(&rule["resources"])
            .iter()
            .any(|r| resource_matches(r, req.resource))
        && scope_ok
}

/// The error of the first webhook of `configs` (webhook configurations, both kinds) that
/// intercepts `req` and fails; `namespace_labels` are the labels of the request's namespace
/// and `service_exists` tells whether a Service exists.
pub(crate) fn refusal(
    configs: &[Value],
    req: &Request<'_>,
    namespace_labels: &[(&str, &str)],
    service_exists: &dyn Fn(&str, &str) -> bool,
) -> Option<String> {
    if req.group == "admissionregistration.k8s.io"
        && matches!(
            req.resource,
            "validatingwebhookconfigurations" | "mutatingwebhookconfigurations"
        )
    {
        return None;
    }
    let object_labels = labels(req.object);
    let is_namespace = req.group.is_empty() && req.resource == "namespaces";
    configs
        .iter()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .find(|w| {
            let exact = w["matchPolicy"].as_str() == Some("Exact");
            let ns_ok = if is_namespace {
                selects(&w["namespaceSelector"], &object_labels)
            } else if req.namespace.is_empty() {
                true
            } else {
                selects(&w["namespaceSelector"], namespace_labels)
            };
            w["failurePolicy"].as_str() != Some("Ignore")
                && w["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| rule_matches(r, req, exact))
                && ns_ok
                && selects(&w["objectSelector"], &object_labels)
        })
        .map(|w| {
            let name = w["name"].as_str().unwrap_or_default();
            let timeout = w["timeoutSeconds"].as_i64().unwrap_or(10);
            let cc = &w["clientConfig"];
            let reason = match cc["url"].as_str() {
                Some(url) => {
                    let host = url
                        .split("://")
                        .nth(1)
                        .and_then(|r| r.split('/').next())
                        .unwrap_or(url);
                    format!("Post \"{url}?timeout={timeout}s\": dial tcp {host}: connect: connection refused")
                }
                None => {
                    let svc = cc["service"]["name"].as_str().unwrap_or_default();
                    let ns = cc["service"]["namespace"].as_str().unwrap_or_default();
                    let port = cc["service"]["port"].as_i64().unwrap_or(443);
                    let path = cc["service"]["path"].as_str().unwrap_or("");
                    let cause = if service_exists(ns, svc) {
                        format!("no endpoints available for service \"{svc}\"")
                    } else {
                        format!("service \"{svc}\" not found")
                    };
                    format!(
                        "Post \"https://{svc}.{ns}.svc:{port}{path}?timeout={timeout}s\": {cause}"
                    )
                }
            };
            format!("failed calling webhook \"{name}\": {reason}")
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(rules: Value, extra: Value) -> Value {
        let mut w = json!({"name": "deny.example.com", "rules": rules,
            "clientConfig": {"service": {"namespace": "hooks", "name": "hook", "path": "/validate"}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"]});
        json_patch::merge(&mut w, &extra);
        json!({"webhooks": [w]})
    }

    fn create<'a>(group: &'a str, resource: &'a str, ns: &'a str, obj: &'a Value) -> Request<'a> {
        Request {
            operation: "CREATE",
            group,
            version: "v1",
            resource,
            namespace: ns,
            object: obj,
        }
    }

    #[test]
    fn a_matching_webhook_fails_the_request_as_an_unreachable_backend_does() {
        let obj = json!({"metadata": {"name": "d", "labels": {"app": "web"}}});
        let deployments = json!([{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]);
        let none = |_: &str, _: &str| false;
        let c = config(deployments.clone(), json!({}));
        assert_eq!(
            refusal(
                std::slice::from_ref(&c),
                &create("apps", "deployments", "a", &obj),
                &[],
                &none
            )
            .unwrap(),
            "failed calling webhook \"deny.example.com\": Post \"https://hook.hooks.svc:443/validate?timeout=10s\": service \"hook\" not found"
        );
        let exists = |_: &str, _: &str| true;
        assert!(
            refusal(
                std::slice::from_ref(&c),
                &create("apps", "deployments", "a", &obj),
                &[],
                &exists
            )
            .unwrap()
            .ends_with("no endpoints available for service \"hook\"")
        );
        // Not intercepted: another resource, a subresource, another operation, Ignore, a
        // namespace or object the selectors leave out, the configurations themselves.
        for (c, req) in [
            (c.clone(), create("", "configmaps", "a", &obj)),
            (c.clone(), create("apps", "deployments/status", "a", &obj)),
            (
                config(deployments.clone(), json!({"failurePolicy": "Ignore"})),
                create("apps", "deployments", "a", &obj),
            ),
            (
                config(
                    deployments.clone(),
                    json!({"namespaceSelector": {"matchLabels": {"team": "x"}}}),
                ),
                create("apps", "deployments", "a", &obj),
            ),
            (
                config(
                    deployments.clone(),
                    json!({"objectSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}}),
                ),
                create("apps", "deployments", "a", &obj),
            ),
            (
                config(
                    json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]),
                    json!({}),
                ),
                create(
                    "admissionregistration.k8s.io",
                    "validatingwebhookconfigurations",
                    "",
                    &obj,
                ),
            ),
        ] {
            assert_eq!(refusal(&[c], &req, &[], &none), None);
        }
        let mut update = create("apps", "deployments", "a", &obj);
        update.operation = "UPDATE";
        assert_eq!(refusal(std::slice::from_ref(&c), &update, &[], &none), None);
        // Matched: wildcards, another version (Equivalent), the selected namespace.
        for (rules, extra, req) in [
            (
                json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}]),
                json!({}),
                create("apps", "deployments/scale", "a", &obj),
            ),
            (
                deployments.clone(),
                json!({}),
                Request {
                    version: "v1beta1",
                    ..create("apps", "deployments", "a", &obj)
                },
            ),
            (
                deployments.clone(),
                json!({"namespaceSelector": {"matchLabels": {"team": "x"}}}),
                create("apps", "deployments", "a", &obj),
            ),
        ] {
            let c = config(rules, extra);
            assert!(refusal(&[c], &req, &[("team", "x")], &none).is_some());
        }
        let exact = config(deployments, json!({"matchPolicy": "Exact"}));
        let old = Request {
            version: "v1beta1",
            ..create("apps", "deployments", "a", &obj)
        };
        assert_eq!(refusal(&[exact], &old, &[], &none), None);
    }
}
