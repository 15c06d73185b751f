//! Whether a server may admit a new session now: [`StoreGate`], which
//! watches what saturates first under load, the session store.
//!
//! Every admitted session costs the store a write per lease for as long as
//! it lives, so a store at its limit must close the door to new sessions
//! *before* its queue turns into timeouts for the sessions already
//! admitted: those timeouts end streams, every ended stream comes back as a
//! resume, and each resume costs the store more (a load and a takeover),
//! a loop that outlives whatever started it (ARCHITECTURE.md §2, "Overload").
//!
//! The gate learns from every store operation the adapter runs: how long it
//! took, how many were in flight when it started, and whether it failed.
//! It closes for new sessions (never for resumes) on any of three signs:
//!
//! - **A queue.** An adaptive limit on operations in flight, after
//!   Netflix's Gradient2: every [`Config::window`] the window's mean
//!   latency (`short`) is compared with a slow average of past windows
//!   (`long`, about a minute). While `short` stays within
//!   [`Config::tolerance`] × `long` the limit grows by about its square
//!   root; beyond, it shrinks in proportion (at most halving per window),
//!   smoothed. Little's law: a queue in the store shows as more operations
//!   in flight at the same throughput, so in-flight beyond the limit means
//!   new sessions would only lengthen the queue. A window whose in-flight
//!   stayed under half the limit says nothing about it (the load, not the
//!   store, set the pace) and leaves it alone.
//! - **Slowness.** A window whose mean latency reached [`Config::slow`]
//!   (a fraction of the store timeout), whatever the average says: a store
//!   slow for long enough that `long` has caught up is still slow.
//! - **Failures.** An operation that failed or timed out closes the door
//!   for [`Config::failure_cooldown`]: a new session would cost a create
//!   against a store that just failed.
//!
//! All arithmetic is on the times and counts passed in: no clock, no
//! randomness, the same inputs give the same decisions.

use std::time::{Duration, Instant};

/// How the gate adapts. [`Config::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The limit never goes below this (operations in flight).
    pub min_limit: u32,
    /// ... nor above this.
    pub max_limit: u32,
    /// Where the limit starts: generous, so a healthy store admits a fast
    /// ramp without waiting for the limit to grow.
    pub initial_limit: u32,
    /// How often the limit is recomputed (and how long `short` averages).
    pub window: Duration,
    /// Latency up to this multiple of `long` counts as no queue.
    pub tolerance: f64,
    /// A window's mean latency at or above this closes the door.
    pub slow: Duration,
    /// How long a failed operation keeps the door closed.
    pub failure_cooldown: Duration,
}

impl Config {
    /// Defaults for a store whose operations time out after
    /// `store_timeout`: slow at a quarter of it, closed for two seconds
    /// after a failure.
    pub fn new(store_timeout: Duration) -> Self {
        Config {
            min_limit: 32,
            max_limit: 1 << 20,
            initial_limit: 4096,
            window: Duration::from_millis(100),
            tolerance: 1.5,
            slow: store_timeout / 4,
            failure_cooldown: Duration::from_secs(2),
        }
    }
}

/// Weight of one window in `long`: about a minute of 100 ms windows.
const LONG_WINDOWS: f64 = 600.0;
/// Weight of a new limit against the old one.
const SMOOTHING: f64 = 0.2;
/// A window needs this many samples to say anything, unless it has been
/// open for `STALE_WINDOWS` windows.
const MIN_SAMPLES: u32 = 10;
/// A window's mean says nothing once this many windows have passed since
/// it closed: with little traffic, an old slow window must not keep the
/// door shut (nothing admitted, nothing sampled, shut for good).
const STALE_WINDOWS: u32 = 10;

/// Why the door is closed for new sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// More store operations in flight than the adaptive limit.
    #[error("its session store has {inflight} operations in flight, over the limit of {limit}")]
    Queue {
        /// In flight now.
        inflight: u32,
        /// The limit.
        limit: u32,
    },
    /// The store's operations took this long on average in the last window.
    #[error("its session store answers in {0:?} on average")]
    Slow(Duration),
    /// A store operation failed or timed out recently.
    #[error("its session store failed an operation {0:?} ago")]
    Failing(Duration),
}

/// The admission gate of one server. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct StoreGate {
    cfg: Config,
    limit: f64,
    /// Slow average of window means, microseconds; 0 before the first.
    long_us: f64,
    /// The last complete window's mean, microseconds, and when it closed.
    short_us: f64,
    short_at: Option<Instant>,
    window: Window,
    last_failure: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Option<Instant>,
    samples: u32,
    total_us: f64,
    max_inflight: u32,
}

impl Window {
    const EMPTY: Window = Window {
        start: None,
        samples: 0,
        total_us: 0.0,
        max_inflight: 0,
    };
}

impl StoreGate {
    /// A gate at its initial limit, open.
    pub fn new(cfg: Config) -> Self {
        StoreGate {
            limit: f64::from(cfg.initial_limit.clamp(cfg.min_limit, cfg.max_limit)),
            cfg,
            long_us: 0.0,
            short_us: 0.0,
            short_at: None,
            window: Window::EMPTY,
            last_failure: None,
        }
    }

    /// The adaptive limit on store operations in flight.
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// Learns from one store operation that ended at `now`: it took
    /// `latency`, `inflight` operations were in flight when it started
    /// (itself included), and whether it `failed`.
    pub fn handle_sample(&mut self, now: Instant, latency: Duration, inflight: u32, failed: bool) {
        if failed {
            self.last_failure = Some(now);
        }
        let w = &mut self.window;
        let start = *w.start.get_or_insert(now);
        w.samples += 1;
        w.total_us += latency.as_secs_f64() * 1e6;
        w.max_inflight = w.max_inflight.max(inflight);
        let open_for = now.saturating_duration_since(start);
        let stale = self.cfg.window.saturating_mul(STALE_WINDOWS);
        if open_for >= self.cfg.window && (w.samples >= MIN_SAMPLES || open_for >= stale) {
            let done = std::mem::replace(w, Window::EMPTY);
            self.short_at = Some(now);
            self.adapt(done);
        }
    }

    /// Whether a new session may be admitted now, with `inflight` store
    /// operations in flight.
    pub fn admits(&self, now: Instant, inflight: u32) -> Result<(), Closed> {
        if let Some(at) = self.last_failure {
            let ago = now.saturating_duration_since(at);
            if ago < self.cfg.failure_cooldown {
                return Err(Closed::Failing(ago));
            }
        }
        let short = Duration::from_secs_f64(self.short_us / 1e6);
        let recent = self.short_at.is_some_and(|at| {
            now.saturating_duration_since(at) < self.cfg.window.saturating_mul(STALE_WINDOWS)
        });
        if recent && short >= self.cfg.slow {
            return Err(Closed::Slow(short));
        }
        if inflight >= self.limit() {
            return Err(Closed::Queue {
                inflight,
                limit: self.limit(),
            });
        }
        Ok(())
    }

    fn adapt(&mut self, w: Window) {
        let short = w.total_us / f64::from(w.samples);
        self.short_us = short;
        if self.long_us == 0.0 {
            self.long_us = short;
        } else {
            self.long_us += (short - self.long_us) / LONG_WINDOWS;
        }
        // Latency fell far below the average (a burst has passed): let the
        // average come down faster, or it would excuse the next queue.
        if self.long_us > 2.0 * short {
            self.long_us *= 0.95;
        }
        if f64::from(w.max_inflight) < self.limit / 2.0 {
            return;
        }
        let gradient = (self.cfg.tolerance * self.long_us / short.max(1.0)).clamp(0.5, 1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        self.limit = (self.limit * (1.0 - SMOOTHING) + target * SMOOTHING)
            .clamp(f64::from(self.cfg.min_limit), f64::from(self.cfg.max_limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn gate() -> StoreGate {
        StoreGate::new(Config::new(Duration::from_secs(2)))
    }

    /// Feeds `windows` windows of 20 samples each, `latency` apiece, with
    /// `inflight` in flight; returns the time after them.
    fn feed(
        g: &mut StoreGate,
        mut now: Instant,
        windows: u32,
        latency: Duration,
        inflight: u32,
    ) -> Instant {
        for _ in 0..windows * 20 {
            now += ms(5);
            g.handle_sample(now, latency, inflight, false);
        }
        now
    }

    #[test]
    fn a_healthy_store_admits_and_its_limit_grows_only_when_used() {
        let t0 = Instant::now();
        let mut g = gate();
        let start = g.limit();
        let now = feed(&mut g, t0, 50, ms(2), 10);
        assert_eq!(g.admits(now, 10), Ok(()));
        assert_eq!(
            g.limit(),
            start,
            "10 in flight says nothing of a 4096 limit"
        );
        let now = feed(&mut g, now, 50, ms(2), start);
        assert!(g.limit() > start, "used and fast: grows ({})", g.limit());
        assert_eq!(g.admits(now, start), Ok(()));
    }

    #[test]
    fn a_queue_shrinks_the_limit_and_closes_the_door() {
        let t0 = Instant::now();
        let mut g = gate();
        let now = feed(&mut g, t0, 100, ms(2), 3000);
        let before = g.limit();
        // The same in flight, ten times slower: a queue.
        let now = feed(&mut g, now, 20, ms(20), 3000);
        assert!(g.limit() < before / 2, "{} from {before}", g.limit());
        assert_eq!(
            g.admits(now, 3000),
            Err(Closed::Queue {
                inflight: 3000,
                limit: g.limit()
            })
        );
        // Few in flight: the queue is gone, the door open.
        assert_eq!(g.admits(now, 10), Ok(()));
    }

    #[test]
    fn a_slow_store_closes_the_door_however_long_it_has_been_slow() {
        let t0 = Instant::now();
        let mut g = gate();
        // Slow from the start: `long` is as slow as `short`.
        let now = feed(&mut g, t0, 20, ms(600), 5);
        assert_eq!(g.admits(now, 5), Err(Closed::Slow(ms(600))));
        let now = feed(&mut g, now, 1, ms(3), 5);
        assert_eq!(g.admits(now, 5), Ok(()), "fast again: open");
    }

    /// Little traffic after a slow spell: no new window closes, and the
    /// old one must not keep the door shut (nothing admitted, nothing
    /// sampled, shut for good).
    #[test]
    fn an_old_slow_window_does_not_keep_the_door_shut() {
        let t0 = Instant::now();
        let mut g = gate();
        // Two windows' worth: the first closes at its 21st sample.
        let now = feed(&mut g, t0, 2, ms(900), 1);
        assert_eq!(g.admits(now, 0), Err(Closed::Slow(ms(900))));
        let closed = t0 + ms(105);
        assert_eq!(g.admits(closed + ms(999), 0), Err(Closed::Slow(ms(900))));
        assert_eq!(g.admits(closed + ms(1000), 0), Ok(()));
        // A few slow samples over a long quiet spell still close a window.
        let mut g = gate();
        g.handle_sample(t0, ms(900), 1, false);
        assert_eq!(g.admits(t0, 0), Ok(()), "one sample says nothing yet");
        g.handle_sample(t0 + ms(1000), ms(900), 1, false);
        assert_eq!(g.admits(t0 + ms(1000), 0), Err(Closed::Slow(ms(900))));
    }

    #[test]
    fn a_failure_closes_the_door_for_the_cooldown() {
        let t0 = Instant::now();
        let mut g = gate();
        g.handle_sample(t0, ms(2000), 1, true);
        assert_eq!(g.admits(t0 + ms(500), 0), Err(Closed::Failing(ms(500))));
        assert_eq!(g.admits(t0 + ms(2000), 0), Ok(()));
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let t0 = Instant::now();
        let mut g = gate();
        let now = feed(&mut g, t0, 300, ms(1), 2);
        let now = feed(&mut g, now, 300, ms(500), 1 << 21);
        assert_eq!(g.limit(), 32);
        feed(&mut g, now, 3000, ms(1), 1 << 21);
        assert!(g.limit() <= 1 << 20);
    }

    #[test]
    fn decisions_replay_from_the_same_samples() {
        let t0 = Instant::now();
        let run = || {
            let mut g = gate();
            let mut now = t0;
            let mut limits = Vec::new();
            for i in 0..2000u64 {
                now += ms(3);
                g.handle_sample(
                    now,
                    ms(1 + (i * 7919) % 40),
                    (i % 5000) as u32,
                    i % 997 == 0,
                );
                limits.push(g.limit());
            }
            limits
        };
        assert_eq!(run(), run());
    }
}
