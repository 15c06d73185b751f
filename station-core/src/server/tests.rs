//! Tests of the server's stream machine: shared fixtures here, the tests
//! themselves by concern in `tests/`.

use super::*;

mod completion;
mod config;
mod open_resume;
mod pacing;
mod protocol;
mod record;
mod silence;
mod takeover;

use crate::testkit::fixtures::{
    drain, fresh, id, ms, record, HOLDER, ID, INCARNATION, NONCE, SEED, TOKEN,
};

const SEC: Duration = Duration::from_secs(1);

fn cfg() -> Config {
    Config::new(SEC, Duration::from_secs(30))
}

fn open_msg(count: u32) -> Open<'static> {
    Open {
        client_id: ID,
        count,
        nonce: &NONCE,
    }
}

fn number(index: u32, count: u32) -> Output {
    Output::Send(Number {
        index,
        value: sequence::value(SEED, index),
        checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
    })
}

fn attached(count: u32, next_index: u32) -> Output {
    Output::Attached(Attached {
        count,
        next_index,
        token: TOKEN,
        ttl: Duration::from_secs(30),
        interval: SEC,
        ack_every: 1,
    })
}

fn rejected(out: &[Output]) -> Reject {
    match out.last() {
        Some(Output::End(End::Rejected(r))) => r.clone(),
        other => panic!("expected a rejection, got {other:?} in {out:?}"),
    }
}

/// A session opened at `t0` with `cfg`: `Attached` and the first number
/// are already drained.
fn opened_with(cfg: Config, t0: Instant, count: u32) -> Stream {
    let mut s = Stream::new(cfg, t0);
    s.handle_open(t0, open_msg(count), fresh());
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Store(StoreOp::Create { record, expires_in })]
            if *record == record_at(count, 1) && *expires_in == s.cfg.ttl),
        "{out:?}"
    );
    s.handle_store(t0, StoreReply::Done);
    let out = drain(&mut s);
    assert!(matches!(out[0], Output::Attached(_)), "{out:?}");
    s
}

fn record_at(count: u32, generation: u64) -> Record {
    record(count, generation)
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
    let out = drain(&mut s);
    let expected = Record {
        acked: next_index,
        generation: generation + 1,
        ..record(count, generation)
    };
    assert_eq!(
        out,
        [Output::Store(StoreOp::Update {
            record: expected,
            expect_generation: generation,
            expires_in: Duration::from_secs(30),
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

/// Drives an attached session at `now`: fires the timer, confirms the
/// refresh, and returns what it sent.
fn tick(s: &mut Stream, now: Instant) -> (StoreOp, Vec<Output>) {
    s.handle_timeout(now);
    let out = drain(s);
    let [Output::Store(op)] = &out[..] else {
        panic!("expected one store op at the tick, got {out:?}");
    };
    let op = op.clone();
    s.handle_store(now, StoreReply::Done);
    (op, drain(s))
}
