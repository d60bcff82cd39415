//! Reading the target's live objects for a plan: one paginated LIST per resource concerned
//! (namespaced resources across all namespaces), never one GET per object.
//!
//! Owns: the LIST loop and the filtering of list items to the paths a plan needs. Must not
//! write to the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::plan::{LiveObject, covers_json};
use super::rules::CompactObject;
use crate::cluster::{Cluster, ClusterError};
use crate::discovery::ApiResourceInfo;

/// Objects per LIST page.
pub(crate) const PAGE_SIZE: u32 = 500;

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
    #[serde(borrow, default, rename = "resourceVersion")]
    resource_version: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// The tree objects of one resource a plan compares, keyed by content path: the index of the
/// object in the plan's selections, and the object itself. An object found equal on the
/// target is taken out (left `Null`) and dropped by the task that compared it, so freeing
/// the objects a plan does not need is spread over the listing tasks.
pub(crate) type TreeObjects = FastMap<String, (usize, Mutex<CompactObject>)>;

/// The maps a plan fills and reads once per object, keyed by content path: foldhash, not
/// SipHash (the default hasher was ~3% of a plan's CPU). Seeded per process, like the default.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What [`read_live`] found: the live objects at the wanted paths (keyed by content path),
/// and every tree object handed in, by index, to be put back into the selections (`Null`
/// where the live object matched it, so it is no longer needed).
pub(crate) struct LiveRead {
    pub live: FastMap<String, LiveObject>,
    pub objects: Vec<(usize, CompactObject)>,
}

/// Lists every resource of `wanted`, `concurrency` resources at a time, and compares each
/// live object found at one of the wanted paths with its tree object as pages arrive: the
/// next page is fetched while the current one is compared on its own task, and live objects
/// are never all held at once.
pub(crate) async fn read_live(
    cluster: &Cluster,
    wanted: Vec<(ApiResourceInfo, TreeObjects)>,
    concurrency: usize,
    keep_equal: bool,
) -> Result<LiveRead, (String, ClusterError)> {
    let parts: Vec<LiveRead> = stream::iter(wanted)
        .map(|(resource, objects)| {
            let collection = resource.collection_path(None);
            let listing = list_resource(cluster, Arc::new(resource), Arc::new(objects), keep_equal);
            async move { listing.await.map_err(|e| (collection, e)) }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut out = LiveRead {
        live: FastMap::with_capacity_and_hasher(
            parts.iter().map(|p| p.live.len()).sum(),
            Default::default(),
        ),
        objects: Vec::with_capacity(parts.iter().map(|p| p.objects.len()).sum()),
    };
    for p in parts {
        out.live.extend(p.live);
        out.objects.extend(p.objects);
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
    objects: Arc<TreeObjects>,
    keep_equal: bool,
) -> Result<LiveRead, ClusterError> {
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
        let (cluster, resource, objects, base) = (
            cluster.clone(),
            resource.clone(),
            objects.clone(),
            base.clone(),
        );
        comparisons.push(tokio::spawn(async move {
            compare_page(&cluster, &resource, &objects, &base, page.items, keep_equal)
        }));
        match next {
            Some(n) => pending = n,
            None => break,
        }
    }
    let mut live = FastMap::default();
    for c in comparisons {
        live.extend(
            c.await
                .map_err(|e| join_error(cluster, &format!("comparing {base}"), e))??,
        );
    }
    // Every comparing task has finished, so this is the only reference left.
    let objects = Arc::try_unwrap(objects).map_err(|_| ClusterError::Unreachable {
        server: cluster.server().to_string(),
        message: format!("comparing {base}: tree objects still shared"),
    })?;
    let objects = objects
        .into_values()
        .map(|(i, o)| (i, o.into_inner().unwrap_or_else(PoisonError::into_inner)))
        .collect();
    Ok(LiveRead { live, objects })
}

fn compare_page(
    cluster: &Cluster,
    resource: &ApiResourceInfo,
    objects: &TreeObjects,
    base: &str,
    items: Vec<Box<serde_json::value::RawValue>>,
    keep_equal: bool,
) -> Result<Vec<(String, LiveObject)>, ClusterError> {
    let mut out = Vec::new();
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
        let Some((_, tree)) = objects.get(key.as_str()) else {
            continue;
        };
        let mut tree = tree.lock().unwrap_or_else(PoisonError::into_inner);
        let compared = match covers_json(item.get(), tree.as_str()) {
            Ok(true) => {
                // Not needed any more (unless a server-side diff follows): free it here.
                if !keep_equal {
                    drop(std::mem::take(&mut *tree));
                }
                LiveObject {
                    resource_version: meta
                        .metadata
                        .resource_version
                        .as_deref()
                        .map(str::to_string),
                    differing: None,
                }
            }
            _ => {
                let v: Value = cluster.decode("GET", base, item.get().as_bytes())?;
                let compared = LiveObject::compare(v, &tree.value(), resource);
                if compared.differing.is_none() && !keep_equal {
                    drop(std::mem::take(&mut *tree));
                }
                compared
            }
        };
        out.push((key.clone(), compared));
    }
    Ok(out)
}
