//! Durations as users write them (`720h`, `168h0m0s`, `90m`, `7d`): [`parse_duration`] for
//! flags and CR fields alike (the CLI's `--ttl` and the controller's flags and `spec.ttl`),
//! and [`parse_ttl`], which also checks the end time is representable.
//!
//! Owns: the accepted syntax and its error messages. Must not touch: anything else (pure).

use std::time::Duration;

/// Parses a Go-style or humane duration: `720h`, `168h0m0s`, `90m`, `1h30m`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 720h, 168h0m0s, 90m)"))
}

/// Parses a TTL and checks that `now + ttl` is a representable time (a TTL that overflows the
/// calendar is an error, not a panic).
pub fn parse_ttl(s: &str, now: jiff::Timestamp) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let ends = jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|sd| now.checked_add(sd).ok());
    match ends {
        Some(_) => Ok(d),
        None => Err(format!(
            "TTL {s:?} is too long: it ends after the year 9999"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("720h").unwrap(),
            Duration::from_secs(720 * 3600)
        );
        assert_eq!(
            parse_duration("168h0m0s").unwrap(),
            Duration::from_secs(168 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
