//! The store the simulated servers use: the real [`MemoryStore`] on the
//! simulation's clock, optionally wrapped by a deliberate [`Bug`] (the
//! test-only knob that proves the invariant checker can fail).

use std::sync::Arc;

use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::store::{MemoryStore, SessionStore, StoreConfig, StoreError};

use crate::clock::SimClock;
use crate::scenario::Bug;

/// A [`MemoryStore`] with an optional injected bug.
#[derive(Clone, Debug)]
pub struct SimStore {
    inner: MemoryStore,
    bug: Bug,
}

impl SimStore {
    /// An empty store reading `clock`.
    pub fn new(clock: &Arc<SimClock>, bug: Bug) -> Self {
        SimStore {
            inner: MemoryStore::with_clock(StoreConfig::default(), clock.store_clock()),
            bug,
        }
    }

    /// Live sessions now (the clock must be current).
    pub fn live(&self) -> u64 {
        self.inner.live()
    }

    /// What the store holds for `id` now.
    pub fn lookup(&self, id: ClientId) -> Lookup {
        match self.inner.apply(StoreOp::Load(id)) {
            StoreReply::Loaded(lookup) => lookup,
            other => unreachable!("MemoryStore answers Load with Loaded, not {other:?}"),
        }
    }

    fn inject(&self, op: StoreOp) -> StoreOp {
        match (self.bug, op) {
            (Bug::ForgetsEarly, StoreOp::Create { record, expires_in }) => StoreOp::Create {
                record,
                expires_in: expires_in / 3,
            },
            (
                Bug::ForgetsEarly,
                StoreOp::Update {
                    record,
                    expect_generation,
                    expires_in,
                },
            ) => StoreOp::Update {
                record,
                expect_generation,
                expires_in: expires_in / 3,
            },
            (_, op) => op,
        }
    }

    fn forgets_delete(&self, op: &StoreOp) -> bool {
        self.bug == Bug::KeepsCompleted && matches!(op, StoreOp::Delete { .. })
    }
}

impl SessionStore for SimStore {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        if self.forgets_delete(&op) {
            return StoreReply::Done;
        }
        let reply = self.inner.apply(self.inject(op));
        match (self.bug, reply) {
            (Bug::ReseedsOnResume, StoreReply::Loaded(Lookup::Live(mut record))) => {
                record.seed ^= 0x5eed;
                StoreReply::Loaded(Lookup::Live(record))
            }
            (_, reply) => reply,
        }
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        Ok(self.inner.live())
    }

    fn kind(&self) -> &'static str {
        "sim-memory"
    }
}
