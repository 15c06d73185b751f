//! What a server can be told ([`ServerConfig`]), with its defaults and the
//! HTTP/2 windows that follow from it. The bottom of the server's modules:
//! `state` and everything above read it; it reads nothing of theirs.

use std::num::NonZeroU64;
use std::time::Duration;

/// Everything a server can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Session pacing, TTL and window.
    pub session: station_core::server::Config,
    /// Most streams holding or attaching a session at once (counted from
    /// their first message to their end); more are RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Fail every N-th number with UNAVAILABLE (fault injection).
    pub fail_every: Option<NonZeroU64>,
    /// After an injected failure, refuse new streams for this long.
    pub go_offline_for: Duration,
    /// A store operation slower than this fails with UNAVAILABLE.
    pub store_timeout: Duration,
    /// How long after its `Open` or `Resume` a stream's store work (the
    /// create, or the load and the takeover) may take in all, instead of
    /// `store_timeout` each: under the client's 5 s attach timeout. A slow
    /// store is waited for rather than failed, since failing an attach
    /// sends the client back with a resume that costs the store more. A
    /// store's own bound on one operation must not be shorter (the Redis
    /// store's is `StoreConfig::operation_timeout`).
    pub attach_timeout: Duration,
    /// Timer slack: a stream's ticks are rounded up to a multiple of this
    /// (since the server started), so streams due close together wake
    /// together and share writes. Numbers are up to this much late; zero
    /// wakes each stream at its exact tick. 5 ms costs 0.5 % of a 1 s
    /// interval and saves about a fifth of the CPU per number on both ends
    /// of the connection, which is what lets one 2-core machine hold
    /// 100,000 sessions (BENCHMARKS.md).
    pub tick_slack: Duration,
    /// Largest client message accepted (bytes). Client messages are tiny.
    pub max_message_size: usize,
    /// Most concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval, to find dead connections.
    pub keepalive_interval: Duration,
    /// How long to wait for a PING reply.
    pub keepalive_timeout: Duration,
    /// Seed for session seeds and tokens; `None` draws from the OS. Fixed
    /// seeds are for simulations only: tokens become predictable.
    pub rng_seed: Option<u64>,
    /// Serve TLS with this identity instead of plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// After shutdown begins, connections still open this much later (idle
    /// or half-open ones) are closed.
    pub shutdown_grace: Duration,
    /// When a full server (`max_streams`), an overloaded one or one whose
    /// store failed tells clients to come back (`RetryInfo` and
    /// `grpc-retry-pushback-ms`), plus a random 0–50 % so refused clients
    /// do not all return at once; for `OVERLOADED`, past
    /// [`REFUSALS_PER_SECOND`](crate::server::REFUSALS_PER_SECOND), in
    /// proportion to the refusals a second (up to 5 ×). The server cannot
    /// know when a place will free up (a session ends when its client
    /// finishes or leaves), so this
    /// is a pace, not a promise: long against the cost of a refusal, short
    /// against the session TTL, so a refused resume still finds its session.
    pub retry_after: Duration,
    /// Shed new sessions while the server runs this late on average
    /// (see [`crate::overload`]); `None` never sheds.
    pub shed_when_late: Option<Duration>,
    /// Refuse new sessions while the process keeps this share (0 to 1) of
    /// the processors it may run on busy, over the last second (see
    /// [`crate::overload`]); `None` never does. Off in a library server,
    /// whose process may hold its clients too.
    pub shed_when_busy: Option<f64>,
    /// After shutdown begins, streams already attached keep going and end
    /// at random moments spread over this period, so their clients resume
    /// elsewhere a few at a time; meanwhile health says NOT_SERVING and
    /// new streams are refused. Zero ends every stream at once.
    pub drain_period: Duration,
    /// How often health checks the store; health is NOT_SERVING while the
    /// store cannot be reached. Zero: never checks.
    pub health_every: Duration,
}

/// The largest session window a server accepts.
///
/// A number takes at most 23 bytes of HTTP/2 flow-controlled data, so 2048
/// of them fit the default 64 KiB stream window a client grants. Within
/// that, the session window — not HTTP/2 flow control — is what stops the
/// server sending to a client that stopped reading, and the session's
/// silence timeout then ends the stream. Beyond it, such a stream would
/// instead wait on flow control for as long as its connection lives.
pub const MAX_WINDOW: u32 = 2048;

impl ServerConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), String> {
        self.session.validate()?;
        if self.session.window > MAX_WINDOW {
            return Err(format!(
                "window {} is above {MAX_WINDOW}: a window must fit HTTP/2's default stream \
                 window, so that a client that stops reading is stopped by the window",
                self.session.window
            ));
        }
        Ok(())
    }
}

/// The HTTP/2 receive window of a connection: room for a few
/// acknowledgements from each stream it may carry.
///
/// h2 closes a connection (GOAWAY, ENHANCE_YOUR_CALM, "too_many_data_frames")
/// once the small DATA frames it holds unread cost more than half this
/// window, each charged 256 bytes less its payload: a flood defence. An
/// acknowledgement is such a frame, left unread while its stream's driver
/// waits (hyper polls it only while it may send, or the stall sweeper
/// does, a sweep later). At hyper's 1 MiB that is about 2,100 acks across
/// the connection, fewer than the streams it may carry: in an overload run
/// the server closed 29 connections this way, each with thousands of
/// sessions. Never below hyper's default. The cost: a client may make
/// the server hold this much unread per connection, 20 MiB at the default
/// 10,000 streams (hyper's 1 MiB before), which a connection's streams
/// read as they run.
pub(crate) fn connection_window(max_streams: u32) -> u32 {
    const HELD_PER_STREAM: u32 = 4;
    const CHARGE: u32 = 256;
    max_streams
        .saturating_mul(HELD_PER_STREAM * CHARGE * 2)
        .clamp(1 << 20, i32::MAX as u32) // HTTP/2's largest window
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            session: station_core::server::Config::default(),
            max_streams: 250_000,
            fail_every: None,
            go_offline_for: Duration::ZERO,
            store_timeout: Duration::from_secs(2),
            attach_timeout: Duration::from_secs(4),
            tick_slack: Duration::from_millis(5),
            max_message_size: 1024,
            max_concurrent_streams: 10_000,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            rng_seed: None,
            tls: None,
            shutdown_grace: Duration::from_secs(5),
            retry_after: Duration::from_secs(2),
            shed_when_late: None,
            shed_when_busy: None,
            drain_period: Duration::ZERO,
            health_every: Duration::ZERO,
        }
    }
}
