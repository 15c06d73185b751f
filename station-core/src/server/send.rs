//! Pacing: the numbers that are due and fit the window go out while the
//! lease holds; past it, `Paused` in their place.

use std::time::{Duration, Instant};

use super::{Number, Output, Phase, Stream};
use crate::sequence;

/// `Paused` goes out once an interval, but never more often than this (an
/// unpaced stream's interval is zero).
const MIN_PAUSE_GAP: Duration = Duration::from_millis(100);

impl Stream {
    /// Sends what is due if the lease still holds. Once it has run out,
    /// only the renewal's answer lets numbers go again; meanwhile each
    /// held number is answered with `Paused`, at most once an interval,
    /// so the client knows the server is alive and waits rather than
    /// resumes elsewhere (a resume costs the slow store a load and a
    /// takeover).
    pub(super) fn send_leased(&mut self, now: Instant) {
        if now < self.lease_until {
            return self.send_due(now);
        }
        self.lease_until = self.lease_until.min(self.next_tick);
        if self.holds_a_number() && now >= self.paused_at.max(self.next_tick) {
            self.out.push_back(Output::Paused {
                next_index: self.sent,
            });
            self.paused_at = now + self.cfg.interval.max(MIN_PAUSE_GAP);
        }
    }

    /// A number is due, or will be, that the lease does not cover.
    pub(super) fn holds_a_number(&self) -> bool {
        self.phase == Phase::Attached
            && !self.complete
            && self.can_send()
            && self.next_tick >= self.lease_until
    }

    /// Emits every number that is due and fits in the window.
    pub(super) fn send_due(&mut self, now: Instant) {
        let record = self.record.expect("attached streams have a record");
        while self.can_send() && self.next_tick <= now {
            let index = self.sent;
            let last = index + 1 == record.count;
            self.out.push_back(Output::Send(Number {
                index,
                value: sequence::value(record.seed, index),
                checksum: last.then(|| sequence::checksum(record.seed, record.count)),
            }));
            if self.waiting_since.is_none() {
                self.waiting_since = Some(now);
            }
            self.sent += 1;
            self.next_tick += self.cfg.interval;
        }
    }
}
