//! Bounded, clear failure (issue 14): timeouts and retry budgets, one-line errors, no panics,
//! exit codes, deep verify, recovering a lost manifest, pushing onto a damaged store.
//! Tests use tiny timeouts and budgets (flags) so each takes seconds.

use std::io::Read as _;
use std::time::{Duration, Instant};

use k8s_snap::store::MANIFEST_KEY;
use kube_emulator::{Emulator, Fixture};

use crate::store_support::{Backend, TestStore};
use crate::support::{DataDir, Run, TestCluster};

fn rule(s: &str) -> kube_emulator::FaultRule {
    s.parse().expect("fault rule")
}

/// The `error:` lines of a run's stderr.
fn error_lines(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

/// A kubeconfig like `cluster`'s, pointing at `url`.
fn kubeconfig_at(cluster: &TestCluster, data: &DataDir, url: &str) -> std::path::PathBuf {
    let emu = cluster.emulator.as_ref().expect("emulator");
    let kc = std::fs::read_to_string(&cluster.kubeconfig)
        .unwrap()
        .replace(&emu.url(), url);
    let path = data.path().join("other-kubeconfig");
    std::fs::write(&path, kc).unwrap();
    path
}

const FAST: &[&str] = &[
    "--request-timeout",
    "1s",
    "--connect-timeout",
    "1s",
    "--retry-budget",
    "3s",
];

fn with_fast<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = args.to_vec();
    v.extend_from_slice(FAST);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_within_the_timeout() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let data = DataDir::new();
    let kc = kubeconfig_at(&cluster, &data, &format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let run = data
        .run(Some(&kc), &with_fast(&["snapshot", "s1", "--no-push"]))
        .exit_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "one error line: {}", run.stderr);
    assert!(
        errors[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(errors[0].contains("no answer within"), "{}", run.stderr);
    assert!(errors[0].contains("nothing was tagged"), "{}", run.stderr);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unresolvable_servers_are_named_with_their_cause() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let data = DataDir::new();
    let (_refusing, port) = crate::support::refusing_port();
    let kc = kubeconfig_at(&cluster, &data, &format!("http://127.0.0.1:{port}"));
    let run = data
        .run(Some(&kc), &with_fast(&["snapshot", "s1", "--no-push"]))
        .exit_code(1);
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("connection refused"), "{}", run.stderr);
    assert!(
        errors[0].contains("(cluster \""),
        "names the cluster: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);

    let kc = kubeconfig_at(&cluster, &data, "http://no-such-host.invalid:6443");
    let started = Instant::now();
    let run = data
        .run(Some(&kc), &with_fast(&["snapshot", "s1", "--no-push"]))
        .exit_code(1);
    assert!(started.elapsed() < Duration::from_secs(15));
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("no-such-host.invalid"), "{}", run.stderr);
    assert!(
        errors[0].contains("does not resolve") || errors[0].contains("no connection within"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_503_on_discovery_is_bounded() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let emu = cluster.emulator.as_ref().unwrap();
    let f = emu.faults().add(rule("method=GET,path=/apis,status=503"));
    let data = DataDir::new();
    let started = Instant::now();
    let run = data
        .run(
            Some(&cluster.kubeconfig),
            &with_fast(&["snapshot", "s1", "--no-push"]),
        )
        .exit_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(emu.faults().fired(f) >= 2, "retried");
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("/apis") && errors[0].contains("503"),
        "{}",
        run.stderr
    );
    assert!(errors[0].contains("gave up after"), "{}", run.stderr);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_429_on_a_list_is_bounded_and_honours_retry_after() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let emu = cluster.emulator.as_ref().unwrap();
    let f = emu.faults().add(rule(
        "method=GET,path=/api/v1/configmaps,status=429,retry-after=1",
    ));
    let data = DataDir::new();
    let started = Instant::now();
    let run = data
        .run(
            Some(&cluster.kubeconfig),
            &with_fast(&["snapshot", "s1", "--no-push"]),
        )
        .exit_code(1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    // Retry-After: 1 within a 3 s budget: two or three attempts, a second apart.
    let fired = emu.faults().fired(f);
    assert!((2..=4).contains(&fired), "{fired}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("configmaps") && errors[0].contains("429"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_fails_three_times_then_succeeds_logs_no_error() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Realistic)).await;
    let emu = cluster.emulator.as_ref().unwrap();
    let f = emu.faults().add(rule(
        "method=GET,path=/api/v1/configmaps,status=503,times=3",
    ));
    let data = DataDir::new();
    let run = data
        .run(Some(&cluster.kubeconfig), &["snapshot", "s1", "--no-push"])
        .ok();
    assert_eq!(emu.faults().fired(f), 3);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
    assert!(!run.stderr.contains("error"), "{}", run.stderr);
    data.git(&["rev-parse", "--verify", "snapshots/s1"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_errors_not_panics() {
    let data = DataDir::new();
    // A TTL that overflows the calendar.
    let run = data
        .run(
            None,
            &["snapshot", "s1", "--no-push", "--ttl", "99999999999h"],
        )
        .exit_code(1);
    assert_eq!(error_lines(&run).len(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("--ttl"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    // A name that cannot be a git ref file name, refused before any work.
    let long = "a".repeat(251);
    let run = data
        .run(None, &["snapshot", &long, "--no-push"])
        .exit_code(1);
    assert!(run.stderr.contains("longer than 250"), "{}", run.stderr);
    // Timeouts must be positive.
    let run = data
        .run(None, &["list", "--request-timeout", "0s"])
        .exit_code(2);
    assert!(run.stderr.contains("more than zero"), "{}", run.stderr);
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let data = DataDir::new();
    let mut child = data
        .command(None)
        .args(["crd"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close the pipe while the CRDs (many KiB) are still being written.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// Flips one byte in the middle of the first `.idx` of a file store.
fn flip_idx_byte(store: &TestStore) -> String {
    let packs = store.dir.as_ref().unwrap().join("k8s-snap/packs");
    let idx = std::fs::read_dir(&packs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .expect("an idx");
    let mut bytes = std::fs::read(&idx).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&idx, bytes).unwrap();
    idx.file_stem().unwrap().to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_verify_names_a_flipped_byte_in_an_index() {
    let cluster = TestCluster::source().await;
    let store = TestStore::file();
    let data = DataDir::new();
    store
        .run(&data, Some(&cluster.kubeconfig), &["snapshot", "s1"])
        .ok();
    store.run(&data, None, &["verify", "--deep"]).ok();
    let sha = flip_idx_byte(&store);
    let run = store.run(&data, None, &["verify", "--deep"]).exit_code(1);
    assert!(
        run.stdout.contains(&format!("PROBLEM {sha}")) && run.stdout.contains("index"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("snapshots: s1"), "{}", run.stdout);
}

async fn recover_after_losing_the_manifest(backend: Backend) {
    let cluster = TestCluster::source().await;
    let kc = Some(cluster.kubeconfig.as_path());
    let store = TestStore::new(backend).await;
    let data = DataDir::new();
    store
        .run(&data, kc, &["snapshot", "s1", "--ttl", "720h"])
        .ok();
    store
        .run(&data, kc, &["snapshot", "s2", "--cluster", "other"])
        .ok();
    let before: serde_json::Value =
        serde_json::from_str(&store.run(&data, None, &["list", "-o", "json"]).ok().stdout).unwrap();
    let remote = store.open().await;
    remote.delete(MANIFEST_KEY).await.unwrap();

    // verify no longer says "0 problems": the packs are unreferenced.
    let run = store.run(&data, None, &["verify"]).exit_code(1);
    assert!(run.stdout.contains("unreferenced"), "{}", run.stdout);
    // gc keeps them whatever the grace.
    store.run(&data, None, &["gc", "--grace", "0s"]).ok();

    let dry = store.run(&data, None, &["recover", "--dry-run"]).ok();
    assert!(dry.stdout.contains("nothing was written"), "{}", dry.stdout);
    assert!(remote.get(MANIFEST_KEY).await.is_err());
    let run = store.run(&data, None, &["recover", "-o", "json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["recovered"].as_array().unwrap().len(), 2, "{report}");
    store.run(&data, None, &["verify", "--deep"]).ok();

    let after: serde_json::Value =
        serde_json::from_str(&store.run(&data, None, &["list", "-o", "json"]).ok().stdout).unwrap();
    for name in ["s1", "s2"] {
        let find = |v: &serde_json::Value| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} in {v}"))
        };
        let (b, a) = (find(&before), find(&after));
        for field in ["cluster", "availableUntil", "timestamp", "commit"] {
            assert_eq!(b.get(field), a.get(field), "{name}.{field}: {b} vs {a}");
        }
    }
    // Pull from the recovered store into a fresh mirror: the same trees.
    let fresh = DataDir::new();
    store.run(&fresh, None, &["pull"]).ok();
    for name in ["s1", "s2"] {
        let tree = |d: &DataDir| {
            d.git(&["rev-parse", &format!("snapshots/{name}^{{tree}}")])
                .ok()
                .stdout
        };
        assert_eq!(tree(&fresh), tree(&data));
    }
    // And a restore from the pulled copy plans and runs.
    let target = TestCluster::target().await;
    store
        .run(
            &fresh,
            Some(&target.kubeconfig),
            &["restore", "s1", "--dry-run"],
        )
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_losing_the_manifest_file() {
    recover_after_losing_the_manifest(Backend::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_losing_the_manifest_s3() {
    recover_after_losing_the_manifest(Backend::S3).await;
}

async fn push_onto_a_damaged_store(backend: Backend, truncate: bool) {
    let cluster = TestCluster::source().await;
    let kc = Some(cluster.kubeconfig.as_path());
    let store = TestStore::new(backend).await;
    let data = DataDir::new();
    store.run(&data, kc, &["snapshot", "s1"]).ok();
    let remote = store.open().await;
    let pack = remote
        .list("k8s-snap/packs/")
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.key.ends_with(".pack"))
        .unwrap();
    if truncate {
        let mut bytes = remote.get(&pack.key).await.unwrap().bytes;
        bytes.truncate(bytes.len() / 2);
        remote.delete(&pack.key).await.unwrap();
        remote.put_if_absent(&pack.key, bytes).await.unwrap();
    } else {
        remote.delete(&pack.key).await.unwrap();
    }
    // The new snapshot shares most objects with s1, whose pack is damaged: they are uploaded
    // again, and s2 can be pulled.
    let run = store.run(&data, kc, &["snapshot", "s2"]).ok();
    assert!(run.stderr.contains("will not rely on it"), "{}", run.stderr);
    let fresh = DataDir::new();
    store.run(&fresh, None, &["pull", "s2"]).ok();
    // s1 is still reported as damaged.
    let run = store.run(&data, None, &["verify"]).exit_code(1);
    assert!(run.stdout.contains("s1"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_onto_a_store_with_a_deleted_pack_file() {
    push_onto_a_damaged_store(Backend::File, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_onto_a_store_with_a_truncated_pack_s3() {
    push_onto_a_damaged_store(Backend::S3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_missing_bucket_says_so() {
    let store = TestStore::s3().await;
    if store.secret.as_deref() != Some(crate::store_support::MOTO_SECRET) {
        return; // real S3: the bucket name space is global
    }
    let cluster = TestCluster::source().await;
    let data = DataDir::new();
    store
        .run(
            &data,
            Some(&cluster.kubeconfig),
            &["snapshot", "s1", "--no-push"],
        )
        .ok();
    let run = store
        .run(&data, None, &["push", "--store", "s3://no-such-bucket/x"])
        .exit_code(1);
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("bucket no-such-bucket does not exist"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_are_masked_in_show_diff_and_plan() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let ns = cluster.namespace("it-mask").await;
    // As `kubectl apply` leaves it: a copy of the object in last-applied-configuration.
    let first = "c3VwZXItc2VjcmV0LXZhbHVl"; // super-secret-value
    let plain = "plain-applied-secret";
    let applied = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": ns},
        "data": {"password": first}, "stringData": {"token": plain},
    })
    .to_string();
    cluster
        .post(
            &format!("/api/v1/namespaces/{ns}/secrets"),
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": applied}},
                "data": {"password": first},
            }),
        )
        .await;
    let data = DataDir::new();
    let kc = Some(cluster.kubeconfig.as_path());
    data.run(kc, &["snapshot", "s1", "--no-push"]).ok();
    let second = "b3RoZXItc2VjcmV0LXZhbHVl"; // other-secret-value
    cluster
        .merge_patch(
            &format!("/api/v1/namespaces/{ns}/secrets/db"),
            &serde_json::json!({"data": {"password": second}}),
        )
        .await;
    data.run(kc, &["snapshot", "s2", "--no-push"]).ok();
    let path = format!("/api/v1/namespaces/{ns}/secrets/db");
    let leaks = |out: &str| [first, second, plain].iter().any(|v| out.contains(v));

    for args in [
        vec!["show", "s1", path.as_str()],
        vec!["show", "s1", path.as_str(), "-o", "json"],
        vec!["diff", "s1", "s2"],
        vec!["diff", "s1", "s2", "-o", "json"],
        vec!["plan", "s1", "--diff"],
        vec!["plan", "s1", "--diff", "-o", "json"],
    ] {
        let run = data.run(kc, &args).ok();
        assert!(
            !leaks(&run.stdout) && !leaks(&run.stderr),
            "{args:?} shows a secret value:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("***") || args[0] == "show",
            "{args:?}: {}",
            run.stdout
        );
    }
    let diff = data.run(kc, &["diff", "s1", "s2"]).ok().stdout;
    assert!(
        diff.contains("*** (s1)") && diff.contains("*** (s2)"),
        "{diff}"
    );
    let shown = data
        .run(kc, &["show", "s1", &path, "--show-secrets"])
        .ok()
        .stdout;
    assert!(shown.contains(first), "--show-secrets shows them: {shown}");
}

/// Every file under the data dir is owner-only, whatever the umask, after each command.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_in_the_data_dir_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    fn check(root: &std::path::Path, after: &str) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let meta = e.metadata().unwrap();
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(
                    mode & 0o077,
                    0,
                    "after {after}: {} has mode {mode:o}",
                    e.path().display()
                );
                if meta.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    let cluster = TestCluster::source().await;
    let kc = Some(cluster.kubeconfig.as_path());
    let data = DataDir::new();
    let steps: &[&[&str]] = &[
        &["snapshot", "s1"],
        &["snapshot", "s2"],
        &["delete", "s1"],
        &["gc", "--local-only"],
        &["gc", "--grace", "0s"],
        &["pull"],
    ];
    for args in steps {
        // A permissive umask in the caller must not matter.
        let mut inner = data.command(kc);
        inner.args(*args);
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let run = crate::support::run(cmd);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let store_or_data = data.path().join("mirror.git");
        check(&store_or_data, &args.join(" "));
        check(&data.path().join("store"), &args.join(" "));
    }
}

/// Runs git on the data dir's mirror with a private index file.
fn git_with_index(data: &DataDir, index: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(data.path().join("mirror.git"))
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .env("GIT_INDEX_FILE", index)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Snapshots the source cluster into `data` as "s1", then tags "evil" (and "evil2", sharing
/// its tree but the metadata file) whose one ConfigMap file holds `edit(name, body)` instead of
/// its body, and pushes both. Returns the file's path.
fn push_tampered(
    store: &TestStore,
    data: &DataDir,
    kubeconfig: &std::path::Path,
    edit: impl Fn(&str, &str) -> String,
) -> String {
    store
        .run(data, Some(kubeconfig), &["snapshot", "s1", "--no-push"])
        .ok();
    let index = data.path().join("tamper-index");
    git_with_index(data, &index, &["read-tree", "snapshots/s1"]);
    let files = git_with_index(data, &index, &["ls-files"]);
    let victim = files
        .lines()
        .find(|f| f.contains("/configmaps/"))
        .expect("a configmap")
        .to_owned();
    let body = data
        .git(&["show", &format!("snapshots/s1:{victim}")])
        .ok()
        .stdout;
    let name = victim.rsplit('/').next().unwrap().trim_end_matches(".yaml");
    let tampered = edit(name, &body);
    assert_ne!(tampered, body);
    let meta = data
        .git(&["show", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout
        .replacen("name: s1\n", "name: evil\n", 1);
    // Writes `text` at `path` in the index.
    let stage = |path: &str, text: String| {
        let file = data.path().join("blob");
        std::fs::write(&file, text).unwrap();
        let blob = git_with_index(data, &index, &["hash-object", "-w", file.to_str().unwrap()]);
        git_with_index(
            data,
            &index,
            &[
                "update-index",
                "--cacheinfo",
                &format!("100644,{blob},{path}"),
            ],
        );
    };
    // Tags the index's tree as snapshot `name`.
    let tag = |name: &str| {
        let tree = git_with_index(data, &index, &["write-tree"]);
        let commit = git_with_index(data, &index, &["commit-tree", &tree, "-m", name]);
        git_with_index(
            data,
            &index,
            &[
                "update-ref",
                &format!("refs/tags/snapshots/{name}"),
                &commit,
            ],
        );
    };
    stage(&victim, tampered);
    stage(".k8s-snap/snapshot.yaml", meta);
    tag("evil");
    // A second one, "evil2", sharing the tampered subtree: pulled together, a subtree that
    // failed for one snapshot must not count as checked for the other.
    let meta2 = data
        .git(&["show", "snapshots/evil:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout
        .replacen("name: evil\n", "name: evil2\n", 1);
    stage(".k8s-snap/snapshot.yaml", meta2);
    tag("evil2");
    store.run(data, None, &["push", "evil", "evil2"]).ok();
    victim
}

/// Pulls "evil" then everything into fresh data dirs: refused, naming the file and the field,
/// and nothing tagged.
fn assert_tampered_refused(store: &TestStore, victim: &str, field: &str) {
    let fresh = DataDir::new();
    let run = store.run(&fresh, None, &["pull", "evil"]).exit_code(1);
    assert!(
        run.stderr.contains(victim) && run.stderr.contains(field),
        "names the file and the field: {}",
        run.stderr
    );
    assert!(
        fresh.git(&["rev-parse", "--verify", "snapshots/evil"]).code != 0,
        "not tagged"
    );
    let fresh = DataDir::new();
    let run = store.run(&fresh, None, &["pull"]).exit_code(1);
    for name in ["evil", "evil2"] {
        assert!(
            fresh
                .git(&["rev-parse", "--verify", &format!("snapshots/{name}")])
                .code
                != 0,
            "{name} not tagged: {}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refuses_a_tree_whose_path_and_body_disagree() {
    let cluster = TestCluster::source().await;
    let store = TestStore::file();
    let data = DataDir::new();
    let victim = push_tampered(&store, &data, &cluster.kubeconfig, |name, body| {
        body.replacen(&format!("  name: {name}\n"), "  name: other-name\n", 1)
    });
    assert_tampered_refused(&store, &victim, "metadata.name");
}

/// The body is read as the restore reads it: a `name:` line inside a quoted scalar that spans
/// lines is not the name (the parser reads the quoted key below it), however canonical the
/// lines around it look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_reads_a_body_as_the_restore_does() {
    let cluster = TestCluster::source().await;
    let store = TestStore::file();
    let data = DataDir::new();
    let victim = push_tampered(&store, &data, &cluster.kubeconfig, |name, body| {
        body.replacen(
            &format!("  name: {name}\n"),
            &format!("  annotations-x: \"x\n  name: {name}\n  y: z\"\n  \"name\": other-name\n"),
            1,
        )
    });
    assert_tampered_refused(&store, &victim, "\"other-name\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_packs_of_killed_writers_are_removed_by_the_next_snapshot_and_gc() {
    let cluster = TestCluster::source().await;
    let kc = Some(cluster.kubeconfig.as_path());
    let data = DataDir::new();
    data.run(kc, &["snapshot", "s1", "--no-push"]).ok();
    let pack_dir = data.path().join("mirror.git/objects/pack");
    let leave = |names: &[&str]| {
        for n in names {
            std::fs::write(pack_dir.join(n), vec![0u8; 4096]).unwrap();
        }
    };
    // What a snapshot killed with -9 leaves, and a download in progress (kept: it is young).
    leave(&["tmp_pack_AbC123", "tmp_idx_AbC123", ".tmpDownload"]);
    data.run(kc, &["snapshot", "s2", "--no-push"]).ok();
    assert!(!pack_dir.join("tmp_pack_AbC123").exists());
    assert!(!pack_dir.join("tmp_idx_AbC123").exists());
    assert!(
        pack_dir.join(".tmpDownload").exists(),
        "a live download is left alone"
    );
    leave(&["tmp_pack_X"]);
    data.run(None, &["gc", "--local-only"]).ok();
    assert!(!pack_dir.join("tmp_pack_X").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_what_it_can_and_names_a_bad_tag() {
    let cluster = TestCluster::source().await;
    let data = DataDir::new();
    data.run(Some(&cluster.kubeconfig), &["snapshot", "s1", "--no-push"])
        .ok();
    let blob = data
        .git(&["rev-parse", "snapshots/s1:.k8s-snap/snapshot.yaml"])
        .ok()
        .stdout;
    data.git(&["update-ref", "refs/tags/snapshots/broken", blob.trim()])
        .ok();
    let run = data
        .run(None, &["list", "--store", "/nonexistent-store"])
        .exit_code(1);
    assert!(run.stdout.contains("s1"), "{}", run.stdout);
    assert!(
        run.stderr.contains("\"broken\"") && run.stderr.contains("does not point to a commit"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_against_persistent_429s_is_bounded_prints_its_status_and_exits_1() {
    let source = TestCluster::source().await;
    let target = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let data = DataDir::new();
    data.run(Some(&source.kubeconfig), &["snapshot", "s1", "--no-push"])
        .ok();
    let emu = target.emulator.as_ref().unwrap();
    let f = emu
        .faults()
        .add(rule("method=POST,status=429,retry-after=1"));
    let started = Instant::now();
    let run = data
        .run(
            Some(&target.kubeconfig),
            &with_fast(&["restore", "s1", "-o", "json"]),
        )
        .exit_code(1);
    let took = started.elapsed();
    // One budget (3 s) per request in flight, not one per object.
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(emu.faults().fired(f) >= 2);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(status["numFailed"].as_u64().unwrap() > 0, "{status}");
    assert!(run.stderr.contains("failed"), "{}", run.stderr);
}

/// A TLS server (`openssl s_server`, a real process) with a self-signed certificate for
/// `other.example`, killed on drop.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    cert_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server() -> Option<TlsServer> {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (cert, key) = (p("c.pem"), p("k.pem"));
    std::fs::write(p("ext"), "subjectAltName=DNS:other.example\n").unwrap();
    // A test CA, and a server certificate for other.example signed by it.
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=k8s-snap test CA",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([p("ca.key"), "-out".into(), p("ca.pem")])
        .collect(),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=other.example",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([key.clone(), "-out".into(), p("csr.pem")])
        .collect(),
        ["x509", "-req", "-days", "1", "-CAcreateserial", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                p("csr.pem"),
                "-CA".into(),
                p("ca.pem"),
                "-CAkey".into(),
                p("ca.key"),
                "-extfile".into(),
                p("ext"),
                "-out".into(),
                cert.clone(),
            ])
            .collect(),
    ];
    for args in steps {
        let ok = std::process::Command::new("openssl")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
    }
    let ca_pem = std::fs::read_to_string(p("ca.pem")).unwrap();
    serve_tls(dir, &cert, &key, ca_pem)
}

/// `openssl s_server` on a port the OS picks (read from its `ACCEPT` line, so that parallel
/// runs never race for one "free" port) with `cert`/`key`, once it accepts connections.
fn serve_tls(dir: tempfile::TempDir, cert: &str, key: &str, ca_pem: String) -> Option<TlsServer> {
    let mut child = std::process::Command::new("openssl")
        .args(["s_server", "-www", "-accept", "127.0.0.1:0"])
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the port from "ACCEPT 127.0.0.1:<port>", then drains the per-connection log.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if let Some(port) = line
                .strip_prefix("ACCEPT 127.0.0.1:")
                .and_then(|p| p.trim().parse::<u16>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    let Ok(port) = rx.recv_timeout(Duration::from_secs(10)) else {
        let _ = child.kill();
        panic!("openssl s_server did not say which port it listens on");
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(TlsServer {
        child,
        port,
        cert_pem: ca_pem,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_and_misnamed_certificates_fail_at_once_naming_the_cause() {
    use base64::Engine as _;
    let Some(server) = tls_server() else {
        eprintln!("skipped: openssl is not available");
        return;
    };
    let data = DataDir::new();
    let kubeconfig = |ca: Option<&str>| {
        let ca = ca.map_or(String::new(), |pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        });
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://127.0.0.1:{}\n{ca}users:\n- name: u\n  user:\n    token: t0ken-never-shown\ncontexts:\n- name: c\n  context:\n    cluster: prod\n    user: u\ncurrent-context: c\n",
            server.port
        );
        let path = data.path().join(format!("kc-{}", fastrand::u32(..)));
        std::fs::write(&path, text).unwrap();
        path
    };
    for (ca, cause) in [
        (None, "TLS certificate not trusted (unknown issuer)"),
        (Some(server.cert_pem.as_str()), "name mismatch"),
    ] {
        let kc = kubeconfig(ca);
        // Not retried: a certificate that is not trusted will not become trusted.
        assert_tls_refused(&data, &kc, server.port, "prod", cause);
    }
}

/// A snapshot through `kc` fails at once (no retries) with one error line naming the server,
/// its cluster and `cause`, and never the kubeconfig's token.
fn assert_tls_refused(data: &DataDir, kc: &std::path::Path, port: u16, cluster: &str, cause: &str) {
    let started = Instant::now();
    let run = data
        .run(Some(kc), &["snapshot", "s1", "--no-push"])
        .exit_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retried a refused certificate: {:?}",
        started.elapsed()
    );
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains(&format!("https://127.0.0.1:{port}"))
            && errors[0].contains(&format!("(cluster {cluster:?})"))
            && errors[0].contains(cause),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("t0ken-never-shown"));
}

/// A TLS server (`openssl s_server`) whose certificate, for 127.0.0.1, signed by a CA the
/// client trusts, expired in 2020 (made with python's `cryptography`, which moto brings).
fn expired_tls_server() -> Option<TlsServer> {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let script = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
out = sys.argv[1]
t0 = datetime.datetime(2020, 1, 1)
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8s-snap expired-test CA")])
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
      .public_key(ca_key.public_key()).serial_number(1)
      .not_valid_before(t0).not_valid_after(t0 + datetime.timedelta(days=36500))
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
leaf = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(t0).not_valid_after(t0 + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256()))
pem = serialization.Encoding.PEM
open(out + "/ca.pem", "wb").write(ca.public_bytes(pem))
open(out + "/c.pem", "wb").write(leaf.public_bytes(pem))
open(out + "/k.pem", "wb").write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let made = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.path())
        .status()
        .ok()?
        .success();
    if !made {
        return None;
    }
    let (cert, key) = (p("c.pem"), p("k.pem"));
    let ca_pem = std::fs::read_to_string(p("ca.pem")).unwrap();
    serve_tls(dir, &cert, &key, ca_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_fails_at_once_naming_the_cause() {
    use base64::Engine as _;
    let Some(server) = expired_tls_server() else {
        eprintln!("skipped: python3's cryptography or openssl is not available");
        return;
    };
    let data = DataDir::new();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: old\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    token: t0ken-never-shown\ncontexts:\n- name: c\n  context:\n    cluster: old\n    user: u\ncurrent-context: c\n",
        server.port,
        base64::engine::general_purpose::STANDARD.encode(&server.cert_pem)
    );
    let kc = data.path().join("kc-expired");
    std::fs::write(&kc, text).unwrap();
    assert_tls_refused(&data, &kc, server.port, "old", "TLS certificate expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_that_never_answers_fails_within_the_budget() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let data = DataDir::new();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut cmd = data.command(None);
    cmd.args(with_fast(&[
        "verify",
        "--store",
        "s3://snaps",
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
        "--s3-region",
        "us-east-1",
    ]))
    .env("K8S_SNAP_S3_ACCESS_KEY_ID", "AKIAK8SSNAPNOANSWER")
    .env(
        "K8S_SNAP_S3_SECRET_ACCESS_KEY",
        "no-answer-secret-0123456789",
    )
    .env("AWS_EC2_METADATA_DISABLED", "true");
    let run = crate::support::run(cmd).exit_code(1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "it did wait for an answer: {took:?}"
    );
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains(&endpoint), "{}", run.stderr);
    assert!(errors[0].contains("manifest.json"), "{}", run.stderr);
    assert!(!run.stderr.contains("no-answer-secret"), "{}", run.stderr);
}

/// A plain-HTTP server that answers every request with a 404 HTML page (as a web server, a
/// proxy or a wrong port would); its port.
fn not_kubernetes_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html>private page</html>";
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A server that is not a Kubernetes API server (or not an S3 server) is named as such, with
/// what to check and without quoting its page; TLS to a plain-HTTP port fails at once, not
/// after the retry budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_or_a_plain_http_port_is_named_at_once() {
    let cluster = TestCluster::emulated(Emulator::builder().fixture(Fixture::Empty)).await;
    let data = DataDir::new();
    let port = not_kubernetes_server();
    let budget = ["--retry-budget", "20s", "--request-timeout", "2s"];
    let args = |cmd: &[&'static str]| [cmd, &budget[..]].concat();

    let kc = kubeconfig_at(&cluster, &data, &format!("http://127.0.0.1:{port}"));
    let run = data
        .run(Some(&kc), &args(&["snapshot", "s1", "--no-push"]))
        .exit_code(1);
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("GET /version: 404 NotFound: not a Kubernetes API answer (text/html, 25 bytes, not shown): check the kubeconfig's server URL"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("private page"), "{}", run.stderr);

    let kc = kubeconfig_at(&cluster, &data, &format!("https://127.0.0.1:{port}"));
    let started = Instant::now();
    let run = data
        .run(Some(&kc), &args(&["snapshot", "s1", "--no-push"]))
        .exit_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let errors = error_lines(&run);
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("TLS handshake failed: the server does not answer in TLS there"),
        "{}",
        run.stderr
    );

    for (scheme, cause) in [
        (
            "http",
            "HTTP 404 without an S3 error code: not an S3 answer; check --s3-endpoint",
        ),
        (
            "https",
            "TLS handshake failed: the server does not answer in TLS there",
        ),
    ] {
        let endpoint = format!("{scheme}://127.0.0.1:{port}");
        let mut cmd = data.command(None);
        cmd.args(args(&[
            "verify",
            "--store",
            "s3://snaps",
            "--s3-path-style",
            "--insecure",
        ]))
        .args(["--s3-endpoint", &endpoint, "--s3-region", "us-east-1"])
        .env("K8S_SNAP_S3_ACCESS_KEY_ID", "AKIAK8SSNAPWRONGSERVER")
        .env("K8S_SNAP_S3_SECRET_ACCESS_KEY", "wrong-server-secret-0123")
        .env("AWS_EC2_METADATA_DISABLED", "true");
        let started = Instant::now();
        let run = crate::support::run(cmd).exit_code(1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{scheme}: {:?}",
            started.elapsed()
        );
        let errors = error_lines(&run);
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert!(errors[0].contains(&endpoint), "{}", run.stderr);
        assert!(errors[0].contains(cause), "{}", run.stderr);
        assert!(
            !run.stderr.contains("wrong-server-secret"),
            "{}",
            run.stderr
        );
    }
}

/// A kubeconfig's credential plugin that is missing or fails is named, with its exit status
/// rather than kube's dump of the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_credential_plugin_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let data = DataDir::new();
    let failing = data.path().join("failing-plugin.sh");
    std::fs::write(&failing, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (command, cause) in [
        (
            "no-such-credential-plugin".to_string(),
            "the kubeconfig's credential plugin `no-such-credential-plugin` failed: ".to_string(),
        ),
        (
            failing.display().to_string(),
            format!(
                "the kubeconfig's credential plugin `{}` exited with status 3",
                failing.display()
            ),
        ),
    ] {
        let kc = data.path().join("plugin-kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 clusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:1\"}}}}]\n\
                 users: [{{name: u, user: {{exec: {{command: \"{command}\", apiVersion: client.authentication.k8s.io/v1beta1}}}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
            ),
        )
        .unwrap();
        let run = data
            .run(Some(&kc), &with_fast(&["snapshot", "s1", "--no-push"]))
            .exit_code(1);
        let errors = error_lines(&run);
        assert_eq!(errors.len(), 1, "{}", run.stderr);
        assert!(errors[0].contains(&cause), "{}", run.stderr);
        assert!(
            !errors[0].contains("KUBERNETES_EXEC_INFO"),
            "{}",
            run.stderr
        );
    }
}
