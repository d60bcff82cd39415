//! The inventory of a live cluster: the content paths a snapshot taken now would hold, without
//! writing one (`k8s-snap diff <snapshot> --live` finds the objects only the live cluster has).
//!
//! Owns: nothing of its own but the loop — it reuses the snapshot's discovery (the resources a
//! snapshot reads), its request protocol (pages of `protocol`) and its per-object rules
//! (`pipeline::prepare_node`: unusable names and token Secrets are left out, as a snapshot
//! leaves them out), and a kind served by several groups counts once (by uid), under the
//! first group, as a snapshot writes it. Must not touch: the mirror, the writer.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};

use super::pipeline::{Prepared, prepare_node};
use super::protocol::{self, Page};
use super::{Result, SnapshotError};
use crate::cluster::Cluster;
use crate::discovery::{self, ApiResourceInfo, Versions};
use crate::tree::{ContentPath, Node};

/// Objects per LIST page.
const PAGE_SIZE: u32 = 500;

/// The objects of one resource: their paths and uids.
type Listed = Vec<(ContentPath, Option<String>)>;

/// The content paths a snapshot of `cluster` taken now would hold, sorted; `threads`
/// resources are listed at once. Lists are not pinned to one resourceVersion (a diff against
/// the live cluster wants its current state, not a consistent cut).
pub async fn live_inventory(cluster: &Cluster, threads: usize) -> Result<Vec<ContentPath>> {
    let threads = threads.max(1);
    let discovered = discovery::discover(cluster, Versions::Preferred, threads)
        .await
        .map_err(|e| SnapshotError::Discovery(Box::new(e)))?;
    let resources: Vec<ApiResourceInfo> = discovered.snapshotted().cloned().collect();
    let mut listed: Vec<(usize, Listed)> = stream::iter(resources.iter().enumerate())
        .map(|(i, r)| async move { list_paths(cluster, r).await.map(|p| (i, p)) })
        .buffer_unordered(threads)
        .try_collect()
        .await?;
    listed.sort_by_key(|(i, _)| *i);
    let mut kind_count = HashMap::<&str, usize>::new();
    for r in &resources {
        *kind_count.entry(r.kind.as_str()).or_default() += 1;
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for (i, paths) in listed {
        let shared = kind_count[resources[i].kind.as_str()] > 1;
        for (path, uid) in paths {
            if shared
                && let Some(uid) = uid
                && !seen.insert(uid)
            {
                continue;
            }
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(out)
}

/// Every object of `r` as the snapshot would write it: its path and uid.
async fn list_paths(cluster: &Cluster, r: &ApiResourceInfo) -> Result<Listed> {
    let what = format!("{} ({})", r.resource, r.api_version());
    let collection = r.collection_path(None);
    let mut token: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let path = protocol::page_path(&collection, PAGE_SIZE, token.as_deref(), None, None);
        let (bytes, metadata) =
            match protocol::fetch_page(cluster, &what, &collection, &path, false).await? {
                Page::Read { bytes, metadata } => (bytes, metadata),
                Page::Expired => {
                    return Err(SnapshotError::Expired {
                        rv: format!("the continue token of {what}"),
                        attempts: 1,
                    });
                }
                // Only asked of requests pinned to a resourceVersion, which these are not.
                Page::ExactUnsupported => {
                    return Err(SnapshotError::Options(format!(
                        "listing {what}: the server refused a plain list"
                    )));
                }
            };
        for mut obj in protocol::decode_items(cluster, &what, &collection, &bytes)? {
            let uid = obj
                .get("metadata")
                .and_then(|m| m.get("uid"))
                .and_then(Node::as_str)
                .map(str::to_string);
            if let Prepared::Write(path) = prepare_node(r, &mut obj)? {
                out.push((path, uid));
            }
        }
        match metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(out)
}
