//! The checker must be able to fail: each test plants a known bug ([`Bug`],
//! one per rule) into the system under test — through the store the
//! servers use, their settings, or bytes on the simulated wire; never in
//! production code — and asserts that the invariant checker catches it
//! within the default seeds.

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

/// Expiry too early.
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

/// Deletion on the final acknowledgement.
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

#[test]
fn expiry_too_late_is_caught() {
    caught(
        "expiry_too_late_is_caught",
        10,
        Bug::ForgetsLate,
        Invariant::NoLeak,
        crate::finale::final_ack_lost,
    );
}

#[test]
fn create_fencing_ignored_is_caught() {
    caught(
        "create_fencing_ignored_is_caught",
        30,
        Bug::CreateOverwritesLive,
        Invariant::Incarnation,
        crate::failover::failover,
    );
}

/// The old fencing, by generation only: the regression scenario
/// catches it both at the store and at the client.
#[test]
fn update_fencing_without_incarnation_is_caught() {
    caught(
        "update_fencing_without_incarnation_is_caught",
        10,
        Bug::UpdateIgnoresIncarnation,
        Invariant::Incarnation,
        crate::reuse::paused_server_wakes_after_reuse,
    );
    caught(
        "update_fencing_without_incarnation_is_caught",
        10,
        Bug::UpdateIgnoresIncarnation,
        Invariant::Expected,
        crate::reuse::paused_server_wakes_after_reuse,
    );
}

#[test]
fn update_fencing_without_generation_is_caught() {
    caught(
        "update_fencing_without_generation_is_caught",
        40,
        Bug::UpdateIgnoresGeneration,
        Invariant::Incarnation,
        sim::swarm::swarm,
    );
}

#[test]
fn delete_fencing_ignored_is_caught() {
    caught(
        "delete_fencing_ignored_is_caught",
        10,
        Bug::DeleteIgnoresIncarnation,
        Invariant::Incarnation,
        crate::reuse::late_delete_after_reuse,
    );
}

#[test]
fn a_takeover_that_keeps_the_generation_is_caught() {
    caught(
        "a_takeover_that_keeps_the_generation_is_caught",
        20,
        Bug::TakeoverKeepsGeneration,
        Invariant::Incarnation,
        crate::partitions::short_outages,
    );
}

#[test]
fn a_wrong_resume_index_is_caught() {
    caught(
        "a_wrong_resume_index_is_caught",
        20,
        Bug::ResumeIndexOff,
        Invariant::Expected,
        crate::partitions::short_outages,
    );
}

#[test]
fn a_client_that_gives_up_early_is_caught() {
    caught(
        "a_client_that_gives_up_early_is_caught",
        20,
        Bug::GivesUpEarly,
        Invariant::Expiry,
        crate::partitions::short_outages,
    );
}

/// The old, generation-only fencing also shows in the swarm, at the store host.
#[test]
fn update_fencing_without_incarnation_is_caught_in_the_swarm() {
    caught(
        "update_fencing_without_incarnation_is_caught_in_the_swarm",
        60,
        Bug::UpdateIgnoresIncarnation,
        Invariant::Incarnation,
        sim::swarm::swarm,
    );
}

/// The servers' counting: a completed session counted as a rejection.
#[test]
fn a_completion_counted_as_a_rejection_is_caught() {
    caught(
        "a_completion_counted_as_a_rejection_is_caught",
        5,
        Bug::CompletionCountedAsRejection,
        Invariant::Counted,
        crate::partitions::short_outages,
    );
}

/// Lost writes told as a takeover: caught where a store failed over to a
/// replica behind it.
#[test]
fn lost_writes_told_as_a_takeover_are_caught() {
    caught(
        "lost_writes_told_as_a_takeover_are_caught",
        10,
        Bug::LostWritesSeenAsConflict,
        Invariant::TakenOverTruly,
        crate::rare::failover_behind,
    );
}

/// Idempotence of a takeover: caught where takeover replies are lost.
#[test]
fn a_repeated_takeover_answered_as_a_conflict_is_caught() {
    caught(
        "a_repeated_takeover_answered_as_a_conflict_is_caught",
        10,
        Bug::RepeatedTakeoverConflicts,
        Invariant::TakenOverTruly,
        crate::rare::takeover_reply_lost,
    );
}

/// Fencing of a stale lease: caught where a taken-over stream's client
/// still reads it.
#[test]
fn a_stale_lease_renewed_is_caught() {
    caught(
        "a_stale_lease_renewed_is_caught",
        10,
        Bug::StaleRenewalDone,
        Invariant::OneStream,
        crate::rare::stale_resume,
    );
}

/// Retries that amplify (clients without backoff, servers without
/// pushback): the store's queue never drains after a slowdown, and streams
/// keep failing and resuming long after the bound. The slowdown outlasts
/// the clients' patience with held streams: a shorter one no longer makes
/// them resume at all (`Paused`), so there is nothing to amplify.
#[test]
fn retries_that_amplify_are_caught() {
    caught(
        "retries_that_amplify_are_caught",
        2,
        Bug::RetriesWithoutBackoff,
        Invariant::Recovers,
        crate::overload::long_store_slowdown,
    );
}
