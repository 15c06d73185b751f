//! The rules of ARCHITECTURE.md §6, each written once, over what a run
//! observed: the core's harness (`harness/check.rs`) and the simulations
//! (`sim/src/invariants/`) both judge by these, each feeding what it can
//! see (and each keeping its own messages around them).
//!
//! Pure functions and small trackers: no clock is read, times are values
//! (an `Instant` in the harness, simulated time in the simulations), and
//! every map is ordered.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Add;
use std::time::Duration;

use crate::client::Outcome;
use crate::sequence;
use crate::store::{Lookup, StoreOp};

// 1. The sequence.

/// Running sums and CRC-32s of a session's sequence: entry `n` covers its
/// first `n` values. The CRC is computed here with `crc32fast`, not with
/// the crate's own checksum code, so the check does not trust what it
/// checks.
#[derive(Clone, Debug)]
pub struct Prefixes {
    sums: Vec<u64>,
    crcs: Vec<u32>,
}

impl Prefixes {
    /// The prefixes of `values`, the session's sequence from index 0.
    pub fn new(values: impl IntoIterator<Item = u32>) -> Self {
        let (mut sum, mut crc) = (0u64, crc32fast::Hasher::new());
        let mut sums = vec![0];
        let mut crcs = vec![crc.clone().finalize()];
        for value in values {
            sum += u64::from(value);
            crc.update(&value.to_be_bytes());
            sums.push(sum);
            crcs.push(crc.clone().finalize());
        }
        Prefixes { sums, crcs }
    }

    /// The first `count` values of the sequence of `seed`.
    pub fn of_seed(seed: u64, count: u32) -> Self {
        Self::new((0..count).map(|i| sequence::value(seed, i)))
    }

    /// Sum and CRC of the first `n` values, if that many are known.
    pub fn get(&self, n: u32) -> Option<(u64, u32)> {
        let n = n as usize;
        Some((*self.sums.get(n)?, *self.crcs.get(n)?))
    }

    /// Whether a client holding `n` numbers with running `sum` and `crc`
    /// holds exactly the first `n` values: a gapless prefix.
    pub fn holds(&self, n: u32, sum: u64, crc: u32) -> bool {
        self.get(n) == Some((sum, crc))
    }
}

/// Whether a `Verified` outcome is one: all `count` numbers, the server's
/// checksum equal to the client's, and, when the session's sequence is
/// known, the sum and checksum its own.
pub fn verified(count: u32, outcome: &Outcome, sequence: Option<&Prefixes>) -> bool {
    outcome.received == count
        && outcome.server_checksum == Some(outcome.client_checksum)
        && sequence.is_none_or(|p| p.holds(count, outcome.sum, outcome.client_checksum))
}

/// The client's progress on one number: none (`Ok(false)`), or exactly one
/// step (`Ok(true)`), taking the number it needed next, never beyond
/// `count`.
pub fn accepted_step(before: u32, after: u32, index: u32, count: u32) -> Result<bool, String> {
    if after == before {
        return Ok(false);
    }
    if after != before + 1 || index != before || after > count {
        return Err(format!(
            "went from {before} to {after} numbers on number {index} of {count}"
        ));
    }
    Ok(true)
}

/// The values one session's streams sent, by index: a number sent again
/// (after a resume, or by a stale stream's last burst) has the same value.
#[derive(Clone, Debug, Default)]
pub struct SentValues(BTreeMap<u32, u32>);

impl SentValues {
    /// Records `value` sent at `index`; if the index was sent before with
    /// another value, returns that first value.
    pub fn sent(&mut self, index: u32, value: u32) -> Result<(), u32> {
        let first = *self.0.entry(index).or_insert(value);
        if first == value {
            Ok(())
        } else {
            Err(first)
        }
    }

    /// The sequence's prefixes, if every index below `count` was sent.
    pub fn prefixes(&self, count: u32) -> Option<Prefixes> {
        let values: Option<Vec<u32>> = (0..count).map(|i| self.0.get(&i).copied()).collect();
        values.map(Prefixes::new)
    }
}

// 2. Expiry and giving up.

/// The shortest cut-off that justifies an expiry: the TTL, less `slack`,
/// what the observer cannot see (latency, the client's last exchange before
/// the cut, its last backoff).
pub fn expiry_threshold(ttl: Duration, slack: Duration) -> Duration {
    ttl.saturating_sub(slack)
}

/// Whether a client cut off for `cut_off` may be told its session expired.
pub fn expiry_justified(cut_off: Duration, slack: Duration, ttl: Duration) -> bool {
    cut_off >= expiry_threshold(ttl, slack)
}

/// Whether a client may give up as unreachable after `without_progress`
/// without a new number: only once its `give_up` period (less `slack`)
/// has passed.
pub fn unreachable_justified(
    without_progress: Duration,
    slack: Duration,
    give_up: Duration,
) -> bool {
    without_progress.saturating_add(slack) >= give_up
}

// 3. No leak.

/// Invariant 3 on live sessions counted a TTL after every client finished.
pub fn live_leak(live: u64) -> Option<String> {
    (live > 0).then(|| format!("{live} session(s) still live a TTL after every client finished"))
}

/// Invariant 3 on streams still attached a TTL after every client finished.
pub fn attached_leak(attached: u64) -> Option<String> {
    (attached > 0)
        .then(|| format!("{attached} stream(s) still attached a TTL after every client finished"))
}

// 4. One stream, or a bounded overlap.

/// Invariant 4 over one session's attaches and sends, in order: once a
/// newer generation attached, an older generation's stream may still send
/// (its lease has not run out; the values are checked by invariant 1), but
/// nothing later than `bound` after that attach. `S` names a stream, `T`
/// is the observer's time.
#[derive(Clone, Debug)]
pub struct OneStream<T> {
    bound: Duration,
    /// When each generation of the current session first attached.
    attached: BTreeMap<u64, T>,
}

impl<T> OneStream<T>
where
    T: Ord + Copy + Debug + Add<Duration, Output = T>,
{
    /// A session where nothing attached yet; older streams fall silent
    /// within `bound` of a takeover (twice the lease).
    pub fn new(bound: Duration) -> Self {
        OneStream {
            bound,
            attached: BTreeMap::new(),
        }
    }

    /// A stream attached (or wrote again) at `generation` at `at`.
    /// Generation 1 starts a new session under the id (the old one is
    /// gone).
    pub fn attached(&mut self, generation: u64, at: T) {
        if generation == 1 && self.attached.keys().any(|&g| g > 1) {
            self.attached.clear();
        }
        self.attached.entry(generation).or_insert(at);
    }

    /// `stream`, of `generation`, sent number `index` at `at`: no later
    /// than `bound` after the first newer generation attached.
    pub fn sent<S: Debug>(
        &mut self,
        stream: S,
        generation: u64,
        index: u32,
        at: T,
    ) -> Result<(), String> {
        let newer = self
            .attached
            .range(generation.saturating_add(1)..)
            .map(|(&g, &t)| (t, g))
            .min();
        match newer {
            Some((since, newer)) if at > since + self.bound => Err(format!(
                "stream {stream:?} (generation {generation}) sent #{index} at {at:?}, more \
                 than {:?} after generation {newer} attached at {since:?}",
                self.bound
            )),
            _ => Ok(()),
        }
    }
}

// 5. Writes are fenced by incarnation and generation.

/// Invariant 5 for one write that changed what is stored for an id (from
/// `before` to `after`, by `op`): a live record changes only by a write of
/// its own incarnation at its own generation (a refresh) or the next one by
/// another stream (a takeover), or by the `Delete` of its incarnation and
/// generation; a record appears only by its `Create`. Returns what is
/// wrong, if anything.
pub fn write_rule(before: &Lookup, after: &Lookup, op: &StoreOp) -> Option<String> {
    match (before, after) {
        (Lookup::Live(b), Lookup::Live(a)) if a.incarnation != b.incarnation => Some(format!(
            "a write of incarnation {:016x} replaced the live record of incarnation {:016x} (generation {})",
            a.incarnation, b.incarnation, b.generation
        )),
        (Lookup::Live(b), Lookup::Live(a)) if a.generation < b.generation => Some(format!(
            "a stale stream wrote generation {} over generation {} of incarnation {:016x}",
            a.generation, b.generation, b.incarnation
        )),
        (Lookup::Live(b), Lookup::Live(a))
            if a.holder != b.holder && a.generation <= b.generation =>
        {
            Some(format!(
                "another stream wrote generation {} over generation {} of incarnation {:016x} without a takeover's bump",
                a.generation, b.generation, b.incarnation
            ))
        }
        (Lookup::Live(b), Lookup::Expired | Lookup::Missing) => match op {
            StoreOp::Delete {
                incarnation,
                generation,
                ..
            } if *incarnation == b.incarnation && *generation == b.generation => None,
            op => Some(format!(
                "the live record of incarnation {:016x} generation {} was removed by {op:?}",
                b.incarnation, b.generation
            )),
        },
        (Lookup::Expired | Lookup::Missing, Lookup::Live(a)) => match op {
            StoreOp::Create { record, .. } if record == a => None,
            op => Some(format!(
                "a record of incarnation {:016x} appeared by {op:?}",
                a.incarnation
            )),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Verdict;
    use crate::store::Record;
    use crate::ClientId;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn prefixes_are_the_sequence_and_its_crc() {
        let p = Prefixes::of_seed(7, 5);
        assert!(p.holds(0, 0, 0));
        let sum = (0..5).map(|i| u64::from(sequence::value(7, i))).sum();
        assert_eq!(p.get(5), Some((sum, sequence::checksum(7, 5))));
        assert!(!p.holds(5, sum + 1, sequence::checksum(7, 5)));
        assert_eq!(p.get(6), None, "nothing is known beyond the count");
        let mut sent = SentValues::default();
        for i in [0, 2, 1] {
            assert_eq!(sent.sent(i, sequence::value(7, i)), Ok(()));
        }
        assert_eq!(sent.sent(1, 5), Err(sequence::value(7, 1)));
        assert!(sent.prefixes(4).is_none(), "a gap");
        assert_eq!(sent.prefixes(3).unwrap().get(3), p.get(3));
    }

    #[test]
    fn verified_means_everything_and_equal_checksums() {
        let (sum, crc) = Prefixes::of_seed(7, 3).get(3).unwrap();
        let outcome = Outcome {
            client_id: ClientId::from_random_bytes([1; 16]),
            count: 3,
            received: 3,
            sum,
            server_checksum: Some(crc),
            client_checksum: crc,
            reconnects: 0,
            verdict: Verdict::Verified,
        };
        let seq = Prefixes::of_seed(7, 3);
        assert!(verified(3, &outcome, Some(&seq)));
        assert!(!verified(3, &outcome, Some(&Prefixes::of_seed(8, 3))));
        assert!(!verified(4, &outcome, None));
        let wrong = Outcome {
            server_checksum: Some(crc ^ 1),
            ..outcome.clone()
        };
        assert!(!verified(3, &wrong, None));
        let missing = Outcome {
            server_checksum: None,
            ..outcome
        };
        assert!(!verified(3, &missing, None));
    }

    #[test]
    fn a_number_is_taken_in_order_or_not_at_all() {
        assert_eq!(accepted_step(2, 2, 7, 5), Ok(false));
        assert_eq!(accepted_step(2, 3, 2, 5), Ok(true));
        assert!(accepted_step(2, 3, 3, 5).is_err());
        assert!(accepted_step(2, 4, 2, 5).is_err());
        assert!(accepted_step(5, 6, 5, 5).is_err());
    }

    #[test]
    fn expiry_and_giving_up_need_their_full_period_less_the_slack() {
        let ttl = 30 * SEC;
        assert!(expiry_justified(28 * SEC, 2 * SEC, ttl));
        assert!(!expiry_justified(
            28 * SEC - Duration::from_nanos(1),
            2 * SEC,
            ttl
        ));
        assert!(expiry_justified(Duration::ZERO, 40 * SEC, ttl));
        assert!(unreachable_justified(9 * SEC, SEC, 10 * SEC));
        assert!(!unreachable_justified(8 * SEC, SEC, 10 * SEC));
        assert_eq!(live_leak(0), None);
        assert!(live_leak(1).is_some() && attached_leak(2).is_some());
    }

    #[test]
    fn an_older_stream_falls_silent_within_the_bound() {
        let mut rule = OneStream::new(2 * SEC);
        assert_eq!(rule.sent("a", 1, 0, SEC), Ok(()), "nothing attached yet");
        rule.attached(1, SEC);
        assert_eq!(rule.sent("a", 1, 0, SEC), Ok(()));
        rule.attached(2, 3 * SEC);
        assert_eq!(rule.sent("a", 1, 1, 4 * SEC), Ok(()));
        assert_eq!(rule.sent("a", 1, 2, 5 * SEC), Ok(()), "at the bound");
        assert!(rule
            .sent("a", 1, 3, 5 * SEC + Duration::from_nanos(1))
            .is_err());
        // A renewal of generation 2 is no new takeover, and a third
        // generation does not restart generation 1's clock.
        rule.attached(2, 9 * SEC);
        rule.attached(3, 4 * SEC);
        assert!(rule.sent("a", 1, 3, 6 * SEC).is_err());
        assert_eq!(rule.sent("b", 2, 3, 6 * SEC), Ok(()));
        assert!(rule
            .sent("b", 2, 4, 6 * SEC + Duration::from_nanos(1))
            .is_err());
        assert_eq!(rule.sent("c", 3, 1, 60 * SEC), Ok(()));
        // A new session under the id starts over.
        rule.attached(1, 70 * SEC);
        assert_eq!(rule.sent("c", 1, 0, 70 * SEC), Ok(()));
    }

    #[test]
    fn writes_are_fenced_by_incarnation_and_generation() {
        let rec = crate::testkit::fixtures::fenced;
        let live = |r| Lookup::Live(r);
        let update = |record: Record| StoreOp::Update {
            record,
            expect_generation: 1,
            expires_in: SEC,
        };
        let ok = |b, a, op| write_rule(&b, &a, &op).is_none();
        // A refresh and a takeover.
        assert!(ok(
            live(rec(1, 1, 1)),
            live(rec(1, 1, 1)),
            update(rec(1, 1, 1))
        ));
        assert!(ok(
            live(rec(1, 1, 1)),
            live(rec(1, 2, 2)),
            update(rec(1, 2, 2))
        ));
        // Another incarnation, an older generation, no bump.
        assert!(!ok(
            live(rec(1, 1, 1)),
            live(rec(2, 1, 1)),
            update(rec(2, 1, 1))
        ));
        assert!(!ok(
            live(rec(1, 2, 2)),
            live(rec(1, 1, 1)),
            update(rec(1, 1, 1))
        ));
        assert!(!ok(
            live(rec(1, 1, 1)),
            live(rec(1, 1, 2)),
            update(rec(1, 1, 2))
        ));
        // Removed only by its own delete; created only by its create.
        let delete = |incarnation, generation| StoreOp::Delete {
            client_id: rec(1, 1, 1).client_id,
            incarnation,
            generation,
        };
        assert!(ok(live(rec(1, 1, 1)), Lookup::Missing, delete(1, 1)));
        assert!(!ok(live(rec(1, 1, 1)), Lookup::Missing, delete(2, 1)));
        let create = |record| StoreOp::Create {
            record,
            expires_in: SEC,
        };
        assert!(ok(
            Lookup::Expired,
            live(rec(3, 1, 1)),
            create(rec(3, 1, 1))
        ));
        assert!(!ok(
            Lookup::Missing,
            live(rec(3, 1, 1)),
            update(rec(3, 1, 1))
        ));
    }
}
