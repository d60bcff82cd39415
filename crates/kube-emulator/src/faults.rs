//! Fault injection: rules matched by method and path prefix that answer with an error status,
//! add latency or drop the connection, a number of times or with a probability.
//!
//! Grammar of a rule (comma-separated `key[=value]` items, order free):
//! `method=GET` (optional), `path=/api/v1/configmaps` (prefix, optional), one or more actions
//! `status=503` / `retry-after=1` (seconds, with status 429 or 503) / `latency=200ms` / `drop`,
//! and limits `times=3` (fire at most 3 times) / `probability=0.2` (fire on 20% of matches).
//! Example: `method=GET,path=/api/v1/configmaps,status=503,times=3`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Error;

/// What a fault does when it fires.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRule {
    /// HTTP method to match (any when `None`).
    pub method: Option<String>,
    /// Path prefix to match (any when `None`).
    pub path_prefix: Option<String>,
    /// Answer with this status code and a `Status` body.
    pub status: Option<u16>,
    /// `Retry-After` header (seconds) sent with `status`.
    pub retry_after: Option<u64>,
    /// Delay before answering (or before the other action).
    pub latency: Option<Duration>,
    /// Close the connection without answering.
    pub drop: bool,
    /// Fire at most this many times.
    pub times: Option<u64>,
    /// Fire with this probability (0..=1) on each match.
    pub probability: Option<f64>,
}

impl std::str::FromStr for FaultRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |msg: String| Error::Fault(format!("{s:?}: {msg}"));
        let mut r = FaultRule::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let need = || v.ok_or_else(|| bad(format!("`{k}` needs a value")));
            match k {
                "method" => r.method = Some(need()?.to_ascii_uppercase()),
                "path" => r.path_prefix = Some(need()?.to_string()),
                "status" => {
                    r.status = Some(
                        need()?
                            .parse()
                            .map_err(|_| bad("status must be a number".into()))?,
                    )
                }
                "retry-after" => {
                    r.retry_after = Some(
                        need()?
                            .parse()
                            .map_err(|_| bad("retry-after must be seconds".into()))?,
                    )
                }
                "latency" => {
                    r.latency = Some(
                        humantime::parse_duration(need()?)
                            .map_err(|e| bad(format!("latency: {e}")))?,
                    )
                }
                "drop" => r.drop = true,
                "times" => {
                    r.times = Some(
                        need()?
                            .parse()
                            .map_err(|_| bad("times must be a number".into()))?,
                    )
                }
                "probability" => {
                    let p: f64 = need()?
                        .parse()
                        .map_err(|_| bad("probability must be a number".into()))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(bad("probability must be within 0..1".into()));
                    }
                    r.probability = Some(p);
                }
                other => return Err(bad(format!("unknown key `{other}`"))),
            }
        }
        if r.status.is_none() && r.latency.is_none() && !r.drop {
            return Err(bad("needs an action: status=, latency= or drop".into()));
        }
        if r.retry_after.is_some() && r.status.is_none() {
            r.status = Some(429);
        }
        Ok(r)
    }
}

/// What the server must do for one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decision {
    pub latency: Option<Duration>,
    pub status: Option<(u16, Option<u64>)>,
    pub drop: bool,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    rule: FaultRule,
    fired: u64,
}

/// The fault rules of a running emulator (cheap to clone; shared with the server).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<(u64, Vec<Entry>)>>,
}

impl Faults {
    /// Add a rule; returns its id for `remove`.
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.push(Entry { id, rule, fired: 0 });
        id
    }

    /// Remove one rule.
    pub fn remove(&self, id: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.retain(|e| e.id != id);
    }

    /// Remove all rules.
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.clear();
    }

    /// How many times a rule has fired so far.
    pub fn fired(&self, id: u64) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().find(|e| e.id == id).map_or(0, |e| e.fired)
    }

    /// Decide the fault for a request (the first matching rule that fires).
    pub(crate) fn decide(&self, method: &str, path: &str) -> Decision {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for e in g.1.iter_mut() {
            let r = &e.rule;
            if r.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            if r.path_prefix
                .as_deref()
                .is_some_and(|p| !path.starts_with(p))
            {
                continue;
            }
            if r.times.is_some_and(|t| e.fired >= t) {
                continue;
            }
            if r.probability.is_some_and(|p| fastrand::f64() >= p) {
                continue;
            }
            e.fired += 1;
            return Decision {
                latency: r.latency,
                status: r.status.map(|s| (s, r.retry_after)),
                drop: r.drop,
            };
        }
        Decision::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_examples() {
        let r: FaultRule = "method=GET,path=/api/v1/configmaps,status=503,times=3"
            .parse()
            .unwrap();
        assert_eq!(r.method.as_deref(), Some("GET"));
        assert_eq!(r.status, Some(503));
        assert_eq!(r.times, Some(3));
        let r: FaultRule = "path=/apis,status=429,retry-after=1".parse().unwrap();
        assert_eq!(r.retry_after, Some(1));
        let r: FaultRule = "path=/api,latency=200ms".parse().unwrap();
        assert_eq!(r.latency, Some(Duration::from_millis(200)));
        let r: FaultRule = "path=/apis/apps,drop,probability=0.2".parse().unwrap();
        assert!(r.drop);
        assert!("path=/x".parse::<FaultRule>().is_err());
        assert!("status=abc".parse::<FaultRule>().is_err());
        assert!("bogus=1,drop".parse::<FaultRule>().is_err());
    }

    #[test]
    fn times_limits_firing() {
        let f = Faults::default();
        let id = f.add("path=/api,status=500,times=2".parse().unwrap());
        assert!(f.decide("GET", "/api/v1").status.is_some());
        assert!(f.decide("GET", "/api/v1").status.is_some());
        assert!(f.decide("GET", "/api/v1").status.is_none());
        assert_eq!(f.fired(id), 2);
        assert!(f.decide("GET", "/version").status.is_none());
    }
}
