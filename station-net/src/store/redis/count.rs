//! Counting live sessions (for stats and tests, not the hot path): every
//! key of the store, walked a paced step at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use super::conn::{query_slot_primary, Conn};
use super::error::RedisStoreError;
use super::layout::{key_slot, BUCKETS};
use super::scripts::SCRIPTS;
use super::{bounded, RedisStore, StoreError};

/// Keys per `SCAN` step and per counting script in `live_sessions`.
const SCAN_BATCH: usize = 1000;
/// The pause between two steps of `live_sessions` (a `SCAN`, a bucket's
/// keys, or a counting script of [`SCAN_BATCH`] keys, about a millisecond
/// of Redis each). Counting is a store-wide scan: unpaced, at 40,000
/// sessions it held Redis, and the core it shares with the load, for a
/// burst that every session's numbers felt each time the gauge was sampled
/// (p99 lateness 122.8 ms, against 11.1 ms paced; BENCHMARKS.md).
const COUNT_PACE: Duration = Duration::from_millis(2);

impl RedisStore {
    /// Counts live sessions. For stats and tests, not the hot path: it
    /// walks every key of this store, and it is not a snapshot (sessions
    /// created or ended during the walk may or may not be counted).
    pub(super) async fn count_live(&self) -> Result<u64, StoreError> {
        let unavailable = |e: RedisStoreError| StoreError::Unavailable(e.to_string());
        let groups = match &self.conn {
            Conn::Cluster(cluster) => self.cluster_keys(&cluster.connection()).await,
            Conn::Single(_) => self.scan_keys().await.map(|keys| vec![keys]),
        }
        .map_err(unavailable)?;
        let mut live = 0;
        // In a cluster, a group is a bucket: its keys share a slot.
        for chunk in groups.iter().flat_map(|keys| keys.chunks(SCAN_BATCH)) {
            let mut inv = SCRIPTS.count_live.prepare_invoke();
            for key in chunk {
                inv.key(key);
            }
            live += bounded("count", self.conn.invoke::<u64>(&inv))
                .await
                .map_err(unavailable)?;
            tokio::time::sleep(COUNT_PACE).await;
        }
        Ok(live)
    }

    /// This store's keys on one Redis, by `SCAN`.
    async fn scan_keys(&self) -> Result<Vec<Vec<u8>>, RedisStoreError> {
        let pattern = format!("{}session:*", glob_escape(&self.layout.prefix));
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
            let step = self.conn.query::<(u64, Vec<Vec<u8>>)>(&scan);
            let (next, batch) = bounded("scan", step).await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
            tokio::time::sleep(COUNT_PACE).await;
        }
        Ok(keys.into_iter().collect())
    }

    /// This store's keys in a cluster: bucket by bucket, the keys of the
    /// bucket's slot, asked of the primary that serves it (so every primary
    /// holding a bucket is asked). One list per bucket.
    async fn cluster_keys(
        &self,
        cluster: &redis::cluster_async::ClusterConnection,
    ) -> Result<Vec<Vec<Vec<u8>>>, RedisStoreError> {
        let mut keys = Vec::new();
        for b in 0..BUCKETS {
            let prefix = self.layout.bucket_prefix(b);
            let slot = key_slot(prefix.as_bytes());
            let mut count = redis::cmd("CLUSTER");
            count.arg("COUNTKEYSINSLOT").arg(slot);
            let n: u64 = bounded("count", query_slot_primary(cluster, slot, count)).await?;
            if n == 0 {
                continue;
            }
            let mut get = redis::cmd("CLUSTER");
            get.arg("GETKEYSINSLOT").arg(slot).arg(n);
            let in_slot: Vec<Vec<u8>> =
                bounded("count", query_slot_primary(cluster, slot, get)).await?;
            // Other prefixes' buckets of the same number share the slot.
            keys.push(
                in_slot
                    .into_iter()
                    .filter(|k| k.starts_with(prefix.as_bytes()))
                    .collect(),
            );
            tokio::time::sleep(COUNT_PACE).await;
        }
        Ok(keys)
    }
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
}
