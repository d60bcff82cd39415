//! Server-side apply and field ownership as a real API server keeps them: fields a manager
//! stops applying are removed, other managers' differing fields conflict (409, causes) unless
//! forced, disjoint managers coexist, non-apply writes take fields as `Update` entries, and
//! `metadata.managedFields` has the real shape (`subresource` from 1.22).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, ServerVersion};
use serde_json::{Value, json};

use crate::{api_err, start};

/// An applied ConfigMap `c`; `labels` only when not empty (an empty map is a field too).
fn cm_config(data: Value, labels: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": data});
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        v["metadata"]["labels"] = labels;
    }
    v
}

async fn apply<K>(api: &Api<K>, manager: &str, force: bool, obj: Value) -> kube::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut pp = PatchParams::apply(manager);
    pp.force = force;
    api.patch("c", &pp, &Patch::Apply(obj)).await
}

/// Manager `manager` applies ConfigMap `c` with `data` and `labels` (without force); the
/// apply must succeed.
async fn applied(api: &Api<ConfigMap>, manager: &str, data: Value, labels: Value) -> ConfigMap {
    apply(api, manager, false, cm_config(data, labels))
        .await
        .unwrap()
}

/// An emulator with the empty fixture and the ConfigMaps of its `default` namespace.
async fn started() -> (kube_emulator::EmulatorHandle, Api<ConfigMap>) {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    (emu, api)
}

/// An emulator with ConfigMap `c` (`data.x: "1"`, `data.z: "3"`) applied by manager `a`.
async fn applied_by_a() -> (kube_emulator::EmulatorHandle, Api<ConfigMap>) {
    let (emu, api) = started().await;
    apply(&api, "a", false, a_config()).await.unwrap();
    (emu, api)
}

/// What manager `a` applies in [`applied_by_a`].
fn a_config() -> Value {
    cm_config(json!({"x": "1", "z": "3"}), json!({}))
}

/// `(manager, operation)` of each managedFields entry, and the entries as JSON.
fn entries(obj: &impl serde::Serialize) -> (Vec<(String, String)>, Vec<Value>) {
    let v = serde_json::to_value(obj).unwrap();
    let list = v["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids = list
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (ids, list)
}

fn fields_of<'a>(list: &'a [Value], manager: &str) -> &'a Value {
    &list
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry of {manager} in {list:?}"))["fieldsV1"]
}

#[tokio::test]
async fn a_field_dropped_from_the_next_apply_is_removed() {
    let (emu, api) = started().await;
    applied(&api, "a", json!({"x": "1", "y": "2"}), json!({"app": "c"})).await;
    let second = apply(&api, "a", false, cm_config(json!({"x": "1"}), json!({})))
        .await
        .unwrap();
    let data = second.data.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("1"));
    assert!(!data.contains_key("y"), "{data:?}");
    assert!(second.metadata.labels.unwrap_or_default().is_empty());
    let (ids, list) = entries(&api.get("c").await.unwrap());
    assert_eq!(ids, vec![("a".to_string(), "Apply".to_string())]);
    assert_eq!(fields_of(&list, "a"), &json!({"f:data": {"f:x": {}}}));
    emu.shutdown().await;
}

#[tokio::test]
async fn another_managers_differing_field_conflicts_and_force_takes_it() {
    let (emu, api) = applied_by_a().await;
    let e = api_err(apply(&api, "b", false, cm_config(json!({"x": "2"}), json!({}))).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"a\": .data.x"
    );
    let causes = e.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".data.x");
    assert_eq!(causes[0].message, "conflict with \"a\"");
    // Nothing was written by the refused apply.
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["x"], "1");
    // Several conflicts: counted and grouped by manager.
    let e = api_err(
        apply(
            &api,
            "b",
            false,
            cm_config(json!({"x": "2", "z": "4"}), json!({})),
        )
        .await,
    );
    assert_eq!(
        e.message,
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .data.x\n- .data.z"
    );
    // The same value is no conflict: both own it.
    apply(&api, "b", false, cm_config(json!({"x": "1"}), json!({})))
        .await
        .unwrap();
    let (_, list) = entries(&api.get("c").await.unwrap());
    assert_eq!(fields_of(&list, "b"), &json!({"f:data": {"f:x": {}}}));
    assert_eq!(
        fields_of(&list, "a"),
        &json!({"f:data": {"f:x": {}, "f:z": {}}})
    );
    // force=true takes the field from "a".
    let forced = apply(&api, "b", true, cm_config(json!({"x": "2"}), json!({})))
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["x"], "2");
    let (_, list) = entries(&forced);
    assert_eq!(fields_of(&list, "a"), &json!({"f:data": {"f:z": {}}}));
    assert_eq!(fields_of(&list, "b"), &json!({"f:data": {"f:x": {}}}));
    // "a" dropping x now leaves it alone: "b" owns it.
    let after = apply(&api, "a", false, cm_config(json!({"z": "3"}), json!({})))
        .await
        .unwrap();
    assert_eq!(after.data.unwrap()["x"], "2");
    emu.shutdown().await;
}

#[tokio::test]
async fn managers_applying_disjoint_fields_both_keep_theirs() {
    let (emu, api) = started().await;
    applied(&api, "a", json!({"x": "1"}), json!({"a": "1"})).await;
    applied(&api, "b", json!({"y": "2"}), json!({"b": "2"})).await;
    // "a" applies again: what "b" applied stays.
    let got = applied(&api, "a", json!({"x": "1"}), json!({"a": "1"})).await;
    let data = got.data.unwrap();
    assert_eq!((data["x"].as_str(), data["y"].as_str()), ("1", "2"));
    let labels = got.metadata.labels.unwrap();
    assert_eq!(labels.len(), 2, "{labels:?}");
    let (ids, list) = entries(&api.get("c").await.unwrap());
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(
        fields_of(&list, "b"),
        &json!({"f:data": {"f:y": {}}, "f:metadata": {"f:labels": {"f:b": {}}}})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn an_update_takes_a_field_from_an_apply_manager() {
    let (emu, api) = applied_by_a().await;
    let patched = api
        .patch(
            "c",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"x": "2"}})),
        )
        .await
        .unwrap();
    let (ids, list) = entries(&patched);
    assert_eq!(
        ids,
        vec![
            ("a".to_string(), "Apply".to_string()),
            ("editor".to_string(), "Update".to_string())
        ]
    );
    assert_eq!(fields_of(&list, "editor"), &json!({"f:data": {"f:x": {}}}));
    assert_eq!(fields_of(&list, "a"), &json!({"f:data": {"f:z": {}}}));
    let editor = list.iter().find(|e| e["manager"] == "editor").unwrap();
    assert_eq!(editor["apiVersion"], "v1");
    // Applying the old value again conflicts with the editor's Update.
    let e = api_err(apply(&api, "a", false, a_config()).await);
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.x"
    );
    emu.shutdown().await;
}

fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "c"},
        "spec": {"selector": {"matchLabels": {"app": "c"}},
            "template": {"metadata": {"labels": {"app": "c"}}, "spec": {"containers": containers}}}})
}

#[tokio::test]
async fn managed_fields_have_the_real_shape_and_lists_merge_by_key() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let two = json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]},
        {"name": "side", "image": "busybox"}]);
    let d = apply(&api, "deployer", false, deployment(two))
        .await
        .unwrap();
    let (ids, list) = entries(&d);
    assert_eq!(ids, vec![("deployer".to_string(), "Apply".to_string())]);
    let e = &list[0];
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(e.get("subresource").is_none());
    let spec = &e["fieldsV1"]["f:spec"];
    assert_eq!(spec["f:selector"], json!({}), "label selectors are atomic");
    let web = &spec["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(web["."], json!({}));
    assert_eq!(web["f:image"], json!({}));
    assert_eq!(
        web["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
        json!({".": {}, "f:containerPort": {}})
    );
    // Another manager sets one container's image by strategic merge: an Update entry.
    api.patch(
        "c",
        &PatchParams {
            field_manager: Some("kubectl-set".into()),
            ..Default::default()
        },
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:2"}]}}}})),
    )
    .await
    .unwrap();
    // The deployer drops "side": its fields the deployer alone owned go, the image the other
    // manager owns (and the key) stay.
    let one = json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]);
    let d = apply(&api, "deployer", false, deployment(one))
        .await
        .unwrap();
    let containers = d.spec.template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[1].name, "side");
    assert_eq!(containers[1].image.as_deref(), Some("busybox:2"));
    // Dropped by everyone: removed.
    let d = apply(
        &api,
        "deployer",
        true,
        deployment(json!([{"name": "web", "image": "nginx"}])),
    )
    .await
    .unwrap();
    let web = &d.spec.template.spec.unwrap().containers[0];
    assert!(web.ports.is_none(), "{web:?}");
    // A POST records an Update entry for its fieldManager.
    let created = Api::<ConfigMap>::namespaced(c.clone(), "default")
        .create(
            &PostParams {
                field_manager: Some("creator".into()),
                ..Default::default()
            },
            &serde_json::from_value(
                json!({"metadata": {"name": "made", "labels": {"k": "v"}}, "data": {"a": "b"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (ids, list) = entries(&created);
    assert_eq!(ids, vec![("creator".to_string(), "Update".to_string())]);
    assert_eq!(
        list[0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:k": {}}}})
    );
    emu.shutdown().await;
}

fn raw_patch(path: &str, ct: &str, body: &Value) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::builder()
        .method("PATCH")
        .uri(path)
        .header("content-type", ct)
        .body(serde_json::to_vec(body).unwrap())
        .unwrap()
}

#[tokio::test]
async fn apply_without_field_manager_and_force_on_other_patches_are_refused() {
    let emu = start().await;
    let c = emu.client().await;
    let path = "/api/v1/namespaces/default/configmaps/c";
    let e = api_err(
        c.request::<Value>(raw_patch(
            path,
            "application/apply-patch+yaml",
            &cm_config(json!({"x": "1"}), json!({})),
        ))
        .await,
    );
    // What a real server answers (PatchOptions validation).
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    assert!(
        Api::<ConfigMap>::namespaced(c.clone(), "default")
            .get_opt("c")
            .await
            .unwrap()
            .is_none()
    );
    // A wrong apiVersion is a 400.
    let e = api_err(
        c.request::<Value>(raw_patch(
            &format!("{path}?fieldManager=a"),
            "application/apply-patch+yaml",
            &json!({"apiVersion": "v2", "kind": "ConfigMap"}),
        ))
        .await,
    );
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        "Incorrect version specified in apply patch. Specified patch version: v2, expected: v1"
    );
    // A body that is no object of fields.
    let e = api_err(
        c.request::<Value>(raw_patch(
            &format!("{path}?fieldManager=a"),
            "application/apply-patch+yaml",
            &json!(["not", "an", "object"]),
        ))
        .await,
    );
    assert_eq!(e.code, 400);
    assert!(
        e.message.starts_with("error decoding YAML: "),
        "{}",
        e.message
    );
    crate::create_cm(&c, "default", "c").await;
    let e = api_err(
        c.request::<Value>(raw_patch(
            &format!("{path}?force=true"),
            "application/merge-patch+json",
            &json!({"data": {"x": "1"}}),
        ))
        .await,
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn status_and_scale_writes_name_their_subresource_from_1_22() {
    for (v, sub) in [
        (ServerVersion::V1_19, None),
        (ServerVersion::Latest, Some("status")),
    ] {
        let emu = Emulator::builder().server_version(v).start().await.unwrap();
        let api: Api<Deployment> = Api::namespaced(emu.client().await, "default");
        apply(
            &api,
            "deployer",
            false,
            deployment(json!([{"name": "web", "image": "nginx"}])),
        )
        .await
        .unwrap();
        let status = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "status": {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}});
        let mut pp = PatchParams::apply("ctrl");
        pp.force = true;
        let d = api
            .patch_status("c", &pp, &Patch::Apply(status))
            .await
            .unwrap();
        assert_eq!(d.status.as_ref().unwrap().replicas, Some(1));
        let (ids, list) = entries(&d);
        assert_eq!(ids.len(), 2, "{ids:?}");
        let e = list.iter().find(|e| e["manager"] == "ctrl").unwrap();
        assert_eq!(e["subresource"].as_str(), sub, "{v:?}");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:status": {"f:replicas": {}, "f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
        );
        // The controller drops a condition: removed.
        let status =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": {"replicas": 1}});
        let d = api
            .patch_status("c", &pp, &Patch::Apply(status))
            .await
            .unwrap();
        assert!(d.status.unwrap().conditions.is_none());
        // A /scale write owns spec.replicas, as that subresource from 1.22.
        let pp = PatchParams {
            field_manager: Some("scaler".into()),
            ..Default::default()
        };
        api.patch_scale("c", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}})))
            .await
            .unwrap();
        let (_, list) = entries(&api.get("c").await.unwrap());
        let e = list.iter().find(|e| e["manager"] == "scaler").unwrap();
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["subresource"].as_str(), sub.map(|_| "scale"), "{v:?}");
        assert_eq!(e["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn custom_resources_follow_their_crd_schema() {
    let emu = Emulator::builder()
        .crd_establish_delay(std::time::Duration::ZERO)
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}}}},
                    "status": {"type": "object", "properties": {
                        "phase": {"type": "string"},
                        "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["type"],
                            "items": {"type": "object", "properties": {
                                "type": {"type": "string"}, "status": {"type": "string"}}}}}}}}}}]}});
    c.request::<Value>(
        axum::http::Request::builder()
            .method("POST")
            .uri("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&crd).unwrap())
            .unwrap(),
    )
    .await
    .unwrap();
    let gvk = kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let w = |spec: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "c"}, "spec": spec});
    apply(
        &api,
        "owner",
        false,
        w(json!({"size": 1, "tags": ["a", "b"]})),
    )
    .await
    .unwrap();
    // Atomic list: another manager's different list conflicts as a whole.
    let e = api_err(apply(&api, "other", false, w(json!({"tags": ["a"]}))).await);
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"owner\": .spec.tags"
    );
    // Status: conditions keyed by type; dropping one removes it.
    let status = |conds: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"phase": "Ready", "conditions": conds}});
    let mut pp = PatchParams::apply("ctrl");
    pp.force = true;
    let two = json!([{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]);
    let got = api
        .patch_status("c", &pp, &Patch::Apply(status(two)))
        .await
        .unwrap();
    let (_, list) = entries(&got);
    let ctrl = list.iter().find(|e| e["manager"] == "ctrl").unwrap();
    assert_eq!(ctrl["subresource"], "status");
    assert_eq!(
        ctrl["fieldsV1"]["f:status"]["f:conditions"]["k:{\"type\":\"B\"}"],
        json!({".": {}, "f:type": {}, "f:status": {}})
    );
    let got = api
        .patch_status(
            "c",
            &pp,
            &Patch::Apply(status(json!([{"type": "A", "status": "True"}]))),
        )
        .await
        .unwrap();
    assert_eq!(
        got.data["status"]["conditions"],
        json!([{"type": "A", "status": "True"}])
    );
    assert_eq!(got.data["spec"], json!({"size": 1, "tags": ["a", "b"]}));
    emu.shutdown().await;
}
