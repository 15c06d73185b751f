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
//! Every operation that writes is a compare-and-set on the record's
//! `generation`: a `Resume` bumps it (taking the session over), and a stream
//! refreshes the record, with its own generation, *before* each burst of
//! numbers. A stream that was taken over therefore learns it at its next
//! refresh and ends with [`Reject::TakenOver`]. The most it can still send
//! is the one burst a refresh authorised that the store applied just
//! before the takeover (its reply late), with the same values: the overlap
//! is bounded to that burst (ARCHITECTURE.md §6, invariant 4).
//!
//! Each refresh sets the record to expire `ttl` after the stream last
//! worked: now, if the client has acknowledged everything sent, else when
//! the server began waiting for it (ARCHITECTURE.md §2). Acknowledgements
//! that move that moment on by more than half an interval since the last
//! write (after a stall) trigger a refresh of their own, so a drop just
//! before the next tick does not leave the session expiring early.
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

mod config;
mod messages;
mod record;
#[cfg(test)]
mod tests;

pub use self::config::{Config, ACK_ROUND_TRIP, MAX_DURATION};
pub use self::messages::{Attached, End, Number, Open, Output, Resume};
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
    /// Done; no more outputs.
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// `Load` for a resume at `next_index` with this token.
    Load { next_index: u32, token: Secret },
    /// `Create` for an open; the record would live `until`.
    Create { until: Instant },
    /// `Update` taking the session over, attaching at `next_index`.
    TakeOver { next_index: u32, until: Instant },
    /// `Update` refreshing the expiry (to `until`) before a burst, or after
    /// acknowledgements that the last refresh did not account for.
    Refresh { until: Instant },
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
    /// The final acknowledgement arrived; delete once the store is free.
    complete: bool,
    /// The expiry the store last confirmed for this stream's record.
    persisted_until: Instant,
    /// Acknowledgements moved the expiry on by more than the refresh
    /// tolerance since the last write: refresh even without a number due.
    refresh_due: bool,
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
            complete: false,
            persisted_until: now,
            refresh_due: false,
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
            Phase::Attached | Phase::Ended => self.record.map(|r| r.generation),
            Phase::Idle | Phase::Attaching => None,
        }
    }

    /// The incarnation of the session this stream holds, with
    /// [`generation`](Self::generation): drawn when the session was opened,
    /// kept across takeovers (ARCHITECTURE.md §2, fencing).
    pub fn incarnation(&self) -> Option<u64> {
        self.generation().and(self.record.map(|r| r.incarnation))
    }

    /// Whether the stream has ended (the last output was [`Output::End`]).
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Numbers sent so far (the next index to send).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Handles the client's `Open`. `fresh` is used only if the session is
    /// new. Outputs a `Create`, or ends the stream if the request is invalid.
    pub fn handle_open(&mut self, now: Instant, open: Open<'_>, fresh: Fresh) {
        if self.phase != Phase::Idle {
            return self.unexpected("Open after the stream's first message");
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
                self.pending = Some(Pending::Create {
                    until: now + self.cfg.ttl,
                });
                self.out.push_back(Output::Store(StoreOp::Create {
                    record,
                    expires_in: self.cfg.ttl,
                }));
            }
            Err(reject) => self.fail(reject),
        }
    }

    /// Handles the client's `Resume`. Outputs a `Load`, or ends the stream
    /// if the request is malformed. Of `fresh`, only the holder is used.
    pub fn handle_resume(&mut self, now: Instant, resume: Resume<'_>, fresh: Fresh) {
        if self.phase != Phase::Idle {
            return self.unexpected("Resume after the stream's first message");
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
            Err(reject) => self.fail(reject),
        }
    }

    /// Handles the client's cumulative `Ack`.
    pub fn handle_ack(&mut self, now: Instant, next_index: u32) {
        match self.phase {
            Phase::Idle => return self.unexpected("Ack before Open or Resume"),
            Phase::Attaching => return self.unexpected("Ack before Attached"),
            Phase::Ended => return,
            Phase::Attached => {}
        }
        if next_index < self.acked {
            return self.fail(Reject::AckBackwards {
                ack: next_index,
                acked: self.acked,
            });
        }
        if next_index > self.sent {
            return self.fail(Reject::AckBeyondSent {
                ack: next_index,
                sent: self.sent,
            });
        }
        self.last_heard = now;
        let progress = next_index > self.acked;
        self.acked = next_index;
        if self.acked == self.count() {
            self.complete = true;
        }
        if progress || self.complete {
            self.waiting_since = self.waiting_on_client().then_some(now);
        }
        if progress && !self.complete && self.expiry_lags(now) {
            self.refresh_due = true;
        }
        self.advance(now);
    }

    /// Handles the store's answer to the last [`Output::Store`].
    pub fn handle_store(&mut self, now: Instant, reply: StoreReply) {
        if self.phase == Phase::Ended {
            return;
        }
        let Some(pending) = self.pending.take() else {
            // An adapter bug, not client input: end the stream rather than
            // take the server down.
            return self.fail(Reject::StoreUnavailable(
                "store answered with no request outstanding".into(),
            ));
        };
        if let StoreReply::Unavailable(why) = reply {
            return self.fail(Reject::StoreUnavailable(why));
        }
        if let StoreReply::Exists(live) | StoreReply::Loaded(Lookup::Live(live)) = &reply {
            // The store is shared and outlives this code: never trust a
            // record that could not have been written by a session.
            let plausible = (1..=MAX_COUNT).contains(&live.count)
                && live.acked <= live.count
                && Some(live.client_id) == self.client_id;
            if !plausible {
                return self.fail(Reject::StoreUnavailable(format!(
                    "store returned an implausible record for {:?}",
                    self.client_id
                )));
            }
        }
        match (pending, reply) {
            (Pending::Create { until }, StoreReply::Done) => {
                self.persisted_until = until;
                self.attach(now, 0)
            }
            (Pending::Create { .. }, StoreReply::Exists(live)) => {
                let ours = self.record.expect("Create is sent with a record");
                let same_open =
                    !ours.nonce.is_zero() && live.nonce == ours.nonce && live.count == ours.count;
                if same_open {
                    // The client repeats an `Open` whose `Attached` it never
                    // received: attach it to the session it created.
                    self.take_over(now, live, 0);
                } else {
                    self.fail(Reject::AlreadyExists(ours.client_id));
                }
            }
            (Pending::Load { next_index, token }, StoreReply::Loaded(lookup)) => match lookup {
                Lookup::Live(live) if live.token != token => {
                    self.fail(Reject::BadToken(live.client_id))
                }
                Lookup::Live(live) if next_index > live.count => self.fail(Reject::BadNextIndex {
                    next_index,
                    count: live.count,
                }),
                Lookup::Live(live) => self.take_over(now, live, next_index),
                Lookup::Expired => self.fail(Reject::Expired(self.load_id())),
                Lookup::Missing => self.fail(Reject::Unknown(self.load_id())),
            },
            (Pending::TakeOver { next_index, until }, StoreReply::Done) => {
                self.persisted_until = until;
                self.attach(now, next_index)
            }
            (Pending::Refresh { until }, StoreReply::Done) => {
                self.persisted_until = until;
                self.send_due(now);
                self.advance(now);
            }
            (Pending::Delete, StoreReply::Done) => {
                self.phase = Phase::Ended;
                self.out.push_back(Output::End(End::Completed));
            }
            (
                Pending::TakeOver { .. } | Pending::Refresh { .. } | Pending::Delete,
                StoreReply::Conflict,
            ) => self.fail(Reject::TakenOver(self.record_id())),
            (Pending::TakeOver { .. } | Pending::Refresh { .. }, StoreReply::Expired) => {
                self.fail(Reject::Expired(self.record_id()))
            }
            (Pending::TakeOver { .. } | Pending::Refresh { .. }, StoreReply::Missing) => {
                self.fail(Reject::Lost(self.record_id()))
            }
            (pending, reply) => self.fail(Reject::StoreUnavailable(format!(
                "store answered {reply:?} to {pending:?}"
            ))),
        }
    }

    /// Handles time passing. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        if let Some(since) = self.waiting_since {
            if now >= since + self.cfg.silence_timeout {
                return self.fail(Reject::Silent(self.cfg.silence_timeout));
            }
        }
        self.advance(now);
    }

    /// The client's side of the stream closed or broke. The record stays in
    /// the store and expires `ttl` after the client was last heard.
    pub fn handle_closed(&mut self, _now: Instant) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            self.out.push_back(Output::End(End::ClientGone));
        }
    }

    /// Ends the stream with [`Reject::ShuttingDown`] so the client resumes
    /// elsewhere; the record stays for it.
    pub fn begin_shutdown(&mut self, _now: Instant) {
        if self.phase != Phase::Ended {
            self.fail(Reject::ShuttingDown);
        }
    }

    /// Ends the stream with `reject`, for reasons decided outside the
    /// session (fault injection, server limits).
    pub fn abort(&mut self, reject: Reject) {
        if self.phase != Phase::Ended {
            self.fail(reject);
        }
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
        if self.phase == Phase::Ended {
            return None;
        }
        let silence = self.waiting_since.map(|s| s + self.cfg.silence_timeout);
        let tick = (self.phase == Phase::Attached && self.pending.is_none() && self.can_send())
            .then_some(self.next_tick);
        match (silence, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

    /// How long from `now` the record should live: `ttl` after the stream
    /// last worked (ARCHITECTURE.md §2). That is `now` if the client has acknowledged
    /// everything sent, else the moment the server began waiting for it
    /// (its first unacknowledged number or its last acknowledgement), or
    /// the last message heard, whichever is later.
    ///
    /// Counting from the last message heard alone lags by up to one
    /// interval: an acknowledgement that arrives after a refresh is only
    /// persisted by the next one, so a stream reset just before it would
    /// leave the session expiring ~`ttl - interval` after the drop, and a
    /// client resuming inside the TTL (as it measures it, from the last
    /// number it received) would be told "expired".
    fn expires_in(&self, now: Instant) -> Duration {
        let worked = self.waiting_since.unwrap_or(now).max(self.last_heard);
        (worked + self.cfg.ttl).saturating_duration_since(now)
    }

    /// Whether acknowledgements moved the expiry the stream deserves more
    /// than half an interval past what the store holds. Within that, the
    /// refresh at the next tick catches up (an acknowledgement normally
    /// arrives one round trip after the refresh before its number); beyond
    /// it (numbers or acknowledgements were held up), a drop before the
    /// next tick would leave the session expiring early.
    fn expiry_lags(&self, now: Instant) -> bool {
        now + self.expires_in(now) > self.persisted_until + self.cfg.interval / 2
    }

    fn take_over(&mut self, now: Instant, live: Record, next_index: u32) {
        let Some(generation) = live.generation.checked_add(1) else {
            return self.fail(Reject::StoreUnavailable(
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
            until: now + self.cfg.ttl,
        });
        self.out.push_back(Output::Store(StoreOp::Update {
            record,
            expect_generation: live.generation,
            expires_in: self.cfg.ttl,
        }));
    }

    fn attach(&mut self, now: Instant, next_index: u32) {
        let record = self
            .record
            .expect("attach follows a store answer with a record");
        self.phase = Phase::Attached;
        self.sent = next_index;
        self.acked = next_index;
        self.next_tick = now;
        self.waiting_since = self.waiting_on_client().then_some(now);
        self.out.push_back(Output::Attached(Attached {
            count: record.count,
            next_index,
            token: record.token,
            ttl: self.cfg.ttl,
            interval: self.cfg.interval,
            ack_every: self.cfg.ack_every(),
        }));
        // The store just confirmed our generation: the first burst needs no
        // refresh of its own.
        self.send_due(now);
    }

    /// Starts the next store operation or burst that is due.
    fn advance(&mut self, now: Instant) {
        if self.phase != Phase::Attached || self.pending.is_some() {
            return;
        }
        let mut record = self.record.expect("attached streams have a record");
        // A refresh that completed meanwhile may have caught up already.
        self.refresh_due &= self.expiry_lags(now);
        if self.complete {
            self.pending = Some(Pending::Delete);
            self.out.push_back(Output::Store(StoreOp::Delete {
                client_id: record.client_id,
                incarnation: record.incarnation,
                generation: record.generation,
            }));
        } else if self.refresh_due || (self.can_send() && self.next_tick <= now) {
            self.refresh_due = false;
            record.acked = self.acked;
            self.record = Some(record);
            let expires_in = self.expires_in(now);
            self.pending = Some(Pending::Refresh {
                until: now + expires_in,
            });
            self.out.push_back(Output::Store(StoreOp::Update {
                record,
                expect_generation: record.generation,
                expires_in,
            }));
        }
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

    fn unexpected(&mut self, what: &'static str) {
        self.fail(Reject::Unexpected(what));
    }

    fn fail(&mut self, reject: Reject) {
        if self.phase == Phase::Ended {
            return; // Ended streams say nothing more, not even a second End.
        }
        self.phase = Phase::Ended;
        self.pending = None;
        // Nothing is sent after the end: drop numbers still queued from a
        // burst, so an abort takes effect at once.
        self.out.clear();
        self.out.push_back(Output::End(End::Rejected(reject)));
    }
}
