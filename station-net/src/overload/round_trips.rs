//! The acknowledgements' round trips of one window: a histogram that
//! every stream adds to and the probe empties, read as its median.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::MIN_ACKS;

/// Buckets a quarter of an octave wide, of microseconds up to 2^32 (71
/// minutes): four buckets per doubling, so a median read as its bucket's
/// lower edge is under 20 % short.
const BUCKETS: usize = 128;

/// A histogram of round trips that every stream adds to and the probe
/// empties: one relaxed increment per acknowledgement timed.
#[derive(Debug)]
pub(super) struct RoundTrips([AtomicU64; BUCKETS]);

impl RoundTrips {
    pub(super) fn new() -> Self {
        RoundTrips(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    pub(super) fn add(&self, rtt: Duration) {
        let us = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
        self.0[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many were added since the last take.
    pub(super) fn len(&self) -> u64 {
        self.0.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The median of what was added since the last take (the lower edge
    /// of its bucket: it never overstates), and empties the histogram;
    /// `None` with fewer than [`MIN_ACKS`].
    pub(super) fn take_median(&self) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
}
