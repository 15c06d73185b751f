//! A connection whose clients' acks pile up unread is not closed for it
//! (ARCHITECTURE.md §2, "Shared connections under overload"), and neither
//! is one whose client leaves its numbers unread.
//!
//! h2 counts the small DATA frames it holds unread on a connection and
//! closes the connection (GOAWAY, ENHANCE_YOUR_CALM) when they cost more
//! than half its receive window; hyper reads a stream's frames only while
//! it may send on the stream. So a client too busy to read its numbers
//! leaves its acks unread on the server as well, and at hyper's default
//! window about 2,100 of them, across all the connection's streams, closed
//! the connection with every session on it (29 times in one overload run).
//! Here one connection carries 3,000 streams whose client grants a 64-byte
//! stream window and reads nothing after `Attached`, and every stream then
//! sends four acks: all 3,000 must stay attached. (At the old window the
//! connection closes at once.) Binds 127.0.0.1 on
//! an OS-picked port; every wait is bounded.

use std::time::Duration;

use station_core::server::Config as SessionConfig;
use station_core::ClientId;
use station_net::client::ChannelOptions;
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{Ack, ClientMessage, Open, ServerMessage};
use station_net::ServerConfig;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

mod common;

use common::TestServer;

const STREAMS: u32 = 3_000;
/// Acks each stream sends while the server cannot send to it.
const ACKS: usize = 4;
/// The sessions' silence timeout, well past the test's end.
const SILENCE: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(20);

/// Opens a session on `channel` and reads its `Attached`; returns the
/// response stream (never read again) and the sender.
async fn attached(
    channel: Channel,
    i: u32,
) -> (Streaming<ServerMessage>, mpsc::Sender<ClientMessage>) {
    let mut client = NumbersStationClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    id[15] = 1; // Not the nil id.
    tx.send(ClientMessage {
        kind: Some(Kind::Open(Open {
            client_id: ClientId::from_random_bytes(id).to_string(),
            count: 1000,
            open_nonce: vec![1; 16],
        })),
    })
    .await
    .unwrap();
    let mut rx = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap_or_else(|e| panic!("stream {i} opens: {e:?}"))
        .into_inner();
    let first = rx
        .message()
        .await
        .unwrap_or_else(|e| panic!("stream {i} reads: {e:?}"));
    assert!(
        matches!(first.and_then(|m| m.kind), Some(ServerKind::Attached(_))),
        "stream {i} attaches"
    );
    (rx, tx)
}

/// Opens `n` sessions on `channel` at once and waits (bounded) until each
/// has read its `Attached`.
async fn all_attached(
    channel: &Channel,
    n: u32,
) -> Vec<(Streaming<ServerMessage>, mpsc::Sender<ClientMessage>)> {
    let mut opening = JoinSet::new();
    for i in 0..n {
        opening.spawn(attached(channel.clone(), i));
    }
    timeout(STEP, opening.join_all())
        .await
        .expect("every stream attaches in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_left_unread_by_a_busy_connection_do_not_close_it() {
    let mut session = SessionConfig::new(Duration::from_millis(10), Duration::from_secs(30));
    // Numbers every 10 ms fill each stream's window at once; a silence
    // timeout of 20 s keeps a slow machine's streams from ending by it.
    session.silence_timeout = SILENCE;
    let cfg = ServerConfig {
        session,
        ..ServerConfig::default()
    };
    let server = TestServer::start(cfg).await;
    let station = &server.station;
    let channel = server
        .channel_with(|e| {
            e.initial_stream_window_size(Some(64))
                // The client's h2 has the same defence against the numbers
                // it holds unread (4 or 5 a stream here): room for them all.
                .initial_connection_window_size(Some(64 << 20))
        })
        .await;

    let began = std::time::Instant::now();
    let streams = all_attached(&channel, STREAMS).await;
    assert_eq!(station.attached_streams(), u64::from(STREAMS));

    // Once each stream's numbers have filled its window, every stream
    // acks (nothing: a valid ack) while the server cannot send on it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..ACKS {
        for (_, tx) in &streams {
            let ack = ClientMessage {
                kind: Some(Kind::Ack(Ack { next_index: 0 })),
            };
            tx.send(ack).await.expect("the stream is open");
        }
    }
    // h2 reads a connection's frames in order: a stream opened after the
    // acks attaches only once the server has read them all, and on the
    // same connection only if it was not closed for them.
    let (_probe, _tx) = timeout(STEP, attached(channel.clone(), STREAMS))
        .await
        .expect("a stream after the acks attaches");
    // Had the connection been closed, the probe attached on a new one, and
    // the closed one's streams end as hyper drops them: a moment for that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        began.elapsed() < SILENCE,
        "too slow to test: {:?}",
        began.elapsed()
    );
    assert_eq!(
        station.attached_streams(),
        u64::from(STREAMS) + 1,
        "the connection was closed under its streams"
    );
    drop(streams);
}

/// The client's side of the same defence: a client that falls behind on a
/// connection carrying many sessions holds their numbers unread, up to the
/// server's window on each stream. The client's own connection window
/// ([`ChannelOptions::apply`]) must leave room for them all, or its h2
/// closes the connection under every session on it (at hyper's 5 MiB: at
/// about 10,900 numbers; here 1,000 streams hold 64 each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_left_unread_by_a_busy_client_do_not_close_its_connection() {
    const STREAMS: u32 = 1_000;
    let mut session = SessionConfig::new(Duration::from_millis(10), Duration::from_secs(30));
    session.silence_timeout = SILENCE;
    let window = session.window;
    let cfg = ServerConfig {
        session,
        ..ServerConfig::default()
    };
    let server = TestServer::start(cfg).await;
    let station = &server.station;
    let channel = server
        .channel_with(|e| ChannelOptions::default().apply(e))
        .await;

    let began = std::time::Instant::now();
    let mut streams = all_attached(&channel, STREAMS).await;
    // Nothing read while every stream's window of numbers arrives (64 at
    // 10 ms: 640 ms), then every number of every stream is read.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (i, (rx, _)) in streams.iter_mut().enumerate() {
        for n in 0..window {
            let message = timeout(STEP, rx.message())
                .await
                .expect("a number in time")
                .unwrap_or_else(|e| panic!("stream {i}, number {n}: {e:?}"));
            assert!(
                matches!(message.and_then(|m| m.kind), Some(ServerKind::Number(_))),
                "stream {i}, number {n}"
            );
        }
    }
    assert!(
        began.elapsed() < SILENCE,
        "too slow to test: {:?}",
        began.elapsed()
    );
    assert_eq!(station.attached_streams(), u64::from(STREAMS));
}
