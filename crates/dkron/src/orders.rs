//! Run orders on the node that executes them (servers and agents alike).
//!
//! A run order is idempotent by (job, execution id): the first one starts the run, in a task
//! of its own so it outlives the connection that asked for it; the same order again (a new
//! leader resuming the runs its predecessor had started) waits for that run's result, or gets
//! it at once if the run already finished. So a leader change neither kills nor repeats a run,
//! and its result is not lost with the leader that ordered it.
//!
//! A resumed order for a run this process never saw is run late if it never started on this
//! node: the [start journal](crate::journal) records each run durably before it starts, so
//! after a restart the node knows. A run the journal lists (it started before the restart, and
//! its result died with the process) is refused as lost, never run twice. Without a journal
//! that covers the run's due time, it is run only if this process was already up when the run
//! was due (so the order was never delivered); otherwise it is refused as lost.
//!
//! Orders from a leader whose term is older than the newest seen are refused (fencing).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::SharedClock;
use crate::journal::StartJournal;

/// A run order sent by the leader to the node that executes it (`/rpc/execute`). Output
/// comes back in the answer, never through the Raft log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunOrder {
    pub job_name: String,
    pub executor: String,
    pub config: BTreeMap<String, String>,
    pub execution_id: String,
    /// RFC 3339 UTC nominal time.
    pub scheduled_time: String,
    /// The leader's term: a node refuses orders older than the newest it has seen.
    pub fencing_token: u64,
    /// Sent again by a new leader for a run its predecessor had claimed.
    #[serde(default)]
    pub resumed: bool,
    /// When the run was due to start (the claim's `started_at`).
    #[serde(default)]
    pub started_at: Option<Timestamp>,
}

/// Asks the executing node to stop a run (`/rpc/stop`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StopOrder {
    pub job_name: String,
    pub execution_id: String,
    /// Becomes the stopped run's output.
    pub reason: String,
}

/// What the executing node answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    pub success: bool,
    pub output: String,
}

/// What `/rpc/execute` answers: the result, a refusal, or "still running, ask again" after
/// holding the request for a while, so no connection waits for a whole long run and the
/// leader hears from the node regularly (the run's lease).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum OrderAnswer {
    Done {
        result: RunResult,
    },
    Refused {
        reason: String,
    },
    /// Not started and never will be here (the node is shutting down): the leader may place
    /// the run on another node.
    NotStarted {
        reason: String,
    },
    Running,
}

/// How long `/rpc/execute` holds a request before answering [`OrderAnswer::Running`].
pub const HOLD: Duration = Duration::from_secs(10);

/// How long a run whose node stops answering keeps its lease: after that the leader closes it
/// as failed, its outcome unknown.
pub const LEASE: Duration = Duration::from_secs(30);

/// How long a finished run's result is kept for a resumed order, and how long after its
/// start a never-seen resumed order may still run.
pub const RESULT_RETENTION: Duration = Duration::from_secs(600);

/// Output bytes kept across finished results; beyond it the oldest outputs are dropped (the
/// leader that ordered the run normally has the output already).
const KEPT_OUTPUT_BUDGET: usize = 8 << 20;

/// After its last run ends, how long a draining node keeps answering so the leader collects
/// the result.
const COLLECT_WINDOW: Duration = Duration::from_millis(500);

/// Clock skew tolerated between the leader that stamped `started_at` and this node.
const SKEW: SignedDuration = SignedDuration::from_secs(1);

type Key = (String, String);

enum Slot {
    Running(watch::Receiver<Option<RunResult>>),
    Done(RunResult),
}

/// What to do with an order, decided from the table.
enum Decision {
    Wait(watch::Receiver<Option<RunResult>>),
    Answer(RunResult),
    Start(watch::Sender<Option<RunResult>>),
    Refuse(String),
    /// Not started here, and never will be.
    Decline(String),
}

/// Orders seen by this process: running ones, and finished ones for [`RESULT_RETENTION`].
#[derive(Default)]
struct Table {
    slots: HashMap<Key, Slot>,
    /// How to stop each running run (with the reason that becomes its output).
    stops: HashMap<Key, tokio::sync::oneshot::Sender<String>>,
    /// What each running run printed so far.
    live: HashMap<Key, dkron_executors::LiveOutput>,
    /// Finished runs, oldest first, with when they finished.
    finished: VecDeque<(Key, Timestamp)>,
    kept_output: usize,
    /// The node is shutting down: runs it does not know are declined.
    closing: bool,
}

impl Table {
    /// `started_here`: what the start journal says of a resumed order (`None`: it cannot say).
    fn decide(
        &mut self,
        order: &RunOrder,
        up_since: Timestamp,
        now: Timestamp,
        started_here: Option<bool>,
    ) -> Decision {
        self.expire(now);
        let key = (order.job_name.clone(), order.execution_id.clone());
        match self.slots.get(&key) {
            Some(Slot::Running(rx)) => return Decision::Wait(rx.clone()),
            Some(Slot::Done(result)) => return Decision::Answer(result.clone()),
            None => {}
        }
        if self.closing {
            return Decision::Decline(
                "this node is shutting down; the run was not started here".into(),
            );
        }
        if order.resumed {
            let retention = SignedDuration::try_from(RESULT_RETENTION).unwrap_or_default();
            match started_here {
                Some(true) => {
                    return Decision::Refuse(
                        "this run was lost: it started on this node before the node restarted, and its result died with the process; it is closed as failed rather than run twice".into(),
                    );
                }
                // Never started here: run it now, late, once.
                Some(false) => {}
                None => {
                    let delivered_before = order.started_at.is_none_or(|t| t < up_since + SKEW);
                    if delivered_before {
                        return Decision::Refuse(
                            "this run was lost: the node restarted after the run was due, so whether it ran is unknown; it is closed as failed rather than run twice".into(),
                        );
                    }
                }
            }
            if order.started_at.is_some_and(|t| t < now - retention) {
                return Decision::Refuse(
                    "this run was lost: its result is no longer known on this node; it is closed as failed rather than run twice".into(),
                );
            }
        }
        let (tx, rx) = watch::channel(None);
        self.slots.insert(key, Slot::Running(rx));
        Decision::Start(tx)
    }

    fn finish(&mut self, key: Key, result: RunResult, now: Timestamp) {
        self.stops.remove(&key);
        self.live.remove(&key);
        self.kept_output += result.output.len();
        self.slots.insert(key.clone(), Slot::Done(result));
        self.finished.push_back((key, now));
        // Over budget: drop the oldest outputs, keep their outcome.
        let mut i = 0;
        while self.kept_output > KEPT_OUTPUT_BUDGET && i < self.finished.len() {
            let key = &self.finished[i].0;
            if let Some(Slot::Done(r)) = self.slots.get_mut(key) {
                self.kept_output -= r.output.len();
                r.output = "dkron: output no longer kept by the executing node\n".into();
                self.kept_output += r.output.len();
            }
            i += 1;
        }
    }

    /// A run whose task ended without a result (aborted at shutdown).
    fn forget(&mut self, key: &Key) {
        self.stops.remove(key);
        self.live.remove(key);
        if matches!(self.slots.get(key), Some(Slot::Running(_))) {
            self.slots.remove(key);
        }
    }

    fn expire(&mut self, now: Timestamp) {
        let retention = SignedDuration::try_from(RESULT_RETENTION).unwrap_or_default();
        while let Some((key, at)) = self.finished.front() {
            if *at + retention > now {
                break;
            }
            if let Some(Slot::Done(r)) = self.slots.remove(key) {
                self.kept_output -= r.output.len();
            }
            self.finished.pop_front();
        }
    }
}

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
        }
    }

    /// Records every run in `journal` before it starts, and asks it about resumed orders.
    pub fn with_journal(mut self, journal: StartJournal) -> OrderExecutor {
        self.journal = Some(Arc::new(journal));
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
        let newest = self
            .highest_fencing_token
            .fetch_max(order.fencing_token, Ordering::SeqCst);
        if order.fencing_token < newest {
            return Err(Refusal::refused(format!(
                "refused: run order from leader term {} but term {newest} was already seen; the sender is no longer leader",
                order.fencing_token
            )));
        }
        let started_here = match (&self.journal, order.started_at) {
            (Some(journal), Some(due)) if order.resumed => {
                // Vouched for only if due SKEW after the journal was created, so a data dir
                // wiped under the same name does not make a run started before the wipe look
                // never started: the same clock assumption as the process-start rule (a
                // larger margin refused as lost every run resumed in a node's first minutes).
                journal.started(&order.job_name, &order.execution_id, due, SKEW)
            }
            _ => None,
        };
        let decision = self.table.lock().expect("orders lock").decide(
            &order,
            self.up_since,
            self.clock.now(),
            started_here,
        );
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
            output_limit: crate::outputs::CAPTURE_LIMIT,
            live: Default::default(),
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
            if let Some((journal, due)) = journal
                && let Err(e) = journal.mark(&ctx.job_name, &ctx.execution_id, due).await
            {
                tracing::error!(job = %ctx.job_name, execution = %ctx.execution_id, error = %format!("{e:#}"), "cannot record a run's start in the start journal; the run is not started. Check the data dir's disk");
                let result = RunResult {
                    success: false,
                    output: format!("dkron: not run: this node could not record the run's start on its disk ({e:#})\n"),
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
                },
                Ok(reason) = stop_rx => RunResult {
                    success: false,
                    output: format!("dkron: {reason}\n"),
                },
            };
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
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let n = running();
            if n > 0 && tokio::time::Instant::now() >= deadline {
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

/// The RPC routes every node (server or agent) serves for run orders: `/rpc/execute`,
/// `/rpc/stop`, and `/rpc/output` (what a run printed so far, for the dashboard).
pub fn router(orders: Arc<OrderExecutor>) -> axum::Router {
    use axum::Json;
    use axum::extract::State;
    use axum::routing::post;
    axum::Router::new()
        .route(
            "/rpc/execute",
            post(
                async |State(orders): State<Arc<OrderExecutor>>, Json(order): Json<RunOrder>| {
                    Json(orders.answer(order, HOLD).await)
                },
            ),
        )
        .route(
            "/rpc/stop",
            post(
                async |State(orders): State<Arc<OrderExecutor>>, Json(stop): Json<StopOrder>| {
                    Json(orders.stop(&stop.job_name, &stop.execution_id, stop.reason))
                },
            ),
        )
        .route(
            "/rpc/output",
            post(
                async |State(orders): State<Arc<OrderExecutor>>,
                       Json((job, id)): Json<(String, String)>| {
                    Json(orders.output(&job, &id))
                },
            ),
        )
        .with_state(orders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// An order for a shell `command` (run through the shell).
    fn shell_order(id: &str, resumed: bool, started_at: &str, command: &str) -> RunOrder {
        RunOrder {
            config: [
                ("command".to_string(), command.to_string()),
                ("shell".to_string(), "true".to_string()),
            ]
            .into(),
            ..order(id, resumed, started_at)
        }
    }

    fn order(id: &str, resumed: bool, started_at: &str) -> RunOrder {
        RunOrder {
            job_name: "j".into(),
            executor: "shell".into(),
            config: BTreeMap::new(),
            execution_id: id.into(),
            scheduled_time: started_at.into(),
            fencing_token: 1,
            resumed,
            started_at: Some(ts(started_at)),
        }
    }

    fn result(output: &str) -> RunResult {
        RunResult {
            success: true,
            output: output.into(),
        }
    }

    const UP: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_repeated_order_waits_for_or_gets_the_first_ones_result() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:01:00Z");
        let o = order("e1", false, "2026-01-01T00:01:00Z");
        assert!(matches!(
            t.decide(&o, ts(UP), now, None),
            Decision::Start(_)
        ));
        assert!(matches!(t.decide(&o, ts(UP), now, None), Decision::Wait(_)));
        let resumed = RunOrder {
            resumed: true,
            ..o.clone()
        };
        assert!(matches!(
            t.decide(&resumed, ts(UP), now, None),
            Decision::Wait(_)
        ));
        t.finish(("j".into(), "e1".into()), result("out"), now);
        assert!(
            matches!(t.decide(&resumed, ts(UP), now, None), Decision::Answer(r) if r == result("out"))
        );
        // After the retention the key is forgotten.
        let later = now + SignedDuration::from_secs(601);
        let fresh = order("e1", false, "2026-01-01T00:11:01Z");
        assert!(matches!(
            t.decide(&fresh, ts(UP), later, None),
            Decision::Start(_)
        ));
    }

    #[test]
    fn a_resumed_order_never_seen_runs_only_if_this_process_was_up_when_it_was_due() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:05:00Z");
        // Due before this process started (+ skew): it may have run in the previous one.
        for due in ["2025-12-31T23:59:00Z", "2026-01-01T00:00:00.5Z"] {
            let d = t.decide(&order(due, true, due), ts(UP), now, None);
            assert!(
                matches!(d, Decision::Refuse(ref m) if m.contains("lost")),
                "{due}"
            );
        }
        // Due while up, never delivered: run it now, once.
        let due = "2026-01-01T00:04:00Z";
        assert!(matches!(
            t.decide(&order("e2", true, due), ts(UP), now, None),
            Decision::Start(_)
        ));
        assert!(matches!(
            t.decide(&order("e2", true, due), ts(UP), now, None),
            Decision::Wait(_)
        ));
        // Too old to be sure its result was not forgotten.
        let long_ago = "2026-01-01T00:04:00Z";
        let much_later = ts("2026-01-01T00:20:00Z");
        let d = t.decide(&order("e3", true, long_ago), ts(UP), much_later, None);
        assert!(matches!(d, Decision::Refuse(_)));
        // A fresh order (not resumed) always runs.
        let d = t.decide(
            &order("e4", false, "2025-12-31T00:00:00Z"),
            ts(UP),
            now,
            None,
        );
        assert!(matches!(d, Decision::Start(_)));
    }

    #[test]
    fn the_start_journal_decides_a_resumed_order_after_a_restart() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:05:00Z");
        // Due before this process started: the journal says it never started, so it runs now.
        let due = "2025-12-31T23:59:30Z";
        assert!(matches!(
            t.decide(&order("never", true, due), ts(UP), now, Some(false)),
            Decision::Start(_)
        ));
        // It started in the previous process: lost, even if due while this one was up.
        let d = t.decide(
            &order("started", true, "2026-01-01T00:04:00Z"),
            ts(UP),
            now,
            Some(true),
        );
        assert!(matches!(d, Decision::Refuse(ref m) if m.contains("started on this node")));
        // Past the retention it is refused whatever the journal says.
        let d = t.decide(
            &order("old", true, "2025-12-31T23:00:00Z"),
            ts(UP),
            now,
            Some(false),
        );
        assert!(matches!(d, Decision::Refuse(_)));
    }

    #[test]
    fn kept_outputs_stay_within_the_budget() {
        let mut t = Table::default();
        let now = ts("2026-01-01T00:01:00Z");
        let big = "x".repeat(1 << 20);
        for i in 0..20 {
            let o = order(&format!("e{i}"), false, "2026-01-01T00:01:00Z");
            assert!(matches!(
                t.decide(&o, ts(UP), now, None),
                Decision::Start(_)
            ));
            t.finish(("j".into(), format!("e{i}")), result(&big), now);
        }
        assert!(t.kept_output <= KEPT_OUTPUT_BUDGET, "{}", t.kept_output);
        let newest = order("e19", true, "2026-01-01T00:01:00Z");
        assert!(
            matches!(t.decide(&newest, ts(UP), now, None), Decision::Answer(r) if r.output.len() == big.len())
        );
        let oldest = order("e0", true, "2026-01-01T00:01:00Z");
        assert!(
            matches!(t.decide(&oldest, ts(UP), now, None), Decision::Answer(r) if r.success && r.output.contains("no longer kept"))
        );
    }

    /// A node restarts: a resumed order for a run that started in the previous process is
    /// refused as lost; one for a run that never started runs now, although it was due before
    /// this process came up (the start journal says so).
    #[tokio::test]
    async fn after_a_restart_the_journal_tells_started_runs_from_never_started_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("started.redb");
        let marker = dir.path().join("runs");
        let t0 = ts("2026-01-01T00:00:00Z");
        let clock = crate::clock::ManualClock::starting_at(t0);
        let shared: SharedClock = clock.clone();
        let run = |id: &str, resumed: bool, due: Timestamp| {
            shell_order(
                id,
                resumed,
                &due.to_string(),
                &format!("echo {id} >> {}", marker.display()),
            )
        };
        let before = OrderExecutor::new(shared.clone())
            .with_journal(StartJournal::open(&path, shared.clone()).unwrap());
        let a_due = t0 + SignedDuration::from_secs(100);
        assert!(
            before
                .execute(run("a", false, a_due))
                .await
                .unwrap()
                .success
        );
        before.abort_all();
        before.close().await;
        drop(before);

        clock.set(t0 + SignedDuration::from_secs(200));
        let after = OrderExecutor::new(shared.clone())
            .with_journal(StartJournal::open(&path, shared.clone()).unwrap());
        let lost = after.execute(run("a", true, a_due)).await.unwrap_err();
        assert!(lost.reason.contains("started on this node"), "{lost:?}");
        let b_due = t0 + SignedDuration::from_secs(130);
        assert!(after.execute(run("b", true, b_due)).await.unwrap().success);
        // Due before the journal existed, or within its margin after: it cannot vouch, so lost.
        let c_due = t0 + SignedDuration::from_millis(500);
        let lost = after.execute(run("c", true, c_due)).await.unwrap_err();
        assert!(
            lost.reason.contains("restarted after the run was due"),
            "{lost:?}"
        );
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "a\nb\n");
    }

    #[tokio::test]
    async fn the_same_order_twice_runs_once_and_both_get_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("runs");
        let orders = OrderExecutor::new(crate::clock::system());
        let o = shell_order(
            "twice",
            false,
            "2026-01-01T00:00:00Z",
            &format!("echo ran >> {}; sleep 0.3; echo done", marker.display()),
        );
        let (a, b) = tokio::join!(orders.execute(o.clone()), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            orders.execute(o.clone()).await
        });
        assert_eq!(a, b);
        assert_eq!(a.unwrap().output, "done\n");
        // And once more after it finished.
        assert_eq!(orders.execute(o).await.unwrap().output, "done\n");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    }

    #[tokio::test]
    async fn a_stopped_run_ends_failed_with_the_reason() {
        let orders = OrderExecutor::new(crate::clock::system());
        let o = shell_order("stopped", false, "2026-01-01T00:00:00Z", "sleep 30");
        assert_eq!(
            orders.answer(o.clone(), Duration::from_millis(50)).await,
            OrderAnswer::Running
        );
        assert!(orders.stop("j", "stopped", "stopped: replaced".into()));
        let result = tokio::time::timeout(Duration::from_secs(5), orders.execute(o))
            .await
            .expect("the run ends at once")
            .unwrap();
        assert!(!result.success);
        assert_eq!(result.output, "dkron: stopped: replaced\n");
        assert!(
            !orders.stop("j", "stopped", "again".into()),
            "nothing left to stop"
        );
    }

    /// Shutting down, a node declines orders for runs it does not know (the leader may place
    /// them elsewhere) but still answers for the ones it has.
    #[tokio::test]
    async fn a_closing_node_declines_new_orders_and_answers_known_ones() {
        let orders = OrderExecutor::new(crate::clock::system());
        let known = order("known", false, "2026-01-01T00:00:00Z");
        assert!(orders.execute(known.clone()).await.is_ok());
        orders.abort_all();
        let answer = orders
            .answer(order("new", false, "2026-01-01T00:00:00Z"), HOLD)
            .await;
        assert!(
            matches!(answer, OrderAnswer::NotStarted { ref reason } if reason.contains("shutting down")),
            "{answer:?}"
        );
        assert!(matches!(
            orders.answer(known, HOLD).await,
            OrderAnswer::Done { .. }
        ));
    }

    #[tokio::test]
    async fn draining_lets_runs_in_progress_finish_and_declines_new_ones() {
        let orders = OrderExecutor::new(crate::clock::system());
        let o = shell_order(
            "going",
            false,
            "2026-01-01T00:00:00Z",
            "sleep 0.3; echo finished",
        );
        assert_eq!(
            orders.answer(o.clone(), Duration::from_millis(10)).await,
            OrderAnswer::Running
        );
        assert_eq!(orders.drain(Duration::from_secs(10)).await, 0);
        assert!(matches!(
            orders
                .answer(order("new", false, "2026-01-01T00:00:00Z"), HOLD)
                .await,
            OrderAnswer::NotStarted { .. }
        ));
        assert_eq!(orders.execute(o).await.unwrap().output, "finished\n");
        // A run longer than the grace is still going when drain gives up.
        let long = shell_order("long", false, "2026-01-01T00:00:00Z", "sleep 30");
        let orders = OrderExecutor::new(crate::clock::system());
        orders.answer(long, Duration::from_millis(10)).await;
        assert_eq!(orders.drain(Duration::from_millis(100)).await, 1);
        orders.abort_all();
    }

    #[tokio::test]
    async fn a_held_order_answers_running_then_the_result() {
        let orders = OrderExecutor::new(crate::clock::system());
        let o = shell_order(
            "held",
            false,
            "2026-01-01T00:00:00Z",
            "sleep 0.4; echo late",
        );
        let hold = Duration::from_millis(50);
        assert_eq!(orders.answer(o.clone(), hold).await, OrderAnswer::Running);
        let done = loop {
            match orders.answer(o.clone(), hold).await {
                OrderAnswer::Running => continue,
                other => break other,
            }
        };
        assert_eq!(
            done,
            OrderAnswer::Done {
                result: RunResult {
                    success: true,
                    output: "late\n".into()
                }
            }
        );
    }

    #[tokio::test]
    async fn output_is_readable_while_the_run_goes_and_not_after() {
        let orders = OrderExecutor::new(crate::clock::system());
        let o = shell_order(
            "live",
            false,
            "2026-01-01T00:00:00Z",
            "echo early; sleep 0.4; echo late",
        );
        let hold = Duration::from_millis(50);
        assert_eq!(orders.answer(o.clone(), hold).await, OrderAnswer::Running);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while orders.output("j", "live").as_deref() != Some("early\n") {
            assert!(std::time::Instant::now() < deadline, "no live output");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while orders.answer(o.clone(), hold).await == OrderAnswer::Running {}
        // Ended: the output is the leader's to publish, after the job's processors.
        assert_eq!(orders.output("j", "live"), None);
        assert_eq!(orders.output("j", "unknown"), None);
    }
}
