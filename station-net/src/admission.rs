//! The door for new sessions, as the store sees it: every store operation
//! that cannot answer at once is counted in flight and, when it ends,
//! taught to the server's [`StoreGate`] (ARCHITECTURE.md §2, "Overload").
//! New sessions (`Open`) are refused while the gate is closed; resumes
//! never are.
//!
//! The memory store answers every operation at once, on the stream's own
//! task: it never queues, so it is not counted, and the gate stays open
//! (the lateness probe of [`crate::overload`] watches that server).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use station_core::admission::{Closed, Config, StoreGate};

use crate::metrics;

/// Store operations in flight and the gate they feed, for one server.
#[derive(Debug)]
pub struct Admission {
    gate: Mutex<StoreGate>,
    inflight: AtomicU32,
}

impl Admission {
    /// An open door with the gate's defaults for `store_timeout`.
    pub fn new(store_timeout: Duration) -> Self {
        Admission {
            gate: Mutex::new(StoreGate::new(Config::new(store_timeout))),
            inflight: AtomicU32::new(0),
        }
    }

    /// Whether a new session may be admitted now.
    pub fn admits(&self, now: Instant) -> Result<(), Closed> {
        let inflight = self.inflight.load(Ordering::Relaxed);
        self.lock().admits(now, inflight)
    }

    /// The adaptive limit on store operations in flight.
    pub fn limit(&self) -> u32 {
        self.lock().limit()
    }

    /// Store operations in flight now.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// A store operation starts: in flight until [`finished`](Self::finished).
    /// Returns the number in flight, itself included.
    pub(crate) fn started(&self) -> u32 {
        self.inflight.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The operation that [`started`](Self::started) with `inflight` in
    /// flight ended at `now` after `latency`.
    pub(crate) fn finished(&self, now: Instant, latency: Duration, inflight: u32, failed: bool) {
        let left = self.inflight.fetch_sub(1, Ordering::Relaxed) - 1;
        let limit = {
            let mut gate = self.lock();
            gate.handle_sample(now, latency, inflight, failed);
            gate.limit()
        };
        metrics::set_admission(left, limit);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreGate> {
        // The gate is plain numbers, updated in one call: a panic cannot
        // leave it half-written, so a poisoned lock is still usable.
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}
