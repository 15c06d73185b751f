//! Admission under a slow store, over a real loopback server: while the
//! store is slow, new sessions are refused at the door (OVERLOADED, with
//! pushback, and no store work), the sessions already admitted keep going
//! and complete, and once the store is fast again the door opens.
//!
//! The server binds 127.0.0.1 on an OS-picked port; every wait is bounded.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::client::{Config as ClientConfig, Verdict};
use station_core::server::{Config as SessionConfig, StoreOp, StoreReply};
use station_core::{ClientId, Reason};
use station_net::client::Endpoints;
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{ClientMessage, Open, Resume};
use station_net::status::PUSHBACK_KEY;
use station_net::store::{MemoryStore, SessionStore, StoreError};
use station_net::ServerConfig;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

mod common;

use common::TestServer;

const STEP: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(20);

/// The memory store behind an adjustable delay (never answering at once,
/// as a networked store never does), and as much again for loads,
/// counting the creates it runs.
#[derive(Clone, Default)]
struct Delayed {
    inner: MemoryStore,
    delay_ms: Arc<AtomicU64>,
    load_delay_ms: Arc<AtomicU64>,
    creates: Arc<AtomicU32>,
}

impl SessionStore for Delayed {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        let mut delay_ms = self.delay_ms.load(Ordering::Relaxed);
        match op {
            StoreOp::Create { .. } => drop(self.creates.fetch_add(1, Ordering::Relaxed)),
            StoreOp::Load(_) => delay_ms += self.load_delay_ms.load(Ordering::Relaxed),
            _ => {}
        }
        let delay = Duration::from_millis(delay_ms);
        tokio::time::sleep(delay).await;
        self.inner.execute(op).await
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.inner.live_sessions().await
    }

    fn kind(&self) -> &'static str {
        "delayed"
    }
}

async fn start(store: Delayed) -> TestServer<Delayed> {
    let cfg = ServerConfig {
        // A lease of a sixth of the TTL: 1 s, so renewals feed the gate.
        session: SessionConfig::new(INTERVAL, Duration::from_secs(6)),
        store_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    TestServer::with_store(cfg, store).await
}

/// A session of `count` numbers run to its end on a task of its own.
fn session(endpoints: Endpoints, count: u32, seed: u64) -> tokio::task::JoinHandle<(Verdict, u32)> {
    tokio::spawn(async move {
        let client = common::client(ClientConfig::default(), count, seed);
        let outcome = common::run_client(&endpoints, client).await;
        (outcome.verdict, outcome.reconnects)
    })
}

/// One `Open` by hand: the status it ends with, or `Ok` once attached.
async fn try_open(server: &TestServer<Delayed>, n: u8) -> Result<(), tonic::Status> {
    let mut client = NumbersStationClient::new(server.channel().await);
    let (tx, rx) = mpsc::channel(2);
    tx.send(ClientMessage {
        kind: Some(Kind::Open(Open {
            client_id: ClientId::from_random_bytes([n; 16]).to_string(),
            count: 1000,
            open_nonce: vec![n; 16],
        })),
    })
    .await
    .unwrap();
    let mut inbound = timeout(STEP, client.stream(ReceiverStream::new(rx)))
        .await
        .expect("bounded")?
        .into_inner();
    match timeout(STEP * 2, inbound.message())
        .await
        .expect("bounded")?
    {
        Some(m) if matches!(m.kind, Some(ServerKind::Attached(_))) => Ok(()),
        other => panic!("neither attached nor refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_closes_the_door_to_new_sessions_not_to_admitted_ones() {
    let store = Delayed::default();
    let (delay, creates) = (store.delay_ms.clone(), store.creates.clone());
    let server = start(store).await;
    let station = &server.station;
    // Admitted while the store is fast: 20 sessions of 6 s.
    let admitted: Vec<_> = (0..20)
        .map(|i| session(server.endpoints(), 300, 100 + i))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The store slows to 700 ms an operation: past a quarter of the store
    // timeout, well inside the lease. Wait for the gate to see a window.
    delay.store(700, Ordering::Relaxed);
    let deadline = Instant::now() + STEP;
    while station
        .admission()
        .admits(tokio::time::Instant::now().into_std())
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the gate never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = creates.load(Ordering::Relaxed);
    let refused = try_open(&server, 1).await.expect_err("the door is closed");
    common::assert_rejected(
        "open while the store is slow",
        &refused,
        Code::ResourceExhausted,
        Reason::Overloaded,
        &["session store"],
    );
    assert!(refused.metadata().get(PUSHBACK_KEY).is_some(), "pushback");
    assert_eq!(creates.load(Ordering::Relaxed), before, "no store work");
    // The store recovers; the door opens again within a few windows.
    delay.store(0, Ordering::Relaxed);
    let deadline = Instant::now() + STEP * 2;
    while try_open(&server, 2).await.is_err() {
        assert!(Instant::now() < deadline, "the door never opened again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in admitted {
        let (verdict, reconnects) = timeout(STEP * 4, task).await.expect("bounded").unwrap();
        assert_eq!((verdict, reconnects), (Verdict::Verified, 0));
    }
}

/// A resume whose load is slower than the store timeout is waited for
/// until the attach deadline, not failed: failing it would send the client
/// back with another resume, costing the slow store more. A slower one
/// fails at that deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_waits_for_a_slow_load_within_its_attach_deadline() {
    let store = Delayed::default();
    let load_delay = store.load_delay_ms.clone();
    let server = start(store).await;
    let mut client = NumbersStationClient::new(server.channel().await);
    let id = ClientId::from_random_bytes([9; 16]).to_string();

    // Open, take `Attached` and go: the session is released.
    let (tx, rx) = mpsc::channel(2);
    let open = Kind::Open(Open {
        client_id: id.clone(),
        count: 1000,
        open_nonce: vec![9; 16],
    });
    tx.send(ClientMessage { kind: Some(open) }).await.unwrap();
    let mut inbound = timeout(STEP, client.stream(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let token = match timeout(STEP, inbound.message()).await.unwrap() {
        Ok(Some(m)) => match m.kind {
            Some(ServerKind::Attached(a)) => a.resume_token,
            other => panic!("not attached: {other:?}"),
        },
        other => panic!("not attached: {other:?}"),
    };
    drop((tx, inbound));

    // Loads now take 3 s, past the 2 s store timeout but inside the 4 s
    // attach deadline.
    load_delay.store(3000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (tx, rx) = mpsc::channel(2);
    let resume = Kind::Resume(Resume {
        client_id: id.clone(),
        resume_token: token,
        next_index: 0,
    });
    tx.send(ClientMessage { kind: Some(resume) }).await.unwrap();
    let asked = Instant::now();
    let mut inbound = timeout(STEP, client.stream(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let token = match timeout(STEP, inbound.message()).await.expect("bounded") {
        Ok(Some(m)) => match m.kind {
            Some(ServerKind::Attached(a)) => a.resume_token,
            other => panic!("the resume did not attach: {other:?}"),
        },
        other => panic!("the resume did not attach: {other:?}"),
    };
    assert!(
        asked.elapsed() >= Duration::from_millis(2900),
        "attached after {:?}: the load was not slow",
        asked.elapsed()
    );
    drop((tx, inbound));

    // And no longer: a load of 6 s fails at the 4 s deadline, before the
    // client's own 5 s attach timeout would drop the stream unanswered.
    load_delay.store(6000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (tx, rx) = mpsc::channel(2);
    let resume = Kind::Resume(Resume {
        client_id: id,
        resume_token: token,
        next_index: 0,
    });
    tx.send(ClientMessage { kind: Some(resume) }).await.unwrap();
    let asked = Instant::now();
    // Bounds well past the 6 s load: a server that waited it out shows as
    // a late failure below, not as a timeout here.
    let status = match timeout(STEP * 2, client.stream(ReceiverStream::new(rx)))
        .await
        .expect("bounded")
    {
        Err(status) => status,
        Ok(response) => match timeout(STEP * 2, response.into_inner().message())
            .await
            .expect("bounded")
        {
            Err(status) => status,
            other => panic!("a 6 s load did not fail: {other:?}"),
        },
    };
    let took = asked.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Up to 1.5 s late for a loaded machine, still short of the load's 6 s.
    assert!(
        (Duration::from_millis(3800)..Duration::from_millis(5500)).contains(&took),
        "failed after {took:?}, not at the 4 s attach deadline: {status:?}"
    );
    drop(tx);
}
