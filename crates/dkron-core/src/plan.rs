//! Run planning: which nodes run one trigger of a job, and where a retry or a run whose order
//! could not be delivered goes. The members, the instant and the random pick are arguments,
//! so the leader's decisions are plain functions to test.

use jiff::Timestamp;

use crate::job::{Execution, Job};
use crate::placement::{Candidate, select_target_nodes};
use crate::state::JobEntry;
use crate::timefmt::unix_nanos;

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// The scheduler fired the occurrence due at `nominal`.
    Scheduled { nominal: Timestamp },
    /// `POST /v1/jobs/:job/run` or `runoncreate`.
    Manual,
    /// A parent's group succeeded.
    Dependent,
}

/// The runs of one trigger of `job`, one per target node its tags select among `members`,
/// all in one group. `None`: nothing to claim (the job is disabled and the trigger is not
/// manual); an empty plan: no alive node matches the job's tags.
///
/// `now` stamps the runs (their ids are `<start ns>-<node>`, the group is `now` in ns); a
/// scheduled run claimed ahead of time starts at its nominal instant. `pick(n)` answers a
/// random index below `n`.
pub fn plan_runs(
    job: &Job,
    members: &[Candidate],
    trigger: Trigger,
    now: Timestamp,
    pick: impl FnMut(usize) -> usize,
) -> Option<Vec<Execution>> {
    if job.disabled && trigger != Trigger::Manual {
        return None;
    }
    let targets = select_target_nodes(job.tags.as_ref(), members, pick);
    let group = unix_nanos(now);
    let scheduled_at = match trigger {
        Trigger::Scheduled { nominal } => Some(nominal),
        _ => None,
    };
    let starts = scheduled_at.map_or(now, |t| t.max(now));
    Some(
        targets
            .into_iter()
            .map(|target| Execution {
                id: Execution::make_id(starts, &target.name),
                job_name: job.name.clone(),
                started_at: Some(starts),
                node_name: target.name.clone(),
                group,
                attempt: 1,
                scheduled_at,
                ..Execution::default()
            })
            .collect(),
    )
}

/// Where the next attempt (or an undelivered run) of `previous` goes: `None` to stay on its
/// node (it is alive and reachable, or no other node qualifies), else another member that
/// matches the job's tags and is not already running this trigger.
pub fn retry_target(
    entry: &JobEntry,
    previous: &Execution,
    members: &[Candidate],
    mut pick: impl FnMut(usize) -> usize,
) -> Option<String> {
    if members
        .iter()
        .any(|m| m.name == previous.node_name && m.alive)
    {
        return None;
    }
    let busy: Vec<&String> = entry
        .groups
        .get(&previous.group)
        .map(|g| g.nodes.keys().collect())
        .unwrap_or_default();
    let others: Vec<Candidate> = members
        .iter()
        .filter(|m| !busy.contains(&&m.name))
        .cloned()
        .collect();
    let eligible = select_target_nodes(entry.job.tags.as_ref(), &others, &mut pick);
    if eligible.is_empty() {
        return None;
    }
    let chosen = pick(eligible.len()) % eligible.len();
    Some(eligible[chosen].name.clone())
}

/// `concurrency: replace`: the runs a new trigger (`group`) of the job replaces — every run
/// in progress of another trigger. Runs of the same trigger on other nodes are one run of the
/// job, never replaced by each other. Empty unless the job's concurrency is `replace`.
pub fn replaced_runs(entry: &JobEntry, group: i64) -> Vec<&Execution> {
    if !entry.job.replaces_running() {
        return Vec::new();
    }
    entry
        .running
        .values()
        .filter(|r| r.group != group)
        .collect()
}

/// The next attempt of a failed run: same group and trigger, on `node`, started at `now`.
pub fn next_attempt(previous: &Execution, node: String, attempt: u32, now: Timestamp) -> Execution {
    Execution {
        id: Execution::make_id(now, &node),
        node_name: node,
        started_at: Some(now),
        finished_at: None,
        success: false,
        output: String::new(),
        output_size: 0,
        attempt,
        ..previous.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::State;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn member(name: &str, alive: bool, pool: &str) -> Candidate {
        Candidate {
            name: name.into(),
            alive,
            tags: [("pool".to_string(), pool.to_string())].into(),
        }
    }

    fn job(tags: &str, disabled: bool) -> Job {
        let mut job: Job = serde_json::from_str(&format!(
            r#"{{"name":"j","schedule":"@every 1m","executor":"shell","executor_config":{{"command":"true"}},"tags":{{"pool":"{tags}"}},"disabled":{disabled}}}"#
        ))
        .unwrap();
        job.name = "j".into();
        job
    }

    #[test]
    fn a_trigger_plans_one_run_per_target_in_one_group() {
        let members = [
            member("a", true, "x"),
            member("b", true, "x"),
            member("c", false, "x"),
        ];
        let now = ts("2026-01-01T00:00:00.25Z");
        let runs = plan_runs(&job("x", false), &members, Trigger::Manual, now, |_| 0).unwrap();
        let nodes: Vec<&str> = runs.iter().map(|r| r.node_name.as_str()).collect();
        assert_eq!(nodes, ["a", "b"]);
        assert!(runs.iter().all(|r| r.group == unix_nanos(now)
            && r.attempt == 1
            && r.started_at == Some(now)
            && r.scheduled_at.is_none()));
        assert_ne!(runs[0].id, runs[1].id);
    }

    #[test]
    fn a_scheduled_run_claimed_ahead_starts_at_its_nominal_time() {
        let members = [member("a", true, "x")];
        let nominal = ts("2026-01-01T00:00:01Z");
        let now = ts("2026-01-01T00:00:00.5Z");
        let runs = plan_runs(
            &job("x:1", false),
            &members,
            Trigger::Scheduled { nominal },
            now,
            |_| 0,
        )
        .unwrap();
        assert_eq!(runs[0].started_at, Some(nominal));
        assert_eq!(runs[0].scheduled_at, Some(nominal));
        assert_eq!(runs[0].id, Execution::make_id(nominal, "a"));
    }

    #[test]
    fn a_disabled_job_runs_only_when_asked_by_hand() {
        let members = [member("a", true, "x")];
        let now = ts("2026-01-01T00:00:00Z");
        let disabled = job("x", true);
        for trigger in [Trigger::Dependent, Trigger::Scheduled { nominal: now }] {
            assert_eq!(plan_runs(&disabled, &members, trigger, now, |_| 0), None);
        }
        assert_eq!(
            plan_runs(&disabled, &members, Trigger::Manual, now, |_| 0)
                .unwrap()
                .len(),
            1
        );
        // No node matches: an empty plan, which the ledger records as no_target.
        assert_eq!(
            plan_runs(&job("y", false), &members, Trigger::Manual, now, |_| 0),
            Some(Vec::new())
        );
    }

    #[test]
    fn a_retry_stays_on_a_live_node_and_moves_off_a_dead_one_to_a_free_match() {
        let mut state = State::default();
        let now = ts("2026-01-01T00:00:00Z");
        let set = Command::SetJob {
            job: Box::new(job("x", false)),
            now,
            refuse_when_paused: false,
        };
        state.apply(set);
        let members = [
            member("a", false, "x"),
            member("b", true, "x"),
            member("c", true, "x"),
            member("d", true, "other"),
        ];
        let runs = plan_runs(&job("x", false), &members, Trigger::Manual, now, |_| 0).unwrap();
        // One trigger on b and c (a was dead at planning time).
        for run in &runs {
            state.apply(Command::StartExecution {
                execution: run.clone(),
                enforce_forbid: true,
                moved_from: None,
            });
        }
        let entry = state.entry("j").unwrap();
        let on_b = &runs[0];
        assert_eq!(
            retry_target(entry, on_b, &members, |_| 0),
            None,
            "b is alive"
        );
        // b died: c runs this trigger already and d does not match, so nowhere to go.
        let b_dead = [
            member("a", false, "x"),
            member("b", false, "x"),
            member("c", true, "x"),
            member("d", true, "other"),
        ];
        assert_eq!(retry_target(entry, on_b, &b_dead, |_| 0), None);
        // A free matching node appears: the retry goes there.
        let with_e = [b_dead.as_slice(), &[member("e", true, "x")]].concat();
        assert_eq!(
            retry_target(entry, on_b, &with_e, |_| 0).as_deref(),
            Some("e")
        );
    }

    #[test]
    fn a_new_trigger_replaces_older_triggers_not_its_own_runs_on_other_nodes() {
        let now = ts("2026-01-01T00:00:00Z");
        let mut replace = job("x", false);
        replace.concurrency = "replace".into();
        let mut state = State::default();
        state.apply(Command::SetJob {
            job: Box::new(replace.clone()),
            now,
            refuse_when_paused: false,
        });
        let members = [member("a", true, "x"), member("b", true, "x")];
        let start = |state: &mut State, at: &str| {
            let runs = plan_runs(&replace, &members, Trigger::Manual, ts(at), |_| 0).unwrap();
            for run in &runs {
                state.apply(Command::StartExecution {
                    execution: run.clone(),
                    enforce_forbid: true,
                    moved_from: None,
                });
            }
            runs
        };
        let older = start(&mut state, "2026-01-01T00:00:01Z");
        let newer = start(&mut state, "2026-01-01T00:00:02Z");
        let entry = state.entry("j").unwrap();
        let mut replaced: Vec<&str> = replaced_runs(entry, newer[0].group)
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        replaced.sort();
        let mut expected: Vec<&str> = older.iter().map(|r| r.id.as_str()).collect();
        expected.sort();
        assert_eq!(
            replaced, expected,
            "both older runs, neither of the new trigger's"
        );
        // `allow` and `forbid` replace nothing.
        let mut allow = state.clone();
        let mut job_allow = replace.clone();
        job_allow.concurrency = "allow".into();
        allow.apply(Command::SetJob {
            job: Box::new(job_allow),
            now,
            refuse_when_paused: false,
        });
        assert!(replaced_runs(allow.entry("j").unwrap(), newer[0].group).is_empty());
    }

    #[test]
    fn the_next_attempt_keeps_the_group_and_starts_fresh() {
        let previous = Execution {
            id: "1-a".into(),
            job_name: "j".into(),
            node_name: "a".into(),
            group: 7,
            attempt: 1,
            output: "boom".into(),
            output_size: 4,
            finished_at: Some(ts("2026-01-01T00:00:01Z")),
            ..Execution::default()
        };
        let now = ts("2026-01-01T00:00:02Z");
        let next = next_attempt(&previous, "b".into(), 2, now);
        assert_eq!(next.group, 7);
        assert_eq!(next.attempt, 2);
        assert_eq!(next.node_name, "b");
        assert_eq!(next.id, Execution::make_id(now, "b"));
        assert!(next.output.is_empty() && next.finished_at.is_none());
    }
}
