//! Helpers shared by the benchmark examples (not an example itself): the raw paginated LIST
//! baseline, peak RSS, sizes, and the 1% change of a `scale:N` fixture between snapshots.

#![allow(dead_code)]

use k8s_snap::cluster::Cluster;
use serde::Deserialize;

/// A paginated LIST (limit 500) parsed into JSON values and dropped: the baseline.
pub async fn raw_list(cluster: &Cluster, collection: &str) -> anyhow::Result<u64> {
    #[derive(Deserialize)]
    struct Page {
        metadata: Meta,
        #[serde(default)]
        items: Vec<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "continue", default)]
        cont: Option<String>,
    }
    let mut token: Option<String> = None;
    let mut n = 0u64;
    loop {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", "500");
        if let Some(t) = &token {
            q.append_pair("continue", t);
        }
        let path = format!("{collection}?{}", q.finish());
        let bytes = cluster
            .request_bytes(http::Method::GET, &path, None, None)
            .await?;
        let page: Page = serde_json::from_slice(&bytes)?;
        n += page.items.len() as u64;
        match page.metadata.cont {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(n),
        }
    }
}

pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// CPU time (user + system, all threads) this process has used so far, in seconds (from
/// `/proc/self/stat`, clock ticks of 10 ms): on a shared machine, a measure that other
/// processes' load does not inflate the way it inflates wall time.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces):
            // utime and stime are the 14th and 15th fields of the line.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// PATCHes 1% of the objects of the emulator's `scale:N` fixture (ConfigMaps spread over all
/// its namespaces), eight at a time; how many.
pub async fn change_one_percent(cluster: &Cluster, objects: usize) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    use futures::stream::{self, StreamExt as _, TryStreamExt as _};
    let namespaces = (objects / 500).clamp(1, objects.max(1)).min(objects);
    let target = (objects / 100).max(1);
    let step = ((objects - namespaces) / target / 20).max(1) * 20;
    let paths: Vec<String> = (0..target)
        .map(|j| j * step)
        .take_while(|i| *i < objects - namespaces)
        .map(|i| {
            format!(
                "/api/v1/namespaces/scale-{:04}/configmaps/obj-{i:06}",
                i % namespaces
            )
        })
        .collect();
    let n = paths.len();
    stream::iter(paths)
        .map(|path| async move {
            let body = serde_json::json!({"data": {"index": format!("changed-{path}")}});
            cluster
                .request_bytes(
                    http::Method::PATCH,
                    &path,
                    Some(serde_json::to_vec(&body)?),
                    Some("application/merge-patch+json"),
                )
                .await
                .with_context(|| format!("PATCH {path}"))?;
            anyhow::Ok(())
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n)
}
