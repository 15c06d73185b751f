//! End-to-end runs of the core through the harness: scripted scenarios
//! here; the stale-resume race in `tests/store_race.rs`, random faults and
//! configurations in `tests/properties.rs`.

use super::*;

mod properties;
mod store_race;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn run(count: u32, seed: u64, ops: &[Op]) -> Outcome {
    let (violations, outcome, trace) =
        Harness::run(Instant::now(), Setup::new(count), seed, ops, true);
    assert!(
        violations.is_empty(),
        "{violations:#?}\n{}",
        trace.unwrap_or_default()
    );
    outcome.expect("checked")
}

#[test]
fn model_store_follows_the_documented_semantics() {
    let t0 = Instant::now();
    let rec = |generation| crate::testkit::fixtures::fenced(1, generation, generation);
    let id = rec(1).client_id;
    let mut s = ModelStore::default();
    assert_eq!(
        s.apply(t0, StoreOp::Load(id)),
        StoreReply::Loaded(Lookup::Missing)
    );
    let create = |generation| StoreOp::Create {
        record: rec(generation),
        expires_in: secs(30),
    };
    assert_eq!(s.apply(t0, create(1)), StoreReply::Done);
    assert_eq!(s.apply(t0, create(5)), StoreReply::Exists(rec(1)));
    let update = |expect, generation, expires_in| StoreOp::Update {
        record: rec(generation),
        expect_generation: expect,
        expires_in,
    };
    // Expecting a generation the store never reached: it lost writes.
    assert_eq!(s.apply(t0, update(2, 3, secs(30))), StoreReply::Vanished);
    assert_eq!(s.apply(t0, update(1, 2, secs(10))), StoreReply::Done);
    assert_eq!(
        s.apply(t0 + secs(9), StoreOp::Load(id)),
        StoreReply::Loaded(Lookup::Live(rec(2)))
    );
    // Expiry is exclusive: gone at exactly `expires_in`.
    assert_eq!(
        s.apply(t0 + secs(10), StoreOp::Load(id)),
        StoreReply::Loaded(Lookup::Expired)
    );
    assert_eq!(
        s.apply(t0 + secs(10), update(2, 3, secs(30))),
        StoreReply::ExpiredOrReplaced
    );
    let delete = |generation| StoreOp::Delete {
        client_id: id,
        incarnation: 1,
        generation,
    };
    // Nothing of ours is live to delete.
    assert_eq!(s.apply(t0 + secs(10), delete(2)), StoreReply::Done);
    // An expired record is replaced by a new one.
    assert_eq!(s.apply(t0 + secs(11), create(1)), StoreReply::Done);
    assert_eq!(s.live_count(t0 + secs(11)), 1);
    assert_eq!(s.apply(t0 + secs(11), delete(0)), StoreReply::Conflict);
    assert_eq!(s.apply(t0 + secs(11), delete(1)), StoreReply::Done);
    assert_eq!(
        s.apply(t0 + secs(11), StoreOp::Load(id)),
        StoreReply::Loaded(Lookup::Missing)
    );
    assert_eq!(s.live_count(t0 + secs(11)), 0);
}

#[test]
fn undisturbed_sessions_take_one_interval_per_number() {
    for count in [1, 2, 10, 200] {
        let t0 = Instant::now();
        let mut h = Harness::new(t0, Setup::new(count), 7, false);
        h.finish();
        h.check();
        assert!(h.violations.is_empty(), "{:?}", h.violations);
        let (at, outcome) = h.outcome.clone().unwrap();
        assert_eq!(outcome.verdict, Verdict::Verified);
        assert_eq!(outcome.reconnects, 0);
        let took = at - t0;
        let expected = secs(u64::from(count - 1));
        assert!(took >= expected && took < expected + secs(1), "{took:?}");
        // Completed sessions are deleted, not left to expire.
        assert!(h.store.is_empty());
    }
}

#[test]
fn drops_are_resumed() {
    let ops = [
        Op::Run(secs(3)),
        Op::Drop,
        Op::Run(secs(4)),
        Op::Drop,
        Op::Drop,
        Op::Run(Duration::from_millis(10)),
        Op::Drop,
    ];
    let outcome = run(20, 1, &ops);
    assert_eq!(outcome.verdict, Verdict::Verified);
    assert!(outcome.reconnects >= 2, "{outcome:?}");
}

#[test]
fn a_partition_shorter_than_the_ttl_is_survived() {
    // Shorter than the TTL by more than the client's largest backoff.
    let ops = [Op::Run(secs(5)), Op::Partition(secs(24)), Op::Run(secs(1))];
    let outcome = run(20, 2, &ops);
    assert_eq!(outcome.verdict, Verdict::Verified);
}

#[test]
fn a_partition_longer_than_the_ttl_expires() {
    let ops = [Op::Run(secs(5)), Op::Partition(secs(40))];
    let outcome = run(20, 3, &ops);
    assert!(
        // Cut off, the client cannot hear a server say so: its own clock
        // tells it the session most likely expired.
        matches!(outcome.verdict, Verdict::LikelyExpired(_)),
        "{outcome:?}"
    );
    assert!(outcome.received >= 5);
}

#[test]
fn lost_final_messages_are_recovered() {
    let outcome = run(5, 4, &[Op::LoseFinalNumber]);
    assert_eq!(outcome.verdict, Verdict::Verified);
    assert_eq!(outcome.reconnects, 1);
    // A lost final ack leaves the record to expire; `finish` checks it.
    let outcome = run(5, 5, &[Op::LoseFinalAck]);
    assert_eq!(outcome.verdict, Verdict::Verified);
}

/// The `Attached` of the first `Open` is lost: the client repeats its
/// `Open` (same nonce), the server attaches it to the session it
/// created (a takeover from 0), and the first stream, still sending
/// into the void, is fenced out at its next refresh.
#[test]
fn a_repeated_open_recovers_a_lost_attached() {
    let mut setup = Setup {
        min_latency: Duration::from_millis(10),
        max_latency: Duration::from_millis(10),
        ..Setup::new(10)
    };
    // Longer than the client's attach timeout, so the first stream is
    // still sending when the repeated `Open` takes over.
    setup.server.silence_timeout = secs(10);
    let ops = [Op::Run(Duration::from_millis(15)), Op::Partition(secs(1))];
    let (violations, outcome, trace) = Harness::run(Instant::now(), setup, 6, &ops, true);
    let trace = trace.unwrap();
    assert!(violations.is_empty(), "{violations:?}\n{trace}");
    let outcome = outcome.unwrap();
    assert_eq!(outcome.verdict, Verdict::Verified, "{trace}");
    assert!(trace.contains("store: Exists"), "{trace}");
    // The first stream, partitioned but within its lease, learns of the
    // takeover when it writes again: its release conflicts.
    assert!(trace.contains("store: Conflict"), "{trace}");
}

#[test]
fn runs_are_deterministic() {
    let ops = [
        Op::Run(secs(2)),
        Op::Partition(secs(7)),
        Op::Duplicate,
        Op::Delay(secs(2)),
        Op::Run(secs(3)),
        Op::Drop,
    ];
    let t0 = Instant::now();
    let (_, a, ta) = Harness::run(t0, Setup::new(30), 9, &ops, true);
    let (_, b, tb) = Harness::run(t0, Setup::new(30), 9, &ops, true);
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    let (_, _, tc) = Harness::run(t0, Setup::new(30), 10, &ops, true);
    assert_ne!(ta, tc);
}
