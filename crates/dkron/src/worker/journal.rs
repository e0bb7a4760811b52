//! The start journal: which runs this node started, written durably *before* each one starts.
//!
//! After a restart, a new leader may resume a run this node was ordered to execute. Without a
//! record, the node cannot tell a run that never started (its order came, or its nominal time
//! arrived, just before the crash) from one that started and whose result died with the
//! process, so it had to close both as lost. With the journal it knows: a run without an
//! entry never started here and runs now, late, once; a run with one is closed as lost,
//! never run twice.
//!
//! The journal only vouches for runs due after it was created (`created`): a data dir wiped or
//! replaced under the same node name must not turn an old run into "never started".
//!
//! It also keeps each run's result once it finished (`finished`, its output cut to a tail),
//! so a repeated or resumed order is answered from disk after the process forgot it: the
//! process keeps results in memory only briefly, and its memory does not grow with the run
//! rate times [`super::RESULT_RETENTION`]. Results are written without an fsync: one lost
//! in a crash leaves its start mark, and the run is closed as lost, never run twice.
//!
//! One writer thread packs every queued mark into one durable redb commit (group commit),
//! so thousands of runs a second pay for a few fsyncs, not thousands. Entries are keyed by
//! due time and pruned once no resumed order may ask about them.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::rpc::wire::RunResult;

const STARTED: TableDefinition<&str, ()> = TableDefinition::new("started");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Finished runs' results (JSON of [`RunResult`]), keyed as [`STARTED`].
const FINISHED: TableDefinition<&str, &[u8]> = TableDefinition::new("finished");

/// Output kept with a result on disk: its tail (the leader normally has the whole output).
const FINISHED_OUTPUT: usize = 4096;

/// What the journal says of one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// No start mark: it never started here.
    Never,
    /// Started here, and no result is recorded.
    Started,
    /// Started and finished here, with this result.
    Finished(RunResult),
}

/// redb page cache: the journal is small and mostly written.
const CACHE_BYTES: usize = 256 << 10;

/// Entries older than this (by due time) are pruned: resumed orders for runs due longer ago
/// than [`super::RESULT_RETENTION`] are refused anyway; the rest is clock-skew margin.
const KEEP: Duration = Duration::from_secs(2 * super::RESULT_RETENTION.as_secs());

enum Op {
    Mark {
        key: String,
        done: oneshot::Sender<anyhow::Result<()>>,
    },
    /// A run's result (not waited for, not fsynced by itself).
    Finish { key: String, result: Vec<u8> },
    /// Stop the writer and release its handle on the file.
    Close { done: oneshot::Sender<()> },
}

/// See the module docs.
pub struct StartJournal {
    db: Arc<Database>,
    created: Timestamp,
    ops: Sender<Op>,
}

fn key(job: &str, id: &str, due: Timestamp) -> String {
    // Zero-padded nanoseconds sort by time, so pruning is one range.
    format!("{:020}\0{job}\0{id}", due.as_nanosecond().max(0))
}

impl StartJournal {
    /// Opens the journal in a data dir (`started.redb`).
    pub fn open_in(data_dir: &Path, clock: SharedClock) -> anyhow::Result<StartJournal> {
        StartJournal::open(&data_dir.join("started.redb"), clock)
    }

    pub fn open(path: &Path, clock: SharedClock) -> anyhow::Result<StartJournal> {
        let db = Arc::new(
            crate::storage::open_db(path, CACHE_BYTES)
                .with_context(|| format!("opening the start journal {}", path.display()))?,
        );
        let txn = db.begin_write()?;
        let created = {
            txn.open_table(STARTED)?;
            txn.open_table(FINISHED)?;
            let mut meta = txn.open_table(META)?;
            let existing = meta.get("created")?.map(|v| v.value());
            match existing {
                Some(ns) => ns,
                None => {
                    let now = clock.now().as_nanosecond() as i64;
                    meta.insert("created", now)?;
                    now
                }
            }
        };
        txn.commit()?;
        let created = Timestamp::from_nanosecond(i128::from(created))?;
        let (ops, queue) = channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("dkron-journal".into())
            .spawn(move || write_marks(writer_db, &queue, &clock))
            .context("starting the start-journal writer thread")?;
        Ok(StartJournal { db, created, ops })
    }

    /// Records durably that the run `(job, id)`, due at `due`, is starting on this node.
    pub async fn mark(&self, job: &str, id: &str, due: Timestamp) -> anyhow::Result<()> {
        let (done, answer) = oneshot::channel();
        self.ops
            .send(Op::Mark {
                key: key(job, id, due),
                done,
            })
            .map_err(|_| anyhow::anyhow!("the start-journal writer stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the start-journal writer stopped"))?
    }

    /// Records a run's result (queued, not waited for): a repeated order after the process
    /// forgot the run is answered with it.
    pub fn finish(&self, job: &str, id: &str, due: Timestamp, result: &RunResult) {
        let kept = RunResult {
            output: dkron_core::job::tail_utf8(&result.output, FINISHED_OUTPUT).to_string(),
            ..result.clone()
        };
        match serde_json::to_vec(&kept) {
            Ok(result) => {
                let _ = self.ops.send(Op::Finish {
                    key: key(job, id, due),
                    result,
                });
            }
            Err(e) => {
                tracing::warn!(job, execution = id, error = %e, "cannot encode a run's result for the start journal; a repeated order for it is closed as lost")
            }
        }
    }

    /// Stops the writer thread (node shutdown): marks after this fail, so no run starts.
    pub async fn close(&self) {
        let (done, answer) = oneshot::channel();
        if self.ops.send(Op::Close { done }).is_ok() {
            let _ = answer.await;
        }
    }

    /// What the journal says of the run `(job, id)` due at `due`: `None` if it cannot say
    /// (it did not exist yet when the run was due, give or take `skew`, or it cannot be read).
    pub fn recorded(
        &self,
        job: &str,
        id: &str,
        due: Timestamp,
        skew: SignedDuration,
    ) -> Option<Recorded> {
        if due < self.created + skew {
            return None;
        }
        let read = || -> anyhow::Result<Recorded> {
            let txn = self.db.begin_read()?;
            let k = key(job, id, due);
            if let Some(v) = txn.open_table(FINISHED)?.get(k.as_str())? {
                return Ok(Recorded::Finished(serde_json::from_slice(v.value())?));
            }
            let started = txn.open_table(STARTED)?.get(k.as_str())?.is_some();
            Ok(if started {
                Recorded::Started
            } else {
                Recorded::Never
            })
        };
        match read() {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::warn!(job, execution = id, error = %format!("{e:#}"), "cannot read the start journal; a repeated or resumed run is closed as lost rather than risk running it twice");
                None
            }
        }
    }
}

/// The writer thread: one durable commit per batch of queued marks, pruning old entries.
fn write_marks(db: Arc<Database>, queue: &Receiver<Op>, clock: &SharedClock) {
    let mut closing = None;
    while closing.is_none() {
        let Ok(first) = queue.recv() else { return };
        let (mut batch, mut results) = (Vec::new(), Vec::new());
        for op in std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
            match op {
                Op::Mark { key, done } => batch.push((key, done)),
                Op::Finish { key, result } => results.push((key, result)),
                Op::Close { done } => {
                    closing = Some(done);
                    break;
                }
            }
        }
        if batch.is_empty() && results.is_empty() {
            continue;
        }
        let cutoff = key("", "", clock.now() - KEEP);
        let result = (|| -> anyhow::Result<()> {
            let mut txn = db.begin_write()?;
            if batch.is_empty() {
                // Results only: made durable by the next batch with marks.
                txn.set_durability(redb::Durability::None)?;
            }
            {
                let mut table = txn.open_table(STARTED)?;
                for (key, _) in &batch {
                    table.insert(key.as_str(), ())?;
                }
                table.retain_in(..cutoff.as_str(), |_, _| false)?;
                let mut finished = txn.open_table(FINISHED)?;
                for (key, result) in &results {
                    finished.insert(key.as_str(), result.as_slice())?;
                }
                finished.retain_in(..cutoff.as_str(), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = &result
            && batch.is_empty()
        {
            tracing::warn!(error = %format!("{e:#}"), "cannot record finished runs' results in the start journal; repeated orders for them are closed as lost. Check the data dir's disk");
        }
        for (_, done) in batch {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            });
        }
    }
    drop(db);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn manual(start: &str) -> (Arc<crate::clock::ManualClock>, SharedClock) {
        let clock = crate::clock::ManualClock::starting_at(at(start));
        (clock.clone(), clock)
    }

    #[tokio::test]
    async fn marks_survive_a_reopen_and_only_runs_due_after_creation_are_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("started.redb");
        let (_, clock) = manual("2026-01-01T00:00:00Z");
        let skew = SignedDuration::from_secs(1);
        {
            let journal = StartJournal::open(&path, clock.clone()).unwrap();
            journal
                .mark("job", "1-n1", at("2026-01-01T00:00:05Z"))
                .await
                .unwrap();
            journal.close().await;
            // Closed: no run may start without its mark.
            assert!(
                journal
                    .mark("job", "x", at("2026-01-01T00:00:06Z"))
                    .await
                    .is_err()
            );
        }
        let journal = StartJournal::open(&path, clock).unwrap();
        assert_eq!(
            journal.recorded("job", "1-n1", at("2026-01-01T00:00:05Z"), skew),
            Some(Recorded::Started)
        );
        assert_eq!(
            journal.recorded("job", "2-n1", at("2026-01-01T00:00:05Z"), skew),
            Some(Recorded::Never)
        );
        // Due before the journal existed: it cannot say.
        assert_eq!(
            journal.recorded("job", "0-n1", at("2025-12-31T23:59:59Z"), skew),
            None
        );
    }

    #[tokio::test]
    async fn a_finished_runs_result_is_kept_with_a_tail_of_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let (_, clock) = manual("2026-01-01T00:00:00Z");
        let skew = SignedDuration::from_secs(1);
        let due = at("2026-01-01T00:00:05Z");
        let journal = StartJournal::open(&path, clock.clone()).unwrap();
        journal.mark("job", "1-n1", due).await.unwrap();
        let output = format!("{}end", "x".repeat(2 * FINISHED_OUTPUT));
        let result = RunResult {
            success: true,
            output,
            stopped: false,
        };
        journal.finish("job", "1-n1", due, &result);
        // The next mark's commit follows the queued result.
        journal.mark("job", "2-n1", due).await.unwrap();
        let Some(Recorded::Finished(kept)) = journal.recorded("job", "1-n1", due, skew) else {
            panic!("the result is recorded");
        };
        assert!(kept.success && !kept.stopped);
        assert_eq!(kept.output.len(), FINISHED_OUTPUT);
        assert!(kept.output.ends_with("end"));
        assert_eq!(
            journal.recorded("job", "2-n1", due, skew),
            Some(Recorded::Started)
        );
        journal.close().await;
        drop(journal);
        // Made durable by the mark after it: still there after a reopen.
        let journal = StartJournal::open(&path, clock).unwrap();
        assert!(matches!(
            journal.recorded("job", "1-n1", due, skew),
            Some(Recorded::Finished(_))
        ));
    }

    #[tokio::test]
    async fn old_entries_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (hand, clock) = manual("2026-01-01T00:00:00Z");
        let journal = StartJournal::open(&dir.path().join("j.redb"), clock.clone()).unwrap();
        let old = at("2026-01-01T00:00:02Z");
        journal.mark("job", "old", old).await.unwrap();
        let later = old + KEEP + Duration::from_secs(10);
        hand.set(later);
        journal.mark("job", "new", later).await.unwrap();
        let txn = journal.db.begin_read().unwrap();
        let table = txn.open_table(STARTED).unwrap();
        let keys: Vec<String> = table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_string())
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].ends_with("\0job\0new"), "{keys:?}");
    }
}
