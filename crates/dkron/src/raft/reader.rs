//! Reading the replicated state: the applied [`State`] in memory and the execution records in
//! `state.redb`, shared by the API, the leader and the gauges. Writes go through the
//! [`super::Proposer`] only; this handle cannot change anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use dkron_core::job::{Execution, Job};
use dkron_core::state::{JobEntry, State};
use jiff::Timestamp;
use redb::{Database, ReadableDatabase};
use tokio::sync::Notify;

use super::LogId;
use super::state_machine::{EXECUTIONS, Membership, execution_key, job_range};

/// What the state machine, its snapshot builder and its readers share.
pub(super) struct Shared {
    pub(super) db: Arc<Database>,
    /// Writes what `apply` changed to `db`, behind it (`store_writer.rs`).
    pub(super) writer: super::store_writer::StoreWriter,
    /// The current snapshot (`snapshot.data`, see `snapshot.rs`). Kept outside redb so
    /// writing it never holds the write lock that `apply` needs.
    pub(super) snapshot_path: PathBuf,
    pub(super) state: RwLock<State>,
    /// Written by a snapshot's install from its commit until the in-memory state is
    /// replaced; read by whoever joins the in-memory state with the records, so they agree.
    pub(super) records: RwLock<()>,
    /// Serialises `apply` with installing a snapshot (building one needs no lock: it reads
    /// `state.redb` between two of the state writer's transactions).
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

    /// The job with its bookkeeping and its executions, at one applied point: a ledger past an
    /// occurrence comes with that occurrence's execution.
    pub fn entry_and_executions(
        &self,
        job: &str,
    ) -> anyhow::Result<Option<(JobEntry, Vec<Execution>)>> {
        let _agree = self.inner.records.read().expect("records lock poisoned");
        // No batch is applied while the read lock is held, and every batch the state
        // reflects is queued: once the writer caught up, the records are at this point too.
        let state = self.inner.state.read().expect("state lock poisoned");
        self.inner.writer.caught_up()?;
        let Some(entry) = state.entry(job).cloned() else {
            return Ok(None);
        };
        let stored = self.stored_executions(job)?;
        drop(state);
        let executions = with_running(stored, entry.running.values().cloned());
        Ok(Some((entry, executions)))
    }

    /// The executions of a job, finished and in progress, oldest first, with every batch
    /// applied before the call.
    pub fn executions(&self, job: &str) -> anyhow::Result<Vec<Execution>> {
        // Runs in progress first: one that finishes meanwhile is then in the records read
        // after, and the finished record wins.
        let running = self.running_of(job);
        self.inner.writer.caught_up()?;
        Ok(with_running(self.stored_executions(job)?, running))
    }

    fn stored_executions(&self, job: &str) -> anyhow::Result<Vec<Execution>> {
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
        let running = self.read(|s| s.entry(job).and_then(|e| e.running.get(id).cloned()));
        self.inner.writer.caught_up()?;
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EXECUTIONS)?;
        let key = execution_key(job, id);
        let stored: Option<Execution> = match table.get(key.as_str())? {
            Some(v) => Some(super::codec::decode(v.value())?),
            None => None,
        };
        Ok(with_running(stored.into_iter().collect(), running).pop())
    }
}

/// A job's stored records joined with its runs in progress (which have no record until they
/// finish), in id order, which is start order. A finished record wins over the running copy
/// (the run finished between the two reads); a running copy wins over an unfinished record (one
/// written at the start by an older version: the copy is current, a move included).
fn with_running(
    stored: Vec<Execution>,
    running: impl IntoIterator<Item = Execution>,
) -> Vec<Execution> {
    let mut all: BTreeMap<String, Execution> =
        stored.into_iter().map(|e| (e.id.clone(), e)).collect();
    for run in running {
        match all.get(&run.id) {
            Some(done) if done.finished_at.is_some() => {}
            _ => {
                all.insert(run.id.clone(), run);
            }
        }
    }
    all.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, node: &str, finished: bool) -> Execution {
        Execution {
            id: id.into(),
            node_name: node.into(),
            finished_at: finished.then(|| "2026-01-01T00:00:05Z".parse().unwrap()),
            ..Execution::default()
        }
    }

    #[test]
    fn runs_in_progress_join_the_records_in_start_order_and_a_finished_record_wins() {
        let stored = vec![
            run("1", "n1", true),
            run("3", "n1", true),
            // Written at the start by an older version; the run has moved to n2 since.
            run("4", "n1", false),
        ];
        let running = vec![
            run("2", "n1", false),
            // Finished between the reads: the record wins.
            run("3", "n1", false),
            run("4", "n2", false),
        ];
        let all = with_running(stored, running);
        let seen: Vec<_> = all
            .iter()
            .map(|e| (e.id.as_str(), e.node_name.as_str(), e.finished_at.is_some()))
            .collect();
        assert_eq!(
            seen,
            [
                ("1", "n1", true),
                ("2", "n1", false),
                ("3", "n1", true),
                ("4", "n2", false)
            ]
        );
    }
}
