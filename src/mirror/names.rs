//! Validation of snapshot names, cluster names and tree paths before anything is written.
//!
//! Owns only pure string checks; touches no repository.

use super::MirrorError;

/// Longest accepted snapshot or cluster name. A Kubernetes name may have 253 bytes, but the name
/// is also a file name in git (`refs/tags/snapshots/<name>`, locked as `<name>.lock`), and file
/// names have at most 255 bytes: 250 is what fits.
pub const MAX_NAME_LEN: usize = 250;

/// Checks a snapshot or cluster name.
///
/// Accepted names are Kubernetes-name-like and a valid single git ref component:
/// `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 250 bytes, without `..` and not ending in `.lock`.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), MirrorError> {
    let bad = |reason: &str| MirrorError::InvalidName {
        kind,
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(
            "longer than 250 characters (it must fit a file name with '.lock' appended)",
        ));
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.') {
        return Err(bad(
            "may only contain lower-case letters, digits, '-' and '.'",
        ));
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad("must start and end with a lower-case letter or digit"));
    }
    if name.contains("..") {
        return Err(bad("must not contain '..'"));
    }
    if name.ends_with(".lock") {
        return Err(bad("must not end in '.lock'"));
    }
    Ok(())
}

/// `<prefix>-<yyyymmddhhmmss>` (UTC): the name of a snapshot taken at `t` without a given name
/// (`k8s-snap snapshot` with no name uses the cluster name, a SnapshotSchedule its own name).
pub fn timestamped_name(prefix: &str, t: jiff::Timestamp) -> String {
    format!("{prefix}-{}", t.strftime("%Y%m%d%H%M%S"))
}

/// Checks a file path of a snapshot tree (`api/v1/namespaces/x/configmaps/y.yaml`).
///
/// Rejects empty paths, absolute paths, empty segments (`a//b`, trailing `/`), `.`/`..`
/// segments, `.git` segments (any case), NUL bytes and backslashes.
pub fn validate_path(path: &str) -> Result<(), MirrorError> {
    let bad = |reason: &str| MirrorError::InvalidPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.contains('\\') {
        return Err(bad("contains a backslash"));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(bad("empty path segment")),
            "." | ".." => return Err(bad("'.' or '..' segment")),
            s if s.eq_ignore_ascii_case(".git") => return Err(bad("'.git' segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Normalizes a directory prefix (`""`, `"api/v1"`, `"api/v1/"`) and validates it.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<&str, MirrorError> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("");
    }
    validate_path(trimmed)?;
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "prod",
            "snap-2024.01.01",
            "0",
            "a-b.c-d",
            &"a".repeat(250),
        ] {
            assert!(validate_name("snapshot", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            ".a",
            "a.",
            "a..b",
            "a/b",
            "a_b",
            "x.lock",
            "a b",
            "é",
            &"a".repeat(251),
        ] {
            assert!(validate_name("snapshot", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        for ok in [
            "a",
            "api/v1/namespaces/x.yaml",
            ".k8s-snap/snapshot.yaml",
            "a/.b/c..d",
        ] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a//b", "a/", "a/../b", "..", "./a", "a/.git/b", "A/.GIT", "a\0b", "a\\b",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_prefix("api/v1/").unwrap(), "api/v1");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert!(normalize_prefix("a/../b").is_err());
    }
}
