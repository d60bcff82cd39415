//! The snapshot tree format: canonical YAML laws and layout, content paths, canonical form,
//! golden files of realistic fixture objects, and the fixtures' own invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_snap::tree::{
    self, ContentPath, Node, SnapshotMeta, TreeError, canonicalize, canonicalize_node, from_yaml,
    is_object_file, is_token_secret, is_token_secret_node, to_yaml, validate_name,
};
use kube_emulator::fixtures::{realistic, scale};
use proptest::prelude::*;
use serde_json::{Value, json};

fn emit(v: &Value) -> String {
    to_yaml(v).expect("emit")
}

/// Both laws of docs/design.md §3 for one value.
fn assert_laws(v: &Value) {
    let y = emit(v);
    let back = from_yaml(&y).unwrap_or_else(|e| panic!("re-parse failed: {e}\n{y}"));
    assert_eq!(&back, v, "parse(emit(v)) != v; yaml:\n{y}");
    assert_eq!(emit(&back), y, "emit is not stable");
    assert!(
        y.ends_with('\n') && !y.ends_with("\n\n"),
        "trailing newline: {y:?}"
    );
    assert!(!y.starts_with("---"), "document marker: {y:?}");
}

// ------------------------------------------------------------------------------------------
// Scalars and layout

#[test]
fn ambiguous_strings_are_quoted() {
    for s in [
        "on",
        "yes",
        "Yes",
        "no",
        "off",
        "y",
        "n",
        "true",
        "False",
        "null",
        "~",
        "",
        "0777",
        "1e3",
        "1.0",
        "0x1F",
        "0o17",
        "2001-01-01",
        "1:20",
        "1_000",
        ".inf",
        "-.inf",
        ".nan",
        "+1",
        "-1",
        " lead",
        "trail ",
        "a: b",
        "a #b",
        "- x",
        "-",
        "<<",
        "=",
        "@x",
        "!x",
        "&x",
        "*x",
        "|x",
        ">x",
        "%x",
        "#x",
        "?",
        ":",
        "[a]",
        "{a}",
        "'q",
        "\"q",
    ] {
        let y = emit(&json!({ "k": s }));
        assert!(
            y.starts_with("k: \""),
            "{s:?} must be double-quoted, got {y:?}"
        );
        assert_laws(&json!({ "k": s }));
    }
}

#[test]
fn unambiguous_strings_are_plain() {
    for s in [
        "abc",
        "nginx:1.25",
        "10.96.0.10",
        "100Mi",
        "500m",
        "app.kubernetes.io/name",
        "--port=8080",
        "http://example.com:80/x",
        "ünïcødé",
    ] {
        assert_eq!(emit(&json!({ "k": s })), format!("k: {s}\n"));
        assert_laws(&json!({ "k": s }));
    }
}

#[test]
fn multi_line_strings_are_literal_blocks() {
    let v = json!({
        "clip": "a\nb\n",
        "keep": "a\n\n\n",
        "strip": "a\n  b",
        "z": 1,
    });
    assert_eq!(
        emit(&v),
        "clip: |\n  a\n  b\nkeep: |+\n  a\n\n\nstrip: |-\n  a\n    b\nz: 1\n"
    );
    assert_laws(&v);
}

#[test]
fn unsafe_multi_line_strings_are_double_quoted() {
    for s in [
        " leading space\nx",
        "trailing space \nx",
        "\nleading newline",
        "cr\r\nlf",
        "bell\u{7}\nx",
    ] {
        let y = emit(&json!({ "k": s }));
        assert!(y.starts_with("k: \""), "{s:?} -> {y:?}");
        assert_laws(&json!({ "k": s }));
    }
    // Keep chomping at the very end would leave blank lines at the end of the file.
    let y = emit(&json!({ "k": "a\n\n" }));
    assert_eq!(y, "k: \"a\\n\\n\"\n");
}

#[test]
fn escapes_are_yaml_escapes() {
    let v = json!({ "k": "tab\tnul\0del\u{7f}nel\u{85}ls\u{2028}bom\u{feff}q\"b\\" });
    assert_eq!(
        emit(&v),
        "k: \"tab\\tnul\\0del\\x7Fnel\\Nls\\Lbom\\uFEFFq\\\"b\\\\\"\n"
    );
    assert_laws(&v);
}

#[test]
fn layout_matches_kubectl_style() {
    let mut m = serde_json::Map::new();
    // Inserted out of order on purpose.
    m.insert(
        "spec".into(),
        json!({ "z": [], "b": {}, "a": [{ "w": 1, "x": [1, [2, 3]] }, "s"] }),
    );
    m.insert(
        "metadata".into(),
        json!({ "name": "cm", "labels": { "b": "2", "a": "1" } }),
    );
    m.insert("kind".into(), json!("ConfigMap"));
    m.insert("apiVersion".into(), json!("v1"));
    m.insert(
        "data".into(),
        json!({ "B": null, "a": true, "_": 1.5, "Z": -3 }),
    );
    let v = Value::Object(m);
    let expected = "\
apiVersion: v1
kind: ConfigMap
metadata:
  labels:
    a: \"1\"
    b: \"2\"
  name: cm
data:
  B: null
  Z: -3
  _: 1.5
  a: true
spec:
  a:
  - w: 1
    x:
    - 1
    - - 2
      - 3
  - s
  b: {}
  z: []
";
    assert_eq!(emit(&v), expected);
    assert_laws(&v);
}

#[test]
fn top_level_order_applies_only_at_the_root() {
    let v = json!({ "x": { "metadata": 1, "kind": 2, "apiVersion": 3 } });
    assert_eq!(emit(&v), "x:\n  apiVersion: 3\n  kind: 2\n  metadata: 1\n");
}

#[test]
fn numbers_keep_their_type() {
    for v in [
        json!({ "i": 1 }),
        json!({ "f": 1.0 }),
        json!({ "f": 1e300 }),
        json!({ "f": -2.5e-8 }),
        json!({ "u": u64::MAX }),
        json!({ "i": i64::MIN }),
    ] {
        assert_laws(&v);
    }
    assert_eq!(emit(&json!({ "f": 1.0 })), "f: 1.0\n");
    assert_eq!(emit(&json!({ "f": 1e300 })), "f: 1.0e+300\n");
}

#[test]
fn top_level_scalars_and_empty_collections() {
    for v in [
        json!({}),
        json!([]),
        json!(null),
        json!("a\nb"),
        json!([1, "x"]),
        json!(7),
    ] {
        assert_laws(&v);
    }
    assert_eq!(emit(&json!({})), "{}\n");
    assert_eq!(emit(&json!([])), "[]\n");
}

#[test]
fn from_yaml_rejects_bad_input_without_quoting_it() {
    let err = from_yaml("a: 1\na: 2\n").expect_err("duplicate keys");
    assert!(matches!(err, TreeError::Yaml { .. }));
    let err = from_yaml("data:\n  password: s3cr3t-value\n   bad: [\n").expect_err("syntax");
    assert!(!err.to_string().contains("s3cr3t-value"), "{err}");
}

#[test]
fn meta_files_round_trip() {
    let meta = SnapshotMeta {
        format_version: tree::meta::FORMAT_VERSION,
        name: "snap-1".into(),
        cluster_name: "prod".into(),
        resource_version: "12345".into(),
        timestamp: "2024-05-01T10:00:00Z".parse().expect("timestamp"),
        server_version: "v1.32.0".into(),
        consistency: tree::Consistency::Exact,
        number_of_contents: 42,
        ttl: Some("24h".into()),
        available_until: None,
        imported_from: None,
        tool_version: "k8s-snap 0.1.0".into(),
        skipped: vec![tree::SkippedEntry {
            path: "/api/v1/namespaces/a/secrets/t".into(),
            reason: "token-secret".into(),
        }],
        encryption: Some(tree::Encryption {
            recipients: vec!["age1abc".into()],
            fingerprint_key_id: "0011223344556677".into(),
            paths: vec!["widgets.example.com:spec.password".into()],
        }),
        filter: None,
        unavailable_apis: Vec::new(),
    };
    let y = tree::to_yaml_string(&meta).expect("emit");
    assert!(y.contains("resourceVersion: \"12345\"\n"), "{y}");
    let back: SnapshotMeta = tree::from_yaml_str(&y).expect("parse");
    assert_eq!(back, meta);
    assert_eq!(tree::to_yaml_string(&back).expect("emit"), y);
}

// ------------------------------------------------------------------------------------------
// Property tests

fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "Y",
            "true",
            "False",
            "NULL",
            "null",
            "~",
            "",
            "0777",
            "1e3",
            "1.0",
            "0x1F",
            "0o17",
            "2001-01-01",
            "1:20",
            ".inf",
            "-.Inf",
            "NaN",
            "inf",
            "<<",
            "=",
            "-",
            "---",
            "...",
            "- a",
            "? x",
            ": y",
            "a: b",
            "a #c",
            "#c",
            "10.0.0.1",
            "1.2.3",
            "100Mi",
            "--flag",
            "'",
            "\"",
            "\\",
            "\t",
            " ",
            "\n",
            "\n\n",
            "a\n",
            "a\n\n",
            "a\nb",
            "\ta\n",
            "a\t\nb",
            "a\n\tb\n",
            "é\n",
            "日本\n語",
            "\u{85}",
            "\u{2028}",
            "\u{feff}x",
            "\u{a0}",
            "x\u{a0}",
            "😀",
            "a\r\nb",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9.:/_ -]{0,12}",
        "[ -~]{0,16}",
        "([a-z #:-]{0,8}\n){0,4}[a-z ]{0,4}",
        "[\\t\\n\\r -~\u{80}-\u{ff}]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (-1000i32..1000).prop_map(|i| Value::from(f64::from(i) / 8.0)),
        (-300i32..300, -9i32..9).prop_map(|(e, m)| Value::from(f64::from(m) * 10f64.powi(e))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn yaml_laws_hold_for_generated_values(v in json_value()) {
        let y = emit(&v);
        let back = from_yaml(&y);
        prop_assert!(back.is_ok(), "re-parse failed: {:?}\n{}", back.err(), y);
        let back = back.expect("checked");
        prop_assert_eq!(&back, &v, "yaml:\n{}", y);
        prop_assert_eq!(emit(&back), y.clone());
        prop_assert!(y.ends_with('\n') && !y.ends_with("\n\n"), "{:?}", y);
    }

    #[test]
    fn string_values_and_keys_round_trip(k in tricky_string(), s in tricky_string()) {
        let mut m = serde_json::Map::new();
        m.insert(k, Value::String(s.clone()));
        m.insert("list".into(), json!([s.clone(), { "x": s }]));
        let v = Value::Object(m);
        let y = emit(&v);
        let back = from_yaml(&y);
        prop_assert!(back.is_ok(), "re-parse failed: {:?}\n{}", back.err(), y);
        prop_assert_eq!(back.expect("checked"), v, "yaml:\n{}", y);
    }

    #[test]
    fn content_paths_round_trip(
        group in prop::option::of("[a-z]{1,8}(\\.[a-z]{1,6}){0,2}"),
        version in "v[0-9](alpha[0-9]|beta[0-9])?",
        resource in "[a-z]{1,12}",
        namespace in prop::option::of("[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?"),
        name in "[a-z0-9]([-.a-z0-9:@]{0,20}[a-z0-9])?",
    ) {
        let g = group.as_deref().unwrap_or("");
        let p = ContentPath::new(g, &version, &resource, namespace.as_deref(), &name)
            .expect("valid");
        prop_assert_eq!(&ContentPath::parse(p.as_str()).expect("parse"), &p);
        prop_assert_eq!(&ContentPath::from_file_path(&p.file_path()).expect("file"), &p);
        prop_assert_eq!(&p.as_str().parse::<ContentPath>().expect("from_str"), &p);
        prop_assert!(is_object_file(&p.file_path()));
        prop_assert_eq!(p.group(), g);
        prop_assert_eq!(p.version(), version.as_str());
        prop_assert_eq!(p.resource(), resource.as_str());
        prop_assert_eq!(p.namespace(), namespace.as_deref());
        prop_assert_eq!(p.name(), name.as_str());
        let json = serde_json::to_string(&p).expect("ser");
        prop_assert_eq!(serde_json::from_str::<ContentPath>(&json).expect("de"), p);
    }
}

// ------------------------------------------------------------------------------------------
// Paths

#[test]
fn content_path_shapes() {
    let ns = ContentPath::new("", "v1", "namespaces", None, "default").expect("ns");
    assert_eq!(ns.as_str(), "/api/v1/namespaces/default");
    assert_eq!(ns.file_path(), "api/v1/namespaces/default.yaml");
    let cm = ContentPath::new("", "v1", "configmaps", Some("default"), "x").expect("cm");
    assert_eq!(cm.as_str(), "/api/v1/namespaces/default/configmaps/x");
    assert_eq!(cm.api_version(), "v1");
    let d = ContentPath::new("apps", "v1", "deployments", Some("shop"), "web").expect("d");
    assert_eq!(
        d.file_path(),
        "apis/apps/v1/namespaces/shop/deployments/web.yaml"
    );
    assert_eq!(d.api_version(), "apps/v1");
    assert_eq!(d.to_string(), d.as_str());
    let crd = ContentPath::from_file_path(
        "apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com.yaml",
    )
    .expect("crd");
    assert_eq!(crd.name(), "widgets.example.com");
    assert_eq!(crd.namespace(), None);
    assert!(ns < cm && cm < d, "bytewise order");
}

#[test]
fn traversal_names_are_rejected_in_every_position() {
    let bad = ["..", ".", "a/b", "a\0b", "", "/", &"x".repeat(254)];
    for b in bad {
        assert!(validate_name(b).is_err(), "{b:?}");
        let g = if b.is_empty() { "." } else { b }; // "" means core for the group
        assert!(
            ContentPath::new(g, "v1", "r", Some("ns"), "n").is_err(),
            "group {b:?}"
        );
        assert!(
            ContentPath::new("g", b, "r", Some("ns"), "n").is_err(),
            "version {b:?}"
        );
        assert!(
            ContentPath::new("g", "v1", b, Some("ns"), "n").is_err(),
            "resource {b:?}"
        );
        assert!(
            ContentPath::new("g", "v1", "r", Some(b), "n").is_err(),
            "ns {b:?}"
        );
        assert!(
            ContentPath::new("g", "v1", "r", None, b).is_err(),
            "name {b:?}"
        );
        for p in [
            format!("/apis/{b}/v1/r/n"),
            format!("/apis/g/{b}/r/n"),
            format!("/apis/g/v1/{b}/n"),
            format!("/apis/g/v1/namespaces/{b}/r/n"),
            format!("/api/v1/namespaces/{b}/r/n"),
            format!("/api/v1/r/{b}"),
            format!("/api/v1/namespaces/ns/r/{b}"),
        ] {
            assert!(ContentPath::parse(&p).is_err(), "parse {p:?}");
            assert!(
                ContentPath::from_file_path(&format!("{}.yaml", &p[1..])).is_err(),
                "{p:?}"
            );
        }
    }
    assert!(validate_name("a.b-c_d:e@f").is_ok());
    assert!(validate_name(&"x".repeat(253)).is_ok());
}

#[test]
fn malformed_paths_are_rejected() {
    for p in [
        "api/v1/namespaces/x",
        "/api/v1/namespaces",
        "/api/v1/namespaces/ns/configmaps",
        "/api/v1/namespaces/ns/configmaps/x/y",
        "/apis//v1/r/n",
        "/foo/v1/r/n",
        "/api/v1/r/n/",
        "//api/v1/r/n",
    ] {
        assert!(ContentPath::parse(p).is_err(), "{p:?}");
    }
    for p in [
        "/api/v1/r/n.yaml",
        "api/v1/r/n",
        "api/v1/r/n.yml",
        ".k8s-snap/snapshot.yaml",
    ] {
        assert!(ContentPath::from_file_path(p).is_err(), "{p:?}");
    }
    let err = ContentPath::parse("/api/v1/namespaces/../x").expect_err("traversal");
    assert!(err.to_string().contains("/api/v1/namespaces/../x"), "{err}");
    assert!(serde_json::from_str::<ContentPath>("\"/api/v1/../x/y\"").is_err());
}

#[test]
fn object_files() {
    assert!(is_object_file("api/v1/namespaces/default.yaml"));
    assert!(is_object_file(
        "apis/apps/v1/namespaces/a/deployments/b.yaml"
    ));
    assert!(!is_object_file(".k8s-snap/snapshot.yaml"));
    assert!(!is_object_file("api/v1/namespaces/default.yml"));
    assert!(!is_object_file("README.md"));
    assert!(!is_object_file("apix/v1/x.yaml"));
}

// ------------------------------------------------------------------------------------------
// Canonical form

#[test]
fn canonicalize_strips_server_owned_fields() {
    let obj = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {
            "name": "w", "namespace": "ns", "uid": "u", "resourceVersion": "1", "generation": 2,
            "creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [], "selfLink": "/x",
            "deletionTimestamp": "2024-01-02T00:00:00Z", "deletionGracePeriodSeconds": 30,
            "labels": { "a": "b" }, "annotations": { "c": "d" }, "finalizers": ["f"],
            "ownerReferences": [{ "uid": "o" }],
        },
        "spec": { "size": 1 }, "status": { "ready": true },
    });
    let mut with_sub = obj.clone();
    canonicalize(&mut with_sub, true);
    let expected_meta = json!({
        "name": "w", "namespace": "ns", "labels": { "a": "b" }, "annotations": { "c": "d" },
        "finalizers": ["f"], "ownerReferences": [{ "uid": "o" }],
    });
    assert_eq!(with_sub["metadata"], expected_meta);
    assert!(with_sub.get("status").is_none());
    assert_eq!(with_sub["spec"], obj["spec"]);
    let mut without_sub = obj.clone();
    canonicalize(&mut without_sub, false);
    assert_eq!(without_sub["status"], obj["status"]);
    assert_eq!(without_sub["metadata"], expected_meta);
    let mut not_an_object = json!([1]);
    canonicalize(&mut not_an_object, true);
    assert_eq!(not_an_object, json!([1]));
}

#[test]
fn token_secrets_are_recognized() {
    let token = json!({ "apiVersion": "v1", "kind": "Secret",
        "type": "kubernetes.io/service-account-token", "metadata": { "name": "t" } });
    assert!(is_token_secret(&token));
    assert!(!is_token_secret(
        &json!({ "apiVersion": "v1", "kind": "Secret", "type": "Opaque" })
    ));
    assert!(!is_token_secret(
        &json!({ "apiVersion": "v1", "kind": "ConfigMap",
        "type": "kubernetes.io/service-account-token" })
    ));
}

// ------------------------------------------------------------------------------------------
// Fixtures

fn key_of(o: &Value) -> (String, String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&o["apiVersion"]),
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

fn check_fixture_invariants(objs: &[Value]) {
    let mut keys = BTreeSet::new();
    let uids: BTreeSet<&str> = objs
        .iter()
        .filter_map(|o| o["metadata"]["uid"].as_str())
        .collect();
    for o in objs {
        for field in [&o["apiVersion"], &o["kind"], &o["metadata"]["name"]] {
            assert!(
                field.as_str().is_some_and(|s| !s.is_empty()),
                "missing field in {o}"
            );
        }
        assert!(keys.insert(key_of(o)), "duplicate object {:?}", key_of(o));
        for owner in o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let uid = owner["uid"].as_str().expect("owner uid");
            assert!(
                uids.contains(uid),
                "dangling owner {uid} in {:?}",
                key_of(o)
            );
        }
    }
}

#[test]
fn realistic_fixture_is_valid_and_deterministic() {
    let objs = realistic::objects();
    assert!((60..=120).contains(&objs.len()), "{} objects", objs.len());
    check_fixture_invariants(&objs);
    assert_eq!(objs, realistic::objects());
    let uids: BTreeSet<&str> = objs
        .iter()
        .filter_map(|o| o["metadata"]["uid"].as_str())
        .collect();
    assert_eq!(uids.len(), objs.len(), "every object has a distinct uid");
    let count = |kind: &str| objs.iter().filter(|o| o["kind"] == kind).count();
    for (kind, min) in [
        ("Namespace", 2),
        ("Deployment", 3),
        ("ReplicaSet", 3),
        ("Pod", 5),
        ("DaemonSet", 1),
        ("StatefulSet", 1),
        ("Service", 3),
        ("Endpoints", 3),
        ("ConfigMap", 3),
        ("Secret", 3),
        ("ServiceAccount", 2),
        ("Ingress", 1),
        ("CronJob", 1),
        ("Role", 1),
        ("RoleBinding", 1),
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 2),
        ("PodDisruptionBudget", 1),
        ("HorizontalPodAutoscaler", 1),
        ("CustomResourceDefinition", 2),
        ("Widget", 2),
        ("Gadget", 1),
        ("StorageClass", 2),
        ("PersistentVolume", 3),
        ("PersistentVolumeClaim", 3),
    ] {
        assert!(count(kind) >= min, "{kind}: {} < {min}", count(kind));
    }
    assert!(objs.iter().any(is_token_secret));
    // Base objects of an empty cluster are not part of the fixture.
    for o in &objs {
        let (_, kind, _, name) = key_of(o);
        assert!(
            !(kind == "Namespace"
                && ["default", "kube-system", "kube-public", "kube-node-lease"]
                    .contains(&name.as_str())),
            "base namespace {name}"
        );
    }
    // Every bound PV/PVC pair points at each other.
    let by_key: BTreeMap<_, _> = objs.iter().map(|o| (key_of(o), o)).collect();
    for pv in objs.iter().filter(|o| o["kind"] == "PersistentVolume") {
        let claim = &pv["spec"]["claimRef"];
        let pvc = by_key
            .get(&(
                "v1".to_owned(),
                "PersistentVolumeClaim".to_owned(),
                claim["namespace"].as_str().expect("ns").to_owned(),
                claim["name"].as_str().expect("name").to_owned(),
            ))
            .expect("claimed PVC exists");
        assert_eq!(claim["uid"], pvc["metadata"]["uid"]);
        assert_eq!(pvc["spec"]["volumeName"], pv["metadata"]["name"]);
        assert_eq!(pv["status"]["phase"], "Bound");
        assert_eq!(pvc["status"]["phase"], "Bound");
    }
}

#[test]
fn yaml_laws_hold_for_every_fixture_object() {
    for o in realistic::objects()
        .iter()
        .chain(scale::objects(300).iter())
    {
        assert_laws(o);
        let mut c = o.clone();
        canonicalize(&mut c, true);
        assert_laws(&c);
    }
}

/// JSON text of `v` whose mappings list their keys in reverse order, each first preceded by a
/// `null` duplicate (which the later value overrides): the shapes a server may send.
fn scrambled_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .rev()
                .map(|(k, v)| {
                    let key = serde_json::to_string(k).expect("key");
                    format!("{key}:null,{key}:{}", scrambled_json(v))
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(scrambled_json).collect();
            format!("[{}]", parts.join(","))
        }
        scalar => serde_json::to_string(scalar).expect("scalar"),
    }
}

/// The snapshot hot path (borrowed nodes) writes the same bytes as the `Value` path.
fn assert_node_path_matches(v: &Value, has_status: bool) {
    let text = scrambled_json(v);
    // What the Value path decoded from the same text (floats need not survive the text).
    let mut value: Value = serde_json::from_str(&text).expect("valid JSON");
    let mut node: Node = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(is_token_secret_node(&node), is_token_secret(&value));
    canonicalize_node(&mut node, has_status);
    canonicalize(&mut value, has_status);
    assert_eq!(tree::emit(&node), emit(&value), "json: {text}");
}

#[test]
fn node_path_matches_value_path_for_every_fixture_object() {
    for o in realistic::objects()
        .iter()
        .chain(scale::objects(300).iter())
    {
        assert_node_path_matches(o, true);
        assert_node_path_matches(o, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn node_path_matches_value_path_for_generated_values(v in json_value()) {
        assert_node_path_matches(&v, false);
    }
}

#[test]
fn scale_fixture_has_exactly_n_objects() {
    for n in [0, 1, 7, 500, 1234] {
        let objs = scale::objects(n);
        assert_eq!(objs.len(), n);
        check_fixture_invariants(&objs);
        // Every namespaced object's namespace is among the objects.
        let namespaces: BTreeSet<&str> = objs
            .iter()
            .filter(|o| o["kind"] == "Namespace")
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        for o in &objs {
            if let Some(ns) = o["metadata"]["namespace"].as_str() {
                assert!(namespaces.contains(ns), "namespace {ns} missing");
            }
        }
    }
    assert_eq!(scale::objects(321), scale::objects(321));
    let big = scale::objects(5000);
    let ns = big.iter().filter(|o| o["kind"] == "Namespace").count();
    assert!((5..=20).contains(&ns), "{ns} namespaces");
    let kinds: BTreeSet<&str> = big.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(kinds.len() >= 5, "{kinds:?}");
}

// ------------------------------------------------------------------------------------------
// Golden files

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `actual` with `tests/golden/<name>` byte for byte; `UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).expect("create golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn golden_files_of_canonical_fixture_objects() {
    let objs = realistic::objects();
    let find = |kind: &str, ns: Option<&str>, name: &str| {
        objs.iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"].as_str() == ns
            })
            .unwrap_or_else(|| panic!("fixture has no {kind} {name}"))
            .clone()
    };
    let cases = [
        (
            "configmap-multiline.yaml",
            find("ConfigMap", Some("kube-system"), "coredns"),
            false,
        ),
        (
            "configmap-scripts.yaml",
            find("ConfigMap", Some("shop"), "api-scripts"),
            false,
        ),
        (
            "secret.yaml",
            find("Secret", Some("shop"), "api-credentials"),
            false,
        ),
        (
            "crd.yaml",
            find("CustomResourceDefinition", None, "widgets.example.com"),
            true,
        ),
        (
            "cr-with-status-subresource.yaml",
            find("Widget", Some("shop"), "widget-a"),
            true,
        ),
        (
            "cr-status-as-data.yaml",
            find("Gadget", None, "gadget-one"),
            false,
        ),
        (
            "service-nodeport.yaml",
            find("Service", Some("shop"), "frontend"),
            false,
        ),
    ];
    for (file, mut obj, has_status_subresource) in cases {
        canonicalize(&mut obj, has_status_subresource);
        let y = emit(&obj);
        assert!(obj["metadata"].get("uid").is_none(), "{file}: uid kept");
        check_golden(file, &y);
    }
}

#[test]
fn scale_fixture_is_cheap() {
    let start = std::time::Instant::now();
    let objs = scale::objects(50_000);
    let elapsed = start.elapsed();
    assert_eq!(objs.len(), 50_000);
    let ns = objs.iter().filter(|o| o["kind"] == "Namespace").count();
    assert_eq!(ns, 100);
    // Generous bound for unoptimized builds on a loaded machine; release is far faster.
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
    eprintln!("scale::objects(50_000) took {elapsed:?}");
}

// ------------------------------------------------------------------------------------------
// The fast reader of canonical documents inside `from_yaml` (src/tree/yaml_fast.rs) must read
// exactly what the general parser reads, and leave to it everything else (errors included).

fn assert_same_reading(doc: &str) -> Result<(), TestCaseError> {
    let general = tree::from_yaml_general(doc);
    match (from_yaml(doc), &general) {
        (Ok(a), Ok(b)) => prop_assert_eq!(&a, b, "{:?}", doc),
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string(), "{:?}", doc),
        (a, b) => prop_assert!(false, "{:?}: from_yaml {:?}, general {:?}", doc, a, b),
    }
    // The JSON text written straight from the YAML is the value's, byte for byte.
    let mut json = b"left over".to_vec();
    match (tree::yaml_to_json(doc, &mut json), &general) {
        (Ok(()), Ok(v)) => prop_assert_eq!(
            String::from_utf8(json).expect("utf-8"),
            serde_json::to_string(v).expect("json"),
            "{:?}",
            doc
        ),
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string(), "{:?}", doc),
        (a, b) => prop_assert!(false, "{:?}: yaml_to_json {:?}, general {:?}", doc, a, b),
    }
    Ok(())
}

#[test]
fn from_yaml_reads_fixture_objects_as_the_general_parser() {
    for o in realistic::objects()
        .iter()
        .chain(scale::objects(300).iter())
    {
        let y = emit(o);
        assert_eq!(from_yaml(&y).expect("fast"), *o, "{y}");
        assert_eq!(tree::from_yaml_general(&y).expect("general"), *o, "{y}");
        let mut json = Vec::new();
        tree::yaml_to_json(&y, &mut json).expect("json");
        assert_eq!(json, serde_json::to_vec(o).expect("json"), "{y}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn from_yaml_agrees_with_the_general_parser(
        v in json_value(),
        at in 0usize..4096,
        junk in prop::sample::select(vec![
            "\n", " ", "  ", "- ", ": ", ":", "#", " #x", "a: 1\n", "\"", "'", "|", "|-\n", "\t",
            "x", "\n  ", "\n- ", "&a ", "*a", "{", "[", "!", "-", "\\", "0", "1.5", "a:\n",
            "\n  \n", "---\n", "\r", "\u{85}", "~",
        ]),
    ) {
        // Canonical documents of objects (a root mapping: what the fast reader takes).
        let doc = emit(&json!({ "apiVersion": "v1", "kind": "K", "metadata": { "name": "n" }, "v": v }));
        assert_same_reading(&doc)?;
        assert_same_reading(&emit(&v))?;
        // The same with a small edit anywhere: most are no longer canonical, some not YAML.
        let mut at = at % (doc.len() + 1);
        while !doc.is_char_boundary(at) {
            at -= 1;
        }
        let mut edited = doc.clone();
        edited.insert_str(at, junk);
        assert_same_reading(&edited)?;
    }
}
