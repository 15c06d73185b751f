//! The server's side of one stream: [`Stream`].
//!
//! One `Stream` machine runs per gRPC stream. It attaches the stream to a
//! session record (new on `Open`, loaded on `Resume`), paces the numbers,
//! checks acknowledgements and ends the stream. The record itself lives in a
//! store shared by every stream — and, with Redis, by every server — so the
//! machine asks for store operations as outputs ([`Output::Store`]) and is
//! told the answers ([`Stream::handle_store`]). Only one operation is
//! outstanding at a time.
//!
//! # The lease
//!
//! Every operation that writes is a compare-and-set on the record's
//! `generation`: a `Resume` bumps it, taking the session over. A stream
//! holds its generation on a *lease* ([`Config::lease`], `L`): each write
//! the store confirms (the `Create` or takeover that attached it, then a
//! renewal) lets it send numbers until `2L` after it *asked* for that
//! write. It renews, with its own generation, `L` after its last confirmed
//! request (whether a number is due or not), and keeps sending while the
//! renewal is in flight. So a session costs one store write per `L`, not
//! one per number. A renewal the store fails is asked again a quarter
//! lease later (a lease later once the lease ran out), for as long as the
//! record can still be alive; past `2L` the stream sends no number
//! meanwhile, but does not end: in place of each number it holds it sends
//! `Paused` (at most one an interval), so the client knows the server is
//! alive and waits rather than resumes, which would cost the slow store a
//! load and a takeover.
//!
//! A stream that was taken over learns it at its next renewal (a conflict)
//! and ends with [`Reject::TakenOver`]. Until then it may still send, but
//! only its own incarnation's values (the same ones the new stream sends),
//! never after `2L` from the takeover (the last renewal it won was asked
//! for before the takeover was applied), and it never writes the record
//! again: the bounded overlap of ARCHITECTURE.md §6, invariant 4.
//!
//! # Expiry
//!
//! The session expires `ttl` after the stream last worked: when it ends,
//! now if the client had acknowledged everything sent, else when the
//! server began waiting for it (ARCHITECTURE.md §2). Because a stream
//! writes only every `L`, each lease write sets the record to live
//! `ttl + L` from then, which covers every moment the stream can work
//! before its next write lands; and when the stream ends for any reason
//! but the store's (the client went away, fell silent, broke the protocol,
//! or the server shuts down), it *releases* the session: one last write,
//! after [`Output::End`], that sets the exact expiry. A server that dies
//! without releasing leaves sessions that outlive their TTL by at most `L`
//! plus the silence timeout (plus what its own lateness excused, see
//! [`Stream::handle_running_late`]). One expires early only if its renewal got
//! stuck in the store (by at most that wait, which the adapter's store
//! timeout bounds): the store failed the stream, or the server died
//! meanwhile.
//!
//! The machine is [`Stream`]: its state, the client's messages, time and
//! the outputs here; how it attaches (`Open`, `Resume`, the takeover) in
//! `attach.rs`; what it does with the store's answers in `reply.rs`; the
//! lease's renewals and the completed session's delete in `lease.rs`;
//! pacing and `Paused` in `send.rs`; ending and the release in
//! `release.rs`. The record it keeps in the store is in `record.rs`, its
//! settings in `config.rs`, what it receives and emits in `messages.rs`,
//! and the store operations it asks for ([`StoreOp`], [`StoreReply`]) in
//! [`crate::store`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{ClientId, Secret};
use crate::Reject;

mod attach;
mod config;
mod lease;
mod messages;
mod record;
mod release;
mod reply;
mod send;
#[cfg(test)]
mod tests;

pub use self::config::{Config, ACK_ROUND_TRIP, DEFAULT_LEASE, MAX_DURATION};
pub use self::messages::{Attached, Attachment, End, Number, Open, Output, Resume};
pub use self::record::{Fresh, Record};
pub use crate::store::{Lookup, StoreOp, StoreReply};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for `Open` or `Resume`.
    Idle,
    /// Waiting for the store before `Attached`.
    Attaching,
    /// Streaming numbers.
    Attached,
    /// Ended for the client; the release write is due or in flight.
    Releasing,
    /// Done; no more outputs.
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// `Load` for a resume at `next_index` with this token.
    Load { next_index: u32, token: Secret },
    /// `Create` for an open, asked for at `asked` (the lease counts from
    /// then).
    Create { asked: Instant },
    /// `Update` taking the session over, attaching at `next_index`.
    TakeOver {
        next_index: u32,
        asked: Instant,
        how: Attachment,
    },
    /// `Update` renewing the lease, asked for at `asked`.
    Renew { asked: Instant },
    /// After the stream ended: `Update` setting the exact expiry.
    Release,
    /// `Delete` after the final acknowledgement.
    Delete,
}

/// The server's state machine for one stream. See the [module docs](self).
///
/// Drive it like every machine in this crate: call one `handle_*` method,
/// then drain [`poll_output`](Self::poll_output), then sleep until
/// [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout).
#[derive(Debug)]
pub struct Stream {
    cfg: Config,
    phase: Phase,
    pending: Option<Pending>,
    /// Known once the first message named a valid client id.
    client_id: Option<ClientId>,
    /// Known from the first store answer on (from `Open` for a new session).
    record: Option<Record>,
    /// This stream's [`Record::holder`], from its first message's `Fresh`.
    holder: u64,
    /// Next index to send.
    sent: u32,
    /// The client holds every number below this index.
    acked: u32,
    /// When the number at `sent` is due.
    next_tick: Instant,
    /// Last time the client proved it was alive (its first message or an
    /// acknowledgement): the session expires no earlier than `ttl` after
    /// this (see `expires_in`).
    last_heard: Instant,
    /// Since when the server waits for the client (a first message, or an
    /// acknowledgement of numbers sent); `None` while it is the server's turn.
    waiting_since: Option<Instant>,
    /// How much longer than the silence timeout the server waits for its
    /// client while it runs late itself (see `handle_running_late`).
    excused: Duration,
    /// `Attached` was emitted: the store confirmed this stream's hold.
    attached_once: bool,
    /// The final acknowledgement arrived; delete once the store is free.
    /// From then on the stream ends [`End::Completed`], whatever else
    /// happens (see `completing`).
    complete: bool,
    /// When the delete of a completed session is next due: at the final
    /// acknowledgement, then a quarter lease after each failed attempt.
    delete_at: Instant,
    /// Numbers due from this moment on wait for a renewal of the lease.
    renew_at: Instant,
    /// No number is sent from this moment on until a renewal is confirmed.
    lease_until: Instant,
    /// While a due number is held for want of a lease: when the next
    /// `Paused` is due.
    paused_at: Instant,
    out: VecDeque<Output>,
}

impl Stream {
    /// A stream was accepted at `now`; it must send `Open` or `Resume` within
    /// the silence timeout.
    pub fn new(cfg: Config, now: Instant) -> Self {
        Stream {
            cfg,
            phase: Phase::Idle,
            pending: None,
            client_id: None,
            record: None,
            holder: 0,
            sent: 0,
            acked: 0,
            next_tick: now,
            last_heard: now,
            waiting_since: Some(now),
            excused: Duration::ZERO,
            attached_once: false,
            complete: false,
            delete_at: now,
            renew_at: now,
            lease_until: now,
            paused_at: now,
            // At 1 s the deepest the queue gets is `Attached` and the first
            // number; a third output would grow it. Two, not four, because
            // with one connection per client this buffer is a visible part
            // of what a session costs (BENCHMARKS.md).
            out: VecDeque::with_capacity(2),
        }
    }

    /// The session's client, once the first message named a valid one.
    pub fn client_id(&self) -> Option<ClientId> {
        self.client_id
    }

    /// The generation this stream holds the session at, once the store
    /// confirmed it (after `Attached`); it goes up with every takeover.
    pub fn generation(&self) -> Option<u64> {
        match self.phase {
            // Ended while attaching (a takeover refused as expired, say):
            // never confirmed, though a record was loaded.
            Phase::Attached | Phase::Releasing | Phase::Ended if self.attached_once => {
                self.record.map(|r| r.generation)
            }
            _ => None,
        }
    }

    /// The incarnation of the session this stream holds, with
    /// [`generation`](Self::generation): drawn when the session was opened,
    /// kept across takeovers (ARCHITECTURE.md §2, fencing).
    pub fn incarnation(&self) -> Option<u64> {
        self.generation().and(self.record.map(|r| r.incarnation))
    }

    /// Whether the stream is over: ended, and its release (if any) answered.
    /// After [`Output::End`] a stream may still ask for one store
    /// operation, the release; run it even though the client is gone.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// When the client's `Open` or `Resume` arrived, while the stream
    /// waits for the store to attach it; `None` before and after.
    pub fn attaching_since(&self) -> Option<Instant> {
        (self.phase == Phase::Attaching).then_some(self.last_heard)
    }

    /// Numbers sent so far (the next index to send).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Numbers the client has acknowledged (the next index it expects).
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// Handles the client's cumulative `Ack`.
    pub fn handle_ack(&mut self, now: Instant, next_index: u32) {
        match self.phase {
            Phase::Idle => return self.unexpected(now, "Ack before Open or Resume"),
            Phase::Attaching => return self.unexpected(now, "Ack before Attached"),
            Phase::Releasing | Phase::Ended => return,
            // The final acknowledgement is in: nothing more to learn (and
            // the delete's retries count from it, see `delete_until`).
            Phase::Attached if self.complete => return,
            Phase::Attached => {}
        }
        if next_index < self.acked {
            return self.fail(
                now,
                Reject::AckBackwards {
                    ack: next_index,
                    acked: self.acked,
                },
            );
        }
        if next_index > self.sent {
            return self.fail(
                now,
                Reject::AckBeyondSent {
                    ack: next_index,
                    sent: self.sent,
                },
            );
        }
        self.last_heard = now;
        let progress = next_index > self.acked;
        self.acked = next_index;
        if self.acked == self.count() {
            self.complete = true;
            self.delete_at = now;
        }
        if progress || self.complete {
            self.waiting_since = self.waiting_on_client().then_some(now);
        }
        self.advance(now);
    }

    /// Handles time passing. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_over() {
            return;
        }
        if let Some(since) = self.waiting_since {
            let silence = self.silence();
            if now >= since + silence {
                return self.fail(now, Reject::Silent(silence));
            }
        }
        self.advance(now);
    }

    /// The server runs, or lately ran, `late` behind: the adapter's
    /// overload signal, which is how long acknowledgements take over their
    /// usual round trip (the server's own queues, and the network's and
    /// the clients' when they are loaded too), so the acknowledgement an
    /// attached stream waits for may be on its way, or already there,
    /// unread. A late acknowledgement is not a dead client: ending the
    /// stream would only bring the client back as a resume, which costs a
    /// loaded server more. So an attached stream judges its client's
    /// silence that much later, but at most
    /// `ttl - interval - silence_timeout` later: a working stream is still
    /// never quiet for longer than the TTL ([`Config::validate`], rule 4).
    /// Zero restores the plain timeout. Like every `handle_*` call, it may
    /// change [`poll_timeout`](Self::poll_timeout).
    pub fn handle_running_late(&mut self, late: Duration) {
        let most = self
            .cfg
            .ttl
            .saturating_sub(self.cfg.interval + self.cfg.silence_timeout);
        self.excused = late.min(most);
    }

    /// The client's side of the stream closed or broke. The record stays in
    /// the store, released to expire `ttl` after the stream last worked.
    /// After the final acknowledgement the delete goes on, and the stream
    /// still ends [`End::Completed`] (for counting: nobody hears it).
    pub fn handle_closed(&mut self, now: Instant) {
        self.end(now, End::ClientGone);
    }

    /// The client half-closed its side: it will send nothing more. That is
    /// how a client says goodbye after its final acknowledgement, often
    /// while the delete is still in flight; before it, the client can no
    /// longer acknowledge, so the stream ends as a protocol error.
    pub fn handle_half_closed(&mut self, now: Instant) {
        if !self.complete {
            self.unexpected(
                now,
                "client closed its side of the stream before the session completed",
            );
        }
    }

    /// Ends the stream with [`Reject::ShuttingDown`] so the client resumes
    /// elsewhere; the record stays for it. A stream whose final
    /// acknowledgement arrived finishes its delete first and ends OK.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.fail(now, Reject::ShuttingDown);
    }

    /// Ends the stream with `reject`, for reasons decided outside the
    /// session (fault injection, server limits).
    pub fn abort(&mut self, now: Instant, reject: Reject) {
        self.fail(now, reject);
    }

    /// The next action for the adapter, if any. Drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    ///
    /// Changed by every `handle_*` call. `None` while ended or while only a
    /// store answer can move the session on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_over() {
            return None;
        }
        let silence = self.waiting_since.map(|s| s + self.silence());
        let attached = self.phase == Phase::Attached;
        // A due number waits for nothing but the clock, unless the lease
        // runs out first: then for a renewal (in flight, or asked again
        // at `renew_at` after a failure).
        let tick = (attached && self.can_send() && self.next_tick < self.lease_until)
            .then_some(self.next_tick);
        let write_at = match self.complete {
            true => self.delete_at,
            false => self.renew_at,
        };
        let write = (attached && self.pending.is_none()).then_some(write_at);
        let paused = self
            .holds_a_number()
            .then(|| self.paused_at.max(self.next_tick));
        [silence, tick, write, paused].into_iter().flatten().min()
    }

    fn count(&self) -> u32 {
        self.record.map_or(0, |r| r.count)
    }

    fn record_id(&self) -> ClientId {
        self.record
            .expect("a stream that writes has a record")
            .client_id
    }

    fn load_id(&self) -> ClientId {
        self.client_id
            .expect("handle_resume records the client id before loading")
    }

    /// Ended for the client (the release may still be under way).
    fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Releasing | Phase::Ended)
    }

    /// How long the client may be silent: the timeout, and, once the
    /// stream is attached, what the server's own lateness excuses (a
    /// stream that never sent its first message has no session to keep
    /// and no resume to save).
    fn silence(&self) -> Duration {
        match self.phase {
            Phase::Attached => self.cfg.silence_timeout + self.excused,
            _ => self.cfg.silence_timeout,
        }
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.waiting_since = None;
    }

    fn can_send(&self) -> bool {
        self.sent < self.count() && self.sent < self.acked.saturating_add(self.cfg.window)
    }

    /// Whether the server waits for the client: numbers are unacknowledged,
    /// or everything was sent and only the final acknowledgement is missing
    /// (also on a stream resumed at `next_index == count`, where `acked`
    /// starts at `count` but no acknowledgement has arrived yet).
    fn waiting_on_client(&self) -> bool {
        !self.complete && (self.acked < self.sent || self.sent == self.count())
    }
}
