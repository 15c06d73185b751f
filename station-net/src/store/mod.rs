//! Session stores: where session records live between and during streams.
//!
//! The core's [`server::Stream`](station_core::server::Stream) machine asks for
//! [`StoreOp`]s and is told [`StoreReply`]s; a store only has to carry them
//! out atomically. Every write is a compare-and-set on the record's
//! generation, so several servers can share a store safely.
//!
//! Expiry belongs to the store: a record carries no deadline of its own, and
//! each write says how long from now it lives. After that the record is
//! *expired*: `Load` answers [`Lookup::Expired`] for a further
//! [`StoreConfig::remember_expired`], so a late client hears "expired" rather
//! than "unknown", and then the record is gone for good.

use std::future::Future;
use std::time::Duration;

pub use station_core::server::{Lookup, Record, StoreOp, StoreReply};

pub mod memory;
pub mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// Settings shared by every store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long an expired session is still reported as expired.
    pub remember_expired: Duration,
    /// Redis: how long a batch of updates waits, after its first, for more
    /// to join it before it is sent (0: send at once). Each script call
    /// costs Redis and the server a round of parsing and syscalls, so larger
    /// batches cut the CPU per write; a lease renewal is answered at most
    /// this much later (numbers do not wait for it).
    pub batch_linger: Duration,
    /// Redis: how long one operation may wait for its answer before it
    /// fails as unavailable. The server bounds each operation by its own
    /// deadline first (its store timeout, or a resume's attach deadline),
    /// so this is only the store's backstop and must be at least the
    /// longest of those. A starved Redis answers late, not never: failing
    /// a resume's load sooner than the server would wait sends the client
    /// back with another resume, while Redis still does the first one's
    /// work.
    pub operation_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            remember_expired: Duration::from_secs(300),
            batch_linger: Duration::from_millis(2),
            operation_timeout: Duration::from_secs(5),
        }
    }
}

/// A store failure outside the [`StoreOp`] protocol.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The store's address or settings are wrong.
    #[error("bad session store configuration: {0}")]
    Config(String),
}

/// Where sessions live: one implementation per backend.
///
/// Implementations are cheap to clone (a handle to shared state) and safe
/// under many concurrent streams. They never panic on stored data: a
/// record that does not decode is reported as `Unavailable`.
pub trait SessionStore: Clone + Send + Sync + 'static {
    /// Performs one operation atomically, as documented on [`StoreOp`].
    /// Failures come back as [`StoreReply::Unavailable`].
    fn execute(&self, op: StoreOp) -> impl Future<Output = StoreReply> + Send;

    /// Performs `op` at once if this store can without waiting (an
    /// in-process store can), or hands it back for [`execute`](Self::execute).
    /// Lets a stream run its store operations without allocating a future
    /// for each.
    fn execute_now(&self, op: StoreOp) -> Result<StoreReply, StoreOp> {
        Err(op)
    }

    /// Sessions that exist and have not expired.
    fn live_sessions(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the store can be reached now: cheap enough to ask every
    /// second (health checks). By default, counting live sessions.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let live = self.live_sessions();
        async move { live.await.map(|_| ()) }
    }

    /// A short name for logs ("memory", "redis").
    fn kind(&self) -> &'static str;
}
