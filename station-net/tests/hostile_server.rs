//! The client against hand-written servers that lie or misbehave, over
//! loopback TCP: what a user trying the client against their own server
//! would see. Each server follows a script per stream.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use station_core::client::{Config as ClientConfig, Outcome, Verdict};
use station_core::{sequence, Reason, DOMAIN};
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints, Event};
use station_net::proto::numbers_station_server::NumbersStation;
use station_net::proto::server_message::Kind;
use station_net::proto::{Attached, ClientMessage, Number, ServerMessage};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

mod common;

const SEED: u64 = 77;

/// What stream number `n` (from 0) gets: messages, then this end.
type Script = dyn Fn(u32) -> (Vec<ServerMessage>, Status) + Send + Sync;

#[derive(Clone)]
struct Hostile {
    script: Arc<Script>,
    streams: Arc<AtomicU32>,
    started: Arc<Mutex<Vec<Instant>>>,
}

type Out = Pin<Box<dyn tokio_stream::Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NumbersStation for Hostile {
    type StreamStream = Out;

    async fn stream(
        &self,
        _request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Out>, Status> {
        let n = self.streams.fetch_add(1, Ordering::SeqCst);
        self.started.lock().unwrap().push(Instant::now());
        let (messages, end) = (self.script)(n);
        let items = messages
            .into_iter()
            .map(Ok)
            .chain(std::iter::once(Err(end)));
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

async fn serve(
    script: impl Fn(u32) -> (Vec<ServerMessage>, Status) + Send + Sync + 'static,
) -> (SocketAddr, Hostile) {
    let svc = Hostile {
        script: Arc::new(script),
        streams: Arc::new(AtomicU32::new(0)),
        started: Arc::new(Mutex::new(Vec::new())),
    };
    (common::serve_fake(svc.clone()).await, svc)
}

fn secs(s: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: s,
        nanos: 0,
    }
}

fn attached(
    count: u32,
    ttl: prost_types::Duration,
    interval: prost_types::Duration,
) -> ServerMessage {
    ServerMessage {
        kind: Some(Kind::Attached(Box::new(Attached {
            count,
            next_index: 0,
            resume_token: vec![9; 16],
            session_ttl: Some(ttl),
            interval: Some(interval),
            ack_every: 1,
        }))),
    }
}

fn numbers(count: u32) -> Vec<ServerMessage> {
    (0..count)
        .map(|index| ServerMessage {
            kind: Some(Kind::Number(Number {
                index,
                value: sequence::value(SEED, index),
                checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
            })),
        })
        .collect()
}

fn status(code: Code, reason: Reason, retry_after: Option<Duration>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), DOMAIN, []);
    if let Some(wait) = retry_after {
        details.set_retry_info(Some(wait));
    }
    Status::with_error_details(code, "scripted", details)
}

/// Runs a session of `count` numbers against the server at `addr`: its
/// outcome, and how many times it attached.
async fn session(addr: SocketAddr, count: u32, cfg: ClientConfig) -> (Outcome, u32) {
    let endpoints = Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()).unwrap();
    let c = common::client(cfg, count, 1);
    let mut attached = 0;
    let opts = DriverOptions {
        linger: Duration::from_millis(100),
        ..DriverOptions::default()
    };
    let outcome = run(&endpoints, &opts, c, |event, _| {
        if matches!(event, Event::Attached { .. }) {
            attached += 1;
        }
    })
    .await;
    (outcome, attached)
}

/// Regression: `Attached` with a TTL or interval of 2^62 s made
/// `station client` panic. Now it is a protocol error (exit 6) after the
/// client has tried a few times.
#[tokio::test]
async fn attached_with_durations_of_2_pow_62_seconds_is_a_protocol_error() {
    let huge = secs(1 << 62);
    for (ttl, interval) in [(huge, secs(1)), (secs(30), huge)] {
        let (addr, server) = serve(move |_| {
            (
                vec![attached(3, ttl, interval)],
                Status::unavailable("never reached"),
            )
        })
        .await;
        let limit = Duration::from_secs(30);
        let (outcome, _) = tokio::time::timeout(limit, session(addr, 3, ClientConfig::default()))
            .await
            .expect("the client finishes");
        assert!(
            matches!(&outcome.verdict, Verdict::ProtocolError(m) if m.contains("announced")),
            "{outcome:?}"
        );
        let streams = server.streams.load(Ordering::SeqCst);
        assert_eq!(
            streams,
            ClientConfig::default().max_protocol_errors,
            "{outcome:?}"
        );
    }
}

/// Regression: a server that attaches and then fails every stream kept the
/// client retrying forever. It gives up after `give_up_without_progress`.
#[tokio::test]
async fn a_server_that_attaches_then_always_fails_is_given_up_on() {
    let (addr, server) = serve(|_| {
        (
            vec![attached(3, secs(30), secs(1))],
            status(Code::Unavailable, Reason::InjectedFault, None),
        )
    })
    .await;
    let cfg = ClientConfig {
        give_up_without_progress: Duration::from_secs(3),
        ..ClientConfig::default()
    };
    let started = Instant::now();
    let (outcome, attached) = tokio::time::timeout(Duration::from_secs(30), session(addr, 3, cfg))
        .await
        .expect("the client gives up");
    assert!(
        matches!(&outcome.verdict, Verdict::Unreachable(m) if m.contains("no progress")),
        "{outcome:?}"
    );
    // Given up at 3 s, with up to 2 s for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(attached >= 3, "{attached}");
    assert_eq!(server.streams.load(Ordering::SeqCst), attached);
}

/// RetryInfo in the status delays the next attempt, and a machine-readable
/// reason decides: here SERVER_FULL (retry) and then success.
#[tokio::test]
async fn retry_info_delays_the_next_attempt() {
    let wait = Duration::from_millis(700);
    let (addr, server) = serve(move |n| match n {
        0 => (
            vec![],
            status(Code::ResourceExhausted, Reason::ServerFull, Some(wait)),
        ),
        _ => {
            let mut messages = vec![attached(4, secs(30), secs(0))];
            messages.extend(numbers(4));
            (messages, Status::ok(""))
        }
    })
    .await;
    let (outcome, _) = tokio::time::timeout(
        Duration::from_secs(30),
        session(addr, 4, ClientConfig::default()),
    )
    .await
    .expect("the client finishes");
    assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
    let started = server.started.lock().unwrap().clone();
    assert_eq!(started.len(), 2, "{started:?}");
    let gap = started[1] - started[0];
    assert!(gap >= wait, "retried after {gap:?}, asked {wait:?}");
}

/// Reasons, not messages, decide: SESSION_LOST ends the client with a
/// rejection that says so, whatever the message claims.
#[tokio::test]
async fn session_lost_is_a_rejection_that_says_so() {
    let (addr, _server) =
        serve(|_| (vec![], status(Code::NotFound, Reason::SessionLost, None))).await;
    let (outcome, _) = tokio::time::timeout(
        Duration::from_secs(30),
        session(addr, 4, ClientConfig::default()),
    )
    .await
    .expect("the client finishes");
    assert!(
        matches!(&outcome.verdict, Verdict::Rejected { reason: Some(Reason::SessionLost), message, .. } if message.contains("lost the session")),
        "{outcome:?}"
    );
}

/// Regression: a server message over the client's decode limit (1 KiB) made
/// tonic end the stream OUT_OF_RANGE, which the client took for a
/// rejection (exit 5). The server broke the protocol: after a few tries
/// the client ends with a protocol error (exit 6).
#[tokio::test]
async fn a_message_over_the_decode_limit_is_a_protocol_error() {
    let (addr, server) = serve(|_| {
        let mut big = attached(3, secs(30), secs(1));
        if let Some(Kind::Attached(a)) = &mut big.kind {
            a.resume_token = vec![7; 4096];
        }
        (vec![big], Status::ok(""))
    })
    .await;
    let (outcome, attached) = tokio::time::timeout(
        Duration::from_secs(30),
        session(addr, 3, ClientConfig::default()),
    )
    .await
    .expect("the client finishes");
    assert!(
        matches!(&outcome.verdict, Verdict::ProtocolError(m) if m.contains("decode limit")),
        "{outcome:?}"
    );
    assert_eq!(attached, 0);
    assert_eq!(
        server.streams.load(Ordering::SeqCst),
        ClientConfig::default().max_protocol_errors
    );
}
