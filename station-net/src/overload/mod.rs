//! Is the server keeping its schedule, and has it room for more? Cheap
//! overload signals, with hysteresis, that the server sheds new sessions
//! on: its lateness, and how busy its processors are.
//!
//! A probe task sleeps [`PROBE_EVERY`] at a time on the server's runtime and
//! measures how late it wakes up. That lateness is the runtime's scheduling
//! delay: what every session's tick suffers on top of its timer slack, so
//! the probe sees what clients would see, at the cost of one timer wake-up
//! every 10 ms.
//!
//! **Acknowledgements.** The probe cuts in line: a task that wakes from a
//! timer runs within a few polls, while the work of a saturated server
//! waits in its connection tasks and socket buffers (BENCHMARKS.md: at
//! twice its capacity, clients saw numbers seconds late while the probe
//! reached the threshold 0 to 5 times a run). So every stream also times
//! one number in flight at a time, from the moment it is ready to send (to
//! HTTP/2, or to the stream's cell while HTTP/2 is not polling) to the
//! moment the client's acknowledgement of it is read: a round trip through
//! both sides' queues. It times only a number the client acknowledges by
//! itself (clients acknowledge every `ack_every` numbers, 16 under 50 ms
//! intervals), and only an acknowledgement of exactly it, so a batch's
//! wait is never counted. The median of those round trips over a window
//! ([`ACK_WINDOW`], or longer until it holds [`MIN_ACKS`], at most
//! [`ACK_GATHER_FOR`]), less its baseline (the lowest median over the last
//! [`BASELINE_FOR`], not learned while shedding: the network's share),
//! counts as lateness when two windows in a row say so; the signal is the
//! larger of the two. The median, so a few slow readers (whose own windows
//! hold their numbers back) shed nobody; of round trips, not of streams,
//! so streams whose acknowledgements come back seconds late count for
//! fewer samples, and most must be late before it moves. A server that
//! starts into an overload learns that as its baseline, and sees only its
//! timers until its baseline ages out.
//!
//! The samples are smoothed (an exponentially weighted moving average over
//! about eight samples) so one stall of the machine does not shed anyone.
//! The server starts shedding when the average reaches the threshold and
//! stops only when it falls below half of it: hysteresis, so the signal
//! does not flap and admit a burst of sessions the moment it dips.
//!
//! While it sheds, new sessions (`Open`) are refused at once with
//! RESOURCE_EXHAUSTED, reason OVERLOADED and a `RetryInfo`, before any
//! store work: the sessions already admitted keep their schedule, instead
//! of every session falling late until clients' watchdogs drop their
//! streams and reconnect all together. `Resume` is never shed: a session
//! refused its resume for longer than the TTL expires, which is worse for
//! its client than lateness (BENCHMARKS.md measured it: shedding resumes
//! too made most sessions of an overloaded run expire).
//!
//! **Silence excused.** The same lateness tells streams how much longer
//! to wait for their clients' acknowledgements before ending them
//! `CLIENT_SILENT` ([`Overload::silence_excused`]): the highest lateness
//! of the last [`EXCUSE_FOR`]. A late acknowledgement is not a dead
//! client, and the resume that ending its stream brings costs a late
//! server a store load and a takeover more (BENCHMARKS.md: 76,988 streams
//! ended silent in one run at three times the capacity, and came back).
//!
//! **Processors busy.** Lateness shows only once the server is past what
//! its processors carry: work queues from then on, and the lateness grows
//! with the queue, so the threshold trips seconds after the knee, and each
//! session admitted in those seconds costs the server its whole schedule
//! (BENCHMARKS.md, "Processors full close the door too"). So the probe
//! also measures the share of the processors the process may run on (its
//! CPU time against the wall clock, over the last [`CPU_OVER`], every
//! [`CPU_EVERY`]), and new sessions are refused while it is at
//! `--shed-when-busy` or over, until it falls [`CPU_HYSTERESIS_PM`] under
//! that (or to half of it, for a low setting). It learns no limit from
//! it, so a burst (a herd of resumes) shuts the door only while it lasts.
//! The processors are counted as the standard library counts them (the
//! affinity mask, and a cgroup quota rounded down to whole processors),
//! again at each measurement, so a server pinned after it started is
//! measured against its new mask.
//!
//! **The session limit.** Shedding alone lets the door flap: an admitted
//! session costs its server work for its whole schedule, so a door that
//! reopens the moment lateness dips admits a burst that pushes it straight
//! back up, and the population it admits ratchets past what the core
//! carries (BENCHMARKS.md: a server offered twice its capacity shed and
//! reopened every second while its core stayed saturated). So the probe
//! also learns how many streams the server carries on time, by AIMD on
//! the streams held (those counted against `--max-streams`), in time
//! measured by the probe's clock, not in samples (a late probe samples
//! less often):
//!
//! - lateness at the threshold for [`CUT_AFTER`] (one stall of the machine,
//!   or of the process, is not a population too large) cuts the limit to
//!   [`CUT_TO`] of the streams held now, at most once per [`CUT_EVERY`] or
//!   per twice the lateness, whichever is longer (a cut shows only once
//!   the work queued behind the lateness has drained), so
//!   the limit falls below a population that is too large and the door
//!   stays shut while sessions complete; but not while fewer than half the
//!   limit are held, since then the lateness is not theirs (at twice its
//!   capacity, a server whose sessions had failed cut its limit from
//!   54,000 to 7,000 this way);
//! - lateness under [`GROW_UNDER`] of the threshold (where shedding stops)
//!   grows it by [`GROW_BY`] (at least [`MIN_LIMIT`] streams) every
//!   [`GROW_EVERY`] (by [`GROW_FAST_BY`] under [`FORGET_UNDER`] of it, up
//!   to the highest limit a cut has set), and only while the limit binds (the streams held are within a tenth of
//!   it): a limit nobody reaches says nothing;
//! - lateness under a quarter of the threshold for [`FORGET_AFTER`] while
//!   the limit does not bind forgets it: whatever made the server late
//!   (a stall at start, a neighbour) is gone, and a limit learned then must
//!   not hold the door half shut for good.
//!
//! A new session is refused while the streams held are at the limit; the
//! limit starts unset (no limit) and never goes below [`MIN_LIMIT`].
//!
//! This file holds the signal, its AIMD and the probe; beside it,
//! `round_trips` is the acknowledgements' histogram, `history` the peak
//! and baseline kept over a sliding period, and `cpu` the processors'
//! share ([`CpuShare`]). The tests of the whole signal are in `tests`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use station_core::Busy;
use tokio_util::sync::CancellationToken;

pub use self::cpu::{process_cpu_time, CpuShare};
use self::history::{Baseline, Peak};
use self::round_trips::RoundTrips;

mod cpu;
mod history;
mod round_trips;
#[cfg(test)]
mod tests;

/// How often the probe measures.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);

/// A cut sets the limit to this fraction of the streams held.
pub const CUT_TO: f64 = 0.9;
/// How long the lateness stays at the threshold before a cut: a stopped
/// process wakes with one huge sample, which the average carries over the
/// threshold for a few samples only.
pub const CUT_AFTER: Duration = Duration::from_millis(250);
/// Time between cuts: a cut's effect shows only as sessions complete, so
/// cutting again at once would overshoot.
pub const CUT_EVERY: Duration = Duration::from_millis(500);
/// Lateness under this fraction of the threshold lets the limit grow.
pub const GROW_UNDER: f64 = 0.5;
/// Each growth adds this fraction of the limit...
pub const GROW_BY: f64 = 0.01;
/// ... or this one while lateness is under [`FORGET_UNDER`] of the
/// threshold and the limit is under the highest a cut has set: cuts that
/// followed a draining population down come back within a minute, not
/// three. Past that level, where the server ran late before, growth is
/// slow again: at 4 % a second there, a limit grew from 45,800 to past
/// 71,000 streams in 16 s and the server collapsed (BENCHMARKS.md).
pub const GROW_FAST_BY: f64 = 0.04;
/// ... every this long: slow, since a session admitted now costs its
/// server for its whole schedule.
pub const GROW_EVERY: Duration = Duration::from_secs(1);
/// Lateness under this fraction of the threshold is well on time...
pub const FORGET_UNDER: f64 = 0.25;
/// ... and this long of it with the limit not binding forgets the limit.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);
/// How often the acknowledgements' round trips are summed up.
pub const ACK_WINDOW: Duration = Duration::from_millis(250);
/// A window is closed once it holds this many round trips...
pub const MIN_ACKS: u64 = 16;
/// ... or once it has gathered this long; then, with fewer, it says
/// nothing. A server with few streams gathers over several windows: the
/// fewer round trips come back, the later they are, so a window that
/// closed on time alone would go blind just when they are late.
pub const ACK_GATHER_FOR: Duration = Duration::from_secs(1);
/// The round trips' baseline is the lowest window median over this long
/// (between half of it and all of it): long enough to hold a quiet moment,
/// short enough to follow a network that got slower.
pub const BASELINE_FOR: Duration = Duration::from_secs(300);
/// A lateness excuses clients' silence for this long after it was seen
/// (see [`Overload::silence_excused`]).
pub const EXCUSE_FOR: Duration = Duration::from_secs(10);
/// The processors' share is measured this often...
pub const CPU_EVERY: Duration = Duration::from_millis(250);
/// ... over this long: a whole second, so that the ticks' bursts within
/// it (sessions tick on the second) average out.
pub const CPU_OVER: Duration = Duration::from_secs(1);
/// Once refused on a busy share, new sessions are admitted again only
/// this much (per mille) below it: each session admitted costs its server
/// work for a minute, so a door that reopened at the threshold would let
/// in a burst that shuts it at once, and the population would ratchet up.
pub const CPU_HYSTERESIS_PM: u32 = 50;
/// The limit never goes below this many streams, nor grows by fewer.
pub const MIN_LIMIT: u64 = 64;
/// No limit learned yet.
const UNSET: u64 = u64::MAX;

/// Weight of a new sample in the average: 1 / `SMOOTHING`.
const SMOOTHING: u64 = 8;

/// The overload signal of one server.
#[derive(Debug)]
pub struct Overload {
    /// Shed when the smoothed lateness reaches this (micros); `None`: never.
    threshold_us: Option<u64>,
    /// Refuse new sessions when the processors' share reaches this (per
    /// mille, at least 1); `None`: never.
    busy_at_pm: Option<u32>,
    /// Whether new sessions are refused on the processors' share now...
    cpu_full: AtomicBool,
    /// ... and the share it last measured, per mille.
    cpu_pm: AtomicU32,
    /// Smoothed lateness (the larger of the two signals), micros.
    smoothed_us: AtomicU64,
    /// The highest smoothed lateness of the last [`EXCUSE_FOR`] or so,
    /// micros.
    excused_us: AtomicU64,
    shedding: AtomicBool,
    /// The learned limit on streams held; [`UNSET`] while none is.
    limit: AtomicU64,
    /// Acknowledgements' round trips in the current window.
    acks: RoundTrips,
    /// What the limit is learned from; only the probe writes it.
    learning: Mutex<Learning>,
}

/// What the probe keeps between samples: the moments the limit's AIMD
/// compares against, the round trips' windows and the excuse's peak.
#[derive(Debug, Default)]
struct Learning {
    /// Since when the lateness has been at the threshold.
    late_since: Option<Instant>,
    /// Since when it has been under a quarter of it, the limit not binding.
    idle_since: Option<Instant>,
    /// When the limit last changed.
    changed: Option<Instant>,
    /// When the limit was last cut.
    cut: Option<Instant>,
    /// The highest limit a cut has set since the limit was last unset.
    ceiling: Option<u64>,
    /// When the round trips now gathered began to be.
    gathering: Option<Instant>,
    /// The last whole window's median round trip over the baseline.
    last_excess: Duration,
    /// The lesser of the last two windows' (one late window is not a
    /// population too large: a client's pause, one retransmission).
    acks_late: Duration,
    /// The highest lateness of the last [`EXCUSE_FOR`] or so.
    peak: Peak,
    /// What the round trips take when nothing waits.
    baseline: Baseline,
}

impl Overload {
    /// A signal that sheds at `threshold` of smoothed lateness, and at
    /// `busy_at` share (0 to 1) of the processors busy (`None` or zero:
    /// never on that).
    pub fn new(threshold: Option<Duration>, busy_at: Option<f64>) -> Self {
        Overload {
            threshold_us: threshold
                .filter(|t| !t.is_zero())
                .map(|t| t.as_micros().min(u64::MAX as u128) as u64),
            busy_at_pm: busy_at
                .map(|b| (b.clamp(0.0, 1.0) * 1000.0).round() as u32)
                .filter(|&pm| pm > 0),
            cpu_full: AtomicBool::new(false),
            cpu_pm: AtomicU32::new(0),
            smoothed_us: AtomicU64::new(0),
            excused_us: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
            limit: AtomicU64::new(UNSET),
            acks: RoundTrips::new(),
            learning: Mutex::new(Learning::default()),
        }
    }

    /// Whether shedding on lateness is configured at all.
    pub fn enabled(&self) -> bool {
        self.threshold_us.is_some()
    }

    /// Whether refusing on the processors' share is configured.
    pub fn watches_cpu(&self) -> bool {
        self.busy_at_pm.is_some()
    }

    /// Whether new sessions should be refused now: `Some(lateness)` if so.
    pub fn shedding(&self) -> Option<Duration> {
        self.shedding
            .load(Ordering::Relaxed)
            .then(|| self.lateness())
    }

    /// Whether a new session may join the `held` streams: not while the
    /// server sheds on lateness, nor once the learned limit is reached,
    /// nor while its processors are full (checked in that order, which is
    /// the order of the reason a refusal gives).
    pub fn admits(&self, held: u64) -> Result<(), Busy> {
        if let Some(late) = self.shedding() {
            return Err(Busy::Late(late));
        }
        if let Some(limit) = self.limit().filter(|&limit| held >= limit) {
            return Err(Busy::Limit { held, limit });
        }
        match self.cpu_full.load(Ordering::Relaxed) {
            true => Err(Busy::Cpu(
                (self.cpu_pm.load(Ordering::Relaxed) / 10).min(100) as u8,
            )),
            false => Ok(()),
        }
    }

    /// The process kept `share` (0 to 1) of the processors it may run on
    /// busy over the last [`CPU_OVER`]. Only the probe calls this.
    pub fn cpu_used(&self, share: f64) {
        let Some(busy_at) = self.busy_at_pm else {
            return;
        };
        let share = share.clamp(0.0, 1.0);
        let pm = (share * 1000.0).round() as u32;
        let was = self.cpu_full.load(Ordering::Relaxed);
        // A low setting reopens at half of it, not never.
        let reopen_under = busy_at.saturating_sub(CPU_HYSTERESIS_PM).max(busy_at / 2);
        let full = match was {
            true => pm > reopen_under,
            false => pm >= busy_at,
        };
        self.cpu_pm.store(pm, Ordering::Relaxed);
        self.cpu_full.store(full, Ordering::Relaxed);
        crate::metrics::set_cpu_busy(share, full);
        if full != was {
            match full {
                true => tracing::warn!(busy = share, "processors full: refusing new sessions"),
                false => tracing::info!(
                    busy = share,
                    "processors have room: admitting new sessions again"
                ),
            }
        }
    }

    /// The learned limit on streams held, if one has been learned.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l != UNSET)
    }

    /// The smoothed lateness: the runtime's scheduling delay or the
    /// acknowledgements' round trip over its baseline, the larger.
    pub fn lateness(&self) -> Duration {
        Duration::from_micros(self.smoothed_us.load(Ordering::Relaxed))
    }

    /// How much longer than its silence timeout a stream should wait for
    /// its client: the highest lateness of the last [`EXCUSE_FOR`] (at
    /// least half of it). A late server may not have read what its
    /// clients sent, and ending their streams would bring them back as
    /// resumes, which cost it more. The peak, not the lateness now: while
    /// a stream waits, the round trips that would show the server late
    /// are the very acknowledgements that do not come back, so the
    /// signal can dip just when the wait is judged.
    pub fn silence_excused(&self) -> Duration {
        Duration::from_micros(self.excused_us.load(Ordering::Relaxed))
    }

    /// A stream's client acknowledged a number `rtt` after the stream
    /// handed it over.
    pub fn ack_round_trip(&self, rtt: Duration) {
        if self.enabled() {
            self.acks.add(rtt);
        }
    }

    /// Feeds one measurement: at `now` the probe woke `late` after its
    /// deadline, with `held` streams held. Only the probe calls this, so
    /// load-then-store is not a race.
    pub fn observe(&self, now: Instant, late: Duration, held: u64) {
        let Some(threshold) = self.threshold_us else {
            return;
        };
        let mut learning = self.learning.lock().unwrap_or_else(|p| p.into_inner());
        let late = late.max(self.acks_late(&mut learning, now));
        // Capped at an hour so the average cannot overflow.
        let sample = late.as_micros().min(3_600_000_000) as u64;
        let old = self.smoothed_us.load(Ordering::Relaxed);
        // old + (sample - old) / SMOOTHING, in unsigned arithmetic.
        let new = (old * (SMOOTHING - 1) + sample) / SMOOTHING;
        self.smoothed_us.store(new, Ordering::Relaxed);
        let was = self.shedding.load(Ordering::Relaxed);
        let sheds = if was {
            new >= threshold / 2
        } else {
            new >= threshold
        };
        let late = Duration::from_micros(new);
        let load = new as f64 / threshold as f64;
        let excused = learning.peak.update(now, late);
        self.excused_us
            .store(excused.as_micros() as u64, Ordering::Relaxed);
        self.learn(&mut learning, now, late, load, held);
        drop(learning);
        crate::metrics::set_overload(late, excused, sheds, self.limit());
        if sheds != was {
            self.shedding.store(sheds, Ordering::Relaxed);
            if sheds {
                tracing::warn!(?late, "overloaded: running late; shedding new sessions");
            } else {
                tracing::info!(?late, "caught up: admitting new sessions again");
            }
        }
    }

    /// How far the acknowledgements' median round trip was over its
    /// baseline in each of the last two windows (the lesser), zero where a
    /// window said nothing.
    fn acks_late(&self, learning: &mut Learning, now: Instant) -> Duration {
        let began = *learning.gathering.get_or_insert(now);
        let gathered = now.saturating_duration_since(began);
        let closes =
            gathered >= ACK_GATHER_FOR || (gathered >= ACK_WINDOW && self.acks.len() >= MIN_ACKS);
        if closes {
            learning.gathering = Some(now);
            let median = self.acks.take_median();
            crate::metrics::set_ack_round_trip(median);
            let learn = !self.shedding.load(Ordering::Relaxed);
            let excess = median.map_or(Duration::ZERO, |m| {
                m.saturating_sub(learning.baseline.update(now, m, learn))
            });
            learning.acks_late = excess.min(learning.last_excess);
            learning.last_excess = excess;
        }
        learning.acks_late
    }

    /// One step of the limit's AIMD at `now`, at lateness `late`, `load` ×
    /// the threshold, with `held` streams held.
    fn learn(&self, learning: &mut Learning, now: Instant, late: Duration, load: f64, held: u64) {
        let limit = self.limit.load(Ordering::Relaxed);
        let binds = limit != UNSET && held.saturating_mul(10) >= limit.saturating_mul(9);
        let late_for = lasting(&mut learning.late_since, load >= 1.0, now);
        let idle = load < FORGET_UNDER && limit != UNSET && !binds;
        let idle_for = lasting(&mut learning.idle_since, idle, now);
        let since_change = learning
            .changed
            .map_or(Duration::MAX, |c| now.saturating_duration_since(c));
        // Lateness with fewer than half the limit held is not theirs (a
        // storm of refused or resuming streams, a neighbour): cutting to
        // it would shut the door on what the server carried.
        let theirs = limit == UNSET || held.saturating_mul(2) >= limit;
        // Lateness stands for that much work queued: a cut shows in it
        // only once that has drained, so the next waits as long again
        // (twice, for the average to follow). Cutting every CUT_EVERY
        // instead chased a draining backlog down: 71,000 streams to 13,800
        // in a minute at twice the capacity (BENCHMARKS.md).
        let since_cut = learning
            .cut
            .map_or(Duration::MAX, |c| now.saturating_duration_since(c));
        let cut_shown = since_cut >= CUT_EVERY.max(late.saturating_mul(2));
        let next = if late_for >= CUT_AFTER && cut_shown && theirs {
            let cut = ((held as f64 * CUT_TO) as u64).max(MIN_LIMIT);
            (cut < limit).then_some(cut)
        } else if load < GROW_UNDER && binds && since_change >= GROW_EVERY {
            let ceiling = learning.ceiling.unwrap_or(0);
            let (by, cap) = match load < FORGET_UNDER && limit < ceiling {
                true => (GROW_FAST_BY, ceiling),
                false => (GROW_BY, u64::MAX),
            };
            let step = ((limit as f64 * by) as u64).max(MIN_LIMIT);
            Some(limit.saturating_add(step).min(cap))
        } else if idle_for >= FORGET_AFTER {
            Some(UNSET)
        } else {
            None
        };
        let Some(next) = next else { return };
        self.limit.store(next, Ordering::Relaxed);
        learning.changed = Some(now);
        learning.idle_since = None;
        if next == UNSET {
            learning.ceiling = None;
        }
        if next < limit {
            learning.cut = Some(now);
            learning.ceiling = learning.ceiling.max(Some(next));
            tracing::warn!(
                held,
                limit = next,
                "running late: new sessions wait for room under a lower limit"
            );
        } else if next == UNSET {
            tracing::info!(limit, "on time well under the limit: forgetting it");
        }
    }
}

/// How long a condition, `on` at `now`, has held: `since` keeps when it
/// began, and is cleared when it does not hold.
fn lasting(since: &mut Option<Instant>, on: bool, now: Instant) -> Duration {
    match on {
        true => now.saturating_duration_since(*since.get_or_insert(now)),
        false => {
            *since = None;
            Duration::ZERO
        }
    }
}

/// Measures scheduling lateness (and folds in the acknowledgements' round
/// trips), and the processors' share, until `stop` is cancelled; `held`
/// counts the streams held at each sample.
pub async fn probe(
    signal: std::sync::Arc<Overload>,
    held: impl Fn() -> u64,
    stop: CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut cpu = signal
        .watches_cpu()
        .then(|| CpuShare::new(start.into_std(), process_cpu_time()));
    if cpu.is_some() {
        crate::metrics::set_cpu_full(false);
    }
    if !signal.enabled() && cpu.is_none() {
        return;
    }
    let mut next_cpu = start + CPU_EVERY;
    loop {
        let due = tokio::time::Instant::now() + PROBE_EVERY;
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let now = tokio::time::Instant::now();
        signal.observe(now.into_std(), now.saturating_duration_since(due), held());
        if let Some(cpu) = cpu.as_mut().filter(|_| now >= next_cpu) {
            next_cpu = now + CPU_EVERY;
            let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
            if let Some(share) = cpu.sample(now.into_std(), process_cpu_time(), processors) {
                signal.cpu_used(share);
            }
        }
    }
}
