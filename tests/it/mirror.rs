//! Integration tests of the local git mirror against real bare repositories in temp dirs,
//! cross-checked with the plain `git` CLI (config sandboxed from the developer's own).

use std::ops::ControlFlow;
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use k8s_snap::mirror::{ChangeKind, CommitId, Mirror, MirrorError, WrittenSnapshot};
use k8s_snap::tree::meta::{Consistency, SNAPSHOT_META_FILE, SnapshotMeta};
use tempfile::TempDir;

/// Points libgit2's system/global/XDG config search paths at an empty temp dir, once.
pub(crate) fn sandbox_git_config() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = TempDir::new().expect("temp dir").keep();
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::XDG,
        ] {
            // SAFETY: called once, before any repository is opened by these tests' helpers.
            #[allow(
                unsafe_code,
                reason = "libgit2's global config search path (test sandbox)"
            )]
            unsafe {
                git2::opts::set_search_path(level, &dir).expect("set search path")
            };
        }
    });
}

struct Fixture {
    tmp: TempDir,
}

impl Fixture {
    fn new() -> Self {
        sandbox_git_config();
        Fixture {
            tmp: TempDir::new().expect("temp dir"),
        }
    }
    fn git_dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("mirror.git")
    }
    fn mirror(&self) -> Mirror {
        Mirror::open_or_init(&self.git_dir()).expect("open mirror")
    }
    /// Runs the `git` CLI on the mirror with a sandboxed config; returns (success, stdout).
    fn git(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("git")
            .arg(format!("--git-dir={}", self.git_dir().display()))
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", self.tmp.path())
            .env_remove("GIT_DIR")
            .output()
            .expect("run git");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
    fn git_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.git(args);
        assert!(ok, "git {args:?} failed: {out}");
        out
    }
}

fn meta(name: &str, cluster: &str, ts: i64, rv: &str) -> SnapshotMeta {
    SnapshotMeta {
        format_version: 1,
        name: name.into(),
        cluster_name: cluster.into(),
        resource_version: rv.into(),
        timestamp: jiff::Timestamp::from_second(ts).expect("timestamp"),
        server_version: "v1.32.0".into(),
        consistency: Consistency::Exact,
        number_of_contents: 0,
        ttl: None,
        available_until: None,
        imported_from: None,
        tool_version: "k8s-snap test".into(),
        skipped: vec![],
        encryption: None,
        filter: None,
        unavailable_apis: Vec::new(),
    }
}

fn write(
    m: &Mirror,
    name: &str,
    cluster: &str,
    ts: i64,
    files: &[(&str, &str)],
) -> WrittenSnapshot {
    write_keeping(m, name, cluster, ts, files, false)
}

/// [`write`], keeping stored copies of the new packs when `copies` (a snapshot that a push
/// follows).
fn write_keeping(
    m: &Mirror,
    name: &str,
    cluster: &str,
    ts: i64,
    files: &[(&str, &str)],
    copies: bool,
) -> WrittenSnapshot {
    let mut meta = meta(name, cluster, ts, "100");
    meta.number_of_contents = files.len() as u64;
    let mut w = m.writer(name, cluster).expect("writer");
    if copies {
        w.keep_stored_copies();
    }
    for (p, c) in files {
        w.add(p, c.as_bytes()).expect("add");
    }
    let yaml = serde_saphyr::to_string(&meta).expect("meta yaml");
    w.add(SNAPSHOT_META_FILE, yaml.as_bytes())
        .expect("add meta");
    w.finish(&meta).expect("finish")
}

const CM_A: &str = "api/v1/namespaces/default/configmaps/a.yaml";
const CM_B: &str = "api/v1/namespaces/default/configmaps/b.yaml";
const NS: &str = "api/v1/namespaces/default.yaml";
const DEPLOY: &str = "apis/apps/v1/namespaces/default/deployments/web.yaml";

#[test]
fn write_and_read_back() {
    let fx = Fixture::new();
    let m = fx.mirror();
    assert!(m.snapshots().unwrap().is_empty());
    let files = [
        (CM_A, "a: 1\n"),
        (CM_B, "b: 2\n"),
        (NS, "ns\n"),
        (DEPLOY, "web\n"),
    ];
    let w = write(&m, "snap-1", "prod", 1_700_000_000, &files);

    let info = m.snapshot("snap-1").unwrap().expect("snapshot exists");
    assert_eq!(info.commit, w.commit);
    assert_eq!(info.meta.cluster_name, "prod");
    assert_eq!(info.meta.number_of_contents, 4);
    assert_eq!(m.tree_id(&w.commit).unwrap(), w.tree);
    assert_eq!(w.files, 5);
    assert!(m.snapshot("nope").unwrap().is_none());

    for (p, c) in files {
        assert_eq!(
            m.read_file(&w.commit, p).unwrap().as_deref(),
            Some(c.as_bytes())
        );
    }
    assert_eq!(m.read_file(&w.commit, "api/v1/missing.yaml").unwrap(), None);
    assert!(matches!(
        m.read_file(&w.commit, "api/v1").unwrap_err(),
        MirrorError::NotAFile { .. }
    ));

    assert_eq!(
        m.list_files(&w.commit, "api/v1/namespaces/default")
            .unwrap(),
        vec![CM_A, CM_B]
    );
    let all = m.list_files(&w.commit, "").unwrap();
    assert_eq!(all, vec![SNAPSHOT_META_FILE, NS, CM_A, CM_B, DEPLOY]);
    assert!(m.list_files(&w.commit, "apis/none").unwrap().is_empty());

    let mut seen = Vec::new();
    m.walk_files(&w.commit, "api/", |p, c| {
        seen.push((p.to_owned(), c.to_vec()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.contains(&(CM_B.to_owned(), b"b: 2\n".to_vec())));
    let mut count = 0;
    m.walk_files(&w.commit, "", |_, _| {
        count += 1;
        if count == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(count, 2, "walk stops at Break");

    // Reopen from disk: everything persisted.
    drop(m);
    let m = Mirror::open(&fx.git_dir()).unwrap();
    assert_eq!(m.snapshots().unwrap().len(), 1);
    assert_eq!(m.clusters().unwrap(), vec!["prod"]);
}

#[test]
fn open_missing_or_not_a_repo_is_a_clear_error() {
    let fx = Fixture::new();
    let err = Mirror::open(&fx.git_dir()).unwrap_err();
    assert!(matches!(err, MirrorError::NotARepository { .. }));
    assert!(err.to_string().contains("mirror.git"), "{err}");
    let junk = fx.tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("file"), "x").unwrap();
    assert!(Mirror::open(&junk).is_err());
    assert!(
        Mirror::open_or_init(&junk).is_err(),
        "refuses to init into a non-empty dir"
    );
}

#[test]
fn commit_id_parses_and_serializes() {
    let hex = "0123456789abcdef0123456789abcdef01234567";
    let id: CommitId = hex.parse().unwrap();
    assert_eq!(id.to_string(), hex);
    assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{hex}\""));
    let back: CommitId = serde_json::from_str(&format!("\"{hex}\"")).unwrap();
    assert_eq!(back, id);
    assert!("abc".parse::<CommitId>().is_err());
    assert!(hex.to_uppercase().parse::<CommitId>().is_err());
    assert!(serde_json::from_str::<CommitId>("\"zz\"").is_err());
}

#[test]
fn refs_commit_shape_and_plain_git_browsing() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let a = write(
        &m,
        "a",
        "prod",
        1_700_000_000,
        &[(CM_A, "v: 1\n"), (CM_B, "b\n")],
    );
    let b = write(
        &m,
        "b",
        "prod",
        1_700_000_060,
        &[(CM_A, "v: 2\n"), (NS, "ns\n")],
    );
    write(&m, "other", "dev", 1_700_000_030, &[(CM_A, "dev\n")]);

    let refs = fx.git_ok(&["for-each-ref", "--format=%(refname) %(objectname)"]);
    assert!(
        refs.contains(&format!("refs/tags/snapshots/a {}", a.commit)),
        "{refs}"
    );
    assert!(
        refs.contains(&format!("refs/tags/snapshots/b {}", b.commit)),
        "{refs}"
    );
    assert!(refs.contains("refs/heads/clusters/prod "), "{refs}");
    assert!(refs.contains("refs/heads/clusters/dev "), "{refs}");

    // The snapshot commit: parentless, fixed author, time and message.
    let raw = fx.git_ok(&["cat-file", "-p", a.commit.as_str()]);
    assert!(!raw.contains("parent "), "{raw}");
    assert!(
        raw.contains("author k8s-snap <k8s-snap@localhost> 1700000000 +0000"),
        "{raw}"
    );
    assert!(raw.contains("snapshot a of prod at rv 100"), "{raw}");

    assert_eq!(
        fx.git_ok(&["show", &format!("snapshots/a:{CM_A}")]),
        "v: 1\n"
    );
    let stat = fx.git_ok(&["diff", "snapshots/a", "snapshots/b", "--stat"]);
    assert!(stat.contains("configmaps/a.yaml"), "{stat}");
    assert!(stat.contains("configmaps/b.yaml"), "{stat}");
    assert!(stat.contains("namespaces/default.yaml"), "{stat}");
    let log = fx.git_ok(&["log", "--format=%s", "clusters/prod"]);
    assert_eq!(
        log,
        "snapshot b of prod at rv 100\nsnapshot a of prod at rv 100\n"
    );
    let log_p = fx.git_ok(&["log", "-p", "--format=%s", "clusters/prod", "--", CM_A]);
    assert!(
        log_p.contains("-v: 1") && log_p.contains("+v: 2"),
        "{log_p}"
    );
    // Branch commits carry the snapshots' trees.
    let tree = fx.git_ok(&["rev-parse", "clusters/prod^{tree}"]);
    assert_eq!(tree.trim(), b.tree.as_str());
    let fsck = fx.git_ok(&["fsck", "--strict", "--no-dangling"]);
    assert!(
        !fsck.contains("error") && !fsck.contains("warning"),
        "{fsck}"
    );
    // The packs and the indexes the writer made itself are what git expects.
    let packs: Vec<_> = std::fs::read_dir(fx.git_dir().join("objects/pack"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    assert!(!packs.is_empty());
    for idx in packs {
        let out = fx.git_ok(&["verify-pack", "-v", idx.to_str().unwrap()]);
        assert!(out.contains(" blob "), "{out}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(fx.git_dir().join("objects/pack"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp_"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn diff_between_snapshots() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let a = write(
        &m,
        "a",
        "prod",
        10,
        &[(CM_A, "v: 1\n"), (CM_B, "b\n"), (DEPLOY, "web\n")],
    );
    let b = write(
        &m,
        "b",
        "prod",
        20,
        &[(CM_A, "v: 2\n"), (NS, "ns\n"), (DEPLOY, "web\n")],
    );
    let changes = m.diff(&a.commit, &b.commit, None).unwrap();
    let summary: Vec<(&str, ChangeKind)> =
        changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
    assert_eq!(
        summary,
        vec![
            (SNAPSHOT_META_FILE, ChangeKind::Modified),
            (NS, ChangeKind::Added),
            (CM_A, ChangeKind::Modified),
            (CM_B, ChangeKind::Removed),
        ]
    );
    let cm_a = &changes[2];
    assert_eq!(m.read_blob(cm_a.old.as_ref().unwrap()).unwrap(), b"v: 1\n");
    assert_eq!(m.read_blob(cm_a.new.as_ref().unwrap()).unwrap(), b"v: 2\n");
    assert!(changes[1].old.is_none() && changes[3].new.is_none());

    let scoped = m
        .diff(&a.commit, &b.commit, Some("api/v1/namespaces/default"))
        .unwrap();
    assert_eq!(
        scoped.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
        vec![CM_A, CM_B]
    );
    assert!(m.diff(&a.commit, &a.commit, None).unwrap().is_empty());
    assert!(
        m.diff(&a.commit, &b.commit, Some("apis"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn duplicate_snapshot_name_refused_with_nothing_written() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let a = write(&m, "a", "prod", 10, &[(CM_A, "v\n")]);
    let before = m.object_stats().unwrap();
    let err = m.writer("a", "prod").err().expect("duplicate refused");
    assert!(
        matches!(err, MirrorError::SnapshotExists { ref name } if name == "a"),
        "{err}"
    );
    assert_eq!(m.object_stats().unwrap(), before);
    assert_eq!(m.snapshot("a").unwrap().unwrap().commit, a.commit);
}

#[test]
fn bad_names_and_paths_rejected() {
    let fx = Fixture::new();
    let m = fx.mirror();
    for bad in ["", "A", "a/b", "-a", "a..b", "x.lock", "a_b"] {
        assert!(
            matches!(
                m.writer(bad, "prod").err(),
                Some(MirrorError::InvalidName { .. })
            ),
            "snapshot {bad:?}"
        );
        assert!(m.writer("ok", bad).is_err(), "cluster {bad:?}");
    }
    let before = m.object_stats().unwrap();
    let mut w = m.writer("a", "prod").unwrap();
    for bad in [
        "",
        "/abs/x.yaml",
        "a//b.yaml",
        "a/",
        "../x",
        "a/../b",
        "a/./b",
        ".git/config",
        "a\0b",
    ] {
        let err = w.add(bad, b"x").unwrap_err();
        assert!(
            matches!(err, MirrorError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("{bad:?}")),
            "error names the path: {err}"
        );
    }
    assert_eq!(
        m.object_stats().unwrap(),
        before,
        "nothing written for bad paths"
    );
    w.add(CM_A, b"x").unwrap();
    assert!(matches!(
        w.add(CM_A, b"y").unwrap_err(),
        MirrorError::DuplicatePath { .. }
    ));
    assert!(matches!(
        w.add("api/v1/namespaces/default", b"y").unwrap_err(),
        MirrorError::PathConflict { .. }
    ));
    assert!(matches!(
        w.add(&format!("{CM_A}/sub"), b"y").unwrap_err(),
        MirrorError::PathConflict { .. }
    ));
    // Metadata that names another snapshot is refused, and no tag appears.
    let other = meta("b", "prod", 1, "1");
    assert!(matches!(
        w.finish(&other).unwrap_err(),
        MirrorError::BadMeta { .. }
    ));
    // Missing snapshot.yaml is refused too.
    let mut w = m.writer("a", "prod").unwrap();
    w.add(CM_A, b"x").unwrap();
    assert!(matches!(
        w.finish(&meta("a", "prod", 1, "1")).unwrap_err(),
        MirrorError::BadMeta { .. }
    ));
    assert!(m.snapshots().unwrap().is_empty());
}

fn cat_file_exists(fx: &Fixture, id: &str) -> bool {
    fx.git(&["cat-file", "-e", id]).0
}

fn blob_id(fx: &Fixture, rev_path: &str) -> String {
    fx.git_ok(&["rev-parse", rev_path]).trim().to_owned()
}

#[test]
fn delete_and_gc_remove_unique_objects_and_keep_shared_ones() {
    let fx = Fixture::new();
    let mut m = fx.mirror();
    write(
        &m,
        "a",
        "prod",
        10,
        &[(CM_A, "shared\n"), (CM_B, "only in a\n")],
    );
    let b = write(
        &m,
        "b",
        "prod",
        20,
        &[(CM_A, "shared\n"), (DEPLOY, "only in b\n")],
    );
    let unique = blob_id(&fx, &format!("snapshots/a:{CM_B}"));
    let shared = blob_id(&fx, &format!("snapshots/a:{CM_A}"));
    let a_commit = blob_id(&fx, "snapshots/a");

    assert!(matches!(
        m.delete_snapshot("missing").unwrap_err(),
        MirrorError::SnapshotNotFound { .. }
    ));
    m.delete_snapshot("a").unwrap();
    assert!(m.snapshot("a").unwrap().is_none());
    assert!(cat_file_exists(&fx, &unique), "still there before gc");
    let stats = m.gc().unwrap();
    assert!(
        stats.after.total_objects() < stats.before.total_objects(),
        "{stats:?}"
    );
    assert_eq!(stats.after.loose_objects, 0);
    assert_eq!(stats.after.packs, 1);
    assert!(
        !cat_file_exists(&fx, &unique),
        "unique blob of the deleted snapshot is gone"
    );
    assert!(
        !cat_file_exists(&fx, &a_commit),
        "deleted snapshot's commit is gone"
    );
    assert!(cat_file_exists(&fx, &shared), "shared blob kept");
    assert_eq!(
        m.read_file(&b.commit, DEPLOY).unwrap().unwrap(),
        b"only in b\n"
    );
    let log = fx.git_ok(&["log", "--format=%s", "clusters/prod"]);
    assert_eq!(log, "snapshot b of prod at rv 100\n");
    fx.git_ok(&["fsck", "--strict"]);

    // gc is idempotent (the same pack is kept, not deleted).
    let again = m.gc().unwrap();
    assert_eq!(again.after.total_objects(), stats.after.total_objects());
    assert_eq!(again.after.packs, 1);
    assert!(cat_file_exists(&fx, &shared));

    // Deleting the last snapshot removes the branch; gc then leaves no object.
    m.delete_snapshot("b").unwrap();
    assert!(!fx.git(&["rev-parse", "--verify", "clusters/prod"]).0);
    assert!(m.clusters().unwrap().is_empty());
    let empty = m.gc().unwrap();
    assert_eq!(empty.after.total_objects(), 0, "{empty:?}");
}

#[test]
fn cluster_branch_is_deterministic() {
    let files = [(CM_A, "x\n")];
    let build = |order: &[(&str, i64)]| {
        let fx = Fixture::new();
        let m = fx.mirror();
        for (name, ts) in order {
            write(&m, name, "prod", *ts, &files);
        }
        let head = blob_id(&fx, "clusters/prod");
        let subjects = fx.git_ok(&["log", "--format=%s %at", "clusters/prod"]);
        m.rebuild_cluster_branch("prod").unwrap();
        assert_eq!(blob_id(&fx, "clusters/prod"), head, "rebuild is idempotent");
        (head, subjects, fx)
    };
    // Same set, different write order; "b" and "c" tie on timestamp (ordered by name).
    let (h1, s1, _f1) = build(&[("a", 10), ("c", 20), ("b", 20), ("d", 5)]);
    let (h2, s2, _f2) = build(&[("b", 20), ("d", 5), ("a", 10), ("c", 20)]);
    assert_eq!(h1, h2);
    assert_eq!(s1, s2);
    assert_eq!(
        s1,
        "snapshot c of prod at rv 100 20\nsnapshot b of prod at rv 100 20\n\
         snapshot a of prod at rv 100 10\nsnapshot d of prod at rv 100 5\n"
    );
    let (h3, _, _f3) = build(&[("a", 10), ("c", 20), ("b", 20)]);
    assert_ne!(h1, h3);
}

#[test]
fn dropped_writer_leaves_no_tag_and_gc_frees_its_blobs() {
    let fx = Fixture::new();
    let mut m = fx.mirror();
    {
        let mut w = m.writer("a", "prod").unwrap();
        w.add(CM_A, b"abandoned\n").unwrap();
    }
    assert!(m.snapshots().unwrap().is_empty());
    assert!(m.snapshot("a").unwrap().is_none());
    let refs = fx.git_ok(&["for-each-ref"]);
    assert!(refs.trim().is_empty(), "{refs}");
    // New objects go to a temporary pack that vanishes with the writer.
    assert_eq!(m.object_stats().unwrap().total_objects(), 0);
    m.gc().unwrap();
    assert_eq!(m.object_stats().unwrap().total_objects(), 0);
    // The name is free for a real snapshot.
    write(&m, "a", "prod", 1, &[(CM_A, "x\n")]);
}

#[test]
fn lock_serializes_writers() {
    let fx = Fixture::new();
    let m1 = fx.mirror();
    let m2 = Mirror::open(&fx.git_dir())
        .unwrap()
        .with_lock_timeout(Duration::from_millis(200));
    let w1 = m1.writer("a", "prod").unwrap();
    let start = Instant::now();
    let err = m2
        .writer("b", "prod")
        .err()
        .expect("second writer must wait then fail");
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(matches!(err, MirrorError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("k8s-snap.lock"), "{err}");
    drop(w1);
    drop(m2.writer("b", "prod").expect("lock released on drop"));

    // A waiting writer proceeds as soon as the holder releases.
    let dir = fx.git_dir();
    let held = m1.lock().unwrap();
    let waiter = std::thread::spawn(move || {
        let m = Mirror::open(&dir)
            .unwrap()
            .with_lock_timeout(Duration::from_secs(10));
        let start = Instant::now();
        let lock = m.lock().map(|_| ());
        (lock, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let (res, waited) = waiter.join().unwrap();
    res.expect("acquired after release");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

#[test]
fn unchanged_second_snapshot_adds_only_commit_meta_and_path_trees() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let mut files = Vec::new();
    for ns in 0..5 {
        for i in 0..20 {
            files.push((
                format!("api/v1/namespaces/ns{ns}/configmaps/cm{i}.yaml"),
                format!("data: {ns}-{i}\n"),
            ));
        }
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let a = write(&m, "a", "prod", 10, &refs);
    // 101 blobs + trees: root, api, v1, namespaces, 5 ns, 5 configmaps, .k8s-snap + commit.
    assert_eq!(a.new_objects, 101 + 15 + 1);
    let before = m.object_stats().unwrap();
    let b = write(&m, "b", "prod", 20, &refs);
    // New: the metadata blob, the `.k8s-snap` tree, the root tree and the commit.
    assert_eq!(b.new_objects, 4, "{b:?}");
    let after = m.object_stats().unwrap();
    // ... plus one more commit on the cluster branch.
    assert_eq!(after.total_objects() - before.total_objects(), 5);
    assert_ne!(a.tree, b.tree);
}

/// `n` ConfigMap files over 40 namespaces whose contents start with `tag`.
fn many_files(n: usize, tag: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("api/v1/namespaces/ns{}/configmaps/cm{i}.yaml", i % 40),
                format!("data: {tag}-{i}\n"),
            )
        })
        .collect()
}

fn as_refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect()
}

/// Pulls of more than 10,000 objects check completeness on two threads: a complete snapshot
/// is tagged and reads back, one whose blobs are partly missing is refused and left untagged.
#[test]
fn large_pulls_check_completeness_on_two_threads() {
    let source = Fixture::new();
    let m = source.mirror();
    let big_files = many_files(12_000, "big");
    let big = write(&m, "big", "prod", 10, &as_refs(&big_files));
    let other = write(
        &m,
        "other",
        "prod",
        20,
        &as_refs(&many_files(12_000, "other")),
    );
    // Half of `mixed` is `big`'s blobs, half new ones.
    let mut mixed_files = big_files[..6_000].to_vec();
    mixed_files.extend(many_files(12_000, "mixed").split_off(6_000));
    let mixed = write(&m, "mixed", "prod", 30, &as_refs(&mixed_files));
    let pack = |include: &CommitId, hide: &[CommitId]| {
        m.build_pack(std::slice::from_ref(include), hide)
            .unwrap()
            .expect("objects to pack")
    };

    // Every entry is copied from the writer's undeltified packs, none read through libgit2.
    let (_, built) = m
        .build_pack_to(std::slice::from_ref(&big.commit), &[], Vec::new())
        .unwrap()
        .unwrap();
    assert_eq!(built.reused, built.objects);

    // Complete: every object of `big` arrives (more than 10,000 present ids).
    let complete = Fixture::new();
    let m2 = complete.mirror();
    let p = pack(&big.commit, &[]);
    let present =
        k8s_snap::mirror::install_pack_files(&complete.git_dir(), &p.pack, &p.idx).unwrap();
    assert!(present.len() > 12_000, "{}", present.len());
    m2.refresh_objects().unwrap();
    let tagged = m2.create_snapshot_tags_with(&[("big".into(), big.commit.clone())], &present);
    assert!(matches!(tagged[..], [Ok(true)]), "{tagged:?}");
    let (path, content) = &big_files[11_999];
    assert_eq!(
        m2.read_file(&big.commit, path).unwrap().as_deref(),
        Some(content.as_bytes())
    );
    complete.git_ok(&["fsck", "--no-dangling"]);

    // Incomplete: `other` (12,000 unrelated objects) and `mixed` without `big`'s blobs.
    let partial = Fixture::new();
    let m3 = partial.mirror();
    let mut present = k8s_snap::mirror::ObjectSet::default();
    for p in [
        pack(&other.commit, &[]),
        pack(&mixed.commit, std::slice::from_ref(&big.commit)),
    ] {
        present.extend(
            k8s_snap::mirror::install_pack_files(&partial.git_dir(), &p.pack, &p.idx).unwrap(),
        );
    }
    assert!(present.len() > 12_000, "{}", present.len());
    m3.refresh_objects().unwrap();
    let tagged = m3.create_snapshot_tags_with(&[("mixed".into(), mixed.commit.clone())], &present);
    match &tagged[..] {
        [Err(MirrorError::ObjectNotFound { id })] => assert!(id.contains("incomplete"), "{id}"),
        other => panic!("expected an incomplete snapshot, got {other:?}"),
    }
    assert!(m3.snapshot("mixed").unwrap().is_none());
}

/// `map_files` (the restore's parallel read) gives what one walk gives, in the same order, on
/// any number of threads; the error it reports is the first in tree order.
#[test]
fn map_files_matches_one_walk_in_order_on_several_threads() {
    let fx = Fixture::new();
    let m = fx.mirror();
    // Enough files for several chunks of work (256 each).
    let names: Vec<String> = (0..1100)
        .map(|i| format!("api/v1/namespaces/ns-{}/configmaps/cm-{i:04}.yaml", i % 7))
        .collect();
    let contents: Vec<String> = (0..1100).map(|i| format!("i: {i}\n")).collect();
    let mut files: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(contents.iter().map(String::as_str))
        .collect();
    files.push((DEPLOY, "web\n"));
    files.push(("api/v1/namespaces/ns-1/configmaps/not-an-object.txt", "x\n"));
    let w = write(&m, "many", "prod", 1_700_000_000, &files);

    let mut walked = Vec::new();
    for prefix in ["api", "apis"] {
        m.walk_files(&w.commit, prefix, |p, c| {
            if p.ends_with(".yaml") {
                walked.push((p.to_owned(), c.to_vec()));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    assert_eq!(walked.len(), 1101);
    for threads in [1, 2, 5] {
        let mapped = m
            .map_files(
                &w.commit,
                &["api", "apis"],
                threads,
                |p| p.ends_with(".yaml"),
                |p, c| Ok::<_, String>(Some((p.to_owned(), c.to_vec()))),
            )
            .unwrap()
            .unwrap();
        assert_eq!(mapped, walked, "threads {threads}");
    }
    // Two failing files: the one first in tree order is reported, whatever the threads.
    let bad = |p: &str| p.ends_with("cm-0010.yaml") || p.ends_with("cm-1090.yaml");
    let first_bad = walked.iter().find(|(p, _)| bad(p)).unwrap().0.clone();
    for threads in [1, 3] {
        let err = m
            .map_files(
                &w.commit,
                &["api", "apis"],
                threads,
                |_| true,
                |p, _| if bad(p) { Err("bad") } else { Ok(Some(())) },
            )
            .unwrap()
            .unwrap_err();
        assert_eq!(err, (first_bad.clone(), "bad"), "threads {threads}");
    }
}

/// `Mirror::history`: added, changed, removed and added again, along snapshots where the
/// file's directory is unchanged (not read again), changed elsewhere, or gone.
#[test]
fn history_of_one_file() {
    use k8s_snap::mirror::HistoryChange::{Added, Modified, Removed};
    let fx = Fixture::new();
    let m = fx.mirror();
    let steps: &[&[(&str, &str)]] = &[
        &[(NS, "ns\n")],                                       // h0: not there yet
        &[(NS, "ns\n"), (CM_A, "a: 1\n")],                     // h1: added
        &[(NS, "ns\n"), (CM_A, "a: 1\n")],                     // h2: identical tree
        &[(NS, "ns2\n"), (CM_A, "a: 1\n"), (DEPLOY, "web\n")], // h3: others changed
        &[(NS, "ns2\n"), (CM_A, "a: 2\n"), (CM_B, "b\n")],     // h4: changed
        &[(NS, "ns2\n"), (CM_B, "b\n")],                       // h5: removed, its directory stays
        &[(DEPLOY, "web\n")],                                  // h6: whole namespace gone
        &[(CM_A, "a: 3\n")],                                   // h7: added again
    ];
    for (i, files) in steps.iter().enumerate() {
        write(
            &m,
            &format!("h{i}"),
            "prod",
            1_700_000_000 + i as i64,
            files,
        );
    }
    write(&m, "other", "test", 1_700_000_100, &[(CM_A, "x\n")]);
    let snapshots: Vec<_> = m
        .snapshots()
        .unwrap()
        .into_iter()
        .filter(|s| s.meta.cluster_name == "prod")
        .collect();
    let history = m.history(&snapshots, CM_A).unwrap();
    let got: Vec<(&str, k8s_snap::mirror::HistoryChange)> = history
        .iter()
        .map(|s| (s.snapshot.name.as_str(), s.change))
        .collect();
    assert_eq!(
        got,
        [
            ("h1", Added),
            ("h4", Modified),
            ("h5", Removed),
            ("h7", Added)
        ]
    );
    assert!(history[0].old.is_none() && history[2].new.is_none());
    assert_eq!(
        m.read_blob(history[1].old.as_ref().unwrap()).unwrap(),
        b"a: 1\n"
    );
    assert_eq!(
        m.read_blob(history[1].new.as_ref().unwrap()).unwrap(),
        b"a: 2\n"
    );
    // A path that is a directory, or never there: no history; an invalid path: an error.
    assert!(
        m.history(&snapshots, "api/v1/namespaces/default")
            .unwrap()
            .is_empty()
    );
    assert!(
        m.history(&snapshots, "api/v1/nope.yaml")
            .unwrap()
            .is_empty()
    );
    assert!(m.history(&snapshots, "../x").is_err());
}

/// A push copies the mirror's pack entries without re-hashing them, checking each against the
/// CRC-32 its index records (as git's `pack-objects` does when it reuses an entry): a flipped
/// byte in an object's content is refused, naming the object, and nothing is packed.
#[test]
fn building_a_pack_refuses_a_corrupt_mirror_entry() {
    let source = Fixture::new();
    let m = source.mirror();
    let snap = write(
        &m,
        "s",
        "prod",
        10,
        &[
            (
                "api/v1/namespaces/a/configmaps/x.yaml",
                "data: untouched-content\n",
            ),
            (
                "api/v1/namespaces/a/configmaps/y.yaml",
                "data: flip-one-byte-here\n",
            ),
        ],
    );
    // Intact: every entry reused.
    let (_, built) = m
        .build_pack_to(std::slice::from_ref(&snap.commit), &[], Vec::new())
        .unwrap()
        .unwrap();
    assert_eq!(built.reused, built.objects);

    let pack_dir = source.git_dir().join("objects").join("pack");
    let mut flipped = 0;
    for entry in std::fs::read_dir(&pack_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            let mut bytes = std::fs::read(&path).unwrap();
            let needle = b"flip-one-byte-here";
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                bytes[at] = b'F';
                std::fs::write(&path, bytes).unwrap();
                flipped += 1;
            }
        }
    }
    assert_eq!(
        flipped, 1,
        "the object's content is stored uncompressed in one pack"
    );
    let m = source.mirror();
    let err = m
        .build_pack_to(std::slice::from_ref(&snap.commit), &[], Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("corrupt or holds another object") && err.contains("reading object"),
        "{err}"
    );
}

/// [`write`] to cluster `prod`, keeping stored copies (as a snapshot that a push follows).
fn write_with_copies(m: &Mirror, name: &str, ts: i64, files: &[(&str, &str)]) -> WrittenSnapshot {
    write_keeping(m, name, "prod", ts, files, true)
}

/// The stored copies in the mirror (`k8s-snap/stored/<snapshot>/pack-<pack>.<sha256>.zst`).
fn stored_copies(fx: &Fixture) -> Vec<std::path::PathBuf> {
    let dir = fx.git_dir().join("k8s-snap").join("stored");
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).into_iter().flatten() {
        let d = d.unwrap().path();
        if d.is_dir() {
            out.extend(std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "zst"));
    out.sort();
    out
}

/// Each pack a snapshot that a push follows writes gets a stored copy (the store's encoding),
/// in the snapshot's directory; a push reads the copies of the snapshots it pushes and uploads
/// as it is each one whose pack holds only objects the push needs; the rest is built as
/// before. A damaged copy is not read, a pushed snapshot's copies are removed, and gc removes
/// the copies of the packs it repacked.
#[test]
fn snapshot_packs_keep_stored_copies_that_a_push_uploads() {
    let fx = Fixture::new();
    let mut m = fx.mirror();
    // Without a push to follow, a snapshot keeps no copies.
    write(&m, "s0", "prod", 5, &[(CM_A, "data: zero\n")]);
    assert!(stored_copies(&fx).is_empty());
    let s1 = write_with_copies(
        &m,
        "s1",
        10,
        &[
            (CM_A, "data: a\n"),
            (CM_B, "data: b\n"),
            (NS, "kind: Namespace\n"),
        ],
    );
    let copies = stored_copies(&fx);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].starts_with(fx.git_dir().join("k8s-snap/stored/s1")));
    // The copies of the named snapshots (all when none is named), and the packs a push of
    // `include` over `hide` would upload with them.
    let offered = |m: &Mirror, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        m.stored_copies(&names)
    };
    let one = |m: &Mirror,
               copies: &[k8s_snap::mirror::StoredCopy],
               include: &[&WrittenSnapshot],
               hide: &[&WrittenSnapshot]| {
        let include: Vec<_> = include.iter().map(|s| s.commit.clone()).collect();
        let hide: Vec<_> = hide.iter().map(|s| s.commit.clone()).collect();
        let all = m
            .build_pack_to(&include, &hide, Vec::new())
            .unwrap()
            .map_or(0, |(_, b)| b.objects);
        let offer: Vec<(String, Vec<u8>)> = copies
            .iter()
            .map(|c| (c.sha256.clone(), c.idx.clone()))
            .collect();
        (
            m.build_push_packs(&include, &hide, &offer, Vec::new())
                .unwrap(),
            all,
        )
    };

    // The first push: the copy, as it is on disk, with the pack's own index.
    let read = offered(&m, &["s1"]);
    assert_eq!(read.len(), 1);
    let c = &read[0];
    assert_eq!(c.snapshot, "s1");
    assert_eq!(c.bytes, std::fs::read(&copies[0]).unwrap());
    assert_eq!(&c.bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frames");
    let name = copies[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.ends_with(&format!(".{}.zst", c.sha256)), "{name}");
    let pack = name.split('.').next().unwrap();
    assert_eq!(pack, format!("pack-{}", c.pack));
    let idx_path = fx.git_dir().join(format!("objects/pack/{pack}.idx"));
    assert_eq!(c.idx, std::fs::read(idx_path).unwrap());
    let (parts, all) = one(&m, &read, &[&s1], &[]);
    assert_eq!(parts.copies, vec![c.sha256.clone()]);
    assert!(parts.built.is_none());
    assert_eq!(c.objects, all);
    // s0 has no copies.
    assert!(offered(&m, &["s0"]).is_empty());

    // A second snapshot writes only what changed: its copy is the incremental push. (A copy a
    // killed writer left half-written is removed when the next writer starts.)
    std::fs::create_dir_all(fx.git_dir().join("k8s-snap/stored/s2")).unwrap();
    let left = fx.git_dir().join("k8s-snap/stored/s2/tmp_copy_killed");
    std::fs::write(&left, b"half").unwrap();
    let s2 = write_with_copies(
        &m,
        "s2",
        20,
        &[
            (CM_A, "data: changed\n"),
            (CM_B, "data: b\n"),
            (NS, "kind: Namespace\n"),
        ],
    );
    assert_eq!(stored_copies(&fx).len(), 2);
    assert!(!left.exists());
    let read2 = offered(&m, &["s2"]);
    assert_eq!(read2.len(), 1);
    let (parts, all) = one(&m, &read2, &[&s2], &[&s1]);
    assert_eq!(parts.copies.len(), 1);
    assert!(parts.built.is_none());
    assert_eq!(read2[0].objects, all);
    // Pushed alone, s2 also needs objects of s1's pack, but not all of them (not the old
    // CM_A): offered s2's copy only, those are built; offered both, both are used whole.
    let (parts, all) = one(&m, &read2, &[&s2], &[]);
    assert_eq!(parts.copies, vec![read2[0].sha256.clone()]);
    let (_, built) = parts.built.expect("the objects shared with s1");
    assert_eq!(read2[0].objects + built.objects, all);
    let both = offered(&m, &[]);
    assert_eq!(both.len(), 2);
    let (parts, all) = one(&m, &both, &[&s2], &[]);
    assert_eq!(parts.copies.len(), 2);
    assert!(parts.built.is_none());
    assert!(
        both.iter().map(|c| c.objects).sum::<u64>() > all,
        "duplicates of s1's"
    );
    // A copy holding nothing the push needs is left out: s1's when s1 is hidden.
    let (parts, _) = one(&m, &both, &[&s2], &[&s1]);
    assert_eq!(parts.copies, vec![read2[0].sha256.clone()]);
    assert!(parts.built.is_none());
    // Both at once: both copies, nothing built.
    let (parts, all) = one(&m, &both, &[&s1, &s2], &[]);
    assert_eq!(parts.copies.len(), 2);
    assert!(parts.built.is_none());
    assert_eq!(both.iter().map(|c| c.objects).sum::<u64>(), all);

    // A copy damaged on disk no longer matches its name: it is not read.
    for path in stored_copies(&fx) {
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(offered(&m, &[]).is_empty());
    let (parts, all) = one(&m, &[], &[&s1, &s2], &[]);
    assert!(parts.copies.is_empty());
    assert_eq!(parts.built.expect("all objects built").1.objects, all);

    // Once the store has s2, its copies go; s1's stay.
    m.remove_stored_copies(&["s2".to_string()]).unwrap();
    assert!(!fx.git_dir().join("k8s-snap/stored/s2").exists());
    assert_eq!(stored_copies(&fx).len(), 1);

    // gc repacks everything into a new pack: the copies of the old packs go.
    m.gc().unwrap();
    assert!(stored_copies(&fx).is_empty(), "{:?}", stored_copies(&fx));
    assert!(offered(&m, &[]).is_empty());
}
