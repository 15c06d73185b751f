//! One conformance suite for every [`SessionStore`].
//!
//! Each check is written once, as a generic `async fn check<S: SessionStore>(store: S)`,
//! and the `conformance!` macro at the bottom runs it against a fresh
//! [`MemoryStore`] and against a [`RedisStore`] on its own private
//! `redis-server` ([`RedisServer`]; skipped with a loud message when Redis is
//! not installed, an error when `CI` is set). Redis-only checks (outages,
//! unreadable data) come after.
//!
//! Expiry checks use real time: short TTLs and real sleeps, every test well
//! under a couple of seconds. The stores are on tokio's clock (memory) and
//! Redis's clock (redis), both real here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::{ClientId, Secret};
use station_net::store::{MemoryStore, RedisStore, SessionStore, StoreConfig, StoreError};
use station_net::testing::{RedisCluster, RedisServer, Reply};
use tokio::time::{sleep, timeout, Instant};

/// Short enough that the Expired → Missing step fits in a test.
const REMEMBER: Duration = Duration::from_millis(500);
/// Long enough never to run out during a test.
const LONG: Duration = Duration::from_secs(60);

fn config() -> StoreConfig {
    StoreConfig {
        remember_expired: REMEMBER,
        operation_timeout: OPERATION_TIMEOUT,
        ..StoreConfig::default()
    }
}

/// The stores' bound on one operation here: what a hung Redis costs.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

fn record() -> Record {
    Record {
        client_id: ClientId::from_random_bytes(rand::random()),
        token: Secret(rand::random()),
        nonce: Secret(rand::random()),
        seed: rand::random(),
        count: 1 + rand::random::<u32>() % 0xffff,
        acked: 0,
        generation: 1,
        incarnation: rand::random(),
        holder: rand::random(),
    }
}

/// `rec` as a takeover by another stream writes it: the next generation,
/// and that stream's holder.
fn taken_over(rec: Record) -> Record {
    Record {
        generation: rec.generation + 1,
        holder: rand::random(),
        ..rec
    }
}

async fn load<S: SessionStore>(store: &S, id: ClientId) -> Lookup {
    match store.execute(StoreOp::Load(id)).await {
        StoreReply::Loaded(lookup) => lookup,
        other => panic!("{} load answered {other:?}", store.kind()),
    }
}

async fn create<S: SessionStore>(store: &S, record: Record, expires_in: Duration) -> StoreReply {
    store.execute(StoreOp::Create { record, expires_in }).await
}

async fn update<S: SessionStore>(
    store: &S,
    record: Record,
    expect_generation: u64,
    expires_in: Duration,
) -> StoreReply {
    store
        .execute(StoreOp::Update {
            record,
            expect_generation,
            expires_in,
        })
        .await
}

/// Deletes `rec`'s session at `generation` of its incarnation.
async fn delete<S: SessionStore>(store: &S, rec: &Record, generation: u64) -> StoreReply {
    store
        .execute(StoreOp::Delete {
            client_id: rec.client_id,
            incarnation: rec.incarnation,
            generation,
        })
        .await
}

async fn live<S: SessionStore>(store: &S) -> u64 {
    store.live_sessions().await.expect("live_sessions")
}

/// Sleeps until `at` after `start`, then checks that less than
/// `must_be_before` has passed since `start`: a machine so loaded that the
/// test fell behind its schedule fails with a clear message rather than a
/// wrong-looking store answer.
async fn sleep_until(start: Instant, at: Duration, must_be_before: Duration) {
    tokio::time::sleep_until(start + at).await;
    assert!(
        start.elapsed() < must_be_before,
        "test fell behind its schedule ({:?} > {must_be_before:?}); machine too slow?",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The checks, once, for any store.
// ---------------------------------------------------------------------------

async fn create_then_load<S: SessionStore>(store: S) {
    let rec = record();
    assert_eq!(load(&store, rec.client_id).await, Lookup::Missing);
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
    // Another id is still unknown.
    assert_eq!(load(&store, record().client_id).await, Lookup::Missing);
}

async fn record_fields_round_trip<S: SessionStore>(store: S) {
    // Extreme values of every field survive the store unchanged.
    let rec = Record {
        nonce: Secret::ZERO,
        seed: u64::MAX,
        count: 0xffff,
        acked: 0xffff,
        generation: u64::MAX - 1,
        incarnation: u64::MAX,
        holder: u64::MAX - 2,
        ..record()
    };
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
    // Generations near u64::MAX compare exactly (no float rounding).
    let next = Record {
        generation: u64::MAX,
        holder: 1,
        ..rec
    };
    assert_eq!(
        update(&store, next, u64::MAX - 2, LONG).await,
        StoreReply::Conflict
    );
    assert_eq!(
        update(&store, next, u64::MAX - 1, LONG).await,
        StoreReply::Done
    );
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(next));
}

async fn create_on_live_id_reports_exists<S: SessionStore>(store: S) {
    let first = record();
    let second = Record {
        client_id: first.client_id,
        ..record()
    };
    assert_eq!(create(&store, first, LONG).await, StoreReply::Done);
    assert_eq!(
        create(&store, second, LONG).await,
        StoreReply::Exists(first)
    );
    assert_eq!(load(&store, first.client_id).await, Lookup::Live(first));
}

async fn create_over_expired_record_succeeds<S: SessionStore>(store: S) {
    let old = record();
    let new = Record {
        client_id: old.client_id,
        ..record()
    };
    assert_eq!(
        create(&store, old, Duration::from_millis(100)).await,
        StoreReply::Done
    );
    sleep(Duration::from_millis(200)).await;
    assert_eq!(load(&store, old.client_id).await, Lookup::Expired);
    assert_eq!(create(&store, new, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, old.client_id).await, Lookup::Live(new));
}

async fn update_refreshes_and_takes_over<S: SessionStore>(store: S) {
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    // Refresh: same generation, new contents.
    let refreshed = Record { acked: 5, ..rec };
    assert_eq!(update(&store, refreshed, 1, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(refreshed));
    // Takeover: generation + 1.
    let taken = Record {
        acked: 3,
        ..taken_over(rec)
    };
    assert_eq!(update(&store, taken, 1, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(taken));
    // The new owner refreshes with its own generation.
    let again = Record { acked: 9, ..taken };
    assert_eq!(update(&store, again, 2, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(again));
}

async fn update_with_stale_generation_conflicts<S: SessionStore>(store: S) {
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    let taken = taken_over(rec);
    assert_eq!(update(&store, taken, 1, LONG).await, StoreReply::Done);
    // The old owner's refresh and a second takeover from generation 1 fail.
    let stale = Record { acked: 7, ..rec };
    assert_eq!(update(&store, stale, 1, LONG).await, StoreReply::Conflict);
    let late_takeover = Record {
        acked: 1,
        ..taken_over(rec)
    };
    assert_eq!(
        update(&store, late_takeover, 1, LONG).await,
        StoreReply::Conflict
    );
    // A generation from the future fails too: the store is behind what the
    // stream was confirmed to hold, so it lost writes.
    let future = taken_over(taken);
    assert_eq!(update(&store, future, 3, LONG).await, StoreReply::Missing);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(taken));
}

async fn update_of_missing_or_expired_is_refused<S: SessionStore>(store: S) {
    // Never created: the update must not create it.
    let ghost = record();
    assert_eq!(update(&store, ghost, 1, LONG).await, StoreReply::Missing);
    assert_eq!(load(&store, ghost.client_id).await, Lookup::Missing);
    // Expired: the update must not revive it.
    let rec = record();
    assert_eq!(
        create(&store, rec, Duration::from_millis(100)).await,
        StoreReply::Done
    );
    sleep(Duration::from_millis(200)).await;
    assert_eq!(update(&store, rec, 1, LONG).await, StoreReply::Expired);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Expired);
    // Deleted (or lost by the store): gone, not taken over.
    let gone = record();
    assert_eq!(create(&store, gone, LONG).await, StoreReply::Done);
    assert_eq!(delete(&store, &gone, 1).await, StoreReply::Done);
    assert_eq!(update(&store, gone, 1, LONG).await, StoreReply::Missing);
    assert_eq!(load(&store, gone.client_id).await, Lookup::Missing);
}

async fn delete_checks_generation<S: SessionStore>(store: S) {
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    // An older stream's delete: a newer generation holds the session.
    assert_eq!(delete(&store, &rec, 0).await, StoreReply::Conflict);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
    assert_eq!(delete(&store, &rec, 1).await, StoreReply::Done);
    // Deleted means gone, not expired; deleting again is done (a delete
    // re-sent after its reply was lost).
    assert_eq!(load(&store, rec.client_id).await, Lookup::Missing);
    assert_eq!(delete(&store, &rec, 1).await, StoreReply::Done);
    // An expired record is left as it is (still reported expired), and
    // the delete is done: nothing live of its incarnation is left.
    let old = record();
    assert_eq!(
        create(&store, old, Duration::from_millis(100)).await,
        StoreReply::Done
    );
    sleep(Duration::from_millis(200)).await;
    assert_eq!(delete(&store, &old, 1).await, StoreReply::Done);
    assert_eq!(load(&store, old.client_id).await, Lookup::Expired);
}

async fn a_paused_stream_cannot_write_over_a_later_incarnation<S: SessionStore>(store: S) {
    // A stream at generation 1 stalls past the TTL; the client id is
    // reused by a new session, which starts at generation 1 again.
    let old = record();
    assert_eq!(
        create(&store, old, Duration::from_millis(100)).await,
        StoreReply::Done
    );
    sleep(Duration::from_millis(200)).await;
    let new = Record {
        client_id: old.client_id,
        ..record()
    };
    assert_eq!(create(&store, new, LONG).await, StoreReply::Done);
    // The stalled stream wakes: its refresh, its takeover and its delete
    // must all leave the new session alone.
    let refresh = Record { acked: 3, ..old };
    assert_eq!(update(&store, refresh, 1, LONG).await, StoreReply::Expired);
    assert_eq!(
        update(&store, taken_over(old), 1, LONG).await,
        StoreReply::Expired
    );
    assert_eq!(delete(&store, &old, 1).await, StoreReply::Done);
    assert_eq!(load(&store, new.client_id).await, Lookup::Live(new));
}

async fn a_store_that_lost_writes_says_so_rather_than_taken_over<S: SessionStore>(store: S) {
    // The stream took the session over to generation 3 and the store
    // confirmed it, then lost that write (a failover to a replica that had
    // not seen it): generation 2 is back.
    let rec = record();
    let two = taken_over(rec);
    assert_eq!(create(&store, two, LONG).await, StoreReply::Done);
    let three = taken_over(two);
    let refresh = Record { acked: 4, ..three };
    assert_eq!(update(&store, refresh, 3, LONG).await, StoreReply::Missing);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(two));
    // Its final delete still removes the session: it is complete.
    assert_eq!(delete(&store, &three, 3).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Missing);
}

async fn repeated_writes_apply_once_and_report_no_false_conflict<S: SessionStore>(store: S) {
    // Each write is sent twice, as after a lost reply.
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    let refreshed = Record { acked: 2, ..rec };
    for _ in 0..2 {
        assert_eq!(update(&store, refreshed, 1, LONG).await, StoreReply::Done);
    }
    let taken = Record {
        acked: 1,
        ..taken_over(refreshed)
    };
    for _ in 0..2 {
        assert_eq!(update(&store, taken, 1, LONG).await, StoreReply::Done);
    }
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(taken));
    // A rival takeover to the same generation by another stream is not
    // mistaken for a repeat.
    let rival = taken_over(refreshed);
    assert_eq!(update(&store, rival, 1, LONG).await, StoreReply::Conflict);
    // Nor is the stale stream's refresh, nor a repeat of its own takeover
    // once a newer one followed.
    let newer = taken_over(taken);
    assert_eq!(update(&store, newer, 2, LONG).await, StoreReply::Done);
    assert_eq!(update(&store, taken, 1, LONG).await, StoreReply::Conflict);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(newer));
    for _ in 0..2 {
        assert_eq!(delete(&store, &rec, 3).await, StoreReply::Done);
    }
    assert_eq!(load(&store, rec.client_id).await, Lookup::Missing);
}

async fn expiry_live_then_expired_then_missing<S: SessionStore>(store: S) {
    let rec = record();
    let start = Instant::now();
    assert_eq!(
        create(&store, rec, Duration::from_millis(300)).await,
        StoreReply::Done
    );
    sleep_until(
        start,
        Duration::from_millis(100),
        Duration::from_millis(250),
    )
    .await;
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
    // Past the TTL: expired, but remembered as such.
    sleep_until(
        start,
        Duration::from_millis(400),
        Duration::from_millis(750),
    )
    .await;
    assert_eq!(load(&store, rec.client_id).await, Lookup::Expired);
    assert_eq!(live(&store).await, 0);
    // Past TTL + remember_expired: forgotten.
    sleep_until(
        start,
        Duration::from_millis(300) + REMEMBER + Duration::from_millis(150),
        LONG,
    )
    .await;
    assert_eq!(load(&store, rec.client_id).await, Lookup::Missing);
    // And a new session may take the id.
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
}

async fn refresh_extends_expiry<S: SessionStore>(store: S) {
    let rec = record();
    let ttl = Duration::from_millis(600);
    let start = Instant::now();
    assert_eq!(create(&store, rec, ttl).await, StoreReply::Done);
    sleep_until(
        start,
        Duration::from_millis(300),
        Duration::from_millis(550),
    )
    .await;
    let refreshed = Record { acked: 1, ..rec };
    let refreshed_at = Instant::now();
    assert_eq!(update(&store, refreshed, 1, ttl).await, StoreReply::Done);
    // Past the first TTL, within the second.
    let refresh_ends = refreshed_at + ttl - start;
    let margin = Duration::from_millis(50);
    sleep_until(start, ttl + margin, refresh_ends - margin).await;
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(refreshed));
    // Past the second TTL (and within remember_expired after it).
    sleep_until(
        refreshed_at,
        ttl + Duration::from_millis(100),
        ttl + REMEMBER,
    )
    .await;
    assert_eq!(load(&store, rec.client_id).await, Lookup::Expired);
}

async fn live_sessions_counts_only_live<S: SessionStore>(store: S) {
    assert_eq!(live(&store).await, 0);
    let long: Vec<Record> = (0..3).map(|_| record()).collect();
    let short: Vec<Record> = (0..2).map(|_| record()).collect();
    for rec in &long {
        assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
    }
    // Short, but longer than a count takes: counting is paced, so it does
    // not burst on the store (a cluster's takes tens of milliseconds).
    for rec in &short {
        let reply = create(&store, *rec, Duration::from_secs(1)).await;
        assert_eq!(reply, StoreReply::Done);
    }
    assert_eq!(live(&store).await, 5);
    sleep(Duration::from_millis(1200)).await;
    // Expired ones are remembered but not live.
    assert_eq!(load(&store, short[0].client_id).await, Lookup::Expired);
    assert_eq!(live(&store).await, 3);
    assert_eq!(delete(&store, &long[0], 1).await, StoreReply::Done);
    assert_eq!(live(&store).await, 2);
}

async fn racing_takeovers_have_one_winner<S: SessionStore>(store: S) {
    const RACERS: u32 = 32;
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..RACERS {
        let store = store.clone();
        let mine = Record {
            acked: i,
            ..taken_over(rec)
        };
        tasks.spawn(async move { (i, update(&store, mine, 1, LONG).await) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, reply) = joined.expect("racer task panicked");
        match reply {
            StoreReply::Done => winners.push(i),
            StoreReply::Conflict => {}
            other => panic!("racer {i} got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let Lookup::Live(stored) = load(&store, rec.client_id).await else {
        panic!("the session is gone");
    };
    assert_eq!((stored.acked, stored.generation), (winners[0], 2));
}

async fn concurrent_updates_of_many_sessions_get_their_own_answers<S: SessionStore>(store: S) {
    // More updates at once than a Redis batch holds, half of them stale:
    // however they are grouped, each gets the answer it would alone.
    const SESSIONS: u32 = 300;
    let records: Vec<Record> = (0..SESSIONS).map(|_| record()).collect();
    for rec in &records {
        assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, rec) in records.iter().enumerate() {
        let refreshed = Record {
            acked: i as u32 + 1,
            ..*rec
        };
        // A stream of generation 0, taken over by the one that wrote
        // generation 1.
        let stale = Record {
            acked: 999,
            generation: 0,
            holder: rand::random(),
            ..*rec
        };
        let (a, b) = (store.clone(), store.clone());
        tasks.spawn(async move { (i, true, update(&a, refreshed, 1, LONG).await) });
        tasks.spawn(async move { (i, false, update(&b, stale, 0, LONG).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, fresh, reply) = joined.expect("update task panicked");
        let expected = if fresh {
            StoreReply::Done
        } else {
            StoreReply::Conflict
        };
        assert_eq!(reply, expected, "session {i}, fresh generation: {fresh}");
    }
    for (i, rec) in records.iter().enumerate() {
        let expected = Record {
            acked: i as u32 + 1,
            ..*rec
        };
        assert_eq!(load(&store, rec.client_id).await, Lookup::Live(expected));
    }
}

async fn many_sessions_concurrently_leave_store_empty<S: SessionStore>(store: S) {
    const SESSIONS: usize = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SESSIONS {
        let store = store.clone();
        tasks.spawn(async move {
            let rec = record();
            let id = rec.client_id;
            assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
            let refreshed = Record { acked: 1, ..rec };
            assert_eq!(update(&store, refreshed, 1, LONG).await, StoreReply::Done);
            let taken = taken_over(refreshed);
            assert_eq!(update(&store, taken, 1, LONG).await, StoreReply::Done);
            assert_eq!(load(&store, id).await, Lookup::Live(taken));
            assert_eq!(delete(&store, &rec, 1).await, StoreReply::Conflict);
            assert_eq!(delete(&store, &rec, 2).await, StoreReply::Done);
            id
        });
    }
    let mut ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        ids.push(joined.expect("session task panicked"));
    }
    assert_eq!(ids.len(), SESSIONS);
    assert_eq!(live(&store).await, 0);
    for id in ids {
        assert_eq!(load(&store, id).await, Lookup::Missing);
    }
}

// ---------------------------------------------------------------------------
// Running the checks against every store.
// ---------------------------------------------------------------------------

/// A Redis store on a private server, or `None` (with a loud skip message)
/// when Redis is not installed. Keep the server alive for the whole test.
async fn redis_store() -> Option<(RedisServer, RedisStore)> {
    let server = RedisServer::start()?;
    let store = RedisStore::connect(&server.url(), "conformance:", config())
        .await
        .expect("connect to the test Redis");
    Some((server, store))
}

/// One cluster for the cluster tests that run at the same time (a cluster
/// takes seconds to form): each test holds it while it runs, with a key
/// prefix of its own, and the last one to finish stops it. A test that
/// starts after that starts another.
fn shared_cluster() -> Option<Arc<RedisCluster>> {
    static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return Some(cluster);
    }
    let cluster = Arc::new(RedisCluster::start()?);
    *shared = Arc::downgrade(&cluster);
    Some(cluster)
}

/// A store on the shared cluster, under a prefix no other test uses.
async fn cluster_store() -> Option<(Arc<RedisCluster>, RedisStore)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cluster = tokio::task::spawn_blocking(shared_cluster)
        .await
        .expect("starting the cluster")?;
    let prefix = format!("conformance{}:", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = RedisStore::connect(&cluster.url(), &prefix, config())
        .await
        .expect("valid URL");
    Some((cluster, store))
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store = super::MemoryStore::new(super::config());
                    assert_eq!(super::SessionStore::kind(&store), "memory");
                    super::$check(store).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let Some((_server, store)) = super::redis_store().await else {
                        return;
                    };
                    assert_eq!(super::SessionStore::kind(&store), "redis");
                    super::$check(store).await;
                }
            )*
        }

        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let Some((_cluster, store)) = super::cluster_store().await else {
                        return;
                    };
                    assert_eq!(super::SessionStore::kind(&store), "redis-cluster");
                    super::$check(store).await;
                }
            )*
        }
    };
}

conformance!(
    create_then_load,
    record_fields_round_trip,
    create_on_live_id_reports_exists,
    create_over_expired_record_succeeds,
    update_refreshes_and_takes_over,
    update_with_stale_generation_conflicts,
    update_of_missing_or_expired_is_refused,
    a_paused_stream_cannot_write_over_a_later_incarnation,
    repeated_writes_apply_once_and_report_no_false_conflict,
    a_store_that_lost_writes_says_so_rather_than_taken_over,
    delete_checks_generation,
    expiry_live_then_expired_then_missing,
    refresh_extends_expiry,
    live_sessions_counts_only_live,
    racing_takeovers_have_one_winner,
    concurrent_updates_of_many_sessions_get_their_own_answers,
    many_sessions_concurrently_leave_store_empty,
);

// ---------------------------------------------------------------------------
// Redis only.
// ---------------------------------------------------------------------------

/// Generous bound for "fails quickly": the store promises about 2 s.
/// Longer than [`OPERATION_TIMEOUT`], by a margin for a loaded machine.
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
        RedisStore::connect(&server.url(), "conformance:", config()),
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
    let Some((server, store)) = redis_store().await else {
        return;
    };
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    signal(&server, "STOP");
    // Past the old 1 s per reply, well within the 2 s bound.
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
        RedisStore::connect(&server.url(), "lazy:", config()),
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
        let result = RedisStore::connect(url, "x:", config()).await;
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
    let b = RedisStore::connect(&server.url(), "conformance:", config())
        .await
        .expect("connect");
    let other = RedisStore::connect(&server.url(), "conf*rm?nce[x]:", config())
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
    assert_eq!(create(&store, rec, ttl).await, StoreReply::Done);
    let client = ::redis::Client::open(server.url()).expect("valid URL");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let key = format!("conformance:session:{}", rec.client_id);
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    let expected = (ttl + REMEMBER).as_millis() as i64;
    assert!(
        (expected - 100..=expected).contains(&pttl),
        "PTTL {pttl} ms, expected about {expected} ms"
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

/// Refreshes of `n` sessions arriving 2 ms apart: how many script calls
/// they took with `linger`.
async fn calls_for_staggered_refreshes(linger: Duration, n: usize) -> u64 {
    let server = RedisServer::start().expect("redis-server (checked by the caller)");
    let cfg = StoreConfig {
        batch_linger: linger,
        ..config()
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
        sleep(Duration::from_millis(2)).await;
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
    // 20 refreshes over ~40 ms: one call with a 500 ms linger; without a
    // linger each goes out on its own (a local call takes well under 2 ms),
    // so the count shows the linger at work.
    let with = calls_for_staggered_refreshes(Duration::from_millis(500), 20).await;
    let without = calls_for_staggered_refreshes(Duration::ZERO, 20).await;
    assert_eq!(with, 1, "script calls with a 500 ms linger");
    assert!(without > 5, "script calls without a linger: {without}");
}

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
    match station_net::testing::command(port, &["KEYS", &format!("{prefix}*")]) {
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
    let store = RedisStore::connect(&cluster.url(), prefix, config())
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
            StoreReply::Missing => tally.missing += 1,
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
    let store = RedisStore::connect(&url, "faults:", config())
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
    let store = RedisStore::connect(&url, "pair:", config())
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
        let reply = station_net::testing::command(r, &["REPLICAOF", "127.0.0.1", &p.to_string()]);
        assert!(
            matches!(&reply, Ok(Reply::Status(s)) if s.starts_with("OK")),
            "REPLICAOF on {r}: {reply:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = station_net::testing::command(r, &["INFO", "replication"])
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

// ---------------------------------------------------------------------------
// TLS.
// ---------------------------------------------------------------------------

/// A private CA, and a certificate it signed for localhost and 127.0.0.1
/// (PEM: CA, certificate, key).
fn private_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

/// `rediss://` to a Redis that speaks only TLS (`--tls-port`, `--port 0`),
/// its certificate verified against a private CA the store is given. A
/// store that does not trust that CA cannot talk to it: verification is
/// real, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_verifies_the_server_against_the_given_ca() {
    let (ca, cert, key) = private_pki();
    let Some(redis) = RedisServer::start_tls(&cert, &key) else {
        return;
    };
    let store =
        RedisStore::connect_with_ca(&redis.tls_url(), "tls:", config(), Some(ca.as_bytes()))
            .await
            .expect("valid URL");
    let rec = record();
    assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(rec));
    let next = Record { acked: 1, ..rec };
    assert_eq!(update(&store, next, 1, LONG).await, StoreReply::Done);
    assert_eq!(live(&store).await, 1);

    let untrusting = RedisStore::connect(&redis.tls_url(), "tls:", config())
        .await
        .expect("valid URL");
    let reply = untrusting.execute(StoreOp::Load(rec.client_id)).await;
    eprintln!("without the CA: {reply:?}");
    assert_unavailable(&reply, "load without trusting the CA");
}
