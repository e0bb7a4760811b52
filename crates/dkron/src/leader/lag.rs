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

    /// Counts these claims as unanswered until the guard is dropped — when the log answered,
    /// or when the claiming task ended any other way, so none is counted forever.
    pub(super) fn claiming(&self, nominals: Vec<Timestamp>) -> Claiming {
        let mut inner = self.0.lock().expect("lag lock");
        for t in &nominals {
            *inner.claiming.entry(*t).or_default() += 1;
        }
        Claiming {
            lag: self.clone(),
            nominals,
        }
    }
}

/// Claims counted by [`Lag::claiming`] until dropped.
pub(super) struct Claiming {
    lag: Lag,
    nominals: Vec<Timestamp>,
}

impl Drop for Claiming {
    fn drop(&mut self) {
        let mut inner = self.lag.0.lock().expect("lag lock");
        for t in &self.nominals {
            if let Some(n) = inner.claiming.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    inner.claiming.remove(t);
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
        let first = lag.claiming(vec![t1]);
        let second = lag.claiming(vec![t1]);
        let third = lag.claiming(vec![t2]);
        assert_eq!(lag.behind(now), Duration::from_secs(4));
        // One of the two t1 claims answered: the other still holds the age.
        drop(first);
        assert_eq!(lag.behind(now), Duration::from_secs(4));
        drop(second);
        assert_eq!(lag.behind(now), Duration::from_secs(3));
        lag.set_waiting(Some(ts("2026-01-01T00:00:00Z")));
        assert_eq!(lag.behind(now), Duration::from_secs(5));
        lag.set_waiting(None);
        drop(third);
        assert_eq!(lag.behind(now), Duration::ZERO);
    }
}
