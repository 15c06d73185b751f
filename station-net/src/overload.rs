//! Is the server keeping its schedule? A cheap overload signal, with
//! hysteresis, that the server sheds new sessions on.
//!
//! A probe task sleeps [`PROBE_EVERY`] at a time on the server's runtime and
//! measures how late it wakes up. That lateness is the runtime's scheduling
//! delay: what every session's tick suffers on top of its timer slack, so
//! the probe sees what clients would see, at the cost of one timer wake-up
//! every 10 ms (not one measurement per number).
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
//! **The session limit.** Shedding alone lets the door flap: an admitted
//! session costs its server work for its whole schedule, so a door that
//! reopens the moment lateness dips admits a burst that pushes it straight
//! back up, and the population it admits ratchets past what the core
//! carries (BENCHMARKS.md: a server offered twice its capacity shed and
//! reopened every second while its core stayed saturated). So the probe
//! also learns how many streams the server carries on time, by AIMD on
//! the streams held (those counted against `--max-sessions`), in time
//! measured by the probe's clock, not in samples (a late probe samples
//! less often):
//!
//! - lateness at the threshold for [`CUT_AFTER`] (one stall of the machine,
//!   or of the process, is not a population too large) cuts the limit to
//!   [`CUT_TO`] of the streams held now, at most once per [`CUT_EVERY`], so
//!   the limit falls below a population that is too large and the door
//!   stays shut while sessions complete; but not while fewer than half the
//!   limit are held, since then the lateness is not theirs (at twice its
//!   capacity, a server whose sessions had failed cut its limit from
//!   54,000 to 7,000 this way);
//! - lateness under [`GROW_UNDER`] of the threshold (where shedding stops)
//!   grows it by [`GROW_BY`] (at least [`MIN_LIMIT`] streams) every
//!   [`GROW_EVERY`], and only while the limit binds (the streams held are
//!   within a tenth of it): a limit nobody reaches says nothing;
//! - lateness under a quarter of the threshold for [`FORGET_AFTER`] while
//!   the limit does not bind forgets it: whatever made the server late
//!   (a stall at start, a neighbour) is gone, and a limit learned then must
//!   not hold the door half shut for good.
//!
//! A new session is refused while the streams held are at the limit; the
//! limit starts unset (no limit) and never goes below [`MIN_LIMIT`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
/// ... every this long: slow, since a session admitted now costs its
/// server for its whole schedule.
pub const GROW_EVERY: Duration = Duration::from_secs(1);
/// Lateness under this fraction of the threshold is well on time...
pub const FORGET_UNDER: f64 = 0.25;
/// ... and this long of it with the limit not binding forgets the limit.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);
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
    /// Smoothed scheduling lateness, micros.
    smoothed_us: AtomicU64,
    shedding: AtomicBool,
    /// The learned limit on streams held; [`UNSET`] while none is.
    limit: AtomicU64,
    /// What the limit is learned from; only the probe writes it.
    learning: Mutex<Learning>,
}

/// The moments the limit's AIMD compares against.
#[derive(Debug, Default)]
struct Learning {
    /// Since when the lateness has been at the threshold.
    late_since: Option<Instant>,
    /// Since when it has been under a quarter of it, the limit not binding.
    idle_since: Option<Instant>,
    /// When the limit last changed.
    changed: Option<Instant>,
}

impl Overload {
    /// A signal that sheds at `threshold` of smoothed lateness (`None` or
    /// zero: never sheds).
    pub fn new(threshold: Option<Duration>) -> Self {
        Overload {
            threshold_us: threshold
                .filter(|t| !t.is_zero())
                .map(|t| t.as_micros().min(u64::MAX as u128) as u64),
            smoothed_us: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
            limit: AtomicU64::new(UNSET),
            learning: Mutex::new(Learning::default()),
        }
    }

    /// Whether shedding is configured at all.
    pub fn enabled(&self) -> bool {
        self.threshold_us.is_some()
    }

    /// Whether new sessions should be refused now: `Some(lateness)` if so.
    pub fn shedding(&self) -> Option<Duration> {
        self.shedding
            .load(Ordering::Relaxed)
            .then(|| self.lateness())
    }

    /// Whether a new session may join the `held` streams: `Err(limit)` if
    /// the learned limit is reached.
    pub fn admits(&self, held: u64) -> Result<(), u64> {
        match self.limit.load(Ordering::Relaxed) {
            limit if held >= limit => Err(limit),
            _ => Ok(()),
        }
    }

    /// The learned limit on streams held, if one has been learned.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l != UNSET)
    }

    /// The smoothed scheduling lateness.
    pub fn lateness(&self) -> Duration {
        Duration::from_micros(self.smoothed_us.load(Ordering::Relaxed))
    }

    /// Feeds one measurement: at `now` the probe woke `late` after its
    /// deadline, with `held` streams held. Only the probe calls this, so
    /// load-then-store is not a race.
    pub fn observe(&self, now: Instant, late: Duration, held: u64) {
        let Some(threshold) = self.threshold_us else {
            return;
        };
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
        self.learn(now, new as f64 / threshold as f64, held);
        crate::metrics::set_overload(Duration::from_micros(new), sheds, self.limit());
        if sheds != was {
            self.shedding.store(sheds, Ordering::Relaxed);
            let late = Duration::from_micros(new);
            if sheds {
                tracing::warn!(?late, "overloaded: ticks run late; shedding new sessions");
            } else {
                tracing::info!(?late, "caught up: admitting new sessions again");
            }
        }
    }

    /// One step of the limit's AIMD at `now`, at lateness `load` × the
    /// threshold with `held` streams held.
    fn learn(&self, now: Instant, load: f64, held: u64) {
        let mut learning = self.learning.lock().unwrap_or_else(|p| p.into_inner());
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
        let next = if late_for >= CUT_AFTER && since_change >= CUT_EVERY && theirs {
            let cut = ((held as f64 * CUT_TO) as u64).max(MIN_LIMIT);
            (cut < limit).then_some(cut)
        } else if load < GROW_UNDER && binds && since_change >= GROW_EVERY {
            let step = ((limit as f64 * GROW_BY) as u64).max(MIN_LIMIT);
            Some(limit.saturating_add(step))
        } else if idle_for >= FORGET_AFTER {
            Some(UNSET)
        } else {
            None
        };
        let Some(next) = next else { return };
        self.limit.store(next, Ordering::Relaxed);
        learning.changed = Some(now);
        learning.idle_since = None;
        if next < limit {
            tracing::warn!(
                held,
                limit = next,
                "ticks run late: new sessions wait for room under a lower limit"
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

/// Measures scheduling lateness until `stop` is cancelled; `held` counts
/// the streams held at each sample.
pub async fn probe(
    signal: std::sync::Arc<Overload>,
    held: impl Fn() -> u64,
    stop: CancellationToken,
) {
    if !signal.enabled() {
        return;
    }
    loop {
        let due = tokio::time::Instant::now() + PROBE_EVERY;
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let now = tokio::time::Instant::now();
        signal.observe(now.into_std(), now.saturating_duration_since(due), held());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
    fn sheds_only_on_sustained_lateness_and_stops_below_half() {
        let o = Overload::new(Some(100 * MS));
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
        let o = Overload::new(Some(100 * MS));
        let t = &mut Instant::now();
        // On time: no limit is learned, however many streams are held.
        feed_at(&o, t, Duration::ZERO, 50_000, 1_000);
        assert_eq!(o.limit(), None);
        assert_eq!(o.admits(1_000_000), Ok(()));
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
        assert_eq!(o.admits(9_500), Err(9_000));
        assert_eq!(o.admits(8_999), Ok(()));
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
        // On time at the limit: 1 % a second.
        feed_at(&o, t, Duration::ZERO, 8_550, 50);
        assert_eq!(o.limit(), Some(8_635));
        feed_at(&o, t, Duration::ZERO, 8_600, 1_000);
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
        assert_eq!(o.admits(1_000_000), Ok(()));
        // A cut never goes below the floor.
        let fresh = Overload::new(Some(100 * MS));
        feed_at(&fresh, &mut Instant::now(), Duration::from_secs(1), 3, 3);
        assert_eq!(fresh.limit(), Some(MIN_LIMIT));
    }

    #[test]
    fn disabled_never_sheds() {
        for o in [Overload::new(None), Overload::new(Some(Duration::ZERO))] {
            assert!(!o.enabled());
            feed(&o, Duration::from_secs(10), 100);
            assert_eq!(o.shedding(), None);
            assert_eq!(o.lateness(), Duration::ZERO);
        }
    }

    #[test]
    fn absurd_samples_do_not_overflow() {
        let o = Overload::new(Some(MS));
        feed(&o, Duration::MAX, 100);
        assert!(o.shedding().is_some());
    }
}
