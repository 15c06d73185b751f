//! Faults under load, with real processes and real kernel networking. In
//! each case `station load` runs [`SESSIONS`] sessions of [`COUNT`]
//! numbers at [`INTERVAL`] against one `station server`; once every
//! session is attached and the run is on time, one fault is put in place,
//! held, and removed:
//!
//! - the server's Redis frozen (`SIGSTOP`, then `SIGCONT`);
//! - the server's Redis starved of CPU: pinned (`taskset`) to one core
//!   with busy loops, at the lowest priority (`renice 19`);
//! - the server paused (`SIGSTOP`);
//! - a silent network blackhole between the load and the server, each on
//!   a host of its own (a network namespace, `common/netns.rs`), made with
//!   `iptables -j DROP` (root only: skipped, loudly, where `ip netns add`
//!   is refused, and a failure instead when `CI` is set).
//!
//! Each case asserts that no session failed and that the run was back on
//! time within [`RECOVERY_LIMIT`] of the fault's end: read from the load's
//! per-second timeline (`bin/src/load/timeline.rs`), the first second
//! after it in which numbers arrived, no session was without an attached
//! stream, and the p99 lateness of the numbers on their stream's schedule
//! was under [`ON_TIME`]. It prints failed sessions, reconnects per
//! session, that recovery time and the timeline around the fault (run with
//! `-- --nocapture` to see them on success); the server pause also prints
//! the store operations its resumes added, against a run without a fault.
//! `bench/run.sh faults` runs the same cases at full scale.
//!
//! The cases run one at a time: they measure time, and two at once on a
//! small machine would measure each other.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::netns::Hosts;
use common::{dead_port, metrics, poll, station_in, Finished, Proc, Server, SHORT};
use station_net::testkit::RedisServer;

/// Sessions in every run.
const SESSIONS: usize = 2_000;
/// Numbers per session: 30 s of schedule, so every session is still
/// running [`RECOVERY_LIMIT`] after the longest fault's end.
const COUNT: u32 = 300;
/// Time between two numbers.
const INTERVAL: &str = "100ms";
/// Sessions started per second: all started within 2 s.
const RAMP_UP_RATE: u32 = 1_000;
/// HTTP/2 connections the sessions share.
const CONNECTIONS: u32 = 16;
/// How long a fault is held.
const HOLD: Duration = Duration::from_secs(5);
/// How long Redis is starved of CPU.
const STARVE: Duration = Duration::from_secs(8);
/// On time: p99 lateness under this.
const ON_TIME: f64 = 50.0;
/// Back on time within this of a fault's end.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// Steady running before a fault: three whole seconds of the timeline at
/// least, to show whether the run was on time before it.
const STEADY: Duration = Duration::from_millis(3_500);
/// What the resumes after a server pause may add to a run's store
/// operations, at most (a target the server pause case prints against).
const RESUMES_MAY_ADD: f64 = 0.10;
/// Bound on a load run (its `--duration`), and on waiting for it.
const RUN_LIMIT: Duration = Duration::from_secs(80);

/// One case at a time (module docs).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Unix time now, in seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A private Redis without persistence (a Redis under load that writes an
/// append-only file measures the disk too).
fn redis() -> Option<RedisServer> {
    RedisServer::start_with(&["--appendonly", "no"])
}

/// `station server` on `redis` (or the memory store), on `host` in
/// `netns` if given, with its defaults but the interval, and its metrics
/// on a free loopback port (in its own namespace: only reachable from
/// there).
fn server(redis: Option<&RedisServer>, host: IpAddr, netns: Option<&str>) -> (Server, SocketAddr) {
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, dead_port()));
    let (host_arg, metrics_arg) = (host.to_string(), metrics.to_string());
    let mut args = vec![
        "server",
        "--host",
        &host_arg,
        "--port",
        "0",
        "--interval",
        INTERVAL,
        "--metrics-addr",
        &metrics_arg,
    ];
    let url = redis.map(RedisServer::url);
    if let Some(url) = &url {
        args.extend(["--store", url, "--redis-prefix", "faults:"]);
    }
    let mut cmd = station_in(netns, &args);
    cmd.env("RUST_LOG", "info");
    (Server::spawn_in("server", cmd, host, netns), metrics)
}

/// The store operations `server` has done so far (`None` before the first:
/// the exporter lists the counter only then).
fn store_ops(metrics: SocketAddr) -> Option<u64> {
    let page = metrics::scrape(metrics)?;
    metrics::sum(&page, "station_store_latency_seconds_count").map(|n| n as u64)
}

/// What one run under load showed.
struct Outcome {
    case: String,
    report: serde_json::Value,
    /// When every session was attached (Unix seconds).
    attached: f64,
    /// When the fault was put in place and removed.
    fault: Option<(f64, f64)>,
    server: Finished,
    /// The server's store operations over the run, if it was reachable.
    store_ops: Option<u64>,
}

/// One second of the load's timeline.
struct Second {
    unix: u64,
    numbers: u64,
    waiting: u64,
    reconnects: u64,
    stream_ends: u64,
    completed: u64,
    /// p99 lateness on the delivering stream's schedule, and on the
    /// session's first schedule, ms.
    stream_p99: f64,
    p99: f64,
}

impl Second {
    fn on_time(&self) -> bool {
        self.numbers > 0 && self.waiting == 0 && self.stream_p99 < ON_TIME
    }
}

impl Outcome {
    fn count(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key:?} in the load report: {}", self.report))
    }

    fn failed(&self) -> u64 {
        SESSIONS as u64 - self.count("completed")
    }

    fn reconnects_per_session(&self) -> f64 {
        self.count("reconnects") as f64 / SESSIONS as f64
    }

    fn timeline(&self) -> Vec<Second> {
        let rows = self.report["timeline"].as_array().expect("a timeline");
        rows.iter()
            .map(|r| {
                let n = |k: &str| r[k].as_u64().expect("a count");
                Second {
                    unix: n("unix_second"),
                    numbers: n("numbers"),
                    waiting: n("waiting"),
                    reconnects: n("reconnects"),
                    stream_ends: n("stream_ends"),
                    completed: n("completed"),
                    stream_p99: r["stream_lateness_ms"]["p99"].as_f64().expect("p99"),
                    p99: r["lateness_ms"]["p99"].as_f64().expect("p99"),
                }
            })
            .collect()
    }

    /// The first second in which a session completed: after it, fewer
    /// numbers arrive by design, so nothing later is judged.
    fn horizon(&self) -> u64 {
        let timeline = self.timeline();
        timeline
            .iter()
            .find(|s| s.completed > 0)
            .or(timeline.last())
            .map_or(0, |s| s.unix)
    }

    /// How many whole seconds from every session's attaching until the
    /// fault (without one, until sessions began to complete) were on
    /// time, and the late ones. On a shared machine other processes make
    /// a second late now and then; a machine that cannot carry the load
    /// makes most of them late, and then a fault's effect cannot be told
    /// apart: failure messages say so.
    fn before_fault(&self) -> String {
        let until = self.fault.map_or(self.horizon() as f64, |(start, _)| start);
        let seconds: Vec<Second> = self
            .timeline()
            .into_iter()
            .filter(|s| s.unix as f64 >= self.attached && (s.unix + 1) as f64 <= until)
            .collect();
        let late: Vec<String> = seconds
            .iter()
            .filter(|s| !s.on_time())
            .map(|s| {
                format!(
                    "{}: p99 {:.1} ms, {} waiting",
                    s.unix, s.stream_p99, s.waiting
                )
            })
            .collect();
        format!(
            "{} of {} whole seconds before the fault on time (late: {late:?})",
            seconds.len() - late.len(),
            seconds.len()
        )
    }

    /// Time from the fault's end to the start of the first second, wholly
    /// or partly after it, that was on time ([`Second::on_time`]); zero if
    /// the second the fault ended in already was. `Err` if none was before
    /// sessions began to complete.
    fn recovery(&self) -> Result<Duration, String> {
        let (_, end) = self.fault.expect("a run with a fault");
        let horizon = self.horizon();
        self.timeline()
            .iter()
            .filter(|s| (s.unix + 1) as f64 > end && s.unix < horizon)
            .find(|s| s.on_time())
            .map(|s| Duration::from_secs_f64((s.unix as f64 - end).max(0.0)))
            .ok_or_else(|| {
                format!("not on time again before sessions began to complete ({horizon})")
            })
    }

    /// Prints the figures and the timeline from a little before the fault
    /// to the horizon.
    fn print(&self) {
        let recovery = match self.fault.map(|_| self.recovery()) {
            Some(Ok(d)) => format!(
                "back on time {:.1} s after the fault's end",
                d.as_secs_f64()
            ),
            Some(Err(e)) => e,
            None => "no fault".into(),
        };
        println!(
            "\n=== {}: {} sessions, {} failed, {} reconnects ({:.3} per session), \
             {recovery}; lateness p99 {:.1} ms max {:.1} ms on first schedules, stall p99 {:.1} ms; \
             store operations {}",
            self.case,
            SESSIONS,
            self.failed(),
            self.count("reconnects"),
            self.reconnects_per_session(),
            self.report["lateness_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            self.report["lateness_ms"]["max"].as_f64().unwrap_or(f64::NAN),
            self.report["stall_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            self.store_ops
                .map_or("unknown".to_string(), |n| n.to_string()),
        );
        println!(
            "streams ended: {} by the server or transport, {} dropped silent by their client, \
             {} attach timeouts",
            self.report["stream_ends"],
            self.count("silent_drops"),
            self.count("attach_timeouts")
        );
        println!("{}", self.before_fault());
        // Seconds counted from the fault's end (or every session's
        // attaching).
        let (start, end) = self.fault.unwrap_or((self.attached, self.attached));
        println!("  second  numbers  waiting  reconnects  stream ends  completed  p99 stream ms  p99 first ms");
        let from = (start - 3.0) as u64;
        let to = self.horizon() + 1;
        for s in self
            .timeline()
            .iter()
            .filter(|s| s.unix >= from && s.unix <= to)
        {
            let mark =
                if self.fault.is_some() && (s.unix + 1) as f64 > start && (s.unix as f64) < end {
                    " fault"
                } else {
                    ""
                };
            println!(
                "  {:>+6.1}  {:>7}  {:>7}  {:>10}  {:>11}  {:>9}  {:>13.1}  {:>12.1}{mark}",
                s.unix as f64 - end,
                s.numbers,
                s.waiting,
                s.reconnects,
                s.stream_ends,
                s.completed,
                s.stream_p99,
                s.p99
            );
        }
    }

    /// Asserts the promises: every session completed, and the run was
    /// back on time within [`RECOVERY_LIMIT`] of the fault's end.
    fn assert_recovered(&self) {
        assert_eq!(self.failed(), 0, "sessions failed:\n{self}");
        let recovery = self.recovery().unwrap_or_else(|e| panic!("{e}:\n{self}"));
        assert!(
            recovery <= RECOVERY_LIMIT,
            "back on time only {recovery:?} after the fault's end:\n{self}"
        );
    }
}

impl std::fmt::Display for Outcome {
    /// What a failure shows: the load's report but its timeline (printed
    /// above), how the run did before the fault, and the server's
    /// warnings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut report = self.report.clone();
        report["timeline"] = serde_json::Value::Null;
        writeln!(f, "load report: {report}")?;
        writeln!(f, "{}", self.before_fault())?;
        writeln!(f, "server exit code {:?}; its warnings:", self.server.code)?;
        let warnings: Vec<&str> = self
            .server
            .stderr
            .lines()
            .filter(|l| !l.contains(" INFO ") && !l.contains(" DEBUG "))
            .collect();
        for line in warnings.iter().take(40) {
            writeln!(f, "  {line}")?;
        }
        if warnings.len() > 40 {
            writeln!(f, "  … {} more", warnings.len() - 40)?;
        }
        Ok(())
    }
}

/// Runs the load against `server` (from namespace `load_ns`, if given);
/// once every session is attached and [`STEADY`] has passed, puts a fault
/// in place with `put` for `hold`, then removes it (drops it: a fault
/// undoes itself on drop, also when a test panics); waits for the load to
/// end.
fn under_load<F>(
    case: &str,
    mut server: Server,
    metrics: SocketAddr,
    load_ns: Option<&str>,
    fault: Option<(Duration, &dyn Fn() -> F)>,
) -> Outcome {
    let endpoint = server.endpoint();
    let pid = server.proc.id().to_string();
    let (sessions, count) = (SESSIONS.to_string(), COUNT.to_string());
    let (ramp, connections) = (RAMP_UP_RATE.to_string(), CONNECTIONS.to_string());
    let duration = format!("{}s", RUN_LIMIT.as_secs());
    let args = [
        "load",
        "--endpoint",
        &endpoint,
        "--sessions",
        &sessions,
        "--count",
        &count,
        "--ramp-up-rate",
        &ramp,
        "--connections",
        &connections,
        "--duration",
        &duration,
        "--server-pid",
        &pid,
        "--json",
    ];
    let mut load = Proc::spawn(format!("load ({case})"), station_in(load_ns, args));
    let all = format!("{SESSIONS} attached streams");
    poll(
        Duration::from_secs(30),
        Duration::from_millis(250),
        &all,
        || {
            if let Some(done) = load.try_exited() {
                panic!("the load ended before every session attached:\n{done}");
            }
            let stats = server.stats();
            match stats["attached_streams"].as_u64() {
                Some(n) if n >= SESSIONS as u64 => Ok(()),
                _ => Err(stats.to_string()),
            }
        },
    );
    let attached = unix_now();
    std::thread::sleep(STEADY);
    let window = fault.map(|(hold, put)| {
        let start = unix_now();
        let fault = put();
        std::thread::sleep(hold);
        drop(fault);
        (start, unix_now())
    });
    let out = load.finish(RUN_LIMIT + SHORT);
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("the load printed no JSON report ({e}):\n{out}"));
    // A session's record goes once its final acknowledgement is in: wait
    // (bounded) for the deletes to be counted.
    poll(SHORT, Duration::from_millis(200), "no live session", || {
        let stats = server.stats();
        if stats["live_sessions"] == 0 {
            Ok(())
        } else {
            Err(stats.to_string())
        }
    });
    // The metrics of a server in another namespace are out of reach.
    let store_ops = server.netns.is_none().then(|| store_ops(metrics)).flatten();
    server.proc.kill();
    let outcome = Outcome {
        case: case.to_string(),
        report,
        attached,
        fault: window,
        server: server.proc.finish(SHORT),
        store_ops,
    };
    outcome.print();
    outcome
}

/// `kill -SIG pid`.
fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill(1)")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A process stopped (`SIGSTOP`): frozen with its sockets open, as a
/// process the kernel does not schedule, a VM paused, or a long GC pause
/// looks to its peers. Continued on drop.
struct Stopped {
    pid: u32,
}

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal("STOP", pid);
        Stopped { pid }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }
}

/// Whether `program` runs (is installed); with `CI` set a missing one is
/// an error, otherwise the test says loudly that it skips.
fn have(program: &str, args: &[&str]) -> bool {
    let ran = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ran {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing but CI is set: install it (util-linux)"
        );
        eprintln!("\n*** SKIPPING: {program} is missing (set CI=1 to make this an error). ***\n");
    }
    ran
}

/// Redis starved of CPU: every thread of it pinned to one core, where
/// busy loops run, and its priority set to the lowest (nice 19): it gets
/// about 1 % of that core. Undone on drop: the loops killed, Redis back
/// to every core at nice 0.
struct Starved {
    redis: u32,
    loops: Vec<Child>,
}

/// Busy loops beside the starved Redis.
const BUSY_LOOPS: usize = 2;

impl Starved {
    fn new(redis: u32) -> Starved {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The last core: the load and the server get the others, where
        // the scheduler moves them.
        let core = (cores - 1).to_string();
        let mut starved = Starved {
            redis,
            loops: Vec::new(),
        };
        for _ in 0..BUSY_LOOPS {
            let child = Command::new("taskset")
                .args(["-c", &core, "sh", "-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .expect("run taskset");
            starved.loops.push(child);
        }
        let pid = redis.to_string();
        run_ok("taskset", &["-a", "-p", "-c", &core, &pid]);
        run_ok("renice", &["-n", "19", "-p", &pid]);
        starved
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        for child in &mut self.loops {
            let _ = child.kill();
            let _ = child.wait();
        }
        let pid = self.redis.to_string();
        let all = format!(
            "0-{}",
            std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
        );
        let _ = Command::new("renice")
            .args(["-n", "0", "-p", &pid])
            .output();
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", &all, &pid])
            .output();
    }
}

/// Runs `program args`, panicking with its output if it fails.
fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same load on Redis without a fault, run once for every test that
/// needs it; `None` (said loudly) without Redis.
fn reference() -> Option<&'static Outcome> {
    static REFERENCE: OnceLock<Option<Outcome>> = OnceLock::new();
    let reference = REFERENCE.get_or_init(|| {
        let redis = redis()?;
        let (server, metrics) = server(Some(&redis), loopback(), None);
        Some(under_load::<()>(
            "no fault, on Redis",
            server,
            metrics,
            None,
            None,
        ))
    });
    reference.as_ref()
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

#[test]
fn redis_frozen_for_5s_under_load() {
    let _one = one_at_a_time();
    let Some(redis) = redis() else { return };
    let redis_pid = redis.pid().expect("running");
    let (server, metrics) = server(Some(&redis), loopback(), None);
    let freeze = || Stopped::new(redis_pid);
    let outcome = under_load(
        "Redis frozen (SIGSTOP) 5 s",
        server,
        metrics,
        None,
        Some((HOLD, &freeze)),
    );
    outcome.assert_recovered();
}

#[test]
fn redis_starved_of_cpu_under_load() {
    let _one = one_at_a_time();
    if !have("taskset", &["-V"]) || !have("renice", &["--version"]) {
        return;
    }
    let Some(redis) = redis() else { return };
    let redis_pid = redis.pid().expect("running");
    let (server, metrics) = server(Some(&redis), loopback(), None);
    let starve = || Starved::new(redis_pid);
    let outcome = under_load(
        &format!("Redis starved of CPU {} s", STARVE.as_secs()),
        server,
        metrics,
        None,
        Some((STARVE, &starve)),
    );
    outcome.assert_recovered();
}

/// The server paused: every client's stream falls silent, so every
/// session resumes. Prints what those resumes cost the store, against
/// the same load without a fault.
#[test]
fn server_paused_for_5s_under_load() {
    let _one = one_at_a_time();
    let Some(reference) = reference() else { return };
    let Some(redis) = redis() else { return };
    let (server, metrics) = server(Some(&redis), loopback(), None);
    let server_pid = server.proc.id();
    let pause = || Stopped::new(server_pid);
    let outcome = under_load(
        "server paused (SIGSTOP) 5 s",
        server,
        metrics,
        None,
        Some((HOLD, &pause)),
    );
    // Printed, not asserted: the resumes cost about three operations
    // each, on sessions that cost seven without a fault, so the figure is
    // steady (+41 to +47 % so far) and well over what is aimed at.
    match (outcome.store_ops, reference.store_ops) {
        (Some(with), Some(without)) => {
            let added = (with as f64 - without as f64) / without as f64;
            println!(
                "store operations: {with} with the pause, {without} without: the resumes added \
                 {:+} ({:+.1} %; aimed at: at most {:+.0} %, {})",
                with as i64 - without as i64,
                100.0 * added,
                100.0 * RESUMES_MAY_ADD,
                if added <= RESUMES_MAY_ADD {
                    "met"
                } else {
                    "missed"
                }
            )
        }
        other => println!("store operations unknown: {other:?}"),
    }
    outcome.assert_recovered();
}

/// The server and the load on hosts of their own (network namespaces
/// joined by a veth pair), and every packet between them dropped, both
/// ways, for 5 s: no RST, no ICMP, nothing to tell either side but its
/// own timers.
#[test]
fn network_blackhole_for_5s_under_load() {
    let _one = one_at_a_time();
    let Some(hosts) = Hosts::create() else { return };
    // Servers in tests bind 127.0.0.1; this one binds its namespace's veth
    // address, which only the load's namespace can reach (nothing else is
    // on that link), so it is as private as loopback.
    let (server, metrics) = server(None, hosts.server_ip(), Some(&hosts.server));
    let blackhole = || hosts.blackhole();
    let outcome = under_load(
        "network blackhole (iptables DROP) 5 s",
        server,
        metrics,
        Some(&hosts.client),
        Some((HOLD, &blackhole)),
    );
    outcome.assert_recovered();
}

/// The load alone on Redis: what the faults are measured against. Every
/// session completes, and the timeline the other cases judge by accounts
/// for every number, reconnect, stream end and completion of the run.
#[test]
fn no_fault_under_load() {
    let _one = one_at_a_time();
    let Some(outcome) = reference() else { return };
    assert_eq!(
        outcome.failed(),
        0,
        "sessions failed without a fault:\n{outcome}"
    );
    let timeline = outcome.timeline();
    let total = |f: fn(&Second) -> u64| timeline.iter().map(f).sum::<u64>();
    let ends: u64 = outcome.report["stream_ends"]
        .as_object()
        .expect("stream ends")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum::<u64>()
        + outcome.count("silent_drops")
        + outcome.count("attach_timeouts");
    assert_eq!(
        [
            total(|s| s.numbers),
            total(|s| s.reconnects),
            total(|s| s.stream_ends),
            total(|s| s.completed),
        ],
        [
            outcome.count("numbers"),
            outcome.count("reconnects"),
            ends,
            SESSIONS as u64
        ],
        "the timeline does not add up to the run:\n{outcome}"
    );
}
