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

use libfuzzer_sys::fuzz_target;
use station_core::testkit::client::{run, Event};

// `Event` derives `Arbitrary` (durations as any (seconds, nanoseconds)).
fuzz_target!(|input: (u16, Vec<Event>)| {
    let (count, events) = input;
    // Mostly small counts, so sessions can complete.
    let count = u32::from(count % 64);
    if let Err(broken) = run(count, &events) {
        panic!("client broke a rule: {broken}\ncount {count}, events: {events:?}");
    }
});
