//! End-to-end tests with real processes: several `station server`
//! processes share one private Redis, `station client` processes fail over
//! between them, and the servers or Redis itself die mid-stream.
//!
//! Every test starts its own `redis-server` (skipped, loudly, when it is not
//! installed; an error when `CI` is set), binds everything to 127.0.0.1 on
//! OS-picked ports, bounds every wait, and kills every child it started when
//! it ends, passing or failing.
//!
//! The numbers are checked independently of the client's own verdict: each
//! session's seed is read straight from Redis (raw RESP, not through the
//! store under test) while the session is live, and the expected sum and
//! CRC-32 are recomputed from the seed (`common/redis.rs`, which also holds
//! the helpers shared with no other test file; processes, servers and
//! waits are the harness every e2e test uses, in `common/`).

mod common;

use std::time::{Duration, Instant};

use common::redis::*;
use common::{counter, wait_saved, Server, SHORT};
use station_net::testkit::{RedisCluster, RedisServer};
use uuid::Uuid;

/// Two servers on one Redis, 20 clients given both
/// endpoints; one server is SIGKILLed mid-stream. Every client completes
/// with the exact sequence of its session, on the survivor, and the store
/// ends empty.
#[test]
fn clients_fail_over_when_a_server_is_killed() {
    const CLIENTS: usize = 20;
    // 3 s of numbers at 20 ms: long enough that a loaded machine, slow to
    // start 20 client processes, still kills A mid-stream.
    const COUNT: u32 = 150;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let prefix = "e2e-kill:";
    let mut a = Server::on_redis("server-a", &redis, prefix);
    let b = Server::on_redis("server-b", &redis, prefix);

    let started = Instant::now();
    let (ids, mut clients) = spawn_clients(&a, &b, CLIENTS, COUNT);
    // Each session's seed, to check its numbers independently.
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_record(&redis, prefix, id))
        .collect();
    for record in &records {
        assert_eq!(record.count, COUNT);
    }

    std::thread::sleep(Duration::from_millis(300).saturating_sub(started.elapsed()));
    let on_a = counter(&a.stats(), "attached_streams");
    a.proc.kill();
    let killed_at = started.elapsed();
    assert!(
        on_a > 0,
        "server A had no stream attached when it was killed: nothing was tested"
    );
    assert!(
        killed_at < Duration::from_millis(2500),
        "A was killed only {killed_at:?} after the clients started; streams last about 3 s, \
         so the test may not have cut any (machine too slow?)"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let reconnects = assert_all_verified(&mut clients, &records, deadline);
    let survivor = b.stats();
    assert!(
        counter(&survivor, "sessions_resumed") >= on_a,
        "{on_a} streams were cut on A, but B resumed fewer sessions: {survivor}"
    );
    assert!(
        reconnects >= on_a,
        "{reconnects} reconnects for {on_a} cut streams"
    );
    assert_store_empties(&b, &redis, prefix);
    eprintln!(
        "killed A after {killed_at:?} with {on_a} streams attached; {reconnects} reconnects; \
         all {CLIENTS} clients verified in {:?}",
        started.elapsed()
    );
}

/// Redis is down for 2 s in the middle of the streams of
/// two servers' clients. With a TTL far longer than the outage, every client
/// completes with its exact sequence, and the store ends empty.
#[test]
fn clients_complete_across_a_redis_outage() {
    const CLIENTS: usize = 10;
    const COUNT: u32 = 150; // 3 s of numbers at 20 ms.
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let prefix = "e2e-outage:";
    let a = Server::on_redis("server-a", &redis, prefix);
    let b = Server::on_redis("server-b", &redis, prefix);

    let started = Instant::now();
    let (ids, mut clients) = spawn_clients(&a, &b, CLIENTS, COUNT);
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_record(&redis, prefix, id))
        .collect();

    std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
    let streams = counter(&a.stats(), "attached_streams") + counter(&b.stats(), "attached_streams");
    assert!(
        streams > 0,
        "no stream attached when Redis went down: nothing was tested"
    );
    redis.stop();
    let stopped_at = started.elapsed();
    for client in &mut clients {
        if let Some(done) = client.try_exited() {
            panic!("a client ended before the outage, so it tested nothing:\n{done}");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();

    let deadline = Instant::now() + Duration::from_secs(30);
    let reconnects = assert_all_verified(&mut clients, &records, deadline);
    assert_store_empties(&a, &redis, prefix);
    eprintln!(
        "Redis down from {stopped_at:?} for 2 s with {streams} streams attached; \
         {reconnects} reconnects; all {CLIENTS} clients verified in {:?}",
        started.elapsed()
    );
}

/// A client opens its session on server A and is SIGKILLed
/// mid-stream; A is killed too. Run again with the same state file and only
/// server B, it resumes the same session (not a new one) and completes with
/// the exact sequence of the session's seed.
#[test]
fn crashed_client_resumes_from_its_state_file_on_another_server() {
    const COUNT: u32 = 150; // 3 s of numbers at 20 ms.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let prefix = "e2e-resume:";
    let mut a = Server::on_redis("server-a", &redis, prefix);
    let b = Server::on_redis("server-b", &redis, prefix);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let state = tmp.path().join("client.state");
    let id = Uuid::new_v4();

    let started = Instant::now();
    let mut first = spawn_client_to("client-first", &[&a], COUNT, id, Some(&state));
    let saved = wait_saved(&mut first, &state, SHORT, |n| n > 5);
    first.kill();
    assert_eq!(
        first.try_status().map(|s| s.code()),
        Some(None),
        "killed by a signal"
    );
    assert!(
        saved < u64::from(COUNT),
        "the client was not killed mid-stream"
    );

    let record = stored_record(&redis, prefix, id).expect("the session is in Redis");
    assert_eq!(record.count, COUNT);
    let on_a = a.stats();
    assert_eq!(counter(&on_a, "sessions_opened"), 1, "opened on A: {on_a}");
    a.proc.kill();

    let mut second = spawn_client_to("client-again", &[&b], COUNT, id, Some(&state));
    let out = second.finish(Duration::from_secs(30));
    assert_verified(&out, &record);
    assert!(
        !state.exists(),
        "the state file must be removed after success:\n{out}"
    );
    let on_b = b.stats();
    assert_eq!(
        counter(&on_b, "sessions_opened"),
        0,
        "B opened a new session instead of resuming: {on_b}\n{out}"
    );
    assert!(counter(&on_b, "sessions_resumed") >= 1, "{on_b}\n{out}");
    assert_store_empties(&b, &redis, prefix);
    eprintln!(
        "client killed at next_index {saved}, resumed on B; verified in {:?}",
        started.elapsed()
    );
}

/// The primary that serves the most of a cluster store's buckets under
/// `prefix`, and those bucket slots.
fn busiest_primary(cluster: &RedisCluster, prefix: &str, except: &[u16]) -> (u16, Vec<u16>) {
    use station_net::store::redis::{key_slot, BUCKETS};
    let slots: Vec<u16> = (0..BUCKETS)
        .map(|b| key_slot(format!("{prefix}{{{b}}}:").as_bytes()))
        .collect();
    let topology = cluster.topology().expect("cluster topology");
    topology
        .iter()
        .filter(|n| n.primary && !n.failing && !except.contains(&n.port))
        .map(|n| {
            let mine: Vec<u16> = slots.iter().copied().filter(|&s| n.serves(s)).collect();
            (n.port, mine)
        })
        .max_by_key(|(_, mine)| mine.len())
        .expect("a primary")
}

/// Two servers on a Redis Cluster (three primaries, three
/// replicas), 50 clients at 50 ms a number. While they stream: (a) every
/// bucket slot of one primary migrates to another, keys and all; (b) a
/// replica takes over by `CLUSTER FAILOVER`; (c) a primary is killed
/// (SIGKILL) and its replica takes over by itself. Every client completes
/// with its session's exact sequence, or, only where the cluster lost
/// acknowledged writes, ends saying the store lost its session (never
/// "taken over", never a wrong sequence). Prints how many ended each way.
#[test]
fn cluster_clients_complete_through_resharding_and_failovers() {
    const CLIENTS: usize = 50;
    const COUNT: u32 = 240; // 12 s of numbers at 50 ms.
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let prefix = "e2e-cluster:";
    let a = Server::on_store("server-a", &cluster.url(), prefix, "50ms");
    let b = Server::on_store("server-b", &cluster.url(), prefix, "50ms");

    let started = Instant::now();
    let (ids, mut clients) = spawn_clients(&a, &b, CLIENTS, COUNT);
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_cluster_record(&cluster, prefix, id))
        .collect();
    eprintln!(
        "{CLIENTS} sessions in the cluster after {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1000));

    // (a) Resharding: the busiest primary's bucket slots move away.
    let (from, slots) = busiest_primary(&cluster, prefix, &[]);
    let to = cluster
        .topology()
        .expect("topology")
        .into_iter()
        .find(|n| n.primary && n.port != from)
        .expect("another primary")
        .port;
    let live = running(&mut clients);
    let mut moved = 0;
    for &slot in &slots {
        moved += cluster.migrate_slot(slot, to);
    }
    cluster.wait_healthy(Duration::from_secs(20));
    eprintln!(
        "(a) at {:?}, {live} clients streaming: migrated {} bucket slots ({moved} keys) from {from} to {to}",
        started.elapsed(),
        slots.len()
    );
    assert!(
        live > CLIENTS / 2,
        "most clients ended before the resharding"
    );
    assert!(moved > 0, "no session moved");
    std::thread::sleep(Duration::from_millis(1000));

    // (b) Manual failover of the primary the resharding did not touch (it
    // serves a third of the buckets). Redis 7.0 twice (in CI) left a slot
    // just migrated to a primary unclaimed by its replica once that replica
    // had taken over by `CLUSTER FAILOVER`, while every other node saw it
    // served by the replica: the cluster never agreed again. What this case
    // tests is our clients across a failover, not that Redis bookkeeping.
    let (primary, _) = busiest_primary(&cluster, prefix, &[from, to]);
    let topology = cluster.topology().expect("topology");
    let primary_id = topology
        .iter()
        .find(|n| n.port == primary)
        .expect("the primary")
        .id
        .clone();
    let replica = topology
        .iter()
        .find(|n| n.primary_id.as_deref() == Some(primary_id.as_str()))
        .expect("a replica")
        .port;
    let live = running(&mut clients);
    cluster.manual_failover(replica);
    eprintln!(
        "(b) at {:?}, {live} clients streaming: replica {replica} took over from {primary} (CLUSTER FAILOVER)",
        started.elapsed()
    );
    assert!(live > CLIENTS / 2, "most clients ended before the failover");
    std::thread::sleep(Duration::from_millis(1000));

    // (c) kill -9 of the busiest primary; its replica takes over by itself.
    let (victim, _) = busiest_primary(&cluster, prefix, &[]);
    let live = running(&mut clients);
    let killed_at = started.elapsed();
    let heir = cluster.kill_and_fail_over(victim);
    eprintln!(
        "(c) at {killed_at:?}, {live} clients streaming: killed primary {victim}; {heir:?} took over after {:?}",
        started.elapsed() - killed_at
    );
    assert!(live > CLIENTS / 2, "most clients ended before the kill");

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut verified, mut lost, mut reconnects) = (0, 0, 0);
    for (client, record) in clients.iter_mut().zip(&records) {
        let out = client.finish_by(deadline);
        if out.code == Some(0) {
            let json = assert_verified(&out, record);
            reconnects += json["reconnects"].as_u64().expect("reconnects");
            verified += 1;
        } else {
            let json = out.json();
            let result = json["result"].as_str().unwrap_or_default();
            assert!(
                result.contains("lost by the session store"),
                "a client failed for another reason than a lost session:\n{out}"
            );
            lost += 1;
        }
    }
    eprintln!(
        "cluster e2e: {verified} clients verified their checksum, {lost} were told the store \
         lost their session; {reconnects} reconnects; {:?} in all",
        started.elapsed()
    );
    assert_eq!(verified + lost, CLIENTS);
    assert_cluster_empties(&a, &cluster, prefix);
}

/// How the clients of a Redis restart test ended.
#[derive(Debug, Default)]
struct Ends {
    /// Completed with their session's exact sequence.
    verified: usize,
    /// Told NOT_FOUND: the store lost their session.
    lost: usize,
    /// Told NOT_FOUND: no such session (forgotten) on resuming.
    forgotten: usize,
    /// Sessions whose key was gone right after Redis came back.
    keys_missing: usize,
    /// Clients still streaming when Redis was killed.
    streaming: usize,
}

/// Redis is killed (SIGKILL) while two servers' clients stream,
/// then started again on the same data directory, with `settings` on top
/// of the test server's (AOF on, RDB off). Every client either completes
/// with its exact sequence or ends NOT_FOUND saying the store lost (or
/// forgot) its session: never "taken over", never another sequence.
fn redis_restart_mid_stream(settings: &[&str], label: &str) -> Option<Ends> {
    const CLIENTS: usize = 20;
    const COUNT: u32 = 150; // 3 s of numbers at 20 ms.
    let mut redis = RedisServer::start_with(settings)?;
    let prefix = format!("e2e-restart-{label}:");
    let a = Server::on_redis("server-a", &redis, &prefix);
    let b = Server::on_redis("server-b", &redis, &prefix);
    let started = Instant::now();
    let (ids, mut clients) = spawn_clients(&a, &b, CLIENTS, COUNT);
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_record(&redis, &prefix, id))
        .collect();
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let mut ends = Ends {
        streaming: running(&mut clients),
        ..Ends::default()
    };
    assert!(ends.streaming > 0, "no client was streaming at the kill");
    redis.restart();
    ends.keys_missing = ids
        .iter()
        .filter(|&&id| stored_record(&redis, &prefix, id).is_none())
        .count();
    let deadline = Instant::now() + Duration::from_secs(40);
    for (client, record) in clients.iter_mut().zip(&records) {
        let out = client.finish_by(deadline);
        if out.code == Some(0) {
            assert_verified(&out, record);
            ends.verified += 1;
            continue;
        }
        let result = out.json()["result"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            result.contains("NOT_FOUND"),
            "a client failed otherwise than NOT_FOUND:\n{out}"
        );
        if result.contains("lost by the session store") {
            ends.lost += 1;
        } else if result.contains("forgotten") {
            ends.forgotten += 1;
        } else {
            panic!("NOT_FOUND without saying the session was lost or forgotten:\n{out}");
        }
    }
    eprintln!(
        "redis restart ({label}): {} of {CLIENTS} clients streaming at the kill; {} session keys \
         gone after the restart; clients: {} verified, {} told the store lost the session, {} told \
         it was forgotten; {:?}",
        ends.streaming,
        ends.keys_missing,
        ends.verified,
        ends.lost,
        ends.forgotten,
        started.elapsed()
    );
    Some(ends)
}

/// With `appendfsync always`, Redis writes and fsyncs every write before
/// acknowledging it: a restart loses no session.
#[test]
fn redis_killed_and_restarted_with_aof_always_loses_nothing() {
    let Some(ends) = redis_restart_mid_stream(&["--appendfsync", "always"], "always") else {
        return;
    };
    assert_eq!(ends.keys_missing, 0, "{ends:?}");
    assert_eq!(ends.verified, 20, "{ends:?}");
}

/// With `appendfsync everysec` (Redis's default), a killed process loses
/// what it acknowledged but had not yet written to the file (a machine
/// crash would lose up to a second more); measured and printed.
#[test]
fn redis_killed_and_restarted_with_aof_everysec() {
    let Some(ends) = redis_restart_mid_stream(&["--appendfsync", "everysec"], "everysec") else {
        return;
    };
    assert_eq!(ends.verified + ends.lost + ends.forgotten, 20, "{ends:?}");
}

/// Without persistence a restart loses every session: each client still
/// streaming is told NOT_FOUND, lost or forgotten, and none gets a new
/// session or another sequence.
#[test]
fn redis_restarted_without_persistence_tells_clients_their_session_is_lost() {
    let Some(ends) = redis_restart_mid_stream(&["--appendonly", "no"], "none") else {
        return;
    };
    assert_eq!(ends.keys_missing, 20, "{ends:?}");
    assert_eq!(ends.lost + ends.forgotten, ends.streaming, "{ends:?}");
    assert_eq!(ends.verified, 20 - ends.streaming, "{ends:?}");
}

/// On Redis a delete is never answered at once, so clients half-close
/// after their final ack while it is still in flight. Each of those
/// sessions is a completion, not a rejected request: the server's
/// counters say what the clients saw (every one verified).
#[test]
fn completions_on_redis_are_counted_as_completions() {
    const SESSIONS: u64 = 200;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let prefix = "e2e-complete:";
    let server = Server::on_redis("server", &redis, prefix);
    let out = common::Proc::spawn(
        "load",
        common::station([
            "load",
            "--endpoint",
            &server.endpoint(),
            "--sessions",
            &SESSIONS.to_string(),
            "--count",
            "5",
            "--duration",
            "30s",
        ]),
    )
    .finish(Duration::from_secs(60));
    out.assert_code(0);
    let stats = server.wait_stats(SHORT, "every session settled", |s| {
        s["attached_streams"] == 0 && s["live_sessions"] == 0
    });
    assert_eq!(counter(&stats, "sessions_opened"), SESSIONS, "{stats}");
    assert_eq!(counter(&stats, "sessions_completed"), SESSIONS, "{stats}");
    assert_eq!(counter(&stats, "streams_rejected"), 0, "{stats}");
    assert_store_empties(&server, &redis, prefix);
}
