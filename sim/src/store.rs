//! The store the simulated servers use: the real [`MemoryStore`] (so
//! `station_core::store::decide`) on the simulation's clock, optionally
//! with a planted [`Bug`], and watched: every write that changed what is
//! stored is logged as a [`StoreWrite`] for the invariant checker.
//!
//! [`apply`] is the one way an operation reaches a `MemoryStore` here, for
//! the in-process stores ([`SimStore`]) and for the store host
//! ([`crate::storenet`]) alike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::store::{decide, Write};
use station_core::ClientId;
use station_net::store::{MemoryStore, SessionStore, StoreConfig, StoreError};

use crate::base::lock;
use crate::clock::SimClock;
use crate::scenario::Bug;

/// A write that changed what the store holds for one id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreWrite {
    /// Simulated time.
    pub at: Duration,
    /// The operation as the store received it (after any planted bug's
    /// rewriting).
    pub op: StoreOp,
    /// What was stored before.
    pub before: Lookup,
    /// What is stored after.
    pub after: Lookup,
    /// The answer.
    pub reply: StoreReply,
}

/// Where a run collects [`StoreWrite`]s.
pub type WriteLog = Arc<Mutex<Vec<StoreWrite>>>;

/// What `mem` holds for `id` now.
pub fn lookup(mem: &MemoryStore, id: ClientId) -> Lookup {
    match mem.apply(StoreOp::Load(id)) {
        StoreReply::Loaded(lookup) => lookup,
        other => unreachable!("MemoryStore answers Load with Loaded, not {other:?}"),
    }
}

/// Performs `op` on `mem` with `bug` planted, at simulated time `at`, and
/// logs the write to `log` if it changed what is stored.
pub fn apply(mem: &MemoryStore, bug: Bug, op: StoreOp, at: Duration, log: &WriteLog) -> StoreReply {
    if matches!(op, StoreOp::Load(_)) {
        let reply = mem.apply(op);
        return match (bug, reply) {
            (Bug::ReseedsOnResume, StoreReply::Loaded(Lookup::Live(mut record))) => {
                record.seed ^= 0x5eed;
                StoreReply::Loaded(Lookup::Live(record))
            }
            (_, reply) => reply,
        };
    }
    let op = rewrite(bug, op);
    let id = op.client_id();
    let before = lookup(mem, id);
    let reply = match (bug, &op) {
        (Bug::KeepsCompleted, StoreOp::Delete { .. }) => StoreReply::Done,
        (
            Bug::StaleRenewalDone,
            StoreOp::Update {
                record,
                expect_generation,
                ..
            },
        ) if stale_renewal(&before, record, *expect_generation) => StoreReply::Done,
        _ => match misjudged(bug, &before, &op) {
            // The planted bug decides on what it misreads, and the write
            // is carried out with fenced operations that cannot refuse.
            Some(seen) => {
                let (reply, write) = decide(&seen, &op);
                match write {
                    Write::Nothing => {}
                    Write::Put { record, expires_in } => force_put(mem, record, expires_in),
                    Write::Remove => force_remove(mem, id),
                }
                reply
            }
            None => mem.apply(op.clone()),
        },
    };
    let after = lookup(mem, id);
    if after != before {
        lock(log).push(StoreWrite {
            at,
            op,
            before,
            after,
            reply: reply.clone(),
        });
    }
    reply
}

/// Planted bugs that change the operation itself.
fn rewrite(bug: Bug, op: StoreOp) -> StoreOp {
    let scale = |expires_in: Duration| match bug {
        Bug::ForgetsEarly => expires_in / 3,
        Bug::ForgetsLate | Bug::GivesUpEarly => expires_in * 3,
        _ => expires_in,
    };
    match op {
        StoreOp::Create { record, expires_in } => StoreOp::Create {
            record,
            expires_in: scale(expires_in),
        },
        StoreOp::Update {
            mut record,
            expect_generation,
            expires_in,
        } => {
            if bug == Bug::TakeoverKeepsGeneration && record.generation == expect_generation + 1 {
                record.generation = expect_generation;
            }
            StoreOp::Update {
                record,
                expect_generation,
                expires_in: scale(expires_in),
            }
        }
        op => op,
    }
}

/// For the fencing bugs: what the buggy store believes is stored, where
/// that differs from the truth (`None`: the real store decides).
fn misjudged(bug: Bug, stored: &Lookup, op: &StoreOp) -> Option<Lookup> {
    let Lookup::Live(live) = stored else {
        return None;
    };
    match (bug, op) {
        (Bug::CreateOverwritesLive, StoreOp::Create { record, .. }) if live != record => {
            Some(Lookup::Missing)
        }
        (Bug::UpdateIgnoresIncarnation, StoreOp::Update { record, .. })
            if live.incarnation != record.incarnation =>
        {
            Some(Lookup::Live(Record {
                incarnation: record.incarnation,
                ..*live
            }))
        }
        (
            Bug::UpdateIgnoresGeneration,
            StoreOp::Update {
                record,
                expect_generation,
                ..
            },
        ) if live.incarnation == record.incarnation && live.generation != *expect_generation => {
            Some(Lookup::Live(Record {
                generation: *expect_generation,
                ..*live
            }))
        }
        (Bug::DeleteIgnoresIncarnation, StoreOp::Delete { incarnation, .. })
            if live.incarnation != *incarnation =>
        {
            Some(Lookup::Live(Record {
                incarnation: *incarnation,
                ..*live
            }))
        }
        (
            Bug::LostWritesSeenAsConflict,
            StoreOp::Update {
                record,
                expect_generation,
                ..
            },
        ) if live.incarnation == record.incarnation && live.generation < *expect_generation => {
            Some(Lookup::Live(Record {
                generation: expect_generation + 1,
                ..*live
            }))
        }
        (
            Bug::RepeatedTakeoverConflicts,
            StoreOp::Update {
                record,
                expect_generation,
                ..
            },
        ) if live == record && live.generation != *expect_generation => {
            // Seen as another stream's record of the same generation.
            Some(Lookup::Live(Record {
                holder: !live.holder,
                ..*live
            }))
        }
        _ => None,
    }
}

/// A renewal (an `Update` at its own generation) of a stream whose session
/// a newer generation of the same incarnation took over.
fn stale_renewal(stored: &Lookup, record: &Record, expect_generation: u64) -> bool {
    matches!(stored, Lookup::Live(live)
        if live.incarnation == record.incarnation
            && record.generation == expect_generation
            && live.generation > expect_generation)
}

/// Stores `record` whatever is there, with the store's own operations.
pub(crate) fn force_put(mem: &MemoryStore, record: Record, expires_in: Duration) {
    force_remove(mem, record.client_id);
    let reply = mem.apply(StoreOp::Create { record, expires_in });
    debug_assert_eq!(reply, StoreReply::Done);
}

/// Removes whatever live record `id` has.
pub(crate) fn force_remove(mem: &MemoryStore, id: ClientId) {
    if let Lookup::Live(live) = lookup(mem, id) {
        let reply = mem.apply(StoreOp::Delete {
            client_id: id,
            incarnation: live.incarnation,
            generation: live.generation,
        });
        debug_assert_eq!(reply, StoreReply::Done);
    }
}

/// An in-process [`MemoryStore`] with an optional planted bug, handed to
/// server hosts directly ([`crate::StoreKind::Shared`] and
/// [`crate::StoreKind::PerBoot`]).
#[derive(Clone)]
pub struct SimStore {
    inner: MemoryStore,
    bug: Bug,
    clock: Arc<SimClock>,
    log: WriteLog,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStore").field("bug", &self.bug).finish()
    }
}

impl SimStore {
    /// An empty store reading `clock`, logging writes to `log`.
    pub fn new(clock: &Arc<SimClock>, bug: Bug, log: &WriteLog) -> Self {
        SimStore {
            inner: memory(clock),
            bug,
            clock: clock.clone(),
            log: log.clone(),
        }
    }

    /// Live sessions now (the clock must be current).
    pub fn live(&self) -> u64 {
        self.inner.live()
    }

    /// What the store holds for `id` now.
    pub fn lookup(&self, id: ClientId) -> Lookup {
        lookup(&self.inner, id)
    }

    /// The store underneath.
    pub fn memory(&self) -> &MemoryStore {
        &self.inner
    }
}

/// An empty `MemoryStore` on the simulation's clock.
pub fn memory(clock: &Arc<SimClock>) -> MemoryStore {
    MemoryStore::with_clock(StoreConfig::default(), clock.store_clock())
}

impl SessionStore for SimStore {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        apply(&self.inner, self.bug, op, self.clock.elapsed(), &self.log)
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        Ok(self.inner.live())
    }

    fn kind(&self) -> &'static str {
        "sim-memory"
    }
}
