//! Daily execution counts (`GET /v1/stats`, Dkron 4.1): successes and failures per UTC day,
//! counted in `apply` as executions finish, so they are replicated, durable and the same on
//! every server. A year and a day is kept.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// Days kept: a year of `?days=365` plus today.
pub const KEEP_DAYS: i64 = 366;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DayCount {
    pub success_count: u64,
    pub failed_count: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DailyStats {
    #[serde(default)]
    days: BTreeMap<Date, DayCount>,
}

/// The UTC day of an instant.
pub fn day_of(at: Timestamp) -> Date {
    at.to_zoned(TimeZone::UTC).date()
}

impl DailyStats {
    /// A set loaded back from storage.
    pub fn from_days(days: impl IntoIterator<Item = (Date, DayCount)>) -> DailyStats {
        DailyStats {
            days: days.into_iter().collect(),
        }
    }

    pub fn days(&self) -> impl Iterator<Item = (&Date, &DayCount)> {
        self.days.iter()
    }

    pub fn day(&self, day: Date) -> Option<DayCount> {
        self.days.get(&day).copied()
    }

    /// Counts one finished execution; answers its day and the days dropped as too old.
    pub fn record(&mut self, at: Timestamp, success: bool) -> (Date, Vec<Date>) {
        let day = day_of(at);
        let count = self.days.entry(day).or_default();
        if success {
            count.success_count += 1;
        } else {
            count.failed_count += 1;
        }
        let newest = *self.days.keys().next_back().unwrap_or(&day);
        let oldest_kept = newest
            .checked_sub(jiff::Span::new().days(KEEP_DAYS - 1))
            .unwrap_or(newest);
        let dropped: Vec<Date> = self.days.range(..oldest_kept).map(|(d, _)| *d).collect();
        for d in &dropped {
            self.days.remove(d);
        }
        (day, dropped)
    }

    /// The `days` days up to and including `today`, oldest first, zeros where nothing ran.
    pub fn last(&self, today: Date, days: u32) -> Vec<(Date, DayCount)> {
        (0..i64::from(days))
            .rev()
            .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
            .map(|d| (d, self.days.get(&d).copied().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn counts_by_utc_day_and_keeps_a_year() {
        let mut stats = DailyStats::default();
        stats.record(ts("2026-01-28T23:59:59Z"), true);
        stats.record(ts("2026-01-29T00:00:00Z"), false);
        stats.record(ts("2026-01-29T10:00:00+05:00"), true); // 05:00 UTC
        let last = stats.last(day_of(ts("2026-01-30T12:00:00Z")), 3);
        let shown: Vec<(String, u64, u64)> = last
            .iter()
            .map(|(d, c)| (d.to_string(), c.success_count, c.failed_count))
            .collect();
        assert_eq!(
            shown,
            [
                ("2026-01-28".to_string(), 1, 0),
                ("2026-01-29".to_string(), 1, 1),
                ("2026-01-30".to_string(), 0, 0)
            ]
        );
        let (_, dropped) = stats.record(ts("2027-02-01T00:00:00Z"), true);
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        assert_eq!(stats.day(day_of(ts("2026-01-29T00:00:00Z"))), None);
    }
}
