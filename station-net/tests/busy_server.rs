//! A server that is alive but late for one stream (under load, it falls
//! behind some streams while others on the same connection still get their
//! numbers) is waited on, not called silent: the resume that dropping the
//! stream would bring costs a loaded server a store load and a takeover
//! more. Without that evidence (the stream alone on its connection) the
//! watchdog judges as before.

use std::pin::Pin;
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Outcome, Verdict};
use station_core::sequence;
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints, Event};
use station_net::proto::client_message::Kind as ClientKind;
use station_net::proto::numbers_station_server::NumbersStation;
use station_net::proto::server_message::Kind;
use station_net::proto::{Attached, ClientMessage, Number, ServerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

mod common;

const SEED: u64 = 91;
const INTERVAL: Duration = Duration::from_millis(100);
/// The late session: its second number comes this long after its first,
/// past the client's silence allowance (3 intervals plus 2 s: 2.3 s) and
/// within its patience (half the TTL: 10 s).
const LATE_BY: Duration = Duration::from_secs(5);
const LATE_COUNT: u32 = 3;
/// The other session on the connection: numbers all along.
const BUSY_COUNT: u32 = 80;
/// Sessions of this many get their first number, then nothing.
const STALLED_COUNT: u32 = 4;

/// Sends an `Open`'s session by script: `LATE_COUNT` numbers with a gap of
/// `LATE_BY` after the first, anything else one number an interval.
#[derive(Clone)]
struct Busy;

type Out = Pin<Box<dyn tokio_stream::Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NumbersStation for Busy {
    type StreamStream = Out;

    async fn stream(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Out>, Status> {
        let mut inbound = request.into_inner();
        let count = match inbound.message().await? {
            Some(ClientMessage {
                kind: Some(ClientKind::Open(open)),
            }) => open.count,
            _ => return Err(Status::unimplemented("this server only opens")),
        };
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            // Acks are read and dropped, so the client's sends never block.
            tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
            let _ = tx.send(Ok(attached(count))).await;
            for index in 0..count {
                let gap = match (count, index) {
                    (LATE_COUNT, 1) => LATE_BY,
                    (STALLED_COUNT, 1) => Duration::from_secs(3600),
                    _ => INTERVAL,
                };
                tokio::time::sleep(gap).await;
                if tx.send(Ok(number(index, count))).await.is_err() {
                    return;
                }
            }
            // Held open: the client ends the stream once it has everything.
            tx.closed().await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The client driver's endpoints for a `Busy` server.
async fn fake_server() -> Endpoints {
    let addr = common::serve_fake(Busy).await;
    Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()).unwrap()
}

fn attached(count: u32) -> ServerMessage {
    let d = |d: Duration| prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    };
    ServerMessage {
        kind: Some(Kind::Attached(Box::new(Attached {
            count,
            next_index: 0,
            resume_token: vec![9; 16],
            session_ttl: Some(d(Duration::from_secs(20))),
            interval: Some(d(INTERVAL)),
            ack_every: 1,
        }))),
    }
}

fn number(index: u32, count: u32) -> ServerMessage {
    ServerMessage {
        kind: Some(Kind::Number(Number {
            index,
            value: sequence::value(SEED, index),
            checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
        })),
    }
}

/// A client of `count` numbers seeded with `seed`.
fn client(seed: u8, count: u32) -> Client {
    common::client(ClientConfig::default(), count, u64::from(seed))
}

/// Runs one session of `count` over `endpoints`: its outcome and how many
/// times its stream was called silent.
async fn session(endpoints: &Endpoints, id: u8, count: u32) -> (Outcome, u32) {
    let client = client(id, count);
    let opts = DriverOptions {
        linger: Duration::from_millis(100),
        ..DriverOptions::default()
    };
    let mut silent = 0;
    let outcome = run(endpoints, &opts, client, |event, _| {
        if matches!(event, Event::Silent { .. }) {
            silent += 1;
        }
    })
    .await;
    (outcome, silent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_late_while_its_connection_delivers_is_waited_on() {
    let endpoints = fake_server().await;
    let within = Duration::from_secs(30);
    let busy = tokio::spawn({
        let endpoints = endpoints.clone();
        async move { session(&endpoints, 2, BUSY_COUNT).await }
    });
    // Both sessions on one connection, the busy one first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (late, silent) = tokio::time::timeout(within, session(&endpoints, 1, LATE_COUNT))
        .await
        .expect("the late session ends");
    assert_eq!(silent, 0, "the late stream was called silent: {late:?}");
    assert!(late.verdict == Verdict::Verified, "{late:?}");
    assert_eq!(late.reconnects, 0, "{late:?}");
    let (busy, _) = busy.await.unwrap();
    assert!(busy.verdict == Verdict::Verified, "{busy:?}");
}

/// A server that stops sending to every stream of a connection leaves
/// one of them the last to hear from it: that message is no evidence for
/// the others past the first watchdog it excuses, and every stream is
/// called silent within two silence allowances (4.6 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_a_connection_gone_silent_as_a_whole_are_called_silent() {
    let endpoints = fake_server().await;
    let started = Instant::now();
    let sessions = (4..8u8).map(|id| {
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let client = client(id, STALLED_COUNT);
            let mut silent_after = None;
            // Stopped at the first silence: this server cannot resume.
            let _ = tokio::time::timeout(
                Duration::from_secs(8),
                run(&endpoints, &DriverOptions::default(), client, |event, _| {
                    if matches!(event, Event::Silent { .. }) {
                        silent_after.get_or_insert(started.elapsed());
                    }
                }),
            )
            .await;
            silent_after
        })
    });
    for session in sessions.collect::<Vec<_>>() {
        let after = session.await.unwrap().expect("called silent");
        assert!(
            after < Duration::from_secs(6),
            "called silent after {after:?}"
        );
    }
}

/// The same late stream alone on its connection: nothing says the server
/// is alive, so the watchdog drops it at its silence allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_late_alone_on_its_connection_is_called_silent() {
    let endpoints = fake_server().await;
    let started = Instant::now();
    let mut silent = 0;
    let client = client(3, LATE_COUNT);
    // Stopped at the first silence: this server cannot resume a session.
    let _ = tokio::time::timeout(
        LATE_BY,
        run(&endpoints, &DriverOptions::default(), client, |event, _| {
            if matches!(event, Event::Silent { .. }) {
                silent += 1;
            }
        }),
    )
    .await;
    assert_eq!(silent, 1, "after {:?}", started.elapsed());
}
