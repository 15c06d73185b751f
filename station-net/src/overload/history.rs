//! What the probe remembers of the recent past: an extreme over a
//! sliding period, kept in two halves; the peak lateness that excuses
//! silence, and the round trips' baseline.

use std::time::{Duration, Instant};

use super::{BASELINE_FOR, EXCUSE_FOR};

/// What was taken in over the last period (between half of it and all of
/// it), in two halves: the older is dropped as a new one begins, both
/// after a whole period with nothing taken in. Each half keeps one
/// extreme, the lowest or the highest.
#[derive(Debug, Default)]
pub(super) struct Halves {
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
pub(super) struct Peak(Halves);

impl Peak {
    /// Takes in the lateness `late` at `now`; returns the highest of the
    /// last [`EXCUSE_FOR`] (at least half of it).
    pub(super) fn update(&mut self, now: Instant, late: Duration) -> Duration {
        self.0.roll(now, EXCUSE_FOR);
        self.0.take_in(late, Duration::max);
        self.0.kept().max().unwrap_or_default()
    }
}

/// The lowest window median over the last [`BASELINE_FOR`].
#[derive(Debug, Default)]
pub(super) struct Baseline(Halves);

impl Baseline {
    /// Takes in a window's `median` at `now` (only if `learn`: an overload
    /// must not become what is normal); returns the baseline (`median`
    /// itself while there is none).
    pub(super) fn update(&mut self, now: Instant, median: Duration, learn: bool) -> Duration {
        self.0.roll(now, BASELINE_FOR);
        if learn {
            self.0.take_in(median, Duration::min);
        }
        self.0.kept().min().unwrap_or(median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
}
