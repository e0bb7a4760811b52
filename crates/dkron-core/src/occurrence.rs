//! What became of each scheduled occurrence: the records of occurrences that did not run,
//! the catch-up decision a new leader takes for occurrences that fell due while no leader ran
//! the schedule, and the per-occurrence verdicts the API lists ("why didn't it run at 03:00?").

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::job::{CATCHUP_LATEST, CATCHUP_NONE, Execution};
use crate::state::{CompiledSchedule, JobEntry};

/// Why occurrences did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `concurrency: forbid` and the previous run was still going.
    Forbid,
    /// No alive node matched the job's tags.
    NoTarget,
    /// Fell due while no leader ran the schedule, longer ago than `catchup_deadline`.
    PastDeadline,
    /// Fell due while no leader ran the schedule; `catchup: latest` ran only the newest.
    CatchupLatest,
    /// Fell due while no leader ran the schedule; `catchup: none`.
    CatchupNone,
    /// The job was disabled.
    Disabled,
    /// The job's schedule or time zone changed.
    Rescheduled,
    /// The leader was behind schedule (overloaded, stalled) and a newer occurrence of the job
    /// was already due; `catchup: latest` or `none` ran only the newest.
    Behind,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Forbid => "concurrency is forbid and the previous run was still going",
            SkipReason::NoTarget => "no alive node matched the job's tags",
            SkipReason::PastDeadline => {
                "it fell due while no leader was running the schedule, longer ago than catchup_deadline"
            }
            SkipReason::CatchupLatest => {
                "it fell due while no leader was running the schedule, and catchup is latest: only the newest such occurrence ran"
            }
            SkipReason::CatchupNone => {
                "it fell due while no leader was running the schedule, and catchup is none"
            }
            SkipReason::Disabled => "the job was disabled",
            SkipReason::Rescheduled => "the job's schedule or time zone changed",
            SkipReason::Behind => {
                "the leader was behind schedule and a newer occurrence was already due; catchup is latest or none, so only the newest ran"
            }
        }
    }
}

/// The occurrences in `(after, through]` did not run, for `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    pub after: Timestamp,
    pub through: Timestamp,
    pub reason: SkipReason,
}

/// Skip records kept per job; contiguous records with the same reason are merged, so a
/// `forbid` job skipping every second while a long run goes takes one.
pub const MAX_SKIPS_PER_JOB: usize = 32;

/// Appends a skip record, merging it into the previous one when contiguous with the same
/// reason, and dropping the oldest beyond [`MAX_SKIPS_PER_JOB`].
pub fn record_skip(skips: &mut VecDeque<Skip>, skip: Skip) {
    if let Some(last) = skips.back_mut()
        && last.reason == skip.reason
        && last.through == skip.after
    {
        last.through = skip.through;
        return;
    }
    skips.push_back(skip);
    while skips.len() > MAX_SKIPS_PER_JOB {
        skips.pop_front();
    }
}

/// How late an owed occurrence of `entry` may still run: its `catchup_deadline`, or for
/// `@after` its grace (past it, the occurrence never runs).
fn catch_up_deadline(entry: &JobEntry, compiled: &CompiledSchedule) -> SignedDuration {
    compiled
        .after_window()
        .map_or_else(|| entry.job.catchup_deadline(), |(_, grace)| grace)
}

/// The catch-up decision for one job when a leader's scheduler starts at `lead_start`: which
/// owed occurrences (after the ledger, due before `lead_start`) are not run, as one skip
/// `(ledger, through]`. `None`: run everything owed.
pub fn plan_catch_up(entry: &JobEntry, lead_start: Timestamp) -> Option<(Timestamp, SkipReason)> {
    let ledger = entry.fired_through?;
    let compiled = entry.compile()?;
    let first = entry.next_fire(&compiled, ledger)?;
    if first >= lead_start {
        return None;
    }
    let deadline = catch_up_deadline(entry, &compiled);
    let horizon = lead_start.checked_sub(deadline).ok()?;
    // Everything at or before the horizon is past the deadline, whatever the policy.
    let mut skip = (first <= horizon).then_some((horizon.max(ledger), SkipReason::PastDeadline));
    let policy = entry.job.catchup.as_str();
    if policy != CATCHUP_LATEST && policy != CATCHUP_NONE {
        return skip;
    }
    // The owed occurrences within the deadline: the newest one decides.
    let mut cursor = skip.map_or(ledger, |(t, _)| t);
    let mut newest = None;
    let mut owed = 0usize;
    while let Some(t) = entry
        .next_fire(&compiled, cursor)
        .filter(|t| *t < lead_start)
    {
        newest = Some(t);
        owed += 1;
        cursor = t;
    }
    let Some(newest) = newest else {
        return skip;
    };
    if policy == CATCHUP_NONE {
        skip = Some((newest, SkipReason::CatchupNone));
    } else if owed > 1
        && let Ok(before) = newest.checked_sub(SignedDuration::from_nanos(1))
    {
        skip = Some((before, SkipReason::CatchupLatest));
    }
    skip
}

/// What a running leader decides for a job whose owed occurrence `owed` it takes at `now`,
/// when it is late: the leader fell behind (overload, a stall) rather than being absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Late {
    /// Skips to record first, in order: every occurrence after the ledger through each
    /// `Timestamp` did not run, for the reason.
    pub skips: Vec<(Timestamp, SkipReason)>,
    /// The occurrence to claim now; `None`: nothing is due once the skips are recorded (the
    /// job's next occurrence, if any, is later).
    pub claim: Option<Timestamp>,
}

/// Occurrences one [`plan_late`] searches at most (an `@every 1s` job a whole deadline behind
/// would be hundreds of thousands), so one decision stays cheap; the queue takes the rest next.
const MAX_LATE_STEPS: usize = 1_000;

/// The decision for a late owed occurrence, with the same rules as a new leader's catch-up,
/// applied while leading: whatever the policy, occurrences later than `catchup_deadline` (an
/// `@after` job's grace) are skipped, `past_deadline`; then with `catchup: latest` or `none`,
/// when a newer occurrence is already due too, only the newest due runs and the older ones
/// are skipped, `behind` (`none` runs the newest too: the leader did not miss it, it is late
/// by less than one period); `all` runs each owed occurrence, late.
pub fn plan_late(entry: &JobEntry, owed: Timestamp, now: Timestamp) -> Late {
    let on_time = Late {
        skips: Vec::new(),
        claim: Some(owed),
    };
    if owed >= now {
        return on_time;
    }
    let Some(compiled) = entry.compile() else {
        return on_time;
    };
    let deadline = catch_up_deadline(entry, &compiled);
    let mut skips = Vec::new();
    let mut claim = owed;
    if let Ok(horizon) = now.checked_sub(deadline)
        && owed <= horizon
    {
        skips.push((horizon, SkipReason::PastDeadline));
        match entry.next_fire(&compiled, horizon).filter(|t| *t <= now) {
            Some(t) => claim = t,
            // Nothing owed within the deadline: the queue looks for the next one.
            None => return Late { skips, claim: None },
        }
    }
    let policy = entry.job.catchup.as_str();
    if policy == CATCHUP_LATEST || policy == CATCHUP_NONE {
        let mut newest = claim;
        for _ in 0..MAX_LATE_STEPS {
            match entry.next_fire(&compiled, newest).filter(|t| *t <= now) {
                Some(t) => newest = t,
                None => break,
            }
        }
        if entry.next_fire(&compiled, newest).is_some_and(|t| t <= now) {
            // Still more due than one decision searches: skip what was searched; the
            // queue takes the rest next.
            skips.push((newest, SkipReason::Behind));
            return Late { skips, claim: None };
        }
        if newest != claim
            && let Ok(before) = newest.checked_sub(SignedDuration::from_nanos(1))
        {
            skips.push((before, SkipReason::Behind));
            claim = newest;
        }
    }
    Late {
        skips,
        claim: Some(claim),
    }
}

/// The next `count` fire times of a job strictly after `after` (fewer if it stops firing:
/// `@at`, `expires_at`, disabled, chained).
pub fn upcoming(entry: &JobEntry, after: Timestamp, count: usize) -> Vec<Timestamp> {
    let Some(compiled) = entry.compile() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    while out.len() < count {
        let Some(t) = entry.next_fire(&compiled, cursor) else {
            break;
        };
        out.push(t);
        cursor = t;
    }
    out
}

/// What became of one occurrence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran; these are its executions (several nodes, retries).
    Ran { executions: Vec<Execution> },
    /// It did not run.
    Skipped { reason: SkipReason, why: String },
    /// Not decided yet: due in the future, or due and about to be claimed.
    Pending,
    /// Decided, but no record is kept any more (executions and skips are pruned), or it fell
    /// before the ledger existed.
    NoRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OccurrenceView {
    #[serde(with = "crate::timefmt::zero_is_none")]
    pub scheduled_at: Option<Timestamp>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The nominal occurrences of a job in `[from, to]` (at most `limit`) with their outcomes,
/// from its executions (any order) and skip records. The second value says whether the list
/// was cut at `limit`.
pub fn verdicts(
    entry: &JobEntry,
    executions: &[Execution],
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> (Vec<OccurrenceView>, bool) {
    let Some(compiled) = entry.compile() else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    // Occurrences are enumerated as if enabled: a disabled job's are reported as skipped.
    let mut probe = entry.clone();
    probe.job.disabled = false;
    let mut cursor = from
        .checked_sub(SignedDuration::from_nanos(1))
        .unwrap_or(from);
    while let Some(t) = probe.next_fire(&compiled, cursor).filter(|t| *t <= to) {
        if out.len() == limit {
            return (out, true);
        }
        cursor = t;
        let ran: Vec<Execution> = executions
            .iter()
            .filter(|e| e.scheduled_at == Some(t))
            .cloned()
            .collect();
        let skipped = entry
            .skipped
            .iter()
            .rev()
            .find(|s| s.after < t && t <= s.through);
        let outcome = if !ran.is_empty() {
            Outcome::Ran { executions: ran }
        } else if let Some(s) = skipped {
            Outcome::Skipped {
                reason: s.reason,
                why: s.reason.describe().to_string(),
            }
        } else if entry.fired_through.is_none_or(|f| t > f) {
            if entry.job.disabled {
                Outcome::Skipped {
                    reason: SkipReason::Disabled,
                    why: SkipReason::Disabled.describe().to_string(),
                }
            } else {
                Outcome::Pending
            }
        } else {
            Outcome::NoRecord
        };
        out.push(OccurrenceView {
            scheduled_at: Some(t),
            outcome,
        });
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Response};
    use crate::job::Job;
    use crate::state::State;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const T0: &str = "2026-01-01T00:00:00Z";

    fn state_with(json: &str) -> State {
        let mut state = State::default();
        let job: Job = serde_json::from_str(json).unwrap();
        let (r, _) = state.apply(Command::SetJob {
            job: Box::new(job),
            now: ts(T0),
            refuse_when_paused: false,
        });
        assert!(matches!(r, Response::Job { .. }), "{r:?}");
        state
    }

    #[test]
    fn catch_up_all_runs_everything_within_the_deadline() {
        let s = state_with(r#"{"name":"j","schedule":"@every 10m"}"#);
        let e = &s.jobs["j"];
        // Down 35 minutes: three owed, all within the hour.
        assert_eq!(plan_catch_up(e, ts("2026-01-01T00:35:00Z")), None);
        // Down 2.5 hours: those older than an hour are past the deadline.
        assert_eq!(
            plan_catch_up(e, ts("2026-01-01T02:30:00Z")),
            Some((ts("2026-01-01T01:30:00Z"), SkipReason::PastDeadline))
        );
        // Nothing owed yet.
        assert_eq!(plan_catch_up(e, ts("2026-01-01T00:09:00Z")), None);
    }

    #[test]
    fn a_late_occurrence_runs_late_under_all_and_only_the_newest_under_latest_or_none() {
        let t = |s: &str| ts(&format!("2026-01-01T00:{s}Z"));
        let s = state_with(r#"{"name":"j","schedule":"@every 10s"}"#);
        let all = &s.jobs["j"];
        // On time, or claimed ahead: nothing to decide.
        for now in ["00:09.6", "00:10"] {
            let late = plan_late(all, t("00:10"), t(now));
            assert_eq!(
                late,
                Late {
                    skips: vec![],
                    claim: Some(t("00:10"))
                }
            );
        }
        // Two periods behind: `all` runs the owed one, late; the queue owes the next ones.
        assert_eq!(
            plan_late(all, t("00:10"), t("00:35")),
            Late {
                skips: vec![],
                claim: Some(t("00:10"))
            }
        );
        for policy in ["latest", "none"] {
            let s = state_with(&format!(
                r#"{{"name":"j","schedule":"@every 10s","catchup":"{policy}"}}"#
            ));
            // 00:10, 00:20 and 00:30 are due: 00:30 runs, the others are skipped.
            assert_eq!(
                plan_late(&s.jobs["j"], t("00:10"), t("00:35")),
                Late {
                    skips: vec![(
                        t("00:30") - SignedDuration::from_nanos(1),
                        SkipReason::Behind
                    )],
                    claim: Some(t("00:30")),
                },
                "{policy}"
            );
            // Late, but the only one due: it runs.
            assert_eq!(
                plan_late(&s.jobs["j"], t("00:10"), t("00:19")),
                Late {
                    skips: vec![],
                    claim: Some(t("00:10"))
                },
                "{policy}"
            );
        }
    }

    #[test]
    fn a_late_occurrence_past_the_deadline_is_skipped_whatever_the_policy() {
        let at = |s: &str| ts(&format!("2026-01-01T{s}Z"));
        let s = state_with(r#"{"name":"j","schedule":"@every 10s","catchup_deadline":"1m"}"#);
        // Five minutes behind: everything up to a minute ago is past the deadline; the first
        // occurrence within it runs.
        assert_eq!(
            plan_late(&s.jobs["j"], at("00:00:10"), at("00:05:00")),
            Late {
                skips: vec![(at("00:04:00"), SkipReason::PastDeadline)],
                claim: Some(at("00:04:10")),
            }
        );
        let s = state_with(
            r#"{"name":"j","schedule":"@every 10s","catchup":"latest","catchup_deadline":"1m"}"#,
        );
        assert_eq!(
            plan_late(&s.jobs["j"], at("00:00:10"), at("00:05:00")),
            Late {
                skips: vec![
                    (at("00:04:00"), SkipReason::PastDeadline),
                    (
                        at("00:05:00") - SignedDuration::from_nanos(1),
                        SkipReason::Behind
                    ),
                ],
                claim: Some(at("00:05:00")),
            }
        );
        // Nothing due within the deadline: only the skip, the queue looks for the next one.
        let s = state_with(r#"{"name":"j","schedule":"@every 1h","catchup_deadline":"1m"}"#);
        assert_eq!(
            plan_late(&s.jobs["j"], at("01:00:00"), at("01:10:00")),
            Late {
                skips: vec![(at("01:09:00"), SkipReason::PastDeadline)],
                claim: None,
            }
        );
    }

    #[test]
    fn a_late_decision_searches_a_bounded_number_of_occurrences() {
        let s = state_with(r#"{"name":"j","schedule":"@every 1s","catchup":"latest"}"#);
        let (owed, now) = (ts("2026-01-01T00:00:01Z"), ts("2026-01-01T00:50:00Z"));
        let late = plan_late(&s.jobs["j"], owed, now);
        // The first thousand searched are skipped, none claimed; the rest is decided next.
        assert_eq!(
            late,
            Late {
                skips: vec![(ts("2026-01-01T00:16:41Z"), SkipReason::Behind)],
                claim: None,
            }
        );
    }

    #[test]
    fn the_late_decisions_are_accepted_by_the_ledger_in_order() {
        let mut s = state_with(
            r#"{"name":"j","schedule":"@every 10s","catchup":"latest","catchup_deadline":"1m"}"#,
        );
        let (owed, now) = (ts("2026-01-01T00:00:10Z"), ts("2026-01-01T00:05:00Z"));
        let late = plan_late(&s.jobs["j"], owed, now);
        let mut commands: Vec<Command> = late
            .skips
            .iter()
            .map(|&(through, reason)| Command::SkipOccurrences {
                job: "j".into(),
                through,
                reason,
            })
            .collect();
        commands.push(Command::ClaimOccurrence {
            job: "j".into(),
            nominal: late.claim.unwrap(),
            runs: vec![],
        });
        let (r, _) = s.apply(Command::Batch { commands });
        let Response::Batch { responses } = r else {
            panic!("{r:?}")
        };
        assert!(
            responses
                .iter()
                .all(|r| !matches!(r, Response::Rejected { .. })),
            "{responses:?}"
        );
        assert_eq!(s.jobs["j"].fired_through, Some(now));
        let (views, _) = verdicts(&s.jobs["j"], &[], owed, now, 100);
        let reason = |i: usize| match &views[i].outcome {
            Outcome::Skipped { reason, .. } => Some(*reason),
            _ => None,
        };
        assert_eq!(views.len(), 30);
        assert_eq!(reason(0), Some(SkipReason::PastDeadline));
        assert_eq!(reason(23), Some(SkipReason::PastDeadline));
        assert_eq!(reason(24), Some(SkipReason::Behind));
        assert_eq!(reason(28), Some(SkipReason::Behind));
        // The claimed one: no eligible node in this test.
        assert_eq!(reason(29), Some(SkipReason::NoTarget));
    }

    #[test]
    fn catch_up_latest_and_none() {
        let s = state_with(r#"{"name":"j","schedule":"@every 10m","catchup":"latest"}"#);
        // Owed: 00:10, 00:20, 00:30 — only 00:30 runs.
        assert_eq!(
            plan_catch_up(&s.jobs["j"], ts("2026-01-01T00:35:00Z")),
            Some((
                ts("2026-01-01T00:30:00Z") - SignedDuration::from_nanos(1),
                SkipReason::CatchupLatest
            ))
        );
        // One owed: it is the latest, it runs.
        assert_eq!(
            plan_catch_up(&s.jobs["j"], ts("2026-01-01T00:15:00Z")),
            None
        );
        let s = state_with(
            r#"{"name":"j","schedule":"@every 10m","catchup":"none","catchup_deadline":"15m"}"#,
        );
        assert_eq!(
            plan_catch_up(&s.jobs["j"], ts("2026-01-01T00:35:00Z")),
            Some((ts("2026-01-01T00:30:00Z"), SkipReason::CatchupNone))
        );
        // An occurrence due exactly at the start is not a catch-up one.
        assert_eq!(
            plan_catch_up(&s.jobs["j"], ts("2026-01-01T00:10:00Z")),
            None
        );
    }

    #[test]
    fn upcoming_lists_the_next_fires_and_stops_with_the_schedule() {
        let s = state_with(r#"{"name":"j","schedule":"0 30 3 * * *","timezone":"Europe/Berlin"}"#);
        let next = upcoming(&s.jobs["j"], ts(T0), 3);
        assert_eq!(
            next,
            [
                ts("2026-01-01T02:30:00Z"),
                ts("2026-01-02T02:30:00Z"),
                ts("2026-01-03T02:30:00Z")
            ]
        );
        let s = state_with(r#"{"name":"once","schedule":"@at 2026-01-01T05:00:00Z"}"#);
        assert_eq!(
            upcoming(&s.jobs["once"], ts(T0), 10),
            [ts("2026-01-01T05:00:00Z")]
        );
    }

    #[test]
    fn skips_merge_when_contiguous_and_stay_bounded() {
        let mut skips = VecDeque::new();
        let at = |m: i64| ts(T0) + SignedDuration::from_mins(m);
        for m in 0..10 {
            record_skip(
                &mut skips,
                Skip {
                    after: at(m),
                    through: at(m + 1),
                    reason: SkipReason::Forbid,
                },
            );
        }
        assert_eq!(skips.len(), 1);
        assert_eq!((skips[0].after, skips[0].through), (at(0), at(10)));
        for m in 0..100 {
            let reason = if m % 2 == 0 {
                SkipReason::NoTarget
            } else {
                SkipReason::Forbid
            };
            record_skip(
                &mut skips,
                Skip {
                    after: at(20 + m),
                    through: at(21 + m),
                    reason,
                },
            );
        }
        assert_eq!(skips.len(), MAX_SKIPS_PER_JOB);
    }

    #[test]
    fn verdicts_say_what_became_of_each_occurrence() {
        let mut s = state_with(r#"{"name":"j","schedule":"@every 1m","concurrency":"forbid"}"#);
        let claim = |s: &mut State, m: i64, nodes: &[&str]| {
            let nominal = ts(T0) + SignedDuration::from_mins(m);
            let runs = nodes
                .iter()
                .map(|n| Execution {
                    id: Execution::make_id(nominal, n),
                    node_name: n.to_string(),
                    group: m,
                    attempt: 1,
                    started_at: Some(nominal),
                    ..Execution::default()
                })
                .collect();
            s.apply(Command::ClaimOccurrence {
                job: "j".into(),
                nominal,
                runs,
            })
        };
        claim(&mut s, 1, &["n1"]); // runs, still going at 00:02
        claim(&mut s, 2, &["n1"]); // forbid
        claim(&mut s, 3, &[]); // no target
        s.apply(Command::SkipOccurrences {
            job: "j".into(),
            through: ts("2026-01-01T00:05:00Z"),
            reason: SkipReason::CatchupNone,
        });
        // A second decision over the same range (a deposed leader's) is refused and changes
        // nothing.
        let before = s.clone();
        let (again, _) = s.apply(Command::SkipOccurrences {
            job: "j".into(),
            through: ts("2026-01-01T00:04:00Z"),
            reason: SkipReason::CatchupLatest,
        });
        assert!(
            matches!(
                again,
                Response::Rejected {
                    error: crate::command::ApplyError::AlreadySkipped { .. }
                }
            ),
            "{again:?}"
        );
        assert_eq!(s, before);
        let executions: Vec<Execution> = s.jobs["j"].running.values().cloned().collect();
        let (list, truncated) = verdicts(
            &s.jobs["j"],
            &executions,
            ts("2026-01-01T00:01:00Z"),
            ts("2026-01-01T00:07:00Z"),
            100,
        );
        assert!(!truncated);
        let outcomes: Vec<&str> = list
            .iter()
            .map(|o| match &o.outcome {
                Outcome::Ran { .. } => "ran",
                Outcome::Skipped { reason, .. } => match reason {
                    SkipReason::Forbid => "forbid",
                    SkipReason::NoTarget => "no_target",
                    SkipReason::CatchupNone => "catchup_none",
                    _ => "other",
                },
                Outcome::Pending => "pending",
                Outcome::NoRecord => "no_record",
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                "ran",
                "forbid",
                "no_target",
                "catchup_none",
                "catchup_none",
                "pending",
                "pending"
            ]
        );
        let (cut, truncated) = verdicts(
            &s.jobs["j"],
            &executions,
            ts("2026-01-01T00:01:00Z"),
            ts("2026-01-01T00:07:00Z"),
            2,
        );
        assert!(truncated && cut.len() == 2);
        // Occurrences before the ledger with no record left: said so.
        let (old, _) = verdicts(
            &s.jobs["j"],
            &[],
            ts("2026-01-01T00:01:00Z"),
            ts("2026-01-01T00:01:00Z"),
            10,
        );
        assert_eq!(old[0].outcome, Outcome::NoRecord);
        // A disabled job's undecided occurrences are skipped, not pending.
        s.apply(Command::ToggleJob {
            name: "j".into(),
            now: Some(ts("2026-01-01T00:05:30Z")),
        });
        let (dis, _) = verdicts(
            &s.jobs["j"],
            &[],
            ts("2026-01-01T00:06:00Z"),
            ts("2026-01-01T00:06:00Z"),
            10,
        );
        assert!(matches!(
            dis[0].outcome,
            Outcome::Skipped {
                reason: SkipReason::Disabled,
                ..
            }
        ));
    }
}
