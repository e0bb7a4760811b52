//! Reading the replicated state: the applied [`State`] in memory and the execution records in
//! `state.redb`, shared by the API, the leader and the gauges. Writes go through the
//! [`super::Proposer`] only; this handle cannot change anything.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use dkron_core::job::{Execution, Job};
use dkron_core::state::{JobEntry, State};
use jiff::Timestamp;
use redb::{Database, ReadableDatabase};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::LogId;
use super::state_machine::{EXECUTIONS, Membership, execution_key, job_range};

/// What the state machine, its snapshot builder and its readers share.
pub(super) struct Shared {
    pub(super) db: Database,
    /// The current snapshot (`snapshot.data`, see `snapshot.rs`). Kept outside redb so
    /// writing it never holds the write lock that `apply` needs.
    pub(super) snapshot_path: PathBuf,
    /// When `apply` last committed durably (see `state_machine::DURABLE_EVERY`).
    pub(super) last_durable: Mutex<Instant>,
    pub(super) state: RwLock<State>,
    /// Written from an apply's first state change until its execution records are committed
    /// (and by a snapshot's install); read by whoever joins the in-memory state with those
    /// records, so they agree. The state lock itself is held for the in-memory apply only.
    pub(super) records: RwLock<()>,
    /// Serialises `apply` with snapshot building, so a snapshot sees one consistent point.
    pub(super) apply_lock: Mutex<()>,
    pub(super) applied: Mutex<(Option<LogId>, Membership)>,
    /// Jobs changed since the scheduler last looked.
    pub(super) dirty: Mutex<BTreeSet<String>>,
    pub(super) changed: Notify,
}

/// Read-only view of the replicated state (clones share it).
#[derive(Clone)]
pub struct StateReader {
    pub(super) inner: Arc<Shared>,
}

impl StateReader {
    /// Runs `f` with read access to the state (whose own queries name what is read).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self.inner.state.read().expect("state lock poisoned");
        f(&state)
    }

    /// Whether job submissions are paused.
    pub fn paused(&self) -> bool {
        self.read(State::paused)
    }

    pub fn contains(&self, job: &str) -> bool {
        self.read(|s| s.contains(job))
    }

    /// The job as stored.
    pub fn job(&self, name: &str) -> Option<Job> {
        self.read(|s| s.entry(name).map(|e| e.job.clone()))
    }

    /// The job as the API shows it at `now` (its computed `next` filled).
    pub fn job_view(&self, name: &str, now: Timestamp) -> Option<Job> {
        self.read(|s| s.entry(name).map(|e| dkron_core::state::view(e, now)))
    }

    /// The job with its scheduler bookkeeping (ledger, skips, runs in progress).
    pub fn entry(&self, name: &str) -> Option<JobEntry> {
        self.read(|s| s.entry(name).cloned())
    }

    pub fn job_names(&self) -> Vec<String> {
        self.read(|s| s.job_names().cloned().collect())
    }

    /// The runs of `job` in progress.
    pub fn running_of(&self, job: &str) -> Vec<Execution> {
        self.read(|s| {
            s.entry(job)
                .map(|e| e.running.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Every run in progress, of every job.
    pub fn all_running(&self) -> Vec<Execution> {
        self.read(|s| s.running().cloned().collect())
    }

    /// Takes the set of jobs changed since the last call (one taker: the scheduler).
    pub fn take_dirty(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.inner.dirty.lock().expect("dirty lock poisoned"))
    }

    /// Resolves when the state changed since the last call (one waiter: the scheduler).
    pub async fn changed(&self) {
        self.inner.changed.notified().await
    }

    /// The job with its bookkeeping and its stored executions, at one applied point: a ledger
    /// past an occurrence comes with that occurrence's execution record.
    pub fn entry_and_executions(
        &self,
        job: &str,
    ) -> anyhow::Result<Option<(JobEntry, Vec<Execution>)>> {
        let _agree = self.inner.records.read().expect("records lock poisoned");
        let Some(entry) = self.entry(job) else {
            return Ok(None);
        };
        Ok(Some((entry, self.executions(job)?)))
    }

    /// The stored executions of a job, oldest first.
    pub fn executions(&self, job: &str) -> anyhow::Result<Vec<Execution>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EXECUTIONS)?;
        let (lo, hi) = job_range(job);
        let mut out = Vec::new();
        for item in table.range(lo.as_str()..hi.as_str())? {
            let (_, v) = item?;
            out.push(super::codec::decode(v.value())?);
        }
        Ok(out)
    }

    pub fn execution(&self, job: &str, id: &str) -> anyhow::Result<Option<Execution>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EXECUTIONS)?;
        let key = execution_key(job, id);
        Ok(match table.get(key.as_str())? {
            Some(v) => Some(super::codec::decode(v.value())?),
            None => None,
        })
    }
}
