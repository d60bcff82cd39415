//! Reading the target's live objects for a plan: one paginated LIST per resource concerned
//! (namespaced resources across all namespaces), never one GET per object.
//!
//! Owns: the LIST loop and the filtering of list items to the paths a plan needs. Must not
//! write to the cluster.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::plan::{LiveObject, covers_json};
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
    /// Items stay JSON text until compared (see [`super::plan::covers_json`]).
    #[serde(default)]
    items: Vec<Box<serde_json::value::RawValue>>,
}

#[derive(serde::Deserialize)]
struct ItemMeta<'a> {
    #[serde(borrow)]
    metadata: ItemNames<'a>,
}

#[derive(serde::Deserialize)]
struct ItemNames<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// Lists every resource of `wanted` (content paths mapped to indices into `selected`),
/// `concurrency` resources at a time, and compares each live object found at one of those
/// paths with its tree object as pages arrive: the next page is fetched while the current one
/// is compared on its own task, and live objects are never all held at once.
pub async fn read_live(
    cluster: &Cluster,
    wanted: Vec<(ApiResourceInfo, HashMap<String, usize>)>,
    selected: Arc<Vec<(ContentPath, Selection)>>,
    concurrency: usize,
) -> Result<HashMap<String, LiveObject>, (String, ClusterError)> {
    let maps: Vec<HashMap<String, LiveObject>> = stream::iter(wanted)
        .map(|(resource, paths)| {
            let collection = resource.collection_path(None);
            let listing = list_resource(
                cluster,
                Arc::new(resource),
                Arc::new(paths),
                selected.clone(),
            );
            async move { listing.await.map_err(|e| (collection, e)) }
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

fn join_error(cluster: &Cluster, what: &str, e: tokio::task::JoinError) -> ClusterError {
    ClusterError::Unreachable {
        server: cluster.server().to_string(),
        message: format!("{what}: {e}"),
    }
}

async fn list_resource(
    cluster: &Cluster,
    resource: Arc<ApiResourceInfo>,
    paths: Arc<HashMap<String, usize>>,
    selected: Arc<Vec<(ContentPath, Selection)>>,
) -> Result<HashMap<String, LiveObject>, ClusterError> {
    let base = resource.collection_path(None);
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
    let mut comparisons = Vec::new();
    loop {
        let page: ListPage = pending
            .await
            .map_err(|e| join_error(cluster, &format!("listing {base}"), e))??;
        let next = page
            .metadata
            .continue_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| fetch_page(Some(t)));
        let (cluster, resource, paths, selected, base) = (
            cluster.clone(),
            resource.clone(),
            paths.clone(),
            selected.clone(),
            base.clone(),
        );
        comparisons.push(tokio::spawn(async move {
            compare_page(&cluster, &resource, &paths, &selected, &base, page.items)
        }));
        match next {
            Some(n) => pending = n,
            None => break,
        }
    }
    let mut out = HashMap::new();
    for c in comparisons {
        out.extend(
            c.await
                .map_err(|e| join_error(cluster, &format!("comparing {base}"), e))??,
        );
    }
    Ok(out)
}

fn compare_page(
    cluster: &Cluster,
    resource: &ApiResourceInfo,
    paths: &HashMap<String, usize>,
    selected: &[(ContentPath, Selection)],
    base: &str,
    items: Vec<Box<serde_json::value::RawValue>>,
) -> Result<HashMap<String, LiveObject>, ClusterError> {
    let mut out = HashMap::new();
    let mut key = resource.group_version_path();
    let prefix_len = key.len();
    for item in items {
        let Ok(meta) = serde_json::from_str::<ItemMeta<'_>>(item.get()) else {
            continue;
        };
        let Some(name) = meta.metadata.name.as_deref() else {
            continue;
        };
        key.truncate(prefix_len);
        if let Some(ns) = meta
            .metadata
            .namespace
            .as_deref()
            .filter(|_| resource.namespaced)
        {
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
        let compared = match covers_json(item.get(), tree) {
            Ok(true) => LiveObject {
                resource_version: None,
                differing: None,
            },
            _ => {
                let v: Value = cluster.decode("GET", base, item.get().as_bytes())?;
                LiveObject::compare(v, tree, resource)
            }
        };
        out.insert(key.clone(), compared);
    }
    Ok(out)
}
