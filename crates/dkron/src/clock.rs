//! The one place that reads clocks (a lint, `clippy.toml`, refuses a read anywhere else).
//! Everything else asks a [`Clock`], so tests substitute their own time: wall time for stamps,
//! schedules and the fire ledger; monotonic time for "for how long" decisions and deadlines.
//!
//! Monotonic time is tokio's, so a paused test runtime drives it; [`ManualClock`] moves both.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

pub trait Clock: Send + Sync + 'static {
    /// Wall time.
    fn now(&self) -> Timestamp;

    /// Monotonic time, for how long something has lasted.
    fn instant(&self) -> Instant {
        monotonic()
    }
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the clock itself
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

pub type SharedClock = Arc<dyn Clock>;

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Monotonic now, for measurements (latency metrics) and deadlines of work that no test clock
/// decides (flush cadence, polling bounds). Decisions take a [`Clock`] instead.
#[allow(clippy::disallowed_methods)] // the clock itself
pub fn monotonic() -> Instant {
    Instant::now()
}

/// How long since `start` on the monotonic clock.
pub fn since(start: Instant) -> Duration {
    monotonic().saturating_duration_since(start)
}

/// Wall time where no node clock exists (the CLI, log throttling).
pub fn wall() -> Timestamp {
    SystemClock.now()
}

/// A clock moved by hand, for tests: wall time is what the test sets; monotonic time runs on
/// (as tokio's does, paused or not) plus however far the test moved the wall clock forward,
/// and never goes back when the test sets the wall clock back.
pub struct ManualClock {
    wall: Mutex<Timestamp>,
    origin: Timestamp,
    /// The furthest the wall clock was moved past `origin`.
    ahead: Mutex<Duration>,
}

impl ManualClock {
    pub fn starting_at(t: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            wall: Mutex::new(t),
            origin: t,
            ahead: Mutex::new(Duration::ZERO),
        })
    }

    pub fn set(&self, t: Timestamp) {
        *self.wall.lock().expect("clock lock") = t;
        let moved = Duration::try_from(t.duration_since(self.origin)).unwrap_or_default();
        let mut ahead = self.ahead.lock().expect("clock lock");
        *ahead = (*ahead).max(moved);
    }

    pub fn advance(&self, by: Duration) {
        let now = self.now() + SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        self.set(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.wall.lock().expect("clock lock")
    }

    fn instant(&self) -> Instant {
        monotonic() + *self.ahead.lock().expect("clock lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_manual_clock_moves_wall_and_monotonic_time_together_and_never_back() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::starting_at(t0);
        let start = clock.instant();
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), "2026-01-01T00:00:10Z".parse().unwrap());
        assert_eq!(clock.instant() - start, Duration::from_secs(10));
        let moved = clock.instant();
        clock.set("2025-12-31T23:00:00Z".parse().unwrap());
        assert_eq!(clock.instant(), moved, "monotonic time does not go back");
        clock.set("2026-01-01T00:00:05Z".parse().unwrap());
        assert_eq!(
            clock.instant(),
            moved,
            "nor when set back to less than its furthest"
        );
        // Time that passes on its own passes for it too (a test that never moves the clock
        // still sees graces and leases run out).
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.instant() - moved, Duration::from_secs(3));
    }
}
