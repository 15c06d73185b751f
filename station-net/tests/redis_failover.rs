//! Redis resharding and failover, against a [`RedisStore`] on private
//! `redis-server`s ([`RedisCluster`], [`RedisServer`]; skipped with a loud
//! message when Redis is not installed, an error when `CI` is set): a
//! cluster spreads and counts sessions, and refreshes survive a slot
//! migration, `NOSCRIPT`, a manual failover and a killed primary; a store
//! given a primary and its replica follows the primary. The contract every
//! store keeps is `store_conformance.rs`'s; the faults of one Redis are
//! `redis_faults.rs`'s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_net::store::{RedisStore, SessionStore};
use station_net::testkit::{RedisCluster, RedisServer, Reply};
use tokio::time::{sleep, Instant};

mod common;

use common::store::{
    create, delete, live, load, record, shared_cluster, store_config, update, LONG,
};

// ---------------------------------------------------------------------------
// Redis Cluster only.
// ---------------------------------------------------------------------------

/// Runs `f` (blocking cluster administration) off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

/// This store's keys on the node on `port` (`KEYS` sees one node only).
fn keys_on(port: u16, prefix: &str) -> Vec<String> {
    match station_net::testkit::command(port, &["KEYS", &format!("{prefix}*")]) {
        Ok(Reply::Array(keys)) => keys.iter().filter_map(Reply::text).collect(),
        other => panic!("KEYS on {port}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_spreads_sessions_over_every_primary_and_counts_them_all() {
    const SESSIONS: usize = 300;
    let Some(cluster) = blocking(shared_cluster).await else {
        return;
    };
    // No other test uses this prefix.
    let prefix = "spread:";
    let store = RedisStore::connect(&cluster.url(), prefix, store_config())
        .await
        .expect("valid URL");
    let records: Vec<Record> = (0..SESSIONS).map(|_| record()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for rec in records.clone() {
        let store = store.clone();
        tasks.spawn(async move {
            assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
            // A refresh, through the batches of the session's bucket.
            let next = Record { acked: 1, ..rec };
            assert_eq!(update(&store, next, 1, LONG).await, StoreReply::Done);
            assert_eq!(load(&store, rec.client_id).await, Lookup::Live(next));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("session task");
    }
    assert_eq!(live(&store).await, SESSIONS as u64);
    // Every primary holds some of them; no replica is written directly.
    let topology = cluster.topology().expect("topology");
    let mut total = 0;
    for node in topology.iter().filter(|n| n.primary) {
        let here = keys_on(node.port, prefix);
        eprintln!("primary {}: {} sessions", node.port, here.len());
        assert!(!here.is_empty(), "primary {} holds no session", node.port);
        total += here.len();
    }
    assert_eq!(total, SESSIONS);
    for rec in &records {
        assert_eq!(delete(&store, rec, 1).await, StoreReply::Done);
    }
    assert_eq!(live(&store).await, 0);
}

/// The hash slots of a cluster store's buckets under `prefix`.
fn bucket_slots(prefix: &str) -> impl Iterator<Item = u16> + '_ {
    use station_net::store::redis::{key_slot, BUCKETS};
    (0..BUCKETS).map(move |b| key_slot(format!("{prefix}{{{b}}}:").as_bytes()))
}

/// What a writer saw: how each refresh ended.
#[derive(Debug, Default)]
struct Tally {
    done: u64,
    unavailable: u64,
    missing: u64,
    /// The last Unavailable's message.
    last_error: String,
}

/// Refreshes every session once, concurrently (each through its bucket's
/// batch), keeping each session's last acknowledged record in `latest`.
/// A refresh must never see a conflict or an expiry: only Done, Missing
/// (the store lost it) or Unavailable.
async fn refresh_all(store: &RedisStore, latest: &mut [Record], tally: &mut Tally) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, rec) in latest.iter().enumerate() {
        let store = store.clone();
        let next = Record {
            acked: (rec.acked + 1).min(rec.count),
            ..*rec
        };
        tasks.spawn(async move { (i, next, update(&store, next, next.generation, LONG).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, next, reply) = done.expect("refresh task");
        match reply {
            StoreReply::Done => {
                tally.done += 1;
                latest[i] = next;
            }
            StoreReply::Unavailable(e) => {
                tally.unavailable += 1;
                tally.last_error = e;
            }
            StoreReply::Vanished => tally.missing += 1,
            other => panic!("refresh of session {i}: {other:?} (a false conflict?)"),
        }
    }
}

/// How the sessions stand: (as last acknowledged, older than that, gone).
async fn audit(store: &RedisStore, latest: &[Record]) -> (usize, usize, usize) {
    let (mut intact, mut older, mut gone) = (0, 0, 0);
    for rec in latest {
        let load = async {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match store.execute(StoreOp::Load(rec.client_id)).await {
                    StoreReply::Unavailable(e) if Instant::now() < deadline => {
                        eprintln!("audit: load of {}: {e}; again", rec.client_id);
                        sleep(Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        };
        match load.await {
            StoreReply::Loaded(Lookup::Live(stored)) if stored == *rec => intact += 1,
            StoreReply::Loaded(Lookup::Live(stored)) => {
                assert_eq!(
                    (stored.incarnation, stored.generation),
                    (rec.incarnation, rec.generation),
                    "a session changed hands"
                );
                assert!(stored.acked < rec.acked, "{stored:?} is ahead of {rec:?}");
                older += 1
            }
            StoreReply::Loaded(Lookup::Missing) => gone += 1,
            other => panic!("load of {}: {other:?}", rec.client_id),
        }
    }
    (intact, older, gone)
}

/// Refreshes until a whole round succeeds (bounded), returning the rounds.
async fn refresh_until_clean(store: &RedisStore, latest: &mut [Record], tally: &mut Tally) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 1.. {
        let before = (tally.unavailable, tally.missing);
        refresh_all(store, latest, tally).await;
        if (tally.unavailable, tally.missing) == before {
            return round;
        }
        assert!(
            Instant::now() < deadline,
            "refreshes still failing 20 s after the fault: {tally:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// Sessions refreshed without pause through a slot migration, `SCRIPT
/// FLUSH` (NOSCRIPT), a manual failover and a primary killed with
/// automatic failover. No refresh ever sees a conflict; after each fault
/// the refreshes come back; nothing is lost except, possibly, at the kill
/// (asynchronous replication), and what was lost is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_refreshes_survive_resharding_noscript_and_failovers() {
    const SESSIONS: usize = 200;
    let Some(cluster) = blocking(RedisCluster::start).await else {
        return;
    };
    let cluster = Arc::new(Mutex::new(cluster));
    let url = cluster.lock().unwrap().url();
    let store = RedisStore::connect(&url, "faults:", store_config())
        .await
        .expect("valid URL");
    let mut latest: Vec<Record> = (0..SESSIONS)
        .map(|_| Record {
            count: 0xffff,
            ..record()
        })
        .collect();
    for rec in &latest {
        assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
    }
    let mut tally = Tally::default();

    // Refreshes run on while each fault happens on a blocking thread.
    async fn during<F: FnOnce() -> String + Send + 'static>(
        store: &RedisStore,
        latest: &mut [Record],
        tally: &mut Tally,
        fault: F,
    ) -> String {
        let fault = tokio::task::spawn_blocking(fault);
        let mut rounds = 0;
        while !fault.is_finished() {
            refresh_all(store, latest, tally).await;
            rounds += 1;
            assert!(rounds < 10_000, "the fault never finished");
            sleep(Duration::from_millis(10)).await;
        }
        let what = fault.await.expect("fault panicked");
        // One more round, from after the fault.
        refresh_all(store, latest, tally).await;
        what
    }

    // (a) Resharding: every bucket slot of the first primary moves to the
    // second, keys and all.
    let primaries: Vec<_> = (cluster.lock().unwrap().topology())
        .expect("topology")
        .into_iter()
        .filter(|n| n.primary)
        .collect();
    let resharded = [primaries[0].port, primaries[1].port];
    let c = cluster.clone();
    let what = during(&store, &mut latest, &mut tally, move || {
        let cluster = c.lock().unwrap();
        let (from, to) = (&primaries[0], &primaries[1]);
        let mut slots = 0;
        let mut keys = 0;
        for slot in bucket_slots("faults:") {
            if from.serves(slot) {
                keys += cluster.migrate_slot(slot, to.port);
                slots += 1;
            }
        }
        assert!(slots > 0 && keys > 0, "nothing migrated");
        cluster.wait_healthy(Duration::from_secs(20));
        format!(
            "migrated {slots} slots ({keys} keys) from {} to {}",
            from.port, to.port
        )
    })
    .await;
    let rounds = refresh_until_clean(&store, &mut latest, &mut tally).await;
    let after_reshard = audit(&store, &latest).await;
    eprintln!("(a) {what}; clean after {rounds} round(s); {tally:?}; (intact, older, gone) = {after_reshard:?}");
    assert_eq!(after_reshard, (SESSIONS, 0, 0), "resharding lost data");
    assert_eq!(live(&store).await, SESSIONS as u64);

    // NOSCRIPT: every node forgets the scripts.
    {
        let cluster = cluster.lock().unwrap();
        for node in cluster.nodes() {
            assert_eq!(
                node.command(&["SCRIPT", "FLUSH"]).expect("SCRIPT FLUSH"),
                Reply::Status("OK".into())
            );
        }
    }
    let before = tally.done;
    refresh_all(&store, &mut latest, &mut tally).await;
    assert_eq!(
        tally.done - before,
        SESSIONS as u64,
        "refreshes after SCRIPT FLUSH: {tally:?}"
    );

    // (b) A manual failover of the primary the resharding did not touch
    // (it serves a third of the buckets). Redis 7.0 once (in CI, and in 1
    // of 12 local runs) left a slot just migrated to a primary assigned to
    // it, now a replica, in some views, after its replica took over: the
    // cluster never agreed again. What this case tests is our refreshes
    // across a failover, not that Redis bookkeeping.
    let c = cluster.clone();
    let what = during(&store, &mut latest, &mut tally, move || {
        let cluster = c.lock().unwrap();
        let topology = cluster.topology().expect("topology");
        let primary = topology
            .iter()
            .find(|n| n.primary && !resharded.contains(&n.port))
            .expect("a third primary")
            .clone();
        let replica = topology
            .iter()
            .find(|n| n.primary_id.as_deref() == Some(&primary.id))
            .expect("the primary has a replica")
            .clone();
        cluster.manual_failover(replica.port);
        format!(
            "replica {} took over from {} (CLUSTER FAILOVER)",
            replica.port, primary.port
        )
    })
    .await;
    let rounds = refresh_until_clean(&store, &mut latest, &mut tally).await;
    let after_manual = audit(&store, &latest).await;
    eprintln!("(b) {what}; clean after {rounds} round(s); {tally:?}; (intact, older, gone) = {after_manual:?}");
    assert_eq!(
        after_manual,
        (SESSIONS, 0, 0),
        "a manual failover lost data"
    );

    // (c) kill -9 of a primary; its replica takes over by itself.
    let c = cluster.clone();
    let missing_before = tally.missing;
    let what = during(&store, &mut latest, &mut tally, move || {
        let mut cluster = c.lock().unwrap();
        let topology = cluster.topology().expect("topology");
        // The primary holding the most buckets.
        let victim = topology
            .iter()
            .filter(|n| n.primary)
            .max_by_key(|n| bucket_slots("faults:").filter(|&s| n.serves(s)).count())
            .expect("a primary")
            .port;
        let heir = cluster.kill_and_fail_over(victim);
        format!("killed primary {victim}; {heir:?} took over")
    })
    .await;
    eprintln!("(c) {what}: {tally:?}");
    let after_kill = audit(&store, &latest).await;
    let rounds = refresh_until_clean(&store, &mut latest, &mut tally).await;
    eprintln!(
        "(c) {what}; clean after {rounds} round(s); {tally:?}; right after: (intact, older, gone) = {after_kill:?}; \
         {} refreshes found their session lost",
        tally.missing - missing_before
    );
    assert_eq!(after_kill.0 + after_kill.1 + after_kill.2, SESSIONS);
    let end = audit(&store, &latest).await;
    eprintln!("end: (intact, older, gone) = {end:?}; {tally:?}");
    assert_eq!(
        end.1, 0,
        "refreshes after the failover did not repair older records"
    );
    assert_eq!(end.0 + end.2, SESSIONS);
    assert_eq!(live(&store).await, end.0 as u64);
}

// ---------------------------------------------------------------------------
// A primary and its replica, given as two endpoints.
// ---------------------------------------------------------------------------

/// Makes `server` a primary (`REPLICAOF NO ONE`), as an operator would.
fn promote(server: &RedisServer) {
    let reply = server.command(&["REPLICAOF", "NO", "ONE"]);
    assert!(
        matches!(&reply, Ok(Reply::Status(s)) if s.starts_with("OK")),
        "REPLICAOF NO ONE on {}: {reply:?}",
        server.port()
    );
}

/// Waits until the primary on `primary` has handed every write to its
/// replica (`WAIT 1`), so a role swap loses nothing.
fn wait_replicated(primary: &RedisServer) {
    let reply = primary.command(&["WAIT", "1", "5000"]);
    assert_eq!(reply, Ok(Reply::Int(1)), "WAIT on {}", primary.port());
}

/// A store given a primary and its replica follows the primary through a
/// role swap (the old primary, now a replica, answers `READONLY`) and
/// through a crash of the primary after which an operator promotes the
/// replica (`REPLICAOF NO ONE`): each time the store asks both endpoints
/// for their role and moves to the primary, and sessions carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_follows_the_primary_among_its_endpoints() {
    const SESSIONS: usize = 20;
    let Some(one) = RedisServer::start() else {
        return;
    };
    let mut two = RedisServer::start().expect("a second redis-server");
    blocking_replicate(&two, &one).await;
    let url = format!("{},{}", one.url(), two.url());
    let store = RedisStore::connect(&url, "pair:", store_config())
        .await
        .expect("valid URL");
    let mut latest: Vec<Record> = (0..SESSIONS).map(|_| record()).collect();
    for rec in &latest {
        assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
    }
    let mut tally = Tally::default();
    refresh_all(&store, &mut latest, &mut tally).await;
    assert_eq!(tally.done, SESSIONS as u64, "{tally:?}");

    // Role swap: `two` becomes the primary, `one` its replica. The store
    // still writes to `one`, which now answers READONLY.
    wait_replicated(&one);
    promote(&two);
    blocking_replicate(&one, &two).await;
    let before = tally.done;
    refresh_all(&store, &mut latest, &mut tally).await;
    eprintln!("after the role swap: {tally:?}");
    assert_eq!(
        tally.done - before,
        SESSIONS as u64,
        "every refresh after the role swap should find the new primary: {tally:?}"
    );
    assert_eq!(audit(&store, &latest).await, (SESSIONS, 0, 0));

    // The primary (`two`) crashes; the operator promotes `one`.
    wait_replicated(&two);
    two.stop();
    promote(&one);
    let rounds = refresh_until_clean(&store, &mut latest, &mut tally).await;
    eprintln!("after the crash and promotion: clean after {rounds} round(s); {tally:?}");
    assert_eq!(audit(&store, &latest).await, (SESSIONS, 0, 0));
    assert_eq!(live(&store).await, SESSIONS as u64);
    // Nothing was ever answered as a conflict or an expiry: refresh_all
    // panics on those.
}

async fn blocking_replicate(replica: &RedisServer, primary: &RedisServer) {
    // Sync takes a moment; the runtime's threads need not wait on it.
    let (r, p) = (replica.port(), primary.port());
    tokio::task::spawn_blocking(move || {
        let reply = station_net::testkit::command(r, &["REPLICAOF", "127.0.0.1", &p.to_string()]);
        assert!(
            matches!(&reply, Ok(Reply::Status(s)) if s.starts_with("OK")),
            "REPLICAOF on {r}: {reply:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = station_net::testkit::command(r, &["INFO", "replication"])
                .ok()
                .and_then(|r| r.text())
                .unwrap_or_default();
            if info.contains("master_link_status:up") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{r} did not sync with {p} within 10 s: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("replication set-up");
}
