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
//! The machine is [`Client`] (this file); its reconnection backoff and
//! give-up rules are in `backoff.rs`, the retry budget in `budget.rs`, the
//! open throttle in `throttle.rs`, its settings in `config.rs`, and what it receives and emits in
//! `messages.rs`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{ClientId, Secret};
use crate::sequence::{mix64, RunningChecksum, MAX_COUNT};
use crate::server::MAX_DURATION;
use crate::{Reason, Reject};

mod backoff;
mod budget;
mod config;
mod messages;
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

    /// Handles the server's `Attached` on the current stream.
    pub fn handle_attached(&mut self, now: Instant, a: Attached<'_>) {
        match self.phase {
            Phase::Connecting { .. } => {}
            // No stream is current: a late message from one already dropped.
            // And once finished, the client emits nothing more.
            Phase::Done | Phase::Backoff { .. } => return,
            Phase::Streaming { .. } => {
                return self.protocol_error(now, "Attached twice on one stream".into())
            }
        }
        let token = match Secret::from_slice(a.token) {
            Some(t) => t,
            None => return self.fatal_protocol(format!("resume token of {} bytes", a.token.len())),
        };
        if a.count != self.count {
            return self.fatal_protocol(format!(
                "server attached a session of {} numbers, we asked for {}",
                a.count, self.count
            ));
        }
        if a.ttl > MAX_DURATION || a.interval > MAX_DURATION {
            // Not a setting any valid server uses (its own validation
            // refuses them); deadlines computed from them are meaningless.
            return self.protocol_error(
                now,
                format!(
                    "server announced a session TTL of {:?} and an interval of {:?} (at most {:?} is valid)",
                    a.ttl, a.interval, MAX_DURATION
                ),
            );
        }
        if a.next_index != self.next_index {
            return self.protocol_error(
                now,
                format!(
                    "server attached at index {}, we asked for {}",
                    a.next_index, self.next_index
                ),
            );
        }
        self.token = Some(token);
        self.ttl = Some(a.ttl);
        self.interval = a.interval;
        self.ack_every = a.ack_every.max(1);
        self.acked = self.next_index;
        // The session is alive (the server just refreshed it), but this is
        // not progress: the backoff and the give-up clock go on until a
        // number arrives.
        self.last_heard = Some(now);
        self.stream_attached = true;
        self.phase = Phase::Streaming {
            last: now,
            look: None,
        };
        if self.next_index == self.count {
            // We held everything already; only the final ack was missing.
            self.finish_complete();
        }
    }

    /// Whether a message of kind `what` may be taken: on an attached stream,
    /// `Some` of when its last message came. A message while backing off
    /// (a late one from a dropped stream) or once finished is ignored, and
    /// one before `Attached` breaks the protocol.
    fn on_attached_stream(&mut self, now: Instant, what: &str) -> Option<Instant> {
        match self.phase {
            Phase::Streaming { last, .. } => Some(last),
            Phase::Done | Phase::Backoff { .. } => None,
            Phase::Connecting { .. } => {
                self.protocol_error(now, format!("{what} before Attached"));
                None
            }
        }
    }

    /// Handles a `Paused` on the current stream: the server holds the
    /// number at `next_index` because its store has not confirmed its
    /// lease. The server and the connection are alive, and resuming
    /// elsewhere would cost that store more, so the stream is kept (the
    /// watchdog starts over, and what we hold is acknowledged, so that the
    /// server hears from us), but the watchdog fires at the latest half the
    /// TTL after a server last proved the session alive (and half the
    /// give-up time after the last new number): the client then resumes
    /// while the session can still be resumed.
    pub fn handle_paused(&mut self, now: Instant, next_index: u32) {
        let Some(last) = self.on_attached_stream(now, "Paused") else {
            return;
        };
        if next_index != self.next_index {
            return self.protocol_error(
                now,
                format!(
                    "server paused at index {next_index}, we expect {}",
                    self.next_index
                ),
            );
        }
        self.hold_on(now, last);
    }

    /// The connection the current stream runs on has carried server
    /// messages for other streams since this one's last: the server is
    /// alive and sending, only late for this stream (it runs behind, under
    /// load). Called when the watchdog is due, it keeps the stream as a
    /// `Paused` would, within the same bounds: a resume costs a loaded
    /// server a store load and a takeover more, and brings the numbers no
    /// sooner. Without such evidence (one stream a connection, or a
    /// connection silent as a whole) the watchdog judges alone.
    pub fn handle_server_busy(&mut self, now: Instant) {
        if let Phase::Streaming { last, .. } = self.phase {
            self.hold_on(now, last);
        }
    }

    /// Keeps the current stream, whose last server message came at `last`:
    /// the watchdog starts over at `now`, within the client's patience,
    /// and what we hold is acknowledged so that the server hears from us.
    fn hold_on(&mut self, now: Instant, last: Instant) {
        let Some(heard) = self.last_heard else {
            return;
        };
        // The watchdog moves on to `now + silence`, but never past the end
        // of our patience, so that the resume still finds the session (a
        // server whose renewals fail keeps it until about `ttl − lease`
        // after it was last confirmed), well before the give-up clocks run
        // out.
        let patience =
            (self.ttl.unwrap_or_default() / 2).min(self.cfg.give_up_without_progress / 2);
        let until = later(heard, patience).min(later(self.last_progress, patience));
        let moved = now.min(until.checked_sub(self.silence()).unwrap_or(last));
        if moved <= last {
            return;
        }
        self.phase = Phase::Streaming {
            last: moved,
            look: None,
        };
        // The server waits for no number, but may for an ack of what it
        // sent (we ack every `ack_every`): it would take our silence for a
        // dead client while it holds the next numbers.
        if self.acked < self.next_index {
            self.acked = self.next_index;
            self.out.push_back(Output::Ack(self.next_index));
        }
    }

    /// Handles a `Number` on the current stream.
    pub fn handle_number(&mut self, now: Instant, n: Number) {
        if self.on_attached_stream(now, "Number").is_none() {
            return;
        }
        self.phase = Phase::Streaming {
            last: now,
            look: None,
        };
        self.last_heard = Some(now);
        if n.index < self.next_index {
            return; // A duplicate: we hold it already.
        }
        if n.index > self.next_index {
            return self.protocol_error(
                now,
                format!("expected number {}, got {}", self.next_index, n.index),
            );
        }
        let last = n.index + 1 == self.count;
        if n.checksum.is_some() != last {
            return self.protocol_error(
                now,
                format!("checksum on number {} of {}", n.index, self.count),
            );
        }
        self.protocol_errors = 0;
        self.failures = 0;
        self.since_progress = SinceProgress::default();
        self.last_progress = now;
        if !self.stream_progressed {
            self.stream_progressed = true;
            self.attempt = Some(Attempt::Succeeded);
        }
        self.sum += u64::from(n.value);
        self.crc.push(n.value);
        self.next_index += 1;
        if last {
            self.server_checksum = n.checksum;
            self.finish_complete();
        } else if self.next_index - self.acked >= self.ack_every {
            self.acked = self.next_index;
            self.out.push_back(Output::Ack(self.next_index));
        }
    }

    /// Handles the end of the current stream (or a failed connection).
    pub fn handle_end(&mut self, now: Instant, end: StreamEnd) {
        if matches!(self.phase, Phase::Done | Phase::Backoff { .. }) {
            return;
        }
        match end {
            StreamEnd::Ok => self.retry(
                now,
                Failure::Protocol,
                "server ended the stream early".into(),
                None,
            ),
            StreamEnd::Transport(why) => self.retry(now, Failure::NoAnswer, why, None),
            StreamEnd::Protocol(why) => self.protocol_error(now, why),
            StreamEnd::Status {
                code,
                message,
                reason,
                retry_after,
            } => {
                // The one retry table: by reason when the server gave one,
                // by code only for statuses the transport made up.
                let retryable = reason.map_or(code.is_retryable(), Reason::is_retryable);
                if retryable {
                    let what = reason.map_or_else(|| format!("{code:?}"), |r| r.to_string());
                    // A status without a reason was made by the transport
                    // (or a proxy): no station answered.
                    let failure = reason.map_or(Failure::NoAnswer, Failure::Refused);
                    return self.retry(now, failure, format!("{what}: {message}"), retry_after);
                }
                let verdict = match reason {
                    Some(Reason::SessionExpired) => Verdict::Expired(message),
                    Some(Reason::SessionLost) => Verdict::Rejected {
                        code,
                        reason,
                        message: format!(
                            "the server lost the session (its store no longer has it); \
                             start a new session (server said: {message})"
                        ),
                    },
                    Some(Reason::SessionUnknown) => Verdict::Rejected {
                        code,
                        reason,
                        message: format!(
                            "the server does not know the session (never opened, already \
                             completed, or forgotten); start a new session (server said: {message})"
                        ),
                    },
                    _ => Verdict::Rejected {
                        code,
                        reason,
                        message,
                    },
                };
                self.finish(verdict)
            }
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

    /// How the last attempt (stream) went, once, for a [`RetryBudget`]:
    /// `Succeeded` at its first new number, `Failed` when it ended without
    /// one. Poll after every input, before [`poll_output`](Self::poll_output)'s
    /// results are acted on; an adapter without a budget may ignore it.
    /// If the budget answers [`Decision::Throttle`], call
    /// [`handle_throttled`](Self::handle_throttled) before reading
    /// [`poll_timeout`](Self::poll_timeout).
    pub fn poll_attempt(&mut self) -> Option<Attempt> {
        self.attempt.take()
    }

    /// The retry budget refused the retry just scheduled (A6 throttling):
    /// wait longer -- the largest backoff, jittered so throttled clients do
    /// not come back together -- but never past the last moment an attempt
    /// can still succeed, so the session is never failed or given up on
    /// sooner for it. A server's pushback is still honoured (the wait only
    /// grows). A no-op unless backing off.
    pub fn handle_throttled(&mut self, now: Instant) {
        let Phase::Backoff { until } = self.phase else {
            return;
        };
        let wait = self.throttled_wait();
        let at = later(now, wait).min(self.retry_limit);
        self.phase = Phase::Backoff {
            until: until.max(at),
        };
    }

    /// The process's [`OpenThrottle`] held back the `Open` just emitted: the
    /// adapter did not send it. No stream was opened, so none is counted
    /// and no attempt goes to the retry budget. The client asks again after
    /// a throttled retry's wait, never past its last chance before the
    /// give-up deadline, and a give-up says how many opens were held back.
    /// A no-op unless an `Open` is connecting.
    pub fn handle_held_back(&mut self, now: Instant) {
        if self.token.is_some() || !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        // Undo what `connect` counted for a stream that was never opened.
        self.streams -= 1;
        if self.streams > 0 {
            self.reconnects -= 1;
        }
        self.held_back = self.held_back.saturating_add(1);
        self.hold_back(now);
    }

    /// A draw for the open throttle, from the session's seed and how many
    /// opens it has asked to send: the same seed, the same draws.
    pub fn throttle_draw(&self) -> u64 {
        let asked = u64::from(self.streams) << 32 | u64::from(self.held_back);
        mix64(self.jitter_seed ^ 0x6f70_656e_6472_6177 ^ asked)
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

    fn connect(&mut self, now: Instant) {
        let request = match self.token {
            None => Request::Open {
                client_id: self.client_id,
                count: self.count,
                nonce: self.nonce,
            },
            Some(token) => Request::Resume {
                client_id: self.client_id,
                token,
                next_index: self.next_index,
            },
        };
        if self.streams > 0 {
            self.reconnects += 1;
        }
        self.streams += 1;
        self.stream_attached = false;
        self.stream_progressed = false;
        self.phase = Phase::Connecting {
            since: now,
            look: None,
        };
        self.out.push_back(Output::Connect(request));
    }

    fn protocol_error(&mut self, now: Instant, why: String) {
        self.protocol_errors += 1;
        if self.protocol_errors >= self.cfg.max_protocol_errors {
            return self.fatal_protocol(why);
        }
        self.out.push_back(Output::Disconnect);
        self.retry(
            now,
            Failure::Protocol,
            format!("protocol error: {why}"),
            None,
        );
    }

    fn fatal_protocol(&mut self, why: String) {
        self.out.push_back(Output::Disconnect);
        self.finish(Verdict::ProtocolError(why));
    }

    /// Every number is held: acknowledge the end and judge the checksum.
    fn finish_complete(&mut self) {
        self.acked = self.count;
        self.out.push_back(Output::Ack(self.count));
        let verdict = if self.server_checksum == Some(self.crc.value()) {
            Verdict::Verified
        } else {
            Verdict::ChecksumMismatch
        };
        self.finish(verdict);
    }

    fn finish(&mut self, verdict: Verdict) {
        // Holding every number with a checksum decides the outcome even if
        // the session is gone by the time we come back to acknowledge it.
        let verdict = match (self.next_index == self.count, self.server_checksum) {
            (true, Some(c)) if c == self.crc.value() => Verdict::Verified,
            (true, Some(_)) => Verdict::ChecksumMismatch,
            _ => verdict,
        };
        self.phase = Phase::Done;
        self.out.push_back(Output::Finished(Outcome {
            client_id: self.client_id,
            count: self.count,
            received: self.next_index,
            sum: self.sum,
            server_checksum: self.server_checksum,
            client_checksum: self.crc.value(),
            reconnects: self.reconnects,
            verdict,
        }));
    }
}
