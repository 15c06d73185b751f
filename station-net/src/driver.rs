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
//!
//! A poll's steps are methods of `Inner`'s projection, in the order
//! `Drive::poll_drive` runs them. Beside this file, `inbound` feeds the
//! client's messages to the session and times acknowledgements, and
//! `store` starts, bounds and counts store operations and settles what a
//! session still asks of the store once nobody hears its stream; `end`
//! accounts for a stream's end (counters, log, status), for both.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use station_core::server::{self, End, Output, StoreOp, StoreReply, Stream};
use station_core::Reject;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_stream::Stream as _;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::{Status, Streaming};
use tracing::Span;

use self::end::finish;
use self::inbound::{acknowledged_alone, handle};
use self::store::{settle, start, store_timeout, StoreFuture};
use crate::clock::now;
use crate::metrics;
use crate::proto::server_message::Kind as ServerKind;
use crate::proto::{Attached, ClientMessage, Number, Paused, ServerMessage};
use crate::stall::{Cell, Drive, Stalls};
use crate::state::{ServerState, StreamEvent};
use crate::store::SessionStore;

mod end;
mod inbound;
mod store;

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
        #[pin]
        inner: Inner<S>,
        // Entered while the stream works (see `crate::otel`). Apart from
        // the rest, so that each step of a poll can borrow the rest whole
        // while the span is entered.
        span: Span,
    }

    impl<S: SessionStore> PinnedDrop for Driver<S> {
        // hyper drops the body when the client resets the stream or the
        // connection breaks: the session still gets to release its record
        // (and a store write in flight, such as a delete, to land). A
        // stream that ended settled then.
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let _entered = this.span.enter();
            let inner = this.inner.project();
            let stream = inner.stream;
            if *inner.ended {
                return; // Settled at its end.
            }
            crate::otel::gone(this.span);
            tracing::debug!(client = ?stream.client_id(), sent = stream.sent(), "client went away");
            stream.handle_closed(now());
            settle(inner.shared, stream, inner.store.take());
        }
    }
}

pin_project_lite::pin_project! {
    /// Everything a [`Driver`] holds but its span.
    #[project = InnerProj]
    struct Inner<S: SessionStore> {
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
        // The number in flight whose acknowledgement's round trip is being
        // timed, and when it was handed over: one at a time, for the
        // overload signal (`crate::overload`).
        timed: Option<(u32, Instant)>,
    }
}

impl<S: SessionStore> SessionStream<S> {
    pub(crate) fn new(
        shared: Arc<ServerState<S>>,
        stalls: &Arc<Stalls<Driver<S>>>,
        inbound: Streaming<ClientMessage>,
        span: Span,
    ) -> Self {
        let shutdown = shared.shutdown.clone();
        let driver = Driver::new(shared, inbound, span);
        SessionStream {
            cell: stalls.register(driver, &shutdown),
        }
    }
}

impl<S: SessionStore> Driver<S> {
    fn new(shared: Arc<ServerState<S>>, inbound: Streaming<ClientMessage>, span: Span) -> Self {
        let now = now();
        let inner = Inner {
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
            timed: None,
        };
        Driver { inner, span }
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
        let inner = &self.inner;
        let at = [inner.stream.poll_timeout(), inner.drain_at]
            .into_iter()
            .flatten()
            .min()?;
        Some(at.saturating_duration_since(inner.shared.epoch))
    }

    /// One round of the session's work, in a fixed order: take the
    /// store's answer, carry out the outputs until one is for the client,
    /// then wait for shutdown, the client or the timer (in that order;
    /// whichever is ready starts the round again).
    fn poll_drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut inner = this.inner.project();
        loop {
            if *inner.ended {
                return Poll::Ready(None);
            }
            inner.poll_store(cx);
            match inner.drain_outputs(this.span) {
                Drained::Item(item) => return Poll::Ready(item),
                // Polled at the top of the loop, which registers this task
                // for its answer.
                Drained::StoreOut => continue,
                Drained::Idle => {}
            }
            // Nothing to send: wait for shutdown, the client or the timer.
            if inner.poll_shutdown(cx) {
                continue;
            }
            if inner.poll_inbound(cx) {
                continue;
            }
            ready!(inner.poll_timer(cx));
        }
    }
}

/// What carrying out the session's outputs came to.
enum Drained {
    /// An item for the response body (`None`: the body ends).
    Item(Option<Result<ServerMessage, Status>>),
    /// A store operation went out that cannot be answered at once.
    StoreOut,
    /// The session has nothing more to do until its next input.
    Idle,
}

impl<S: SessionStore> InnerProj<'_, S> {
    /// Hands the session the answer of the store operation in flight, if
    /// it came.
    fn poll_store(&mut self, cx: &mut Context<'_>) {
        if let Some(op) = self.store.as_mut() {
            if let Poll::Ready(reply) = op.as_mut().poll(cx) {
                *self.store = None;
                self.stream.handle_store(now(), reply);
            }
        }
    }

    /// Carries out the session's outputs until one is for the client, or
    /// a store operation has to be waited for.
    fn drain_outputs(&mut self, span: &Span) -> Drained {
        while let Some(output) = self.stream.poll_output() {
            match output {
                Output::Store(op) => {
                    if self.start_store(op) {
                        return Drained::StoreOut;
                    }
                }
                Output::Attached(a) => return Drained::Item(Some(Ok(self.attached(span, a)))),
                Output::Send(n) => {
                    if let Some(number) = self.send(n) {
                        return Drained::Item(Some(Ok(number)));
                    }
                }
                Output::Paused { next_index } => {
                    self.shared.counters.pause_sent();
                    let paused = message(ServerKind::Paused(Paused { next_index }));
                    return Drained::Item(Some(Ok(paused)));
                }
                Output::End(end) => return Drained::Item(self.end(span, end).map(Err)),
            }
        }
        Drained::Idle
    }

    /// Starts a store operation the session asked for, handing it the
    /// answer if there is one at once. Whether it is in flight in `store`.
    fn start_store(&mut self, op: StoreOp) -> bool {
        // The core asks for one operation at a time.
        debug_assert!(self.store.is_none(), "a store operation is out");
        let timeout = store_timeout(&self.shared.cfg, self.stream.attaching_since());
        if timeout.is_zero() {
            // The attach deadline passed (the load took it all): a
            // takeover now would land after the client gave up, and cost
            // the slow store a write for nobody.
            let late = "no time left before the attach deadline".to_string();
            self.stream
                .handle_store(now(), StoreReply::Unavailable(late));
            return false;
        }
        match start(self.shared, op, timeout) {
            Ok(reply) => {
                self.stream.handle_store(now(), reply);
                false
            }
            Err(op) => {
                *self.store = Some(op);
                true
            }
        }
    }

    /// Counts the stream as attached; its `Attached` message.
    fn attached(&mut self, span: &Span, a: server::Attached) -> ServerMessage {
        let shared = &**self.shared;
        let stream = &*self.stream;
        crate::otel::attached(span, stream, a.how);
        shared.counters.attached(a.how);
        *self.attached = Some(shared.counters.attached_gauge());
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
        message(ServerKind::Attached(Box::new(Attached {
            count: a.count,
            next_index: a.next_index,
            resume_token: a.token.as_bytes().to_vec(),
            session_ttl: prost_types::Duration::try_from(a.ttl).ok(),
            interval: prost_types::Duration::try_from(a.interval).ok(),
            ack_every: a.ack_every,
        })))
    }

    /// The message carrying number `n`, after counting it and perhaps
    /// starting to time its acknowledgement; none if a fault injected
    /// instead aborted the stream.
    fn send(&mut self, n: server::Number) -> Option<ServerMessage> {
        let shared = &**self.shared;
        if let Some(fault) = shared.inject_fault(now()) {
            self.stream.abort(now(), fault);
            return None;
        }
        shared.counters.number_sent();
        if self.timed.is_none()
            && shared.overload.enabled()
            && acknowledged_alone(&shared.cfg, self.stream.acked(), &n)
        {
            *self.timed = Some((n.index, now()));
        }
        if let (Some(client_id), Some(generation)) =
            (self.stream.client_id(), self.stream.generation())
        {
            shared.observe(|| StreamEvent::Sent {
                client_id,
                generation,
                index: n.index,
                value: n.value,
            });
        }
        Some(message(ServerKind::Number(Number {
            index: n.index,
            value: n.value,
            checksum: n.checksum,
        })))
    }

    /// Ends the stream: counts its end, gives up its place and starts
    /// what the session still asks of the store. The status to end it
    /// with, if any.
    fn end(&mut self, span: &Span, end: End) -> Option<Status> {
        crate::otel::ended(span, self.stream, &end);
        *self.ended = true;
        // Counted before the gauge and the place go: whoever sees the
        // stream detached sees how it ended (a client gone is settled in
        // `drop`, not counted here).
        let status = finish(self.shared, self.stream, end);
        *self.slot = None;
        *self.attached = None;
        // What follows (the release) starts now, before the client hears
        // the end: a client that stopped reading does not hold it back,
        // and a drain waits for it (the task it may need is tracked before
        // this stream's token goes).
        settle(self.shared, self.stream, self.store.take());
        *self.tracked = None;
        status
    }

    /// Starts this stream's part of a shutdown once the server's began.
    /// Whether it started now.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> bool {
        if *self.shutting_down || self.shutdown.as_mut().poll(cx).is_pending() {
            return false;
        }
        *self.shutting_down = true;
        match self.shared.drain_end(now()) {
            // Attached streams go on for a while, ending spread over the
            // drain period; the others end now.
            Some(at) if self.stream.generation().is_some() => *self.drain_at = Some(at),
            _ => self.stream.begin_shutdown(now()),
        }
        true
    }

    /// Hands the session the client's next message, or the end of the
    /// client's side, if either came. Whether one did.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> bool {
        if *self.inbound_done {
            return false;
        }
        let Poll::Ready(msg) = Pin::new(&mut *self.inbound).poll_next(cx) else {
            return false;
        };
        let stream = &mut *self.stream;
        match msg {
            Some(Ok(msg)) => handle(self.shared, stream, self.slot, self.timed, msg),
            None => {
                *self.inbound_done = true;
                stream.handle_half_closed(now());
            }
            // tonic reports its own decode limit as OUT_OF_RANGE.
            Some(Err(status)) if status.code() == tonic::Code::OutOfRange => {
                *self.inbound_done = true;
                let reject = Reject::MessageTooLarge(status.message().to_owned());
                stream.abort(now(), reject);
            }
            // A message that is not a valid `ClientMessage`: tonic reports
            // bytes it cannot decode as INTERNAL with no underlying error,
            // where a broken connection carries its h2 or I/O error.
            Some(Err(status))
                if status.code() == tonic::Code::Internal
                    && std::error::Error::source(&status).is_none() =>
            {
                *self.inbound_done = true;
                stream.abort(
                    now(),
                    Reject::Unexpected("the client's message is not a valid ClientMessage"),
                );
            }
            // Every other error here means the client or the connection
            // went away.
            Some(Err(_)) => {
                *self.inbound_done = true;
                stream.handle_closed(now());
            }
        }
        true
    }

    /// Waits for the session's next deadline or the end of its drain
    /// period, whichever is first, and hands the session the time then.
    /// Pending while there is none or it has not come.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A late server may not have read what its client sent: judge the
        // client's silence that much later (ARCHITECTURE.md §2, Overload).
        self.stream
            .handle_running_late(self.shared.overload.silence_excused());
        let Some(deadline) = [self.stream.poll_timeout(), *self.drain_at]
            .into_iter()
            .flatten()
            .min()
        else {
            return Poll::Pending;
        };
        self.arm(deadline);
        ready!(self.timer.as_mut().poll(cx));
        *self.armed = None;
        if self.drain_at.is_some_and(|at| now() >= at) {
            *self.drain_at = None;
            self.stream.begin_shutdown(now());
        }
        self.stream.handle_timeout(now());
        Poll::Ready(())
    }

    /// Sets the timer for `deadline`, rounded to its slot, unless it is
    /// set for it already.
    fn arm(&mut self, deadline: Instant) {
        if *self.armed != Some(deadline) {
            *self.armed = Some(deadline);
            let shared = &**self.shared;
            let wake_at = round_to_slot(deadline, now(), shared.epoch, shared.cfg.tick_slack);
            self.timer.as_mut().reset(wake_at.into());
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

#[cfg(test)]
mod tests {
    use super::*;

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
