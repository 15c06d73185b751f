//! Property test: a server stream machine fed arbitrary event lists never panics
//! and never breaks an output rule (see `station_core::testkit`). The fuzz
//! target in `fuzz/` runs the same checks coverage-guided.

use std::time::Duration;

use proptest::prelude::*;
use station_core::testkit::{run, Answer, Event};

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Done),
        1 => Just(Answer::Conflict),
        1 => Just(Answer::WriteExpiredOrReplaced),
        1 => Just(Answer::WriteVanished),
        1 => Just(Answer::Unavailable),
        1 => (0u32..8, any::<u8>()).prop_map(|(count, nonce)| Answer::Exists { count, nonce }),
        2 => (0u32..8).prop_map(|count| Answer::Live { count }),
        1 => Just(Answer::Expired),
        1 => Just(Answer::Missing),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (0u8..3, prop_oneof![0u32..8, any::<u32>()], prop_oneof![Just(0u8), Just(16), any::<u8>()])
            .prop_map(|(id, count, nonce_len)| Event::Open { id, count, nonce_len }),
        2 => (0u8..3, any::<bool>(), prop_oneof![Just(16u8), any::<u8>()], prop_oneof![0u32..8, any::<u32>()])
            .prop_map(|(id, right_token, token_len, next_index)| Event::Resume { id, right_token, token_len, next_index }),
        4 => prop_oneof![0u32..9, any::<u32>()].prop_map(Event::Ack),
        5 => answer().prop_map(Event::Store),
        4 => (0u64..5_000).prop_map(|ms| Event::Wait(Duration::from_millis(ms))),
        1 => Just(Event::Closed),
        1 => Just(Event::Shutdown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_events_never_break_the_session(events in proptest::collection::vec(event(), 0..60)) {
        prop_assert_eq!(run(&events), Ok(()));
    }
}
