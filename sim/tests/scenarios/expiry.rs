//! Expiry: outages longer than the TTL reject exactly the clients cut off,
//! and the exact boundary at the real 30 s TTL and 1 s interval.

use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, NetPlan, Scenario, SimRng, When};

use crate::common::{clients, outage, secs, Outage, SEC};
use crate::partitions::add_short_outages;

/// Some clients are cut off for longer than the TTL (plus an interval, so
/// the cut is unambiguous); the others have short outages or none.
pub fn long_outages(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 3 + rng.below(2);
    let mut s = Scenario::new(
        "long outages",
        clients(
            &mut rng,
            n,
            40..70,
            Duration::ZERO..secs(2),
            Expect::Complete,
        ),
    );
    let ttl = s.session.ttl;
    let doomed = 1 + rng.below(2);
    let first = rng.below(n);
    for k in 0..n {
        let c = (first + k) % n;
        if k < doomed {
            let plan = &s.clients[c];
            let at = plan.start + rng.millis(secs(3)..SEC * (plan.count - 10));
            s.clients[c].expect = Expect::Expire;
            let length = ttl + SEC + rng.millis(Duration::ZERO..secs(10));
            let kind = Outage::random(&mut rng);
            outage(&mut s.faults, c, vec![0], at, length, kind);
        } else {
            add_short_outages(&mut rng, &mut s, c, 2);
        }
    }
    s
}

#[test]
fn long_outages_expire_exactly_the_clients_cut_off() {
    sweep(
        &test_path!("long_outages_expire_exactly_the_clients_cut_off"),
        80,
        long_outages,
    );
}

/// Three clients, each cut off around the delivery of its number `k`, at
/// the real 30 s TTL and 1 s interval:
///
/// - `a`: cut after the acknowledgement of `k` arrived, healed TTL − 1
///   interval after `k` was delivered: completes.
/// - `b`: the same, healed TTL + 1 interval after: rejected as expired (the
///   client knows it cannot resume in time and says so itself).
/// - `c`: `k` is held up for half a second (a latency spike), and the link
///   is cut as soon as `k` got through, so its acknowledgement is lost: the
///   server last had a working stream when it sent `k`, the client last
///   heard from it half a second later. Healed TTL + ⅛ interval after the
///   send, the client (by its own measure still inside the TTL) comes
///   back, and the *server* rejects it as expired.
///
/// Latency is kept low so a reconnection takes well under the 100 ms the
/// client leaves itself before its own deadline.
pub fn boundary(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let mut s = Scenario::new(
        "expiry boundary",
        clients(
            &mut rng,
            3,
            6..20,
            Duration::ZERO..secs(3),
            Expect::Complete,
        ),
    );
    s.net = NetPlan {
        max_latency: Duration::from_millis(10),
        ..NetPlan::default()
    };
    let ttl = s.session.ttl;
    let interval = s.session.interval;
    let index: Vec<u32> = s
        .clients
        .iter()
        .map(|c| rng.range_u32(1..c.count - 2))
        .collect();
    let servers = vec![0];
    let received = |client: usize, delay| When::Received {
        client,
        index: index[client],
        delay,
    };
    let cut = |client| Action::Cut {
        client,
        servers: servers.clone(),
    };
    let heal = |client| Action::Heal {
        client,
        servers: servers.clone(),
    };
    let settled = Duration::from_millis(200);
    for (c, expect, heal_after) in [
        (0, Expect::Complete, ttl - interval),
        (1, Expect::Expire, ttl + interval),
    ] {
        s.clients[c].expect = expect;
        s.faults.push(Fault {
            when: received(c, settled),
            action: cut(c),
        });
        s.faults.push(Fault {
            when: received(c, heal_after),
            action: heal(c),
        });
    }
    let c = 2;
    let spike = interval / 2;
    s.clients[c].expect = Expect::ExpiredByServer;
    let hold = s.faults.len();
    s.faults.push(Fault {
        when: When::Sent {
            client: c,
            index: index[c],
            delay: Duration::ZERO,
        },
        action: Action::Hold {
            client: c,
            servers: servers.clone(),
        },
    });
    s.faults.push(Fault {
        when: When::After {
            fault: hold,
            delay: spike,
        },
        action: Action::Release {
            client: c,
            servers: servers.clone(),
        },
    });
    // One step later: `k` was delivered in the step after the release, and
    // its acknowledgement is still on the wire.
    s.faults.push(Fault {
        when: When::After {
            fault: hold + 1,
            delay: s.tick,
        },
        action: cut(c),
    });
    s.faults.push(Fault {
        when: When::After {
            fault: hold,
            delay: ttl + spike / 4,
        },
        action: heal(c),
    });
    s
}

#[test]
fn expiry_boundary_at_the_real_ttl() {
    sweep(&test_path!("expiry_boundary_at_the_real_ttl"), 80, boundary);
}
