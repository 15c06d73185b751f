//! Endings that need a rare store answer or a rare timing, each forced by
//! a fault of the store host or the network (the swarm draws them too):
//!
//! - a store that fails over to a replica behind it, so a record goes
//!   back to an older generation: the client hears `SESSION_LOST`, never
//!   `TAKEN_OVER`;
//! - a takeover write applied whose reply was lost, sent again: `Done`,
//!   not a false conflict;
//! - a taken-over stream whose client still reads and acknowledges it
//!   (a stale resume took the session over): it stops within two leases
//!   of the takeover, not at its silence timeout.

use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, Scenario, SimRng, StoreKind, When};

use crate::common::{clients, outage, secs, Outage, SEC};

/// Client 0 is cut off from its server for a few seconds once it holds
/// number 5, and resumes (a takeover, generation 2); once it holds number
/// 12, about 7 s after the takeover, the store fails over to a replica 9 s
/// behind, which still holds generation 1. Client 0's next renewal finds
/// the older generation: its session is lost. The other clients' records
/// go back to older progress of the same generation, which changes
/// nothing for them.
pub fn failover_behind(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 1 + rng.below(3);
    let mut s = Scenario::new(
        "store failover behind",
        clients(
            &mut rng,
            n,
            25..45,
            Duration::ZERO..secs(3),
            Expect::CompleteOrRejected,
        ),
    );
    s.store = StoreKind::Host;
    let cut = rng.millis(secs(2)..secs(5));
    s.faults.push(Fault {
        when: When::Received {
            client: 0,
            index: 5,
            delay: Duration::ZERO,
        },
        action: Action::Cut {
            client: 0,
            servers: vec![0],
        },
    });
    s.faults.push(Fault {
        when: When::After {
            fault: 0,
            delay: cut,
        },
        action: Action::Heal {
            client: 0,
            servers: vec![0],
        },
    });
    s.faults.push(Fault {
        when: When::Received {
            client: 0,
            index: 12,
            delay: rng.millis(Duration::ZERO..SEC),
        },
        action: Action::FailoverStore { lag: secs(9) },
    });
    s
}

/// Clients with short outages, so that they resume (take their sessions
/// over), on a store host that loses the reply to every takeover write
/// the first time it applies one: the server re-sends it and must be told
/// `Done`.
pub fn takeover_reply_lost(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 2 + rng.below(2);
    let mut s = Scenario::new(
        "takeover reply lost",
        clients(
            &mut rng,
            n,
            20..40,
            Duration::ZERO..secs(3),
            Expect::Complete,
        ),
    );
    s.store = StoreKind::Host;
    s.store_net.takeover_reply_loss = 1.0;
    for c in 0..n {
        let at = s.clients[c].start + rng.millis(secs(3)..secs(10));
        let kind = if rng.chance(0.5) {
            Outage::Cut
        } else {
            Outage::Stall
        };
        outage(
            &mut s.faults,
            c,
            vec![0],
            at,
            rng.millis(secs(2)..secs(8)),
            kind,
        );
    }
    s
}

/// A stale `Resume` of client 0's session reaches a server while client 0
/// streams undisturbed: client 0's stream is taken over while it still
/// reads and acknowledges it, so only the lease ends it.
pub fn stale_resume(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let servers = 1 + rng.below(2);
    let n = 1 + rng.below(2);
    let mut s = Scenario::new(
        "stale resume",
        clients(
            &mut rng,
            n,
            30..50,
            Duration::ZERO..secs(3),
            Expect::Complete,
        ),
    );
    s.servers = servers;
    if rng.chance(0.5) {
        s.store = StoreKind::Host;
    }
    s.faults.push(Fault {
        when: When::Received {
            client: 0,
            index: rng.range_u32(4..15),
            delay: rng.millis(Duration::ZERO..SEC),
        },
        action: Action::StaleResume {
            client: 0,
            server: rng.below(servers),
        },
    });
    s
}

#[test]
fn a_store_failover_behind_loses_sessions_precisely() {
    sweep(
        &test_path!("a_store_failover_behind_loses_sessions_precisely"),
        40,
        failover_behind,
    );
}

#[test]
fn a_takeover_whose_reply_was_lost_is_not_a_conflict() {
    sweep(
        &test_path!("a_takeover_whose_reply_was_lost_is_not_a_conflict"),
        40,
        takeover_reply_lost,
    );
}

#[test]
fn a_stale_resume_ends_the_read_stream_within_two_leases() {
    sweep(
        &test_path!("a_stale_resume_ends_the_read_stream_within_two_leases"),
        40,
        stale_resume,
    );
}
