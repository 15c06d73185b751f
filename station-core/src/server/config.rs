//! Server settings ([`Config`]) and the rules that make them workable
//! together ([`Config::validate`]).

use std::time::Duration;

/// Longest session TTL, interval or silence timeout a server may use, and
/// so the longest a client accepts in `Attached`: long enough for any real
/// deployment, short enough that deadlines computed from it never overflow
/// a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What [`Config::validate`] allows an acknowledgement for its round trip
/// (network and scheduling) beyond the time its numbers take to be sent.
pub const ACK_ROUND_TRIP: Duration = Duration::from_millis(250);

/// [`Config::lease`] unless the TTL is short: a store write every five
/// seconds instead of every second at the default interval, and a taken-over
/// stream sends no number after ten.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// Server settings that shape every session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time between two numbers of a stream. Zero sends as fast as the
    /// window allows.
    pub interval: Duration,
    /// A session is kept this long after the server last heard from its
    /// client (ARCHITECTURE.md §2).
    pub ttl: Duration,
    /// A stream whose client sends no first message, or none of the
    /// acknowledgements the server waits for, for this long is ended
    /// (an attached one later while the server runs late:
    /// [`Stream::handle_running_late`](super::Stream::handle_running_late)).
    pub silence_timeout: Duration,
    /// Most numbers sent beyond the client's last acknowledgement. Bounds
    /// what a client that stops reading can make the server buffer.
    pub window: u32,
    /// How often a stream renews its hold on the session in the store
    /// (the module docs of [`crate::server`]): one write per lease instead
    /// of one per number. A stream that was taken over sends no number
    /// later than twice this after the takeover; a server that dies without
    /// releasing its sessions leaves them up to this (plus the silence
    /// timeout, and what its lateness excused) past their TTL.
    pub lease: Duration,
}

impl Config {
    /// Settings for `interval` and `ttl`, other fields derived from them.
    pub fn new(interval: Duration, ttl: Duration) -> Self {
        let silence = interval
            .saturating_mul(3)
            .saturating_add(Duration::from_secs(2))
            .min(ttl / 2);
        Config {
            interval,
            ttl,
            silence_timeout: silence,
            window: 64,
            lease: DEFAULT_LEASE.min(ttl / 6),
        }
    }

    /// How often clients must acknowledge: every number at human speeds, in
    /// batches when numbers come faster than acknowledgements are worth.
    pub fn ack_every(&self) -> u32 {
        if self.interval >= Duration::from_millis(50) {
            1
        } else {
            (self.window / 4).max(1)
        }
    }

    /// Checks that the settings can work together; the error names the rule
    /// broken. Each rule is one a session cannot survive breaking:
    ///
    /// 1. `window` is at least 1, and at least `ack_every` (clients
    ///    acknowledge only every `ack_every` numbers, and the server stops
    ///    at the window waiting for them);
    /// 2. the TTL, interval and silence timeout are at most [`MAX_DURATION`]
    ///    (clients refuse larger ones as absurd);
    /// 3. the silence timeout is positive and shorter than the TTL;
    /// 4. `interval + silence_timeout <= ttl`: the TTL is how long a
    ///    session outlives its client; one shorter than the pauses of a
    ///    working stream (an interval, and a silence timeout waiting for an
    ///    acknowledgement) would mean sessions outlive a lost client for
    ///    less time than a working one can be quiet;
    /// 5. the lease is positive and at most half the TTL: a dead server's
    ///    sessions may outlive their TTL by a lease, and a TTL that is mostly
    ///    lease means little;
    /// 6. `(ack_every - 1) * interval + ACK_ROUND_TRIP < silence_timeout`:
    ///    a client acknowledges every `ack_every` numbers, one interval
    ///    apart, the acknowledgement takes a round trip, and the server ends
    ///    a stream whose acknowledgement it waited for longer than the
    ///    silence timeout (e.g. a 40 ms interval with a window of 256 asks
    ///    for an ack every 64 numbers, 2.52 s after the first, against a
    ///    2.12 s timeout).
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 {
            return Err("window must be at least 1".into());
        }
        let ack_every = self.ack_every();
        if ack_every > self.window {
            return Err(format!(
                "clients acknowledge every {ack_every} numbers, more than the window ({}): \
                 the server would stop at the window and wait forever",
                self.window
            ));
        }
        for (name, d) in [
            ("session TTL", self.ttl),
            ("interval", self.interval),
            ("silence timeout", self.silence_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(format!(
                    "{name} ({d:?}) is longer than the {MAX_DURATION:?} clients accept"
                ));
            }
        }
        if self.silence_timeout.is_zero() || self.silence_timeout >= self.ttl {
            return Err(format!(
                "silence timeout ({:?}) must be positive and shorter than the session TTL ({:?})",
                self.silence_timeout, self.ttl
            ));
        }
        if self.interval + self.silence_timeout > self.ttl {
            return Err(format!(
                "interval ({:?}) plus silence timeout ({:?}) must not exceed the session \
                 TTL ({:?}): the TTL is how long a session outlives its client, and a working \
                 stream can be quiet for an interval and then a silence timeout waiting for an \
                 acknowledgement (raise --session-ttl or lower --interval)",
                self.interval, self.silence_timeout, self.ttl
            ));
        }
        if self.lease.is_zero() || self.lease > self.ttl / 2 {
            return Err(format!(
                "lease ({:?}) must be positive and at most half the session TTL ({:?}): \
                 a server that dies keeps its sessions up to a lease past the TTL \
                 (lower --lease)",
                self.lease, self.ttl
            ));
        }
        let ack_wait = self
            .interval
            .saturating_mul(ack_every - 1)
            .saturating_add(ACK_ROUND_TRIP);
        if ack_wait >= self.silence_timeout {
            return Err(format!(
                "clients acknowledge every {ack_every} numbers at an interval of {:?}, so the \
                 server waits {ack_wait:?} for an acknowledgement (counting {ACK_ROUND_TRIP:?} \
                 for its round trip), which is not shorter than the silence timeout ({:?}): \
                 streams would be ended for silence (lower --window, or raise --silence-timeout \
                 or --session-ttl)",
                self.interval, self.silence_timeout
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}
