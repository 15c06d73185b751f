//! The client's state machine: [`Client`].
//!
//! The client asks for a session (`Open`), collects numbers in order,
//! acknowledges them, and verifies the final checksum. When a stream fails it
//! decides whether to reconnect — only for retryable failures — and when:
//! exponential backoff with jitter, capped, and never past the moment the
//! session must have expired on the server. A watchdog drops a stream that
//! went silent (a half-open connection) so the client can resume elsewhere.
//! A watchdog that fires late was not watching (the process was suspended
//! or starved): what the server sent meanwhile may sit unread in the
//! transport, so it looks once more, briefly, before it judges.
//!
//! The client keeps O(1) state — the running sum and CRC, never the numbers —
//! and can [`snapshot`](Client::snapshot) it so a crashed client process
//! resumes the same session.
//!
//! Each stream is an attempt: one that delivers a new number succeeded,
//! one that ends without a new number failed. The client reports them
//! ([`poll_attempt`](Client::poll_attempt)) so the adapter can keep a
//! [`RetryBudget`] shared by all its sessions, and takes the budget's
//! answer back ([`handle_throttled`](Client::handle_throttled)): a
//! throttled retry waits longer, it never fails the session. The same
//! process may hold back a new session's `Open` before it is sent
//! ([`OpenThrottle`], [`handle_held_back`](Client::handle_held_back)) when
//! its servers have been refusing most of them.
//!
//! The client says only what it knows: `Expired` only when a server said
//! `SESSION_EXPIRED`; when its own clock says the session must have expired
//! it gives up as `LikelyExpired`; any other give-up says what happened
//! since the last new number (no server reachable, servers attached but
//! sent nothing new, or servers refused, by reason).
//!
//! The machine is [`Client`]: its state, time and the outputs here; each
//! stream's `Open` or `Resume` and its `Attached` in `attach.rs`; numbers,
//! acknowledgements and the verdict in `progress.rs`; how a stream ends,
//! and the glue to the retry budget and the open throttle, in `end.rs`;
//! its reconnection backoff and give-up rules in `backoff.rs`, the retry
//! budget in `budget.rs`, the open throttle in `throttle.rs`, its settings
//! in `config.rs`, and what it receives and emits in `messages.rs`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{ClientId, Secret};
use crate::sequence::{mix64, RunningChecksum, MAX_COUNT};
use crate::Reject;

mod attach;
mod backoff;
mod budget;
mod config;
mod end;
mod messages;
mod progress;
#[cfg(test)]
mod tests;
mod throttle;

use self::backoff::{Failure, SinceProgress};
pub use self::budget::{Attempt, BudgetStats, Decision, RetryBudget, MAX_TOKENS};
pub use self::config::Config;
pub use self::messages::{Attached, Code, Number, Outcome, Output, Request, StreamEnd, Verdict};
pub use self::throttle::{OpenThrottle, ThrottleStats};

/// `t + d`, or a moment so far away that it never comes if that is past
/// what the clock can represent. Every deadline goes through here: the
/// durations come from the configuration and from servers, and neither may
/// make the client panic.
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// A watchdog timer handled this long after it was due was not watching:
/// the process was suspended (SIGSTOP, a laptop asleep) or starved. What
/// the server sent meanwhile may be in the transport, unread, and may be
/// how the stream ended (a server's `TAKEN_OVER`, say); a watchdog that
/// judged at once would report silence instead. So it looks again until
/// [`LOOK`] later (the deadline's `look`), once, and then judges.
const LATE_WAKE: Duration = Duration::from_millis(250);
const LOOK: Duration = Duration::from_millis(250);

/// Everything needed to continue after a crash: O(1), never the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Our id.
    pub client_id: ClientId,
    /// Numbers asked for.
    pub count: u32,
    /// The open nonce.
    pub nonce: Secret,
    /// The resume token, once attached.
    pub token: Option<Secret>,
    /// Numbers held.
    pub next_index: u32,
    /// Sum of the numbers held.
    pub sum: u64,
    /// CRC-32 of the numbers held.
    pub crc: u32,
    /// The final checksum, once received.
    pub server_checksum: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `Connect` emitted at `since`; waiting for `Attached`. `look`: see
    /// [`LATE_WAKE`].
    Connecting {
        since: Instant,
        look: Option<Instant>,
    },
    /// Attached; the last server message came at `last`. `look`: see
    /// [`LATE_WAKE`].
    Streaming {
        last: Instant,
        look: Option<Instant>,
    },
    /// Waiting to reconnect at `until`.
    Backoff { until: Instant },
    /// Finished.
    Done,
}

/// The client's state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    cfg: Config,
    client_id: ClientId,
    count: u32,
    nonce: Secret,
    token: Option<Secret>,
    next_index: u32,
    sum: u64,
    crc: RunningChecksum,
    server_checksum: Option<u32>,
    /// Last acknowledgement sent on the current stream.
    acked: u32,
    ack_every: u32,
    interval: Duration,
    ttl: Option<Duration>,
    /// Last time a server proved the session alive (an `Attached` or a
    /// number): the session cannot expire before `last_heard + ttl`.
    last_heard: Option<Instant>,
    /// When this process started on the session, or last received a
    /// number it did not hold: the give-up clock for
    /// `give_up_without_progress` starts here.
    last_progress: Instant,
    /// Failed attempts since the last progress, for the backoff.
    failures: u32,
    /// How those attempts failed, for the give-up message.
    since_progress: SinceProgress,
    /// The current stream got `Attached`.
    stream_attached: bool,
    /// The current stream delivered a number we did not hold.
    stream_progressed: bool,
    /// An attempt's result not yet taken by `poll_attempt`.
    attempt: Option<Attempt>,
    /// While backing off: the last moment the next attempt may start
    /// (just before the give-up deadline). A throttled retry waits at
    /// most until then, so throttling never changes when or how the
    /// client gives up.
    retry_limit: Instant,
    protocol_errors: u32,
    reconnects: u32,
    streams: u32,
    /// Opens the process's open throttle held back, in all.
    held_back: u32,
    jitter_seed: u64,
    phase: Phase,
    out: VecDeque<Output>,
}

impl Client {
    /// A new session for `count` numbers. `rng_seed` drives the open nonce
    /// and the backoff jitter. Emits the first `Connect` at once.
    pub fn new(
        now: Instant,
        cfg: Config,
        client_id: ClientId,
        count: u32,
        rng_seed: u64,
    ) -> Result<Self, Reject> {
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(Reject::BadCount(count));
        }
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&mix64(rng_seed ^ 0x6e6f_6e63_6531).to_le_bytes());
        nonce[8..].copy_from_slice(&mix64(rng_seed ^ 0x6e6f_6e63_6532).to_le_bytes());
        let snapshot = Snapshot {
            client_id,
            count,
            nonce: Secret(nonce),
            token: None,
            next_index: 0,
            sum: 0,
            crc: 0,
            server_checksum: None,
        };
        Self::restore(now, cfg, snapshot, rng_seed)
    }

    /// Continues from a [`Snapshot`] taken by an earlier process. Emits the
    /// first `Connect` at once.
    pub fn restore(now: Instant, cfg: Config, s: Snapshot, rng_seed: u64) -> Result<Self, Reject> {
        if !(1..=MAX_COUNT).contains(&s.count) {
            return Err(Reject::BadCount(s.count));
        }
        if s.next_index > s.count || (s.next_index == s.count && s.server_checksum.is_none()) {
            return Err(Reject::BadNextIndex {
                next_index: s.next_index,
                count: s.count,
            });
        }
        let mut client = Client {
            cfg,
            client_id: s.client_id,
            count: s.count,
            nonce: s.nonce,
            token: s.token,
            next_index: s.next_index,
            sum: s.sum,
            crc: RunningChecksum::resume(s.crc, s.next_index),
            server_checksum: s.server_checksum,
            acked: s.next_index,
            ack_every: 1,
            interval: Duration::ZERO,
            ttl: None,
            last_heard: None,
            last_progress: now,
            failures: 0,
            since_progress: SinceProgress::default(),
            stream_attached: false,
            stream_progressed: false,
            attempt: None,
            retry_limit: now,
            protocol_errors: 0,
            reconnects: 0,
            streams: 0,
            held_back: 0,
            jitter_seed: mix64(rng_seed),
            phase: Phase::Done,
            out: VecDeque::with_capacity(4),
        };
        client.connect(now);
        Ok(client)
    }

    /// Our client id.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Numbers asked for.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Numbers received so far.
    pub fn received(&self) -> u32 {
        self.next_index
    }

    /// Numbers acknowledged: what the last `Ack` emitted said, or where the
    /// current stream attached if none has been emitted on it.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// Streams opened after the first.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// Whether the client has finished.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The state to persist so another process can [`restore`](Self::restore).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            client_id: self.client_id,
            count: self.count,
            nonce: self.nonce,
            token: self.token,
            next_index: self.next_index,
            sum: self.sum,
            crc: self.crc.value(),
            server_checksum: self.server_checksum,
        }
    }

    /// Handles time passing. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        match &mut self.phase {
            Phase::Connecting { look, .. } | Phase::Streaming { look, .. }
                if look.is_none() && now.saturating_duration_since(due) >= LATE_WAKE =>
            {
                *look = Some(later(now, LOOK));
                return;
            }
            _ => {}
        }
        match self.phase {
            Phase::Connecting { .. } => {
                self.out.push_back(Output::Disconnect);
                self.retry(now, Failure::NoAnswer, "no Attached in time".into(), None);
            }
            Phase::Streaming { .. } => {
                self.out.push_back(Output::Disconnect);
                self.retry(now, Failure::NoAnswer, "stream went silent".into(), None);
            }
            Phase::Backoff { .. } => self.connect(now),
            Phase::Done => {}
        }
    }

    /// The next action for the adapter, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    /// Changed by every `handle_*` call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { since, look } => {
                Some(look.unwrap_or_else(|| later(since, self.cfg.attach_timeout)))
            }
            Phase::Streaming { last, look } => {
                Some(look.unwrap_or_else(|| later(last, self.silence())))
            }
            Phase::Backoff { until } => Some(until),
            Phase::Done => None,
        }
    }

    /// How long the current stream may stay silent before the watchdog
    /// drops it: `silence_intervals` intervals plus `silence_grace`, but
    /// never more than halfway from one interval to the session's TTL. A
    /// watchdog slower than the TTL would notice a dead stream only once
    /// the session it could have resumed had expired (with a 10 s interval
    /// and a 30 s TTL, 3 intervals + 2 s is 32 s; this makes it 20 s).
    fn silence(&self) -> Duration {
        let allowance = self
            .interval
            .saturating_mul(self.cfg.silence_intervals)
            .saturating_add(self.cfg.silence_grace);
        match self.ttl {
            Some(ttl) if ttl > self.interval => {
                allowance.min(self.interval + (ttl - self.interval) / 2)
            }
            _ => allowance,
        }
    }
}
