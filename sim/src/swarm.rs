//! Swarm testing, as in TigerBeetle's VOPR and FoundationDB's simulation:
//! each seed draws which fault kinds are on, and at what rates, so that
//! over many seeds every combination is tried, including quiet ones in
//! which a single fault kind does its worst.
//!
//! [`swarm`] draws a [`Scenario`] with the store as a host of its own
//! ([`StoreKind::Host`]), two or three servers and several clients that
//! may use every server. The settings drawn are written in
//! [`Scenario::swarm`], which a run prints (and traces) first; a sweep's
//! summary line counts the seeds that exercised each fault kind.
//!
//! | fault kind | what |
//! |---|---|
//! | client outages | cuts, one-way cuts and stalls of single clients, under the TTL |
//! | packet loss | turmoil's random link failures, on every link |
//! | latency spikes | larger latency on every client-server link for a while |
//! | server crash | a server crashes, and usually restarts |
//! | server pause | a server's links are all held, often for longer than the TTL |
//! | client id reuse | with a pause: a client on the paused server only, and a later client that opens its id after it expired (a lease past its TTL), while the paused server still holds the old session |
//! | store latency | slow links to the store host, with spikes |
//! | store partition | one server cut off from the store, not from its clients |
//! | store reply loss | the store applies a write and loses the reply |
//! | store crash, data kept | the store host crashes and restarts with its data |
//! | store crash, data lost | the store host crashes and restarts empty |
//! | store failover behind | the store fails over to a replica a few seconds behind: records go back to older generations or progress |
//! | store takeover reply loss | the store loses its reply to takeover writes it applied; the server sends them again |
//! | stale resume | a client's `Resume` reaches a server late (a half-open connection of its), taking over the stream it still reads |
//!
//! The last three kinds are drawn from a random stream of their own, after
//! the others, and named in the run's summary only when on: a seed that
//! draws none of them runs, and traces, exactly as before they existed.
//!
//! Every client may be told `NOT_FOUND` (its session lost or expired) or
//! expire, and must otherwise complete; the invariants decide whether what
//! happened was right.

use std::time::Duration;

use crate::rng::{derive, SimRng};
use crate::scenario::{Action, ClientPlan, Expect, Fault, NetPlan, Scenario, StoreKind, When};

const SEC: Duration = Duration::from_secs(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(faults: &mut Vec<Fault>, t: Duration, action: Action) {
    faults.push(Fault {
        when: When::At(t),
        action,
    });
}

/// Draws a swarm scenario from `seed`.
pub fn swarm(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let servers = 2 + rng.below(2);
    let n = 2 + rng.below(4);
    let clients: Vec<ClientPlan> = (0..n)
        .map(|c| {
            let mut plan = ClientPlan::new(
                rng.range_u32(10..45),
                rng.millis(Duration::ZERO..secs(5)),
                Expect::CompleteOrRejected,
            );
            plan.endpoints = (0..servers).map(|k| (c + k) % servers).collect();
            plan
        })
        .collect();
    let mut s = Scenario::new("swarm", clients);
    s.servers = servers;
    s.store = StoreKind::Host;
    // Outages of every kind overlap here, and may end with the client in
    // a backoff of up to 5 s and then connecting (7 s), and trying each
    // other endpoint in turn, which may be down, paused or cut from the
    // store, for a connect timeout and a backoff each (8 s). The exact
    // expiry rule is the `expiry` scenarios' to test.
    s.expiry_slack = Duration::from_secs(7) + Duration::from_secs(8) * (servers as u32 - 1);
    let mut on: Vec<String> = Vec::new();
    let ttl = s.session.ttl;
    let mut off: Vec<&str> = Vec::new();
    let kind = |rng: &mut SimRng, name: &'static str, p: f64, off: &mut Vec<&str>| {
        let yes = rng.chance(p);
        if !yes {
            off.push(name);
        }
        yes
    };

    if kind(&mut rng, "client-outages", 0.5, &mut off) {
        let max = 1 + rng.below(3);
        let mut count = 0;
        for c in 0..n {
            let plan = s.clients[c].clone();
            let end = plan.start + SEC * plan.count;
            let mut t = plan.start + rng.millis(SEC..secs(10));
            for _ in 0..rng.below(max + 1) {
                if t >= end {
                    break;
                }
                let len = rng.millis(SEC..secs(20));
                let servers: Vec<usize> = plan.endpoints.clone();
                let (down, up) = match rng.below(4) {
                    0 => (
                        Action::Hold {
                            client: c,
                            servers: servers.clone(),
                        },
                        Action::Release { client: c, servers },
                    ),
                    1 => {
                        let upstream = rng.chance(0.5);
                        (
                            Action::CutOneway {
                                client: c,
                                servers: servers.clone(),
                                upstream,
                            },
                            Action::HealOneway {
                                client: c,
                                servers,
                                upstream,
                            },
                        )
                    }
                    _ => (
                        Action::Cut {
                            client: c,
                            servers: servers.clone(),
                        },
                        Action::Heal { client: c, servers },
                    ),
                };
                at(&mut s.faults, t, down);
                at(&mut s.faults, t + len, up);
                count += 1;
                t += len + rng.millis(secs(12)..secs(24));
            }
        }
        on.push(format!("client-outages({count})"));
    }
    if kind(&mut rng, "packet-loss", 0.25, &mut off) {
        let rate = [0.0005, 0.001, 0.002][rng.below(3)];
        s.net = NetPlan {
            fail_rate: rate,
            repair_rate: [0.2, 0.5, 0.9][rng.below(3)],
            ..NetPlan::default()
        };
        on.push(format!("packet-loss({rate})"));
        // Random link failures are not on the schedule: the checker cannot
        // tell how long a client was cut off, so it does not judge expiry.
        s.expiry_slack = ttl;
    }
    if kind(&mut rng, "latency-spikes", 0.3, &mut off) {
        let t = rng.millis(secs(2)..secs(30));
        let spike = rng.millis(Duration::from_millis(300)..secs(3));
        at(&mut s.faults, t, Action::MaxLatency(spike));
        at(
            &mut s.faults,
            t + rng.millis(secs(2)..secs(10)),
            Action::MaxLatency(s.net.max_latency),
        );
        on.push(format!("latency-spikes({spike:?})"));
    }
    if kind(&mut rng, "server-crash", 0.3, &mut off) {
        let victim = rng.below(servers);
        let t = rng.millis(secs(2)..secs(40));
        at(&mut s.faults, t, Action::Crash(victim));
        let restart = rng.chance(0.7);
        if restart {
            at(
                &mut s.faults,
                t + rng.millis(secs(2)..secs(40)),
                Action::Restart(victim),
            );
        }
        on.push(format!("server-crash(server-{victim}, restart {restart})"));
    }
    let pause = kind(&mut rng, "server-pause", 0.35, &mut off);
    let reuse = pause && kind(&mut rng, "client-id-reuse", 0.6, &mut off);
    if !pause {
        off.push("client-id-reuse");
    }
    if pause {
        let victim = rng.below(servers);
        let t = rng.millis(secs(8)..secs(30));
        let len = if reuse {
            // The reusing client opens 3-6 s after the old session expired
            // (a lease past its TTL: the paused server released nothing),
            // and the paused server wakes while it streams.
            let opens = ttl + s.session.lease + rng.millis(secs(3)..secs(6));
            let v = s.clients.len();
            let mut old = ClientPlan::new(
                rng.range_u32(40..60),
                t - rng.millis(secs(5)..secs(8)),
                Expect::Any,
            );
            old.endpoints = vec![victim];
            let mut new =
                ClientPlan::new(rng.range_u32(15..40), t + opens, Expect::CompleteOrRejected);
            new.endpoints = (1..servers)
                .map(|k| (victim + k) % servers)
                .chain([victim])
                .collect();
            new.reuse_id_of = Some(v);
            s.clients.push(old);
            s.clients.push(new);
            opens + rng.millis(secs(2)..secs(8))
        } else if rng.chance(0.6) {
            ttl + rng.millis(SEC..secs(15))
        } else {
            rng.millis(SEC..ttl)
        };
        at(&mut s.faults, t, Action::Pause(victim));
        at(&mut s.faults, t + len, Action::Unpause(victim));
        on.push(format!("server-pause(server-{victim}, {len:?})"));
        if reuse {
            on.push("client-id-reuse".into());
        }
    }
    if kind(&mut rng, "store-latency", 0.4, &mut off) {
        let base = rng.millis(Duration::from_millis(2)..Duration::from_millis(60));
        s.store_net.latency = base;
        let t = rng.millis(secs(2)..secs(40));
        let spike = rng.millis(Duration::from_millis(100)..Duration::from_millis(1500));
        at(&mut s.faults, t, Action::StoreLatency(spike));
        at(
            &mut s.faults,
            t + rng.millis(secs(1)..secs(10)),
            Action::StoreLatency(base),
        );
        on.push(format!("store-latency({base:?}, spike {spike:?})"));
    }
    if kind(&mut rng, "store-partition", 0.3, &mut off) {
        let victim = rng.below(servers);
        let t = rng.millis(secs(2)..secs(40));
        let len = rng.millis(SEC..secs(25));
        at(&mut s.faults, t, Action::CutStore(victim));
        at(&mut s.faults, t + len, Action::HealStore(victim));
        on.push(format!("store-partition(server-{victim}, {len:?})"));
    }
    if kind(&mut rng, "store-reply-loss", 0.3, &mut off) {
        let rate = [0.005, 0.02, 0.05][rng.below(3)];
        s.store_net.reply_loss = rate;
        on.push(format!("store-reply-loss({rate})"));
    }
    if kind(&mut rng, "store-crash-keeps-data", 0.25, &mut off) {
        let t = rng.millis(secs(3)..secs(25));
        let len = rng.millis(Duration::from_millis(500)..secs(12));
        at(&mut s.faults, t, Action::CrashStore);
        at(
            &mut s.faults,
            t + len,
            Action::RestartStore { lose_data: false },
        );
        on.push(format!("store-crash-keeps-data({len:?})"));
    }
    if kind(&mut rng, "store-crash-loses-data", 0.25, &mut off) {
        let t = rng.millis(secs(30)..secs(50));
        let len = rng.millis(Duration::from_millis(500)..secs(5));
        at(&mut s.faults, t, Action::CrashStore);
        at(
            &mut s.faults,
            t + len,
            Action::RestartStore { lose_data: true },
        );
        on.push(format!("store-crash-loses-data({len:?})"));
    }
    rare_kinds(seed, &mut s, &mut on);
    s.swarm = Some(format!(
        "seed {seed}: on [{}]; off [{}]",
        on.join(", "),
        off.join(", ")
    ));
    s
}

/// Purpose of the random stream of [`rare_kinds`] (see [`derive`]).
const RARE_KINDS: u64 = 0x7a7e;

/// Draws the fault kinds that reach rare store answers and timings, from a
/// stream of their own (see the module docs); each on at 0.2.
fn rare_kinds(seed: u64, s: &mut Scenario, on: &mut Vec<String>) {
    let mut rng = SimRng::new(derive(seed, &[RARE_KINDS]));
    if rng.chance(0.2) {
        let t = rng.millis(secs(10)..secs(45));
        let lag = rng.millis(SEC..secs(10));
        at(&mut s.faults, t, Action::FailoverStore { lag });
        on.push(format!("store-failover-behind({lag:?})"));
    }
    if rng.chance(0.2) {
        let rate = [0.3, 0.6, 1.0][rng.below(3)];
        s.store_net.takeover_reply_loss = rate;
        on.push(format!("store-takeover-reply-loss({rate})"));
    }
    if rng.chance(0.2) {
        // Not a client whose id is reused: a stale resume keeps its old
        // session alive (as the client coming back would), past the time
        // the reusing client is drawn to open it.
        let reused: Vec<usize> = s.clients.iter().filter_map(|c| c.reuse_id_of).collect();
        let eligible: Vec<usize> = (0..s.clients.len())
            .filter(|c| s.clients[*c].reuse_id_of.is_none() && !reused.contains(c))
            .collect();
        let client = eligible[rng.below(eligible.len())];
        let server = rng.below(s.servers);
        let plan = &s.clients[client];
        let t = plan.start + rng.millis(secs(3)..SEC * plan.count.max(4));
        at(&mut s.faults, t, Action::StaleResume { client, server });
        on.push(format!("stale-resume(client-{client}, server-{server})"));
    }
}
