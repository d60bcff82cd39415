//! The API aggregation layer in a cluster where no extension API server runs (the emulator
//! runs no workloads): an `APIService` that names a Service (not a local, built-in group
//! version) is unavailable, as a real aggregator reports one whose backend does not answer.
//! Its group version is listed in `/apis` (legacy discovery), its status says
//! `Available: False`, and every request under `/apis/<group>/<version>` (discovery
//! included) is answered `503` with the aggregator's plain-text body `service unavailable`.
//!
//! Owns only which group versions are unavailable and how discovery lists them; must not
//! touch storage.

use serde_json::{Value, json};

/// `(group, version)` of every APIService in `apiservices` that names a Service and whose
/// group version `served` (the built-in and CRD resources) does not serve.
pub(crate) fn unavailable(
    apiservices: &[Value],
    served: &dyn Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = apiservices
        .iter()
        .filter(|s| s.pointer("/spec/service").is_some_and(Value::is_object))
        .filter_map(|s| {
            let group = s.pointer("/spec/group")?.as_str()?;
            let version = s.pointer("/spec/version")?.as_str()?;
            (!group.is_empty() && !served(group, version))
                .then(|| (group.to_string(), version.to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Adds the unavailable group versions to an `APIGroupList` (`/apis`): a version to its
/// group's entry, or a new group after the others.
pub(crate) fn list_groups(list: &mut Value, unavailable: &[(String, String)]) {
    let Some(groups) = list.get_mut("groups").and_then(Value::as_array_mut) else {
        return;
    };
    for (group, version) in unavailable {
        let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
        match groups.iter_mut().find(|g| g["name"] == group.as_str()) {
            Some(g) => {
                if let Some(vs) = g.get_mut("versions").and_then(Value::as_array_mut) {
                    vs.push(gv);
                }
            }
            None => groups
                .push(json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})),
        }
    }
}

/// The status a real aggregator gives an APIService whose backend does not answer.
pub(crate) fn unavailable_status(apiservice: &Value, service_exists: bool) -> Value {
    let ns = apiservice
        .pointer("/spec/service/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = apiservice
        .pointer("/spec/service/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (reason, message) = if service_exists {
        (
            "MissingEndpoints",
            format!(
                "endpoints for service/{name} in \"{ns}\" have no addresses with port name \"\""
            ),
        )
    } else {
        (
            "ServiceNotFound",
            format!("service/{name} in \"{ns}\" is not present"),
        )
    };
    json!({"conditions": [{"type": "Available", "status": "False", "reason": reason,
        "message": message, "lastTransitionTime": crate::api::now()}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apiservice_with_a_service_is_unavailable_and_listed() {
        let services = [
            json!({"spec": {"group": "metrics.k8s.io", "version": "v1beta1", "service": {"namespace": "kube-system", "name": "metrics-server"}}}),
            json!({"spec": {"group": "apps", "version": "v1", "service": null}}),
            json!({"spec": {"group": "apps", "version": "v2", "service": {"namespace": "x", "name": "y"}}}),
        ];
        let served = |g: &str, v: &str| g == "apps" && v == "v1";
        let gone = unavailable(&services, &served);
        assert_eq!(
            gone,
            [
                ("apps".to_string(), "v2".to_string()),
                ("metrics.k8s.io".to_string(), "v1beta1".to_string())
            ]
        );
        let mut list = json!({"groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]}]});
        list_groups(&mut list, &gone);
        assert_eq!(list["groups"][0]["versions"][1]["groupVersion"], "apps/v2");
        assert_eq!(
            list["groups"][1]["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
    }
}
