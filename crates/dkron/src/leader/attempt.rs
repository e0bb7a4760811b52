//! One claimed run, from its order to its recorded result: wait for the nominal instant, send
//! the order (moving the run if it could not be delivered), run the processors on the output,
//! keep the whole output locally, record the result through Raft (which cuts it to a tail),
//! notify, then retry or trigger the children as the state machine decided.

use std::sync::Arc;
use std::time::Duration;

use dkron_core::INLINE_OUTPUT_LIMIT;
use dkron_core::command::{Command, FinishOutcome, Response};
use dkron_core::job::{Execution, Job, tail_utf8};
use tracing::{info, warn};

use super::Leader;
use super::dispatch::Undelivered;
use super::moves::Move;
use super::notify::Report;
use crate::rpc::wire::{RunOrder, RunResult};
use crate::telemetry::metrics;

/// Back-off before attempt `next_attempt`: 1 s, 2 s, 4 s, ... capped at 64 s.
pub fn retry_backoff(next_attempt: u32) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(6);
    Duration::from_secs(1u64 << exp)
}

impl Leader {
    /// Executes a claimed run, records its result, then retries (claiming the next attempt)
    /// or triggers the children, as the state machine decided. `resumed`: the run was
    /// started under a previous leader, whose order may have reached its node.
    #[tracing::instrument(name = "execution", skip_all, fields(job = %execution.job_name, execution_id = %execution.id, node = %execution.node_name))]
    pub(super) async fn execute_claimed(self: Arc<Self>, execution: Execution, resumed: bool) {
        // Claimed ahead of time: wait for the nominal instant.
        if let Some(start) = execution.started_at
            && let Ok(wait) = Duration::try_from(start.duration_since(self.clock.now()))
        {
            tokio::time::sleep(wait).await;
        }
        // Boxed: most of a run's life is the wait above, and a thousand runs wait at once;
        // the attempt's larger state exists only once it starts.
        Box::pin(self.attempts(execution, resumed)).await;
    }

    /// The attempts of a claimed run, from its nominal instant: deliver, record, retry.
    async fn attempts(self: Arc<Self>, mut execution: Execution, mut resumed: bool) {
        // The job's status before this trigger, for `notify_on: on_change` (read once: a
        // failed attempt that is retried notifies nobody, so its status is not the one to
        // compare with).
        let previous_status = self
            .state
            .read(|s| s.entry(&execution.job_name).map(|e| e.job.status.clone()))
            .unwrap_or_default();
        // Moves of this attempt to another node (its order could not be delivered).
        let mut moves = 0;
        let mut moved = false;
        loop {
            let Some(job) = self.state.job(&execution.job_name) else {
                self.track(&execution, false);
                return;
            };
            if !resumed && !moved {
                self.starting(&job, &execution);
            }
            let order = self.order_for(&job, &execution, resumed);
            // Only a fresh order's run may move: a resumed one may have been delivered by the
            // previous leader and be running there. Only the first order of a resumed run is
            // a resumption; retries are new runs.
            let fresh = !resumed;
            resumed = false;
            let result = match Box::pin(self.deliver(&execution, order, fresh)).await {
                Ok(result) => result,
                Err(Undelivered(failure)) => {
                    match Box::pin(self.move_undelivered(&execution, moves)).await {
                        Move::Moved(to) => {
                            execution = *to;
                            moves += 1;
                            moved = true;
                            continue;
                        }
                        Move::Nowhere => RunResult {
                            success: false,
                            output: failure,
                            stopped: false,
                        },
                        // Whether the move committed is unknown, or another leader owns the run
                        // now: that leader resumes it and records its result; recording one here
                        // could finish it twice.
                        Move::Abandoned => {
                            self.track(&execution, false);
                            return;
                        }
                    }
                }
            };
            let Some(outcome) =
                Box::pin(self.record(&job, &execution, result, &previous_status)).await
            else {
                return;
            };
            if outcome.retry {
                let attempt = execution.attempt + 1;
                let wait = retry_backoff(attempt);
                info!(job = %job.name, attempt, wait_ms = wait.as_millis() as u64, "run failed; retrying");
                tokio::time::sleep(wait).await;
                let Some(next) = Box::pin(self.claim_retry(&execution, attempt)).await else {
                    return;
                };
                execution = next;
                moves = 0;
                moved = false;
                continue;
            }
            for child in outcome.dependents {
                self.trigger_dependent(child);
            }
            return;
        }
    }

    /// A run starts (each attempt, not a move): its lateness, the pre-webhook and Cronitor.
    fn starting(&self, job: &Job, execution: &Execution) {
        if execution.attempt <= 1
            && let Some(nominal) = execution.scheduled_at
        {
            let late = self.clock.now().duration_since(nominal);
            metrics::fired_late(Duration::try_from(late).unwrap_or_default());
        }
        self.notifier().started(&Report {
            job,
            execution,
            group: &[],
            reporting_node: self.members.name(),
        });
    }

    fn order_for(&self, job: &Job, execution: &Execution, resumed: bool) -> RunOrder {
        let mut config = job.executor_config();
        if let Some(parameters) = &execution.parameters {
            parameters.apply(&mut config);
        }
        RunOrder {
            job_name: execution.job_name.clone(),
            executor: job.executor.clone(),
            config,
            execution_id: execution.id.clone(),
            scheduled_time: execution
                .scheduled_at
                .or(execution.started_at)
                .unwrap_or_else(|| self.clock.now())
                .to_string(),
            fencing_token: self.leadership.term(),
            resumed,
            started_at: execution.started_at,
        }
    }

    /// Records a run's result: the processors' output kept whole on this node, the result
    /// through Raft, metrics and notifications. Answers what the state machine decided
    /// follows, or `None` if the result could not be recorded.
    async fn record(
        &self,
        job: &Job,
        execution: &Execution,
        result: RunResult,
        previous_status: &str,
    ) -> Option<FinishOutcome> {
        let finished = self.clock.now();
        let output = super::processors::apply(
            &self.processors,
            &job.processors,
            &super::processors::Finished {
                execution: &Execution {
                    finished_at: Some(finished),
                    ..execution.clone()
                },
                success: result.success,
                reporting_node: self.members.name(),
            },
            result.output,
        )
        .await;
        if let Err(e) = self
            .outputs
            .put(&job.name, &execution.id, output.clone())
            .await
        {
            warn!(job = %job.name, error = %format!("{e:#}"), "could not keep the full output; only its tail is recorded");
        }
        // Only the tail travels through the log (the state machine cuts anything longer too).
        let done = Execution {
            success: result.success,
            finished_at: Some(finished),
            output: tail_utf8(&output, INLINE_OUTPUT_LIMIT).to_string(),
            output_size: output.len() as u64,
            ..execution.clone()
        };
        let recorded = self
            .proposer
            .write(Command::FinishExecution {
                execution: done.clone(),
                stopped: result.stopped,
            })
            .await;
        self.track(execution, false);
        let outcome = match recorded {
            Ok(Response::Finished(outcome)) => outcome,
            Ok(other) => {
                warn!(job = %job.name, response = ?other, "run result not recorded");
                return None;
            }
            Err(e) => {
                warn!(job = %job.name, error = %e, "could not record the run's result");
                return None;
            }
        };
        metrics::execution_finished(
            &job.name,
            done.success,
            done.started_at
                .and_then(|s| Duration::try_from(finished.duration_since(s)).ok())
                .unwrap_or_default(),
        );
        let whole = Execution { output, ..done };
        self.notify_finished(job, whole, &outcome, previous_status)
            .await;
        Some(outcome)
    }

    /// Cronitor's ping for every attempt; email and webhook once the last attempt finished.
    /// `done` carries the whole output (after processors), not the replicated tail.
    async fn notify_finished(
        &self,
        job: &Job,
        done: Execution,
        outcome: &FinishOutcome,
        previous_status: &str,
    ) {
        let notifier = self.notifier();
        let reporting_node = self.members.name();
        notifier.attempt_finished(&Report {
            job,
            execution: &done,
            group: &[],
            reporting_node,
        });
        if outcome.retry || !notifier.notifies_finished() {
            return;
        }
        // Read on a blocking thread: it waits for the state writer to commit what it holds.
        let (state, name) = (self.state.clone(), job.name.clone());
        let group: Vec<Execution> = tokio::task::spawn_blocking(move || state.executions(&name))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.group == done.group)
            .collect();
        notifier.finished(
            &Report {
                job,
                execution: &done,
                group: &group,
                reporting_node,
            },
            previous_status,
            &self.notify_decisions,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn of three arguments returns.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Runs are claimed ahead of their nominal instant and wait for it as tasks, thousands at
    /// once at 2,000 runs/s; the delivery and recording state is boxed until the run starts
    /// (it was 5 KB per waiting run before).
    #[test]
    fn a_run_waiting_for_its_nominal_instant_holds_little_memory() {
        let size = future_size(Leader::execute_claimed);
        assert!(size <= 1536, "execute_claimed's future is {size} bytes");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(2), Duration::from_secs(1));
        assert_eq!(retry_backoff(3), Duration::from_secs(2));
        assert_eq!(retry_backoff(4), Duration::from_secs(4));
        assert_eq!(retry_backoff(40), Duration::from_secs(64));
    }
}
