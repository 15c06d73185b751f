//! The one seed and everything derived from it.
//!
//! A run's seed feeds a SplitMix64 stream ([`SimRng`]) that draws the
//! scenario (counts, start times, fault times), client ids and client PRNG
//! seeds, and [`derive()`] names independent sub-seeds (turmoil's network,
//! each server boot). The algorithm is written out here, not borrowed from
//! a crate whose default generator could change, so a seed replays the same
//! run after dependency upgrades.

use std::ops::Range;
use std::time::Duration;

use station_core::sequence::mix64;

/// SplitMix64's increment.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// An independent seed for `purpose` under `seed` (e.g. server 2, boot 3).
pub fn derive(seed: u64, purpose: &[u64]) -> u64 {
    purpose.iter().fold(mix64(seed ^ 0x5157_5eed), |acc, p| {
        mix64(acc.wrapping_add(GOLDEN).wrapping_add(mix64(*p)))
    })
}

/// A small seeded generator for drawing scenarios.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator whose whole output follows from `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng {
            state: derive(seed, &[0x5ce7a]),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Sixteen random bytes (client ids).
    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }

    /// Uniform in `range` (which must not be empty).
    pub fn range(&mut self, range: Range<u64>) -> u64 {
        assert!(range.start < range.end, "empty range {range:?}");
        // Multiply-shift: unbiased enough for scenario drawing, and exact
        // across platforms.
        let span = range.end - range.start;
        range.start + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// Uniform in `range`, as a `u32`.
    pub fn range_u32(&mut self, range: Range<u32>) -> u32 {
        self.range(u64::from(range.start)..u64::from(range.end)) as u32
    }

    /// Uniform index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.range(0..n as u64) as usize
    }

    /// A duration uniform in `range`, in whole milliseconds.
    pub fn millis(&mut self, range: Range<Duration>) -> Duration {
        let lo = range.start.as_millis() as u64;
        let hi = range.end.as_millis() as u64;
        Duration::from_millis(self.range(lo..hi.max(lo + 1)))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws() {
        let draw = |seed| {
            let mut r = SimRng::new(seed);
            (0..8).map(|_| r.range(0..1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(derive(7, &[1, 2]), derive(7, &[2, 1]));
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = SimRng::new(1);
        for _ in 0..10_000 {
            let x = r.range(5..9);
            assert!((5..9).contains(&x));
            let d = r.millis(Duration::from_secs(1)..Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(2));
        }
    }
}
