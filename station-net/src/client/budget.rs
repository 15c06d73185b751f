//! The retry budget and open throttle a process's sessions share.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use station_core::client::{
    Attempt, BudgetStats, Decision, OpenThrottle, RetryBudget, ThrottleStats,
};

use super::lock;
use crate::clock::now;

/// The retry budget of one process, shared by every session
/// [`run`](super::run) with the same [`DriverOptions`](super::DriverOptions)
/// (clones share it): a core [`RetryBudget`]
/// (gRFC A6's token bucket, scaled by the sessions using it), which paces
/// each retry, and an [`OpenThrottle`] (the SRE book's client-side
/// throttling), which bounds how many new sessions' opens the process
/// sends while its servers refuse most of them.
#[derive(Clone, Debug, Default)]
pub struct SharedBudget(Arc<Mutex<Budgets>>);

#[derive(Debug, Default)]
struct Budgets {
    retries: RetryBudget,
    opens: OpenThrottle,
}

impl SharedBudget {
    /// A fresh budget, used by no session yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens now, the bucket's size, sessions using it, whether retries
    /// are throttled now and how many have been so far: for metrics.
    pub fn stats(&self) -> BudgetStats {
        lock(&self.0).retries.stats()
    }

    /// The open throttle's window and what it has held back: for metrics.
    pub fn open_stats(&self) -> ThrottleStats {
        lock(&self.0).opens.stats(now())
    }

    /// Adds a session's allowance until the returned seat is dropped
    /// (however [`run`](super::run) ends, even if its future is dropped).
    pub(super) fn join(&self) -> Seat<'_> {
        lock(&self.0).retries.join();
        Seat(self)
    }

    pub(super) fn record(&self, attempt: Attempt) -> Decision {
        lock(&self.0).retries.record(attempt)
    }

    /// Whether to send a new session's open now (see [`OpenThrottle::ask`]).
    pub(super) fn ask_open(&self, now: Instant, draw: u64) -> bool {
        lock(&self.0).opens.ask(now, draw)
    }

    pub(super) fn open_accepted(&self, now: Instant) {
        lock(&self.0).opens.accepted(now);
    }

    pub(super) fn open_not_accepted(&self, now: Instant) {
        lock(&self.0).opens.not_accepted(now);
    }
}

/// A session's place in a [`SharedBudget`]; leaving it takes its share.
pub(super) struct Seat<'a>(&'a SharedBudget);

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        lock(&self.0 .0).retries.leave();
    }
}
