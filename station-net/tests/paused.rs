//! A stream whose store stops confirming its lease holds its numbers and
//! says so (`Paused`), and our client waits on it instead of calling it
//! silent and resuming, which would cost the slow store a load and a
//! takeover per session.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use station_core::client::{Config as ClientConfig, Verdict};
use station_core::server::Config as SessionConfig;
use station_net::client::{run, DriverOptions, Event};
use station_net::ServerConfig;

use common::{Switchable, TestServer};

const INTERVAL: Duration = Duration::from_millis(20);
const COUNT: u32 = 250;
/// Longer than the client's silence allowance (3 intervals plus 2 s) by
/// more than two leases, so the stream is held past that allowance.
const OUTAGE: Duration = Duration::from_secs(4);

async fn start(store: Switchable) -> TestServer<Switchable> {
    let mut session = SessionConfig::new(INTERVAL, Duration::from_secs(20));
    session.lease = Duration::from_millis(500);
    let cfg = ServerConfig {
        session,
        ..ServerConfig::default()
    };
    TestServer::with_store(cfg, store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_stream_is_waited_on_not_resumed() {
    let store = Switchable::default();
    let down = store.down.clone();
    let server = start(store).await;
    let endpoints = server.endpoints();
    let client = common::client(ClientConfig::default(), COUNT, 3);
    let outage = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        down.store(true, Ordering::Relaxed);
        tokio::time::sleep(OUTAGE).await;
        down.store(false, Ordering::Relaxed);
    });
    let (mut paused, mut silent, mut failed) = (0, 0, 0);
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            &endpoints,
            &DriverOptions::default(),
            client,
            |event, _| match event {
                Event::Paused { .. } => paused += 1,
                Event::Silent { .. } => silent += 1,
                Event::Failed { .. } => failed += 1,
                _ => {}
            },
        ),
    )
    .await
    .expect("the session ends");
    outage.await.unwrap();
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
    assert_eq!(
        (silent, failed, outcome.reconnects),
        (0, 0, 0),
        "the held stream was dropped ({paused} Paused heard)"
    );
    // Held from at most two leases (1 s) into the outage to its end: a
    // Paused in place of each number held, at most ten a second.
    assert!(
        paused >= 25,
        "{paused} Paused heard in a hold of 3 s or more"
    );
}
