//! Applying a scenario's faults to the simulation, and measuring how long
//! each client was left without a working stream.

use std::sync::Arc;
use std::time::Duration;

use station_core::client::Config as ClientConfig;
use station_core::ClientId;

use crate::base::lock;
use crate::report::Backlog;
use crate::scenario::{Action, Scenario, StoreKind, When};
use crate::server_store::Registry;
use crate::storenet::{self, StoreHost};

/// What applying faults needs besides the simulation.
pub(crate) struct Env<'a> {
    pub registry: &'a Registry,
    pub store_host: Option<&'a Arc<StoreHost>>,
    /// Every client's id, in plan order.
    pub ids: &'a [ClientId],
    /// Sessions lost by a store: (when, the ids that were live).
    pub on_loss: &'a dyn Fn(Duration, Vec<ClientId>),
    /// Sends a stale `Resume` of client `c`'s live session to server `s`
    /// ([`Action::StaleResume`]).
    pub stale_resume: &'a dyn Fn(usize, usize),
    /// The store host's queue when its speed changed.
    pub on_backlog: &'a dyn Fn(Backlog),
}

/// An event a fault can wait for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trigger {
    /// Client `client` received number `index`.
    Received { client: usize, index: u32 },
    /// A server sent number `index` to client `client`.
    Sent { client: usize, index: u32 },
}

/// One-way trips before a reconnecting client has its `Attached`: the
/// TCP handshake (two), the request, the answer. A network whose largest
/// latency puts them past the client's attach timeout cuts clients off as
/// surely as a partition: every attempt may time out (seed 23678 of the
/// swarm: a 2.9 s spike). It counts as isolation, as a store too slow for
/// the servers' timeout does.
const ATTACH_LEGS: u32 = 4;

/// Which links and servers are down, to measure client isolation.
struct Links {
    cut: Vec<Vec<bool>>,
    /// One direction cut: no working stream either.
    oneway: Vec<Vec<bool>>,
    held: Vec<Vec<bool>>,
    down: Vec<bool>,
    /// Per server: partitioned from the store host.
    store_cut: Vec<bool>,
    /// Per server: its link to the store host held (paused).
    store_held: Vec<bool>,
    /// Per server: its link to the store host held (stalled).
    store_stalled: Vec<bool>,
    /// The store host is down.
    store_down: bool,
    /// The store host's links are so slow that operations time out (a
    /// round trip at the largest latency is past the servers' timeout).
    store_slow: bool,
    /// The client-server links are so slow that a client cannot attach:
    /// see [`ATTACH_LEGS`].
    slow: bool,
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
            store_cut: vec![false; servers],
            store_held: vec![false; servers],
            store_stalled: vec![false; servers],
            store_down: false,
            store_slow: false,
            slow: false,
            since: vec![None; clients],
            periods: vec![Vec::new(); clients],
        }
    }

    fn update(&mut self, scenario: &Scenario, now: Duration) {
        for (c, plan) in scenario.clients.iter().enumerate() {
            // A server that cannot reach the store cannot serve either.
            let isolated = plan.endpoints.iter().all(|&s| {
                self.cut[c][s]
                    || self.oneway[c][s]
                    || self.held[c][s]
                    || self.down[s]
                    || self.store_cut[s]
                    || self.store_held[s]
                    || self.store_stalled[s]
                    || self.store_down
                    || self.store_slow
                    || self.slow
            });
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

/// Applies one fault. `latency` is the network's current (min, max);
/// `store_latency` the largest on the servers' links to the store host.
fn apply(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    links: &mut Links,
    env: &Env<'_>,
    latency: &mut (Duration, Duration),
    store_latency: &mut Duration,
    action: &Action,
) {
    let client = Scenario::client_host;
    let server = Scenario::server_host;
    let host_store = scenario.store == StoreKind::Host;
    let store = storenet::HOST;
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
            if host_store {
                sim.set_link_latency(server(*s), store, latency.0);
            }
            sim.crash(server(*s));
            for c in 0..scenario.clients.len() {
                sim.set_link_max_message_latency(client(c), server(*s), latency.1);
            }
            if host_store {
                sim.set_link_max_message_latency(server(*s), store, *store_latency);
            }
            links.down[*s] = true;
            // Its tasks are gone, and with them a per-boot store.
            if let Some((crashed, _)) = lock(env.registry)[*s].take() {
                if scenario.store == StoreKind::PerBoot {
                    let live: Vec<ClientId> = env
                        .ids
                        .iter()
                        .copied()
                        .filter(|id| {
                            matches!(crashed.lookup(*id), station_core::server::Lookup::Live(_))
                        })
                        .collect();
                    (env.on_loss)(sim.elapsed(), live);
                }
            }
        }
        Action::Restart(s) => {
            sim.bounce(server(*s));
            links.down[*s] = false;
        }
        Action::FailRate(p) => sim.set_fail_rate(*p),
        Action::Pause(s) => {
            for c in 0..scenario.clients.len() {
                sim.hold(client(c), server(*s));
                links.held[c][*s] = true;
            }
            if host_store {
                sim.hold(server(*s), store);
            }
            links.store_held[*s] = true;
        }
        Action::Unpause(s) => {
            for c in 0..scenario.clients.len() {
                sim.release(client(c), server(*s));
                links.held[c][*s] = false;
            }
            if host_store {
                sim.release(server(*s), store);
            }
            links.store_held[*s] = false;
        }
        Action::CutStore(s) => {
            if host_store {
                sim.partition(server(*s), store);
                links.store_cut[*s] = true;
            }
        }
        Action::HealStore(s) => {
            if host_store {
                sim.repair(server(*s), store);
                links.store_cut[*s] = false;
            }
        }
        Action::HoldStore(s) => {
            if host_store {
                sim.hold(server(*s), store);
                links.store_stalled[*s] = true;
            }
        }
        Action::ReleaseStore(s) => {
            if host_store {
                sim.release(server(*s), store);
                links.store_stalled[*s] = false;
            }
        }
        Action::StoreLatency(d) => {
            if host_store {
                *store_latency = *d;
                links.store_slow = *d * 2 >= scenario.store_net.op_timeout;
                for s in 0..scenario.servers {
                    sim.set_link_max_message_latency(server(s), store, *d);
                }
            }
        }
        // Not isolation: the store still answers, and how fast depends on
        // how much the servers ask of it, so a slowdown is the system's
        // to ride out (the scenario promises what it must survive).
        Action::StoreService(d) => {
            if let (true, Some(host)) = (host_store, env.store_host) {
                (env.on_backlog)(host.set_service(*d, sim.elapsed()));
            }
        }
        Action::CrashStore => {
            if host_store {
                // As for a server crash: the close messages' order must
                // not matter.
                for s in 0..scenario.servers {
                    sim.set_link_latency(server(s), store, latency.0);
                }
                sim.crash(store);
                for s in 0..scenario.servers {
                    sim.set_link_max_message_latency(server(s), store, *store_latency);
                }
                links.store_down = true;
            }
        }
        Action::RestartStore { lose_data } => {
            if let (true, Some(host)) = (host_store, env.store_host) {
                if *lose_data {
                    (env.on_loss)(sim.elapsed(), host.lose_data(env.ids));
                }
                if !sim.is_host_running(store) {
                    sim.bounce(store);
                }
                links.store_down = false;
            }
        }
        Action::FailoverStore { lag } => {
            if let (true, Some(host)) = (host_store, env.store_host) {
                let rolled_back = host.fail_over(env.ids, sim.elapsed(), *lag);
                if !rolled_back.is_empty() {
                    (env.on_loss)(sim.elapsed(), rolled_back);
                }
            }
        }
        Action::StaleResume {
            client: c,
            server: s,
        } => (env.stale_resume)(*c, *s),
        Action::MaxLatency(d) => {
            latency.1 = *d;
            links.slow = *d * ATTACH_LEGS >= ClientConfig::default().attach_timeout;
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

/// Longest a random link failure lasts. turmoil repairs a randomly failed
/// link only when a message crosses it (`repair_rate` per message), so a
/// client backing off between attempts could find its link down for half a
/// minute (loss seed 1928: 14 refused connects in 28 s, and the session
/// expired): not the brief outage a random failure stands for. Every this
/// often, links that no scheduled fault holds down are repaired.
pub(crate) const RANDOM_OUTAGE_MAX: Duration = Duration::from_secs(1);

/// The fault schedule's progress.
pub(crate) struct FaultState {
    links: Links,
    /// The network's current (min, max) latency.
    latency: (Duration, Duration),
    /// Largest latency of the servers' links to the store host.
    store_latency: Duration,
    /// When each fault was applied.
    applied: Vec<Option<Duration>>,
    /// When random link failures are next repaired.
    next_heal: Duration,
}

impl FaultState {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        let mut links = Links::new(scenario.clients.len(), scenario.servers);
        // Networks too slow from the start, as the latency faults judge them.
        links.slow =
            scenario.net.max_latency * ATTACH_LEGS >= ClientConfig::default().attach_timeout;
        links.store_slow = scenario.store == StoreKind::Host
            && scenario.store_net.latency * 2 >= scenario.store_net.op_timeout;
        links.update(scenario, Duration::ZERO);
        FaultState {
            links,
            latency: (scenario.net.min_latency, scenario.net.max_latency),
            store_latency: scenario.store_net.latency,
            applied: vec![None; scenario.faults.len()],
            next_heal: RANDOM_OUTAGE_MAX,
        }
    }

    /// Ends random link failures that have lasted long enough (see
    /// [`RANDOM_OUTAGE_MAX`]): repairs every client-server link that no
    /// scheduled cut, one-way cut, hold or crash concerns. Only for runs
    /// with random failures, so other runs replay as before.
    pub(crate) fn heal_random_failures(&mut self, sim: &mut turmoil::Sim<'_>, scenario: &Scenario) {
        let now = sim.elapsed();
        if now < self.next_heal || !self.random_failures(scenario) {
            return;
        }
        self.next_heal = now + RANDOM_OUTAGE_MAX;
        let links = &self.links;
        for c in 0..scenario.clients.len() {
            for s in 0..scenario.servers {
                if !(links.cut[c][s] || links.oneway[c][s] || links.held[c][s] || links.down[s]) {
                    sim.repair(Scenario::client_host(c), Scenario::server_host(s));
                }
            }
        }
    }

    /// Whether links may fail at random in this run.
    fn random_failures(&self, scenario: &Scenario) -> bool {
        scenario.net.fail_rate > 0.0
            || scenario
                .faults
                .iter()
                .any(|f| matches!(f.action, Action::FailRate(p) if p > 0.0))
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
    /// trigger's event first happened; `applied` hears of each fault
    /// applied (when, its index in the schedule, what it did).
    pub(crate) fn apply_due(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        scenario: &Scenario,
        env: &Env<'_>,
        happened: impl Fn(Trigger) -> Option<Duration>,
        applied: impl Fn(Duration, usize, &Action),
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
                        env,
                        &mut self.latency,
                        &mut self.store_latency,
                        &fault.action,
                    );
                    self.applied[i] = Some(now);
                    self.links.update(scenario, now);
                    applied(now, i, &fault.action);
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }
}
