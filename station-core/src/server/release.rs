//! How a stream ends: for the client's or the server's reasons, with a
//! release that sets the record's exact expiry, or for the store's,
//! without one (module docs, "Expiry").

use std::time::{Duration, Instant};

use super::{End, Output, Pending, Phase, Stream};
use crate::store::StoreOp;
use crate::Reject;

impl Stream {
    pub(super) fn end(&mut self, now: Instant, end: End) {
        if self.is_over() {
            return; // Ended streams say nothing more, not even a second End.
        }
        if self.complete && self.phase == Phase::Attached {
            // The client has everything and said so: the delete (in flight
            // or due) decides, and the stream ends `Completed` after it,
            // within a bounded time (`delete_until`). Ending it now would
            // tell a client that has everything to retry, count no
            // completion, and leave the record behind.
            return;
        }
        // Nothing is sent after the end: drop numbers still queued from a
        // burst, so an abort takes effect at once. A store operation still
        // queued stays: it is the one in flight, and its answer matters.
        self.out.retain(|out| matches!(out, Output::Store(_)));
        self.out.push_back(Output::End(end));
        // The stream works no more: freeze that moment, so that a release
        // made later (after a renewal in flight) still counts from it.
        let worked = self.waiting_since.unwrap_or(now).max(self.last_heard);
        self.waiting_since = Some(worked);
        match self.pending {
            // Not attached: nothing to release (an attach write in flight
            // leases the record, a lease past its TTL at most).
            _ if self.phase != Phase::Attached => {
                self.phase = Phase::Ended;
                self.pending = None;
            }
            None => self.release(now),
            // Release once the renewal's answer shows the lease held.
            Some(_) => self.phase = Phase::Releasing,
        }
    }

    /// Leaves the session as the ended stream should: set to its exact
    /// expiry (a complete session is deleted instead, and never released).
    /// The store's answer only ends the machine.
    pub(super) fn release(&mut self, now: Instant) {
        let mut record = self.record.expect("attached streams have a record");
        record.acked = self.acked;
        self.record = Some(record);
        self.phase = Phase::Releasing;
        self.pending = Some(Pending::Release);
        self.out.push_back(Output::Store(StoreOp::Update {
            record,
            expect_generation: record.generation,
            expires_in: self.exact_expiry(now),
        }));
    }

    /// How long from `now` the record should live once the stream ends:
    /// `ttl` after the stream last worked (ARCHITECTURE.md §2). That is
    /// `now` if the client has acknowledged everything sent, else the
    /// moment the server began waiting for it (its first unacknowledged
    /// number or its last acknowledgement), or the last message heard,
    /// whichever is later.
    pub(super) fn exact_expiry(&self, now: Instant) -> Duration {
        let worked = self.waiting_since.unwrap_or(now).max(self.last_heard);
        (worked + self.cfg.ttl).saturating_duration_since(now)
    }

    pub(super) fn unexpected(&mut self, now: Instant, what: &'static str) {
        self.fail(now, Reject::Unexpected(what));
    }

    /// Ends the stream for a reason of the client's or the server's: the
    /// session stays, released to expire on time.
    pub(super) fn fail(&mut self, now: Instant, reject: Reject) {
        self.end(now, End::Rejected(reject));
    }

    /// Ends the stream because of what the store answered: the session is
    /// not this stream's to release (taken over, expired, lost), or the
    /// store failed.
    pub(super) fn fail_by_store(&mut self, reject: Reject) {
        self.phase = Phase::Ended;
        self.pending = None;
        self.out.clear();
        self.out.push_back(Output::End(End::Rejected(reject)));
    }
}
