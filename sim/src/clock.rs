//! One clock for every store handle in a simulation.
//!
//! Each turmoil host runs its own paused tokio runtime, and a bounced host
//! gets a new one, so `tokio::time::Instant::now()` on two hosts (or two
//! boots) are not comparable. A store shared by several server hosts must
//! read a clock they agree on: turmoil's global simulated time, as an
//! offset from one base [`Instant`] captured when the run starts.
//!
//! Outside a host (the runner, between steps) turmoil has no current
//! host, so the runner tells the clock the simulation's elapsed time
//! after every step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_net::store::memory::Clock;

/// Simulated time as an [`Instant`], shared by all hosts of one run.
#[derive(Debug)]
pub struct SimClock {
    base: Instant,
    /// Elapsed nanoseconds as last told by the runner.
    outside: AtomicU64,
}

impl SimClock {
    /// A clock reading zero elapsed time now.
    pub fn new() -> Arc<Self> {
        Arc::new(SimClock {
            base: Instant::now(),
            outside: AtomicU64::new(0),
        })
    }

    /// Simulated time elapsed since the run began: turmoil's, inside a
    /// host; the runner's last report, outside.
    pub fn elapsed(&self) -> Duration {
        turmoil::sim_elapsed()
            .unwrap_or_else(|| Duration::from_nanos(self.outside.load(Ordering::Relaxed)))
    }

    /// The current simulated instant.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// Called by the runner after each step (and before reading stores
    /// from outside the simulation).
    pub fn set_outside(&self, elapsed: Duration) {
        self.outside
            .store(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The clock in the form [`MemoryStore::with_clock`] takes.
    ///
    /// [`MemoryStore::with_clock`]: station_net::store::MemoryStore::with_clock
    pub fn store_clock(self: &Arc<Self>) -> Clock {
        let clock = self.clone();
        Arc::new(move || clock.now())
    }
}
