//! [`RedisStoreError`]: what can go wrong in the Redis store, as facts.
//!
//! The store's callers take text ([`StoreReply::Unavailable`] and
//! [`StoreError`](crate::store::StoreError) carry a `String`), so each
//! error becomes its message once, where it leaves the store; inside, the
//! variants say which failure it was.
//!
//! [`StoreReply::Unavailable`]: station_core::server::StoreReply::Unavailable

use std::time::Duration;

use station_core::ClientId;

/// A failure of the Redis store. Messages never repeat a store URL (it
/// may hold a password).
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum RedisStoreError {
    // --- Settings: the URL or the store's configuration is wrong. ---
    /// The store URL is empty.
    #[error("the Redis URL is empty")]
    EmptyUrl,
    /// One of the comma-separated URLs of a Redis and its replicas does
    /// not parse (`endpoint` counts from 1).
    #[error("invalid Redis URL (endpoint {endpoint}): {source}")]
    BadEndpoint {
        endpoint: usize,
        source: redis::RedisError,
    },
    /// A cluster URL names no host.
    #[error("a cluster URL needs at least one host:port")]
    NoClusterNode,
    /// A cluster URL's list of hosts has an empty entry (`node` counts
    /// from 1).
    #[error("cluster URL: node {node} is empty")]
    EmptyClusterNode { node: usize },
    /// A node of a cluster URL does not parse (`node` counts from 1).
    #[error("invalid cluster node {node} in the Redis URL: {source}")]
    BadClusterNode {
        node: usize,
        source: redis::RedisError,
    },
    /// redis-rs refused the settings of one Redis (TLS, for one).
    #[error("Redis connection settings: {0}")]
    Settings(#[source] redis::RedisError),
    /// redis-rs refused the settings of a cluster.
    #[error("Redis Cluster settings: {0}")]
    ClusterSettings(#[source] redis::RedisError),
    /// A single-Redis URL with no endpoint.
    #[error("no Redis endpoint given")]
    NoEndpoint,
    /// A cluster's key prefix holds a brace, which would change the keys'
    /// hash tags.
    #[error(
        "with Redis Cluster the key prefix must not contain `{{` or `}}` \
         (the keys' hash tags follow it)"
    )]
    PrefixHashTag,

    // --- Operations: Redis is down, slow, or answered what it should not. ---
    /// redis-rs gave up waiting for a reply (its own response timeout).
    #[error("redis {what}: no answer in time")]
    NoAnswerInTime {
        what: &'static str,
        source: redis::RedisError,
    },
    /// Redis failed the command, or the connection to it did.
    #[error("redis {what}: {source}")]
    Command {
        what: &'static str,
        source: redis::RedisError,
    },
    /// The store's own bound on an operation ran out.
    #[error("redis {what}: no answer within {limit:?}")]
    TimedOut { what: &'static str, limit: Duration },
    /// A batch's script answered a different number of updates than sent.
    #[error("redis update: {replies} replies to a batch of {batch}")]
    BatchMismatch { replies: usize, batch: usize },
    /// The batching task of an update's queue is gone.
    #[error("redis update: the batching task has stopped")]
    BatchingStopped,
    /// A script answered with no tag at all.
    #[error("redis: empty script reply")]
    EmptyReply,
    /// A script answered with a tag or arity this store does not know.
    #[error("redis {what}: unexpected script reply {reply:?}")]
    UnexpectedReply {
        what: &'static str,
        reply: Vec<String>,
    },

    // --- Stored data this store cannot read. ---
    /// A script found the stored hash malformed (`corrupt`).
    #[error("stored session {id} is unreadable (not written by this store?): {reason}")]
    Unreadable { id: ClientId, reason: String },
    /// The stored record has the right length but does not decode.
    #[error("stored session {id} is not a valid record (its count is out of range)")]
    InvalidRecord { id: ClientId },
    /// The stored record has the wrong length.
    #[error("stored session {id} is not a valid record ({len} bytes, expected {expected})")]
    RecordLength {
        id: ClientId,
        len: usize,
        expected: usize,
    },
    /// The record under one client's key is another client's.
    #[error("stored session under {id}'s key belongs to {owner}")]
    WrongOwner { id: ClientId, owner: ClientId },
    /// The hash's `generation` field and the record's generation differ.
    #[error(
        "stored session {id}: generation field {field:?} disagrees with the record's {record}"
    )]
    GenerationMismatch {
        id: ClientId,
        field: String,
        record: u64,
    },
}

impl RedisStoreError {
    /// Redis, or the connection to it, failed `what`.
    pub(crate) fn failed(what: &'static str, source: redis::RedisError) -> Self {
        if source.is_timeout() {
            RedisStoreError::NoAnswerInTime { what, source }
        } else {
            RedisStoreError::Command { what, source }
        }
    }

    /// A script answered `reply`, which `what` does not expect.
    pub(crate) fn unexpected(what: &'static str, reply: &[Vec<u8>]) -> Self {
        let reply = reply
            .iter()
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        RedisStoreError::UnexpectedReply { what, reply }
    }
}
