//! Reading the target's live objects for a plan: one paginated LIST per resource concerned
//! (namespaced resources across all namespaces), never one GET per object.
//!
//! Owns: the LIST loop and the filtering of list items to the paths a plan needs. Must not
//! write to the cluster.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::plan::LiveObject;
use super::rules::Selection;
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

/// Lists every resource of `wanted` (with the tree objects wanted from it, by content path),
/// `concurrency` resources at a time, and compares each live object found at one of those
/// paths with its tree object as pages arrive: live objects are never all held at once.
/// `wanted` maps content paths to indices into `selected`; each resource is listed and
/// compared on its own task, so comparing uses every core.
pub async fn read_live(
    cluster: &Cluster,
    wanted: Vec<(ApiResourceInfo, HashMap<String, usize>)>,
    selected: Arc<Vec<(ContentPath, Selection)>>,
    concurrency: usize,
) -> Result<HashMap<String, LiveObject>, (String, ClusterError)> {
    let maps: Vec<HashMap<String, LiveObject>> = stream::iter(wanted)
        .map(|(resource, paths)| {
            let cluster = cluster.clone();
            let selected = selected.clone();
            let collection = resource.collection_path(None);
            let task =
                tokio::spawn(
                    async move { list_resource(&cluster, &resource, &paths, &selected).await },
                );
            async move {
                match task.await {
                    Ok(r) => r.map_err(|e| (collection, e)),
                    Err(e) => Err((
                        collection.clone(),
                        ClusterError::Unreachable {
                            server: String::new(),
                            message: format!("listing {collection}: {e}"),
                        },
                    )),
                }
            }
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
    paths: &HashMap<String, usize>,
    selected: &[(ContentPath, Selection)],
) -> Result<HashMap<String, LiveObject>, ClusterError> {
    let base = resource.collection_path(None);
    let mut out = HashMap::new();
    let mut key = resource.group_version_path();
    let prefix_len = key.len();
    let mut fetch = std::time::Duration::ZERO;
    let mut process = std::time::Duration::ZERO;
    // The next page is fetched (on another task) while this one is compared.
    let fetch_page = |token: Option<&str>| {
        let mut url = format!("{base}?limit={PAGE_SIZE}");
        if let Some(t) = token {
            url.push_str("&continue=");
            url.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.get_json::<ListPage>(&url).await })
    };
    let mut pending = fetch_page(None);
    loop {
        let t0 = std::time::Instant::now();
        let page: ListPage = pending.await.map_err(|e| ClusterError::Unreachable {
            server: cluster.server().to_string(),
            message: format!("listing {base}: {e}"),
        })??;
        fetch += t0.elapsed();
        let next = page
            .metadata
            .continue_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| fetch_page(Some(t)));
        let t1 = std::time::Instant::now();
        for item in page.items {
            let name = item.pointer("/metadata/name").and_then(Value::as_str);
            let namespace = item.pointer("/metadata/namespace").and_then(Value::as_str);
            let Some(name) = name else { continue };
            key.truncate(prefix_len);
            if let Some(ns) = namespace.filter(|_| resource.namespaced) {
                key.push_str("/namespaces/");
                key.push_str(ns);
            }
            key.push('/');
            key.push_str(&resource.resource);
            key.push('/');
            key.push_str(name);
            let Some(Selection::Restore { object: tree, .. }) =
                paths.get(key.as_str()).map(|&i| &selected[i].1)
            else {
                continue;
            };
            let compared = LiveObject::compare(item, tree, resource);
            out.insert(key.clone(), compared);
        }
        process += t1.elapsed();
        match next {
            Some(n) => pending = n,
            None => break,
        }
    }
    tracing::debug!(resource = %base, ?fetch, ?process, "listed");
    Ok(out)
}
