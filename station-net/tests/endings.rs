//! Every ending of a stream told and counted as it happened, over a real
//! loopback server whose store answers deletes slowly or not at all (as a
//! Redis does: it never answers at once, unlike the memory store).
//!
//! Each test drives streams by hand with a raw tonic client, or runs the
//! real client driver, then compares what the client heard with what the
//! server counted (`Stats`). Every server binds 127.0.0.1 on an OS-picked
//! port; every wait is bounded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::client::{Config as ClientConfig, Verdict};
use station_core::server::{Config as SessionConfig, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::client::Endpoints;
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{Ack, ClientMessage, Open, ServerMessage, StatsReply};
use station_net::store::{MemoryStore, SessionStore, StoreError};
use station_net::ServerConfig;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

mod common;

use common::TestServer;

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(20);

/// The memory store, but deletes never answer at once: each waits
/// `delay`, and the first `failures` of them fail after that wait.
#[derive(Clone)]
struct SlowDeletes {
    inner: MemoryStore,
    delay: Duration,
    failures: Arc<AtomicU32>,
    deletes: Arc<AtomicU32>,
}

impl SlowDeletes {
    fn new(delay: Duration, failures: u32) -> Self {
        SlowDeletes {
            inner: MemoryStore::default(),
            delay,
            failures: Arc::new(AtomicU32::new(failures)),
            deletes: Arc::new(AtomicU32::new(0)),
        }
    }
}

impl SessionStore for SlowDeletes {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        if matches!(op, StoreOp::Delete { .. }) {
            self.deletes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.delay).await;
            let fail = self
                .failures
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return StoreReply::Unavailable("injected delete failure".into());
            }
        }
        self.inner.execute(op).await
    }

    fn execute_now(&self, op: StoreOp) -> Result<StoreReply, StoreOp> {
        match op {
            StoreOp::Delete { .. } => Err(op),
            op => self.inner.execute_now(op),
        }
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.inner.live_sessions().await
    }

    fn kind(&self) -> &'static str {
        "slow-deletes"
    }
}

async fn start(store: SlowDeletes) -> TestServer<SlowDeletes> {
    let cfg = ServerConfig {
        session: SessionConfig::new(INTERVAL, Duration::from_secs(4)),
        shutdown_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    TestServer::with_store(cfg, store).await
}

/// Waits (bounded) until the store has begun a delete: the final
/// acknowledgement has reached the server, however loaded the machine.
async fn until_a_delete_began(deletes: &AtomicU32) {
    let deadline = Instant::now() + STEP;
    while deletes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no delete began within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Once settled: one session completed, nothing rejected, nothing left in
/// the store.
async fn assert_one_completion(server: &TestServer<SlowDeletes>) {
    let stats = settled(server).await;
    assert_eq!(
        (
            stats.sessions_completed,
            stats.streams_rejected,
            stats.live_sessions
        ),
        (1, 0, Some(0)),
        "{stats:?}"
    );
}

/// The stats once every stream has ended and no store work is left.
async fn settled(server: &TestServer<SlowDeletes>) -> StatsReply {
    let deadline = Instant::now() + STEP;
    loop {
        let stats = server.station.stats().await;
        if stats.attached_streams == 0 && stats.live_sessions == Some(0)
            || Instant::now() > deadline
        {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One stream by hand: what it sends, and what it receives.
struct Hand {
    tx: Option<mpsc::Sender<ClientMessage>>,
    rx: Streaming<ServerMessage>,
}

impl Hand {
    async fn open(
        server: &TestServer<SlowDeletes>,
        id: ClientId,
        count: u32,
        nonce: [u8; 16],
    ) -> Hand {
        let mut client = NumbersStationClient::new(server.channel().await);
        let (tx, rx) = mpsc::channel(16);
        tx.send(ClientMessage {
            kind: Some(Kind::Open(Open {
                client_id: id.to_string(),
                count,
                open_nonce: nonce.to_vec(),
            })),
        })
        .await
        .unwrap();
        let rx = timeout(STEP, client.stream(ReceiverStream::new(rx)))
            .await
            .unwrap()
            .unwrap()
            .into_inner();
        Hand { tx: Some(tx), rx }
    }

    async fn next(&mut self) -> Result<Option<ServerKind>, tonic::Status> {
        let msg = timeout(STEP, self.rx.message()).await.expect("bounded");
        msg.map(|m| m.map(|m| m.kind.expect("every server message has a kind")))
    }

    /// Reads `Attached` and every number, acknowledging each.
    async fn take_all(&mut self, count: u32) {
        assert!(matches!(
            self.next().await,
            Ok(Some(ServerKind::Attached(_)))
        ));
        for i in 0..count {
            match self.next().await {
                Ok(Some(ServerKind::Number(n))) => assert_eq!(n.index, i),
                other => panic!("number {i}: {other:?}"),
            }
            self.ack(i + 1).await;
        }
    }

    async fn ack(&mut self, next_index: u32) {
        let ack = ClientMessage {
            kind: Some(Kind::Ack(Ack { next_index })),
        };
        self.tx.as_ref().unwrap().send(ack).await.unwrap();
    }
}

fn id(n: u8) -> ClientId {
    ClientId::from_random_bytes([n; 16])
}

/// A session of `count` numbers run to its end: its verdict.
async fn verified_client(endpoints: Endpoints, count: u32, seed: u64) -> Verdict {
    let client = common::client(ClientConfig::default(), count, seed);
    common::run_client(&endpoints, client).await.verdict
}

/// A client half-closes after its final ack, while the delete is still
/// in flight: every such session is a completion, none a rejection.
#[tokio::test]
async fn a_half_close_during_a_slow_delete_counts_as_a_completion() {
    let server = start(SlowDeletes::new(Duration::from_millis(100), 0)).await;
    let clients = (0..5u64).map(|seed| verified_client(server.endpoints(), 3, seed + 1));
    for verdict in futures_join_all(clients).await {
        assert_eq!(verdict, Verdict::Verified);
    }
    let stats = settled(&server).await;
    assert_eq!(
        (
            stats.sessions_opened,
            stats.sessions_completed,
            stats.streams_rejected
        ),
        (5, 5, 0),
        "{stats:?}"
    );
    assert_eq!(stats.live_sessions, Some(0), "{stats:?}");
}

/// A delete that fails is retried; the client that has everything hears
/// OK, not "store unavailable", and the record is gone.
#[tokio::test]
async fn a_failed_delete_is_retried_and_the_stream_ends_ok() {
    let store = SlowDeletes::new(Duration::from_millis(10), 1);
    let deletes = store.deletes.clone();
    let server = start(store).await;
    let mut hand = Hand::open(&server, id(1), 2, [7; 16]).await;
    hand.take_all(2).await;
    let end = hand.next().await;
    assert!(matches!(end, Ok(None)), "ended OK: {end:?}");
    assert_one_completion(&server).await;
    assert_eq!(deletes.load(Ordering::Relaxed), 2, "one retry");
}

/// Shutdown while a completed session's delete is in flight: the client
/// that acknowledged everything hears OK once the delete is done, not
/// SHUTTING_DOWN.
#[tokio::test]
async fn shutdown_during_a_delete_waits_for_it_and_ends_ok() {
    let store = SlowDeletes::new(Duration::from_millis(300), 0);
    let deletes = store.deletes.clone();
    let server = start(store).await;
    let mut hand = Hand::open(&server, id(2), 1, [8; 16]).await;
    hand.take_all(1).await;
    until_a_delete_began(&deletes).await;
    server.station.begin_shutdown();
    let end = hand.next().await;
    assert!(matches!(end, Ok(None)), "ended OK: {end:?}");
    assert_one_completion(&server).await;
}

/// A client that resets its stream right after its final ack: the delete
/// still runs, and the session still counts as completed.
#[tokio::test]
async fn a_reset_during_a_delete_still_deletes_and_counts_a_completion() {
    let store = SlowDeletes::new(Duration::from_millis(200), 1);
    let deletes = store.deletes.clone();
    let server = start(store).await;
    let mut hand = Hand::open(&server, id(3), 1, [9; 16]).await;
    hand.take_all(1).await;
    until_a_delete_began(&deletes).await;
    drop(hand);
    assert_one_completion(&server).await;
}

/// An `Open` repeated with its nonce (its `Attached` was lost) re-attaches
/// the session: one session opened, re-attached once, completed once.
#[tokio::test]
async fn a_repeated_open_counts_one_session() {
    let server = start(SlowDeletes::new(Duration::ZERO, 0)).await;
    let mut first = Hand::open(&server, id(4), 2, [10; 16]).await;
    assert!(matches!(
        first.next().await,
        Ok(Some(ServerKind::Attached(_)))
    ));
    drop(first);
    let mut again = Hand::open(&server, id(4), 2, [10; 16]).await;
    again.take_all(2).await;
    assert!(matches!(again.next().await, Ok(None)));
    let stats = settled(&server).await;
    assert_eq!(
        (
            stats.sessions_opened,
            stats.sessions_resumed,
            stats.sessions_completed
        ),
        (1, 1, 1),
        "{stats:?}"
    );
}

/// Attached means attached: a stream that has sent nothing yet, or whose
/// first message was refused, is not counted.
#[tokio::test]
async fn only_attached_streams_are_counted_as_attached() {
    let server = start(SlowDeletes::new(Duration::ZERO, 0)).await;
    // Idle: the server answered the call's headers, nothing else yet.
    let mut client = NumbersStationClient::new(server.channel().await);
    let (idle_tx, idle_rx) = mpsc::channel::<ClientMessage>(1);
    let _idle = timeout(STEP, client.stream(ReceiverStream::new(idle_rx)))
        .await
        .unwrap()
        .unwrap();
    // Refused: a count of zero, and the stream still open on our side.
    let mut bad = Hand::open(&server, id(5), 0, [11; 16]).await;
    let refused = bad.next().await.expect_err("count 0 is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(server.station.stats().await.attached_streams, 0);
    let mut good = Hand::open(&server, id(6), 50, [12; 16]).await;
    assert!(matches!(
        good.next().await,
        Ok(Some(ServerKind::Attached(_)))
    ));
    assert_eq!(server.station.stats().await.attached_streams, 1);
    drop(idle_tx);
}

/// `futures::future::join_all` without the dependency: the clients run
/// concurrently as tasks.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(timeout(STEP * 2, task).await.expect("bounded").unwrap());
    }
    out
}
