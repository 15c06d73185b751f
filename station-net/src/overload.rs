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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the probe measures.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);

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

    /// The smoothed scheduling lateness.
    pub fn lateness(&self) -> Duration {
        Duration::from_micros(self.smoothed_us.load(Ordering::Relaxed))
    }

    /// Feeds one measurement: the probe woke `late` after its deadline.
    /// Only the probe calls this, so load-then-store is not a race.
    pub fn observe(&self, late: Duration) {
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
        crate::metrics::set_overload(Duration::from_micros(new), now);
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

/// Measures scheduling lateness until `stop` is cancelled.
pub async fn probe(signal: std::sync::Arc<Overload>, stop: CancellationToken) {
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
        signal.observe(tokio::time::Instant::now().saturating_duration_since(due));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn feed(o: &Overload, late: Duration, times: usize) {
        for _ in 0..times {
            o.observe(late);
        }
    }

    #[test]
    fn sheds_only_on_sustained_lateness_and_stops_below_half() {
        let o = Overload::new(Some(100 * MS));
        assert!(o.enabled());
        feed(&o, Duration::ZERO, 10);
        assert_eq!(o.shedding(), None);
        // One long stall is smoothed away: 400 ms / 8 = 50 ms.
        o.observe(400 * MS);
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
