//! Runs a job: picks target nodes, claims each run in the replicated state, executes it,
//! keeps the output locally, records the result, then retries or triggers children as the
//! state machine decided.

use std::sync::Arc;
use std::time::Duration;

use dkron_core::command::{ApplyError, Command, Response, Verdict};
use dkron_core::job::{Execution, tail_utf8};
use dkron_core::placement::{Candidate, select_target_nodes};
use dkron_core::timefmt::unix_nanos;
use jiff::Timestamp;
use rand::Rng;
use tracing::{info, warn};

use crate::node::{Node, Undelivered};
use crate::orders::{RunOrder, RunResult};
use crate::outputs::INLINE_OUTPUT_LIMIT;

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// The scheduler fired the occurrence due at `nominal`.
    Scheduled { nominal: Timestamp },
    /// `POST /v1/jobs/:job` or `runoncreate`.
    Manual,
    /// A parent's group succeeded.
    Dependent,
}

/// The members a job may run on.
fn candidates(node: &Node) -> Vec<Candidate> {
    node.members()
        .into_iter()
        .map(|m| Candidate {
            alive: m.alive,
            name: m.name,
            tags: m.tags,
        })
        .collect()
}

/// One run to start: a job on a target node, for one trigger.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub execution: Execution,
}

/// Decides the runs of one trigger of `job_name` (targets from its tags), without IO.
/// `None`: nothing to claim (the job is gone, or disabled and the trigger is not manual);
/// an empty plan: no alive node matches the job's tags.
///
/// `now` stamps the runs (their ids are `<start ns>-<node>`): catch-up occurrences of one job
/// planned in the same pass get distinct instants.
pub fn plan_trigger(
    node: &Node,
    job_name: &str,
    trigger: Trigger,
    now: Timestamp,
) -> Option<Vec<PlannedRun>> {
    let Some(job) = node
        .state
        .read(|s| s.jobs.get(job_name).map(|e| e.job.clone()))
    else {
        warn!(job = %job_name, "job vanished before it could run");
        return None;
    };
    if job.disabled && trigger != Trigger::Manual {
        info!(job = %job_name, ?trigger, "skipping run: the job is disabled");
        return None;
    }
    let members = candidates(node);
    let mut rng = rand::rng();
    let targets = select_target_nodes(job.tags.as_ref(), &members, |n| rng.random_range(0..n));
    if targets.is_empty() {
        warn!(
            job = %job_name,
            tags = ?job.tags,
            "no target nodes found to run job: compare the job's tags with the nodes' tags (GET /v1/members)"
        );
        return Some(Vec::new());
    }
    let group = unix_nanos(now);
    let scheduled_at = match trigger {
        Trigger::Scheduled { nominal } => Some(nominal),
        _ => None,
    };
    // A run claimed ahead of time starts at its nominal time.
    let starts = scheduled_at.map_or(now, |t| t.max(now));
    Some(
        targets
            .into_iter()
            .map(|target| PlannedRun {
                execution: Execution {
                    id: Execution::make_id(starts, &target.name),
                    job_name: job_name.to_string(),
                    started_at: Some(starts),
                    node_name: target.name.clone(),
                    group,
                    attempt: 1,
                    scheduled_at,
                    ..Execution::default()
                },
            })
            .collect(),
    )
}

/// Starts every run of one manual or dependent trigger of `job_name` and returns without
/// waiting for them. (Scheduled occurrences go through [`claim_occurrences`].)
pub fn run_job(node: Arc<Node>, job_name: String, trigger: Trigger) {
    let runs = plan_trigger(&node, &job_name, trigger, node.clock.now()).unwrap_or_default();
    if !runs.is_empty() {
        let task_node = node.clone();
        node.spawn_run(async move { claim_and_start(task_node, runs).await });
    }
}

/// Proposes `commands` as one log entry (one consensus round however many there are) and
/// answers one response per command, or nothing if the write failed. With `local_only` the
/// commands are proposed on this node or not at all: a deposed leader's claims must not
/// reach its successor, whose own catch-up decides those occurrences.
async fn write_all(node: &Node, mut commands: Vec<Command>, local_only: bool) -> Vec<Response> {
    let count = commands.len();
    let write = async |command: Command| {
        if local_only {
            node.write_local(command).await.map(|(r, _)| r)
        } else {
            node.write(command).await
        }
    };
    let answers = if count == 1 {
        let command = commands.pop().expect("one command");
        write(command).await.map(|r| vec![r])
    } else {
        match write(Command::Batch { commands }).await {
            Ok(Response::Batch { responses }) => Ok(responses),
            Ok(other) => Ok(vec![other]),
            Err(e) => Err(e),
        }
    };
    match answers {
        Ok(a) if a.len() == count => a,
        Ok(a) => {
            warn!(
                expected = count,
                got = a.len(),
                "write answered with the wrong number of results; runs not started"
            );
            Vec::new()
        }
        Err(e) => {
            warn!(error = %e, commands = count, "could not record the runs' start; they did not run (the next leader resumes from the fire ledger)");
            Vec::new()
        }
    }
}

/// One scheduled occurrence to claim in the fire ledger, with its planned runs (empty: no
/// eligible node, which the ledger records as such).
pub struct Occurrence {
    pub job: String,
    pub nominal: Timestamp,
    pub runs: Vec<PlannedRun>,
}

/// Claims scheduled occurrences in the fire ledger, all in one log entry, then starts the
/// runs of each occurrence the ledger granted.
pub async fn claim_occurrences(node: Arc<Node>, occurrences: Vec<Occurrence>) {
    let t0 = node.clock.now();
    // Tracked before the claim commits, so a concurrent orphan sweep never mistakes these
    // runs for ones lost by a restart.
    for run in occurrences.iter().flat_map(|o| &o.runs) {
        node.track_execution(&run.execution, true);
    }
    let commands = occurrences
        .iter()
        .map(|o| Command::ClaimOccurrence {
            job: o.job.clone(),
            nominal: o.nominal,
            runs: o.runs.iter().map(|r| r.execution.clone()).collect(),
        })
        .collect();
    let mut answers = write_all(&node, commands, true).await.into_iter();
    if let Some(first) = occurrences.first() {
        tracing::debug!(
            occurrences = occurrences.len(),
            planned_ms = t0.duration_since(first.nominal).as_secs_f64() * 1000.0,
            claimed_ms = node.clock.now().duration_since(first.nominal).as_secs_f64() * 1000.0,
            "claimed"
        );
    }
    for occurrence in occurrences {
        let started = match answers.next() {
            Some(Response::Claimed {
                verdict: Verdict::Ran { .. },
            }) => true,
            Some(Response::Claimed {
                verdict: Verdict::SkippedForbid { running },
            }) => {
                info!(job = %occurrence.job, nominal = %occurrence.nominal, ?running, "skipping occurrence: the previous run is still going and concurrency is forbid");
                false
            }
            Some(Response::Claimed {
                verdict: Verdict::NoTarget,
            }) => false,
            Some(Response::Rejected {
                error: ApplyError::AlreadyDecided { .. },
            }) => {
                info!(job = %occurrence.job, nominal = %occurrence.nominal, "occurrence already decided by the fire ledger; not firing it again");
                false
            }
            Some(Response::Rejected {
                error: ApplyError::OutOfOrder { expected, .. },
            }) => {
                info!(job = %occurrence.job, nominal = %occurrence.nominal, ?expected, "an earlier occurrence is still owed; the scheduler claims it first");
                node.resync_schedule(&occurrence.job);
                false
            }
            Some(other) => {
                warn!(job = %occurrence.job, response = ?other, "occurrence not started");
                node.resync_schedule(&occurrence.job);
                false
            }
            // The claim was not written: the occurrence is still owed.
            None => {
                node.resync_schedule(&occurrence.job);
                false
            }
        };
        if started {
            let ids: Vec<String> = occurrence
                .runs
                .iter()
                .map(|r| r.execution.id.clone())
                .collect();
            replace_running(&node, &occurrence.job, &ids);
        }
        for run in occurrence.runs {
            if started {
                node.spawn_run(execute_claimed(node.clone(), run.execution, false));
            } else {
                node.track_execution(&run.execution, false);
            }
        }
    }
}

/// Claims all `runs` of a manual or dependent trigger in one log entry, then starts each
/// claimed run.
pub async fn claim_and_start(node: Arc<Node>, runs: Vec<PlannedRun>) {
    for run in &runs {
        node.track_execution(&run.execution, true);
    }
    let commands = runs
        .iter()
        .map(|r| Command::StartExecution {
            execution: r.execution.clone(),
            enforce_forbid: true,
            moved_from: None,
        })
        .collect();
    let mut answers = write_all(&node, commands, false).await.into_iter();
    for run in runs {
        let claimed = match answers.next() {
            Some(Response::Started { .. }) => true,
            Some(Response::Rejected {
                error: ApplyError::AlreadyRunning { .. },
            }) => {
                info!(job = %run.execution.job_name, "skipping run: the previous run is still going and concurrency is forbid");
                false
            }
            Some(other) => {
                warn!(job = %run.execution.job_name, response = ?other, "run not started");
                false
            }
            None => false,
        };
        if claimed {
            replace_running(
                &node,
                &run.execution.job_name,
                std::slice::from_ref(&run.execution.id),
            );
            node.spawn_run(execute_claimed(node.clone(), run.execution, false));
        } else {
            node.track_execution(&run.execution, false);
        }
    }
}

/// `concurrency: replace`: once new runs of `job` are claimed, stops the others still
/// going; each ends as a failure saying it was replaced.
fn replace_running(node: &Arc<Node>, job: &str, new_ids: &[String]) {
    let older: Vec<Execution> = node.state.read(|s| {
        s.jobs
            .get(job)
            .filter(|e| e.job.replaces_running())
            .map(|e| {
                e.running
                    .values()
                    .filter(|r| !new_ids.contains(&r.id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    });
    for run in older {
        let reason = format!(
            "stopped: replaced by a newer run of the job ({}); its concurrency is replace",
            new_ids.join(", ")
        );
        info!(job = %job, execution = %run.id, node = %run.node_name, "stopping a run replaced by a newer one");
        let node = node.clone();
        tokio::spawn(async move { node.stop_run(&run, reason).await });
    }
}

/// Back-off before attempt `next_attempt`: 1 s, 2 s, 4 s, ... capped at one minute.
pub fn retry_backoff(next_attempt: u32) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(6);
    Duration::from_secs(1u64 << exp)
}

/// Executes a claimed run, records its result, then retries (claiming the next attempt) or
/// triggers the children, as the state machine decided.
#[tracing::instrument(name = "execution", skip_all, fields(job = %execution.job_name, execution_id = %execution.id, node = %execution.node_name))]
async fn execute_claimed(node: Arc<Node>, mut execution: Execution, mut resumed: bool) {
    // Claimed ahead of time: wait for the nominal instant.
    if let Some(start) = execution.started_at {
        let wait = start.duration_since(node.clock.now());
        if let Ok(wait) = Duration::try_from(wait) {
            tokio::time::sleep(wait).await;
        }
    }
    // The job's status before this trigger, for `notify_on: on_change` (read once: a failed
    // attempt that is retried notifies nobody, so its status is not the one to compare with).
    let previous_status = node
        .state
        .read(|s| {
            s.jobs
                .get(&execution.job_name)
                .map(|e| e.job.status.clone())
        })
        .unwrap_or_default();
    // Moves of this attempt to another node (its order could not be delivered).
    let mut moves = 0;
    let mut moved = false;
    loop {
        let Some(job) = node
            .state
            .read(|s| s.jobs.get(&execution.job_name).map(|e| e.job.clone()))
        else {
            node.track_execution(&execution, false);
            return;
        };
        if !resumed && !moved {
            if execution.attempt <= 1
                && let Some(nominal) = execution.scheduled_at
            {
                let late = node.clock.now().duration_since(nominal);
                crate::metrics::fired_late(Duration::try_from(late).unwrap_or_default());
            }
            node.notifier().started(&crate::notify::Report {
                job: &job,
                execution: &execution,
                group: &[],
                reporting_node: node.name(),
            });
        }
        let job_name = execution.job_name.clone();
        let order = RunOrder {
            job_name: job_name.clone(),
            executor: job.executor.clone(),
            config: job.executor_config(),
            execution_id: execution.id.clone(),
            scheduled_time: execution
                .scheduled_at
                .or(execution.started_at)
                .unwrap_or_else(|| node.clock.now())
                .to_string(),
            fencing_token: node.raft.metrics().borrow().current_term,
            resumed,
            started_at: execution.started_at,
        };
        // Only a fresh order's run may move: a resumed one may have been delivered by the
        // previous leader and be running there.
        let fresh = !resumed;
        // Only the first order of a resumed run is a resumption; retries are new runs.
        resumed = false;
        let delivered = if execution.node_name == node.name() {
            match node.execute_order(order).await {
                Ok(result) => Ok(result),
                Err(refusal) if fresh && refusal.may_run_elsewhere => {
                    Err(Undelivered(format!("dkron: {}\n", refusal.reason)))
                }
                Err(refusal) => Ok(RunResult {
                    success: false,
                    output: format!("dkron: {}\n", refusal.reason),
                }),
            }
        } else {
            let gone = format!(
                "dkron: node {} is no longer a member; the run could not start\n",
                execution.node_name
            );
            match node.member_rpc_addr(&execution.node_name) {
                Some(addr) => {
                    node.execute_remote(&execution.node_name, &addr, order)
                        .await
                }
                None if fresh => Err(Undelivered(gone)),
                None => Ok(RunResult {
                    success: false,
                    output: gone,
                }),
            }
        };
        let outcome = match delivered {
            Ok(result) => result,
            Err(Undelivered(failure)) => match move_undelivered(&node, &execution, moves).await {
                Move::Moved(to) => {
                    execution = to;
                    moves += 1;
                    moved = true;
                    continue;
                }
                Move::Nowhere => RunResult {
                    success: false,
                    output: failure,
                },
                // Whether the move committed is unknown, or another leader owns the run now:
                // that leader resumes it and records its result; recording one here could
                // finish it twice.
                Move::Abandoned => {
                    node.track_execution(&execution, false);
                    return;
                }
            },
        };
        let finished = node.clock.now();
        let output = crate::processors::apply(
            &node.config.processors,
            &job.processors,
            &crate::processors::Finished {
                execution: &Execution {
                    finished_at: Some(finished),
                    ..execution.clone()
                },
                success: outcome.success,
                reporting_node: node.name(),
            },
            outcome.output,
        )
        .await;
        if let Err(e) = node
            .outputs
            .put(&job_name, &execution.id, output.clone())
            .await
        {
            warn!(job = %job_name, error = %format!("{e:#}"), "could not keep the full output; only its tail is recorded");
        }
        let done = Execution {
            success: outcome.success,
            finished_at: Some(finished),
            output: tail_utf8(&output, INLINE_OUTPUT_LIMIT).to_string(),
            output_size: output.len() as u64,
            ..execution.clone()
        };
        let recorded = node
            .write(Command::FinishExecution {
                execution: done.clone(),
            })
            .await;
        node.track_execution(&execution, false);
        let outcome = match recorded {
            Ok(Response::Finished(outcome)) => outcome,
            Ok(other) => {
                warn!(job = %job_name, response = ?other, "run result not recorded");
                return;
            }
            Err(e) => {
                warn!(job = %job_name, error = %e, "could not record the run's result");
                return;
            }
        };
        crate::metrics::execution_finished(
            &job_name,
            done.success,
            done.started_at
                .and_then(|s| Duration::try_from(finished.duration_since(s)).ok())
                .unwrap_or_default(),
        );
        let notifier = node.notifier();
        notifier.attempt_finished(&crate::notify::Report {
            job: &job,
            execution: &done,
            group: &[],
            reporting_node: node.name(),
        });
        if !outcome.retry && notifier.notifies_finished() {
            let group: Vec<Execution> = node
                .state
                .executions(&job_name)
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.group == done.group)
                .collect();
            // The whole output (after processors), not the tail the replicated record holds.
            let full = Execution {
                output,
                ..done.clone()
            };
            notifier.finished(
                &crate::notify::Report {
                    job: &job,
                    execution: &full,
                    group: &group,
                    reporting_node: node.name(),
                },
                &previous_status,
            );
        }
        if outcome.retry {
            let attempt = execution.attempt + 1;
            let wait = retry_backoff(attempt);
            info!(job = %job_name, attempt, wait_ms = wait.as_millis() as u64, "run failed; retrying");
            tokio::time::sleep(wait).await;
            let Some(next) = claim_retry(&node, &execution, attempt).await else {
                return;
            };
            execution = next;
            moves = 0;
            moved = false;
            continue;
        }
        for child in outcome.dependents {
            run_job(node.clone(), child, Trigger::Dependent);
        }
        return;
    }
}

/// Most times one attempt moves because its order could not be delivered.
const MAX_MOVES: u32 = 3;

/// What became of an attempt to move an undelivered run.
enum Move {
    /// Recorded on another node; send the order there.
    Moved(Execution),
    /// No other node qualifies (or the moves are used up): record the run as failed.
    Nowhere,
    /// The move was not recorded (this node no longer leads, or the outcome of the write is
    /// unknown): leave the run to the leader that owns it.
    Abandoned,
}

/// Moves a run whose order never reached its node to another eligible node (recorded in the
/// replicated state, keeping its execution id, so it still runs once).
async fn move_undelivered(node: &Arc<Node>, execution: &Execution, moves: u32) -> Move {
    if moves >= MAX_MOVES {
        return Move::Nowhere;
    }
    let Some(to) = retry_target(node, execution) else {
        return Move::Nowhere;
    };
    let moved = node
        .write_local(Command::MoveExecution {
            job: execution.job_name.clone(),
            execution_id: execution.id.clone(),
            from: execution.node_name.clone(),
            to: to.clone(),
        })
        .await;
    match moved {
        Ok((Response::Started { execution: moved }, _)) => {
            info!(job = %execution.job_name, execution = %execution.id, from = %execution.node_name, to = %to, "the run's order did not reach its node; the run moves to another eligible node");
            Move::Moved(moved)
        }
        other => {
            warn!(job = %execution.job_name, execution = %execution.id, result = ?other.map(|(r, _)| r), "could not move an undelivered run; the leader that owns it resumes it");
            Move::Abandoned
        }
    }
}

/// Where the next attempt (or an undelivered run) of `previous` goes: on the same node while
/// it is alive and reachable, else on another node matching the job's tags that is not
/// already running this trigger. `None`: stay (no other node qualifies).
fn retry_target(node: &Node, previous: &Execution) -> Option<String> {
    let members = candidates(node);
    if members
        .iter()
        .any(|m| m.name == previous.node_name && m.alive)
    {
        return None;
    }
    let (tags, busy) = node.state.read(|s| {
        let entry = s.jobs.get(&previous.job_name)?;
        let busy: Vec<String> = entry
            .groups
            .get(&previous.group)
            .map(|g| g.nodes.keys().cloned().collect())
            .unwrap_or_default();
        Some((entry.job.tags.clone(), busy))
    })?;
    let others: Vec<Candidate> = members
        .into_iter()
        .filter(|m| !busy.contains(&m.name))
        .collect();
    let mut rng = rand::rng();
    let eligible = select_target_nodes(tags.as_ref(), &others, |n| rng.random_range(0..n));
    if eligible.is_empty() {
        return None;
    }
    let pick = eligible[rng.random_range(0..eligible.len())];
    Some(pick.name.clone())
}

/// Claims attempt `attempt` of the same group, on the same node or, if that node is gone or
/// unreachable, on another eligible one.
async fn claim_retry(node: &Arc<Node>, previous: &Execution, attempt: u32) -> Option<Execution> {
    let now = node.clock.now();
    let moved_to = retry_target(node, previous);
    if let Some(to) = &moved_to {
        info!(job = %previous.job_name, from = %previous.node_name, to = %to, attempt, "node unreachable: the retry moves to another eligible node");
    }
    let node_name = moved_to.unwrap_or_else(|| previous.node_name.clone());
    let execution = Execution {
        id: Execution::make_id(now, &node_name),
        node_name,
        started_at: Some(now),
        finished_at: None,
        success: false,
        output: String::new(),
        output_size: 0,
        attempt,
        ..previous.clone()
    };
    node.track_execution(&execution, true);
    match node
        .write(Command::StartExecution {
            execution: execution.clone(),
            enforce_forbid: true,
            moved_from: Some(previous.node_name.clone()),
        })
        .await
    {
        Ok(Response::Started { .. }) => Some(execution),
        other => {
            node.track_execution(&execution, false);
            warn!(job = %execution.job_name, result = ?other, "retry not started");
            None
        }
    }
}

/// Called when this node becomes leader: resumes every run the state records as running
/// that this process is not executing. Each one's order is sent again to its node, which
/// answers with the run's result if it ran or is running (orders are idempotent by execution
/// id), runs it now if the order never reached it, or refuses it as lost if the node
/// restarted since; a node that is gone yields a failed result naming it. Either way the run
/// is closed and a `forbid` job is never blocked by a run that no longer exists (Dkron issue
/// #1939), and a run claimed by a leader that died before dispatching it still runs, once.
pub fn resume_running_runs(node: &Arc<Node>) {
    let running: Vec<Execution> = node.state.read(|s| {
        s.jobs
            .values()
            .flat_map(|e| e.running.values())
            .filter(|e| !node.is_executing_here(e))
            .cloned()
            .collect()
    });
    for execution in running {
        info!(job = %execution.job_name, execution = %execution.id, node = %execution.node_name, "resuming a run started under the previous leader");
        node.track_execution(&execution, true);
        node.spawn_run(execute_claimed(node.clone(), execution, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(2), Duration::from_secs(1));
        assert_eq!(retry_backoff(3), Duration::from_secs(2));
        assert_eq!(retry_backoff(4), Duration::from_secs(4));
        assert_eq!(retry_backoff(40), Duration::from_secs(64));
    }
}
