//! The executing side: run orders on the node that executes them (servers and agents alike).
//!
//! A run order is idempotent by (job, execution id): the first one starts the run, in a task
//! of its own so it outlives the connection that asked for it; the same order again (a new
//! leader resuming the runs its predecessor had started) waits for that run's result, or gets
//! it at once if the run already finished. So a leader change neither kills nor repeats a run,
//! and its result is not lost with the leader that ordered it.
//!
//! A resumed order for a run this process never saw is run late if it never started on this
//! node: the [start journal](journal) records each run durably before it starts, so after a
//! restart the node knows. A run the journal lists (it started before the restart, and its
//! result died with the process) is refused as lost, never run twice. Without a journal that
//! covers the run's due time, it is run only if this process was already up when the run was
//! due (so the order was never delivered); otherwise it is refused as lost.
//!
//! Finished results stay in this process's memory only briefly when the journal keeps them
//! on disk ([`table::RESULT_IN_MEMORY`]); a repeated order after that is answered from the
//! journal, so memory does not grow with the run rate.
//!
//! Orders from a leader whose term is older than the newest seen are refused (fencing).
//!
//! - [`table`]: what to do with each order, decided from what this process has seen.
//! - [`journal`]: the start journal (`started.redb`).
//! - [`routes`]: `/rpc/execute`, `/rpc/stop`, `/rpc/output` on the RPC port.

pub mod journal;
pub mod routes;
mod table;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::SharedClock;
use crate::rpc::wire::{OrderAnswer, RunOrder, RunResult};
pub use journal::StartJournal;
pub use table::RESULT_RETENTION;
use table::{Decision, Key, SKEW, Slot, Table};

/// Bytes of output captured per run (Dkron keeps the last 256,000).
pub const CAPTURE_LIMIT: usize = 256_000;

/// How long a graceful shutdown waits for runs in progress on this node (Docker sends
/// SIGKILL 10 s after SIGTERM).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After its last run ends, how long a draining node keeps answering so the leader collects
/// the result.
const COLLECT_WINDOW: Duration = Duration::from_millis(500);

/// Executes run orders on this node; see the module docs.
pub struct OrderExecutor {
    clock: SharedClock,
    /// When this process started taking orders.
    up_since: Timestamp,
    highest_fencing_token: AtomicU64,
    table: Arc<Mutex<Table>>,
    tasks: Mutex<JoinSet<()>>,
    /// Runs this node started, recorded before each starts (`None`: no data dir to keep it).
    journal: Option<Arc<StartJournal>>,
    /// The executors this node runs (`--executors`); empty: all.
    executors: Vec<String>,
    /// Broker connections the plugin executors keep between runs.
    connections: dkron_executors::Connections,
    /// This node's external executor plugins.
    plugins: dkron_executors::Plugins,
}

impl OrderExecutor {
    pub fn new(clock: SharedClock) -> OrderExecutor {
        OrderExecutor {
            up_since: clock.now(),
            clock,
            highest_fencing_token: AtomicU64::new(0),
            table: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
            journal: None,
            executors: Vec::new(),
            connections: Default::default(),
            plugins: Default::default(),
        }
    }

    /// Runs only orders for these executors (`--executors`; empty: every executor).
    pub fn with_executors(mut self, executors: &[String]) -> OrderExecutor {
        self.executors = executors.to_vec();
        self
    }

    /// Runs jobs whose executor is one of `plugins` on them.
    pub fn with_plugins(mut self, plugins: dkron_executors::Plugins) -> OrderExecutor {
        self.plugins = plugins;
        self
    }

    /// Records every run in `journal` before it starts, and asks it about resumed orders.
    pub fn with_journal(mut self, journal: StartJournal) -> OrderExecutor {
        self.journal = Some(Arc::new(journal));
        self.table.lock().expect("orders lock").keep_results = table::RESULT_IN_MEMORY;
        self
    }

    /// Stops the start journal (node shutdown, after [`OrderExecutor::abort_all`]): no run
    /// starts after this.
    pub async fn close(&self) {
        if let Some(journal) = &self.journal {
            journal.close().await;
        }
    }

    /// Runs (or joins) the order and waits for its result.
    pub async fn execute(&self, order: RunOrder) -> Result<RunResult, Refusal> {
        match self.begin(order)? {
            Begun::Finished(result) => Ok(result),
            Begun::Running(mut rx) => wait_result(&mut rx).await.map_err(Refusal::refused),
        }
    }

    /// Runs (or joins) the order and answers within `hold`: the result, or that it still runs.
    pub async fn answer(&self, order: RunOrder, hold: Duration) -> OrderAnswer {
        let outcome = match self.begin(order) {
            Err(Refusal {
                reason,
                may_run_elsewhere: true,
            }) => return OrderAnswer::NotStarted { reason },
            Err(refusal) => Err(refusal.reason),
            Ok(Begun::Finished(result)) => Ok(result),
            Ok(Begun::Running(mut rx)) => {
                match tokio::time::timeout(hold, wait_result(&mut rx)).await {
                    Ok(outcome) => outcome,
                    Err(_) => return OrderAnswer::Running,
                }
            }
        };
        match outcome {
            Ok(result) => OrderAnswer::Done { result },
            Err(reason) => OrderAnswer::Refused { reason },
        }
    }

    fn begin(&self, order: RunOrder) -> Result<Begun, Refusal> {
        if !self.executors.is_empty() && !self.executors.contains(&order.executor) {
            return Err(Refusal::refused(format!(
                "refused: this node runs only the executors {} (--executors), not {}",
                self.executors.join(", "),
                order.executor
            )));
        }
        let newest = self
            .highest_fencing_token
            .fetch_max(order.fencing_token, Ordering::SeqCst);
        if order.fencing_token < newest {
            return Err(Refusal::refused(format!(
                "refused: run order from leader term {} but term {newest} was already seen; the sender is no longer leader",
                order.fencing_token
            )));
        }
        // Asked only of runs this process does not know: a repeated order for a run it
        // forgot, or a run a new leader resumed. Vouched for only if due SKEW after the
        // journal was created, so a data dir wiped under the same name does not make a run
        // started before the wipe look never started: the same clock assumption as the
        // process-start rule (a larger margin refused as lost every run resumed in a node's
        // first minutes).
        // One instant for both looks at the table: a result past its time in memory is
        // dropped before `knows` is asked, never between it and `decide` (which made a
        // resumed order for a run finished over RESULT_IN_MEMORY ago, arriving before any
        // other order, skip the journal and run again: seen after leader changes at 4,000
        // runs/s).
        let now = self.clock.now();
        let known = || {
            let mut table = self.table.lock().expect("orders lock");
            table.expire(now);
            table.knows(&order.job_name, &order.execution_id)
        };
        let recorded = match (&self.journal, order.started_at) {
            (Some(journal), Some(due)) if !known() => {
                journal.recorded(&order.job_name, &order.execution_id, due, SKEW)
            }
            _ => None,
        };
        let decision =
            self.table
                .lock()
                .expect("orders lock")
                .decide(&order, self.up_since, now, recorded);
        match decision {
            Decision::Answer(result) => Ok(Begun::Finished(result)),
            Decision::Refuse(reason) => Err(Refusal::refused(reason)),
            Decision::Decline(reason) => Err(Refusal {
                reason,
                may_run_elsewhere: true,
            }),
            Decision::Wait(rx) => Ok(Begun::Running(rx)),
            Decision::Start(tx) => {
                let rx = tx.subscribe();
                self.start(order, tx);
                Ok(Begun::Running(rx))
            }
        }
    }

    /// Runs the order in a task of its own, so it outlives the connection that ordered it.
    fn start(&self, order: RunOrder, tx: watch::Sender<Option<RunResult>>) {
        let slot = SlotGuard {
            key: (order.job_name.clone(), order.execution_id.clone()),
            table: self.table.clone(),
            finished: false,
        };
        let ctx = dkron_executors::RunContext {
            job_name: order.job_name,
            execution_id: order.execution_id,
            scheduled_time: order.scheduled_time,
            fencing_token: order.fencing_token,
            output_limit: CAPTURE_LIMIT,
            live: Default::default(),
            connections: self.connections.clone(),
            plugins: self.plugins.clone(),
        };
        let (executor, config) = (order.executor, order.config);
        let clock = self.clock.clone();
        let journal = self.journal.clone().zip(order.started_at);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<String>();
        {
            let mut table = self.table.lock().expect("orders lock");
            table.stops.insert(slot.key.clone(), stop_tx);
            table.live.insert(slot.key.clone(), ctx.live.clone());
        }
        let mut tasks = self.tasks.lock().expect("order tasks lock");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            // Durably recorded before it starts, so a restarted node never runs it twice.
            if let Some((journal, due)) = &journal
                && let Err(e) = journal.mark(&ctx.job_name, &ctx.execution_id, *due).await
            {
                tracing::error!(job = %ctx.job_name, execution = %ctx.execution_id, error = %format!("{e:#}"), "cannot record a run's start in the start journal; the run is not started. Check the data dir's disk");
                let result = RunResult {
                    success: false,
                    output: format!("dkron: not run: this node could not record the run's start on its disk ({e:#})\n"),
                    stopped: false,
                };
                slot.finish(result.clone(), clock.now());
                let _ = tx.send(Some(result));
                return;
            }
            // Dropping the executor's future kills the run's process group.
            let result = tokio::select! {
                outcome = dkron_executors::execute(&executor, &config, &ctx) => RunResult {
                    success: outcome.success,
                    output: outcome.output,
                    stopped: false,
                },
                Ok(reason) = stop_rx => RunResult {
                    success: false,
                    output: format!("dkron: {reason}\n"),
                    stopped: true,
                },
            };
            if let Some((journal, due)) = &journal {
                journal.finish(&ctx.job_name, &ctx.execution_id, *due, &result);
            }
            slot.finish(result.clone(), clock.now());
            let _ = tx.send(Some(result));
        });
    }

    /// Stops one run in progress; its result is a failure whose output is `reason`. `false`
    /// if this node is not running it.
    pub fn stop(&self, job: &str, execution_id: &str, reason: String) -> bool {
        let key = (job.to_string(), execution_id.to_string());
        let stop = self.table.lock().expect("orders lock").stops.remove(&key);
        stop.is_some_and(|s| s.send(reason).is_ok())
    }

    /// What a run in progress on this node printed so far (its tail); `None` once it ended
    /// (its output then comes from the record the leader writes, after the job's processors,
    /// which may keep it out of the API) or if this node does not know the run.
    pub fn output(&self, job: &str, execution_id: &str) -> Option<String> {
        let key = (job.to_string(), execution_id.to_string());
        let table = self.table.lock().expect("orders lock");
        table
            .live
            .get(&key)
            .map(dkron_executors::LiveOutput::snapshot)
    }

    /// Graceful shutdown: declines orders for runs this node does not know (the leader places
    /// them elsewhere), then waits up to `grace` for the runs in progress to finish. Returns
    /// how many are still running.
    pub async fn drain(&self, grace: Duration) -> usize {
        let running = || {
            let mut table = self.table.lock().expect("orders lock");
            table.closing = true;
            table
                .slots
                .values()
                .filter(|s| matches!(s, Slot::Running(_)))
                .count()
        };
        let n = running();
        if n == 0 {
            return 0;
        }
        tracing::info!(
            runs = n,
            grace_s = grace.as_secs(),
            "waiting for runs in progress to finish before shutting down"
        );
        let deadline = self.clock.instant() + grace;
        loop {
            let n = running();
            if n > 0 && self.clock.instant() >= deadline {
                tracing::warn!(
                    runs = n,
                    "runs still going at shutdown are stopped; they are recorded as failed"
                );
                return n;
            }
            if n == 0 {
                // A leader between two asks (it asks again at once after each "running"
                // answer) still finds the results here.
                tokio::time::sleep(COLLECT_WINDOW).await;
                return 0;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every run in progress (node shutdown); whoever waits for them is told so. From
    /// now on orders for runs this node does not know are declined (not started), so the
    /// leader places them elsewhere.
    pub fn abort_all(&self) {
        self.table.lock().expect("orders lock").closing = true;
        self.tasks.lock().expect("order tasks lock").abort_all();
    }
}

/// Why an order was not taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: String,
    /// Certainly not started here and never will be, so the leader may place it on another
    /// node. Otherwise it may have run here, or the sender must not act at all (fenced).
    pub may_run_elsewhere: bool,
}

impl Refusal {
    fn refused(reason: String) -> Refusal {
        Refusal {
            reason,
            may_run_elsewhere: false,
        }
    }
}

enum Begun {
    Finished(RunResult),
    Running(watch::Receiver<Option<RunResult>>),
}

async fn wait_result(rx: &mut watch::Receiver<Option<RunResult>>) -> Result<RunResult, String> {
    match rx.wait_for(Option::is_some).await {
        Ok(result) => Ok(result.clone().expect("waited for a result")),
        Err(_) => Err("the run was interrupted: the executing node is shutting down".into()),
    }
}

/// Moves a run's slot to finished, or frees it if the run's task is dropped without a result.
struct SlotGuard {
    key: Key,
    table: Arc<Mutex<Table>>,
    finished: bool,
}

impl SlotGuard {
    fn finish(mut self, result: RunResult, now: Timestamp) {
        self.finished = true;
        if let Ok(mut table) = self.table.lock() {
            table.finish(self.key.clone(), result, now);
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(mut table) = self.table.lock() {
            table.forget(&self.key);
        }
    }
}
