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
//! | `record`        | [`Record::to_bytes`](station_core::server::Record::to_bytes), 88 bytes |
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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, ScriptInvocation};
use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::ClientId;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use self::batch::MAX_BATCH;
use self::batch::{send_batches, QueuedUpdate};
use self::conn::{Conn, Target};
use self::error::RedisStoreError;
use self::layout::Layout;
pub use self::layout::{bucket_of, key_slot, BUCKETS};
use self::reply::{decode, split, write_reply};
use self::scripts::SCRIPTS;
use super::{SessionStore, StoreConfig, StoreError};

mod batch;
mod conn;
mod count;
mod error;
mod layout;
mod reply;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_capped_microseconds() {
        assert_eq!(micros(Duration::from_millis(300)), 300_000);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
        assert_eq!(micros(Duration::MAX), MAX_DURATION_US);
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
