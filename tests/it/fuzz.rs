//! Property tests ("fuzz targets") over every parser that reads untrusted or user input: the
//! command line's value parsers (through clap, as a user types them), durations and TTLs, store
//! URLs, the preference parser, the manifest parser and the tree reader. None may panic.
//!
//! Bounded for CI: `K8S_SNAP_FUZZ_CASES` cases per target (default 256, a few seconds in
//! all); a longer local run: `K8S_SNAP_FUZZ_CASES=200000 cargo test --test it fuzz::`.

use clap::Parser as _;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("K8S_SNAP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that look like what the parsers expect, and noise.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(ns|us|ms|s|m|h|d|w|y|M)?",
        "[0-9]{1,12}h[0-9]{0,3}m[0-9]{0,3}s",
        "-?[0-9.eE+-]{0,12}",
        "(s3|file|http|https)://[a-zA-Z0-9./@:_-]{0,40}",
        "\\PC{0,40}",
        "[a-z0-9.-]{0,260}",
    ]
}

/// YAML-ish documents: structure with hostile scalars, anchors, tags and deep nesting.
fn yaml_doc() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        "[a-zA-Z0-9 _./:-]{0,20}",
        "\"[^\"\\\\]{0,10}\"",
        Just("&a [*a, *a]".to_owned()),
        Just("!!binary aGk=".to_owned()),
        Just("{".to_owned()),
        Just("- - - -".to_owned()),
        "\\PC{0,12}",
    ];
    let line = (
        "[ ]{0,6}",
        prop_oneof![
            "[a-zA-Z]{1,12}",
            Just("- ".to_owned()),
            Just("? ".to_owned())
        ],
        scalar,
    )
        .prop_map(|(indent, key, value)| format!("{indent}{key}: {value}\n"));
    proptest::collection::vec(line, 0..30).prop_map(|lines| lines.concat())
}

/// JSON manifests: mostly valid shapes with hostile names and numbers.
fn manifest_doc() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        "[a-z0-9.-]{0,70}",
        Just("../../etc".to_owned()),
        Just("a".repeat(300)),
        "\\PC{0,10}",
    ];
    let sha = prop_oneof!["[0-9a-f]{64}", "[0-9a-zA-Z./]{0,70}"];
    (name.clone(), name, sha, any::<u64>(), any::<i64>(), any::<u32>()).prop_map(
        |(snap, cluster, sha, n, t, fv)| {
            let text = format!(
                r#"{{"formatVersion": {fv}, "generation": {n}, "packs": {{"{sha}": {{"size": {n}, "idxSize": 1, "objects": 1, "created": "2026-01-01T00:00:00Z"}}}}, "snapshots": {{"{snap}": {{"commit": "{sha}", "cluster": "{cluster}", "timestamp": "{t}", "resourceVersion": "1", "numberOfContents": {n}, "availableUntil": "9999-12-31T23:59:59Z", "packs": ["{sha}"]}}}}}}"#,
            );
            text.into_bytes()
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cli_value_parsers_never_panic(v in value(), w in value()) {
        let (ns, retry) = (format!("-namespace={v}"), format!("--maxretryelapsedsec={w}"));
        let argvs: Vec<Vec<&str>> = vec![
            vec!["k8s-snap", "snapshot", &v, "--ttl", &w],
            vec!["k8s-snap", "snapshot", "s", "--available-until", &v, "--threads", &w],
            vec!["k8s-snap", "list", "--request-timeout", &v, "--retry-attempts", &w],
            vec!["k8s-snap", "gc", "--grace", &v, "--repack-threshold", &w],
            vec!["k8s-snap", "push", &v, "--retry-budget", &w, "--connect-timeout", &v],
            vec!["k8s-snap", "restore", &v, "--threads", &w, "--wait-timeout", &v],
            vec!["k8s-snap", "watch", "--interval", &v],
            vec!["k8s-snap", "controller", &ns, &retry],
        ];
        for argv in argvs {
            let _ = crate::k8s_snap_cli::Cli::try_parse_from(
                crate::k8s_snap_cli::controller::go_style_args(argv.iter().map(std::ffi::OsString::from)),
            );
        }
        let _ = crate::k8s_snap_cli::parse_limit(&v);
        let _ = k8s_snap::duration::parse_duration(&v);
        for now in [jiff::Timestamp::MIN, jiff::Timestamp::now(), jiff::Timestamp::MAX] {
            if let Ok(d) = k8s_snap::duration::parse_ttl(&v, now) {
                // Accepted: then the expiry is representable.
                let sd = jiff::SignedDuration::try_from(d).unwrap();
                prop_assert!(now.checked_add(sd).is_ok());
            }
        }
        let _ = v.parse::<k8s_snap::store::StoreUrl>();
    }

    #[test]
    fn preference_parser_never_panics(doc in yaml_doc(), prefix in prop_oneof![
        Just(String::new()),
        Just("apiVersion: clustersnapshot.rywt.io/v1alpha1\nkind: RestorePreference\nspec:\n".to_owned()),
    ]) {
        let _ = k8s_snap::restore::preference::Preference::from_yaml(&format!("{prefix}{doc}"), "fuzz");
    }

    #[test]
    fn manifest_parser_never_panics_and_round_trips(doc in manifest_doc(), noise in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(m) = k8s_snap::store::Manifest::parse(&doc) {
            let again = k8s_snap::store::Manifest::parse(&m.to_bytes());
            prop_assert_eq!(again.as_ref(), Ok(&m));
        }
        let _ = k8s_snap::store::Manifest::parse(&noise);
    }

    #[test]
    fn tree_reader_never_panics(doc in yaml_doc(), path in "[a-z0-9./-]{0,60}") {
        let _ = k8s_snap::tree::from_yaml(&doc);
        let _ = k8s_snap::tree::from_yaml_str::<k8s_snap::tree::SnapshotMeta>(&doc);
        let _ = k8s_snap::tree::identity::read_identity(doc.as_bytes());
        let _ = k8s_snap::tree::secret::mask_yaml(&doc);
        if let Ok(p) = k8s_snap::tree::ContentPath::from_file_path(&path) {
            let _ = k8s_snap::tree::identity::check_identity(&p, doc.as_bytes(), Some("Kind"));
        }
        let _ = k8s_snap::tree::ContentPath::parse(&path);
    }
}
