//! The checker must be able to fail: each test injects a known bug into
//! the system under test (through the store the servers use, a test-only
//! knob) and asserts that the invariant checker catches it within the
//! default seeds.

use sim::sweep::{replay_command, run_seeds, seeds};
use sim::{test_path, Bug, Invariant, Scenario};

/// Runs `build` with `bug` over the default seeds and asserts that some
/// run breaks `expected`. Prints the first catch and its replay command.
fn caught(
    name: &str,
    default_seeds: u64,
    bug: Bug,
    expected: Invariant,
    build: fn(u64) -> Scenario,
) {
    let test = test_path!(name);
    let seeds = seeds(default_seeds);
    let with_bug = |seed| {
        let mut s = build(seed);
        s.bug = bug;
        s.name = format!("{} with bug {bug:?}", s.name);
        s
    };
    let results = run_seeds(&seeds, &with_bug);
    let catches: Vec<_> = results
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.invariant == expected))
        .collect();
    let Some(first) = catches.first() else {
        panic!(
            "bug {bug:?} went unnoticed in all {} seeds {seeds:?}: the checker cannot see it",
            results.len()
        );
    };
    println!(
        "bug {bug:?}: caught as {expected:?} in {} of {} seeds; first, seed {}:",
        catches.len(),
        results.len(),
        first.seed
    );
    for v in &first.violations {
        println!("  {v}");
    }
    if seeds.len() == 1 {
        if let Some(details) = &first.details {
            println!("{details}");
        }
    }
    println!("replay: {}", replay_command(&test, first.seed));
    if sim::timeline::requested() {
        println!("{}", sim::sweep::write_timeline(&test, first, &with_bug));
    }
}

#[test]
fn a_store_that_forgets_sessions_early_is_caught() {
    caught(
        "a_store_that_forgets_sessions_early_is_caught",
        20,
        Bug::ForgetsEarly,
        Invariant::Expiry,
        crate::partitions::short_outages,
    );
}

#[test]
fn a_server_that_changes_numbers_after_a_drop_is_caught() {
    caught(
        "a_server_that_changes_numbers_after_a_drop_is_caught",
        20,
        Bug::ReseedsOnResume,
        Invariant::Sequence,
        crate::partitions::short_outages,
    );
}

#[test]
fn a_store_that_keeps_completed_sessions_is_caught() {
    caught(
        "a_store_that_keeps_completed_sessions_is_caught",
        10,
        Bug::KeepsCompleted,
        Invariant::NoLeak,
        crate::finale::final_message_lost,
    );
}
