//! Servers on a private Redis or Redis Cluster (the fixtures of
//! `station_net::testkit`), clients given several of them as endpoints, and
//! independent checks of what the clients received: each session's record
//! is read straight from Redis (raw RESP, not through the store under test)
//! and the sequence its seed must give is recomputed here.

use std::path::Path;
use std::time::{Duration, Instant};

use station_core::server::Record;
use station_net::testkit::{command_bytes, RedisCluster, RedisServer, Reply};
use uuid::Uuid;

use super::{assert_no_panic, assert_verified_json, counter, poll, station, Finished, Proc};
use super::{Server, SHORT};

/// Time between two numbers in the servers of [`Server::on_redis`].
pub const INTERVAL: &str = "20ms";

impl Server {
    /// `station server` on `redis`, keys under `prefix`, a number every
    /// [`INTERVAL`].
    pub fn on_redis(name: &str, redis: &RedisServer, prefix: &str) -> Server {
        Server::on_store(name, &redis.url(), prefix, INTERVAL)
    }

    /// `station server` (logging at `info`) on the store at `store_url`,
    /// keys under `prefix`, a number every `interval`, a 30 s TTL, and a
    /// lease of five intervals, as the default 5 s is at 1 s: streams of a
    /// few seconds then write the store mid-stream, and meet its outages,
    /// restarts and failovers as production streams do.
    pub fn on_store(name: &str, store_url: &str, prefix: &str, interval: &str) -> Server {
        let lease = humantime::parse_duration(interval).expect("an interval") * 5;
        let lease = humantime::format_duration(lease).to_string();
        let mut cmd = station([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--store",
            store_url,
            "--redis-prefix",
            prefix,
            "--interval",
            interval,
            "--session-ttl",
            "30s",
            "--lease",
            lease.as_str(),
        ]);
        cmd.env("RUST_LOG", "info");
        Server::spawn(name, cmd)
    }
}

/// `station client --json --client-id ID --count N --give-up-after 30s`
/// (logging at `info`), with an `--endpoint` per server in the order
/// given.
pub fn spawn_client_to(
    name: &str,
    endpoints: &[&Server],
    count: u32,
    id: Uuid,
    state_file: Option<&Path>,
) -> Proc {
    let mut args = vec!["client".to_string(), "--json".into()];
    for server in endpoints {
        args.extend(["--endpoint".into(), server.endpoint()]);
    }
    args.extend(["--count".into(), count.to_string()]);
    args.extend(["--client-id".into(), id.to_string()]);
    args.extend(["--give-up-after".into(), "30s".into()]);
    if let Some(path) = state_file {
        args.extend(["--state-file".into(), path.display().to_string()]);
    }
    let mut cmd = station(&args);
    cmd.env("RUST_LOG", "info");
    Proc::spawn(name, cmd)
}

/// `n` clients of `count` numbers with fresh ids, given both servers,
/// in alternating order so that both get streams. Returns their ids too.
pub fn spawn_clients(a: &Server, b: &Server, n: usize, count: u32) -> (Vec<Uuid>, Vec<Proc>) {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let clients = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let order = if i % 2 == 0 { [a, b] } else { [b, a] };
            spawn_client_to(&format!("client-{i}"), &order, count, id, None)
        })
        .collect();
    (ids, clients)
}

/// How many of `clients` are still running.
pub fn running(clients: &mut [Proc]) -> usize {
    clients
        .iter_mut()
        .map(|c| usize::from(c.try_status().is_none()))
        .sum()
}

/// Waits (until `deadline`, together) for every client, each of which
/// must verify its session (see [`assert_verified`]); returns how many
/// reconnections they made in all.
pub fn assert_all_verified(clients: &mut [Proc], records: &[Record], deadline: Instant) -> u64 {
    let mut reconnects = 0;
    for (client, record) in clients.iter_mut().zip(records) {
        let json = assert_verified(&client.finish_by(deadline), record);
        reconnects += json["reconnects"].as_u64().expect("reconnects");
    }
    reconnects
}

/// The sum and CRC-32 (zlib's, over big-endian u32s) of the sequence a
/// session with this seed must deliver, computed here with `crc32fast`
/// rather than the library's checksum function.
pub fn expected(seed: u64, count: u32) -> (u64, u32) {
    let mut crc = crc32fast::Hasher::new();
    let mut sum = 0u64;
    for i in 0..count {
        let v = station_core::sequence::value(seed, i);
        sum += u64::from(v);
        crc.update(&v.to_be_bytes());
    }
    (sum, crc.finalize())
}

/// Asserts the client verified `record`'s whole sequence (see
/// [`assert_verified_json`]), for `record`'s client id, with the sum and
/// both checksums the session's seed gives, and without panicking.
/// Returns its JSON result.
pub fn assert_verified(out: &Finished, record: &Record) -> serde_json::Value {
    let json = assert_verified_json(out, u64::from(record.count));
    let (sum, crc) = expected(record.seed, record.count);
    assert_eq!(json["client_id"], record.client_id.0.to_string(), "{out}");
    assert_eq!(
        json["sum"], sum,
        "sum differs from the session's sequence:\n{out}"
    );
    assert_eq!(
        json["server_checksum"], crc,
        "server checksum wrong:\n{out}"
    );
    assert_eq!(
        json["client_checksum"], crc,
        "client checksum wrong:\n{out}"
    );
    assert_no_panic(out);
    json
}

/// The record held under `key` by the Redis on `port`: `Ok(None)` if there
/// is none, `Err` for any other reply (a cluster node's `MOVED`).
fn record_at(port: u16, key: &str) -> Result<Option<Record>, String> {
    match command_bytes(port, &[b"HGET", key.as_bytes(), b"record"]) {
        Ok(Reply::Bulk(bytes)) => {
            Ok(Some(Record::from_bytes(&bytes).unwrap_or_else(|| {
                panic!("{key} holds no valid record: {bytes:?}")
            })))
        }
        Ok(Reply::Nil) => Ok(None),
        other => Err(format!("HGET {key} record: {other:?}")),
    }
}

/// The session record Redis holds for `id`, if any.
pub fn stored_record(redis: &RedisServer, prefix: &str, id: Uuid) -> Option<Record> {
    let key = format!("{prefix}session:{id}");
    record_at(redis.port(), &key).unwrap_or_else(|e| panic!("{e}"))
}

/// The session record a Redis Cluster holds for `id`, if any: the node
/// serving the key's slot answers, the others redirect.
pub fn cluster_record(cluster: &RedisCluster, prefix: &str, id: Uuid) -> Option<Record> {
    let bucket = station_net::store::redis::bucket_of(&station_core::ClientId(id));
    let key = format!("{prefix}{{{bucket}}}:session:{id}");
    cluster
        .nodes()
        .iter()
        .filter(|n| n.is_running())
        // MOVED from the nodes that do not serve it.
        .find_map(|node| record_at(node.port(), &key).ok())
        .flatten()
}

/// Waits (bounded) until `lookup` finds `id`'s session, and returns it.
fn wait_for_record(id: Uuid, where_: &str, lookup: impl Fn() -> Option<Record>) -> Record {
    let what = format!("session {id} to appear in {where_}");
    let record = poll(SHORT, Duration::from_millis(10), &what, || {
        lookup().ok_or_else(|| "no record".to_string())
    });
    assert_eq!(record.client_id.0, id, "record under the wrong key");
    record
}

/// Waits (bounded) until Redis holds `id`'s session, and returns it.
pub fn wait_record(redis: &RedisServer, prefix: &str, id: Uuid) -> Record {
    wait_for_record(id, "Redis", || stored_record(redis, prefix, id))
}

/// Waits (bounded) until the cluster holds `id`'s session, and returns it.
pub fn wait_cluster_record(cluster: &RedisCluster, prefix: &str, id: Uuid) -> Record {
    wait_for_record(id, "the cluster", || cluster_record(cluster, prefix, id))
}

/// Every key under `prefix` in the Redis on `port`.
fn keys_at(port: u16, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}*");
    match command_bytes(port, &[b"KEYS", pattern.as_bytes()]) {
        Ok(Reply::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(k) => String::from_utf8_lossy(&k).into_owned(),
                other => panic!("KEYS returned {other:?}"),
            })
            .collect(),
        other => panic!("KEYS {pattern} on {port}: {other:?}"),
    }
}

/// Every key under `prefix` in Redis.
pub fn keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
    keys_at(redis.port(), prefix)
}

/// Waits (bounded) until `server`'s stats report no live session and
/// `keys_left` finds no key: nothing leaked.
fn assert_emptied(server: &Server, keys_left: impl Fn() -> Vec<String>) {
    let what = "the store to empty after every client finished";
    poll(SHORT, Duration::from_millis(100), what, || {
        let stats = server.stats();
        let left = keys_left();
        if counter(&stats, "live_sessions") == 0 && left.is_empty() {
            Ok(())
        } else {
            Err(format!("stats {stats}, keys left {left:?}"))
        }
    })
}

/// Waits (bounded) until `server` reports no live session and Redis holds
/// no key under `prefix`.
pub fn assert_store_empties(server: &Server, redis: &RedisServer, prefix: &str) {
    assert_emptied(server, || keys(redis, prefix))
}

/// Waits (bounded) until `server` reports no live session and no running
/// node of the cluster holds a key under `prefix`.
pub fn assert_cluster_empties(server: &Server, cluster: &RedisCluster, prefix: &str) {
    assert_emptied(server, || {
        cluster
            .nodes()
            .iter()
            .filter(|n| n.is_running())
            .flat_map(|n| keys_at(n.port(), prefix))
            .collect()
    })
}
