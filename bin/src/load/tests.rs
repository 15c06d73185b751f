//! Tests of `station load`, most against real in-process servers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use station_net::store::MemoryStore;
use station_net::{serve, ServerConfig, Station};

use super::tally::lateness;
use super::*;
use crate::LoadArgs;

#[test]
fn a_stream_end_without_a_reason_is_named_by_its_message() {
    use super::tally::end_kind;
    use station_core::client::{Code, StreamEnd};
    use station_core::Reason;
    let h2 = StreamEnd::code_only(
        Code::Unknown,
        "h2 protocol error: stream 1234 error: connection 10.0.0.1:80 reset",
    );
    assert_eq!(
        end_kind(&h2),
        "Unknown: h2 protocol error: stream # error: connection #.#.#.#:# reset"
    );
    let long = StreamEnd::Transport("x".repeat(200));
    assert_eq!(end_kind(&long), format!("transport: {}", "x".repeat(80)));
    // Folded before it is cut: numbers of any length give one label.
    let at = |n: &str| end_kind(&StreamEnd::Transport(format!("{}{n} a|b", "y".repeat(75))));
    assert_eq!(at(" 1"), at(" 123456789"));
    assert_eq!(
        end_kind(&StreamEnd::Protocol("a|b".into())),
        "protocol: a/b"
    );
    // A status with a reason is named by the reason alone.
    let drained = StreamEnd::Status {
        code: Code::Unavailable,
        message: "draining 1".into(),
        reason: Some(Reason::ShuttingDown),
        retry_after: None,
    };
    assert_eq!(end_kind(&drained), "Unavailable SHUTTING_DOWN");
}

#[test]
fn lateness_is_measured_against_the_given_schedule() {
    let t0 = Instant::now();
    let i = Duration::from_millis(100);
    // Attached at index 5: index 5 due at once, index 7 due 200 ms later.
    assert_eq!(
        lateness(t0, 5, i, 5, t0 + Duration::from_millis(3)),
        Duration::from_millis(3)
    );
    assert_eq!(
        lateness(t0, 5, i, 7, t0 + Duration::from_millis(230)),
        Duration::from_millis(30)
    );
    // Early counts as on time.
    assert_eq!(
        lateness(t0, 5, i, 7, t0 + Duration::from_millis(150)),
        Duration::ZERO
    );
    // Interval zero: everything is due at once.
    assert_eq!(
        lateness(t0, 0, Duration::ZERO, 9, t0 + Duration::from_millis(4)),
        Duration::from_millis(4)
    );
}

#[test]
fn merged_tallies_hold_what_one_process_would_have_measured() {
    use tally::{histogram, pairs, percentiles};
    // The same lateness values, recorded in one histogram and split over
    // two workers' tallies (through their JSON, as the parent reads them).
    let mut one = histogram();
    let mut parts = [histogram(), histogram()];
    for v in 1..=10_000u64 {
        let us = v * 7_919 % 250_000 + 1;
        one.record(us).unwrap();
        parts[(v % 2) as usize].record(us).unwrap();
    }
    let mut merged = Tally::default();
    for (k, h) in parts.iter().enumerate() {
        let part = Tally {
            offered: 6,
            started: 5,
            finished: 4,
            completed: 3,
            admitted: 4,
            failed_after_admission: 1,
            admitted_unfinished: 1,
            refused_at_door: 1,
            session_seconds: 1.5,
            failures: vec![format!("worker {k}")],
            numbers: h.len(),
            attach_timeouts: 2,
            stream_ends: std::collections::BTreeMap::from([("transport".to_string(), 1)]),
            elapsed: Duration::from_millis(100 * (k as u64 + 1)),
            cpu_seconds: 0.25,
            lateness: pairs(h),
            opens_per_completed: vec![(1, 2), (k as u64 + 2, 1)],
            ..Tally::default()
        };
        let wire = serde_json::to_string(&part).unwrap();
        merged.merge(serde_json::from_str(&wire).unwrap());
    }
    assert_eq!(
        (
            merged.offered,
            merged.started,
            merged.finished,
            merged.completed
        ),
        (12, 10, 8, 6)
    );
    assert_eq!(
        (
            merged.admitted,
            merged.failed_after_admission,
            merged.admitted_unfinished,
            merged.refused_at_door
        ),
        (8, 2, 2, 2)
    );
    assert_eq!(merged.session_seconds, 3.0);
    assert_eq!(merged.attach_timeouts, 4);
    assert_eq!(merged.failures, ["worker 0", "worker 1"]);
    assert_eq!(merged.numbers, 10_000);
    assert_eq!(merged.stream_ends["transport"], 2);
    assert_eq!(merged.elapsed, Duration::from_millis(200));
    assert_eq!(merged.cpu_seconds, 0.5);
    assert_eq!(merged.lateness, pairs(&one));
    assert_eq!(merged.opens_per_completed, vec![(1, 4), (2, 1), (3, 1)]);
    assert_eq!(percentiles(&merged.lateness), percentiles(&pairs(&one)));
    assert!(merged.first_number.is_empty());
}

fn args(endpoint: String, sessions: usize, duration: Duration) -> LoadArgs {
    LoadArgs {
        endpoint: vec![endpoint],
        sessions,
        connections: 2,
        connection_per_session: false,
        source_addresses: 1,
        count: 5,
        ramp_up_rate: 0,
        duration,
        server_pid: Some(std::process::id()),
        seed: 7,
        json: false,
        processes: 1,
        worker: None,
    }
}

/// A server config at a 10 ms interval, as the tests below start from.
fn config() -> ServerConfig {
    ServerConfig {
        session: station_core::server::Config::new(
            Duration::from_millis(10),
            Duration::from_secs(5),
        ),
        ..ServerConfig::default()
    }
}

/// Serves `cfg` in this process on an OS-picked port: its address, the
/// service (for its counters) and the source address of every connection
/// it accepts.
async fn spawn_server(
    cfg: ServerConfig,
) -> (String, Station<MemoryStore>, Arc<Mutex<Vec<SocketAddr>>>) {
    use tokio_stream::StreamExt;
    let station = Station::new(cfg, MemoryStore::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(
        move |conn: std::io::Result<tokio::net::TcpStream>| {
            if let Ok(conn) = &conn {
                seen.lock().unwrap().push(conn.peer_addr().unwrap());
            }
            conn
        },
    );
    tokio::spawn(serve(station.clone(), incoming, std::future::pending()));
    (addr, station, peers)
}

/// Runs `args` (endpoint filled in) against an in-process server at a
/// 10 ms interval; returns the report and the source address of every
/// connection the server accepted.
async fn run_recorded(mut args: LoadArgs) -> (LoadReport, Vec<SocketAddr>) {
    let (addr, _station, peers) = spawn_server(config()).await;
    args.endpoint = vec![addr];
    let report = measure(&args).await.unwrap();
    let peers = peers.lock().unwrap().clone();
    (report, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_run_completes_and_counts_every_number() {
    let (report, peers) = run_recorded(args(String::new(), 6, Duration::from_secs(60))).await;
    assert_eq!(
        (
            report.sessions,
            report.completed,
            report.failed,
            report.unfinished
        ),
        (6, 6, 0, 0)
    );
    assert_eq!(report.numbers, 30);
    assert_eq!(report.reconnects, 0);
    assert!(report.stream_ends.is_empty(), "{:?}", report.stream_ends);
    assert_eq!(report.interval, Some(Duration::from_millis(10)));
    assert!(report.server.is_some());
    // Six sessions multiplexed over two connections.
    assert_eq!(peers.len(), 2, "{peers:?}");
    let json = report.json();
    assert_eq!(json["completed"], 6);
    assert_eq!(json["admitted"], 6);
    assert_eq!(json["opens_per_completed_session"]["max"], 1.0);
    // Six schedules of 5 numbers at 10 ms.
    let s = json["session_seconds"].as_f64().unwrap();
    assert!((s - 0.3).abs() < 1e-9, "{s}");
    assert!(report.text().contains("6 completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_session_spreads_over_source_addresses() {
    let mut a = args(String::new(), 6, Duration::from_secs(60));
    a.connection_per_session = true;
    a.source_addresses = 3;
    let (report, peers) = run_recorded(a).await;
    assert_eq!(
        (report.completed, report.failed, report.reconnects),
        (6, 0, 0)
    );
    assert_eq!(peers.len(), 6, "one connection per session: {peers:?}");
    let sources: std::collections::BTreeSet<_> = peers.iter().map(|p| p.ip()).collect();
    let expected: std::collections::BTreeSet<IpAddr> = (1..=3)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
        .collect();
    assert_eq!(sources, expected);
}

#[tokio::test]
async fn source_addresses_need_loopback_endpoints() {
    let mut a = args("10.0.0.1:50051".into(), 1, Duration::from_secs(1));
    a.source_addresses = 2;
    let err = measure(&a).await.err().expect("refused");
    assert!(err.contains("loopback"), "{err}");
    for ok in ["127.0.0.1:1", "http://127.0.0.9:2", "localhost:3"] {
        assert!(is_ipv4_loopback(ok), "{ok}");
    }
    for bad in ["[::1]:1", "example.com:2", "10.0.0.1:3"] {
        assert!(!is_ipv4_loopback(bad), "{bad}");
    }
}

#[tokio::test]
async fn sessions_that_cannot_finish_are_reported_unfinished() {
    // A port with nothing listening: clients keep retrying until the run's
    // time limit.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let report = measure(&args(
        format!("127.0.0.1:{port}"),
        3,
        Duration::from_millis(500),
    ))
    .await
    .unwrap();
    assert_eq!(
        (report.sessions, report.completed, report.unfinished),
        (3, 0, 3)
    );
    assert_eq!(report.numbers, 0);
    assert!(report.reconnects >= 3, "each session retried");
    // Every failed attempt is counted by how it ended.
    let ends: u64 = report.stream_ends.values().sum();
    assert!(ends >= report.reconnects, "{:?}", report.stream_ends);
    let json = report.json();
    assert!(json["stream_ends"].is_object());
    // Never admitted, and not for want of room.
    assert_eq!(json["admitted"], 0);
    assert_eq!(json["refused_at_door"], 0);
    assert_eq!(json["never_admitted_otherwise"], 3);
    assert_eq!(json["session_seconds"], 0.0);
}

/// A server that fails every 10th number and then refuses everyone for
/// 300 ms: a session of 30 numbers at 10 ms (300 ms on schedule) loses
/// 300 ms at each of its reconnects, and the server restarts its ticks at
/// each attach. Measured against the latest `Attached`, every number
/// looked on time; against the session's first schedule, the lost time
/// shows, in lateness and in the session's stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_counts_the_time_reconnects_lose() {
    let cfg = ServerConfig {
        fail_every: std::num::NonZeroU64::new(10),
        go_offline_for: Duration::from_millis(300),
        ..config()
    };
    let (addr, _station, _) = spawn_server(cfg).await;
    let mut a = args(addr, 1, Duration::from_secs(30));
    a.count = 30;
    let report = measure(&a).await.unwrap();
    let json = report.json();
    assert_eq!(json["completed"], 1, "{}", report.text());
    assert!(report.reconnects >= 2, "{}", report.text());
    let max = json["lateness_ms"]["max"].as_f64().unwrap();
    assert!(max >= 500.0, "two outages of 300 ms, lateness max {max} ms");
    let stall = json["stall_ms"]["max"].as_f64().unwrap_or(0.0);
    assert!(stall >= 500.0, "stall {stall} ms: {}", report.text());
    assert!(stall <= max + 1.0, "the final number is one of the numbers");
}

/// Sessions the ramp had not reached when `--duration` ended: 20 asked
/// for at 10 a second for 450 ms, so 4 start. The other 16 are reported,
/// and the run fails as it does for unfinished sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_the_ramp_never_started_are_reported_and_fail_the_run() {
    let (addr, _station, _) = spawn_server(config()).await;
    let mut a = args(addr, 20, Duration::from_millis(450));
    a.count = 1;
    a.ramp_up_rate = 10;
    a.server_pid = None;
    let report = measure(&a).await.unwrap();
    let json = report.json();
    assert_eq!(json["sessions"], 20, "{}", report.text());
    assert_eq!(json["started"], 4, "{}", report.text());
    assert_eq!(json["never_started"], 16);
    assert_eq!(json["completed"], 4);
    assert_eq!(json["unfinished"], 0);
    assert!(
        report.text().contains("16 never started"),
        "{}",
        report.text()
    );
    assert_ne!(run(a).await, exit::SUCCESS);
}

/// Two servers, 40 sessions: session `i` starts on endpoint `i mod 2`,
/// so each server opens 20 (before, every session started on the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_attempts_go_round_robin_over_the_endpoints() {
    let (a_addr, a, _) = spawn_server(config()).await;
    let (b_addr, b, _) = spawn_server(config()).await;
    for per_session in [false, true] {
        let mut l = args(String::new(), 40, Duration::from_secs(60));
        l.endpoint = vec![a_addr.clone(), b_addr.clone()];
        l.count = 2;
        l.connection_per_session = per_session;
        let report = measure(&l).await.unwrap();
        assert_eq!(report.completed, 40, "{}", report.text());
    }
    let opened = |s: &Station<MemoryStore>| {
        let s = s.clone();
        async move { s.stats().await.sessions_opened }
    };
    assert_eq!((opened(&a).await, opened(&b).await), (40, 40));
}

/// A listener that accepts connections and never answers: every stream
/// waits for `Attached` until the client's attach timeout (5 s) drops it.
/// Those are attach timeouts, not silent streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_timeouts_are_not_counted_as_silent_drops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        // Bounded: the run opens a handful of connections at most.
        for _ in 0..16 {
            match listener.accept().await {
                Ok((conn, _)) => conns.push(conn),
                Err(_) => break,
            }
        }
        conns
    });
    let report = measure(&args(addr, 1, Duration::from_millis(5_800)))
        .await
        .unwrap();
    held.abort();
    let json = report.json();
    assert_eq!(json["unfinished"], 1, "{}", report.text());
    assert_eq!(json["silent_drops"], 0, "{}", report.text());
    assert_eq!(json["attach_timeouts"], 1, "{}", report.text());
}

/// A server that carries 2 sessions at once, offered 6: the other 4 are
/// refused at the door (RESOURCE_EXHAUSTED) until a place frees. Cut short,
/// 2 are admitted (still running, so failed after admission) and 4 refused;
/// given time, all complete, some after more than one `Open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_at_the_door_are_told_apart_from_failures_after_admission() {
    let cfg = ServerConfig {
        max_streams: 2,
        retry_after: Duration::from_millis(50),
        ..config()
    };
    let (addr, _station, _) = spawn_server(cfg).await;
    let mut a = args(addr, 6, Duration::from_millis(300));
    a.count = 50;
    let short = measure(&a).await.unwrap();
    let json = short.json();
    assert_eq!(json["admitted"], 2, "{}", short.text());
    assert_eq!(json["failed_after_admission"], 2, "{}", short.text());
    assert_eq!(json["admitted_unfinished"], 2, "{}", short.text());
    assert_eq!(json["refused_at_door"], 4, "{}", short.text());
    assert_eq!(json["completed"], 0);
    // The two admitted sessions were carried from their first Attached
    // to the end of the run.
    let s = json["session_seconds"].as_f64().unwrap();
    assert!(s > 0.4 && s <= 0.6, "{s}");

    a.duration = Duration::from_secs(30);
    let long = measure(&a).await.unwrap();
    let json = long.json();
    assert_eq!(json["completed"], 6, "{}", long.text());
    assert_eq!(json["refused_at_door"], 0);
    assert_eq!(json["failed_after_admission"], 0);
    assert_eq!(json["admitted_unfinished"], 0);
    assert!(long.exhausted >= 4, "{}", long.text());
    let opens = &json["opens_per_completed_session"];
    assert!(opens["max"].as_f64().unwrap() >= 2.0, "{opens}");
    assert!(opens["mean"].as_f64().unwrap() > 1.0, "{opens}");
    let s = json["session_seconds"].as_f64().unwrap();
    assert!((s - 3.0).abs() < 1e-9, "six schedules of 50 × 10 ms: {s}");
}

/// The opens the report says were sent are the opens the server saw: each
/// admitted once or refused, by the server's own counters. Six sessions
/// are too few for the open throttle (its reserve), so none is held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opens_reported_sent_are_the_opens_the_server_saw() {
    let cfg = ServerConfig {
        max_streams: 2,
        retry_after: Duration::from_millis(50),
        ..config()
    };
    let (addr, station, _) = spawn_server(cfg).await;
    let mut a = args(addr, 6, Duration::from_secs(30));
    a.count = 20;
    let report = measure(&a).await.unwrap();
    let json = report.json();
    assert_eq!(json["completed"], 6, "{}", report.text());
    let stats = station.stats().await;
    // Every stream began with `Open` (no admitted stream failed, so none
    // resumed): admitted once each, or refused.
    assert_eq!(
        json["reconnects"],
        json["resource_exhausted"],
        "{}",
        report.text()
    );
    assert_eq!(stats.sessions_opened, 6);
    assert_eq!(
        json["opens_sent"],
        stats.sessions_opened + stats.streams_rejected,
        "{}",
        report.text()
    );
    assert!(stats.streams_rejected >= 4, "{stats:?}");
    assert_eq!(json["opens_held_back"], 0);
    assert_eq!(json["held_back_only"], 0);
    let per = json["opens_sent_per_completed_session"].as_f64().unwrap();
    assert!((per - json["opens_sent"].as_f64().unwrap() / 6.0).abs() < 1e-9);
}

#[test]
fn proc_stats_reads_this_process() {
    let s = proc_stats(std::process::id()).expect("/proc is readable");
    assert!(s.rss > 0 && s.peak_rss >= s.rss, "{s:?}");
    assert!(proc_stats(u32::MAX).is_none());
}

/// Four sessions against a server that fails every 10th number and then
/// refuses everyone for 300 ms. The timeline adds up to the run: every
/// number, reconnect, stream end and completion falls in one of its
/// seconds, and the seconds follow each other. Sessions wait between
/// streams, and the lost time shows on the first schedule, not on the
/// schedule of the stream that delivered each number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_adds_up_to_the_run_second_by_second() {
    let cfg = ServerConfig {
        fail_every: std::num::NonZeroU64::new(10),
        go_offline_for: Duration::from_millis(300),
        ..config()
    };
    let (addr, _station, _) = spawn_server(cfg).await;
    let mut a = args(addr, 4, Duration::from_secs(30));
    a.count = 40;
    let report = measure(&a).await.unwrap();
    let json = report.json();
    assert_eq!(json["completed"], 4, "{}", report.text());
    let rows = json["timeline"].as_array().unwrap();
    assert!(rows.len() >= 2, "{rows:?}");
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0]["unix_second"], &pair[1]["unix_second"]);
        assert_eq!(b.as_u64().unwrap(), a.as_u64().unwrap() + 1, "{rows:?}");
    }
    let total = |key: &str| rows.iter().map(|r| r[key].as_u64().unwrap()).sum::<u64>();
    let ends =
        report.stream_ends.values().sum::<u64>() + report.silent_drops + report.attach_timeouts;
    assert_eq!(
        [
            total("numbers"),
            total("reconnects"),
            total("stream_ends"),
            total("completed")
        ],
        [report.numbers, report.reconnects, ends, 4]
    );
    assert!(report.reconnects >= 4, "{}", report.text());
    assert!(
        rows.iter().any(|r| r["waiting"].as_u64().unwrap() > 0),
        "{rows:?}"
    );
    let max = |key: &str| {
        rows.iter()
            .map(|r| r[key]["max"].as_f64().unwrap())
            .fold(0.0, f64::max)
    };
    // Each session lost 300 ms at least three times: on its first
    // schedule its last numbers are late by all of it; on their own
    // stream's, a 10 ms schedule on loopback, none by much.
    assert!(max("lateness_ms") >= 600.0, "{rows:?}");
    assert!(max("stream_lateness_ms") < 250.0, "{rows:?}");
}
