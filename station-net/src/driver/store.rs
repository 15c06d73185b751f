//! The driver's store work: starting each operation the session asks for
//! (at once if the store can answer at once, else as a future bounded in
//! time), counting its answer, and settling what a session still asks of
//! the store once nobody hears its stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::server::{Output, StoreOp, StoreReply, Stream};

use super::end::finish;
use crate::clock::now;
use crate::log_limit::LogLimit;
use crate::metrics;
use crate::state::ServerState;
use crate::store::SessionStore;

/// A store operation in flight (only for stores that cannot answer at
/// once).
pub(super) type StoreFuture = Pin<Box<dyn Future<Output = StoreReply> + Send>>;

/// Runs what the session still asks of the store once its stream ended or
/// its client went away: its release, or the delete of a completed session (with its
/// retries), and the operation in flight, if any. At once if the store
/// can, else on a task of its own that shutdown waits for. The stream's
/// end is still counted, though nobody hears it.
pub(super) fn settle<S: SessionStore>(
    shared: &Arc<ServerState<S>>,
    stream: &mut Stream,
    mut pending: Option<StoreFuture>,
) {
    if pending.is_none() && !drain_quietly(shared, stream, &mut pending) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // The runtime is gone: so is the process.
    };
    let cfg = shared.cfg.session.clone();
    let mut stream = std::mem::replace(stream, Stream::new(cfg, now()));
    let task_shared = shared.clone();
    let task = async move {
        loop {
            match pending.take() {
                Some(op) => stream.handle_store(now(), op.await),
                None => match stream.poll_timeout() {
                    // A completed session's delete, due again after a
                    // failure.
                    Some(at) => {
                        tokio::time::sleep_until(at.into()).await;
                        stream.handle_timeout(now());
                    }
                    None => return,
                },
            }
            if !drain_quietly(&task_shared, &mut stream, &mut pending) {
                return;
            }
        }
    };
    // Still the stream's work: in its span (entered by the caller).
    let task = tracing::Instrument::instrument(task, tracing::Span::current());
    shared.tasks.spawn_on(task, &runtime);
}

/// Drains a stream whose client is gone: answers what the store can
/// answer at once, leaves the first operation that cannot in `pending`,
/// and counts the end. Whether there is anything left to wait for.
fn drain_quietly<S: SessionStore>(
    shared: &Arc<ServerState<S>>,
    stream: &mut Stream,
    pending: &mut Option<StoreFuture>,
) -> bool {
    while pending.is_none() {
        match stream.poll_output() {
            Some(Output::Store(op)) => match start(shared, op, shared.cfg.store_timeout) {
                Ok(reply) => stream.handle_store(now(), reply),
                Err(op) => *pending = Some(op),
            },
            Some(Output::End(end)) => drop(finish(shared, stream, end)),
            // Nobody to send to.
            Some(Output::Attached(_) | Output::Send(_) | Output::Paused { .. }) => {}
            None => return !stream.is_ended(),
        }
    }
    true
}

/// How long a store operation may take: the store timeout; while the
/// stream attaches, until its attach deadline instead (the load and the
/// takeover share it), so that a slow store is waited for as long as the
/// client waits, and no longer.
pub(super) fn store_timeout(
    cfg: &crate::ServerConfig,
    attaching_since: Option<Instant>,
) -> Duration {
    match attaching_since {
        Some(since) => (since + cfg.attach_timeout).saturating_duration_since(now()),
        None => cfg.store_timeout,
    }
}

/// Starts one store operation: its answer at once if the store can give
/// one (the memory store always can, so no future is boxed per
/// operation), else the future that brings it, failing after `timeout`.
pub(super) fn start<S: SessionStore>(
    shared: &Arc<ServerState<S>>,
    op: StoreOp,
    timeout: Duration,
) -> Result<StoreReply, StoreFuture> {
    let started = tokio::time::Instant::now();
    let creates = matches!(op, StoreOp::Create { .. });
    match shared.store.execute_now(op) {
        Ok(reply) => {
            account(shared, creates, started.elapsed(), &reply);
            Ok(reply)
        }
        Err(op) => Err(execute(shared.clone(), op, timeout)),
    }
}

/// Runs one store operation that cannot complete at once, bounded by
/// `timeout`.
fn execute<S: SessionStore>(
    shared: Arc<ServerState<S>>,
    op: StoreOp,
    timeout: Duration,
) -> StoreFuture {
    Box::pin(async move {
        let started = tokio::time::Instant::now();
        let creates = matches!(op, StoreOp::Create { .. });
        let inflight = shared.admission.started();
        let reply = match tokio::time::timeout(timeout, shared.store.execute(op)).await {
            Ok(reply) => reply,
            Err(_) => StoreReply::Unavailable(format!("no answer within {timeout:?}")),
        };
        let elapsed = started.elapsed();
        let failed = matches!(reply, StoreReply::Unavailable(_));
        shared.admission.finished(now(), elapsed, inflight, failed);
        account(&shared, creates, elapsed, &reply);
        reply
    })
}

/// Counts one store operation's answer. A session is opened when the
/// store applies its `Create`, whether or not its stream lives to send
/// `Attached` (an `Open` repeated after a lost `Attached` re-attaches it
/// and counts as a resume): one open per session, however it went.
fn account<S: SessionStore>(
    shared: &ServerState<S>,
    creates: bool,
    elapsed: Duration,
    reply: &StoreReply,
) {
    if creates && *reply == StoreReply::Done {
        shared.counters.opened();
    }
    static WARN: LogLimit = LogLimit::new();
    let failed = matches!(reply, StoreReply::Unavailable(_));
    if failed {
        if let Some(suppressed) = WARN.admit(now()) {
            tracing::warn!(
                ?reply,
                suppressed,
                "session store failed (and `suppressed` more since the last line)"
            );
        }
    }
    metrics::store_op(elapsed, failed);
}
