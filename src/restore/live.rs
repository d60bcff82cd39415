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
/// SipHash (the default hasher was ~2% of a plan's CPU samples, foldhash is ~0.7%). Seeded per process, like the default.
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

/// The names in a LIST item's `metadata`, read from its text up to the end of the `metadata`
/// only. A real server writes a built-in object's `metadata` first (a custom resource's after
/// `apiVersion` and `kind`), so the bulk of the item (`data`, `spec`, `status`) is not scanned
/// here as well: only by the page's parse into items and by the comparison. `None` for an item that is not an object or has no
/// `metadata` object; the first `metadata` counts.
fn item_names(text: &str) -> Option<ItemNames<'_>> {
    use serde::de::{Deserializer as _, Error as _, IgnoredAny, MapAccess, Visitor};

    /// Whether a key is `metadata` (escaped or not), without keeping it.
    struct IsMetadata(bool);
    impl<'de> serde::Deserialize<'de> for IsMetadata {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Key;
            impl Visitor<'_> for Key {
                type Value = IsMetadata;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E>(self, key: &str) -> Result<IsMetadata, E> {
                    Ok(IsMetadata(key == "metadata"))
                }
            }
            d.deserialize_identifier(Key)
        }
    }

    struct Item<'a, 'o>(&'o mut Option<ItemNames<'a>>);
    impl<'de> Visitor<'de> for Item<'de, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list item")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(IsMetadata(metadata)) = map.next_key()? {
                if metadata {
                    *self.0 = Some(map.next_value()?);
                    // What follows is not needed: this error only ends the parse.
                    return Err(A::Error::custom("metadata read"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let mut names = None;
    let _ = serde_json::Deserializer::from_str(text).deserialize_map(Item(&mut names));
    names
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
        let Some(meta) = item_names(item.get()) else {
            continue;
        };
        let Some(name) = meta.name.as_deref() else {
            continue;
        };
        key.truncate(prefix_len);
        if let Some(ns) = meta.namespace.as_deref().filter(|_| resource.namespaced) {
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
                    resource_version: meta.resource_version.as_deref().map(str::to_string),
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

#[cfg(test)]
mod tests {
    use super::item_names;

    type Names = (Option<String>, Option<String>, Option<String>);

    fn names(text: &str) -> Option<Names> {
        item_names(text).map(|n| {
            (
                n.name.map(Into::into),
                n.namespace.map(Into::into),
                n.resource_version.map(Into::into),
            )
        })
    }

    #[test]
    fn item_names_are_read_up_to_the_metadata() {
        let want = Some((Some("a".into()), Some("ns".into()), Some("7".into())));
        // A built-in item as a real server writes it: the metadata first, and nothing after it
        // is read (here the rest is not even complete).
        assert_eq!(
            names(
                r#"{"metadata":{"name":"a","namespace":"ns","resourceVersion":"7"},"data":{"x":"#
            ),
            want
        );
        // After the bulk of the item (keys in order), with quotes and braces in its strings.
        assert_eq!(
            names(
                r#"{"apiVersion":"v1","data":{"k":"v \" }, \"metadata\": {"},"kind":"ConfigMap","metadata":{"resourceVersion":"7","namespace":"ns","name":"a","labels":{"x":"y"}}}"#
            ),
            want
        );
        // Escaped keys and values.
        assert_eq!(
            names(
                r#"{"metad\u0061ta":{"n\u0061me":"\u0061","namespace":"ns","resourceVersion":"7"}}"#
            ),
            want
        );
        // No name (the caller skips such an item), no metadata, not an object.
        assert_eq!(names(r#"{"metadata":{}}"#), Some((None, None, None)));
        assert_eq!(names(r#"{"data":{"metadata":{"name":"a"}}}"#), None);
        assert_eq!(names(r#"{"metadata":"a"}"#), None);
        assert_eq!(names("[]"), None);
        assert_eq!(names("null"), None);
    }
}
