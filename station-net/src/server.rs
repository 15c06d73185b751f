//! The gRPC server: [`Station`] implements the generated service traits and
//! [`serve`] runs it, with health checking and reflection, until shutdown.
//!
//! Each stream's response body ([`SessionStream`]) owns the stream's core
//! [`server::Stream`](station_core::server::Stream) machine and drives it on the task
//! hyper runs for the stream. What the streams share is `state`'s
//! `ServerState`; what the server is told is [`ServerConfig`] (`config`).
//! The layers, with no cycle: `config`, then `state`, then `driver`, then
//! this module, which builds the state and hands each stream its driver.

use std::net::SocketAddr;
use std::sync::Arc;

use station_core::Reject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::Admission;
use crate::config::connection_window;
pub use crate::config::{ServerConfig, MAX_WINDOW};
use crate::driver::Driver;
pub use crate::driver::SessionStream;
use crate::metrics::Counters;
use crate::overload::Overload;
use crate::proto::numbers_station_server::{NumbersStation, NumbersStationServer};
use crate::proto::station_admin_server::{StationAdmin, StationAdminServer};
use crate::proto::{ClientMessage, StatsReply, StatsRequest};
use crate::stall::Stalls;
use crate::state::ServerState;
pub use crate::state::{Observer, StreamEvent, REFUSALS_PER_SECOND};
use crate::store::SessionStore;

/// The Numbers Station service, generic over its session store.
pub struct Station<S: SessionStore> {
    shared: Arc<ServerState<S>>,
    /// Every stream, for driving those whose clients stopped reading.
    stalls: Arc<Stalls<Driver<S>>>,
}

impl<S: SessionStore> Clone for Station<S> {
    fn clone(&self) -> Self {
        Station {
            shared: self.shared.clone(),
            stalls: self.stalls.clone(),
        }
    }
}

impl<S: SessionStore> Station<S> {
    /// A service over `store`. Nothing runs until it is served.
    pub fn new(cfg: ServerConfig, store: S) -> Self {
        Self::with_observer(cfg, store, None)
    }

    /// A service whose streams report what they do to `observer`.
    pub fn with_observer(cfg: ServerConfig, store: S, observer: Option<Observer>) -> Self {
        let shared = ServerState::new(cfg, store, observer);
        Station {
            stalls: Arc::new(Stalls::new(shared.epoch)),
            shared: Arc::new(shared),
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
        // A place under `--max-streams` is taken at the first message,
        // before any store work (see `SessionStream`); until then a stream
        // costs little and its silence timeout bounds it.
        Ok(Response::new(SessionStream::new(
            shared.clone(),
            &self.stalls,
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
    shared: Arc<ServerState<S>>,
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
