//! The gRPC server: [`Station`] implements the generated service traits and
//! [`serve`] runs it, with health checking and reflection, until shutdown.
//!
//! Each stream's response body ([`SessionStream`]) owns the stream's core
//! [`server::Stream`](station_core::server::Stream) machine and drives it on the task
//! hyper runs for the stream. Shared state is small: the
//! store handle, a random source for new sessions, counters, the fault
//! injector and the shutdown token.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use station_core::server::Fresh;
use station_core::{ClientId, Reason, Reject, Secret};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::Admission;
use crate::driver::Driver;
pub use crate::driver::SessionStream;
use crate::metrics::Counters;
use crate::overload::Overload;
use crate::proto::numbers_station_server::{NumbersStation, NumbersStationServer};
use crate::proto::station_admin_server::{StationAdmin, StationAdminServer};
use crate::proto::{ClientMessage, StatsReply, StatsRequest};
use crate::stall::Stalls;
use crate::status::to_status_with_retry;
use crate::store::SessionStore;

/// Everything a server can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Session pacing, TTL and window.
    pub session: station_core::server::Config,
    /// Most streams holding or attaching a session at once (counted from
    /// their first message to their end); more are RESOURCE_EXHAUSTED.
    pub max_sessions: usize,
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
    /// When a full server (`max_sessions`), an overloaded one or one whose
    /// store failed tells clients to come back (`RetryInfo` and
    /// `grpc-retry-pushback-ms`), plus a random 0–50 % so refused clients
    /// do not all return at once; for `OVERLOADED`, past
    /// [`REFUSALS_PER_SECOND`], in proportion to the refusals a second (up
    /// to 5 ×). The server cannot know when a place will
    /// free up (a session ends when its client finishes or leaves), so this
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
fn connection_window(max_streams: u32) -> u32 {
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
            max_sessions: 250_000,
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

/// What a server's streams do, for simulations and tests that check
/// invariants across servers (e.g. that two streams never deliver one
/// session at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// `Attached` was sent.
    Attached {
        /// The session.
        client_id: ClientId,
        /// The incarnation of the session (drawn at Open, kept across
        /// takeovers).
        incarnation: u64,
        /// The generation the stream holds.
        generation: u64,
        /// First index the stream sends.
        next_index: u32,
    },
    /// A number was handed to the transport.
    Sent {
        /// The session.
        client_id: ClientId,
        /// The generation the stream holds.
        generation: u64,
        /// Index of the number.
        index: u32,
        /// Its value.
        value: u32,
    },
    /// The session completed and was deleted.
    Completed {
        /// The session.
        client_id: ClientId,
    },
}

/// Receives [`StreamEvent`]s. Called inline on the stream's task: keep it
/// cheap.
pub type Observer = Arc<dyn Fn(&StreamEvent) + Send + Sync>;

pub(crate) struct Shared<S: SessionStore> {
    pub cfg: ServerConfig,
    /// When the service was made: the origin of tick-slack slots.
    pub epoch: Instant,
    pub observer: Option<Observer>,
    pub store: S,
    rng: Mutex<ChaCha12Rng>,
    pub counters: Counters,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    slots: Arc<Semaphore>,
    faults: Faults,
    pub overload: Arc<Overload>,
    pub admission: Admission,
    /// New sessions refused `OVERLOADED` a second, for the pushback.
    refusals: Mutex<Refusals>,
    /// Every stream, for driving those whose clients stopped reading.
    pub stalls: Arc<Stalls<Driver<S>>>,
}

/// Past this many `OVERLOADED` refusals a second, their pushback grows in
/// proportion (see `Shared::refusal_factor`).
pub const REFUSALS_PER_SECOND: u64 = 1_000;
/// The pushback grows to at most this many times `retry_after`: 10 s at
/// the default 2 s, 15 s with its jitter, a quarter of the 60 s a client
/// waits for a first number before it gives up; longer would turn a
/// session admitted late into one that gives up before its first number.
const MAX_PUSHBACK_FACTOR: f64 = 5.0;

/// Counts refusals by whole seconds since the server started.
#[derive(Debug, Default)]
struct Refusals {
    second: u64,
    this: u64,
    last: u64,
}

impl Refusals {
    /// Counts one refusal at `now`; returns the refusals of the last whole
    /// second or of this one so far, whichever is more.
    fn count(&mut self, epoch: Instant, now: Instant) -> u64 {
        let second = now.saturating_duration_since(epoch).as_secs();
        // A refusal timed before another thread's rolled the second over
        // counts in the current one, rather than rolling back.
        if second > self.second {
            self.last = if second == self.second + 1 {
                self.this
            } else {
                0
            };
            self.this = 0;
            self.second = second;
        }
        self.this += 1;
        self.this.max(self.last)
    }
}

/// Fault injection state, shared by all streams of the server.
struct Faults {
    every: Option<NonZeroU64>,
    offline_for: Duration,
    numbers: AtomicU64,
    offline_until: Mutex<Option<Instant>>,
}

impl<S: SessionStore> Shared<S> {
    pub(crate) fn observe(&self, event: impl FnOnce() -> StreamEvent) {
        if let Some(observer) = &self.observer {
            observer(&event());
        }
    }

    /// Randomness for a new stream: a CSPRNG, because tokens are secrets.
    pub(crate) fn fresh(&self) -> Fresh {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut token = [0u8; Secret::LEN];
        rng.fill_bytes(&mut token);
        Fresh {
            seed: rng.next_u64(),
            token: Secret(token),
            incarnation: rng.next_u64(),
            holder: rng.next_u64(),
        }
    }

    /// Counts a number about to be sent; `Some` if fault injection says it
    /// must fail instead.
    pub(crate) fn inject_fault(&self, now: Instant) -> Option<Reject> {
        let every = self.faults.every?;
        let n = self.faults.numbers.fetch_add(1, Ordering::Relaxed) + 1;
        if n % every.get() != 0 {
            return None;
        }
        if !self.faults.offline_for.is_zero() {
            *self
                .faults
                .offline_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(now + self.faults.offline_for);
        }
        Some(Reject::InjectedFault(
            "every n-th number fails (--fail-every)",
        ))
    }

    /// How long the server stays offline after an injected failure
    /// (`--go-offline-for`); zero when it is not offline.
    fn offline_left(&self, now: Instant) -> Duration {
        let until = self
            .faults
            .offline_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// When a stream that sees shutdown begin at `now` should end: at once
    /// without a drain period, else at a random moment within it.
    pub(crate) fn drain_end(&self, now: Instant) -> Option<Instant> {
        let period = self.cfg.drain_period;
        (!period.is_zero()).then(|| now + self.jitter(Duration::ZERO, period))
    }

    /// Streams holding a place under `--max-sessions` now.
    pub(crate) fn held(&self) -> u64 {
        let free = self.slots.available_permits();
        self.cfg.max_sessions.saturating_sub(free) as u64
    }

    /// A place under `--max-sessions`, if one is free.
    pub(crate) fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// When a client refused for `reject` should come back: the server's
    /// best estimate, sent as `RetryInfo` and `grpc-retry-pushback-ms` with
    /// the UNAVAILABLE and RESOURCE_EXHAUSTED statuses that call for it.
    pub(crate) fn retry_after(&self, reject: &Reject, now: Instant) -> Option<Duration> {
        match reject.reason() {
            // Exactly when the injected outage ends (zero without one).
            Reason::InjectedFault => Some(self.offline_left(now)),
            // This server is going away: resume elsewhere now, spread over
            // one interval so the other servers are not hit all at once.
            Reason::ShuttingDown => Some(self.jitter(Duration::ZERO, self.cfg.session.interval)),
            reason @ (Reason::ServerFull | Reason::Overloaded | Reason::StoreUnavailable) => {
                let mut base = self.cfg.retry_after;
                if reason == Reason::Overloaded {
                    base = base.mul_f64(self.refusal_factor(now));
                }
                Some(self.jitter(base, base / 2))
            }
            _ => None,
        }
    }

    /// How many times `retry_after` an `OVERLOADED` refusal at `now` waits:
    /// the refusals a second over [`REFUSALS_PER_SECOND`], from 1 to
    /// [`MAX_PUSHBACK_FACTOR`]. Each refusal is a stream the server must
    /// accept, read and answer, and at about 10,000 a second (twice its
    /// capacity offered, BENCHMARKS.md) the refused took the core the
    /// admitted needed. With the wait in proportion to the rate, N waiting
    /// clients settle at about 20 × √N refusals a second rather than
    /// N / 2.5 s, until the cap.
    fn refusal_factor(&self, now: Instant) -> f64 {
        let rate = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(self.epoch, now);
        (rate as f64 / REFUSALS_PER_SECOND as f64).clamp(1.0, MAX_PUSHBACK_FACTOR)
    }

    /// `base` plus a uniformly random part of `spread`.
    fn jitter(&self, base: Duration, spread: Duration) -> Duration {
        let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return base;
        }
        let extra = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64()
            % nanos;
        base.saturating_add(Duration::from_nanos(extra))
    }

    /// The status ending a stream for `reject`, with its retry delay.
    pub(crate) fn status(&self, reject: &Reject, now: Instant) -> Status {
        to_status_with_retry(reject, self.retry_after(reject, now))
    }
}

/// The Numbers Station service, generic over its session store.
pub struct Station<S: SessionStore> {
    shared: Arc<Shared<S>>,
}

impl<S: SessionStore> Clone for Station<S> {
    fn clone(&self) -> Self {
        Station {
            shared: self.shared.clone(),
        }
    }
}

/// The server's generator: ChaCha12, a CSPRNG (tokens are secrets), from
/// the OS, or from `seed` so that a recorded seed (a simulation's, a
/// test's) replays the same tokens and sessions. Named rather than
/// `StdRng`, which rand may change in any release.
fn server_rng(seed: Option<u64>) -> ChaCha12Rng {
    match seed {
        Some(seed) => ChaCha12Rng::seed_from_u64(seed),
        None => ChaCha12Rng::from_os_rng(),
    }
}

impl<S: SessionStore> Station<S> {
    /// A service over `store`. Nothing runs until it is served.
    pub fn new(cfg: ServerConfig, store: S) -> Self {
        Self::with_observer(cfg, store, None)
    }

    /// A service whose streams report what they do to `observer`.
    pub fn with_observer(cfg: ServerConfig, store: S, observer: Option<Observer>) -> Self {
        let rng = server_rng(cfg.rng_seed);
        let faults = Faults {
            every: cfg.fail_every,
            offline_for: cfg.go_offline_for,
            numbers: AtomicU64::new(0),
            offline_until: Mutex::new(None),
        };
        let epoch = crate::clock::now();
        Station {
            shared: Arc::new(Shared {
                epoch,
                stalls: Arc::new(Stalls::new(epoch)),
                overload: Arc::new(Overload::new(cfg.shed_when_late, cfg.shed_when_busy)),
                admission: Admission::new(cfg.store_timeout),
                refusals: Mutex::new(Refusals::default()),
                slots: Arc::new(Semaphore::new(cfg.max_sessions)),
                cfg,
                observer,
                store,
                rng: Mutex::new(rng),
                counters: Counters::default(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                faults,
            }),
        }
    }

    /// The store this service uses.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Streams attached now: `Attached` sent, not yet ended.
    pub fn attached_streams(&self) -> u64 {
        Counters::get(&self.shared.counters.attached)
    }

    /// A snapshot of the counters (the `Stats` RPC). A store that cannot be
    /// asked leaves `live_sessions` out and says why; the server's own
    /// counters are reported all the same.
    pub async fn stats(&self) -> StatsReply {
        let c = &self.shared.counters;
        let (live_sessions, live_sessions_error) = match self.shared.store.live_sessions().await {
            Ok(n) => (Some(n), String::new()),
            Err(e) => (None, e.to_string()),
        };
        StatsReply {
            live_sessions,
            live_sessions_error,
            attached_streams: self.attached_streams(),
            numbers_sent: Counters::get(&c.numbers_sent),
            sessions_opened: Counters::get(&c.opened),
            sessions_resumed: Counters::get(&c.resumed),
            sessions_completed: Counters::get(&c.completed),
            streams_rejected: Counters::get(&c.rejected),
        }
    }

    /// The overload signal new sessions are shed on (see
    /// [`crate::overload`]): tests and simulations may feed it.
    pub fn overload(&self) -> &Overload {
        &self.shared.overload
    }

    /// The store's side of admission (see [`crate::admission`]).
    pub fn admission(&self) -> &Admission {
        &self.shared.admission
    }

    /// Ends every stream with UNAVAILABLE and refuses new ones.
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Waits until every stream has ended (after shutdown began).
    pub async fn drained(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

#[tonic::async_trait]
impl<S: SessionStore> NumbersStation for Station<S> {
    type StreamStream = SessionStream<S>;

    async fn stream(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let shared = &self.shared;
        let now = crate::clock::now();
        let refuse = |reject: Reject| {
            let status = shared.status(&reject, now);
            shared.counters.rejected(status.code(), &reject, true);
            Err(status)
        };
        if shared.shutdown.is_cancelled() {
            return refuse(Reject::ShuttingDown);
        }
        if !shared.offline_left(now).is_zero() {
            return refuse(Reject::InjectedFault(
                "offline after a failure (--go-offline-for)",
            ));
        }
        // The stream's span joins the trace the client sent (see
        // `crate::otel`); the driver enters it while it works, so the
        // store operations it starts are its children.
        let span = crate::otel::stream_span(&request);
        // A place under `--max-sessions` is taken at the first message,
        // before any store work (see `SessionStream`); until then a stream
        // costs little and its silence timeout bounds it.
        Ok(Response::new(SessionStream::new(
            shared.clone(),
            request.into_inner(),
            span,
        )))
    }
}

#[tonic::async_trait]
impl<S: SessionStore> StationAdmin for Station<S> {
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        Ok(Response::new(Station::stats(self).await))
    }
}

/// Errors that stop a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding or serving failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not load the descriptors (a build problem).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Serves `station` on the connections from `incoming` until `shutdown`
/// completes, then ends every stream with UNAVAILABLE and waits for them.
///
/// Taking the connections as a stream lets one code path serve
/// `tokio::net` in production and `turmoil::net` in simulations.
pub async fn serve<S, I, IO, IE, F>(
    station: Station<S>,
    incoming: I,
    shutdown: F,
) -> Result<(), ServeError>
where
    S: SessionStore,
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: std::future::Future<Output = ()>,
{
    let cfg = station.shared.cfg.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    // Reflection in both versions: grpcurl, grpcui, Postman and Evans
    // releases before 2023 ask for v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let reflection = reflection().build_v1()?;
    let token = station.shared.shutdown.clone();
    // Measures lateness and the processors' share for load shedding,
    // while serving.
    let held = {
        let shared = station.shared.clone();
        move || shared.held()
    };
    let probe = tokio::spawn(crate::overload::probe(
        station.shared.overload.clone(),
        held,
        token.child_token(),
    ));
    // Health says whether the store can be reached, so a load balancer
    // stops sending clients a server that would refuse them.
    let store_watch = tokio::spawn(watch_store(
        station.shared.clone(),
        health.clone(),
        token.child_token(),
    ));
    // Shutdown begins: health goes NOT_SERVING first (load balancers and
    // probes learn of it no later than the clients), new streams are
    // refused, and attached ones end spread over the drain period. tonic
    // stops accepting connections once it is over (this future's end).
    let health_for_signal = health.clone();
    let drain_token = token.clone();
    let drain_period = cfg.drain_period;
    let signal = async move {
        tokio::select! {
            biased;
            _ = shutdown => {}
            _ = drain_token.cancelled() => {}
        }
        set_health(&health_for_signal, false).await;
        match drain_period.is_zero() {
            true => tracing::info!("shutting down: ending streams with UNAVAILABLE"),
            false => tracing::info!(
                drain = ?drain_period,
                "shutting down: refusing new streams, ending attached ones over the drain period"
            ),
        }
        drain_token.cancel();
        tokio::time::sleep(drain_period).await;
    };
    let service =
        NumbersStationServer::new(station.clone()).max_decoding_message_size(cfg.max_message_size);
    let admin = StationAdminServer::new(station.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = cfg.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        // h2 closes a connection (GOAWAY) once more than this many of its
        // streams were reset by the client before the server accepted
        // them (its defence against "rapid reset" floods; default 20). An
        // overloaded server accepts late, and clients whose attach timed
        // out reset what is pending: at 20, each such connection was
        // closed with its thousands of attached streams, and every one of
        // them came back as a resume. Bounded still, by what a connection
        // may hold at once.
        .http2_max_pending_accept_reset_streams(Some(cfg.max_concurrent_streams as usize))
        .initial_connection_window_size(connection_window(cfg.max_concurrent_streams))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signal);
    // tonic's graceful shutdown waits for every connection to close; an idle
    // or half-open one never does, so give them a grace period after the
    // drain.
    let token = station.shared.shutdown.clone();
    let grace = async {
        token.cancelled().await;
        tokio::time::sleep(cfg.drain_period + cfg.shutdown_grace).await;
    };
    tokio::select! {
        biased;
        served = server => served?,
        _ = grace => tracing::warn!(
            grace = ?cfg.shutdown_grace,
            "connections still open after the shutdown grace period; closing them"
        ),
    }
    probe.abort();
    store_watch.abort();
    station.drained().await;
    Ok(())
}

/// Sets the health of the service and of the server as a whole (`""`,
/// what a Kubernetes gRPC probe asks by default) together.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = match serving {
        true => ServingStatus::Serving,
        false => ServingStatus::NotServing,
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(crate::proto::numbers_station_server::SERVICE_NAME, status)
        .await;
}

/// Checks every `health_every` that the store answers (within the store
/// timeout), and says so in health until shutdown begins.
async fn watch_store<S: SessionStore>(
    shared: Arc<Shared<S>>,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let every = shared.cfg.health_every;
    if every.is_zero() {
        return;
    }
    let mut serving = true;
    loop {
        let answered = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(shared.cfg.store_timeout, shared.store.ping()) => r,
        };
        let reachable = matches!(answered, Ok(Ok(())));
        if reachable != serving && !shared.shutdown.is_cancelled() {
            serving = reachable;
            match &answered {
                Ok(Ok(())) => tracing::info!("session store reachable again: SERVING"),
                Ok(Err(e)) => tracing::warn!("session store unreachable ({e}): NOT_SERVING"),
                Err(_) => tracing::warn!("session store did not answer in time: NOT_SERVING"),
            }
            set_health(&health, serving).await;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Binds `addr` with tokio and [`serve`]s on it. Returns the bound address
/// through `on_bound` (useful with port 0) before serving.
pub async fn serve_tcp<S, F>(
    station: Station<S>,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: F,
) -> Result<(), ServeError>
where
    S: SessionStore,
    F: std::future::Future<Output = ()>,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    on_bound(local);
    let incoming = crate::incoming::Incoming::new(listener);
    serve(station, incoming, shutdown).await
}

#[cfg(test)]
mod tests {
    use station_core::Busy;

    use super::*;
    use crate::store::MemoryStore;

    /// A seed replays the same draws in every release: the generator is
    /// named (ChaCha12 from rand_chacha), and these are its first values
    /// for seed 7. A change here changes every recorded run.
    #[test]
    fn a_seed_replays_the_same_draws() {
        let mut rng = server_rng(Some(7));
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, PINNED);
        // The OS's seed is another stream.
        assert_ne!(server_rng(None).next_u64(), PINNED[0]);
    }

    const PINNED: [u64; 3] = [
        559_256_596_868_823_998,
        5_664_742_077_951_270_790,
        2_631_283_358_781_127_885,
    ];

    #[test]
    fn the_pushback_of_refused_sessions_grows_with_how_many_are_refused() {
        let station = Station::new(ServerConfig::default(), MemoryStore::default());
        let shared = &station.shared;
        let base = shared.cfg.retry_after;
        let refused = Reject::Overloaded(Busy::Late(Duration::from_millis(300)));
        let at = |s: u64| shared.epoch + Duration::from_secs(s) + Duration::from_millis(500);
        let pushback = |now| shared.retry_after(&refused, now).expect("a pushback");

        // Few refusals: `retry_after` plus up to half again.
        let first = pushback(at(1));
        assert!(first >= base && first < base * 3 / 2, "{first:?}");
        // 5,000 in one second: five times that, for the rest of it...
        for _ in 0..5_000 {
            pushback(at(1));
        }
        let busy = pushback(at(1));
        assert!(busy >= base * 5 && busy < base * 15 / 2, "{busy:?}");
        // ... and the next, whose few refusals are judged by the last.
        let next = pushback(at(2));
        assert!(next >= base * 5, "{next:?}");
        // A quiet second later: back to `retry_after`.
        let quiet = pushback(at(4));
        assert!(quiet < base * 3 / 2, "{quiet:?}");
        // Never more than the cap, however many.
        for _ in 0..100_000 {
            pushback(at(5));
        }
        let most = pushback(at(5));
        let cap = base.mul_f64(MAX_PUSHBACK_FACTOR);
        assert!(most >= cap && most <= cap * 3 / 2, "{most:?}");
        // Other refusals keep the plain pushback.
        let full = shared.retry_after(&Reject::Full(3), at(5)).unwrap();
        assert!(full < base * 3 / 2, "{full:?}");
    }
}
