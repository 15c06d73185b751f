//! The servers' counters against what happened (invariant `Counted`),
//! reduced to the runs that show each miscount found so far.

use std::time::Duration;

use sim::{check, run, ClientPlan, Expect, Invariant, Scenario, StoreKind};

/// One client, no fault, the store a host of its own: the store answers
/// a few milliseconds later, so the client's half-close after its final
/// acknowledgement reaches the server while the `Delete` is in flight.
fn completion_on_the_store_host() -> Scenario {
    let mut s = Scenario::new(
        "completion on the store host",
        vec![ClientPlan::new(5, Duration::ZERO, Expect::Complete)],
    );
    s.store = StoreKind::Host;
    s
}

/// Regression: a completed session was counted as a `BAD_REQUEST`
/// rejection when the client half-closed its stream while the final
/// `Delete` was in flight.
#[test]
fn a_completion_whose_delete_is_in_flight_is_counted_completed() {
    let scenario = completion_on_the_store_host();
    let report = run(&scenario, 1);
    let violations: Vec<_> = check(&scenario, &report)
        .into_iter()
        .filter(|v| v.invariant == Invariant::Counted)
        .collect();
    assert!(
        violations.is_empty(),
        "{}\ncounted {:?}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        report.counted
    );
}
