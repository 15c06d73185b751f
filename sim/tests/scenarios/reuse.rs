//! Client ids reused after expiry while a paused server still holds the
//! old session, with the store as a host of its own.
//!
//! The defect: every session starts at generation 1, so when writes were
//! fenced by generation alone, a server paused past the TTL could wake and
//! write its old record over a new session that reused the id. These are
//! its regression tests: they failed when the incarnation comparison was
//! taken out of `station_core::store::decide`.

use std::time::Duration;

use sim::{sweep, test_path, Action, ClientPlan, Expect, Fault, Scenario, SimRng, StoreKind, When};

use crate::common::secs;

/// The TTL of a scenario's default session settings, which both
/// scenarios here keep: an id is reused once this has passed.
fn default_ttl() -> Duration {
    Scenario::new("", vec![]).session.ttl
}

/// How long a session of a server that stopped without releasing it may
/// outlive its TTL: its last lease write keeps it a lease longer.
fn default_lease() -> Duration {
    Scenario::new("", vec![]).session.lease
}

/// Client 0 streams from server 0 only. Server 0 pauses (every link held)
/// for longer than the TTL and a lease: client 0 expires, and the renewal
/// server 0 sent is held on its way to the store. Client 1 opens client 0's id on server
/// 1 after the old session expired. Server 0 wakes while client 1 streams,
/// and at that moment server 1 crashes, so client 1 resumes on server 0:
/// the renewal held since the pause reaches the store just before client
/// 1's resume does. It must not have been applied.
pub fn paused_server_wakes_after_reuse(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let mut old = ClientPlan::new(
        rng.range_u32(60..90),
        rng.millis(Duration::ZERO..secs(2)),
        Expect::Expire,
    );
    old.endpoints = vec![0];
    let pause_at = old.start + rng.millis(secs(4)..secs(10));
    // The paused server released nothing: its session lives out its last
    // lease write.
    let opens = default_ttl() + default_lease() + rng.millis(secs(3)..secs(6));
    let mut new = ClientPlan::new(rng.range_u32(20..40), pause_at + opens, Expect::Complete);
    new.endpoints = vec![1, 0];
    new.reuse_id_of = Some(0);
    let mut s = Scenario::new(
        "paused server wakes after its client's id was reused",
        vec![old, new],
    );
    s.servers = 2;
    s.store = StoreKind::Host;
    let wake = pause_at + opens + rng.millis(secs(2)..secs(6));
    s.faults = vec![
        Fault {
            when: When::At(pause_at),
            action: Action::Pause(0),
        },
        Fault {
            when: When::At(wake),
            action: Action::Unpause(0),
        },
        Fault {
            when: When::After {
                fault: 1,
                delay: Duration::ZERO,
            },
            action: Action::Crash(1),
        },
    ];
    s
}

/// Client 0 completes on server 0, but the `Delete` after its final
/// acknowledgement is held on server 0's link to the store. Client 1 opens
/// the same id on server 1 after the old session expired; then the held
/// `Delete` arrives. It must not remove client 1's session.
pub fn late_delete_after_reuse(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let mut old = ClientPlan::new(
        rng.range_u32(3..15),
        rng.millis(Duration::ZERO..secs(2)),
        Expect::Complete,
    );
    old.endpoints = vec![0];
    let last = old.count - 1;
    let ttl = default_ttl();
    let opens = ttl + rng.millis(secs(3)..secs(6));
    // Client 1 starts `opens` after the hold, which waits for client 0's
    // last number: an upper bound on when that arrives.
    let last_at = old.start + secs(u64::from(old.count)) + secs(3);
    let mut new = ClientPlan::new(rng.range_u32(10..30), last_at + opens, Expect::Complete);
    new.endpoints = vec![1];
    new.reuse_id_of = Some(0);
    let mut s = Scenario::new("a late delete after the id was reused", vec![old, new]);
    s.servers = 2;
    s.store = StoreKind::Host;
    s.faults = vec![
        Fault {
            when: When::Received {
                client: 0,
                index: last,
                delay: Duration::ZERO,
            },
            action: Action::HoldStore(0),
        },
        Fault {
            when: When::At(last_at + opens + rng.millis(secs(2)..secs(6))),
            action: Action::ReleaseStore(0),
        },
    ];
    s
}

#[test]
fn a_paused_server_cannot_write_over_a_reused_id() {
    sweep(
        &test_path!("a_paused_server_cannot_write_over_a_reused_id"),
        20,
        paused_server_wakes_after_reuse,
    );
}

#[test]
fn a_late_delete_cannot_remove_a_reused_id() {
    sweep(
        &test_path!("a_late_delete_cannot_remove_a_reused_id"),
        20,
        late_delete_after_reuse,
    );
}
