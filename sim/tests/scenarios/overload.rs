//! A store that slows down past the servers' timeout under many clients,
//! then is fast again: the run must get back to a steady state within a
//! stated bound (`sim::recovery`), not stay in a loop of stream failures,
//! resumes and takeovers that keeps the store behind once the trigger is
//! gone.
//!
//! The store host executes one operation at a time (`StoreNet::service`),
//! so its latency grows with its load: a resume costs it a load and a
//! takeover, an operation a server gave up on still costs its turn, and a
//! server that gives up on one sends it again. That is what can keep it
//! overloaded after the slowdown ends, if clients come back faster than it
//! drains (`broken::retries_that_amplify_are_caught` plants such clients).

use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, Recovery, Scenario, SimRng, StoreKind, When};
use station_core::server::Config as SessionConfig;

use crate::common::{clients, secs};

/// Numbers every 100 ms, with the real 30 s TTL (so the real 5 s lease).
const INTERVAL: Duration = Duration::from_millis(100);

/// The store's time per operation when healthy, times the clients: with
/// a lease renewal per client every 5 s, the store runs at about a sixth of
/// its capacity whatever the number of clients (12 ms, about 80 operations
/// a second, for 70 clients).
const HEALTHY_TIMES_CLIENTS: Duration = Duration::from_millis(840);

/// 60–80 clients on two servers sharing the store host, numbers every
/// 100 ms. After 3–4 s, once every stream has attached, the store takes
/// 12–25 times as long per operation (150–300 ms for 70 clients: 3–7 a
/// second against about 15 asked) for 8–11 s: its queue passes the
/// servers' timeout within a second or two,
/// renewals fail until the leases run out, streams end
/// `STORE_UNAVAILABLE`, and clients resume (a tenth open new sessions,
/// refused `OVERLOADED` while the store fails) against a store that still
/// fails. Then it is healthy again. Every client must complete, and the
/// run must be steady within [`Recovery::after_store_slowdown`]'s bound.
pub fn store_slowdown(seed: u64) -> Scenario {
    slowdown(seed, 60..81, secs(8)..secs(11))
}

/// [`store_slowdown`] with 20–30 clients and a store as much slower (so
/// as loaded): cheaper to run, for the replay tests and the planted bug.
pub fn small_store_slowdown(seed: u64) -> Scenario {
    slowdown(seed, 20..31, secs(8)..secs(11))
}

/// [`small_store_slowdown`] held 20–24 s: longer than clients wait on a
/// held stream (`Paused`, up to half the 30 s TTL since its last number),
/// so they drop their streams and resume against the slow store, as
/// clients that do not know `Paused` would sooner. For the planted bug,
/// whose retries then amplify.
pub fn long_store_slowdown(seed: u64) -> Scenario {
    slowdown(seed, 20..31, secs(20)..secs(24))
}

fn slowdown(seed: u64, n: std::ops::Range<usize>, held: std::ops::Range<Duration>) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = n.start + rng.below(n.end - n.start);
    let from = rng.millis(secs(3)..secs(4));
    let to = from + rng.millis(held);
    // Most start at once; a tenth while the store is slow or just after,
    // so they open new sessions then.
    let late = n / 10;
    let mut plans = clients(
        &mut rng,
        n - late,
        220..300,
        Duration::ZERO..secs(2),
        Expect::Complete,
    );
    plans.extend(clients(
        &mut rng,
        late,
        110..200,
        from..to + secs(3),
        Expect::Complete,
    ));
    let mut s = Scenario::new("store slowdown", plans);
    s.session = SessionConfig::new(INTERVAL, SessionConfig::default().ttl);
    s.servers = 2;
    s.store = StoreKind::Host;
    let healthy = HEALTHY_TIMES_CLIENTS / n as u32;
    s.store_net.service = healthy;
    for (c, plan) in s.clients.iter_mut().enumerate() {
        plan.endpoints = vec![c % 2, (c + 1) % 2];
    }
    let slow = healthy * rng.range_u32(12..26);
    s.faults.push(Fault {
        when: When::At(from),
        action: Action::StoreService(slow),
    });
    s.faults.push(Fault {
        when: When::At(to),
        action: Action::StoreService(healthy),
    });
    s.recovery = Some(Recovery::after_store_slowdown(&s, to));
    s
}

#[test]
fn a_store_slowdown_is_recovered_from() {
    sweep(
        &test_path!("a_store_slowdown_is_recovered_from"),
        3,
        store_slowdown,
    );
}
