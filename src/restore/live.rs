//! Reading the target's live objects for a plan: one paginated LIST per resource concerned
//! (namespaced resources across all namespaces), never one GET per object.
//!
//! Owns: the LIST loop and the filtering of list items to the paths a plan needs. Must not
//! write to the cluster.

use std::collections::HashMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::plan::LiveObject;
use crate::cluster::{Cluster, ClusterError};
use crate::discovery::ApiResourceInfo;

/// Objects per LIST page.
pub const PAGE_SIZE: u32 = 500;

#[derive(serde::Deserialize)]
struct ListPage {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(serde::Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// Lists every resource of `wanted` (with the tree objects wanted from it, by content path),
/// `concurrency` resources at a time, and compares each live object found at one of those
/// paths with its tree object as pages arrive: live objects are never all held at once.
pub async fn read_live(
    cluster: &Cluster,
    wanted: Vec<(ApiResourceInfo, HashMap<String, &Value>)>,
    concurrency: usize,
) -> Result<HashMap<String, LiveObject>, (String, ClusterError)> {
    let maps: Vec<HashMap<String, LiveObject>> = stream::iter(wanted)
        .map(|(resource, paths)| async move {
            list_resource(cluster, &resource, &paths)
                .await
                .map_err(|e| (resource.collection_path(None), e))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut out = HashMap::new();
    for m in maps {
        out.extend(m);
    }
    Ok(out)
}

async fn list_resource(
    cluster: &Cluster,
    resource: &ApiResourceInfo,
    paths: &HashMap<String, &Value>,
) -> Result<HashMap<String, LiveObject>, ClusterError> {
    let base = resource.collection_path(None);
    let mut out = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{base}?limit={PAGE_SIZE}");
        if let Some(t) = &token {
            url.push_str("&continue=");
            url.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let page: ListPage = cluster.get_json(&url).await?;
        for mut item in page.items {
            let name = item.pointer("/metadata/name").and_then(Value::as_str);
            let namespace = item.pointer("/metadata/namespace").and_then(Value::as_str);
            let Some(name) = name else { continue };
            let ns = if resource.namespaced { namespace } else { None };
            let gv = resource.group_version_path();
            let path = match ns {
                Some(ns) => format!("{gv}/namespaces/{ns}/{}/{name}", resource.resource),
                None => format!("{gv}/{}/{name}", resource.resource),
            };
            let Some(tree) = paths.get(&path) else {
                continue;
            };
            let resource_version = item
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            crate::tree::canonicalize(&mut item, resource.has_status_subresource);
            if let Some(map) = item.as_object_mut() {
                // List items of built-in kinds omit apiVersion/kind.
                map.entry("apiVersion")
                    .or_insert_with(|| Value::String(resource.api_version()));
                map.entry("kind")
                    .or_insert_with(|| Value::String(resource.kind.clone()));
            }
            let mut compared = LiveObject::compare(&item, tree);
            compared.resource_version = resource_version;
            out.insert(path, compared);
        }
        match page.metadata.continue_token.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(out)
}
