//! The runner: [`run`] a [`Scenario`] under turmoil with a seed and
//! collect a [`Report`].
//!
//! Server hosts run the real `station_net::serve` over
//! [`net::incoming`](crate::net::incoming); client hosts run the real
//! `station_net::client::run` over
//! [`net::channel_factory`](crate::net::channel_factory). The runner
//! steps the simulation itself (rather than `Sim::run`) so it can apply
//! faults at their due times, some of which depend on what has happened
//! ("right after client 2 received number 7"), and so it can keep the
//! servers running after the clients are done to watch sessions expire.
//!
//! [`run`] goes through four phases, each a method of the run under way
//! (as a VOPR splits its ticks): build the simulation and its hosts
//! (`hosts`), step it, drain it, collect the report. What the hosts tell
//! the runner as they go becomes the trace in `observe`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime};

use station_core::server::Lookup;
use station_core::ClientId;
use station_net::store::MemoryStore;

use crate::base::lock;
use crate::clock::SimClock;
use crate::counted::Recorder;
use crate::faults::{Env, FaultState};
use crate::report::{fnv1a, Backlog, ClientReport, DataLoss, Report};
use crate::rng::{derive, SimRng};
use crate::scenario::{Action, Scenario, StoreKind};
use crate::server_store::{AnswerLog, Backend, Registry};
use crate::stale::{self, Stale};
use crate::store::{self, SimStore, WriteLog};
use crate::storenet::StoreHost;
use crate::trace::{Host, TraceEvent};

mod hosts;
mod observe;

use observe::Journal;

/// Sub-seed purposes (see [`derive()`]).
const SEED_TURMOIL: u64 = 1;
const SEED_CLIENTS: u64 = 2;
const SEED_SERVER: u64 = 3;
const SEED_STORE: u64 = 4;

/// How often the drain phase looks at the stores.
const DRAIN_POLL: Duration = Duration::from_millis(100);

thread_local! {
    /// Panics on this thread since the run started. Every host of a run
    /// runs on the runner's thread, so a panic in any spawned task (which
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
///
/// In four phases: build the simulation, step it until the clients are
/// done, drain the sessions they left, and collect the report.
pub fn run(scenario: &Scenario, seed: u64) -> Report {
    watch_panics();
    crate::init_tracing();
    // Every host runs on this thread: the servers' counts all land here.
    let recorder = Recorder::new(scenario.bug);
    let _counting = metrics::set_default_local_recorder(&recorder);
    let mut runner = Runner::build(scenario, seed);

    // Step until the clients are done, applying faults as they fall due.
    let (clients_done_at, error) = loop {
        match runner.step() {
            Ok(true) => break (Some(runner.sim.elapsed()), None),
            Ok(false) => {}
            Err(e) => break (None, Some(e)),
        }
    };
    let store_at_done = runner.lookups();
    let error = runner.drain(error);
    runner.collect(
        Done {
            clients_done_at,
            store_at_done,
            error,
        },
        &recorder,
    )
}

/// What the client phase left for the report.
struct Done {
    /// When the last client finished (`None`: a step failed first).
    clients_done_at: Option<Duration>,
    /// What the stores held for each client then.
    store_at_done: Vec<Lookup>,
    /// Why the simulation stopped early, if it did.
    error: Option<String>,
}

/// One run under way: the simulation, and what the runner keeps beside
/// it to apply faults and to read the stores.
struct Runner<'a> {
    scenario: &'a Scenario,
    seed: u64,
    sim: turmoil::Sim<'a>,
    clock: Arc<SimClock>,
    journal: Arc<Journal>,
    /// Each client's id and PRNG seed, in plan order.
    clients: Vec<(ClientId, u64)>,
    /// Each client's id, in plan order.
    ids: Vec<ClientId>,
    writes: WriteLog,
    /// The store of [`StoreKind::Shared`] (made, unused, for the others).
    shared_store: SimStore,
    store_host: Option<Arc<StoreHost>>,
    /// To the host that sends stale resumes, if the schedule has any.
    stale: Option<stale::Sender>,
    registry: Registry,
    answers: AnswerLog,
    /// Store operations under way (see [`ServerStore`](crate::server_store::ServerStore)).
    in_flight: Arc<AtomicU64>,
    faults: FaultState,
    steps: u64,
}

impl<'a> Runner<'a> {
    /// The simulation of `scenario` with `seed`: its hosts (the store
    /// host and the stale-resume host when the scenario has them, the
    /// servers, the clients), before its first step.
    fn build(scenario: &'a Scenario, seed: u64) -> Self {
        let answers: AnswerLog = Arc::default();
        let in_flight: Arc<AtomicU64> = Arc::default();
        let clock = SimClock::new();

        // Client identities and PRNG seeds, from the run's seed.
        let mut rng = SimRng::new(derive(seed, &[SEED_CLIENTS]));
        let mut clients: Vec<(ClientId, u64)> = (0..scenario.clients.len())
            .map(|_| (ClientId::from_random_bytes(rng.bytes16()), rng.next_u64()))
            .collect();
        for (c, plan) in scenario.clients.iter().enumerate() {
            if let Some(k) = plan.reuse_id_of {
                clients[c].0 = clients[k].0;
            }
        }
        let ids: Vec<ClientId> = clients.iter().map(|(id, _)| *id).collect();
        let journal = Arc::new(Journal::new(&clock, &clients, scenario.servers));

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
            journal.log(Duration::ZERO, Host::Swarm, TraceEvent::Swarm { draw });
        }
        let writes: WriteLog = Arc::default();
        let shared_store = SimStore::new(&clock, scenario.bug, &writes);
        let store_host = (scenario.store == StoreKind::Host)
            .then(|| hosts::store_host(&mut sim, scenario, seed, (&clock, &journal), &writes));
        let stale = scenario
            .faults
            .iter()
            .any(|f| matches!(f.action, Action::StaleResume { .. }))
            .then(|| hosts::stale_host(&mut sim));
        let mut runner = Runner {
            scenario,
            seed,
            sim,
            clock,
            journal,
            clients,
            ids,
            writes,
            shared_store,
            store_host,
            stale,
            registry: Arc::new(Mutex::new(vec![None; scenario.servers])),
            answers,
            in_flight,
            faults: FaultState::new(scenario),
            steps: 0,
        };
        runner.add_servers();
        runner.add_clients();
        runner
    }

    /// Applies the faults due, then one turmoil step. `Ok(true)`: every
    /// client host is done.
    fn step(&mut self) -> Result<bool, String> {
        let Runner {
            scenario,
            sim,
            clock,
            journal,
            ids,
            shared_store,
            store_host,
            stale,
            registry,
            faults,
            steps,
            ..
        } = self;
        let scenario: &Scenario = scenario;
        let on_loss = |at: Duration, live: Vec<ClientId>| {
            let names = live.iter().map(|id| journal.client_name(id)).collect();
            journal.log(at, Host::Store, TraceEvent::DataLost { live: names });
            journal.state().data_losses.push(DataLoss { at, live });
        };
        let stale_resume = |c: usize, server: usize| {
            let at = journal.now();
            let id = ids[c];
            let live = stores(scenario, shared_store, store_host.as_ref(), registry)
                .iter()
                .find_map(|mem| match store::lookup(mem, id) {
                    Lookup::Live(record) => Some(record),
                    _ => None,
                });
            let (Some(record), Some(tx)) = (live, stale.as_ref()) else {
                journal.log(at, Host::Stale, TraceEvent::StaleNoSession { client: c });
                return;
            };
            let resume = TraceEvent::StaleResume {
                client: c,
                server,
                next_index: record.acked,
            };
            journal.log(at, Host::Stale, resume);
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
            journal.log(b.at, Host::Store, queue);
        };
        let env = Env {
            registry,
            store_host: store_host.as_ref(),
            ids,
            on_loss: &on_loss,
            stale_resume: &stale_resume,
            on_backlog: &on_backlog,
        };
        faults.apply_due(
            sim,
            scenario,
            &env,
            |time| journal.state().time_of(time),
            |now, index, action| {
                let action = action.clone();
                journal.log(now, Host::Fault, TraceEvent::Fault { index, action });
            },
        );
        faults.heal_random_failures(sim, scenario);
        let done = sim.step().map_err(|e| e.to_string())?;
        *steps += 1;
        clock.set_outside(sim.elapsed());
        Ok(done)
    }

    /// Keeps the servers running after the clients are done, until no
    /// session is live and no stream attached, or the TTL (plus slack) has
    /// passed since the last client finished: what is left then is a
    /// leak. Returns why the simulation stopped early, if it did (`error`:
    /// before the drain).
    fn drain(&mut self, mut error: Option<String>) -> Option<String> {
        // A session whose stream could not release it (its server crashed,
        // or the store failed it) lives out its last lease write: a lease
        // past the TTL at most.
        let session = &self.scenario.session;
        let drain_until = self.sim.elapsed() + session.ttl + session.lease + session.interval * 2;
        let mut next_poll = self.sim.elapsed();
        while error.is_none() && self.sim.elapsed() < drain_until {
            if self.sim.elapsed() >= next_poll {
                next_poll = self.sim.elapsed() + DRAIN_POLL;
                // Answers still on their way count too: the servers'
                // counts are judged against them.
                if self.measure() == (0, 0) && self.in_flight.load(Ordering::Relaxed) == 0 {
                    break;
                }
            }
            if let Err(e) = self.step() {
                error = Some(e);
            }
        }
        error
    }

    /// What the stores hold for each client now.
    fn lookups(&self) -> Vec<Lookup> {
        let stores = || {
            stores(
                self.scenario,
                &self.shared_store,
                self.store_host.as_ref(),
                &self.registry,
            )
        };
        self.clients
            .iter()
            .map(|(id, _)| {
                stores().iter().fold(Lookup::Missing, |acc, mem| {
                    match (acc, store::lookup(mem, *id)) {
                        (Lookup::Live(r), _) | (_, Lookup::Live(r)) => Lookup::Live(r),
                        (Lookup::Expired, _) | (_, Lookup::Expired) => Lookup::Expired,
                        _ => Lookup::Missing,
                    }
                })
            })
            .collect()
    }

    /// (Live sessions in every store, streams attached on running
    /// servers) now.
    fn measure(&mut self) -> (u64, u64) {
        let live = stores(
            self.scenario,
            &self.shared_store,
            self.store_host.as_ref(),
            &self.registry,
        )
        .iter()
        .map(MemoryStore::live)
        .sum::<u64>();
        let attached = (0..self.scenario.servers)
            .filter(|&s| self.sim.is_host_running(Scenario::server_host(s)))
            .filter_map(|s| {
                lock(&self.registry)[s]
                    .as_ref()
                    .map(|(_, station)| station.attached_streams())
            })
            .sum::<u64>();
        (live, attached)
    }

    /// Ends the run (the simulation is dropped) and reports it.
    fn collect(mut self, done: Done, recorder: &Recorder) -> Report {
        let (live_at_end, attached_at_end) = self.measure();
        let store_at_end = self.lookups();
        let ended_at = self.sim.elapsed();
        let Runner {
            scenario,
            seed,
            sim,
            journal,
            clients,
            writes,
            store_host,
            answers,
            faults,
            steps,
            ..
        } = self;
        drop(sim);
        let store_writes = std::mem::take(&mut *lock(&writes));

        let mut state = std::mem::take(&mut *journal.state());
        let client_reports = scenario
            .clients
            .iter()
            .enumerate()
            .map(|(c, plan)| {
                let finished = state.outcomes[c].take();
                let end = finished.as_ref().map_or(ended_at, |(_, at)| *at);
                let started_at = state.started[c];
                ClientReport {
                    id: clients[c].0,
                    count: plan.count,
                    expect: plan.expect,
                    record_fate: plan.record_fate,
                    finished_at: finished.as_ref().map(|(_, at)| *at),
                    outcome: finished.map(|(o, _)| o),
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
            clients_done_at: done.clients_done_at,
            store_at_done: done.store_at_done,
            store_at_end,
            live_at_end,
            attached_at_end,
            ended_at,
            steps,
            error: done.error,
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
