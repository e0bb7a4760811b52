//! The newest entries of the Raft log, decoded, in memory.
//!
//! openraft reads back what was just appended: a leader for each follower's AppendEntries and
//! for its own apply, a follower for its apply. Decoding every entry again from `raft.redb`
//! each time was 9 % of a leader's CPU at 4,000 runs/s on three servers. The tail keeps the
//! last [`TAIL_BYTES`] (as stored) of appended entries, and the log store serves a range from
//! it when it holds the whole range, from `raft.redb` otherwise.
//!
//! It only ever holds what the log holds: entries join it after their append committed, and
//! leave it before a truncation or a purge removes them from the file.

use std::collections::VecDeque;

use openraft::Entry;

use super::TypeConfig;

/// Stored bytes of entries the tail keeps at most (about three times that decoded): at
/// 4,000 runs/s the log grows about 3 MB/s, so this covers the ~150 ms a follower or the apply
/// lags at most when they keep up.
pub(super) const TAIL_BYTES: usize = 512 << 10;

/// Consecutive entries, oldest first, each with its stored size.
pub(super) struct Tail {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    limit: usize,
}

impl Tail {
    pub(super) fn new(limit: usize) -> Tail {
        Tail {
            entries: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Entries whose append committed, in order. One that does not follow the newest held
    /// (after a snapshot was installed, say) starts the tail afresh.
    pub(super) fn appended(
        &mut self,
        entries: impl IntoIterator<Item = (Entry<TypeConfig>, usize)>,
    ) {
        for (entry, size) in entries {
            if self
                .entries
                .back()
                .is_some_and(|(last, _)| last.log_id.index + 1 != entry.log_id.index)
            {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.bytes > self.limit {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// Before the log drops every entry from index `from` on.
    pub(super) fn truncate(&mut self, from: u64) {
        while let Some((entry, size)) = self.entries.back()
            && entry.log_id.index >= from
        {
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    /// Before the log drops every entry up to index `upto`.
    pub(super) fn purge(&mut self, upto: u64) {
        while let Some((entry, size)) = self.entries.front()
            && entry.log_id.index <= upto
        {
            self.bytes -= size;
            self.entries.pop_front();
        }
    }

    /// The entries from `start` up to `end` (excluded), if the tail holds every one of them,
    /// stopping before the one that would take their stored size past `max_bytes` (the first
    /// always comes), as the log store reads them from the file.
    pub(super) fn range(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || end > last + 1 || start >= end {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        let mut out = Vec::with_capacity(to - from);
        let mut bytes = 0usize;
        for (entry, size) in self.entries.range(from..to) {
            bytes = bytes.saturating_add(*size);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entry(index: u64) -> (Entry<TypeConfig>, usize) {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Blank,
        };
        (entry, 10)
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn a_range_is_served_only_when_the_tail_holds_all_of_it() {
        let mut tail = Tail::new(50);
        tail.appended((1..=8).map(entry));
        // Bounded: the five newest (50 bytes) stay.
        assert_eq!(
            indexes(tail.range(4, 9, usize::MAX)),
            Some(vec![4, 5, 6, 7, 8])
        );
        assert_eq!(indexes(tail.range(3, 9, usize::MAX)), None);
        assert_eq!(indexes(tail.range(5, 10, usize::MAX)), None);
        // The byte bound of one append, the first entry always.
        assert_eq!(indexes(tail.range(4, 9, 25)), Some(vec![4, 5]));
        assert_eq!(indexes(tail.range(4, 9, 1)), Some(vec![4]));
    }

    #[test]
    fn truncation_purge_and_a_gap_leave_only_what_the_log_holds() {
        let mut tail = Tail::new(usize::MAX);
        tail.appended((1..=6).map(entry));
        tail.truncate(5);
        assert_eq!(indexes(tail.range(1, 6, usize::MAX)), None);
        assert_eq!(
            indexes(tail.range(1, 5, usize::MAX)),
            Some(vec![1, 2, 3, 4])
        );
        tail.purge(2);
        assert_eq!(indexes(tail.range(1, 5, usize::MAX)), None);
        assert_eq!(indexes(tail.range(3, 5, usize::MAX)), Some(vec![3, 4]));
        // A snapshot installed: the log goes on from 100, the tail starts again there.
        tail.appended([entry(100), entry(101)]);
        assert_eq!(indexes(tail.range(3, 5, usize::MAX)), None);
        assert_eq!(
            indexes(tail.range(100, 102, usize::MAX)),
            Some(vec![100, 101])
        );
    }
}
