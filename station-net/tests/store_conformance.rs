//! One conformance suite for every [`SessionStore`]: the same contract
//! checked against each store.
//!
//! Each check is written once, as a generic `async fn check<S: SessionStore>(store: S)`,
//! and the `conformance!` macro at the bottom runs it against a fresh
//! [`MemoryStore`], against a [`RedisStore`] on its own private
//! `redis-server` ([`RedisServer`]), and against a Redis Cluster (skipped
//! with a loud message when Redis is not installed, an error when `CI` is
//! set). What only Redis can do wrong (outages, resharding, failover, TLS)
//! is `redis_faults.rs`'s.
//!
//! Expiry checks use real time: short TTLs and real sleeps, every test
//! under three seconds, each check on a schedule or with a window of
//! seconds, so a loaded machine does not turn one into a wrong answer. The stores are on tokio's clock (memory) and
//! Redis's clock (redis), both real here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreReply};
use station_core::Secret;
use station_net::store::{MemoryStore, RedisStore, SessionStore};
use station_net::testkit::RedisCluster;
use tokio::time::{sleep, Instant};

mod common;

use common::store::{
    create, delete, live, load, record, redis_store, shared_cluster, store_config, taken_over,
    update, LONG, REMEMBER,
};

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
    assert_eq!(update(&store, future, 3, LONG).await, StoreReply::Vanished);
    assert_eq!(load(&store, rec.client_id).await, Lookup::Live(taken));
}

async fn update_of_missing_or_expired_is_refused<S: SessionStore>(store: S) {
    // Never created: the update must not create it.
    let ghost = record();
    assert_eq!(update(&store, ghost, 1, LONG).await, StoreReply::Vanished);
    assert_eq!(load(&store, ghost.client_id).await, Lookup::Missing);
    // Expired: the update must not revive it.
    let rec = record();
    assert_eq!(
        create(&store, rec, Duration::from_millis(100)).await,
        StoreReply::Done
    );
    sleep(Duration::from_millis(200)).await;
    assert_eq!(
        update(&store, rec, 1, LONG).await,
        StoreReply::ExpiredOrReplaced
    );
    assert_eq!(load(&store, rec.client_id).await, Lookup::Expired);
    // Deleted (or lost by the store): gone, not taken over.
    let gone = record();
    assert_eq!(create(&store, gone, LONG).await, StoreReply::Done);
    assert_eq!(delete(&store, &gone, 1).await, StoreReply::Done);
    assert_eq!(update(&store, gone, 1, LONG).await, StoreReply::Vanished);
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
    assert_eq!(
        update(&store, refresh, 1, LONG).await,
        StoreReply::ExpiredOrReplaced
    );
    assert_eq!(
        update(&store, taken_over(old), 1, LONG).await,
        StoreReply::ExpiredOrReplaced
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
    assert_eq!(update(&store, refresh, 3, LONG).await, StoreReply::Vanished);
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
    // Short, but longer than a count takes: counting is paced, so it does
    // not burst on the store (a cluster's takes tens of milliseconds).
    const SHORT: Duration = Duration::from_secs(1);
    assert_eq!(live(&store).await, 0);
    let long: Vec<Record> = (0..3).map(|_| record()).collect();
    let [other, checked] = [record(), record()];
    for rec in &long {
        assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
    }
    // `other` first, so that it has expired whenever `checked` has; the
    // schedule runs from `checked`'s create, which is what the remembered
    // window is measured from, not from a count of unknown length.
    assert_eq!(create(&store, other, SHORT).await, StoreReply::Done);
    let sent = Instant::now();
    assert_eq!(create(&store, checked, SHORT).await, StoreReply::Done);
    let acked = sent.elapsed();
    let counted = live(&store).await;
    assert!(
        sent.elapsed() < SHORT,
        "test fell behind its schedule ({:?} > {SHORT:?}); machine too slow?",
        sent.elapsed()
    );
    assert_eq!(counted, 5);
    // Expired (after the create was acknowledged), and still remembered
    // (before REMEMBER has passed since it was sent).
    sleep_until(
        sent,
        acked + SHORT + Duration::from_millis(100),
        SHORT + REMEMBER - Duration::from_millis(50),
    )
    .await;
    assert_eq!(load(&store, checked.client_id).await, Lookup::Expired);
    // Expired ones are not live, remembered or not.
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

/// A store on the shared cluster, under a prefix no other test uses.
async fn cluster_store() -> Option<(Arc<RedisCluster>, RedisStore)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cluster = tokio::task::spawn_blocking(shared_cluster)
        .await
        .expect("starting the cluster")?;
    let prefix = format!("conformance{}:", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = RedisStore::connect(&cluster.url(), &prefix, store_config())
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
                    let store = super::MemoryStore::new(super::store_config());
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
