//! The invariants a run must keep (ARCHITECTURE.md §6), checked as numbers
//! are sent and accepted and once the run is over.

use std::time::Duration;

use super::{Harness, StreamId};
use crate::client::Verdict;
use crate::sequence::{self, RunningChecksum};
use crate::server;

impl Harness {
    /// Checks the client's progress on one number: at most one step, in
    /// order, from one session's sequence.
    pub(super) fn check_accepted(&mut self, sid: StreamId, before: u32, n: server::Number) {
        let after = self.client.received();
        if after == before {
            return;
        }
        if after != before + 1 || n.index != before {
            return self.violation(format!(
                "client went from {before} to {after} numbers on number {}",
                n.index
            ));
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

    /// Only the stream holding the session's current generation may send,
    /// and generations that sent never go back: two streams never deliver
    /// one session at once.
    pub(super) fn check_sender(&mut self, sid: StreamId, index: u32) {
        let stream = &self.streams[&sid];
        let (generation, seed) = (stream.generation, stream.seed);
        let stored = self.store.live(self.now, self.client_id).map(|(r, _)| r);
        let (Some(generation), Some(seed)) = (generation, seed) else {
            return self.violation(format!("stream {sid} sent {index} without a record"));
        };
        if stored.map(|r| (r.generation, r.seed)) != Some((generation, seed)) {
            return self.violation(format!(
                "stream {sid} (generation {generation}) sent {index} while the store holds {stored:?}"
            ));
        }
        match self.senders.get(&seed) {
            Some((g, s)) if *g > generation || (*g == generation && *s != sid) => {
                let (g, s) = (*g, *s);
                self.violation(format!(
                    "stream {sid} (generation {generation}) sent {index} after stream {s} (generation {g})"
                ));
            }
            _ => {}
        }
        self.senders.insert(seed, (generation, sid));
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
        let after = self.now + self.setup.server.ttl + Duration::from_secs(1);
        self.now = after;
        let live = self.store.live_count(self.now);
        if live != 0 {
            self.violation(format!("{live} session(s) still live a TTL after the end"));
        }
    }

    /// The invariants (ARCHITECTURE.md §6):
    ///
    /// 1. the client finished; if `Verified`, it holds exactly the sequence
    ///    of the session's seed and the checksums agree; whatever the
    ///    verdict, what it holds is a gapless prefix of that sequence;
    /// 2. `Expired` only if the client was really cut off for the TTL:
    ///    nothing heard from a server for at least `ttl` minus what the
    ///    network accounts for (latency, injected delays, lost acks) and
    ///    the client's last-moment squeeze (`backoff_initial`);
    ///    `Unreachable` only if no number it did not hold arrived for
    ///    `give_up_without_progress`;
    ///    no other verdict;
    /// 3. no session is live once the TTL has passed after the end;
    /// 4. only the current generation's stream sends (checked as it sends).
    pub(crate) fn check(&mut self) {
        let Some((at, outcome)) = self.outcome.clone() else {
            return self.violation("the client never finished".into());
        };
        let seed = self.accepted_seed;
        let prefix = |n: u32| -> (u64, u32) {
            let Some(seed) = seed else { return (0, 0) };
            let mut crc = RunningChecksum::new();
            let sum = (0..n)
                .map(|i| {
                    let v = sequence::value(seed, i);
                    crc.push(v);
                    u64::from(v)
                })
                .sum();
            (sum, crc.value())
        };
        if (outcome.sum, outcome.client_checksum) != prefix(outcome.received) {
            self.violation(format!("the client's sums are not its prefix: {outcome:?}"));
        }
        let ttl = self.setup.server.ttl;
        match &outcome.verdict {
            Verdict::Verified => {
                let seed = seed.expect("verified means numbers were accepted");
                let expected = sequence::checksum(seed, self.setup.count);
                if outcome.received != self.setup.count
                    || outcome.server_checksum != Some(expected)
                    || outcome.client_checksum != expected
                {
                    self.violation(format!("verified but not the sequence: {outcome:?}"));
                }
            }
            Verdict::Expired(why) => {
                let slack = self.setup.client.backoff_initial
                    + self.setup.max_latency * 2
                    + self.longest_delay
                    + self.setup.server.interval * self.acks_lost;
                match self.client_heard {
                    Some(heard) if at - heard + slack >= ttl => {}
                    heard => self.violation(format!(
                        "expired after only {:?} cut off (slack {slack:?}): {why}",
                        heard.map(|h| at - h)
                    )),
                }
            }
            Verdict::Unreachable(why) => {
                let cfg = &self.setup.client;
                let since = self.last_progress.unwrap_or(self.start);
                if at - since + cfg.backoff_initial < cfg.give_up_without_progress {
                    self.violation(format!("unreachable too early: {why}"));
                }
            }
            other => self.violation(format!("unexpected verdict {other:?}")),
        }
    }
}
