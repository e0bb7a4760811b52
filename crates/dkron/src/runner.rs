//! Runs a job: picks target nodes, claims each run in the replicated state, executes it,
//! keeps the output locally, records the result, then retries or triggers children as the
//! state machine decided.

use std::sync::Arc;
use std::time::Duration;

use dkron_core::command::{ApplyError, Command, Response};
use dkron_core::job::{Execution, tail_utf8};
use dkron_core::placement::{Candidate, select_target_nodes};
use dkron_core::timefmt::unix_nanos;
use dkron_executors::RunContext;
use jiff::Timestamp;
use rand::Rng;
use tracing::{info, warn};

use crate::node::Node;
use crate::outputs::{CAPTURE_LIMIT, INLINE_OUTPUT_LIMIT};

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

/// The members a job may run on. A single server knows only itself for now.
fn candidates(node: &Node) -> Vec<Candidate> {
    vec![Candidate {
        name: node.name().to_string(),
        alive: true,
        tags: node.tags(),
    }]
}

/// Starts every run of one trigger of `job_name` and returns without waiting for them.
pub fn run_job(node: Arc<Node>, job_name: String, trigger: Trigger) {
    let Some(job) = node
        .state
        .read(|s| s.jobs.get(&job_name).map(|e| e.job.clone()))
    else {
        warn!(job = %job_name, "job vanished before it could run");
        return;
    };
    if job.disabled && trigger != Trigger::Manual {
        info!(job = %job_name, ?trigger, "skipping run: the job is disabled");
        return;
    }
    let members = candidates(&node);
    let mut rng = rand::rng();
    let targets: Vec<String> =
        select_target_nodes(job.tags.as_ref(), &members, |n| rng.random_range(0..n))
            .into_iter()
            .map(|c| c.name.clone())
            .collect();
    if targets.is_empty() {
        warn!(
            job = %job_name,
            tags = ?job.tags,
            "no target nodes found to run job: compare the job's tags with the nodes' tags (GET /v1/members)"
        );
        return;
    }
    let group = unix_nanos(node.clock.now());
    let scheduled_at = match trigger {
        Trigger::Scheduled { nominal } => Some(nominal),
        _ => None,
    };
    for target in targets {
        node.spawn_run(run_on_node(
            node.clone(),
            job_name.clone(),
            target,
            group,
            scheduled_at,
            1,
        ));
    }
}

/// Back-off before attempt `next_attempt`: 1 s, 2 s, 4 s, ... capped at one minute.
pub fn retry_backoff(next_attempt: u32) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(6);
    Duration::from_secs(1u64 << exp)
}

async fn run_on_node(
    node: Arc<Node>,
    job_name: String,
    target: String,
    group: i64,
    scheduled_at: Option<Timestamp>,
    first_attempt: u32,
) {
    let mut attempt = first_attempt;
    loop {
        let Some(job) = node
            .state
            .read(|s| s.jobs.get(&job_name).map(|e| e.job.clone()))
        else {
            return;
        };
        let started = node.clock.now();
        let execution = Execution {
            id: Execution::make_id(started, &target),
            job_name: job_name.clone(),
            started_at: Some(started),
            node_name: target.clone(),
            group,
            attempt,
            scheduled_at,
            ..Execution::default()
        };
        // Tracked before the claim commits, so a concurrent orphan sweep never mistakes this
        // run for one lost by a restart.
        node.track_execution(&execution.id, true);
        let claim = node
            .write(Command::StartExecution {
                execution: execution.clone(),
                enforce_forbid: true,
            })
            .await;
        if !matches!(claim, Ok(Response::Started { .. })) {
            node.track_execution(&execution.id, false);
        }
        match claim {
            Ok(Response::Started { .. }) => {}
            Ok(Response::Rejected {
                error: ApplyError::AlreadyRunning { .. },
            }) => {
                info!(job = %job_name, "skipping run: the previous run is still going and concurrency is forbid");
                return;
            }
            Ok(other) => {
                warn!(job = %job_name, response = ?other, "run not started");
                return;
            }
            Err(e) => {
                warn!(job = %job_name, error = %e, "could not record the run's start; it did not run");
                return;
            }
        }
        let ctx = RunContext {
            job_name: job_name.clone(),
            execution_id: execution.id.clone(),
            scheduled_time: scheduled_at.unwrap_or(started).to_string(),
            fencing_token: node.raft.metrics().borrow().current_term,
            output_limit: CAPTURE_LIMIT,
        };
        let outcome = dkron_executors::execute(&job.executor, &job.executor_config(), &ctx).await;
        let finished = node.clock.now();
        let outputs = node.outputs.clone();
        let (job_key, id_key, full) = (
            job_name.clone(),
            execution.id.clone(),
            outcome.output.clone(),
        );
        match tokio::task::spawn_blocking(move || outputs.put(&job_key, &id_key, &full)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(job = %job_name, error = %e, "could not keep the full output; only its tail is recorded")
            }
            Err(e) => warn!(job = %job_name, error = %e, "output writer failed"),
        }
        let done = Execution {
            success: outcome.success,
            finished_at: Some(finished),
            output: tail_utf8(&outcome.output, INLINE_OUTPUT_LIMIT).to_string(),
            output_size: outcome.output.len() as u64,
            ..execution
        };
        let outcome = match node
            .write(Command::FinishExecution { execution: done })
            .await
        {
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
        if outcome.retry {
            attempt += 1;
            let wait = retry_backoff(attempt);
            info!(job = %job_name, attempt, wait_ms = wait.as_millis() as u64, "run failed; retrying");
            tokio::time::sleep(wait).await;
            continue;
        }
        for child in outcome.dependents {
            run_job(node.clone(), child, Trigger::Dependent);
        }
        return;
    }
}

/// Closes, as failed, the runs recorded as running on this node that this process is not
/// executing: they were lost when the node stopped. Called when this node becomes leader,
/// so a `forbid` job is never blocked by a run that no longer exists (Dkron issue #1939).
pub async fn close_orphaned_runs(node: &Arc<Node>) {
    let orphans: Vec<Execution> = node.state.read(|s| {
        s.jobs
            .values()
            .flat_map(|e| e.running.values())
            .filter(|e| e.node_name == node.name() && !node.is_executing_here(&e.id))
            .cloned()
            .collect()
    });
    for orphan in orphans {
        let reason = format!(
            "dkron: this run was lost because node {} stopped while it was running; it was closed as failed when the node came back",
            orphan.node_name
        );
        warn!(job = %orphan.job_name, execution = %orphan.id, "closing a run lost by a restart as failed");
        let closed = Execution {
            success: false,
            finished_at: Some(node.clock.now()),
            output_size: reason.len() as u64,
            output: reason,
            ..orphan.clone()
        };
        match node.write(Command::FinishExecution { execution: closed }).await {
            Ok(Response::Finished(outcome)) if outcome.retry => {
                node.spawn_run(run_on_node(
                    node.clone(),
                    orphan.job_name.clone(),
                    orphan.node_name.clone(),
                    orphan.group,
                    orphan.scheduled_at,
                    orphan.attempt + 1,
                ));
            }
            Ok(Response::Finished(outcome)) => {
                for child in outcome.dependents {
                    run_job(node.clone(), child, Trigger::Dependent);
                }
            }
            Ok(_) => {}
            Err(e) => warn!(job = %orphan.job_name, error = %e, "could not close a lost run; it will be retried at the next leadership change"),
        }
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
