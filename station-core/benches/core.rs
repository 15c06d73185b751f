//! Costs of the core's hot paths, without any I/O.
//!
//! `cargo bench -p station-core --bench core`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use station_core::sequence::{self, MAX_COUNT};
use station_core::server::{Config, Lookup, Open, Output, Resume, StoreOp, StoreReply, Stream};
use station_core::testkit::fixtures::{fresh, record, ID, SEED, TOKEN};

/// Answers every store operation with success, as an in-memory store would.
fn drain(session: &mut Stream, now: Instant) -> usize {
    let mut outputs = 0;
    while let Some(out) = session.poll_output() {
        outputs += 1;
        if let Output::Store(_) = out {
            session.handle_store(now, StoreReply::Done);
        }
    }
    outputs
}

/// A session attached at `t0` with `count` numbers, first number sent.
fn attached(count: u32, t0: Instant) -> Stream {
    let mut s = Stream::new(Config::default(), t0);
    let open = Open {
        client_id: ID,
        count,
        nonce: &[],
    };
    s.handle_open(t0, open, fresh());
    drain(&mut s, t0);
    s
}

fn benches(c: &mut Criterion) {
    let t0 = Instant::now();
    let second = Duration::from_secs(1);

    c.bench_function(
        "open (validate, create, attach, first number) n=65535",
        |b| b.iter(|| black_box(attached(MAX_COUNT, t0))),
    );

    c.bench_function("tick (refresh + send one number)", |b| {
        b.iter_batched(
            || {
                let mut s = attached(MAX_COUNT, t0);
                s.handle_ack(t0, 1);
                drain(&mut s, t0);
                s
            },
            |mut s| {
                s.handle_timeout(t0 + second);
                black_box(drain(&mut s, t0 + second))
            },
            BatchSize::SmallInput,
        )
    });

    c.bench_function("ack", |b| {
        b.iter_batched(
            || attached(MAX_COUNT, t0),
            |mut s| {
                s.handle_ack(t0, 1);
                black_box(drain(&mut s, t0))
            },
            BatchSize::SmallInput,
        )
    });

    c.bench_function("final number with checksum n=65535", |b| {
        b.iter_batched(
            || {
                // Resume at the last index: the next send is the final one.
                let mut s = Stream::new(Config::default(), t0);
                let resume = Resume {
                    client_id: ID,
                    token: TOKEN.as_bytes(),
                    next_index: MAX_COUNT - 1,
                };
                s.handle_resume(t0, resume, fresh());
                s
            },
            |mut s| {
                let _load = s.poll_output();
                s.handle_store(t0, StoreReply::Loaded(Lookup::Live(record(MAX_COUNT, 1))));
                black_box(drain(&mut s, t0))
            },
            BatchSize::SmallInput,
        )
    });

    c.bench_function(
        "resume at index 60000 (load, take over, attach, first number)",
        |b| {
            b.iter(|| {
                let mut s = Stream::new(Config::default(), t0);
                let resume = Resume {
                    client_id: ID,
                    token: TOKEN.as_bytes(),
                    next_index: 60_000,
                };
                s.handle_resume(t0, resume, fresh());
                match s.poll_output() {
                    Some(Output::Store(StoreOp::Load(_))) => {}
                    other => panic!("expected a load, got {other:?}"),
                }
                s.handle_store(t0, StoreReply::Loaded(Lookup::Live(record(MAX_COUNT, 1))));
                black_box(drain(&mut s, t0))
            })
        },
    );

    c.bench_function("sequence::checksum n=65535", |b| {
        b.iter(|| black_box(sequence::checksum(black_box(SEED), MAX_COUNT)))
    });

    c.bench_function("sequence::value", |b| {
        b.iter(|| black_box(sequence::value(black_box(SEED), black_box(60_000))))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
