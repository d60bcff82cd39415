//! Snapshots of part of a cluster: the filter of `snapshot --include-namespaces ...` and of
//! the Snapshot spec fields of the same names (the recorded form is
//! [`crate::tree::SnapshotFilter`]).
//!
//! Owns: validating a filter (patterns, the label selector's syntax), choosing the resources
//! a snapshot lists (a resource pattern naming nothing the server serves is an error), where
//! each is listed (per namespace when the namespaces are a few exact names, else across all
//! namespaces), and which listed objects are written. Pure: must not touch the cluster (the
//! pipeline sends the label selector to the server with every LIST) or the mirror.

use crate::discovery::ApiResourceInfo;
use crate::glob;
use crate::tree::SnapshotFilter;

/// At most this many exact namespace names are listed namespace by namespace; more (or any
/// glob) lists each resource across all namespaces and drops the other namespaces' objects.
const PER_NAMESPACE_LISTS_MAX: usize = 4;

/// Why a snapshot filter is not valid; each names the field (flag) and the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A namespace or resource pattern is not valid.
    #[error("{field} {pattern:?}: {reason}")]
    Pattern {
        /// The field (`includeNamespaces`, ...).
        field: &'static str,
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The label selector is not valid.
    #[error("labelSelector {selector:?}: {reason}")]
    Selector {
        /// The selector as given.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A resource pattern matches no resource the server serves (a typo would otherwise
    /// give an empty, or a too large, snapshot).
    #[error(
        "{field} {pattern:?}: no resource the server serves matches (give a plural like configmaps, plural.group like deployments.apps, a kind, or a glob like *.example.com)"
    )]
    Unserved {
        /// The field (`includeResources` or `excludeResources`).
        field: &'static str,
        /// The pattern.
        pattern: String,
    },
    /// The filter leaves no resource to list (e.g. only cluster-scoped resources asked for
    /// while a namespace filter leaves cluster-scoped objects out).
    #[error(
        "the filter leaves no resource to list ({filter}); cluster-scoped resources need --include-cluster-resources true with a namespace filter"
    )]
    NothingSelected {
        /// The filter, as `snapshot` flags.
        filter: String,
    },
}

/// A validated snapshot filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    spec: SnapshotFilter,
}

impl Filter {
    /// Validates `spec` (patterns not empty, the label selector's syntax).
    pub fn new(spec: &SnapshotFilter) -> Result<Filter, FilterError> {
        let mut spec = spec.clone();
        for (field, list) in [
            ("includeNamespaces", &mut spec.include_namespaces),
            ("excludeNamespaces", &mut spec.exclude_namespaces),
            ("includeResources", &mut spec.include_resources),
            ("excludeResources", &mut spec.exclude_resources),
        ] {
            for p in list.iter_mut() {
                *p = p.trim().to_string();
                check_pattern(field, p)?;
            }
        }
        spec.label_selector = spec
            .label_selector
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(s) = &spec.label_selector {
            validate_label_selector(s).map_err(|reason| FilterError::Selector {
                selector: s.clone(),
                reason,
            })?;
        }
        Ok(Filter { spec })
    }

    /// The filter as recorded in `.k8s-snap/snapshot.yaml`: `None` for the whole cluster.
    pub fn recorded(&self) -> Option<SnapshotFilter> {
        (!self.spec.is_whole_cluster()).then(|| self.spec.clone())
    }

    /// The label selector sent with every LIST.
    pub fn label_selector(&self) -> Option<&str> {
        self.spec.label_selector.as_deref()
    }

    /// Whether objects of `namespace` are snapshotted.
    pub fn namespace_selected(&self, namespace: &str) -> bool {
        let any = |list: &[String]| list.iter().any(|p| glob::matches(p, namespace, None));
        (self.spec.include_namespaces.is_empty() || any(&self.spec.include_namespaces))
            && !any(&self.spec.exclude_namespaces)
    }

    /// Whether cluster-scoped objects (other than Namespaces, which follow the namespace
    /// filter) are snapshotted: `auto` = only when no namespace filter is given.
    pub fn cluster_resources(&self) -> bool {
        self.spec.include_cluster_resources.unwrap_or(
            self.spec.include_namespaces.is_empty() && self.spec.exclude_namespaces.is_empty(),
        )
    }

    /// The resources to list out of `served` (the resources a snapshot would list): the
    /// resource patterns applied, cluster-scoped resources dropped unless
    /// [`Filter::cluster_resources`] (Namespaces stay). Every pattern must match a resource
    /// of `served`.
    pub fn resources(
        &self,
        served: &[ApiResourceInfo],
    ) -> Result<Vec<ApiResourceInfo>, FilterError> {
        for (field, list) in [
            ("includeResources", &self.spec.include_resources),
            ("excludeResources", &self.spec.exclude_resources),
        ] {
            if let Some(p) = list
                .iter()
                .find(|p| !served.iter().any(|r| resource_matches(p, r)))
            {
                return Err(FilterError::Unserved {
                    field,
                    pattern: p.clone(),
                });
            }
        }
        let cluster = self.cluster_resources();
        let selected: Vec<ApiResourceInfo> = served
            .iter()
            .filter(|r| {
                let any = |list: &[String]| list.iter().any(|p| resource_matches(p, r));
                (self.spec.include_resources.is_empty() || any(&self.spec.include_resources))
                    && !any(&self.spec.exclude_resources)
                    && (r.namespaced || cluster || is_namespaces(r))
            })
            .cloned()
            .collect();
        if selected.is_empty() {
            return Err(FilterError::NothingSelected {
                filter: self.spec.describe(),
            });
        }
        Ok(selected)
    }

    /// The namespaces a namespaced resource is listed in, one LIST each, when that is cheap
    /// (a few exact names); `None`: list across all namespaces and keep the selected ones.
    pub fn list_namespaces(&self) -> Option<Vec<String>> {
        let names = &self.spec.include_namespaces;
        if names.is_empty()
            || names.len() > PER_NAMESPACE_LISTS_MAX
            || !names.iter().all(|n| glob::is_literal(n))
        {
            return None;
        }
        let mut out: Vec<String> = names
            .iter()
            .filter(|n| self.namespace_selected(n))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        Some(out)
    }

    /// Whether a listed object of `r` (in `namespace`, named `name`) is written: its
    /// namespace selected; a Namespace object counts as being in itself.
    pub fn keeps(&self, r: &ApiResourceInfo, namespace: Option<&str>, name: &str) -> bool {
        if r.namespaced {
            namespace.is_none_or(|ns| self.namespace_selected(ns))
        } else if is_namespaces(r) {
            self.namespace_selected(name)
        } else {
            true
        }
    }
}

fn is_namespaces(r: &ApiResourceInfo) -> bool {
    r.group.is_empty() && r.resource == "namespaces"
}

fn check_pattern(field: &'static str, p: &str) -> Result<(), FilterError> {
    let bad = |reason: &str| FilterError::Pattern {
        field,
        pattern: p.to_string(),
        reason: reason.to_string(),
    };
    if p.is_empty() {
        return Err(bad("empty pattern"));
    }
    if p.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?');
    if let Some(c) = p.chars().find(|c| !allowed(*c)) {
        return Err(bad(&format!(
            "{c:?} is not allowed (letters, digits, '-', '.', and the globs '*' '?')"
        )));
    }
    Ok(())
}

/// Whether resource pattern `p` names `r`: its plural (`configmaps`, in any group), its
/// `plural.group` (`deployments.apps`, `*.example.com`), or its kind (`ConfigMap`, any case).
pub fn resource_matches(p: &str, r: &ApiResourceInfo) -> bool {
    let p = p.to_ascii_lowercase();
    if glob::matches(&p, &r.resource, None) || glob::matches(&p, &r.kind.to_ascii_lowercase(), None)
    {
        return true;
    }
    !r.group.is_empty() && glob::matches(&p, &format!("{}.{}", r.resource, r.group), None)
}

/// Checks the syntax of a Kubernetes label selector (`app=web,tier!=db`, `env in (a,b)`,
/// `!legacy`, `release`, `replicas>1`), as the API server parses it, so a typo is one clear
/// error before any request instead of a 400 from the first LIST.
pub fn validate_label_selector(selector: &str) -> Result<(), String> {
    for req in split_top(selector)? {
        let req = req.trim();
        if req.is_empty() {
            return Err("empty requirement (a stray ',')".into());
        }
        if let Some(key) = req.strip_prefix('!') {
            check_key(key.trim())?;
            continue;
        }
        // Set-based: `key in (a,b)` / `key notin (a,b)`.
        if let Some(open) = req.find('(') {
            let head = req[..open].trim_end();
            let (key, op) = head.rsplit_once(char::is_whitespace).ok_or_else(|| {
                format!("{req:?}: expected `key in (values)` or `key notin (values)`")
            })?;
            if op != "in" && op != "notin" {
                return Err(format!("{req:?}: unknown operator {op:?} (in, notin)"));
            }
            check_key(key.trim())?;
            let values = req[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| format!("{req:?}: missing ')'"))?;
            let values: Vec<&str> = values.split(',').map(str::trim).collect();
            if values.iter().all(|v| v.is_empty()) {
                return Err(format!("{req:?}: no values"));
            }
            for v in values {
                check_value(v)?;
            }
            continue;
        }
        // The first operator in the requirement (at one position, the longer: `==`, `!=`).
        let found = ["==", "!=", "=", ">", "<"]
            .iter()
            .filter_map(|o| req.find(o).map(|j| (j, *o)))
            .min_by_key(|(j, o)| (*j, std::cmp::Reverse(o.len())));
        match found {
            Some((i, op)) => {
                check_key(req[..i].trim())?;
                let value = req[i + op.len()..].trim();
                if op == ">" || op == "<" {
                    value
                        .parse::<i64>()
                        .map_err(|_| format!("{req:?}: {op} needs an integer value"))?;
                } else {
                    check_value(value)?;
                }
            }
            None => {
                if req.contains(char::is_whitespace) {
                    return Err(format!(
                        "{req:?}: expected an operator (=, ==, !=, in, notin)"
                    ));
                }
                check_key(req)?;
            }
        }
    }
    Ok(())
}

/// Splits on the commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

/// A label name part: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn check_name(part: &str, what: &str) -> Result<(), String> {
    let bytes = part.as_bytes();
    let ok = !part.is_empty()
        && part.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {part:?} is not valid (at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
        ))
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !ok {
                return Err(format!(
                    "label key prefix {prefix:?} is not a DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    check_name(name, "label key")
}

fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    check_name(v, "label value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, resource: &str, kind: &str, namespaced: bool) -> ApiResourceInfo {
        ApiResourceInfo {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            kind: kind.into(),
            namespaced,
            verbs: vec!["list".into()],
            has_status_subresource: false,
        }
    }

    fn served() -> Vec<ApiResourceInfo> {
        vec![
            res("", "namespaces", "Namespace", false),
            res("", "configmaps", "ConfigMap", true),
            res("", "secrets", "Secret", true),
            res("", "nodes", "Node", false),
            res("apps", "deployments", "Deployment", true),
            res("example.com", "widgets", "Widget", true),
            res(
                "rbac.authorization.k8s.io",
                "clusterroles",
                "ClusterRole",
                false,
            ),
        ]
    }

    fn names(rs: Vec<ApiResourceInfo>) -> Vec<String> {
        rs.into_iter().map(|r| r.resource).collect()
    }

    fn filter(f: SnapshotFilter) -> Filter {
        Filter::new(&f).expect("valid")
    }

    #[test]
    fn a_namespace_filter_drops_cluster_resources_unless_asked() {
        let f = filter(SnapshotFilter {
            include_namespaces: vec!["shop".into()],
            exclude_resources: vec!["secrets".into()],
            ..Default::default()
        });
        assert!(!f.cluster_resources());
        assert_eq!(
            names(f.resources(&served()).unwrap()),
            ["namespaces", "configmaps", "deployments", "widgets"]
        );
        assert_eq!(f.list_namespaces(), Some(vec!["shop".to_string()]));
        let ns = &served()[0];
        assert!(f.keeps(ns, None, "shop") && !f.keeps(ns, None, "blog"));
        assert!(f.recorded().is_some());

        let with_cluster = filter(SnapshotFilter {
            include_namespaces: vec!["shop".into()],
            include_cluster_resources: Some(true),
            ..Default::default()
        });
        assert!(names(with_cluster.resources(&served()).unwrap()).contains(&"nodes".to_string()));
        let whole = filter(SnapshotFilter::default());
        assert!(whole.cluster_resources() && whole.recorded().is_none());
        assert_eq!(whole.resources(&served()).unwrap().len(), served().len());
        assert_eq!(whole.list_namespaces(), None);
        let none = filter(SnapshotFilter {
            include_cluster_resources: Some(false),
            ..Default::default()
        });
        assert!(none.recorded().is_some());
        assert_eq!(
            names(none.resources(&served()).unwrap()),
            [
                "namespaces",
                "configmaps",
                "secrets",
                "deployments",
                "widgets"
            ]
        );
    }

    #[test]
    fn resource_patterns() {
        let r = served();
        let m = |p: &str| -> Vec<String> {
            r.iter()
                .filter(|x| resource_matches(p, x))
                .map(|x| x.resource.clone())
                .collect()
        };
        assert_eq!(m("configmaps"), ["configmaps"]);
        assert_eq!(m("deployments.apps"), ["deployments"]);
        assert_eq!(m("*.example.com"), ["widgets"]);
        assert_eq!(m("ConfigMap"), ["configmaps"]);
        assert_eq!(m("*.rbac.authorization.k8s.io"), ["clusterroles"]);
        assert!(m("deployments.extensions").is_empty());
        let f = filter(SnapshotFilter {
            include_resources: vec!["configmaps".into(), "confimgaps".into()],
            ..Default::default()
        });
        let e = f.resources(&r).unwrap_err();
        assert_eq!(
            e,
            FilterError::Unserved {
                field: "includeResources",
                pattern: "confimgaps".into()
            }
        );
        assert!(
            e.to_string().starts_with(
                "includeResources \"confimgaps\": no resource the server serves matches"
            )
        );
        let f = filter(SnapshotFilter {
            exclude_resources: vec!["secret.v1".into()],
            ..Default::default()
        });
        assert!(
            f.resources(&r).is_err(),
            "an exclusion naming nothing is an error too"
        );
        // Served, but left out by the namespace filter: nothing to list is an error too.
        let f = filter(SnapshotFilter {
            include_namespaces: vec!["shop".into()],
            include_resources: vec!["nodes".into()],
            ..Default::default()
        });
        let e = f.resources(&r).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "the filter leaves no resource to list (--include-namespaces shop --include-resources nodes)"
            ),
            "{e}"
        );
    }

    #[test]
    fn namespace_globs_list_across_namespaces() {
        let f = filter(SnapshotFilter {
            include_namespaces: vec!["team-*".into()],
            exclude_namespaces: vec!["team-old".into()],
            ..Default::default()
        });
        assert_eq!(f.list_namespaces(), None);
        assert!(f.namespace_selected("team-a"));
        assert!(!f.namespace_selected("team-old"));
        assert!(!f.namespace_selected("shop"));
        let cm = &served()[1];
        assert!(f.keeps(cm, Some("team-a"), "x") && !f.keeps(cm, Some("shop"), "x"));
        let excluded_only = filter(SnapshotFilter {
            exclude_namespaces: vec!["kube-system".into()],
            ..Default::default()
        });
        assert!(!excluded_only.cluster_resources());
        assert_eq!(excluded_only.list_namespaces(), None);
        // An included namespace that is also excluded is not listed.
        let both = filter(SnapshotFilter {
            include_namespaces: vec!["a".into(), "b".into()],
            exclude_namespaces: vec!["b".into()],
            ..Default::default()
        });
        assert_eq!(both.list_namespaces(), Some(vec!["a".to_string()]));
    }

    #[test]
    fn bad_patterns_name_the_field() {
        let e = Filter::new(&SnapshotFilter {
            include_namespaces: vec!["shop/x".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("includeNamespaces \"shop/x\": '/' is not allowed"),
            "{e}"
        );
        let e = Filter::new(&SnapshotFilter {
            exclude_resources: vec![" ".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("excludeResources \"\": empty pattern"),
            "{e}"
        );
    }

    #[test]
    fn label_selectors() {
        for ok in [
            "app=web",
            "app = web",
            "app==web,tier!=db",
            "env in (prod, staging),!legacy",
            "env notin (a)",
            "release",
            "example.com/color=red",
            "app.kubernetes.io/part-of=shop",
            "app=",
            "replicas>1",
            "x<-2",
        ] {
            assert_eq!(validate_label_selector(ok), Ok(()), "{ok}");
        }
        for bad in [
            "app=web,",
            "app=we b",
            "-app=web",
            "app in prod",
            "env in (a",
            "env in ()",
            "env within (a)",
            "Example.com/x=y",
            "app=web)",
            "replicas>one",
            "app web",
        ] {
            assert!(validate_label_selector(bad).is_err(), "{bad} accepted");
        }
        let e = Filter::new(&SnapshotFilter {
            label_selector: Some("app=we b".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("labelSelector \"app=we b\": label value"),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Selectors built from valid parts are accepted, and no input panics.
        #[test]
        fn built_selectors_are_valid(
            reqs in proptest::collection::vec(("[a-z][a-z0-9-]{0,10}[a-z0-9]", "[a-z0-9]{0,8}", 0..5usize), 1..4)
        ) {
            let s: Vec<String> = reqs.iter().map(|(k, v, op)| match op {
                0 => format!("{k}={v}"),
                1 => format!("{k} != {v}"),
                2 => format!("{k} in ({v}, x)"),
                3 => format!("!{k}"),
                _ => k.clone(),
            }).collect();
            let s = s.join(",");
            proptest::prop_assert_eq!(validate_label_selector(&s), Ok(()), "{}", s);
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = validate_label_selector(&s);
        }
    }
}
