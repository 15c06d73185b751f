//! [`RedisStore`]: sessions in Redis, shared by several servers.
//!
//! # Key layout
//!
//! One hash per session, `{prefix}session:{client id}` (the id in its
//! hyphenated form), with three fields:
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
//! the store share one clock and no server's clock skew matters. A write
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
//! Each [`StoreOp`] runs in a Lua script (`EVALSHA`, loaded on demand by
//! [`redis::Script`]): Redis runs a script without interleaving any other
//! command, so "read the state, compare the generation, write" is a single
//! atomic step, whichever server sends it.
//!
//! # Batching
//!
//! `Update` is the hot path: every stream refreshes its session before each
//! number. Updates from all of a store's streams go to one task, which
//! sends whatever has queued up (at most [`MAX_BATCH`]) as one script call
//! and hands each caller its own answer. The script applies them in order,
//! each with its own compare-and-set, so two updates of one session in a
//! batch behave as if sent one after the other. Nothing waits on a timer:
//! while one call is out, the next batch gathers, so batches grow with the
//! load and a lone update goes at once. One call per batch instead of one
//! per number is what lets a server refresh tens of thousands of sessions
//! a second (BENCHMARKS.md). The keys of a batch may live in different
//! hash slots, so this store needs a single Redis (or a proxy), not Redis
//! Cluster.
//!
//! # Failures
//!
//! Every Redis error, timeout or unreadable stored value becomes
//! [`StoreReply::Unavailable`] with a message saying what failed; nothing
//! here panics on what Redis returns. Connections come from a
//! [`ConnectionManager`], which is created lazily (a server starts while
//! Redis is down) and reconnects by itself after a failure. A write whose
//! answer was lost (connection dropped, timeout) may or may not have been
//! applied: it is reported as `Unavailable` and never retried here, because
//! retrying a compare-and-set that did apply would report a false conflict.
//! Only an operation that failed to *connect* (so was never sent) is retried,
//! once.
//!
//! All deadlines run on tokio's clock: use this store on a runtime whose
//! clock is not paused (a paused clock jumps straight to the timeouts while
//! the runtime waits for Redis).

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, ScriptInvocation};
use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::ClientId;
use tokio::sync::{mpsc, oneshot};

use super::{SessionStore, StoreConfig, StoreError};

/// Each attempt to open a TCP connection to Redis gives up after this.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// A command sent on an open connection gives up after this.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Hard bound on one operation, reconnection attempts included: a dead or
/// unreachable Redis yields `Unavailable` within this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Durations longer than this (ten years) are treated as this, which keeps
/// every timestamp the scripts compute exact in a Lua double (< 2^53 µs).
const MAX_DURATION_US: u64 = 10 * 365 * 24 * 3600 * 1_000_000;
// Until 2096 (4e15 µs after 1970), TIME + expires_in + remember_expired
// stays an exact integer in a Lua double.
const _: () = assert!(4_000_000_000_000_000 + 2 * MAX_DURATION_US < 1 << 53);
/// Keys per `SCAN` step and per counting script in `live_sessions`.
const SCAN_BATCH: usize = 1000;

/// Lua shared by every script: the clock and the three states of a key.
///
/// `state(key, now, remember)` returns `'live'`, `'expired'` or `'missing'`
/// and the hash's fields `{record, generation, expires_at_us}`, or
/// `'corrupt'` and a reason when the key holds something this store did not
/// write. Its rule is `MemoryStore::apply`'s: live before the logical expiry,
/// expired for `remember` after it, missing after that (even if the key's
/// TTL, rounded up to whole milliseconds, has not quite run out).
const PRELUDE: &str = r#"
-- Redis < 5 needs this to allow writes after TIME; later versions always
-- replicate script effects and keep the call only as a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- One HMGET in the common case: the type and existence checks run only
-- when it fails or finds nothing (refreshes run this once per number).
local function state(key, now, remember)
  local f = redis.pcall('HMGET', key, 'record', 'generation', 'expires_at_us')
  if f.err then
    return 'corrupt', 'the key holds a ' .. redis.call('TYPE', key)['ok'] .. ', not a hash'
  end
  if not f[1] and not f[2] and not f[3] then
    if redis.call('EXISTS', key) == 0 then return 'missing' end
    return 'corrupt', 'the hash lacks record, generation and expires_at_us'
  end
  local expires_at = tonumber(f[3])
  if not f[1] or not f[2] or not expires_at then
    return 'corrupt', 'the hash lacks record or generation, or expires_at_us is not a number'
  end
  if now < expires_at then return 'live', f end
  if now < expires_at + remember then return 'expired', f end
  return 'missing', f
end

-- Replaces the key's contents: logical expiry at now + expires_in, key gone
-- remember later. All durations in microseconds; PEXPIRE takes
-- milliseconds, rounded up so the key never dies before its logical end (a
-- zero TTL deletes the key at once, which is what a zero duration means).
local function rewrite(key, record, generation, now, expires_in, remember)
  redis.call('HSET', key, 'record', record, 'generation', generation,
    'expires_at_us', string.format('%.0f', now + expires_in))
  redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((expires_in + remember) / 1000)))
end

-- The incarnation inside a record's bytes (`Record::to_bytes`): Lua
-- compares this 8-byte string exactly, where it could not compare u64s.
local function incarnation(record) return string.sub(record, 73, 80) end

-- As rewrite, for a key that may hold anything (an expired record, or
-- fields this store did not write).
local function put(key, record, generation, now, expires_in, remember)
  redis.call('DEL', key)
  rewrite(key, record, generation, now, expires_in, remember)
end
"#;

/// `StoreOp::Load`.
///
/// KEYS[1] = session key; ARGV[1] = remember_expired (µs).
/// Returns `{'live', record, generation}`, `{'expired'}`, `{'missing'}` or
/// `{'corrupt', reason}`. Writes nothing.
const LOAD: &str = r#"
local st, f = state(KEYS[1], now_us(), tonumber(ARGV[1]))
if st == 'corrupt' then return {st, f} end
if st == 'live' then return {st, f[1], f[2]} end
return {st}
"#;

/// `StoreOp::Create`: insert unless a live record holds the id.
///
/// KEYS[1] = session key; ARGV = record bytes, generation, expires_in (µs),
/// remember_expired (µs). An expired or missing record is replaced.
/// Returns `{'done'}` (also for this very record, byte for byte, written
/// before: a repeated create), `{'exists', record, generation}` (the live record,
/// left untouched) or `{'corrupt', reason}` (nothing written).
const CREATE: &str = r#"
local now = now_us()
local expires_in, remember = tonumber(ARGV[3]), tonumber(ARGV[4])
local st, f = state(KEYS[1], now, remember)
if st == 'corrupt' then return {st, f} end
if st == 'live' then
  if f[1] == ARGV[1] and f[2] == ARGV[2] then return {'done'} end
  return {'exists', f[1], f[2]}
end
put(KEYS[1], ARGV[1], ARGV[2], now, expires_in, remember)
return {'done'}
"#;

/// `StoreOp::Update`, for a batch of sessions: for each, a compare-and-set
/// on the incarnation and generation (a refresh keeps the generation, a
/// takeover bumps it; both look the same here), applied in order. The
/// table is `station_core::store::decide`'s.
///
/// KEYS = the session keys; ARGV[1] = remember_expired (µs), then four
/// arguments per key: new record bytes, its generation, expected
/// generation, expires_in (µs). Writes a record only if it is live, of the
/// new record's incarnation, and its generation equals the expected one
/// (compared as decimal strings, exact for any u64). Returns one reply per
/// key: `{'done'}` (also for a takeover applied before, whose reply was
/// lost: the stored record is byte for byte the new one, holder included), `{'conflict'}` (a newer
/// generation holds it), `{'expired'}` (expired, or another incarnation
/// holds the id), `{'missing'}` or `{'corrupt', reason}`.
const UPDATE_MANY: &str = r#"
local now = now_us()
local remember = tonumber(ARGV[1])
local replies = {}
for i, key in ipairs(KEYS) do
  local a = 2 + (i - 1) * 4
  local st, f = state(key, now, remember)
  if st == 'corrupt' then
    replies[i] = {st, f}
  elseif st == 'missing' then
    replies[i] = {'missing'}
  elseif st ~= 'live' or incarnation(f[1]) ~= incarnation(ARGV[a]) then
    replies[i] = {'expired'}
  elseif f[2] == ARGV[a + 2] then
    -- A live record of ours: its three fields are all there is to replace.
    rewrite(key, ARGV[a], ARGV[a + 1], now, tonumber(ARGV[a + 3]), remember)
    replies[i] = {'done'}
  elseif f[1] == ARGV[a] and f[2] == ARGV[a + 1] then
    -- Exactly the record this write carries, holder included.
    replies[i] = {'done'}
  else
    replies[i] = {'conflict'}
  end
end
return replies
"#;

/// Most updates sent in one script call. Redis runs nothing else while a
/// script runs; at a few microseconds per update this bounds that to about
/// a millisecond.
pub const MAX_BATCH: usize = 256;

/// `StoreOp::Delete`: compare-and-delete on the incarnation and
/// generation.
///
/// KEYS[1] = session key; ARGV = generation, remember_expired (µs),
/// incarnation (its 8 big-endian bytes). Deletes only a live record of that
/// incarnation and generation. Returns `{'done'}` (also when nothing of the
/// incarnation is left: a repeated delete, an expired or lost record),
/// `{'conflict'}` (a newer generation holds it) or `{'corrupt', reason}`.
const DELETE: &str = r#"
local st, f = state(KEYS[1], now_us(), tonumber(ARGV[2]))
if st == 'corrupt' then return {st, f} end
if st ~= 'live' or incarnation(f[1]) ~= ARGV[3] then return {'done'} end
if f[2] ~= ARGV[1] then return {'conflict'} end
redis.call('DEL', KEYS[1])
return {'done'}
"#;

/// `live_sessions`: how many of KEYS are logically live now. Keys that are
/// gone or hold something else are not counted. Writes nothing.
const COUNT_LIVE: &str = r#"
local now = now_us()
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local expires_at = tonumber(redis.call('HGET', key, 'expires_at_us'))
    if expires_at and now < expires_at then n = n + 1 end
  end
end
return n
"#;

/// The scripts, each with its SHA-1 computed once.
struct Scripts {
    load: Script,
    create: Script,
    update_many: Script,
    delete: Script,
    count_live: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
    Scripts {
        load: script(LOAD),
        create: script(CREATE),
        update_many: script(UPDATE_MANY),
        delete: script(DELETE),
        count_live: script(COUNT_LIVE),
    }
});

/// Sessions in Redis, shared by every server pointed at the same Redis and
/// prefix. See the [module docs](self) for the key layout and scripts.
///
/// Cloning is cheap: clones share one multiplexed connection and one
/// batching task for updates.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    cfg: StoreConfig,
    updates: mpsc::UnboundedSender<QueuedUpdate>,
}

/// An update waiting for its batch, and where its answer goes.
struct QueuedUpdate {
    record: Record,
    expect_generation: u64,
    expires_in: Duration,
    reply: oneshot::Sender<Result<StoreReply, String>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl RedisStore {
    /// A store on `url` (`redis://host:port/db`), keys named
    /// `{prefix}session:{client id}`.
    ///
    /// Connecting is lazy: this fails only if the URL or settings are wrong
    /// ([`StoreError::Config`]), never because Redis is down right now. It
    /// does try one `PING` (for at most a second) and logs a warning if Redis
    /// does not answer, so a wrong address shows at startup.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn connect(url: &str, prefix: &str, cfg: StoreConfig) -> Result<Self, StoreError> {
        // The URL may hold a password: the errors below do not repeat it.
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Config(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Few, quick reconnection attempts per failure: the caller's
            // own retries (the client's) are the long-term ones, and each
            // operation must end within OPERATION_TIMEOUT.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| StoreError::Config(format!("Redis connection settings: {e}")))?;
        let prefix: Arc<str> = prefix.into();
        // Unbounded, yet bounded in practice: each stream has at most one
        // store operation in flight.
        let (updates, queue) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(
            conn.clone(),
            prefix.clone(),
            micros(cfg.remember_expired),
            queue,
        ));
        let store = RedisStore {
            conn,
            prefix,
            cfg,
            updates,
        };
        store.probe().await;
        Ok(store)
    }

    /// Logs whether Redis answers a `PING` now; never fails.
    async fn probe(&self) {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(Ok(_)) => tracing::debug!(prefix = %self.prefix, "redis session store connected"),
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
        session_key(&self.prefix, id)
    }

    fn remember_us(&self) -> u64 {
        micros(self.cfg.remember_expired)
    }

    /// Performs `op` without the overall deadline.
    async fn run(&self, op: StoreOp) -> Result<StoreReply, String> {
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
                    _ => return Err(unexpected("load", &reply)),
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
                    _ => Err(unexpected("create", &reply)),
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

    /// Queues an update for the batching task and waits for its answer.
    async fn update(
        &self,
        record: Record,
        expect_generation: u64,
        expires_in: Duration,
    ) -> Result<StoreReply, String> {
        let stopped = || "redis update: the batching task has stopped".to_string();
        let (reply, answer) = oneshot::channel();
        let queued = QueuedUpdate {
            record,
            expect_generation,
            expires_in,
            reply,
        };
        self.updates.send(queued).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Counts live sessions: `SCAN` for this store's keys, then count them
    /// in batches with a script. For stats and tests, not the hot path: it
    /// walks the whole keyspace, and it is not a snapshot (sessions created
    /// or ended during the walk may or may not be counted).
    async fn count_live(&self) -> Result<u64, StoreError> {
        let unavailable = |e: String| StoreError::Unavailable(e);
        let mut conn = self.conn.clone();
        let pattern = format!("{}session:*", glob_escape(&self.prefix));
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
            let step = scan.query_async::<(u64, Vec<Vec<u8>>)>(&mut conn);
            let (next, batch) = bounded("scan", step).await.map_err(unavailable)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        let mut live = 0;
        for chunk in keys.chunks(SCAN_BATCH) {
            let mut inv = SCRIPTS.count_live.prepare_invoke();
            for key in chunk {
                inv.key(key);
            }
            let count = inv.invoke_async::<u64>(&mut conn);
            live += bounded("count", count).await.map_err(unavailable)?;
        }
        Ok(live)
    }
}

impl SessionStore for RedisStore {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        let what = match &op {
            StoreOp::Load(_) => "load",
            StoreOp::Create { .. } => "create",
            StoreOp::Update { .. } => "update",
            StoreOp::Delete { .. } => "delete",
        };
        // An update (one per number sent) waits on the batching task in a
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
        match tokio::time::timeout(OPERATION_TIMEOUT, run).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(message)) => StoreReply::Unavailable(message),
            Err(_) => StoreReply::Unavailable(format!(
                "redis {what}: no answer within {OPERATION_TIMEOUT:?}"
            )),
        }
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        self.count_live().await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The key holding `id`'s session under `prefix`.
fn session_key(prefix: &str, id: &ClientId) -> String {
    format!("{prefix}session:{id}")
}

/// Runs one script, retrying once only if the first attempt could not even
/// connect (so it was certainly not applied).
async fn invoke<T: redis::FromRedisValue>(
    conn: &ConnectionManager,
    what: &str,
    inv: &ScriptInvocation<'_>,
) -> Result<T, String> {
    let mut conn = conn.clone();
    let result = match inv.invoke_async::<T>(&mut conn).await {
        // The manager has started a new connection attempt; a Redis that
        // just came back answers this one.
        Err(e) if e.is_connection_refusal() => inv.invoke_async(&mut conn).await,
        other => other,
    };
    result.map_err(|e| failed(what, &e))
}

/// The batching task: sends queued updates, up to [`MAX_BATCH`] per script
/// call, one call at a time; ends when every handle to the store is gone.
async fn send_batches(
    conn: ConnectionManager,
    prefix: Arc<str>,
    remember_us: u64,
    mut queue: mpsc::UnboundedReceiver<QueuedUpdate>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that gave up (its operation timed out) is not sent.
        batch.retain(|q: &QueuedUpdate| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut inv = SCRIPTS.update_many.prepare_invoke();
        inv.arg(remember_us);
        for q in &batch {
            inv.key(session_key(&prefix, &q.record.client_id))
                .arg(&q.record.to_bytes()[..])
                .arg(q.record.generation.to_string())
                .arg(q.expect_generation.to_string())
                .arg(micros(q.expires_in));
        }
        let call = invoke::<Vec<Vec<Vec<u8>>>>(&conn, "update", &inv);
        let replies = match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
            Ok(Ok(replies)) if replies.len() == batch.len() => Ok(replies),
            Ok(Ok(replies)) => Err(format!(
                "redis update: {} replies to a batch of {}",
                replies.len(),
                batch.len()
            )),
            Ok(Err(message)) => Err(message),
            Err(_) => Err(format!(
                "redis update: no answer within {OPERATION_TIMEOUT:?}"
            )),
        };
        match replies {
            Ok(replies) => {
                for (q, reply) in batch.drain(..).zip(replies) {
                    let id = q.record.client_id;
                    let _ = q.reply.send(write_reply("update", &id, &reply));
                }
            }
            Err(message) => {
                for q in batch.drain(..) {
                    let _ = q.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Awaits one Redis command within [`OPERATION_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    command: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, String> {
    match tokio::time::timeout(OPERATION_TIMEOUT, command).await {
        Ok(result) => result.map_err(|e| failed(what, &e)),
        Err(_) => Err(format!(
            "redis {what}: no answer within {OPERATION_TIMEOUT:?}"
        )),
    }
}

/// A duration in whole microseconds, capped at [`MAX_DURATION_US`].
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(MAX_DURATION_US)
}

fn failed(what: &str, e: &RedisError) -> String {
    if e.is_timeout() {
        format!("redis {what}: no answer within {RESPONSE_TIMEOUT:?}")
    } else {
        format!("redis {what}: {e}")
    }
}

fn unexpected(what: &str, reply: &[Vec<u8>]) -> String {
    let shown: Vec<_> = reply
        .iter()
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    format!("redis {what}: unexpected script reply {shown:?}")
}

/// Splits a script reply into its tag and the rest, turning `corrupt` into
/// an error.
fn split<'a>(id: &ClientId, reply: &'a [Vec<u8>]) -> Result<(&'a str, &'a [Vec<u8>]), String> {
    let Some((tag, rest)) = reply.split_first() else {
        return Err("redis: empty script reply".into());
    };
    let tag = std::str::from_utf8(tag).unwrap_or("?");
    if tag == "corrupt" {
        let reason = rest
            .first()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .unwrap_or_default();
        return Err(format!(
            "stored session {id} is unreadable (not written by this store?): {reason}"
        ));
    }
    Ok((tag, rest))
}

/// The reply of a script that writes.
fn write_reply(what: &str, id: &ClientId, reply: &[Vec<u8>]) -> Result<StoreReply, String> {
    match split(id, reply)? {
        ("done", []) => Ok(StoreReply::Done),
        ("conflict", []) => Ok(StoreReply::Conflict),
        ("expired", []) => Ok(StoreReply::Expired),
        ("missing", []) => Ok(StoreReply::Missing),
        _ => Err(unexpected(what, reply)),
    }
}

/// Decodes a stored record, checking it against its key and its
/// `generation` field.
fn decode(id: &ClientId, bytes: &[u8], generation: &[u8]) -> Result<Record, String> {
    let record = Record::from_bytes(bytes).ok_or_else(|| {
        if bytes.len() == Record::ENCODED_LEN {
            format!("stored session {id} is not a valid record (its count is out of range)")
        } else {
            format!(
                "stored session {id} is not a valid record ({} bytes, expected {})",
                bytes.len(),
                Record::ENCODED_LEN
            )
        }
    })?;
    if record.client_id != *id {
        return Err(format!(
            "stored session under {id}'s key belongs to {}",
            record.client_id
        ));
    }
    if record.generation.to_string().as_bytes() != generation {
        return Err(format!(
            "stored session {id}: generation field {:?} disagrees with the record's {}",
            String::from_utf8_lossy(generation),
            record.generation
        ));
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
