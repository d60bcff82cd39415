//! The architecture's invariants as a test (in the style of rust-analyzer's tidy checks): the
//! layering ARCHITECTURE.md states is checked on every source file, so prose cannot drift.

use std::path::{Path, PathBuf};

/// Where a crate or construct may be used: path prefixes relative to the repository root.
struct Rule {
    what: &'static str,
    needles: &'static [&'static str],
    allowed: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        what: "git2 (only the mirror talks to git)",
        needles: &["git2::", "use git2"],
        allowed: &["src/mirror/"],
    },
    Rule {
        what: "the AWS SDK (only the S3 store)",
        needles: &["aws_sdk_", "aws_config", "aws_smithy"],
        allowed: &["src/store/s3.rs"],
    },
    Rule {
        what: "kube / k8s-openapi (only the cluster layer and the controller)",
        needles: &["kube::", "use kube", "k8s_openapi"],
        allowed: &["src/cluster.rs", "src/discovery.rs", "src/controller/"],
    },
    Rule {
        what: "printing (only the CLI prints; the library writes to a `dyn Write` or logs)",
        needles: &[
            "println!",
            "eprintln!",
            "print!(",
            "eprint!(",
            "dbg!(",
            "std::io::stdout",
            "std::io::stderr",
        ],
        allowed: &["src/cli/", "src/main.rs"],
    },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A line with the contents of its string literals removed (a log filter naming a crate is
/// not a use of it).
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
                out.push(c);
            }
        } else {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out
}

/// The violations in one file (`rel` is its path from the repository root).
fn check(rel: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if rel.starts_with("src/") && !text.starts_with("//!") {
        problems.push(format!(
            "{rel}: no `//!` header saying what the module owns and must not touch"
        ));
    }
    let code_lines = text.lines().enumerate().filter(|(_, l)| {
        let t = l.trim_start();
        !(t.starts_with("//") || t.starts_with("*") || t.starts_with("/*"))
    });
    for (n, line) in code_lines {
        let line = &without_strings(line);
        for rule in RULES {
            if rule.allowed.iter().any(|a| rel.starts_with(a)) {
                continue;
            }
            if let Some(needle) = rule.needles.iter().find(|nd| line.contains(**nd)) {
                problems.push(format!(
                    "{rel}:{}: `{needle}` outside its layer: {}",
                    n + 1,
                    rule.what
                ));
            }
        }
    }
    problems
}

#[test]
fn layering_and_module_headers_hold_in_src() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        problems.extend(check(&rel, &std::fs::read_to_string(f).unwrap()));
    }
    assert!(problems.is_empty(), "tidy:\n{}", problems.join("\n"));
}

#[test]
fn the_checks_catch_what_they_forbid() {
    let planted = "//! restore\nuse git2::Repository;\nfn f() { println!(\"x\"); }\n";
    let found = check("src/restore/planted.rs", planted);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("git2") && found[1].contains("println!"));
    assert_eq!(check("src/mirror/x.rs", "//! m\nuse git2::Oid;\n").len(), 0);
    assert_eq!(check("src/x.rs", "fn f() {}\n").len(), 1, "missing header");
    // Comments and strings may name anything.
    assert!(
        check(
            "src/cli2/z.rs",
            "//! z\nconst F: &str = \"aws_config=off\";\n"
        )
        .is_empty()
    );
    assert!(check("src/restore/y.rs", "//! y\n// git2:: is not used here\n").is_empty());
}

#[test]
fn no_project_file_points_outside_the_repository() {
    let root = root();
    let mut offenders = Vec::new();
    let mut stack: Vec<PathBuf> = ["src", "docs", "tests", "deploy", "examples", "crates"]
        .iter()
        .map(|d| root.join(d))
        .chain(
            ["README.md", "ARCHITECTURE.md"]
                .iter()
                .map(|f| root.join(f)),
        )
        .collect();
    let needle = ["..", "/shared"].concat();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if p.ends_with("target") {
                continue;
            }
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if let Ok(text) = std::fs::read_to_string(&p)
            && text.contains(&needle)
        {
            offenders.push(p.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "files pointing outside the repository: {offenders:?}"
    );
}

/// Every flag `k8s-snap <command> --help` shows is named in docs/cli.md, so the reference
/// cannot fall behind the command line.
#[test]
fn docs_cli_md_names_every_flag() {
    let doc = std::fs::read_to_string(root().join("docs/cli.md")).unwrap();
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_k8s-snap"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "k8s-snap {args:?} --help failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let flags = |text: &str| -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            let t = line.trim_start();
            let t = t
                .strip_prefix('-')
                .filter(|r| r.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
                .map_or(t, |r| r[1..].trim_start_matches(", "));
            if let Some(rest) = t.strip_prefix("--") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                found.push(format!("--{name}"));
            }
            // Aliases clap shows as `[alias: --x]` or `[aliases: --x, --y]`.
            if let Some(i) = t.find("[alias") {
                for a in t[i..].split("--").skip(1) {
                    let name: String = a
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    found.push(format!("--{name}"));
                }
            }
        }
        found
    };
    let commands: Vec<String> = help(&["--help"])
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 14, "commands: {commands:?}");
    let mut missing = Vec::new();
    let global = flags(&help(&["--help"]));
    for f in &global {
        if !doc.contains(&format!("`{f}")) && !doc.contains(&format!("[{f}")) {
            missing.push(format!("global {f}"));
        }
    }
    for c in &commands {
        for f in flags(&help(&[c.as_str(), "--help"])) {
            if global.contains(&f) {
                continue;
            }
            if !doc.contains(&format!("`{f}")) && !doc.contains(&format!("[{f}")) {
                missing.push(format!("{c} {f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags missing from docs/cli.md: {missing:?}"
    );
}
