//! The server's side of one stream: [`Session`].
//!
//! One `Session` machine runs per gRPC stream. It attaches the stream to a
//! session record (new on `Open`, loaded on `Resume`), paces the numbers,
//! checks acknowledgements and ends the stream. The record itself lives in a
//! store shared by every stream — and, with Redis, by every server — so the
//! machine asks for store operations as outputs ([`Output::Store`]) and is
//! told the answers ([`Session::handle_store`]). Only one operation is
//! outstanding at a time.
//!
//! Every operation that writes is a compare-and-set on the record's
//! `generation`: a `Resume` bumps it (taking the session over), and a stream
//! refreshes the record, with its own generation, *before* each burst of
//! numbers. A stream that was taken over therefore learns it at its next
//! refresh and ends with [`Reject::TakenOver`] without sending again: two
//! streams never deliver the same session at once.
//!
//! Each refresh sets the record to expire `ttl` after the stream last
//! worked: now, if the client has acknowledged everything sent, else when
//! the server began waiting for it (ARCHITECTURE.md §2). Acknowledgements that move
//! that moment on by more than half an interval since the last write (after
//! a stall) trigger a refresh of their own, so a drop just before the next
//! tick does not leave the session expiring early.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ids::{ClientId, Secret};
use crate::sequence::{self, MAX_COUNT};
use crate::Reject;

/// Longest session TTL, interval or silence timeout a server may use, and
/// so the longest a client accepts in `Attached`: long enough for any real
/// deployment, short enough that deadlines computed from it never overflow
/// a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What [`Config::validate`] allows an acknowledgement for its round trip
/// (network and scheduling) beyond the time its numbers take to be sent.
pub const ACK_ROUND_TRIP: Duration = Duration::from_millis(250);

/// Server settings that shape every session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time between two numbers of a stream. Zero sends as fast as the
    /// window allows.
    pub interval: Duration,
    /// A session is kept this long after the server last heard from its
    /// client (ARCHITECTURE.md §2).
    pub ttl: Duration,
    /// A stream whose client sends no first message, or none of the
    /// acknowledgements the server waits for, for this long is ended.
    pub silence_timeout: Duration,
    /// Most numbers sent beyond the client's last acknowledgement. Bounds
    /// what a client that stops reading can make the server buffer.
    pub window: u32,
}

impl Config {
    /// Settings for `interval` and `ttl`, other fields derived from them.
    pub fn new(interval: Duration, ttl: Duration) -> Self {
        let silence = interval
            .saturating_mul(3)
            .saturating_add(Duration::from_secs(2))
            .min(ttl / 2);
        Config {
            interval,
            ttl,
            silence_timeout: silence,
            window: 64,
        }
    }

    /// How often clients must acknowledge: every number at human speeds, in
    /// batches when numbers come faster than acknowledgements are worth.
    pub fn ack_every(&self) -> u32 {
        if self.interval >= Duration::from_millis(50) {
            1
        } else {
            (self.window / 4).max(1)
        }
    }

    /// Checks that the settings can work together; the error names the rule
    /// broken. Each rule is one a session cannot survive breaking:
    ///
    /// 1. `window` is at least 1, and at least `ack_every` (clients
    ///    acknowledge only every `ack_every` numbers, and the server stops
    ///    at the window waiting for them);
    /// 2. the TTL, interval and silence timeout are at most [`MAX_DURATION`]
    ///    (clients refuse larger ones as absurd);
    /// 3. the silence timeout is positive and shorter than the TTL;
    /// 4. `interval + silence_timeout <= ttl`: a stream refreshes its session
    ///    once per interval, setting it to expire `ttl` after the client was
    ///    last heard, which may be up to a silence timeout earlier; if the
    ///    next refresh can come after that, sessions expire under a stream
    ///    that works (e.g. an interval longer than the TTL);
    /// 5. `(ack_every - 1) * interval + ACK_ROUND_TRIP < silence_timeout`:
    ///    a client acknowledges every `ack_every` numbers, one interval
    ///    apart, the acknowledgement takes a round trip, and the server ends
    ///    a stream whose acknowledgement it waited for longer than the
    ///    silence timeout (e.g. a 40 ms interval with a window of 256 asks
    ///    for an ack every 64 numbers, 2.52 s after the first, against a
    ///    2.12 s timeout).
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 {
            return Err("window must be at least 1".into());
        }
        let ack_every = self.ack_every();
        if ack_every > self.window {
            return Err(format!(
                "clients acknowledge every {ack_every} numbers, more than the window ({}): \
                 the server would stop at the window and wait forever",
                self.window
            ));
        }
        for (name, d) in [
            ("session TTL", self.ttl),
            ("interval", self.interval),
            ("silence timeout", self.silence_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(format!(
                    "{name} ({d:?}) is longer than the {MAX_DURATION:?} clients accept"
                ));
            }
        }
        if self.silence_timeout.is_zero() || self.silence_timeout >= self.ttl {
            return Err(format!(
                "silence timeout ({:?}) must be positive and shorter than the session TTL ({:?})",
                self.silence_timeout, self.ttl
            ));
        }
        if self.interval + self.silence_timeout > self.ttl {
            return Err(format!(
                "interval ({:?}) plus silence timeout ({:?}) must not exceed the session \
                 TTL ({:?}): each refresh keeps a session for the TTL after the client was last \
                 heard, up to a silence timeout earlier, and the next refresh comes an interval \
                 later, so sessions would expire under working streams (raise --session-ttl or \
                 lower --interval)",
                self.interval, self.silence_timeout, self.ttl
            ));
        }
        let ack_wait = self
            .interval
            .saturating_mul(ack_every - 1)
            .saturating_add(ACK_ROUND_TRIP);
        if ack_wait >= self.silence_timeout {
            return Err(format!(
                "clients acknowledge every {ack_every} numbers at an interval of {:?}, so the \
                 server waits {ack_wait:?} for an acknowledgement (counting {ACK_ROUND_TRIP:?} \
                 for its round trip), which is not shorter than the silence timeout ({:?}): \
                 streams would be ended for silence (lower --window, or raise --silence-timeout \
                 or --session-ttl)",
                self.interval, self.silence_timeout
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// Everything the server keeps about a session: O(1), never the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Whose session this is.
    pub client_id: ClientId,
    /// Secret required to resume.
    pub token: Secret,
    /// The client's open nonce ([`Secret::ZERO`] if none): lets a client
    /// whose `Attached` was lost repeat its `Open`.
    pub nonce: Secret,
    /// Seed of the session's sequence ([`sequence::value`]).
    pub seed: u64,
    /// Numbers in the session.
    pub count: u32,
    /// The client holds every number below this index.
    pub acked: u32,
    /// Bumped by every takeover; every write is a compare-and-set on it
    /// and on `incarnation`.
    pub generation: u64,
    /// Random, drawn when the session was opened and kept across
    /// takeovers: tells this session from a later one with the same client
    /// id (reused after expiry), which starts again at generation 1.
    pub incarnation: u64,
    /// Random, drawn by the stream that wrote this generation: lets a write
    /// re-sent after a lost reply recognise that it was applied, where two
    /// rival takeovers to the same generation differ.
    pub holder: u64,
}

impl Record {
    /// Length of [`Record::to_bytes`].
    pub const ENCODED_LEN: usize = 88;

    /// A fixed big-endian layout for stores that keep bytes (Redis).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..16].copy_from_slice(self.client_id.0.as_bytes());
        b[16..32].copy_from_slice(self.token.as_bytes());
        b[32..48].copy_from_slice(self.nonce.as_bytes());
        b[48..56].copy_from_slice(&self.seed.to_be_bytes());
        b[56..60].copy_from_slice(&self.count.to_be_bytes());
        b[60..64].copy_from_slice(&self.acked.to_be_bytes());
        b[64..72].copy_from_slice(&self.generation.to_be_bytes());
        b[72..80].copy_from_slice(&self.incarnation.to_be_bytes());
        b[80..88].copy_from_slice(&self.holder.to_be_bytes());
        b
    }

    /// Parses [`Record::to_bytes`]; `None` if the bytes are not a record.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::ENCODED_LEN] = b.try_into().ok()?;
        let arr16 =
            |r: std::ops::Range<usize>| -> [u8; 16] { b[r].try_into().expect("range is 16 bytes") };
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let record = Record {
            client_id: ClientId(uuid::Uuid::from_bytes(arr16(0..16))),
            token: Secret(arr16(16..32)),
            nonce: Secret(arr16(32..48)),
            seed: u64_at(48),
            count: u32::from_be_bytes(b[56..60].try_into().expect("4 bytes")),
            acked: u32::from_be_bytes(b[60..64].try_into().expect("4 bytes")),
            generation: u64_at(64),
            incarnation: u64_at(72),
            holder: u64_at(80),
        };
        (1..=MAX_COUNT).contains(&record.count).then_some(record)
    }
}

/// An `Open` as received, before validation.
#[derive(Clone, Copy, Debug)]
pub struct Open<'a> {
    /// Claimed client id (text).
    pub client_id: &'a str,
    /// Requested count.
    pub count: u32,
    /// Open nonce: empty or 16 bytes.
    pub nonce: &'a [u8],
}

/// A `Resume` as received, before validation.
#[derive(Clone, Copy, Debug)]
pub struct Resume<'a> {
    /// Claimed client id (text).
    pub client_id: &'a str,
    /// Presented token.
    pub token: &'a [u8],
    /// First index the client wants.
    pub next_index: u32,
}

/// Fresh randomness for a stream, drawn by the caller for each `Open` and
/// `Resume`.
#[derive(Clone, Copy, Debug)]
pub struct Fresh {
    /// Seed of the new session's sequence (`Open` only).
    pub seed: u64,
    /// The new session's resume token (`Open` only).
    pub token: Secret,
    /// The new session's [`Record::incarnation`] (`Open` only).
    pub incarnation: u64,
    /// This stream's [`Record::holder`].
    pub holder: u64,
}

/// What a session wants from the store. Answer with [`Session::handle_store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Look the session up. Answer [`StoreReply::Loaded`].
    Load(ClientId),
    /// Insert a new record unless a live one exists for the id (an expired
    /// one is replaced). Answer `Done`, or `Exists` with the live record.
    /// Idempotent: a live record with this incarnation and holder is this
    /// very write, applied before: `Done`.
    Create {
        /// The new record.
        record: Record,
        /// Time from now until it expires.
        expires_in: Duration,
    },
    /// Replace the record if the stored one is live, of `record`'s
    /// incarnation and at `expect_generation`, and set its expiry. Answer
    /// `Done`; `Conflict` if a newer generation of the incarnation holds it;
    /// `Expired` if it expired (or another incarnation replaced it);
    /// `Missing` if there is none.
    ///
    /// Idempotent: if the stored record already has `record`'s incarnation,
    /// generation and holder, this write (or its twin) was applied before
    /// and its reply lost: answer `Done` without writing again.
    Update {
        /// The new contents (its generation may be `expect_generation + 1`).
        record: Record,
        /// Generation the stored record must have.
        expect_generation: u64,
        /// Time from now until it expires.
        expires_in: Duration,
    },
    /// Delete the record if it is live at this incarnation and generation.
    /// Answer `Done`, also when nothing of this incarnation is left to
    /// delete (a repeated delete, or an expired or lost record); `Conflict`
    /// if a newer generation of the incarnation holds it (left untouched).
    Delete {
        /// Which session.
        client_id: ClientId,
        /// Incarnation the stored record must have.
        incarnation: u64,
        /// Generation the stored record must have.
        generation: u64,
    },
}

/// A store lookup result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The session is live.
    Live(Record),
    /// The session expired recently (stores remember this for a while so
    /// the client can be told precisely).
    Expired,
    /// No such session.
    Missing,
}

/// The store's answer to a [`StoreOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreReply {
    /// Answer to `Load`.
    Loaded(Lookup),
    /// `Create`, `Update` or `Delete` was applied.
    Done,
    /// `Create` refused: this live record holds the id.
    Exists(Record),
    /// `Update` or `Delete` refused: a newer generation of the same
    /// incarnation holds the session (it was taken over).
    Conflict,
    /// `Update` refused: the session expired, or a later incarnation of its
    /// id replaced it (which can only happen after it expired).
    Expired,
    /// `Update` refused: no record at all, though the stream held one: the
    /// store lost it (a restart without persistence, a failover that lost
    /// writes), or a stream that took it over completed it.
    Missing,
    /// The store failed or timed out.
    Unavailable(String),
}

/// The reply that attaches a stream, sent before any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    /// Numbers in the session.
    pub count: u32,
    /// First index this stream sends.
    pub next_index: u32,
    /// The resume token.
    pub token: Secret,
    /// Session TTL.
    pub ttl: Duration,
    /// Time between numbers.
    pub interval: Duration,
    /// Acknowledge at least every this many numbers.
    pub ack_every: u32,
}

/// One number to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    /// Index in the sequence.
    pub index: u32,
    /// The value.
    pub value: u32,
    /// The sequence's checksum, on the final number only.
    pub checksum: Option<u32>,
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The final acknowledgement arrived and the session was deleted: end the
    /// stream with status OK.
    Completed,
    /// The client went away first; nothing to send.
    ClientGone,
    /// End the stream with this error status.
    Rejected(Reject),
}

/// An action for the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Perform this store operation, then call [`Session::handle_store`].
    Store(StoreOp),
    /// Send `Attached`.
    Attached(Attached),
    /// Send this number.
    Send(Number),
    /// End the stream. Always the last output.
    End(End),
}

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
pub struct Session {
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

impl Session {
    /// A stream was accepted at `now`; it must send `Open` or `Resume` within
    /// the silence timeout.
    pub fn new(cfg: Config, now: Instant) -> Self {
        Session {
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
            out: VecDeque::with_capacity(4),
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
        self.generation()
            .and(self.record.map(|r| r.incarnation))
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    const SEED: u64 = 0x5eed;
    const TOKEN: Secret = Secret([7; 16]);
    const NONCE: [u8; 16] = [3; 16];
    const INCARNATION: u64 = 0x1_2c42;
    const HOLDER: u64 = 0x401d;
    const SEC: Duration = Duration::from_secs(1);

    fn id() -> ClientId {
        ClientId::parse(ID).unwrap()
    }

    fn cfg() -> Config {
        Config::new(SEC, Duration::from_secs(30))
    }

    fn fresh() -> Fresh {
        Fresh {
            seed: SEED,
            token: TOKEN,
            incarnation: INCARNATION,
            holder: HOLDER,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn drain(s: &mut Session) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn open_msg(count: u32) -> Open<'static> {
        Open {
            client_id: ID,
            count,
            nonce: &NONCE,
        }
    }

    fn record(count: u32, generation: u64) -> Record {
        Record {
            client_id: id(),
            token: TOKEN,
            nonce: Secret(NONCE),
            seed: SEED,
            count,
            acked: 0,
            generation,
            incarnation: INCARNATION,
            holder: HOLDER,
        }
    }

    fn number(index: u32, count: u32) -> Output {
        Output::Send(Number {
            index,
            value: sequence::value(SEED, index),
            checksum: (index + 1 == count).then(|| sequence::checksum(SEED, count)),
        })
    }

    fn attached(count: u32, next_index: u32) -> Output {
        Output::Attached(Attached {
            count,
            next_index,
            token: TOKEN,
            ttl: Duration::from_secs(30),
            interval: SEC,
            ack_every: 1,
        })
    }

    fn rejected(out: &[Output]) -> Reject {
        match out.last() {
            Some(Output::End(End::Rejected(r))) => r.clone(),
            other => panic!("expected a rejection, got {other:?} in {out:?}"),
        }
    }

    /// A session opened at `t0` with `cfg`: `Attached` and the first number
    /// are already drained.
    fn opened_with(cfg: Config, t0: Instant, count: u32) -> Session {
        let mut s = Session::new(cfg, t0);
        s.handle_open(t0, open_msg(count), fresh());
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Store(StoreOp::Create { record, expires_in })]
                if *record == record_at(count, 1) && *expires_in == s.cfg.ttl),
            "{out:?}"
        );
        s.handle_store(t0, StoreReply::Done);
        let out = drain(&mut s);
        assert!(matches!(out[0], Output::Attached(_)), "{out:?}");
        s
    }

    fn record_at(count: u32, generation: u64) -> Record {
        record(count, generation)
    }

    fn opened(t0: Instant, count: u32) -> Session {
        opened_with(cfg(), t0, count)
    }

    /// A session resumed at `t0` at `next_index` of a live record of
    /// generation `generation`; `Attached` and the first burst are drained.
    fn resumed(
        t0: Instant,
        count: u32,
        generation: u64,
        next_index: u32,
    ) -> (Session, Vec<Output>) {
        let mut s = Session::new(cfg(), t0);
        s.handle_resume(
            t0,
            Resume {
                client_id: ID,
                token: TOKEN.as_bytes(),
                next_index,
            },
            fresh(),
        );
        assert_eq!(drain(&mut s), [Output::Store(StoreOp::Load(id()))]);
        s.handle_store(
            t0,
            StoreReply::Loaded(Lookup::Live(record(count, generation))),
        );
        let out = drain(&mut s);
        let expected = Record {
            acked: next_index,
            generation: generation + 1,
            ..record(count, generation)
        };
        assert_eq!(
            out,
            [Output::Store(StoreOp::Update {
                record: expected,
                expect_generation: generation,
                expires_in: Duration::from_secs(30),
            })]
        );
        s.handle_store(t0, StoreReply::Done);
        let out = drain(&mut s);
        (s, out)
    }

    fn resume_rejection(lookup: Lookup, token: &[u8], next_index: u32) -> Reject {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        s.handle_resume(
            t0,
            Resume {
                client_id: ID,
                token,
                next_index,
            },
            fresh(),
        );
        assert_eq!(drain(&mut s), [Output::Store(StoreOp::Load(id()))]);
        s.handle_store(t0, StoreReply::Loaded(lookup));
        let out = drain(&mut s);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(s.is_ended());
        assert_eq!(s.poll_timeout(), None);
        rejected(&out)
    }

    /// Drives an attached session at `now`: fires the timer, confirms the
    /// refresh, and returns what it sent.
    fn tick(s: &mut Session, now: Instant) -> (StoreOp, Vec<Output>) {
        s.handle_timeout(now);
        let out = drain(s);
        let [Output::Store(op)] = &out[..] else {
            panic!("expected one store op at the tick, got {out:?}");
        };
        let op = op.clone();
        s.handle_store(now, StoreReply::Done);
        (op, drain(s))
    }

    #[test]
    fn count_is_validated() {
        let t0 = Instant::now();
        for bad in [0, MAX_COUNT + 1, u32::MAX] {
            let mut s = Session::new(cfg(), t0);
            s.handle_open(t0, open_msg(bad), fresh());
            let out = drain(&mut s);
            assert_eq!(out.len(), 1);
            assert_eq!(rejected(&out), Reject::BadCount(bad));
            assert!(s.is_ended());
        }
        for good in [1, MAX_COUNT] {
            let mut s = Session::new(cfg(), t0);
            s.handle_open(t0, open_msg(good), fresh());
            let out = drain(&mut s);
            assert!(
                matches!(&out[..], [Output::Store(StoreOp::Create { record, .. })] if record.count == good),
                "{out:?}"
            );
            assert_eq!(s.client_id(), Some(id()));
        }
    }

    #[test]
    fn malformed_client_ids_are_rejected() {
        let t0 = Instant::now();
        for bad in ["", "nope", "67e5504410b1426f9247bb680e5fe0c8"] {
            let mut s = Session::new(cfg(), t0);
            s.handle_open(
                t0,
                Open {
                    client_id: bad,
                    count: 5,
                    nonce: &[],
                },
                fresh(),
            );
            assert!(matches!(rejected(&drain(&mut s)), Reject::BadClientId(_)));
            let mut s = Session::new(cfg(), t0);
            s.handle_resume(
                t0,
                Resume {
                    client_id: bad,
                    token: TOKEN.as_bytes(),
                    next_index: 0,
                },
                fresh(),
            );
            assert!(matches!(rejected(&drain(&mut s)), Reject::BadClientId(_)));
            assert_eq!(s.client_id(), None);
        }
    }

    #[test]
    fn nonce_must_be_empty_or_16_bytes() {
        let t0 = Instant::now();
        for (len, ok) in [(0, true), (1, false), (15, false), (16, true), (17, false)] {
            let nonce = vec![1u8; len];
            let mut s = Session::new(cfg(), t0);
            let open = Open {
                client_id: ID,
                count: 5,
                nonce: &nonce,
            };
            s.handle_open(t0, open, fresh());
            let out = drain(&mut s);
            if ok {
                let expected = if len == 0 {
                    Secret::ZERO
                } else {
                    Secret([1; 16])
                };
                assert!(
                    matches!(&out[..], [Output::Store(StoreOp::Create { record, .. })] if record.nonce == expected),
                    "{out:?}"
                );
            } else {
                assert_eq!(rejected(&out), Reject::BadNonce(len));
            }
        }
    }

    #[test]
    fn token_must_be_16_bytes() {
        let t0 = Instant::now();
        for len in [0, 15, 17, 32] {
            let token = vec![7u8; len];
            let mut s = Session::new(cfg(), t0);
            s.handle_resume(
                t0,
                Resume {
                    client_id: ID,
                    token: &token,
                    next_index: 0,
                },
                fresh(),
            );
            assert_eq!(rejected(&drain(&mut s)), Reject::MalformedToken(len));
        }
    }

    #[test]
    fn resume_of_unknown_session() {
        let r = resume_rejection(Lookup::Missing, TOKEN.as_bytes(), 0);
        assert_eq!(r, Reject::Unknown(id()));
    }

    #[test]
    fn resume_of_expired_session() {
        let r = resume_rejection(Lookup::Expired, TOKEN.as_bytes(), 0);
        assert_eq!(r, Reject::Expired(id()));
        assert!(r.to_string().contains("expired"));
    }

    #[test]
    fn resume_with_wrong_token() {
        let live = Lookup::Live(record(10, 1));
        let r = resume_rejection(live, &[8; 16], 3);
        assert_eq!(r, Reject::BadToken(id()));
        // The token is checked first: a stranger learns nothing about the count.
        let r = resume_rejection(Lookup::Live(record(10, 1)), &[8; 16], 11);
        assert_eq!(r, Reject::BadToken(id()));
    }

    #[test]
    fn resume_past_the_end() {
        let r = resume_rejection(Lookup::Live(record(10, 1)), TOKEN.as_bytes(), 11);
        assert_eq!(
            r,
            Reject::BadNextIndex {
                next_index: 11,
                count: 10
            }
        );
    }

    #[test]
    fn resume_mid_sequence_sends_from_next_index() {
        let t0 = Instant::now();
        let (s, out) = resumed(t0, 10, 4, 6);
        assert_eq!(out, [attached(10, 6), number(6, 10)]);
        assert_eq!(s.sent(), 7);
        assert_eq!(s.poll_timeout(), Some(t0 + SEC));
    }

    #[test]
    fn resume_at_count_waits_for_the_final_ack_then_deletes() {
        let t0 = Instant::now();
        let (mut s, out) = resumed(t0, 10, 1, 10);
        assert_eq!(out, [attached(10, 10)], "nothing is sent");
        // It waits for the final ack, not forever.
        assert_eq!(s.poll_timeout(), Some(t0 + s.cfg.silence_timeout));
        s.handle_timeout(t0 + SEC);
        assert_eq!(drain(&mut s), []);
        s.handle_ack(t0 + SEC, 10);
        assert_eq!(
            drain(&mut s),
            [Output::Store(StoreOp::Delete {
                client_id: id(),
                incarnation: INCARNATION,
                generation: 2
            })]
        );
        assert_eq!(s.poll_timeout(), None, "only the store can move it on");
        s.handle_store(t0 + SEC, StoreReply::Done);
        assert_eq!(drain(&mut s), [Output::End(End::Completed)]);
        assert!(s.is_ended());
    }

    #[test]
    fn resume_at_count_without_final_ack_goes_silent() {
        let t0 = Instant::now();
        let (mut s, _) = resumed(t0, 10, 1, 10);
        let silence = s.cfg.silence_timeout;
        s.handle_timeout(t0 + silence);
        assert_eq!(rejected(&drain(&mut s)), Reject::Silent(silence));
    }

    #[test]
    fn acks_must_not_go_backwards() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_ack(t0 + ms(10), 1);
        assert_eq!(drain(&mut s), []);
        let (_, out) = tick(&mut s, t0 + SEC);
        assert_eq!(out, [number(1, 10)]);
        s.handle_ack(t0 + SEC, 2);
        s.handle_ack(t0 + SEC, 2); // a repeat is fine
        assert_eq!(drain(&mut s), []);
        s.handle_ack(t0 + SEC, 1);
        assert_eq!(
            rejected(&drain(&mut s)),
            Reject::AckBackwards { ack: 1, acked: 2 }
        );
        assert!(s.is_ended());
    }

    #[test]
    fn acks_must_not_pass_what_was_sent() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_ack(t0, 2);
        assert_eq!(
            rejected(&drain(&mut s)),
            Reject::AckBeyondSent { ack: 2, sent: 1 }
        );
    }

    #[test]
    fn out_of_order_messages_are_rejected() {
        let t0 = Instant::now();
        // Ack before Open or Resume.
        let mut s = Session::new(cfg(), t0);
        s.handle_ack(t0, 0);
        assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
        // A second Open, and a Resume after an Open.
        let mut s = opened(t0, 10);
        s.handle_open(t0, open_msg(10), fresh());
        assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
        let mut s = opened(t0, 10);
        let resume = Resume {
            client_id: ID,
            token: TOKEN.as_bytes(),
            next_index: 0,
        };
        s.handle_resume(t0, resume, fresh());
        assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
        // Ack while attaching.
        let mut s = Session::new(cfg(), t0);
        s.handle_open(t0, open_msg(10), fresh());
        drain(&mut s);
        s.handle_ack(t0, 0);
        assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
        // The store's late answer after the end is ignored.
        s.handle_store(t0, StoreReply::Done);
        assert_eq!(drain(&mut s), []);
        // Input after the end is ignored.
        s.handle_ack(t0, 0);
        s.handle_timeout(t0 + Duration::from_secs(100));
        s.handle_closed(t0);
        s.begin_shutdown(t0);
        assert_eq!(drain(&mut s), []);
    }

    #[test]
    fn store_answer_without_request_ends_the_stream() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_store(t0, StoreReply::Done);
        assert!(matches!(
            rejected(&drain(&mut s)),
            Reject::StoreUnavailable(_)
        ));
    }

    #[test]
    fn store_answer_that_does_not_fit_ends_the_stream() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        s.handle_open(t0, open_msg(10), fresh());
        drain(&mut s);
        s.handle_store(t0, StoreReply::Conflict);
        assert!(matches!(
            rejected(&drain(&mut s)),
            Reject::StoreUnavailable(_)
        ));
    }

    #[test]
    fn numbers_are_paced_one_per_interval_with_a_refresh_before_each() {
        let t0 = Instant::now();
        let count = 5;
        let mut s = Session::new(cfg(), t0);
        s.handle_open(t0 + ms(10), open_msg(count), fresh());
        drain(&mut s);
        let attach_at = t0 + ms(20);
        s.handle_store(attach_at, StoreReply::Done);
        // Attached and the first number at once.
        assert_eq!(drain(&mut s), [attached(count, 0), number(0, count)]);
        for i in 1..count {
            let due = attach_at + SEC * i;
            assert_eq!(s.poll_timeout(), Some(due), "number {i}");
            // Early timers do nothing.
            s.handle_timeout(due - ms(1));
            assert_eq!(drain(&mut s), []);
            // The previous number is acknowledged 50 ms after it was sent.
            let ack_at = due - SEC + ms(50);
            s.handle_ack(ack_at, i);
            assert_eq!(drain(&mut s), []);
            let (op, out) = tick(&mut s, due);
            let mut expected = record(count, 1);
            expected.acked = i;
            assert_eq!(
                op,
                StoreOp::Update {
                    record: expected,
                    expect_generation: 1,
                    // The client has acknowledged everything sent: the
                    // stream works now, so the record lives a full TTL.
                    expires_in: Duration::from_secs(30),
                }
            );
            assert_eq!(out, [number(i, count)], "exactly one number per tick");
        }
        assert_eq!(s.sent(), count);
        // Everything sent: only the silence timer is left.
        assert_eq!(
            s.poll_timeout(),
            Some(attach_at + SEC * (count - 1) + s.cfg.silence_timeout)
        );
    }

    #[test]
    fn pacing_after_a_resume_uses_the_new_generation() {
        let t0 = Instant::now();
        let (mut s, out) = resumed(t0, 10, 3, 4);
        assert_eq!(out, [attached(10, 4), number(4, 10)]);
        s.handle_ack(t0 + ms(100), 5);
        let (op, out) = tick(&mut s, t0 + SEC);
        let expected = Record {
            acked: 5,
            generation: 4,
            ..record(10, 3)
        };
        assert_eq!(
            op,
            StoreOp::Update {
                record: expected,
                expect_generation: 4,
                expires_in: Duration::from_secs(30),
            }
        );
        assert_eq!(out, [number(5, 10)]);
        assert_eq!(s.poll_timeout(), Some(t0 + SEC * 2));
    }

    fn refresh_expiry(op: &StoreOp) -> Duration {
        match op {
            StoreOp::Update { expires_in, .. } => *expires_in,
            other => panic!("expected a refresh, got {other:?}"),
        }
    }

    #[test]
    fn refresh_expiry_counts_from_when_the_stream_last_worked() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        // No ack for a while (still under the silence timeout): the expiry
        // is not pushed forward by the server's own sending; the stream last
        // worked when number 0 went out at t0.
        let (op, _) = tick(&mut s, t0 + SEC);
        assert_eq!(refresh_expiry(&op), Duration::from_secs(29));
        let (op, _) = tick(&mut s, t0 + SEC * 2);
        assert_eq!(refresh_expiry(&op), Duration::from_secs(28));
        // A repeated (not advancing) ack proves the client alive: counted
        // from then at the next tick.
        s.handle_ack(t0 + SEC * 2 + ms(500), 0);
        assert_eq!(drain(&mut s), []);
        let (op, _) = tick(&mut s, t0 + SEC * 3);
        assert_eq!(refresh_expiry(&op), Duration::from_secs(30) - ms(500));
        // Progress that moves the deserved expiry (t0 + 33.2 s) more than
        // half an interval past the stored one (t0 + 32.5 s): refreshed at
        // once, without sending.
        s.handle_ack(t0 + SEC * 3 + ms(200), 2);
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Store(StoreOp::Update { expires_in, .. })]
            if *expires_in == Duration::from_secs(30)),
            "{out:?}"
        );
        s.handle_store(t0 + SEC * 3 + ms(200), StoreReply::Done);
        assert_eq!(drain(&mut s), [], "no number is due");
        // Catching up a round trip later stays within the tolerance.
        s.handle_ack(t0 + SEC * 3 + ms(300), 4);
        assert_eq!(drain(&mut s), []);
        assert_eq!(s.poll_timeout(), Some(t0 + SEC * 4));
        // Everything acknowledged: a full TTL from now.
        let (op, out) = tick(&mut s, t0 + SEC * 4);
        assert_eq!(refresh_expiry(&op), Duration::from_secs(30));
        assert_eq!(out, [number(4, 10)]);
    }

    /// Numbers were held up for seconds, then everything is acknowledged
    /// between two ticks, then the stream breaks before the next tick. The
    /// store must already say "ttl after the catch-up", not "ttl after the
    /// stall began".
    #[test]
    fn acks_after_a_stall_refresh_the_expiry_at_once() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        for i in 1..4 {
            let (op, _) = tick(&mut s, t0 + SEC * i);
            assert_eq!(refresh_expiry(&op), Duration::from_secs(30 - u64::from(i)));
        }
        s.handle_ack(t0 + SEC * 3 + ms(300), 4);
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Store(StoreOp::Update { expires_in, record, .. })]
            if *expires_in == Duration::from_secs(30) && record.acked == 4),
            "{out:?}"
        );
        s.handle_store(t0 + SEC * 3 + ms(300), StoreReply::Done);
        assert_eq!(drain(&mut s), []);
        s.handle_closed(t0 + SEC * 3 + ms(900));
        assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
    }

    /// ARCHITECTURE.md §2: a stream reset just after an ack arrived. The record must
    /// live `ttl` after the last moment the stream demonstrably worked, not
    /// `ttl` after the ack persisted by the previous refresh.
    #[test]
    fn expiry_after_a_drop_is_not_a_tick_early() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_ack(t0 + ms(20), 1);
        let (op, _) = tick(&mut s, t0 + SEC);
        // Persisted at t0 + 1 s: lives until t0 + 31 s, not t0 + 30.02 s.
        assert_eq!(refresh_expiry(&op), Duration::from_secs(30));
        s.handle_ack(t0 + SEC + ms(20), 2);
        s.handle_closed(t0 + SEC + ms(30));
        assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
    }

    #[test]
    fn window_limits_numbers_beyond_the_ack() {
        let t0 = Instant::now();
        let mut cfg = Config::new(Duration::ZERO, Duration::from_secs(30));
        cfg.window = 8;
        assert_eq!(cfg.ack_every(), 2);
        let mut s = Session::new(cfg.clone(), t0);
        s.handle_open(t0, open_msg(100), fresh());
        drain(&mut s);
        s.handle_store(t0, StoreReply::Done);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1 + 8, "Attached and one window: {out:?}");
        assert_eq!(s.sent(), 8);
        // Window full: no tick, only the silence timer.
        assert_eq!(s.poll_timeout(), Some(t0 + cfg.silence_timeout));
        s.handle_timeout(t0 + ms(1));
        assert_eq!(drain(&mut s), []);
        // An ack of 3 opens room for exactly 3 more (after a refresh).
        s.handle_ack(t0 + ms(2), 3);
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Store(StoreOp::Update { .. })]),
            "{out:?}"
        );
        s.handle_store(t0 + ms(2), StoreReply::Done);
        let out = drain(&mut s);
        assert_eq!(out, (8..11).map(|i| number(i, 100)).collect::<Vec<_>>());
        assert_eq!(s.sent(), 11);
        // The window holds at every step until the end.
        let mut acked = 3;
        while !s.is_ended() {
            acked = (acked + 5).min(s.sent());
            s.handle_ack(t0 + ms(3), acked);
            while let Some(out) = s.poll_output() {
                match out {
                    Output::Store(_) => s.handle_store(t0 + ms(3), StoreReply::Done),
                    Output::Send(n) => assert!(n.index < acked + 8, "{n:?} acked {acked}"),
                    Output::End(end) => assert_eq!(end, End::Completed),
                    Output::Attached(_) => panic!("attached twice"),
                }
            }
        }
        assert_eq!(acked, 100);
    }

    /// Runs a whole session, acknowledging every number, and returns the
    /// numbers sent.
    fn run_to_completion(count: u32) -> Vec<Number> {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        s.handle_open(t0, open_msg(count), fresh());
        let mut sent = Vec::new();
        let mut now = t0;
        loop {
            while let Some(out) = s.poll_output() {
                match out {
                    Output::Store(StoreOp::Delete {
                        client_id,
                        generation,
                        ..
                    }) => {
                        assert_eq!((client_id, generation), (id(), 1));
                        assert_eq!(sent.len() as u32, count, "deleted before the end");
                        s.handle_store(now, StoreReply::Done);
                    }
                    Output::Store(_) => s.handle_store(now, StoreReply::Done),
                    Output::Attached(a) => assert_eq!((a.count, a.next_index), (count, 0)),
                    Output::Send(n) => {
                        sent.push(n);
                        s.handle_ack(now, n.index + 1);
                    }
                    Output::End(end) => {
                        assert_eq!(end, End::Completed);
                        assert!(s.is_ended());
                        assert_eq!(s.poll_timeout(), None);
                        return sent;
                    }
                }
            }
            now = s.poll_timeout().expect("a live session has a timer");
            s.handle_timeout(now);
        }
    }

    #[test]
    fn checksum_is_on_the_final_number_only() {
        for count in [1, 2, 7] {
            let sent = run_to_completion(count);
            let expected: Vec<Number> = (0..count)
                .map(|i| Number {
                    index: i,
                    value: sequence::value(SEED, i),
                    checksum: (i + 1 == count).then(|| sequence::checksum(SEED, count)),
                })
                .collect();
            assert_eq!(sent, expected);
        }
    }

    #[test]
    fn final_ack_deletes_and_completes() {
        let t0 = Instant::now();
        let mut s = opened(t0, 2);
        s.handle_ack(t0, 1);
        let (_, out) = tick(&mut s, t0 + SEC);
        assert_eq!(out, [number(1, 2)]);
        s.handle_ack(t0 + SEC + ms(5), 2);
        assert_eq!(
            drain(&mut s),
            [Output::Store(StoreOp::Delete {
                client_id: id(),
                incarnation: INCARNATION,
                generation: 1
            })]
        );
        s.handle_store(t0 + SEC + ms(6), StoreReply::Done);
        assert_eq!(drain(&mut s), [Output::End(End::Completed)]);
        assert!(s.is_ended());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn final_ack_during_a_refresh_deletes_after_it() {
        let t0 = Instant::now();
        let mut cfg = Config::new(Duration::ZERO, Duration::from_secs(30));
        cfg.window = 1;
        let mut s = opened_with(cfg, t0, 2);
        s.handle_ack(t0, 1);
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Store(StoreOp::Update { .. })]
        ));
        s.handle_store(t0, StoreReply::Done);
        assert_eq!(drain(&mut s), [number(1, 2)]);
        s.handle_ack(t0, 2);
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Store(StoreOp::Delete { .. })]
        ));
    }

    #[test]
    fn a_refresh_that_finds_the_session_expired_or_gone_says_so() {
        // A stream paused past the TTL finds its session expired (or
        // replaced by a later incarnation); one whose store lost its data
        // finds nothing. Neither is a takeover.
        for (reply, reject) in [
            (StoreReply::Expired, Reject::Expired(id())),
            (StoreReply::Missing, Reject::Lost(id())),
        ] {
            let t0 = Instant::now();
            let mut s = opened(t0, 10);
            s.handle_ack(t0, 1);
            s.handle_timeout(t0 + SEC);
            assert!(matches!(
                &drain(&mut s)[..],
                [Output::Store(StoreOp::Update { .. })]
            ));
            s.handle_store(t0 + SEC, reply);
            let out = drain(&mut s);
            assert_eq!(out, [Output::End(End::Rejected(reject.clone()))]);
            assert_eq!(rejected(&out).code(), crate::client::Code::NotFound);
        }
    }

    #[test]
    fn refresh_conflict_means_taken_over() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_ack(t0, 1);
        s.handle_timeout(t0 + SEC);
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Store(StoreOp::Update { .. })]
        ));
        s.handle_store(t0 + SEC, StoreReply::Conflict);
        let out = drain(&mut s);
        assert_eq!(
            out,
            [Output::End(End::Rejected(Reject::TakenOver(id())))],
            "nothing sent"
        );
        assert!(s.is_ended());
    }

    #[test]
    fn delete_conflict_means_taken_over() {
        let t0 = Instant::now();
        let mut s = opened(t0, 1);
        s.handle_ack(t0, 1);
        drain(&mut s);
        s.handle_store(t0, StoreReply::Conflict);
        assert_eq!(rejected(&drain(&mut s)), Reject::TakenOver(id()));
    }

    #[test]
    fn takeover_conflict_means_taken_over() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        let resume = Resume {
            client_id: ID,
            token: TOKEN.as_bytes(),
            next_index: 0,
        };
        s.handle_resume(t0, resume, fresh());
        drain(&mut s);
        s.handle_store(t0, StoreReply::Loaded(Lookup::Live(record(5, 1))));
        drain(&mut s);
        s.handle_store(t0, StoreReply::Conflict);
        assert_eq!(rejected(&drain(&mut s)), Reject::TakenOver(id()));
    }

    #[test]
    fn repeated_open_takes_over_from_zero_with_the_live_token() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        let other = Fresh {
            seed: 1,
            token: Secret([9; 16]),
            incarnation: 99,
            holder: HOLDER,
        };
        s.handle_open(t0, open_msg(10), other);
        drain(&mut s);
        let live = Record {
            acked: 0,
            ..record(10, 3)
        };
        s.handle_store(t0, StoreReply::Exists(live));
        assert_eq!(
            drain(&mut s),
            [Output::Store(StoreOp::Update {
                record: Record {
                    generation: 4,
                    ..live
                },
                expect_generation: 3,
                expires_in: Duration::from_secs(30),
            })]
        );
        s.handle_store(t0, StoreReply::Done);
        // The live session's token and seed, not the fresh ones.
        assert_eq!(drain(&mut s), [attached(10, 0), number(0, 10)]);
    }

    #[test]
    fn open_of_a_live_id_is_refused_unless_it_repeats_the_same_open() {
        let t0 = Instant::now();
        let cases = [
            (
                "different nonce",
                Record {
                    nonce: Secret([4; 16]),
                    ..record(10, 1)
                },
                &NONCE[..],
            ),
            ("different count", record(11, 1), &NONCE[..]),
            (
                "no nonce",
                Record {
                    nonce: Secret::ZERO,
                    ..record(10, 1)
                },
                &[][..],
            ),
        ];
        for (what, live, nonce) in cases {
            let mut s = Session::new(cfg(), t0);
            let open = Open {
                client_id: ID,
                count: 10,
                nonce,
            };
            s.handle_open(t0, open, fresh());
            drain(&mut s);
            s.handle_store(t0, StoreReply::Exists(live));
            assert_eq!(
                rejected(&drain(&mut s)),
                Reject::AlreadyExists(id()),
                "{what}"
            );
        }
    }

    #[test]
    fn silent_before_the_first_message() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), t0);
        let silence = s.cfg.silence_timeout;
        assert_eq!(s.poll_timeout(), Some(t0 + silence));
        s.handle_timeout(t0 + silence - ms(1));
        assert_eq!(drain(&mut s), [], "early timeout is a no-op");
        s.handle_timeout(t0 + silence);
        assert_eq!(
            drain(&mut s),
            [Output::End(End::Rejected(Reject::Silent(silence)))]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn silent_while_numbers_are_unacknowledged() {
        let t0 = Instant::now();
        let mut s = opened(t0, 100);
        let silence = s.cfg.silence_timeout;
        assert_eq!(silence, Duration::from_secs(5));
        // Numbers keep coming each second while the client says nothing...
        for i in 1..5 {
            let (_, out) = tick(&mut s, t0 + SEC * i);
            assert_eq!(out, [number(i, 100)]);
        }
        // ...until the silence timeout, counted from the first unacked number.
        assert_eq!(s.poll_timeout(), Some(t0 + silence));
        s.handle_timeout(t0 + silence);
        assert_eq!(rejected(&drain(&mut s)), Reject::Silent(silence));
    }

    #[test]
    fn acks_restart_the_silence_timer() {
        let t0 = Instant::now();
        let mut s = opened(t0, 100);
        for i in 1..20 {
            s.handle_ack(t0 + SEC * i - ms(500), i);
            let (_, out) = tick(&mut s, t0 + SEC * i);
            assert_eq!(out, [number(i, 100)]);
        }
        assert!(!s.is_ended());
    }

    #[test]
    fn silent_waiting_for_the_final_ack() {
        let t0 = Instant::now();
        let mut s = opened(t0, 1);
        let silence = s.cfg.silence_timeout;
        assert_eq!(s.poll_timeout(), Some(t0 + silence));
        s.handle_timeout(t0 + silence);
        assert_eq!(rejected(&drain(&mut s)), Reject::Silent(silence));
    }

    #[test]
    fn early_timeouts_are_no_ops() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        for early in [t0, t0 + ms(1), t0 + SEC - ms(1)] {
            s.handle_timeout(early);
            assert_eq!(drain(&mut s), []);
            assert_eq!(s.poll_timeout(), Some(t0 + SEC));
        }
        // While a store operation is outstanding nothing times out but silence.
        let mut s = Session::new(cfg(), t0);
        s.handle_open(t0, open_msg(10), fresh());
        drain(&mut s);
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(drain(&mut s), []);
    }

    #[test]
    fn shutdown_and_abort_end_the_stream() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.begin_shutdown(t0);
        assert_eq!(rejected(&drain(&mut s)), Reject::ShuttingDown);
        s.begin_shutdown(t0);
        assert_eq!(drain(&mut s), []);
        let mut s = Session::new(cfg(), t0);
        s.begin_shutdown(t0);
        assert_eq!(rejected(&drain(&mut s)), Reject::ShuttingDown);
        let mut s = opened(t0, 10);
        s.abort(Reject::InjectedFault("every 3rd"));
        assert_eq!(rejected(&drain(&mut s)), Reject::InjectedFault("every 3rd"));
        s.abort(Reject::Full(1));
        assert_eq!(drain(&mut s), []);
    }

    #[test]
    fn client_gone_ends_quietly() {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_closed(t0);
        assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
        s.handle_closed(t0);
        assert_eq!(drain(&mut s), []);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn store_unavailable_ends_the_stream() {
        let t0 = Instant::now();
        // During attach.
        let mut s = Session::new(cfg(), t0);
        s.handle_open(t0, open_msg(10), fresh());
        drain(&mut s);
        s.handle_store(t0, StoreReply::Unavailable("timeout".into()));
        assert_eq!(
            rejected(&drain(&mut s)),
            Reject::StoreUnavailable("timeout".into())
        );
        // During a refresh.
        let mut s = opened(t0, 10);
        s.handle_timeout(t0 + SEC);
        drain(&mut s);
        s.handle_store(t0 + SEC, StoreReply::Unavailable("down".into()));
        assert_eq!(
            drain(&mut s),
            [Output::End(End::Rejected(Reject::StoreUnavailable(
                "down".into()
            )))]
        );
    }

    #[test]
    fn record_round_trips_through_a_pinned_encoding() {
        // The encoding is shared by every server of a Redis deployment and
        // outlives upgrades: its size and layout are pinned.
        assert_eq!(std::mem::size_of::<Record>(), 88);
        const { assert!(Record::ENCODED_LEN <= 128) };
        let r = Record {
            client_id: id(),
            token: Secret([0xa5; 16]),
            nonce: Secret([0x5a; 16]),
            seed: 0x0123_4567_89ab_cdef,
            count: MAX_COUNT,
            acked: 1234,
            generation: u64::MAX - 1,
            incarnation: 0x1122_3344_5566_7788,
            holder: 0x99aa_bbcc_ddee_ff00,
        };
        let bytes = r.to_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let golden = [
            "67e5504410b1426f9247bb680e5fe0c8", // client id
            "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5", // token
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", // nonce
            "0123456789abcdef",                 // seed
            "0000ffff",                         // count
            "000004d2",                         // acked
            "fffffffffffffffe",                 // generation
            "1122334455667788",                 // incarnation
            "99aabbccddeeff00",                 // holder
        ]
        .concat();
        assert_eq!(hex, golden);
        assert_eq!(bytes.len(), Record::ENCODED_LEN);
        assert_eq!(Record::from_bytes(&bytes), Some(r));
        assert_eq!(Record::from_bytes(&bytes[..87]), None);
        assert_eq!(Record::from_bytes(&[0; 89]), None);
        // The layout before incarnations (72 bytes) is not a record.
        assert_eq!(Record::from_bytes(&bytes[..72]), None);
        // A count of zero is not a record.
        assert_eq!(Record::from_bytes(&[0; 88]), None);
    }

    #[test]
    fn config_validation() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().silence_timeout, Duration::from_secs(5));
        let c = Config {
            window: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let short = Config::new(SEC, SEC * 2);
        assert_eq!(short.silence_timeout, SEC);
        assert_eq!(short.validate(), Ok(()));
        let mut c = Config::default();
        c.silence_timeout = c.ttl;
        assert!(c.validate().is_err());
        assert_eq!(Config::new(ms(10), SEC * 30).ack_every(), 16);
    }

    /// The unworkable configurations of issue 13, and one per rule: each is
    /// refused with a message that names the rule.
    #[test]
    fn unworkable_configurations_are_refused_with_the_rule() {
        // Every stream would end at its first refresh.
        let err = Config::new(SEC * 40, SEC * 30).validate().unwrap_err();
        assert!(err.contains("interval (40s) plus silence timeout"), "{err}");
        // An ack asked every 64 numbers at 40 ms: 2.52 s against 2.12 s.
        let mut c = Config::new(ms(40), SEC * 30);
        c.window = 256;
        let err = c.validate().unwrap_err();
        assert!(err.contains("acknowledge every 64 numbers"), "{err}");
        // ...which a smaller window fixes.
        c.window = 128;
        assert_eq!(c.validate(), Ok(()));
        // Explicit silence timeouts too short for an ack's round trip.
        let c = Config {
            silence_timeout: ms(200),
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("acknowledge every 1 numbers"));
        // Absurd durations.
        let c = Config {
            ttl: MAX_DURATION * 2,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("session TTL"));
        let c = Config::new(Duration::from_secs(1 << 62), Duration::from_secs(1 << 62));
        assert!(c.validate().is_err());
        // Just inside the refresh rule.
        let mut c = Config::new(SEC * 10, SEC * 30);
        assert_eq!(c.silence_timeout, SEC * 15);
        assert_eq!(c.validate(), Ok(()));
        c.interval = SEC * 15;
        assert_eq!(c.validate(), Ok(()));
        c.interval = SEC * 15 + ms(1);
        assert!(c.validate().is_err());
    }
}
