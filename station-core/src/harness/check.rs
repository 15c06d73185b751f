//! The invariants a run must keep (ARCHITECTURE.md §6), checked as numbers
//! are sent and accepted and once the run is over: what the harness
//! observes, judged by the shared rules of `testkit::invariants`.

use std::time::Duration;

use super::{Harness, StreamId};
use crate::client::Verdict;
use crate::sequence;
use crate::server;
use crate::testkit::invariants::{self, OneStream, Prefixes};

impl Harness {
    /// Checks the client's progress on one number: at most one step, in
    /// order, from one session's sequence.
    pub(super) fn check_accepted(&mut self, sid: StreamId, before: u32, n: server::Number) {
        let after = self.client.received();
        match invariants::accepted_step(before, after, n.index, self.setup.count) {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => return self.violation(format!("client {e}")),
        }
        self.last_progress = Some(self.now);
        let seed = self.streams[&sid]
            .seed
            .expect("a sending stream has a record");
        match self.accepted_seed {
            None => self.accepted_seed = Some(seed),
            Some(s) if s != seed => {
                self.violation(format!("number {} comes from another session", n.index))
            }
            Some(_) => {}
        }
        if n.value != sequence::value(seed, n.index) {
            self.violation(format!("number {} has the wrong value", n.index));
        }
    }

    /// Invariant 4 as the lease bounds it: a stream sends only with a
    /// record the store confirmed, and once another stream took the session
    /// over, nothing later than two leases after (ARCHITECTURE.md §6).
    pub(super) fn check_sender(&mut self, sid: StreamId, index: u32) {
        let stream = &self.streams[&sid];
        let (Some(generation), Some(seed)) = (stream.generation, stream.seed) else {
            return self.violation(format!("stream {sid} sent {index} without a record"));
        };
        let now = self.now;
        if let Err(e) = self.one_stream(seed).sent(sid, generation, index, now) {
            self.violation(e);
        }
    }

    /// Invariant 4's tracker for the session of `seed`.
    pub(super) fn one_stream(&mut self, seed: u64) -> &mut OneStream<std::time::Instant> {
        let bound = self.setup.server.lease * 2;
        self.senders
            .entry(seed)
            .or_insert_with(|| OneStream::new(bound))
    }

    pub(super) fn all_ended(&self) -> bool {
        self.streams
            .values()
            .all(|s| s.session.as_ref().is_none_or(server::Stream::is_ended))
    }

    /// Runs without new faults until the client has finished, every stream
    /// has ended and nothing is in flight; then lets the TTL pass.
    pub(crate) fn finish(&mut self) {
        let limit = self.now + Duration::from_secs(4 * 3600);
        while self.outcome.is_none() || !self.all_ended() || !self.queue.is_empty() {
            match self.next_deadline() {
                None => {
                    return self
                        .violation("stuck: nothing is scheduled but the run is not over".into())
                }
                Some(at) if at > limit => {
                    return self.violation("the run does not end".into());
                }
                Some(at) => {
                    self.now = self.now.max(at);
                    self.settle();
                }
            }
        }
        // A stream the store failed could not release its session, which
        // then lives out its last lease write: up to a lease past the TTL.
        let server = &self.setup.server;
        let after = self.now + server.ttl + server.lease + Duration::from_secs(1);
        self.now = after;
        let live = self.store.live_count(self.now) as u64;
        if let Some(leak) = invariants::live_leak(live) {
            self.violation(leak);
        }
    }

    /// The invariants (ARCHITECTURE.md §6):
    ///
    /// 1. the client finished; if `Verified`, it holds exactly the sequence
    ///    of the session's seed and the checksums agree; whatever the
    ///    verdict, what it holds is a gapless prefix of that sequence;
    /// 2. `Expired` or `LikelyExpired` only if the client was really cut
    ///    off for the TTL:
    ///    nothing heard from a server for at least `ttl` minus what the
    ///    network accounts for (latency, injected delays, lost acks) and
    ///    the client's last-moment squeeze (`backoff_initial`);
    ///    `Unreachable` only if no number it did not hold arrived for
    ///    `give_up_without_progress`;
    ///    no other verdict;
    /// 3. no session is live once the TTL has passed after the end;
    /// 4. only the current generation's stream sends (checked as it sends);
    /// 5. every write that changed the model store's contents is fenced by
    ///    incarnation and generation.
    pub(crate) fn check(&mut self) {
        let writes: Vec<String> = self
            .store
            .writes
            .iter()
            .filter_map(|w| {
                let wrong = invariants::write_rule(&w.before, &w.after, &w.op)?;
                Some(format!(
                    "at {:?}: {wrong} (reply {:?})",
                    w.at - self.start,
                    w.reply
                ))
            })
            .collect();
        for wrong in writes {
            self.violation(wrong);
        }
        let Some((at, outcome)) = self.outcome.clone() else {
            return self.violation("the client never finished".into());
        };
        let sequence = match self.accepted_seed {
            Some(seed) => Prefixes::of_seed(seed, self.setup.count),
            None => Prefixes::new([]),
        };
        if !sequence.holds(outcome.received, outcome.sum, outcome.client_checksum) {
            self.violation(format!("the client's sums are not its prefix: {outcome:?}"));
        }
        let ttl = self.setup.server.ttl;
        match &outcome.verdict {
            Verdict::Verified => {
                if !invariants::verified(self.setup.count, &outcome, Some(&sequence)) {
                    self.violation(format!("verified but not the sequence: {outcome:?}"));
                }
            }
            // A server's SESSION_EXPIRED, or the client's own clock: both
            // claim the session is gone, and must be justified alike.
            Verdict::Expired(why) | Verdict::LikelyExpired(why) => {
                // A store that failed a renewal leaves the record to its
                // last confirmed write, while the stream sent on for up to
                // a lease more (ARCHITECTURE.md §2, expiry).
                let store_failed = match self.renewal_failed {
                    true => self.setup.server.lease,
                    false => Duration::ZERO,
                };
                let slack = self.setup.client.backoff_initial
                    + self.setup.max_latency * 2
                    + self.longest_delay
                    + self.setup.server.interval * self.acks_lost
                    + store_failed;
                match self.client_heard {
                    Some(heard) if invariants::expiry_justified(at - heard, slack, ttl) => {}
                    heard => self.violation(format!(
                        "expired after only {:?} cut off (slack {slack:?}): {why}",
                        heard.map(|h| at - h)
                    )),
                }
            }
            Verdict::Unreachable(why) => {
                let cfg = &self.setup.client;
                let since = self.last_progress.unwrap_or(self.start);
                let waited = at - since;
                if !invariants::unreachable_justified(
                    waited,
                    cfg.backoff_initial,
                    cfg.give_up_without_progress,
                ) {
                    self.violation(format!("unreachable too early: {why}"));
                }
            }
            other => self.violation(format!("unexpected verdict {other:?}")),
        }
    }
}
