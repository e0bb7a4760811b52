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

/// A clock moved by hand, for tests: wall time is what the test sets, and monotonic time
/// moves forward with it (never back).
pub struct ManualClock {
    wall: Mutex<Timestamp>,
    origin: (Timestamp, Instant),
}

impl ManualClock {
    pub fn starting_at(t: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            wall: Mutex::new(t),
            origin: (t, monotonic()),
        })
    }

    pub fn set(&self, t: Timestamp) {
        *self.wall.lock().expect("clock lock") = t;
    }

    pub fn advance(&self, by: Duration) {
        let mut wall = self.wall.lock().expect("clock lock");
        *wall += SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.wall.lock().expect("clock lock")
    }

    fn instant(&self) -> Instant {
        let moved = self.now().duration_since(self.origin.0);
        self.origin.1 + Duration::try_from(moved).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_wall_and_monotonic_time_together_and_never_back() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::starting_at(t0);
        let start = clock.instant();
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), "2026-01-01T00:00:10Z".parse().unwrap());
        assert_eq!(clock.instant() - start, Duration::from_secs(10));
        clock.set("2025-12-31T23:00:00Z".parse().unwrap());
        assert_eq!(clock.instant(), start, "monotonic time does not go back");
    }
}
