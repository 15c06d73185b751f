//! The one test server: a [`Station`] on 127.0.0.1 (an OS-picked port),
//! plaintext or TLS, with the client side to reach it.

use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use station_core::client::{Config as ClientConfig, Outcome, Verdict};
use station_core::ClientId;
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints, Event};
use station_net::proto::numbers_station_server::{NumbersStation, NumbersStationServer};
use station_net::store::{MemoryStore, SessionStore};
use station_net::{serve_tcp, ServeError, ServerConfig, Station};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Identity, ServerTlsConfig};

/// Bound on binding, connecting and shutting down.
const BOUND: Duration = Duration::from_secs(5);

/// A `Station` serving on 127.0.0.1 on the test's runtime until
/// [`stop`](TestServer::stop)ped or dropped (dropping begins its shutdown
/// and does not wait for it).
pub struct TestServer<S: SessionStore = MemoryStore> {
    pub addr: SocketAddr,
    pub station: Station<S>,
    /// The PEM of the CA that signed the server's certificate, when it
    /// serves TLS.
    pub tls_ca: Option<String>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer<MemoryStore> {
    /// A server of `cfg` on a fresh memory store.
    pub async fn start(cfg: ServerConfig) -> Self {
        Self::with_store(cfg, MemoryStore::default()).await
    }
}

impl<S: SessionStore> TestServer<S> {
    /// A server of `cfg` on `store`.
    pub async fn with_store(cfg: ServerConfig, store: S) -> Self {
        Self::with_station(Station::new(cfg, store)).await
    }

    /// A server of `cfg` on `store` that serves TLS with `pki`'s
    /// certificate (for `localhost` and 127.0.0.1).
    pub async fn with_tls(cfg: ServerConfig, store: S, pki: &Pki) -> Self {
        let cfg = ServerConfig {
            tls: Some(pki.server_tls()),
            ..cfg
        };
        let mut server = Self::with_station(Station::new(cfg, store)).await;
        server.tls_ca = Some(pki.ca_pem.clone());
        server
    }

    /// Serves `station` as it is (e.g. one built with an observer).
    pub async fn with_station(station: Station<S>) -> Self {
        watch_panics();
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let task = tokio::spawn(serve_tcp(
            station.clone(),
            bind,
            move |a| addr_tx.send(a).expect("waited for"),
            async {
                let _ = stopped.await;
            },
        ));
        let addr = timeout(BOUND, addr_rx)
            .await
            .expect("the server binds in time")
            .expect("the server reports its address");
        TestServer {
            addr,
            station,
            tls_ca: None,
            stop,
            task,
        }
    }

    /// The URL a client dials: `https://localhost:…` when serving TLS (the
    /// name the certificate is for), else `http://127.0.0.1:…`.
    pub fn url(&self) -> String {
        match self.tls_ca {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// The client driver's defaults, trusting the server's CA when it
    /// serves TLS.
    pub fn channel_options(&self) -> ChannelOptions {
        ChannelOptions {
            tls_ca: self.tls_ca.clone().map(String::into_bytes),
            ..ChannelOptions::default()
        }
    }

    /// This server as the client driver's only endpoint.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::tcp(&[self.url()], &self.channel_options()).expect("a valid endpoint")
    }

    /// Runs a session of `count` numbers with the client's default
    /// configuration (see [`super::client`]) to its end.
    pub async fn session(&self, count: u32, seed: u64) -> Outcome {
        let client = super::client(ClientConfig::default(), count, seed);
        super::run_client(&self.endpoints(), client).await
    }

    /// Starts a well-behaved session of `count` numbers in the background
    /// (the real client on its own connection) and waits until the server
    /// attached it.
    pub async fn good(&self, count: u32, seed: u64) -> Good {
        let (attached_tx, mut attached_rx) = watch::channel(false);
        let client = super::client(ClientConfig::default(), count, seed);
        let id = client.client_id();
        let endpoints = self.endpoints();
        let task = tokio::spawn(async move {
            run(
                &endpoints,
                &DriverOptions::default(),
                client,
                move |e, _| {
                    if matches!(e, Event::Attached { .. }) {
                        let _ = attached_tx.send(true);
                    }
                },
            )
            .await
        });
        timeout(BOUND, attached_rx.wait_for(|a| *a))
            .await
            .expect("the well-behaved session attaches within 5 s")
            .expect("the well-behaved session attaches before finishing");
        Good { count, id, task }
    }

    /// A new HTTP/2 connection to the (plaintext) server, bounded.
    pub async fn channel(&self) -> Channel {
        self.channel_with(|e| e).await
    }

    /// A new HTTP/2 connection, its endpoint tuned by `tune` first.
    pub async fn channel_with(&self, tune: impl FnOnce(Endpoint) -> Endpoint) -> Channel {
        assert!(self.tls_ca.is_none(), "channel() speaks plaintext only");
        let endpoint = Endpoint::from_shared(self.url())
            .expect("a valid URL")
            .connect_timeout(BOUND);
        connect(tune(endpoint)).await
    }

    /// Waits until at most `n` streams are attached, failing the test if
    /// more still are after `within`.
    pub async fn attached_at_most(&self, n: u64, within: Duration) {
        let waited = timeout(within, async {
            while self.station.attached_streams() > n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "still {} streams attached after {within:?} (expected at most {n})",
            self.station.attached_streams()
        );
    }

    /// Graceful shutdown, bounded; then checks that the server ended
    /// without error and that nothing on this test's thread panicked.
    pub async fn stop(self) {
        let served = timeout(BOUND, self.shut_down())
            .await
            .expect("the server shuts down within 5 s");
        served.expect("serve ended without error");
        assert_no_panics();
    }

    /// Graceful shutdown, waited for however long it takes: what serving
    /// ended with.
    pub async fn shut_down(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        self.task.await.expect("the serve task did not panic")
    }
}

/// Connects to `endpoint`, bounded.
pub async fn connect(endpoint: Endpoint) -> Channel {
    timeout(BOUND, endpoint.connect())
        .await
        .expect("connects in time")
        .expect("connects")
}

/// A well-behaved session running in the background, for tests that check
/// that what else they do disturbs it in no way.
pub struct Good {
    pub count: u32,
    pub id: ClientId,
    task: JoinHandle<Outcome>,
}

impl Good {
    /// Asserts the session completed, verified, undisturbed.
    pub async fn verified(self) -> Outcome {
        let outcome = timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the well-behaved session finishes in time")
            .expect("the well-behaved session did not panic");
        assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
        assert_eq!(outcome.received, self.count, "{outcome:?}");
        assert_eq!(outcome.server_checksum, Some(outcome.client_checksum));
        assert_eq!(
            outcome.reconnects, 0,
            "the well-behaved session was disturbed: {outcome:?}"
        );
        outcome
    }
}

/// Serves a hand-written `NumbersStation` (a fake server, for tests of the
/// client) on 127.0.0.1 until the test's runtime ends; its address.
pub async fn serve_fake<T: NumbersStation>(service: T) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(NumbersStationServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("the fake server runs");
    });
    addr
}

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1,
/// in PEM: for TLS servers, ours and Redis's.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// A server's TLS configuration with this certificate.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

// Panic detection. A test on a current-thread runtime runs every server
// task on its own (named) thread, so a panic hook that records thread names
// tells the test whether anything of its own panicked, even inside a
// spawned task whose panic tokio would otherwise swallow. (On a
// multi-threaded runtime, only the test's own thread is checked.)

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the panic hook (once per test binary); the default hook still
/// runs.
pub fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            PANICS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{thread}: {info}"));
            default(info);
        }));
    });
}

/// Asserts that nothing panicked on this thread since the hook was
/// installed.
pub fn assert_no_panics() {
    let me = std::thread::current().name().unwrap_or("?").to_string();
    let panics = PANICS.lock().unwrap_or_else(|p| p.into_inner());
    let mine: Vec<_> = panics
        .iter()
        .filter(|p| p.starts_with(&format!("{me}: ")))
        .collect();
    assert!(mine.is_empty(), "something panicked: {mine:#?}");
}
