//! A new leader resumes the runs its predecessor left running.

use std::sync::Arc;

use dkron_core::job::Execution;
use tracing::info;

use super::Leader;

impl Leader {
    /// Called when this node becomes leader: resumes every run the state records as running
    /// that this process is not carrying. Each one's order is sent again to its node, which
    /// answers with the run's result if it ran or is running (orders are idempotent by
    /// execution id), runs it now if the order never reached it, or refuses it as lost if the
    /// node restarted since; a node that is gone yields a failed result naming it. Either way
    /// the run is closed and a `forbid` job is never blocked by a run that no longer exists
    /// (Dkron issue #1939), and a run claimed by a leader that died before dispatching it
    /// still runs, once.
    pub(super) fn resume_running_runs(self: &Arc<Self>) {
        let running: Vec<Execution> = self
            .state
            .all_running()
            .into_iter()
            .filter(|e| !self.is_carried_here(e))
            .collect();
        for execution in running {
            info!(job = %execution.job_name, execution = %execution.id, node = %execution.node_name, "resuming a run started under the previous leader");
            self.track(&execution, true);
            self.spawn_run(self.clone().execute_claimed(execution, true));
        }
    }
}
