//! The retention policy of snapshots (`keepLast`, `keepHourly`, `keepDaily`, `keepWeekly`,
//! `keepMonthly`): which snapshots a policy keeps and why, with restic's documented `forget`
//! semantics. One implementation shared by `k8s-snap prune` and the controller's
//! SnapshotSchedules.
//!
//! Owns: the pure decision (snapshots in, keep/remove with reasons out). Must not touch: the
//! mirror, the store or the cluster — callers delete what it says to remove.
//!
//! The rules, as restic documents them: `keepLast n` keeps the `n` newest snapshots; `keepHourly
//! n` keeps, for each of the last `n` hours that have one or more snapshots, the newest
//! snapshot of that hour; likewise days, ISO weeks and months. Times are bucketed in the
//! given time zone. A snapshot kept by several rules lists them all. On top of restic:
//!
//! - only `Completed` snapshots fill the buckets; the newest `Completed` snapshot is always kept;
//! - a `Failed` snapshot is removed once a newer `Completed` one exists, kept until then;
//! - a snapshot still running (neither state) is always kept;
//! - a policy with no rule is refused (it would remove everything).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// How many snapshots each rule keeps (0: the rule is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Keep the `n` newest snapshots.
    #[serde(default)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last `n` hours that have one.
    #[serde(default)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last `n` days that have one.
    #[serde(default)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last `n` ISO weeks that have one.
    #[serde(default)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last `n` months that have one.
    #[serde(default)]
    pub keep_monthly: u32,
}

impl Policy {
    /// Whether no rule is on.
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n)| *n == 0)
    }

    fn rules(&self) -> [(Rule, u32); 5] {
        [
            (Rule::Last, self.keep_last),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
        ]
    }
}

/// A rule of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `keepLast`.
    Last,
    /// `keepHourly`.
    Hourly,
    /// `keepDaily`.
    Daily,
    /// `keepWeekly`.
    Weekly,
    /// `keepMonthly`.
    Monthly,
}

impl Rule {
    /// The bucket of `t` for this rule (`None` for `Last`: every snapshot is its own bucket).
    /// Keys grow with local time, so a newest-first walk meets each bucket in one run.
    fn bucket(self, t: Timestamp, tz: &TimeZone) -> Option<i64> {
        let z = t.to_zoned(tz.clone());
        let (y, m, d, h) = (
            i64::from(z.year()),
            i64::from(z.month()),
            i64::from(z.day()),
            i64::from(z.hour()),
        );
        match self {
            Rule::Last => None,
            Rule::Hourly => Some(((y * 100 + m) * 100 + d) * 100 + h),
            Rule::Daily => Some((y * 100 + m) * 100 + d),
            Rule::Weekly => {
                let w = z.date().iso_week_date();
                Some(i64::from(w.year()) * 100 + i64::from(w.week()))
            }
            Rule::Monthly => Some(y * 100 + m),
        }
    }
}

/// The state of a snapshot as far as retention cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// The snapshot completed: it fills the rules' buckets.
    Completed,
    /// The snapshot failed: removed once a newer `Completed` one exists.
    Failed,
    /// Queued or in progress: never removed.
    Running,
}

/// A snapshot the policy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The snapshot's name.
    pub name: String,
    /// When it was taken.
    pub time: Timestamp,
    /// Its state.
    pub state: State,
}

/// Why a snapshot is kept or removed (serialized as its text: `daily`, `newest success`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Kept by a rule.
    Keep(Rule),
    /// Kept: the newest `Completed` snapshot is never removed.
    NewestSuccess,
    /// Kept: not finished yet.
    Running,
    /// Kept: a `Failed` snapshot with no newer success.
    FailedNoNewerSuccess,
    /// Removed: no rule keeps it.
    OutsidePolicy,
    /// Removed: a `Failed` snapshot followed by a success.
    FailedSuperseded,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Keep(Rule::Last) => "last",
            Reason::Keep(Rule::Hourly) => "hourly",
            Reason::Keep(Rule::Daily) => "daily",
            Reason::Keep(Rule::Weekly) => "weekly",
            Reason::Keep(Rule::Monthly) => "monthly",
            Reason::NewestSuccess => "newest success",
            Reason::Running => "not finished",
            Reason::FailedNoNewerSuccess => "failed, no newer success",
            Reason::OutsidePolicy => "outside the policy",
            Reason::FailedSuperseded => "failed, superseded by a success",
        })
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The decision on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot's name.
    pub name: String,
    /// When it was taken.
    pub time: Timestamp,
    /// Whether the policy keeps it (otherwise it is to be removed).
    pub keep: bool,
    /// Every reason that applies (all the rules that keep it), never empty.
    pub reasons: Vec<Reason>,
}

/// Errors of [`apply`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionError {
    /// The policy has no rule; it would remove every snapshot.
    #[error(
        "the retention policy has no rule (set at least one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly): refusing to remove every snapshot"
    )]
    EmptyPolicy,
}

/// Decides which of `items` `policy` keeps, bucketing times in `tz`. Returns one decision per
/// item, newest first (ties by name, descending).
pub fn apply(
    policy: &Policy,
    items: &[Item],
    tz: &TimeZone,
) -> Result<Vec<Decision>, RetentionError> {
    if policy.is_empty() {
        return Err(RetentionError::EmptyPolicy);
    }
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    // restic's walk: newest first; each rule with budget left keeps the first snapshot of each
    // bucket it meets (a new bucket value), and spends one of its budget.
    let mut budgets: Vec<(Rule, u32, Option<i64>)> = policy
        .rules()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r, n, None))
        .collect();
    let mut seen_success = false;
    let mut out = Vec::with_capacity(sorted.len());
    for item in sorted {
        let mut reasons = Vec::new();
        let keep = match item.state {
            State::Running => {
                reasons.push(Reason::Running);
                true
            }
            State::Failed if seen_success => {
                reasons.push(Reason::FailedSuperseded);
                false
            }
            State::Failed => {
                reasons.push(Reason::FailedNoNewerSuccess);
                true
            }
            State::Completed => {
                for (rule, left, last) in &mut budgets {
                    if *left == 0 {
                        continue;
                    }
                    let key = rule.bucket(item.time, tz);
                    if key.is_none() || key != *last {
                        *last = key;
                        *left -= 1;
                        reasons.push(Reason::Keep(*rule));
                    }
                }
                if !seen_success {
                    seen_success = true;
                    if reasons.is_empty() {
                        reasons.push(Reason::NewestSuccess);
                    }
                }
                if reasons.is_empty() {
                    reasons.push(Reason::OutsidePolicy);
                    false
                } else {
                    true
                }
            }
        };
        out.push(Decision {
            name: item.name.clone(),
            time: item.time,
            keep,
            reasons,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn item(name: &str, time: &str, state: State) -> Item {
        Item {
            name: name.into(),
            time: time.parse().unwrap(),
            state,
        }
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| d.name.as_str())
            .collect()
    }

    #[test]
    fn empty_policy_is_refused() {
        let items = [item("a", "2026-01-01T00:00:00Z", State::Completed)];
        assert_eq!(
            apply(&Policy::default(), &items, &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_days() {
        let items = [
            item("d1-a", "2026-03-01T08:00:00Z", State::Completed),
            item("d1-b", "2026-03-01T20:00:00Z", State::Completed),
            item("d2-a", "2026-03-02T08:00:00Z", State::Completed),
            item("d2-b", "2026-03-02T20:00:00Z", State::Completed),
            item("d4", "2026-03-04T08:00:00Z", State::Completed),
        ];
        let policy = Policy {
            keep_daily: 2,
            ..Policy::default()
        };
        let d = apply(&policy, &items, &TimeZone::UTC).unwrap();
        // Days without snapshots (03-03) do not count.
        assert_eq!(kept(&d), ["d4", "d2-b"]);
        assert_eq!(d[0].reasons, [Reason::Keep(Rule::Daily)]);
        let removed = d.iter().find(|d| d.name == "d1-b").unwrap();
        assert_eq!(removed.reasons, [Reason::OutsidePolicy]);
    }

    #[test]
    fn several_rules_are_all_listed() {
        let items = [
            item("a", "2026-03-01T08:00:00Z", State::Completed),
            item("b", "2026-03-02T08:00:00Z", State::Completed),
        ];
        let policy = Policy {
            keep_last: 1,
            keep_daily: 2,
            keep_monthly: 1,
            ..Policy::default()
        };
        let d = apply(&policy, &items, &TimeZone::UTC).unwrap();
        assert_eq!(
            d[0].reasons,
            [
                Reason::Keep(Rule::Last),
                Reason::Keep(Rule::Daily),
                Reason::Keep(Rule::Monthly)
            ]
        );
        assert_eq!(d[1].reasons, [Reason::Keep(Rule::Daily)]);
    }

    #[test]
    fn failed_and_running_snapshots() {
        let items = [
            item("old-fail", "2026-03-01T00:00:00Z", State::Failed),
            item("ok", "2026-03-01T01:00:00Z", State::Completed),
            item("new-fail", "2026-03-01T02:00:00Z", State::Failed),
            item("running", "2026-03-01T03:00:00Z", State::Running),
        ];
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let d = apply(&policy, &items, &TimeZone::UTC).unwrap();
        let by: BTreeMap<_, _> = d.iter().map(|d| (d.name.as_str(), d)).collect();
        assert!(by["running"].keep);
        assert!(by["new-fail"].keep, "no newer success yet");
        assert!(by["ok"].keep);
        assert!(!by["old-fail"].keep);
        assert_eq!(by["old-fail"].reasons, [Reason::FailedSuperseded]);
    }

    #[test]
    fn buckets_follow_the_time_zone() {
        // 23:30 UTC and 00:30 UTC are one day in New York (18:30 / 19:30).
        let items = [
            item("a", "2026-03-10T23:30:00Z", State::Completed),
            item("b", "2026-03-11T00:30:00Z", State::Completed),
        ];
        let policy = Policy {
            keep_daily: 5,
            ..Policy::default()
        };
        let utc = apply(&policy, &items, &TimeZone::UTC).unwrap();
        assert_eq!(kept(&utc).len(), 2);
        let ny = TimeZone::get("America/New_York").unwrap();
        let local = apply(&policy, &items, &ny).unwrap();
        assert_eq!(kept(&local), ["b"]);
    }

    /// restic's rules as its documentation states them, computed differently: group the
    /// successes by bucket, take the `n` newest buckets, keep the newest snapshot of each.
    fn reference(policy: &Policy, items: &[Item]) -> BTreeMap<String, BTreeSet<Reason>> {
        let mut out: BTreeMap<String, BTreeSet<Reason>> = BTreeMap::new();
        let mut ok: Vec<&Item> = items
            .iter()
            .filter(|i| i.state == State::Completed)
            .collect();
        ok.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
        for (rule, n) in policy.rules() {
            if n == 0 {
                continue;
            }
            if rule == Rule::Last {
                for i in ok.iter().take(n as usize) {
                    out.entry(i.name.clone())
                        .or_default()
                        .insert(Reason::Keep(rule));
                }
                continue;
            }
            let mut buckets: BTreeMap<i64, Vec<&Item>> = BTreeMap::new();
            for i in &ok {
                let key = rule.bucket(i.time, &TimeZone::UTC).unwrap();
                buckets.entry(key).or_default().push(i);
            }
            for (_, members) in buckets.iter().rev().take(n as usize) {
                let newest = members
                    .iter()
                    .max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.name.cmp(&b.name)))
                    .unwrap();
                out.entry(newest.name.clone())
                    .or_default()
                    .insert(Reason::Keep(rule));
            }
        }
        out
    }

    fn arb_items() -> impl Strategy<Value = Vec<Item>> {
        // Up to 60 snapshots over ~100 days, some in the same minute.
        prop::collection::vec((0i64..100 * 24 * 60, 0u8..10), 0..60).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (minute, s))| Item {
                    name: format!("s{i:03}"),
                    time: Timestamp::from_second(1_767_225_600 + minute * 60).unwrap(),
                    state: match s {
                        0 => State::Failed,
                        1 => State::Running,
                        _ => State::Completed,
                    },
                })
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (0u32..5, 0u32..30, 0u32..10, 0u32..6, 0u32..4)
            .prop_map(|(l, h, d, w, m)| Policy {
                keep_last: l,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
            })
            .prop_filter("a rule", |p| !p.is_empty())
    }

    proptest! {
        #[test]
        fn never_removes_the_newest_success(policy in arb_policy(), items in arb_items()) {
            let d = apply(&policy, &items, &TimeZone::UTC).unwrap();
            prop_assert_eq!(d.len(), items.len());
            if let Some(newest) = d.iter().find(|d| {
                items.iter().any(|i| i.name == d.name && i.state == State::Completed)
            }) {
                prop_assert!(newest.keep);
            }
            for dec in &d {
                prop_assert!(!dec.reasons.is_empty());
                let i = items.iter().find(|i| i.name == dec.name).unwrap();
                if i.state == State::Running {
                    prop_assert!(dec.keep);
                }
            }
        }

        #[test]
        fn is_idempotent(policy in arb_policy(), items in arb_items()) {
            let first = apply(&policy, &items, &TimeZone::UTC).unwrap();
            let kept: Vec<Item> = items
                .iter()
                .filter(|i| first.iter().any(|d| d.keep && d.name == i.name))
                .cloned()
                .collect();
            let second = apply(&policy, &kept, &TimeZone::UTC).unwrap();
            prop_assert!(second.iter().all(|d| d.keep));
            let reasons = |d: &[Decision]| -> BTreeMap<String, Vec<Reason>> {
                d.iter().filter(|d| d.keep).map(|d| (d.name.clone(), d.reasons.clone())).collect()
            };
            prop_assert_eq!(reasons(&first), reasons(&second));
        }

        #[test]
        fn matches_restics_documented_rules(policy in arb_policy(), items in arb_items()) {
            let d = apply(&policy, &items, &TimeZone::UTC).unwrap();
            let by_rule: BTreeMap<String, BTreeSet<Reason>> = d
                .iter()
                .filter(|d| d.reasons.iter().any(|r| matches!(r, Reason::Keep(_))))
                .map(|d| {
                    let rules = d.reasons.iter().filter(|r| matches!(r, Reason::Keep(_))).copied();
                    (d.name.clone(), rules.collect())
                })
                .collect();
            prop_assert_eq!(by_rule, reference(&policy, &items));
        }
    }
}
