//! A rolling restart under load, with the real binary: two servers share
//! one Redis, 300 clients each with its own connection (280 sessions of
//! `station load --connection-per-session` and 20 `station client`
//! processes, whose logs show each client's moves) stream at 100 ms a
//! number, and the servers are restarted one at a time mid-stream:
//! SIGTERM, the server drains and exits, it starts again on the same port,
//! then the same for the other.
//!
//! The drain (README, "Deploying and draining"): the stopping server
//! refuses new streams and ends each attached one `SHUTTING_DOWN` at a
//! random moment within `--drain-period`, and its clients resume on the
//! other server. So every session completes, and each client moves once
//! per restart of a server it was on: a client that began on A moves to B
//! when A restarts and back to A when B does (2), one that began on B
//! moves once (1); no stream ends any other way.
//!
//! Figures (reconnects; lateness of every number against each session's
//! first schedule, p99) are measured before, during and after the restart
//! as three runs of the same 300 clients, and printed.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{counter, station, Finished, Proc, Server};
use station_net::testkit::RedisServer;

/// Time between two numbers.
const INTERVAL: Duration = Duration::from_millis(100);
/// `--drain-period`: ten intervals, so the moves spread visibly.
const DRAIN: Duration = Duration::from_secs(1);
/// Sessions run by `station load`, and `station client` processes.
const LOAD_SESSIONS: usize = 280;
const CLIENTS: usize = 20;
const ALL: u64 = (LOAD_SESSIONS + CLIENTS) as u64;

/// `station server` on `redis` on `port` (0: any), at [`INTERVAL`], with
/// a drain of [`DRAIN`], logging at `info`.
fn start(name: &str, redis: &RedisServer, port: u16) -> Server {
    let mut cmd = station([
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--store",
        &redis.url(),
        "--redis-prefix",
        "rolling:",
        "--interval",
        &humantime::format_duration(INTERVAL).to_string(),
        "--drain-period",
        &humantime::format_duration(DRAIN).to_string(),
    ]);
    cmd.env("RUST_LOG", "info");
    Server::spawn(name, cmd)
}

/// Stops `server` with SIGTERM, waits (bounded) for it to drain and exit
/// 0, and starts it again on the same port. Returns when the SIGTERM was
/// sent, and how long the server took to exit.
fn restart(server: &mut Server, redis: &RedisServer) -> (SystemTime, Duration) {
    let name = server.proc.name().to_string();
    let sent = SystemTime::now();
    let clock = Instant::now();
    server.proc.terminate();
    // The drain, then up to 5 s for what is left, then the exit.
    let out = server.proc.finish(DRAIN + Duration::from_secs(10));
    let exited = clock.elapsed();
    out.assert_code(0);
    assert!(out.stderr.contains("stopped"), "{out}");
    *server = start(&format!("{name}, restarted"), redis, server.port);
    (sent, exited)
}

/// Streams attached to `a` and `b` together.
fn attached(a: &Server, b: &Server) -> u64 {
    counter(&a.stats(), "attached_streams") + counter(&b.stats(), "attached_streams")
}

/// One client's moves, from its JSON log lines: for each stream the
/// server ended `SHUTTING_DOWN`, when it ended (the client's clock) and
/// how long until the next stream attached.
fn moves(out: &Finished) -> Vec<(SystemTime, Option<Duration>)> {
    let mut moves: Vec<(SystemTime, Option<Duration>)> = Vec::new();
    for line in out.stderr.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = event["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .unwrap_or_else(|| panic!("no timestamp in {line}"));
        let message = event["message"].as_str().unwrap_or_default();
        if message.contains("ended: UNAVAILABLE (SHUTTING_DOWN)") {
            moves.push((at, None));
        } else if message == "attached" {
            if let Some((ended, gap @ None)) = moves.last_mut() {
                *gap = at.duration_since(*ended).ok();
            }
        }
    }
    moves
}

/// What one run of the 300 clients gave.
struct Run {
    label: &'static str,
    /// `station load --json`'s report.
    load: serde_json::Value,
    /// Each `station client`'s reconnects, and whether it began on A.
    reconnects: Vec<(u64, bool)>,
    /// Each `station client`'s moves ([`moves`]).
    moves: Vec<(SystemTime, Option<Duration>)>,
}

impl Run {
    fn summary(&self) -> String {
        let l = &self.load;
        let per_client: Vec<u64> = self.reconnects.iter().map(|r| r.0).collect();
        let mut gaps: Vec<Duration> = self.moves.iter().filter_map(|m| m.1).collect();
        gaps.sort();
        let gap = |q: f64| {
            gaps.get(((gaps.len() as f64 * q) as usize).min(gaps.len().saturating_sub(1)))
                .map_or("-".to_string(), |g| format!("{} ms", g.as_millis()))
        };
        format!(
            "{:<7} load: {} completed, {} reconnects ({:.2} per session), ends {}, lateness ms \
             p50 {} p99 {} max {}, stall ms p99 {}; clients' reconnects {per_client:?}, \
             time from SHUTTING_DOWN to the next attach p50 {} max {}",
            self.label,
            l["completed"],
            l["reconnects"],
            l["reconnects"].as_f64().unwrap_or(0.0) / LOAD_SESSIONS as f64,
            l["stream_ends"],
            l["lateness_ms"]["p50"],
            l["lateness_ms"]["p99"],
            l["lateness_ms"]["max"],
            l["stall_ms"]["p99"],
            gap(0.5),
            gap(1.0),
        )
    }
}

/// Runs the 300 clients, `count` numbers each, on `a` and `b` (load's
/// sessions alternate their first server, and so do the clients), calls
/// `during` once they are started, and waits for them all: every session
/// must verify.
fn run(label: &'static str, ends: [String; 2], count: u32, during: impl FnOnce()) -> Run {
    let mut load = Proc::spawn(
        format!("load ({label})"),
        station([
            "load",
            "--endpoint",
            &ends.join(","),
            "--connection-per-session",
            "--sessions",
            &LOAD_SESSIONS.to_string(),
            "--count",
            &count.to_string(),
            "--duration",
            "60s",
            "--json",
        ]),
    );
    let mut clients: Vec<Proc> = (0..CLIENTS)
        .map(|i| {
            let [first, second] = if i % 2 == 0 {
                [&ends[0], &ends[1]]
            } else {
                [&ends[1], &ends[0]]
            };
            let mut cmd = station([
                "client",
                "--json",
                "--log-format",
                "json",
                "--endpoint",
                first,
                "--endpoint",
                second,
                "--count",
                &count.to_string(),
                "--give-up-after",
                "30s",
            ]);
            cmd.env("RUST_LOG", "info");
            Proc::spawn(format!("client {i} ({label})"), cmd)
        })
        .collect();
    during();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut run = Run {
        label,
        load: serde_json::Value::Null,
        reconnects: Vec::new(),
        moves: Vec::new(),
    };
    for (i, client) in clients.iter_mut().enumerate() {
        let out = client.finish_by(deadline);
        let json = common::assert_verified_json(&out, u64::from(count));
        let reconnects = json["reconnects"].as_u64().expect("reconnects");
        run.reconnects.push((reconnects, i % 2 == 0));
        run.moves.extend(moves(&out));
    }
    let out = load.finish_by(deadline);
    out.assert_code(0);
    run.load = out.json();
    assert_eq!(run.load["completed"], LOAD_SESSIONS as u64, "{out}");
    assert_eq!(run.load["failed"], 0, "{out}");
    run
}

#[test]
fn rolling_restart_under_300_clients_moves_each_once_per_restart() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let started = Instant::now();
    let mut a = start("server A", &redis, 0);
    let mut b = start("server B", &redis, 0);
    // Each server restarts on its own port: the clients' endpoints hold.
    let endpoints = [a.endpoint(), b.endpoint()];

    let before = run("before", endpoints.clone(), 30, || {});

    // 15 s of numbers: the restarts take about half of it.
    let mut stops = Vec::new();
    let during = run("during", endpoints.clone(), 150, || {
        let what = "every session attached";
        common::poll(
            Duration::from_secs(30),
            Duration::from_millis(100),
            what,
            || match attached(&a, &b) {
                ALL => Ok(()),
                n => Err(format!("{n} attached")),
            },
        );
        stops.push(restart(&mut a, &redis));
        // A's clients have all moved to B before B stops, and all move
        // back: every session was mid-stream at both restarts.
        b.wait_stats(Duration::from_secs(20), "every session on B", |s| {
            s["attached_streams"] == ALL
        });
        stops.push(restart(&mut b, &redis));
        a.wait_stats(Duration::from_secs(20), "every session back on A", |s| {
            s["attached_streams"] == ALL
        });
    });
    let after = run("after", endpoints, 30, || {});

    for r in [&before, &during, &after] {
        eprintln!("{}", r.summary());
    }
    let exits: Vec<Duration> = stops.iter().map(|s| s.1).collect();
    eprintln!("from SIGTERM to exit: {exits:?}");
    let stops: Vec<SystemTime> = stops.iter().map(|s| s.0).collect();
    eprintln!("{:?} in all", started.elapsed());

    // Each client moved once per restart of a server it was on, always
    // told SHUTTING_DOWN, never cut off or sent anywhere twice.
    for &(reconnects, began_on_a) in &during.reconnects {
        let bound = if began_on_a { 2 } else { 1 };
        assert!(
            reconnects <= bound,
            "a client that began on {} reconnected {reconnects} times: {during:?}",
            if began_on_a { "A" } else { "B" },
            during = during.reconnects
        );
    }
    // Load session i begins on endpoint i mod 2: half move twice, half
    // once.
    let load_bound = (LOAD_SESSIONS as u64).div_ceil(2) * 2 + LOAD_SESSIONS as u64 / 2;
    let load_reconnects = during.load["reconnects"].as_u64().expect("reconnects");
    assert!(
        load_reconnects <= load_bound,
        "{load_reconnects} reconnects for {LOAD_SESSIONS} sessions (at most {load_bound})"
    );
    let ends = during.load["stream_ends"].as_object().expect("stream_ends");
    assert!(
        !ends.is_empty() && ends.keys().all(|k| k == "Unavailable SHUTTING_DOWN"),
        "streams ended otherwise than by the drain: {ends:?}"
    );
    // Each drain ended its streams within the drain period (plus two
    // seconds for a busy machine), at moments spread over it rather than
    // all in one interval: 10 or more ends drawn uniformly over 1 s fall
    // within 300 ms of each other with a probability near 1e-4; ended all
    // at once, as before drains, they fall within a few milliseconds.
    for (i, &stop) in stops.iter().enumerate() {
        let next = stops.get(i + 1).copied();
        let at: Vec<Duration> = during
            .moves
            .iter()
            .filter(|(t, _)| *t >= stop && next.is_none_or(|n| *t < n))
            .map(|(t, _)| t.duration_since(stop).expect("after the stop"))
            .collect();
        let (first, last) = (at.iter().min(), at.iter().max());
        let (Some(&first), Some(&last)) = (first, last) else {
            panic!("no client saw drain {i} end its stream");
        };
        assert!(last <= DRAIN + Duration::from_secs(2), "drain {i}: {at:?}");
        assert!(
            last - first >= 3 * INTERVAL,
            "drain {i} ended its clients' streams within {:?}: {at:?}",
            last - first
        );
    }
    let total_moves = during.moves.len();
    let expected: u64 = during.reconnects.iter().map(|r| r.0).sum();
    assert_eq!(
        total_moves as u64, expected,
        "every reconnect followed a drain"
    );
}
