//! Full execution output, kept on the node that recorded the run — never in the Raft log.
//!
//! The replicated execution record carries only a short tail
//! ([`dkron_core::INLINE_OUTPUT_LIMIT`], enforced in `apply`), so a
//! cluster does not push every byte a job prints through consensus. The whole (bounded)
//! output lives here, in `outputs.redb`, retained per job by count and by bytes.
//!
//! One writer thread owns all writes and packs every queued one into a single redb
//! transaction (thousands of runs a second would otherwise each pay for a commit). Commits
//! are made durable once a second: losing the last second of output in a crash only degrades
//! a read to the replicated tail.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use anyhow::Context;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::clock;

const OUTPUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("outputs");

/// Runs whose full output is kept per job.
pub const KEEP_PER_JOB: usize = 100;
/// Bytes of full output kept per job.
pub const BYTES_PER_JOB: usize = 8 * 1024 * 1024;

/// redb page cache for the output store: outputs are written once and rarely read.
const OUTPUT_CACHE_BYTES: usize = 2 << 20;

/// How often non-durable commits are made durable.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

enum Op {
    Put {
        job: String,
        id: String,
        output: String,
        done: oneshot::Sender<anyhow::Result<()>>,
    },
    DeleteJob {
        job: String,
        done: oneshot::Sender<anyhow::Result<()>>,
    },
    Flush {
        done: oneshot::Sender<anyhow::Result<()>>,
    },
    /// Flush, then stop the writer and release its handle on the file.
    Close {
        done: oneshot::Sender<anyhow::Result<()>>,
    },
}

#[derive(Clone)]
pub struct OutputStore {
    db: Arc<Database>,
    ops: Sender<Op>,
}

fn key(job: &str, id: &str) -> String {
    format!("{job}\0{id}")
}

fn job_range(job: &str) -> (String, String) {
    (format!("{job}\0"), format!("{job}\u{1}"))
}

impl OutputStore {
    pub fn open(path: &Path) -> anyhow::Result<OutputStore> {
        let db = Arc::new(super::open_db(path, OUTPUT_CACHE_BYTES)?);
        let txn = db.begin_write()?;
        txn.open_table(OUTPUTS)?;
        txn.commit()?;
        let (ops, queue) = channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("dkron-outputs".into())
            .spawn(move || Writer::new(writer_db).run(queue))
            .context("starting the output writer thread")?;
        Ok(OutputStore { db, ops })
    }

    async fn submit(
        &self,
        make: impl FnOnce(oneshot::Sender<anyhow::Result<()>>) -> Op,
    ) -> anyhow::Result<()> {
        let (done, answer) = oneshot::channel();
        self.ops
            .send(make(done))
            .map_err(|_| anyhow::anyhow!("the output writer stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the output writer stopped"))?
    }

    /// Stores a run's output (visible to reads when this returns) and applies retention.
    pub async fn put(&self, job: &str, id: &str, output: String) -> anyhow::Result<()> {
        let (job, id) = (job.to_string(), id.to_string());
        self.submit(|done| Op::Put {
            job,
            id,
            output,
            done,
        })
        .await
    }

    pub async fn delete_job(&self, job: &str) -> anyhow::Result<()> {
        let job = job.to_string();
        self.submit(|done| Op::DeleteJob { job, done }).await
    }

    /// Makes every earlier write durable.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.submit(|done| Op::Flush { done }).await
    }

    /// Flushes and stops the writer thread (at node shutdown); later writes fail.
    pub async fn close(&self) -> anyhow::Result<()> {
        self.submit(|done| Op::Close { done }).await
    }

    pub fn get(&self, job: &str, id: &str) -> anyhow::Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTPUTS)?;
        Ok(table
            .get(key(job, id).as_str())?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }
}

/// The writer thread's state: per-job retention bookkeeping, loaded lazily.
struct Writer {
    db: Arc<Database>,
    /// Per job: how many outputs are kept and their total size. Counts only, so memory
    /// does not grow with history: the oldest is the first key of the job's range (ids
    /// start with their start time).
    kept: HashMap<String, (usize, usize)>,
    dirty_since: Option<Instant>,
    pending_close: Option<Op>,
}

impl Writer {
    fn new(db: Arc<Database>) -> Writer {
        Writer {
            db,
            kept: HashMap::new(),
            dirty_since: None,
            pending_close: None,
        }
    }

    fn run(mut self, queue: Receiver<Op>) {
        loop {
            let wait = match self.dirty_since {
                Some(t) => FLUSH_EVERY.saturating_sub(clock::since(t)),
                None => Duration::from_secs(3600),
            };
            let next = match self.pending_close.take() {
                Some(op) => Ok(op),
                None => queue.recv_timeout(wait),
            };
            let first = match next {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    self.flush_logged();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_logged();
                    return;
                }
            };
            if let Op::Close { done } = first {
                let result = if self.dirty_since.is_some() {
                    self.commit_durable()
                } else {
                    Ok(())
                };
                drop(self);
                let _ = done.send(result);
                return;
            }
            let mut ops = vec![first];
            while let Ok(op) = queue.try_recv() {
                if matches!(op, Op::Close { .. }) {
                    // Handled on the next turn, after this batch.
                    self.pending_close = Some(op);
                    break;
                }
                ops.push(op);
            }
            let result = self.apply(&mut ops);
            for op in ops {
                let done = match op {
                    Op::Put { done, .. }
                    | Op::DeleteJob { done, .. }
                    | Op::Flush { done }
                    | Op::Close { done } => done,
                };
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                });
            }
        }
    }

    fn flush_logged(&mut self) {
        if self.dirty_since.is_some()
            && let Err(e) = self.commit_durable()
        {
            tracing::warn!(error = %format!("{e:#}"), "could not flush execution outputs to disk; check free space in the data dir");
        }
    }

    fn commit_durable(&mut self) -> anyhow::Result<()> {
        self.db.begin_write()?.commit()?;
        self.dirty_since = None;
        Ok(())
    }

    fn apply(&mut self, ops: &mut [Op]) -> anyhow::Result<()> {
        let flush = ops.iter().any(|op| matches!(op, Op::Flush { .. }));
        let mut txn = self.db.begin_write()?;
        if !flush {
            txn.set_durability(Durability::None)?;
        }
        {
            let mut table = txn.open_table(OUTPUTS)?;
            for op in ops.iter_mut() {
                match op {
                    Op::Put {
                        job, id, output, ..
                    } => {
                        let (lo, hi) = job_range(job);
                        if !self.kept.contains_key(job.as_str()) {
                            let (mut count, mut bytes) = (0, 0);
                            for item in table.range(lo.as_str()..hi.as_str())? {
                                bytes += item?.1.value().len();
                                count += 1;
                            }
                            self.kept.insert(job.clone(), (count, bytes));
                        }
                        let k = key(job, id);
                        // The same run stored again replaces its output (counted once).
                        let replaced = table
                            .insert(k.as_str(), output.as_bytes())?
                            .map(|old| old.value().len());
                        let (count, bytes) = self.kept.get_mut(job.as_str()).expect("loaded above");
                        match replaced {
                            Some(old_size) => *bytes -= old_size,
                            None => *count += 1,
                        }
                        *bytes += output.len();
                        while *count > 1 && (*count > KEEP_PER_JOB || *bytes > BYTES_PER_JOB) {
                            let oldest = match table.range(lo.as_str()..hi.as_str())?.next() {
                                Some(item) => {
                                    let (k, v) = item?;
                                    (k.value().to_string(), v.value().len())
                                }
                                None => break,
                            };
                            table.remove(oldest.0.as_str())?;
                            *count -= 1;
                            *bytes -= oldest.1;
                        }
                    }
                    Op::DeleteJob { job, .. } => {
                        let (lo, hi) = job_range(job);
                        table.retain_in(lo.as_str()..hi.as_str(), |_, _| false)?;
                        self.kept.remove(job.as_str());
                    }
                    Op::Flush { .. } | Op::Close { .. } => {}
                }
            }
        }
        txn.commit()?;
        if flush {
            self.dirty_since = None;
        } else if self.dirty_since.is_none() {
            self.dirty_since = Some(clock::monotonic());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> String {
        format!("{i:019}-node")
    }

    #[tokio::test]
    async fn keeps_the_newest_runs_per_job_by_count_and_bytes_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outputs.redb");
        let store = OutputStore::open(&path).unwrap();
        for i in 0..KEEP_PER_JOB + 5 {
            store.put("a", &id(i), format!("run {i}")).await.unwrap();
        }
        store.put("b", &id(0), "other job".into()).await.unwrap();
        assert_eq!(store.get("a", &id(4)).unwrap(), None, "beyond the count");
        assert_eq!(store.get("a", &id(5)).unwrap().as_deref(), Some("run 5"));
        assert_eq!(
            store.get("b", &id(0)).unwrap().as_deref(),
            Some("other job")
        );
        // The same run stored twice is one run.
        store
            .put("a", &id(104), "run 104 again".into())
            .await
            .unwrap();
        assert_eq!(store.get("a", &id(5)).unwrap().as_deref(), Some("run 5"));
        assert_eq!(
            store.get("a", &id(104)).unwrap().as_deref(),
            Some("run 104 again")
        );
        store.close().await.unwrap();
        drop(store);

        // Reopened, retention goes on from what is on disk; bytes bound it too.
        let store = OutputStore::open(&path).unwrap();
        let big = "x".repeat(BYTES_PER_JOB / 4 + 1);
        for i in 200..204 {
            store.put("a", &id(i), big.clone()).await.unwrap();
        }
        assert_eq!(
            store.get("a", &id(200)).unwrap(),
            None,
            "over the byte bound"
        );
        for i in 201..204 {
            assert!(store.get("a", &id(i)).unwrap().is_some(), "{i}");
        }
        assert_eq!(store.get("a", &id(104)).unwrap(), None);
        // One output larger than the whole bound is still kept, alone.
        let huge = "y".repeat(BYTES_PER_JOB + 1);
        store.put("a", &id(300), huge).await.unwrap();
        assert!(store.get("a", &id(300)).unwrap().is_some());
        assert_eq!(store.get("a", &id(203)).unwrap(), None);
        // Deleting a job forgets its outputs only.
        store.delete_job("a").await.unwrap();
        assert_eq!(store.get("a", &id(300)).unwrap(), None);
        assert!(store.get("b", &id(0)).unwrap().is_some());
    }
}
