//! The gRPC server: [`Station`] implements the generated service traits and
//! [`serve`] runs it, with health checking and reflection, until shutdown.
//!
//! Each stream gets one task ([`crate::driver`]) that owns the stream's core
//! [`Session`](station_core::server::Session). Shared state is small: the
//! store handle, a random source for new sessions, counters, the fault
//! injector and the shutdown token.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use station_core::server::Fresh;
use station_core::{Reject, Secret};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::numbers_station_server::{NumbersStation, NumbersStationServer};
use crate::proto::station_admin_server::{StationAdmin, StationAdminServer};
use crate::proto::{ClientMessage, ServerMessage, StatsReply, StatsRequest};
use crate::status::to_status;
use crate::store::SessionStore;

/// Everything a server can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Session pacing, TTL and window.
    pub session: station_core::server::Config,
    /// Most streams attached at once; more are RESOURCE_EXHAUSTED.
    pub max_sessions: usize,
    /// Fail every N-th number with UNAVAILABLE (fault injection).
    pub fail_every: Option<NonZeroU64>,
    /// After an injected failure, refuse new streams for this long.
    pub go_offline_for: Duration,
    /// A store operation slower than this fails with UNAVAILABLE.
    pub store_timeout: Duration,
    /// A client that does not read for this long loses its stream.
    pub write_timeout: Duration,
    /// Messages buffered per stream between the session task and HTTP/2.
    pub stream_buffer: usize,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            session: station_core::server::Config::default(),
            max_sessions: 250_000,
            fail_every: None,
            go_offline_for: Duration::ZERO,
            store_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            stream_buffer: 16,
            max_message_size: 1024,
            max_concurrent_streams: 10_000,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            rng_seed: None,
        }
    }
}

/// Counters kept by one server.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub numbers_sent: AtomicU64,
    pub opened: AtomicU64,
    pub resumed: AtomicU64,
    pub completed: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Shared<S> {
    pub cfg: ServerConfig,
    pub store: S,
    rng: Mutex<StdRng>,
    pub counters: Counters,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    slots: Arc<Semaphore>,
    faults: Faults,
}

/// Fault injection state, shared by all streams of the server.
struct Faults {
    every: Option<NonZeroU64>,
    offline_for: Duration,
    numbers: AtomicU64,
    offline_until: Mutex<Option<Instant>>,
}

impl<S: SessionStore> Shared<S> {
    /// Randomness for a new session: a CSPRNG, because tokens are secrets.
    pub(crate) fn fresh(&self) -> Fresh {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut token = [0u8; Secret::LEN];
        rng.fill_bytes(&mut token);
        Fresh {
            seed: rng.next_u64(),
            token: Secret(token),
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
            *self.faults.offline_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(now + self.faults.offline_for);
        }
        Some(Reject::InjectedFault("every n-th number fails (--fail-every)"))
    }

    fn offline(&self, now: Instant) -> bool {
        let until = self.faults.offline_until.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| now < t)
    }
}

/// The Numbers Station service, generic over its session store.
pub struct Station<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Station<S> {
    fn clone(&self) -> Self {
        Station {
            shared: self.shared.clone(),
        }
    }
}

impl<S: SessionStore> Station<S> {
    /// A service over `store`. Nothing runs until it is served.
    pub fn new(cfg: ServerConfig, store: S) -> Self {
        let rng = match cfg.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let faults = Faults {
            every: cfg.fail_every,
            offline_for: cfg.go_offline_for,
            numbers: AtomicU64::new(0),
            offline_until: Mutex::new(None),
        };
        Station {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(cfg.max_sessions)),
                cfg,
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

    /// Streams attached now.
    pub fn attached_streams(&self) -> u64 {
        (self.shared.cfg.max_sessions - self.shared.slots.available_permits()) as u64
    }

    /// A snapshot of the counters (the `Stats` RPC).
    pub async fn stats(&self) -> Result<StatsReply, Status> {
        let c = &self.shared.counters;
        let live = self
            .shared
            .store
            .live_sessions()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(StatsReply {
            live_sessions: live,
            attached_streams: self.attached_streams(),
            numbers_sent: c.numbers_sent.load(Ordering::Relaxed),
            sessions_opened: c.opened.load(Ordering::Relaxed),
            sessions_resumed: c.resumed.load(Ordering::Relaxed),
            sessions_completed: c.completed.load(Ordering::Relaxed),
            streams_rejected: c.rejected.load(Ordering::Relaxed),
        })
    }

    /// Ends every stream with UNAVAILABLE and refuses new ones.
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Waits until every stream task has finished (after shutdown began).
    pub async fn drained(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    fn now() -> Instant {
        // tokio's clock, so paused test clocks and turmoil drive the core.
        tokio::time::Instant::now().into_std()
    }
}

#[tonic::async_trait]
impl<S: SessionStore> NumbersStation for Station<S> {
    type StreamStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let shared = &self.shared;
        let refuse = |reject: Reject| {
            Counters::bump(&shared.counters.rejected);
            Err(to_status(&reject))
        };
        if shared.shutdown.is_cancelled() {
            return refuse(Reject::ShuttingDown);
        }
        if shared.offline(Self::now()) {
            return refuse(Reject::InjectedFault("offline after a failure (--go-offline-for)"));
        }
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            return refuse(Reject::Full(shared.cfg.max_sessions));
        };
        let (tx, rx) = mpsc::channel(shared.cfg.stream_buffer);
        let inbound = request.into_inner();
        shared
            .tasks
            .spawn(crate::driver::drive(shared.clone(), inbound, tx, slot));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl<S: SessionStore> StationAdmin for Station<S> {
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        Station::stats(self).await.map(Response::new)
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
    health
        .set_serving::<NumbersStationServer<Station<S>>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let token = station.shared.shutdown.clone();
    let health_for_signal = health.clone();
    let signal = async move {
        tokio::select! {
            biased;
            _ = shutdown => {}
            _ = token.cancelled() => {}
        }
        tracing::info!("shutting down: ending streams with UNAVAILABLE");
        health_for_signal
            .set_not_serving::<NumbersStationServer<Station<S>>>()
            .await;
        token.cancel();
    };
    let service = NumbersStationServer::new(station.clone())
        .max_decoding_message_size(cfg.max_message_size);
    let admin = StationAdminServer::new(station.clone());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(admin)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    station.drained().await;
    Ok(())
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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    serve(station, incoming, shutdown).await
}
