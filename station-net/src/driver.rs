//! One stream, one core [`server::Stream`](station_core::server::Stream), and no task of its own: the stream's
//! response body *is* the driver.
//!
//! hyper already runs one task per HTTP/2 stream to pull the response body.
//! [`SessionStream`] does the session's work inside that pull: each
//! `poll_next` drains the session's outputs (answers a store operation,
//! yields a message), then registers for the first of shutdown, a client
//! message, or the session's timer, all on hyper's task. Compared with a
//! task per stream feeding a channel, that saves a task, a channel and a
//! wake-up per message: about 2 KiB of the 5.5 KiB a session cost, and a
//! fifth of the server's CPU per number (BENCHMARKS.md).
//!
//! Backpressure comes from the session's window: it sends at most `window`
//! numbers beyond the client's acknowledgement, and ends a stream whose
//! client stops acknowledging after the silence timeout. hyper stops
//! polling a body whose client's HTTP/2 window is closed, so the driver
//! sits in a [`crate::stall`] cell whose sweeper drives it meanwhile. Every
//! protocol decision is the session's; this file only moves messages and
//! time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use station_core::server::{End, Open, Output, Resume, StoreOp, StoreReply, Stream};
use station_core::{Busy, Reject};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_stream::Stream as _;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::{Status, Streaming};

use crate::clock::now;
use crate::log_limit::LogLimit;
use crate::metrics;
use crate::proto::client_message::Kind as ClientKind;
use crate::proto::server_message::Kind as ServerKind;
use crate::proto::{Attached, ClientMessage, Number, Paused, ServerMessage};
use crate::stall::{Cell, Drive, Stalls};
use crate::state::{ServerState, StreamEvent};
use crate::store::SessionStore;

type StoreFuture = Pin<Box<dyn Future<Output = StoreReply> + Send>>;

/// The response body of one `Stream` call, driving its session.
pub struct SessionStream<S: SessionStore> {
    cell: Arc<Cell<Driver<S>>>,
}

impl<S: SessionStore> tokio_stream::Stream for SessionStream<S> {
    type Item = Result<ServerMessage, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.cell.poll_next(cx)
    }
}

impl<S: SessionStore> Drop for SessionStream<S> {
    fn drop(&mut self) {
        self.cell.close();
    }
}

pin_project_lite::pin_project! {
    /// One stream's session and what it waits on: run by hyper's polls of
    /// the body, or by the sweeper while hyper waits for the client's
    /// window (see [`crate::stall`]).
    pub(crate) struct Driver<S: SessionStore> {
        shared: Arc<ServerState<S>>,
        stream: Stream,
        inbound: Streaming<ClientMessage>,
        // The client half-closed or its side failed: nothing more to read.
        inbound_done: bool,
        // A store operation in flight (only for stores that cannot answer
        // at once). Numbers keep flowing meanwhile: the session decides
        // what waits for its answer (a lease renewal is not waited for).
        store: Option<StoreFuture>,
        #[pin]
        timer: Sleep,
        // The deadline `timer` is set to, so it is only re-armed on change.
        armed: Option<Instant>,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        shutting_down: bool,
        // Once shutdown began: when this stream ends, within the drain
        // period (the one timer waits for it too).
        drain_at: Option<Instant>,
        ended: bool,
        // Its place under `--max-streams`, from its first message (before
        // any store work) to its end.
        slot: Option<OwnedSemaphorePermit>,
        // Counted as attached from `Attached` to its end.
        attached: Option<metrics::AttachedGauge>,
        // Held until the stream ends: the drain count for shutdown. (Its
        // body may outlive it, holding what is queued for a client that
        // stopped reading, until the connection closes.)
        tracked: Option<TaskTrackerToken>,
        // Entered while the stream works (see `crate::otel`).
        span: tracing::Span,
        // The number in flight whose acknowledgement's round trip is being
        // timed, and when it was handed over: one at a time, for the
        // overload signal (`crate::overload`).
        timed: Option<(u32, Instant)>,
    }

    impl<S: SessionStore> PinnedDrop for Driver<S> {
        // hyper drops the body when the client resets the stream or the
        // connection breaks: the session still gets to release its record
        // (and a store write in flight, such as a delete, to land). A
        // stream that ended settled then.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let _entered = this.span.enter();
            let stream = this.stream;
            if *this.ended {
                return; // Settled at its end.
            }
            crate::otel::gone(this.span);
            tracing::debug!(client = ?stream.client_id(), sent = stream.sent(), "client went away");
            stream.handle_closed(now());
            settle(this.shared, stream, this.store.take());
        }
    }
}

impl<S: SessionStore> SessionStream<S> {
    pub(crate) fn new(
        shared: Arc<ServerState<S>>,
        stalls: &Arc<Stalls<Driver<S>>>,
        inbound: Streaming<ClientMessage>,
        span: tracing::Span,
    ) -> Self {
        let shutdown = shared.shutdown.clone();
        let driver = Driver::new(shared, inbound, span);
        SessionStream {
            cell: stalls.register(driver, &shutdown),
        }
    }
}

impl<S: SessionStore> Driver<S> {
    fn new(
        shared: Arc<ServerState<S>>,
        inbound: Streaming<ClientMessage>,
        span: tracing::Span,
    ) -> Self {
        let now = now();
        Driver {
            stream: Stream::new(shared.cfg.session.clone(), now),
            inbound,
            inbound_done: false,
            store: None,
            timer: tokio::time::sleep_until(now.into()),
            armed: None,
            shutdown: shared.shutdown.clone().cancelled_owned(),
            shutting_down: false,
            drain_at: None,
            ended: false,
            slot: None,
            attached: None,
            tracked: Some(shared.tasks.token()),
            shared,
            span,
            timed: None,
        }
    }
}

impl<S: SessionStore> Drive for Driver<S> {
    type Item = Result<ServerMessage, Status>;

    fn is_filler(item: &Self::Item) -> bool {
        matches!(
            item,
            Ok(ServerMessage {
                kind: Some(ServerKind::Paused(_))
            })
        )
    }

    fn due(&self) -> Option<Duration> {
        let at = [self.stream.poll_timeout(), self.drain_at]
            .into_iter()
            .flatten()
            .min()?;
        Some(at.saturating_duration_since(self.shared.epoch))
    }

    fn poll_drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let shared = &**this.shared;
        let stream = &mut *this.stream;
        'wake: loop {
            if *this.ended {
                return Poll::Ready(None);
            }
            if let Some(op) = this.store.as_mut() {
                if let Poll::Ready(reply) = op.as_mut().poll(cx) {
                    *this.store = None;
                    stream.handle_store(now(), reply);
                }
            }
            while let Some(output) = stream.poll_output() {
                match output {
                    Output::Store(op) => {
                        // The core asks for one operation at a time.
                        debug_assert!(this.store.is_none(), "a store operation is out");
                        let timeout = store_timeout(&shared.cfg, stream.attaching_since());
                        if timeout.is_zero() {
                            // The attach deadline passed (the load took it
                            // all): a takeover now would land after the
                            // client gave up, and cost the slow store a
                            // write for nobody.
                            let late = "no time left before the attach deadline".to_string();
                            stream.handle_store(now(), StoreReply::Unavailable(late));
                            continue;
                        }
                        match start(this.shared, op, timeout) {
                            Ok(reply) => stream.handle_store(now(), reply),
                            Err(op) => {
                                // Polled at the top of the loop, which
                                // registers this task for its answer.
                                *this.store = Some(op);
                                continue 'wake;
                            }
                        }
                    }
                    Output::Attached(a) => {
                        crate::otel::attached(this.span, stream, a.how);
                        shared.counters.attached(a.how);
                        *this.attached = Some(shared.counters.attached_gauge());
                        if let (Some(client_id), Some(generation), Some(incarnation)) = (
                            stream.client_id(),
                            stream.generation(),
                            stream.incarnation(),
                        ) {
                            shared.observe(|| StreamEvent::Attached {
                                client_id,
                                incarnation,
                                generation,
                                next_index: a.next_index,
                            });
                        }
                        return Poll::Ready(Some(Ok(message(ServerKind::Attached(Box::new(
                            Attached {
                                count: a.count,
                                next_index: a.next_index,
                                resume_token: a.token.as_bytes().to_vec(),
                                session_ttl: prost_types::Duration::try_from(a.ttl).ok(),
                                interval: prost_types::Duration::try_from(a.interval).ok(),
                                ack_every: a.ack_every,
                            },
                        ))))));
                    }
                    Output::Send(n) => {
                        if let Some(fault) = shared.inject_fault(now()) {
                            stream.abort(now(), fault);
                            continue;
                        }
                        shared.counters.number_sent();
                        if this.timed.is_none()
                            && shared.overload.enabled()
                            && acknowledged_alone(&shared.cfg, stream.acked(), &n)
                        {
                            *this.timed = Some((n.index, now()));
                        }
                        if let (Some(client_id), Some(generation)) =
                            (stream.client_id(), stream.generation())
                        {
                            shared.observe(|| StreamEvent::Sent {
                                client_id,
                                generation,
                                index: n.index,
                                value: n.value,
                            });
                        }
                        return Poll::Ready(Some(Ok(message(ServerKind::Number(Number {
                            index: n.index,
                            value: n.value,
                            checksum: n.checksum,
                        })))));
                    }
                    Output::Paused { next_index } => {
                        shared.counters.pause_sent();
                        return Poll::Ready(Some(Ok(message(ServerKind::Paused(Paused {
                            next_index,
                        })))));
                    }
                    Output::End(end) => {
                        crate::otel::ended(this.span, stream, &end);
                        *this.ended = true;
                        // Counted before the gauge and the place go: whoever
                        // sees the stream detached sees how it ended (a
                        // client gone is settled in `drop`, not counted here).
                        let status = finish(shared, stream, end);
                        *this.slot = None;
                        *this.attached = None;
                        // What follows (the release) starts now, before the
                        // client hears the end: a client that stopped
                        // reading does not hold it back, and a drain waits
                        // for it (the task it may need is tracked before
                        // this stream's token goes).
                        settle(this.shared, stream, this.store.take());
                        *this.tracked = None;
                        return Poll::Ready(status.map(Err));
                    }
                }
            }

            // Nothing to send: wait for shutdown, the client or the timer.
            if !*this.shutting_down && this.shutdown.as_mut().poll(cx).is_ready() {
                *this.shutting_down = true;
                match shared.drain_end(now()) {
                    // Attached streams go on for a while, ending spread
                    // over the drain period; the others end now.
                    Some(at) if stream.generation().is_some() => *this.drain_at = Some(at),
                    _ => stream.begin_shutdown(now()),
                }
                continue;
            }
            if !*this.inbound_done {
                if let Poll::Ready(msg) = Pin::new(&mut *this.inbound).poll_next(cx) {
                    match msg {
                        Some(Ok(msg)) => handle(shared, stream, this.slot, this.timed, msg),
                        None => {
                            *this.inbound_done = true;
                            stream.handle_half_closed(now());
                        }
                        // tonic reports its own decode limit as OUT_OF_RANGE.
                        Some(Err(status)) if status.code() == tonic::Code::OutOfRange => {
                            *this.inbound_done = true;
                            let reject = Reject::MessageTooLarge(status.message().to_owned());
                            stream.abort(now(), reject);
                        }
                        // A message that is not a valid `ClientMessage`:
                        // tonic reports bytes it cannot decode as INTERNAL
                        // with no underlying error, where a broken
                        // connection carries its h2 or I/O error.
                        Some(Err(status))
                            if status.code() == tonic::Code::Internal
                                && std::error::Error::source(&status).is_none() =>
                        {
                            *this.inbound_done = true;
                            stream.abort(
                                now(),
                                Reject::Unexpected(
                                    "the client's message is not a valid ClientMessage",
                                ),
                            );
                        }
                        // Every other error here means the client or the
                        // connection went away.
                        Some(Err(_)) => {
                            *this.inbound_done = true;
                            stream.handle_closed(now());
                        }
                    }
                    continue;
                }
            }
            // A late server may not have read what its client sent: judge
            // the client's silence that much later (ARCHITECTURE.md §2, Overload).
            stream.handle_running_late(shared.overload.silence_excused());
            let Some(deadline) = [stream.poll_timeout(), *this.drain_at]
                .into_iter()
                .flatten()
                .min()
            else {
                return Poll::Pending;
            };
            if *this.armed != Some(deadline) {
                *this.armed = Some(deadline);
                let wake_at = round_to_slot(deadline, now(), shared.epoch, shared.cfg.tick_slack);
                this.timer.as_mut().reset(wake_at.into());
            }
            ready!(this.timer.as_mut().poll(cx));
            *this.armed = None;
            if this.drain_at.is_some_and(|at| now() >= at) {
                *this.drain_at = None;
                stream.begin_shutdown(now());
            }
            stream.handle_timeout(now());
        }
    }
}

/// Rounds a future `deadline` up to the next multiple of `slack` since
/// `epoch`; a deadline already due stays as it is.
///
/// Streams whose ticks fall in the same slot wake together, so their
/// numbers leave in one write per connection (see [`crate::coalesce`])
/// instead of one each: timer slack, as the kernel does for the same
/// reason. Numbers are late by less than `slack`; the load generator
/// measures that against the announced schedule.
fn round_to_slot(deadline: Instant, now: Instant, epoch: Instant, slack: Duration) -> Instant {
    let slack = slack.as_nanos();
    if slack == 0 || deadline <= now || deadline <= epoch {
        return deadline;
    }
    let since = (deadline - epoch).as_nanos();
    let rounded = since.div_ceil(slack) * slack;
    // `rounded - since < slack`, which fits a Duration.
    deadline + Duration::from_nanos((rounded - since) as u64)
}

fn message(kind: ServerKind) -> ServerMessage {
    ServerMessage { kind: Some(kind) }
}

/// Whether the client acknowledges `n` as soon as it reads it (every
/// `ack_every` numbers from its last acknowledgement, and the last), so
/// that its round trip holds no wait for a batch to fill.
fn acknowledged_alone(
    cfg: &crate::ServerConfig,
    acked: u32,
    n: &station_core::server::Number,
) -> bool {
    let ack_every = cfg.session.ack_every().max(1);
    n.checksum.is_some() || (n.index + 1).saturating_sub(acked) % ack_every == 0
}

/// Ends the timing of the number in flight on an accepted acknowledgement
/// up to `next_index`: a sample if it acknowledges exactly that number,
/// none if it went past (the client acknowledged later than it had to,
/// and the wait is not the round trip's).
fn time_ack<S: SessionStore>(
    shared: &ServerState<S>,
    timed: &mut Option<(u32, Instant)>,
    next_index: u32,
) {
    let Some((index, sent)) = *timed else { return };
    if next_index == index + 1 {
        shared
            .overload
            .ack_round_trip(now().saturating_duration_since(sent));
    }
    if next_index > index {
        *timed = None;
    }
}

/// Feeds one client message to the session. The first (`Open` or
/// `Resume`) must find a place under `--max-streams` before any store
/// work; it keeps it in `slot` until the stream ends. An `Ack` the session
/// accepts ends the timing of the number in `timed`.
fn handle<S: SessionStore>(
    shared: &ServerState<S>,
    stream: &mut Stream,
    slot: &mut Option<OwnedSemaphorePermit>,
    timed: &mut Option<(u32, Instant)>,
    msg: ClientMessage,
) {
    let now = now();
    let first = matches!(msg.kind, Some(ClientKind::Open(_) | ClientKind::Resume(_)));
    if first && slot.is_none() {
        match shared.slot() {
            Some(permit) => *slot = Some(permit),
            None => return stream.abort(now, Reject::Full(shared.cfg.max_streams)),
        }
    }
    match msg.kind {
        Some(ClientKind::Open(open)) => {
            // An overloaded server refuses new sessions before any store
            // work, but lets every existing session resume: refusing a
            // resume only turns lateness into an expired session, and a
            // slow store into lost ones (ARCHITECTURE.md §2, "Overload").
            if stream.client_id().is_none() {
                // This stream's own place is counted in `held`.
                let others = shared.held().saturating_sub(1);
                if let Err(busy) = shared.overload.admits(others) {
                    return stream.abort(now, Reject::Overloaded(busy));
                }
                if let Err(closed) = shared.admission.admits(now) {
                    return stream.abort(now, Reject::Overloaded(Busy::Store(closed)));
                }
            }
            let open = Open {
                client_id: &open.client_id,
                count: open.count,
                nonce: &open.open_nonce,
            };
            stream.handle_open(now, open, shared.fresh());
        }
        Some(ClientKind::Resume(resume)) => {
            let resume = Resume {
                client_id: &resume.client_id,
                token: &resume.resume_token,
                next_index: resume.next_index,
            };
            stream.handle_resume(now, resume, shared.fresh());
        }
        Some(ClientKind::Ack(ack)) => {
            stream.handle_ack(now, ack.next_index);
            if !stream.is_ended() {
                time_ack(shared, timed, ack.next_index);
            }
        }
        None => stream.abort(now, Reject::Unexpected("empty ClientMessage")),
    }
}

/// Runs what the session still asks of the store once its stream ended or
/// its client went away: its release, or the delete of a completed session (with its
/// retries), and the operation in flight, if any. At once if the store
/// can, else on a task of its own that shutdown waits for. The stream's
/// end is still counted, though nobody hears it.
fn settle<S: SessionStore>(
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
fn store_timeout(cfg: &crate::ServerConfig, attaching_since: Option<Instant>) -> Duration {
    match attaching_since {
        Some(since) => (since + cfg.attach_timeout).saturating_duration_since(now()),
        None => cfg.store_timeout,
    }
}

/// Starts one store operation: its answer at once if the store can give
/// one (the memory store always can, so no future is boxed per
/// operation), else the future that brings it, failing after `timeout`.
fn start<S: SessionStore>(
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

/// Accounts for the end of the stream; the status to end it with, if any.
fn finish<S: SessionStore>(shared: &ServerState<S>, stream: &Stream, end: End) -> Option<Status> {
    let client = stream.client_id();
    match end {
        End::Completed { deleted } => {
            shared.counters.completed();
            if let (true, Some(client_id)) = (deleted, client) {
                shared.observe(|| StreamEvent::Completed { client_id });
            }
            match deleted {
                true => tracing::debug!(?client, "session completed"),
                false => tracing::warn!(
                    ?client,
                    "session completed, but the store did not confirm its delete; \
                     its record expires on its own"
                ),
            }
            None
        }
        End::ClientGone => {
            tracing::debug!(?client, sent = stream.sent(), "client went away");
            None
        }
        End::Rejected(reject) => {
            let status = shared.status(&reject, now());
            // Never attached: the stream was refused, not ended (an
            // expired session found by a resume, unlike one found by a
            // renewal).
            let refused = stream.generation().is_none();
            shared.counters.rejected(status.code(), &reject, refused);
            tracing::debug!(?client, %reject, "stream ended");
            Some(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbers_the_client_acknowledges_alone_are_timed() {
        let ms = Duration::from_millis;
        let n = |index, last: bool| station_core::server::Number {
            index,
            value: 0,
            checksum: last.then_some(0),
        };
        let every_one = crate::ServerConfig::default();
        assert_eq!(every_one.session.ack_every(), 1);
        assert!((0..40).all(|i| acknowledged_alone(&every_one, i / 2, &n(i, false))));
        // Under 50 ms, clients acknowledge every 16th number from their
        // last acknowledgement, and the last.
        let batched = crate::ServerConfig {
            session: station_core::server::Config::new(ms(10), Duration::from_secs(30)),
            ..crate::ServerConfig::default()
        };
        assert_eq!(batched.session.ack_every(), 16);
        assert!(acknowledged_alone(&batched, 0, &n(15, false)));
        assert!(!acknowledged_alone(&batched, 0, &n(14, false)));
        assert!(!acknowledged_alone(&batched, 0, &n(16, false)));
        assert!(acknowledged_alone(&batched, 16, &n(31, false)));
        // Resumed at 5: it acknowledges 21, 37, …
        assert!(acknowledged_alone(&batched, 5, &n(20, false)));
        assert!(!acknowledged_alone(&batched, 5, &n(15, false)));
        assert!(acknowledged_alone(&batched, 0, &n(7, true)));
    }

    #[test]
    fn round_to_slot_rounds_up_and_leaves_zero_slack_alone() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        let slack = ms(5);
        let now = epoch + ms(10);
        assert_eq!(
            round_to_slot(epoch + ms(12), now, epoch, slack),
            epoch + ms(15)
        );
        assert_eq!(
            round_to_slot(epoch + ms(15), now, epoch, slack),
            epoch + ms(15)
        );
        assert_eq!(
            round_to_slot(epoch + ms(16), now, epoch, slack),
            epoch + ms(20)
        );
        assert_eq!(
            round_to_slot(epoch + ms(12), now, epoch, Duration::ZERO),
            epoch + ms(12)
        );
        // Already due: sent at once, not held for the slot.
        assert_eq!(
            round_to_slot(epoch + ms(7), now, epoch, slack),
            epoch + ms(7)
        );
        // Before the epoch (cannot happen for a live server): unchanged.
        assert_eq!(round_to_slot(epoch, epoch, epoch + ms(3), slack), epoch);
    }
}
