//! The Raft state machine: the core's [`State`] kept in memory and persisted in `state.redb`.
//!
//! `apply` runs the core's pure `State::apply` and hands the job entries it touched, the
//! execution records, `last_applied` and membership to the state writer (`store_writer.rs`),
//! which commits them to redb behind it, always at one applied point. On restart the state is
//! loaded back from that file and openraft re-applies only the entries after it.
//!
//! Readers (the HTTP API, the leader) share the in-memory state through
//! [`StateReader`](super::StateReader); snapshots are built and installed in `snapshot.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use dkron_core::command::Response;
use dkron_core::state::{Effect, JobEntry, State};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, SnapshotMeta, StoredMembership};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use tokio::sync::Notify;

use super::reader::{Shared, StateReader};
use super::store_writer::{Pending, StoreWriter, Write};
use super::{LogId, NodeId, ServerNode, StorageError, TypeConfig, codec, read_err, write_err};
use crate::clock;

pub(super) const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Each job's [`Runtime`] (its run bookkeeping), written apart from `jobs` with every run and
/// laid over the entry when it is read back ([`stored_entry`]).
pub(super) const JOB_RUNTIME: TableDefinition<&str, &[u8]> = TableDefinition::new("job_runtime");
pub(super) const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");
pub(super) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Daily execution counts, by UTC day (`2026-01-28`).
pub(super) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");

pub(super) const LAST_APPLIED: &str = "last_applied";
pub(super) const MEMBERSHIP: &str = "membership";
pub(super) const PAUSED: &str = "paused";
pub(super) const ACL: &str = "acl";

pub(super) type Membership = StoredMembership<NodeId, ServerNode>;

/// Key of an execution: `<job>\0<id>`. Names never contain NUL, so a job's executions are
/// exactly one key range (Dkron's prefix match also hit `foo-bar` when deleting `foo`), and
/// ids start with a fixed-width start time, so the range is in start order.
pub(super) fn execution_key(job: &str, id: &str) -> String {
    format!("{job}\0{id}")
}

pub(super) fn job_range(job: &str) -> (String, String) {
    (format!("{job}\0"), format!("{job}\u{1}"))
}

/// The openraft state machine (a handle; clones share everything).
#[derive(Clone)]
pub struct StateMachine {
    reader: StateReader,
}

impl StateMachine {
    pub fn open(path: &Path) -> anyhow::Result<StateMachine> {
        let db = crate::storage::open_db(path, crate::storage::STATE_CACHE_BYTES)?;
        let txn = db.begin_write()?;
        for table in [JOBS, JOB_RUNTIME, EXECUTIONS, SM_META, STATS] {
            txn.open_table(table)?;
        }
        txn.commit()?;
        let (state, applied) = load(&db)?;
        let db = Arc::new(db);
        Ok(StateMachine {
            reader: StateReader {
                inner: Arc::new(Shared {
                    writer: StoreWriter::start(db.clone())?,
                    db,
                    snapshot_path: super::snapshot::data_path(path),
                    state: RwLock::new(state),
                    apply_lock: Mutex::new(()),
                    records: RwLock::new(()),
                    applied: Mutex::new(applied),
                    dirty: Mutex::new(BTreeSet::new()),
                    changed: Notify::new(),
                }),
            },
        })
    }

    pub fn reader(&self) -> StateReader {
        self.reader.clone()
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.reader.inner
    }
}

pub(super) fn load(db: &Database) -> anyhow::Result<(State, (Option<LogId>, Membership))> {
    let txn = db.begin_read()?;
    let (last_applied, membership) = applied_point(&txn)?;
    let meta = txn.open_table(SM_META)?;
    let get = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
        Ok(meta.get(key)?.map(|v| v.value().to_vec()))
    };
    let paused: bool = match get(PAUSED)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => false,
    };
    let acl: dkron_core::acl::AclState = match get(ACL)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => Default::default(),
    };
    let mut days = Vec::new();
    for item in txn.open_table(STATS)?.iter()? {
        let (k, v) = item?;
        days.push((k.value().parse()?, serde_json::from_slice(v.value())?));
    }
    let jobs = txn.open_table(JOBS)?;
    let runtimes = txn.open_table(JOB_RUNTIME)?;
    let mut entries = Vec::new();
    for item in jobs.iter()? {
        let (k, v) = item?;
        let entry = stored_entry(&runtimes, k.value(), v.value())?;
        entries.push((k.value().to_string(), entry));
    }
    Ok((
        State::from_parts(entries, paused)
            .with_acl(acl)
            .with_stats(dkron_core::stats::DailyStats::from_days(days)),
        (last_applied, membership),
    ))
}

/// A job entry as stored in `jobs`, with its runtime from `job_runtime` laid over it (written
/// later: the entry's own bookkeeping is as of the job's last change).
pub(super) fn stored_entry(
    runtimes: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
    bytes: &[u8],
) -> anyhow::Result<JobEntry> {
    let mut entry: JobEntry = codec::decode(bytes)?;
    if let Some(runtime) = runtimes.get(name)? {
        entry.set_runtime(codec::decode(runtime.value())?);
    }
    Ok(entry)
}

/// The applied pointer and membership `txn` is at (the state writer writes them with every
/// transaction, a snapshot's install with its records).
pub(super) fn applied_point(
    txn: &redb::ReadTransaction,
) -> anyhow::Result<(Option<LogId>, Membership)> {
    let meta = txn.open_table(SM_META)?;
    let last_applied = match meta.get(LAST_APPLIED)? {
        Some(v) => serde_json::from_slice(v.value())?,
        None => None,
    };
    let membership = match meta.get(MEMBERSHIP)? {
        Some(v) => serde_json::from_slice(v.value())?,
        None => Membership::default(),
    };
    Ok((last_applied, membership))
}

pub(super) fn put_json<T: Serialize>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(write_err)?;
    let mut t = txn.open_table(table).map_err(write_err)?;
    t.insert(key, bytes.as_slice()).map_err(write_err)?;
    Ok(())
}

/// What an applied batch leaves to write once, at its end: a job claimed and finished in one
/// batch, or a thousand finishes counted in one day, are each written once, in their final
/// state, not once per command (the profile of a leader at 2,000 runs/s spent a fifth of its
/// CPU in `apply`, most of it re-encoding the same job entries).
#[derive(Default)]
struct Deferred {
    jobs: BTreeSet<String>,
    /// Jobs whose runtime alone changed.
    runtimes: BTreeSet<String>,
    days: BTreeSet<jiff::civil::Date>,
    acl: bool,
}

impl Deferred {
    /// Encodes each job, day and the ACL state as the state has it now (absent: removed).
    fn encode(self, writes: &mut Vec<Write>, state: &State) -> Result<(), StorageError> {
        // A changed job is written whole, its runtime too, so the runtime laid over it on
        // reading is never older than the entry.
        for name in self.runtimes.union(&self.jobs) {
            let entry = state.entry(name);
            writes.push(match entry {
                Some(entry) => Write::record(JOB_RUNTIME, name.clone(), &entry.runtime())?,
                None => Write::Remove(JOB_RUNTIME, name.clone()),
            });
            if self.jobs.contains(name) {
                writes.push(match entry {
                    Some(entry) => Write::record(JOBS, name.clone(), entry)?,
                    None => Write::Remove(JOBS, name.clone()),
                });
            }
        }
        for day in &self.days {
            let key = day.to_string();
            writes.push(match state.stats().day(*day) {
                Some(count) => Write::json(STATS, &key, &count)?,
                None => Write::Remove(STATS, key),
            });
        }
        if self.acl {
            writes.push(Write::json(SM_META, ACL, state.acl())?);
        }
        Ok(())
    }
}

/// Encodes one effect of an applied command: the execution records now, in order; what only
/// says "this changed" (the state has the value) once, at the batch's end ([`Deferred`]).
fn encode_effect(
    writes: &mut Vec<Write>,
    deferred: &mut Deferred,
    effect: &Effect,
) -> Result<(), StorageError> {
    match effect {
        Effect::PutJob(name) | Effect::RemoveJob(name) => {
            deferred.jobs.insert(name.clone());
        }
        Effect::PutRuntime(name) => {
            deferred.runtimes.insert(name.clone());
        }
        Effect::PutStats(day) | Effect::RemoveStats(day) => {
            deferred.days.insert(*day);
        }
        Effect::PutAcl => deferred.acl = true,
        Effect::PutExecution(e) => writes.push(Write::record(
            EXECUTIONS,
            execution_key(&e.job_name, &e.id),
            e,
        )?),
        Effect::DeleteExecutionsOf(job) => writes.push(Write::DeleteExecutionsOf(job.clone())),
        Effect::PruneExecutions { job, remove } => writes.push(Write::Prune {
            job: job.clone(),
            remove: *remove,
        }),
    }
    Ok(())
}

fn effect_job(effect: &Effect) -> Option<&str> {
    match effect {
        Effect::PutJob(n)
        | Effect::PutRuntime(n)
        | Effect::RemoveJob(n)
        | Effect::DeleteExecutionsOf(n) => Some(n),
        Effect::PutExecution(e) => Some(&e.job_name),
        Effect::PruneExecutions { job, .. } => Some(job),
        Effect::PutAcl | Effect::PutStats(_) | Effect::RemoveStats(_) => None,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok(self.shared().applied.lock().expect("applied lock").clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // On a blocking thread: redb's writes and the once-a-second fsync took a quarter of
        // the time at 2,000 runs/s, and on a runtime worker they stalled every timer and
        // request scheduled there.
        let shared = self.reader.inner.clone();
        let entries: Vec<_> = entries.into_iter().collect();
        tokio::task::spawn_blocking(move || apply_blocking(&shared, entries))
            .await
            .map_err(write_err)?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = super::snapshot::receiving(&self.shared().snapshot_path)
            .await
            .map_err(write_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ServerNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        // openraft wrote the chunks through tokio's buffered file.
        snapshot.flush().await.map_err(write_err)?;
        let file = snapshot.into_std().await;
        let (reader, meta) = (self.reader(), meta.clone());
        tokio::task::spawn_blocking(move || {
            super::snapshot::install_blocking(&reader.inner, &meta, file)
        })
        .await
        .map_err(write_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.shared().snapshot_path.clone();
        tokio::task::spawn_blocking(move || super::snapshot::current_snapshot(&path))
            .await
            .map_err(read_err)?
            .map_err(read_err)
    }
}

/// `apply` itself: the in-memory state under its lock; the batch's writes go to the state
/// writer (`store_writer.rs`), which commits them to `state.redb` off this path.
fn apply_blocking(
    shared: &Shared,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<Vec<Response>, StorageError> {
    let _serial = shared.apply_lock.lock().expect("apply lock");
    // Before the state lock: a writer that fell behind slows the log, not the readers.
    shared.writer.reserve()?;
    let mut responses = Vec::new();
    let mut touched = BTreeSet::new();
    let mut applied = shared.applied.lock().expect("applied lock").clone();
    let mut deferred = Deferred::default();
    let mut writes = Vec::new();
    let mut state = shared.state.write().expect("state lock");
    let started = clock::monotonic();
    for entry in entries {
        applied.0 = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => responses.push(Response::None),
            EntryPayload::Membership(m) => {
                applied.1 = StoredMembership::new(Some(entry.log_id), m);
                responses.push(Response::None);
            }
            EntryPayload::Normal(command) => {
                let (response, effects) = state.apply(command);
                for effect in &effects {
                    encode_effect(&mut writes, &mut deferred, effect)?;
                    if let Some(job) = effect_job(effect) {
                        touched.insert(job.to_string());
                    }
                }
                responses.push(response);
            }
        }
    }
    deferred.encode(&mut writes, &state)?;
    writes.push(Write::json(SM_META, PAUSED, &state.paused())?);
    // Queued under the state lock: a reader holding the read lock knows every batch its
    // state reflects is queued, and waits for the writer to catch up with it.
    shared.writer.queue(Pending {
        writes,
        applied: applied.clone(),
    });
    drop(state);
    crate::telemetry::metrics::applied("memory", clock::since(started));
    *shared.applied.lock().expect("applied lock") = applied;
    if !touched.is_empty() {
        shared.dirty.lock().expect("dirty lock").extend(touched);
    }
    shared.changed.notify_one();
    Ok(responses)
}
