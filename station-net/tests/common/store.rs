//! Helpers for the session stores' tests: records, one call per store
//! operation, and private Redis servers.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::{ClientId, Secret};
use station_net::store::{RedisStore, SessionStore, StoreConfig};
use station_net::testkit::{RedisCluster, RedisServer};

/// Short enough that the Expired → Missing step fits in a test, long
/// enough that a check of an expired record lands inside the window on a
/// loaded CI machine (500 ms once missed it by a stall of about 300 ms).
pub const REMEMBER: Duration = Duration::from_secs(2);
/// Long enough never to run out during a test.
pub const LONG: Duration = Duration::from_secs(60);

pub fn store_config() -> StoreConfig {
    StoreConfig {
        remember_expired: REMEMBER,
        operation_timeout: OPERATION_TIMEOUT,
        ..StoreConfig::default()
    }
}

/// The stores' bound on one operation here: what a hung Redis costs.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

pub fn record() -> Record {
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
pub fn taken_over(rec: Record) -> Record {
    Record {
        generation: rec.generation + 1,
        holder: rand::random(),
        ..rec
    }
}

pub async fn load<S: SessionStore>(store: &S, id: ClientId) -> Lookup {
    match store.execute(StoreOp::Load(id)).await {
        StoreReply::Loaded(lookup) => lookup,
        other => panic!("{} load answered {other:?}", store.kind()),
    }
}

pub async fn create<S: SessionStore>(
    store: &S,
    record: Record,
    expires_in: Duration,
) -> StoreReply {
    store.execute(StoreOp::Create { record, expires_in }).await
}

pub async fn update<S: SessionStore>(
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
pub async fn delete<S: SessionStore>(store: &S, rec: &Record, generation: u64) -> StoreReply {
    store
        .execute(StoreOp::Delete {
            client_id: rec.client_id,
            incarnation: rec.incarnation,
            generation,
        })
        .await
}

pub async fn live<S: SessionStore>(store: &S) -> u64 {
    store.live_sessions().await.expect("live_sessions")
}

/// A Redis store on a private server, or `None` (with a loud skip message)
/// when Redis is not installed. Keep the server alive for the whole test.
pub async fn redis_store() -> Option<(RedisServer, RedisStore)> {
    let server = RedisServer::start()?;
    let store = RedisStore::connect(&server.url(), "conformance:", store_config())
        .await
        .expect("connect to the test Redis");
    Some((server, store))
}

/// One cluster for the cluster tests that run at the same time (a cluster
/// takes seconds to form): each test holds it while it runs, with a key
/// prefix of its own, and the last one to finish stops it. A test that
/// starts after that starts another.
pub fn shared_cluster() -> Option<Arc<RedisCluster>> {
    static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return Some(cluster);
    }
    let cluster = Arc::new(RedisCluster::start()?);
    *shared = Arc::downgrade(&cluster);
    Some(cluster)
}
