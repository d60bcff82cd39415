//! The read protocol of docs/design.md §2, one request at a time: the query of each LIST page
//! (`limit`, then `continue`; the first page at the snapshot's resourceVersion with
//! `resourceVersionMatch=Exact`), what a page's answer means (410 Gone: the resourceVersion
//! expired; 400 naming `resourceVersionMatch`: an old server, list best-effort), reading a
//! page's metadata without building its items, and the resourceVersion a snapshot is read at.
//! A partial snapshot's label selector goes with every page (`labelSelector`).
//!
//! Owns: request paths and page formats. Must not touch: scheduling of requests, the writer,
//! or the canonical form (all in `pipeline`).

use serde::Deserialize;

use crate::cluster::{Cluster, ClusterError};
use crate::tree::Node;

use super::{Result, SnapshotError};

/// Where one page is read: the collection path with its query.
pub(super) fn page_path(
    collection: &str,
    page_size: u32,
    continue_token: Option<&str>,
    exact_rv: Option<&str>,
    label_selector: Option<&str>,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &page_size.to_string());
    // Every page of a list carries the same selector (a continue token does not hold it).
    if let Some(s) = label_selector {
        query.append_pair("labelSelector", s);
    }
    match (continue_token, exact_rv) {
        (Some(t), _) => {
            query.append_pair("continue", t);
        }
        (None, Some(rv)) => {
            query.append_pair("resourceVersion", rv);
            query.append_pair("resourceVersionMatch", "Exact");
        }
        (None, None) => {}
    }
    format!("{collection}?{}", query.finish())
}

/// The answer to one page request.
pub(super) enum Page {
    /// The page's body and its metadata (the items are decoded later, by a page task).
    Read {
        bytes: bytes::Bytes,
        metadata: ListMeta,
    },
    /// 410 Gone: the snapshot's resourceVersion was compacted away.
    Expired,
    /// The server refuses `resourceVersionMatch` (older than 1.19): list best-effort.
    ExactUnsupported,
}

/// Reads one page of `collection` at `path`. `what` names the resource in errors;
/// `first_exact` says the request asked for the exact resourceVersion (its refusal by an old
/// server is then [`Page::ExactUnsupported`], not an error).
pub(super) async fn fetch_page(
    cluster: &Cluster,
    what: &str,
    collection: &str,
    path: &str,
    first_exact: bool,
) -> Result<Page> {
    let bytes = match cluster
        .request_bytes(http::Method::GET, path, None, None)
        .await
    {
        Ok(b) => b,
        Err(e) if e.code() == Some(410) => return Ok(Page::Expired),
        Err(e)
            if first_exact
                && e.code() == Some(400)
                && e.to_string().contains("resourceVersionMatch") =>
        {
            return Ok(Page::ExactUnsupported);
        }
        Err(source) => {
            return Err(SnapshotError::List {
                resource: what.to_string(),
                source: Box::new(source),
            });
        }
    };
    let metadata = match list_metadata(&bytes) {
        Some(metadata) => metadata,
        // Not an object, or malformed before its metadata: the full decode names the fault.
        None => {
            cluster
                .decode::<ListPage>("GET", collection, &bytes)
                .map_err(|source| SnapshotError::List {
                    resource: what.to_string(),
                    source: Box::new(source),
                })?
                .metadata
        }
    };
    Ok(Page::Read { bytes, metadata })
}

/// What a lister reads of a page: its metadata (the items are skipped, not built).
#[derive(Deserialize)]
pub(super) struct ListPage {
    #[serde(default)]
    pub metadata: ListMeta,
}

/// A list's `metadata`, read without building its items, and without even scanning them when
/// the metadata comes first (as Kubernetes API servers write it): parsing stops there. `None`
/// when the body is not a JSON object or is malformed before the metadata. The page task's
/// full decode still checks the whole body.
fn list_metadata(bytes: &[u8]) -> Option<ListMeta> {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

    struct Seed<'s>(&'s mut Option<ListMeta>);
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "metadata" {
                    *self.0 = Some(map.next_value()?);
                    // Stop here: the caller has what it needs.
                    return Err(de::Error::custom("metadata read"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            *self.0 = Some(ListMeta::default());
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // An error after `found` is set is the stop above; before, `found` stays `None`.
    let _ = Seed(&mut found).deserialize(&mut de);
    found
}

/// What a page task reads of a page: the items, borrowing from the response body.
#[derive(Deserialize)]
struct ListItems<'a> {
    #[serde(default, borrow)]
    items: Vec<Node<'a>>,
}

#[derive(Deserialize, Default)]
pub(super) struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: Option<String>,
    #[serde(rename = "continue", default)]
    pub continue_: Option<String>,
}

/// The items of a page, borrowing from its body.
pub(super) fn decode_items<'a>(
    cluster: &Cluster,
    what: &str,
    collection: &str,
    bytes: &'a [u8],
) -> Result<Vec<Node<'a>>> {
    let page: ListItems<'a> =
        cluster
            .decode("GET", collection, bytes)
            .map_err(|source| SnapshotError::List {
                resource: what.to_string(),
                source: Box::new(source),
            })?;
    Ok(page.items)
}

/// The resourceVersion the whole snapshot is read at: that of a one-item namespace list.
pub(super) async fn current_resource_version(cluster: &Cluster) -> Result<String> {
    #[derive(Deserialize)]
    struct Page {
        metadata: ListMeta,
    }
    let page: Page = cluster
        .get_json("/api/v1/namespaces?limit=1")
        .await
        .map_err(|e| SnapshotError::ResourceVersion(Box::new(e)))?;
    page.metadata
        .resource_version
        .filter(|rv| !rv.is_empty())
        .ok_or_else(|| {
            SnapshotError::ResourceVersion(Box::new(ClusterError::Decode {
                server: cluster.server().to_string(),
                method: "GET".into(),
                path: "/api/v1/namespaces".into(),
                message: "the list has no metadata.resourceVersion".into(),
            }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_metadata_is_read_wherever_it_is() {
        let meta =
            |text: &str| list_metadata(text.as_bytes()).map(|m| (m.resource_version, m.continue_));
        let want = Some((Some("7".to_string()), Some("t".to_string())));
        // First (parsing stops before the malformed items), last, or absent.
        let first = r#"{"kind":"L","metadata":{"resourceVersion":"7","continue":"t"},"items":[{"#;
        assert_eq!(meta(first), want);
        let last = r#"{"items":[{"a":"}"}],"metadata":{"continue":"t","resourceVersion":"7"}}"#;
        assert_eq!(meta(last), want);
        assert_eq!(meta(r#"{"items":[]}"#), Some((None, None)));
        // Not a list object, or broken before its metadata: the caller's full decode reports it.
        assert_eq!(meta("[]"), None);
        assert_eq!(meta(r#"{"items":[{]}, "metadata":{}}"#), None);
        assert_eq!(meta(r#"{"metadata":{"continue":5}}"#), None);
    }
}
