//! Glob patterns as users write them in filters: `*` (any run of characters), `?` (one
//! character), and, where a separator is given, `*` staying within one segment and `**`
//! crossing segments (content paths: `/api/v1/namespaces/shop/configmaps/*`,
//! `/apis/**/namespaces/shop/**`).
//!
//! Owns: matching one pattern against one string. Pure; must not touch anything else (the
//! snapshot filter and the restore selection decide what their patterns mean).

/// Whether `pattern` has a glob metacharacter (`*` or `?`); a pattern without one matches
/// only itself.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

/// Whether `text` matches `pattern`. With `separator`, `*` and `?` never match it and `**`
/// matches any run of characters, separators included; without, `*` and `**` are the same.
pub fn matches(pattern: &str, text: &str, separator: Option<char>) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    matches_from(&p, &t, separator)
}

fn matches_from(p: &[char], t: &[char], sep: Option<char>) -> bool {
    // Dynamic programming over (pattern index, text index): patterns and texts are short
    // (names, paths), so O(|p|·|t|) is fine and never backtracks exponentially.
    let (n, m) = (p.len(), t.len());
    let mut cur = vec![false; m + 1];
    cur[0] = true;
    let mut i = 0;
    while i < n {
        let mut next = vec![false; m + 1];
        match p[i] {
            '*' => {
                let double = i + 1 < n && p[i + 1] == '*';
                let crosses = double || sep.is_none();
                // next[j] = exists k <= j with cur[k] and t[k..j] free of separators (unless
                // the star crosses them).
                let mut reachable = false;
                for j in 0..=m {
                    if cur[j] {
                        reachable = true;
                    }
                    next[j] = reachable;
                    if j < m && !crosses && Some(t[j]) == sep {
                        reachable = false;
                    }
                }
                if double {
                    i += 1;
                }
            }
            '?' => {
                for j in 0..m {
                    if cur[j] && Some(t[j]) != sep {
                        next[j + 1] = true;
                    }
                }
            }
            c => {
                for j in 0..m {
                    if cur[j] && t[j] == c {
                        next[j + 1] = true;
                    }
                }
            }
        }
        cur = next;
        i += 1;
    }
    cur[m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_separators() {
        assert!(matches("shop", "shop", None));
        assert!(!matches("shop", "shop-copy", None));
        assert!(matches("shop*", "shop-copy", None));
        assert!(matches("*.example.com", "widgets.example.com", None));
        assert!(!matches("*.example.com", "widgets.example.org", None));
        assert!(matches("team-?", "team-a", None));
        assert!(!matches("team-?", "team-ab", None));
        let sep = Some('/');
        assert!(matches(
            "/api/v1/namespaces/shop/configmaps/*",
            "/api/v1/namespaces/shop/configmaps/a",
            sep
        ));
        assert!(!matches(
            "/api/v1/namespaces/*/configmaps",
            "/api/v1/namespaces/a/b/configmaps",
            sep
        ));
        assert!(matches(
            "/api/**/configmaps/*",
            "/api/v1/namespaces/a/configmaps/x",
            sep
        ));
        assert!(matches(
            "/apis/**",
            "/apis/apps/v1/namespaces/a/deployments/d",
            sep
        ));
        assert!(!matches(
            "/api/v1/namespaces/shop/*",
            "/api/v1/namespaces/shop/configmaps/a",
            sep
        ));
        assert!(matches("**", "", sep));
        assert!(matches("*", "", None));
        assert!(!matches("?", "", None));
        assert!(is_literal("shop") && !is_literal("sh*p") && !is_literal("a?"));
    }

    /// The reference: a naive recursive matcher.
    fn reference(p: &[char], t: &[char], sep: Option<char>) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => {
                let double = p.get(1) == Some(&'*');
                let rest = if double { &p[2..] } else { &p[1..] };
                (0..=t.len()).any(|k| {
                    (double || sep.is_none() || !t[..k].iter().any(|c| Some(*c) == sep))
                        && reference(rest, &t[k..], sep)
                })
            }
            Some('?') => !t.is_empty() && Some(t[0]) != sep && reference(&p[1..], &t[1..], sep),
            Some(c) => t.first() == Some(c) && reference(&p[1..], &t[1..], sep),
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_reference(p in "[ab/*?]{0,8}", t in "[ab/]{0,10}", with_sep in proptest::bool::ANY) {
            let sep = with_sep.then_some('/');
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            proptest::prop_assert_eq!(matches(&p, &t, sep), reference(&pc, &tc, sep), "{:?} {:?}", p, t);
        }

        #[test]
        fn a_literal_matches_itself(t in "[a-z0-9./-]{0,20}") {
            proptest::prop_assert!(matches(&t, &t, Some('/')));
            proptest::prop_assert!(matches(&t, &t, None));
        }
    }
}
