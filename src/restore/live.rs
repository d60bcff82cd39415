//! Reading the target's live objects for a plan: one paginated LIST per resource concerned
//! (namespaced resources across all namespaces), never one GET per object.
//!
//! Owns: the LIST loop and the filtering of list items to the paths a plan needs. Must not
//! write to the cluster.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::cluster::{Cluster, ClusterError};
use crate::discovery::ApiResourceInfo;
use crate::tree::ContentPath;

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

/// Lists every resource of `wanted` (with the content paths needed from it), `concurrency`
/// resources at a time, and returns the live objects at those paths, canonicalised.
pub async fn read_live(
    cluster: &Cluster,
    wanted: Vec<(ApiResourceInfo, HashSet<String>)>,
    concurrency: usize,
) -> Result<HashMap<String, Value>, (String, ClusterError)> {
    let maps: Vec<HashMap<String, Value>> = stream::iter(wanted)
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
    paths: &HashSet<String>,
) -> Result<HashMap<String, Value>, ClusterError> {
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
            let Ok(path) = ContentPath::new(
                &resource.group,
                &resource.version,
                &resource.resource,
                ns,
                name,
            ) else {
                continue;
            };
            if paths.contains(path.as_str()) {
                if let Some(map) = item.as_object_mut() {
                    // List items of built-in kinds omit apiVersion/kind.
                    map.entry("apiVersion")
                        .or_insert_with(|| Value::String(resource.api_version()));
                    map.entry("kind")
                        .or_insert_with(|| Value::String(resource.kind.clone()));
                }
                out.insert(path.as_str().to_string(), item);
            }
        }
        match page.metadata.continue_token.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(out)
}
