//! Event creation rules of kube-apiserver's `ValidateEventCreate`: the legacy checks every
//! Event passes (core `v1` and `events.k8s.io`: with an `eventTime`, a reporting controller
//! that is a qualified name, a reporting instance, action and reason of at most 128 characters,
//! a note of at most 1024), and the strict ones of `events.k8s.io/v1` (an `eventTime`, type
//! `Normal` or `Warning`, no deprecated count, timestamps or source). Field paths are the core
//! names the server validates (`message` for an `events.k8s.io` note).
//!
//! Owns: these rules. Must not touch: the store.

use serde_json::Value;

use crate::schema::Cause;

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: "Required value".into(),
    }
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!(
            "Invalid value: {}: {detail}",
            serde_json::to_string(value).unwrap_or_default()
        ),
    }
}

/// The causes of a 422 for creating `ev` through `group`/`version` (`""`/`v1` or
/// `events.k8s.io`/`v1beta1`/`v1`), for a server of minor version `minor`.
pub(crate) fn check_create(group: &str, version: &str, ev: &Value, minor: u32) -> Vec<Cause> {
    let new_api = group == "events.k8s.io";
    // The fields in their core names.
    let pick = |core: &str, new: &str| -> &str {
        if new_api {
            text(ev, &[new])
        } else {
            text(ev, &[core])
        }
    };
    let message = pick("message", "note");
    let controller = pick("reportingComponent", "reportingController");
    let instance = text(ev, &["reportingInstance"]);
    let action = text(ev, &["action"]);
    let reason = text(ev, &["reason"]);
    let event_time = text(ev, &["eventTime"]);
    let involved_ns = if new_api {
        text(ev, &["regarding", "namespace"])
    } else {
        text(ev, &["involvedObject", "namespace"])
    };
    let ns = text(ev, &["metadata", "namespace"]);

    let mut causes = Vec::new();
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if event_time.is_empty() {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                causes.push(mismatch());
            }
        } else if ns != involved_ns {
            causes.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            causes.push(mismatch());
        }
        if controller.is_empty() {
            causes.push(required("reportingController"));
        }
        for e in crate::meta::qualified_name_errors_for(controller, minor) {
            causes.push(invalid("reportingController", controller, &e));
        }
        for (field, value, limit) in [
            ("reportingInstance", instance, REPORTING_INSTANCE_LIMIT),
            ("action", action, ACTION_LIMIT),
            ("reason", reason, REASON_LIMIT),
        ] {
            if value.is_empty() {
                causes.push(required(field));
            }
            if value.len() > limit {
                causes.push(invalid(
                    field,
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if message.len() > NOTE_LIMIT {
            causes.push(invalid(
                "message",
                "",
                &format!("can have at most {NOTE_LIMIT} characters"),
            ));
        }
    }
    if !(new_api && version == "v1") {
        return causes;
    }
    // The strict checks of events.k8s.io/v1.
    if event_time.is_empty() {
        causes.push(required("eventTime"));
    }
    let kind = text(ev, &["type"]);
    if kind != "Normal" && kind != "Warning" {
        causes.push(invalid("type", "", &format!("has invalid value: {kind}")));
    }
    for (field, core) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
    ] {
        if !text(ev, &[field]).is_empty() {
            causes.push(invalid(core, "", "needs to be unset"));
        }
    }
    if ev
        .get("deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        != 0
    {
        causes.push(invalid("count", "", "needs to be unset"));
    }
    if !text(ev, &["deprecatedSource", "component"]).is_empty()
        || !text(ev, &["deprecatedSource", "host"]).is_empty()
    {
        causes.push(invalid("source", "", "needs to be unset"));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_event(note: &str) -> Value {
        json!({"metadata": {"name": "e", "namespace": "ns"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "type": "Normal", "reason": "Completed", "action": "Reconcile", "note": note,
            "reportingController": "k8s-snap", "reportingInstance": "k8s-snap-host",
            "regarding": {"kind": "Snapshot", "namespace": "ns", "name": "s"}})
    }

    #[test]
    fn a_complete_v1_event_passes_and_a_long_note_does_not() {
        assert_eq!(
            check_create("events.k8s.io", "v1", &v1_event("done"), 25),
            vec![]
        );
        let causes = check_create("events.k8s.io", "v1", &v1_event(&"x".repeat(1025)), 25);
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        assert_eq!(
            texts,
            ["message: Invalid value: \"\": can have at most 1024 characters"]
        );
    }

    #[test]
    fn v1_events_need_the_new_fields_and_legacy_ones_do_not() {
        let bare = json!({"metadata": {"name": "e", "namespace": "ns"},
            "regarding": {"namespace": "ns"}, "deprecatedCount": 3});
        let texts: Vec<String> = check_create("events.k8s.io", "v1", &bare, 25)
            .iter()
            .map(Cause::text)
            .collect();
        assert_eq!(
            texts,
            [
                "eventTime: Required value",
                "type: Invalid value: \"\": has invalid value: ",
                "count: Invalid value: \"\": needs to be unset"
            ]
        );
        assert!(check_create("events.k8s.io", "v1beta1", &bare, 25).is_empty());
        let core =
            json!({"metadata": {"namespace": "ns"}, "involvedObject": {"namespace": "other"}});
        let texts: Vec<String> = check_create("", "v1", &core, 19)
            .iter()
            .map(Cause::text)
            .collect();
        assert_eq!(
            texts,
            ["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
        );
    }
}
