//! Watch streams: from a revision, from "now", 410 when compacted, bookmarks, kube-runtime.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_emulator::Emulator;
use serde_json::json;

use crate::{create_cm, start};

#[tokio::test]
async fn watch_from_a_revision_sees_changes_in_order() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let rv = emu.resource_version().to_string();
    create_cm(&c, "default", "a").await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    create_cm(&c, "kube-system", "elsewhere").await;
    let mut s = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match s.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    api.delete("a", &DeleteParams::default()).await.unwrap();
    match s.try_next().await.unwrap().unwrap() {
        WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(seen, ["ADDED a", "MODIFIED a", "DELETED a"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn watch_at_a_compacted_revision_is_410_and_bookmarks_arrive() {
    let emu = Emulator::builder()
        .compaction_window(3)
        .start()
        .await
        .unwrap();
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let old = emu.resource_version().to_string();
    for i in 0..6 {
        create_cm(&c, "default", &format!("c{i}")).await;
    }
    let mut s = api
        .watch(&WatchParams::default().timeout(5), &old)
        .await
        .unwrap()
        .boxed();
    match s.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    let now = emu.resource_version().to_string();
    let mut s = api
        .watch(&WatchParams::default().timeout(10), &now)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_lists_then_follows() {
    let emu = start().await;
    let c = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    create_cm(&c, "default", "before").await;
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut names = Vec::new();
    let creator = {
        let c = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            create_cm(&c, "default", "after").await;
        })
    };
    while names.len() < 3 {
        let o = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        names.push(o.metadata.name.unwrap());
    }
    creator.await.unwrap();
    names.sort();
    assert_eq!(names, ["after", "before", "kube-root-ca.crt"]);
    // streaming lists (sendInitialEvents) work too
    let mut s = watcher(api, watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    let mut n = 0;
    while n < 3 {
        tokio::time::timeout(Duration::from_secs(5), s.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        n += 1;
    }
    emu.shutdown().await;
}
