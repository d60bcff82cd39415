//! Helpers shared by the benchmark examples (not an example itself): the raw paginated LIST
//! baseline, peak RSS, sizes.

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

/// CPU time (user + system) this process has used so far, in seconds (`/proc/self/stat`,
/// in clock ticks of 1/100 s).
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}
