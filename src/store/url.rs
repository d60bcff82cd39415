//! Parsing of store URLs: a path, `file:///abs/path` or `s3://bucket[/prefix]`.
//! Owns only string parsing; touches no store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::StoreError;

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory.
    Dir(PathBuf),
    /// An S3 bucket, with a key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Dir(p) => write!(f, "{}", p.display()),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<StoreUrl, StoreError> {
        // Never echo something that may hold a credential (`user:secret@host`).
        let shown = if s.contains('@') {
            "<redacted: contains '@'>".to_owned()
        } else {
            s.to_owned()
        };
        let bad = |reason: &str| StoreError::BadUrl {
            url: shown.clone(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.len() < 3
                || bucket.len() > 63
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            {
                return Err(bad(
                    "the bucket name must be 3-63 lower-case letters, digits, '-' or '.'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() {
                super::check_key("s3", prefix)
                    .map_err(|_| bad("the prefix must not have empty, '.' or '..' segments"))?;
            }
            if s.contains('@') || s.contains('?') || s.contains('#') {
                return Err(bad(
                    "credentials, queries and fragments are not accepted in the URL (use flags or the environment)",
                ));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path (file:///abs/path)",
                ));
            }
            return Ok(StoreUrl::Dir(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?} (use a path, file:// or s3://)"
            )));
        }
        Ok(StoreUrl::Dir(PathBuf::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            "s3://snaps/team".parse::<StoreUrl>().unwrap(),
            StoreUrl::S3 {
                bucket: "snaps".into(),
                prefix: "team".into()
            }
        );
        assert_eq!(
            "s3://snaps".parse::<StoreUrl>().unwrap(),
            StoreUrl::S3 {
                bucket: "snaps".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            "s3://snaps/a/b/".parse::<StoreUrl>().unwrap().to_string(),
            "s3://snaps/a/b"
        );
        assert_eq!(
            "file:///tmp/x".parse::<StoreUrl>().unwrap(),
            StoreUrl::Dir("/tmp/x".into())
        );
        assert_eq!(
            "rel/dir".parse::<StoreUrl>().unwrap(),
            StoreUrl::Dir("rel/dir".into())
        );
        for bad in [
            "",
            "s3://",
            "s3://UP",
            "s3://b_b",
            "s3://bkt/a/../b",
            "s3://key:secret@bkt",
            "file://rel",
            "gs://x",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad:?}");
        }
    }
}
