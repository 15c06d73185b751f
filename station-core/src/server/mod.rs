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
//! The machine is [`Stream`] (this file); the record it keeps in the store
//! is in `record.rs`, its settings in `config.rs`, what it receives and
//! emits in `messages.rs`, and the store operations it asks for
//! ([`StoreOp`], [`StoreReply`]) in [`crate::store`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{ClientId, Secret};
use crate::sequence::{self, MAX_COUNT};
use crate::Reject;

/// `Paused` goes out once an interval, but never more often than this (an
/// unpaced stream's interval is zero).
const MIN_PAUSE_GAP: Duration = Duration::from_millis(100);

mod config;
mod messages;
mod record;
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

    /// Handles the client's `Open`. `fresh` is used only if the session is
    /// new. Outputs a `Create`, or ends the stream if the request is invalid.
    pub fn handle_open(&mut self, now: Instant, open: Open<'_>, fresh: Fresh) {
        if self.phase != Phase::Idle {
            return self.unexpected(now, "Open after the stream's first message");
        }
        let checked = (|| {
            let client_id = ClientId::parse(open.client_id)?;
            if !(1..=MAX_COUNT).contains(&open.count) {
                return Err(Reject::BadCount(open.count));
            }
            let nonce = match open.nonce.len() {
                0 => Secret::ZERO,
                _ => Secret::from_slice(open.nonce).ok_or(Reject::BadNonce(open.nonce.len()))?,
            };
            Ok(Record {
                client_id,
                token: fresh.token,
                nonce,
                seed: fresh.seed,
                count: open.count,
                acked: 0,
                generation: 1,
                incarnation: fresh.incarnation,
                holder: fresh.holder,
            })
        })();
        match checked {
            Ok(record) => {
                self.heard(now);
                self.holder = fresh.holder;
                self.phase = Phase::Attaching;
                self.client_id = Some(record.client_id);
                self.record = Some(record);
                self.pending = Some(Pending::Create { asked: now });
                self.out.push_back(Output::Store(StoreOp::Create {
                    record,
                    expires_in: self.leased_expiry(),
                }));
            }
            Err(reject) => self.fail(now, reject),
        }
    }

    /// Handles the client's `Resume`. Outputs a `Load`, or ends the stream
    /// if the request is malformed. Of `fresh`, only the holder is used.
    pub fn handle_resume(&mut self, now: Instant, resume: Resume<'_>, fresh: Fresh) {
        if self.phase != Phase::Idle {
            return self.unexpected(now, "Resume after the stream's first message");
        }
        let checked = ClientId::parse(resume.client_id).and_then(|id| {
            let token = Secret::from_slice(resume.token)
                .ok_or(Reject::MalformedToken(resume.token.len()))?;
            Ok((id, token))
        });
        match checked {
            Ok((client_id, token)) => {
                self.heard(now);
                self.holder = fresh.holder;
                self.phase = Phase::Attaching;
                self.client_id = Some(client_id);
                self.pending = Some(Pending::Load {
                    next_index: resume.next_index,
                    token,
                });
                self.out.push_back(Output::Store(StoreOp::Load(client_id)));
            }
            Err(reject) => self.fail(now, reject),
        }
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

    /// Handles the store's answer to the last [`Output::Store`].
    pub fn handle_store(&mut self, now: Instant, reply: StoreReply) {
        match self.phase {
            Phase::Ended => return,
            Phase::Releasing => {
                // A renewal in flight when the stream ended: release once
                // it is known to hold; the release's own answer ends all.
                match (self.pending.take(), reply) {
                    (Some(Pending::Renew { .. }), StoreReply::Done) => self.release(now),
                    _ => self.phase = Phase::Ended,
                }
                return;
            }
            Phase::Idle | Phase::Attaching | Phase::Attached => {}
        }
        let Some(pending) = self.pending.take() else {
            // An adapter bug, not client input: end the stream rather than
            // take the server down.
            return self.fail_by_store(Reject::StoreUnavailable(
                "store answered with no request outstanding".into(),
            ));
        };
        if let StoreReply::Unavailable(why) = reply {
            // A failed write costs nothing while there is time to ask
            // again: ask a quarter lease later (a store that fails at once
            // must not be asked in a loop) rather than send the client,
            // and its resume, to a store in trouble.
            // Past the lease, a renewal is asked no more often than a
            // healthy stream writes (once a lease): a store in trouble is
            // not sent four times its usual writes by the streams waiting
            // on it.
            let wait = match self.complete || now < self.lease_until {
                true => self.cfg.lease / 4,
                false => self.cfg.lease,
            };
            let retry_at = now + wait;
            match pending {
                // The client has everything: a renewal no longer matters,
                // and a delete is idempotent, so retry it within a lease;
                // after that, the session is still complete, and its
                // record expires on its own.
                Pending::Renew { .. } | Pending::Delete if self.complete => {
                    if retry_at < self.delete_until() {
                        self.delete_at = retry_at;
                        return self.advance(now);
                    }
                    return self.completed(false);
                }
                // A renewal is asked again for as long as the record can
                // still be alive. Past the lease no number is sent (the
                // fence holds), but the stream waits for the store rather
                // than end: an ended stream comes back as a resume, which
                // costs a store in trouble more than a retry does.
                Pending::Renew { .. } if retry_at < self.record_alive_until() => {
                    self.renew_at = retry_at;
                    return self.advance(now);
                }
                _ => return self.fail_by_store(Reject::StoreUnavailable(why)),
            }
        }
        if let StoreReply::Exists(live) | StoreReply::Loaded(Lookup::Live(live)) = &reply {
            // The store is shared and outlives this code: never trust a
            // record that could not have been written by a session.
            let plausible = (1..=MAX_COUNT).contains(&live.count)
                && live.acked <= live.count
                && Some(live.client_id) == self.client_id;
            if !plausible {
                return self.fail_by_store(Reject::StoreUnavailable(format!(
                    "store returned an implausible record for {:?}",
                    self.client_id
                )));
            }
        }
        match (pending, reply) {
            (Pending::Create { asked }, StoreReply::Done) => {
                self.attach(now, asked, 0, Attachment::Opened)
            }
            (Pending::Create { .. }, StoreReply::Exists(live)) => {
                let ours = self.record.expect("Create is sent with a record");
                let same_open =
                    !ours.nonce.is_zero() && live.nonce == ours.nonce && live.count == ours.count;
                if same_open {
                    // The client repeats an `Open` whose `Attached` it never
                    // received: attach it to the session it created.
                    self.take_over(now, live, 0, Attachment::Reopened);
                } else {
                    self.fail(now, Reject::AlreadyExists(ours.client_id));
                }
            }
            (Pending::Load { next_index, token }, StoreReply::Loaded(lookup)) => match lookup {
                Lookup::Live(live) if live.token != token => {
                    self.fail(now, Reject::BadToken(live.client_id))
                }
                Lookup::Live(live) if next_index > live.count => self.fail(
                    now,
                    Reject::BadNextIndex {
                        next_index,
                        count: live.count,
                    },
                ),
                Lookup::Live(live) => self.take_over(now, live, next_index, Attachment::Resumed),
                Lookup::Expired => self.fail(now, Reject::Expired(self.load_id())),
                Lookup::Missing => self.fail(now, Reject::Unknown(self.load_id())),
            },
            (
                Pending::TakeOver {
                    next_index,
                    asked,
                    how,
                },
                StoreReply::Done,
            ) => self.attach(now, asked, next_index, how),
            (Pending::Renew { asked }, StoreReply::Done) => {
                self.leased(asked);
                self.advance(now);
            }
            (Pending::Delete, StoreReply::Done) => self.completed(true),
            (
                Pending::TakeOver { .. } | Pending::Renew { .. } | Pending::Delete,
                StoreReply::Conflict,
            ) => self.fail_by_store(Reject::TakenOver(self.record_id())),
            (Pending::TakeOver { .. } | Pending::Renew { .. }, StoreReply::ExpiredOrReplaced) => {
                self.fail_by_store(Reject::Expired(self.record_id()))
            }
            (Pending::TakeOver { .. } | Pending::Renew { .. }, StoreReply::Vanished) => {
                self.fail_by_store(Reject::Lost(self.record_id()))
            }
            (pending, reply) => self.fail_by_store(Reject::StoreUnavailable(format!(
                "store answered {reply:?} to {pending:?}"
            ))),
        }
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

    /// The last moment a failed delete of a completed session is tried
    /// again: a lease after the final acknowledgement (the last message
    /// heard: later ones are ignored). Each attempt is bounded by the
    /// adapter's store timeout, so the client hears OK within about a
    /// lease and a store timeout, however the store behaves.
    fn delete_until(&self) -> Instant {
        self.last_heard + self.cfg.lease
    }

    /// Ends a completed session's stream: OK for the client, whether or
    /// not the store confirmed the delete.
    fn completed(&mut self, deleted: bool) {
        self.phase = Phase::Ended;
        self.pending = None;
        self.out.push_back(Output::End(End::Completed { deleted }));
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

    /// How long from `now` the record should live once the stream ends:
    /// `ttl` after the stream last worked (ARCHITECTURE.md §2). That is
    /// `now` if the client has acknowledged everything sent, else the
    /// moment the server began waiting for it (its first unacknowledged
    /// number or its last acknowledgement), or the last message heard,
    /// whichever is later.
    fn exact_expiry(&self, now: Instant) -> Duration {
        let worked = self.waiting_since.unwrap_or(now).max(self.last_heard);
        (worked + self.cfg.ttl).saturating_duration_since(now)
    }

    /// What a lease write sets the record to live for: the TTL from the
    /// last moment the stream can work before its next write, `L` away
    /// (see the module docs).
    fn leased_expiry(&self) -> Duration {
        self.cfg.ttl.saturating_add(self.cfg.lease)
    }

    /// Until when the record lives without another write: a lease write
    /// asked for at `asked` sets it to live `ttl + L`, and `lease_until` is
    /// `asked + 2L` (or earlier, once the lease ran out).
    fn record_alive_until(&self) -> Instant {
        (self.lease_until + self.cfg.ttl)
            .checked_sub(self.cfg.lease)
            .unwrap_or(self.lease_until)
    }

    /// The store confirmed a lease write asked for at `asked`.
    fn leased(&mut self, asked: Instant) {
        self.renew_at = asked + self.cfg.lease;
        self.lease_until = asked + self.cfg.lease.saturating_mul(2);
    }

    fn take_over(&mut self, now: Instant, live: Record, next_index: u32, how: Attachment) {
        let Some(generation) = live.generation.checked_add(1) else {
            return self.fail_by_store(Reject::StoreUnavailable(
                "stored generation cannot go higher".into(),
            ));
        };
        let record = Record {
            acked: next_index,
            generation,
            holder: self.holder,
            ..live
        };
        self.record = Some(record);
        self.pending = Some(Pending::TakeOver {
            next_index,
            asked: now,
            how,
        });
        self.out.push_back(Output::Store(StoreOp::Update {
            record,
            expect_generation: live.generation,
            expires_in: self.leased_expiry(),
        }));
    }

    fn attach(&mut self, now: Instant, asked: Instant, next_index: u32, how: Attachment) {
        let record = self
            .record
            .expect("attach follows a store answer with a record");
        self.phase = Phase::Attached;
        self.attached_once = true;
        self.sent = next_index;
        self.acked = next_index;
        self.next_tick = now;
        self.waiting_since = self.waiting_on_client().then_some(now);
        self.out.push_back(Output::Attached(Attached {
            how,
            count: record.count,
            next_index,
            token: record.token,
            ttl: self.cfg.ttl,
            interval: self.cfg.interval,
            ack_every: self.cfg.ack_every(),
        }));
        // The store just confirmed our generation: that is the first lease
        // (unless its answer came after the lease it grants ran out).
        self.leased(asked);
        self.send_leased(now);
    }

    /// Starts the store operation that is due, and sends what the lease
    /// allows.
    fn advance(&mut self, now: Instant) {
        if self.phase != Phase::Attached {
            return;
        }
        let mut record = self.record.expect("attached streams have a record");
        if self.pending.is_none() {
            if self.complete {
                if now < self.delete_at {
                    return;
                }
                self.pending = Some(Pending::Delete);
                self.out.push_back(Output::Store(StoreOp::Delete {
                    client_id: record.client_id,
                    incarnation: record.incarnation,
                    generation: record.generation,
                }));
                return;
            }
            if now >= self.renew_at {
                record.acked = self.acked;
                self.record = Some(record);
                self.pending = Some(Pending::Renew { asked: now });
                self.out.push_back(Output::Store(StoreOp::Update {
                    record,
                    expect_generation: record.generation,
                    expires_in: self.leased_expiry(),
                }));
            }
        }
        self.send_leased(now);
    }

    /// Sends what is due if the lease still holds. Once it has run out,
    /// only the renewal's answer lets numbers go again; meanwhile each
    /// held number is answered with `Paused`, at most once an interval,
    /// so the client knows the server is alive and waits rather than
    /// resumes elsewhere (a resume costs the slow store a load and a
    /// takeover).
    fn send_leased(&mut self, now: Instant) {
        if now < self.lease_until {
            return self.send_due(now);
        }
        self.lease_until = self.lease_until.min(self.next_tick);
        if self.holds_a_number() && now >= self.paused_at.max(self.next_tick) {
            self.out.push_back(Output::Paused {
                next_index: self.sent,
            });
            self.paused_at = now + self.cfg.interval.max(MIN_PAUSE_GAP);
        }
    }

    /// A number is due, or will be, that the lease does not cover.
    fn holds_a_number(&self) -> bool {
        self.phase == Phase::Attached
            && !self.complete
            && self.can_send()
            && self.next_tick >= self.lease_until
    }

    /// Emits every number that is due and fits in the window.
    fn send_due(&mut self, now: Instant) {
        let record = self.record.expect("attached streams have a record");
        while self.can_send() && self.next_tick <= now {
            let index = self.sent;
            let last = index + 1 == record.count;
            self.out.push_back(Output::Send(Number {
                index,
                value: sequence::value(record.seed, index),
                checksum: last.then(|| sequence::checksum(record.seed, record.count)),
            }));
            if self.waiting_since.is_none() {
                self.waiting_since = Some(now);
            }
            self.sent += 1;
            self.next_tick += self.cfg.interval;
        }
    }

    fn unexpected(&mut self, now: Instant, what: &'static str) {
        self.fail(now, Reject::Unexpected(what));
    }

    /// Ends the stream for a reason of the client's or the server's: the
    /// session stays, released to expire on time.
    fn fail(&mut self, now: Instant, reject: Reject) {
        self.end(now, End::Rejected(reject));
    }

    /// Ends the stream because of what the store answered: the session is
    /// not this stream's to release (taken over, expired, lost), or the
    /// store failed.
    fn fail_by_store(&mut self, reject: Reject) {
        self.phase = Phase::Ended;
        self.pending = None;
        self.out.clear();
        self.out.push_back(Output::End(End::Rejected(reject)));
    }

    fn end(&mut self, now: Instant, end: End) {
        if self.is_over() {
            return; // Ended streams say nothing more, not even a second End.
        }
        if self.complete && self.phase == Phase::Attached {
            // The client has everything and said so: the delete (in flight
            // or due) decides, and the stream ends `Completed` after it,
            // within a bounded time (`delete_until`). Ending it now would
            // tell a client that has everything to retry, count no
            // completion, and leave the record behind.
            return;
        }
        // Nothing is sent after the end: drop numbers still queued from a
        // burst, so an abort takes effect at once. A store operation still
        // queued stays: it is the one in flight, and its answer matters.
        self.out.retain(|out| matches!(out, Output::Store(_)));
        self.out.push_back(Output::End(end));
        // The stream works no more: freeze that moment, so that a release
        // made later (after a renewal in flight) still counts from it.
        let worked = self.waiting_since.unwrap_or(now).max(self.last_heard);
        self.waiting_since = Some(worked);
        match self.pending {
            // Not attached: nothing to release (an attach write in flight
            // leases the record, a lease past its TTL at most).
            _ if self.phase != Phase::Attached => {
                self.phase = Phase::Ended;
                self.pending = None;
            }
            None => self.release(now),
            // Release once the renewal's answer shows the lease held.
            Some(_) => self.phase = Phase::Releasing,
        }
    }

    /// Leaves the session as the ended stream should: set to its exact
    /// expiry (a complete session is deleted instead, and never released).
    /// The store's answer only ends the machine.
    fn release(&mut self, now: Instant) {
        let mut record = self.record.expect("attached streams have a record");
        record.acked = self.acked;
        self.record = Some(record);
        self.phase = Phase::Releasing;
        self.pending = Some(Pending::Release);
        self.out.push_back(Output::Store(StoreOp::Update {
            record,
            expect_generation: record.generation,
            expires_in: self.exact_expiry(now),
        }));
    }
}
