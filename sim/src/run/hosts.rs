//! The hosts of a run: the servers and clients [`Runner::build`] adds,
//! and the store host and the stale-resume host when a scenario has them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use station_core::client::{Client, Config as ClientConfig};
use station_net::client::{self as driver, DriverOptions, Endpoints};
use station_net::{ServerConfig, Station, StreamEvent};

use super::observe::Journal;
use super::{Runner, DRAIN_POLL, SEED_SERVER, SEED_STORE};
use crate::base::lock;
use crate::clock::SimClock;
use crate::net;
use crate::rng::derive;
use crate::scenario::{Bug, Scenario, StoreKind};
use crate::server_store::{Backend, ServerStore};
use crate::stale;
use crate::store::{SimStore, WriteLog};
use crate::storenet::{self, NetStore, StoreHost};
use crate::trace::{Host, TraceEvent};

impl Runner<'_> {
    /// A host per server; a server's every boot builds its store and
    /// station anew (and registers them).
    pub(super) fn add_servers(&mut self) {
        let Runner {
            scenario,
            seed,
            sim,
            clock,
            journal,
            writes,
            shared_store,
            store_host,
            registry,
            answers,
            in_flight,
            ..
        } = self;
        let (scenario, seed): (&Scenario, u64) = (scenario, *seed);
        let n_servers = scenario.servers;
        let boots: Arc<Vec<AtomicU64>> =
            Arc::new((0..n_servers).map(|_| AtomicU64::new(0)).collect());
        for s in 0..n_servers {
            let (journal, registry, boots) = (journal.clone(), registry.clone(), boots.clone());
            let (clock, shared_store, writes) =
                (clock.clone(), shared_store.clone(), writes.clone());
            let (answers, in_flight) = (answers.clone(), in_flight.clone());
            let (session, store_kind, bug) =
                (scenario.session.clone(), scenario.store, scenario.bug);
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
                    let journal = journal.clone();
                    Arc::new(move |e: &StreamEvent| journal.on_server_event(s, boot, e))
                };
                let station = Station::with_observer(cfg, store.clone(), Some(observer));
                lock(&registry)[s] = Some((store, station.clone()));
                let host = Host::Server { server: s, boot };
                journal.log(journal.now(), host, TraceEvent::Boot);
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
    }

    /// A host per client: it starts when planned (a reused id once its
    /// first user is done) and runs the real client driver.
    pub(super) fn add_clients(&mut self) {
        let Runner {
            scenario,
            sim,
            journal,
            clients,
            ..
        } = self;
        for (c, plan) in scenario.clients.iter().enumerate() {
            let (id, client_seed) = clients[c];
            let journal = journal.clone();
            let plan = plan.clone();
            let bug = scenario.bug;
            sim.client(Scenario::client_host(c), async move {
                tokio::time::sleep(plan.start).await;
                if let Some(k) = plan.reuse_id_of {
                    // An id is reused once its first user finished or gave up.
                    while journal.state().outcomes[k].is_none() {
                        tokio::time::sleep(DRAIN_POLL).await;
                    }
                }
                journal.state().started[c] = Some(journal.now());
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
                journal.log(journal.now(), Host::Client(c), start);
                let outcome =
                    driver::run(&endpoints, &DriverOptions::default(), client, |e, cl| {
                        journal.on_client_event(c, e, cl)
                    })
                    .await;
                let at = journal.now();
                let finished = TraceEvent::Finished {
                    verdict: outcome.verdict.clone(),
                    received: outcome.received,
                    sum: outcome.sum,
                    crc: outcome.client_checksum,
                    server_crc: outcome.server_checksum,
                };
                journal.log(at, Host::Client(c), finished);
                journal.state().outcomes[c] = Some((outcome, at));
                Ok(())
            });
        }
    }
}

/// The store host: its state outlives its boots (a restart keeps the data
/// unless the fault says otherwise); every boot is traced.
pub(super) fn store_host(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    seed: u64,
    (clock, journal): (&Arc<SimClock>, &Arc<Journal>),
    writes: &WriteLog,
) -> Arc<StoreHost> {
    let logger = journal.clone();
    let host = StoreHost::new(
        clock,
        scenario.bug,
        &scenario.store_net,
        derive(seed, &[SEED_STORE]),
        writes,
        move |event| logger.log(logger.now(), Host::Store, event),
    );
    let boots = AtomicU64::new(0);
    let (journal, for_host) = (journal.clone(), host.clone());
    sim.host(storenet::HOST, move || {
        let boot = boots.fetch_add(1, Ordering::Relaxed);
        journal.log(journal.now(), Host::StoreBoot(boot), TraceEvent::Boot);
        let host = for_host.clone();
        async move {
            storenet::serve(host).await?;
            Ok(())
        }
    });
    host
}

/// The host that sends stale resumes, and the runner's end of its inbox.
pub(super) fn stale_host(sim: &mut turmoil::Sim<'_>) -> stale::Sender {
    let (tx, inbox) = stale::channel();
    sim.host(stale::HOST, move || {
        let inbox = inbox.clone();
        async move {
            stale::serve(inbox).await;
            Ok(())
        }
    });
    tx
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
