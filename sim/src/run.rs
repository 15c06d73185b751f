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
use station_net::store::MemoryStore;
use station_net::{ServerConfig, Station, StreamEvent};

use crate::base::lock;
use crate::clock::SimClock;
use crate::counted::Recorder;
use crate::faults::{Env, FaultState, Trigger};
use crate::net;
use crate::report::{
    fnv1a, Backlog, ClientReport, ClientStream, DataLoss, Progress, Report, ServerEvent,
};
use crate::rng::{derive, SimRng};
use crate::scenario::{Action, Bug, Scenario, StoreKind};
use crate::server_store::{AnswerLog, Backend, Registry, ServerStore};
use crate::stale::{self, Stale};
use crate::store::{self, SimStore, WriteLog};
use crate::storenet::{self, NetStore, StoreHost};
use crate::trace::{ClientName, Host, Observation, TraceEvent};

/// Sub-seed purposes (see [`derive()`]).
const SEED_TURMOIL: u64 = 1;
const SEED_CLIENTS: u64 = 2;
const SEED_SERVER: u64 = 3;
const SEED_STORE: u64 = 4;

/// How often the drain phase looks at the stores.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// State shared by the harness and every host of one run.
struct Shared {
    clock: Arc<SimClock>,
    ids: HashMap<ClientId, usize>,
    /// Server index by host name (the clients' endpoints).
    servers: HashMap<String, usize>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    trace: Vec<Observation>,
    server_events: Vec<ServerEvent>,
    /// First arrival of (client, index) at the client.
    received: BTreeMap<(usize, u32), Duration>,
    /// First send of (client, index) by any server.
    sent: BTreeMap<(usize, u32), Duration>,
    progress: Vec<Vec<Progress>>,
    outcomes: Vec<Option<(Outcome, Duration)>>,
    data_losses: Vec<DataLoss>,
    /// When each client started.
    started: Vec<Option<Duration>>,
    /// Each client's streams as it saw them.
    streams: Vec<Vec<ClientStream>>,
}

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

    fn log(&self, at: Duration, host: Host, event: TraceEvent) {
        self.state().trace.push(Observation { at, host, event });
    }

    fn client_name(&self, id: &ClientId) -> ClientName {
        self.ids
            .get(id)
            .map_or(ClientName::Unknown(*id), |&i| ClientName::Known(i))
    }

    /// The server a client's endpoint names (the harness named them all).
    fn server(&self, endpoint: &str) -> usize {
        self.servers[endpoint]
    }

    fn on_server_event(&self, server: usize, boot: u64, event: &StreamEvent) {
        let at = self.now();
        let seen = match event {
            // The incarnation stays out of the trace, so trace hashes match
            // those recorded before it was observed.
            StreamEvent::Attached {
                client_id,
                generation,
                next_index,
                ..
            } => TraceEvent::StreamAttached {
                client: self.client_name(client_id),
                generation: *generation,
                next_index: *next_index,
            },
            StreamEvent::Sent {
                client_id,
                generation,
                index,
                value,
            } => {
                if let Some(c) = self.ids.get(client_id) {
                    self.state().sent.entry((*c, *index)).or_insert(at);
                }
                TraceEvent::StreamSent {
                    client: self.client_name(client_id),
                    generation: *generation,
                    index: *index,
                    value: *value,
                }
            }
            StreamEvent::Completed { client_id } => TraceEvent::StreamCompleted {
                client: self.client_name(client_id),
            },
        };
        let mut state = self.state();
        state.trace.push(Observation {
            at,
            host: Host::Server { server, boot },
            event: seen,
        });
        state.server_events.push(ServerEvent {
            at,
            server,
            boot,
            event: event.clone(),
        });
    }

    fn on_client_event(&self, c: usize, event: Event<'_>, client: &Client) {
        let at = self.now();
        let host = Host::Client(c);
        let seen = match event {
            Event::Connecting { endpoint, request } => {
                self.state().streams[c].push(ClientStream {
                    at,
                    resume: matches!(request, Request::Resume { .. }),
                    attached: false,
                    end: None,
                    ended_at: None,
                });
                let resume = match request {
                    Request::Open { .. } => None,
                    Request::Resume { next_index, .. } => Some(*next_index),
                };
                TraceEvent::Connect {
                    server: self.server(endpoint),
                    resume,
                }
            }
            Event::Attached {
                endpoint,
                next_index,
                ..
            } => {
                if let Some(stream) = self.state().streams[c].last_mut() {
                    stream.attached = true;
                }
                let attached = TraceEvent::Attached {
                    server: self.server(endpoint),
                    next_index,
                };
                if client.is_finished() && client.received() == client.count() {
                    // It held every number: attaching sent the final ack.
                    self.log(at, host, attached);
                    TraceEvent::Ack {
                        next_index: client.acked(),
                    }
                } else {
                    attached
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
                let number = TraceEvent::Number { index };
                state.trace.push(Observation {
                    at,
                    host,
                    event: number,
                });
                if new && client.acked() == snap.next_index {
                    // This number made the client emit a (cumulative) ack.
                    let ack = TraceEvent::Ack {
                        next_index: snap.next_index,
                    };
                    state.trace.push(Observation {
                        at,
                        host,
                        event: ack,
                    });
                }
                return;
            }
            Event::Failed { endpoint, end } => {
                if let Some(stream) = self.state().streams[c].last_mut() {
                    stream.end = Some(end.clone());
                    stream.ended_at = Some(at);
                }
                TraceEvent::Failed {
                    server: self.server(endpoint),
                    end: end.clone(),
                }
            }
            Event::Paused { endpoint } => TraceEvent::Paused {
                server: self.server(endpoint),
            },
            Event::HeldBack { endpoint } => TraceEvent::HeldBack {
                server: self.server(endpoint),
            },
            Event::Silent { endpoint } => {
                if let Some(stream) = self.state().streams[c].last_mut() {
                    stream.ended_at = Some(at);
                }
                TraceEvent::Silent {
                    server: self.server(endpoint),
                }
            }
        };
        self.log(at, host, seen);
    }
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
    // Every host runs on this thread: the servers' counts all land here.
    let recorder = Recorder::new(scenario.bug);
    let _counting = metrics::set_default_local_recorder(&recorder);
    let answers: AnswerLog = Arc::default();
    let in_flight: Arc<AtomicU64> = Arc::default();
    let clock = SimClock::new();
    let n_clients = scenario.clients.len();
    let n_servers = scenario.servers;

    // Client identities and PRNG seeds, from the run's seed.
    let mut rng = SimRng::new(derive(seed, &[SEED_CLIENTS]));
    let mut clients: Vec<(ClientId, u64)> = (0..n_clients)
        .map(|_| (ClientId::from_random_bytes(rng.bytes16()), rng.next_u64()))
        .collect();
    for (c, plan) in scenario.clients.iter().enumerate() {
        if let Some(k) = plan.reuse_id_of {
            clients[c].0 = clients[k].0;
        }
    }
    let ids: Vec<ClientId> = clients.iter().map(|(id, _)| *id).collect();
    let shared = Arc::new(Shared {
        clock: clock.clone(),
        // A reused id names the client that used it first.
        ids: clients
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (id, _))| (*id, i))
            .collect(),
        servers: (0..n_servers)
            .map(|s| (Scenario::server_host(s), s))
            .collect(),
        state: Mutex::new(State {
            progress: vec![Vec::new(); n_clients],
            outcomes: vec![None; n_clients],
            started: vec![None; n_clients],
            streams: vec![Vec::new(); n_clients],
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

    if let Some(swarm) = &scenario.swarm {
        let draw = swarm.clone();
        shared.log(Duration::ZERO, Host::Swarm, TraceEvent::Swarm { draw });
    }
    let writes: WriteLog = Arc::default();
    let shared_store = SimStore::new(&clock, scenario.bug, &writes);
    let store_host = (scenario.store == StoreKind::Host).then(|| {
        let logger = shared.clone();
        let host = StoreHost::new(
            &clock,
            scenario.bug,
            &scenario.store_net,
            derive(seed, &[SEED_STORE]),
            &writes,
            move |event| logger.log(logger.now(), Host::Store, event),
        );
        let boots = AtomicU64::new(0);
        let (shared, for_host) = (shared.clone(), host.clone());
        sim.host(storenet::HOST, move || {
            let boot = boots.fetch_add(1, Ordering::Relaxed);
            shared.log(shared.now(), Host::StoreBoot(boot), TraceEvent::Boot);
            let host = for_host.clone();
            async move {
                storenet::serve(host).await?;
                Ok(())
            }
        });
        host
    });
    let stale = scenario
        .faults
        .iter()
        .any(|f| matches!(f.action, Action::StaleResume { .. }))
        .then(|| {
            let (tx, inbox) = stale::channel();
            sim.host(stale::HOST, move || {
                let inbox = inbox.clone();
                async move {
                    stale::serve(inbox).await;
                    Ok(())
                }
            });
            tx
        });
    let registry: Registry = Arc::new(Mutex::new(vec![None; n_servers]));
    let boots: Arc<Vec<AtomicU64>> = Arc::new((0..n_servers).map(|_| AtomicU64::new(0)).collect());
    for s in 0..n_servers {
        let (shared, registry, boots) = (shared.clone(), registry.clone(), boots.clone());
        let (clock, shared_store, writes) = (clock.clone(), shared_store.clone(), writes.clone());
        let (answers, in_flight) = (answers.clone(), in_flight.clone());
        let (session, store_kind, bug) = (scenario.session.clone(), scenario.store, scenario.bug);
        let store_net = scenario.store_net;
        sim.host(Scenario::server_host(s), move || {
            let boot = boots[s].fetch_add(1, Ordering::Relaxed);
            let (backend, connection) = match store_kind {
                StoreKind::Shared => (Backend::Sim(shared_store.clone()), None),
                StoreKind::PerBoot => (Backend::Sim(SimStore::new(&clock, bug, &writes)), None),
                StoreKind::Host => {
                    let (store, connection) = NetStore::new(&store_net);
                    (Backend::Net(store), Some(connection))
                }
            };
            let store = ServerStore::new(backend, s, &clock, &answers, &in_flight);
            let mut session = session.clone();
            if bug == Bug::GivesUpEarly {
                // Clients hear a third of the TTL (the store keeps sessions
                // three times what the servers ask: the real TTL).
                session.ttl /= 3;
            }
            let mut cfg = ServerConfig {
                session,
                rng_seed: Some(derive(seed, &[SEED_SERVER, s as u64, boot])),
                ..ServerConfig::default()
            };
            if bug == Bug::RetriesWithoutBackoff {
                // No pushback: come back at once.
                cfg.retry_after = Duration::ZERO;
            }
            let observer = {
                let shared = shared.clone();
                Arc::new(move |e: &StreamEvent| shared.on_server_event(s, boot, e))
            };
            let station = Station::with_observer(cfg, store.clone(), Some(observer));
            lock(&registry)[s] = Some((store, station.clone()));
            let host = Host::Server { server: s, boot };
            shared.log(shared.now(), host, TraceEvent::Boot);
            async move {
                if let Some(connection) = connection {
                    tokio::spawn(connection.run());
                }
                let incoming = net::incoming(bug == Bug::ResumeIndexOff).await?;
                station_net::serve(station, incoming, std::future::pending()).await?;
                Ok(())
            }
        });
    }
    if store_host.is_some() {
        for s in 0..n_servers {
            sim.set_link_max_message_latency(
                Scenario::server_host(s),
                storenet::HOST,
                scenario.store_net.latency,
            );
        }
    }
    for (c, plan) in scenario.clients.iter().enumerate() {
        let (id, client_seed) = clients[c];
        let shared = shared.clone();
        let plan = plan.clone();
        let bug = scenario.bug;
        sim.client(Scenario::client_host(c), async move {
            tokio::time::sleep(plan.start).await;
            if let Some(k) = plan.reuse_id_of {
                // An id is reused once its first user finished or gave up.
                while shared.state().outcomes[k].is_none() {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
            }
            shared.state().started[c] = Some(shared.now());
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
            let client = Client::new(now, client_config(bug), id, plan.count, client_seed)?;
            let start = TraceEvent::Start {
                id,
                count: plan.count,
            };
            shared.log(shared.now(), Host::Client(c), start);
            let outcome = driver::run(&endpoints, &DriverOptions::default(), client, |e, cl| {
                shared.on_client_event(c, e, cl)
            })
            .await;
            let at = shared.now();
            let finished = TraceEvent::Finished {
                verdict: outcome.verdict.clone(),
                received: outcome.received,
                sum: outcome.sum,
                crc: outcome.client_checksum,
                server_crc: outcome.server_checksum,
            };
            shared.log(at, Host::Client(c), finished);
            shared.state().outcomes[c] = Some((outcome, at));
            Ok(())
        });
    }

    // Step until the clients are done, applying faults as they fall due.
    let mut faults = FaultState::new(scenario);
    let mut steps = 0u64;
    let mut error = None;
    let mut clients_done_at = None;
    let on_loss = |at: Duration, live: Vec<ClientId>| {
        let names = live.iter().map(|id| shared.client_name(id)).collect();
        shared.log(at, Host::Store, TraceEvent::DataLost { live: names });
        shared.state().data_losses.push(DataLoss { at, live });
    };
    let stale_resume = |c: usize, server: usize| {
        let at = shared.now();
        let id = ids[c];
        let live = stores(scenario, &shared_store, store_host.as_ref(), &registry)
            .iter()
            .find_map(|mem| match store::lookup(mem, id) {
                Lookup::Live(record) => Some(record),
                _ => None,
            });
        let (Some(record), Some(tx)) = (live, stale.as_ref()) else {
            shared.log(at, Host::Stale, TraceEvent::StaleNoSession { client: c });
            return;
        };
        let resume = TraceEvent::StaleResume {
            client: c,
            server,
            next_index: record.acked,
        };
        shared.log(at, Host::Stale, resume);
        let _ = tx.send(Stale {
            server,
            client_id: id,
            token: record.token,
            next_index: record.acked,
        });
    };
    let on_backlog = |b: Backlog| {
        let queue = TraceEvent::Queue {
            waiting: b.waiting,
            drain: b.drain,
        };
        shared.log(b.at, Host::Store, queue);
    };
    let env = Env {
        registry: &registry,
        store_host: store_host.as_ref(),
        ids: &ids,
        on_loss: &on_loss,
        stale_resume: &stale_resume,
        on_backlog: &on_backlog,
    };
    let mut step = |sim: &mut turmoil::Sim<'_>, faults: &mut FaultState| -> Result<bool, String> {
        faults.apply_due(
            sim,
            scenario,
            &env,
            |time| shared.state().time_of(time),
            |now, index, action| {
                let action = action.clone();
                shared.log(now, Host::Fault, TraceEvent::Fault { index, action });
            },
        );
        faults.heal_random_failures(sim, scenario);
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
                stores(scenario, &shared_store, store_host.as_ref(), registry)
                    .iter()
                    .fold(Lookup::Missing, |acc, mem| {
                        match (acc, store::lookup(mem, *id)) {
                            (Lookup::Live(r), _) | (_, Lookup::Live(r)) => Lookup::Live(r),
                            (Lookup::Expired, _) | (_, Lookup::Expired) => Lookup::Expired,
                            _ => Lookup::Missing,
                        }
                    })
            })
            .collect()
    };
    let store_at_done = lookups(&registry);

    // Drain: keep the servers running until no session is live and no
    // stream attached, or the TTL (plus slack) has passed since the last
    // client finished. What is left then is a leak.
    let measure = |sim: &mut turmoil::Sim<'_>| {
        let live = stores(scenario, &shared_store, store_host.as_ref(), &registry)
            .iter()
            .map(MemoryStore::live)
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
    // A session whose stream could not release it (its server crashed, or
    // the store failed it) lives out its last lease write: a lease past
    // the TTL at most.
    let session = &scenario.session;
    let drain_until = sim.elapsed() + session.ttl + session.lease + session.interval * 2;
    let mut next_poll = sim.elapsed();
    while error.is_none() && sim.elapsed() < drain_until {
        if sim.elapsed() >= next_poll {
            next_poll = sim.elapsed() + DRAIN_POLL;
            // Answers still on their way count too: the servers' counts
            // are judged against them.
            if measure(&mut sim) == (0, 0) && in_flight.load(Ordering::Relaxed) == 0 {
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
    let store_writes = std::mem::take(&mut *lock(&writes));

    let mut state = std::mem::take(&mut *shared.state());
    let client_reports = scenario
        .clients
        .iter()
        .enumerate()
        .map(|(c, plan)| {
            let done = state.outcomes[c].take();
            let end = done.as_ref().map_or(ended_at, |(_, at)| *at);
            let started_at = state.started[c];
            ClientReport {
                id: clients[c].0,
                count: plan.count,
                expect: plan.expect,
                finale: plan.finale,
                finished_at: done.as_ref().map(|(_, at)| *at),
                outcome: done.map(|(o, _)| o),
                progress: std::mem::take(&mut state.progress[c]),
                isolation: faults.isolation(c, started_at.unwrap_or(plan.start), end),
                started_at,
                streams: std::mem::take(&mut state.streams[c]),
            }
        })
        .collect();
    let trace_hash = fnv1a(&state.trace);
    let answers = std::mem::take(&mut *lock(&answers));
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
        store_writes,
        data_losses: state.data_losses,
        answers,
        counted: recorder.counted(),
        store_backlogs: store_host
            .as_ref()
            .map(|h| h.backlogs())
            .unwrap_or_default(),
    }
}

/// The clients' settings: the real ones, unless a planted bug changes
/// them.
fn client_config(bug: Bug) -> ClientConfig {
    match bug {
        // Every retry at once: the backoff, and so the throttled wait (the
        // largest backoff), 1 ms.
        Bug::RetriesWithoutBackoff => ClientConfig {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            ..ClientConfig::default()
        },
        _ => ClientConfig::default(),
    }
}

/// The stores holding sessions now.
fn stores(
    scenario: &Scenario,
    shared: &SimStore,
    host: Option<&Arc<StoreHost>>,
    registry: &Registry,
) -> Vec<MemoryStore> {
    match scenario.store {
        StoreKind::Shared => vec![shared.memory().clone()],
        StoreKind::PerBoot => lock(registry)
            .iter()
            .flatten()
            .filter_map(|(store, _)| match store.backend() {
                Backend::Sim(s) => Some(s.memory().clone()),
                Backend::Net(_) => None,
            })
            .collect(),
        StoreKind::Host => host.map(|h| h.data()).into_iter().collect(),
    }
}
