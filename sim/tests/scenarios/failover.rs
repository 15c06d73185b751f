//! Two or three servers share one store; one crashes mid-stream (and may
//! come back). Clients fail over to another endpoint and complete.

use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, Scenario, SimRng, StoreKind, When};

use crate::common::{clients, outage, secs, Outage, SEC};

pub fn failover(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let servers = 2 + rng.below(2);
    let n = 3 + rng.below(4);
    let mut s = Scenario::new(
        "shared-store failover",
        clients(
            &mut rng,
            n,
            15..50,
            Duration::ZERO..secs(5),
            Expect::Complete,
        ),
    );
    s.servers = servers;
    s.store = StoreKind::Shared;
    for (c, plan) in s.clients.iter_mut().enumerate() {
        plan.endpoints = (0..servers).map(|k| (c + k) % servers).collect();
    }
    let victim = rng.below(servers);
    let first = s.faults.len();
    let crash = if rng.chance(0.3) {
        // The `Attached` (and first number) of a client opening on the
        // victim is lost, then the victim crashes: the client repeats its
        // `Open` (same nonce) on another server, which must attach it to the
        // session the victim created rather than refuse it.
        let c = (0..n)
            .find(|&c| s.clients[c].endpoints[0] == victim)
            .expect("clients start on every server in turn");
        let when = When::Sent {
            client: c,
            index: 0,
            delay: Duration::ZERO,
        };
        s.faults.push(Fault {
            when,
            action: Action::Cut {
                client: c,
                servers: vec![victim],
            },
        });
        s.faults.push(Fault {
            when: When::After {
                fault: first,
                delay: rng.millis(Duration::ZERO..secs(3)),
            },
            action: Action::Crash(victim),
        });
        s.faults.push(Fault {
            when: When::After {
                fault: first,
                delay: rng.millis(secs(5)..secs(15)),
            },
            action: Action::Heal {
                client: c,
                servers: vec![victim],
            },
        });
        first + 1
    } else {
        s.faults.push(Fault {
            when: When::At(rng.millis(secs(3)..secs(25))),
            action: Action::Crash(victim),
        });
        first
    };
    if rng.chance(0.5) {
        s.faults.push(Fault {
            when: When::After {
                fault: crash,
                delay: rng.millis(secs(5)..secs(40)),
            },
            action: Action::Restart(victim),
        });
    }
    // Sometimes a client also loses its link to one of the other servers.
    if rng.chance(0.5) {
        let c = rng.below(n);
        let other = (victim + 1 + rng.below(servers - 1)) % servers;
        let at = rng.millis(SEC..secs(30));
        let kind = Outage::random(&mut rng);
        outage(
            &mut s.faults,
            c,
            vec![other],
            at,
            rng.millis(SEC..secs(15)),
            kind,
        );
    }
    s
}

#[test]
fn shared_store_failover_after_a_server_crash() {
    sweep(
        &test_path!("shared_store_failover_after_a_server_crash"),
        80,
        failover,
    );
}
