//! The servers' counters against what their clients saw, end to end with
//! the real binary, on every store: memory, one Redis, a Redis Cluster.
//!
//! Real `station client` processes go through injected faults
//! (`--fail-every`, `--go-offline-for`), a refused duplicate `Open`, a
//! takeover, an expiry and, on a shared store, a server killed with
//! SIGKILL. Each client logs (as JSON lines) every stream that attached
//! and every status a server ended one with. From those logs alone the
//! test works out what each server must have counted, by the definitions
//! of `station_net::metrics`, and asserts that each server's `/metrics`
//! and `station stats` say exactly that, server by server (so their sum
//! too): the simulation's counting rule (ARCHITECTURE.md §6, rule 7) with
//! real processes, stores and signals.
//!
//! What a client's log says, and the counter it makes:
//!
//! - its first `attached` (the answer to its `Open`): one session opened,
//!   on that server; every later `attached`: one resume there (a takeover
//!   is a resume that found the session held);
//! - a status with a reason: one rejection by its code; by its reason, a
//!   refused stream if the stream had not attached, else a failed one; a
//!   refused `SESSION_EXPIRED` is an expiry, a `TAKEN_OVER` a takeover;
//! - a verified result: one completion, on the server of its last stream.
//!
//! Statuses without a reason (a killed server's broken connection) come
//! from the transport: no server counts them. A session's first
//! `Attached` could be lost after its `Create` (then a repeated `Open`
//! counts as a resume where the client sees its first attach): no step
//! here can lose one, as faults end streams only at a number and the
//! server is killed only once every stream has attached.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::metrics::{family, samples, scrape_port};
use common::{
    assert_verified_json, dead_port, poll, station, wait_saved, Finished, Proc, Server,
    CLIENT_TIMEOUT, SHORT,
};
use station_net::metrics::{
    COMPLETED, EXPIRED, FAILED, OPENED, REFUSED, REJECTIONS, RESUMED, TAKEN_OVER,
};
use station_net::testkit::{RedisCluster, RedisServer};
use uuid::Uuid;

/// The counters compared: every one a client's log can account for.
const COUNTERS: [&str; 8] = [
    OPENED, RESUMED, COMPLETED, EXPIRED, TAKEN_OVER, REJECTIONS, REFUSED, FAILED,
];

/// Time between numbers on every server here.
const INTERVAL: &str = "20ms";

/// The session TTL of the servers without faults: the expiring client
/// waits it out. Their silence timeout is most of it, so that a stopped
/// client's stream is still held when its session is taken over.
const TTL: Duration = Duration::from_secs(4);
const SILENCE: &str = "3s";

/// How long the takeover's stopped client stays stopped: well past its own
/// silence allowance, and short of its keepalive's 5 s timeout.
const HOLD: Duration = Duration::from_secs(3);

/// Clients of the servers that inject faults, and their numbers.
const FAULT_CLIENTS: usize = 6;
const FAULT_COUNT: u32 = 40;

/// Clients streaming when a server is killed, and their numbers (3 s).
const KILL_CLIENTS: usize = 6;
const KILL_COUNT: u32 = 150;

/// Where the servers keep their sessions.
enum Store<'a> {
    Memory,
    Redis(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Store<'_> {
    /// `--store` and, for Redis, `--redis-prefix`.
    fn args(&self, prefix: &str) -> Vec<String> {
        let url = match self {
            Store::Memory => return vec!["--store".into(), "memory".into()],
            Store::Redis(redis) => redis.url(),
            Store::Cluster(cluster) => cluster.url(),
        };
        vec![
            "--store".into(),
            url,
            "--redis-prefix".into(),
            prefix.into(),
        ]
    }

    /// Whether several servers share the sessions (so a client can move
    /// between them, and survive one's death).
    fn shared(&self) -> bool {
        !matches!(self, Store::Memory)
    }
}

/// A `station server` with its Prometheus exporter.
struct Station {
    server: Server,
    metrics_port: u16,
}

impl Station {
    /// `station server` on `store`, a number every [`INTERVAL`], a lease of
    /// five intervals (streams renew mid-stream, so a takeover is seen at
    /// the next renewal), `/metrics` on a free port, and `extra` flags.
    fn start(name: &str, store: &Store, prefix: &str, extra: &[&str]) -> Station {
        let metrics_port = dead_port();
        let mut args: Vec<String> = [
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--interval",
            INTERVAL,
            "--lease",
            "100ms",
            "--metrics-addr",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("127.0.0.1:{metrics_port}"));
        args.extend(store.args(prefix));
        args.extend(extra.iter().map(|s| s.to_string()));
        let station = Station {
            server: Server::spawn(name, station(&args)),
            metrics_port,
        };
        let what = format!("{name}'s metrics endpoint");
        poll(SHORT, Duration::from_millis(20), &what, || {
            scrape_port(metrics_port).ok_or_else(|| "no answer".to_string())
        });
        station
    }

    fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    fn name(&self) -> &str {
        self.server.proc.name()
    }

    /// The compared counters on `/metrics` (zeros left out: a counter
    /// appears once it first counts).
    fn counters(&self) -> Counts {
        let text = scrape_port(self.metrics_port)
            .unwrap_or_else(|| panic!("{}'s /metrics does not answer", self.name()));
        samples(&text)
            .into_iter()
            .filter(|(key, value)| COUNTERS.contains(&family(key)) && *value != 0.0)
            .map(|(key, value)| (key, value as u64))
            .collect()
    }
}

/// Counter samples by key, as `/metrics` prints them
/// (`station_rejections_total{code="UNAVAILABLE"}`).
type Counts = BTreeMap<String, u64>;

/// What the clients saw, as the counts each server must hold, by endpoint.
#[derive(Default)]
struct Seen(BTreeMap<String, Counts>);

impl Seen {
    fn count(&mut self, endpoint: &str, key: String) {
        *self
            .0
            .entry(endpoint.to_string())
            .or_default()
            .entry(key)
            .or_default() += 1;
    }

    /// Accounts for one client run from its JSON log lines and exit code
    /// (module docs). `opens`: the run began with an `Open` (it had no
    /// state file to resume from).
    fn account(&mut self, run: &Finished, opens: bool) {
        let mut opening = opens;
        // The endpoint of the stream now attached, if any.
        let mut attached: Option<String> = None;
        let mut last_attached: Option<String> = None;
        for line in run.stderr.lines() {
            // Notes about the state file are plain text, not events.
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let message = event["message"].as_str().unwrap_or_default();
            if message == "attached" {
                let endpoint = event["endpoint"]
                    .as_str()
                    .unwrap_or_else(|| panic!("an attach without an endpoint: {line}"));
                let counter = if std::mem::take(&mut opening) {
                    OPENED
                } else {
                    RESUMED
                };
                self.count(endpoint, counter.to_string());
                attached = Some(endpoint.to_string());
                last_attached = Some(endpoint.to_string());
            } else if let Some(rest) = message.strip_prefix("stream to ") {
                let (endpoint, end) = rest
                    .split_once(" ended: ")
                    .unwrap_or_else(|| panic!("unexpected stream end line: {line}"));
                if let Some((code, reason)) = status(end) {
                    self.count(endpoint, format!("{REJECTIONS}{{code=\"{code}\"}}"));
                    let refused = attached.as_deref() != Some(endpoint);
                    let by_reason = if refused { REFUSED } else { FAILED };
                    self.count(endpoint, format!("{by_reason}{{reason=\"{reason}\"}}"));
                    match reason {
                        "SESSION_EXPIRED" if refused => self.count(endpoint, EXPIRED.into()),
                        "TAKEN_OVER" => self.count(endpoint, TAKEN_OVER.into()),
                        _ => {}
                    }
                }
                attached = None;
            } else if message.starts_with("stream went silent") {
                attached = None;
            }
        }
        if run.code == Some(0) {
            let endpoint =
                last_attached.unwrap_or_else(|| panic!("verified without ever attaching:\n{run}"));
            self.count(&endpoint, COMPLETED.to_string());
        }
    }

    fn of(&self, endpoint: &str) -> Counts {
        self.0.get(endpoint).cloned().unwrap_or_default()
    }

    /// One counter summed over every server.
    fn total(&self, key: &str) -> u64 {
        self.0.values().filter_map(|c| c.get(key)).sum()
    }
}

/// The code and reason of a stream end a client printed as
/// `CODE (REASON): message…`; `None` for an end without a reason (the
/// transport's) or a clean one.
fn status(end: &str) -> Option<(&str, &str)> {
    let (code, rest) = end.split_once(' ')?;
    let reason = rest.strip_prefix('(')?.split_once(')')?.0;
    Some((code, reason))
}

/// What `station stats` must say, given the counts of `/metrics`.
fn assert_stats_agree(stats: &serde_json::Value, counts: &Counts, name: &str) {
    let get = |key: &str| counts.get(key).copied().unwrap_or(0);
    let rejected: u64 = counts
        .iter()
        .filter(|(key, _)| family(key) == REJECTIONS)
        .map(|(_, n)| n)
        .sum();
    let want = serde_json::json!({
        "sessions_opened": get(OPENED),
        "sessions_resumed": get(RESUMED),
        "sessions_completed": get(COMPLETED),
        "streams_rejected": rejected,
    });
    let got = serde_json::json!({
        "sessions_opened": stats["sessions_opened"],
        "sessions_resumed": stats["sessions_resumed"],
        "sessions_completed": stats["sessions_completed"],
        "streams_rejected": stats["streams_rejected"],
    });
    assert_eq!(got, want, "{name}: station stats disagree with the clients");
}

/// `station client --json --log-format json` (at `info`, which logs each
/// attach) with an `--endpoint` per station in the order given.
fn client(name: &str, to: &[&Station], count: u32, id: Uuid, state: Option<&Path>) -> Proc {
    let mut args: Vec<String> = ["client", "--json", "--log-format", "json"]
        .map(String::from)
        .to_vec();
    for s in to {
        args.extend(["--endpoint".into(), s.endpoint()]);
    }
    args.extend(["--count".into(), count.to_string()]);
    args.extend(["--client-id".into(), id.to_string()]);
    args.extend(["--give-up-after".into(), "30s".into()]);
    if let Some(path) = state {
        args.extend(["--state-file".into(), path.display().to_string()]);
    }
    let mut cmd = station(&args);
    cmd.env("RUST_LOG", "info");
    Proc::spawn(name, cmd)
}

/// Asserts the client's `--json` result says `code`, with `words` in it.
fn assert_ended(out: &Finished, code: i32, words: &str) {
    out.assert_code(code);
    let result = out.json()["result"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        result.contains(words),
        "expected {words:?} in the result:\n{out}"
    );
}

/// The scenario on `store` (module docs), then the comparison.
fn counters_match_what_clients_saw(store: Store, prefix: &str) {
    let started = Instant::now();
    let shared = store.shared();
    let servers = if shared { 2 } else { 1 };
    let faulty: Vec<Station> = (0..servers)
        .map(|i| {
            let extra = ["--fail-every", "7", "--go-offline-for", "20ms"];
            Station::start(&format!("faulty-{i}"), &store, prefix, &extra)
        })
        .collect();
    let mut clean: Vec<Station> = (0..servers)
        .map(|i| {
            let ttl = humantime::format_duration(TTL).to_string();
            let extra = ["--session-ttl", &ttl, "--silence-timeout", SILENCE];
            Station::start(&format!("clean-{i}"), &store, prefix, &extra)
        })
        .collect();
    let tmp = tempfile::tempdir().expect("temporary directory");
    // Every client run, and whether it began with an `Open`.
    let mut runs: Vec<(Finished, bool)> = Vec::new();

    // Injected faults: every 7th number a server sends fails its stream,
    // and the server then refuses new streams for 20 ms. The clients run
    // while the steps below run on the other servers.
    let mut fault_clients: Vec<Proc> = (0..FAULT_CLIENTS)
        .map(|i| {
            let mut order: Vec<&Station> = faulty.iter().collect();
            order.rotate_left(i % faulty.len());
            let name = format!("fault-client-{i}");
            client(&name, &order, FAULT_COUNT, Uuid::new_v4(), None)
        })
        .collect();

    // Expiry, first half: a client stopped mid-stream (SIGKILL: its
    // server sees the connection go and releases the session).
    let last = clean.len() - 1;
    let expiring = Uuid::new_v4();
    let expiring_state = tmp.path().join("expiring.json");
    let mut e = client(
        "expiring",
        &[&clean[last]],
        500,
        expiring,
        Some(&expiring_state),
    );
    wait_saved(&mut e, &expiring_state, SHORT, |n| n >= 3);
    e.kill();
    let gone_at = Instant::now();
    runs.push((e.finish(SHORT), true));

    // A duplicate `Open`, then a takeover: a client holds its session on
    // the first clean server and is stopped (SIGSTOP: its connection
    // stays open, its stream attached); a second client with a copy of
    // its state file resumes it on the last one (on the memory store, the
    // same one) and completes it.
    let holder_id = Uuid::new_v4();
    let holder_state = tmp.path().join("holder.json");
    let mut holder = client("holder", &[&clean[0]], 100, holder_id, Some(&holder_state));
    wait_saved(&mut holder, &holder_state, SHORT, |n| n >= 3);
    let dup = client("duplicate", &[&clean[0]], 100, holder_id, None).finish(CLIENT_TIMEOUT);
    assert_ended(&dup, 5, "SESSION_EXISTS");
    runs.push((dup, true));
    holder.signal("STOP");
    let stopped_at = Instant::now();
    let taker_state = tmp.path().join("taker.json");
    std::fs::copy(&holder_state, &taker_state).expect("copy the state file");
    let completed_before = clean[last].server.stats()["sessions_completed"]
        .as_u64()
        .expect("sessions_completed");
    let taker =
        client("taker", &[&clean[last]], 100, holder_id, Some(&taker_state)).finish(CLIENT_TIMEOUT);
    assert_verified_json(&taker, 100);
    runs.push((taker, false));
    // Only once the session is deleted may the stopped client read on: it
    // is told TAKEN_OVER, resumes, and hears the session is gone (were it
    // still there, its resume would take it back).
    clean[last]
        .server
        .wait_stats(SHORT, "the taken-over session completed", |s| {
            s["sessions_completed"].as_u64() > Some(completed_before)
        });
    // It wakes well past its silence allowance (2.01 s: 20 ms intervals,
    // 4 s TTL), so its watchdog looks once more and reads the TAKEN_OVER
    // waiting in its socket. Woken near that deadline, it could judge the
    // stream silent before its connection had read the socket.
    std::thread::sleep(HOLD.saturating_sub(stopped_at.elapsed()));
    holder.signal("CONT");
    let held = holder.finish(CLIENT_TIMEOUT);
    assert_ended(&held, 5, "SESSION_UNKNOWN");
    assert!(
        held.stderr.contains("(TAKEN_OVER)"),
        "not taken over:\n{held}"
    );
    runs.push((held, true));

    // A server killed: clients streaming on the first clean server move
    // to the other. Its counters die with it, so they are read just
    // before, while it is quiet (every stream attached, none near its
    // end, no faults): what it held then is what it held at its death.
    let mut killed: Option<(String, Counts, serde_json::Value)> = None;
    if shared {
        let order: Vec<&Station> = clean.iter().collect();
        let mut streaming: Vec<Proc> = (0..KILL_CLIENTS)
            .map(|i| {
                client(
                    &format!("kill-client-{i}"),
                    &order,
                    KILL_COUNT,
                    Uuid::new_v4(),
                    None,
                )
            })
            .collect();
        clean[0]
            .server
            .wait_stats(SHORT, "every client attached", |s| {
                s["attached_streams"] == KILL_CLIENTS as u64
            });
        let counts = clean[0].counters();
        let stats = clean[0].server.stats();
        assert_eq!(clean[0].counters(), counts, "the server was not quiet");
        assert_stats_agree(&stats, &counts, "the server to be killed");
        clean[0].server.proc.kill();
        killed = Some((clean[0].endpoint(), counts, stats));
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        for c in &mut streaming {
            let out = c.finish_by(deadline);
            assert_verified_json(&out, u64::from(KILL_COUNT));
            runs.push((out, true));
        }
    }

    // Expiry, second half: back after the TTL, the client is told its
    // session expired (exit 4). The release after the kill is a moment
    // later than `gone_at`: a second of margin.
    std::thread::sleep((TTL + Duration::from_secs(1)).saturating_sub(gone_at.elapsed()));
    let back = client(
        "expired",
        &[&clean[last]],
        500,
        expiring,
        Some(&expiring_state),
    )
    .finish(CLIENT_TIMEOUT);
    assert_ended(&back, 4, "expired");
    runs.push((back, false));

    let deadline = Instant::now() + CLIENT_TIMEOUT;
    for c in &mut fault_clients {
        let out = c.finish_by(deadline);
        assert_verified_json(&out, u64::from(FAULT_COUNT));
        runs.push((out, true));
    }

    let mut seen = Seen::default();
    for (run, opens) in &runs {
        seen.account(run, *opens);
    }
    // The steps happened as planned (else the comparison proves little).
    let faults = format!("{FAILED}{{reason=\"INJECTED_FAULT\"}}");
    assert!(
        seen.total(&faults) >= FAULT_CLIENTS as u64,
        "too few faults"
    );
    assert_eq!(seen.total(TAKEN_OVER), 1, "one takeover");
    assert_eq!(seen.total(EXPIRED), 1, "one expiry");
    for reason in ["SESSION_EXISTS", "SESSION_UNKNOWN"] {
        assert_eq!(seen.total(&format!("{REFUSED}{{reason=\"{reason}\"}}")), 1);
    }

    // Every server's counters, once settled (on Redis a completion is
    // counted when its delete is confirmed, which may be a moment after
    // the client exits), against the clients' logs.
    let mut report = String::new();
    if let Some((endpoint, counts, stats)) = &killed {
        assert_eq!(
            counts,
            &seen.of(endpoint),
            "the killed server (read before the kill)"
        );
        report += &format!("  killed {endpoint}: {counts:?}\n");
        assert_stats_agree(stats, counts, "the killed server");
    }
    let killed_endpoint = killed.as_ref().map(|k| k.0.clone());
    let alive = faulty
        .iter()
        .chain(&clean)
        .filter(|s| Some(s.endpoint()) != killed_endpoint);
    for s in alive {
        let want = seen.of(&s.endpoint());
        let what = format!("{}'s /metrics to match its clients", s.name());
        let counts = poll(SHORT, Duration::from_millis(50), &what, || {
            let counts = s.counters();
            match counts == want {
                true => Ok(counts),
                false => Err(format!("\n  /metrics: {counts:?}\n  clients: {want:?}")),
            }
        });
        assert_stats_agree(&s.server.stats(), &counts, s.name());
        report += &format!("  {} {}: {counts:?}\n", s.name(), s.endpoint());
    }
    let totals: Counts = seen
        .0
        .values()
        .flatten()
        .fold(Counts::new(), |mut t, (k, n)| {
            *t.entry(k.clone()).or_default() += n;
            t
        });
    eprintln!(
        "{} client runs; counters equal to what the clients saw, per server:\n{report}\
         summed: {totals:?}\n{:?} in all",
        runs.len(),
        started.elapsed()
    );
}

#[test]
fn counters_equal_what_clients_saw_on_memory() {
    counters_match_what_clients_saw(Store::Memory, "");
}

#[test]
fn counters_equal_what_clients_saw_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    counters_match_what_clients_saw(Store::Redis(&redis), "truth:");
}

#[test]
fn counters_equal_what_clients_saw_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    counters_match_what_clients_saw(Store::Cluster(&cluster), "truth-cluster:");
}
