//! Coverage-guided fuzzing of the server stream machine: arbitrary event
//! lists (hostile client messages, store answers, time, closes), checked by
//! `station_core::testkit` — no panic, no output after the end, numbers in
//! order with the right values and checksum.
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run server_session -- -max_total_time=600
//! ```
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use station_core::testkit::{run, Answer, Event};

#[derive(Arbitrary, Debug)]
enum FuzzAnswer {
    Done,
    Conflict,
    WriteExpired,
    WriteMissing,
    Unavailable,
    Exists { count: u32, nonce: u8 },
    Live { count: u32 },
    Expired,
    Missing,
}

#[derive(Arbitrary, Debug)]
enum FuzzEvent {
    Open { id: u8, count: u32, nonce_len: u8 },
    Resume { id: u8, right_token: bool, token_len: u8, next_index: u32 },
    Ack(u32),
    Store(FuzzAnswer),
    Wait(u16),
    Closed,
    Shutdown,
}

fn convert(e: FuzzEvent) -> Event {
    match e {
        FuzzEvent::Open { id, count, nonce_len } => Event::Open { id, count, nonce_len },
        FuzzEvent::Resume { id, right_token, token_len, next_index } => Event::Resume {
            id,
            right_token,
            token_len,
            next_index,
        },
        FuzzEvent::Ack(n) => Event::Ack(n),
        FuzzEvent::Store(a) => Event::Store(match a {
            FuzzAnswer::Done => Answer::Done,
            FuzzAnswer::Conflict => Answer::Conflict,
            FuzzAnswer::WriteExpired => Answer::WriteExpired,
            FuzzAnswer::WriteMissing => Answer::WriteMissing,
            FuzzAnswer::Unavailable => Answer::Unavailable,
            FuzzAnswer::Exists { count, nonce } => Answer::Exists { count, nonce },
            FuzzAnswer::Live { count } => Answer::Live { count },
            FuzzAnswer::Expired => Answer::Expired,
            FuzzAnswer::Missing => Answer::Missing,
        }),
        FuzzEvent::Wait(ms) => Event::Wait(Duration::from_millis(u64::from(ms))),
        FuzzEvent::Closed => Event::Closed,
        FuzzEvent::Shutdown => Event::Shutdown,
    }
}

fuzz_target!(|events: Vec<FuzzEvent>| {
    let events: Vec<Event> = events.into_iter().map(convert).collect();
    if let Err(broken) = run(&events) {
        panic!("session broke a rule: {broken}\nevents: {events:?}");
    }
});
