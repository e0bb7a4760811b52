//! The one place that reads the wall clock. Everything else asks a [`Clock`], so tests can
//! substitute their own time.

use std::sync::Arc;

use jiff::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

pub type SharedClock = Arc<dyn Clock>;

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock moved by hand, for tests.
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn starting_at(t: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock(std::sync::Mutex::new(t)))
    }

    pub fn set(&self, t: Timestamp) {
        *self.0.lock().expect("clock lock") = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}
