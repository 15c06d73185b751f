//! The harness: [`run`] a [`Scenario`] under turmoil with a seed and
//! collect a [`Report`].
//!
//! Server hosts run the real `station_net::serve` over
//! [`net::incoming`]; client hosts run the real
//! `station_net::client::run` over [`net::channel_factory`]. The harness
//! steps the simulation itself (rather than `Sim::run`) so it can apply
//! faults at their due times, some of which depend on what has happened
//! ("right after client 2 received number 7"), and so it can keep the
//! servers running after the clients are done to watch sessions expire.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime};

use station_core::client::{Client, Config as ClientConfig, Outcome, Request};
use station_core::server::Lookup;
use station_core::ClientId;
use station_net::client::{self as driver, DriverOptions, Endpoints, Event};
use station_net::{ServerConfig, Station, StreamEvent};

use crate::clock::SimClock;
use crate::faults::{FaultState, Trigger};
use crate::net;
use crate::report::{fnv1a, ClientReport, Progress, Report, ServerEvent};
use crate::rng::{derive, SimRng};
use crate::scenario::{Scenario, StoreKind};
use crate::store::SimStore;

/// Sub-seed purposes (see [`derive()`]).
const SEED_TURMOIL: u64 = 1;
const SEED_CLIENTS: u64 = 2;
const SEED_SERVER: u64 = 3;

/// How often the drain phase looks at the stores.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// State shared by the harness and every host of one run.
struct Shared {
    clock: Arc<SimClock>,
    ids: HashMap<ClientId, usize>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    trace: Vec<String>,
    server_events: Vec<ServerEvent>,
    /// First arrival of (client, index) at the client.
    received: BTreeMap<(usize, u32), Duration>,
    /// First send of (client, index) by any server.
    sent: BTreeMap<(usize, u32), Duration>,
    progress: Vec<Vec<Progress>>,
    outcomes: Vec<Option<(Outcome, Duration)>>,
}

/// The servers' current stations and stores, updated at every boot.
pub(crate) type Registry = Arc<Mutex<Vec<Option<(SimStore, Station<SimStore>)>>>>;

impl State {
    /// When a fault trigger's event first happened, if it has.
    fn time_of(&self, event: Trigger) -> Option<Duration> {
        match event {
            Trigger::Received { client, index } => self.received.get(&(client, index)).copied(),
            Trigger::Sent { client, index } => self.sent.get(&(client, index)).copied(),
        }
    }
}

impl Shared {
    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, at: Duration, line: String) {
        self.state().trace.push(format!("{} {line}", stamp(at)));
    }

    fn client_name(&self, id: &ClientId) -> String {
        self.ids
            .get(id)
            .map_or_else(|| format!("c?{id}"), |i| format!("c{i}"))
    }

    fn on_server_event(&self, server: usize, boot: u64, event: &StreamEvent) {
        let at = self.now();
        let who = format!("s{server}.{boot}");
        let line = match event {
            StreamEvent::Attached {
                client_id,
                generation,
                next_index,
            } => format!(
                "{who} attached {} g{generation} @{next_index}",
                self.client_name(client_id)
            ),
            StreamEvent::Sent {
                client_id,
                generation,
                index,
                value,
            } => {
                if let Some(c) = self.ids.get(client_id) {
                    self.state().sent.entry((*c, *index)).or_insert(at);
                }
                format!(
                    "{who} sent {} g{generation} #{index}={value:08x}",
                    self.client_name(client_id)
                )
            }
            StreamEvent::Completed { client_id } => {
                format!("{who} completed {}", self.client_name(client_id))
            }
        };
        let mut state = self.state();
        state.trace.push(format!("{} {line}", stamp(at)));
        state.server_events.push(ServerEvent {
            at,
            server,
            boot,
            event: event.clone(),
        });
    }

    fn on_client_event(&self, c: usize, event: Event<'_>, client: &Client) {
        let at = self.now();
        let line = match event {
            Event::Connecting { endpoint, request } => match request {
                Request::Open { .. } => format!("c{c} connect {endpoint} open"),
                Request::Resume { next_index, .. } => {
                    format!("c{c} connect {endpoint} resume @{next_index}")
                }
            },
            Event::Attached {
                endpoint,
                next_index,
                ..
            } => {
                let line = format!("c{c} attached {endpoint} @{next_index}");
                if client.is_finished() && client.received() == client.count() {
                    // It held every number: attaching sent the final ack.
                    self.log(at, line);
                    format!("c{c} ack @{}", client.acked())
                } else {
                    line
                }
            }
            Event::Number { index } => {
                let snap = client.snapshot();
                let mut state = self.state();
                let progress = &mut state.progress[c];
                let new = snap.next_index == index + 1
                    && progress
                        .last()
                        .is_none_or(|p| p.next_index < snap.next_index);
                if new {
                    progress.push(Progress {
                        at,
                        next_index: snap.next_index,
                        sum: snap.sum,
                        crc: snap.crc,
                    });
                    state.received.entry((c, index)).or_insert(at);
                }
                state
                    .trace
                    .push(format!("{} c{c} number #{index}", stamp(at)));
                if new && client.acked() == snap.next_index {
                    // This number made the client emit a (cumulative) ack.
                    state
                        .trace
                        .push(format!("{} c{c} ack @{}", stamp(at), snap.next_index));
                }
                return;
            }
            Event::Failed { endpoint, end } => format!("c{c} failed {endpoint}: {end:?}"),
            Event::Silent { endpoint } => format!("c{c} silent {endpoint}"),
        };
        self.log(at, line);
    }
}

/// Simulated time as `seconds.micros`, for trace lines.
fn stamp(at: Duration) -> String {
    format!("{:>4}.{:06}", at.as_secs(), at.subsec_micros())
}

thread_local! {
    /// Panics on this thread since the run started. Every host of a run
    /// runs on the harness's thread, so a panic in any spawned task (which
    /// tokio would otherwise swallow) is seen here.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            default(info);
        }));
    });
    PANICS.with(|p| p.borrow_mut().clear());
}

/// Panics seen on this thread during the last run.
pub(crate) fn panics() -> Vec<String> {
    PANICS.with(|p| p.borrow().clone())
}

/// Runs `scenario` with `seed` and reports what happened. Never panics on
/// a misbehaving system under test: everything goes into the report.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    watch_panics();
    crate::init_tracing();
    let clock = SimClock::new();
    let n_clients = scenario.clients.len();
    let n_servers = scenario.servers;

    // Client identities and PRNG seeds, from the run's seed.
    let mut rng = SimRng::new(derive(seed, &[SEED_CLIENTS]));
    let clients: Vec<(ClientId, u64)> = (0..n_clients)
        .map(|_| (ClientId::from_random_bytes(rng.bytes16()), rng.next_u64()))
        .collect();
    let shared = Arc::new(Shared {
        clock: clock.clone(),
        ids: clients
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect(),
        state: Mutex::new(State {
            progress: vec![Vec::new(); n_clients],
            outcomes: vec![None; n_clients],
            ..State::default()
        }),
    });

    let mut sim = turmoil::Builder::new()
        .rng_seed(derive(seed, &[SEED_TURMOIL]))
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(scenario.tick)
        .simulation_duration(scenario.limit)
        .min_message_latency(scenario.net.min_latency)
        .max_message_latency(scenario.net.max_latency)
        .fail_rate(scenario.net.fail_rate)
        .repair_rate(scenario.net.repair_rate)
        .build();

    let shared_store = SimStore::new(&clock, scenario.bug);
    let registry: Registry = Arc::new(Mutex::new(vec![None; n_servers]));
    let boots: Arc<Vec<AtomicU64>> = Arc::new((0..n_servers).map(|_| AtomicU64::new(0)).collect());
    for s in 0..n_servers {
        let (shared, registry, boots) = (shared.clone(), registry.clone(), boots.clone());
        let (clock, shared_store) = (clock.clone(), shared_store.clone());
        let (session, store_kind, bug) = (scenario.session.clone(), scenario.store, scenario.bug);
        sim.host(Scenario::server_host(s), move || {
            let boot = boots[s].fetch_add(1, Ordering::Relaxed);
            let store = match store_kind {
                StoreKind::Shared => shared_store.clone(),
                StoreKind::PerBoot => SimStore::new(&clock, bug),
            };
            let cfg = ServerConfig {
                session: session.clone(),
                rng_seed: Some(derive(seed, &[SEED_SERVER, s as u64, boot])),
                ..ServerConfig::default()
            };
            let observer = {
                let shared = shared.clone();
                Arc::new(move |e: &StreamEvent| shared.on_server_event(s, boot, e))
            };
            let station = Station::with_observer(cfg, store.clone(), Some(observer));
            lock(&registry)[s] = Some((store, station.clone()));
            shared.log(shared.now(), format!("s{s}.{boot} boot"));
            async move {
                let incoming = net::incoming().await?;
                station_net::serve(station, incoming, std::future::pending()).await?;
                Ok(())
            }
        });
    }
    for (c, plan) in scenario.clients.iter().enumerate() {
        let (id, client_seed) = clients[c];
        let shared = shared.clone();
        let plan = plan.clone();
        sim.client(Scenario::client_host(c), async move {
            tokio::time::sleep(plan.start).await;
            let targets = plan
                .endpoints
                .iter()
                .map(|&s| {
                    let host = Scenario::server_host(s);
                    let factory = net::channel_factory(&host);
                    (host, factory)
                })
                .collect();
            let endpoints = Endpoints::new(targets)?;
            let now = tokio::time::Instant::now().into_std();
            let client = Client::new(now, ClientConfig::default(), id, plan.count, client_seed)?;
            shared.log(
                shared.now(),
                format!("c{c} start {id} count {}", plan.count),
            );
            let outcome = driver::run(&endpoints, &DriverOptions::default(), client, |e, cl| {
                shared.on_client_event(c, e, cl)
            })
            .await;
            let at = shared.now();
            shared.log(
                at,
                format!(
                    "c{c} finished {:?} received {} sum {} crc {:08x} server crc {:08x?}",
                    outcome.verdict,
                    outcome.received,
                    outcome.sum,
                    outcome.client_checksum,
                    outcome.server_checksum
                ),
            );
            shared.state().outcomes[c] = Some((outcome, at));
            Ok(())
        });
    }

    // Step until the clients are done, applying faults as they fall due.
    let mut faults = FaultState::new(scenario);
    let mut steps = 0u64;
    let mut error = None;
    let mut clients_done_at = None;
    let mut step = |sim: &mut turmoil::Sim<'_>, faults: &mut FaultState| -> Result<bool, String> {
        faults.apply_due(
            sim,
            scenario,
            &registry,
            |time| shared.state().time_of(time),
            |now, line| shared.log(now, line),
        );
        let done = sim.step().map_err(|e| e.to_string())?;
        steps += 1;
        clock.set_outside(sim.elapsed());
        Ok(done)
    };
    loop {
        match step(&mut sim, &mut faults) {
            Ok(true) => {
                clients_done_at = Some(sim.elapsed());
                break;
            }
            Ok(false) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }

    let lookups = |registry: &Registry| -> Vec<Lookup> {
        clients
            .iter()
            .map(|(id, _)| {
                stores(scenario, &shared_store, registry).iter().fold(
                    Lookup::Missing,
                    |acc, store| match (acc, store.lookup(*id)) {
                        (Lookup::Live(r), _) | (_, Lookup::Live(r)) => Lookup::Live(r),
                        (Lookup::Expired, _) | (_, Lookup::Expired) => Lookup::Expired,
                        _ => Lookup::Missing,
                    },
                )
            })
            .collect()
    };
    let store_at_done = lookups(&registry);

    // Drain: keep the servers running until no session is live and no
    // stream attached, or the TTL (plus slack) has passed since the last
    // client finished. What is left then is a leak.
    let measure = |sim: &mut turmoil::Sim<'_>| {
        let live = stores(scenario, &shared_store, &registry)
            .iter()
            .map(SimStore::live)
            .sum::<u64>();
        let attached = (0..n_servers)
            .filter(|&s| sim.is_host_running(Scenario::server_host(s)))
            .filter_map(|s| {
                lock(&registry)[s]
                    .as_ref()
                    .map(|(_, station)| station.attached_streams())
            })
            .sum::<u64>();
        (live, attached)
    };
    let drain_until = sim.elapsed() + scenario.session.ttl + scenario.session.interval * 2;
    let mut next_poll = sim.elapsed();
    while error.is_none() && sim.elapsed() < drain_until {
        if sim.elapsed() >= next_poll {
            next_poll = sim.elapsed() + DRAIN_POLL;
            if measure(&mut sim) == (0, 0) {
                break;
            }
        }
        if let Err(e) = step(&mut sim, &mut faults) {
            error = Some(e);
        }
    }
    let (live_at_end, attached_at_end) = measure(&mut sim);
    let store_at_end = lookups(&registry);
    let ended_at = sim.elapsed();
    drop(sim);

    let mut state = std::mem::take(&mut *shared.state());
    let client_reports = scenario
        .clients
        .iter()
        .enumerate()
        .map(|(c, plan)| {
            let done = state.outcomes[c].take();
            let end = done.as_ref().map_or(ended_at, |(_, at)| *at);
            ClientReport {
                id: clients[c].0,
                count: plan.count,
                expect: plan.expect,
                finale: plan.finale,
                finished_at: done.as_ref().map(|(_, at)| *at),
                outcome: done.map(|(o, _)| o),
                progress: std::mem::take(&mut state.progress[c]),
                isolation: faults.isolation(c, plan.start, end),
            }
        })
        .collect();
    let trace_hash = fnv1a(&state.trace);
    Report {
        scenario: scenario.name.clone(),
        seed,
        clients: client_reports,
        server_events: state.server_events,
        clients_done_at,
        store_at_done,
        store_at_end,
        live_at_end,
        attached_at_end,
        ended_at,
        steps,
        error,
        trace: state.trace,
        trace_hash,
    }
}

/// The stores holding sessions now.
fn stores(scenario: &Scenario, shared: &SimStore, registry: &Registry) -> Vec<SimStore> {
    match scenario.store {
        StoreKind::Shared => vec![shared.clone()],
        StoreKind::PerBoot => lock(registry)
            .iter()
            .flatten()
            .map(|(store, _)| store.clone())
            .collect(),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
