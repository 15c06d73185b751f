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
//! the streams held (those counted against `--max-sessions`):
//!
//! - lateness at the threshold ([`CUT_AT`]) for [`CUT_AFTER`] samples in
//!   a row (one stall of the machine, or of the process, is not a
//!   population too large) cuts the limit to [`CUT_TO`] of the streams
//!   held now, at most once per [`CUT_EVERY`] samples, so the limit falls below a population that is too large and
//!   the door stays shut while sessions complete; but not while fewer
//!   than half the limit are held, since then the lateness is not theirs
//!   (at twice its capacity, a server whose sessions had failed cut its
//!   limit from 54,000 to 7,000 this way);
//! - lateness under [`GROW_UNDER`] of the threshold grows it by
//!   [`GROW_BY`] every [`GROW_EVERY`] samples, and only while the limit
//!   binds (the streams held are within a tenth of it): a limit nobody
//!   reaches says nothing about what the server carries.
//!
//! A new session is refused while the streams held are at the limit; the
//! limit starts unset (no limit) and never goes below [`MIN_LIMIT`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the probe measures.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Lateness at or above this fraction of the threshold cuts the limit: the
/// same lateness that sheds, so a noisy machine that never sheds never
/// learns a limit either.
pub const CUT_AT: f64 = 1.0;
/// A cut sets the limit to this fraction of the streams held.
pub const CUT_TO: f64 = 0.9;
/// Samples between cuts (half a second): a cut's effect shows only as
/// sessions complete, so cutting again at once would overshoot.
pub const CUT_EVERY: u32 = 50;
/// Samples in a row at the threshold before a cut (a quarter second): a
/// stopped process wakes with one huge sample, which the average carries
/// over the threshold for a few samples only.
pub const CUT_AFTER: u32 = 25;
/// Lateness under this fraction of the threshold lets the limit grow.
pub const GROW_UNDER: f64 = 0.25;
/// Each growth adds this fraction of the limit (at least one stream)...
pub const GROW_BY: f64 = 0.01;
/// ... every this many samples (one second): slow, since a session admitted
/// now costs its server for its whole schedule.
pub const GROW_EVERY: u32 = 100;
/// The limit never goes below this many streams.
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
    /// The learned limit on streams held; [`UNSET`] before the first cut.
    limit: AtomicU64,
    /// Samples since the limit last changed. Only the probe writes it.
    since_change: AtomicU32,
    /// Samples in a row at the threshold. Only the probe writes it.
    late_in_a_row: AtomicU32,
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
            // The first late sample may cut at once.
            since_change: AtomicU32::new(CUT_EVERY),
            late_in_a_row: AtomicU32::new(0),
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

    /// Feeds one measurement: the probe woke `late` after its deadline,
    /// with `held` streams held. Only the probe calls this, so
    /// load-then-store is not a race.
    pub fn observe(&self, late: Duration, held: u64) {
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
        let now = if was {
            new >= threshold / 2
        } else {
            new >= threshold
        };
        self.learn(new as f64 / threshold as f64, held);
        crate::metrics::set_overload(Duration::from_micros(new), now, self.limit());
        if now != was {
            self.shedding.store(now, Ordering::Relaxed);
            let late = Duration::from_micros(new);
            if now {
                tracing::warn!(?late, "overloaded: ticks run late; shedding new sessions");
            } else {
                tracing::info!(?late, "caught up: admitting new sessions again");
            }
        }
    }
}

impl Overload {
    /// One step of the limit's AIMD, at lateness `load` × the threshold.
    fn learn(&self, load: f64, held: u64) {
        let since = self.since_change.load(Ordering::Relaxed).saturating_add(1);
        let limit = self.limit.load(Ordering::Relaxed);
        // Lateness with fewer than half the limit held is not theirs (a
        // storm of refused or resuming streams, a neighbour): cutting to
        // it would shut the door on what the server carried.
        let theirs = limit == UNSET || held.saturating_mul(2) >= limit;
        let in_a_row = match load >= CUT_AT {
            true => self.late_in_a_row.load(Ordering::Relaxed).saturating_add(1),
            false => 0,
        };
        self.late_in_a_row.store(in_a_row, Ordering::Relaxed);
        let next = if in_a_row >= CUT_AFTER && since >= CUT_EVERY && theirs {
            let cut = ((held as f64 * CUT_TO) as u64).max(MIN_LIMIT);
            (cut < limit).then_some(cut)
        } else if load < GROW_UNDER && since >= GROW_EVERY && limit != UNSET {
            let binds = held.saturating_mul(10) >= limit.saturating_mul(9);
            binds.then(|| limit.saturating_add(((limit as f64 * GROW_BY) as u64).max(1)))
        } else {
            None
        };
        if let Some(next) = next {
            self.limit.store(next, Ordering::Relaxed);
            self.since_change.store(0, Ordering::Relaxed);
            if next < limit {
                tracing::warn!(
                    held,
                    limit = next,
                    "ticks run late: new sessions wait for room under a lower limit"
                );
            }
        } else {
            self.since_change.store(since, Ordering::Relaxed);
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
        signal.observe(
            tokio::time::Instant::now().saturating_duration_since(due),
            held(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn feed(o: &Overload, late: Duration, times: usize) {
        feed_held(o, late, 0, times);
    }

    fn feed_held(o: &Overload, late: Duration, held: u64, times: usize) {
        for _ in 0..times {
            o.observe(late, held);
        }
    }

    #[test]
    fn sheds_only_on_sustained_lateness_and_stops_below_half() {
        let o = Overload::new(Some(100 * MS));
        assert!(o.enabled());
        feed(&o, Duration::ZERO, 10);
        assert_eq!(o.shedding(), None);
        // One long stall is smoothed away: 400 ms / 8 = 50 ms.
        o.observe(400 * MS, 0);
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
        // On time: no limit is learned, however many streams are held.
        feed_held(&o, Duration::ZERO, 50_000, 1_000);
        assert_eq!(o.limit(), None);
        assert_eq!(o.admits(1_000_000), Ok(()));
        // One stall of the whole process: no cut.
        o.observe(Duration::from_secs(5), 10_000);
        feed_held(&o, Duration::ZERO, 10_000, 100);
        assert_eq!(o.limit(), None);
        // Late at 10,000 streams for a quarter second: cut to 9,000, so new
        // sessions wait although the lateness soon falls (the door does not
        // flap).
        feed_held(&o, 200 * MS, 10_000, 40);
        assert_eq!(o.limit(), Some(9_000));
        assert_eq!(o.admits(9_500), Err(9_000));
        assert_eq!(o.admits(8_999), Ok(()));
        // Still late half a second later: cut again, below what is held.
        feed_held(&o, 200 * MS, 9_500, CUT_EVERY as usize);
        assert_eq!(o.limit(), Some(8_550));
        // Between a quarter of the threshold and the threshold: held.
        feed_held(&o, 50 * MS, 8_000, 1_000);
        assert_eq!(o.limit(), Some(8_550));
        // On time but far under the limit: it says nothing, no growth.
        feed_held(&o, Duration::ZERO, 1_000, 1_000);
        assert_eq!(o.limit(), Some(8_550));
        // On time at the limit: 1 % a second.
        feed_held(&o, Duration::ZERO, 8_550, GROW_EVERY as usize);
        assert_eq!(o.limit(), Some(8_635));
        feed_held(&o, Duration::ZERO, 8_600, 10 * GROW_EVERY as usize);
        let grown = o.limit().expect("a limit");
        assert!((9_400..9_600).contains(&grown), "{grown}");
        // Late with under half the limit held: not theirs, no cut.
        let half = grown.div_ceil(2);
        feed_held(&o, Duration::from_secs(1), half - 1, 1_000);
        assert_eq!(o.limit(), Some(grown));
        // Late at half: cut to 90 % of them.
        feed_held(&o, Duration::from_secs(1), half, CUT_AFTER as usize);
        assert_eq!(o.limit(), Some(half * 9 / 10));
        // A cut never goes below the floor.
        let fresh = Overload::new(Some(100 * MS));
        feed_held(&fresh, Duration::from_secs(1), 3, CUT_AFTER as usize);
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
