//! The Lua scripts: every store operation is one script call, so it runs
//! atomically in Redis. They implement `station_core::store::decide`'s table.
//!
//! Each script touches only the keys it is given (`KEYS`), and a batch's
//! keys share a hash slot, so the same scripts run on a single Redis and on
//! Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

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

-- Whether generation `a` is lower than `b`, both u64s in decimal without
-- leading zeros: exact, where tonumber would round past 2^53.
local function older(a, b)
  return #a < #b or (#a == #b and a < b)
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- One HMGET in the common case: the type and existence checks run only
-- when it fails or finds nothing (every lease write runs this).
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
/// on the incarnation and generation (a lease write keeps the generation, a
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
/// holds the id), `{'missing'}` (no record, or an older generation than
/// expected: the store lost writes) or `{'corrupt', reason}`.
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
  elseif older(f[2], ARGV[a + 2]) then
    -- Older than the stream was confirmed to hold: the store lost writes.
    replies[i] = {'missing'}
  else
    replies[i] = {'conflict'}
  end
end
return replies
"#;

/// `StoreOp::Delete`: compare-and-delete on the incarnation and
/// generation.
///
/// KEYS[1] = session key; ARGV = generation, remember_expired (µs),
/// incarnation (its 8 big-endian bytes). Deletes only a live record of that
/// incarnation and generation, or an older one (the store lost the
/// takeover to ours). Returns `{'done'}` (also when nothing of the
/// incarnation is left: a repeated delete, an expired or lost record),
/// `{'conflict'}` (a newer generation holds it) or `{'corrupt', reason}`.
const DELETE: &str = r#"
local st, f = state(KEYS[1], now_us(), tonumber(ARGV[2]))
if st == 'corrupt' then return {st, f} end
if st ~= 'live' or incarnation(f[1]) ~= ARGV[3] then return {'done'} end
if f[2] ~= ARGV[1] and not older(f[2], ARGV[1]) then return {'conflict'} end
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
pub(super) struct Scripts {
    pub(super) load: Script,
    pub(super) create: Script,
    pub(super) update_many: Script,
    pub(super) delete: Script,
    pub(super) count_live: Script,
    /// The source of each, for `SCRIPT LOAD` at start.
    sources: Vec<String>,
}

impl Scripts {
    /// Every script's source.
    pub(super) fn sources(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(String::as_str)
    }
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let sources: Vec<String> = [LOAD, CREATE, UPDATE_MANY, DELETE, COUNT_LIVE]
        .iter()
        .map(|body| format!("{PRELUDE}{body}"))
        .collect();
    let script = |i: usize| Script::new(&sources[i]);
    Scripts {
        load: script(0),
        create: script(1),
        update_many: script(2),
        delete: script(3),
        count_live: script(4),
        sources,
    }
});
