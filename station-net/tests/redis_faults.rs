//! What only Redis can do wrong, against a [`RedisStore`] on a private
//! `redis-server` ([`RedisServer`]; skipped with a loud message when Redis
//! is not installed, an error when `CI` is set): an outage, a hung or late
//! server, a lazy connect, unreadable data, shared servers and prefixes,
//! key TTLs, batched refreshes, and TLS. The contract every store keeps is
//! `store_conformance.rs`'s; resharding and failover are
//! `redis_failover.rs`'s.

use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::store::{RedisStore, SessionStore, StoreConfig, StoreError};
use station_net::testkit::RedisServer;
use tokio::time::{sleep, timeout, Instant};

mod common;

use common::store::{
    create, live, load, record, redis_store, store_config, taken_over, update, LONG,
    OPERATION_TIMEOUT, REMEMBER,
};
use common::Pki;

// ---------------------------------------------------------------------------
// Redis only.
// ---------------------------------------------------------------------------

/// Generous bound for "fails quickly": the store promises about 2 s.
/// Longer than [`OPERATION_TIMEOUT`](common::store::OPERATION_TIMEOUT), by a margin for a loaded machine.
const FAIL_FAST: Duration = Duration::from_secs(3);

fn assert_unavailable(reply: &StoreReply, what: &str) {
    match reply {
        StoreReply::Unavailable(message) => {
            assert!(!message.is_empty(), "{what}: empty message")
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_is_unavailable_then_recovers_with_data() {
    let Some((mut server, store)) = redis_store().await else {
        return;
    };
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);

    server.stop();
    let started = Instant::now();
    let reply = timeout(FAIL_FAST, store.execute(StoreOp::Load(rec.client_id)))
        .await
        .expect("load while Redis is down must not hang");
    assert_unavailable(&reply, "load while down");
    let refresh = StoreOp::Update {
        record: rec,
        expect_generation: 1,
        expires_in: LONG,
    };
    let reply = timeout(FAIL_FAST, store.execute(refresh.clone()))
        .await
        .expect("update while Redis is down must not hang");
    assert_unavailable(&reply, "update while down");
    let count = timeout(FAIL_FAST, store.live_sessions())
        .await
        .expect("live_sessions while Redis is down must not hang");
    assert!(
        matches!(count, Err(StoreError::Unavailable(_))),
        "{count:?}"
    );
    eprintln!("redis down: three failures took {:?}", started.elapsed());

    server.restart();
    // The manager reconnects by itself; at most the first operation after
    // the restart may still fail.
    let deadline = Instant::now() + FAIL_FAST;
    let lookup = loop {
        match timeout(FAIL_FAST, store.execute(StoreOp::Load(rec.client_id)))
            .await
            .expect("load after restart must not hang")
        {
            StoreReply::Loaded(lookup) => break lookup,
            other if Instant::now() < deadline => {
                eprintln!("after restart: {other:?}");
                sleep(Duration::from_millis(50)).await;
            }
            other => panic!("store did not recover after Redis restarted: {other:?}"),
        }
    };
    // Written before the stop, kept by the append-only file.
    assert_eq!(lookup, Lookup::Live(rec));
    assert_eq!(store.execute(refresh).await, StoreReply::Done);
    assert_eq!(live(&store).await, 1);
}

/// Sends `signal` (`"STOP"`, `"CONT"`) to the server process.
fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid().expect("server runs");
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hung_server_times_out_then_recovers() {
    let Some((server, store)) = redis_store().await else {
        return;
    };
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    // A stopped process keeps its sockets open but never answers: the
    // worst case for a client, which only its timeouts end.
    signal(&server, "STOP");
    let started = Instant::now();
    let reply = timeout(FAIL_FAST, store.execute(StoreOp::Load(rec.client_id)))
        .await
        .expect("load from a hung Redis must not hang");
    let took = started.elapsed();
    assert_unavailable(&reply, "load from a hung Redis");
    eprintln!("hung redis: {reply:?} after {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "failed suspiciously fast: {took:?}"
    );
    // A store that first connects while Redis hangs (the kernel accepts
    // the connection, Redis never answers) fails within its bound too.
    let started = Instant::now();
    let fresh = timeout(
        FAIL_FAST,
        RedisStore::connect(&server.url(), "conformance:", store_config()),
    )
    .await
    .expect("connect to a hung Redis must not hang")
    .expect("connect to a hung Redis must not fail");
    let reply = timeout(FAIL_FAST, fresh.execute(StoreOp::Load(rec.client_id)))
        .await
        .expect("first load from a hung Redis must not hang");
    assert_unavailable(&reply, "first load from a hung Redis");
    eprintln!(
        "hung redis, new store: {reply:?} after {:?}",
        started.elapsed()
    );
    signal(&server, "CONT");
    // Once it answers again, so do both stores.
    for store in [&store, &fresh] {
        let deadline = Instant::now() + FAIL_FAST;
        loop {
            match store.execute(StoreOp::Load(rec.client_id)).await {
                StoreReply::Loaded(lookup) => {
                    assert_eq!(lookup, Lookup::Live(rec));
                    break;
                }
                other if Instant::now() < deadline => {
                    eprintln!("after resume: {other:?}");
                    sleep(Duration::from_millis(50)).await;
                }
                other => panic!("store did not recover: {other:?}"),
            }
        }
    }
}

/// A Redis that answers late is waited for, up to the operation timeout:
/// its answer once came after 1 s, past a fixed per-reply bound, and the
/// server then sent the client back to resume again, while Redis still
/// did the first load's work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_late_answer_is_waited_for() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A bound far past the pause, so that a loaded machine, slow to send
    // SIGCONT, does not turn a late answer into a timeout.
    let cfg = StoreConfig {
        operation_timeout: Duration::from_secs(6),
        ..store_config()
    };
    let store = RedisStore::connect(&server.url(), "late:", cfg)
        .await
        .expect("connect to the test Redis");
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    signal(&server, "STOP");
    // Past the old 1 s per reply, well within the store's bound.
    let paused = Duration::from_millis(1300);
    let resume = tokio::spawn(async move {
        sleep(paused).await;
        signal(&server, "CONT");
        server
    });
    let started = Instant::now();
    let load = store.execute(StoreOp::Load(rec.client_id)).await;
    let took = started.elapsed();
    assert_eq!(
        load,
        StoreReply::Loaded(Lookup::Live(rec)),
        "after {took:?}"
    );
    assert!(took >= paused, "answered while stopped? {took:?}");
    // The batched path (a lease renewal) waits too.
    let server = resume.await.expect("the signalling task");
    signal(&server, "STOP");
    let resume = tokio::spawn(async move {
        sleep(paused).await;
        signal(&server, "CONT");
        server
    });
    let refresh = StoreOp::Update {
        record: rec,
        expect_generation: rec.generation,
        expires_in: LONG,
    };
    assert_eq!(store.execute(refresh).await, StoreReply::Done);
    // Dropped only now: dropping stops the server.
    drop(resume.await.expect("the signalling task"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_connect_is_lazy_and_fails_fast_while_down() {
    let Some((mut server, _)) = redis_store().await else {
        return;
    };
    server.stop();
    // Connecting to a Redis that is down succeeds...
    let store = timeout(
        FAIL_FAST,
        RedisStore::connect(&server.url(), "lazy:", store_config()),
    )
    .await
    .expect("connect must not hang")
    .expect("connect must not fail while Redis is down");
    // ...operations fail quickly...
    let rec = record();
    let reply = timeout(FAIL_FAST, create(&store, rec, LONG))
        .await
        .expect("create while Redis is down must not hang");
    assert_unavailable(&reply, "create while down");
    // ...and work once Redis is up.
    server.restart();
    let deadline = Instant::now() + FAIL_FAST;
    loop {
        match create(&store, rec, LONG).await {
            StoreReply::Done => break,
            other if Instant::now() < deadline => {
                eprintln!("after start: {other:?}");
                sleep(Duration::from_millis(50)).await;
            }
            other => panic!("store did not start working: {other:?}"),
        }
    }
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
}

#[tokio::test]
async fn redis_malformed_url_is_a_config_error() {
    for url in [
        "",
        "localhost:6379",
        "http://127.0.0.1:1/",
        "redis://[::1/0",
    ] {
        let result = RedisStore::connect(url, "x:", store_config()).await;
        assert!(
            matches!(result, Err(StoreError::Config(_))),
            "{url:?}: {result:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_unreadable_data_is_unavailable_not_a_panic() {
    let Some((server, store)) = redis_store().await else {
        return;
    };
    let client = ::redis::Client::open(server.url()).expect("valid URL");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let key = |id: ClientId| format!("conformance:session:{id}");
    let set = |args: Vec<Vec<u8>>| {
        let mut cmd = ::redis::Cmd::new();
        for arg in args {
            cmd.arg(arg);
        }
        cmd
    };
    let b = |s: &str| s.as_bytes().to_vec();
    let valid = |rec: &Record| rec.to_bytes().to_vec();
    let far = |now_us: u64| (now_us + 60_000_000).to_string().into_bytes();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64;

    let r1 = record(); // a string, not a hash
    let r2 = record(); // a hash without the fields
    let r3 = record(); // a record of the wrong length
    let r4 = record(); // a record with count 0
    let r5 = record(); // another client's record under this key
    let r6 = record(); // generation field disagrees with the record
    let r7 = record(); // non-numeric expiry
    let bad_count = {
        let mut bytes = valid(&r4);
        bytes[56..60].copy_from_slice(&0u32.to_be_bytes());
        bytes
    };
    let cases: Vec<(Record, Vec<Vec<u8>>)> = vec![
        (r1, vec![b("SET"), b(&key(r1.client_id)), b("garbage")]),
        (r2, vec![b("HSET"), b(&key(r2.client_id)), b("x"), b("y")]),
        (
            r3,
            vec![
                b("HSET"),
                b(&key(r3.client_id)),
                b("record"),
                b("short"),
                b("generation"),
                b("1"),
                b("expires_at_us"),
                far(now_us),
            ],
        ),
        (
            r4,
            vec![
                b("HSET"),
                b(&key(r4.client_id)),
                b("record"),
                bad_count,
                b("generation"),
                b("1"),
                b("expires_at_us"),
                far(now_us),
            ],
        ),
        (
            r5,
            vec![
                b("HSET"),
                b(&key(r5.client_id)),
                b("record"),
                valid(&record()),
                b("generation"),
                b("1"),
                b("expires_at_us"),
                far(now_us),
            ],
        ),
        (
            r6,
            vec![
                b("HSET"),
                b(&key(r6.client_id)),
                b("record"),
                valid(&r6),
                b("generation"),
                b("7"),
                b("expires_at_us"),
                far(now_us),
            ],
        ),
        (
            r7,
            vec![
                b("HSET"),
                b(&key(r7.client_id)),
                b("record"),
                valid(&r7),
                b("generation"),
                b("1"),
                b("expires_at_us"),
                b("soon"),
            ],
        ),
    ];
    for (i, (rec, command)) in cases.into_iter().enumerate() {
        set(command)
            .query_async::<()>(&mut raw)
            .await
            .expect("write test data");
        let reply = store.execute(StoreOp::Load(rec.client_id)).await;
        eprintln!("case {i}: load -> {reply:?}");
        assert_unavailable(&reply, &format!("case {i}: load"));
        // Writes refuse to touch what they cannot read, except where the
        // damage only shows when decoding (then create reports it too).
        let reply = create(&store, rec, LONG).await;
        assert_ne!(
            reply,
            StoreReply::Done,
            "case {i}: create over unreadable data"
        );
        assert_unavailable(&reply, &format!("case {i}: create"));
    }
    // live_sessions skips what it cannot read instead of failing: r3..r6
    // have a future expiry field, so they count; r1, r2, r7 do not.
    assert_eq!(live(&store).await, 4);
    // A healthy session is unaffected.
    let ok = record();
    assert_eq!(create(&store, ok, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, ok.client_id).await, Lookup::Live(ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_servers_share_sessions_and_prefixes_isolate() {
    let Some((server, a)) = redis_store().await else {
        return;
    };
    // A second store on the same Redis and prefix (another server) sees
    // the same sessions; one with another prefix (another deployment, and
    // a prefix full of glob characters) sees none of them.
    let b = RedisStore::connect(&server.url(), "conformance:", store_config())
        .await
        .expect("connect");
    let other = RedisStore::connect(&server.url(), "conf*rm?nce[x]:", store_config())
        .await
        .expect("connect");
    let rec = record();
    assert_eq!(create(&a, rec, LONG).await, StoreReply::Done);
    assert_eq!(load(&b, rec.client_id).await, Lookup::Live(rec));
    let taken = taken_over(rec);
    assert_eq!(update(&b, taken, 1, LONG).await, StoreReply::Done);
    assert_eq!(update(&a, rec, 1, LONG).await, StoreReply::Conflict);
    assert_eq!(load(&other, rec.client_id).await, Lookup::Missing);
    assert_eq!(live(&a).await, 1);
    assert_eq!(live(&other).await, 0);
    assert_eq!(create(&other, rec, LONG).await, StoreReply::Done);
    assert_eq!(live(&other).await, 1);
    assert_eq!(live(&b).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_key_ttl_covers_expiry_plus_remember() {
    let Some((server, store)) = redis_store().await else {
        return;
    };
    let rec = record();
    let ttl = Duration::from_millis(1_000);
    let client = ::redis::Client::open(server.url()).expect("valid URL");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let key = format!("conformance:session:{}", rec.client_id);
    let sent = Instant::now();
    assert_eq!(create(&store, rec, ttl).await, StoreReply::Done);
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    // The key's TTL ran down for at most the time from the create to the
    // PTTL's answer, plus a millisecond for Redis's millisecond clock and
    // the fraction `as_millis` cuts off.
    let ran_down = sent.elapsed().as_millis() as i64 + 1;
    let expected = (ttl + REMEMBER).as_millis() as i64;
    assert!(
        (expected - ran_down..=expected).contains(&pttl),
        "PTTL {pttl} ms, expected {expected} ms less at most {ran_down} ms"
    );
    // The key is a hash with the three documented fields.
    let fields: Vec<String> = ::redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .expect("HKEYS");
    let mut fields = fields;
    fields.sort();
    assert_eq!(fields, ["expires_at_us", "generation", "record"]);
}

/// Script calls Redis has run since the last `CONFIG RESETSTAT`.
fn script_calls(server: &RedisServer) -> u64 {
    let info = server
        .command(&["INFO", "commandstats"])
        .expect("INFO")
        .text()
        .expect("INFO is text");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Between two staggered refreshes: far longer than a local script call,
/// so that without a linger each goes out on its own.
const REFRESH_GAP: Duration = Duration::from_millis(10);

/// Refreshes of `n` sessions arriving [`REFRESH_GAP`] apart: how many
/// script calls they took with `linger`.
async fn calls_for_staggered_refreshes(linger: Duration, n: usize) -> u64 {
    let server = RedisServer::start().expect("redis-server (checked by the caller)");
    let cfg = StoreConfig {
        batch_linger: linger,
        // An update's bound includes its linger.
        operation_timeout: linger + OPERATION_TIMEOUT,
        ..store_config()
    };
    let store = RedisStore::connect(&server.url(), "linger:", cfg)
        .await
        .expect("connect to the test Redis");
    let records: Vec<Record> = (0..n).map(|_| record()).collect();
    for rec in &records {
        assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
    }
    // Loads the script, so the counted calls are the batches alone.
    assert_eq!(update(&store, records[0], 1, LONG).await, StoreReply::Done);
    server.command(&["CONFIG", "RESETSTAT"]).expect("RESETSTAT");
    let mut updates = tokio::task::JoinSet::new();
    for rec in records {
        let store = store.clone();
        updates.spawn(async move { update(&store, rec, 1, LONG).await });
        sleep(REFRESH_GAP).await;
    }
    while let Some(reply) = updates.join_next().await {
        assert_eq!(reply.expect("update task"), StoreReply::Done);
    }
    script_calls(&server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_refreshes_that_arrive_within_the_linger_share_one_script_call() {
    if RedisServer::start().is_none() {
        return;
    }
    // 20 refreshes over ~200 ms: one call with a 1.5 s linger (room for a
    // loaded machine to stall the test); without a linger each goes out on
    // its own, so the count shows the linger at work.
    let with = calls_for_staggered_refreshes(Duration::from_millis(1500), 20).await;
    let without = calls_for_staggered_refreshes(Duration::ZERO, 20).await;
    assert_eq!(with, 1, "script calls with a 1.5 s linger");
    assert!(without > 5, "script calls without a linger: {without}");
}

// ---------------------------------------------------------------------------
// TLS.
// ---------------------------------------------------------------------------

/// `rediss://` to a Redis that speaks only TLS (`--tls-port`, `--port 0`),
/// its certificate verified against a private CA the store is given. A
/// store that does not trust that CA cannot talk to it: verification is
/// real, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_verifies_the_server_against_the_given_ca() {
    let Pki {
        ca_pem: ca,
        cert_pem: cert,
        key_pem: key,
    } = Pki::new();
    let Some(redis) = RedisServer::start_tls(&cert, &key) else {
        return;
    };
    let store = RedisStore::connect_with_ca(
        &redis.tls_url(),
        "tls:",
        store_config(),
        Some(ca.as_bytes()),
    )
    .await
    .expect("valid URL");
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
    let next = Record { acked: 1, ..rec };
    assert_eq!(update(&store, next, 1, LONG).await, StoreReply::Done);
    assert_eq!(live(&store).await, 1);

    let untrusting = RedisStore::connect(&redis.tls_url(), "tls:", store_config())
        .await
        .expect("valid URL");
    let reply = untrusting.execute(StoreOp::Load(rec.client_id)).await;
    eprintln!("without the CA: {reply:?}");
    assert_unavailable(&reply, "load without trusting the CA");
}
