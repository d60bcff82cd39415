//! Server profiles: discovery of the 1.19 profile equals what a real v1.19.0 server answered
//! (testdata/v1.19/discovery), and objects stored once are served at every version of their
//! resource, converted.

use kube_emulator::{Emulator, EmulatorHandle, ServerVersion};
use serde_json::{Value, json};

fn http(method: &str, path: &str, body: Option<&Value>) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(
            body.map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
        )
        .expect("valid request")
}

async fn get(c: &kube::Client, path: &str) -> Value {
    c.request(http("GET", path, None))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn post(c: &kube::Client, path: &str, body: Value) -> Value {
    c.request(http("POST", path, Some(&body)))
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

async fn start(v: ServerVersion) -> EmulatorHandle {
    Emulator::builder()
        .server_version(v)
        .start()
        .await
        .expect("emulator starts")
}

fn recorded(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/v1.19/discovery")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn discovery_of_the_1_19_profile_equals_a_real_v1_19_server() {
    let emu = start(ServerVersion::V1_19).await;
    let c = emu.client().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/v1.19/discovery");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() > 30, "{files:?}");
    for f in &files {
        let stem = f.trim_end_matches(".json");
        let path = match stem {
            "version" => "/version".to_string(),
            "api" => "/api".to_string(),
            "api_v1" => "/api/v1".to_string(),
            "apis" => "/apis".to_string(),
            other => {
                let rest = other.strip_prefix("apis_").unwrap();
                let (g, v) = rest.rsplit_once('_').unwrap();
                format!("/apis/{g}/{v}")
            }
        };
        let mut want = recorded(f);
        let mut got = get(&c, &path).await;
        if stem == "api" {
            // The server's own address differs.
            for v in [&mut want, &mut got] {
                v["serverAddressByClientCIDRs"][0]["serverAddress"] = json!("ADDR");
            }
        }
        if got != want {
            let (g, w) = (
                serde_json::to_string_pretty(&got).unwrap(),
                serde_json::to_string_pretty(&want).unwrap(),
            );
            let first = g
                .lines()
                .zip(w.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let around = |s: &str| {
                s.lines()
                    .skip(first.saturating_sub(5))
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "{path} differs at line {first}:\n--- emulator\n{}\n--- recorded\n{}",
                around(&g),
                around(&w)
            );
        }
    }
    // Every served group version has its document, and nothing else is served.
    let apis = get(&c, "/apis").await;
    for g in apis["groups"].as_array().unwrap() {
        for v in g["versions"].as_array().unwrap() {
            let gv = v["groupVersion"].as_str().unwrap();
            let file = format!("apis_{}.json", gv.replace('/', "_"));
            assert!(files.contains(&file), "{file}");
        }
    }
    // A v1.19 server does not know aggregated discovery: it answers the plain list.
    let req = axum::http::Request::builder()
        .uri("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let plain: Value = c.request(req).await.unwrap();
    assert_eq!(plain["kind"], "APIGroupList");
    emu.shutdown().await;
}

#[tokio::test]
async fn each_profile_serves_its_release() {
    for (v, cronjobs, minor) in [
        (ServerVersion::V1_19, "v1beta1", "19"),
        (ServerVersion::V1_22, "v1", "22"),
        (ServerVersion::V1_25, "v1", "25"),
        (ServerVersion::Latest, "v1", "32"),
    ] {
        let emu = start(v).await;
        let c = emu.client().await;
        assert_eq!(c.apiserver_version().await.unwrap().minor, minor);
        let batch = get(&c, "/apis/batch").await;
        assert_eq!(batch["preferredVersion"]["version"], "v1");
        let list = get(&c, &format!("/apis/batch/{cronjobs}")).await;
        assert!(
            list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "cronjobs"),
            "{v}"
        );
        assert_eq!(emu.server_version(), v);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn objects_are_stored_once_and_served_at_every_version() {
    let emu = start(ServerVersion::V1_19).await;
    let c = emu.client().await;
    // An Ingress written through the deprecated group is the networking.k8s.io object.
    post(
        &c,
        "/apis/extensions/v1beta1/namespaces/default/ingresses",
        json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "web"},
            "spec": {"rules": [{"host": "a.example", "http": {"paths": [{"path": "/",
                "backend": {"serviceName": "web", "servicePort": 80}}]}}]}}),
    )
    .await;
    let v1 = get(
        &c,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web",
    )
    .await;
    assert_eq!(v1["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(
        v1["spec"]["rules"][0]["http"]["paths"][0],
        json!({"path": "/", "pathType": "ImplementationSpecific",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}})
    );
    let beta = get(&c, "/apis/networking.k8s.io/v1beta1/ingresses").await;
    assert_eq!(beta["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        beta["items"][0]["spec"]["rules"][0]["http"]["paths"][0]["backend"],
        json!({"serviceName": "web", "servicePort": 80})
    );
    let ext = get(&c, "/apis/extensions/v1beta1/ingresses").await;
    assert_eq!(ext["items"][0]["metadata"]["uid"], v1["metadata"]["uid"]);

    // An HPA written at v2beta2 reads at v1 with its CPU target.
    post(
        &c,
        "/apis/autoscaling/v2beta2/namespaces/default/horizontalpodautoscalers",
        json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "maxReplicas": 3,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]}}),
    )
    .await;
    let h = get(
        &c,
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/h",
    )
    .await;
    assert_eq!(h["apiVersion"], "autoscaling/v1");
    assert_eq!(h["spec"]["targetCPUUtilizationPercentage"], 60);

    // A v1beta1 CRD is served as v1 and its custom resources are served.
    post(
        &c,
        "/apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions",
        json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gizmos.example.com"},
            "spec": {"group": "example.com", "version": "v1alpha1", "scope": "Namespaced",
                "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
                "validation": {"openAPIV3Schema": {"type": "object"}}}}),
    )
    .await;
    let crd = get(
        &c,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gizmos.example.com",
    )
    .await;
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    assert_eq!(
        crd["spec"]["versions"][0]["schema"],
        json!({"openAPIV3Schema": {"type": "object"}})
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r: Result<Value, _> = c
            .request(http("GET", "/apis/example.com/v1alpha1/gizmos", None))
            .await;
        if r.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "CRD never served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A CronJob is served at batch/v1beta1 only.
    post(
        &c,
        "/apis/batch/v1beta1/namespaces/default/cronjobs",
        json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
    )
    .await;
    let r: Result<Value, _> = c
        .request(http(
            "GET",
            "/apis/batch/v1/namespaces/default/cronjobs/nightly",
            None,
        ))
        .await;
    assert!(r.is_err());
    emu.shutdown().await;
}

#[tokio::test]
async fn fixtures_are_seeded_at_the_versions_of_the_release() {
    let emu = Emulator::builder()
        .server_version(ServerVersion::V1_19)
        .fixture(kube_emulator::Fixture::Realistic)
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let pdbs = get(&c, "/apis/policy/v1beta1/poddisruptionbudgets").await;
    assert_eq!(pdbs["items"].as_array().unwrap().len(), 1);
    let hpas = get(&c, "/apis/autoscaling/v1/horizontalpodautoscalers").await;
    assert_eq!(
        hpas["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        70
    );
    emu.shutdown().await;
}
