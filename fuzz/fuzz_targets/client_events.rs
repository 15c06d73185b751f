//! Coverage-guided fuzzing of the client machine: arbitrary server events
//! (any `Attached`, numbers anywhere with any checksum, any status and
//! pushback, time jumps), checked by `station_core::testkit::client` — no
//! panic, no hang, no output after the end, only numbers in order, and a
//! verdict that matches what the client holds.
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd fuzz && cargo +nightly fuzz run client_events -- -max_total_time=600
//! ```
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use station_core::testkit::client::{run, Checksum, Count, Event, Index};

#[derive(Arbitrary, Debug)]
enum FuzzCount {
    Asked,
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum FuzzIndex {
    Expected,
    Offset(i32),
    Exactly(u32),
}

#[derive(Arbitrary, Debug)]
enum FuzzChecksum {
    Proper,
    Missing,
    Real,
    Value(u32),
}

/// A duration as (seconds, nanoseconds): any value a decoded
/// `google.protobuf.Duration` can become.
#[derive(Arbitrary, Debug)]
struct FuzzDuration(u64, u32);

impl FuzzDuration {
    fn get(&self) -> Duration {
        Duration::new(self.0, self.1 % 1_000_000_000)
    }
}

#[derive(Arbitrary, Debug)]
enum FuzzEvent {
    Attached {
        count: FuzzCount,
        next_index: FuzzIndex,
        token_len: u8,
        ttl: FuzzDuration,
        interval: FuzzDuration,
        ack_every: u32,
    },
    Number { index: FuzzIndex, true_value: bool, checksum: FuzzChecksum },
    Status { code: u8, reason: u8, retry_after: Option<FuzzDuration> },
    EndOk,
    Transport,
    Protocol,
    Wait(FuzzDuration),
    Timeout,
}

fn index(i: FuzzIndex) -> Index {
    match i {
        FuzzIndex::Expected => Index::Expected,
        FuzzIndex::Offset(d) => Index::Offset(d),
        FuzzIndex::Exactly(n) => Index::Exactly(n),
    }
}

fn convert(e: FuzzEvent) -> Event {
    match e {
        FuzzEvent::Attached { count, next_index, token_len, ttl, interval, ack_every } => {
            Event::Attached {
                count: match count {
                    FuzzCount::Asked => Count::Asked,
                    FuzzCount::Other(n) => Count::Other(n),
                },
                next_index: index(next_index),
                token_len,
                ttl: ttl.get(),
                interval: interval.get(),
                ack_every,
            }
        }
        FuzzEvent::Number { index: i, true_value, checksum } => Event::Number {
            index: index(i),
            true_value,
            checksum: match checksum {
                FuzzChecksum::Proper => Checksum::Proper,
                FuzzChecksum::Missing => Checksum::Missing,
                FuzzChecksum::Real => Checksum::Real,
                FuzzChecksum::Value(v) => Checksum::Value(v),
            },
        },
        FuzzEvent::Status { code, reason, retry_after } => Event::Status {
            code,
            reason,
            retry_after: retry_after.map(|d| d.get()),
        },
        FuzzEvent::EndOk => Event::EndOk,
        FuzzEvent::Transport => Event::Transport,
        FuzzEvent::Protocol => Event::Protocol,
        FuzzEvent::Wait(d) => Event::Wait(d.get()),
        FuzzEvent::Timeout => Event::Timeout,
    }
}

fuzz_target!(|input: (u16, Vec<FuzzEvent>)| {
    let (count, events) = input;
    // Mostly small counts, so sessions can complete.
    let count = u32::from(count % 64);
    let events: Vec<Event> = events.into_iter().map(convert).collect();
    if let Err(broken) = run(count, &events) {
        panic!("client broke a rule: {broken}\ncount {count}, events: {events:?}");
    }
});
