//! The state writer: one thread that writes what `apply` changed into `state.redb`, after the
//! fact.
//!
//! `apply` changes the in-memory state and queues the batch's encoded writes ([`Pending`]);
//! the thread adds them to one open transaction and commits it once a second (or at 16 MiB),
//! with the last batch's `last_applied` and membership, so the file is always at one applied
//! point, durably. A commit rewrites every B-tree page its writes touched, so a page touched
//! by many batches within a second is written once, not once per turn (at 4,000 runs/s on
//! three servers the writer still wrote 22–36 MB/s per server after this: most pages a second
//! of runs touches are distinct, BENCHMARKS.md). Nothing on the log's commit path waits for
//! redb or an fsync: before,
//! `apply` wrote and fsynced itself, and a claim's commit waited p99 478 ms behind it at 2,000
//! runs/s on three servers (p50 6 ms), so runs claimed half a second ahead still started late.
//!
//! After a crash the file is behind the log by what was queued or not yet durable, and openraft
//! re-applies those entries from the log (durable before any 2xx), as it did for the
//! once-a-second fsync before. Readers of the records wait until what was applied when they
//! asked is written ([`StoreWriter::caught_up`], which has the open transaction committed at
//! once, not durably); snapshots are built and installed only with
//! the queue drained. A write that fails stops the writer, and the next `apply` returns the
//! error (openraft then stops this server, as when `apply` failed itself).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::Serialize;

use super::state_machine::{
    EXECUTIONS, LAST_APPLIED, MEMBERSHIP, Membership, SM_META, job_range, put_json,
};
use super::{LogId, StorageError, codec, write_err};
use crate::clock;

/// The longest written state goes without a durable commit.
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// The longest applied batches wait in the open transaction before readers see them (a reader
/// that needs them sooner has them committed at once, [`StoreWriter::caught_up`]).
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Queued bytes the open transaction holds at most before it is committed.
const COMMIT_BYTES: usize = 16 << 20;
/// Encoded bytes queued at most; `apply` waits for room beyond (a writer slower than the log
/// slows the log instead of growing memory).
const MAX_QUEUED_BYTES: usize = 64 << 20;

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// One change an applied batch makes to `state.redb`, encoded by `apply`.
pub(super) enum Write {
    Put(Table, String, Vec<u8>),
    Remove(Table, String),
    DeleteExecutionsOf(String),
    Prune { job: String, remove: usize },
}

impl Write {
    pub(super) fn record<T: Serialize>(
        table: Table,
        key: String,
        value: &T,
    ) -> Result<Write, StorageError> {
        Ok(Write::Put(
            table,
            key,
            codec::encode(value).map_err(write_err)?,
        ))
    }

    pub(super) fn json<T: Serialize>(
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<Write, StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        Ok(Write::Put(table, key.to_string(), bytes))
    }

    fn size(&self) -> usize {
        match self {
            Write::Put(_, key, bytes) => key.len() + bytes.len(),
            Write::Remove(_, key) | Write::DeleteExecutionsOf(key) => key.len(),
            Write::Prune { job, .. } => job.len(),
        }
    }

    fn apply(self, txn: &WriteTransaction) -> Result<(), StorageError> {
        match self {
            Write::Put(table, key, bytes) => {
                let mut t = txn.open_table(table).map_err(write_err)?;
                t.insert(key.as_str(), bytes.as_slice())
                    .map_err(write_err)?;
            }
            Write::Remove(table, key) => {
                let mut t = txn.open_table(table).map_err(write_err)?;
                t.remove(key.as_str()).map_err(write_err)?;
            }
            Write::DeleteExecutionsOf(job) => {
                let (lo, hi) = job_range(&job);
                let mut t = txn.open_table(EXECUTIONS).map_err(write_err)?;
                t.retain_in(lo.as_str()..hi.as_str(), |_, _| false)
                    .map_err(write_err)?;
            }
            Write::Prune { job, remove } => {
                let (lo, hi) = job_range(&job);
                let mut t = txn.open_table(EXECUTIONS).map_err(write_err)?;
                let oldest: Vec<String> = t
                    .range(lo.as_str()..hi.as_str())
                    .map_err(write_err)?
                    .take(remove)
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
}

/// The writes of one applied batch and the applied point they bring the file to.
pub(super) struct Pending {
    pub(super) writes: Vec<Write>,
    pub(super) applied: (Option<LogId>, Membership),
}

#[derive(Default)]
struct Queue {
    batches: Vec<Pending>,
    bytes: usize,
    /// Batches queued so far, and written so far (sequence numbers).
    queued: u64,
    written: u64,
    closed: bool,
    /// A reader waits for batches the open transaction holds: commit it now.
    flush: bool,
    failed: Option<String>,
    /// Snapshot builders waiting for a read transaction at a durable applied point.
    reads: Vec<std::sync::mpsc::Sender<Result<ReadTransaction, String>>>,
}

struct Inner {
    queue: Mutex<Queue>,
    /// Signalled when there is work (or the writer is closed).
    work: Condvar,
    /// Signalled when batches are written (or the writer failed).
    progress: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().expect("store writer lock poisoned")
    }
}

/// The handle `apply`, the readers and the snapshots use; dropping it drains the queue and
/// stops the thread.
pub(super) struct StoreWriter {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn failed(why: &str) -> StorageError {
    write_err(std::io::Error::other(format!(
        "writing state.redb failed earlier ({why}); restart the node (it re-applies from the Raft log)"
    )))
}

impl StoreWriter {
    pub(super) fn start(db: Arc<Database>) -> std::io::Result<StoreWriter> {
        let inner = Arc::new(Inner {
            queue: Mutex::default(),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("dkron-state-writer".into())
            .spawn({
                let inner = inner.clone();
                move || run(&inner, &db)
            })?;
        Ok(StoreWriter {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits until the queue has room; fails if the writer failed.
    pub(super) fn reserve(&self) -> Result<(), StorageError> {
        let mut q = self.inner.lock();
        loop {
            if let Some(why) = &q.failed {
                return Err(failed(why));
            }
            if q.bytes < MAX_QUEUED_BYTES {
                return Ok(());
            }
            q = self
                .inner
                .progress
                .wait(q)
                .expect("store writer lock poisoned");
        }
    }

    /// Queues one applied batch (called with the state's write lock held, so a reader holding
    /// the read lock knows every batch its state reflects is queued).
    pub(super) fn queue(&self, pending: Pending) {
        let mut q = self.inner.lock();
        q.bytes += pending.writes.iter().map(Write::size).sum::<usize>();
        q.batches.push(pending);
        q.queued += 1;
        drop(q);
        self.inner.work.notify_one();
    }

    /// A read transaction of `state.redb` at a durable applied point (for a snapshot: the log
    /// behind it may be purged). `apply` is not held up meanwhile: the writer makes what it
    /// wrote so far durable and opens the transaction before it writes again.
    pub(super) fn durable_read(&self) -> Result<ReadTransaction, StorageError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut q = self.inner.lock();
        if let Some(why) = &q.failed {
            return Err(failed(why));
        }
        q.reads.push(tx);
        drop(q);
        self.inner.work.notify_one();
        match rx.recv() {
            Ok(Ok(txn)) => Ok(txn),
            Ok(Err(why)) => Err(failed(&why)),
            Err(_) => Err(failed("the writer stopped")),
        }
    }

    /// Waits until every batch queued before this call is written to `state.redb`.
    pub(super) fn caught_up(&self) -> Result<(), StorageError> {
        let mut q = self.inner.lock();
        let target = q.queued;
        if q.written < target {
            q.flush = true;
            self.inner.work.notify_one();
        }
        while q.written < target {
            if let Some(why) = &q.failed {
                return Err(failed(why));
            }
            q = self
                .inner
                .progress
                .wait(q)
                .expect("store writer lock poisoned");
        }
        Ok(())
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.work.notify_one();
        if let Some(thread) = self.thread.lock().expect("store writer lock").take() {
            let _ = thread.join();
        }
    }
}

/// The transaction the writer keeps open between commits, and what it holds.
struct Open {
    txn: WriteTransaction,
    opened: tokio::time::Instant,
    applied: Option<(Option<LogId>, Membership)>,
    /// Queued bytes it holds (given back to `apply` when committed).
    bytes: usize,
    /// The last batch it holds (sequence number).
    upto: u64,
}

/// The thread: adds what is queued to one open transaction and commits it once a second, at
/// 16 MiB, or at once when a reader, a snapshot or closing needs it; durably at most a second
/// after the last durable commit.
fn run(inner: &Inner, db: &Database) {
    let mut last_durable = clock::monotonic();
    let mut undurable = false;
    let mut open: Option<Open> = None;
    loop {
        let mut q = inner.lock();
        while q.batches.is_empty() && q.reads.is_empty() && !q.closed && !q.flush {
            let commit_in = open
                .as_ref()
                .map(|o| COMMIT_EVERY.saturating_sub(clock::since(o.opened)));
            let durable_in =
                undurable.then(|| DURABLE_EVERY.saturating_sub(clock::since(last_durable)));
            let Some(left) = commit_in.into_iter().chain(durable_in).min() else {
                q = inner.work.wait(q).expect("store writer lock poisoned");
                continue;
            };
            if left.is_zero() {
                break;
            }
            q = inner
                .work
                .wait_timeout(q, left)
                .expect("store writer lock poisoned")
                .0;
        }
        let batches = std::mem::take(&mut q.batches);
        let reads = std::mem::take(&mut q.reads);
        let flush = std::mem::take(&mut q.flush);
        let (closed, upto) = (q.closed, q.queued);
        drop(q);
        let mut result = Ok(());
        if !batches.is_empty() {
            let started = clock::monotonic();
            result = add(db, &mut open, batches, upto);
            crate::telemetry::metrics::applied("store", clock::since(started));
        }
        // Durable: for a snapshot's read, when closing, and a second after the last.
        let durable = closed || !reads.is_empty() || clock::since(last_durable) >= DURABLE_EVERY;
        let commit_due = open.as_ref().is_some_and(|o| {
            flush || durable || clock::since(o.opened) >= COMMIT_EVERY || o.bytes >= COMMIT_BYTES
        });
        let mut committed = None;
        if result.is_ok() && (commit_due || (durable && undurable)) {
            // With nothing held, an empty durable commit persists the non-durable ones.
            let held = open.take();
            committed = held.as_ref().map(|o| (o.bytes, o.upto));
            let started = clock::monotonic();
            result = commit(db, held, durable);
            let what = if durable { "fsync" } else { "commit" };
            crate::telemetry::metrics::applied(what, clock::since(started));
            if durable {
                last_durable = clock::monotonic();
            }
            undurable = !durable;
        }
        for read in reads {
            let txn = match &result {
                Ok(()) => db.begin_read().map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = read.send(txn);
        }
        let mut q = inner.lock();
        match result {
            Ok(()) => {
                if let Some((bytes, upto)) = committed {
                    // Room for what `apply` queued meanwhile: only what was written is given back.
                    q.bytes -= bytes;
                    q.written = upto;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the applied state to state.redb; this server stops applying: free disk space or fix the data directory, then restart it");
                q.failed = Some(e.to_string());
                open = None;
            }
        }
        let stop = q.failed.is_some() || (closed && q.batches.is_empty() && open.is_none());
        drop(q);
        inner.progress.notify_all();
        if stop {
            return;
        }
    }
}

/// Adds `batches` to the open transaction (opening one if none is).
fn add(
    db: &Database,
    open: &mut Option<Open>,
    batches: Vec<Pending>,
    upto: u64,
) -> Result<(), StorageError> {
    let o = match open {
        Some(o) => o,
        None => {
            let mut txn = db.begin_write().map_err(write_err)?;
            txn.set_durability(Durability::None).map_err(write_err)?;
            open.insert(Open {
                txn,
                opened: clock::monotonic(),
                applied: None,
                bytes: 0,
                upto,
            })
        }
    };
    for batch in batches {
        for w in batch.writes {
            o.bytes += w.size();
            w.apply(&o.txn)?;
        }
        o.applied = Some(batch.applied);
    }
    o.upto = upto;
    Ok(())
}

/// Commits what `open` holds at its last batch's applied point; durably if asked, which also
/// persists every non-durable commit before it (with nothing held: an empty durable commit).
fn commit(db: &Database, open: Option<Open>, durable: bool) -> Result<(), StorageError> {
    let mut txn = match open {
        Some(o) => {
            if let Some((last, membership)) = &o.applied {
                put_json(&o.txn, SM_META, LAST_APPLIED, last)?;
                put_json(&o.txn, SM_META, MEMBERSHIP, membership)?;
            }
            o.txn
        }
        None => db.begin_write().map_err(write_err)?,
    };
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability).map_err(write_err)?;
    txn.commit().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};
    use redb::ReadableDatabase;

    use super::*;
    use crate::raft::state_machine::{JOBS, applied_point};

    fn open(dir: &tempfile::TempDir) -> Arc<Database> {
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(JOBS).unwrap();
        txn.open_table(SM_META).unwrap();
        txn.commit().unwrap();
        Arc::new(db)
    }

    fn batch(index: u64, key: &str, value: &[u8]) -> Pending {
        Pending {
            writes: vec![Write::Put(JOBS, key.into(), value.to_vec())],
            applied: (
                Some(LogId::new(CommittedLeaderId::new(1, 0), index)),
                Membership::default(),
            ),
        }
    }

    fn read(db: &Database, key: &str) -> Option<Vec<u8>> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(JOBS).unwrap();
        t.get(key).unwrap().map(|v| v.value().to_vec())
    }

    fn last_applied(txn: &ReadTransaction) -> Option<u64> {
        applied_point(txn).unwrap().0.map(|id| id.index)
    }

    #[test]
    fn queued_batches_are_written_in_order_at_the_last_applied_point() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let writer = StoreWriter::start(db.clone()).unwrap();
        for i in 1..=50 {
            writer.reserve().unwrap();
            writer.queue(batch(i, "job", format!("v{i}").as_bytes()));
            writer.queue(batch(i, &format!("job{i}"), b"x"));
        }
        writer.caught_up().unwrap();
        // The later write of a key wins, and the applied pointer is the last batch's.
        assert_eq!(read(&db, "job").as_deref(), Some(&b"v50"[..]));
        assert_eq!(read(&db, "job37").as_deref(), Some(&b"x"[..]));
        assert_eq!(last_applied(&db.begin_read().unwrap()), Some(50));
    }

    #[test]
    fn a_durable_read_sees_everything_queued_before_it_at_one_applied_point() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let writer = StoreWriter::start(db.clone()).unwrap();
        for i in 1..=3 {
            writer.queue(batch(i, "job", format!("v{i}").as_bytes()));
        }
        let txn = writer.durable_read().unwrap();
        // Written after the read was opened: not in it.
        writer.queue(batch(4, "job", b"v4"));
        writer.caught_up().unwrap();
        assert_eq!(last_applied(&txn), Some(3));
        let jobs = txn.open_table(JOBS).unwrap();
        assert_eq!(jobs.get("job").unwrap().unwrap().value(), b"v3");
        assert_eq!(read(&db, "job").as_deref(), Some(&b"v4"[..]));
    }

    #[test]
    fn dropping_the_writer_writes_what_was_queued_and_makes_it_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let writer = StoreWriter::start(db.clone()).unwrap();
        writer.queue(batch(7, "job", b"last"));
        drop(writer);
        drop(db);
        // Reopened: only a durable commit survives closing a redb file without one.
        let db = Database::open(dir.path().join("state.redb")).unwrap();
        assert_eq!(read(&db, "job").as_deref(), Some(&b"last"[..]));
        assert_eq!(last_applied(&db.begin_read().unwrap()), Some(7));
    }

    #[test]
    fn a_write_that_fails_stops_the_writer_and_every_caller_hears_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        // A table of another key type under the name a write uses: its insert fails.
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("wrong"))
            .unwrap();
        txn.commit().unwrap();
        let writer = StoreWriter::start(db.clone()).unwrap();
        let wrong: Table = TableDefinition::new("wrong");
        writer.queue(Pending {
            writes: vec![Write::Put(wrong, "k".into(), b"v".to_vec())],
            applied: (None, Membership::default()),
        });
        let e = writer.caught_up().unwrap_err().to_string();
        assert!(e.contains("restart the node"), "{e}");
        assert!(writer.reserve().is_err());
        // Nothing of the failed transaction landed.
        assert_eq!(last_applied(&db.begin_read().unwrap()), None);
    }
}
