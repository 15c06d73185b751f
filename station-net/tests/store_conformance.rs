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
//! Expiry checks use real time: TTLs of a few seconds at most and real
//! sleeps. Each check either runs on a [`Schedule`], judging an answer only
//! if it came back in time, or has a window of seconds, so that a loaded
//! machine costs time, never a wrong-looking answer. The stores are on
//! tokio's clock (memory) and Redis's clock (redis), both real here.

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

/// A check's real-time schedule, measured from an instant just before the
/// first store call whose timing it judges. A store answer is judged only
/// if it came back before the deadline its expectation depends on; one
/// that came back later (a loaded machine stalled the test or the store)
/// makes the attempt [`Behind`], and the check runs again with fresh
/// records.
struct Schedule(Instant);

/// How many times [`on_schedule`] runs a check that keeps falling behind.
const ATTEMPTS: u32 = 3;

/// An attempt that fell behind its schedule, so its answers prove nothing.
#[derive(Debug)]
struct Behind(String);

impl Schedule {
    fn start() -> Self {
        Schedule(Instant::now())
    }

    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    async fn wait_until(&self, at: Duration) {
        tokio::time::sleep_until(self.0 + at).await;
    }

    /// `answer`, just received, if it came back before `deadline`: only
    /// then may it be judged.
    fn in_time<T>(&self, deadline: Duration, answer: T) -> Result<T, Behind> {
        let now = self.elapsed();
        match now < deadline {
            true => Ok(answer),
            false => Err(Behind(format!(
                "an answer at {now:?}, due before {deadline:?}"
            ))),
        }
    }
}

/// Runs a scheduled check until one attempt stays on schedule, at most
/// [`ATTEMPTS`] times. Between attempts it waits the longest TTL the check
/// gives a record that is not meant to outlive it (`short_ttl`), and a
/// little more, so that an abandoned attempt's records have expired. Every
/// answer an attempt judges is asserted as strictly as without retries.
async fn on_schedule<F, Fut>(short_ttl: Duration, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Behind>>,
{
    let mut behind = Vec::new();
    for n in 1..=ATTEMPTS {
        let Err(Behind(why)) = attempt().await else {
            return;
        };
        eprintln!("attempt {n} of {ATTEMPTS} fell behind its schedule: {why}");
        behind.push(why);
        if n < ATTEMPTS {
            sleep(short_ttl + Duration::from_millis(200)).await;
        }
    }
    panic!("fell behind its schedule in every attempt ({behind:?}); machine too slow?");
}

/// How long the records of the checks on expired records live.
const BRIEF: Duration = Duration::from_millis(100);

/// Creates `rec` to live [`BRIEF`]ly and waits until it has expired. The
/// store remembers it as expired until the returned deadline, at least.
async fn expired<S: SessionStore>(store: &S, rec: Record) -> (Schedule, Duration) {
    let at = Schedule::start();
    assert_eq!(create(store, rec, BRIEF).await, StoreReply::Done);
    // The store ran the create between 0 and `acked`; it expires BRIEF
    // after that.
    let acked = at.elapsed();
    at.wait_until(acked + BRIEF + Duration::from_millis(100))
        .await;
    (at, BRIEF + REMEMBER)
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
    on_schedule(BRIEF, || async {
        let old = record();
        let new = Record {
            client_id: old.client_id,
            ..record()
        };
        let (at, remembered) = expired(&store, old).await;
        let lookup = load(&store, old.client_id).await;
        assert_eq!(at.in_time(remembered, lookup)?, Lookup::Expired);
        let over = create(&store, new, LONG).await;
        assert_eq!(at.in_time(remembered, over)?, StoreReply::Done);
        assert_eq!(load(&store, old.client_id).await, Lookup::Live(new));
        Ok(())
    })
    .await;
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
    on_schedule(BRIEF, || async {
        let rec = record();
        let (at, remembered) = expired(&store, rec).await;
        let refresh = update(&store, rec, 1, LONG).await;
        assert_eq!(
            at.in_time(remembered, refresh)?,
            StoreReply::ExpiredOrReplaced
        );
        let lookup = load(&store, rec.client_id).await;
        assert_eq!(at.in_time(remembered, lookup)?, Lookup::Expired);
        Ok(())
    })
    .await;
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
    on_schedule(BRIEF, || async {
        let old = record();
        let (at, remembered) = expired(&store, old).await;
        let deleted = delete(&store, &old, 1).await;
        assert_eq!(at.in_time(remembered, deleted)?, StoreReply::Done);
        let lookup = load(&store, old.client_id).await;
        assert_eq!(at.in_time(remembered, lookup)?, Lookup::Expired);
        Ok(())
    })
    .await;
}

async fn a_paused_stream_cannot_write_over_a_later_incarnation<S: SessionStore>(store: S) {
    // A stream at generation 1 stalls past the TTL; the client id is
    // reused by a new session, which starts at generation 1 again.
    // Whether the store still remembers it or has forgotten it, the
    // new session's create replaces it: no schedule to keep.
    let old = record();
    expired(&store, old).await;
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
    const TTL: Duration = Duration::from_secs(1);
    on_schedule(TTL, || async {
        let rec = record();
        let at = Schedule::start();
        assert_eq!(create(&store, rec, TTL).await, StoreReply::Done);
        // The store ran the create somewhere between 0 and `acked`, and
        // the record expires TTL after that.
        let acked = at.elapsed();
        at.wait_until(Duration::from_millis(100)).await;
        let before_ttl = load(&store, rec.client_id).await;
        assert_eq!(at.in_time(TTL, before_ttl)?, Lookup::Live(rec));
        // Past the TTL: expired, but remembered as such.
        at.wait_until(acked + TTL + Duration::from_millis(100))
            .await;
        let past_ttl = load(&store, rec.client_id).await;
        assert_eq!(at.in_time(TTL + REMEMBER, past_ttl)?, Lookup::Expired);
        assert_eq!(live(&store).await, 0);
        // Past TTL + remember_expired: forgotten.
        at.wait_until(acked + TTL + REMEMBER + Duration::from_millis(150))
            .await;
        assert_eq!(load(&store, rec.client_id).await, Lookup::Missing);
        // And a new session may take the id.
        assert_eq!(create(&store, rec, LONG).await, StoreReply::Done);
        Ok(())
    })
    .await;
}

async fn refresh_extends_expiry<S: SessionStore>(store: S) {
    const TTL: Duration = Duration::from_secs(2);
    let margin = Duration::from_millis(100);
    on_schedule(TTL, || async {
        let rec = record();
        let at = Schedule::start();
        assert_eq!(create(&store, rec, TTL).await, StoreReply::Done);
        let acked = at.elapsed();
        at.wait_until(TTL / 2).await;
        let refreshed = Record { acked: 1, ..rec };
        let refresh_sent = at.elapsed();
        let refresh = update(&store, refreshed, 1, TTL).await;
        assert_eq!(at.in_time(TTL, refresh)?, StoreReply::Done);
        let refresh_acked = at.elapsed();
        // Past the first TTL, within the second.
        at.wait_until(acked + TTL + margin).await;
        let within_second = load(&store, rec.client_id).await;
        assert_eq!(
            at.in_time(refresh_sent + TTL, within_second)?,
            Lookup::Live(refreshed)
        );
        // Past the second TTL (and within remember_expired after it).
        at.wait_until(refresh_acked + TTL + margin).await;
        let past_second = load(&store, rec.client_id).await;
        assert_eq!(
            at.in_time(refresh_sent + TTL + REMEMBER, past_second)?,
            Lookup::Expired
        );
        Ok(())
    })
    .await;
}

async fn live_sessions_counts_only_live<S: SessionStore>(store: S) {
    // Short, but longer than a count takes: counting is paced, so it does
    // not burst on the store (a cluster's takes tens of milliseconds).
    const SHORT: Duration = Duration::from_secs(1);
    assert_eq!(live(&store).await, 0);
    on_schedule(SHORT, || async {
        // An abandoned attempt's long records are still live.
        let base = live(&store).await;
        let long: Vec<Record> = (0..3).map(|_| record()).collect();
        let [other, checked] = [record(), record()];
        for rec in &long {
            assert_eq!(create(&store, *rec, LONG).await, StoreReply::Done);
        }
        // `other` first, so that it has expired whenever `checked` has.
        let at = Schedule::start();
        assert_eq!(create(&store, other, SHORT).await, StoreReply::Done);
        let checked_sent = at.elapsed();
        assert_eq!(create(&store, checked, SHORT).await, StoreReply::Done);
        let checked_acked = at.elapsed();
        let counted = live(&store).await;
        assert_eq!(at.in_time(SHORT, counted)?, base + 5);
        // Expired, and still remembered.
        at.wait_until(checked_acked + SHORT + Duration::from_millis(100))
            .await;
        let past_short = load(&store, checked.client_id).await;
        assert_eq!(
            at.in_time(checked_sent + SHORT + REMEMBER, past_short)?,
            Lookup::Expired
        );
        // Expired ones are not live, remembered or not.
        assert_eq!(live(&store).await, base + 3);
        assert_eq!(delete(&store, &long[0], 1).await, StoreReply::Done);
        assert_eq!(live(&store).await, base + 2);
        Ok(())
    })
    .await;
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
