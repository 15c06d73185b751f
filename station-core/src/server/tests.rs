//! Tests of the server's stream machine: shared fixtures here, the tests
//! themselves by concern in `tests/`.

use super::*;

mod completion;
mod config;
mod open_resume;
mod pacing;
mod protocol;
mod record;
mod release;
mod silence;
mod takeover;

use crate::sequence::{self, MAX_COUNT};
use crate::testkit::fixtures::{
    drain, fresh, id, ms, record, HOLDER, ID, INCARNATION, NONCE, SEED, TOKEN,
};

const SEC: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(30);
/// `cfg()`'s lease: `DEFAULT_LEASE`, which is also `TTL / 6`.
const LEASE: Duration = Duration::from_secs(5);
/// What every lease write (create, takeover, renewal) sets the record to
/// live for: `TTL + LEASE`.
const LEASED: Duration = Duration::from_secs(35);

fn cfg() -> Config {
    let cfg = Config::new(SEC, TTL);
    assert_eq!(cfg.lease, LEASE);
    cfg
}

fn open_msg(count: u32) -> Open<'static> {
    Open {
        client_id: ID,
        count,
        nonce: &NONCE,
    }
}

/// `Paused` in place of number `next_index`.
fn paused(next_index: u32) -> Output {
    Output::Paused { next_index }
}

fn number(index: u32, count: u32) -> Output {
    Output::Send(Number {
        index,
        value: sequence::value(SEED, index),
        checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
    })
}

fn attached(how: Attachment, count: u32, next_index: u32) -> Output {
    Output::Attached(Attached {
        how,
        count,
        next_index,
        token: TOKEN,
        ttl: TTL,
        interval: SEC,
        ack_every: 1,
    })
}

/// A fenced write of the fixture session by the stream holding
/// `generation`, with `acked` numbers acknowledged, to live `expires_in`.
fn write(count: u32, generation: u64, acked: u32, expires_in: Duration) -> Output {
    Output::Store(StoreOp::Update {
        record: Record {
            acked,
            ..record(count, generation)
        },
        expect_generation: generation,
        expires_in,
    })
}

/// A renewal of the lease: always `LEASED`, whatever the acks.
fn renewal(count: u32, generation: u64, acked: u32) -> Output {
    write(count, generation, acked, LEASED)
}

/// The delete of the fixture session at `generation`, after its final
/// acknowledgement.
fn delete(generation: u64) -> Output {
    Output::Store(StoreOp::Delete {
        client_id: id(),
        incarnation: INCARNATION,
        generation,
    })
}

/// The release after the stream ended: the exact expiry.
fn release(count: u32, generation: u64, acked: u32, expires_in: Duration) -> Output {
    write(count, generation, acked, expires_in)
}

/// The rejection a stream ended with. Its `End` comes first; a stream that
/// ended attached follows it with its release (checked by the tests about
/// releases, not here).
fn rejected(out: &[Output]) -> Reject {
    match out {
        [Output::End(End::Rejected(r))]
        | [Output::End(End::Rejected(r)), Output::Store(StoreOp::Update { .. })] => r.clone(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A session opened at `t0` with `cfg`: `Attached` and the first number
/// are already drained.
fn opened_with(cfg: Config, t0: Instant, count: u32) -> Stream {
    let leased = cfg.ttl + cfg.lease;
    let mut s = Stream::new(cfg, t0);
    s.handle_open(t0, open_msg(count), fresh());
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Store(StoreOp::Create { record: r, expires_in })]
            if *r == record(count, 1) && *expires_in == leased),
        "{out:?}"
    );
    s.handle_store(t0, StoreReply::Done);
    let out = drain(&mut s);
    assert!(matches!(out[0], Output::Attached(_)), "{out:?}");
    s
}

/// A stream whose `Open` of `count` at `t0` asked for the create, not yet
/// answered.
fn creating(t0: Instant, count: u32) -> Stream {
    let mut s = Stream::new(cfg(), t0);
    s.handle_open(t0, open_msg(count), fresh());
    drain(&mut s);
    s
}

fn opened(t0: Instant, count: u32) -> Stream {
    opened_with(cfg(), t0, count)
}

/// A session resumed at `t0` at `next_index` of a live record of
/// generation `generation`; `Attached` and the first burst are drained.
fn resumed(t0: Instant, count: u32, generation: u64, next_index: u32) -> (Stream, Vec<Output>) {
    let mut s = Stream::new(cfg(), t0);
    s.handle_resume(
        t0,
        Resume {
            client_id: ID,
            token: TOKEN.as_bytes(),
            next_index,
        },
        fresh(),
    );
    assert_eq!(drain(&mut s), [Output::Store(StoreOp::Load(id()))]);
    s.handle_store(
        t0,
        StoreReply::Loaded(Lookup::Live(record(count, generation))),
    );
    // The takeover is a lease write like the create.
    assert_eq!(
        drain(&mut s),
        [Output::Store(StoreOp::Update {
            record: Record {
                acked: next_index,
                ..record(count, generation + 1)
            },
            expect_generation: generation,
            expires_in: LEASED,
        })]
    );
    s.handle_store(t0, StoreReply::Done);
    let out = drain(&mut s);
    (s, out)
}

fn resume_rejection(lookup: Lookup, token: &[u8], next_index: u32) -> Reject {
    let t0 = Instant::now();
    let mut s = Stream::new(cfg(), t0);
    s.handle_resume(
        t0,
        Resume {
            client_id: ID,
            token,
            next_index,
        },
        fresh(),
    );
    assert_eq!(drain(&mut s), [Output::Store(StoreOp::Load(id()))]);
    s.handle_store(t0, StoreReply::Loaded(lookup));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(s.is_ended());
    assert_eq!(s.poll_timeout(), None);
    rejected(&out)
}

/// Fires the timer at `now` within the lease: returns what the stream
/// sent, which must involve no store operation.
fn tick(s: &mut Stream, now: Instant) -> Vec<Output> {
    s.handle_timeout(now);
    let out = drain(s);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Store(_))),
        "no store operation within the lease: {out:?}"
    );
    out
}

/// Fires the timer at `now` when the lease is due: the stream asks for
/// `renewal` first, then sends without waiting for it. Confirms it at
/// `now` and returns the numbers sent.
fn renewing_tick(s: &mut Stream, now: Instant, renewal: Output) -> Vec<Output> {
    s.handle_timeout(now);
    let mut out = drain(s);
    assert_eq!(out.first(), Some(&renewal), "{out:?}");
    out.remove(0);
    s.handle_store(now, StoreReply::Done);
    out.extend(drain(s));
    out
}

/// An opened stream of 20, everything acknowledged, with the renewal due
/// at t0 + 5 s asked for (and number 5 sent with it).
fn renewing(t0: Instant) -> Stream {
    let mut s = opened(t0, 20);
    run_acked(&mut s, t0, 20, 1..5);
    s.handle_ack(t0 + SEC * 4 + ms(50), 5);
    s.handle_timeout(t0 + SEC * 5);
    assert_eq!(drain(&mut s), [renewal(20, 1, 5), number(5, 20)]);
    s
}

/// Drives a stream opened at `t0` (with `cfg()`) through the ticks at
/// `t0 + i` seconds for `i` in `ticks`: each number acknowledged 50 ms
/// after it went out, and the renewal due every fifth second (the lease
/// counts from when the create or last renewal was asked for) confirmed
/// at once.
fn run_acked(s: &mut Stream, t0: Instant, count: u32, ticks: std::ops::Range<u32>) {
    for i in ticks {
        s.handle_ack(t0 + SEC * (i - 1) + ms(50), i);
        assert_eq!(drain(s), []);
        let now = t0 + SEC * i;
        let out = if i % 5 == 0 {
            renewing_tick(s, now, renewal(count, 1, i))
        } else {
            tick(s, now)
        };
        assert_eq!(out, [number(i, count)], "tick {i}");
    }
}

/// A session of 6 at its last number, sent at 5 s together with the
/// renewal then due (still in flight), everything before acknowledged.
fn last_number_with_renewal_in_flight(t0: Instant) -> Stream {
    let mut s = opened(t0, 6);
    run_acked(&mut s, t0, 6, 1..5);
    s.handle_ack(t0 + SEC * 4 + ms(50), 5);
    s.handle_timeout(t0 + SEC * 5);
    assert_eq!(drain(&mut s), [renewal(6, 1, 5), number(5, 6)]);
    s
}
