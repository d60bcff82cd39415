//! What a real API server does to a new Pod before storing it, besides the generic metadata
//! checks: the admission plugins that look things up and fill the spec in, and
//! `ValidatePodCreate`'s own rule.
//! - ServiceAccount: `serviceAccountName` defaults to `default` (the deprecated
//!   `serviceAccount` mirrors it); a missing account is refused (403); unless the Pod or its
//!   account turns the automount off, every container and init container without a mount at
//!   [`TOKEN_MOUNT_PATH`] mounts the API token volume, added when the Pod has none: before
//!   1.21 a Secret volume of the account's token Secret (none yet: 504 "No API token found",
//!   retry), from 1.21 a projected `kube-api-access-xxxxx` volume; the account's
//!   `imagePullSecrets` are copied to a Pod that names none.
//! - Priority: `priority` (and, from 1.19, `preemptionPolicy`) computed from
//!   `priorityClassName` or the global default class (which then names the Pod's class); a
//!   missing class, or values in the Pod that differ from the computed ones, are refused (403).
//! - `spec.ephemeralContainers` on create: refused (422) from 1.23, dropped before (the
//!   feature was off by default).
//! - A new PriorityClass (Priority admission): a value above 1,000,000,000, or a second
//!   global default, is refused (403).
//!
//! Messages are the releases' own. Owns only these decisions; the caller supplies what they
//! look up and stores the result. Must not touch storage.

use serde_json::{Value, json};

use crate::schema::Cause;

/// Where the ServiceAccount admission mounts the API token.
pub(crate) const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What a Pod's admission looks up on the server.
pub(crate) struct Lookups<'a> {
    /// The release's minor version.
    pub minor: u32,
    /// A ServiceAccount of the Pod's namespace.
    pub service_account: &'a dyn Fn(&str) -> Option<Value>,
    /// A Secret of the Pod's namespace.
    pub secret: &'a dyn Fn(&str) -> Option<Value>,
    /// Every PriorityClass.
    pub priority_classes: &'a dyn Fn() -> Vec<Value>,
    /// A new random name suffix (5 characters).
    pub suffix: &'a dyn Fn() -> String,
}

/// Why a Pod is refused.
#[derive(Debug, PartialEq)]
pub(crate) enum Refusal {
    /// 403: `pods "<name>" is forbidden: <message>`.
    Forbidden(String),
    /// 504 ServerTimeout with this message (the server asks to retry).
    ServerTimeout(String),
    /// 422 with these causes.
    Invalid(Vec<Cause>),
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Runs the admission of a new Pod (`ns` is its namespace) on `pod`.
pub(crate) fn admit_pod(ns: &str, pod: &mut Value, look: &Lookups<'_>) -> Result<(), Refusal> {
    if !pod["spec"].is_object() {
        return Ok(());
    }
    service_account(ns, pod, look)?;
    priority(pod, look)?;
    let ephemeral = pod["spec"]
        .get("ephemeralContainers")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    if ephemeral && look.minor >= 23 {
        return Err(Refusal::Invalid(vec![Cause::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        )]));
    }
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("ephemeralContainers");
    }
    Ok(())
}

fn service_account(ns: &str, pod: &mut Value, look: &Lookups<'_>) -> Result<(), Refusal> {
    let account = match (
        str_at(pod, "/spec/serviceAccountName"),
        str_at(pod, "/spec/serviceAccount"),
    ) {
        ("", "") => "default",
        ("", a) | (a, _) => a,
    }
    .to_string();
    let Some(sa) = (look.service_account)(&account) else {
        return Err(Refusal::Forbidden(format!(
            "error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
        )));
    };
    pod["spec"]["serviceAccountName"] = json!(account);
    pod["spec"]["serviceAccount"] = json!(account);
    let automount = pod["spec"]
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if automount {
        mount_token(&account, &sa, pod, look)?;
    }
    let has_pull_secrets = pod["spec"]
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    if !has_pull_secrets
        && let Some(list) = sa.get("imagePullSecrets").and_then(Value::as_array)
        && !list.is_empty()
    {
        pod["spec"]["imagePullSecrets"] = Value::Array(list.clone());
    }
    Ok(())
}

/// The name of a token Secret the account references (before 1.21).
fn referenced_token(account: &str, sa: &Value, look: &Lookups<'_>) -> Option<String> {
    let uid = str_at(sa, "/metadata/uid");
    sa.get("secrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .find(|name| {
            (look.secret)(name).is_some_and(|s| {
                str_at(&s, "/type") == "kubernetes.io/service-account-token"
                    && str_at(
                        &s,
                        "/metadata/annotations/kubernetes.io~1service-account.name",
                    ) == account
                    && str_at(
                        &s,
                        "/metadata/annotations/kubernetes.io~1service-account.uid",
                    ) == uid
            })
        })
        .map(str::to_string)
}

fn mount_token(
    account: &str,
    sa: &Value,
    pod: &mut Value,
    look: &Lookups<'_>,
) -> Result<(), Refusal> {
    let bound = look.minor >= 21;
    let secret = if bound {
        String::new()
    } else {
        referenced_token(account, sa, look).ok_or_else(|| {
            Refusal::ServerTimeout(format!(
                "No API token found for service account \"{account}\", retry after the token is automatically created and added to the service account"
            ))
        })?
    };
    let volumes: Vec<Value> = pod["spec"]
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let existing = volumes.iter().find(|v| {
        if bound {
            str_at(v, "/name").starts_with("kube-api-access-")
        } else {
            str_at(v, "/secret/secretName") == secret
        }
    });
    let has_volume = existing.is_some();
    let volume_name = match existing {
        Some(v) => str_at(v, "/name").to_string(),
        None if bound => format!("kube-api-access-{}", (look.suffix)()),
        None if volumes.iter().any(|v| str_at(v, "/name") == secret) => {
            format!("{secret}-{}", (look.suffix)())
        }
        None => secret.clone(),
    };
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod["spec"].get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let mounted = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|m| str_at(m, "/mountPath") == TOKEN_MOUNT_PATH);
            if mounted || !c.is_object() {
                continue;
            }
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(mounts) => mounts.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needs_volume = true;
        }
    }
    if has_volume || !needs_volume {
        return Ok(());
    }
    let volume = if bound {
        json!({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
    } else {
        json!({"name": volume_name, "secret": {"secretName": secret, "defaultMode": 420}})
    };
    match pod["spec"].get_mut("volumes").and_then(Value::as_array_mut) {
        Some(list) => list.push(volume),
        None => pod["spec"]["volumes"] = json!([volume]),
    }
    Ok(())
}

fn priority(pod: &mut Value, look: &Lookups<'_>) -> Result<(), Refusal> {
    let classes = (look.priority_classes)();
    let policy_of = |pc: &Value| match str_at(pc, "/preemptionPolicy") {
        "" => "PreemptLowerPriority".to_string(),
        p => p.to_string(),
    };
    let class_name = str_at(pod, "/spec/priorityClassName").to_string();
    let (value, policy) = if class_name.is_empty() {
        // The global default with the lowest value, if any.
        let default = classes
            .iter()
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0));
        match default {
            Some(pc) => {
                pod["spec"]["priorityClassName"] = json!(str_at(pc, "/metadata/name"));
                (
                    pc.get("value").and_then(Value::as_i64).unwrap_or(0),
                    policy_of(pc),
                )
            }
            None => (0, "PreemptLowerPriority".to_string()),
        }
    } else {
        let Some(pc) = classes
            .iter()
            .find(|c| str_at(c, "/metadata/name") == class_name)
        else {
            return Err(Refusal::Forbidden(format!(
                "no PriorityClass with name {class_name} was found"
            )));
        };
        (
            pc.get("value").and_then(Value::as_i64).unwrap_or(0),
            policy_of(pc),
        )
    };
    if let Some(given) = pod["spec"].get("priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(Refusal::Forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    pod["spec"]["priority"] = json!(value);
    if look.minor >= 19 {
        let given = str_at(pod, "/spec/preemptionPolicy").to_string();
        if !given.is_empty() && given != policy {
            return Err(Refusal::Forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
        pod["spec"]["preemptionPolicy"] = json!(policy);
    }
    Ok(())
}

/// The highest value of a PriorityClass that is not a system one.
const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;

/// Priority admission of a new PriorityClass (`classes`: the existing ones).
pub(crate) fn admit_priority_class(pc: &Value, classes: &[Value]) -> Result<(), Refusal> {
    let name = str_at(pc, "/metadata/name");
    let value = pc.get("value").and_then(Value::as_i64).unwrap_or(0);
    let system = matches!(
        (name, value),
        ("system-cluster-critical", 2_000_000_000) | ("system-node-critical", 2_000_001_000)
    );
    if value > HIGHEST_USER_DEFINABLE_PRIORITY && !system {
        return Err(Refusal::Forbidden(format!(
            "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
        )));
    }
    if pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
        && let Some(other) = classes
            .iter()
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
    {
        return Err(Refusal::Forbidden(format!(
            "PriorityClass {} is already marked as default. Only one default can exist",
            str_at(other, "/metadata/name")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(
        minor: u32,
        pod: &mut Value,
        accounts: &[Value],
        secrets: &[Value],
        classes: &[Value],
    ) -> Result<(), Refusal> {
        let by_name = |list: &[Value], n: &str| {
            list.iter()
                .find(|v| str_at(v, "/metadata/name") == n)
                .cloned()
        };
        let sa = |n: &str| by_name(accounts, n);
        let secret = |n: &str| by_name(secrets, n);
        let pcs = || classes.to_vec();
        let suffix = || "abcde".to_string();
        admit_pod(
            "ns",
            pod,
            &Lookups {
                minor,
                service_account: &sa,
                secret: &secret,
                priority_classes: &pcs,
                suffix: &suffix,
            },
        )
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
            "volumes": [{"name": "d", "emptyDir": {}}]}})
    }

    #[test]
    fn a_pod_mounts_its_accounts_token_as_each_release_does() {
        let sa = json!({"metadata": {"name": "default", "uid": "u1"}, "secrets": [{"name": "default-token-x2x2x"}],
            "imagePullSecrets": [{"name": "registry"}]});
        let token = json!({"metadata": {"name": "default-token-x2x2x", "annotations": {
            "kubernetes.io/service-account.name": "default", "kubernetes.io/service-account.uid": "u1"}},
            "type": "kubernetes.io/service-account-token"});
        let mut p = pod();
        admit(
            19,
            &mut p,
            std::slice::from_ref(&sa),
            std::slice::from_ref(&token),
            &[],
        )
        .unwrap();
        let spec = &p["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(
            spec["volumes"][1],
            json!({"name": "default-token-x2x2x", "secret": {"secretName": "default-token-x2x2x", "defaultMode": 420}})
        );
        let mount =
            json!({"name": "default-token-x2x2x", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        // Admitting the result again changes nothing (the volume is found).
        let mut again = p.clone();
        admit(
            19,
            &mut again,
            std::slice::from_ref(&sa),
            std::slice::from_ref(&token),
            &[],
        )
        .unwrap();
        assert_eq!(again, p);
        // No token Secret yet: the server asks to retry.
        let mut p = pod();
        assert!(
            matches!(admit(19, &mut p, std::slice::from_ref(&sa), &[], &[]), Err(Refusal::ServerTimeout(m)) if m.starts_with("No API token found for service account \"default\""))
        );
        // 1.21 and later: a projected token, no Secret needed.
        let mut p = pod();
        admit(21, &mut p, std::slice::from_ref(&sa), &[], &[]).unwrap();
        assert_eq!(p["spec"]["volumes"][1]["name"], "kube-api-access-abcde");
        assert_eq!(
            p["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["path"],
            "token"
        );
        // The automount turned off by the Pod or by its account.
        for (pod_says, sa_says) in [(Some(false), None), (None, Some(false))] {
            let mut p = pod();
            let mut sa = sa.clone();
            if let Some(b) = pod_says {
                p["spec"]["automountServiceAccountToken"] = json!(b);
            }
            if let Some(b) = sa_says {
                sa["automountServiceAccountToken"] = json!(b);
            }
            admit(25, &mut p, &[sa], &[], &[]).unwrap();
            assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1, "{p}");
        }
        let mut p = pod();
        p["spec"]["serviceAccountName"] = json!("robot");
        assert_eq!(
            admit(25, &mut p, &[sa], &[], &[]),
            Err(Refusal::Forbidden(
                "error looking up service account ns/robot: serviceaccount \"robot\" not found"
                    .into()
            ))
        );
    }

    #[test]
    fn priority_comes_from_the_class_and_a_different_one_is_refused() {
        let sa = json!({"metadata": {"name": "default"}});
        let high =
            json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        let fallback =
            json!({"metadata": {"name": "fallback"}, "value": 10, "globalDefault": true});
        let mut p = pod();
        p["spec"]["priorityClassName"] = json!("high");
        admit(
            25,
            &mut p,
            std::slice::from_ref(&sa),
            &[],
            std::slice::from_ref(&high),
        )
        .unwrap();
        assert_eq!(
            (&p["spec"]["priority"], &p["spec"]["preemptionPolicy"]),
            (&json!(1000), &json!("Never"))
        );
        let mut p = pod();
        admit(
            25,
            &mut p,
            std::slice::from_ref(&sa),
            &[],
            &[high.clone(), fallback],
        )
        .unwrap();
        assert_eq!(
            (&p["spec"]["priorityClassName"], &p["spec"]["priority"]),
            (&json!("fallback"), &json!(10))
        );
        let mut p = pod();
        p["spec"]["priorityClassName"] = json!("high");
        p["spec"]["priority"] = json!(0);
        assert_eq!(
            admit(25, &mut p, std::slice::from_ref(&sa), &[], std::slice::from_ref(&high)),
            Err(Refusal::Forbidden("the integer value of priority (0) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name".into()))
        );
        let mut p = pod();
        p["spec"]["priorityClassName"] = json!("high");
        p["spec"]["preemptionPolicy"] = json!("PreemptLowerPriority");
        assert!(
            matches!(admit(25, &mut p, std::slice::from_ref(&sa), &[], &[high]), Err(Refusal::Forbidden(m)) if m.starts_with("the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided"))
        );
        let mut p = pod();
        p["spec"]["priorityClassName"] = json!("missing");
        assert_eq!(
            admit(25, &mut p, &[sa], &[], &[]),
            Err(Refusal::Forbidden(
                "no PriorityClass with name missing was found".into()
            ))
        );
    }

    #[test]
    fn ephemeral_containers_are_refused_on_create_from_1_23_and_dropped_before() {
        let sa = json!({"metadata": {"name": "default"}});
        let mut p = pod();
        p["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox"}]);
        let mut old = p.clone();
        admit(22, &mut old, std::slice::from_ref(&sa), &[], &[]).unwrap();
        assert!(old["spec"].get("ephemeralContainers").is_none());
        let Err(Refusal::Invalid(causes)) = admit(23, &mut p, &[sa], &[], &[]) else {
            panic!("accepted");
        };
        assert_eq!(
            causes[0].text(),
            "spec.ephemeralContainers: Forbidden: cannot be set on create"
        );
    }

    #[test]
    fn a_second_global_default_class_is_refused() {
        let fallback =
            json!({"metadata": {"name": "fallback"}, "value": 10, "globalDefault": true});
        let other = json!({"metadata": {"name": "other"}, "value": 5, "globalDefault": true});
        assert_eq!(
            admit_priority_class(&other, std::slice::from_ref(&fallback)),
            Err(Refusal::Forbidden(
                "PriorityClass fallback is already marked as default. Only one default can exist"
                    .into()
            ))
        );
        assert_eq!(admit_priority_class(&other, &[]), Ok(()));
        let huge = json!({"metadata": {"name": "huge"}, "value": 1_500_000_000});
        assert!(admit_priority_class(&huge, &[]).is_err());
        let system = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000});
        assert_eq!(admit_priority_class(&system, &[]), Ok(()));
    }
}
