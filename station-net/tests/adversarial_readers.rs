//! Adversarial clients against a real server over loopback that do not
//! read: a client that never reads, one that stops (paced or in a burst),
//! one that withholds HTTP/2 flow control, and a burst ended by an injected
//! fault. The session window, not HTTP/2 flow control, bounds what the
//! server sends them, and the silence rule lets go of them.
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use station_core::server::Config as SessionConfig;
use station_core::{ClientId, Reason};
use station_net::proto::server_message::Kind as ServerKind;
use station_net::server::MAX_WINDOW;
use station_net::store::MemoryStore;
use station_net::{Observer, ServerConfig, Station, StreamEvent};
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::raw::{open, Raw};
use common::{assert_rejected, server_config, session_id, Good, TestServer, TTL};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

// Rows: clients that do not read.

/// Counts the numbers each session's streams handed to the transport.
fn sent_counter() -> (Observer, Arc<Mutex<HashMap<ClientId, u32>>>) {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let counts = sent.clone();
    let observer: Observer = Arc::new(move |e: &StreamEvent| {
        if let StreamEvent::Sent { client_id, .. } = e {
            *counts.lock().unwrap().entry(*client_id).or_insert(0) += 1;
        }
    });
    (observer, sent)
}

fn sent_to(sent: &Mutex<HashMap<ClientId, u32>>, id: ClientId) -> u32 {
    sent.lock().unwrap().get(&id).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_reads_is_bounded_by_the_window_and_dropped() {
    // Interval 0: numbers go out as fast as the window allows.
    let session = SessionConfig {
        interval: Duration::ZERO,
        ttl: TTL,
        silence_timeout: Duration::from_secs(1),
        window: 64,
        ..SessionConfig::new(Duration::ZERO, TTL)
    };
    session.validate().unwrap();
    let (observer, sent) = sent_counter();
    let cfg = ServerConfig {
        session,
        ..server_config()
    };
    let server = TestServer::with_station(Station::with_observer(
        cfg,
        MemoryStore::default(),
        Some(observer),
    ))
    .await;
    let good = server.good(3000, 14).await;
    let channel = server.channel().await;
    let id = session_id(140);
    let started = Instant::now();
    // Opens, keeps its request stream open, never polls the responses.
    let mut sloth = Raw::start(&channel, &[open(&id.to_string(), 65_535, &[14u8; 16])]).await;
    good.verified().await;
    server.attached_at_most(0, Duration::from_secs(4)).await;
    let dropped_after = started.elapsed();
    let sent_to_sloth = sent_to(&sent, id);
    assert!(
        (1..=64).contains(&sent_to_sloth),
        "the server sent {sent_to_sloth} unacknowledged numbers (window 64)"
    );
    // Now read what was buffered: the numbers, then why the stream ended.
    let (msgs, status) = sloth.end().await;
    assert!(msgs.len() <= 65, "{} messages", msgs.len());
    assert_rejected(
        "the reader that stopped",
        &status,
        Code::DeadlineExceeded,
        Reason::ClientSilent,
        &["silent"],
    );
    eprintln!(
        "never-reading client: {sent_to_sloth} numbers sent, stream dropped after {dropped_after:?}"
    );
    drop(channel);
    server.stop().await;
}

/// A server with the largest window it accepts, so a client that stops
/// reading has as much as possible in flight when it stops.
async fn widest_window_server(
    interval: Duration,
) -> (TestServer, Arc<Mutex<HashMap<ClientId, u32>>>) {
    let session = SessionConfig {
        interval,
        ttl: TTL,
        // Longer than the good session's 1 s between acknowledgements.
        silence_timeout: Duration::from_secs(2),
        window: MAX_WINDOW,
        ..SessionConfig::new(interval, TTL)
    };
    let (observer, sent) = sent_counter();
    let cfg = ServerConfig {
        session,
        ..server_config()
    };
    cfg.validate().unwrap();
    let station = Station::with_observer(cfg, MemoryStore::default(), Some(observer));
    (TestServer::with_station(station).await, sent)
}

/// Opens a session on `channel` and never reads, while `good` runs to
/// completion; returns the stream once the server let go of it (asserting
/// that it did within 4 s and sent at most one window).
async fn stop_reading(
    server: &TestServer,
    sent: &Mutex<HashMap<ClientId, u32>>,
    channel: &Channel,
    id: ClientId,
    good: Good,
) -> Raw {
    let started = Instant::now();
    let sloth = Raw::start(channel, &[open(&id.to_string(), 65_535, &[15u8; 16])]).await;
    good.verified().await;
    let released = timeout(
        Duration::from_secs(4).saturating_sub(started.elapsed()),
        async {
            while server.station.attached_streams() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    let n = sent_to(sent, id);
    eprintln!(
        "stopped reader: {n} numbers sent; stream {} after {:?}",
        if released.is_ok() {
            "released"
        } else {
            "STILL ATTACHED"
        },
        started.elapsed()
    );
    assert!(
        n <= MAX_WINDOW,
        "the server sent {n} numbers to a client that does not read (window {MAX_WINDOW})"
    );
    assert!(
        released.is_ok(),
        "a stream whose client stopped reading is still attached 4 s later \
         (silence timeout 2 s); {n} numbers sent"
    );
    sloth
}

/// A client on a server with `interval` stops reading while a good session
/// of `good_count` numbers runs; the server lets go of it, and when it
/// reads again it gets what was in flight, then why the stream ended —
/// never a clean end of an incomplete session.
async fn stopped_reader_is_dropped_as_silent(interval: Duration, good_count: u32, seed: u64) {
    let (server, sent) = widest_window_server(interval).await;
    let good = server.good(good_count, seed).await;
    let channel = server.channel().await;
    let mut sloth = stop_reading(&server, &sent, &channel, session_id(seed * 10), good).await;
    let (msgs, status) = sloth.end().await;
    assert!(
        msgs.len() <= 1 + MAX_WINDOW as usize,
        "{} messages",
        msgs.len()
    );
    assert_rejected(
        "the reader that stopped",
        &status,
        Code::DeadlineExceeded,
        Reason::ClientSilent,
        &["silent"],
    );
    drop(channel);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_stopped_by_the_window_and_dropped_as_silent() {
    // 3 ms, not slower: a window of 2048 asks for an acknowledgement every
    // 512 numbers, which must come within the 2 s silence timeout (the
    // server refuses configurations where it cannot).
    stopped_reader_is_dropped_as_silent(Duration::from_millis(3), 200, 15).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_during_a_burst_is_dropped_as_silent() {
    // Interval 0: the whole window is one burst.
    stopped_reader_is_dropped_as_silent(Duration::ZERO, 3000, 16).await;
}

#[tokio::test]
async fn a_client_that_withholds_flow_control_holds_only_its_own_stream() {
    // A client that grants less HTTP/2 window than one session window and
    // stops reading: the server's sends wait on flow control, not on the
    // session. That stream stays (counted under --max-streams) until its
    // connection goes; everyone else is served meanwhile.
    let (server, sent) = widest_window_server(Duration::ZERO).await;
    let good = server.good(3000, 17).await;
    let channel = server
        .channel_with(|e| {
            e.initial_stream_window_size(1024)
                .initial_connection_window_size(1024)
                .http2_adaptive_window(false)
        })
        .await;
    let id = session_id(170);
    let _sloth = Raw::start(&channel, &[open(&id.to_string(), 65_535, &[17u8; 16])]).await;
    good.verified().await;
    let n = sent_to(&sent, id);
    assert!(n <= MAX_WINDOW, "{n} numbers sent (window {MAX_WINDOW})");
    assert_eq!(
        server.station.attached_streams(),
        1,
        "only the withholding stream"
    );
    drop(_sloth);
    drop(channel);
    server.attached_at_most(0, STEP).await;
    server.stop().await;
}

#[test]
fn a_window_beyond_http2_flow_control_is_refused() {
    let mut cfg = server_config();
    // Unpaced: at 20 ms, the widest window's acknowledgement every 512
    // numbers could not come within the silence timeout, a rule of its own.
    cfg.session.interval = Duration::ZERO;
    cfg.session.window = MAX_WINDOW;
    assert_eq!(cfg.validate(), Ok(()));
    cfg.session.window = MAX_WINDOW + 1;
    let err = cfg.validate().unwrap_err();
    assert!(err.contains("HTTP/2"), "{err}");
}

#[tokio::test]
async fn no_number_is_sent_after_an_injected_fault_ends_a_burst() {
    // Not an adversarial client, but the same path as any abort: a stream
    // ended in the middle of a burst must not send the rest of it.
    let session = SessionConfig {
        interval: Duration::ZERO,
        ..SessionConfig::new(Duration::ZERO, TTL)
    };
    let server = TestServer::start(ServerConfig {
        session,
        fail_every: std::num::NonZeroU64::new(5),
        ..server_config()
    })
    .await;
    let channel = server.channel().await;
    let mut raw = Raw::start(
        &channel,
        &[open(&session_id(170).to_string(), 100, &[17u8; 16])],
    )
    .await;
    raw.attached().await;
    let (msgs, status) = raw.end().await;
    let indices: Vec<u32> = msgs
        .iter()
        .map(|m| match &m.kind {
            Some(ServerKind::Number(n)) => n.index,
            other => panic!("expected numbers, got {other:?}"),
        })
        .collect();
    assert_rejected(
        "the faulty burst",
        &status,
        Code::Unavailable,
        Reason::InjectedFault,
        &["injected fault"],
    );
    assert_eq!(
        indices,
        (0..4).collect::<Vec<_>>(),
        "numbers 0..4 then the injected failure of number 4, and nothing after it"
    );
    drop(channel);
    server.stop().await;
}
