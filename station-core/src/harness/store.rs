//! The session store the harness runs against: [`ModelStore`], the store
//! contract of ARCHITECTURE.md §5 (via [`store::decide`]) with expiry.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::server::{Lookup, Record, StoreOp, StoreReply};
use crate::store::{self, Write};
use crate::ClientId;

/// The session store as documented on [`StoreOp`], with expiry.
///
/// A record expires when `now >= expires_at`; it is then remembered as
/// expired (`Lookup::Expired`) for the rest of the run. `Delete` forgets a
/// record outright.
#[derive(Debug, Default)]
pub(crate) struct ModelStore {
    pub(super) live: BTreeMap<ClientId, (Record, Instant)>,
    pub(super) expired: BTreeMap<ClientId, Instant>,
}

impl ModelStore {
    fn expire(&mut self, now: Instant) {
        let due: Vec<ClientId> = self
            .live
            .iter()
            .filter(|(_, (_, at))| now >= *at)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (_, at) = self.live.remove(&id).expect("listed above");
            self.expired.insert(id, at);
        }
    }

    /// Performs `op` atomically at `now`, as [`store::decide`] says.
    pub(crate) fn apply(&mut self, now: Instant, op: StoreOp) -> StoreReply {
        self.expire(now);
        let id = match &op {
            StoreOp::Load(id) => *id,
            StoreOp::Create { record, .. } | StoreOp::Update { record, .. } => record.client_id,
            StoreOp::Delete { client_id, .. } => *client_id,
        };
        let stored = match self.live.get(&id) {
            Some((record, _)) => Lookup::Live(*record),
            None if self.expired.contains_key(&id) => Lookup::Expired,
            None => Lookup::Missing,
        };
        let (reply, write) = store::decide(&stored, &op);
        match write {
            Write::Nothing => {}
            Write::Put { record, expires_in } => {
                self.expired.remove(&id);
                self.live.insert(id, (record, now + expires_in));
            }
            Write::Remove => {
                self.live.remove(&id);
            }
        }
        reply
    }

    /// The live record for `id` at `now`, with its expiry.
    pub(crate) fn live(&mut self, now: Instant, id: ClientId) -> Option<(Record, Instant)> {
        self.expire(now);
        self.live.get(&id).copied()
    }

    /// How many records are live at `now`.
    pub(crate) fn live_count(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.live.len()
    }
}
