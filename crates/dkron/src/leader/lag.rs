//! How far behind schedule this server's scheduler is, for `dkron_scheduler_behind_seconds`:
//! what the scheduler still has queued past its claim time, and the claims it proposed that
//! the log has not answered yet. The core's `due::behind` does the arithmetic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// A handle shared by the scheduler (which records) and the gauges (which read).
#[derive(Clone, Default)]
pub struct Lag(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    /// The oldest queued occurrence past its claim time, as of the scheduler's last pass.
    waiting: Option<Timestamp>,
    /// Nominal times of claims proposed and not yet answered, with how many of each.
    claiming: BTreeMap<Timestamp, usize>,
}

impl Lag {
    /// How far behind schedule the scheduler is at `now` (zero on a follower).
    pub fn behind(&self, now: Timestamp) -> Duration {
        let inner = self.0.lock().expect("lag lock");
        dkron_core::due::behind(now, inner.waiting, inner.claiming.keys().next().copied())
    }

    pub(super) fn set_waiting(&self, waiting: Option<Timestamp>) {
        self.0.lock().expect("lag lock").waiting = waiting;
    }

    pub(super) fn claiming(&self, nominals: impl IntoIterator<Item = Timestamp>) {
        let mut inner = self.0.lock().expect("lag lock");
        for t in nominals {
            *inner.claiming.entry(t).or_default() += 1;
        }
    }

    pub(super) fn answered(&self, nominals: impl IntoIterator<Item = Timestamp>) {
        let mut inner = self.0.lock().expect("lag lock");
        for t in nominals {
            if let Some(n) = inner.claiming.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    inner.claiming.remove(&t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_claim_counts_until_the_log_answers_it() {
        let lag = Lag::default();
        let (t1, t2) = (ts("2026-01-01T00:00:01Z"), ts("2026-01-01T00:00:02Z"));
        let now = ts("2026-01-01T00:00:05Z");
        assert_eq!(lag.behind(now), Duration::ZERO);
        lag.claiming([t1, t1, t2]);
        assert_eq!(lag.behind(now), Duration::from_secs(4));
        // One of the two t1 claims answered: the other still holds the age.
        lag.answered([t1]);
        assert_eq!(lag.behind(now), Duration::from_secs(4));
        lag.answered([t1]);
        assert_eq!(lag.behind(now), Duration::from_secs(3));
        lag.set_waiting(Some(ts("2026-01-01T00:00:00Z")));
        assert_eq!(lag.behind(now), Duration::from_secs(5));
        lag.set_waiting(None);
        lag.answered([t2]);
        assert_eq!(lag.behind(now), Duration::ZERO);
    }
}
