//! The real service and client driver over loopback TCP.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Verdict};
use station_core::server::Config as SessionConfig;
use station_core::ClientId;
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints};
use station_net::store::MemoryStore;
use station_net::{serve_tcp, ServerConfig, Station};
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    station: Station<MemoryStore>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(cfg: ServerConfig) -> Running {
    let station = Station::new(cfg, MemoryStore::default());
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let s = station.clone();
    let task = tokio::spawn(async move {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        serve_tcp(s, bind, |a| addr_tx.send(a).unwrap(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let addr = addr_rx.await.unwrap();
    Running {
        addr,
        station,
        stop: Some(stop),
        task,
    }
}

fn fast(interval_ms: u64) -> ServerConfig {
    ServerConfig {
        session: SessionConfig::new(Duration::from_millis(interval_ms), Duration::from_secs(5)),
        ..ServerConfig::default()
    }
}

async fn client(addr: SocketAddr, count: u32, seed: u64) -> station_core::client::Outcome {
    let endpoints = Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()).unwrap();
    let id = ClientId::from_random_bytes(seed.to_le_bytes().repeat(2).try_into().unwrap());
    let c = Client::new(Instant::now(), ClientConfig::default(), id, count, seed).unwrap();
    run(&endpoints, &DriverOptions::default(), c, |_, _| {}).await
}

#[tokio::test]
async fn completes_and_leaves_no_session() {
    let server = start(fast(5)).await;
    let outcome = client(server.addr, 40, 1).await;
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
    assert_eq!(outcome.received, 40);
    assert_eq!(outcome.server_checksum, Some(outcome.client_checksum));
    let stats = server.station.stats().await;
    assert_eq!(stats.live_sessions, Some(0), "{stats:?}");
    assert_eq!(stats.sessions_completed, 1);
    server.stop.unwrap().send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test]
async fn completes_through_injected_faults() {
    let server = start(ServerConfig {
        fail_every: NonZeroU64::new(3),
        ..fast(2)
    })
    .await;
    let outcome = client(server.addr, 30, 2).await;
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
    assert!(outcome.reconnects >= 9, "{outcome:?}");
}

/// Lists the services a server names through reflection, in one version of
/// the protocol (`v1` or `v1alpha`: the same messages, separate packages).
macro_rules! list_services {
    ($version:ident, $addr:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", $addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match replies.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        }
    }};
}

/// Regression: older grpcurl, grpcui, Postman and Evans ask for reflection
/// v1alpha, and got UNIMPLEMENTED. Both versions list the service.
#[tokio::test]
async fn reflection_answers_in_v1_and_v1alpha() {
    let server = start(fast(5)).await;
    for services in [
        list_services!(v1, server.addr),
        list_services!(v1alpha, server.addr),
    ] {
        assert!(
            services
                .iter()
                .any(|s| s == "numbersstation.v1.NumbersStation"),
            "{services:?}"
        );
        assert!(
            services.iter().any(|s| s == "grpc.health.v1.Health"),
            "{services:?}"
        );
    }
}
