//! The lease (module docs): when a renewal, or the delete of a completed
//! session, is due, and how long what the store confirmed lets the stream
//! send and the record live.

use std::time::{Duration, Instant};

use super::{End, Output, Pending, Phase, Stream};
use crate::store::StoreOp;

impl Stream {
    /// Starts the store operation that is due, and sends what the lease
    /// allows.
    pub(super) fn advance(&mut self, now: Instant) {
        if self.phase != Phase::Attached {
            return;
        }
        let mut record = self.record.expect("attached streams have a record");
        if self.pending.is_none() {
            if self.complete {
                if now < self.delete_at {
                    return;
                }
                self.pending = Some(Pending::Delete);
                self.out.push_back(Output::Store(StoreOp::Delete {
                    client_id: record.client_id,
                    incarnation: record.incarnation,
                    generation: record.generation,
                }));
                return;
            }
            if now >= self.renew_at {
                record.acked = self.acked;
                self.record = Some(record);
                self.pending = Some(Pending::Renew { asked: now });
                self.out.push_back(Output::Store(StoreOp::Update {
                    record,
                    expect_generation: record.generation,
                    expires_in: self.leased_expiry(),
                }));
            }
        }
        self.send_leased(now);
    }

    /// The store confirmed a lease write asked for at `asked`.
    pub(super) fn leased(&mut self, asked: Instant) {
        self.renew_at = asked + self.cfg.lease;
        self.lease_until = asked + self.cfg.lease.saturating_mul(2);
    }

    /// What a lease write sets the record to live for: the TTL from the
    /// last moment the stream can work before its next write, `L` away
    /// (see the module docs).
    pub(super) fn leased_expiry(&self) -> Duration {
        self.cfg.ttl.saturating_add(self.cfg.lease)
    }

    /// Until when the record lives without another write: a lease write
    /// asked for at `asked` sets it to live `ttl + L`, and `lease_until` is
    /// `asked + 2L` (or earlier, once the lease ran out).
    pub(super) fn record_alive_until(&self) -> Instant {
        (self.lease_until + self.cfg.ttl)
            .checked_sub(self.cfg.lease)
            .unwrap_or(self.lease_until)
    }

    /// The last moment a failed delete of a completed session is tried
    /// again: a lease after the final acknowledgement (the last message
    /// heard: later ones are ignored). Each attempt is bounded by the
    /// adapter's store timeout, so the client hears OK within about a
    /// lease and a store timeout, however the store behaves.
    pub(super) fn delete_until(&self) -> Instant {
        self.last_heard + self.cfg.lease
    }

    /// Ends a completed session's stream: OK for the client, whether or
    /// not the store confirmed the delete.
    pub(super) fn completed(&mut self, deleted: bool) {
        self.phase = Phase::Ended;
        self.pending = None;
        self.out.push_back(Output::End(End::Completed { deleted }));
    }
}
