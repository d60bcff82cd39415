//! Importing the original Go k8s-snap's snapshot archives (`<name>.tgz`, docs/import.md) as
//! ordinary snapshots of the mirror.
//!
//! Owns: reading an archive (gzip'ed tar, two streaming passes over a file, bounded memory per
//! entry), refusing a bad one with one error naming the entry, choosing what a live snapshot of
//! the same cluster would have written (the preferred version of each resource, each object
//! once by uid, the deprecated group's copies left out), and writing it through the mirror's
//! [`crate::mirror::SnapshotWriter`] with the per-object rules and the `.k8s-snap/` metadata of
//! `crate::snapshot` (shared, not copied). Fetching an archive from a store into a temporary
//! file.
//!
//! Must not touch: any cluster; git internals (through `mirror`); the canonical form (through
//! `snapshot::prepare_node` and `tree`). The archive's `snapshot.json` holds the kubeconfig the
//! original snapshot was taken with: only the fields listed in [`OriginalSnapshot`] are read
//! from it, and nothing of it is written or shown.

pub mod layout;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::discovery::{ApiResourceInfo, DEPRECATED_GROUPS, REQUIRED_VERBS, version_priority};
use crate::mirror::{Mirror, MirrorError};
use crate::snapshot::{MetaBase, Prepared, SnapshotError, build_metadata, prepare_node};
use crate::store::{ObjectStore, StoreError};
use crate::tree::{self, Consistency, Node, SkippedEntry};

use layout::{EntryKind, ObjectLocation, PathFault};

/// Largest accepted archive entry (an object in etcd is at most ~1.5 MiB).
pub const MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;
/// Most entries accepted in one archive.
pub const MAX_ENTRIES: usize = 2_000_000;
/// The name prefix of the original's resource-version marker ConfigMaps (in `default`).
pub const MARKER_PREFIX: &str = "resource-version-marker-";

/// Why importing an original k8s-snap archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive cannot be used.
    #[error("{archive}: {reason}")]
    Archive {
        /// The archive (file path or `s3://` URL).
        archive: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The archive is not gzip-compressed.
    #[error("{archive}: not a gzip'ed tar archive (it does not start with the gzip magic bytes)")]
    NotGzip {
        /// The archive (file path or `s3://` URL).
        archive: String,
    },
    /// Reading the archive failed part-way (truncated or corrupt).
    #[error("{archive}: the archive is truncated or damaged{at}: {source}")]
    Damaged {
        /// The archive (file path or `s3://` URL).
        archive: String,
        /// ` (in entry "x")` or empty.
        at: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// One entry of the archive cannot be imported.
    #[error("{archive}: entry {entry:?}: {reason}")]
    Entry {
        /// The archive (file path or `s3://` URL).
        archive: String,
        /// The entry's path in the archive.
        entry: String,
        /// Why it cannot be imported.
        reason: String,
    },
    /// An entry holds one of many objects that overwrote each other (no selfLink).
    #[error(
        "{archive}: entry {entry:?}: the original wrote every object of this snapshot to this one file (its objects have no selfLink: the cluster ran Kubernetes 1.20 or later), each overwriting the last; the archive holds one object of many and cannot be imported faithfully"
    )]
    NoSelfLink {
        /// The archive (file path or `s3://` URL).
        archive: String,
        /// The entry's path in the archive.
        entry: String,
    },
    /// The archive has no `snapshot.json` where expected.
    #[error(
        "{archive}: there is no {expected:?}: not a snapshot archive of the original k8s-snap, or an incomplete one"
    )]
    MissingSnapshotJson {
        /// The archive (file path or `s3://` URL).
        archive: String,
        /// The entry path that was expected.
        expected: String,
    },
    /// The snapshot name is not valid in the mirror.
    #[error("{source}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why the mirror rejects it.
        #[source]
        source: MirrorError,
    },
    /// A snapshot of this name is already in the mirror.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The git mirror failed.
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// Writing the snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of an import operation.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The snapshot's name in the mirror (default: the archive's, `<name>` of `<name>.tgz`).
    pub name: Option<String>,
    /// Recorded as `importedFrom` (the file path or `s3://bucket/key`); also names the archive
    /// in errors.
    pub source: String,
}

/// What an import wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    /// The snapshot's name in the mirror.
    pub name: String,
    /// The cluster name recorded in the archive.
    pub cluster_name: String,
    /// The commit written for the snapshot.
    pub commit: String,
    /// The resource version the original snapshot was taken at.
    pub snapshot_resource_version: String,
    /// When the original snapshot was taken.
    pub snapshot_timestamp: jiff::Timestamp,
    /// When the original snapshot expires, if it had a TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_until: Option<jiff::Timestamp>,
    /// Objects written to the snapshot.
    pub number_of_contents: u64,
    /// Object files in the archive (snapshot.json not counted).
    pub archive_entries: u64,
    /// Objects the archive holds that a live snapshot would not write (other versions, other
    /// groups' copies, token Secrets, the marker ConfigMap, skipped kinds).
    pub dropped: u64,
    /// The archive's file path or `s3://bucket/key`.
    pub imported_from: String,
}

/// The fields read from the archive's `snapshot.json` (never its `spec.kubeconfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalSnapshot {
    /// The snapshot's name.
    pub name: String,
    /// The name of the cluster it was taken from.
    pub cluster_name: String,
    /// The resource version it was taken at.
    pub resource_version: String,
    /// When it was taken.
    pub timestamp: jiff::Timestamp,
    /// When it expires, if it has a TTL.
    pub available_until: Option<jiff::Timestamp>,
    /// Its TTL as written in the archive (e.g. `24h`), if any.
    pub ttl: Option<String>,
}

/// The snapshot directory (and default snapshot name) an archive's file name or key calls
/// for: `<name>` of `.../<name>.tgz`.
pub fn archive_dir_name(source: &str) -> Result<String> {
    let base = source.rsplit('/').next().unwrap_or(source);
    base.strip_suffix(".tgz")
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ImportError::Archive {
            archive: source.to_owned(),
            reason: "the original's archives are named <snapshot-name>.tgz".into(),
        })
}

/// One object entry found by the first pass.
struct Indexed {
    entry: String,
    loc: ObjectLocation,
    version: String,
    kind: String,
    uid: Option<String>,
}

/// Custom resources the archive's CRDs define: (group, plural) → versions with `/status`.
type CrdStatus = HashMap<(String, String), HashSet<String>>;

/// What the first pass learnt.
struct Scan {
    objects: Vec<Indexed>,
    crds: CrdStatus,
    original: OriginalSnapshot,
}

/// Imports the archive at `file` into the mirror at `git_dir`. Blocking (call it on a
/// blocking thread). Nothing is tagged unless the whole archive was valid and written.
pub fn import_file(file: &Path, git_dir: &Path, opts: &ImportOptions) -> Result<ImportSummary> {
    let archive = opts.source.clone();
    let dir = archive_dir_name(&opts.source)?;
    let name = opts.name.clone().unwrap_or_else(|| dir.clone());
    crate::mirror::validate_name("snapshot", &name).map_err(|source| ImportError::InvalidName {
        name: name.clone(),
        source,
    })?;
    if let Ok(m) = Mirror::open(git_dir)
        && m.snapshot(&name)?.is_some()
    {
        return Err(ImportError::AlreadyExists(name));
    }
    let open = || {
        std::fs::File::open(file).map_err(|source| ImportError::Io {
            context: format!("opening {}", file.display()),
            source,
        })
    };

    // Pass 1: validate every entry, index the objects, read snapshot.json and the CRDs.
    let scan = scan(open()?, &archive, &dir)?;
    let cluster_name = scan.original.cluster_name.clone();
    crate::mirror::validate_name("cluster", &cluster_name).map_err(|e| ImportError::Entry {
        archive: archive.clone(),
        entry: format!("{dir}/snapshot.json"),
        reason: format!("spec.clusterName: {e}"),
    })?;
    let archive_entries = scan.objects.len() as u64;
    let (resources, chosen, mut skipped) = choose(&scan);

    // Pass 2: write the chosen objects in canonical form.
    let mirror = Mirror::open_or_init(git_dir)?;
    let mut writer = mirror.writer(&name, &cluster_name).map_err(|e| match e {
        MirrorError::SnapshotExists { name } => ImportError::AlreadyExists(name),
        e => e.into(),
    })?;
    let mut counts = vec![0u64; resources.len()];
    let mut yaml = String::with_capacity(4096);
    for_each_entry(open()?, &archive, |entry, bytes| {
        let Some(&ri) = chosen.get(entry) else {
            return Ok(());
        };
        let r = &resources[ri];
        let mut node: Node<'_> = serde_json::from_slice(bytes).map_err(|e| ImportError::Entry {
            archive: archive.clone(),
            entry: entry.to_owned(),
            reason: format!("is not valid JSON: {e}"),
        })?;
        match prepare_node(r, &mut node)? {
            Prepared::Write(path) => {
                tree::emit_into(&node, &mut yaml);
                writer.add(&path.file_path(), yaml.as_bytes())?;
                counts[ri] += 1;
            }
            Prepared::Skip(s) => skipped.push(s),
        }
        Ok(())
    })?;
    let base = MetaBase {
        name: name.clone(),
        cluster_name: cluster_name.clone(),
        resource_version: scan.original.resource_version.clone(),
        timestamp: scan.original.timestamp,
        server_version: "unknown (imported)".into(),
        ttl: scan.original.ttl.clone(),
        available_until: scan.original.available_until,
        imported_from: Some(opts.source.clone()),
        // Imports keep Secret values as the archive holds them (docs/import.md).
        encryption: None,
        filter: None,
        unavailable_apis: Vec::new(),
    };
    let listed: Vec<(ApiResourceInfo, u64)> = resources.into_iter().zip(counts).collect();
    let built = build_metadata(base, listed, skipped, Consistency::Exact)?;
    for (path, bytes) in &built.files {
        writer.add(path, bytes)?;
    }
    let done = writer.finish(&built.meta)?;
    let number_of_contents = built.meta.number_of_contents;
    Ok(ImportSummary {
        name,
        cluster_name,
        commit: done.commit.to_string(),
        snapshot_resource_version: scan.original.resource_version,
        snapshot_timestamp: scan.original.timestamp,
        available_until: scan.original.available_until,
        number_of_contents,
        archive_entries,
        dropped: archive_entries.saturating_sub(number_of_contents),
        imported_from: opts.source.clone(),
    })
}

/// Downloads `key` of `store` into a new temporary file in `dir` (removed when dropped).
pub async fn fetch_archive(
    store: &dyn ObjectStore,
    key: &str,
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|source| ImportError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(".import-")
        .suffix(".tgz")
        .tempfile_in(dir)
        .map_err(|source| ImportError::Io {
            context: format!("creating a temporary file in {}", dir.display()),
            source,
        })?;
    let mut file = tmp
        .as_file()
        .try_clone()
        .map_err(|source| ImportError::Io {
            context: format!("opening {}", tmp.path().display()),
            source,
        })?;
    let mut sink = move |chunk: bytes::Bytes| file.write_all(&chunk);
    store.get_streamed(key, &mut sink).await?;
    Ok(tmp)
}

/// Where a temporary download of an archive is kept: `<data-dir>/tmp`.
pub fn download_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp")
}

/// Reads every regular-file entry of the archive `input` (gzip'ed tar), validating its path,
/// type and size, and hands its path and bytes to `each`. Directory entries are checked and
/// passed over. The whole gzip stream is read to its end (its checksum verified).
fn for_each_entry(
    input: impl Read,
    archive: &str,
    mut each: impl FnMut(&str, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut input = std::io::BufReader::new(input);
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match input.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ImportError::Io {
                    context: format!("reading {archive}"),
                    source,
                });
            }
        }
    }
    if got < 2 || magic != [0x1f, 0x8b] {
        return Err(ImportError::NotGzip {
            archive: archive.to_owned(),
        });
    }
    let gz = flate2::read::GzDecoder::new(std::io::Read::chain(&magic[..], input));
    let mut tar = tar::Archive::new(gz);
    let damaged = |at: &str, source: std::io::Error| ImportError::Damaged {
        archive: archive.to_owned(),
        at: if at.is_empty() {
            String::new()
        } else {
            format!(" (in entry {at:?})")
        },
        source,
    };
    let dir = archive_dir_name(archive)?;
    let mut count = 0usize;
    let mut buf = Vec::new();
    {
        let entries = tar.entries().map_err(|e| damaged("", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| damaged("", e))?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ImportError::Archive {
                    archive: archive.to_owned(),
                    reason: format!("more than {MAX_ENTRIES} entries"),
                });
            }
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let fault = |reason: String| ImportError::Entry {
                archive: archive.to_owned(),
                entry: path.clone(),
                reason,
            };
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                let trimmed = path.trim_end_matches('/');
                match layout::classify(&dir, &format!("{trimmed}/x.json")) {
                    Err(PathFault::Escapes) => {
                        return Err(fault(escapes(&dir)));
                    }
                    Err(PathFault::OtherDirectory(other)) => {
                        return Err(fault(other_directory(&dir, &other)));
                    }
                    _ => continue,
                }
            }
            match layout::classify(&dir, &path) {
                Err(PathFault::Escapes) => return Err(fault(escapes(&dir))),
                Err(PathFault::OtherDirectory(other)) => {
                    return Err(fault(other_directory(&dir, &other)));
                }
                _ => {}
            }
            if !kind.is_file() {
                return Err(fault(format!(
                    "is a {}, not a regular file (the original writes only regular files)",
                    type_name(kind)
                )));
            }
            let size = entry.size();
            if size > MAX_ENTRY_BYTES {
                return Err(fault(format!(
                    "is {size} bytes, more than the {MAX_ENTRY_BYTES} accepted for one object"
                )));
            }
            buf.clear();
            (&mut entry)
                .take(MAX_ENTRY_BYTES + 1)
                .read_to_end(&mut buf)
                .map_err(|e| damaged(&path, e))?;
            if buf.len() as u64 != size {
                return Err(damaged(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} of {size} bytes", buf.len()),
                    ),
                ));
            }
            each(&path, &buf)?;
        }
    }
    // Read past the tar's end blocks to the end of the gzip stream: its checksum and length
    // are verified, so an archive cut after its last entry is refused too.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| damaged("", e))?;
    Ok(())
}

fn escapes(dir: &str) -> String {
    format!(
        "its path leaves the snapshot directory {dir}/ (absolute, or with a '..', '.' or empty segment)"
    )
}

fn other_directory(dir: &str, other: &str) -> String {
    format!(
        "is under the directory {other}/, but an archive named {dir}.tgz holds its snapshot under {dir}/ (was the archive renamed?)"
    )
}

fn type_name(kind: tar::EntryType) -> &'static str {
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_hard_link() {
        "hard link"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else {
        "special entry"
    }
}

/// The first pass: every entry validated; objects indexed; CRDs and snapshot.json read.
fn scan(input: impl Read, archive: &str, dir: &str) -> Result<Scan> {
    let mut objects = Vec::new();
    let mut crds = CrdStatus::new();
    let mut original = None;
    let mut seen_paths = HashSet::new();
    for_each_entry(input, archive, |entry, bytes| {
        let fault = |reason: String| ImportError::Entry {
            archive: archive.to_owned(),
            entry: entry.to_owned(),
            reason,
        };
        if !seen_paths.insert(entry.to_owned()) {
            return Err(fault("appears twice in the archive".into()));
        }
        let kind = match layout::classify(dir, entry) {
            Ok(k) => k,
            Err(PathFault::NotJson) => {
                return Err(fault(
                    "is not a .json file (the original writes one JSON file per object)".into(),
                ));
            }
            Err(PathFault::Unknown(why)) => {
                return Err(fault(format!(
                    "is not an object file of the original's layout: {why}"
                )));
            }
            // Checked by for_each_entry.
            Err(PathFault::Escapes | PathFault::OtherDirectory(_)) => {
                return Err(fault("its path is outside the snapshot directory".into()));
            }
        };
        match kind {
            EntryKind::NoSelfLink => Err(ImportError::NoSelfLink {
                archive: archive.to_owned(),
                entry: entry.to_owned(),
            }),
            EntryKind::SnapshotJson => {
                original = Some(read_snapshot_json(bytes, dir).map_err(fault)?);
                Ok(())
            }
            EntryKind::Object(loc) => {
                let v: Value = serde_json::from_slice(bytes)
                    .map_err(|e| fault(format!("is not valid JSON: {e}")))?;
                let indexed = index_object(entry, loc, &v).map_err(fault)?;
                if indexed.loc.resource == "customresourcedefinitions"
                    && indexed.loc.group == "apiextensions.k8s.io"
                {
                    let (key, versions) = crd_status(&v);
                    crds.entry(key).or_default().extend(versions);
                }
                objects.push(indexed);
                Ok(())
            }
        }
    })?;
    let original = original.ok_or_else(|| ImportError::MissingSnapshotJson {
        archive: archive.to_owned(),
        expected: format!("{dir}/snapshot.json"),
    })?;
    Ok(Scan {
        objects,
        crds,
        original,
    })
}

/// Checks that the body is the object its path names and indexes it.
fn index_object(entry: &str, loc: ObjectLocation, v: &Value) -> Result<Indexed, String> {
    if !v.is_object() {
        return Err("is not a JSON object".into());
    }
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let api_version = s(v.get("apiVersion")).ok_or("has no apiVersion")?;
    let kind = s(v.get("kind"))
        .filter(|k| !k.is_empty())
        .ok_or("has no kind")?;
    let meta = v.get("metadata");
    let (group, version) = match api_version.split_once('/') {
        Some((g, ver)) => (g.to_owned(), ver.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    if group != loc.group || loc.version.as_ref().is_some_and(|v| *v != version) {
        return Err(format!(
            "the body's apiVersion is {api_version:?} but the path names {}",
            match &loc.version {
                Some(ver) if loc.group.is_empty() => ver.clone(),
                Some(ver) => format!("{}/{ver}", loc.group),
                None => format!("group {:?}", loc.group),
            }
        ));
    }
    let name = s(meta.and_then(|m| m.get("name")));
    if name.as_deref() != Some(loc.name.as_str()) {
        return Err(format!(
            "the body's metadata.name is {} but the path names {:?}",
            name.map_or("missing".into(), |n| format!("{n:?}")),
            loc.name
        ));
    }
    let namespace = s(meta.and_then(|m| m.get("namespace"))).filter(|n| !n.is_empty());
    if namespace != loc.namespace {
        return Err(format!(
            "the body's metadata.namespace is {:?} but the path names {}",
            namespace.unwrap_or_default(),
            loc.namespace
                .as_ref()
                .map_or("a cluster-scoped object".into(), |n| format!("{n:?}"))
        ));
    }
    loc.content_path(&version)
        .map_err(|e| format!("unusable object path: {e}"))?;
    Ok(Indexed {
        entry: entry.to_owned(),
        uid: s(meta.and_then(|m| m.get("uid"))).filter(|u| !u.is_empty()),
        loc,
        version,
        kind,
    })
}

/// A CRD's (group, plural) and the versions it serves with a `/status` subresource
/// (`apiextensions.k8s.io/v1`: per version; `v1beta1`: `spec.subresources` for all versions,
/// or per version).
fn crd_status(v: &Value) -> ((String, String), Vec<String>) {
    let spec = v.get("spec");
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let group = s(spec.and_then(|s| s.get("group")));
    let plural = s(spec
        .and_then(|s| s.get("names"))
        .and_then(|n| n.get("plural")));
    let has_status = |sub: Option<&Value>| {
        sub.and_then(|s| s.get("status"))
            .is_some_and(|st| !st.is_null())
    };
    let all = has_status(spec.and_then(|s| s.get("subresources")));
    let mut versions: Vec<String> = Vec::new();
    if let Some(vs) = spec
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
    {
        for ver in vs {
            if all || has_status(ver.get("subresources")) {
                versions.push(s(ver.get("name")));
            }
        }
    }
    if all {
        versions.push(s(spec.and_then(|s| s.get("version"))));
    }
    ((group, plural), versions)
}

/// Reads the fields of snapshot.json the import needs. The error never quotes the file.
fn read_snapshot_json(bytes: &[u8], dir: &str) -> Result<OriginalSnapshot, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON: {e}"))?;
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "Snapshot" {
        return Err(format!("is not a Snapshot resource (kind {kind:?})"));
    }
    let field = |path: &[&str]| -> Option<&Value> {
        let mut cur = &v;
        for p in path {
            cur = cur.get(*p)?;
        }
        (!cur.is_null()).then_some(cur)
    };
    let string = |path: &[&str]| {
        field(path)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let time = |path: &[&str]| -> Result<Option<jiff::Timestamp>, String> {
        match string(path) {
            None => Ok(None),
            Some(t) => t
                .parse::<jiff::Timestamp>()
                .map(Some)
                .map_err(|e| format!("{} is not an RFC 3339 time: {e}", path.join("."))),
        }
    };
    let name = string(&["metadata", "name"]).unwrap_or_default().to_owned();
    if name != dir {
        return Err(format!(
            "names snapshot {name:?}, but the archive holds snapshot {dir:?}"
        ));
    }
    let resource_version = string(&["status", "snapshotResourceVersion"])
        .ok_or("has no status.snapshotResourceVersion (the snapshot did not complete)")?
        .to_owned();
    let timestamp = time(&["status", "snapshotTimestamp"])?
        .ok_or("has no status.snapshotTimestamp (the snapshot did not complete)")?;
    let available_until = match time(&["status", "availableUntil"])? {
        Some(t) => Some(t),
        None => time(&["spec", "availableUntil"])?,
    };
    let ttl = string(&["spec", "ttl"])
        .or_else(|| string(&["status", "ttl"]))
        .map(str::to_owned);
    let cluster_name = string(&["spec", "clusterName"])
        .unwrap_or("default")
        .to_owned();
    Ok(OriginalSnapshot {
        name,
        cluster_name,
        resource_version,
        timestamp,
        available_until,
        ttl,
    })
}

/// Chooses what a live snapshot of the same cluster would write: for each group, its preferred
/// version (the highest-priority version the archive holds for it) for every resource served
/// there, other resources at their highest-priority version; a deprecated group's copy of a
/// resource another group serves left out; kinds a snapshot never reads left out; each uid
/// once (non-deprecated groups first); the original's marker ConfigMap skipped. Returns the
/// resources, the entries to write (→ resource index) and the skipped objects.
fn choose(
    scan: &Scan,
) -> (
    Vec<ApiResourceInfo>,
    HashMap<String, usize>,
    Vec<SkippedEntry>,
) {
    // group → resource → versions present.
    let mut present: BTreeMap<&str, BTreeMap<&str, HashSet<&str>>> = BTreeMap::new();
    for o in &scan.objects {
        present
            .entry(o.loc.group.as_str())
            .or_default()
            .entry(o.loc.resource.as_str())
            .or_default()
            .insert(o.version.as_str());
    }
    let best = |vs: &mut dyn Iterator<Item = &str>| -> Option<String> {
        vs.max_by_key(|v| version_priority(v)).map(str::to_owned)
    };
    let mut version_of: HashMap<(&str, &str), String> = HashMap::new();
    for (group, resources) in &present {
        let preferred = best(&mut resources.values().flat_map(|vs| vs.iter().copied()));
        for (resource, versions) in resources {
            let v = match &preferred {
                Some(p) if versions.contains(p.as_str()) => p.clone(),
                _ => best(&mut versions.iter().copied()).unwrap_or_default(),
            };
            version_of.insert((group, resource), v);
        }
    }
    // Kinds per (group, resource), for the deprecated-group rule.
    let mut kind_of: HashMap<(&str, &str), &str> = HashMap::new();
    for o in &scan.objects {
        if version_of.get(&(o.loc.group.as_str(), o.loc.resource.as_str())) == Some(&o.version) {
            kind_of
                .entry((o.loc.group.as_str(), o.loc.resource.as_str()))
                .or_insert(o.kind.as_str());
        }
    }
    let served_elsewhere = |group: &str, resource: &str, kind: &str| {
        kind_of
            .iter()
            .any(|((g, r), k)| *g != group && *r == resource && *k == kind)
    };

    let mut resources: Vec<ApiResourceInfo> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut candidates: Vec<(usize, &Indexed)> = Vec::new();
    for o in &scan.objects {
        let (g, r) = (o.loc.group.as_str(), o.loc.resource.as_str());
        if version_of.get(&(g, r)) != Some(&o.version) {
            continue;
        }
        let kind = kind_of.get(&(g, r)).copied().unwrap_or(o.kind.as_str());
        if DEPRECATED_GROUPS.contains(&g) && served_elsewhere(g, r, kind) {
            continue;
        }
        let has_status = match scan.crds.get(&(g.to_owned(), r.to_owned())) {
            Some(versions) => versions.contains(&o.version),
            None => layout::builtin_has_status(g, &o.version, r),
        };
        let info = ApiResourceInfo {
            group: g.to_owned(),
            version: o.version.clone(),
            resource: r.to_owned(),
            kind: kind.to_owned(),
            namespaced: o.loc.namespace.is_some(),
            verbs: REQUIRED_VERBS.iter().map(|v| (*v).to_owned()).collect(),
            has_status_subresource: has_status,
        };
        if !info.is_snapshotted() {
            continue;
        }
        let ri = *index
            .entry((g.to_owned(), r.to_owned()))
            .or_insert_with(|| {
                resources.push(info);
                resources.len() - 1
            });
        candidates.push((ri, o));
    }
    // Each uid once: non-deprecated groups first, then by group, resource and path.
    candidates.sort_by(|(ra, a), (rb, b)| {
        let key = |r: &ApiResourceInfo| {
            (
                DEPRECATED_GROUPS.contains(&r.group.as_str()),
                r.group.clone(),
                r.resource.clone(),
            )
        };
        key(&resources[*ra])
            .cmp(&key(&resources[*rb]))
            .then_with(|| a.entry.cmp(&b.entry))
    });
    let mut uids = HashSet::new();
    let mut chosen = HashMap::new();
    let mut skipped = Vec::new();
    for (ri, o) in candidates {
        if let Some(uid) = &o.uid
            && !uids.insert(uid.as_str())
        {
            continue;
        }
        let r = &resources[ri];
        if r.group.is_empty()
            && r.resource == "configmaps"
            && o.loc.namespace.as_deref() == Some("default")
            && o.loc.name.starts_with(MARKER_PREFIX)
        {
            if let Ok(p) = o.loc.content_path(&o.version) {
                skipped.push(SkippedEntry {
                    path: p.as_str().to_owned(),
                    reason: "original-marker".into(),
                });
            }
            continue;
        }
        chosen.insert(o.entry.clone(), ri);
    }
    (resources, chosen, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        assert_eq!(
            archive_dir_name("cluster01-001.tgz").unwrap(),
            "cluster01-001"
        );
        assert_eq!(archive_dir_name("/tmp/x/c1.tgz").unwrap(), "c1");
        assert!(archive_dir_name("c1.tar").is_err());
        assert!(archive_dir_name(".tgz").is_err());
    }

    #[test]
    fn snapshot_json_fields_and_no_kubeconfig_in_errors() {
        let json = serde_json::json!({
            "apiVersion": "clustersnapshot.rywt.io/v1alpha1", "kind": "Snapshot",
            "metadata": {"name": "c1-001", "namespace": "k8s-snap"},
            "spec": {"clusterName": "c1", "kubeconfig": "users: [{user: {token: SECRET}}]", "ttl": "720h0m0s"},
            "status": {"snapshotResourceVersion": "4521912", "snapshotTimestamp": "2019-05-20T03:45:08Z",
                       "availableUntil": "2019-06-19T03:45:08Z", "phase": ""}
        });
        let o = read_snapshot_json(json.to_string().as_bytes(), "c1-001").unwrap();
        assert_eq!(o.cluster_name, "c1");
        assert_eq!(o.resource_version, "4521912");
        assert_eq!(o.timestamp.to_string(), "2019-05-20T03:45:08Z");
        assert_eq!(
            o.available_until.unwrap().to_string(),
            "2019-06-19T03:45:08Z"
        );
        assert_eq!(o.ttl.as_deref(), Some("720h0m0s"));
        let e = read_snapshot_json(json.to_string().as_bytes(), "other").unwrap_err();
        assert!(e.contains("names snapshot \"c1-001\""), "{e}");
        assert!(!e.contains("SECRET"));
        let mut incomplete = json.clone();
        incomplete["status"] = serde_json::json!({});
        let e = read_snapshot_json(incomplete.to_string().as_bytes(), "c1-001").unwrap_err();
        assert!(e.contains("snapshotResourceVersion"), "{e}");
        assert!(!e.contains("SECRET"));
    }

    /// Go's archive/tar writes a long name as a USTAR prefix (up to 256 bytes) or in a PAX
    /// header; both are read as the entry's path.
    #[test]
    fn long_names_in_ustar_prefix_and_pax_headers() {
        let long = format!(
            "c1/apis/example.com/v1/namespaces/{}/widgets/w.json",
            "n".repeat(60)
        );
        let longer = format!(
            "c1/apis/example.com/v1/namespaces/{}/widgets/w.json",
            "m".repeat(250)
        );
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_ustar();
        h.set_path(&long).unwrap();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        assert!(
            h.as_ustar().is_some_and(|u| u.prefix[0] != 0),
            "the name uses the prefix"
        );
        b.append(&h, &b"{}"[..]).unwrap();
        b.append_pax_extensions([("path", longer.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("c1/placeholder.json").unwrap();
        h.set_size(2);
        h.set_cksum();
        b.append(&h, &b"{}"[..]).unwrap();
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let mut seen = Vec::new();
        for_each_entry(&bytes[..], "c1.tgz", |p, body| {
            assert_eq!(body, b"{}");
            seen.push(p.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![long, longer]);
    }

    #[test]
    fn crd_status_versions() {
        let v1 = serde_json::json!({"spec": {"group": "example.com", "names": {"plural": "widgets"},
            "versions": [{"name": "v1", "subresources": {"status": {}}}, {"name": "v1beta1"}]}});
        let (key, vs) = crd_status(&v1);
        assert_eq!(key, ("example.com".to_owned(), "widgets".to_owned()));
        assert_eq!(vs, vec!["v1".to_owned()]);
        let beta = serde_json::json!({"spec": {"group": "example.com", "names": {"plural": "gadgets"},
            "version": "v1", "subresources": {"status": {}}}});
        assert_eq!(crd_status(&beta).1, vec!["v1".to_owned()]);
    }
}
