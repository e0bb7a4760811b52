//! Where runs go when their node cannot take them: a fresh order that could not be delivered
//! moves its run to another eligible node (`MoveExecution`, same execution id, so the
//! occurrence still runs once), and a retry moves off a node that became unreachable or left.
//! The choice is the core's (`dkron_core::plan::retry_target`).

use dkron_core::command::{Command, Response};
use dkron_core::job::Execution;
use dkron_core::plan::{next_attempt, retry_target};
use tracing::{info, warn};

use super::Leader;

/// Most times one attempt moves because its order could not be delivered.
const MAX_MOVES: u32 = 3;

/// What became of an attempt to move an undelivered run.
pub(super) enum Move {
    /// Recorded on another node; send the order there.
    Moved(Box<Execution>),
    /// No other node qualifies (or the moves are used up): record the run as failed.
    Nowhere,
    /// The move was not recorded (this node no longer leads, or the outcome of the write is
    /// unknown): leave the run to the leader that owns it.
    Abandoned,
}

impl Leader {
    /// Where the next attempt (or an undelivered run) of `previous` goes: `None` to stay.
    fn retry_target(&self, previous: &Execution) -> Option<String> {
        let members = self.members.candidates();
        self.state.read(|s| {
            let entry = s.entry(&previous.job_name)?;
            retry_target(entry, previous, &members, super::pick)
        })
    }

    /// Moves a run whose order never reached its node to another eligible node (recorded in
    /// the replicated state, keeping its execution id, so it still runs once). Proposed here
    /// only: a resumed run never moves, and a leader that lost leadership must not move runs
    /// its successor owns.
    pub(super) async fn move_undelivered(&self, execution: &Execution, moves: u32) -> Move {
        if moves >= MAX_MOVES {
            return Move::Nowhere;
        }
        let Some(to) = self.retry_target(execution) else {
            return Move::Nowhere;
        };
        let moved = self
            .proposer
            .write_here(Command::MoveExecution {
                job: execution.job_name.clone(),
                execution_id: execution.id.clone(),
                from: execution.node_name.clone(),
                to: to.clone(),
            })
            .await;
        match moved {
            Ok((Response::Started { execution: moved }, _)) => {
                info!(job = %execution.job_name, execution = %execution.id, from = %execution.node_name, to = %to, "the run's order did not reach its node; the run moves to another eligible node");
                Move::Moved(Box::new(moved))
            }
            other => {
                warn!(job = %execution.job_name, execution = %execution.id, result = ?other.map(|(r, _)| r), "could not move an undelivered run; the leader that owns it resumes it");
                Move::Abandoned
            }
        }
    }

    /// Claims attempt `attempt` of the same group, on the same node or, if that node is gone
    /// or unreachable, on another eligible one.
    pub(super) async fn claim_retry(
        &self,
        previous: &Execution,
        attempt: u32,
    ) -> Option<Execution> {
        let moved_to = self.retry_target(previous);
        if let Some(to) = &moved_to {
            info!(job = %previous.job_name, from = %previous.node_name, to = %to, attempt, "node unreachable: the retry moves to another eligible node");
        }
        let node = moved_to.unwrap_or_else(|| previous.node_name.clone());
        let execution = next_attempt(previous, node, attempt, self.clock.now());
        self.track(&execution, true);
        let started = self
            .proposer
            .write(Command::StartExecution {
                execution: execution.clone(),
                enforce_forbid: true,
                moved_from: Some(previous.node_name.clone()),
            })
            .await;
        match started {
            Ok(Response::Started { .. }) => Some(execution),
            other => {
                self.track(&execution, false);
                warn!(job = %execution.job_name, result = ?other, "retry not started");
                None
            }
        }
    }
}
