//! A client that stops reading behind a tiny HTTP/2 window does not stop its
//! stream's clock (ARCHITECTURE.md §4, "A reader that stops").
//!
//! hyper polls a response body only while the client's window lets it
//! send, so these clients grant a 64-byte stream window, take `Attached`,
//! and then read nothing. The server must still renew the session's lease,
//! end the stream by the silence rule within its stated bound, and end it
//! at shutdown; the client hears the end when it reads again. Every server
//! binds 127.0.0.1 on an OS-picked port; every wait is bounded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::server::{Config as SessionConfig, StoreOp, StoreReply};
use station_core::{ClientId, Reason};
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{ClientMessage, Open, ServerMessage};
use station_net::store::{MemoryStore, SessionStore, StoreError};
use station_net::{ServerConfig, Station};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

mod common;

use common::TestServer;

const INTERVAL: Duration = Duration::from_millis(10);
/// The session's silence timeout at this interval: three intervals and 2 s.
const SILENCE: Duration = Duration::from_millis(2030);
/// What the docs allow beyond the silence timeout for a stalled stream:
/// the sweeper's grace and one sweep (`station_net`'s `stall` module).
const STALL_SLACK: Duration = Duration::from_millis(750);
/// Room for a busy test machine (a shared CI machine stalls a test for
/// a second at times).
const MARGIN: Duration = Duration::from_millis(2000);
/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

/// The memory store, counting the `Update`s (lease renewals, here) it is
/// asked for.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryStore,
    updates: Arc<AtomicU32>,
}

impl Counting {
    fn count(&self, op: &StoreOp) {
        if matches!(op, StoreOp::Update { .. }) {
            self.updates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SessionStore for Counting {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        self.count(&op);
        self.inner.execute(op).await
    }

    fn execute_now(&self, op: StoreOp) -> Result<StoreReply, StoreOp> {
        self.count(&op);
        self.inner.execute_now(op)
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.inner.live_sessions().await
    }

    fn kind(&self) -> &'static str {
        "counting"
    }
}

async fn server() -> TestServer<Counting> {
    let cfg = ServerConfig {
        // A 6 s TTL makes the lease 1 s, so renewals fall within the
        // silence timeout.
        session: SessionConfig::new(INTERVAL, Duration::from_secs(6)),
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    assert_eq!(cfg.session.silence_timeout, SILENCE);
    TestServer::with_store(cfg, Counting::default()).await
}

/// Opens a session over a connection that grants the server a 64-byte
/// stream window, reads `Attached`, and then reads nothing more. Returns
/// the response stream (for reading later), the sender (so the request
/// stays open), and when the client last spoke.
async fn stalled_reader(
    server: &TestServer<Counting>,
) -> (
    Streaming<ServerMessage>,
    mpsc::Sender<ClientMessage>,
    Instant,
) {
    let channel = server
        .channel_with(|e| e.initial_stream_window_size(Some(64)))
        .await;
    let mut client = NumbersStationClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(ClientMessage {
        kind: Some(Kind::Open(Open {
            client_id: ClientId::from_random_bytes([7; 16]).to_string(),
            count: 1000,
            open_nonce: vec![1; 16],
        })),
    })
    .await
    .unwrap();
    let spoke = Instant::now();
    let mut rx = timeout(STEP, client.stream(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let first = timeout(STEP, rx.message()).await.unwrap().unwrap();
    assert!(
        matches!(first.and_then(|m| m.kind), Some(ServerKind::Attached(_))),
        "the stream attaches"
    );
    (rx, tx, spoke)
}

/// Waits (bounded) until the server has no attached stream; when.
async fn detached(station: &Station<Counting>, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if station.attached_streams() == 0 {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Reads what the server queued, then its end: the numbers in order from
/// 0, and the status.
async fn read_to_end(rx: &mut Streaming<ServerMessage>) -> (u32, tonic::Status) {
    let mut next = 0;
    loop {
        match timeout(STEP, rx.message()).await.expect("bounded") {
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Number(n)),
            })) => {
                assert_eq!(n.index, next, "numbers in order");
                next += 1;
            }
            Ok(other) => panic!("after {next} numbers: {other:?}"),
            Err(status) => return (next, status),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_ended_by_the_silence_rule_and_renewed_until_then() {
    let server = server().await;
    let (mut rx, _tx, spoke) = stalled_reader(&server).await;

    // While the client reads nothing, its session's lease is renewed: a
    // lease is 1 s, so the first 1.8 s (before the silence timeout) hold at
    // least one renewal.
    let renewed_from = server.station.store().updates.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1800).saturating_sub(spoke.elapsed())).await;
    let renewals = server.station.store().updates.load(Ordering::Relaxed) - renewed_from;
    assert!(
        renewals >= 1,
        "{renewals} lease renewals in the 1.8 s a stalled reader held its stream"
    );
    // Judged only if the test was not held up past the silence timeout
    // (the bound below checks the same from the other side).
    let attached = server.station.attached_streams();
    if spoke.elapsed() < SILENCE {
        assert_eq!(attached, 1, "not ended before the silence timeout");
    }

    // The silence rule ends it within its bound, though the client still
    // reads nothing: the stream is counted, its place freed.
    let bound = SILENCE + STALL_SLACK + MARGIN;
    let ended = detached(&server.station, bound + STEP)
        .await
        .expect("the stalled stream ends");
    let took = ended - spoke;
    assert!(
        took >= SILENCE && took <= bound,
        "ended {took:?} after the client last spoke; the bound is {SILENCE:?} to {bound:?}"
    );
    let stats = server.station.stats().await;
    assert_eq!(
        (stats.streams_rejected, stats.live_sessions),
        (1, Some(1)),
        "one stream ended, its session released, not lost: {stats:?}"
    );

    // The client hears it when it reads: the numbers queued, then the
    // silence status.
    let (numbers, status) = read_to_end(&mut rx).await;
    assert!(numbers > 0, "numbers were queued for the client");
    common::assert_rejected(
        "stalled reader",
        &status,
        Code::DeadlineExceeded,
        Reason::ClientSilent,
        &["silent"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_still_hears_shutdown() {
    let server = server().await;
    let (mut rx, _tx, spoke) = stalled_reader(&server).await;
    // Long enough for hyper to be waiting on the window.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let began = Instant::now();
    server.station.begin_shutdown();
    timeout(STEP, server.station.drained())
        .await
        .expect("the stalled stream ends at shutdown");
    // Shutdown ended it, not silence (whose end would say SHUTTING_DOWN
    // too, once shutdown had begun): before the silence timeout. Judged
    // when the shutdown began early enough for its bound to end before it.
    let drained = spoke.elapsed();
    if began.duration_since(spoke) + STALL_SLACK < SILENCE {
        assert!(
            drained < SILENCE,
            "drained {drained:?} after the client last spoke, not before its silence timeout"
        );
    }
    assert!(
        began.elapsed() <= STALL_SLACK + MARGIN,
        "shutdown took {:?} to reach a stalled stream",
        began.elapsed()
    );
    let (_, status) = read_to_end(&mut rx).await;
    common::assert_rejected(
        "stalled reader at shutdown",
        &status,
        Code::Unavailable,
        Reason::ShuttingDown,
        &[],
    );
}
