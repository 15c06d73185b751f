//! The client driver: runs a core [`Client`] over gRPC streams.
//!
//! [`run`] is the core's run loop: drain the client's outputs (open a
//! stream on the current endpoint, send an ack, drop a silent stream), then
//! wait for the first of a server message, the end of the stream, or the
//! client's timer. Reconnection decisions are the core's; the driver only
//! rotates to the next endpoint when a stream fails, so a client given
//! several servers fails over between them.
//!
//! Every session run with the same [`DriverOptions`] (clones share it)
//! spends one retry budget ([`SharedBudget`]), so a process running many
//! sessions -- `station load` -- throttles its retries as a whole when most
//! of its streams fail, instead of multiplying a server's trouble.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use station_core::client::{
    self, Attempt, BudgetStats, Client, Decision, OpenThrottle, Outcome, Output, Request,
    RetryBudget, StreamEnd, ThrottleStats,
};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::{Response, Status, Streaming};

use crate::clock::{now, sleep_until};
use crate::coalesce::Coalesce;
pub use crate::otel::TraceHeaders;
use crate::proto::client_message::Kind as ClientKind;
use crate::proto::numbers_station_client::NumbersStationClient;
use crate::proto::server_message::Kind as ServerKind;
use crate::proto::{Ack, ClientMessage, Open, Resume, ServerMessage};
use crate::status::{to_stream_end, wire_duration};

/// Builds a fresh channel to one endpoint.
pub type ChannelFactory = Arc<dyn Fn() -> Channel + Send + Sync>;

/// How many streams it dropped a connection remembers (h2's default is
/// 10), each for h2's default 30 s, so that numbers the server sent before
/// it heard of the drop are ignored, not answered. A frame for a dropped
/// stream the connection forgot is a stream error to h2, answered with a
/// reset, and by default the 1,024th such error closes the connection
/// with every stream on it: that happened 35 times in one overload run of
/// `station load`, where a busy server's numbers arrived tens of seconds
/// late, each time failing the thousands of sessions sharing the
/// connection. The client lifts that limit (it guards a server from
/// clients that make it send resets; a late number from our own server is
/// no attack) and remembers as many streams as a connection may carry at
/// the server's default, a few hundred bytes each while remembered.
const REMEMBERED_RESETS: usize = 10_000;

/// The client's HTTP/2 connection window: room for every number a server
/// may send unacknowledged (its window, 64 by default) on each of the
/// 10,000 streams a connection may carry at the server's default, at h2's
/// small-frame charge (256 bytes, against half the window). h2 closes a
/// connection whose unread small DATA frames cost more than half its
/// window (`ENHANCE_YOUR_CALM "too_many_data_frames"`, a flood defence);
/// at hyper's 5 MiB that is about 10,900 numbers, which a `station load`
/// with thousands of sessions a connection leaves unread in a second or
/// two of falling behind, and then loses every session on the connection
/// at once. What is actually buffered stays bounded by the streams the
/// client opened and the server's window on each, not by this figure.
const CONNECTION_WINDOW: u32 = 10_000 * 64 * 256 * 2;

/// Connection settings for [`Endpoints::tcp`].
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Give up on a TCP connect after this long.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval, to find dead connections.
    pub keepalive_interval: Duration,
    /// How long to wait for a PING reply.
    pub keepalive_timeout: Duration,
    /// PEM certificate(s) of the authority that signed the servers'
    /// certificates; required for `https://` endpoints.
    pub tls_ca: Option<Vec<u8>>,
    /// Source address to bind before connecting. Each source address has
    /// its own ephemeral ports, so a load generator can open more
    /// connections to one server than one address allows (about 28,000 on
    /// Linux's default range) by spreading them over 127.0.0.1–127.0.0.N.
    pub local_address: Option<IpAddr>,
}

impl ChannelOptions {
    /// `endpoint` with these timeouts and keepalives and the client's
    /// HTTP/2 settings: what every channel of a client is built with, over
    /// real TCP ([`Endpoints::tcp`]) or a simulated network.
    pub fn apply(&self, endpoint: Endpoint) -> Endpoint {
        endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_max_concurrent_reset_streams(REMEMBERED_RESETS)
            .http2_max_local_error_reset_streams(None)
    }
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            tls_ca: None,
            local_address: None,
        }
    }
}

/// Errors building endpoints.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// No endpoint was given.
    #[error("no endpoint given")]
    Empty,
    /// An endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    Invalid {
        /// The text given.
        endpoint: String,
        /// Why it is invalid.
        source: tonic::transport::Error,
    },
    /// An `https://` endpoint without a certificate authority to trust.
    #[error("endpoint {0:?} uses TLS: give the CA certificate (--tls-ca)")]
    NoCa(String),
}

struct Target {
    name: String,
    make: ChannelFactory,
    connection: Mutex<Arc<Connection>>,
}

/// One endpoint's channel, which every session using the endpoint shares,
/// and what its streams have seen of it: the evidence, when one of them
/// fails, of whether the connection itself still works each way.
struct Connection {
    channel: Channel,
    born: Instant,
    /// Nanoseconds after `born`: when a session last read a server message
    /// from any of its streams (the server's direction works).
    heard: AtomicU64,
    /// Nanoseconds after `born`: the latest request sent on it that the
    /// server answered with response headers (our direction worked then).
    proven: AtomicU64,
}

impl Connection {
    fn new(channel: Channel) -> Arc<Self> {
        Arc::new(Connection {
            channel,
            born: now(),
            heard: AtomicU64::new(0),
            proven: AtomicU64::new(0),
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.born);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    fn mark(&self, field: &AtomicU64, at: Instant) {
        field.fetch_max(self.nanos(at), Ordering::Relaxed);
    }

    fn after(&self, field: &AtomicU64, at: Instant) -> bool {
        field.load(Ordering::Relaxed) > self.nanos(at)
    }
}

/// The connection a session's current stream runs on, and what the stream
/// has seen of it.
struct Via {
    connection: Arc<Connection>,
    /// When the stream last sent: its request, then its acks.
    sent: Instant,
    /// When it last heard from the server (its request's time until then).
    heard: Instant,
    /// Whether the server answered its request (response headers).
    answered: bool,
    /// When the client last kept it, late, on others' evidence
    /// (`others_heard`): the next time needs evidence newer than that.
    held: Instant,
}

impl Via {
    fn new(connection: Arc<Connection>, at: Instant) -> Self {
        Via {
            connection,
            sent: at,
            heard: at,
            answered: false,
            held: at,
        }
    }

    fn answered(&mut self, at: Instant) {
        self.answered = true;
        self.connection.mark(&self.connection.proven, self.sent);
        self.heard(at);
    }

    fn heard(&mut self, at: Instant) {
        self.heard = at;
        self.connection.mark(&self.connection.heard, at);
    }

    /// Whether the connection carried a server message for another stream
    /// after this stream's last one, and after it was last kept on such
    /// evidence: a server that stopped sending to everyone leaves its last
    /// message behind, which must not keep every other stream for good.
    fn others_heard(&self) -> bool {
        let since = self.heard.max(self.held);
        self.connection.after(&self.connection.heard, since)
    }

    /// Whether the connection may be dead one way or both, given how this
    /// stream failed: `unheard` if the server said it heard nothing from
    /// us (DEADLINE_EXCEEDED), else the stream fell silent. It works if
    /// the direction in doubt carried anything after this stream last used
    /// it: a request sent later and answered (ours), a message read later
    /// (the server's). A stream whose request went unanswered doubts ours.
    fn doubts(&self, unheard: bool) -> bool {
        let c = &self.connection;
        match unheard || !self.answered {
            true => !c.after(&c.proven, self.sent),
            false => !c.after(&c.heard, self.heard),
        }
    }
}

/// The servers a client may use, each with a lazily connected channel.
///
/// Cloning shares the channels, so many sessions multiplex their streams on
/// one HTTP/2 connection per endpoint.
#[derive(Clone)]
pub struct Endpoints {
    targets: Arc<[Target]>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.targets.iter().map(|t| &t.name))
            .finish()
    }
}

/// Opens a TCP connection for a channel, with writes coalesced
/// ([`Coalesce`]): the acknowledgements of many sessions on one connection
/// then share writes. tonic layers TLS (if configured) and the endpoint's
/// connect timeout on top. With `local`, the socket is bound to that
/// source address (any port) first.
async fn connect(uri: Uri, local: Option<IpAddr>) -> std::io::Result<TokioIo<Coalesce<TcpStream>>> {
    let host = uri.host().unwrap_or("localhost");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let tcp = match local {
        None => TcpStream::connect((host, port)).await?,
        Some(local) => {
            let mut last = None;
            let mut tcp = None;
            // The first resolved address of the source address's family.
            for addr in lookup_host((host, port)).await? {
                if addr.is_ipv4() != local.is_ipv4() {
                    continue;
                }
                let socket = if local.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(local, 0))?;
                match socket.connect(addr).await {
                    Ok(stream) => {
                        tcp = Some(stream);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            tcp.ok_or_else(|| {
                last.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        format!("{host} has no address of the family of {local}"),
                    )
                })
            })?
        }
    };
    // Numbers are tiny and latency matters more than packing.
    tcp.set_nodelay(true)?;
    Ok(TokioIo::new(Coalesce::new(tcp)))
}

impl Endpoints {
    /// Endpoints from channel factories (e.g. over turmoil's network).
    pub fn new(targets: Vec<(String, ChannelFactory)>) -> Result<Self, EndpointError> {
        if targets.is_empty() {
            return Err(EndpointError::Empty);
        }
        let targets = targets
            .into_iter()
            .map(|(name, make)| Target {
                name,
                connection: Mutex::new(Connection::new(make())),
                make,
            })
            .collect();
        Ok(Endpoints { targets })
    }

    /// Endpoints over TCP. Each address is `host:port`, `http://host:port`
    /// or `https://host:port`.
    pub fn tcp(addrs: &[String], opts: &ChannelOptions) -> Result<Self, EndpointError> {
        let mut targets = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let uri = if addr.contains("://") {
                addr.clone()
            } else {
                format!("http://{addr}")
            };
            let invalid = |source| EndpointError::Invalid {
                endpoint: addr.clone(),
                source,
            };
            let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(invalid)?;
            if uri.starts_with("https://") {
                let ca = opts
                    .tls_ca
                    .as_ref()
                    .ok_or_else(|| EndpointError::NoCa(addr.clone()))?;
                let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
                endpoint = endpoint.tls_config(tls).map_err(invalid)?;
            }
            let endpoint = opts.apply(endpoint);
            let local = opts.local_address;
            let make: ChannelFactory = Arc::new(move || {
                endpoint
                    .connect_with_connector_lazy(tower::service_fn(move |uri| connect(uri, local)))
            });
            targets.push((addr.clone(), make));
        }
        Self::new(targets)
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are none (never true for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    fn connection(&self, i: usize) -> Arc<Connection> {
        lock(&self.targets[i].connection).clone()
    }

    /// A stream on `via` failed in a way that may mean its connection is
    /// dead (`unheard`: see [`Via::doubts`]): replaces endpoint `i`'s
    /// connection with a fresh one if the evidence says it may be, unless
    /// the endpoint already has a newer one. So the thousands of sessions
    /// sharing a connection replace it once when it dies, and not at all
    /// when the server is slow to some of them: a fresh connection per
    /// silent stream multiplied connections past the server's open-file
    /// limit under overload. Whether it replaced it.
    fn replace_if_dead(&self, i: usize, via: &Via, unheard: bool) -> bool {
        let target = &self.targets[i];
        let mut current = lock(&target.connection);
        if !Arc::ptr_eq(&current, &via.connection) || !via.doubts(unheard) {
            return false;
        }
        *current = Connection::new((target.make)());
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The retry budget of one process, shared by every session [`run`] with
/// the same [`DriverOptions`] (clones share it): a core [`RetryBudget`]
/// (gRFC A6's token bucket, scaled by the sessions using it), which paces
/// each retry, and an [`OpenThrottle`] (the SRE book's client-side
/// throttling), which bounds how many new sessions' opens the process
/// sends while its servers refuse most of them.
#[derive(Clone, Debug, Default)]
pub struct SharedBudget(Arc<Mutex<Budgets>>);

#[derive(Debug, Default)]
struct Budgets {
    retries: RetryBudget,
    opens: OpenThrottle,
}

impl SharedBudget {
    /// A fresh budget, used by no session yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens now, the bucket's size, sessions using it, whether retries
    /// are throttled now and how many have been so far: for metrics.
    pub fn stats(&self) -> BudgetStats {
        lock(&self.0).retries.stats()
    }

    /// The open throttle's window and what it has held back: for metrics.
    pub fn open_stats(&self) -> ThrottleStats {
        lock(&self.0).opens.stats(now())
    }

    /// Adds a session's allowance until the returned seat is dropped
    /// (however [`run`] ends, even if its future is dropped).
    fn join(&self) -> Seat<'_> {
        lock(&self.0).retries.join();
        Seat(self)
    }

    fn record(&self, attempt: Attempt) -> Decision {
        lock(&self.0).retries.record(attempt)
    }

    /// Whether to send a new session's open now (see [`OpenThrottle::ask`]).
    fn ask_open(&self, now: Instant, draw: u64) -> bool {
        lock(&self.0).opens.ask(now, draw)
    }

    fn open_accepted(&self, now: Instant) {
        lock(&self.0).opens.accepted(now);
    }

    fn open_not_accepted(&self, now: Instant) {
        lock(&self.0).opens.not_accepted(now);
    }
}

/// A session's place in a [`SharedBudget`]; leaving it takes its share.
struct Seat<'a>(&'a SharedBudget);

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        lock(&self.0 .0).retries.leave();
    }
}

/// Driver settings.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// After the final ack, wait this long for the server to end the stream
    /// (so it has deleted the session) before returning.
    pub linger: Duration,
    /// Largest server message accepted (bytes).
    pub max_message_size: usize,
    /// The retry budget the sessions run with these options share.
    /// `default()` makes a new one: to share one across a process's
    /// sessions, run them all with (clones of) one `DriverOptions`.
    pub budget: SharedBudget,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            linger: Duration::from_secs(2),
            max_message_size: 1024,
            budget: SharedBudget::new(),
        }
    }
}

/// What happened, for progress bars, logs and state files.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stream is being opened.
    Connecting {
        /// Endpoint name.
        endpoint: &'a str,
        /// The first message.
        request: &'a Request,
    },
    /// The process's open throttle held back a new session's `Open`: no
    /// stream was opened; the session asks again later.
    HeldBack {
        /// The endpoint it would have gone to.
        endpoint: &'a str,
    },
    /// The server attached the stream.
    Attached {
        /// Endpoint name.
        endpoint: &'a str,
        /// First index the stream sends.
        next_index: u32,
        /// Time between numbers announced by the server.
        interval: Duration,
    },
    /// A number was received (possibly a duplicate, then not counted).
    Number {
        /// Its index.
        index: u32,
    },
    /// The server holds its numbers: its store has not confirmed its
    /// lease (a `Paused`, at most one an interval).
    Paused {
        /// Endpoint name.
        endpoint: &'a str,
    },
    /// The stream ended before completion.
    Failed {
        /// Endpoint name.
        endpoint: &'a str,
        /// How.
        end: &'a StreamEnd,
    },
    /// The stream went silent and was dropped.
    Silent {
        /// Endpoint name.
        endpoint: &'a str,
    },
}

type Call =
    Pin<Box<dyn Future<Output = Result<Response<Streaming<ServerMessage>>, Status>> + Send>>;

/// The current stream, if any. One per session, so the size difference
/// between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
enum Stream {
    None,
    /// Request sent, waiting for response headers.
    Calling {
        tx: mpsc::Sender<ClientMessage>,
        call: Call,
    },
    /// Receiving messages.
    Open {
        tx: mpsc::Sender<ClientMessage>,
        inbound: Streaming<ServerMessage>,
    },
}

/// What woke the driver; lives only until it is handled.
#[allow(clippy::large_enum_variant)]
enum Step {
    Headers(Result<Response<Streaming<ServerMessage>>, Status>),
    Message(Result<Option<ServerMessage>, Status>),
    Timer,
}

impl Stream {
    fn tx(&self) -> Option<&mpsc::Sender<ClientMessage>> {
        match self {
            Stream::None => None,
            Stream::Calling { tx, .. } | Stream::Open { tx, .. } => Some(tx),
        }
    }

    async fn next(&mut self) -> Step {
        match self {
            Stream::None => std::future::pending().await,
            Stream::Calling { call, .. } => Step::Headers(call.await),
            Stream::Open { inbound, .. } => Step::Message(inbound.message().await),
        }
    }
}

/// Runs `client` to its outcome over `endpoints`, reporting progress to
/// `observe` (called with the client after each event, e.g. to snapshot it).
pub async fn run(
    endpoints: &Endpoints,
    opts: &DriverOptions,
    client: Client,
    observe: impl FnMut(Event<'_>, &Client),
) -> Outcome {
    run_in_trace(endpoints, opts, client, &TraceHeaders::none(), observe).await
}

/// [`run`], sending `trace` with every stream of the session, on every
/// server, so that all of them join one trace (see [`crate::otel`]).
pub async fn run_in_trace(
    endpoints: &Endpoints,
    opts: &DriverOptions,
    mut client: Client,
    trace: &TraceHeaders,
    mut observe: impl FnMut(Event<'_>, &Client),
) -> Outcome {
    let mut stream = Stream::None;
    let mut via: Option<Via> = None;
    let mut current = 0usize;
    // Whether the last input was the client's timer: a `Disconnect` then
    // is a silent stream; after a message, the message broke the protocol,
    // which says nothing against the connection that carried it.
    let mut timer_woke = false;
    // The current stream began with an `Open` that was sent and whose
    // fate the open throttle has not heard yet: its `Attached` is an
    // accept; its end, or a silent drop, before one is not.
    let mut opening = false;
    let _seat = opts.budget.join();
    loop {
        // The last input's attempt, if it ended one, goes to the budget
        // first: a throttled retry is pushed back before the deadline is
        // read below.
        if let Some(attempt) = client.poll_attempt() {
            if opts.budget.record(attempt) == Decision::Throttle {
                client.handle_throttled(now());
            }
        }
        while let Some(output) = client.poll_output() {
            match output {
                Output::Connect(request) => {
                    let name = &endpoints.targets[current].name;
                    // Whatever stream came before was settled where it
                    // went: at its `Attached`, its end, or its `Disconnect`.
                    opening = matches!(request, Request::Open { .. });
                    if opening && !opts.budget.ask_open(now(), client.throttle_draw()) {
                        opening = false;
                        client.handle_held_back(now());
                        observe(Event::HeldBack { endpoint: name }, &client);
                        continue;
                    }
                    observe(
                        Event::Connecting {
                            endpoint: name,
                            request: &request,
                        },
                        &client,
                    );
                    let connection = endpoints.connection(current);
                    stream = open(connection.channel.clone(), opts, trace, request);
                    via = Some(Via::new(connection, now()));
                }
                Output::Ack(next_index) => {
                    if let Some(tx) = stream.tx() {
                        // Acks are cumulative: if the buffer is full the next
                        // one carries this one's news.
                        let sent = tx.try_send(ClientMessage {
                            kind: Some(ClientKind::Ack(Ack { next_index })),
                        });
                        if let (Ok(()), Some(via)) = (sent, via.as_mut()) {
                            via.sent = now();
                        }
                    }
                }
                Output::Disconnect => {
                    if std::mem::take(&mut opening) {
                        opts.budget.open_not_accepted(now());
                    }
                    if !matches!(stream, Stream::None) {
                        let endpoint = &endpoints.targets[current].name;
                        observe(Event::Silent { endpoint }, &client);
                        stream = Stream::None;
                        if let (Some(via), true) = (via.take(), timer_woke) {
                            endpoints.replace_if_dead(current, &via, false);
                        }
                        current = (current + 1) % endpoints.len();
                    }
                }
                Output::Finished(outcome) => {
                    linger(stream, opts.linger).await;
                    return outcome;
                }
            }
        }
        let deadline = client.poll_timeout();
        let step = tokio::select! {
            biased;
            step = stream.next() => step,
            _ = sleep_until(deadline) => Step::Timer,
        };
        let now = now();
        let endpoint = endpoints.targets[current].name.as_str();
        timer_woke = matches!(step, Step::Timer);
        let end = match step {
            Step::Timer => {
                // Other streams' messages on this one's connection since its
                // own last: the server is alive, only late for this stream
                // (under load). Keep it rather than resume, which would cost
                // that server a store load and a takeover more.
                if let Some(via) = via.as_mut().filter(|via| via.others_heard()) {
                    via.held = now;
                    client.handle_server_busy(now);
                }
                client.handle_timeout(now);
                continue;
            }
            Step::Headers(Ok(response)) => {
                let tx = match std::mem::replace(&mut stream, Stream::None) {
                    Stream::Calling { tx, .. } => tx,
                    _ => unreachable!("headers only arrive while calling"),
                };
                stream = Stream::Open {
                    tx,
                    inbound: response.into_inner(),
                };
                if let Some(via) = via.as_mut() {
                    via.answered(now);
                }
                continue;
            }
            Step::Message(Ok(Some(msg))) => {
                if let Some(via) = via.as_mut() {
                    via.heard(now);
                }
                match msg.kind {
                    Some(ServerKind::Attached(a)) => {
                        let attached = client::Attached {
                            count: a.count,
                            next_index: a.next_index,
                            token: &a.resume_token,
                            ttl: duration(a.session_ttl),
                            interval: duration(a.interval),
                            ack_every: a.ack_every,
                        };
                        if std::mem::take(&mut opening) {
                            opts.budget.open_accepted(now);
                        }
                        client.handle_attached(now, attached);
                        let event = Event::Attached {
                            endpoint,
                            next_index: a.next_index,
                            interval: attached.interval,
                        };
                        observe(event, &client);
                    }
                    Some(ServerKind::Number(n)) => {
                        client.handle_number(
                            now,
                            client::Number {
                                index: n.index,
                                value: n.value,
                                checksum: n.checksum,
                            },
                        );
                        observe(Event::Number { index: n.index }, &client);
                    }
                    Some(ServerKind::Paused(p)) => {
                        client.handle_paused(now, p.next_index);
                        observe(Event::Paused { endpoint }, &client);
                    }
                    None => {} // A newer server's message kind: ignore it.
                }
                continue;
            }
            Step::Message(Ok(None)) => StreamEnd::Ok,
            Step::Headers(Err(status)) => to_stream_end(&status),
            Step::Message(Err(status)) => message_error(&status),
        };
        stream = Stream::None;
        if std::mem::take(&mut opening) {
            opts.budget.open_not_accepted(now);
        }
        let via = via.take();
        observe(
            Event::Failed {
                endpoint,
                end: &end,
            },
            &client,
        );
        if end != StreamEnd::Ok {
            // The server gave up on hearing from us: our direction of this
            // connection may be dead, so the next stream gets a new one.
            if matches!(
                end,
                StreamEnd::Status {
                    code: client::Code::DeadlineExceeded,
                    ..
                }
            ) {
                if let Some(via) = &via {
                    endpoints.replace_if_dead(current, via, true);
                }
            }
            current = (current + 1) % endpoints.len();
        }
        client.handle_end(now, end);
    }
}

/// How reading the stream's messages failed. tonic reports a message over
/// our decode limit as OUT_OF_RANGE, with no details: the server broke the
/// protocol (its messages are small), it did not reject us. A station
/// never sends OUT_OF_RANGE to a client that keeps to the protocol (its
/// own OUT_OF_RANGE answers a client message over its limit), and every
/// status it sends carries an ErrorInfo reason.
fn message_error(status: &Status) -> StreamEnd {
    match to_stream_end(status) {
        StreamEnd::Status {
            code: client::Code::OutOfRange,
            reason: None,
            message,
            ..
        } => StreamEnd::Protocol(format!("a message over the decode limit: {message}")),
        end => end,
    }
}

fn open(channel: Channel, opts: &DriverOptions, trace: &TraceHeaders, request: Request) -> Stream {
    let first = match request {
        Request::Open {
            client_id,
            count,
            nonce,
        } => ClientKind::Open(Open {
            client_id: client_id.to_string(),
            count,
            open_nonce: nonce.as_bytes().to_vec(),
        }),
        Request::Resume {
            client_id,
            token,
            next_index,
        } => ClientKind::Resume(Resume {
            client_id: client_id.to_string(),
            resume_token: token.as_bytes().to_vec(),
            next_index,
        }),
    };
    let (tx, rx) = mpsc::channel(32);
    tx.try_send(ClientMessage { kind: Some(first) })
        .expect("a new channel has room for the first message");
    let mut grpc =
        NumbersStationClient::new(channel).max_decoding_message_size(opts.max_message_size);
    let mut call = tonic::Request::new(ReceiverStream::new(rx));
    trace.apply(call.metadata_mut());
    let call: Call = Box::pin(async move { grpc.stream(call).await });
    Stream::Calling { tx, call }
}

/// Half-closes the stream and waits briefly for the server to end it, so
/// the final ack is delivered and the session deleted.
async fn linger(stream: Stream, limit: Duration) {
    if let Stream::Open { tx, mut inbound } = stream {
        drop(tx);
        let _ = tokio::time::timeout(limit, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
}

/// A server's duration as the core takes it: missing or negative is zero,
/// anything else as large as it is (the core refuses absurd ones). See
/// [`wire_duration`] for why not prost's conversion.
fn duration(d: Option<prost_types::Duration>) -> Duration {
    d.and_then(wire_duration).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints of one lazily connected channel (never connected here),
    /// and how many connections they were given.
    fn counted() -> (Endpoints, impl Fn() -> u64) {
        let made = Arc::new(AtomicU64::new(0));
        let count = made.clone();
        let make: ChannelFactory = Arc::new(move || {
            count.fetch_add(1, Ordering::Relaxed);
            Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
        });
        let endpoints = Endpoints::new(vec![("a".into(), make)]).unwrap();
        (endpoints, move || made.load(Ordering::Relaxed))
    }

    /// A stream on endpoint 0's connection, its request sent now.
    fn via(endpoints: &Endpoints) -> Via {
        Via::new(endpoints.connection(0), now())
    }

    async fn later() {
        tokio::time::advance(Duration::from_millis(100)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_replaces_its_connection_only_if_nothing_came_after() {
        let (endpoints, made) = counted();

        // Two answered streams; the second reads a number after the first
        // last heard anything: the server's direction works, and the first
        // stream's silence is its own.
        let mut first = via(&endpoints);
        first.answered(now());
        later().await;
        let mut second = via(&endpoints);
        second.answered(now());
        assert!(!endpoints.replace_if_dead(0, &first, false));
        assert_eq!(made(), 1, "kept");

        // Then nothing comes: the second stream's silence finds nothing
        // after its last message and replaces the connection, once; the
        // first, on the replaced connection, leaves the new one be.
        later().await;
        assert!(endpoints.replace_if_dead(0, &second, false));
        assert_eq!(made(), 2, "replaced");
        first.heard = now();
        assert!(!endpoints.replace_if_dead(0, &first, false));
        assert_eq!(made(), 2, "replaced once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_or_unheard_stream_asks_whether_our_direction_works() {
        let (endpoints, made) = counted();

        // A request never answered, while an older stream reads numbers:
        // the server's direction works, ours is in doubt, and no request
        // sent later was answered: replaced.
        let mut old = via(&endpoints);
        old.answered(now());
        later().await;
        let waiting = via(&endpoints);
        later().await;
        old.heard(now());
        assert!(endpoints.replace_if_dead(0, &waiting, false));
        assert_eq!(made(), 2);

        // On the new connection: a stream the server stopped hearing
        // (DEADLINE_EXCEEDED) keeps it if a request sent after its last
        // ack was answered, though nothing was read since.
        let mut acking = via(&endpoints);
        acking.answered(now());
        later().await;
        acking.sent = now();
        later().await;
        let mut newer = via(&endpoints);
        newer.answered(now());
        assert!(!endpoints.replace_if_dead(0, &acking, true));
        assert_eq!(made(), 2, "our direction carried a request since");

        // Numbers still arriving are no evidence that the server hears us:
        // after a later ack of its own, with no request answered since, it
        // replaces it (a cut of our direction only).
        later().await;
        newer.sent = now();
        later().await;
        acking.heard(now());
        assert!(endpoints.replace_if_dead(0, &newer, true));
        assert_eq!(made(), 3);
    }

    /// The wire's durations come from the server: any value must convert
    /// without panicking (prost's conversion panicked on `i64::MIN`
    /// seconds). Huge ones reach the core as they are (it refuses them as a
    /// protocol error); negative or missing ones become zero.
    #[test]
    fn any_wire_duration_converts() {
        let extremes = [i64::MIN, -1, 0, 1, 1 << 62, i64::MAX];
        let nanos = [i32::MIN, -1, 0, 999_999_999, 1_000_000_000, i32::MAX];
        for seconds in extremes {
            for nanos in nanos {
                let d = duration(Some(prost_types::Duration { seconds, nanos }));
                if seconds < 0 || nanos < 0 {
                    assert_eq!(d, Duration::ZERO, "{seconds} {nanos}");
                }
            }
        }
        assert_eq!(duration(None), Duration::ZERO);
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(duration(Some(negative)), Duration::ZERO);
        let d = duration(Some(prost_types::Duration {
            seconds: 1 << 62,
            nanos: 0,
        }));
        assert_eq!(d, Duration::from_secs(1 << 62));
    }
}
