//! [`MemoryStore`]: sessions in this process, for a single server (or
//! several simulated servers sharing one process).

use std::collections::hash_map::{Entry as Slot, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use station_core::store::{self, Change, Lookup, StoreOp, StoreReply, Stored};
use station_core::ClientId;

use super::{SessionStore, StoreConfig, StoreError};

/// Lock stripes: streams of different sessions rarely wait for each other.
const SHARDS: usize = 64;

/// A clock for the store. The default reads tokio's clock, which is paused
/// and advanced by the test or simulation that owns the runtime.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

// A HashMap (SipHash with a random key, so client-chosen ids cannot force
// collisions): one lookup per operation, where a BTreeMap walked ~10 nodes
// of cache misses at 100,000 sessions. Nothing depends on its order: sweeps
// and counts visit every entry.
type Shard = HashMap<ClientId, Stored>;

/// Sessions in memory, striped over 64 mutexes.
///
/// A `std::sync::Mutex` is right here (as in mini-redis): critical sections
/// are a map lookup and never await. Expired entries are dropped lazily on
/// access and by [`sweep`](Self::sweep), which the server runs on a timer.
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    cfg: StoreConfig,
    clock: Clock,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(StoreConfig::default())
    }
}

impl MemoryStore {
    /// An empty store on tokio's clock.
    pub fn new(cfg: StoreConfig) -> Self {
        Self::with_clock(cfg, Arc::new(|| tokio::time::Instant::now().into_std()))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(cfg: StoreConfig, clock: Clock) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect();
        MemoryStore { shards, cfg, clock }
    }

    /// Drops every entry past its expiry plus the expired-memory period, and
    /// returns how many entries (live or remembered as expired) remain.
    pub fn sweep(&self) -> usize {
        let now = (self.clock)();
        let keep = self.cfg.remember_expired;
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                shard.retain(|_, e| store::lookup(Some(e), now, keep) != Lookup::Missing);
                shard.len()
            })
            .sum()
    }

    /// Runs [`sweep`](Self::sweep) every `every` until the returned task is
    /// aborted or the runtime stops.
    pub fn spawn_sweeper(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                store.sweep();
            }
        })
    }

    /// Live sessions now (synchronous form of `live_sessions`).
    pub fn live(&self) -> u64 {
        let now = (self.clock)();
        self.shards
            .iter()
            .map(|shard| lock(shard).values().filter(|e| now < e.expires_at).count() as u64)
            .sum()
    }

    /// Performs one operation (synchronous form of `execute`): the shared
    /// [`store::step`] under the shard's lock, one hash lookup.
    pub fn apply(&self, op: StoreOp) -> StoreReply {
        let now = (self.clock)();
        let id = op.client_id();
        let mut shard = lock(&self.shards[shard_of(&id)]);
        let slot = shard.entry(id);
        let stored = match &slot {
            Slot::Occupied(e) => Some(e.get()),
            Slot::Vacant(_) => None,
        };
        let (reply, change) = store::step(stored, now, self.cfg.remember_expired, &op);
        match (change, slot) {
            (Change::Put(entry), Slot::Occupied(mut e)) => *e.get_mut() = entry,
            (Change::Put(entry), Slot::Vacant(e)) => {
                e.insert(entry);
            }
            (Change::Remove, Slot::Occupied(e)) => {
                e.remove();
            }
            (Change::Remove | Change::Keep, _) => {}
        }
        reply
    }
}

impl SessionStore for MemoryStore {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        self.traced(op)
    }

    fn execute_now(&self, op: StoreOp) -> Result<StoreReply, StoreOp> {
        Ok(self.traced(op))
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        Ok(self.live())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

impl MemoryStore {
    /// [`apply`](Self::apply) in a span of its own under the stream's
    /// (see [`crate::otel`]).
    fn traced(&self, op: StoreOp) -> StoreReply {
        let span = crate::otel::store_span(&op, "memory");
        let _entered = span.enter();
        let reply = self.apply(op);
        crate::otel::store_reply(&span, &reply);
        reply
    }
}

fn shard_of(id: &ClientId) -> usize {
    // Client ids are random UUIDs; their last byte spreads well enough. A
    // client choosing ids to collide only slows itself down.
    usize::from(id.0.as_bytes()[15]) % SHARDS
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a half-written entry
    // (inserts and removes are single calls), so a poisoned lock is usable.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
