//! The Raft log store in `raft.redb`: entries, vote, committed and last-purged pointers.
//!
//! Every append is one redb write transaction committed with immediate durability (fsync)
//! before openraft is told the entries are flushed — a 2xx to a client means the entry is on
//! disk. Keys are log indexes, so ranges and truncation are ordered scans.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::log_tail::{TAIL_BYTES, Tail};
use super::{LogId, NodeId, StorageError, TypeConfig, codec, read_err, write_err};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Most bytes (as stored) of log entries one AppendEntries carries. openraft 0.9 gives an
/// append one heartbeat interval before it times out and sends the same range again, so a
/// range too big to cross in that time would be resent forever (seen: a follower that fell
/// behind at 20,000 jobs was sent hundreds of 512-command batches at once, and every write
/// behind them waited). A follower that is behind catches up in many small appends instead.
pub const MAX_APPEND_BYTES: usize = 256 << 10;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    growth: Arc<super::compaction::LogGrowth>,
    tail: Arc<Mutex<Tail>>,
}

impl LogStore {
    pub fn open(path: &Path) -> anyhow::Result<LogStore> {
        let db = crate::storage::open_db(path, crate::storage::LOG_CACHE_BYTES)?;
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(LogStore {
            db: Arc::new(db),
            growth: Arc::default(),
            tail: Arc::new(Mutex::new(Tail::new(TAIL_BYTES))),
        })
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().expect("log tail lock poisoned")
    }

    /// The count of bytes appended, for snapshots by log size (`compaction.rs`).
    pub fn growth(&self) -> Arc<super::compaction::LogGrowth> {
        self.growth.clone()
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(read_err),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        self.write_meta_with(key, value, Durability::Immediate)
    }

    fn write_meta_with<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(durability).map_err(write_err)?;
        {
            let mut table = txn.open_table(META).map_err(write_err)?;
            table.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.read_range((start, end), usize::MAX)
    }

    /// What one AppendEntries carries: at most [`MAX_APPEND_BYTES`] of entries (always at
    /// least one).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.read_range(
            (Bound::Included(start), Bound::Excluded(end)),
            MAX_APPEND_BYTES,
        )
    }
}

impl LogStore {
    /// The entries in `range`, stopping before the one that would take their stored size
    /// past `max_bytes` (the first is always read).
    fn read_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        max_bytes: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.0 {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => None,
        };
        let end = match range.1 {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        if let (Some(start), Some(end)) = (start, end)
            && let Some(entries) = self.tail().range(start, end, max_bytes)
        {
            return Ok(entries);
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in table.range::<u64>(range).map_err(read_err)? {
            let (_, value) = item.map_err(read_err)?;
            let value = value.value();
            bytes = bytes.saturating_add(value.len());
            if !entries.is_empty() && bytes > max_bytes {
                break;
            }
            entries.push(codec::decode(value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(LAST_PURGED)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, v)) => {
                let entry: Entry<TypeConfig> = codec::decode(v.value()).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for faster restarts, not a safety property: a stale value only means more
        // entries are re-applied. Made durable by the next fsynced append or vote.
        self.write_meta_with(COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // On a blocking thread: the fsync takes milliseconds to a quarter second when three
        // servers share a disk, and on a runtime worker it stalled every timer and request
        // scheduled there (runs fired late while their claims had long committed).
        let (db, growth, tail) = (self.db.clone(), self.growth.clone(), self.tail.clone());
        let entries: Vec<_> = entries.into_iter().collect();
        tokio::task::spawn_blocking(move || {
            let appended = append_blocking(&db, &growth, entries)?;
            tail.lock()
                .expect("log tail lock poisoned")
                .appended(appended);
            Ok::<_, StorageError>(())
        })
        .await
        .map_err(write_err)??;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Out of the tail first: a read meanwhile finds them in the file, as before.
        self.tail().truncate(log_id.index);
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = txn.open_table(LOGS).map_err(write_err)?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Thousands of entries go at once after a snapshot: not on a runtime worker.
        self.tail().purge(log_id.index);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || purge_blocking(&db, log_id))
            .await
            .map_err(write_err)?
    }
}

fn purge_blocking(db: &Database, log_id: LogId) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_err)?;
    let txn = db.begin_write().map_err(write_err)?;
    {
        // The pointer and the deletion commit together, so no hole is ever visible.
        let mut meta = txn.open_table(META).map_err(write_err)?;
        meta.insert(LAST_PURGED, bytes.as_slice())
            .map_err(write_err)?;
        let mut table = txn.open_table(LOGS).map_err(write_err)?;
        table
            .retain_in(..=log_id.index, |_, _| false)
            .map_err(write_err)?;
    }
    txn.commit().map_err(write_err)
}

/// Writes `entries` in one transaction, durable before it returns: commit() fsyncs with
/// redb's default immediate durability, so a 2xx means the entry is on disk. Answers the
/// entries with their stored sizes, for the tail.
fn append_blocking(
    db: &Database,
    growth: &super::compaction::LogGrowth,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<Vec<(Entry<TypeConfig>, usize)>, StorageError> {
    let txn = db.begin_write().map_err(write_err)?;
    let mut appended = Vec::with_capacity(entries.len());
    {
        let mut table = txn.open_table(LOGS).map_err(write_err)?;
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(write_err)?;
            growth.appended(bytes.len());
            table
                .insert(entry.log_id.index, bytes.as_slice())
                .map_err(write_err)?;
            appended.push((entry, bytes.len()));
        }
    }
    txn.commit().map_err(write_err)?;
    Ok(appended)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn store_with_blanks(n: u64) -> (tempfile::TempDir, LogStore, usize) {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(&dir.path().join("raft.redb")).unwrap();
        let txn = store.db.begin_write().unwrap();
        let mut size = 0;
        {
            let mut table = txn.open_table(LOGS).unwrap();
            for i in 1..=n {
                let entry: Entry<TypeConfig> = Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
                    payload: EntryPayload::Blank,
                };
                // The first half as an earlier version wrote them (JSON): a log that spans an
                // upgrade is read whole.
                let bytes = if i <= n / 2 {
                    serde_json::to_vec(&entry).unwrap()
                } else {
                    codec::encode(&entry).unwrap()
                };
                size = size.max(bytes.len());
                table.insert(i, bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, store, size)
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn appended_entries_read_back_from_the_tail_as_from_the_file() {
        let (_dir, store, _) = store_with_blanks(4);
        let entries: Vec<Entry<TypeConfig>> = (5..=9)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(2, 0), i),
                payload: EntryPayload::Blank,
            })
            .collect();
        let appended = append_blocking(&store.db, &store.growth, entries.clone()).unwrap();
        store.tail().appended(appended);
        let range = (Bound::Included(5), Bound::Excluded(10));
        let cached = store.read_range(range, usize::MAX).unwrap();
        assert_eq!(cached, entries);
        // The same range from the file: what the tail answered is what the log holds.
        let emptied = LogStore {
            tail: Arc::new(Mutex::new(Tail::new(0))),
            ..store.clone()
        };
        assert_eq!(emptied.read_range(range, usize::MAX).unwrap(), cached);
        // A range reaching before the tail comes from the file, whole.
        let all = (Bound::Included(3), Bound::Included(9));
        assert_eq!(
            indexes(&store.read_range(all, usize::MAX).unwrap()),
            [3, 4, 5, 6, 7, 8, 9]
        );
    }

    #[test]
    fn a_range_stops_before_the_entry_past_the_byte_bound() {
        let (_dir, store, size) = store_with_blanks(10);
        let range = (Bound::Included(3), Bound::Excluded(9));
        assert_eq!(
            indexes(&store.read_range(range, usize::MAX).unwrap()),
            [3, 4, 5, 6, 7, 8]
        );
        assert_eq!(indexes(&store.read_range(range, 2 * size).unwrap()), [3, 4]);
        assert_eq!(
            indexes(&store.read_range(range, 2 * size + 1).unwrap()),
            [3, 4]
        );
        assert_eq!(
            indexes(
                &store
                    .read_range((Bound::Unbounded, Bound::Unbounded), usize::MAX)
                    .unwrap()
            ),
            (1..=10).collect::<Vec<_>>()
        );
        // An entry bigger than the bound still goes, alone: replication never stalls.
        assert_eq!(indexes(&store.read_range(range, 1).unwrap()), [3]);
    }
}
