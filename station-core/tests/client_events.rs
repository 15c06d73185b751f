//! Property test: a client fed arbitrary server events — any `Attached`,
//! numbers anywhere with any checksum, any status, any time jump — never
//! panics, never hangs and never breaks an output rule (see
//! `station_core::testkit::client`). The fuzz target `client_events` in
//! `fuzz/` runs the same checks coverage-guided.

use std::time::Duration;

use proptest::prelude::*;
use station_core::testkit::client::{run, Checksum, Count, Event, Index};

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..60_000).prop_map(Duration::from_millis),
        1 => Just(Duration::ZERO),
        1 => (0u32..64).prop_map(|p| Duration::from_secs(1u64 << p)),
        1 => any::<u64>().prop_map(Duration::from_secs),
        1 => Just(Duration::MAX),
    ]
}

fn index() -> impl Strategy<Value = Index> {
    prop_oneof![
        6 => Just(Index::Expected),
        2 => (-3i32..4).prop_map(Index::Offset),
        1 => any::<i32>().prop_map(Index::Offset),
        1 => any::<u32>().prop_map(Index::Exactly),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (
            prop_oneof![4 => Just(Count::Asked), 1 => any::<u32>().prop_map(Count::Other)],
            index(),
            prop_oneof![4 => Just(16u8), 1 => any::<u8>()],
            duration(),
            duration(),
            prop_oneof![0u32..5, any::<u32>()],
        )
            .prop_map(|(count, next_index, token_len, ttl, interval, ack_every)| Event::Attached {
                count,
                next_index,
                token_len,
                ttl,
                interval,
                ack_every,
            }),
        8 => (
            index(),
            prop_oneof![9 => Just(true), 1 => Just(false)],
            prop_oneof![
                8 => Just(Checksum::Proper),
                1 => Just(Checksum::Missing),
                1 => Just(Checksum::Real),
                1 => any::<u32>().prop_map(Checksum::Value),
            ],
        )
            .prop_map(|(index, true_value, checksum)| Event::Number { index, true_value, checksum }),
        2 => (any::<u8>(), 0u8..16, proptest::option::of(duration()))
            .prop_map(|(code, reason, retry_after)| Event::Status { code, reason, retry_after }),
        1 => Just(Event::EndOk),
        1 => Just(Event::Transport),
        1 => Just(Event::Protocol),
        2 => duration().prop_map(Event::Wait),
        3 => Just(Event::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_server_events_never_break_the_client(
        count in prop_oneof![1u32..8, 0u32..=65_536],
        events in proptest::collection::vec(event(), 0..80),
    ) {
        prop_assert_eq!(run(count, &events), Ok(()));
    }
}
