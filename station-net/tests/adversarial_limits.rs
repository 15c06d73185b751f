//! Adversarial clients against a real server over loopback, beyond what
//! the server allows: an oversized message, more streams on a connection
//! than `max_concurrent_streams`, more sessions than `max_streams`.
//!
//! Every test starts its own server ([`common::TestServer`], with
//! [`common::server_config`]: 20 ms interval, 4 s TTL), starts a
//! well-behaved session on it with the real client driver, then misbehaves
//! with a raw tonic client that sends hand-built `ClientMessage`s
//! ([`common::raw::Raw`]). Each case asserts the exact gRPC status and
//! `ErrorInfo` reason, that its message helps, that the well-behaved session
//! still completes `Verified` without a single reconnection, and that
//! nothing on the server's side panicked (tests run on current-thread
//! runtimes, so [`common::TestServer::stop`] sees every server task's
//! panics). Every wait is bounded.

use std::time::Duration;

use station_core::Reason;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::ServerMessage;
use station_net::ServerConfig;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod common;

use common::raw::{assert_ok, open, read_and_ack, resume, run_rows, Raw, Row};
use common::{error_reason, server_config, session_id, TestServer};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

// Row: an oversized message.

#[tokio::test]
async fn an_oversized_message_fails_the_stream_not_the_server() {
    let server = TestServer::start(server_config()).await;
    let good = server.good(100, 11).await;
    let channel = server.channel().await;
    let huge = "x".repeat(10_000);
    let mut codes = Vec::new();

    // As the first message.
    let mut raw = Raw::start(&channel, &[open(&huge, 10, &[1u8; 16])]).await;
    let (msgs, status) = raw.end().await;
    assert!(msgs.is_empty(), "{msgs:?}");
    codes.push(("first message", status));

    // As a later message on an attached stream.
    let mut raw = Raw::start(
        &channel,
        &[open(&session_id(110).to_string(), 50, &[1u8; 16])],
    )
    .await;
    raw.attached().await;
    assert!(raw.send(open(&huge, 10, &[1u8; 16])).await);
    let (_, status) = raw.end().await;
    codes.push(("later message", status));

    // The connection is still usable.
    let mut fine = Raw::start(
        &channel,
        &[open(&session_id(111).to_string(), 2, &[1u8; 16])],
    )
    .await;
    fine.attached().await;
    read_and_ack(&mut fine, 0, 2).await;
    assert_ok(&fine.end().await.1);

    for (what, status) in &codes {
        // tonic reports its decode limit as OUT_OF_RANGE; RESOURCE_EXHAUSTED
        // is what other gRPC stacks use. Either is fine, OK is not.
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "oversized {what}: expected OUT_OF_RANGE or RESOURCE_EXHAUSTED, got {:?}: {:?}",
            status.code(),
            status.message()
        );
        assert!(
            status.message().contains("1024"),
            "oversized {what}: message {:?} does not give the limit",
            status.message()
        );
        if status.code() == Code::ResourceExhausted {
            assert_eq!(error_reason(what, status), Reason::MessageTooLarge);
        }
    }
    good.verified().await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Row: more streams on one connection than the server allows.

#[tokio::test]
async fn more_streams_than_max_concurrent_streams_wait_or_are_refused() {
    const LIMIT: u32 = 4;
    const STREAMS: u64 = 8;
    let server = TestServer::start(ServerConfig {
        max_concurrent_streams: LIMIT,
        ..server_config()
    })
    .await;
    let good = server.good(100, 12).await;
    let channel = server.channel().await;
    // Round 1 opens all streams at once on a fresh connection: the client may
    // not have seen the server's SETTINGS yet. Round 2 reuses the connection.
    for round in 0..2u64 {
        let mut streams = JoinSet::new();
        for i in 0..STREAMS {
            let channel = channel.clone();
            let id = session_id(1000 * (round + 1) + i).to_string();
            streams.spawn(async move { short_session(&channel, &id).await });
        }
        let (max_attached, outcomes) = sample_until_done(&server, &mut streams).await;
        let completed = outcomes.iter().filter(|r| r.is_ok()).count();
        for r in &outcomes {
            if let Err(status) = r {
                // h2 REFUSED_STREAM: retryable, as it should be.
                assert_eq!(
                    status.code(),
                    Code::Unavailable,
                    "round {round}: an extra stream failed oddly: {status:?}"
                );
            }
        }
        assert!(
            completed >= LIMIT as usize,
            "round {round}: only {completed} completed: {outcomes:?}"
        );
        assert!(
            max_attached <= u64::from(LIMIT) + 1,
            "round {round}: {max_attached} streams attached at once \
             (limit {LIMIT} on one connection + the good one)"
        );
        eprintln!(
            "max_concurrent_streams {LIMIT}, round {round}: {completed}/{STREAMS} completed, \
             at most {max_attached} attached"
        );
    }
    good.verified().await;
    drop(channel);
    server.stop().await;
}

/// A complete five-number session on `channel`: `Err` if the stream was
/// refused or failed.
async fn short_session(channel: &Channel, id: &str) -> Result<(), Status> {
    let mut raw = Raw::start(channel, &[open(id, 5, &[12u8; 16])]).await;
    match raw.next().await {
        Ok(Some(ServerMessage {
            kind: Some(ServerKind::Attached(_)),
        })) => {}
        Err(status) => return Err(status),
        other => panic!("expected Attached or a refusal, got {other:?}"),
    }
    read_and_ack(&mut raw, 0, 5).await;
    let (rest, status) = raw.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    match status.code() {
        Code::Ok => Ok(()),
        _ => Err(status),
    }
}

/// Waits for every stream task (bounded), sampling the attached count.
async fn sample_until_done(
    server: &TestServer,
    streams: &mut JoinSet<Result<(), Status>>,
) -> (u64, Vec<Result<(), Status>>) {
    let mut max = 0;
    let mut outcomes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !streams.is_empty() {
        max = max.max(server.station.attached_streams());
        tokio::select! {
            joined = streams.join_next() => {
                let joined = joined.expect("not empty");
                outcomes.push(joined.expect("a stream task did not panic"));
            }
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            _ = tokio::time::sleep_until(deadline) => panic!("streams did not finish in 10 s"),
        }
    }
    (max, outcomes)
}

// ---------------------------------------------------------------------------
// Row: more sessions than `max_streams`.

#[tokio::test]
async fn sessions_beyond_max_streams_are_resource_exhausted() {
    let server = TestServer::start(ServerConfig {
        max_streams: 3,
        ..server_config()
    })
    .await;
    let good = server.good(100, 13).await;
    let channel = server.channel().await;
    let mut holders = Vec::new();
    for i in 0..2 {
        let mut raw = Raw::start(
            &channel,
            &[open(&session_id(130 + i).to_string(), 200, &[13u8; 16])],
        )
        .await;
        raw.attached().await;
        holders.push(raw);
    }
    assert_eq!(server.station.attached_streams(), 3);

    // A fourth stream, Open or Resume, is refused at once.
    let extra_id = session_id(139).to_string();
    let good_id = good.id.to_string();
    let full = |name, first| {
        Row::refused(
            name,
            vec![first],
            Code::ResourceExhausted,
            Reason::ServerFull,
            &["server is full"],
        )
    };
    let rows = [
        Row {
            says: vec!["server is full".into(), "3 sessions".into()],
            ..full("a fourth Open", open(&extra_id, 10, &[13u8; 16]))
        },
        full("a Resume", resume(&good_id, &[0u8; 16], 0)),
    ];
    run_rows(&channel, &rows).await;
    // A refusal never reaches a session.
    assert_eq!(server.station.stats().await.live_sessions, Some(3));

    // Once the holders leave, their slots are free again.
    drop(holders);
    server.attached_at_most(1, STEP).await;
    let mut later = Raw::start(&channel, &[open(&extra_id, 2, &[13u8; 16])]).await;
    later.attached().await;
    read_and_ack(&mut later, 0, 2).await;
    assert_ok(&later.end().await.1);
    good.verified().await;
    drop(channel);
    server.stop().await;
}
