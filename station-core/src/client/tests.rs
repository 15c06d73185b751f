//! Tests of the client machine: shared fixtures here, the tests themselves
//! by concern in `tests/`.

use super::*;
use crate::sequence;
use crate::server::MAX_DURATION;
use crate::testkit::fixtures::{drain, ms};
use crate::Reason;

mod backoff;
mod budget;
mod give_up;
mod snapshot;
mod statuses;
mod stream;
mod throttle;
mod validation;
mod watchdog;

const SEED: u64 = 0xfeed;
const TOKEN: [u8; 16] = [7; 16];
const SEC: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(30);

fn id() -> ClientId {
    ClientId::from_random_bytes([1; 16])
}

fn new_client(t0: Instant, count: u32) -> Client {
    new_client_with(t0, Config::default(), count, 1)
}

fn new_client_with(t0: Instant, cfg: Config, count: u32, rng_seed: u64) -> Client {
    let mut c = Client::new(t0, cfg, id(), count, rng_seed).unwrap();
    let out = drain(&mut c);
    assert!(
        matches!(&out[..], [Output::Connect(Request::Open { client_id, count: n, nonce })]
            if *client_id == id() && *n == count && !nonce.is_zero()),
        "{out:?}"
    );
    c
}

fn attached(count: u32, next_index: u32, ack_every: u32) -> Attached<'static> {
    Attached {
        count,
        next_index,
        token: &TOKEN,
        ttl: TTL,
        interval: SEC,
        ack_every,
    }
}

fn num(index: u32, count: u32) -> Number {
    Number {
        index,
        value: sequence::value(SEED, index),
        checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
    }
}

fn sum(range: std::ops::Range<u32>) -> u64 {
    range.map(|i| u64::from(sequence::value(SEED, i))).sum()
}

fn finished(out: &[Output]) -> Outcome {
    match out.last() {
        Some(Output::Finished(o)) => o.clone(),
        other => panic!("expected Finished, got {other:?} in {out:?}"),
    }
}

fn resume(next_index: u32) -> Output {
    Output::Connect(Request::Resume {
        client_id: id(),
        token: Secret(TOKEN),
        next_index,
    })
}

/// Feeds numbers `range` at `now`, returning the outputs.
fn feed(c: &mut Client, now: Instant, range: std::ops::Range<u32>, count: u32) -> Vec<Output> {
    range.for_each(|i| c.handle_number(now, num(i, count)));
    drain(c)
}

/// Ends the stream with `end` and wakes the client when its backoff is
/// over; returns the time of the reconnection and its outputs.
fn fail_and_reconnect(c: &mut Client, now: Instant, end: StreamEnd) -> (Instant, Vec<Output>) {
    c.handle_end(now, end);
    assert_eq!(drain(c), []);
    let at = c.poll_timeout().expect("backing off");
    assert!(at > now, "backoff is not zero");
    c.handle_timeout(at - ms(1).min(at - now));
    if at - now > ms(1) {
        assert_eq!(drain(c), [], "early timeout is a no-op");
    }
    c.handle_timeout(at);
    (at, drain(c))
}

fn transport() -> StreamEnd {
    StreamEnd::Transport("connection reset".into())
}

fn unavailable() -> StreamEnd {
    StreamEnd::rejected(&Reject::InjectedFault("fail-every"))
}

fn with_pushback(end: StreamEnd, wait: Duration) -> StreamEnd {
    match end {
        StreamEnd::Status {
            code,
            message,
            reason,
            ..
        } => StreamEnd::Status {
            code,
            message,
            reason,
            retry_after: Some(wait),
        },
        other => other,
    }
}
