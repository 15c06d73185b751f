//! Where sessions' keys are: their names, and in a cluster the bucket and
//! hash slot each falls in (the key layout of the [module docs](super)).

use std::hash::Hasher as _;
use std::sync::Arc;

use station_core::ClientId;

/// Buckets of sessions in a cluster: each is one hash slot, so one node
/// holds it and a batch of its updates is one script call.
///
/// 64, because: a cluster spreads sessions over its primaries only as
/// finely as there are buckets, and 64 buckets over 3 to 16 primaries give
/// each primary 4 to 21 of them (slots can be moved to even out the
/// rest); more buckets would cut a server's updates into more, smaller
/// script calls (each call costs Redis about as much as a few updates), so
/// fewer sessions per call under load. The count is part of the key
/// layout: servers sharing a cluster must agree on it, so it is fixed here.
pub const BUCKETS: usize = 64;

/// The bucket of `id` in a cluster: 64-bit FNV-1a over the id's 16 bytes,
/// modulo [`BUCKETS`]. Fixed forever (servers of different versions
/// sharing a cluster must agree): FNV-1a is a named function (the `fnv`
/// crate's), not a hasher that may change, and a test pins a value.
pub fn bucket_of(id: &ClientId) -> usize {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(id.0.as_bytes());
    (hasher.finish() % BUCKETS as u64) as usize
}

/// The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of
/// its hash tag (the text between the first `{` and the next `}`, if not
/// empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// Where sessions' keys are.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub(super) prefix: Arc<str>,
    /// Keys carry a bucket's hash tag (a cluster).
    pub(super) tagged: bool,
}

impl Layout {
    /// How many batching tasks: one per bucket, or one.
    pub(super) fn queues(&self) -> usize {
        if self.tagged {
            BUCKETS
        } else {
            1
        }
    }

    /// Which batching task `id`'s updates go to.
    pub(super) fn queue(&self, id: &ClientId) -> usize {
        if self.tagged {
            bucket_of(id)
        } else {
            0
        }
    }

    /// The key holding `id`'s session.
    pub(super) fn key(&self, id: &ClientId) -> String {
        if self.tagged {
            format!("{}{{{}}}:session:{id}", self.prefix, bucket_of(id))
        } else {
            format!("{}session:{id}", self.prefix)
        }
    }

    /// What every key of bucket `b` starts with (tagged layout).
    pub(super) fn bucket_prefix(&self, b: usize) -> String {
        format!("{}{{{b}}}:session:", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_clusters() {
        // The examples of the Redis Cluster specification.
        assert_eq!(key_slot(b"123456789"), 0x31c3);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // And redis-rs's routing agrees, for our keys too.
        use redis::cluster_routing::{Route, SlotAddr};
        let layout = Layout {
            prefix: "station:".into(),
            tagged: true,
        };
        for _ in 0..200 {
            let id = ClientId::from_random_bytes(rand::random());
            let key = layout.key(&id);
            assert_eq!(
                Route::new(key_slot(key.as_bytes()), SlotAddr::Master),
                Route::with_key(key.as_bytes(), SlotAddr::Master),
                "{key}"
            );
            let bucket = layout.bucket_prefix(bucket_of(&id));
            assert!(key.starts_with(&bucket), "{key} not under {bucket}");
            assert_eq!(key_slot(key.as_bytes()), key_slot(bucket.as_bytes()));
        }
    }

    #[test]
    fn buckets_are_fixed_and_spread_over_three_primaries() {
        // The bucket of an id never changes: servers of different versions
        // sharing a cluster must agree.
        let id = ClientId::from_random_bytes([7; 16]);
        assert_eq!(bucket_of(&id), 53);
        // redis-cli's three default slot ranges each get about a third.
        let mut per_primary = [0; 3];
        for b in 0..BUCKETS {
            let slot = key_slot(format!("p:{{{b}}}:session:").as_bytes());
            per_primary[usize::from(slot / 5461).min(2)] += 1;
        }
        assert_eq!(per_primary, [21, 22, 21]);
        // Random ids fill every bucket.
        let mut seen = [false; BUCKETS];
        for _ in 0..10_000 {
            seen[bucket_of(&ClientId::from_random_bytes(rand::random()))] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
