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

use libfuzzer_sys::fuzz_target;
use station_core::testkit::{run, Event};

// `Event` derives `Arbitrary` (a `Wait` is whole milliseconds up to a `u16`).
fuzz_target!(|events: Vec<Event>| {
    if let Err(broken) = run(&events) {
        panic!("session broke a rule: {broken}\nevents: {events:?}");
    }
});
