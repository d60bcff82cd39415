//! Job creation as a real API server does it (`pkg/registry/batch/job/strategy.go`): unless
//! `spec.manualSelector` is true, the server generates `spec.selector` and the
//! `controller-uid` / `job-name` template labels from the new Job's uid and name, and refuses
//! (422) a create whose template labels or selector carry other values (a Job copied from
//! another cluster keeps its old uid there).
//!
//! An update may change neither `spec.selector` nor `spec.template` (`ValidateJobSpecUpdate`:
//! both immutable), so a Job replaced without the generated selector and labels is refused.
//!
//! Owns only that defaulting and validation; must not touch storage.

use serde_json::{Value, json};

use crate::api::ApiError;

const LEGACY_UID: &str = "controller-uid";
const LEGACY_NAME: &str = "job-name";
const UID: &str = "batch.kubernetes.io/controller-uid";
const NAME: &str = "batch.kubernetes.io/job-name";

/// The causes of a 422 for updating Job `old` to `new`: a changed selector or template.
pub(crate) fn check_update(new: &Value, old: &Value) -> Vec<crate::schema::Cause> {
    let mut causes = Vec::new();
    for field in ["selector", "template"] {
        let (n, o) = (&new["spec"][field], &old["spec"][field]);
        if n != o {
            let shown = if n.is_null() {
                "\"null\"".to_string()
            } else {
                n.to_string()
            };
            causes.push(crate::schema::Cause {
                reason: "FieldValueInvalid",
                field: format!("spec.{field}"),
                message: format!("Invalid value: {shown}: field is immutable"),
            });
        }
    }
    causes
}

/// Generates the selector and labels of a new Job and validates them. `batch_labels`: the
/// `batch.kubernetes.io/` labels of 1.27+ are generated (and selected) too.
pub(crate) fn prepare_create(
    body: &mut Value,
    name: &str,
    batch_labels: bool,
) -> Result<(), ApiError> {
    if body["spec"]["manualSelector"].as_bool() == Some(true) {
        return Ok(());
    }
    let uid = body["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !body["spec"]["template"]["metadata"]["labels"].is_object() {
        body["spec"]["template"]["metadata"]["labels"] = json!({});
    }
    let mut name_keys = vec![LEGACY_NAME];
    let mut uid_keys = vec![LEGACY_UID];
    if batch_labels {
        name_keys.push(NAME);
        uid_keys.push(UID);
    }
    let labels = &mut body["spec"]["template"]["metadata"]["labels"];
    for k in &name_keys {
        if labels.get(*k).is_none() {
            labels[*k] = json!(name);
        }
    }
    for k in &uid_keys {
        if labels.get(*k).is_none() {
            labels[*k] = json!(uid);
        }
    }
    let selected = if batch_labels { UID } else { LEGACY_UID };
    if !body["spec"]["selector"].is_object() {
        body["spec"]["selector"] = json!({});
    }
    if !body["spec"]["selector"]["matchLabels"].is_object() {
        body["spec"]["selector"]["matchLabels"] = json!({});
    }
    if body["spec"]["selector"]["matchLabels"]
        .get(selected)
        .is_none()
    {
        body["spec"]["selector"]["matchLabels"][selected] = json!(uid);
    }

    // validateGeneratedSelector
    let mut causes: Vec<(String, String)> = Vec::new();
    let labels = &body["spec"]["template"]["metadata"]["labels"];
    for (k, want) in uid_keys
        .iter()
        .map(|k| (*k, uid.as_str()))
        .chain(name_keys.iter().map(|k| (*k, name)))
    {
        let have = labels[k].as_str().unwrap_or_default();
        if have != want {
            causes.push((
                format!("spec.template.metadata.labels[{k}]"),
                format!("Invalid value: {have:?}: must be '{want}'"),
            ));
        }
    }
    let mut expected = vec![(LEGACY_UID, uid.as_str())];
    if batch_labels {
        expected.push((UID, uid.as_str()));
        expected.push((NAME, name));
    }
    if !crate::selector::selects(&body["spec"]["selector"], &expected) {
        causes.push((
            "spec.selector".into(),
            format!(
                "Invalid value: {}: `selector` not auto-generated",
                go_selector(&body["spec"]["selector"])
            ),
        ));
    }
    if causes.is_empty() {
        return Ok(());
    }
    let joined: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let message = if joined.len() == 1 {
        joined[0].clone()
    } else {
        format!("[{}]", joined.join(", "))
    };
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("Job.batch {name:?} is invalid: {message}"),
    )
    .with_details(name, "batch", "Job");
    if let Some(d) = e.details.as_mut() {
        d["causes"] = json!(
            causes
                .iter()
                .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
                .collect::<Vec<_>>()
        );
    }
    Err(e)
}

/// A selector as Go prints it in validation messages (`&v1.LabelSelector{...}`).
fn go_selector(selector: &Value) -> String {
    let labels: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!(
        "&v1.LabelSelector{{MatchLabels:map[string]string{{{}}}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}",
        labels.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(labels: Value, selector: Option<Value>) -> Value {
        let mut j = json!({"metadata": {"name": "once", "uid": "new-uid"},
            "spec": {"template": {"metadata": {"labels": labels}, "spec": {}}}});
        if let Some(s) = selector {
            j["spec"]["selector"] = s;
        }
        j
    }

    #[test]
    fn generates_selector_and_labels() {
        let mut j = job(json!({"app": "x"}), None);
        prepare_create(&mut j, "once", true).unwrap();
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "new-uid"}})
        );
        let l = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(l["controller-uid"], "new-uid");
        assert_eq!(l["job-name"], "once");
        assert_eq!(l["batch.kubernetes.io/job-name"], "once");
        let mut old = job(json!({}), None);
        prepare_create(&mut old, "once", false).unwrap();
        assert_eq!(
            old["spec"]["selector"],
            json!({"matchLabels": {"controller-uid": "new-uid"}})
        );
    }

    #[test]
    fn refuses_labels_and_selectors_from_another_job() {
        let mut j = job(
            json!({"controller-uid": "old-uid", "job-name": "once"}),
            Some(json!({"matchLabels": {"controller-uid": "old-uid"}})),
        );
        let e = prepare_create(&mut j, "once", false).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.starts_with(
                "Job.batch \"once\" is invalid: [spec.template.metadata.labels[controller-uid]: Invalid value: \"old-uid\": must be 'new-uid'"
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("`selector` not auto-generated"));
        let mut manual = job(
            json!({"controller-uid": "old-uid"}),
            Some(json!({"matchLabels": {"controller-uid": "old-uid"}})),
        );
        manual["spec"]["manualSelector"] = json!(true);
        prepare_create(&mut manual, "once", false).unwrap();
    }

    #[test]
    fn an_update_keeps_selector_and_template() {
        let old = job(json!({"app": "x", "controller-uid": "u"}), None);
        let mut old = old;
        old["spec"]["selector"] = json!({"matchLabels": {"controller-uid": "u"}});
        let mut same = old.clone();
        same["spec"]["parallelism"] = json!(3);
        assert!(check_update(&same, &old).is_empty());
        let mut dropped = old.clone();
        dropped["spec"].as_object_mut().unwrap().remove("selector");
        dropped["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
        let texts: Vec<String> = check_update(&dropped, &old)
            .iter()
            .map(|c| c.text())
            .collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(
            texts[0],
            "spec.selector: Invalid value: \"null\": field is immutable"
        );
        assert!(
            texts[1].starts_with("spec.template: Invalid value: {"),
            "{texts:?}"
        );
    }
}
