//! [`RedisStore`]: sessions in Redis, shared by several servers: one Redis
//! (with replicas if you like) or a Redis Cluster.
//!
//! # Deployments and URLs
//!
//! | `--store` | what it is |
//! |---|---|
//! | `redis://host:6379/0` | one Redis (`rediss://` for TLS) |
//! | `redis://a:6379,redis://b:6379` | a primary and its replicas: the store writes to whichever answers `ROLE` as the primary, and looks again on `READONLY` or a lost connection |
//! | `redis+cluster://h1:7000,h2:7001` | a Redis Cluster (`rediss+cluster://` for TLS); the user, password and query apply to every node |
//!
//! Sentinel is not supported: with replicas, list every endpoint, and let
//! whatever promotes a replica (an operator's `REPLICAOF NO ONE`, or an
//! orchestrator) do so; the store finds the new primary by itself.
//!
//! # Key layout
//!
//! One hash per session. With one Redis its key is
//! `{prefix}session:{client id}` (the id in its hyphenated form); in a
//! cluster it is `{prefix}{b}:session:{client id}`, where `{b}`, braces
//! included, is a hash tag naming one of [`BUCKETS`] buckets, a fixed
//! function of the id ([`bucket_of`]). All the keys of a bucket hash to one
//! slot, so a batch of updates of one bucket is one script call on one
//! node. The hash has three fields:
//!
//! | field           | contents                                                   |
//! |-----------------|------------------------------------------------------------|
//! | `record`        | [`Record::to_bytes`], 88 bytes                             |
//! | `generation`    | the record's generation in decimal, for compare-and-set    |
//! | `expires_at_us` | logical expiry, microseconds since the Unix epoch on *Redis's* clock |
//!
//! `generation` duplicates bytes 64..72 of `record` because Lua (5.1, numbers
//! are doubles) cannot compare a big-endian `u64` exactly; comparing decimal
//! strings is exact for every `u64`. A reader checks that the two agree.
//!
//! # Time and expiry
//!
//! Every script reads the time with Redis's `TIME`, so all servers sharing
//! the store share one clock and no server's clock skew matters (in a
//! cluster, each node's clock for the sessions it holds). A write
//! stores `expires_at_us = TIME + expires_in` and sets the key's TTL
//! (`PEXPIRE`) to `expires_in + remember_expired`. Between the two the key
//! still exists but the session is logically expired: `Load` answers
//! [`Lookup::Expired`], exactly as [`MemoryStore`](super::MemoryStore) does
//! for [`StoreConfig::remember_expired`]; after it Redis deletes the key by
//! itself, so a crashed server's sessions leave nothing behind. The scripts
//! also treat a key past `expires_at_us + remember_expired` as missing, so the
//! millisecond rounding of the TTL never shows.
//!
//! # Atomicity
//!
//! Each [`StoreOp`] runs in a Lua script (`EVALSHA`, loaded on every node at
//! start and again by [`redis::Script`] on `NOSCRIPT`): Redis runs a script
//! without interleaving any other command, so "read the state, compare the
//! generation, write" is a single atomic step, whichever server sends it.
//!
//! # Batching
//!
//! `Update` is the hot path: every stream renews its session's lease every
//! few seconds (and takes sessions over and releases them with updates too).
//! Updates from all of a store's streams go to one task per bucket
//! (one in all with a single Redis), which sends whatever has queued up (at
//! most [`MAX_BATCH`]) as one script call and hands each caller its own
//! answer; the buckets' tasks run concurrently. The script applies them in
//! order, each with its own compare-and-set, so two updates of one session
//! in a batch behave as if sent one after the other. While one call is
//! out, the next batch gathers, so batches grow with the load; and a batch
//! waits `StoreConfig::batch_linger` (2 ms by default) after its first
//! update for more, because one server's lease writes arrive spread out,
//! and without the wait a batch held about two of them. One call per batch
//! instead of one per write is what lets a server hold tens of thousands of
//! sessions on one Redis (BENCHMARKS.md).
//!
//! # Failures
//!
//! Every Redis error, timeout or unreadable stored value becomes
//! [`StoreReply::Unavailable`] with a message saying what failed (for logs;
//! clients are told only that the store is unavailable); nothing here
//! panics on what Redis returns. Connecting is lazy (a server starts while
//! Redis is down), and connections are re-established after failures.
//! A write whose answer was lost may have been applied; sending it again is
//! safe, because every script is idempotent: a stored record byte for byte
//! the write's own means "already applied" and answers `done`, never a
//! false conflict. So the cluster client may retry after a dropped
//! connection or a redirection, and with one Redis an operation is retried
//! once when it could not connect or reached a replica.
//!
//! Redis replication is asynchronous: a failover, or a restart without
//! persistence, can lose writes Redis acknowledged. A session whose key is
//! gone is reported as [`StoreReply::Vanished`] (the store lost it), never as
//! a takeover.
//!
//! All deadlines run on tokio's clock: use this store on a runtime whose
//! clock is not paused (a paused clock jumps straight to the timeouts while
//! the runtime waits for Redis).

use std::collections::BTreeSet;
use std::future::Future;
use std::hash::Hasher as _;
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, ScriptInvocation};
use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::ClientId;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use self::conn::{query_slot_primary, Conn, Target};
use self::error::RedisStoreError;
use self::scripts::SCRIPTS;
use super::{SessionStore, StoreConfig, StoreError};

mod conn;
mod error;
mod scripts;

/// Hard bound on a count or a ping, reconnection
/// attempts included: a dead or unreachable Redis yields `Unavailable`
/// within this. (The session operations of [`SessionStore::execute`] are
/// bounded by [`StoreConfig::operation_timeout`].)
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Durations longer than this (ten years) are treated as this, which keeps
/// every timestamp the scripts compute exact in a Lua double (< 2^53 µs).
const MAX_DURATION_US: u64 = 10 * 365 * 24 * 3600 * 1_000_000;
// Until 2096 (4e15 µs after 1970), TIME + expires_in + remember_expired
// stays an exact integer in a Lua double.
const _: () = assert!(4_000_000_000_000_000 + 2 * MAX_DURATION_US < 1 << 53);
/// Keys per `SCAN` step and per counting script in `live_sessions`.
const SCAN_BATCH: usize = 1000;
/// The pause between two steps of `live_sessions` (a `SCAN`, a bucket's
/// keys, or a counting script of [`SCAN_BATCH`] keys, about a millisecond
/// of Redis each). Counting is a store-wide scan: unpaced, at 40,000
/// sessions it held Redis, and the core it shares with the load, for a
/// burst that every session's numbers felt each time the gauge was sampled
/// (p99 lateness 122.8 ms, against 11.1 ms paced; BENCHMARKS.md).
const COUNT_PACE: Duration = Duration::from_millis(2);

/// Most updates sent in one script call. Redis runs nothing else while a
/// script runs; at a few microseconds per update this bounds that to about
/// a millisecond.
pub const MAX_BATCH: usize = 256;

/// Buckets of sessions in a cluster: each is one hash slot, so one node
/// holds it and a batch of its updates is one script call.
///
/// 64, because: a cluster spreads sessions over its primaries only as
/// finely as there are buckets, and 64 buckets over 3 to 16 primaries give
/// each primary 4 to 21 of them (slots can be moved to even out the
/// rest); more buckets would cut a server's updates into more, smaller
/// script calls (each call costs Redis about as much as a few updates), so
/// fewer sessions per call under load. The count is part of the key
/// layout: servers sharing a cluster must agree on it, so it is fixed here.
pub const BUCKETS: usize = 64;

/// The bucket of `id` in a cluster: 64-bit FNV-1a over the id's 16 bytes,
/// modulo [`BUCKETS`]. Fixed forever (servers of different versions
/// sharing a cluster must agree): FNV-1a is a named function (the `fnv`
/// crate's), not a hasher that may change, and a test pins a value.
pub fn bucket_of(id: &ClientId) -> usize {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(id.0.as_bytes());
    (hasher.finish() % BUCKETS as u64) as usize
}

/// The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of
/// its hash tag (the text between the first `{` and the next `}`, if not
/// empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// Where sessions' keys are.
#[derive(Clone, Debug)]
struct Layout {
    prefix: Arc<str>,
    /// Keys carry a bucket's hash tag (a cluster).
    tagged: bool,
}

impl Layout {
    /// How many batching tasks: one per bucket, or one.
    fn queues(&self) -> usize {
        if self.tagged {
            BUCKETS
        } else {
            1
        }
    }

    /// Which batching task `id`'s updates go to.
    fn queue(&self, id: &ClientId) -> usize {
        if self.tagged {
            bucket_of(id)
        } else {
            0
        }
    }

    /// The key holding `id`'s session.
    fn key(&self, id: &ClientId) -> String {
        if self.tagged {
            format!("{}{{{}}}:session:{id}", self.prefix, bucket_of(id))
        } else {
            format!("{}session:{id}", self.prefix)
        }
    }

    /// What every key of bucket `b` starts with (tagged layout).
    fn bucket_prefix(&self, b: usize) -> String {
        format!("{}{{{b}}}:session:", self.prefix)
    }
}

/// Sessions in Redis, shared by every server pointed at the same Redis (or
/// cluster) and prefix. See the [module docs](self) for the key layout and
/// scripts.
///
/// Cloning is cheap: clones share the connections and the batching tasks.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    layout: Layout,
    cfg: StoreConfig,
    /// One queue per batching task.
    updates: Arc<[mpsc::UnboundedSender<QueuedUpdate>]>,
}

/// An update waiting for its batch, and where its answer goes.
struct QueuedUpdate {
    record: Record,
    expect_generation: u64,
    expires_in: Duration,
    reply: oneshot::Sender<Result<StoreReply, RedisStoreError>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("layout", &self.layout)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl RedisStore {
    /// A store on `url`, keys under `prefix`; the URL forms are in the
    /// [module docs](self). `rediss://` trusts the system's root
    /// certificates (and `SSL_CERT_FILE` if set); see
    /// [`connect_with_ca`](Self::connect_with_ca) for a private CA.
    ///
    /// Connecting is lazy: this fails only if the URL or settings are wrong
    /// ([`StoreError::Config`]), never because Redis is down right now. It
    /// does try a `PING` (for at most a second), loads the scripts on every
    /// node, and logs a warning if Redis does not answer, so a wrong
    /// address shows at startup.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn connect(url: &str, prefix: &str, cfg: StoreConfig) -> Result<Self, StoreError> {
        Self::connect_with_ca(url, prefix, cfg, None).await
    }

    /// As [`connect`](Self::connect), trusting `root_ca` (PEM) instead of
    /// the system's roots for `rediss://`.
    pub async fn connect_with_ca(
        url: &str,
        prefix: &str,
        cfg: StoreConfig,
        root_ca: Option<&[u8]>,
    ) -> Result<Self, StoreError> {
        // The URL may hold a password: the errors below do not repeat it.
        let config = |e: RedisStoreError| StoreError::Config(e.to_string());
        let target = Target::parse(url).map_err(config)?;
        let tagged = matches!(target, Target::Cluster(_));
        if tagged && (prefix.contains('{') || prefix.contains('}')) {
            return Err(config(RedisStoreError::PrefixHashTag));
        }
        let conn = Conn::open(target, root_ca, cfg.operation_timeout).map_err(config)?;
        let layout = Layout {
            prefix: prefix.into(),
            tagged,
        };
        // Unbounded, yet bounded in practice: each stream has at most one
        // store operation in flight.
        let updates: Vec<_> = (0..layout.queues())
            .map(|_| {
                let (updates, queue) = mpsc::unbounded_channel();
                tokio::spawn(send_batches(
                    conn.clone(),
                    layout.clone(),
                    micros(cfg.remember_expired),
                    cfg.batch_linger,
                    cfg.operation_timeout,
                    queue,
                ));
                updates
            })
            .collect();
        let store = RedisStore {
            conn,
            layout,
            cfg,
            updates: updates.into(),
        };
        store.probe().await;
        Ok(store)
    }

    /// Logs whether Redis answers a `PING` now, and loads the scripts on
    /// every node (so the first `EVALSHA` of each finds it); never fails.
    async fn probe(&self) {
        let start = async {
            self.conn.query::<redis::Value>(&redis::cmd("PING")).await?;
            for source in SCRIPTS.sources() {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(source);
                self.conn.query::<redis::Value>(&load).await?;
            }
            Ok::<(), RedisError>(())
        };
        match tokio::time::timeout(Duration::from_secs(1), start).await {
            Ok(Ok(())) => tracing::debug!(layout = ?self.layout, "redis session store connected"),
            Ok(Err(e)) => {
                tracing::warn!("redis session store not reachable yet (will retry on use): {e}")
            }
            Err(_) => tracing::warn!(
                "redis session store did not answer PING within 1s (will retry on use)"
            ),
        }
    }

    /// The key holding `id`'s session.
    fn key(&self, id: &ClientId) -> String {
        self.layout.key(id)
    }

    fn remember_us(&self) -> u64 {
        micros(self.cfg.remember_expired)
    }

    /// Performs `op` without the overall deadline.
    async fn run(&self, op: StoreOp) -> Result<StoreReply, RedisStoreError> {
        let remember = self.remember_us();
        match op {
            StoreOp::Load(id) => {
                let mut inv = SCRIPTS.load.prepare_invoke();
                inv.key(self.key(&id)).arg(remember);
                let reply = invoke::<Vec<Vec<u8>>>(&self.conn, "load", &inv).await?;
                Ok(StoreReply::Loaded(match split(&id, &reply)? {
                    ("live", [record, generation]) => {
                        Lookup::Live(decode(&id, record, generation)?)
                    }
                    ("expired", []) => Lookup::Expired,
                    ("missing", []) => Lookup::Missing,
                    _ => return Err(RedisStoreError::unexpected("load", &reply)),
                }))
            }
            StoreOp::Create { record, expires_in } => {
                let id = record.client_id;
                let mut inv = SCRIPTS.create.prepare_invoke();
                inv.key(self.key(&id))
                    .arg(&record.to_bytes()[..])
                    .arg(record.generation.to_string())
                    .arg(micros(expires_in))
                    .arg(remember);
                let reply = invoke::<Vec<Vec<u8>>>(&self.conn, "create", &inv).await?;
                match split(&id, &reply)? {
                    ("done", []) => Ok(StoreReply::Done),
                    ("exists", [live, generation]) => {
                        Ok(StoreReply::Exists(decode(&id, live, generation)?))
                    }
                    _ => Err(RedisStoreError::unexpected("create", &reply)),
                }
            }
            StoreOp::Update {
                record,
                expect_generation,
                expires_in,
            } => self.update(record, expect_generation, expires_in).await,
            StoreOp::Delete {
                client_id,
                incarnation,
                generation,
            } => {
                let mut inv = SCRIPTS.delete.prepare_invoke();
                inv.key(self.key(&client_id))
                    .arg(generation.to_string())
                    .arg(remember)
                    .arg(&incarnation.to_be_bytes()[..]);
                let reply = invoke::<Vec<Vec<u8>>>(&self.conn, "delete", &inv).await?;
                write_reply("delete", &client_id, &reply)
            }
        }
    }

    /// Queues an update for its batching task and waits for its answer.
    async fn update(
        &self,
        record: Record,
        expect_generation: u64,
        expires_in: Duration,
    ) -> Result<StoreReply, RedisStoreError> {
        let stopped = || RedisStoreError::BatchingStopped;
        let (reply, answer) = oneshot::channel();
        let queue = &self.updates[self.layout.queue(&record.client_id)];
        let queued = QueuedUpdate {
            record,
            expect_generation,
            expires_in,
            reply,
        };
        queue.send(queued).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Counts live sessions. For stats and tests, not the hot path: it
    /// walks every key of this store, and it is not a snapshot (sessions
    /// created or ended during the walk may or may not be counted).
    async fn count_live(&self) -> Result<u64, StoreError> {
        let unavailable = |e: RedisStoreError| StoreError::Unavailable(e.to_string());
        let groups = match &self.conn {
            Conn::Cluster(cluster) => self.cluster_keys(&cluster.connection()).await,
            Conn::Single(_) => self.scan_keys().await.map(|keys| vec![keys]),
        }
        .map_err(unavailable)?;
        let mut live = 0;
        // In a cluster, a group is a bucket: its keys share a slot.
        for chunk in groups.iter().flat_map(|keys| keys.chunks(SCAN_BATCH)) {
            let mut inv = SCRIPTS.count_live.prepare_invoke();
            for key in chunk {
                inv.key(key);
            }
            live += bounded("count", self.conn.invoke::<u64>(&inv))
                .await
                .map_err(unavailable)?;
            tokio::time::sleep(COUNT_PACE).await;
        }
        Ok(live)
    }

    /// This store's keys on one Redis, by `SCAN`.
    async fn scan_keys(&self) -> Result<Vec<Vec<u8>>, RedisStoreError> {
        let pattern = format!("{}session:*", glob_escape(&self.layout.prefix));
        // SCAN may return a key more than once: collect into a set.
        let mut keys = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let step = self.conn.query::<(u64, Vec<Vec<u8>>)>(&scan);
            let (next, batch) = bounded("scan", step).await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
            tokio::time::sleep(COUNT_PACE).await;
        }
        Ok(keys.into_iter().collect())
    }

    /// This store's keys in a cluster: bucket by bucket, the keys of the
    /// bucket's slot, asked of the primary that serves it (so every primary
    /// holding a bucket is asked). One list per bucket.
    async fn cluster_keys(
        &self,
        cluster: &redis::cluster_async::ClusterConnection,
    ) -> Result<Vec<Vec<Vec<u8>>>, RedisStoreError> {
        let mut keys = Vec::new();
        for b in 0..BUCKETS {
            let prefix = self.layout.bucket_prefix(b);
            let slot = key_slot(prefix.as_bytes());
            let mut count = redis::cmd("CLUSTER");
            count.arg("COUNTKEYSINSLOT").arg(slot);
            let n: u64 = bounded("count", query_slot_primary(cluster, slot, count)).await?;
            if n == 0 {
                continue;
            }
            let mut get = redis::cmd("CLUSTER");
            get.arg("GETKEYSINSLOT").arg(slot).arg(n);
            let in_slot: Vec<Vec<u8>> =
                bounded("count", query_slot_primary(cluster, slot, get)).await?;
            // Other prefixes' buckets of the same number share the slot.
            keys.push(
                in_slot
                    .into_iter()
                    .filter(|k| k.starts_with(prefix.as_bytes()))
                    .collect(),
            );
            tokio::time::sleep(COUNT_PACE).await;
        }
        Ok(keys)
    }
}

impl RedisStore {
    /// One operation, bounded by the configured operation timeout.
    async fn execute_untraced(&self, op: StoreOp) -> StoreReply {
        let what = match &op {
            StoreOp::Load(_) => "load",
            StoreOp::Create { .. } => "create",
            StoreOp::Update { .. } => "update",
            StoreOp::Delete { .. } => "delete",
        };
        // An update (one per lease per stream) waits on the batching task in a
        // small future; the others (a few per stream) build script calls
        // whose futures are ten times larger, so they are boxed rather than
        // making every update's future that large.
        let run = async {
            match op {
                StoreOp::Update {
                    record,
                    expect_generation,
                    expires_in,
                } => self.update(record, expect_generation, expires_in).await,
                other => Box::pin(self.run(other)).await,
            }
        };
        let limit = self.cfg.operation_timeout;
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => StoreReply::Unavailable(e.to_string()),
            Err(_) => {
                StoreReply::Unavailable(RedisStoreError::TimedOut { what, limit }.to_string())
            }
        }
    }
}

impl SessionStore for RedisStore {
    /// Runs `op` in a span of its own under the stream's (see
    /// [`crate::otel`]), made now: the stream's span is entered while it
    /// asks, not necessarily when the answer comes.
    fn execute(&self, op: StoreOp) -> impl Future<Output = StoreReply> + Send {
        let span = crate::otel::store_span(&op, self.kind());
        let run = self.execute_untraced(op).instrument(span);
        async move {
            let mut run = std::pin::pin!(run);
            let reply = run.as_mut().await;
            crate::otel::store_reply(run.span(), &reply);
            reply
        }
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.count_live().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // One PING, not a count: health asks every second, and counting
        // scans every key.
        bounded("ping", self.conn.query::<String>(&redis::cmd("PING")))
            .await
            .map(drop)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn kind(&self) -> &'static str {
        if self.layout.tagged {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}

/// Runs one script; see [`Conn::invoke`] for its retries.
async fn invoke<T: redis::FromRedisValue>(
    conn: &Conn,
    what: &'static str,
    inv: &ScriptInvocation<'_>,
) -> Result<T, RedisStoreError> {
    conn.invoke(inv)
        .await
        .map_err(|e| RedisStoreError::failed(what, e))
}

/// A batching task: sends its queue's updates, up to [`MAX_BATCH`] per
/// script call, one call at a time, each batch held `linger` after its
/// first update for more to join and failed if not answered within
/// `limit`; ends when every handle to the store is gone.
async fn send_batches(
    conn: Conn,
    layout: Layout,
    remember_us: u64,
    linger: Duration,
    limit: Duration,
    mut queue: mpsc::UnboundedReceiver<QueuedUpdate>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !linger.is_zero() && batch.len() < MAX_BATCH {
            tokio::time::sleep(linger).await;
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
        }
        // A caller that gave up (its operation timed out) is not sent.
        batch.retain(|q: &QueuedUpdate| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut inv = SCRIPTS.update_many.prepare_invoke();
        inv.arg(remember_us);
        for q in &batch {
            inv.key(layout.key(&q.record.client_id))
                .arg(&q.record.to_bytes()[..])
                .arg(q.record.generation.to_string())
                .arg(q.expect_generation.to_string())
                .arg(micros(q.expires_in));
        }
        let call = invoke::<Vec<Vec<Vec<u8>>>>(&conn, "update", &inv);
        let replies = match tokio::time::timeout(limit, call).await {
            Ok(Ok(replies)) if replies.len() == batch.len() => Ok(replies),
            Ok(Ok(replies)) => Err(RedisStoreError::BatchMismatch {
                replies: replies.len(),
                batch: batch.len(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RedisStoreError::TimedOut {
                what: "update",
                limit,
            }),
        };
        match replies {
            Ok(replies) => {
                for (q, reply) in batch.drain(..).zip(replies) {
                    let id = q.record.client_id;
                    let _ = q.reply.send(write_reply("update", &id, &reply));
                }
            }
            Err(e) => {
                for q in batch.drain(..) {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Awaits one Redis command within [`OPERATION_TIMEOUT`].
async fn bounded<T>(
    what: &'static str,
    command: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisStoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, command).await {
        Ok(result) => result.map_err(|e| RedisStoreError::failed(what, e)),
        Err(_) => Err(RedisStoreError::TimedOut {
            what,
            limit: OPERATION_TIMEOUT,
        }),
    }
}

/// A duration in whole microseconds, capped at [`MAX_DURATION_US`].
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(MAX_DURATION_US)
}

/// Splits a script reply into its tag and the rest, turning `corrupt` into
/// an error.
fn split<'a>(
    id: &ClientId,
    reply: &'a [Vec<u8>],
) -> Result<(&'a str, &'a [Vec<u8>]), RedisStoreError> {
    let Some((tag, rest)) = reply.split_first() else {
        return Err(RedisStoreError::EmptyReply);
    };
    let tag = std::str::from_utf8(tag).unwrap_or("?");
    if tag == "corrupt" {
        let reason = rest
            .first()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .unwrap_or_default();
        return Err(RedisStoreError::Unreadable { id: *id, reason });
    }
    Ok((tag, rest))
}

/// The reply of a script that writes.
fn write_reply(
    what: &'static str,
    id: &ClientId,
    reply: &[Vec<u8>],
) -> Result<StoreReply, RedisStoreError> {
    match split(id, reply)? {
        ("done", []) => Ok(StoreReply::Done),
        ("conflict", []) => Ok(StoreReply::Conflict),
        ("expired", []) => Ok(StoreReply::ExpiredOrReplaced),
        ("missing", []) => Ok(StoreReply::Vanished),
        _ => Err(RedisStoreError::unexpected(what, reply)),
    }
}

/// Decodes a stored record, checking it against its key and its
/// `generation` field.
fn decode(id: &ClientId, bytes: &[u8], generation: &[u8]) -> Result<Record, RedisStoreError> {
    let id = *id;
    let record = Record::from_bytes(bytes).ok_or_else(|| {
        if bytes.len() == Record::ENCODED_LEN {
            RedisStoreError::InvalidRecord { id }
        } else {
            RedisStoreError::RecordLength {
                id,
                len: bytes.len(),
                expected: Record::ENCODED_LEN,
            }
        }
    })?;
    if record.client_id != id {
        return Err(RedisStoreError::WrongOwner {
            id,
            owner: record.client_id,
        });
    }
    if record.generation.to_string().as_bytes() != generation {
        return Err(RedisStoreError::GenerationMismatch {
            id,
            field: String::from_utf8_lossy(generation).into_owned(),
            record: record.generation,
        });
    }
    Ok(record)
}

/// Escapes `SCAN MATCH` glob characters so a prefix matches literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_makes_prefix_literal() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn durations_are_capped_microseconds() {
        assert_eq!(micros(Duration::from_millis(300)), 300_000);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
        assert_eq!(micros(Duration::MAX), MAX_DURATION_US);
    }

    #[test]
    fn key_slots_are_redis_clusters() {
        // The examples of the Redis Cluster specification.
        assert_eq!(key_slot(b"123456789"), 0x31c3);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // And redis-rs's routing agrees, for our keys too.
        use redis::cluster_routing::{Route, SlotAddr};
        let layout = Layout {
            prefix: "station:".into(),
            tagged: true,
        };
        for _ in 0..200 {
            let id = ClientId::from_random_bytes(rand::random());
            let key = layout.key(&id);
            assert_eq!(
                Route::new(key_slot(key.as_bytes()), SlotAddr::Master),
                Route::with_key(key.as_bytes(), SlotAddr::Master),
                "{key}"
            );
            let bucket = layout.bucket_prefix(bucket_of(&id));
            assert!(key.starts_with(&bucket), "{key} not under {bucket}");
            assert_eq!(key_slot(key.as_bytes()), key_slot(bucket.as_bytes()));
        }
    }

    #[test]
    fn buckets_are_fixed_and_spread_over_three_primaries() {
        // The bucket of an id never changes: servers of different versions
        // sharing a cluster must agree.
        let id = ClientId::from_random_bytes([7; 16]);
        assert_eq!(bucket_of(&id), 53);
        // redis-cli's three default slot ranges each get about a third.
        let mut per_primary = [0; 3];
        for b in 0..BUCKETS {
            let slot = key_slot(format!("p:{{{b}}}:session:").as_bytes());
            per_primary[usize::from(slot / 5461).min(2)] += 1;
        }
        assert_eq!(per_primary, [21, 22, 21]);
        // Random ids fill every bucket.
        let mut seen = [false; BUCKETS];
        for _ in 0..10_000 {
            seen[bucket_of(&ClientId::from_random_bytes(rand::random()))] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn store_urls_parse() {
        let nodes = |url: &str| match Target::parse(url).expect(url) {
            Target::Cluster(nodes) => nodes
                .iter()
                .map(|n| n.addr().to_string())
                .collect::<Vec<_>>(),
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(
            nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            ["127.0.0.1:7000", "127.0.0.1:7001"]
        );
        assert_eq!(nodes("redis+cluster://h:1/"), ["h:1"]);
        match Target::parse("redis+cluster://u:p%40ss@a:1,b:2/0?protocol=resp3").expect("url") {
            Target::Cluster(n) => {
                assert_eq!(n.len(), 2);
                for node in &n {
                    assert_eq!(node.redis_settings().username(), Some("u"));
                    assert_eq!(node.redis_settings().password(), Some("p@ss"));
                }
            }
            other => panic!("{other:?}"),
        }
        match Target::parse("redis://127.0.0.1:1/0,redis://127.0.0.1:2/0").expect("url") {
            Target::Single(endpoints) => assert_eq!(endpoints.len(), 2),
            other => panic!("{other:?}"),
        }
        for bad in [
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:notaport",
            "redis://a:1,http://b:2",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[tokio::test]
    async fn cluster_prefix_must_not_hold_a_hash_tag() {
        let err = RedisStore::connect(
            "redis+cluster://127.0.0.1:1",
            "a{b}:",
            StoreConfig::default(),
        )
        .await
        .expect_err("a prefix with braces");
        assert!(matches!(err, StoreError::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn malformed_url_is_a_config_error() {
        for url in [
            "not a url",
            "http://127.0.0.1:1/",
            "redis://127.0.0.1:notaport/0",
        ] {
            let err = RedisStore::connect(url, "t:", StoreConfig::default())
                .await
                .expect_err(url);
            assert!(matches!(err, StoreError::Config(_)), "{url}: {err}");
        }
    }
}
