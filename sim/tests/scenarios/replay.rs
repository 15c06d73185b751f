//! Replay: the same seed gives the same run, event for event.

use sim::sweep::{run_seeds, seed_or_first};
use sim::{run, Scenario};

/// Draws a scenario from a seed.
type Builder = fn(u64) -> Scenario;

/// One builder per scenario family.
const BUILDERS: [(&str, Builder); 10] = [
    ("short outages", crate::partitions::short_outages),
    ("long outages", crate::expiry::long_outages),
    ("expiry boundary", crate::expiry::boundary),
    ("loss", crate::loss::lossy),
    ("crash", crate::crash::crash),
    ("failover", crate::failover::failover),
    ("final ack lost", crate::finale::final_ack_lost),
    ("swarm", sim::swarm::swarm),
    ("id reuse", crate::reuse::paused_server_wakes_after_reuse),
    ("store slowdown", crate::overload::small_store_slowdown),
];

#[test]
fn same_seed_same_trace_hash() {
    for seed in seed_or_first(2) {
        for (name, build) in BUILDERS {
            let first = run(&build(seed), seed);
            let second = run(&build(seed), seed);
            if first.trace != second.trace {
                let at = first
                    .trace
                    .iter()
                    .zip(&second.trace)
                    .position(|(a, b)| a != b)
                    .unwrap_or(first.trace.len().min(second.trace.len()));
                panic!(
                    "{name} seed {seed} diverged at trace line {at}:\n  first:  {:?}\n  second: {:?}",
                    first.trace.get(at),
                    second.trace.get(at)
                );
            }
            assert_eq!(first.trace_hash, second.trace_hash);
            println!(
                "{name} seed {seed}: trace hash {:016x} ({} events) twice",
                first.trace_hash,
                first.trace.len()
            );
        }
    }
}

#[test]
fn different_seeds_different_runs() {
    let (name, build) = BUILDERS[0];
    let a = run(&build(1), 1);
    let b = run(&build(2), 2);
    assert_ne!(
        a.trace_hash, b.trace_hash,
        "{name}: seeds 1 and 2 ran alike"
    );
}

/// Runs on worker threads, interleaved with other runs (which shifts
/// process-global state such as tokio's task ids), give the same traces as
/// runs on their own.
#[test]
fn parallel_sweeps_match_runs_on_their_own() {
    let seeds = seed_or_first(3);
    for (name, build) in BUILDERS {
        let swept = run_seeds(&seeds, &build);
        for result in swept {
            let alone = run(&build(result.seed), result.seed);
            assert_eq!(
                result.trace_hash, alone.trace_hash,
                "{name} seed {}: the sweep and a run on its own differ",
                result.seed
            );
        }
    }
}
