//! `station load`: many sessions against one or more servers, for
//! benchmarks.
//!
//! Opens `--sessions` sessions multiplexed over `--connections` HTTP/2
//! connections (or one connection each, `--connection-per-session`, spread
//! over `--source-addresses`), verifies every checksum, and reports completions, numbers
//! per second, how late each number arrived against the schedule the
//! server announced in `Attached` (first number at once, then one per
//! interval), the first-number latency, and — given the server's pid — its
//! CPU time and memory from `/proc`. Bounded in count and time.
//!
//! `--processes P` splits one run over P worker processes (this binary,
//! started again with `--worker K`): worker K runs sessions `i` with
//! `i % P == K` on the one global schedule, with its own descriptors and
//! runtime, and prints a [`Tally`] with its raw histograms. The parent
//! merges them, so percentiles are over every number of the run, not an
//! average of per-process percentiles.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use station_core::client::{Client, Code, Config as ClientConfig, Outcome, StreamEnd, Verdict};
use station_core::ClientId;
use station_net::client::{ChannelOptions, DriverOptions, Endpoints, Event};

use crate::{exit, LoadArgs};

/// Latencies are recorded in microseconds, up to this many.
const MAX_MICROS: u64 = 600_000_000;

/// How late a number arrived against the announced schedule: stream `k`-th
/// number (index `next_index + k`) is due `k * interval` after `Attached`.
/// Early arrivals count as zero.
pub fn lateness(
    attached_at: Instant,
    next_index: u32,
    interval: Duration,
    index: u32,
    arrived: Instant,
) -> Duration {
    let k = index.saturating_sub(next_index);
    // A hostile server's interval must not overflow: a number due beyond
    // the clock's range is simply not late.
    match interval
        .checked_mul(k)
        .and_then(|d| attached_at.checked_add(d))
    {
        Some(due) => arrived.saturating_duration_since(due),
        None => Duration::ZERO,
    }
}

/// Per-session bookkeeping for lateness.
#[derive(Clone, Copy)]
struct Schedule {
    /// When, at which index and with which interval the latest stream
    /// attached.
    attached: Option<(Instant, u32, Duration)>,
    /// When the session started.
    started: Instant,
    first_seen: bool,
}

/// Everything measured, shared by all session tasks.
pub struct Measurements {
    lateness: Histogram<u64>,
    first_number: Histogram<u64>,
    numbers: u64,
    /// Streams opened after a session's first, whatever ended the one
    /// before (including those never attached).
    reconnects: u64,
    /// Streams the client dropped because they went silent.
    silent_drops: u64,
    /// Streams refused or ended RESOURCE_EXHAUSTED (a full or overloaded
    /// server).
    exhausted: u64,
    /// Streams that ended before their session completed, by how: the
    /// status code and reason, or the transport. Streams the client itself
    /// dropped as silent are `silent_drops`, not here.
    stream_ends: BTreeMap<String, u64>,
}

/// How a stream ended, as a short stable label for the report.
fn end_kind(end: &StreamEnd) -> String {
    match end {
        StreamEnd::Ok => "OK before the end".into(),
        StreamEnd::Status {
            code,
            reason: Some(reason),
            ..
        } => format!("{code:?} {reason}"),
        StreamEnd::Status { code, .. } => format!("{code:?}"),
        StreamEnd::Transport(_) => "transport".into(),
        StreamEnd::Protocol(_) => "protocol".into(),
    }
}

impl Measurements {
    fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("bounds are valid")
    }

    fn new() -> Self {
        Measurements {
            lateness: Self::histogram(),
            first_number: Self::histogram(),
            numbers: 0,
            reconnects: 0,
            silent_drops: 0,
            exhausted: 0,
            stream_ends: BTreeMap::new(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// A histogram as (value, count) pairs: exact to the histogram's own
/// precision, and re-recorded into one with the same bounds on merging.
fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn record_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value.clamp(1, MAX_MICROS), count);
    }
}

/// Which sessions a process runs: those with `i % of == index`.
#[derive(Clone, Copy, Debug)]
struct Part {
    index: usize,
    of: usize,
}

/// What one process counted, in the form a worker prints and the parent
/// merges.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Tally {
    /// Sessions started.
    sessions: usize,
    /// Sessions that ended (verified or not) before the deadline.
    finished: usize,
    completed: usize,
    failures: Vec<String>,
    numbers: u64,
    reconnects: u64,
    silent_drops: u64,
    exhausted: u64,
    stream_ends: BTreeMap<String, u64>,
    interval: Option<Duration>,
    elapsed: Duration,
    /// CPU seconds this load process spent on its part (user + system).
    cpu_seconds: f64,
    lateness: Vec<(u64, u64)>,
    first_number: Vec<(u64, u64)>,
}

impl Tally {
    /// Adds `other`'s counts and histograms to this one's.
    fn merge(&mut self, other: Tally) {
        self.sessions += other.sessions;
        self.finished += other.finished;
        self.completed += other.completed;
        self.failures.extend(other.failures);
        self.numbers += other.numbers;
        self.reconnects += other.reconnects;
        self.silent_drops += other.silent_drops;
        self.exhausted += other.exhausted;
        for (kind, n) in other.stream_ends {
            *self.stream_ends.entry(kind).or_default() += n;
        }
        self.interval = self.interval.or(other.interval);
        self.elapsed = self.elapsed.max(other.elapsed);
        self.cpu_seconds += other.cpu_seconds;
        let merged = |mine: &[(u64, u64)], theirs: &[(u64, u64)]| {
            let mut h = Measurements::histogram();
            record_pairs(&mut h, mine);
            record_pairs(&mut h, theirs);
            pairs(&h)
        };
        self.lateness = merged(&self.lateness, &other.lateness);
        self.first_number = merged(&self.first_number, &other.first_number);
    }

    fn percentiles(pairs: &[(u64, u64)]) -> [f64; 3] {
        let mut h = Measurements::histogram();
        record_pairs(&mut h, pairs);
        percentiles(&h)
    }
}

/// Server process figures read from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size now, bytes.
    pub rss: u64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
}

/// Reads a process's CPU time and memory; `None` if it is gone.
pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some(ProcStats {
        // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
        cpu_seconds: ticks as f64 / 100.0,
        rss: kib("VmRSS:")?,
        peak_rss: kib("VmHWM:")?,
    })
}

/// The report.
pub struct Report {
    pub sessions: usize,
    pub completed: usize,
    pub failed: usize,
    pub unfinished: usize,
    pub numbers: u64,
    pub reconnects: u64,
    pub silent_drops: u64,
    pub exhausted: u64,
    pub stream_ends: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub interval: Option<Duration>,
    pub lateness_ms: [f64; 3],
    pub first_number_ms: [f64; 3],
    pub server: Option<(ProcStats, ProcStats)>,
    /// CPU seconds the load itself spent (all its processes): on one
    /// machine, what the server did not get.
    pub load_cpu_seconds: f64,
    pub failures: Vec<String>,
}

impl Report {
    fn numbers_per_second(&self) -> f64 {
        self.numbers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "sessions:        {} ({} completed, {} failed, {} unfinished)\n\
             elapsed:         {:.2} s\n\
             numbers:         {} ({:.0}/s)\n\
             reconnects:      {} ({} silent streams dropped, {} RESOURCE_EXHAUSTED)\n\
             lateness ms:     p50 {:.2}  p99 {:.2}  max {:.2}\n",
            self.sessions,
            self.completed,
            self.failed,
            self.unfinished,
            self.elapsed.as_secs_f64(),
            self.numbers,
            self.numbers_per_second(),
            self.reconnects,
            self.silent_drops,
            self.exhausted,
            self.lateness_ms[0],
            self.lateness_ms[1],
            self.lateness_ms[2],
        );
        if let Some(interval) = self.interval.filter(|i| !i.is_zero()) {
            let ms = interval.as_secs_f64() * 1000.0;
            out += &format!(
                "lateness/interval: p50 {:.2}%  p99 {:.2}%  max {:.2}%\n",
                100.0 * self.lateness_ms[0] / ms,
                100.0 * self.lateness_ms[1] / ms,
                100.0 * self.lateness_ms[2] / ms
            );
        }
        out += &format!(
            "first number ms: p50 {:.2}  p99 {:.2}  max {:.2}\n\
             load cpu:        {:.2} s\n",
            self.first_number_ms[0],
            self.first_number_ms[1],
            self.first_number_ms[2],
            self.load_cpu_seconds
        );
        if let Some((idle, end)) = self.server {
            let per_session =
                end.peak_rss.saturating_sub(idle.rss) as f64 / self.sessions.max(1) as f64;
            out += &format!(
                "server cpu:      {:.2} s\n\
                 server rss:      idle {:.1} MiB, peak {:.1} MiB, {:.0} B/session above idle\n",
                end.cpu_seconds - idle.cpu_seconds,
                idle.rss as f64 / 1048576.0,
                end.peak_rss as f64 / 1048576.0,
                per_session
            );
        }
        for f in self.failures.iter().take(5) {
            out += &format!("failure:         {f}\n");
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let server = self.server.map(|(idle, end)| {
            serde_json::json!({
                "cpu_seconds": end.cpu_seconds - idle.cpu_seconds,
                "idle_rss_bytes": idle.rss,
                "peak_rss_bytes": end.peak_rss,
                "rss_bytes_per_session_above_idle":
                    end.peak_rss.saturating_sub(idle.rss) as f64 / self.sessions.max(1) as f64,
            })
        });
        serde_json::json!({
            "sessions": self.sessions,
            "completed": self.completed,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "numbers": self.numbers,
            "numbers_per_second": self.numbers_per_second(),
            "reconnects": self.reconnects,
            "silent_drops": self.silent_drops,
            "resource_exhausted": self.exhausted,
            "stream_ends": self.stream_ends,
            "interval_ms": self.interval.map(|i| i.as_secs_f64() * 1000.0),
            "lateness_ms": {"p50": self.lateness_ms[0], "p99": self.lateness_ms[1], "max": self.lateness_ms[2]},
            "first_number_ms": {"p50": self.first_number_ms[0], "p99": self.first_number_ms[1], "max": self.first_number_ms[2]},
            "server": server,
            "load_cpu_seconds": self.load_cpu_seconds,
            "failures": self.failures.iter().take(20).collect::<Vec<_>>(),
        })
    }
}

fn percentiles(h: &Histogram<u64>) -> [f64; 3] {
    if h.is_empty() {
        return [0.0; 3];
    }
    let ms = |v: u64| v as f64 / 1000.0;
    [
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    ]
}

/// Whether an endpoint (`host:port`, optionally with a scheme) names an
/// IPv4 loopback address (or `localhost`).
fn is_ipv4_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs the load described by `args` and returns its report: in this
/// process, or split over `--processes` workers and merged.
pub async fn measure(args: &LoadArgs) -> Result<Report, String> {
    validate(args)?;
    let idle = args.server_pid.and_then(proc_stats);
    let tally = if args.processes > 1 {
        run_workers(args).await?
    } else {
        measure_part(args, Part { index: 0, of: 1 }).await?
    };
    let end = args.server_pid.and_then(proc_stats);
    Ok(Report {
        sessions: tally.sessions,
        completed: tally.completed,
        failed: tally.finished - tally.completed,
        unfinished: tally.sessions - tally.finished,
        numbers: tally.numbers,
        reconnects: tally.reconnects,
        silent_drops: tally.silent_drops,
        exhausted: tally.exhausted,
        elapsed: tally.elapsed,
        interval: tally.interval,
        lateness_ms: Tally::percentiles(&tally.lateness),
        first_number_ms: Tally::percentiles(&tally.first_number),
        server: idle.zip(end),
        load_cpu_seconds: tally.cpu_seconds,
        stream_ends: tally.stream_ends,
        failures: tally.failures,
    })
}

fn validate(args: &LoadArgs) -> Result<(), String> {
    if args.endpoint.is_empty() {
        return Err("give at least one --endpoint".into());
    }
    if args.source_addresses > 1 {
        if let Some(e) = args.endpoint.iter().find(|e| !is_ipv4_loopback(e)) {
            return Err(format!(
                "--source-addresses binds 127.0.0.x, which reaches loopback servers only; \
                 {e} is not an IPv4 loopback address"
            ));
        }
    }
    Ok(())
}

/// Starts `--processes` copies of this binary with the same arguments and
/// `--worker K`, and merges what they print.
async fn run_workers(args: &LoadArgs) -> Result<Tally, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..args.processes {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(std::env::args_os().skip(1))
            .args(["--worker", &k.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start load worker {k}: {e}"))?;
        workers.spawn(async move { (k, child.wait_with_output().await) });
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let (k, output) = joined.map_err(|e| format!("a load worker task failed: {e}"))?;
        let output = output.map_err(|e| format!("load worker {k}: {e}"))?;
        let part: Tally = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("load worker {k} ({}) printed no tally: {e}", output.status))?;
        tally.merge(part);
    }
    Ok(tally)
}

/// Runs this process's part of the load: sessions `i` with
/// `i % part.of == part.index`, each started when the whole run's schedule
/// says (session `i` at `(i + 1) / --ramp-up-rate`).
async fn measure_part(args: &LoadArgs, part: Part) -> Result<Tally, String> {
    // Connection `k` binds source address 127.0.0.(1 + k mod N), or lets
    // the kernel choose when there is one.
    let source_addresses = args.source_addresses.max(1);
    let connection = |k: usize| {
        let opts = ChannelOptions {
            local_address: (source_addresses > 1).then(|| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    0,
                    1 + (k % usize::from(source_addresses)) as u8,
                ))
            }),
            ..ChannelOptions::default()
        };
        Endpoints::tcp(&args.endpoint, &opts).map_err(|e| e.to_string())
    };
    // Fail on a bad endpoint now, not in every session.
    connection(0)?;
    // Multiplexed: session `i` shares pool `i mod --connections`, made when
    // first needed, so P workers together open the same pools one process
    // would (when P divides --connections). One per session: each session
    // makes its own.
    let connections = args.connections.max(1);
    let mut pools: BTreeMap<usize, Endpoints> = BTreeMap::new();
    let measurements = Arc::new(Mutex::new(Measurements::new()));
    let interval_seen: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let cpu_before = proc_stats(std::process::id()).map_or(0.0, |p| p.cpu_seconds);
    let started = Instant::now();
    let t0 = tokio::time::Instant::now();
    let deadline = t0 + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    let ramp =
        (args.ramp_up_rate > 0).then(|| Duration::from_secs_f64(1.0 / args.ramp_up_rate as f64));
    for i in (part.index..args.sessions).step_by(part.of.max(1)) {
        if let Some(gap) = ramp {
            tokio::time::sleep_until(t0 + gap.mul_f64((i + 1) as f64)).await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let endpoints = if args.connection_per_session {
            connection(i)?
        } else {
            let k = i % connections;
            match pools.get(&k) {
                Some(shared) => shared.clone(),
                None => pools.entry(k).or_insert(connection(k)?).clone(),
            }
        };
        let measurements = measurements.clone();
        let interval_seen = interval_seen.clone();
        let count = args.count;
        let seed = args.seed.wrapping_add(i as u64);
        tasks.spawn(async move {
            let id = ClientId::from_random_bytes(rand::random());
            let now = tokio::time::Instant::now().into_std();
            let client = Client::new(now, ClientConfig::default(), id, count, seed)
                .expect("count is validated by clap");
            let mut schedule = Schedule {
                attached: None,
                started: Instant::now(),
                first_seen: false,
            };
            let mut connects = 0u32;
            let observe = |event: Event<'_>, _: &Client| match event {
                Event::Connecting { .. } => {
                    connects += 1;
                    if connects > 1 {
                        measurements
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .reconnects += 1;
                    }
                }
                Event::Silent { .. } => {
                    measurements
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .silent_drops += 1;
                }
                Event::Failed { end, .. } => {
                    let mut m = measurements.lock().unwrap_or_else(|p| p.into_inner());
                    if matches!(
                        end,
                        StreamEnd::Status {
                            code: Code::ResourceExhausted,
                            ..
                        }
                    ) {
                        m.exhausted += 1;
                    }
                    *m.stream_ends.entry(end_kind(end)).or_default() += 1;
                }
                Event::Attached {
                    next_index,
                    interval,
                    ..
                } => {
                    schedule.attached = Some((Instant::now(), next_index, interval));
                    interval_seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(interval);
                }
                Event::Number { index } => {
                    let arrived = Instant::now();
                    let mut m = measurements.lock().unwrap_or_else(|p| p.into_inner());
                    m.numbers += 1;
                    if let Some((at, next, interval)) = schedule.attached {
                        m.lateness.saturating_record(micros(lateness(
                            at, next, interval, index, arrived,
                        )));
                    }
                    if !schedule.first_seen {
                        schedule.first_seen = true;
                        m.first_number
                            .saturating_record(micros(arrived - schedule.started));
                    }
                }
            };
            station_net::client::run(&endpoints, &DriverOptions::default(), client, observe).await
        });
    }
    let sessions = tasks.len();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(sessions);
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(outcome))) => outcomes.push(outcome),
            Ok(Some(Err(e))) => return Err(format!("a session task failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let completed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Verified)
        .count();
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| o.verdict != Verdict::Verified)
        .map(|o| format!("{}: {:?}", o.client_id, o.verdict))
        .collect();
    let m = measurements.lock().unwrap_or_else(|p| p.into_inner());
    let interval = *interval_seen.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Tally {
        sessions,
        finished: outcomes.len(),
        completed,
        failures,
        numbers: m.numbers,
        reconnects: m.reconnects,
        silent_drops: m.silent_drops,
        exhausted: m.exhausted,
        stream_ends: m.stream_ends.clone(),
        interval,
        elapsed,
        cpu_seconds: proc_stats(std::process::id()).map_or(0.0, |p| p.cpu_seconds) - cpu_before,
        lateness: pairs(&m.lateness),
        first_number: pairs(&m.first_number),
    })
}

/// `station load`.
pub async fn run(args: LoadArgs) -> u8 {
    if let Some(index) = args.worker {
        // A worker of `--processes`: its part, as a tally for the parent.
        let part = Part {
            index: usize::from(index),
            of: usize::from(args.processes),
        };
        return match measure_part(&args, part).await {
            Ok(tally) => {
                println!(
                    "{}",
                    serde_json::to_string(&tally).expect("a tally serializes")
                );
                exit::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::USAGE
            }
        };
    }
    match measure(&args).await {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.completed == report.sessions {
                exit::SUCCESS
            } else {
                exit::REJECTED
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_measured_against_the_announced_schedule() {
        let t0 = Instant::now();
        let i = Duration::from_millis(100);
        // Resumed at index 5: index 5 due at once, index 7 due 200 ms later.
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
        // The same lateness values, recorded in one histogram and split
        // over two workers' tallies (through their JSON, as the parent
        // reads them).
        let mut one = Measurements::histogram();
        let mut parts = [Measurements::histogram(), Measurements::histogram()];
        for v in 1..=10_000u64 {
            let us = v * 7_919 % 250_000 + 1;
            one.record(us).unwrap();
            parts[(v % 2) as usize].record(us).unwrap();
        }
        let mut merged = Tally::default();
        for (k, h) in parts.iter().enumerate() {
            let part = Tally {
                sessions: 5,
                finished: 4,
                completed: 3,
                failures: vec![format!("worker {k}")],
                numbers: h.len(),
                stream_ends: BTreeMap::from([("transport".to_string(), 1)]),
                elapsed: Duration::from_millis(100 * (k as u64 + 1)),
                cpu_seconds: 0.25,
                lateness: pairs(h),
                ..Tally::default()
            };
            let wire = serde_json::to_string(&part).unwrap();
            merged.merge(serde_json::from_str(&wire).unwrap());
        }
        assert_eq!(
            (merged.sessions, merged.finished, merged.completed),
            (10, 8, 6)
        );
        assert_eq!(merged.failures, ["worker 0", "worker 1"]);
        assert_eq!(merged.numbers, 10_000);
        assert_eq!(merged.stream_ends["transport"], 2);
        assert_eq!(merged.elapsed, Duration::from_millis(200));
        assert_eq!(merged.cpu_seconds, 0.5);
        assert_eq!(merged.lateness, pairs(&one));
        assert_eq!(Tally::percentiles(&merged.lateness), percentiles(&one));
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

    /// Runs `args` (endpoint filled in) against an in-process server at a
    /// 10 ms interval; returns the report and the source address of every
    /// connection the server accepted.
    async fn run_recorded(mut args: LoadArgs) -> (Report, Vec<std::net::SocketAddr>) {
        use station_net::{serve, ServerConfig, Station};
        use tokio_stream::StreamExt;
        let cfg = ServerConfig {
            session: station_core::server::Config::new(
                Duration::from_millis(10),
                Duration::from_secs(5),
            ),
            ..ServerConfig::default()
        };
        let station = Station::new(cfg, station_net::store::MemoryStore::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        args.endpoint = vec![listener.local_addr().unwrap().to_string()];
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
        tokio::spawn(serve(station, incoming, std::future::pending()));
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
        // A port with nothing listening: clients keep retrying until the
        // run's time limit.
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
        assert!(report.json()["stream_ends"].is_object());
    }

    #[test]
    fn proc_stats_reads_this_process() {
        let s = proc_stats(std::process::id()).expect("/proc is readable");
        assert!(s.rss > 0 && s.peak_rss >= s.rss, "{s:?}");
        assert!(proc_stats(u32::MAX).is_none());
    }
}
