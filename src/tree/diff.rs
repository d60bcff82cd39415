//! Unified diffs between two canonical YAML documents (used by `diff` and restore plans).

use std::time::Duration;

use similar::TextDiff;

/// Lines of context around each hunk, as `git diff` and `kubectl diff` use.
const CONTEXT_LINES: usize = 3;

/// A diff gives up finding the minimal edit script after this long and approximates, so a
/// huge object (a multi-megabyte ConfigMap) never stalls a command.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);

/// The unified diff of `old` → `new` with `--- label_old` / `+++ label_new` headers; empty
/// when both are equal.
pub fn unified_diff(old: &str, new: &str, label_old: &str, label_new: &str) -> String {
    if old == new {
        return String::new();
    }
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new);
    diff.unified_diff()
        .context_radius(CONTEXT_LINES)
        .header(label_old, label_new)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_give_no_diff() {
        assert_eq!(unified_diff("a: 1\n", "a: 1\n", "x", "y"), "");
    }

    #[test]
    fn changed_line_is_shown_with_headers() {
        let d = unified_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n", "snapA/x", "snapB/x");
        assert!(d.starts_with("--- snapA/x\n+++ snapB/x\n"), "{d}");
        assert!(d.contains("-b: 2\n+b: 3\n"), "{d}");
    }
}
