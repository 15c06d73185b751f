//! What a load run counts: the shared [`Measurements`] every session
//! records numbers into, and the [`Tally`] a process hands on (a worker
//! prints it, the parent merges them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use station_core::client::StreamEnd;

use super::timeline::{self, SecondTally, Timeline};

/// Histogram values (microseconds, or plain counts) are recorded up to this.
pub const MAX_VALUE: u64 = 600_000_000;

/// How late a number arrived against a session's schedule: the first
/// stream attached at `attached_at` with `next_index`, and number `index`
/// is due `(index - next_index) * interval` after it. Early arrivals count
/// as zero.
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

/// Number-level measurements, shared by all session tasks of a process.
/// Session-level ones live in each session's own log.
pub struct Measurements {
    /// How late each delivered number arrived against its session's first
    /// schedule, µs. Only admitted sessions deliver numbers.
    pub lateness: Histogram<u64>,
    /// From a session's start to its first number, µs.
    pub first_number: Histogram<u64>,
    /// Numbers delivered (a duplicate resent after a resume is not).
    pub numbers: u64,
    /// Streams opened after a session's first, whatever ended the one
    /// before (including those never attached).
    pub reconnects: u64,
    /// Attached streams the client dropped because they went silent.
    pub silent_drops: u64,
    /// Streams the client dropped because no `Attached` came in time.
    pub attach_timeouts: u64,
    /// Streams refused or ended RESOURCE_EXHAUSTED (a full or overloaded
    /// server).
    pub exhausted: u64,
    /// Streams that ended before their session completed, by how: the
    /// status code and reason, or the transport. Streams the client itself
    /// dropped are `silent_drops` or `attach_timeouts`, not here.
    pub stream_ends: BTreeMap<String, u64>,
    /// The same, second by second.
    pub timeline: Timeline,
}

impl Measurements {
    pub fn new() -> Self {
        Measurements {
            lateness: histogram(),
            first_number: histogram(),
            numbers: 0,
            reconnects: 0,
            silent_drops: 0,
            attach_timeouts: 0,
            exhausted: 0,
            stream_ends: BTreeMap::new(),
            timeline: Timeline::new(),
        }
    }
}

/// How a stream ended, as a short stable label for the report. A status
/// with a reason is named by it; one without (made by the transport: a
/// broken connection, an h2 error) by the shape of its message, or a
/// reader of the report cannot tell a GOAWAY from a keepalive timeout.
pub fn end_kind(end: &StreamEnd) -> String {
    match end {
        StreamEnd::Ok => "OK before the end".into(),
        StreamEnd::Status {
            code,
            reason: Some(reason),
            ..
        } => format!("{code:?} {reason}"),
        StreamEnd::Status { code, message, .. } => format!("{code:?}: {}", shape(message)),
        StreamEnd::Transport(message) => format!("transport: {}", shape(message)),
        StreamEnd::Protocol(message) => format!("protocol: {}", shape(message)),
    }
}

/// A message with its numbers (stream ids, addresses, sizes, but not the
/// 2 of "h2") folded to `#`, then cut at 80 characters, so the labels
/// stay few; `|` becomes `/` so a label fits a Markdown table cell.
fn shape(message: &str) -> String {
    let mut out = String::new();
    // In a word (after a letter or underscore): digits stay.
    let mut word = false;
    for c in message.chars() {
        if c.is_ascii_digit() && !word {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            word = c.is_alphanumeric() || c == '_';
            out.push(if c == '|' { '/' } else { c });
        }
    }
    out.chars().take(80).collect()
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_VALUE, 3).expect("bounds are valid")
}

pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_VALUE)
}

/// A histogram as (value, count) pairs: exact to the histogram's own
/// precision, and re-recorded into one with the same bounds on merging.
pub fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn record_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value.clamp(1, MAX_VALUE), count);
    }
}

/// p50, p99 and max of microsecond values, in milliseconds (zeros when
/// empty).
pub fn percentiles_ms(pairs: &[(u64, u64)]) -> [f64; 3] {
    let [p50, p99, max] = percentiles(pairs);
    [p50 / 1000.0, p99 / 1000.0, max / 1000.0]
}

/// p50, p99 and max of the values (zeros when empty).
pub fn percentiles(pairs: &[(u64, u64)]) -> [f64; 3] {
    let mut h = histogram();
    record_pairs(&mut h, pairs);
    if h.is_empty() {
        return [0.0; 3];
    }
    [
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
        h.max() as f64,
    ]
}

/// The mean of the values (zero when empty).
pub fn mean(pairs: &[(u64, u64)]) -> f64 {
    let n: u64 = pairs.iter().map(|&(_, c)| c).sum();
    let total: u64 = pairs.iter().map(|&(v, c)| v * c).sum();
    total as f64 / n.max(1) as f64
}

/// What one process counted, in the form a worker prints and the parent
/// merges. Session counts are disjoint where the report says so: every
/// offered session is completed, failed after admission, refused at the
/// door, otherwise never admitted, or never started.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    /// Sessions this process was to run.
    pub offered: usize,
    /// Sessions started (the rest: the ramp had not reached them when
    /// `--duration` ended).
    pub started: usize,
    /// Sessions that ended (verified or not) before the deadline.
    pub finished: usize,
    pub completed: usize,
    /// Sessions some server attached at least once.
    pub admitted: usize,
    /// Admitted sessions that did not complete (ended unverified, or still
    /// running at the deadline).
    pub failed_after_admission: usize,
    /// Of those, the ones still running at the deadline: admitted late
    /// (after waiting at the door), or behind; not known to have failed.
    pub admitted_unfinished: usize,
    /// Sessions never admitted whose `Open` was refused RESOURCE_EXHAUSTED
    /// at least once.
    pub refused_at_door: usize,
    /// Sessions never admitted nor refused, with an `Open` held back by
    /// this process's open throttle at least once.
    pub held_back_only: usize,
    /// `Open`s sent, by every session: with `completed`, how much the
    /// refused ones retried.
    pub opens_sent: u64,
    /// `Open`s the open throttle held back (never sent).
    pub opens_held_back: u64,
    /// `Open` attempts of each completed session (1: admitted at once).
    pub opens_per_completed: Vec<(u64, u64)>,
    /// Each completed session's stall, µs: see [`super::session`].
    pub stall: Vec<(u64, u64)>,
    /// Seconds of admitted sessions' schedules: see [`super::session`].
    pub session_seconds: f64,
    pub failures: Vec<String>,
    pub numbers: u64,
    pub reconnects: u64,
    pub silent_drops: u64,
    pub attach_timeouts: u64,
    pub exhausted: u64,
    /// Retries the process's retry budget deferred (gRFC A6 throttling).
    pub retries_throttled: u64,
    pub stream_ends: BTreeMap<String, u64>,
    pub interval: Option<Duration>,
    pub elapsed: Duration,
    /// CPU seconds this load process spent on its part (user + system).
    pub cpu_seconds: f64,
    pub lateness: Vec<(u64, u64)>,
    pub first_number: Vec<(u64, u64)>,
    /// Second by second, by Unix second: see [`super::timeline`].
    pub timeline: BTreeMap<u64, SecondTally>,
}

impl Tally {
    /// Adds `other`'s counts and histograms to this one's.
    pub fn merge(&mut self, other: Tally) {
        self.offered += other.offered;
        self.started += other.started;
        self.finished += other.finished;
        self.completed += other.completed;
        self.admitted += other.admitted;
        self.failed_after_admission += other.failed_after_admission;
        self.admitted_unfinished += other.admitted_unfinished;
        self.refused_at_door += other.refused_at_door;
        self.held_back_only += other.held_back_only;
        self.opens_sent += other.opens_sent;
        self.opens_held_back += other.opens_held_back;
        self.session_seconds += other.session_seconds;
        self.failures.extend(other.failures);
        self.numbers += other.numbers;
        self.reconnects += other.reconnects;
        self.silent_drops += other.silent_drops;
        self.attach_timeouts += other.attach_timeouts;
        self.exhausted += other.exhausted;
        self.retries_throttled += other.retries_throttled;
        for (kind, n) in other.stream_ends {
            *self.stream_ends.entry(kind).or_default() += n;
        }
        self.interval = self.interval.or(other.interval);
        self.elapsed = self.elapsed.max(other.elapsed);
        self.cpu_seconds += other.cpu_seconds;
        let merged = |mine: &[(u64, u64)], theirs: &[(u64, u64)]| {
            let mut h = histogram();
            record_pairs(&mut h, mine);
            record_pairs(&mut h, theirs);
            pairs(&h)
        };
        self.lateness = merged(&self.lateness, &other.lateness);
        self.first_number = merged(&self.first_number, &other.first_number);
        self.stall = merged(&self.stall, &other.stall);
        self.opens_per_completed = merged(&self.opens_per_completed, &other.opens_per_completed);
        timeline::merge(&mut self.timeline, other.timeline);
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
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let status = process.status().ok()?;
    // CPU time is counted in the kernel's clock ticks (USER_HZ).
    let ticks = (stat.utime + stat.stime) as f64;
    Some(ProcStats {
        cpu_seconds: ticks / procfs::ticks_per_second() as f64,
        rss: status.vmrss? * 1024,
        peak_rss: status.vmhwm? * 1024,
    })
}
