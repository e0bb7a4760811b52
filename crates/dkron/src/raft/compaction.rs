//! Snapshots by the log's size, not only by its entry count.
//!
//! Entries are batches of up to 2,048 commands, so openraft's count policy alone (a snapshot
//! every 20,000 entries) let `raft.redb` reach 828 MB in ten minutes of 10,000 jobs
//! `@every 5s`, and it would have kept growing for hours before the first snapshot let the log
//! be purged. Each server therefore asks for a snapshot of its own once the log appended since
//! its last one outgrows both a floor ([`MIN_LOG_BYTES`]) and that snapshot: the log stays
//! within about the size of the snapshot on disk (plus the floor), and a snapshot is never
//! rewritten for less log than it costs to write.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Raft;

/// The least log growth that asks for a snapshot.
pub const MIN_LOG_BYTES: u64 = 64 << 20;
/// How often the log's growth is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Checks after which a snapshot asked for and not taken is asked for again.
const ASK_AGAIN_AFTER: u32 = 12;

/// Bytes appended to this server's log (counted by the log store, read by [`watch`]).
#[derive(Default)]
pub struct LogGrowth(AtomicU64);

impl LogGrowth {
    pub fn appended(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether `since` bytes of log appended after a snapshot of `snapshot` bytes call for a new
/// one, `floor` being the least growth that does.
pub fn snapshot_due(since: u64, snapshot: u64, floor: u64) -> bool {
    since >= floor.max(snapshot)
}

/// Asks this server's Raft for a snapshot whenever [`snapshot_due`] says so; ends when Raft
/// has shut down.
pub(super) async fn watch(raft: Raft, growth: Arc<LogGrowth>, snapshot_file: PathBuf, floor: u64) {
    let mut seen = raft.metrics().borrow().snapshot;
    let mut mark = growth.total();
    let mut asked: Option<u32> = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let snapshot = raft.metrics().borrow().snapshot;
        if snapshot != seen {
            (seen, mark, asked) = (snapshot, growth.total(), None);
        }
        if let Some(checks) = asked.as_mut() {
            *checks += 1;
            if *checks < ASK_AGAIN_AFTER {
                continue;
            }
        }
        let since = growth.total().saturating_sub(mark);
        let size = std::fs::metadata(&snapshot_file).map_or(0, |m| m.len());
        if !snapshot_due(since, size, floor) {
            continue;
        }
        tracing::info!(
            log_bytes = since,
            snapshot_bytes = size,
            "the Raft log outgrew its last snapshot: taking a new one, so the log behind it is purged"
        );
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        asked = Some(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_once_the_log_outgrows_the_floor_and_the_last_snapshot() {
        let floor = 64;
        assert!(!snapshot_due(0, 0, floor));
        assert!(!snapshot_due(63, 0, floor), "under the floor");
        assert!(snapshot_due(64, 0, floor));
        assert!(
            snapshot_due(64, 10, floor),
            "a small snapshot: the floor decides"
        );
        assert!(
            !snapshot_due(500, 1_000, floor),
            "less log than the snapshot costs"
        );
        assert!(snapshot_due(1_000, 1_000, floor));
    }
}
