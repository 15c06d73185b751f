//! Applying a scenario's faults to the simulation, and measuring how long
//! each client was left without a working stream.

use std::time::Duration;

use crate::run::{lock, Registry};
use crate::scenario::{Action, Scenario, When};

/// An event a fault can wait for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trigger {
    /// Client `client` received number `index`.
    Received { client: usize, index: u32 },
    /// A server sent number `index` to client `client`.
    Sent { client: usize, index: u32 },
}

/// Which links and servers are down, to measure client isolation.
struct Links {
    cut: Vec<Vec<bool>>,
    /// One direction cut: no working stream either.
    oneway: Vec<Vec<bool>>,
    held: Vec<Vec<bool>>,
    down: Vec<bool>,
    /// Per client: isolated since.
    since: Vec<Option<Duration>>,
    /// Per client: closed isolation periods.
    periods: Vec<Vec<(Duration, Duration)>>,
}

impl Links {
    fn new(clients: usize, servers: usize) -> Self {
        Links {
            cut: vec![vec![false; servers]; clients],
            oneway: vec![vec![false; servers]; clients],
            held: vec![vec![false; servers]; clients],
            down: vec![false; servers],
            since: vec![None; clients],
            periods: vec![Vec::new(); clients],
        }
    }

    fn update(&mut self, scenario: &Scenario, now: Duration) {
        for (c, plan) in scenario.clients.iter().enumerate() {
            let isolated = plan
                .endpoints
                .iter()
                .all(|&s| self.cut[c][s] || self.oneway[c][s] || self.held[c][s] || self.down[s]);
            match (isolated, self.since[c]) {
                (true, None) => self.since[c] = Some(now),
                (false, Some(from)) => {
                    self.periods[c].push((from, now));
                    self.since[c] = None;
                }
                _ => {}
            }
        }
    }

    /// Isolation periods of client `c`, clipped to when it ran.
    fn clipped(&self, c: usize, start: Duration, end: Duration) -> Vec<(Duration, Duration)> {
        let open = self.since[c].map(|from| (from, end));
        self.periods[c]
            .iter()
            .copied()
            .chain(open)
            .filter_map(|(from, to)| {
                let (from, to) = (from.max(start), to.min(end));
                (from < to).then_some((from, to))
            })
            .collect()
    }
}

/// Applies one fault. `latency` is the network's current (min, max).
fn apply(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    links: &mut Links,
    registry: &Registry,
    latency: &mut (Duration, Duration),
    action: &Action,
) {
    let client = Scenario::client_host;
    let server = Scenario::server_host;
    match action {
        Action::Cut { client: c, servers } => {
            for &s in servers {
                sim.partition(client(*c), server(s));
                links.cut[*c][s] = true;
            }
        }
        Action::Heal { client: c, servers } => {
            for &s in servers {
                sim.repair(client(*c), server(s));
                links.cut[*c][s] = false;
            }
        }
        Action::CutOneway {
            client: c,
            servers,
            upstream,
        } => {
            for &s in servers {
                let (from, to) = oneway(*c, s, *upstream);
                sim.partition_oneway(from, to);
                links.oneway[*c][s] = true;
            }
        }
        Action::HealOneway {
            client: c,
            servers,
            upstream,
        } => {
            for &s in servers {
                let (from, to) = oneway(*c, s, *upstream);
                sim.repair_oneway(from, to);
                links.oneway[*c][s] = false;
            }
        }
        Action::Hold { client: c, servers } => {
            for &s in servers {
                sim.hold(client(*c), server(s));
                links.held[*c][s] = true;
            }
        }
        Action::Release { client: c, servers } => {
            for &s in servers {
                sim.release(client(*c), server(s));
                links.held[*c][s] = false;
            }
        }
        Action::Crash(s) => {
            // A crash drops the host's runtime, and its sockets send their
            // FIN/RST in tokio's task-drop order, which depends on global
            // task ids (so on what else ran in the process). Each message
            // draws its latency from the one network RNG in that order, so
            // give them all the same latency: the draws then do not matter
            // and a run replays exactly whatever ran before it.
            for c in 0..scenario.clients.len() {
                sim.set_link_latency(client(c), server(*s), latency.0);
            }
            sim.crash(server(*s));
            for c in 0..scenario.clients.len() {
                sim.set_link_max_message_latency(client(c), server(*s), latency.1);
            }
            links.down[*s] = true;
            // Its tasks are gone, and with them a per-boot store.
            lock(registry)[*s] = None;
        }
        Action::Restart(s) => {
            sim.bounce(server(*s));
            links.down[*s] = false;
        }
        Action::FailRate(p) => sim.set_fail_rate(*p),
        Action::MaxLatency(d) => {
            latency.1 = *d;
            sim.set_max_message_latency(*d);
            // Links given their own settings by a crash follow too.
            for c in 0..scenario.clients.len() {
                for s in 0..scenario.servers {
                    sim.set_link_max_message_latency(client(c), server(s), *d);
                }
            }
        }
    }
}

/// (from, to) host names of a one-way cut.
fn oneway(client: usize, server: usize, upstream: bool) -> (String, String) {
    let (c, s) = (Scenario::client_host(client), Scenario::server_host(server));
    if upstream {
        (c, s)
    } else {
        (s, c)
    }
}

/// The fault schedule's progress.
pub(crate) struct FaultState {
    links: Links,
    /// The network's current (min, max) latency.
    latency: (Duration, Duration),
    /// When each fault was applied.
    applied: Vec<Option<Duration>>,
}

impl FaultState {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        FaultState {
            links: Links::new(scenario.clients.len(), scenario.servers),
            latency: (scenario.net.min_latency, scenario.net.max_latency),
            applied: vec![None; scenario.faults.len()],
        }
    }

    /// Isolation periods of client `c`, clipped to when it ran.
    pub(crate) fn isolation(
        &self,
        c: usize,
        start: Duration,
        end: Duration,
    ) -> Vec<(Duration, Duration)> {
        self.links.clipped(c, start, end)
    }

    /// Applies every fault due now, in order; repeats while applying one
    /// makes another due (zero-delay chains). `happened` says when a
    /// trigger's event first happened; `log` records applied faults.
    pub(crate) fn apply_due(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        scenario: &Scenario,
        registry: &Registry,
        happened: impl Fn(Trigger) -> Option<Duration>,
        log: impl Fn(Duration, String),
    ) {
        let now = sim.elapsed();
        loop {
            let mut any = false;
            for (i, fault) in scenario.faults.iter().enumerate() {
                if self.applied[i].is_some() {
                    continue;
                }
                let due = match fault.when {
                    When::At(t) => Some(t),
                    When::Received {
                        client,
                        index,
                        delay,
                    } => happened(Trigger::Received { client, index }).map(|t| t + delay),
                    When::Sent {
                        client,
                        index,
                        delay,
                    } => happened(Trigger::Sent { client, index }).map(|t| t + delay),
                    When::After { fault, delay } => self.applied[fault].map(|t| t + delay),
                };
                if due.is_some_and(|t| t <= now) {
                    apply(
                        sim,
                        scenario,
                        &mut self.links,
                        registry,
                        &mut self.latency,
                        &fault.action,
                    );
                    self.applied[i] = Some(now);
                    self.links.update(scenario, now);
                    log(now, format!("fault {i}: {:?}", fault.action));
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }
}
