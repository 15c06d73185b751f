//! Batching: every stream's lease renewals (`Update`s) go to one task per
//! bucket (one in all with a single Redis), which sends what has queued up
//! as one script call (the Batching section of the [module docs](super)).

use std::time::Duration;

use station_core::server::{Record, StoreReply};
use tokio::sync::{mpsc, oneshot};

use super::error::RedisStoreError;
use super::layout::Layout;
use super::reply::write_reply;
use super::scripts::SCRIPTS;
use super::{invoke, micros, Conn, RedisStore};

/// Most updates sent in one script call. Redis runs nothing else while a
/// script runs; at a few microseconds per update this bounds that to about
/// a millisecond.
pub const MAX_BATCH: usize = 256;

/// An update waiting for its batch, and where its answer goes.
pub(super) struct QueuedUpdate {
    record: Record,
    expect_generation: u64,
    expires_in: Duration,
    reply: oneshot::Sender<Result<StoreReply, RedisStoreError>>,
}

impl RedisStore {
    /// Queues an update for its batching task and waits for its answer.
    pub(super) async fn update(
        &self,
        record: Record,
        expect_generation: u64,
        expires_in: Duration,
    ) -> Result<StoreReply, RedisStoreError> {
        let stopped = || RedisStoreError::BatchingStopped;
        let (reply, answer) = oneshot::channel();
        let queue = &self.updates[self.layout.queue(&record.client_id)];
        let queued = QueuedUpdate {
            record,
            expect_generation,
            expires_in,
            reply,
        };
        queue.send(queued).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A batching task: sends its queue's updates, up to [`MAX_BATCH`] per
/// script call, one call at a time, each batch held `linger` after its
/// first update for more to join and failed if not answered within
/// `limit`; ends when every handle to the store is gone.
pub(super) async fn send_batches(
    conn: Conn,
    layout: Layout,
    remember_us: u64,
    linger: Duration,
    limit: Duration,
    mut queue: mpsc::UnboundedReceiver<QueuedUpdate>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !linger.is_zero() && batch.len() < MAX_BATCH {
            tokio::time::sleep(linger).await;
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
        }
        // A caller that gave up (its operation timed out) is not sent.
        batch.retain(|q: &QueuedUpdate| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let mut inv = SCRIPTS.update_many.prepare_invoke();
        inv.arg(remember_us);
        for q in &batch {
            inv.key(layout.key(&q.record.client_id))
                .arg(&q.record.to_bytes()[..])
                .arg(q.record.generation.to_string())
                .arg(q.expect_generation.to_string())
                .arg(micros(q.expires_in));
        }
        let call = invoke::<Vec<Vec<Vec<u8>>>>(&conn, "update", &inv);
        let replies = match tokio::time::timeout(limit, call).await {
            Ok(Ok(replies)) if replies.len() == batch.len() => Ok(replies),
            Ok(Ok(replies)) => Err(RedisStoreError::BatchMismatch {
                replies: replies.len(),
                batch: batch.len(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RedisStoreError::TimedOut {
                what: "update",
                limit,
            }),
        };
        match replies {
            Ok(replies) => {
                for (q, reply) in batch.drain(..).zip(replies) {
                    let id = q.record.client_id;
                    let _ = q.reply.send(write_reply("update", &id, &reply));
                }
            }
            Err(e) => {
                for q in batch.drain(..) {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
