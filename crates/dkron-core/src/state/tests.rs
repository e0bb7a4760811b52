//! State machine tests: each one drives `apply` with commands and checks responses, state and
//! effects. `Harness` is the in-memory twin of the shell's execution store.

use std::collections::BTreeMap;

use super::*;
use crate::command::{ApplyError, Command, Response};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const T0: &str = "2026-01-01T00:00:00Z";

#[derive(Default)]
struct Harness {
    state: State,
    executions: BTreeMap<String, BTreeMap<String, Execution>>,
    /// The job entries and runtimes as the shell stores them, from the effects alone.
    jobs: BTreeMap<String, JobEntry>,
    runtimes: BTreeMap<String, Runtime>,
}

impl Harness {
    fn apply(&mut self, command: Command) -> Response {
        let (response, effects) = self.state.apply(command);
        for effect in effects {
            match effect {
                Effect::PutExecution(e) => {
                    self.executions
                        .entry(e.job_name.clone())
                        .or_default()
                        .insert(e.id.clone(), e);
                }
                Effect::DeleteExecutionsOf(job) => {
                    self.executions.remove(&job);
                }
                Effect::PruneExecutions { job, remove } => {
                    let list = self.executions.entry(job).or_default();
                    for _ in 0..remove {
                        list.pop_first();
                    }
                }
                Effect::PutJob(name) => {
                    let entry = self.state.jobs[&name].clone();
                    self.runtimes.insert(name.clone(), entry.runtime());
                    self.jobs.insert(name, entry);
                }
                Effect::PutRuntime(name) => {
                    let runtime = self.state.jobs[&name].runtime();
                    self.runtimes.insert(name, runtime);
                }
                Effect::RemoveJob(name) => {
                    self.jobs.remove(&name);
                    self.runtimes.remove(&name);
                }
                Effect::PutAcl | Effect::PutStats(_) | Effect::RemoveStats(_) => {}
            }
        }
        self.assert_stored_entries_are_the_state();
        response
    }

    /// Every command leaves the stored entries, each with its stored runtime laid over it,
    /// equal to the state: an effect that only writes the runtime changed nothing else.
    fn assert_stored_entries_are_the_state(&self) {
        let stored: BTreeMap<&String, JobEntry> = self
            .jobs
            .iter()
            .map(|(name, entry)| {
                let mut entry = entry.clone();
                entry.set_runtime(self.runtimes[name].clone());
                (name, entry)
            })
            .collect();
        let state: BTreeMap<&String, JobEntry> = self
            .state
            .jobs
            .iter()
            .map(|(n, e)| (n, e.clone()))
            .collect();
        assert_eq!(stored, state, "the stored entries differ from the state");
    }

    /// A job's executions as the shell's readers show them: the stored (finished) records
    /// joined with the runs in progress, which have no record yet.
    fn records(&self, job: &str) -> BTreeMap<String, Execution> {
        let mut all = self.executions.get(job).cloned().unwrap_or_default();
        for (id, run) in self
            .state
            .jobs
            .get(job)
            .map(|e| &e.running)
            .into_iter()
            .flatten()
        {
            all.entry(id.clone()).or_insert_with(|| run.clone());
        }
        all
    }

    fn set(&mut self, json: &str) -> Response {
        let job: Job = serde_json::from_str(json).unwrap();
        self.apply(Command::SetJob {
            job: Box::new(job),
            now: ts(T0),
            refuse_when_paused: false,
        })
    }

    fn job(&self, name: &str) -> &Job {
        &self.state.jobs[name].job
    }

    fn run(&mut self, job: &str, node: &str, group: i64, attempt: u32, started: &str) -> Execution {
        let started = ts(started);
        let execution = Execution {
            id: Execution::make_id(started, node),
            job_name: job.into(),
            started_at: Some(started),
            node_name: node.into(),
            group,
            attempt,
            ..Execution::default()
        };
        match self.apply(Command::StartExecution {
            execution,
            enforce_forbid: true,
            moved_from: None,
        }) {
            Response::Started { execution } => execution,
            other => panic!("start refused: {other:?}"),
        }
    }

    fn finish(&mut self, mut e: Execution, success: bool) -> FinishOutcome {
        e.success = success;
        e.finished_at = e.started_at;
        match self.apply(Command::FinishExecution {
            execution: e,
            stopped: false,
        }) {
            Response::Finished(outcome) => outcome,
            other => panic!("finish refused: {other:?}"),
        }
    }
}

fn rejected(r: Response) -> ApplyError {
    match r {
        Response::Rejected { error } => error,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn update_replaces_fields_but_keeps_counters_and_dependents() {
    let mut h = Harness::default();
    h.set(r#"{"name":"test_job","schedule":"@every 1m","executor":"shell","executor_config":{"command":"date"},"disabled":true}"#);
    h.set(r#"{"name":"child","parent_job":"test_job"}"#);
    let e = h.run("test_job", "n1", 1, 1, "2026-01-01T00:01:00Z");
    h.finish(e, true);
    h.set(r#"{"name":"test_job","schedule":"@every 1m","executor":"shell","executor_config":{"command":"test"}}"#);
    let job = h.job("test_job");
    assert!(!job.disabled);
    assert_eq!(job.executor_config()["command"], "test");
    assert_eq!(job.success_count, 1);
    assert_eq!(
        job.dependent_jobs.as_deref(),
        Some(&["child".to_string()][..])
    );
}

#[test]
fn parent_must_exist_and_cycles_are_refused() {
    let mut h = Harness::default();
    let err = rejected(h.set(r#"{"name":"c","parent_job":"missing"}"#));
    assert_eq!(err.to_string(), "specified parent job not found");
    assert!(h.state.jobs.is_empty(), "nothing is left behind");
    h.set(r#"{"name":"a","schedule":"@daily"}"#);
    h.set(r#"{"name":"b","parent_job":"a"}"#);
    h.set(r#"{"name":"c","parent_job":"b"}"#);
    let err = rejected(h.set(r#"{"name":"a","schedule":"@daily","parent_job":"c"}"#));
    assert!(matches!(err, ApplyError::Cycle { .. }), "{err:?}");
    assert_eq!(h.job("a").parent_job, "");
}

#[test]
fn moving_a_child_updates_both_parents() {
    let mut h = Harness::default();
    h.set(r#"{"name":"p1","schedule":"@daily"}"#);
    h.set(r#"{"name":"p2","schedule":"@daily"}"#);
    h.set(r#"{"name":"c","parent_job":"p1"}"#);
    h.set(r#"{"name":"c","parent_job":"p2"}"#);
    assert!(h.job("p1").dependents().is_empty());
    assert_eq!(h.job("p2").dependents(), ["c"]);
    h.set(r#"{"name":"c","schedule":"@every 2m"}"#);
    assert!(h.job("p2").dependents().is_empty());
}

#[test]
fn delete_refuses_parents_and_matches_names_exactly() {
    let mut h = Harness::default();
    h.set(r#"{"name":"foo","schedule":"@daily"}"#);
    h.set(r#"{"name":"foo-bar","parent_job":"foo"}"#);
    let e = h.run("foo-bar", "n1", 1, 1, "2026-01-01T00:01:00Z");
    h.finish(e, true);
    assert!(matches!(
        rejected(h.apply(Command::DeleteJob { name: "foo".into() })),
        ApplyError::HasDependents { .. }
    ));
    h.apply(Command::DeleteJob {
        name: "foo-bar".into(),
    });
    assert!(h.job("foo").dependents().is_empty());
    assert!(!h.executions.contains_key("foo-bar"));
    assert!(matches!(
        h.apply(Command::DeleteJob { name: "foo".into() }),
        Response::Job { .. }
    ));
    assert!(matches!(
        rejected(h.apply(Command::DeleteJob { name: "foo".into() })),
        ApplyError::JobNotFound { .. }
    ));
}

#[test]
fn forbid_is_decided_atomically_at_claim_time() {
    let mut h = Harness::default();
    h.set(r#"{"name":"f","schedule":"@daily","concurrency":"forbid"}"#);
    let first = h.run("f", "n1", 1, 1, "2026-01-01T00:01:00Z");
    let second = Execution {
        id: "x".into(),
        job_name: "f".into(),
        node_name: "n2".into(),
        group: 2,
        attempt: 1,
        ..Execution::default()
    };
    let err = rejected(h.apply(Command::StartExecution {
        execution: second.clone(),
        enforce_forbid: true,
        moved_from: None,
    }));
    assert!(matches!(err, ApplyError::AlreadyRunning { .. }));
    h.finish(first, true);
    assert!(matches!(
        h.apply(Command::StartExecution {
            execution: second,
            enforce_forbid: true,
            moved_from: None,
        }),
        Response::Started { .. }
    ));
}

#[test]
fn forbid_lets_one_trigger_run_on_every_target_node() {
    let mut h = Harness::default();
    h.set(r#"{"name":"f","schedule":"@manually","concurrency":"forbid"}"#);
    let on = |node: &str, group: i64| Execution {
        id: format!("{node}-{group}"),
        job_name: "f".into(),
        node_name: node.into(),
        group,
        attempt: 1,
        ..Execution::default()
    };
    for node in ["n1", "n2", "n3"] {
        assert!(matches!(
            h.apply(Command::StartExecution {
                execution: on(node, 7),
                enforce_forbid: true,
                moved_from: None,
            }),
            Response::Started { .. }
        ));
    }
    // Another trigger is still refused while those run.
    let err = rejected(h.apply(Command::StartExecution {
        execution: on("n1", 8),
        enforce_forbid: true,
        moved_from: None,
    }));
    assert!(matches!(err, ApplyError::AlreadyRunning { running, .. } if running.len() == 3));
}

#[test]
fn an_undelivered_run_moves_to_another_node_and_still_runs_once() {
    let mut h = Harness::default();
    h.set(r#"{"name":"m","schedule":"@manually","concurrency":"forbid","retries":2}"#);
    let run = h.run("m", "n1", 5, 1, "2026-01-01T00:01:00Z");
    let moved = match h.apply(Command::MoveExecution {
        job: "m".into(),
        execution_id: run.id.clone(),
        from: "n1".into(),
        to: "n3".into(),
    }) {
        Response::Started { execution } => execution,
        other => panic!("move refused: {other:?}"),
    };
    assert_eq!(
        (moved.id.as_str(), moved.node_name.as_str()),
        (run.id.as_str(), "n3")
    );
    // One record, now on n3; the group waits for n3, not n1.
    assert_eq!(h.records("m").len(), 1);
    assert_eq!(h.records("m")[&run.id].node_name, "n3");
    let group = &h.state.jobs["m"].groups[&5];
    assert_eq!(group.nodes.keys().collect::<Vec<_>>(), ["n3"]);
    // A second move from n1 (a stale leader's) is refused: the run is no longer there.
    assert!(matches!(
        rejected(h.apply(Command::MoveExecution {
            job: "m".into(),
            execution_id: run.id.clone(),
            from: "n1".into(),
            to: "n2".into(),
        })),
        ApplyError::NotRunningOn { .. }
    ));
    // A stale report from the old node (a leader that lost the move's outcome) is refused.
    let mut stale = run.clone();
    stale.finished_at = stale.started_at;
    assert!(matches!(
        rejected(h.apply(Command::FinishExecution {
            execution: stale,
            stopped: false
        })),
        ApplyError::NotRunningOn { .. }
    ));
    let outcome = h.finish(moved.clone(), true);
    assert!(outcome.group_done && !outcome.retry, "{outcome:?}");
    // Reported twice (two leaders collecting it across a hand-over): counted once.
    let mut again = moved.clone();
    again.success = true;
    again.finished_at = again.started_at;
    assert!(matches!(
        rejected(h.apply(Command::FinishExecution {
            execution: again,
            stopped: false
        })),
        ApplyError::NotRunningOn { .. }
    ));
    assert_eq!(h.job("m").success_count, 1);
    assert_eq!(h.job("m").error_count, 0);
    // A finished run cannot move.
    assert!(matches!(
        rejected(h.apply(Command::MoveExecution {
            job: "m".into(),
            execution_id: run.id,
            from: "n3".into(),
            to: "n2".into(),
        })),
        ApplyError::NotRunningOn { .. }
    ));
}

#[test]
fn allow_runs_overlap() {
    let mut h = Harness::default();
    h.set(r#"{"name":"a","schedule":"@daily"}"#);
    h.run("a", "n1", 1, 1, "2026-01-01T00:01:00Z");
    h.run("a", "n1", 2, 1, "2026-01-01T00:02:00Z");
    assert_eq!(h.state.jobs["a"].running.len(), 2);
}

#[test]
fn a_retry_that_succeeds_is_a_success_and_triggers_children_once() {
    let mut h = Harness::default();
    h.set(r#"{"name":"p","schedule":"@daily","retries":1}"#);
    h.set(r#"{"name":"c","parent_job":"p"}"#);
    let a1 = h.run("p", "n1", 7, 1, "2026-01-01T00:01:00Z");
    let out = h.finish(a1, false);
    assert!(out.retry && !out.group_done && out.dependents.is_empty());
    let a2 = h.run("p", "n1", 7, 2, "2026-01-01T00:01:05Z");
    let out = h.finish(a2, true);
    assert!(!out.retry && out.group_done);
    assert_eq!(out.status, "success");
    assert_eq!(out.dependents, ["c"]);
    let job = h.job("p");
    assert_eq!((job.success_count, job.error_count), (1, 1));
    assert_eq!(job.status, "success");
}

#[test]
fn a_stopped_run_is_failed_and_not_retried() {
    let mut h = Harness::default();
    h.set(r#"{"name":"p","schedule":"@daily","retries":3,"concurrency":"forbid"}"#);
    let mut a1 = h.run("p", "n1", 7, 1, "2026-01-01T00:01:00Z");
    a1.finished_at = a1.started_at;
    let out = match h.apply(Command::FinishExecution {
        execution: a1,
        stopped: true,
    }) {
        Response::Finished(outcome) => outcome,
        other => panic!("{other:?}"),
    };
    assert!(!out.retry && out.group_done, "{out:?}");
    assert_eq!(out.status, "failed");
    assert!(
        h.state.entry("p").unwrap().running.is_empty(),
        "forbid is free again"
    );
}

#[test]
fn last_attempt_failing_is_final() {
    let mut h = Harness::default();
    h.set(r#"{"name":"p","schedule":"@daily","retries":1}"#);
    let a1 = h.run("p", "n1", 7, 1, "2026-01-01T00:01:00Z");
    h.finish(a1, false);
    let a2 = h.run("p", "n1", 7, 2, "2026-01-01T00:01:05Z");
    let out = h.finish(a2, false);
    assert!(!out.retry && out.group_done);
    assert_eq!(out.status, "failed");
}

#[test]
fn multi_node_group_is_partially_failed_only_when_all_finished() {
    let mut h = Harness::default();
    h.set(r#"{"name":"m","schedule":"@daily"}"#);
    let a = h.run("m", "n1", 3, 1, "2026-01-01T00:01:00Z");
    let b = h.run("m", "n2", 3, 1, "2026-01-01T00:01:00Z");
    let out = h.finish(a, true);
    assert!(!out.group_done);
    let out = h.finish(b, false);
    assert_eq!(out.status, "partially_failed");
}

#[test]
fn ephemeral_jobs_are_deleted_after_success() {
    let mut h = Harness::default();
    h.set(r#"{"name":"e","schedule":"@daily","ephemeral":true}"#);
    let a = h.run("e", "n1", 1, 1, "2026-01-01T00:01:00Z");
    let out = h.finish(a, true);
    assert!(out.deleted);
    assert!(!h.state.jobs.contains_key("e"));
}

#[test]
fn executions_are_pruned_to_the_newest_hundred() {
    let mut h = Harness::default();
    h.set(r#"{"name":"j","schedule":"@daily"}"#);
    let start = ts(T0);
    for i in 0..120 {
        let t = start + jiff::SignedDuration::from_secs(i);
        let e = h.run("j", "n1", i, 1, &t.to_string());
        h.finish(e, true);
    }
    let kept = &h.executions["j"];
    assert_eq!(kept.len(), 100);
    assert!(kept.keys().next().unwrap().starts_with(&format!(
        "{:019}",
        (start + jiff::SignedDuration::from_secs(20)).as_nanosecond()
    )));
}

#[test]
fn a_run_is_written_once_when_it_finishes_and_only_finished_runs_count_for_retention() {
    let mut h = Harness::default();
    h.set(r#"{"name":"j","schedule":"@daily","concurrency":"allow"}"#);
    let start = ts(T0);
    let mut runs = Vec::new();
    for i in 0..100 {
        let t = start + jiff::SignedDuration::from_secs(i);
        let e = h.run("j", "n1", i, 1, &t.to_string());
        h.finish(e, true);
    }
    // Two more start: no record is written for them, and none of the hundred is pruned.
    for i in 100..102 {
        let t = start + jiff::SignedDuration::from_secs(i);
        let (_, effects) = h.state.apply(Command::StartExecution {
            execution: Execution {
                id: Execution::make_id(t, "n1"),
                job_name: "j".into(),
                started_at: Some(t),
                node_name: "n1".into(),
                group: i,
                attempt: 1,
                ..Execution::default()
            },
            enforce_forbid: true,
            moved_from: None,
        });
        assert_eq!(effects, vec![Effect::PutRuntime("j".into())], "start {i}");
        runs.push(h.state.jobs["j"].running.values().last().unwrap().clone());
    }
    assert_eq!(h.executions["j"].len(), 100);
    assert_eq!(h.records("j").len(), 102);
    assert_eq!(h.state.jobs["j"].stored_executions, 100);
    // Finishing one writes its record and prunes the oldest finished one.
    let first = h.executions["j"].keys().next().unwrap().clone();
    h.finish(runs.remove(0), false);
    let stored = &h.executions["j"];
    assert_eq!(stored.len(), 100);
    assert!(!stored.contains_key(&first));
    assert!(stored.values().all(|e| e.finished_at.is_some()));
    assert_eq!(h.records("j").len(), 101);
}

#[test]
fn delete_executions_resets_counters() {
    let mut h = Harness::default();
    h.set(r#"{"name":"j","schedule":"@daily"}"#);
    let e = h.run("j", "n1", 1, 1, "2026-01-01T00:01:00Z");
    h.finish(e, false);
    h.apply(Command::DeleteExecutions { job: "j".into() });
    let job = h.job("j");
    assert_eq!((job.success_count, job.error_count), (0, 0));
    assert!(job.last_error.is_none());
    assert!(!h.executions.contains_key("j"));
}

#[test]
fn finishing_for_a_deleted_job_is_refused() {
    let mut h = Harness::default();
    let e = Execution {
        job_name: "gone".into(),
        ..Execution::default()
    };
    assert!(matches!(
        rejected(h.apply(Command::FinishExecution {
            execution: e,
            stopped: false
        })),
        ApplyError::JobNotFound { .. }
    ));
}

#[test]
fn invalid_jobs_are_refused_inside_apply_too() {
    let mut h = Harness::default();
    let err = rejected(h.set(r#"{"name":"j","schedule":"@daily","timezone":"Asis/Taipei"}"#));
    assert!(err.to_string().contains("timezone"));
    assert!(h.state.jobs.is_empty());
}

#[test]
fn next_respects_zone_start_expiry_and_disabled() {
    let mut h = Harness::default();
    h.set(r#"{"name":"j","schedule":"0 30 8 * * *","timezone":"Europe/Berlin"}"#);
    let now = ts("2026-06-01T00:00:00Z");
    assert_eq!(
        h.state
            .job_view("j", now)
            .unwrap()
            .next
            .unwrap()
            .to_string(),
        "2026-06-01T06:30:00Z"
    );
    h.set(r#"{"name":"j","schedule":"0 30 8 * * *","timezone":"Europe/Berlin","starts_at":"2026-07-01T06:30:00Z"}"#);
    assert_eq!(
        h.state
            .job_view("j", now)
            .unwrap()
            .next
            .unwrap()
            .to_string(),
        "2026-07-01T06:30:00Z"
    );
    h.set(r#"{"name":"j","schedule":"0 30 8 * * *","expires_at":"2026-05-01T00:00:00Z"}"#);
    assert_eq!(h.state.job_view("j", now).unwrap().next, None);
    h.set(r#"{"name":"j","schedule":"0 30 8 * * *","disabled":true}"#);
    assert_eq!(h.state.job_view("j", now).unwrap().next, None);
}

/// Dkron 4.1's `@after`: before the instant it waits for it; set within the grace it is owed
/// at once (the leader claims it next); set past the grace it never runs and says why.
#[test]
fn after_runs_at_its_time_at_once_within_the_grace_and_never_past_it() {
    use crate::occurrence::SkipReason;
    let set_at = |now: &str| {
        let mut state = State::default();
        let job: Job =
            serde_json::from_str(r#"{"name":"a","schedule":"@after 2025-01-01T00:00:00Z <PT2H"}"#)
                .unwrap();
        let (response, _) = state.apply(Command::SetJob {
            job: Box::new(job),
            now: ts(now),
            refuse_when_paused: false,
        });
        assert!(matches!(response, Response::Job { .. }), "{response:?}");
        state.entry("a").unwrap().clone()
    };
    let at = ts("2025-01-01T00:00:00Z");
    // Before: it fires at the instant.
    let early = set_at("2024-12-31T23:00:00Z");
    assert_eq!(
        early.next_fire_after(early.fired_through.unwrap()),
        Some(at)
    );
    // Within the grace (1 h late, and exactly at it): the occurrence is still owed.
    for now in [
        "2025-01-01T01:00:00Z",
        "2025-01-01T00:00:00Z",
        "2025-01-01T02:00:00Z",
    ] {
        let late = set_at(now);
        assert!(late.fired_through.unwrap() < at, "{now}");
        assert_eq!(
            late.next_fire_after(late.fired_through.unwrap()),
            Some(at),
            "{now}"
        );
    }
    // Past the grace: never, with a verdict.
    let missed = set_at("2025-01-01T02:00:01Z");
    assert_eq!(missed.next_fire_after(missed.fired_through.unwrap()), None);
    assert!(
        missed
            .skipped
            .iter()
            .any(|s| s.reason == SkipReason::PastDeadline && s.after < at && at <= s.through),
        "{:?}",
        missed.skipped
    );
    // A new leader honours the grace as the deadline, not catchup_deadline.
    let owed = set_at("2025-01-01T01:00:00Z");
    assert_eq!(
        crate::occurrence::plan_catch_up(&owed, ts("2025-01-01T01:30:00Z")),
        None
    );
    assert!(matches!(
        crate::occurrence::plan_catch_up(&owed, ts("2025-01-01T02:30:00Z")),
        Some((_, SkipReason::PastDeadline))
    ));
}

#[test]
fn an_every_job_with_starts_at_fires_at_starts_at_then_every_interval() {
    let mut h = Harness::default();
    h.set(r#"{"name":"s","schedule":"@every 1h","starts_at":"2026-07-01T06:30:00Z"}"#);
    let entry = h.state.entry("s").unwrap().clone();
    let now = ts("2026-06-01T00:00:00Z");
    assert_eq!(entry.next_fire_after(now), Some(ts("2026-07-01T06:30:00Z")));
    assert_eq!(
        entry.next_fire_after(ts("2026-07-01T06:30:00Z")),
        Some(ts("2026-07-01T07:30:00Z"))
    );
    assert_eq!(
        entry.next_fire_after(ts("2026-07-01T08:00:00Z")),
        Some(ts("2026-07-01T08:30:00Z"))
    );
}

#[test]
fn every_phase_survives_updates_that_keep_the_schedule() {
    let mut h = Harness::default();
    let job: Job = serde_json::from_str(r#"{"name":"e","schedule":"@every 10s"}"#).unwrap();
    h.apply(Command::SetJob {
        job: Box::new(job.clone()),
        now: ts("2026-01-01T00:00:03Z"),
        refuse_when_paused: false,
    });
    h.apply(Command::SetJob {
        job: Box::new(job),
        now: ts("2026-01-01T00:00:07Z"),
        refuse_when_paused: false,
    });
    assert_eq!(h.state.jobs["e"].anchor, ts("2026-01-01T00:00:03Z"));
}

#[test]
fn commands_round_trip_through_json() {
    let job: Job = serde_json::from_str(r#"{"name":"e","schedule":"@every 10s"}"#).unwrap();
    let cmd = Command::SetJob {
        job: Box::new(job),
        now: ts(T0),
        refuse_when_paused: false,
    };
    let text = serde_json::to_string(&cmd).unwrap();
    assert!(
        text.starts_with(r#"{"type":"set_job","job":{"id":"","name":"e""#),
        "{text}"
    );
    let back: Command = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cmd);
}

#[test]
fn a_batch_applies_in_order_with_one_response_each() {
    let mut h = Harness::default();
    let job = |name: &str| -> Box<Job> {
        Box::new(
            serde_json::from_str(&format!(r#"{{"name":"{name}","schedule":"@daily"}}"#)).unwrap(),
        )
    };
    let response = h.apply(Command::Batch {
        commands: vec![
            Command::SetJob {
                job: job("a"),
                now: ts(T0),
                refuse_when_paused: false,
            },
            Command::DeleteJob {
                name: "missing".into(),
            },
            Command::SetJob {
                job: job("b"),
                now: ts(T0),
                refuse_when_paused: false,
            },
        ],
    });
    let Response::Batch { responses } = response else {
        panic!("expected a batch response");
    };
    assert_eq!(responses.len(), 3);
    assert!(matches!(responses[0], Response::Job { .. }));
    assert!(matches!(responses[1], Response::Rejected { .. }));
    assert!(h.state.jobs.contains_key("a") && h.state.jobs.contains_key("b"));
}

impl Harness {
    /// Claims occurrence `nominal` of `job` on the given nodes (one group).
    fn claim(&mut self, job: &str, nominal: &str, nodes: &[&str]) -> Response {
        let nominal = ts(nominal);
        let runs = nodes
            .iter()
            .map(|n| Execution {
                id: Execution::make_id(nominal, n),
                job_name: job.into(),
                started_at: Some(nominal),
                node_name: n.to_string(),
                group: 7,
                attempt: 1,
                ..Execution::default()
            })
            .collect();
        self.apply(Command::ClaimOccurrence {
            job: job.into(),
            nominal,
            runs,
        })
    }
}

fn verdict(r: Response) -> Verdict {
    match r {
        Response::Claimed { verdict } => verdict,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

#[test]
fn an_occurrence_is_claimed_once_and_never_before_the_ledger() {
    let mut h = Harness::default();
    h.set(r#"{"name":"j","schedule":"* * * * * *"}"#);
    assert_eq!(h.state.jobs["j"].fired_through, Some(ts(T0)));
    // Occurrences up to the job's creation are not owed.
    let err = rejected(h.claim("j", T0, &["n1"]));
    assert!(matches!(err, ApplyError::AlreadyDecided { .. }), "{err:?}");
    let v = verdict(h.claim("j", "2026-01-01T00:00:01Z", &["n1", "n2"]));
    assert!(
        matches!(&v, Verdict::Ran { executions } if executions.len() == 2),
        "{v:?}"
    );
    assert_eq!(h.state.jobs["j"].running.len(), 2);
    assert_eq!(h.records("j").len(), 2);
    // The same occurrence again (a second leader, a replayed claim) and an older one: refused,
    // and nothing changes.
    for again in ["2026-01-01T00:00:01Z", "2026-01-01T00:00:00.5Z"] {
        let before = h.state.clone();
        let err = rejected(h.claim("j", again, &["n3"]));
        assert!(matches!(err, ApplyError::AlreadyDecided { .. }), "{err:?}");
        assert_eq!(h.state, before);
    }
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:01Z"))
    );
}

#[test]
fn forbid_and_missing_targets_are_verdicts_that_move_the_ledger() {
    let mut h = Harness::default();
    h.set(r#"{"name":"f","schedule":"* * * * * *","concurrency":"forbid"}"#);
    let Verdict::Ran { executions } = verdict(h.claim("f", "2026-01-01T00:00:01Z", &["n1"])) else {
        panic!("first claim should run")
    };
    let v = verdict(h.claim("f", "2026-01-01T00:00:02Z", &["n1"]));
    assert_eq!(
        v,
        Verdict::SkippedForbid {
            running: executions
        }
    );
    assert_eq!(
        h.state.jobs["f"].running.len(),
        1,
        "the skipped one did not start"
    );
    assert_eq!(
        verdict(h.claim("f", "2026-01-01T00:00:03Z", &[])),
        Verdict::NoTarget
    );
    assert_eq!(
        h.state.jobs["f"].fired_through,
        Some(ts("2026-01-01T00:00:03Z"))
    );
}

#[test]
fn new_schedules_zones_and_reenabling_owe_nothing_from_before() {
    let mut h = Harness::default();
    h.set(r#"{"name":"j","schedule":"@every 1s"}"#);
    let later = |h: &mut Harness, json: &str, now: &str| {
        let job: Job = serde_json::from_str(json).unwrap();
        h.apply(Command::SetJob {
            job: Box::new(job),
            now: ts(now),
            refuse_when_paused: false,
        })
    };
    // An edit that keeps schedule and zone keeps the ledger: occurrences due meanwhile are
    // still owed.
    later(
        &mut h,
        r#"{"name":"j","schedule":"@every 1s","owner":"x"}"#,
        "2026-01-01T00:00:05Z",
    );
    assert_eq!(h.state.jobs["j"].fired_through, Some(ts(T0)));
    later(
        &mut h,
        r#"{"name":"j","schedule":"@every 2s"}"#,
        "2026-01-01T00:00:06Z",
    );
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:06Z"))
    );
    later(
        &mut h,
        r#"{"name":"j","schedule":"@every 2s","timezone":"Europe/Berlin"}"#,
        "2026-01-01T00:00:07Z",
    );
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:07Z"))
    );
    h.apply(Command::ToggleJob {
        name: "j".into(),
        now: Some(ts("2026-01-01T00:00:08Z")),
    });
    assert!(h.job("j").disabled);
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:07Z"))
    );
    h.apply(Command::ToggleJob {
        name: "j".into(),
        now: Some(ts("2026-01-01T00:00:20Z")),
    });
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:20Z"))
    );
    // Claims are contiguous: not the next one owed is refused, the next one is taken.
    let err = rejected(h.claim("j", "2026-01-01T00:00:24Z", &["n1"]));
    assert!(matches!(err, ApplyError::OutOfOrder { .. }), "{err:?}");
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:20Z"))
    );
    // A claim ahead of time is never moved back by an edit.
    verdict(h.claim("j", "2026-01-01T00:00:22Z", &["n1"]));
    later(
        &mut h,
        r#"{"name":"j","schedule":"@every 3s"}"#,
        "2026-01-01T00:00:21Z",
    );
    assert_eq!(
        h.state.jobs["j"].fired_through,
        Some(ts("2026-01-01T00:00:22Z"))
    );
}

#[test]
fn a_retry_moved_to_another_node_decides_the_group_without_the_old_node() {
    let mut h = Harness::default();
    h.set(r#"{"name":"m","schedule":"@daily","retries":1}"#);
    let first = h.run("m", "gone", 5, 1, "2026-01-01T00:00:01Z");
    assert!(h.finish(first.clone(), false).retry);
    let moved = Execution {
        id: Execution::make_id(ts("2026-01-01T00:00:03Z"), "n2"),
        node_name: "n2".into(),
        attempt: 2,
        ..first
    };
    let started = h.apply(Command::StartExecution {
        execution: moved.clone(),
        enforce_forbid: true,
        moved_from: Some("gone".into()),
    });
    assert!(matches!(started, Response::Started { .. }), "{started:?}");
    let outcome = h.finish(moved, true);
    assert!(outcome.group_done, "{outcome:?}");
    assert_eq!(outcome.status, "success");
    assert_eq!(h.job("m").status, "success");
}

#[test]
fn a_submission_is_refused_while_paused_and_a_restore_is_not() {
    let mut h = Harness::default();
    h.apply(Command::SetPaused { paused: true });
    let job = |name: &str| -> Box<Job> {
        Box::new(
            serde_json::from_str(&format!(r#"{{"name":"{name}","schedule":"@daily"}}"#)).unwrap(),
        )
    };
    // Decided in apply, so a create racing a pause sees the pause whatever the API saw.
    let refused = rejected(h.apply(Command::SetJob {
        job: job("submitted"),
        now: ts(T0),
        refuse_when_paused: true,
    }));
    assert_eq!(refused, ApplyError::Paused);
    assert!(refused.to_string().contains("paused"), "{refused}");
    assert!(!h.state.contains("submitted"));
    // A restore (and any entry written before the flag existed) is not subject to it.
    let restored = h.apply(Command::SetJob {
        job: job("restored"),
        now: ts(T0),
        refuse_when_paused: false,
    });
    assert!(matches!(restored, Response::Job { .. }), "{restored:?}");
    let old_entry: Command = serde_json::from_str(
        r#"{"type":"set_job","job":{"name":"old","schedule":"@daily"},"now":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert!(matches!(h.apply(old_entry), Response::Job { .. }));
    h.apply(Command::SetPaused { paused: false });
    let after = h.apply(Command::SetJob {
        job: job("submitted"),
        now: ts(T0),
        refuse_when_paused: true,
    });
    assert!(matches!(after, Response::Job { .. }), "{after:?}");
}

#[test]
fn a_finished_record_carries_only_the_output_tail() {
    let mut h = Harness::default();
    h.set(r#"{"name":"loud","schedule":"@daily"}"#);
    let mut e = h.run("loud", "n1", 1, 1, "2026-01-01T00:01:00Z");
    // A proposer that sent the whole output: apply keeps the limit's worth of its tail.
    let output = format!("{}é{}", "x".repeat(5000), "end".repeat(400));
    e.output = output.clone();
    e.output_size = output.len() as u64;
    h.finish(e.clone(), true);
    let stored = &h.executions["loud"][&e.id];
    assert!(stored.output.len() <= crate::INLINE_OUTPUT_LIMIT);
    assert!(output.ends_with(&stored.output));
    assert!(
        stored.output.len() > crate::INLINE_OUTPUT_LIMIT - 4,
        "{}",
        stored.output.len()
    );
    assert_eq!(stored.output_size, output.len() as u64);
}
