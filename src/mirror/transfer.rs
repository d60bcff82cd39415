//! Moving objects between the mirror and the store: building a pack of the objects of some
//! snapshot commits (hiding those the store already has), indexing a downloaded pack, checking
//! that a commit's whole tree is present, and tagging a pulled snapshot.
//!
//! Owns only object transfer and the tag of a pulled snapshot; it never talks to the store
//! itself (the `store` module moves the bytes) and never trusts a downloaded pack or name.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write as _;
use std::path::Path;

use git2::{ObjectType, Oid, Repository};

use super::packread::{Entry, Location, PackFiles, WindowReader, parse_entry};
use super::{
    CommitId, GitContext, Mirror, MirrorError, Result, SNAPSHOT_TAG_PREFIX, io_ctx, parse_meta,
    validate_name,
};
use crate::tree::meta::SNAPSHOT_META_FILE;

/// A packfile and its index, as built by [`Mirror::build_pack`].
#[derive(Clone, PartialEq, Eq)]
pub struct PackData {
    /// The `.pack` bytes (git pack format v2, SHA-1 trailer).
    pub pack: Vec<u8>,
    /// The matching `.idx` bytes (version 2).
    pub idx: Vec<u8>,
    /// Number of objects in the pack.
    pub objects: u64,
}

impl std::fmt::Debug for PackData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackData")
            .field("pack_bytes", &self.pack.len())
            .field("idx_bytes", &self.idx.len())
            .field("objects", &self.objects)
            .finish()
    }
}

/// A hasher for object ids: they are already uniformly distributed (SHA-1), so their first
/// eight bytes are the hash. Much cheaper than SipHash on the walks over every object.
#[derive(Default)]
pub(super) struct OidHasher(u64);

impl Hasher for OidHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
    }

    fn write_usize(&mut self, _: usize) {
        // The length prefix of the id's byte slice: always 20, carries nothing.
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Raw 20-byte ids (compared inline; `Oid`'s equality is a call into libgit2).
pub(super) type OidSet = HashSet<[u8; 20], BuildHasherDefault<OidHasher>>;

pub(super) fn key(id: &Oid) -> [u8; 20] {
    let mut k = [0u8; 20];
    let b = id.as_bytes();
    let n = b.len().min(20);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// Object ids listed by the indexes of packs installed into the mirror (see
/// [`install_pack_files`]): the walk that checks a pulled commit is complete looks them up in
/// memory instead of asking the object database. It is the same knowledge the object database
/// would use (it answers "exists" from these very indexes); object contents stay protected by
/// libgit2's hash verification when they are read.
#[derive(Debug, Default, Clone)]
pub struct ObjectSet(OidSet);

impl ObjectSet {
    /// Adds every id of `other`.
    pub fn extend(&mut self, other: ObjectSet) {
        if self.0.is_empty() {
            self.0 = other.0;
        } else {
            self.0.extend(other.0);
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one id; true when it was not there.
    pub(crate) fn insert_key(&mut self, k: [u8; 20]) -> bool {
        self.0.insert(k)
    }

    /// Whether the commit's id is in the set.
    pub(crate) fn contains_commit(&self, id: &CommitId) -> bool {
        self.0.contains(&key(&id.oid()))
    }

    /// How many ids of `self` are in `other`.
    pub(crate) fn count_in(&self, other: &ObjectSet) -> usize {
        self.0.iter().filter(|k| other.0.contains(*k)).count()
    }

    /// Removes every id of `other`.
    pub(crate) fn remove_all(&mut self, other: &ObjectSet) {
        self.0.retain(|k| !other.0.contains(k));
    }
}

/// The raw key of an id.
pub(crate) fn key_of(id: &Oid) -> [u8; 20] {
    key(id)
}

/// Object files whose body was checked against their path, and trees whose every object file
/// was: (object id, hash of the path). One hasher for the whole set (keys stay comparable from
/// one snapshot to the next), randomly keyed so a store cannot aim for a collision.
#[derive(Default)]
pub(crate) struct BodySet {
    hasher: std::hash::RandomState,
    seen: BodyKeys,
}

/// Keys of [`BodySet`], hashed by their path hash (already random).
type BodyKeys = HashSet<([u8; 20], u64), BuildHasherDefault<OidHasher>>;

impl BodySet {
    /// The key of (id, `dir` + `name`), without building the path.
    fn key(&self, id: &[u8; 20], dir: &str, name: &str) -> ([u8; 20], u64) {
        use std::hash::BuildHasher as _;
        let mut h = self.hasher.build_hasher();
        h.write(dir.as_bytes());
        h.write(name.as_bytes());
        h.write_u8(0xff);
        (*id, h.finish())
    }
}

/// The mirror's packs opened for reading bodies, once a body has to be read.
pub(super) struct LazyPackFiles<'a> {
    git_dir: &'a Path,
    files: Option<PackFiles>,
}

impl<'a> LazyPackFiles<'a> {
    pub(super) fn new(git_dir: &'a Path) -> LazyPackFiles<'a> {
        LazyPackFiles {
            git_dir,
            files: None,
        }
    }

    fn get(&mut self) -> Result<&PackFiles> {
        match &mut self.files {
            Some(f) => Ok(f),
            slot => Ok(slot.insert(PackFiles::open(self.git_dir)?)),
        }
    }
}

/// What the object files of one directory name, but their names: read once from the
/// directory's path (the shape of a content path does not depend on its last segment).
struct DirPaths<'k> {
    api_version: String,
    namespace: Option<String>,
    kind: Option<&'k str>,
}

impl<'k> DirPaths<'k> {
    /// `None` when `dir` holds no valid content paths (each file's own parse then says why).
    fn of(dir: &str, kinds: &Kinds<'k>) -> Option<DirPaths<'k>> {
        let path = crate::tree::ContentPath::from_file_path(&format!("{dir}x.yaml")).ok()?;
        Some(DirPaths {
            api_version: path.api_version(),
            namespace: path.namespace().map(str::to_owned),
            kind: kinds.of(&path),
        })
    }
}

impl Mirror {
    /// The tree of `commit`, or `None` when the object database does not have the commit.
    fn commit_tree_id(&self, odb: &git2::Odb<'_>, commit: &CommitId) -> Result<Option<Oid>> {
        if !odb.exists(commit.oid()) {
            return Ok(None);
        }
        let c = self
            .repo
            .find_commit(commit.oid())
            .ctx(|| format!("reading commit {commit}"))?;
        Ok(Some(c.tree_id()))
    }

    /// One walk of a commit's tree from a store (untrusted): complete (`Ok(false)` at the first
    /// missing object), every path one k8s-snap could have written, and every object file holding
    /// the object its path names (name, namespace, apiVersion, and kind from
    /// `.k8s-snap/resources.yaml`), so that a restore creates exactly the objects its plan names.
    ///
    /// Objects hashed when their pack was scanned (`scanned`) are walked and checked in memory:
    /// trees from their content, bodies by the identity they claim. Anything else is read through
    /// libgit2 (trees, which it hashes) or from the pack files (bodies, hashed here).
    ///
    /// `verified` holds trees already known complete with valid names (a tree is checked once
    /// whatever its path); `bodies` the (id, path) pairs whose bodies were checked: both grow
    /// only when the whole commit passes.
    fn check_pulled(
        &self,
        commit: &CommitId,
        verified: &mut OidSet,
        present: &OidSet,
        bodies: &mut BodySet,
        files: &mut LazyPackFiles<'_>,
        scanned: &super::Scanned,
    ) -> Result<bool> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let commit_key = key(&commit.oid());
        let root = match scanned.commits.get(&commit_key) {
            Some(data) => commit_tree(data).ok_or_else(|| MirrorError::Io {
                context: format!("reading commit {commit}"),
                source: std::io::Error::other("a commit without a tree"),
            })?,
            None => match self.commit_tree_id(&odb, commit)? {
                Some(tree) => key(&tree),
                None => return Ok(false),
            },
        };
        // The kinds, read first so that bodies are checked during the walk; an error reading
        // them is reported only if the walk finds the tree complete (a missing object is not
        // an error but an incomplete snapshot).
        let (resources, resources_error) =
            match self.read_file(commit, crate::tree::meta::RESOURCES_FILE) {
                Ok(bytes) => (
                    bytes
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|t| {
                            crate::tree::from_yaml_str::<Vec<crate::tree::ResourceEntry>>(&t).ok()
                        })
                        .unwrap_or_default(),
                    None,
                ),
                Err(e) => (Vec::new(), Some(e)),
            };
        let kinds = Kinds::new(&resources);
        // Trees whose entries were checked in this walk (names, presence).
        let mut seen = OidSet::default();
        let mut new_bodies = BodyKeys::default();
        // The first object file whose body disagrees with its path (reported once the tree is
        // known complete), and the bodies to read.
        let mut mismatch: Option<MirrorError> = None;
        let mut reads: Vec<(String, Oid)> = Vec::new();
        let mut claimed = 0usize;
        // (tree, its path with a trailing '/', whether its object files are checked).
        let mut stack: Vec<([u8; 20], String, bool)> = vec![(root, String::new(), true)];
        while let Some((tree_id, prefix, with_bodies)) = stack.pop() {
            let first = !verified.contains(&tree_id) && seen.insert(tree_id);
            let owned;
            let data: &[u8] = match scanned.trees.get(&tree_id) {
                Some(d) => d,
                None => {
                    let oid = Oid::from_bytes(&tree_id).ctx(|| "reading a tree id".into())?;
                    if !present.contains(&tree_id) && !odb.exists(oid) {
                        return Ok(false);
                    }
                    let obj = odb
                        .read(oid)
                        .ctx(|| format!("reading tree {oid} of commit {commit}"))?;
                    if obj.kind() != ObjectType::Tree {
                        return Ok(false);
                    }
                    owned = obj;
                    owned.data()
                }
            };
            // What this directory's object files name, computed at the first one.
            let api_dir =
                with_bodies && (prefix.starts_with("api/") || prefix.starts_with("apis/"));
            let mut dir: Option<Option<DirPaths<'_>>> = None;
            for entry in TreeEntries(data) {
                let (mode, name, id) = entry.map_err(|reason| MirrorError::Io {
                    context: format!("reading tree {} of commit {commit}", hex_lower(&tree_id)),
                    source: std::io::Error::other(reason),
                })?;
                let name = match std::str::from_utf8(name) {
                    Ok(s) => std::borrow::Cow::Borrowed(s),
                    Err(_) => String::from_utf8_lossy(name),
                };
                if first {
                    if name.contains('/') {
                        return Err(MirrorError::InvalidPath {
                            path: name.into_owned(),
                            reason: "a tree entry name contains '/'".into(),
                        });
                    }
                    super::validate_path(&name)?;
                }
                match mode & 0o170_000 {
                    0o040_000 => {
                        let bodies_below =
                            with_bodies && !(prefix.is_empty() && name.starts_with(".k8s-snap"));
                        let dir = format!("{prefix}{name}/");
                        let unseen = !verified.contains(&id) && !seen.contains(&id);
                        let fresh_bodies = bodies_below && {
                            let k = bodies.key(&id, &dir, "");
                            !bodies.seen.contains(&k) && new_bodies.insert(k)
                        };
                        if unseen || fresh_bodies {
                            stack.push((id, dir, fresh_bodies));
                        }
                    }
                    0o100_000 | 0o120_000 => {
                        let found = scanned.blobs.get(&id);
                        if first
                            && found.is_none()
                            && !present.contains(&id)
                            && !verified.contains(&id)
                            && !seen.contains(&id)
                        {
                            let oid = Oid::from_bytes(&id).ctx(|| "reading a blob id".into())?;
                            if !odb.exists(oid) {
                                return Ok(false);
                            }
                            seen.insert(id);
                        }
                        if !api_dir || mismatch.is_some() {
                            continue;
                        }
                        let Some(stem) = name.strip_suffix(crate::tree::OBJECT_FILE_SUFFIX) else {
                            continue;
                        };
                        let k = bodies.key(&id, &prefix, &name);
                        if bodies.seen.contains(&k) || !new_bodies.insert(k) {
                            continue;
                        }
                        let paths = dir.get_or_insert_with(|| DirPaths::of(&prefix, &kinds));
                        let claim = match found {
                            Some(Some(c)) => Some(c),
                            _ => None,
                        };
                        match (paths, claim) {
                            (Some(paths), Some(claim))
                                if crate::tree::validate_name(stem).is_ok() =>
                            {
                                claimed += 1;
                                let expected = crate::tree::identity::Expected {
                                    name: stem,
                                    namespace: paths.namespace.as_deref(),
                                    api_version: &paths.api_version,
                                    kind: paths.kind,
                                };
                                if let Err(reason) = expected.compare(claim.view()) {
                                    mismatch = Some(MirrorError::InvalidPath {
                                        path: format!("{prefix}{name}"),
                                        reason,
                                    });
                                }
                            }
                            (_, Some(claim)) => {
                                // The path itself is invalid: its own parse says why.
                                let file = format!("{prefix}{name}");
                                let checked = content_path(&file).and_then(|path| {
                                    crate::tree::identity::compare_identity(
                                        &path,
                                        claim.view(),
                                        kinds.of(&path),
                                    )
                                    .map_err(|reason| {
                                        MirrorError::InvalidPath {
                                            path: file.clone(),
                                            reason,
                                        }
                                    })
                                });
                                if let Err(e) = checked {
                                    mismatch = Some(e);
                                }
                            }
                            (_, None) => reads.push((
                                format!("{prefix}{name}"),
                                Oid::from_bytes(&id).ctx(|| "reading a blob id".into())?,
                            )),
                        }
                    }
                    // A submodule, or a mode git does not know: never written by k8s-snap.
                    _ => return Ok(false),
                }
            }
        }
        // Complete, with valid names: now what the bodies said.
        if let Some(e) = resources_error {
            return Err(e);
        }
        if let Some(e) = mismatch {
            return Err(e);
        }
        tracing::debug!(
            %commit,
            claimed,
            read = reads.len(),
            "object files checked against their paths"
        );
        if !reads.is_empty() {
            self.check_files(commit, &kinds, reads, files.get()?)?;
        }
        if verified.is_empty() {
            *verified = seen;
        } else {
            verified.extend(seen);
        }
        bodies.seen.extend(new_bodies);
        Ok(true)
    }

    /// Reads each object file (hashing it against its id) and checks its body against its path:
    /// straight from the pack files ([`PackFiles`]: one positioned read of an undeltified
    /// entry) on two threads; an object that is a delta or in no readable pack is read through
    /// libgit2.
    fn check_files(
        &self,
        commit: &CommitId,
        kinds: &Kinds<'_>,
        todo: Vec<(String, Oid)>,
        files: &PackFiles,
    ) -> Result<()> {
        let git_dir: &Path = &self.git_dir;
        // Entries in pack order, so that each thread reads its packs front to back.
        let mut todo: Vec<(Option<Location>, String, Oid)> = todo
            .into_iter()
            .map(|(file, id)| (files.locate(id), file, id))
            .collect();
        todo.sort_unstable_by(|a, b| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let check = |part: &[(Option<Location>, String, Oid)]| -> Result<()> {
            let mut window = WindowReader::new(files);
            let mut repo: Option<Repository> = None;
            for (at, file, id) in part {
                let path = content_path(file)?;
                let kind = kinds.of(&path);
                let mut checked = None;
                if let Some(at) = at {
                    let raw = window.entry(*at)?;
                    if let Ok(entry @ Entry::Whole { .. }) = parse_entry(raw)
                        && entry.verified(ObjectType::Blob, *id)
                        && let Entry::Whole { data, .. } = &entry
                    {
                        checked = Some(crate::tree::identity::check_identity(&path, data, kind));
                    }
                }
                let result = match checked {
                    Some(r) => r,
                    None => {
                        let repo = match &mut repo {
                            Some(r) => r,
                            None => repo.insert(
                                Repository::open_bare(git_dir)
                                    .ctx(|| format!("opening {}", git_dir.display()))?,
                            ),
                        };
                        let odb = repo.odb().ctx(|| "opening the object database".into())?;
                        match odb.read(*id) {
                            Ok(blob) => {
                                crate::tree::identity::check_identity(&path, blob.data(), kind)
                            }
                            Err(e) => Err(format!("cannot read it: {}", e.message())),
                        }
                    }
                };
                if let Err(reason) = result {
                    return Err(MirrorError::InvalidPath {
                        path: file.clone(),
                        reason,
                    });
                }
            }
            Ok(())
        };
        if todo.len() < 2_000 {
            check(&todo)
        } else {
            let (a, b) = todo.split_at(todo.len() / 2);
            std::thread::scope(|scope| {
                let other = scope.spawn(|| check(b));
                let mine = check(a);
                let theirs = other.join().unwrap_or_else(|_| {
                    Err(MirrorError::Io {
                        context: format!("checking the object files of commit {commit}"),
                        source: std::io::Error::other("the checking thread panicked"),
                    })
                });
                mine.and(theirs)
            })
        }
    }
}

/// The content path of an object file, or the error naming it.
fn content_path(file: &str) -> Result<crate::tree::ContentPath> {
    crate::tree::ContentPath::from_file_path(file).map_err(|e| MirrorError::InvalidPath {
        path: file.to_owned(),
        reason: e.to_string(),
    })
}

/// The kinds `.k8s-snap/resources.yaml` names: group -> (version, resource) -> kind, looked up
/// without building a key per file.
struct Kinds<'r>(
    std::collections::HashMap<&'r str, std::collections::HashMap<(&'r str, &'r str), &'r str>>,
);

impl<'r> Kinds<'r> {
    fn new(resources: &'r [crate::tree::ResourceEntry]) -> Kinds<'r> {
        let mut kinds: std::collections::HashMap<_, std::collections::HashMap<_, _>> =
            std::collections::HashMap::new();
        for r in resources.iter().map(|e| &e.api) {
            kinds
                .entry(r.group.as_str())
                .or_default()
                .insert((r.version.as_str(), r.resource.as_str()), r.kind.as_str());
        }
        Kinds(kinds)
    }

    fn of(&self, path: &crate::tree::ContentPath) -> Option<&'r str> {
        self.0
            .get(path.group())
            .and_then(|m| m.get(&(path.version(), path.resource())))
            .copied()
    }
}

/// The tree a commit's content names (its first line, `tree <hex>`).
fn commit_tree(data: &[u8]) -> Option<[u8; 20]> {
    let text = data.strip_prefix(b"tree ")?.get(..40)?;
    if data.get(45) != Some(&b'\n') {
        return None;
    }
    let mut id = [0u8; 20];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(id)
}

/// The entries of a tree's content: (mode, name, id); an error names what is malformed.
struct TreeEntries<'a>(&'a [u8]);

impl<'a> Iterator for TreeEntries<'a> {
    type Item = std::result::Result<(u32, &'a [u8], [u8; 20]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let parsed = (|| {
            let space = self
                .0
                .iter()
                .position(|&b| b == b' ')
                .ok_or("an entry without a mode")?;
            let mode_text = &self.0[..space];
            if mode_text.is_empty() || mode_text.len() > 7 {
                return Err("an entry with a malformed mode");
            }
            let mut mode = 0u32;
            for &c in mode_text {
                if !(b'0'..=b'7').contains(&c) {
                    return Err("an entry with a malformed mode");
                }
                mode = mode * 8 + u32::from(c - b'0');
            }
            let rest = &self.0[space + 1..];
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or("an entry without a name")?;
            let name = &rest[..nul];
            if name.is_empty() {
                return Err("an entry with an empty name");
            }
            let id_bytes = rest.get(nul + 1..nul + 21).ok_or("a truncated entry")?;
            let mut id = [0u8; 20];
            id.copy_from_slice(id_bytes);
            Ok((mode, name, id, space + 1 + nul + 21))
        })();
        match parsed {
            Ok((mode, name, id, len)) => {
                self.0 = &self.0[len..];
                Some(Ok((mode, name, id)))
            }
            Err(e) => {
                self.0 = &[];
                Some(Err(e))
            }
        }
    }
}

/// Walks with at least this many known-present ids use two threads.
const PARALLEL_WALK_MIN: usize = 10_000;

/// The fixed inputs of one completeness walk ([`Mirror::scan`]).
#[derive(Clone, Copy)]
struct Walk<'a> {
    commit: &'a CommitId,
    check_paths: bool,
    verified: &'a OidSet,
    present: &'a OidSet,
}

impl Walk<'_> {
    /// Walks the trees of `stack` (already in `seen`) depth first: `Some(false)` at the first
    /// missing object, `Some(true)` when done, `None` as soon as `stop_at` trees are pending.
    fn run(
        &self,
        repo: &Repository,
        stack: &mut Vec<Oid>,
        seen: &mut OidSet,
        stop_at: Option<usize>,
    ) -> Result<Option<bool>> {
        let commit = self.commit;
        let odb = repo.odb().ctx(|| "opening the object database".into())?;
        let known = |id: &Oid, seen: &mut OidSet| {
            let k = key(id);
            self.verified.contains(&k) || !seen.insert(k)
        };
        while let Some(tree_id) = stack.pop() {
            if !self.present.contains(&key(&tree_id)) && !odb.exists(tree_id) {
                return Ok(Some(false));
            }
            let tree = repo
                .find_tree(tree_id)
                .ctx(|| format!("reading tree {tree_id} of commit {commit}"))?;
            for entry in tree.iter() {
                if self.check_paths {
                    let bytes = entry.name_bytes();
                    let name = match std::str::from_utf8(bytes) {
                        Ok(s) => std::borrow::Cow::Borrowed(s),
                        Err(_) => String::from_utf8_lossy(bytes),
                    };
                    if bytes.contains(&b'/') {
                        return Err(MirrorError::InvalidPath {
                            path: name.into_owned(),
                            reason: "a tree entry name contains '/'".into(),
                        });
                    }
                    super::validate_path(&name)?;
                }
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        if !known(&entry.id(), seen) {
                            stack.push(entry.id());
                        }
                    }
                    Some(ObjectType::Blob) => {
                        // A blob listed by an installed index is present: no need to remember
                        // it (one lookup instead of two, and `seen` stays small).
                        let id = entry.id();
                        if !self.present.contains(&key(&id)) && !known(&id, seen) && !odb.exists(id)
                        {
                            return Ok(Some(false));
                        }
                    }
                    _ => return Ok(Some(false)),
                }
            }
            if stop_at.is_some_and(|n| stack.len() >= n) {
                return Ok(None);
            }
        }
        Ok(Some(true))
    }
}

/// Checks a downloaded pack against its downloaded version-2 index and writes both into
/// `git_dir/objects/pack` without re-indexing (fast path of a pull); needs no open repository,
/// so it can run on any thread. Call [`Mirror::refresh_objects`] afterwards. Returns the ids the
/// index lists.
///
/// The index is checked structurally first: version 2, its own SHA-1 trailer, the pack
/// checksum it records equal to the pack's trailer, the object count equal to the pack
/// header's, and its object ids sorted and unique. Object contents stay protected by libgit2's
/// hash verification on every read; `Mirror::index_pack` is the full check.
pub fn install_pack_files(git_dir: &Path, pack: &[u8], idx: &[u8]) -> Result<ObjectSet> {
    if pack.len() < 32 {
        return Err(install_error("not a git pack"));
    }
    let mut tail = [0u8; 20];
    tail.copy_from_slice(&pack[pack.len() - 20..]);
    let objects = check_idx(&pack[..12], &tail, idx)?;
    let base = format!("pack-{}", hex_lower(&tail));
    let pack_dir = pack_dir_of(git_dir)?;
    let path = pack_dir.join(format!("{base}.pack"));
    if !path.exists() {
        let mut tmp = io_ctx(tempfile::NamedTempFile::new_in(&pack_dir), || {
            format!("creating a temp file in {}", pack_dir.display())
        })?;
        io_ctx(tmp.write_all(pack), || {
            format!("writing {}", path.display())
        })?;
        io_ctx(tmp.persist(&path).map_err(|e| e.error), || {
            format!("installing {}", path.display())
        })?;
    }
    write_idx(&pack_dir, &base, idx)?;
    Ok(objects)
}

/// Checks a pack's index against the pack without installing anything (`verify --deep`): the
/// same structural checks as [`install_pack_files`] (version, SHA-1 trailer, the pack checksum
/// it records, object count, sorted ids, fan-out). Returns the ids it lists.
pub fn check_pack_index(pack: &[u8], idx: &[u8]) -> Result<ObjectSet> {
    if pack.len() < 32 {
        return Err(install_error("not a git pack"));
    }
    let mut tail = [0u8; 20];
    tail.copy_from_slice(&pack[pack.len() - 20..]);
    check_idx(&pack[..12], &tail, idx)
}

fn install_error(reason: &str) -> MirrorError {
    MirrorError::Io {
        context: "installing a downloaded pack".into(),
        source: std::io::Error::other(reason.to_owned()),
    }
}

fn pack_dir_of(git_dir: &Path) -> Result<std::path::PathBuf> {
    let pack_dir = git_dir.join("objects").join("pack");
    io_ctx(std::fs::create_dir_all(&pack_dir), || {
        format!("creating {}", pack_dir.display())
    })?;
    Ok(pack_dir)
}

/// Writes the index last: libgit2 finds packs by their index.
fn write_idx(pack_dir: &Path, base: &str, idx: &[u8]) -> Result<()> {
    let path = pack_dir.join(format!("{base}.idx"));
    if path.exists() {
        return Ok(());
    }
    let mut tmp = io_ctx(tempfile::NamedTempFile::new_in(pack_dir), || {
        format!("creating a temp file in {}", pack_dir.display())
    })?;
    io_ctx(tmp.write_all(idx), || format!("writing {}", path.display()))?;
    io_ctx(tmp.persist(&path).map_err(|e| e.error), || {
        format!("installing {}", path.display())
    })?;
    Ok(())
}

/// The structural checks of a pack's index against the pack's 12-byte header and 20-byte
/// SHA-1 trailer; the ids it lists.
fn check_idx(header: &[u8], pack_sum: &[u8; 20], idx: &[u8]) -> Result<ObjectSet> {
    use sha1::{Digest, Sha1};
    let bad = install_error;
    if header.len() < 12 || &header[..4] != b"PACK" {
        return Err(bad("not a git pack"));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let min_len = 8 + 256 * 4 + 40;
    if idx.len() < min_len || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad("the index is not a version 2 pack index"));
    }
    if Sha1::digest(&idx[..idx.len() - 20]).as_slice() != &idx[idx.len() - 20..] {
        return Err(bad("the index's SHA-1 trailer does not match its content"));
    }
    // The caller checked the pack's sha256 against the manifest; its SHA-1 trailer is
    // what the index must record.
    if &idx[idx.len() - 40..idx.len() - 20] != pack_sum {
        return Err(bad("the index belongs to another pack"));
    }
    let n = u32::from_be_bytes([idx[1028], idx[1029], idx[1030], idx[1031]]);
    if n != count {
        return Err(bad("the index and the pack disagree on the object count"));
    }
    let expected_len = 8 + 256 * 4 + (n as usize) * (20 + 4 + 4) + 40;
    if idx.len() < expected_len {
        return Err(bad("the index is truncated"));
    }
    let start = 8 + 256 * 4;
    let ids = &idx[start..start + n as usize * 20];
    let mut set = OidSet::with_capacity_and_hasher(n as usize, Default::default());
    // Sorted, unique and consistent with the fan-out table: then libgit2's lookups in this
    // index find exactly the ids of the set.
    let mut prev: Option<&[u8]> = None;
    let mut below = [0u32; 256];
    for chunk in ids.chunks_exact(20) {
        if prev.is_some_and(|p| p >= chunk) {
            return Err(bad("the index's object ids are not sorted"));
        }
        prev = Some(chunk);
        below[usize::from(chunk[0])] += 1;
        let mut k = [0u8; 20];
        k.copy_from_slice(chunk);
        set.insert(k);
    }
    let mut cumulative = 0u32;
    for (b, count) in below.iter().enumerate() {
        cumulative += count;
        let at = 8 + b * 4;
        let fanout = u32::from_be_bytes([idx[at], idx[at + 1], idx[at + 2], idx[at + 3]]);
        if fanout != cumulative {
            return Err(bad(
                "the index's fan-out table does not match its object ids",
            ));
        }
    }
    Ok(ObjectSet(set))
}

/// A downloaded pack being written into `objects/pack` under a temporary name while it
/// streams (libgit2 ignores it until [`StagedPack::install`] names it and adds its index).
/// Dropping it deletes the file.
pub struct StagedPack {
    file: tempfile::NamedTempFile,
    pack_dir: std::path::PathBuf,
    len: u64,
    header: Vec<u8>,
    tail: [u8; 20],
    /// The objects hashed as they were written.
    scanner: super::packscan::ScanFeed,
}

impl std::fmt::Debug for StagedPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedPack")
            .field("path", &self.file.path())
            .field("len", &self.len)
            .finish()
    }
}

impl StagedPack {
    /// A new empty staging file in `git_dir/objects/pack`. With `scan_aside`, the entries are
    /// hashed on a thread of their own while the caller writes (for a pack downloaded alone,
    /// so that the pull uses a second core).
    pub fn create(git_dir: &Path, scan_aside: bool) -> Result<StagedPack> {
        let pack_dir = pack_dir_of(git_dir)?;
        let file = io_ctx(tempfile::NamedTempFile::new_in(&pack_dir), || {
            format!("creating a temp file in {}", pack_dir.display())
        })?;
        Ok(StagedPack {
            file,
            pack_dir,
            len: 0,
            header: Vec::with_capacity(12),
            tail: [0; 20],
            scanner: super::packscan::ScanFeed::new(scan_aside),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        io_ctx(self.file.write_all(bytes), || {
            format!("writing {}", self.file.path().display())
        })?;
        if self.header.len() < 12 {
            let n = (12 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
        }
        if bytes.len() >= 20 {
            self.tail.copy_from_slice(&bytes[bytes.len() - 20..]);
        } else {
            self.tail.rotate_left(bytes.len());
            self.tail[20 - bytes.len()..].copy_from_slice(bytes);
        }
        self.len += bytes.len() as u64;
        self.scanner.feed(bytes);
        Ok(())
    }

    /// The bytes written (to index them another way).
    pub(crate) fn read_back(&self) -> Result<Vec<u8>> {
        io_ctx(std::fs::read(self.file.path()), || {
            format!("reading {}", self.file.path().display())
        })
    }

    /// Checks the pack against its downloaded index like [`install_pack_files`] and installs
    /// both; the caller checked the pack's hash. Call [`Mirror::refresh_objects`] afterwards.
    ///
    /// When every entry was hashed as it streamed in (a pack this project wrote), the index must
    /// also list exactly those ids at their offsets; the objects come back as `Scanned`, so
    /// the pull checks them without reading them again.
    pub fn install(
        mut self,
        idx: &[u8],
    ) -> std::result::Result<(ObjectSet, Option<super::Scanned>), StageError> {
        if self.len < 32 {
            return Err(StageError::BadIndex(
                Box::new(self),
                install_error("not a git pack"),
            ));
        }
        let objects = match check_idx(&self.header, &self.tail, idx) {
            Ok(o) => o,
            Err(e) => return Err(StageError::BadIndex(Box::new(self), e)),
        };
        let scanner = std::mem::take(&mut self.scanner);
        let scanned = match scanner.finish(idx) {
            Ok(s) => s,
            Err(reason) => {
                return Err(StageError::BadIndex(Box::new(self), install_error(&reason)));
            }
        };
        let base = format!("pack-{}", hex_lower(&self.tail));
        let path = self.pack_dir.join(format!("{base}.pack"));
        if !path.exists() {
            io_ctx(self.file.persist(&path).map_err(|e| e.error), || {
                format!("installing {}", path.display())
            })
            .map_err(StageError::Failed)?;
        }
        write_idx(&self.pack_dir, &base, idx).map_err(StageError::Failed)?;
        Ok((objects, scanned))
    }
}

impl std::io::Write for StagedPack {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        StagedPack::write_all(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why [`StagedPack::install`] did not install a pack.
#[derive(Debug)]
pub enum StageError {
    /// The index does not fit the pack: the staged pack is handed back to index it locally.
    BadIndex(Box<StagedPack>, MirrorError),
    /// Writing into the mirror failed.
    Failed(MirrorError),
}

impl Mirror {
    /// Whether the mirror has the commit object itself (its tree may still be incomplete).
    pub(crate) fn has_commit(&self, commit: &CommitId) -> Result<bool> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        Ok(odb.exists(commit.oid()))
    }

    /// Indexes the bytes of a downloaded pack into the object database (libgit2's indexer
    /// checks every object's encoding and the trailer checksum; a truncated or corrupted pack
    /// is an error and nothing is installed).
    pub(crate) fn index_pack(&self, pack: &[u8]) -> Result<()> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut writer = odb
            .packwriter()
            .ctx(|| "opening the odb pack writer".into())?;
        writer.write_all(pack).map_err(|e| MirrorError::Io {
            context: "streaming a downloaded pack into the object database".into(),
            source: e,
        })?;
        writer
            .commit()
            .ctx(|| "indexing a downloaded pack".into())?;
        odb.refresh()
            .ctx(|| "refreshing the object database after indexing a pack".into())?;
        Ok(())
    }

    /// Makes the object database see packs installed by [`install_pack_files`].
    pub fn refresh_objects(&self) -> Result<()> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        odb.refresh()
            .ctx(|| "refreshing the object database after installing a pack".into())?;
        Ok(())
    }

    /// How many of the objects a version-2 pack index lists are missing from the mirror
    /// (`None` if the bytes are not a well-formed index). Lets a pull skip packs it has.
    pub(crate) fn objects_missing_from_idx(&self, idx: &[u8]) -> Result<Option<u64>> {
        use sha1::{Digest, Sha1};
        if idx.len() < 8 + 256 * 4 + 40 || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return Ok(None);
        }
        if Sha1::digest(&idx[..idx.len() - 20]).as_slice() != &idx[idx.len() - 20..] {
            return Ok(None);
        }
        let n = u32::from_be_bytes([idx[1028], idx[1029], idx[1030], idx[1031]]) as usize;
        let start = 8 + 256 * 4;
        if idx.len() < start + n * 20 + 40 {
            return Ok(None);
        }
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let mut missing = 0u64;
        for chunk in idx[start..start + n * 20].chunks_exact(20) {
            let oid =
                Oid::from_bytes(chunk).ctx(|| "reading an object id of a pack index".into())?;
            if !odb.exists(oid) {
                missing += 1;
            }
        }
        Ok(Some(missing))
    }

    /// Whether the commit and every tree and blob of its tree are in the mirror. Never fails
    /// because of a missing object (that is `Ok(false)`); fails on unreadable or corrupt ones.
    pub(crate) fn commit_is_complete(&self, commit: &CommitId) -> Result<bool> {
        self.scan(commit, false, &mut OidSet::default(), &OidSet::default())
    }

    /// One walk of the commit's tree: completeness, and (if `check_paths`) the validity of
    /// every path, returned as the error.
    ///
    /// `verified` holds objects already known present (and, for trees, complete and valid);
    /// it is extended only when the whole scan succeeds. `present` holds ids known to be in the
    /// object database (from the indexes of installed packs): a blob found there needs no
    /// lookup; a tree is still read and walked.
    fn scan(
        &self,
        commit: &CommitId,
        check_paths: bool,
        verified: &mut OidSet,
        present: &OidSet,
    ) -> Result<bool> {
        let odb = self
            .repo
            .odb()
            .ctx(|| "opening the object database".into())?;
        let Some(root) = self.commit_tree_id(&odb, commit)? else {
            return Ok(false);
        };
        let mut seen = OidSet::default();
        // A path is valid when each of its segments is, so a tree is checked once whatever its
        // path.
        let mut stack: Vec<Oid> = Vec::new();
        if !verified.contains(&key(&root)) && seen.insert(key(&root)) {
            stack.push(root);
        }
        let ctx = Walk {
            commit,
            check_paths,
            verified,
            present,
        };
        // Big walks (a pull of many objects) split the trees between this thread and a
        // second one with its own handle on the repository.
        let split = present.len() >= PARALLEL_WALK_MIN;
        let first = ctx.run(&self.repo, &mut stack, &mut seen, split.then_some(16))?;
        match first {
            Some(false) => return Ok(false),
            Some(true) => {}
            None => {
                let other: Vec<Oid> = stack.split_off(stack.len() / 2);
                let mut other_seen = seen.clone();
                let git_dir = &self.git_dir;
                let (mine, theirs) = std::thread::scope(|scope| {
                    let helper = scope.spawn(|| -> Result<Option<bool>> {
                        let repo = Repository::open_bare(git_dir)
                            .ctx(|| format!("opening {}", git_dir.display()))?;
                        let mut other = other;
                        ctx.run(&repo, &mut other, &mut other_seen, None)
                    });
                    let mine = ctx.run(&self.repo, &mut stack, &mut seen, None);
                    let theirs = helper.join().unwrap_or_else(|_| {
                        Err(MirrorError::Io {
                            context: format!("walking commit {commit}"),
                            source: std::io::Error::other("the walking thread panicked"),
                        })
                    });
                    (mine, theirs)
                });
                if mine? != Some(true) || theirs? != Some(true) {
                    return Ok(false);
                }
                seen.extend(other_seen);
            }
        }
        if verified.is_empty() {
            *verified = seen;
        } else {
            verified.extend(seen);
        }
        Ok(true)
    }

    /// Tags complete commits (e.g. pulled ones) as snapshots (`(name, commit)` each) and
    /// rebuilds their clusters' branches. Untrusted input: re-validates each name, checks the
    /// commit is complete,
    /// that its every path is valid and that its `snapshot.yaml` names the same snapshot and a
    /// valid cluster. An existing tag with the same commit is a no-op (`Ok(false)`); with
    /// another commit it is [`MirrorError::SnapshotExists`]. One result per snapshot; objects
    /// shared between them are checked once, each cluster branch is rebuilt once.
    ///
    /// The ids of `present` (returned by [`install_pack_files`] for packs installed into this
    /// mirror) are known to be in the object database.
    pub fn create_snapshot_tags_with(
        &self,
        items: &[(String, CommitId)],
        present: &ObjectSet,
    ) -> Vec<Result<bool>> {
        self.create_tags(items, present, None)
    }

    /// [`Mirror::create_snapshot_tags_with`] for trees from a store (untrusted): also checks
    /// that every object file holds the object its path names (see `check_pulled`), so that a
    /// restore creates exactly the objects its plan names. `scanned` holds the objects hashed
    /// as their packs were downloaded.
    pub(crate) fn create_snapshot_tags_checked(
        &self,
        items: &[(String, CommitId)],
        present: &ObjectSet,
        scanned: &super::Scanned,
    ) -> Vec<Result<bool>> {
        self.create_tags(items, present, Some(scanned))
    }

    fn create_tags(
        &self,
        items: &[(String, CommitId)],
        present: &ObjectSet,
        scanned: Option<&super::Scanned>,
    ) -> Vec<Result<bool>> {
        // One failure before any snapshot was looked at fails each of them with it.
        let all_failed = |context: &str, e: MirrorError| -> Vec<Result<bool>> {
            let msg = e.to_string();
            items
                .iter()
                .map(|_| {
                    Err(MirrorError::Io {
                        context: context.to_owned(),
                        source: std::io::Error::other(msg.clone()),
                    })
                })
                .collect()
        };
        let _lock = match self.lock() {
            Ok(l) => l,
            Err(e) => return all_failed("locking the mirror", e),
        };
        let mut verified = OidSet::default();
        let mut bodies = BodySet::default();
        // The packs as they are now (pulled packs installed), for reading bodies.
        let mut files = LazyPackFiles::new(&self.git_dir);
        let mut clusters = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(items.len());
        for (name, commit) in items {
            let r = self.tag_one_locked(
                name,
                commit,
                &mut verified,
                &present.0,
                scanned.map(|s| (&mut bodies, &mut files, s)),
            );
            if let Ok(Some(cluster)) = &r {
                clusters.insert(cluster.clone());
            }
            out.push(r.map(|c| c.is_some()));
        }
        for cluster in clusters {
            if let Err(e) = self.rebuild_cluster_branch_locked(&cluster) {
                tracing::warn!(%cluster, "rebuilding the cluster branch failed: {e}");
            }
        }
        out
    }

    /// Tags one snapshot under the lock; the cluster name when a tag was created.
    fn tag_one_locked(
        &self,
        name: &str,
        commit: &CommitId,
        verified: &mut OidSet,
        present: &OidSet,
        checked: Option<(&mut BodySet, &mut LazyPackFiles<'_>, &super::Scanned)>,
    ) -> Result<Option<String>> {
        validate_name("snapshot", name)?;
        if let Some(existing) = self.snapshot(name)? {
            if &existing.commit == commit {
                return Ok(None);
            }
            return Err(MirrorError::SnapshotExists {
                name: name.to_owned(),
            });
        }
        // Complete, and every path one k8s-snap could have written.
        let started = std::time::Instant::now();
        let complete = match checked {
            Some((bodies, files, scanned)) => {
                let r = self.check_pulled(commit, verified, present, bodies, files, scanned)?;
                tracing::debug!(snapshot = name, elapsed = ?started.elapsed(), "tree and bodies checked");
                r
            }
            None => self.scan(commit, true, verified, present)?,
        };
        if !complete {
            return Err(MirrorError::ObjectNotFound {
                id: format!("{commit} (snapshot {name:?} is incomplete)"),
            });
        }
        let bytes =
            self.read_file(commit, SNAPSHOT_META_FILE)?
                .ok_or_else(|| MirrorError::BadMeta {
                    snapshot: name.to_owned(),
                    file: SNAPSHOT_META_FILE,
                    reason: "missing".into(),
                })?;
        let meta = parse_meta(name, &bytes)?;
        if meta.name != name {
            return Err(MirrorError::BadMeta {
                snapshot: name.to_owned(),
                file: SNAPSHOT_META_FILE,
                reason: format!("names snapshot {:?}", meta.name),
            });
        }
        validate_name("cluster", &meta.cluster_name)?;
        let refname = format!("{SNAPSHOT_TAG_PREFIX}{name}");
        self.repo
            .reference(&refname, commit.oid(), false, "k8s-snap: pull")
            .map_err(|e| match e.code() {
                git2::ErrorCode::Exists => MirrorError::SnapshotExists {
                    name: name.to_owned(),
                },
                _ => MirrorError::Git {
                    context: format!("creating tag {refname}"),
                    source: super::GitError(e),
                },
            })?;
        tracing::info!(snapshot = name, %commit, "snapshot tagged from the store");
        Ok(Some(meta.cluster_name))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
