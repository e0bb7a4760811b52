//! The Raft state machine: the core's [`State`] kept in memory and persisted in `state.redb`.
//!
//! `apply` runs the core's pure `State::apply`, then commits the job entries it touched, the
//! execution records, `last_applied` and membership in one redb transaction. On restart the
//! state is loaded back from that file, so no replay of the whole log is needed.
//!
//! Readers (the HTTP API, the scheduler) share the in-memory state through [`StateHandle`].

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dkron_core::command::Response;
use dkron_core::job::Execution;
use dkron_core::state::{Effect, JobEntry, State};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{LogId, NodeId, ServerNode, StorageError, TypeConfig, read_err, write_err};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

/// The longest `apply` goes without a durable commit.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const PAUSED: &str = "paused";

type Membership = StoredMembership<NodeId, ServerNode>;

/// Key of an execution: `<job>\0<id>`. Names never contain NUL, so a job's executions are
/// exactly one key range (Dkron's prefix match also hit `foo-bar` when deleting `foo`), and
/// ids start with a fixed-width start time, so the range is in start order.
fn execution_key(job: &str, id: &str) -> String {
    format!("{job}\0{id}")
}

fn job_range(job: &str) -> (String, String) {
    (format!("{job}\0"), format!("{job}\u{1}"))
}

/// Shared, read-mostly view of the replicated state, for the API and the scheduler.
#[derive(Clone)]
pub struct StateHandle {
    inner: Arc<Shared>,
}

struct Shared {
    db: Database,
    /// The current snapshot: one JSON line of metadata, then the data. Kept outside redb so
    /// writing tens of megabytes never holds the write lock that `apply` needs.
    snapshot_path: PathBuf,
    /// When `apply` last committed durably (see `DURABLE_EVERY`).
    last_durable: Mutex<Instant>,
    state: RwLock<State>,
    /// Serialises `apply` with snapshot building, so a snapshot sees one consistent point.
    apply_lock: Mutex<()>,
    applied: Mutex<(Option<LogId>, Membership)>,
    /// Jobs changed since the scheduler last looked.
    dirty: Mutex<BTreeSet<String>>,
    changed: Notify,
}

impl StateHandle {
    /// Runs `f` with read access to the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self.inner.state.read().expect("state lock poisoned");
        f(&state)
    }

    /// Takes the set of jobs changed since the last call.
    pub fn take_dirty(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.inner.dirty.lock().expect("dirty lock poisoned"))
    }

    /// Resolves when the state changed since the last call (one waiter: the scheduler).
    pub async fn changed(&self) {
        self.inner.changed.notified().await
    }

    /// The stored executions of a job, oldest first.
    pub fn executions(&self, job: &str) -> anyhow::Result<Vec<Execution>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EXECUTIONS)?;
        let (lo, hi) = job_range(job);
        let mut out = Vec::new();
        for item in table.range(lo.as_str()..hi.as_str())? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub fn execution(&self, job: &str, id: &str) -> anyhow::Result<Option<Execution>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EXECUTIONS)?;
        let key = execution_key(job, id);
        Ok(match table.get(key.as_str())? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }
}

/// The openraft state machine (a handle; clones share everything).
#[derive(Clone)]
pub struct StateMachine {
    handle: StateHandle,
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: State,
    executions: Vec<Execution>,
}

fn write_snapshot_file(
    path: &Path,
    meta: &SnapshotMeta<NodeId, ServerNode>,
    data: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, meta)?;
    file.write_all(b"\n")?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_snapshot_file(path: &Path) -> std::io::Result<Option<Snapshot<TypeConfig>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| std::io::Error::other("snapshot file has no metadata line"))?;
    let meta = serde_json::from_slice(&bytes[..split])?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes[split + 1..].to_vec())),
    }))
}

impl StateMachine {
    pub fn open(path: &Path) -> anyhow::Result<StateMachine> {
        let db = super::open_db(path, super::STATE_CACHE_BYTES)?;
        let txn = db.begin_write()?;
        for table in [JOBS, EXECUTIONS, SM_META] {
            txn.open_table(table)?;
        }
        txn.commit()?;
        let (state, applied) = load(&db)?;
        Ok(StateMachine {
            handle: StateHandle {
                inner: Arc::new(Shared {
                    db,
                    snapshot_path: path.with_file_name("snapshot.bin"),
                    last_durable: Mutex::new(Instant::now()),
                    state: RwLock::new(state),
                    apply_lock: Mutex::new(()),
                    applied: Mutex::new(applied),
                    dirty: Mutex::new(BTreeSet::new()),
                    changed: Notify::new(),
                }),
            },
        })
    }

    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }

    fn shared(&self) -> &Shared {
        &self.handle.inner
    }
}

fn load(db: &Database) -> anyhow::Result<(State, (Option<LogId>, Membership))> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(SM_META)?;
    let get = |key: &str| -> anyhow::Result<Option<Vec<u8>>> {
        Ok(meta.get(key)?.map(|v| v.value().to_vec()))
    };
    let last_applied: Option<LogId> = match get(LAST_APPLIED)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => None,
    };
    let membership: Membership = match get(MEMBERSHIP)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => Membership::default(),
    };
    let paused: bool = match get(PAUSED)? {
        Some(b) => serde_json::from_slice(&b)?,
        None => false,
    };
    let mut state = State {
        paused,
        ..State::default()
    };
    let jobs = txn.open_table(JOBS)?;
    for item in jobs.iter()? {
        let (k, v) = item?;
        let entry: JobEntry = serde_json::from_slice(v.value())?;
        state.jobs.insert(k.value().to_string(), entry);
    }
    Ok((state, (last_applied, membership)))
}

fn put_json<T: Serialize>(
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

/// Writes one effect of an applied command.
fn write_effect(
    txn: &WriteTransaction,
    state: &State,
    effect: &Effect,
) -> Result<(), StorageError> {
    match effect {
        Effect::PutJob(name) => match state.jobs.get(name) {
            Some(entry) => put_json(txn, JOBS, name, entry)?,
            None => {
                txn.open_table(JOBS)
                    .map_err(write_err)?
                    .remove(name.as_str())
                    .map_err(write_err)?;
            }
        },
        Effect::RemoveJob(name) => {
            txn.open_table(JOBS)
                .map_err(write_err)?
                .remove(name.as_str())
                .map_err(write_err)?;
        }
        Effect::PutExecution(e) => {
            put_json(txn, EXECUTIONS, &execution_key(&e.job_name, &e.id), e)?
        }
        Effect::DeleteExecutionsOf(job) => {
            let (lo, hi) = job_range(job);
            let mut t = txn.open_table(EXECUTIONS).map_err(write_err)?;
            t.retain_in(lo.as_str()..hi.as_str(), |_, _| false)
                .map_err(write_err)?;
        }
        Effect::PruneExecutions { job, remove } => {
            let (lo, hi) = job_range(job);
            let mut t = txn.open_table(EXECUTIONS).map_err(write_err)?;
            let oldest: Vec<String> = t
                .range(lo.as_str()..hi.as_str())
                .map_err(write_err)?
                .take(*remove)
                .map(|item| item.map(|(k, _)| k.value().to_string()))
                .collect::<Result<_, _>>()
                .map_err(write_err)?;
            for key in oldest {
                t.remove(key.as_str()).map_err(write_err)?;
            }
        }
    }
    Ok(())
}

fn effect_job(effect: &Effect) -> Option<&str> {
    match effect {
        Effect::PutJob(n) | Effect::RemoveJob(n) | Effect::DeleteExecutionsOf(n) => Some(n),
        Effect::PutExecution(e) => Some(&e.job_name),
        Effect::PruneExecutions { job, .. } => Some(job),
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
        let shared = self.shared();
        let _serial = shared.apply_lock.lock().expect("apply lock");
        let mut responses = Vec::new();
        let mut touched = BTreeSet::new();
        let mut txn = shared.db.begin_write().map_err(write_err)?;
        // Mostly not fsynced: the Raft log already holds these entries durably, and openraft
        // re-applies from it after a crash. Snapshot building commits durably (which persists
        // every earlier commit) before the log behind the snapshot may be purged. But redb
        // keeps non-durable pages in memory until a durable commit, so one commit a second
        // is durable to keep memory bounded (and restarts short).
        let durable = shared.last_durable.lock().expect("durable lock").elapsed() >= DURABLE_EVERY;
        if !durable {
            txn.set_durability(Durability::None).map_err(write_err)?;
        }
        let mut applied = shared.applied.lock().expect("applied lock").clone();
        {
            let mut state = shared.state.write().expect("state lock");
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
                            write_effect(&txn, &state, effect)?;
                            if let Some(job) = effect_job(effect) {
                                touched.insert(job.to_string());
                            }
                        }
                        responses.push(response);
                    }
                }
            }
            put_json(&txn, SM_META, PAUSED, &state.paused)?;
        }
        put_json(&txn, SM_META, LAST_APPLIED, &applied.0)?;
        put_json(&txn, SM_META, MEMBERSHIP, &applied.1)?;
        txn.commit().map_err(write_err)?;
        if durable {
            *shared.last_durable.lock().expect("durable lock") = Instant::now();
        }
        *shared.applied.lock().expect("applied lock") = applied;
        if !touched.is_empty() {
            shared.dirty.lock().expect("dirty lock").extend(touched);
        }
        shared.changed.notify_one();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ServerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(read_err)?;
        let shared = self.shared();
        let _serial = shared.apply_lock.lock().expect("apply lock");
        let txn = shared.db.begin_write().map_err(write_err)?;
        {
            for table in [JOBS, EXECUTIONS] {
                let mut t = txn.open_table(table).map_err(write_err)?;
                t.retain(|_, _| false).map_err(write_err)?;
            }
        }
        for (name, entry) in &data.state.jobs {
            put_json(&txn, JOBS, name, entry)?;
        }
        for e in &data.executions {
            put_json(&txn, EXECUTIONS, &execution_key(&e.job_name, &e.id), e)?;
        }
        put_json(&txn, SM_META, PAUSED, &data.state.paused)?;
        put_json(&txn, SM_META, LAST_APPLIED, &meta.last_log_id)?;
        put_json(&txn, SM_META, MEMBERSHIP, &meta.last_membership)?;
        txn.commit().map_err(write_err)?;
        write_snapshot_file(&shared.snapshot_path, meta, &bytes).map_err(write_err)?;
        let names: BTreeSet<String> = data.state.jobs.keys().cloned().collect();
        *shared.state.write().expect("state lock") = data.state;
        *shared.applied.lock().expect("applied lock") =
            (meta.last_log_id, meta.last_membership.clone());
        shared.dirty.lock().expect("dirty lock").extend(names);
        shared.changed.notify_one();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.shared().snapshot_path.clone();
        tokio::task::spawn_blocking(move || read_snapshot_file(&path))
            .await
            .map_err(read_err)?
            .map_err(read_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let handle = self.handle.clone();
        // Serialising and writing tens of megabytes must not stall the async workers (fires
        // would be late): the build runs on its own thread, at a lower CPU priority.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("dkron-snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                let _ = tx.send(build_snapshot_blocking(&handle.inner));
            })
            .map_err(write_err)?;
        rx.await.map_err(read_err)?
    }
}

/// Makes the calling thread yield the CPU to the scheduler and the API (nice 10).
fn lower_thread_priority() {
    // SAFETY: setpriority on the calling thread (who = 0) only changes this thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

fn build_snapshot_blocking(shared: &Shared) -> Result<Snapshot<TypeConfig>, StorageError> {
    // One consistent point: no apply runs while we copy the state and open the read txn.
    let (state, applied, read_txn) = {
        let _serial = shared.apply_lock.lock().expect("apply lock");
        // The applied state must be durable before openraft purges the log behind it.
        let flush = shared.db.begin_write().map_err(write_err)?;
        flush.commit().map_err(write_err)?;
        let state = shared.state.read().expect("state lock").clone();
        let applied = shared.applied.lock().expect("applied lock").clone();
        let txn = shared.db.begin_read().map_err(read_err)?;
        (state, applied, txn)
    };
    let mut executions = Vec::new();
    {
        let table = read_txn.open_table(EXECUTIONS).map_err(read_err)?;
        for item in table.iter().map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            executions.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
    }
    drop(read_txn);
    let data = serde_json::to_vec(&SnapshotData { state, executions }).map_err(write_err)?;
    let snapshot_id = match applied.0 {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, data.len()),
        None => format!("0-0-{}", data.len()),
    };
    let meta = SnapshotMeta {
        last_log_id: applied.0,
        last_membership: applied.1,
        snapshot_id,
    };
    write_snapshot_file(&shared.snapshot_path, &meta, &data).map_err(write_err)?;
    Ok(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    })
}
