//! Health that leads and a drain on shutdown, over a real loopback server:
//! health is NOT_SERVING while the store cannot be reached and SERVING
//! again once it can; when shutdown begins, health (the service and `""`)
//! goes NOT_SERVING at once, new streams are refused SHUTTING_DOWN with
//! pushback, and attached streams keep going for a while before they end.
//!
//! The server binds 127.0.0.1 on an OS-picked port; every wait is bounded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::server::Config as SessionConfig;
use station_core::{ClientId, Reason};
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{Ack, ClientMessage, Open};
use station_net::status::PUSHBACK_KEY;
use station_net::ServerConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

mod common;

use common::{Switchable, TestServer};

const STEP: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(20);
const SERVICE: &str = "numbersstation.v1.NumbersStation";

async fn start(store: Switchable, drain_period: Duration) -> TestServer<Switchable> {
    let cfg = ServerConfig {
        session: SessionConfig::new(INTERVAL, Duration::from_secs(4)),
        drain_period,
        health_every: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    TestServer::with_store(cfg, store).await
}

async fn health(server: &TestServer<Switchable>, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let reply = timeout(
        STEP,
        client.check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .expect("bounded")
    .unwrap();
    reply.into_inner().status()
}

/// Polls both health statuses until they are `want` (bounded).
async fn wait_health(server: &TestServer<Switchable>, want: ServingStatus) {
    let deadline = Instant::now() + STEP;
    loop {
        let now = (health(server, "").await, health(server, SERVICE).await);
        if now == (want, want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health stayed {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_follows_the_store() {
    let store = Switchable::default();
    let down = store.down.clone();
    let server = start(store, Duration::ZERO).await;
    wait_health(&server, ServingStatus::Serving).await;
    down.store(true, Ordering::Relaxed);
    wait_health(&server, ServingStatus::NotServing).await;
    down.store(false, Ordering::Relaxed);
    wait_health(&server, ServingStatus::Serving).await;
}

/// One attached stream that acknowledges what it gets, until it ends:
/// how long after `began` it ended, with what, and how many numbers it
/// got meanwhile.
async fn drained_stream(
    mut client: NumbersStationClient<tonic::transport::Channel>,
    n: u8,
    attached: oneshot::Sender<()>,
    began: Arc<std::sync::OnceLock<Instant>>,
) -> (Duration, tonic::Status, u32) {
    let (tx, rx) = mpsc::channel(64);
    tx.send(open(n)).await.unwrap();
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        inbound.message().await.unwrap().and_then(|m| m.kind),
        Some(ServerKind::Attached(_))
    ));
    attached.send(()).unwrap();
    let mut after = 0;
    loop {
        match timeout(STEP, inbound.message()).await.expect("bounded") {
            Ok(Some(m)) => {
                if let Some(ServerKind::Number(n)) = m.kind {
                    after += u32::from(began.get().is_some());
                    let ack = Ack {
                        next_index: n.index + 1,
                    };
                    let _ = tx
                        .send(ClientMessage {
                            kind: Some(Kind::Ack(ack)),
                        })
                        .await;
                }
            }
            Ok(None) => panic!("ended OK while draining"),
            Err(status) => {
                let began = *began.get().expect("ended only after shutdown began");
                return (began.elapsed(), status, after);
            }
        }
    }
}

fn open(n: u8) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Open(Open {
            client_id: ClientId::from_random_bytes([n; 16]).to_string(),
            count: 1000,
            open_nonce: vec![n; 16],
        })),
    }
}

#[tokio::test]
async fn shutdown_leads_with_health_refuses_new_streams_and_drains_the_rest() {
    const STREAMS: u8 = 6;
    // Seconds, not a fraction of one: a loaded machine that stalls the
    // server for a moment must not bunch every end together.
    let drain = Duration::from_secs(3);
    let server = start(Switchable::default(), drain).await;
    let client = NumbersStationClient::new(server.channel().await);
    let began = Arc::new(std::sync::OnceLock::new());
    let mut streams = Vec::new();
    for n in 0..STREAMS {
        let (attached, is_attached) = oneshot::channel();
        streams.push(tokio::spawn(drained_stream(
            client.clone(),
            n + 1,
            attached,
            began.clone(),
        )));
        is_attached.await.unwrap();
    }

    began.set(Instant::now()).unwrap();
    server.station.begin_shutdown();
    wait_health(&server, ServingStatus::NotServing).await;
    // New streams are refused at once, with pushback.
    let (tx, rx) = mpsc::channel(1);
    tx.send(open(100)).await.unwrap();
    let refused = match client.clone().stream(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(r) => r.into_inner().message().await.expect_err("refused"),
    };
    common::assert_rejected(
        "open while draining",
        &refused,
        Code::Unavailable,
        Reason::ShuttingDown,
        &[],
    );
    assert!(refused.metadata().get(PUSHBACK_KEY).is_some(), "pushback");
    // Attached streams go on, each until its own moment in the period.
    let mut ends = Vec::new();
    for stream in streams {
        let (after, status, numbers) = stream.await.unwrap();
        common::assert_rejected(
            "drained",
            &status,
            Code::Unavailable,
            Reason::ShuttingDown,
            &[],
        );
        assert!(
            after <= drain + Duration::from_secs(2),
            "ended {after:?} in"
        );
        ends.push((after, numbers));
    }
    ends.sort();
    let (first, last) = (ends[0].0, ends[ends.len() - 1].0);
    assert!(
        last - first >= Duration::from_millis(300),
        "not spread over the drain period: {ends:?}"
    );
    assert!(
        ends.iter().any(|&(_, numbers)| numbers > 5),
        "no stream kept going: {ends:?}"
    );
}
