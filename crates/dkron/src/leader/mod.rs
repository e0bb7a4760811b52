//! The leader's work: scheduling, claiming and running every run, and what follows a run.
//! It runs on every server but acts only while this server leads (the scheduler starts when
//! leadership is gained and the state machine has caught up, and stops when it is lost);
//! manual runs asked of a follower are sent here.
//!
//! - `scheduler.rs`: the due queue (`dkron_core::due`) driven by the clock; claims what is
//!   due, catch-up first.
//! - `claim.rs`: claims occurrences and manual or dependent triggers in one log entry each,
//!   then starts the runs the state machine granted (`forbid` is decided there).
//! - `attempt.rs`: one claimed run from its order to its recorded result, then its retries or
//!   its children.
//! - `moves.rs`: a run whose order could not be delivered moves to another eligible node; a
//!   retry moves off a node that became unreachable.
//! - `resume.rs`: a new leader resumes the runs its predecessor left running.
//! - `dispatch.rs`: sending run orders to the node that executes them, with the run's lease;
//!   stopping a run; its live output. [`Dispatch`] is the handle the API starts runs with.
//! - `notify.rs`, `processors.rs`: notifications and output processors, bounded, never
//!   blocking.

mod attempt;
mod claim;
mod dispatch;
mod lag;
mod moves;
pub mod notify;
pub mod processors;
mod resume;
mod scheduler;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use dkron_core::job::{Execution, StringMap};
use tokio::sync::Notify;
use tokio::task::JoinSet;

pub use dispatch::{Dispatch, LEASE};
pub use lag::Lag;

use crate::clock::SharedClock;
use crate::cluster::Members;
use crate::config::AgentConfig;
use crate::raft::{Leadership, Proposer, StateReader};
use crate::rpc::RpcClient;
use crate::shutdown::Shutdown;
use crate::storage::OutputStore;
use crate::worker::OrderExecutor;

/// What the leader's work needs, built once by the server.
pub struct Parts {
    pub proposer: Proposer,
    pub state: StateReader,
    pub leadership: Leadership,
    pub members: Members,
    /// Runs orders placed on this node.
    pub worker: Arc<OrderExecutor>,
    pub rpc: RpcClient,
    pub outputs: OutputStore,
    pub clock: SharedClock,
    /// Where the scheduler says how far behind schedule it is.
    pub lag: Lag,
}

/// The leader's shared context: handles, and the runs this process is carrying.
pub struct Leader {
    proposer: Proposer,
    state: StateReader,
    leadership: Leadership,
    members: Members,
    worker: Arc<OrderExecutor>,
    rpc: RpcClient,
    outputs: OutputStore,
    clock: SharedClock,
    /// The node's global processors (a job's own entries of the same name replace them).
    processors: BTreeMap<String, StringMap>,
    /// Email, webhook and Cronitor notifications (sent while this node leads); replaced when
    /// SIGHUP reloads the configuration.
    notifier: RwLock<Arc<notify::Notifier>>,
    /// What the notify policy decided for each finished execution (kept across reloads).
    notify_decisions: notify::Decisions,
    /// Runs this process carries, so shutdown can stop them (`None` once it did: nothing
    /// starts after that).
    runs: Mutex<Option<JoinSet<()>>>,
    /// Runs executing under this process, so a new leader can tell its own live runs from
    /// runs orphaned by a restart. Keyed by job and id: ids (`<start ns>-<node>`) repeat
    /// across jobs started at the same instant.
    in_flight: Mutex<HashSet<(String, String)>>,
    /// Jobs whose next claim failed or was refused: the scheduler searches their next
    /// occurrence from the ledger again.
    resync: Mutex<BTreeSet<String>>,
    resync_wake: Notify,
    lag: Lag,
}

impl Leader {
    pub fn new(parts: Parts, config: &AgentConfig) -> Arc<Leader> {
        let notifier = notify::Notifier::new(config, parts.rpc.http().clone());
        Arc::new(Leader {
            proposer: parts.proposer,
            state: parts.state,
            leadership: parts.leadership,
            members: parts.members,
            worker: parts.worker,
            rpc: parts.rpc,
            outputs: parts.outputs,
            clock: parts.clock,
            processors: config.processors.clone(),
            notifier: RwLock::new(Arc::new(notifier)),
            notify_decisions: notify::Decisions::default(),
            runs: Mutex::new(Some(JoinSet::new())),
            in_flight: Mutex::new(HashSet::new()),
            resync: Mutex::new(BTreeSet::new()),
            resync_wake: Notify::new(),
            lag: parts.lag,
        })
    }

    /// The handle the API starts runs with.
    pub fn dispatch(self: &Arc<Self>) -> Dispatch {
        Dispatch::new(self.clone())
    }

    /// The leader's task: waits for leadership, resumes what its predecessor left running,
    /// schedules until leadership is lost, and again.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut watch = self.leadership.watch();
        loop {
            let gained = tokio::select! {
                gained = watch.gained() => gained,
                () = shutdown.requested() => return,
            };
            let Ok(previous) = gained else { return };
            if let Some(previous) = previous {
                // Placing new runs on it would fail them; runs it had claimed are resumed.
                self.members.skip_in_placement(&previous);
            }
            // Serve from a state machine that has applied everything the previous leader did.
            if !self.leadership.ensure_linearizable().await {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            self.resume_running_runs();
            tracing::info!(node = %self.members.name(), "became leader; scheduler started");
            self.lead(&mut watch).await;
            tracing::info!(node = %self.members.name(), "no longer leader; scheduler stopped");
        }
    }

    /// What the notify policy decided for the executions this node finished as leader.
    pub fn notify_decisions(&self) -> &notify::Decisions {
        &self.notify_decisions
    }

    /// SIGHUP: the notification settings of a re-read configuration.
    pub fn reload(&self, config: &AgentConfig) {
        let notifier = notify::Notifier::new(config, self.rpc.http().clone());
        *self.notifier.write().expect("notifier lock") = Arc::new(notifier);
    }

    fn notifier(&self) -> Arc<notify::Notifier> {
        self.notifier.read().expect("notifier lock").clone()
    }

    /// Stops collecting the runs in progress (a leader that handed over: the successor
    /// resumed them and collects each result; this one collecting them too would report each
    /// twice).
    pub fn abandon_runs(&self) {
        if let Some(runs) = self.runs.lock().expect("runs lock").as_mut() {
            runs.abort_all();
        }
    }

    /// Stops every run task of this process and waits until they are gone; none starts
    /// after this.
    pub async fn stop_runs(&self) {
        let runs = self.runs.lock().expect("runs lock").take();
        if let Some(mut runs) = runs {
            runs.abort_all();
            while runs.join_next().await.is_some() {}
        }
    }

    /// Runs a run task that shutdown can stop; `false` (and nothing runs) once it did.
    fn spawn_run(&self, run: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut runs = self.runs.lock().expect("runs lock");
        let Some(runs) = runs.as_mut() else {
            return false;
        };
        while runs.try_join_next().is_some() {}
        runs.spawn(run);
        true
    }

    /// Marks a run as carried by this process (`true`) or done (`false`).
    fn track(&self, execution: &Execution, running: bool) {
        let key = (execution.job_name.clone(), execution.id.clone());
        let mut set = self.in_flight.lock().expect("in-flight lock");
        if running {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    fn is_carried_here(&self, execution: &Execution) -> bool {
        let key = (execution.job_name.clone(), execution.id.clone());
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .contains(&key)
    }

    /// Asks the scheduler to search `job`'s next occurrence from the fire ledger again (its
    /// last claim was not written or was refused, so an occurrence may still be owed).
    fn resync_schedule(&self, job: &str) {
        self.resync
            .lock()
            .expect("resync lock")
            .insert(job.to_string());
        self.resync_wake.notify_one();
    }

    fn take_resync(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.resync.lock().expect("resync lock"))
    }
}

/// A uniform random index below `n` (placement's `pick`).
fn pick(n: usize) -> usize {
    use rand::Rng;
    rand::rng().random_range(0..n.max(1))
}
