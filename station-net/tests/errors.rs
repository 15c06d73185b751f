//! The error contract over a real loopback server: every rejection carries
//! `google.rpc.ErrorInfo` with its reason and the service's domain, and
//! UNAVAILABLE and RESOURCE_EXHAUSTED say when to come back, in
//! `google.rpc.RetryInfo` and gRFC A6's `grpc-retry-pushback-ms`. (The
//! refusals of an overloaded server are `overload.rs`'s.)
//!
//! Every server binds 127.0.0.1 on an OS-picked port; every wait is bounded.

use std::time::Duration;

use station_core::server::Config as SessionConfig;
use station_core::Reason;
use station_net::proto::ServerMessage;
use station_net::status::PUSHBACK_KEY;
use station_net::ServerConfig;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic_types::StatusExt;

mod common;

use common::raw::{id, open, resume, Raw};
use common::{assert_reason, server_config, TestServer};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

#[tokio::test]
async fn rejections_carry_their_reason_over_the_wire() {
    let server = TestServer::start(server_config()).await;
    let ch = server.channel().await;
    let live = id(1);
    let mut owner = Raw::start(&ch, &[open(&live, 1000, &[1; 16])]).await;
    let token = owner.attached().await.resume_token;

    let mut wrong = token.clone();
    wrong[0] ^= 1;
    let cases = [
        (resume(&live, &wrong, 0), Reason::TokenMismatch),
        (resume(&id(2), &token, 0), Reason::SessionUnknown),
        (open(&live, 10, &[2; 16]), Reason::SessionExists),
        (open(&id(3), 0, &[1; 16]), Reason::BadRequest),
        (open("not-a-uuid", 10, &[1; 16]), Reason::BadRequest),
        (resume(&live, &token, 1001), Reason::BadRequest),
    ];
    for (first, reason) in cases {
        let status = Raw::start(&ch, &[first]).await.rejection().await;
        assert_eq!(assert_reason(&status, reason), None, "{reason}: no retry");
        assert!(status.metadata().get(PUSHBACK_KEY).is_none());
    }
    // A wrong token names the session, and nothing secret.
    let status = Raw::start(&ch, &[resume(&live, &wrong, 0)])
        .await
        .rejection()
        .await;
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(info.metadata.get("client_id"), Some(&live));
    assert_eq!(info.metadata.len(), 1);

    // Resuming takes the session over: the old stream ends TAKEN_OVER.
    let mut thief = Raw::start(&ch, &[resume(&live, &token, 0)]).await;
    thief.attached().await;
    let status = owner.rejection().await;
    assert_eq!(assert_reason(&status, Reason::TakenOver), None);
    drop(thief);
}

/// Not a `ClientMessage`: field 1 (`open`, a message) as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct Bogus {
    #[prost(uint32, tag = "1")]
    open: u32,
}

#[tokio::test]
async fn bytes_that_do_not_decode_are_a_bad_request() {
    let server = TestServer::start(server_config()).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    timeout(STEP, grpc.ready()).await.unwrap().unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/numbersstation.v1.NumbersStation/Stream",
    );
    let codec = tonic_prost::ProstCodec::<Bogus, ServerMessage>::default();
    let (tx, rx) = mpsc::channel(1);
    tx.send(Bogus { open: 7 }).await.unwrap();
    let request = tonic::Request::new(ReceiverStream::new(rx));
    let headers = timeout(STEP, grpc.streaming(request, path, codec))
        .await
        .unwrap()
        .map(|r| r.into_inner());
    let mut raw = Raw::answered(None, headers);
    let status = raw.rejection().await;
    assert_eq!(assert_reason(&status, Reason::BadRequest), None);
    assert!(status.message().contains("not a valid"), "{status:?}");
    drop(tx);
}

#[tokio::test]
async fn a_full_server_says_when_to_come_back() {
    let retry_after = Duration::from_millis(400);
    let server = TestServer::start(ServerConfig {
        max_streams: 1,
        retry_after,
        ..server_config()
    })
    .await;
    let ch = server.channel().await;
    let mut first = Raw::start(&ch, &[open(&id(1), 1000, &[1; 16])]).await;
    let token = first.attached().await.resume_token;
    for (i, msg) in [open(&id(2), 10, &[1; 16]), resume(&id(1), &token, 0)]
        .into_iter()
        .enumerate()
    {
        let status = Raw::start(&ch, &[msg]).await.rejection().await;
        let delay = assert_reason(&status, Reason::ServerFull).expect("RetryInfo");
        // --retry-after plus up to half of it, so refused clients spread out.
        assert!(
            delay >= retry_after && delay < retry_after * 3 / 2,
            "{i}: {delay:?}"
        );
        assert!(status.message().contains("full"), "{status:?}");
    }
}

#[tokio::test]
async fn an_offline_server_tells_the_time_left() {
    let offline = Duration::from_secs(5);
    let server = TestServer::start(ServerConfig {
        fail_every: Some(1.try_into().unwrap()),
        go_offline_for: offline,
        ..server_config()
    })
    .await;
    let ch = server.channel().await;
    // The first number fails and takes the server offline for 5 s.
    let mut raw = Raw::start(&ch, &[open(&id(1), 10, &[1; 16])]).await;
    raw.attached().await;
    let status = raw.rejection().await;
    let delay = assert_reason(&status, Reason::InjectedFault).expect("RetryInfo");
    assert!(
        delay > offline - Duration::from_secs(1) && delay <= offline,
        "{delay:?}"
    );
    // A new stream meanwhile is told the time left, not the whole outage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Raw::start(&ch, &[open(&id(2), 10, &[1; 16])])
        .await
        .rejection()
        .await;
    let left = assert_reason(&status, Reason::InjectedFault).expect("RetryInfo");
    assert!(
        left < delay && left > offline - Duration::from_secs(2),
        "{left:?} after {delay:?}"
    );
}

#[tokio::test]
async fn shutting_down_spreads_resumes_over_one_interval() {
    let interval = Duration::from_millis(500);
    let server = TestServer::start(ServerConfig {
        session: SessionConfig::new(interval, Duration::from_secs(4)),
        ..server_config()
    })
    .await;
    let ch = server.channel().await;
    let mut raw = Raw::start(&ch, &[open(&id(1), 100, &[1; 16])]).await;
    raw.attached().await;
    server.station.begin_shutdown();
    let status = raw.rejection().await;
    let delay = assert_reason(&status, Reason::ShuttingDown).expect("RetryInfo");
    assert!(delay < interval, "{delay:?}");
}
