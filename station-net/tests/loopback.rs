//! The real service and client driver over loopback TCP.

use std::num::NonZeroU64;
use std::time::Duration;

use station_core::client::Verdict;
use station_core::server::Config as SessionConfig;
use station_net::ServerConfig;

mod common;

use common::TestServer;

fn fast(interval_ms: u64) -> ServerConfig {
    ServerConfig {
        session: SessionConfig::new(Duration::from_millis(interval_ms), Duration::from_secs(5)),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn completes_and_leaves_no_session() {
    let server = TestServer::start(fast(5)).await;
    let outcome = server.session(40, 1).await;
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
    assert_eq!(outcome.received, 40);
    assert_eq!(outcome.server_checksum, Some(outcome.client_checksum));
    let stats = server.station.stats().await;
    assert_eq!(stats.live_sessions, Some(0), "{stats:?}");
    assert_eq!(stats.sessions_completed, 1);
    server.stop().await;
}

#[tokio::test]
async fn completes_through_injected_faults() {
    let server = TestServer::start(ServerConfig {
        fail_every: NonZeroU64::new(3),
        ..fast(2)
    })
    .await;
    let outcome = server.session(30, 2).await;
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
    assert!(outcome.reconnects >= 9, "{outcome:?}");
}

/// Lists the services a server names through reflection, in one version of
/// the protocol (`v1` or `v1alpha`: the same messages, separate packages).
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        let mut client = ServerReflectionClient::new($channel);
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
    let server = TestServer::start(fast(5)).await;
    for services in [
        list_services!(v1, server.channel().await),
        list_services!(v1alpha, server.channel().await),
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
