//! Fault injection: status codes, Retry-After, latency, dropped connections.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube_emulator::{Emulator, FaultRule};

use crate::{api_err, start};

async fn raw_get(url: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |x| x.1)
    );
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn status_faults_fire_a_number_of_times() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let id = emu.faults().add(
        "method=GET,path=/api/v1/namespaces/default/configmaps,status=503,times=2"
            .parse()
            .unwrap(),
    );
    let url = format!("{}/api/v1/namespaces/default/configmaps", emu.url());
    for _ in 0..2 {
        let r = raw_get(&url).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("\"reason\":\"ServiceUnavailable\""), "{r}");
    }
    assert!(raw_get(&url).await.unwrap().starts_with("HTTP/1.1 200"));
    assert_eq!(emu.faults().fired(id), 2);
    emu.faults().remove(id);
    let id = emu.faults().add("method=POST,status=500".parse().unwrap());
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "other methods are not affected"
    );
    let e = api_err(
        api.create(&Default::default(), &crate::cm("z", serde_json::json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    emu.faults().remove(id);
    emu.faults().add(
        "path=/api/v1/namespaces/default/configmaps,status=429,retry-after=1"
            .parse()
            .unwrap(),
    );
    let resp = raw_get(&format!(
        "{}/api/v1/namespaces/default/configmaps",
        emu.url()
    ))
    .await
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 1"),
        "{resp}"
    );
    assert!(resp.contains("\"kind\":\"Status\""));
    emu.faults().clear();
    assert!(api.list(&ListParams::default()).await.is_ok());
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_and_dropped_connections() {
    let rule: FaultRule = "path=/api/v1/namespaces/default/configmaps,latency=300ms"
        .parse()
        .unwrap();
    let emu = Emulator::builder().fault(rule).start().await.unwrap();
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let t = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    emu.faults().clear();
    emu.faults().add(
        "path=/api/v1/namespaces/default/secrets,drop"
            .parse()
            .unwrap(),
    );
    let r = raw_get(&format!("{}/api/v1/namespaces/default/secrets", emu.url())).await;
    assert!(
        r.map(|s| s.is_empty()).unwrap_or(true),
        "connection closed without an answer"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), "default");
    assert!(!matches!(
        secrets.list(&ListParams::default()).await,
        Ok(_) | Err(kube::Error::Api(_))
    ));
    emu.faults().add(
        "path=/api/v1/namespaces/default/pods,drop,probability=0"
            .parse()
            .unwrap(),
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), "default");
    assert!(
        pods.list(&ListParams::default()).await.is_ok(),
        "probability 0 never fires"
    );
    emu.shutdown().await;
}
