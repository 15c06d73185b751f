//! The client's state machine: [`Client`].
//!
//! The client asks for a session (`Open`), collects numbers in order,
//! acknowledges them, and verifies the final checksum. When a stream fails it
//! decides whether to reconnect — only for retryable failures — and when:
//! exponential backoff with jitter, capped, and never past the moment the
//! session must have expired on the server. A watchdog drops a stream that
//! went silent (a half-open connection) so the client can resume elsewhere.
//!
//! The client keeps O(1) state — the running sum and CRC, never the numbers —
//! and can [`snapshot`](Client::snapshot) it so a crashed client process
//! resumes the same session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{ClientId, Secret};
use crate::sequence::{mix64, RunningChecksum, MAX_COUNT};
use crate::server::{ACK_ROUND_TRIP, MAX_DURATION};
use crate::{Reason, Reject};

/// `t + d`, or a moment so far away that it never comes if that is past
/// what the clock can represent. Every deadline goes through here: the
/// durations come from the configuration and from servers, and neither may
/// make the client panic.
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// Client settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// First reconnection delay (before jitter).
    pub backoff_initial: Duration,
    /// Largest reconnection delay.
    pub backoff_max: Duration,
    /// Give up if no server sent a number we did not hold for this long
    /// (counted from the first attempt until the first number). An `Attached` alone is not progress,
    /// so a server that attaches and then fails every stream cannot keep
    /// the client retrying forever.
    pub give_up_without_progress: Duration,
    /// Wait this long for `Attached` after connecting.
    pub attach_timeout: Duration,
    /// Drop a stream silent for this many intervals plus `silence_grace`.
    pub silence_intervals: u32,
    /// Added to the silence allowance (network latency, server pauses).
    pub silence_grace: Duration,
    /// Give up after this many consecutive protocol violations by servers.
    pub max_protocol_errors: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            give_up_without_progress: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(5),
            silence_intervals: 3,
            silence_grace: Duration::from_secs(2),
            max_protocol_errors: 5,
        }
    }
}

impl Config {
    /// Checks that the settings can work; the error names the rule broken.
    ///
    /// 1. `backoff_initial` is positive (zero reconnects in a tight loop)
    ///    and at most `backoff_max`;
    /// 2. `give_up_without_progress` is longer than `backoff_initial` (else
    ///    no failure is ever retried);
    /// 3. `attach_timeout` is positive;
    /// 4. the watchdog allows more than one interval between messages
    ///    (`silence_intervals` at least 1), plus at least a round trip
    ///    ([`ACK_ROUND_TRIP`](crate::server::ACK_ROUND_TRIP)) of grace: a
    ///    working server sends one number per interval, and one whose
    ///    window is full waits for our acknowledgement's round trip;
    /// 5. `max_protocol_errors` is at least 1;
    /// 6. no duration is longer than [`MAX_DURATION`].
    ///
    /// How the watchdog fits the server's TTL is known only at `Attached`;
    /// see [`Client`].
    pub fn validate(&self) -> Result<(), String> {
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return Err(format!(
                "the first reconnection delay ({:?}) must be positive and at most the largest \
                 ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.give_up_without_progress <= self.backoff_initial {
            return Err(format!(
                "giving up after {:?} without progress leaves no time to retry even once \
                 (the first reconnection waits {:?})",
                self.give_up_without_progress, self.backoff_initial
            ));
        }
        if self.attach_timeout.is_zero() {
            return Err("the attach timeout must be positive".into());
        }
        if self.silence_intervals == 0 || self.silence_grace < ACK_ROUND_TRIP {
            return Err(format!(
                "the silence allowance ({} intervals + {:?}) must exceed one interval by at \
                 least {ACK_ROUND_TRIP:?}: a working server sends a number every interval, \
                 and waits a round trip for acknowledgements when its window is full",
                self.silence_intervals, self.silence_grace
            ));
        }
        if self.max_protocol_errors == 0 {
            return Err("max_protocol_errors must be at least 1".into());
        }
        for (name, d) in [
            ("largest reconnection delay", self.backoff_max),
            ("give-up time", self.give_up_without_progress),
            ("attach timeout", self.attach_timeout),
            ("silence grace", self.silence_grace),
        ] {
            if d > MAX_DURATION {
                return Err(format!("{name} ({d:?}) is longer than {MAX_DURATION:?}"));
            }
        }
        Ok(())
    }
}

/// The first message of a new stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Start the session.
    Open {
        /// Our id.
        client_id: ClientId,
        /// Numbers wanted.
        count: u32,
        /// Lets us repeat this `Open` if its reply is lost.
        nonce: Secret,
    },
    /// Continue the session.
    Resume {
        /// Our id.
        client_id: ClientId,
        /// From `Attached`.
        token: Secret,
        /// Numbers we hold.
        next_index: u32,
    },
}

/// The server's `Attached`, as received.
#[derive(Clone, Copy, Debug)]
pub struct Attached<'a> {
    /// Numbers in the session.
    pub count: u32,
    /// First index the stream will send.
    pub next_index: u32,
    /// Resume token bytes.
    pub token: &'a [u8],
    /// Session TTL.
    pub ttl: Duration,
    /// Time between numbers.
    pub interval: Duration,
    /// Acknowledge at least every this many numbers.
    pub ack_every: u32,
}

/// A number as received: the same message the server sends.
pub use crate::server::Number;

/// A gRPC status code; each variant's value is its number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Whether a failure with this code is worth retrying: the server was
    /// unavailable, full, gave up waiting for us, or the transport broke
    /// (which HTTP/2 reports as CANCELLED, UNKNOWN or INTERNAL).
    ///
    /// ABORTED too: a stream is taken over only by a `Resume` with our
    /// token, i.e. by one of our own earlier streams whose `Resume` was still
    /// in the server's pipeline when we gave up on it and won the race to
    /// the store. Resuming again takes the session back (gRPC documents
    /// ABORTED as "retry at a higher level").
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
        )
    }
}

/// How a stream ended, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server ended the stream with status OK.
    Ok,
    /// The server ended it with an error status.
    Status {
        /// The status code.
        code: Code,
        /// The server's message, for people: never used to decide.
        message: String,
        /// The machine-readable reason (`google.rpc.ErrorInfo` of our
        /// domain), if the status carried one we know. Statuses made by the
        /// transport carry none and are judged by `code` alone.
        reason: Option<Reason>,
        /// How long the server asked us to wait before trying again
        /// (`google.rpc.RetryInfo`, or `grpc-retry-pushback-ms`).
        retry_after: Option<Duration>,
    },
    /// Connecting failed or the connection broke without a status.
    Transport(String),
}

impl StreamEnd {
    /// A status that carries no reason (made by the transport, or by a
    /// server that predates reasons): judged by its code alone.
    pub fn code_only(code: Code, message: impl Into<String>) -> Self {
        StreamEnd::Status {
            code,
            message: message.into(),
            reason: None,
            retry_after: None,
        }
    }

    /// How a server's rejection reaches the client: its code, reason and
    /// message, without pushback.
    pub fn rejected(reject: &Reject) -> Self {
        StreamEnd::Status {
            code: reject.code(),
            message: reject.to_string(),
            reason: Some(reject.reason()),
            retry_after: None,
        }
    }
}

/// The final result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every number arrived and the checksums agree.
    Verified,
    /// Every number arrived but the checksums differ.
    ChecksumMismatch,
    /// The session expired before the client could resume it.
    Expired(String),
    /// A server refused the session for a reason retrying cannot fix.
    Rejected {
        /// The status code.
        code: Code,
        /// The server's reason, if it gave one.
        reason: Option<Reason>,
        /// What happened: for a lost or forgotten session our own words,
        /// else the server's message.
        message: String,
    },
    /// Servers kept breaking the protocol.
    ProtocolError(String),
    /// No server attached the session, or none sent a new number, within
    /// `give_up_without_progress`.
    Unreachable(String),
}

impl Verdict {
    /// Whether the client succeeded.
    pub fn is_success(&self) -> bool {
        *self == Verdict::Verified
    }
}

/// What the client ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Our id.
    pub client_id: ClientId,
    /// Numbers asked for.
    pub count: u32,
    /// Numbers received.
    pub received: u32,
    /// Sum of the numbers received.
    pub sum: u64,
    /// The checksum the server sent with the final number.
    pub server_checksum: Option<u32>,
    /// Our checksum over the numbers received.
    pub client_checksum: u32,
    /// Streams opened after the first.
    pub reconnects: u32,
    /// Success, or why not.
    pub verdict: Verdict,
}

/// An action for the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Drop the current stream, if any, open a new one and send this first.
    Connect(Request),
    /// Send `Ack { next_index }` on the current stream.
    Ack(u32),
    /// Drop the current stream: it went silent. A `Connect` follows later.
    Disconnect,
    /// Done; no more outputs. The adapter may keep the stream open briefly so
    /// the final `Ack` is delivered.
    Finished(Outcome),
}

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
    /// `Connect` emitted at `since`; waiting for `Attached`.
    Connecting { since: Instant },
    /// Attached; the last server message came at `last`.
    Streaming { last: Instant },
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
    protocol_errors: u32,
    reconnects: u32,
    streams: u32,
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
            protocol_errors: 0,
            reconnects: 0,
            streams: 0,
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
        self.phase = Phase::Streaming { last: now };
        if self.next_index == self.count {
            // We held everything already; only the final ack was missing.
            self.finish_complete();
        }
    }

    /// Handles a `Number` on the current stream.
    pub fn handle_number(&mut self, now: Instant, n: Number) {
        match self.phase {
            Phase::Streaming { .. } => {}
            Phase::Done | Phase::Backoff { .. } => return,
            Phase::Connecting { .. } => {
                return self.protocol_error(now, "Number before Attached".into())
            }
        }
        self.phase = Phase::Streaming { last: now };
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
        self.last_progress = now;
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
            StreamEnd::Ok => self.retry(now, "server ended the stream early".into(), None),
            StreamEnd::Transport(why) => self.retry(now, why, None),
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
                    return self.retry(now, format!("{what}: {message}"), retry_after);
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
        match self.phase {
            Phase::Connecting { since } if now >= later(since, self.cfg.attach_timeout) => {
                self.out.push_back(Output::Disconnect);
                self.retry(now, "no Attached in time".into(), None);
            }
            Phase::Streaming { last } if now >= later(last, self.silence()) => {
                self.out.push_back(Output::Disconnect);
                self.retry(now, "stream went silent".into(), None);
            }
            Phase::Backoff { until } if now >= until => self.connect(now),
            _ => {}
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
            Phase::Connecting { since } => Some(later(since, self.cfg.attach_timeout)),
            Phase::Streaming { last } => Some(later(last, self.silence())),
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
        self.phase = Phase::Connecting { since: now };
        self.out.push_back(Output::Connect(request));
    }

    /// A retryable failure: back off, or give up if no retry can succeed.
    ///
    /// `pushback` is the server's "not before" (RetryInfo): the next attempt
    /// waits at least that long. If that is past the last moment an attempt
    /// can still succeed (the session's expiry, or the give-up deadline),
    /// the client gives up at once rather than disobey the server or sleep
    /// into a deadline it cannot meet.
    fn retry(&mut self, now: Instant, why: String, pushback: Option<Duration>) {
        self.failures = self.failures.saturating_add(1);
        let delay = self.backoff();
        // The server forgets the session `ttl` after it last heard from us,
        // which was no earlier than we last heard from it.
        let expiry = match (self.last_heard, self.ttl) {
            (Some(heard), Some(ttl)) => Some(later(heard, ttl)),
            _ => None,
        };
        let stalled = later(self.last_progress, self.cfg.give_up_without_progress);
        let deadline = expiry.map_or(stalled, |e| e.min(stalled));
        let expired = expiry.is_some_and(|e| e <= stalled);
        // Squeeze in a last attempt just before the deadline rather than
        // sleeping past it -- once: a failure at that last moment gives up
        // (`at == now` although `delay` is not zero), or a failure reported
        // at the same instant would retry in a tight loop.
        let last_chance = deadline
            .checked_sub(self.cfg.backoff_initial)
            .unwrap_or(now);
        let mut at = later(now, delay).min(last_chance);
        if let Some(wait) = pushback {
            let not_before = later(now, wait);
            if not_before > last_chance && now < deadline {
                let left = deadline.saturating_duration_since(now);
                return self.give_up(
                    expired,
                    format!(
                        "{why}; the server asked us to wait {wait:?}, but only {left:?} are left"
                    ),
                );
            }
            at = at.max(not_before);
        }
        if now >= deadline || at < now || (at == now && !delay.is_zero()) {
            return self.give_up(expired, why);
        }
        self.phase = Phase::Backoff { until: at };
    }

    /// Ends the session at its give-up deadline: the session's expiry if
    /// `expired`, else `give_up_without_progress`.
    fn give_up(&mut self, expired: bool, why: String) {
        let verdict = if expired {
            Verdict::Expired(format!(
                "could not resume before the session expired (last error: {why})"
            ))
        } else if self.ttl.is_some() {
            let limit = self.cfg.give_up_without_progress;
            Verdict::Unreachable(format!(
                "no progress for {limit:?}: servers attached the session but sent no new number (last error: {why})"
            ))
        } else if self.token.is_some() {
            // Restored from a snapshot and never attached since: we cannot
            // tell whether the session outlived our absence.
            Verdict::Expired(format!(
                "could not resume the session in time; it may have expired (last error: {why})"
            ))
        } else {
            Verdict::Unreachable(format!(
                "no server attached the session (last error: {why})"
            ))
        };
        self.finish(verdict)
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// clients that failed together do not return together.
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .cfg
            .backoff_initial
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max);
        let half = base / 2;
        let r = mix64(self.jitter_seed.wrapping_add(u64::from(self.failures)));
        let jitter = half.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64);
        half + jitter
    }

    fn protocol_error(&mut self, now: Instant, why: String) {
        self.protocol_errors += 1;
        if self.protocol_errors >= self.cfg.max_protocol_errors {
            return self.fatal_protocol(why);
        }
        self.out.push_back(Output::Disconnect);
        self.retry(now, format!("protocol error: {why}"), None);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence;

    const SEED: u64 = 0xfeed;
    const TOKEN: [u8; 16] = [7; 16];
    const SEC: Duration = Duration::from_secs(1);
    const TTL: Duration = Duration::from_secs(30);

    fn id() -> ClientId {
        ClientId::from_random_bytes([1; 16])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(c: &mut Client) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn new_client(t0: Instant, count: u32) -> Client {
        new_client_with(t0, Config::default(), count, 1)
    }

    fn new_client_with(t0: Instant, cfg: Config, count: u32, rng_seed: u64) -> Client {
        let mut c = Client::new(t0, cfg, id(), count, rng_seed).unwrap();
        let out = drain(&mut c);
        assert!(
            matches!(&out[..], [Output::Connect(Request::Open { client_id, count: n, nonce })]
                if *client_id == id() && *n == count && !nonce.is_zero()),
            "{out:?}"
        );
        c
    }

    fn attached(count: u32, next_index: u32, ack_every: u32) -> Attached<'static> {
        Attached {
            count,
            next_index,
            token: &TOKEN,
            ttl: TTL,
            interval: SEC,
            ack_every,
        }
    }

    fn num(index: u32, count: u32) -> Number {
        Number {
            index,
            value: sequence::value(SEED, index),
            checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
        }
    }

    fn sum(range: std::ops::Range<u32>) -> u64 {
        range.map(|i| u64::from(sequence::value(SEED, i))).sum()
    }

    fn finished(out: &[Output]) -> Outcome {
        match out.last() {
            Some(Output::Finished(o)) => o.clone(),
            other => panic!("expected Finished, got {other:?} in {out:?}"),
        }
    }

    fn resume(next_index: u32) -> Output {
        Output::Connect(Request::Resume {
            client_id: id(),
            token: Secret(TOKEN),
            next_index,
        })
    }

    /// Feeds numbers `range` at `now`, returning the outputs.
    fn feed(c: &mut Client, now: Instant, range: std::ops::Range<u32>, count: u32) -> Vec<Output> {
        range.for_each(|i| c.handle_number(now, num(i, count)));
        drain(c)
    }

    /// Ends the stream with `end` and wakes the client when its backoff is
    /// over; returns the time of the reconnection and its outputs.
    fn fail_and_reconnect(c: &mut Client, now: Instant, end: StreamEnd) -> (Instant, Vec<Output>) {
        c.handle_end(now, end);
        assert_eq!(drain(c), []);
        let at = c.poll_timeout().expect("backing off");
        assert!(at > now, "backoff is not zero");
        c.handle_timeout(at - ms(1).min(at - now));
        if at - now > ms(1) {
            assert_eq!(drain(c), [], "early timeout is a no-op");
        }
        c.handle_timeout(at);
        (at, drain(c))
    }

    fn transport() -> StreamEnd {
        StreamEnd::Transport("connection reset".into())
    }

    fn unavailable() -> StreamEnd {
        StreamEnd::rejected(&Reject::InjectedFault("fail-every"))
    }

    fn with_pushback(end: StreamEnd, wait: Duration) -> StreamEnd {
        match end {
            StreamEnd::Status {
                code,
                message,
                reason,
                ..
            } => StreamEnd::Status {
                code,
                message,
                reason,
                retry_after: Some(wait),
            },
            other => other,
        }
    }

    /// A hostile server announced durations of 2^62 s: computing the
    /// watchdog and give-up deadlines from them overflowed `Instant` and the
    /// client panicked. Such an `Attached` is now a protocol error.
    #[test]
    fn absurd_durations_in_attached_are_protocol_errors() {
        let t0 = Instant::now();
        let huge = Duration::from_secs(1 << 62);
        let just_over = MAX_DURATION + Duration::from_nanos(1);
        for (ttl, interval) in [(huge, SEC), (TTL, huge), (huge, huge), (just_over, SEC)] {
            let mut c = new_client(t0, 10);
            c.handle_attached(
                t0,
                Attached {
                    ttl,
                    interval,
                    ..attached(10, 0, 1)
                },
            );
            assert_eq!(drain(&mut c), [Output::Disconnect], "{ttl:?} {interval:?}");
            assert!(!c.is_finished());
            // Not attached: the retry opens again.
            let at = c.poll_timeout().unwrap();
            c.handle_timeout(at);
            assert!(matches!(
                &drain(&mut c)[..],
                [Output::Connect(Request::Open { .. })]
            ));
        }
        // The longest valid settings are accepted, and their deadlines
        // computed without overflow.
        let mut c = new_client(t0, 10);
        c.handle_attached(
            t0,
            Attached {
                ttl: MAX_DURATION,
                interval: MAX_DURATION,
                ..attached(10, 0, 1)
            },
        );
        assert_eq!(drain(&mut c), []);
        assert!(c.poll_timeout().unwrap() > t0 + MAX_DURATION * 3);
        c.handle_end(t0 + SEC, transport());
        assert!(c.poll_timeout().is_some());
    }

    /// Absurd client settings (refused by `Config::validate`, but the
    /// machine must not trust that it was called) do not panic either.
    #[test]
    fn absurd_config_durations_do_not_panic() {
        let t0 = Instant::now();
        let huge = Duration::from_secs(1 << 62);
        let cfg = Config {
            backoff_initial: huge,
            backoff_max: huge,
            give_up_without_progress: huge,
            attach_timeout: huge,
            silence_intervals: u32::MAX,
            silence_grace: huge,
            max_protocol_errors: 1,
        };
        let mut c = new_client_with(t0, cfg, 10, 1);
        assert!(c.poll_timeout().is_some());
        c.handle_timeout(t0 + SEC);
        c.handle_attached(t0 + SEC, attached(10, 0, 1));
        feed(&mut c, t0 + SEC, 0..1, 10);
        assert!(c.poll_timeout().is_some());
        c.handle_end(t0 + SEC * 2, transport());
        let _ = c.poll_timeout();
        drain(&mut c);
    }

    #[test]
    fn count_is_validated() {
        let t0 = Instant::now();
        for bad in [0, MAX_COUNT + 1, u32::MAX] {
            let r = Client::new(t0, Config::default(), id(), bad, 1);
            assert_eq!(r.unwrap_err(), Reject::BadCount(bad));
        }
        for good in [1, MAX_COUNT] {
            assert!(Client::new(t0, Config::default(), id(), good, 1).is_ok());
        }
    }

    #[test]
    fn opens_first_then_resumes_where_it_left_off() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        let out = feed(&mut c, t0, 0..3, 10);
        assert_eq!(out, [Output::Ack(1), Output::Ack(2), Output::Ack(3)]);
        assert_eq!(c.received(), 3);
        let (t1, out) = fail_and_reconnect(&mut c, t0 + SEC, transport());
        assert_eq!(out, [resume(3)]);
        assert_eq!(c.reconnects(), 1);
        // The new stream attaches at 3 and the session continues.
        c.handle_attached(t1, attached(10, 3, 1));
        let out = feed(&mut c, t1, 3..10, 10);
        let outcome = finished(&out);
        assert_eq!(outcome.verdict, Verdict::Verified);
        assert_eq!(outcome.sum, sum(0..10));
        assert_eq!(outcome.received, 10);
        assert_eq!(outcome.reconnects, 1);
        assert!(c.is_finished());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn repeats_open_while_never_attached() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 10);
        let (_, out) = fail_and_reconnect(&mut c, t0, transport());
        assert!(
            matches!(&out[..], [Output::Connect(Request::Open { count: 10, .. })]),
            "{out:?}"
        );
    }

    #[test]
    fn duplicates_are_ignored() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 5);
        c.handle_attached(t0, attached(5, 0, 1));
        feed(&mut c, t0, 0..3, 5);
        let out = feed(&mut c, t0, 0..3, 5);
        assert_eq!(out, [], "no acks and no errors for duplicates");
        assert_eq!(c.received(), 3);
        let out = feed(&mut c, t0, 3..5, 5);
        let outcome = finished(&out);
        assert_eq!(outcome.verdict, Verdict::Verified);
        assert_eq!(outcome.sum, sum(0..5));
    }

    #[test]
    fn gap_disconnects_and_resumes_from_next_index() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        feed(&mut c, t0, 0..2, 10);
        c.handle_number(t0, num(3, 10));
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at);
        assert_eq!(drain(&mut c), [resume(2)]);
        assert_eq!(c.received(), 2);
    }

    #[test]
    fn repeated_protocol_errors_are_fatal() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let max = cfg.max_protocol_errors;
        let mut c = new_client(t0, 10);
        let mut now = t0;
        c.handle_attached(now, attached(10, 0, 1));
        feed(&mut c, now, 0..2, 10);
        for round in 1..=max {
            c.handle_number(now, num(5, 10));
            let out = drain(&mut c);
            if round < max {
                assert_eq!(out, [Output::Disconnect], "round {round}");
                now = c.poll_timeout().unwrap();
                c.handle_timeout(now);
                assert_eq!(drain(&mut c), [resume(2)]);
                c.handle_attached(now, attached(10, 2, 1));
            } else {
                assert_eq!(out[0], Output::Disconnect);
                let outcome = finished(&out);
                assert!(
                    matches!(outcome.verdict, Verdict::ProtocolError(ref m) if m.contains("expected number 2")),
                    "{outcome:?}"
                );
            }
        }
    }

    #[test]
    fn a_good_number_resets_the_protocol_error_count() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 100);
        let mut now = t0;
        c.handle_attached(now, attached(100, 0, 1));
        for i in 0..20 {
            c.handle_number(now, num(i + 1, 100)); // a gap
            assert_eq!(drain(&mut c), [Output::Disconnect]);
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            assert_eq!(drain(&mut c), [resume(i)]);
            c.handle_attached(now, attached(100, i, 1));
            assert_eq!(feed(&mut c, now, i..i + 1, 100), [Output::Ack(i + 1)]);
        }
        assert!(!c.is_finished());
    }

    #[test]
    fn other_protocol_errors() {
        let t0 = Instant::now();
        // A number before Attached.
        let mut c = new_client(t0, 10);
        c.handle_number(t0, num(0, 10));
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        // A checksum where none belongs, or none on the final number.
        let mut c = new_client(t0, 3);
        c.handle_attached(t0, attached(3, 0, 1));
        c.handle_number(
            t0,
            Number {
                checksum: Some(1),
                ..num(0, 3)
            },
        );
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        assert_eq!(c.received(), 0);
        let mut c = new_client(t0, 1);
        c.handle_attached(t0, attached(1, 0, 1));
        c.handle_number(
            t0,
            Number {
                checksum: None,
                ..num(0, 1)
            },
        );
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        // Attached at another index than asked.
        let mut c = new_client(t0, 3);
        c.handle_attached(t0, attached(3, 1, 1));
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        // Attached twice on one stream.
        let mut c = new_client(t0, 3);
        c.handle_attached(t0, attached(3, 0, 1));
        c.handle_attached(t0, attached(3, 0, 1));
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        // A session of another size, or a malformed token: fatal at once.
        let mut c = new_client(t0, 3);
        c.handle_attached(t0, attached(4, 0, 1));
        let out = drain(&mut c);
        assert_eq!(out[0], Output::Disconnect);
        assert!(matches!(finished(&out).verdict, Verdict::ProtocolError(_)));
        let mut c = new_client(t0, 3);
        c.handle_attached(
            t0,
            Attached {
                token: &[1; 15],
                ..attached(3, 0, 1)
            },
        );
        assert!(matches!(
            finished(&drain(&mut c)).verdict,
            Verdict::ProtocolError(_)
        ));
    }

    #[test]
    fn acks_every_ack_every_and_always_the_final() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 8);
        c.handle_attached(t0, attached(8, 0, 3));
        let mut acks = Vec::new();
        for i in 0..8 {
            for out in feed(&mut c, t0, i..i + 1, 8) {
                match out {
                    Output::Ack(n) => acks.push(n),
                    Output::Finished(o) => assert_eq!(o.verdict, Verdict::Verified),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(acks, [3, 6, 8]);
        // ack_every counts from where the stream attached.
        let mut c = new_client(t0, 8);
        c.handle_attached(t0, attached(8, 0, 3));
        feed(&mut c, t0, 0..2, 8);
        let (t1, _) = fail_and_reconnect(&mut c, t0, transport());
        c.handle_attached(t1, attached(8, 2, 3));
        assert_eq!(feed(&mut c, t1, 2..5, 8), [Output::Ack(5)]);
        // A server's ack_every of 0 means every number.
        let mut c = new_client(t0, 3);
        c.handle_attached(t0, attached(3, 0, 0));
        assert_eq!(feed(&mut c, t0, 0..2, 3), [Output::Ack(1), Output::Ack(2)]);
    }

    #[test]
    fn checksum_is_verified() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 4);
        c.handle_attached(t0, attached(4, 0, 1));
        let out = feed(&mut c, t0, 0..4, 4);
        assert_eq!(out[out.len() - 2], Output::Ack(4));
        let o = finished(&out);
        assert_eq!(
            o,
            Outcome {
                client_id: id(),
                count: 4,
                received: 4,
                sum: sum(0..4),
                server_checksum: Some(sequence::checksum(SEED, 4)),
                client_checksum: sequence::checksum(SEED, 4),
                reconnects: 0,
                verdict: Verdict::Verified,
            }
        );
        assert!(o.verdict.is_success());
    }

    #[test]
    fn checksum_mismatch_is_reported() {
        let t0 = Instant::now();
        // A wrong value...
        let mut c = new_client(t0, 4);
        c.handle_attached(t0, attached(4, 0, 1));
        feed(&mut c, t0, 0..2, 4);
        c.handle_number(
            t0,
            Number {
                value: 1,
                ..num(2, 4)
            },
        );
        let out = feed(&mut c, t0, 3..4, 4);
        let o = finished(&out);
        assert_eq!(o.verdict, Verdict::ChecksumMismatch);
        assert!(!o.verdict.is_success());
        assert_ne!(o.server_checksum, Some(o.client_checksum));
        // ...or a wrong checksum: still acknowledged, so the server deletes.
        let mut c = new_client(t0, 2);
        c.handle_attached(t0, attached(2, 0, 1));
        feed(&mut c, t0, 0..1, 2);
        c.handle_number(
            t0,
            Number {
                checksum: Some(0),
                ..num(1, 2)
            },
        );
        let out = drain(&mut c);
        assert_eq!(out[0], Output::Ack(2));
        assert_eq!(finished(&out).verdict, Verdict::ChecksumMismatch);
    }

    #[test]
    fn statuses_without_a_reason_are_judged_by_code() {
        let t0 = Instant::now();
        let retried = [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
        ];
        for code in retried {
            let mut c = new_client(t0, 3);
            let end = StreamEnd::code_only(code, "try again");
            let (_, out) = fail_and_reconnect(&mut c, t0, end);
            assert!(
                matches!(&out[..], [Output::Connect(_)]),
                "{code:?}: {out:?}"
            );
        }
        // An early OK end and a broken transport are retried too.
        for end in [StreamEnd::Ok, transport()] {
            let mut c = new_client(t0, 3);
            let (_, out) = fail_and_reconnect(&mut c, t0, end);
            assert!(matches!(&out[..], [Output::Connect(_)]), "{out:?}");
        }
        // Every other code is final; the message is never read, so
        // "expired" in it does not make an expiry.
        let expired_text = Reject::Expired(id()).to_string();
        for code in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::DataLoss,
            Code::Unauthenticated,
        ] {
            let o = end_after_one_number(t0, StreamEnd::code_only(code, expired_text.clone()));
            assert_eq!(
                o.verdict,
                Verdict::Rejected {
                    code,
                    reason: None,
                    message: expired_text.clone(),
                }
            );
        }
    }

    /// Attaches a session of 3, takes one number, then ends the stream.
    fn end_after_one_number(t0: Instant, end: StreamEnd) -> Outcome {
        let mut c = new_client(t0, 3);
        c.handle_attached(t0, attached(3, 0, 1));
        feed(&mut c, t0, 0..1, 3);
        c.handle_end(t0, end);
        let out = drain(&mut c);
        let o = finished(&out);
        assert_eq!((o.received, o.server_checksum), (1, None));
        assert!(c.is_finished());
        o
    }

    #[test]
    fn statuses_with_a_reason_are_judged_by_reason_not_code() {
        let t0 = Instant::now();
        for reason in Reason::ALL {
            // A code that disagrees with the reason's retryability, so the
            // decision can only come from the reason.
            let code = if reason.is_retryable() {
                Code::InvalidArgument
            } else {
                Code::Unavailable
            };
            let end = StreamEnd::Status {
                code,
                message: "expired".into(),
                reason: Some(reason),
                retry_after: None,
            };
            if reason.is_retryable() {
                let mut c = new_client(t0, 3);
                let (_, out) = fail_and_reconnect(&mut c, t0, end);
                assert!(
                    matches!(&out[..], [Output::Connect(_)]),
                    "{reason}: {out:?}"
                );
                continue;
            }
            let o = end_after_one_number(t0, end);
            match reason {
                Reason::SessionExpired => {
                    assert_eq!(o.verdict, Verdict::Expired("expired".into()))
                }
                Reason::SessionLost | Reason::SessionUnknown => {
                    let Verdict::Rejected {
                        reason: got,
                        message,
                        ..
                    } = &o.verdict
                    else {
                        panic!("{reason}: {o:?}")
                    };
                    assert_eq!(*got, Some(reason));
                    let says = if reason == Reason::SessionLost {
                        "lost the session"
                    } else {
                        "does not know the session"
                    };
                    assert!(message.contains(says), "{message}");
                }
                _ => assert_eq!(
                    o.verdict,
                    Verdict::Rejected {
                        code,
                        reason: Some(reason),
                        message: "expired".into()
                    },
                    "{reason}"
                ),
            }
        }
    }

    #[test]
    fn pushback_delays_the_next_attempt() {
        let t0 = Instant::now();
        let cfg = Config::default();
        for wait in [ms(1), SEC * 3, SEC * 20] {
            let mut c = new_client(t0, 10);
            c.handle_attached(t0, attached(10, 0, 1));
            feed(&mut c, t0, 0..1, 10);
            let end = with_pushback(StreamEnd::rejected(&Reject::Full(1)), wait);
            let (at, out) = fail_and_reconnect(&mut c, t0, end);
            assert_eq!(out, [resume(1)], "{wait:?}");
            // At least the pushback, and no later than the backoff would
            // have been anyway if that is longer.
            assert!(at - t0 >= wait, "{wait:?}: {:?}", at - t0);
            assert!(
                at - t0 <= wait.max(cfg.backoff_initial),
                "{wait:?}: {:?}",
                at - t0
            );
        }
        // On a status that is not retried, pushback changes nothing.
        let end = with_pushback(StreamEnd::rejected(&Reject::BadToken(id())), SEC);
        assert!(matches!(
            end_after_one_number(t0, end).verdict,
            Verdict::Rejected { .. }
        ));
    }

    #[test]
    fn pushback_past_the_deadline_gives_up_at_once() {
        let t0 = Instant::now();
        let cfg = Config::default();
        // Attached: the session expires TTL after the last number.
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        feed(&mut c, t0, 0..1, 10);
        let end = with_pushback(StreamEnd::rejected(&Reject::ShuttingDown), TTL);
        c.handle_end(t0 + SEC, end);
        let o = finished(&drain(&mut c));
        assert!(
            matches!(&o.verdict, Verdict::Expired(m) if m.contains("asked us to wait")),
            "{o:?}"
        );
        // Just inside: waits, and tries once before the expiry.
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        feed(&mut c, t0, 0..1, 10);
        let wait = TTL - SEC - cfg.backoff_initial;
        let end = with_pushback(StreamEnd::rejected(&Reject::ShuttingDown), wait);
        let (at, out) = fail_and_reconnect(&mut c, t0 + SEC, end);
        assert_eq!(out, [resume(1)]);
        assert_eq!(at, t0 + SEC + wait);
        // Never attached: the give-up deadline bounds it instead.
        let mut c = new_client(t0, 10);
        let wait = cfg.give_up_without_progress;
        c.handle_end(
            t0,
            with_pushback(StreamEnd::rejected(&Reject::Full(1)), wait),
        );
        let o = finished(&drain(&mut c));
        assert!(
            matches!(&o.verdict, Verdict::Unreachable(m) if m.contains("asked us to wait")),
            "{o:?}"
        );
        // An absurd pushback is no exception.
        let mut c = new_client(t0, 10);
        let huge = Duration::from_secs(u64::MAX);
        c.handle_end(
            t0,
            with_pushback(StreamEnd::rejected(&Reject::Full(1)), huge),
        );
        assert!(matches!(
            finished(&drain(&mut c)).verdict,
            Verdict::Unreachable(_)
        ));
    }

    fn backoff_delays(seed: u64, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut c = new_client_with(t0, Config::default(), 5, seed);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..n {
            c.handle_end(now, transport());
            assert_eq!(drain(&mut c), []);
            let at = c.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
            c.handle_timeout(now);
            assert!(matches!(&drain(&mut c)[..], [Output::Connect(_)]));
        }
        delays
    }

    #[test]
    fn backoff_grows_exponentially_capped_and_jittered_deterministically() {
        let cfg = Config::default();
        let delays = backoff_delays(11, 12);
        for (k, d) in delays.iter().enumerate() {
            let base = cfg
                .backoff_initial
                .saturating_mul(1 << k)
                .min(cfg.backoff_max);
            assert!(
                base / 2 <= *d && *d <= base,
                "delay {k} is {d:?}, base {base:?}"
            );
        }
        assert!(delays[..4].windows(2).all(|w| w[1] > w[0]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= cfg.backoff_max));
        assert!(delays[8..].iter().all(|d| *d >= cfg.backoff_max / 2));
        // Same seed, same delays; another seed, other delays.
        assert_eq!(backoff_delays(11, 12), delays);
        assert_ne!(backoff_delays(12, 12), delays);
        // Jitter: not all at the same point of their range.
        let capped: Vec<_> = delays[8..].to_vec();
        assert!(capped.windows(2).any(|w| w[0] != w[1]), "{capped:?}");
    }

    #[test]
    fn only_progress_resets_the_backoff() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut c = new_client(t0, 10);
        let mut now = t0;
        for _ in 0..6 {
            let (at, _) = fail_and_reconnect(&mut c, now, transport());
            now = at;
        }
        // Attaching is not progress: the backoff keeps growing.
        c.handle_attached(now, attached(10, 0, 1));
        let (at, out) = fail_and_reconnect(&mut c, now, transport());
        assert!(at - now >= cfg.backoff_max / 2, "{:?}", at - now);
        assert!(matches!(&out[..], [Output::Connect(_)]), "{out:?}");
        now = at;
        // A new number is.
        c.handle_attached(now, attached(10, 0, 1));
        feed(&mut c, now, 0..1, 10);
        c.handle_end(now, transport());
        let delay = c.poll_timeout().unwrap() - now;
        assert!(delay <= cfg.backoff_initial, "{delay:?}");
    }

    /// A server that attaches and then ends every stream UNAVAILABLE (as
    /// `--fail-every 1` does) used to keep the client retrying forever:
    /// each `Attached` reset the backoff and the give-up deadline.
    #[test]
    fn a_server_that_attaches_then_always_fails_is_given_up_on() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let limit = t0 + cfg.give_up_without_progress;
        let mut c = new_client(t0, 3);
        let mut now = t0;
        let mut attempts = 0;
        let outcome = loop {
            assert!(
                attempts < 10_000,
                "still retrying after {attempts} attempts"
            );
            attempts += 1;
            c.handle_attached(now, attached(3, 0, 1));
            assert_eq!(drain(&mut c), []);
            c.handle_end(now, unavailable());
            let out = drain(&mut c);
            if let Some(Output::Finished(o)) = out.last() {
                break o.clone();
            }
            now = c.poll_timeout().expect("backing off");
            assert!(now <= limit, "retrying at {:?}", now - t0);
            c.handle_timeout(now);
            assert!(matches!(&drain(&mut c)[..], [Output::Connect(_)]));
        };
        assert!(
            matches!(&outcome.verdict, Verdict::Unreachable(m) if m.contains("no progress")),
            "{outcome:?}"
        );
        assert!(
            now + cfg.backoff_max >= limit,
            "gave up early: {:?}",
            now - t0
        );
        // Backed off, not hammering: a handful of attempts in a minute.
        assert!((5..40).contains(&attempts), "{attempts} attempts");
    }

    #[test]
    fn gives_up_as_expired_rather_than_retry_past_the_ttl() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut c = new_client(t0, 100);
        c.handle_attached(t0, attached(100, 0, 1));
        feed(&mut c, t0 + SEC, 0..1, 100);
        let deadline = t0 + SEC + TTL;
        let mut now = t0 + SEC * 2;
        let mut attempts = Vec::new();
        loop {
            c.handle_end(now, transport());
            let out = drain(&mut c);
            if let Some(Output::Finished(o)) = out.last() {
                assert!(
                    matches!(o.verdict, Verdict::Expired(ref m) if m.contains("expired")),
                    "{o:?}"
                );
                break;
            }
            let at = c.poll_timeout().unwrap();
            assert!(
                at <= deadline - cfg.backoff_initial,
                "attempt at {:?}",
                at - t0
            );
            now = at;
            c.handle_timeout(now);
            assert_eq!(drain(&mut c), [resume(1)]);
            attempts.push(now - t0);
        }
        // The last attempt is squeezed in just before the deadline, once.
        assert_eq!(now, deadline - cfg.backoff_initial, "{attempts:?}");
        assert_eq!(attempts.iter().filter(|a| **a == now - t0).count(), 1);
        assert!(attempts.len() > 5);
    }

    #[test]
    fn gives_up_at_the_deadline_even_if_a_failure_comes_late() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        // The stream is cut off and the watchdog only notices after the TTL.
        c.handle_end(t0 + TTL, transport());
        let o = finished(&drain(&mut c));
        assert!(matches!(o.verdict, Verdict::Expired(_)), "{o:?}");
    }

    #[test]
    fn gives_up_as_unreachable_when_never_attached() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut c = new_client(t0, 10);
        let mut now = t0;
        loop {
            c.handle_end(now, transport());
            let out = drain(&mut c);
            if let Some(Output::Finished(o)) = out.last() {
                assert!(matches!(o.verdict, Verdict::Unreachable(_)), "{o:?}");
                assert!(now >= t0 + cfg.give_up_without_progress - cfg.backoff_initial);
                break;
            }
            now = c.poll_timeout().unwrap();
            assert!(now < t0 + cfg.give_up_without_progress);
            c.handle_timeout(now);
            assert!(matches!(
                &drain(&mut c)[..],
                [Output::Connect(Request::Open { .. })]
            ));
        }
    }

    #[test]
    fn watchdog_drops_a_silent_stream() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        feed(&mut c, t0 + SEC, 0..1, 10);
        // 3 intervals plus 2 s of grace after the last message.
        let silent_at = t0 + SEC + SEC * 3 + Duration::from_secs(2);
        assert_eq!(c.poll_timeout(), Some(silent_at));
        c.handle_timeout(silent_at - ms(1));
        assert_eq!(drain(&mut c), []);
        c.handle_timeout(silent_at);
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at);
        assert_eq!(drain(&mut c), [resume(1)]);
        assert_eq!(
            c.poll_timeout(),
            Some(at + Config::default().attach_timeout)
        );
    }

    #[test]
    fn the_watchdog_fires_well_before_the_session_expires() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 10);
        c.handle_attached(
            t0,
            Attached {
                interval: SEC * 10,
                ..attached(10, 0, 1)
            },
        );
        feed(&mut c, t0, 0..1, 10);
        // 3 intervals + 2 s would be 32 s, past the 30 s TTL.
        assert_eq!(c.poll_timeout(), Some(t0 + SEC * 20));
        c.handle_timeout(t0 + SEC * 20);
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        assert!(!c.is_finished());
    }

    #[test]
    fn config_validation_names_the_rule() {
        assert_eq!(Config::default().validate(), Ok(()));
        let d = Config::default;
        let cases = [
            (
                Config {
                    backoff_initial: Duration::ZERO,
                    ..d()
                },
                "reconnection delay",
            ),
            (
                Config {
                    backoff_max: ms(10),
                    ..d()
                },
                "at most the largest",
            ),
            (
                Config {
                    give_up_without_progress: ms(100),
                    ..d()
                },
                "retry even once",
            ),
            (
                Config {
                    attach_timeout: Duration::ZERO,
                    ..d()
                },
                "attach timeout",
            ),
            (
                Config {
                    silence_intervals: 0,
                    ..d()
                },
                "exceed one interval",
            ),
            (
                Config {
                    silence_grace: Duration::ZERO,
                    ..d()
                },
                "exceed one interval",
            ),
            (
                Config {
                    max_protocol_errors: 0,
                    ..d()
                },
                "max_protocol_errors",
            ),
            (
                Config {
                    give_up_without_progress: MAX_DURATION * 2,
                    ..d()
                },
                "give-up time",
            ),
        ];
        for (cfg, says) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(says), "{cfg:?}: {err}");
        }
    }

    #[test]
    fn attach_timeout_drops_the_connection() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let mut c = new_client(t0, 10);
        assert_eq!(c.poll_timeout(), Some(t0 + cfg.attach_timeout));
        c.handle_timeout(t0 + cfg.attach_timeout - ms(1));
        assert_eq!(drain(&mut c), []);
        c.handle_timeout(t0 + cfg.attach_timeout);
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        assert!(c.poll_timeout().unwrap() > t0 + cfg.attach_timeout);
    }

    #[test]
    fn finished_is_final() {
        let t0 = Instant::now();
        let mut c = new_client(t0, 2);
        c.handle_attached(t0, attached(2, 0, 1));
        feed(&mut c, t0, 0..2, 2);
        assert!(c.is_finished());
        c.handle_attached(t0, attached(2, 0, 1));
        c.handle_number(t0, num(1, 2));
        c.handle_number(t0, num(5, 2));
        c.handle_end(t0, transport());
        c.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(drain(&mut c), []);
        assert_eq!(c.poll_timeout(), None);
        // Messages of a dropped stream while backing off are ignored too.
        let mut c = new_client(t0, 2);
        c.handle_end(t0, transport());
        c.handle_attached(t0, attached(2, 0, 1));
        c.handle_number(t0, num(0, 2));
        assert_eq!(drain(&mut c), []);
        assert_eq!(c.received(), 0);
    }

    #[test]
    fn snapshot_and_restore_continue_the_same_sums() {
        let t0 = Instant::now();
        let count = 50;
        // One client receives everything in one go.
        let mut whole = new_client(t0, count);
        whole.handle_attached(t0, attached(count, 0, 1));
        let expected = finished(&feed(&mut whole, t0, 0..count, count));
        // Another stops after 17, is snapshotted and restored elsewhere.
        let mut first = new_client(t0, count);
        first.handle_attached(t0, attached(count, 0, 1));
        feed(&mut first, t0, 0..17, count);
        let snap = first.snapshot();
        assert_eq!(snap.next_index, 17);
        assert_eq!(snap.sum, sum(0..17));
        assert_eq!(snap.token, Some(Secret(TOKEN)));
        let t1 = t0 + Duration::from_secs(5);
        let mut second = Client::restore(t1, Config::default(), snap, 2).unwrap();
        assert_eq!(drain(&mut second), [resume(17)]);
        assert_eq!(second.snapshot(), snap);
        second.handle_attached(t1, attached(count, 17, 1));
        let got = finished(&feed(&mut second, t1, 17..count, count));
        assert_eq!(got.verdict, Verdict::Verified);
        assert_eq!(
            (
                got.sum,
                got.client_checksum,
                got.server_checksum,
                got.received
            ),
            (
                expected.sum,
                expected.client_checksum,
                expected.server_checksum,
                count
            )
        );
        // A snapshot taken before attaching opens again with the same nonce.
        let fresh = new_client(t0, 9);
        let snap = fresh.snapshot();
        let mut again = Client::restore(t1, Config::default(), snap, 3).unwrap();
        assert_eq!(
            drain(&mut again),
            [Output::Connect(Request::Open {
                client_id: id(),
                count: 9,
                nonce: snap.nonce
            })]
        );
    }

    fn complete_snapshot(count: u32) -> Snapshot {
        let t0 = Instant::now();
        let mut c = new_client(t0, count);
        c.handle_attached(t0, attached(count, 0, 1));
        feed(&mut c, t0, 0..count, count);
        c.snapshot()
    }

    #[test]
    fn restore_of_a_complete_session_acknowledges_it() {
        let t0 = Instant::now();
        let snap = complete_snapshot(5);
        let mut c = Client::restore(t0, Config::default(), snap, 1).unwrap();
        assert_eq!(drain(&mut c), [resume(5)]);
        c.handle_attached(t0, attached(5, 5, 1));
        let out = drain(&mut c);
        assert_eq!(out[0], Output::Ack(5));
        let o = finished(&out);
        assert_eq!(o.verdict, Verdict::Verified);
        assert_eq!(o.sum, sum(0..5));
    }

    #[test]
    fn restore_of_a_complete_session_is_verified_even_if_it_is_gone() {
        let t0 = Instant::now();
        let snap = complete_snapshot(5);
        for end in [
            StreamEnd::rejected(&Reject::Expired(id())),
            StreamEnd::rejected(&Reject::Unknown(id())),
            StreamEnd::code_only(Code::NotFound, "no session"),
        ] {
            let mut c = Client::restore(t0, Config::default(), snap, 1).unwrap();
            drain(&mut c);
            c.handle_end(t0, end);
            let o = finished(&drain(&mut c));
            assert_eq!(o.verdict, Verdict::Verified);
        }
        // And when no server can be reached at all.
        let mut c = Client::restore(t0, Config::default(), snap, 1).unwrap();
        drain(&mut c);
        let mut now = t0;
        let o = loop {
            c.handle_end(now, transport());
            if let Some(Output::Finished(o)) = drain(&mut c).pop() {
                break o;
            }
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            drain(&mut c);
        };
        assert_eq!(o.verdict, Verdict::Verified);
    }

    #[test]
    fn restore_validates_the_snapshot() {
        let t0 = Instant::now();
        let snap = complete_snapshot(5);
        let cfg = Config::default;
        let bad = [
            Snapshot { count: 0, ..snap },
            Snapshot {
                next_index: 6,
                ..snap
            },
            Snapshot {
                server_checksum: None,
                ..snap
            },
        ];
        for s in bad {
            assert!(Client::restore(t0, cfg(), s, 1).is_err(), "{s:?}");
        }
    }
}
