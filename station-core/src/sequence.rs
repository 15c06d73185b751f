//! The number sequence and its checksum.
//!
//! Values come from a *counter-based* generator: the value at index `i` is
//! the `(i + 1)`-th output of SplitMix64 seeded with the session seed, keeping
//! its high 32 bits. SplitMix64's state after `k` steps is simply
//! `seed + k * GOLDEN`, so any index is reachable in O(1): a session stores
//! its seed, never its numbers, and a resume at any index reproduces exactly
//! the same values. The algorithm is fixed here (not borrowed from a crate
//! whose default generator could change), so seeds replay across upgrades.
//!
//! The checksum is CRC-32/IEEE (zlib's `crc32`) over the values in order,
//! each as 4 big-endian bytes, as documented in `station.proto`.

/// Largest number of values a session may ask for (`0xffff`).
pub const MAX_COUNT: u32 = 65_535;

/// SplitMix64's increment: 2^64 divided by the golden ratio.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Steele, Lea and Flood, 2014).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value at `index` of the sequence seeded with `seed`. O(1).
#[inline]
pub fn value(seed: u64, index: u32) -> u32 {
    let state = seed.wrapping_add(GOLDEN.wrapping_mul(u64::from(index) + 1));
    (mix64(state) >> 32) as u32
}

/// The checksum of the first `count` values of `seed`'s sequence.
///
/// O(count) time and O(1) memory: values are generated and fed to the CRC
/// in small stack batches, never collected.
pub fn checksum(seed: u64, count: u32) -> u32 {
    const BATCH: u32 = 256;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = [0u8; BATCH as usize * 4];
    let mut start = 0;
    while start < count {
        let end = count.min(start + BATCH);
        for (chunk, i) in buf.chunks_exact_mut(4).zip(start..end) {
            chunk.copy_from_slice(&value(seed, i).to_be_bytes());
        }
        crc.update(&buf[..(end - start) as usize * 4]);
        start = end;
    }
    crc.finalize()
}

/// A running checksum over received values, resumable from a saved state.
///
/// `crc32fast` can continue a CRC from its value and the number of bytes
/// hashed so far, so a client persists two integers, never the values.
#[derive(Clone, Debug)]
pub struct RunningChecksum {
    hasher: crc32fast::Hasher,
    values: u32,
}

impl RunningChecksum {
    /// An empty checksum.
    pub fn new() -> Self {
        Self::resume(0, 0)
    }

    /// Continues from `crc` (the checksum of the first `values` values).
    pub fn resume(crc: u32, values: u32) -> Self {
        Self {
            hasher: crc32fast::Hasher::new_with_initial_len(crc, u64::from(values) * 4),
            values,
        }
    }

    /// Adds the next value.
    pub fn push(&mut self, value: u32) {
        self.hasher.update(&value.to_be_bytes());
        self.values += 1;
    }

    /// The checksum of every value pushed so far.
    pub fn value(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// How many values were pushed (including those before a resume).
    pub fn len(&self) -> u32 {
        self.values
    }

    /// Whether no value was pushed.
    pub fn is_empty(&self) -> bool {
        self.values == 0
    }
}

impl Default for RunningChecksum {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers computed outside this crate, with Python's zlib:
    ///
    /// ```text
    /// python3 -c 'import zlib; print(hex(zlib.crc32(b"".join(v.to_bytes(4, "big") for v in VALUES))))'
    /// ```
    #[test]
    fn checksum_known_answers_from_python_zlib() {
        let cases: &[(&[u32], u32)] = &[
            (&[], 0x0000_0000),
            (&[0], 0x2144_df1c),
            (&[1], 0x5643_ef8a),
            (&[1, 2, 3], 0x8f67_d0f6),
            (&[0xffff_ffff], 0xffff_ffff),
            (&[0xdead_beef, 0x0bad_f00d], 0xb621_ffd0),
        ];
        for (values, expected) in cases {
            let mut crc = RunningChecksum::new();
            values.iter().for_each(|v| crc.push(*v));
            assert_eq!(crc.value(), *expected, "values {values:?}");
        }
    }

    /// SplitMix64 reference outputs for seed 0 (the generator's published
    /// test vector: 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f).
    #[test]
    fn values_are_splitmix64_high_halves() {
        assert_eq!(value(0, 0), 0xe220_a839);
        assert_eq!(value(0, 1), 0x6e78_9e6a);
        assert_eq!(value(0, 2), 0x06c4_5d18);
    }

    /// Whole sequences, generated and summed independently in Python:
    ///
    /// ```text
    /// M = 2**64 - 1
    /// def mix(z):
    ///     z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    ///     z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    ///     return z ^ (z >> 31)
    /// val = lambda seed, i: mix((seed + 0x9e3779b97f4a7c15 * (i + 1)) & M) >> 32
    /// vals = [val(SEED, i) for i in range(N)]
    /// hex(zlib.crc32(b"".join(v.to_bytes(4, "big") for v in vals))), sum(vals)
    /// ```
    #[test]
    fn sequence_known_answers_from_python() {
        for (seed, count, crc, sum) in [
            (42u64, 10u32, 0xb7ca_1d76u32, 18_932_110_780u64),
            (0xdead_beef, MAX_COUNT, 0x81ab_73dc, 141_169_870_096_177),
        ] {
            assert_eq!(checksum(seed, count), crc, "seed {seed} count {count}");
            let total: u64 = (0..count).map(|i| u64::from(value(seed, i))).sum();
            assert_eq!(total, sum, "seed {seed} count {count}");
        }
    }

    #[test]
    fn checksum_matches_running_checksum_and_resume() {
        let seed = 0x1234_5678_9abc_def0;
        for count in [1, 2, 255, 256, 257, 1000, MAX_COUNT] {
            let mut whole = RunningChecksum::new();
            let mut first = RunningChecksum::new();
            let half = count / 2;
            for i in 0..count {
                whole.push(value(seed, i));
                if i < half {
                    first.push(value(seed, i));
                }
            }
            let mut second = RunningChecksum::resume(first.value(), first.len());
            (half..count).for_each(|i| second.push(value(seed, i)));
            assert_eq!(checksum(seed, count), whole.value(), "count {count}");
            assert_eq!(
                second.value(),
                whole.value(),
                "resumed at {half} of {count}"
            );
            assert_eq!(second.len(), count);
        }
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let a: Vec<u32> = (0..8).map(|i| value(1, i)).collect();
        let b: Vec<u32> = (0..8).map(|i| value(2, i)).collect();
        assert_ne!(a, b);
    }
}
