//! The session store the harness runs against: [`ModelStore`], a `BTreeMap`
//! over the shared [`store::step`] (so [`store::decide`], ARCHITECTURE.md
//! §5), logging every write that changed what it holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::server::{Lookup, Record, StoreOp, StoreReply};
use crate::store::{self, Change, Stored};
use crate::ClientId;

/// The harness remembers an expired record for the rest of the run.
const REMEMBER: Duration = Duration::MAX;

/// A write that changed what the store holds for one id, for invariant 5.
#[derive(Clone, Debug)]
pub(crate) struct ModelWrite {
    pub(crate) at: Instant,
    pub(crate) op: StoreOp,
    pub(crate) before: Lookup,
    pub(crate) after: Lookup,
    pub(crate) reply: StoreReply,
}

/// The session store as documented on [`StoreOp`], with expiry.
///
/// A record expires when `now >= expires_at`; it is then remembered as
/// expired (`Lookup::Expired`) for the rest of the run. `Delete` forgets a
/// record outright. A `BTreeMap`, so no hash order can reach the run.
#[derive(Debug, Default)]
pub(crate) struct ModelStore {
    entries: BTreeMap<ClientId, Stored>,
    pub(crate) writes: Vec<ModelWrite>,
}

impl ModelStore {
    /// Performs `op` atomically at `now`, as [`store::step`] says.
    pub(crate) fn apply(&mut self, now: Instant, op: StoreOp) -> StoreReply {
        let id = op.client_id();
        let before = store::lookup(self.entries.get(&id), now, REMEMBER);
        let (reply, change) = store::step(self.entries.get(&id), now, REMEMBER, &op);
        match change {
            Change::Keep => {}
            Change::Put(entry) => {
                self.entries.insert(id, entry);
            }
            Change::Remove => {
                self.entries.remove(&id);
            }
        }
        let after = store::lookup(self.entries.get(&id), now, REMEMBER);
        if after != before {
            self.writes.push(ModelWrite {
                at: now,
                op,
                before,
                after,
                reply: reply.clone(),
            });
        }
        reply
    }

    /// The live record for `id` at `now`, with its expiry.
    pub(crate) fn live(&self, now: Instant, id: ClientId) -> Option<(Record, Instant)> {
        self.entries
            .get(&id)
            .filter(|e| now < e.expires_at)
            .map(|e| (e.record, e.expires_at))
    }

    /// How many records are live at `now`.
    pub(crate) fn live_count(&self, now: Instant) -> usize {
        self.entries.values().filter(|e| now < e.expires_at).count()
    }

    /// Whether it holds nothing, live or remembered as expired.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
