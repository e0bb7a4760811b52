//! Talking to the nodes that execute runs: a run order goes to the local worker or over the
//! RPC port, asked about again while the run goes (its lease); a replaced run is stopped where
//! it runs; a running execution's output so far is read from its node. [`Dispatch`] is the
//! handle the API starts manual runs with: on the leader they are claimed here, a follower
//! sends them to the leader, like every other run.

use std::sync::Arc;
use std::time::Duration;

use dkron_core::job::{Execution, RunParameters};

use super::Leader;
use crate::rpc::wire::{OrderAnswer, RunOrder, RunRefused, RunResult, StopOrder, WriteError};

/// How long a run whose node stops answering keeps its lease: after that the leader closes it
/// as failed, its outcome unknown.
pub const LEASE: Duration = Duration::from_secs(30);

/// A fresh run order that never reached its node (the connection failed, or the node
/// declined it while stopping): the run certainly did not start there. Holds the failure to
/// record if the run cannot go elsewhere.
#[derive(Debug)]
pub(super) struct Undelivered(pub(super) String);

impl Leader {
    /// Sends `order` to the node `execution` is placed on and waits for its result. A fresh
    /// order (`fresh`) that could not be delivered is [`Undelivered`]: it may go elsewhere.
    pub(super) async fn deliver(
        &self,
        execution: &Execution,
        order: RunOrder,
        fresh: bool,
    ) -> Result<RunResult, Undelivered> {
        let failed = |reason: &str| RunResult {
            success: false,
            output: format!("dkron: {reason}\n"),
            stopped: false,
        };
        if execution.node_name == self.members.name() {
            return match self.worker.execute(order).await {
                Ok(result) => Ok(result),
                Err(refusal) if fresh && refusal.may_run_elsewhere => {
                    Err(Undelivered(failed(&refusal.reason).output))
                }
                Err(refusal) => Ok(failed(&refusal.reason)),
            };
        }
        let node = &execution.node_name;
        match self.members.rpc_addr(node) {
            Some(addr) => self.execute_remote(node, &addr, order).await,
            None => {
                let gone = format!("node {node} is no longer a member; the run could not start");
                if fresh {
                    Err(Undelivered(failed(&gone).output))
                } else {
                    Ok(failed(&gone))
                }
            }
        }
    }

    /// Sends a run order to the node at `rpc_addr` and waits for its result, asking again
    /// each time the node answers that the run still goes (orders are idempotent). A fresh
    /// order that could not be delivered is [`Undelivered`]: the run did not start there and
    /// may go elsewhere (Dkron silently dropped such runs); a node that stops answering for
    /// [`LEASE`] after taking the order loses the run's lease: failed, its outcome unknown.
    async fn execute_remote(
        &self,
        node_name: &str,
        rpc_addr: &str,
        mut order: RunOrder,
    ) -> Result<RunResult, Undelivered> {
        let failed = |reason: String| RunResult {
            success: false,
            output: format!(
                "dkron: could not run the job on node {node_name} ({rpc_addr}): {reason}\n"
            ),
            stopped: false,
        };
        let mut last_contact = self.clock.instant();
        let mut first = true;
        loop {
            let problem = match self.rpc.execute(rpc_addr, &order).await {
                Ok(OrderAnswer::Done { result }) => return Ok(result),
                // Sent under this leader's previous term (held up on a connection to a node
                // cut off, say) and refused by a node that has heard from its current one: the
                // same run asked about under the current term, which answers it, or starts it
                // if the node never did. The run is still this leader's: a regained leadership
                // does not resume the runs this process carries.
                Ok(OrderAnswer::Refused { .. })
                    if order.fencing_token < self.leadership.term()
                        && self.leadership.is_leader() =>
                {
                    order.fencing_token = self.leadership.term();
                    order.resumed = true;
                    first = false;
                    last_contact = self.clock.instant();
                    continue;
                }
                Ok(OrderAnswer::Refused { reason }) => return Ok(failed(reason)),
                // A fresh order the node declined is free to go elsewhere; a resumed one is
                // asked about again (the node's next process knows from its journal).
                Ok(OrderAnswer::NotStarted { reason }) if first && !order.resumed => {
                    self.members.mark_unreachable(node_name);
                    return Err(Undelivered(failed(reason).output));
                }
                Ok(OrderAnswer::NotStarted { reason }) => Some(reason),
                Ok(OrderAnswer::Running) => {
                    last_contact = self.clock.instant();
                    None
                }
                // A fresh order that never got through: certainly not started. (A resumed one
                // may have been delivered by the previous leader: keep asking.)
                Err(e) if first && !order.resumed && e.is_connect() => {
                    self.members.mark_unreachable(node_name);
                    return Err(Undelivered(failed(e.to_string()).output));
                }
                Err(e) => Some(e.to_string()),
            };
            // From now on the node may know the order: ask about it, never start it afresh.
            first = false;
            order.resumed = true;
            if let Some(problem) = problem {
                if self.clock.instant().saturating_duration_since(last_contact) > LEASE {
                    return Ok(failed(format!(
                        "the node stopped answering for {} s while running it ({problem}); the run's outcome is unknown",
                        LEASE.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Stops `execution` wherever it runs; its result becomes a failure saying `reason`, not
    /// retried. Answers whether the node running it stopped it.
    pub(super) async fn stop_run(&self, execution: &Execution, reason: String) -> bool {
        let stop = StopOrder {
            job_name: execution.job_name.clone(),
            execution_id: execution.id.clone(),
            reason,
        };
        if execution.node_name == self.members.name() {
            return self
                .worker
                .stop(&stop.job_name, &stop.execution_id, stop.reason);
        }
        let Some(addr) = self.members.rpc_addr(&execution.node_name) else {
            return false;
        };
        match self.rpc.stop(&addr, &stop).await {
            Ok(stopped) => stopped,
            Err(e) => {
                tracing::warn!(job = %stop.job_name, execution = %stop.execution_id, node = %execution.node_name, error = %e, "could not reach the node to stop a run; it ends on its own or when its lease runs out");
                false
            }
        }
    }
}

/// Starts manual runs and reads live output, from any server (clones share the leader).
#[derive(Clone)]
pub struct Dispatch {
    leader: Arc<Leader>,
}

impl Dispatch {
    pub(super) fn new(leader: Arc<Leader>) -> Dispatch {
        Dispatch { leader }
    }

    /// Starts a manual run of `job` on the leader (sent there from a follower) and answers
    /// once its claim is committed: the execution ids, or why it was refused (`forbid`
    /// decided by the state machine, no leader, the job gone).
    /// `by`: who asked (an ACL token's name), recorded on the runs.
    pub async fn run_now(
        &self,
        job: &str,
        by: Option<&str>,
        parameters: Option<RunParameters>,
    ) -> Result<Vec<String>, RunRefused> {
        let leadership = &self.leader.leadership;
        let request = crate::rpc::wire::RunRequest {
            job: job.to_string(),
            started_by: by.map(str::to_string),
            parameters,
        };
        match leadership.leader() {
            Some(_) if leadership.is_leader() => self.leader.run_manual(&request).await,
            Some(l) => self.leader.rpc.run(&l.name, &l.rpc_addr, &request).await,
            None => Err(RunRefused::Write(WriteError::NoLeader)),
        }
    }

    /// A manual run sent here by a follower: run on this leader, or refused if it no longer
    /// leads (the follower's client retries).
    pub async fn run_here(
        &self,
        request: &crate::rpc::wire::RunRequest,
    ) -> Result<Vec<String>, RunRefused> {
        if self.leader.leadership.is_leader() {
            self.leader.run_manual(request).await
        } else {
            Err(RunRefused::Write(WriteError::NoLeader))
        }
    }

    /// Stops a run in progress on the node executing it, from any server (`POST
    /// /v1/jobs/:job/executions/:id/stop`): it is recorded as failed with `reason` and not
    /// retried. Answers whether that node stopped it.
    pub async fn stop(&self, execution: &Execution, reason: String) -> bool {
        self.leader.stop_run(execution, reason).await
    }

    /// What a run in progress printed so far, asked of the node executing it (`None` if
    /// that node cannot be reached or no longer knows the run).
    pub async fn live_output(&self, execution: &Execution) -> Option<String> {
        let leader = &self.leader;
        if execution.node_name == leader.members.name() {
            return leader.worker.output(&execution.job_name, &execution.id);
        }
        let addr = leader.members.rpc_addr(&execution.node_name)?;
        leader
            .rpc
            .output(&addr, &execution.job_name, &execution.id)
            .await
    }
}
