//! The servers a client may use, and the one connection each that all
//! of a process's sessions share: how a connection is opened (a TCP
//! socket with coalesced writes, HTTP/2 settings for thousands of streams)
//! and the evidence, when a stream fails, of whether it still works.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use super::lock;
use crate::clock::now;
use crate::coalesce::Coalesce;

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

pub(super) struct Target {
    pub(super) name: String,
    make: ChannelFactory,
    connection: Mutex<Arc<Connection>>,
}

/// One endpoint's channel, which every session using the endpoint shares,
/// and what its streams have seen of it: the evidence, when one of them
/// fails, of whether the connection itself still works each way.
pub(super) struct Connection {
    pub(super) channel: Channel,
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
pub(super) struct Via {
    connection: Arc<Connection>,
    /// When the stream last sent: its request, then its acks.
    pub(super) sent: Instant,
    /// When it last heard from the server (its request's time until then).
    pub(super) heard: Instant,
    /// Whether the server answered its request (response headers).
    answered: bool,
    /// When the client last kept it, late, on others' evidence
    /// (`others_heard`): the next time needs evidence newer than that.
    pub(super) held: Instant,
}

impl Via {
    pub(super) fn new(connection: Arc<Connection>, at: Instant) -> Self {
        Via {
            connection,
            sent: at,
            heard: at,
            answered: false,
            held: at,
        }
    }

    pub(super) fn answered(&mut self, at: Instant) {
        self.answered = true;
        self.connection.mark(&self.connection.proven, self.sent);
        self.heard(at);
    }

    pub(super) fn heard(&mut self, at: Instant) {
        self.heard = at;
        self.connection.mark(&self.connection.heard, at);
    }

    /// Whether the connection carried a server message for another stream
    /// after this stream's last one, and after it was last kept on such
    /// evidence: a server that stopped sending to everyone leaves its last
    /// message behind, which must not keep every other stream for good.
    pub(super) fn others_heard(&self) -> bool {
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
    pub(super) targets: Arc<[Target]>,
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

    pub(super) fn connection(&self, i: usize) -> Arc<Connection> {
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
    pub(super) fn replace_if_dead(&self, i: usize, via: &Via, unheard: bool) -> bool {
        let target = &self.targets[i];
        let mut current = lock(&target.connection);
        if !Arc::ptr_eq(&current, &via.connection) || !via.doubts(unheard) {
            return false;
        }
        *current = Connection::new((target.make)());
        true
    }
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
}
