//! Full execution output, kept on the node that recorded the run — never in the Raft log.
//!
//! The replicated execution record carries only a short tail ([`INLINE_OUTPUT_LIMIT`]), so a
//! cluster does not push every byte a job prints through consensus. The whole (bounded)
//! output lives here, in `outputs.redb`, retained per job by count and by bytes. Writes use
//! redb's non-durable commits and a background flush each second: losing the last second of
//! output in a crash only degrades a read to the replicated tail.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const OUTPUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("outputs");

/// Bytes of output carried inside the replicated execution record.
pub const INLINE_OUTPUT_LIMIT: usize = 1024;
/// Bytes of output captured per run (Dkron keeps the last 256,000).
pub const CAPTURE_LIMIT: usize = 256_000;
/// Runs whose full output is kept per job.
pub const KEEP_PER_JOB: usize = 100;
/// Bytes of full output kept per job.
pub const BYTES_PER_JOB: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct OutputStore {
    db: Arc<Database>,
}

fn key(job: &str, id: &str) -> String {
    format!("{job}\0{id}")
}

impl OutputStore {
    pub fn open(path: &Path) -> anyhow::Result<OutputStore> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(OUTPUTS)?;
        txn.commit()?;
        Ok(OutputStore { db: Arc::new(db) })
    }

    /// Stores a run's output and trims the job's history to the retention bounds.
    pub fn put(&self, job: &str, id: &str, output: &str) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut table = txn.open_table(OUTPUTS)?;
            table.insert(key(job, id).as_str(), output.as_bytes())?;
            let lo = format!("{job}\0");
            let hi = format!("{job}\u{1}");
            // Newest first: keep entries while under both bounds.
            let mut sizes = Vec::new();
            for item in table.range(lo.as_str()..hi.as_str())? {
                let (_, v) = item?;
                sizes.push(v.value().len());
            }
            let mut keep = 0;
            let mut bytes = 0;
            for size in sizes.iter().rev() {
                if keep >= KEEP_PER_JOB || bytes + size > BYTES_PER_JOB {
                    break;
                }
                keep += 1;
                bytes += size;
            }
            let mut drop = sizes.len() - keep.max(1);
            if drop > 0 {
                table.retain_in(lo.as_str()..hi.as_str(), |_, _| {
                    if drop > 0 {
                        drop -= 1;
                        false
                    } else {
                        true
                    }
                })?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn get(&self, job: &str, id: &str) -> anyhow::Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTPUTS)?;
        Ok(table
            .get(key(job, id).as_str())?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    pub fn delete_job(&self, job: &str) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(OUTPUTS)?;
            let lo = format!("{job}\0");
            let hi = format!("{job}\u{1}");
            table.retain_in(lo.as_str()..hi.as_str(), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes every earlier non-durable write durable.
    pub fn flush(&self) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        Ok(())
    }

    /// Flushes once a second until the returned task is aborted.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s = store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush()).await {
                    tracing::warn!(error = %e, "could not flush execution outputs to disk; check free space in the data dir");
                }
            }
        })
    }
}
