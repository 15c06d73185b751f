//! A stream whose store stops confirming its lease holds its numbers and
//! says so (`Paused`), and our client waits on it instead of calling it
//! silent and resuming, which would cost the slow store a load and a
//! takeover per session.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Verdict};
use station_core::server::Config as SessionConfig;
use station_core::ClientId;
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints, Event};
use station_net::{serve_tcp, ServerConfig, Station};
use tokio::sync::oneshot;

use common::Switchable;

const INTERVAL: Duration = Duration::from_millis(20);
const COUNT: u32 = 250;
/// Longer than the client's silence allowance (3 intervals plus 2 s) by
/// more than two leases, so the stream is held past that allowance.
const OUTAGE: Duration = Duration::from_secs(4);

async fn start(store: Switchable) -> (SocketAddr, oneshot::Sender<()>) {
    let mut session = SessionConfig::new(INTERVAL, Duration::from_secs(20));
    session.lease = Duration::from_millis(500);
    let station = Station::new(
        ServerConfig {
            session,
            ..ServerConfig::default()
        },
        store,
    );
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        serve_tcp(station, bind, |a| addr_tx.send(a).unwrap(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr_rx.await.unwrap(), stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_stream_is_waited_on_not_resumed() {
    let store = Switchable::default();
    let down = store.down.clone();
    let (addr, _stop) = start(store).await;
    let endpoints = Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()).unwrap();
    let id = ClientId::from_random_bytes([3; 16]);
    let client = Client::new(Instant::now(), ClientConfig::default(), id, COUNT, 3).unwrap();
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
