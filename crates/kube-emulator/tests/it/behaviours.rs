//! Cluster behaviours restores rely on, discovery, auth and fixture seeding.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube_emulator::{Emulator, Fixture};
use serde_json::json;

use crate::{api_err, eventually, start};

fn crd_json(group: &str, status: bool) -> serde_json::Value {
    let mut v = json!({"name": "v1", "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
    if status {
        v["subresources"] = json!({"status": {}});
    }
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [v]}})
}

fn widget_api(c: &kube::Client, group: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", "Widget"), "widgets");
    Api::namespaced_with(c.clone(), "default", &ar)
}

fn widget(group: &str, name: &str) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": name}, "spec": {"size": 1}, "status": {"ok": true}}),
    )
    .unwrap()
}

#[tokio::test]
async fn discovery_serves_builtin_groups_and_subresources() {
    let emu = start().await;
    let c = emu.client().await;
    let d = Discovery::new(c.clone()).run().await.unwrap();
    let groups: Vec<String> = d.groups().map(|g| g.name().to_string()).collect();
    for g in [
        "",
        "apps",
        "batch",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "apiextensions.k8s.io",
        "policy",
        "autoscaling",
        "coordination.k8s.io",
        "events.k8s.io",
        "discovery.k8s.io",
        "scheduling.k8s.io",
    ] {
        assert!(
            groups.iter().any(|x| x == g),
            "group {g:?} missing from {groups:?}"
        );
    }
    let core = d.get("").unwrap();
    let (pods, caps) = core
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.plural == "pods")
        .unwrap();
    assert_eq!(pods.kind, "Pod");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.supports_operation(verbs::WATCH));
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "log"));
    let (_, cs) = core
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.plural == "componentstatuses")
        .unwrap();
    assert!(!cs.supports_operation(verbs::CREATE));
    let raw: serde_json::Value = c.request(http_get("/api/v1")).await.unwrap();
    let pods = raw["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["categories"], json!(["all"]));
    assert_eq!(pods["shortNames"], json!(["po"]));
    let apis: serde_json::Value = c.request(http_get("/apis")).await.unwrap();
    let auto = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .unwrap();
    assert_eq!(auto["preferredVersion"]["version"], "v2");
    let version = c.apiserver_version().await.unwrap();
    assert_eq!(version.minor, "32");
    emu.shutdown().await;
}

fn http_get(path: &str) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::builder()
        .uri(path)
        .body(Vec::new())
        .expect("valid request")
}

/// A real server writes a built-in object from its Go struct: `kind`, `apiVersion`,
/// `metadata`, then the type's fields; a list item of it without the type (clients, ours
/// included, find the metadata before the bulk of the object).
#[tokio::test]
async fn built_in_objects_are_written_in_a_real_servers_field_order() {
    let emu = start().await;
    let c = emu.client().await;
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "order", "namespace": "default"}, "data": {"a": "b"}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let got = c
        .request_text(http_get("/api/v1/namespaces/default/configmaps/order"))
        .await
        .unwrap();
    assert!(
        got.starts_with(r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"#),
        "{got}"
    );
    assert!(got.contains(r#"},"data":{"a":"b"}"#), "{got}");
    let list = c
        .request_text(http_get(
            "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dorder",
        ))
        .await
        .unwrap();
    assert!(
        list.starts_with(r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"#),
        "{list}"
    );
    assert!(list.contains(r#""items":[{"metadata":{"#), "{list}");
    assert!(!list.contains(r#""kind":"ConfigMap","#), "{list}");
    emu.shutdown().await;
}

#[tokio::test]
async fn new_namespaces_get_a_default_service_account_and_legacy_token_secrets() {
    let emu = Emulator::builder()
        .legacy_token_secrets(true)
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}),
    )
    .unwrap();
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "app");
    let sa = sas.get("default").await.unwrap();
    let secret_name = sa.secrets.unwrap()[0].name.clone().unwrap();
    let secret = Api::<Secret>::namespaced(c.clone(), "app")
        .get(&secret_name)
        .await
        .unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    assert_eq!(
        secret.metadata.annotations.unwrap()["kubernetes.io/service-account.uid"],
        sa.metadata.uid.unwrap()
    );
    emu.shutdown().await;
    // the default mode creates no token secrets
    let emu = start().await;
    let c = emu.client().await;
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert!(
        Api::<ServiceAccount>::namespaced(c.clone(), "app")
            .get("default")
            .await
            .is_ok()
    );
    assert!(
        Api::<Secret>::namespaced(c.clone(), "app")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    emu.shutdown().await;
}

fn svc(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports_with_conflicts() {
    let a = Emulator::builder()
        .service_cidr("10.96.0.0/16")
        .start()
        .await
        .unwrap();
    let b = Emulator::builder()
        .service_cidr("10.100.0.0/24")
        .start()
        .await
        .unwrap();
    let ca = a.client().await;
    let api: Api<Service> = Api::namespaced(ca.clone(), "default");
    let kubernetes = api.get("kubernetes").await.unwrap();
    assert_eq!(
        kubernetes.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.1")
    );
    let s1 = api
        .create(
            &PostParams::default(),
            &svc("s1", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let spec = s1.spec.unwrap();
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.96."));
    assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    let e = api_err(
        api.create(
            &PostParams::default(),
            &svc("s2", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.contains("provided IP is already allocated"),
        "{}",
        e.message
    );
    let h = api
        .create(
            &PostParams::default(),
            &svc(
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(h.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let np = api
        .create(
            &PostParams::default(),
            &svc(
                "np",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(np.spec.unwrap().ports.unwrap()[0].node_port, Some(30080));
    let e = api_err(
        api.create(
            &PostParams::default(),
            &svc(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 30080}]}),
            ),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("provided port is already allocated"),
        "{}",
        e.message
    );
    let auto = api
        .create(
            &PostParams::default(),
            &svc(
                "lb",
                json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap();
    assert!(
        auto.spec.unwrap().ports.unwrap()[0]
            .node_port
            .is_some_and(|p| (30000..=32767).contains(&p))
    );
    // deleting releases the IP
    api.delete("s1", &Default::default()).await.unwrap();
    api.create(
        &PostParams::default(),
        &svc("s3", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
    )
    .await
    .unwrap();
    // the other emulator allocates from its own range
    let sb = Api::<Service>::namespaced(b.client().await, "default")
        .create(
            &PostParams::default(),
            &svc("s1", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    assert!(
        sb.spec
            .unwrap()
            .cluster_ip
            .unwrap()
            .starts_with("10.100.0.")
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn crds_are_established_after_the_delay_and_serve_their_resources() {
    let emu = Emulator::builder()
        .crd_establish_delay(Duration::from_millis(400))
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition =
        serde_json::from_value(crd_json("example.com", true)).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let widgets = widget_api(&c, "example.com");
    let e = api_err(
        widgets
            .create(&PostParams::default(), &widget("example.com", "w"))
            .await,
    );
    assert_eq!(e.code, 404, "not served before Established");
    eventually("Established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("widgets.example.com").await.unwrap();
            crd.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        }
    })
    .await;
    let w = widgets
        .create(&PostParams::default(), &widget("example.com", "w"))
        .await
        .unwrap();
    assert!(
        w.data.get("status").is_none(),
        "status dropped: status is a subresource"
    );
    let d = Discovery::new(c.clone()).run().await.unwrap();
    assert!(d.groups().any(|g| g.name() == "example.com"));
    let s = widgets
        .patch_status(
            "w",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"ok": true}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["ok"], true);
    let list = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    // deleting the CRD removes its resources
    crds.delete("widgets.example.com", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        api_err(widgets.list(&ListParams::default()).await).code,
        404
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn pre_bound_pv_and_pvc_become_bound() {
    let emu = start().await;
    let c = emu.client().await;
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "default");
    let pv: PersistentVolume = serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "nfs",
            "nfs": {"server": "nfs", "path": "/x"}, "claimRef": {"namespace": "default", "name": "data"}}})).unwrap();
    let made = pvs.create(&PostParams::default(), &pv).await.unwrap();
    assert_eq!(made.status.unwrap().phase.as_deref(), Some("Available"));
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "nfs", "volumeName": "pv1", "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let pvc = pvcs.get("data").await.unwrap();
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    let pv = pvs.get("pv1").await.unwrap();
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    assert_eq!(pv.spec.unwrap().claim_ref.unwrap().uid, pvc.metadata.uid);
    // an unmatched claim stays Pending
    let lone: PersistentVolumeClaim = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lone"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .unwrap();
    let lone = pvcs.create(&PostParams::default(), &lone).await.unwrap();
    assert_eq!(lone.status.unwrap().phase.as_deref(), Some("Pending"));
    emu.shutdown().await;
}

#[tokio::test]
async fn bearer_token_is_required_when_set() {
    let emu = Emulator::builder().token("s3cret").start().await.unwrap();
    let good = emu.client().await;
    assert!(
        Api::<Namespace>::all(good)
            .list(&ListParams::default())
            .await
            .is_ok()
    );
    let mut cfg = emu.kube_config();
    cfg.auth_info.token = None;
    let anon = kube::Client::try_from(cfg).unwrap();
    let e = api_err(
        Api::<Namespace>::all(anon)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    let mut cfg = emu.kube_config();
    cfg.auth_info.token = Some("wrong".into());
    let wrong = kube::Client::try_from(cfg).unwrap();
    assert_eq!(
        api_err(
            Api::<Namespace>::all(wrong)
                .list(&ListParams::default())
                .await
        )
        .code,
        401
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn seeded_fixtures_keep_identity_register_crds_and_bind_volumes() {
    let objects = vec![
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "shop", "uid": "11111111-1111-4111-8111-111111111111", "creationTimestamp": "2023-05-01T00:00:00Z"}, "spec": {}}),
        crd_json("example.com", false),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "uid": "33333333-3333-4333-8333-333333333333"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "shop", "uid": "44444444-4444-4444-8444-444444444444"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "uid": "55555555-5555-4555-8555-555555555555"}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "claimRef": {"namespace": "shop", "name": "c"}, "nfs": {"server": "s", "path": "/"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c", "namespace": "shop"}, "spec": {"volumeName": "pv", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "shop"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}, "status": {"replicas": 1}}),
    ];
    let emu = Emulator::builder()
        .fixture(Fixture::Objects(objects))
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let w = Api::<DynamicObject>::namespaced_with(c.clone(), "shop", &ar)
        .get("w")
        .await
        .unwrap();
    assert_eq!(
        w.metadata.uid.as_deref(),
        Some("11111111-1111-4111-8111-111111111111")
    );
    assert_eq!(
        w.metadata.creation_timestamp.unwrap().0.to_string(),
        "2023-05-01T00:00:00Z"
    );
    let sa = Api::<ServiceAccount>::namespaced(c.clone(), "shop")
        .get("default")
        .await
        .unwrap();
    assert_eq!(
        sa.metadata.uid.as_deref(),
        Some("44444444-4444-4444-8444-444444444444"),
        "fixture objects replace server-made ones"
    );
    let nss = Api::<Namespace>::all(c.clone());
    assert_eq!(
        nss.get("default").await.unwrap().metadata.uid.as_deref(),
        Some("55555555-5555-4555-8555-555555555555")
    );
    assert_eq!(
        nss.list(&ListParams::default()).await.unwrap().items.len(),
        5
    );
    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "shop")
        .get("c")
        .await
        .unwrap();
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    let d = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), "shop")
        .get("d")
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().replicas, Some(1), "fixture status kept");
    assert!("scale:10".parse::<Fixture>().is_ok());
    assert!("bogus".parse::<Fixture>().is_err());
    emu.shutdown().await;
}

#[tokio::test]
async fn aggregated_discovery_matches_legacy_discovery() {
    let emu = start().await;
    let c = emu.client().await;
    let legacy = Discovery::new(c.clone()).run().await.unwrap();
    let aggregated = Discovery::new(c.clone()).run_aggregated().await.unwrap();
    let summary = |d: &Discovery| {
        let mut v: Vec<String> = d
            .groups()
            .flat_map(|g| {
                g.recommended_resources().into_iter().map(|(r, caps)| {
                    format!(
                        "{}/{} {} {:?} {:?} subs={}",
                        r.group,
                        r.version,
                        r.plural,
                        caps.scope,
                        caps.operations,
                        caps.subresources.len()
                    )
                })
            })
            .collect();
        v.sort();
        v
    };
    let a = summary(&aggregated);
    assert!(
        a.iter()
            .any(|s| s.starts_with("apps/v1 deployments Namespaced")),
        "{a:?}"
    );
    assert_eq!(a, summary(&legacy));
    emu.shutdown().await;
}

#[tokio::test]
async fn json_patch_test_of_null_on_an_absent_path_succeeds() {
    // kube-runtime's finalizer helper sends exactly this to add the first finalizer.
    let emu = start().await;
    let c = emu.client().await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), "default");
    crate::create_cm(&c, "default", "f").await;
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]}
    ]))
    .unwrap();
    let cm = cms
        .patch(
            "f",
            &Default::default(),
            &kube::api::Patch::Json::<()>(patch),
        )
        .await
        .unwrap();
    assert_eq!(cm.metadata.finalizers.unwrap(), ["example.com/f"]);
    // A `test` of null on a present path still fails, as on a real server.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null}
    ]))
    .unwrap();
    let e = api_err(
        cms.patch(
            "f",
            &Default::default(),
            &kube::api::Patch::Json::<()>(patch),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    emu.shutdown().await;
}

#[tokio::test]
async fn crds_and_custom_resources_are_validated_with_the_real_422_shape() {
    let emu = start().await;
    let c = emu.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    // Not structural: an untyped field, and a default that does not match its type.
    let mut bad = crd_json("bad.example.com", false);
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "size": {"type": "integer", "default": "big"}, "free": {"description": "untyped"}}}}});
    let crd: CustomResourceDefinition = serde_json::from_value(bad).unwrap();
    let e = api_err(crds.create(&PostParams::default(), &crd).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "CustomResourceDefinition.apiextensions.k8s.io \"widgets.bad.example.com\" is invalid: [\
         spec.validation.openAPIV3Schema.properties[spec].properties[free].type: Required value: must not be empty for specified object fields, \
         spec.validation.openAPIV3Schema.properties[spec].properties[size].default: Invalid value: \"string\": in body must be of type integer: \"string\"]"
    );
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].reason, "FieldValueRequired");
    assert_eq!(causes[1].reason, "FieldValueInvalid");

    // A typed CRD: custom resources are pruned, defaulted and validated.
    let mut good = crd_json("typed.example.com", true);
    good["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "object",
        "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"}}},
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}});
    let crd: CustomResourceDefinition = serde_json::from_value(good).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let widgets = widget_api(&c, "typed.example.com");
    eventually("served", || {
        let w = widgets.clone();
        async move { w.list(&ListParams::default()).await.is_ok() }
    })
    .await;
    let mut w = widget("typed.example.com", "w");
    w.data["spec"]["unknown"] = json!(1);
    let made = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(made.data["spec"]["mode"], "a", "defaulted");
    assert!(made.data["spec"].get("unknown").is_none(), "pruned");
    let mut w2 = widget("typed.example.com", "w2");
    w2.data["spec"] = json!({"size": 0, "mode": "c"});
    let e = api_err(widgets.create(&PostParams::default(), &w2).await);
    assert_eq!(
        e.message,
        "Widget.typed.example.com \"w2\" is invalid: [spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\", \
         spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1]"
    );
    // `/status` writes are validated too.
    let e = api_err(
        widgets
            .patch_status(
                "w",
                &Default::default(),
                &kube::api::Patch::Merge(json!({"status": {"ok": "yes"}})),
            )
            .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.ends_with(
            "status.ok: Invalid value: \"string\": status.ok in body must be of type boolean: \"string\""
        ),
        "{}",
        e.message
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn events_published_through_events_k8s_io_are_listed_as_core_events() {
    let emu = start().await;
    let c = emu.client().await;
    let new: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), "default");
    let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "w.1", "namespace": "default"},
        "eventTime": "2026-11-29T10:00:00.000000Z",
        "reason": "Failed", "note": "it broke", "type": "Warning", "action": "Reconcile",
        "reportingController": "ctl", "reportingInstance": "ctl-1",
        "regarding": {"kind": "Widget", "name": "w", "namespace": "default", "uid": "u-1"}
    }))
    .unwrap();
    new.create(&PostParams::default(), &ev).await.unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c, "default");
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=w,involvedObject.uid=u-1"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(e.message.as_deref(), Some("it broke"));
    assert_eq!(e.reason.as_deref(), Some("Failed"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("Widget"));
    emu.shutdown().await;
}

/// Names, labels and annotations are validated as `ValidateObjectMeta` does on a real server:
/// the name by its kind's rule (generated names too), labels and annotations on creates and
/// updates, each error a cause of one 422, in the texts of the emulated release.
#[tokio::test]
async fn object_metadata_is_validated_like_a_real_server() {
    use kube::api::{Patch, PatchParams};
    for (version, subdomain) in [
        (
            kube_emulator::ServerVersion::V1_19,
            "a DNS-1123 subdomain must consist of",
        ),
        (
            kube_emulator::ServerVersion::V1_25,
            "a lowercase RFC 1123 subdomain must consist of",
        ),
    ] {
        let emu = Emulator::builder()
            .server_version(version)
            .start()
            .await
            .unwrap();
        let c = emu.client().await;
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
        let e = api_err(
            cms.create(&PostParams::default(), &crate::cm("Web_1", json!({})))
                .await,
        );
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert!(
            e.message.starts_with(&format!(
                "ConfigMap \"Web_1\" is invalid: metadata.name: Invalid value: \"Web_1\": {subdomain}"
            )),
            "{}",
            e.message
        );
        // Two causes in one answer: a label key and a label value.
        let long = "x".repeat(64);
        let e = api_err(
            cms.create(
                &PostParams::default(),
                &crate::cm("ok", json!({"bad key": "v", "k": long})),
            )
            .await,
        );
        assert!(e.message.starts_with("ConfigMap \"ok\" is invalid: [metadata.labels: Invalid value: \"bad key\": name part must consist of"), "{}", e.message);
        assert!(
            e.message.contains(&format!(
                "metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters"
            )),
            "{}",
            e.message
        );
        assert_eq!(e.details.map(|d| d.causes.len()), Some(2));

        // Updates check labels and annotations too (here through a merge patch).
        crate::create_cm(&c, "default", "ok").await;
        let e = api_err(
            cms.patch(
                "ok",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"a/b/c": "v"}}})),
            )
            .await,
        );
        assert_eq!(e.code, 422, "{}", e.message);
        assert!(
            e.message.contains(
                "metadata.annotations: Invalid value: \"a/b/c\": a qualified name must consist of"
            ),
            "{}",
            e.message
        );
        assert!(cms.get("ok").await.unwrap().metadata.annotations.is_none());

        // Kind rules: a Service name is a DNS-1035 label, a Namespace's a DNS-1123 label,
        // RBAC names path segments; a generateName prefix may end with '-'.
        let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "1st"}, "spec": {"ports": [{"port": 80}]}
        }))
        .unwrap();
        let e = api_err(svcs.create(&PostParams::default(), &svc).await);
        assert!(
            e.message.contains("a DNS-1035 label must consist of"),
            "{}",
            e.message
        );
        let nss: Api<Namespace> = Api::all(c.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "a.b"}})).unwrap();
        let e = api_err(nss.create(&PostParams::default(), &ns).await);
        assert!(
            e.message.contains("metadata.name: Invalid value: \"a.b\""),
            "{}",
            e.message
        );
        let roles = Api::<DynamicObject>::all_with(
            c.clone(),
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
                "clusterroles",
            ),
        );
        let role = |name: &str| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name}, "rules": []
            }))
            .unwrap()
        };
        roles
            .create(&PostParams::default(), &role("system:controller:X"))
            .await
            .unwrap();
        let e = api_err(roles.create(&PostParams::default(), &role("a%b")).await);
        assert!(e.message.contains("may not contain '%'"), "{}", e.message);
        let generated: ConfigMap = serde_json::from_value(json!({
            "metadata": {"generateName": "web-"}, "data": {}
        }))
        .unwrap();
        let made = cms
            .create(&PostParams::default(), &generated)
            .await
            .unwrap();
        assert!(made.metadata.name.unwrap().starts_with("web-"));
    }
}

/// A create carrying a resourceVersion is refused by a real server's storage with a plain
/// error (a 500 without a reason); "0" and unparsable versions are not checked.
#[tokio::test]
async fn a_create_with_a_resource_version_is_refused() {
    let emu = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let with_rv = |name: &str, rv: &str| {
        let mut c = crate::cm(name, json!({}));
        c.metadata.resource_version = Some(rv.into());
        c
    };
    let e = api_err(
        cms.create(&PostParams::default(), &with_rv("a", "42"))
            .await,
    );
    assert_eq!(e.code, 500);
    assert_eq!(e.reason, "");
    assert_eq!(
        e.message,
        "resourceVersion should not be set on objects to be created"
    );
    assert!(cms.get_opt("a").await.unwrap().is_none());
    for (name, rv) in [("b", "0"), ("c", "-1")] {
        let made = cms
            .create(&PostParams::default(), &with_rv(name, rv))
            .await
            .unwrap();
        assert_ne!(made.metadata.resource_version.as_deref(), Some(rv));
    }
}

/// The objects of `kind` (`plural`, in `group/version`) in `default`, through `c`.
fn dynamic(c: &kube::Client, gv: (&str, &str), kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gv.0, gv.1, kind), plural),
    )
}

/// An emulator playing release `v`, and a client of it.
async fn emulator_at(
    v: kube_emulator::ServerVersion,
) -> (kube_emulator::EmulatorHandle, kube::Client) {
    let emu = Emulator::builder().server_version(v).start().await.unwrap();
    let c = emu.client().await;
    (emu, c)
}

/// Events are validated as `ValidateEventCreate` does: an `events.k8s.io/v1` Event with a
/// note over 1024 bytes, or without the fields v1 requires, is refused with a 422 naming the
/// fields (in their core names); the same through `v1beta1` passes the strict checks.
#[tokio::test]
async fn events_are_validated_at_the_version_they_are_sent_to() {
    // 1.22 serves events.k8s.io v1 and v1beta1.
    let (_emu, c) = emulator_at(kube_emulator::ServerVersion::V1_22).await;
    let api = |version: &str| dynamic(&c, ("events.k8s.io", version), "Event", "events");
    let event = |version: &str, name: &str, note: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("events.k8s.io/{version}"), "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Warning",
            "reason": "Failed", "action": "Reconcile", "note": note,
            "reportingController": "k8s-snap", "reportingInstance": "k8s-snap-0",
            "regarding": {"kind": "ConfigMap", "namespace": "default", "name": "x"}
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    api("v1")
        .create(&pp, &event("v1", "ok", &"n".repeat(1024)))
        .await
        .unwrap();
    let e = api_err(
        api("v1")
            .create(&pp, &event("v1", "long", &"n".repeat(1025)))
            .await,
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Event.events.k8s.io \"long\" is invalid: message: Invalid value: \"\": can have at most 1024 characters"
    );
    let mut bare = event("v1", "bare", "x");
    bare.data["type"] = json!("Info");
    bare.data.as_object_mut().unwrap().remove("eventTime");
    let e = api_err(api("v1").create(&pp, &bare).await);
    assert!(
        e.message.contains("eventTime: Required value"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("type: Invalid value: \"\": has invalid value: Info"),
        "{}",
        e.message
    );
    // v1beta1 keeps the legacy checks only.
    let mut old = event("v1beta1", "old", "x");
    old.data["type"] = json!("Info");
    api("v1beta1").create(&pp, &old).await.unwrap();
}

/// An object written at a version whose Go type has no field for part of it loses that part,
/// as a real server's decoding drops it: an `autoscaling/v1` HorizontalPodAutoscaler keeps no
/// `metrics` (its CPU target is `targetCPUUtilizationPercentage`).
#[tokio::test]
async fn an_hpa_written_at_autoscaling_v1_keeps_no_metrics() {
    let (_emu, c) = emulator_at(kube_emulator::ServerVersion::V1_19).await;
    let api = dynamic(
        &c,
        ("autoscaling", "v1"),
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    );
    let hpa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70}}}]}
    }))
    .unwrap();
    let made = api.create(&PostParams::default(), &hpa).await.unwrap();
    assert!(
        made.data["spec"].get("metrics").is_none(),
        "{:?}",
        made.data
    );
    let got = api.get("api").await.unwrap();
    assert!(got.data["spec"].get("metrics").is_none(), "{:?}", got.data);
    assert!(
        got.data["spec"]
            .get("targetCPUUtilizationPercentage")
            .is_none()
    );
}

/// A PodDisruptionBudget's empty selector selects no Pods in `policy/v1beta1` and every Pod in
/// `policy/v1`; a server serving both (1.21–1.24) serves each at the other version as the
/// selector of the same Pods (`pkg/apis/policy/{v1,v1beta1}/conversion.go`).
#[tokio::test]
async fn pdb_empty_selectors_are_served_at_the_other_version_with_their_meaning() {
    let (_emu, c) = emulator_at(kube_emulator::ServerVersion::V1_22).await;
    let api = |version: &str| {
        dynamic(
            &c,
            ("policy", version),
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        )
    };
    let pdb = |version: &str, name: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("policy/{version}"), "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {}}
        }))
        .unwrap()
    };
    let label = "pdb.kubernetes.io/deprecated-v1beta1-empty-selector-match";
    let pp = PostParams::default();
    api("v1beta1")
        .create(&pp, &pdb("v1beta1", "none"))
        .await
        .unwrap();
    api("v1").create(&pp, &pdb("v1", "all")).await.unwrap();
    for (name, version, selector) in [
        ("none", "v1beta1", json!({})),
        (
            "none",
            "v1",
            json!({"matchExpressions": [{"key": label, "operator": "Exists"}]}),
        ),
        ("all", "v1", json!({})),
        (
            "all",
            "v1beta1",
            json!({"matchExpressions": [{"key": label, "operator": "DoesNotExist"}]}),
        ),
    ] {
        let got = api(version).get(name).await.unwrap();
        assert_eq!(
            got.data["spec"]["selector"], selector,
            "{name} at {version}"
        );
    }
}

/// A PersistentVolumeClaim's spec is immutable after creation (a bound claim's requests
/// excepted): an update changing it gets the real 422, one changing only metadata passes.
#[tokio::test]
async fn a_claims_spec_is_immutable() {
    use kube::api::{Patch, PatchParams};
    let emu = start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(emu.client().await, "default");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
            "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let e = api_err(
        pvcs.patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storageClassName": "slow"}})),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.ends_with("spec: Forbidden: spec is immutable after creation except resources.requests for bound claims"),
        "{}",
        e.message
    );
    pvcs.patch(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
}

/// A new Pod needs its ServiceAccount; the scheduler binds it to a Node; a Pod's spec is then immutable but for its images
/// (an update dropping `nodeName` gets the real 422, 1.19's words on a 1.19 server); a
/// StatefulSet changes only its mutable fields; an `apps/v1` selector is immutable.
#[tokio::test]
async fn workloads_are_updated_as_a_real_server_allows() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Patch, PatchParams};
    let emu = Emulator::builder()
        .server_version(kube_emulator::ServerVersion::V1_19)
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let node = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}))
    .unwrap();
    let made = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(made.spec.as_ref().unwrap().node_name, None);
    // The ServiceAccount admission: the default account, named; a missing one refused.
    let spec = made.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let mut orphan = pod.clone();
    orphan.metadata.name = Some("orphan".into());
    orphan.spec.as_mut().unwrap().service_account_name = Some("robot".into());
    let e = api_err(pods.create(&PostParams::default(), &orphan).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "pods \"orphan\" is forbidden: error looking up service account default/robot: serviceaccount \"robot\" not found"
    );
    eventually("the pod is scheduled", || async {
        let p = pods.get("p").await.unwrap();
        p.spec.unwrap().node_name.as_deref() == Some(node.as_str())
    })
    .await;
    let mut unbound = pods.get("p").await.unwrap();
    unbound.spec.as_mut().unwrap().node_name = None;
    let e = api_err(pods.replace("p", &PostParams::default(), &unbound).await);
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)"
    );
    let pp = PatchParams::default();
    let image = json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
    pods.patch("p", &pp, &Patch::Strategic(image))
        .await
        .unwrap();

    let sets: Api<StatefulSet> = Api::namespaced(c.clone(), "default");
    let labels = json!({"app": "db"});
    let set: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "postgres"}]}}}}))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let merge = |v| Patch::Merge(json!({ "spec": v }));
    sets.patch("db", &pp, &merge(json!({"replicas": 3})))
        .await
        .unwrap();
    let e = api_err(
        sets.patch("db", &pp, &merge(json!({"serviceName": "other"})))
            .await,
    );
    assert_eq!(
        e.message,
        "StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'template', and 'updateStrategy' are forbidden"
    );

    let deploys: Api<Deployment> = Api::namespaced(c, "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": {"app": "db", "tier": "x"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let wider = json!({"selector": {"matchLabels": {"app": "db", "tier": "x"}}});
    let e = api_err(deploys.patch("web", &pp, &merge(wider)).await);
    assert_eq!(
        e.message,
        r#"Deployment.apps "web" is invalid: spec.selector: Invalid value: {"matchLabels":{"app":"db","tier":"x"}}: field is immutable"#
    );
    deploys
        .patch("web", &pp, &merge(json!({"replicas": 2})))
        .await
        .unwrap();
}

/// A new Pod goes through the admission a real server runs (token volume per release, priority
/// from its class), and ephemeral containers come only through their subresource (1.23+),
/// never on create, and are never removed.
#[tokio::test]
async fn pods_are_admitted_and_debugged_as_a_real_server_allows() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};
    let token_path = "/var/run/secrets/kubernetes.io/serviceaccount";
    for (version, secret_volume) in [
        (kube_emulator::ServerVersion::V1_19, true),
        (kube_emulator::ServerVersion::Latest, false),
    ] {
        let emu = Emulator::builder()
            .server_version(version)
            .start()
            .await
            .unwrap();
        let c = emu.client().await;
        let classes: Api<DynamicObject> = Api::all_with(
            c.clone(),
            &ApiResource::erase::<k8s_openapi::api::scheduling::v1::PriorityClass>(&()),
        );
        let pc = |name: &str, value: i64, default: bool| -> DynamicObject {
            serde_json::from_value(
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "globalDefault": default}),
            )
            .unwrap()
        };
        classes
            .create(&PostParams::default(), &pc("high", 1000, false))
            .await
            .unwrap();
        classes
            .create(&PostParams::default(), &pc("fallback", 10, true))
            .await
            .unwrap();
        let e = api_err(
            classes
                .create(&PostParams::default(), &pc("second", 5, true))
                .await,
        );
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                403,
                "priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass fallback is already marked as default. Only one default can exist"
            )
        );
        let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
        let pod = |name: &str, extra: serde_json::Value| -> Pod {
            let mut p = json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
            json_patch::merge(&mut p, &extra);
            serde_json::from_value(p).unwrap()
        };
        let made = pods
            .create(&PostParams::default(), &pod("p", json!({})))
            .await
            .unwrap();
        let spec = serde_json::to_value(made.spec.unwrap()).unwrap();
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["mountPath"], token_path,
            "{spec}"
        );
        let volume = &spec["volumes"][0];
        if secret_volume {
            assert!(
                volume["secret"]["secretName"]
                    .as_str()
                    .unwrap()
                    .starts_with("default-token-"),
                "{volume}"
            );
        } else {
            assert!(
                volume["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("kube-api-access-"),
                "{volume}"
            );
            assert_eq!(
                volume["projected"]["sources"][0]["serviceAccountToken"]["path"],
                "token"
            );
        }
        assert_eq!(
            (&spec["priorityClassName"], &spec["priority"]),
            (&json!("fallback"), &json!(10))
        );
        let e = api_err(
            pods.create(
                &PostParams::default(),
                &pod(
                    "q",
                    json!({"spec": {"priorityClassName": "high", "priority": 0}}),
                ),
            )
            .await,
        );
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                403,
                "pods \"q\" is forbidden: the integer value of priority (0) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
            )
        );
        let debugger =
            json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}});
        let created = pods
            .create(&PostParams::default(), &pod("r", debugger.clone()))
            .await;
        let patched = pods
            .patch_subresource(
                "ephemeralcontainers",
                "p",
                &PatchParams::default(),
                &Patch::Merge(&debugger),
            )
            .await;
        if secret_volume {
            // 1.19: the feature is off; the field is dropped and the subresource not served.
            assert!(
                created
                    .unwrap()
                    .spec
                    .unwrap()
                    .ephemeral_containers
                    .is_none()
            );
            assert_eq!(api_err(patched).code, 404);
            continue;
        }
        let e = api_err(created);
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                422,
                "Pod \"r\" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create"
            )
        );
        let debugged = patched.unwrap();
        assert_eq!(
            debugged.spec.unwrap().ephemeral_containers.unwrap()[0].name,
            "debugger"
        );
        let e = api_err(
            pods.patch_subresource(
                "ephemeralcontainers",
                "p",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"ephemeralContainers": []}})),
            )
            .await,
        );
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("existing ephemeral containers \"debugger\" may not be removed"),
            "{}",
            e.message
        );
    }
}

/// A write a webhook configuration intercepts fails as a real server's call to a backend that
/// does not run; `failurePolicy: Ignore` lets it through, and the configurations themselves
/// are never intercepted.
#[tokio::test]
async fn writes_a_webhook_intercepts_fail_like_an_unreachable_backend() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let emu = Emulator::builder().start().await.unwrap();
    let c = emu.client().await;
    let hooks: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::erase::<
            k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
        >(&()),
    );
    let config = |name: &str, policy: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": name},
            "webhooks": [{"name": format!("{name}.example.com"), "failurePolicy": policy,
                "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"namespace": "default", "name": "hook"}},
                "objectSelector": {"matchLabels": {"checked": "yes"}},
                "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                    "apiVersions": ["v1"], "resources": ["configmaps"]}]}]}))
        .unwrap()
    };
    hooks
        .create(&PostParams::default(), &config("soft", "Ignore"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm = |name: &str, checked: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"checked": checked}}}))
            .unwrap()
    };
    cms.create(&PostParams::default(), &cm("a", "yes"))
        .await
        .unwrap();
    hooks
        .create(&PostParams::default(), &config("hard", "Fail"))
        .await
        .unwrap();
    let e = api_err(cms.create(&PostParams::default(), &cm("b", "yes")).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            500,
            "Internal error occurred: failed calling webhook \"hard.example.com\": Post \"https://hook.default.svc:443?timeout=10s\": service \"hook\" not found"
        )
    );
    cms.create(&PostParams::default(), &cm("c", "no"))
        .await
        .unwrap();
    let e = api_err(
        cms.replace("a", &PostParams::default(), &cms.get("a").await.unwrap())
            .await,
    );
    assert_eq!(e.code, 500);
    // A configuration is never intercepted, not even by one matching everything.
    let mut all = config("all", "Fail");
    all.data["webhooks"][0]["rules"] = json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}]);
    hooks.create(&PostParams::default(), &all).await.unwrap();
    hooks.delete("all", &Default::default()).await.unwrap();
}

/// An APIService naming a Service is unavailable (the emulator runs no extension API server):
/// listed in `/apis`, answered 503 `service unavailable` in plain text below it, and its
/// status says so, as a real aggregator does.
#[tokio::test]
async fn an_apiservice_without_a_running_backend_is_unavailable() {
    let emu = Emulator::builder().start().await.unwrap();
    let c = emu.client().await;
    let services: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
        )),
    );
    let made = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": "v1beta1.widgets.example.com"},
                "spec": {"group": "widgets.example.com", "version": "v1beta1", "groupPriorityMinimum": 100,
                    "versionPriority": 10, "service": {"namespace": "default", "name": "widgets"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        made.data["status"]["conditions"][0]["reason"],
        "ServiceNotFound"
    );
    let groups: serde_json::Value = c
        .request(axum::http::Request::get("/apis").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "widgets.example.com")
    );
    // The answer below it, read raw (a client would retry the 503).
    let addr = emu.addr();
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /apis/widgets.example.com/v1beta1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(
        raw.contains("text/plain") && raw.ends_with("\r\n\r\nservice unavailable\n"),
        "{raw}"
    );
}

/// The endpoints controller: a Service with a selector gets Endpoints of its name and labels
/// (no subsets: no Pod is ever ready here), one without a selector gets none, and deleting a
/// Service deletes its Endpoints.
#[tokio::test]
async fn a_service_with_a_selector_gets_endpoints() {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    let emu = Emulator::builder().start().await.unwrap();
    let c = emu.client().await;
    let services: Api<Service> = Api::namespaced(c.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(c.clone(), "default");
    let svc = |name: &str, selector: serde_json::Value| -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"tier": "web"}},
            "spec": {"selector": selector, "ports": [{"port": 80}]}}),
        )
        .unwrap()
    };
    services
        .create(&PostParams::default(), &svc("web", json!({"app": "web"})))
        .await
        .unwrap();
    services
        .create(
            &PostParams::default(),
            &svc("external", serde_json::Value::Null),
        )
        .await
        .unwrap();
    let ep = endpoints.get("web").await.unwrap();
    assert_eq!(ep.metadata.labels.unwrap()["tier"], "web");
    assert!(ep.subsets.is_none());
    assert!(endpoints.get_opt("external").await.unwrap().is_none());
    services.delete("web", &Default::default()).await.unwrap();
    assert!(endpoints.get_opt("web").await.unwrap().is_none());
}
