//! The store each server boot uses, watched ([`ServerStore`]), and the
//! `Registry` of every server's current station and store: what the
//! runner ([`run`](mod@crate::run)) and the faults it applies share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::store::{SessionStore, StoreError};
use station_net::Station;

use crate::base::lock;
use crate::clock::SimClock;
use crate::report::Answer;
use crate::store::SimStore;
use crate::storenet::NetStore;

/// The store a server boot uses, watched: every answer it hands the
/// server is logged as an [`Answer`].
#[derive(Clone, Debug)]
pub struct ServerStore {
    backend: Backend,
    watch: Watch,
}

/// Where a server boot's sessions live: in-process, or the store host.
#[derive(Clone, Debug)]
pub enum Backend {
    /// An in-process store ([`StoreKind::Shared`], [`StoreKind::PerBoot`]).
    ///
    /// [`StoreKind::Shared`]: crate::StoreKind::Shared
    /// [`StoreKind::PerBoot`]: crate::StoreKind::PerBoot
    Sim(SimStore),
    /// The store host over the network ([`StoreKind::Host`](crate::StoreKind::Host)).
    Net(NetStore),
}

/// Where a run collects [`Answer`]s.
pub(crate) type AnswerLog = Arc<Mutex<Vec<Answer>>>;

#[derive(Clone)]
struct Watch {
    server: usize,
    clock: Arc<SimClock>,
    answers: AnswerLog,
    /// Operations of every server under way (asked, not yet answered or
    /// given up): the run does not end before their answers arrive.
    in_flight: Arc<AtomicU64>,
}

/// Counts one operation under way while it lives (a crashed server's
/// operations are dropped with it).
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(count: &Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("server", &self.server)
            .finish()
    }
}

impl ServerStore {
    /// Server `server`'s store `backend`, logging the answers it hands
    /// the server to `answers` and counting operations under way in
    /// `in_flight`.
    pub(crate) fn new(
        backend: Backend,
        server: usize,
        clock: &Arc<SimClock>,
        answers: &AnswerLog,
        in_flight: &Arc<AtomicU64>,
    ) -> Self {
        ServerStore {
            backend,
            watch: Watch {
                server,
                clock: clock.clone(),
                answers: answers.clone(),
                in_flight: in_flight.clone(),
            },
        }
    }

    /// Where its sessions live.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// What an in-process store holds for `id` (`Missing` for the host's
    /// handle: look at the host's data instead).
    pub fn lookup(&self, id: ClientId) -> Lookup {
        match &self.backend {
            Backend::Sim(s) => s.lookup(id),
            Backend::Net(_) => Lookup::Missing,
        }
    }
}

impl SessionStore for ServerStore {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        let asked = op.clone();
        let _in_flight = InFlight::new(&self.watch.in_flight);
        let reply = match &self.backend {
            Backend::Sim(s) => s.execute(op).await,
            Backend::Net(n) => n.execute(op).await,
        };
        // The server's stream gets this in the same poll (its timeout
        // polls the operation first), so it is exactly what it heard.
        lock(&self.watch.answers).push(Answer {
            at: self.watch.clock.elapsed(),
            server: self.watch.server,
            op: asked,
            reply: reply.clone(),
        });
        reply
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sim(s) => s.live_sessions().await,
            Backend::Net(n) => n.live_sessions().await,
        }
    }

    fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sim(s) => s.kind(),
            Backend::Net(n) => n.kind(),
        }
    }
}

/// The servers' current stations and stores, updated at every boot.
pub(crate) type Registry = Arc<Mutex<Vec<Option<(ServerStore, Station<ServerStore>)>>>>;
