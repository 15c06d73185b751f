//! The open throttle over real sockets: a crowd of new sessions sharing one
//! `DriverOptions`, against a server with room for a few, sends it about
//! twice the opens it takes and holds the rest back before they are sent,
//! where the same crowd without a shared throttle sends every retry. Held
//! back is never failed: sessions complete or give up, saying so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Request, Verdict};
use station_core::server::Config as SessionConfig;
use station_core::Secret;
use station_net::client::{run, DriverOptions, Event};
use station_net::ServerConfig;

mod common;

use common::TestServer;

const SESSIONS: u64 = 150;
/// Streams the server carries at once: at 25 numbers 20 ms apart, about
/// 8 sessions a second, so most of the crowd waits.
const ROOM: usize = 4;

async fn start() -> TestServer {
    let cfg = ServerConfig {
        session: SessionConfig::new(Duration::from_millis(20), Duration::from_secs(5)),
        max_streams: ROOM,
        retry_after: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    TestServer::start(cfg).await
}

/// What a crowd did: opens sent, opens held back, and the outcomes.
#[derive(Debug, Default)]
struct Crowd {
    sent: u64,
    held_back: u64,
    verified: u64,
    gave_up: u64,
}

/// Runs the crowd; `shared` runs every session with one `DriverOptions`
/// (one budget and throttle), else each with its own.
async fn crowd(shared: bool) -> (Crowd, DriverOptions) {
    let server = start().await;
    let endpoints = server.endpoints();
    let opts = DriverOptions::default();
    let cfg = ClientConfig {
        give_up_without_progress: Duration::from_secs(15),
        ..ClientConfig::default()
    };
    let tally = Arc::new(Mutex::new(Crowd::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 1..=SESSIONS {
        let opts = if shared {
            opts.clone()
        } else {
            DriverOptions::default()
        };
        let (endpoints, cfg, tally) = (endpoints.clone(), cfg.clone(), Arc::clone(&tally));
        tasks.spawn(async move {
            let c = common::client(cfg, 25, seed);
            let outcome = run(&endpoints, &opts, c, |e, _| match e {
                Event::Connecting {
                    request: Request::Open { .. },
                    ..
                } => tally.lock().unwrap().sent += 1,
                Event::HeldBack { .. } => tally.lock().unwrap().held_back += 1,
                _ => {}
            })
            .await;
            let mut t = tally.lock().unwrap();
            match &outcome.verdict {
                Verdict::Verified => t.verified += 1,
                Verdict::Unreachable(why) => {
                    // Refused by the server, or held back before it: a
                    // session may give up having sent nothing.
                    assert!(
                        why.contains("servers refused the session")
                            || why.contains("this process held back"),
                        "{why}"
                    );
                    t.gave_up += 1;
                }
                other => panic!("{other:?}"),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let crowd = std::mem::take(&mut *tally.lock().unwrap());
    (crowd, opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_held_back_sends_far_fewer_opens_for_the_same_sessions_served() {
    let (alone, _) = crowd(false).await;
    let (together, opts) = crowd(true).await;
    eprintln!("each its own throttle: {alone:?}\none throttle: {together:?}");
    // Alone, no session's few retries are held back.
    assert_eq!(alone.held_back, 0, "{alone:?}");
    // Together, the throttle held opens back, and its counter says how
    // many: the events and the counter agree.
    let stats = opts.budget.open_stats();
    assert!(together.held_back > 0, "{together:?}");
    assert_eq!(stats.held_back, together.held_back, "{stats:?}");
    // Every session completed or gave up, saying why (checked above).
    assert_eq!(
        together.verified + together.gave_up,
        SESSIONS,
        "{together:?}"
    );
    assert_eq!(alone.verified + alone.gave_up, SESSIONS, "{alone:?}");
    // It sent at most half the opens (a sixth to an eighth, measured).
    assert!(
        together.sent * 2 <= alone.sent,
        "together {together:?}, alone {alone:?}"
    );
    // And served fewer sessions, but at least a third as many: the cost
    // of the throttle at this small scale. Opens sent at about twice the
    // accept rate find a server of 4 slots full about half the time, so a
    // freed slot often waits for the next open (Erlang's loss formula),
    // where a crowd retrying every 200 ms (the server's pushback) fills it
    // at once. Measured: 48 to 77 against 93 to 99, the low end in a
    // clean-clone CI run. At full scale (40,000 slots) the same ratio
    // keeps a server full: goodput in BENCHMARKS.md.
    assert!(
        together.verified * 3 >= alone.verified,
        "together {together:?}, alone {alone:?}"
    );
}

/// A resume is an admitted session: the driver never asks the throttle
/// about it, even when the throttle holds back nearly every open.
#[tokio::test]
async fn resumes_are_never_held_back() {
    let endpoints = common::nothing_listening();
    let opts = DriverOptions::default();
    let cfg = ClientConfig {
        give_up_without_progress: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    // Forty new sessions fail: the throttle holds back most opens.
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 1..=40u64 {
        let (endpoints, opts, cfg) = (endpoints.clone(), opts.clone(), cfg.clone());
        tasks.spawn(async move {
            let c = common::client(cfg, 10, seed);
            run(&endpoints, &opts, c, |_, _| {}).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let before = opts.budget.open_stats();
    assert!(before.hold_ratio > 0.5, "{before:?}");
    // A session that holds a resume token, restored from a snapshot.
    let fresh = common::client(cfg.clone(), 10, 9);
    let mut snapshot = fresh.snapshot();
    snapshot.token = Some(Secret([5; 16]));
    let c = Client::restore(Instant::now(), cfg, snapshot, 9).unwrap();
    let (mut resumes, mut held) = (0, 0);
    let outcome = run(&endpoints, &opts, c, |e, _| match e {
        Event::Connecting {
            request: Request::Resume { .. },
            ..
        } => resumes += 1,
        Event::Connecting { .. } => panic!("a restored session opened"),
        Event::HeldBack { .. } => held += 1,
        _ => {}
    })
    .await;
    assert!(
        matches!(outcome.verdict, Verdict::Unreachable(_)),
        "{outcome:?}"
    );
    // Every attempt went out; none asked the throttle.
    assert!(resumes >= 3, "{resumes}");
    assert_eq!(held, 0);
    let after = opts.budget.open_stats();
    assert_eq!(
        (after.requests, after.held_back),
        (before.requests, before.held_back)
    );
}
