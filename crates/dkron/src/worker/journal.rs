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

const STARTED: TableDefinition<&str, ()> = TableDefinition::new("started");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

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

    /// Stops the writer thread (node shutdown): marks after this fail, so no run starts.
    pub async fn close(&self) {
        let (done, answer) = oneshot::channel();
        if self.ops.send(Op::Close { done }).is_ok() {
            let _ = answer.await;
        }
    }

    /// Whether a run due at `due` was started on this node: `None` if the journal cannot
    /// say (it did not exist yet when the run was due, give or take `skew`, or it cannot be
    /// read).
    pub fn started(
        &self,
        job: &str,
        id: &str,
        due: Timestamp,
        skew: SignedDuration,
    ) -> Option<bool> {
        if due < self.created + skew {
            return None;
        }
        let read = || -> anyhow::Result<bool> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STARTED)?;
            Ok(table.get(key(job, id, due).as_str())?.is_some())
        };
        match read() {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::warn!(job, execution = id, error = %format!("{e:#}"), "cannot read the start journal; a resumed run is closed as lost rather than risk running it twice");
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
        let mut batch = Vec::new();
        for op in std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
            match op {
                Op::Mark { key, done } => batch.push((key, done)),
                Op::Close { done } => {
                    closing = Some(done);
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let cutoff = key("", "", clock.now() - KEEP);
        let result = (|| -> anyhow::Result<()> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(STARTED)?;
                for (key, _) in &batch {
                    table.insert(key.as_str(), ())?;
                }
                table.retain_in(..cutoff.as_str(), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })();
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
            journal.started("job", "1-n1", at("2026-01-01T00:00:05Z"), skew),
            Some(true)
        );
        assert_eq!(
            journal.started("job", "2-n1", at("2026-01-01T00:00:05Z"), skew),
            Some(false)
        );
        // Due before the journal existed: it cannot say.
        assert_eq!(
            journal.started("job", "0-n1", at("2025-12-31T23:59:59Z"), skew),
            None
        );
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
