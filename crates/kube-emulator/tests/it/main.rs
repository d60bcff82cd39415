//! Integration tests of the emulator: through `kube` (every behaviour) and the real `kubectl`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "tests and their helpers fail loudly and print what they skip"
)]

mod apply;
mod behaviours;
mod faults;
mod kubectl;
mod profiles;
mod storage;
mod watch;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::json;

/// An emulator with the empty fixture.
pub async fn start() -> EmulatorHandle {
    Emulator::builder().start().await.expect("emulator starts")
}

/// A ConfigMap value.
pub fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": name}
    }))
    .expect("valid ConfigMap")
}

/// Create a ConfigMap in `ns`.
pub async fn create_cm(client: &kube::Client, ns: &str, name: &str) -> ConfigMap {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm(name, json!({})))
        .await
        .expect("create configmap")
}

/// The API error of a result (panics on success or another error).
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Poll `f` until it returns true (up to 5 s).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
