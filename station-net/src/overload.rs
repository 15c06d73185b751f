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

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use station_core::Busy;
use tokio_util::sync::CancellationToken;

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

/// What was taken in over the last period (between half of it and all of
/// it), in two halves: the older is dropped as a new one begins, both
/// after a whole period with nothing taken in. Each half keeps one
/// extreme, the lowest or the highest.
#[derive(Debug, Default)]
struct Halves {
    current: Option<Duration>,
    previous: Option<Duration>,
    since: Option<Instant>,
}

impl Halves {
    /// Ages the halves to `now`, for a window of `period`.
    fn roll(&mut self, now: Instant, period: Duration) {
        let since = *self.since.get_or_insert(now);
        let age = now.saturating_duration_since(since);
        if age >= period {
            // Nothing taken in for a whole period: start afresh.
            (self.previous, self.current) = (None, None);
            self.since = Some(now);
        } else if age >= period / 2 {
            self.previous = self.current.take();
            self.since = Some(now);
        }
    }

    /// Takes `value` into the current half, which keeps what `extreme`
    /// picks of it and what it held.
    fn take_in(&mut self, value: Duration, extreme: fn(Duration, Duration) -> Duration) {
        self.current = Some(self.current.map_or(value, |c| extreme(c, value)));
    }

    /// What both halves hold.
    fn kept(&self) -> impl Iterator<Item = Duration> {
        [self.current, self.previous].into_iter().flatten()
    }
}

/// The highest lateness over the last [`EXCUSE_FOR`].
#[derive(Debug, Default)]
struct Peak(Halves);

impl Peak {
    /// Takes in the lateness `late` at `now`; returns the highest of the
    /// last [`EXCUSE_FOR`] (at least half of it).
    fn update(&mut self, now: Instant, late: Duration) -> Duration {
        self.0.roll(now, EXCUSE_FOR);
        self.0.take_in(late, Duration::max);
        self.0.kept().max().unwrap_or_default()
    }
}

/// The lowest window median over the last [`BASELINE_FOR`].
#[derive(Debug, Default)]
struct Baseline(Halves);

impl Baseline {
    /// Takes in a window's `median` at `now` (only if `learn`: an overload
    /// must not become what is normal); returns the baseline (`median`
    /// itself while there is none).
    fn update(&mut self, now: Instant, median: Duration, learn: bool) -> Duration {
        self.0.roll(now, BASELINE_FOR);
        if learn {
            self.0.take_in(median, Duration::min);
        }
        self.0.kept().min().unwrap_or(median)
    }
}

/// Buckets a quarter of an octave wide, of microseconds up to 2^32 (71
/// minutes): four buckets per doubling, so a median read as its bucket's
/// lower edge is under 20 % short.
const BUCKETS: usize = 128;

/// A histogram of round trips that every stream adds to and the probe
/// empties: one relaxed increment per acknowledgement timed.
#[derive(Debug)]
struct RoundTrips([AtomicU64; BUCKETS]);

impl RoundTrips {
    fn new() -> Self {
        RoundTrips(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn add(&self, rtt: Duration) {
        let us = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
        self.0[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many were added since the last take.
    fn len(&self) -> u64 {
        self.0.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The median of what was added since the last take (the lower edge
    /// of its bucket: it never overstates), and empties the histogram;
    /// `None` with fewer than [`MIN_ACKS`].
    fn take_median(&self) -> Option<Duration> {
        let counts: Vec<u64> = self
            .0
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total < MIN_ACKS {
            return None;
        }
        let mut below = 0;
        let i = counts.iter().position(|&c| {
            below += c;
            below * 2 >= total
        })?;
        Some(Duration::from_micros(lower_edge(i)))
    }
}

/// The bucket of `us` microseconds: exact under 4, then four per doubling.
fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let octave = 63 - u64::from(us.leading_zeros());
    let quarter = (us >> (octave - 2)) & 3;
    ((octave - 1) * 4 + quarter) as usize
}

/// The smallest value in bucket `i`.
fn lower_edge(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let (octave, quarter) = (i as u64 / 4 + 1, i as u64 % 4);
    (4 + quarter) << (octave - 2)
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

/// The share of the processors a process may run on that it keeps busy:
/// its CPU time (all its threads) against the wall clock times the
/// processors, over the last [`CPU_OVER`]. Both clocks are inputs.
#[derive(Debug)]
pub struct CpuShare {
    /// (wall clock, CPU time) samples of the last [`CPU_OVER`] or so,
    /// oldest first.
    samples: std::collections::VecDeque<(Instant, Duration)>,
}

impl CpuShare {
    /// Starts at `now`, the process having used `used` of CPU time so far.
    pub fn new(now: Instant, used: Duration) -> Self {
        CpuShare {
            samples: std::collections::VecDeque::from([(now, used)]),
        }
    }

    /// The share of `processors` busy since the oldest sample kept, at
    /// `now` with `used` CPU time so far, once a whole [`CPU_OVER`] has
    /// been seen. Never more than 1, and 0 if `used` went backwards.
    pub fn sample(&mut self, now: Instant, used: Duration, processors: usize) -> Option<f64> {
        self.samples.push_back((now, used));
        while self.samples.len() > 2 && now.saturating_duration_since(self.samples[1].0) >= CPU_OVER
        {
            self.samples.pop_front();
        }
        let (since, used_then) = *self.samples.front()?;
        let wall = now.saturating_duration_since(since);
        (wall >= CPU_OVER).then(|| {
            let busy = used.saturating_sub(used_then).as_secs_f64();
            (busy / (wall.as_secs_f64() * processors.max(1) as f64)).min(1.0)
        })
    }
}

/// The CPU time all the process's threads have used so far.
pub fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    // The kernel never reports a negative time; read one as none used.
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    impl Overload {
        /// The learned limit, if `held` streams are at it (what refuses a
        /// new session when the server does not also shed on lateness).
        fn limited(&self, held: u64) -> Option<u64> {
            self.limit().filter(|&limit| held >= limit)
        }
    }

    fn feed(o: &Overload, late: Duration, times: usize) {
        feed_at(o, &mut Instant::now(), late, 0, times);
    }

    /// Feeds `times` samples of `late` with `held` streams held, `clock`
    /// advancing as the probe's does: its period plus the lateness.
    fn feed_at(o: &Overload, clock: &mut Instant, late: Duration, held: u64, times: usize) {
        for _ in 0..times {
            *clock += PROBE_EVERY + late.min(Duration::from_secs(3_600));
            o.observe(*clock, late, held);
        }
    }

    #[test]
    fn round_trip_buckets_are_a_quarter_octave_and_their_edges_are_their_own() {
        for us in (0..5_000).chain([65_535, 1 << 20, 3_000_000, u64::from(u32::MAX)]) {
            let i = bucket(us);
            assert!(i < BUCKETS, "{us}");
            assert!(
                lower_edge(i) <= us,
                "{us}: bucket {i} starts at {}",
                lower_edge(i)
            );
            assert_eq!(bucket(lower_edge(i)), i, "{us}");
            if i + 1 < BUCKETS {
                let next = lower_edge(i + 1);
                assert!(us < next, "{us} is past bucket {i}'s end {next}");
                // A quarter octave: the next edge is at most 25 % on.
                assert!(next * 4 <= lower_edge(i).max(1) * 5 || us < 8, "{us}");
            }
        }
    }

    #[test]
    fn the_median_round_trip_is_of_a_window_with_enough_of_them() {
        let acks = RoundTrips::new();
        for _ in 0..MIN_ACKS - 1 {
            acks.add(300 * MS);
        }
        assert_eq!(acks.take_median(), None, "too few");
        assert_eq!(acks.take_median(), None, "emptied");
        // 11 fast, 10 slow readers: the median is fast, within a bucket.
        for _ in 0..11 {
            acks.add(2 * MS);
        }
        for _ in 0..10 {
            acks.add(Duration::from_secs(20));
        }
        let median = acks.take_median().expect("enough");
        assert!(median <= 2 * MS && median * 5 >= 2 * MS * 4, "{median:?}");
        // Most late: the median says so.
        for _ in 0..9 {
            acks.add(MS);
        }
        for _ in 0..12 {
            acks.add(800 * MS);
        }
        let median = acks.take_median().expect("enough");
        assert!(
            median <= 800 * MS && median * 5 >= 800 * MS * 4,
            "{median:?}"
        );
    }

    #[test]
    fn the_baseline_is_the_lowest_median_of_the_last_few_minutes() {
        let t = Instant::now();
        // With none learned, a window is its own baseline.
        let mut b = Baseline::default();
        assert_eq!(b.update(t, 300 * MS, false), 300 * MS);
        assert_eq!(b.update(t, 40 * MS, true), 40 * MS);
        assert_eq!(b.update(t + 10 * MS, 900 * MS, true), 40 * MS);
        // While shedding, a window is measured against it, not learned.
        assert_eq!(b.update(t + 20 * MS, 5 * MS, false), 40 * MS);
        // Held through the next half as the older half.
        let half = BASELINE_FOR / 2;
        assert_eq!(b.update(t + half, 700 * MS, true), 40 * MS);
        // Forgotten a whole BASELINE_FOR on: a slower network is the new
        // normal.
        assert_eq!(b.update(t + 2 * half, 600 * MS, true), 600 * MS);
        // Nothing for a whole period: what was learned before is gone.
        assert_eq!(b.update(t + 5 * half, 800 * MS, true), 800 * MS);
    }

    /// Feeds `windows` acknowledgement windows of `acks` round trips of
    /// `rtt` each, the probe on time, with `held` streams held (a window
    /// with at least [`MIN_ACKS`] closes on its last sample).
    fn feed_acks(
        o: &Overload,
        clock: &mut Instant,
        rtt: Duration,
        acks: u64,
        held: u64,
        windows: u32,
    ) {
        let per_window = (ACK_WINDOW.as_millis() / PROBE_EVERY.as_millis()) as usize;
        for _ in 0..windows {
            for _ in 0..acks {
                o.ack_round_trip(rtt);
            }
            feed_at(o, clock, Duration::ZERO, held, per_window);
        }
    }

    #[test]
    fn acknowledgements_late_over_their_baseline_shed_and_cut_the_limit() {
        let o = Overload::new(Some(100 * MS), None);
        let t = &mut Instant::now();
        // A far network: round trips of 300 ms from the start are its
        // baseline, not lateness.
        feed_acks(&o, t, 300 * MS, 100, 10_000, 20);
        assert_eq!(o.shedding(), None);
        assert!(o.lateness() < MS, "{:?}", o.lateness());
        // Too few round trips, however late, gathered for a second: they
        // say nothing.
        feed_acks(&o, t, Duration::from_secs(5), MIN_ACKS - 1, 10_000, 1);
        feed_acks(&o, t, Duration::ZERO, 0, 10_000, 4);
        assert_eq!(o.shedding(), None);
        // One late window alone (a client's pause, a retransmission) sheds
        // nobody.
        feed_acks(&o, t, 900 * MS, 100, 10_000, 1);
        feed_acks(&o, t, 300 * MS, 100, 10_000, 4);
        assert_eq!(o.shedding(), None);
        assert_eq!(o.limit(), None);
        // Most round trips 600 ms over it, two windows in a row, the probe
        // on time throughout: shed, and after CUT_AFTER, a limit under the
        // streams held.
        feed_acks(&o, t, 900 * MS, 100, 10_000, 4);
        assert!(o.shedding().expect("sheds") >= 100 * MS);
        assert_eq!(o.limit(), Some(9_000));
        // Back to the baseline: shedding stops.
        feed_acks(&o, t, 300 * MS, 100, 9_000, 4);
        assert_eq!(o.shedding(), None);
    }

    #[test]
    fn round_trips_are_not_kept_unless_shedding_is_configured() {
        let o = Overload::new(None, None);
        for _ in 0..100 {
            o.ack_round_trip(Duration::from_secs(9));
        }
        assert_eq!(o.acks.take_median(), None);
    }

    #[test]
    fn sheds_only_on_sustained_lateness_and_stops_below_half() {
        let o = Overload::new(Some(100 * MS), None);
        assert!(o.enabled());
        feed(&o, Duration::ZERO, 10);
        assert_eq!(o.shedding(), None);
        // One long stall is smoothed away: 400 ms / 8 = 50 ms.
        o.observe(Instant::now(), 400 * MS, 0);
        assert_eq!(o.shedding(), None);
        // Sustained lateness above the threshold sheds.
        feed(&o, 200 * MS, 20);
        let late = o.shedding().expect("sheds");
        assert!(late >= 100 * MS, "{late:?}");
        // Hysteresis: below the threshold but above half, still shedding.
        feed(&o, 70 * MS, 40);
        assert!(o.lateness() < 100 * MS);
        assert!(o.shedding().is_some());
        // Below half: admits again, and does not flap back at 70 ms.
        feed(&o, Duration::ZERO, 40);
        assert_eq!(o.shedding(), None);
        feed(&o, 70 * MS, 40);
        assert_eq!(o.shedding(), None);
    }

    #[test]
    fn the_limit_is_cut_below_a_late_population_and_grows_back_only_while_it_binds() {
        let o = Overload::new(Some(100 * MS), None);
        let t = &mut Instant::now();
        // On time: no limit is learned, however many streams are held.
        feed_at(&o, t, Duration::ZERO, 50_000, 1_000);
        assert_eq!(o.limit(), None);
        assert_eq!(o.limited(1_000_000), None);
        // One stall of the whole process: late for 140 ms, no cut.
        feed_at(&o, t, Duration::from_secs(5), 10_000, 1);
        feed_at(&o, t, Duration::ZERO, 10_000, 100);
        assert_eq!(o.limit(), None);
        // Late at 10,000 streams for a quarter second (the average reaches
        // the threshold at the 6th sample of 210 ms): cut to 9,000, so new
        // sessions wait although the lateness soon falls.
        feed_at(&o, t, 200 * MS, 10_000, 7);
        assert_eq!(o.limit(), None);
        feed_at(&o, t, 200 * MS, 10_000, 3);
        assert_eq!(o.limit(), Some(9_000));
        assert_eq!(o.limited(9_500), Some(9_000));
        assert_eq!(o.limited(8_999), None);
        // Still late half a second after the cut: cut again, below what
        // is held.
        feed_at(&o, t, 200 * MS, 9_500, 3);
        assert_eq!(o.limit(), Some(8_550));
        // On time but far under the limit: it says nothing, no growth.
        feed_at(&o, t, Duration::ZERO, 1_000, 1_000);
        assert_eq!(o.limit(), Some(8_550));
        // Between half the threshold and the threshold: held, even while
        // it binds.
        feed_at(&o, t, 70 * MS, 1_000, 20);
        feed_at(&o, t, 70 * MS, 8_000, 100);
        assert_eq!(o.limit(), Some(8_550));
        // Under half the threshold at the limit: 1 % a second.
        feed_at(&o, t, 40 * MS, 8_550, 15);
        assert_eq!(o.limit(), Some(8_635));
        feed_at(&o, t, 40 * MS, 8_600, 10);
        // Well on time at the limit, under the highest a cut set (9,000):
        // 4 % a second, up to that.
        feed_at(&o, t, Duration::ZERO, 8_600, 50);
        assert_eq!(o.limit(), Some(8_980));
        feed_at(&o, t, Duration::ZERO, 8_980, 150);
        assert_eq!(o.limit(), Some(9_000));
        // Past it, where the server ran late before: 1 % a second again.
        feed_at(&o, t, Duration::ZERO, 9_000, 100);
        assert_eq!(o.limit(), Some(9_090));
        feed_at(&o, t, Duration::ZERO, 9_090, 500);
        let grown = o.limit().expect("a limit");
        assert!((9_400..9_700).contains(&grown), "{grown}");
        // Late with under half the limit held: not theirs, no cut.
        let half = grown.div_ceil(2);
        feed_at(&o, t, Duration::from_secs(1), half - 1, 100);
        assert_eq!(o.limit(), Some(grown));
        // Late at half: cut to 90 % of them.
        feed_at(&o, t, Duration::from_secs(1), half, 1);
        assert_eq!(o.limit(), Some(half * 9 / 10));
        // On time for 30 s, well under the limit: forgotten.
        feed_at(&o, t, Duration::ZERO, 100, 2_900);
        assert!(o.limit().is_some());
        feed_at(&o, t, Duration::ZERO, 100, 200);
        assert_eq!(o.limit(), None);
        assert_eq!(o.limited(1_000_000), None);
        // A cut never goes below the floor.
        let fresh = Overload::new(Some(100 * MS), None);
        feed_at(&fresh, &mut Instant::now(), Duration::from_secs(1), 3, 3);
        assert_eq!(fresh.limit(), Some(MIN_LIMIT));
    }

    #[test]
    fn a_cut_waits_for_the_work_queued_behind_the_lateness_to_drain() {
        let o = Overload::new(Some(100 * MS), None);
        let mut t = Instant::now();
        // A second late, sampled every 10 ms: cut once the average has been
        // at the threshold a quarter second.
        let mut late_for = |o: &Overload, span: Duration, held: u64| {
            let end = t + span;
            while t < end {
                t += PROBE_EVERY;
                o.observe(t, Duration::from_secs(1), held);
            }
        };
        late_for(&o, 300 * MS, 10_000);
        assert_eq!(o.limit(), Some(9_000));
        // The average is soon a second: what it stands for needs two
        // seconds to show a cut, not half of one.
        late_for(&o, 1_500 * MS, 9_500);
        assert_eq!(o.limit(), Some(9_000));
        late_for(&o, 600 * MS, 9_500);
        assert_eq!(o.limit(), Some(8_550));
    }

    #[test]
    fn a_lateness_excuses_silence_for_a_while_after_it_was_seen() {
        let o = Overload::new(Some(100 * MS), None);
        let mut clock = Instant::now();
        // 20 samples of 50 ms late: about 1.2 s of the probe's clock.
        feed_at(&o, &mut clock, 50 * MS, 0, 20);
        let peak = o.silence_excused();
        assert!(peak >= 40 * MS, "{peak:?}");
        // On time again, for 4 s: the lateness falls at once, the excuse
        // holds (for at least half of EXCUSE_FOR)...
        feed_at(&o, &mut clock, Duration::ZERO, 0, 400);
        assert!(o.lateness() < MS, "{:?}", o.lateness());
        assert_eq!(o.silence_excused(), peak);
        // ... and is gone within all of it.
        feed_at(&o, &mut clock, Duration::ZERO, 0, 1_000);
        assert!(o.silence_excused() < MS, "{:?}", o.silence_excused());
    }

    #[test]
    fn busy_processors_refuse_new_sessions_until_they_fall_well_under() {
        let o = Overload::new(None, Some(0.9));
        assert!(o.watches_cpu() && !o.enabled());
        o.cpu_used(0.89);
        assert_eq!(o.admits(50_000), Ok(()));
        o.cpu_used(0.93);
        assert_eq!(o.admits(50_000), Err(Busy::Cpu(93)));
        // Under the threshold but within the hysteresis: still refused.
        o.cpu_used(0.86);
        assert_eq!(o.admits(50_000), Err(Busy::Cpu(86)));
        // 5 points under: admitted again.
        o.cpu_used(0.85);
        assert_eq!(o.admits(50_000), Ok(()));
        // Fully busy reads as 100 %, never more.
        o.cpu_used(1.7);
        assert_eq!(o.admits(0), Err(Busy::Cpu(100)));
        // It refuses on the moment alone: no limit is learned from it.
        assert_eq!(o.limit(), None);
        // Off at zero, and at what rounds to zero.
        for off in [
            Overload::new(None, Some(0.0)),
            Overload::new(None, Some(0.0004)),
        ] {
            assert!(!off.watches_cpu());
            off.cpu_used(1.0);
            assert_eq!(off.admits(50_000), Ok(()));
        }
    }

    #[test]
    fn a_low_busy_setting_reopens_at_half_of_it() {
        let o = Overload::new(None, Some(0.04));
        o.cpu_used(0.05);
        assert_eq!(o.admits(0), Err(Busy::Cpu(5)));
        o.cpu_used(0.021);
        assert_eq!(o.admits(0), Err(Busy::Cpu(2)));
        o.cpu_used(0.02);
        assert_eq!(o.admits(0), Ok(()));
    }

    #[test]
    fn lateness_then_the_limit_then_the_processors_give_the_reason() {
        let o = Overload::new(Some(100 * MS), Some(0.9));
        let t = &mut Instant::now();
        // Late at 10,000 streams long enough for a cut to 9,000.
        feed_at(&o, t, 200 * MS, 10_000, 10);
        assert_eq!(o.limit(), Some(9_000));
        o.cpu_used(0.95);
        assert!(matches!(o.admits(9_500), Err(Busy::Late(_))));
        // On time again (under the limit, which then stays): the limit,
        // then the processors.
        feed_at(&o, t, Duration::ZERO, 8_000, 100);
        assert_eq!(o.shedding(), None);
        assert_eq!(
            o.admits(9_500),
            Err(Busy::Limit {
                held: 9_500,
                limit: 9_000
            })
        );
        assert_eq!(o.limit(), Some(9_000));
        assert_eq!(o.admits(8_000), Err(Busy::Cpu(95)));
    }

    #[test]
    fn the_processors_share_is_cpu_time_over_wall_time_over_the_last_second() {
        let t0 = Instant::now();
        let used0 = Duration::from_secs(7);
        let mut cpu = CpuShare::new(t0, used0);
        let quarter = CPU_OVER / 4;
        // Half a processor's worth each quarter second, on two processors:
        // a quarter of them; nothing is said before a whole second.
        for i in 1..=4u32 {
            let share = cpu.sample(t0 + quarter * i, used0 + quarter * i / 2, 2);
            assert_eq!(share.is_some(), i == 4, "after {:?}", quarter * i);
            if let Some(share) = share {
                assert!((share - 0.25).abs() < 1e-9, "{share}");
            }
        }
        // Then a whole processor for a quarter on one: the window is the
        // last second (the first quarter dropped), so 1/2 + 1/8 + 1/8 + 1/8
        // ... of one processor: (3 × 1/8 + 1/4) / 1 s.
        let used = used0 + quarter * 4 / 2 + quarter;
        let share = cpu.sample(t0 + quarter * 5, used, 1).expect("a window");
        assert_eq!(cpu.samples.front().map(|s| s.0), Some(t0 + quarter));
        assert!((share - 0.625).abs() < 1e-9, "{share}");
        // Never over 1, and never less than 0 if the clock went backwards.
        let share = cpu.sample(t0 + quarter * 6, used + CPU_OVER * 9, 1);
        assert_eq!(share, Some(1.0));
        let share = cpu.sample(t0 + quarter * 7, Duration::ZERO, 1);
        assert_eq!(share, Some(0.0));
    }

    #[test]
    fn the_process_cpu_time_moves_while_a_thread_works() {
        let before = process_cpu_time();
        let start = Instant::now();
        let mut spins = 0u64;
        // Bounded: stops once the clock moved, or after 10 s.
        while process_cpu_time() < before + 20 * MS && start.elapsed() < Duration::from_secs(10) {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        assert!(
            process_cpu_time() >= before + 20 * MS,
            "{:?}",
            process_cpu_time()
        );
    }

    #[test]
    fn disabled_never_sheds() {
        for o in [
            Overload::new(None, None),
            Overload::new(Some(Duration::ZERO), None),
        ] {
            assert!(!o.enabled());
            feed(&o, Duration::from_secs(10), 100);
            assert_eq!(o.shedding(), None);
            assert_eq!(o.lateness(), Duration::ZERO);
        }
    }

    #[test]
    fn absurd_samples_do_not_overflow() {
        let o = Overload::new(Some(MS), None);
        feed(&o, Duration::MAX, 100);
        assert!(o.shedding().is_some());
    }
}
