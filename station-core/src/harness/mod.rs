//! A deterministic harness that runs the core end to end, without I/O.
//!
//! One [`Client`] talks to one server [`server::Stream`] per stream (a new machine
//! for every connection, as `station-net` does) over a modelled network: a
//! queue of in-flight messages with latency, kept in order per stream and
//! direction. Sessions share a [`ModelStore`] that implements [`StoreOp`]
//! exactly as documented. The clock is fake: it jumps to the next deadline
//! (the earliest of the client's and the sessions' `poll_timeout` and the
//! next delivery), like quinn-proto's `Pair::drive`.
//!
//! Faults ([`Op`]) are applied between stretches of time: reset the stream,
//! cut the network off (silently: half-open streams, failing connects),
//! delay, duplicate or lose one message. Afterwards the run continues
//! without new faults until the client has finished and every stream has
//! ended, and [`Harness::check`] tests the invariants of ARCHITECTURE.md §6.
//!
//! Everything is deterministic: one base `Instant`, seeded randomness, and
//! `BTreeMap`s only.
//!
//! The harness itself and its network are here; the model store is in
//! `store.rs`, the faults in `faults.rs`, the invariants in `check.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::client::{self, Client, Outcome, Request, StreamEnd, Verdict};
use crate::sequence::{self, mix64, RunningChecksum};
use crate::server::{self, End, Fresh, Lookup, Output, Record, StoreOp, StoreReply};
use crate::testkit::invariants::OneStream;
use crate::{ClientId, Reject, Secret};

mod check;
mod faults;
mod store;
#[cfg(test)]
mod tests;

pub(crate) use self::faults::Op;
pub(crate) use self::store::ModelStore;

type StreamId = u64;

/// Client to server.
#[derive(Clone, Debug)]
enum Up {
    First(Request),
    Ack(u32),
    Closed,
}

/// Server to client.
#[derive(Clone, Debug)]
enum Down {
    Attached(server::Attached),
    Number(server::Number),
    Paused(u32),
    End(StreamEnd),
}

#[derive(Clone, Debug)]
enum Event {
    Server(StreamId, Up),
    Client(StreamId, Down),
}

impl Event {
    fn stream(&self) -> StreamId {
        match self {
            Event::Server(s, _) | Event::Client(s, _) => *s,
        }
    }
}

struct Stream {
    /// `None` for a connection attempt that failed.
    session: Option<server::Stream>,
    /// Generation and seed of the record this stream last wrote.
    generation: Option<u64>,
    seed: Option<u64>,
    /// Half-open or reset: every further message is lost.
    broken: bool,
    /// Latest delivery time per direction, to keep each in order.
    last_up: Instant,
    last_down: Instant,
}

#[derive(Default)]
struct Faults {
    delay_next: Option<Duration>,
    duplicate_next: bool,
    lose_ack: bool,
    lose_final_number: bool,
    lose_final_ack: bool,
}

/// What a run must respect. See [`Harness::check`].
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) count: u32,
    pub(crate) server: server::Config,
    pub(crate) client: client::Config,
    pub(crate) min_latency: Duration,
    pub(crate) max_latency: Duration,
}

impl Setup {
    pub(crate) fn new(count: u32) -> Self {
        Setup {
            count,
            server: server::Config::new(Duration::from_secs(1), Duration::from_secs(30)),
            client: client::Config::default(),
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(30),
        }
    }
}

/// The whole system under test. See the [module docs](self).
pub(crate) struct Harness {
    setup: Setup,
    start: Instant,
    now: Instant,
    rng: u64,
    client_id: ClientId,
    id_text: String,
    client: Client,
    store: ModelStore,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: StreamId,
    /// The client's current stream.
    current: Option<StreamId>,
    queue: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    partition_until: Instant,
    store_down_until: Instant,
    faults: Faults,
    /// Last time the client heard from a server on its current stream.
    client_heard: Option<Instant>,
    /// Last time the client accepted a number it did not hold.
    last_progress: Option<Instant>,
    /// Seed of the numbers the client accepted.
    accepted_seed: Option<u64>,
    /// Per session (seed): invariant 4's tracker, fed the generations the
    /// store confirmed and every send.
    senders: BTreeMap<u64, OneStream<Instant>>,
    outcome: Option<(Instant, Outcome)>,
    longest_delay: Duration,
    /// A write failed because the store was down: a renewal failed, so the
    /// record may expire up to a lease before `ttl` after the client last
    /// heard a number (the stream sends for `2L` after its last confirmed
    /// write, the record lives `ttl + L` after it).
    renewal_failed: bool,
    acks_lost: u32,
    violations: Vec<String>,
    trace: Option<String>,
}

const SPIN_LIMIT: u32 = 100_000;

impl Harness {
    /// A harness whose client opens a session of `setup.count` numbers at
    /// `start`. `seed` drives every random choice.
    pub(crate) fn new(start: Instant, setup: Setup, seed: u64, trace: bool) -> Self {
        let mut rng = seed;
        let mut draw = || {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(rng)
        };
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&draw().to_le_bytes());
        id[8..].copy_from_slice(&draw().to_le_bytes());
        let client_id = ClientId::from_random_bytes(id);
        let client_seed = draw();
        let client = Client::new(
            start,
            setup.client.clone(),
            client_id,
            setup.count,
            client_seed,
        )
        .expect("valid count");
        let mut h = Harness {
            setup,
            start,
            now: start,
            rng,
            client_id,
            id_text: client_id.to_string(),
            client,
            store: ModelStore::default(),
            streams: BTreeMap::new(),
            next_stream: 1,
            current: None,
            queue: BTreeMap::new(),
            seq: 0,
            partition_until: start,
            store_down_until: start,
            faults: Faults::default(),
            client_heard: None,
            last_progress: None,
            accepted_seed: None,
            senders: BTreeMap::new(),
            outcome: None,
            longest_delay: Duration::ZERO,
            renewal_failed: false,
            acks_lost: 0,
            violations: Vec::new(),
            trace: trace.then(String::new),
        };
        h.drain_client();
        h
    }

    /// Runs `ops`, then lets the system settle and checks it. Returns the
    /// violations found (empty if none) and the client's outcome.
    pub(crate) fn run(
        start: Instant,
        setup: Setup,
        seed: u64,
        ops: &[Op],
        trace: bool,
    ) -> (Vec<String>, Option<Outcome>, Option<String>) {
        let mut h = Harness::new(start, setup, seed, trace);
        for op in ops {
            h.apply(op);
        }
        h.finish();
        h.check();
        let outcome = h.outcome.map(|(_, o)| o);
        (h.violations, outcome, h.trace)
    }

    fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.rng)
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_micros() as u64 + 1;
        lo + Duration::from_micros(self.draw() % span)
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let t = (self.now - self.start).as_secs_f64();
            let _ = writeln!(trace, "{t:10.3} {}", what());
        }
    }

    fn violation(&mut self, what: String) {
        self.log(|| format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    fn latency(&mut self) -> Duration {
        self.between(self.setup.min_latency, self.setup.max_latency)
    }

    fn enqueue(&mut self, at: Instant, ev: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Sends on a stream, in order, subject to the faults.
    fn send(&mut self, sid: StreamId, ev: Event) {
        if self.streams[&sid].broken {
            return self.log(|| format!("lost (broken stream) {ev:?}"));
        }
        let mut copies = 1;
        match &ev {
            Event::Server(_, Up::Ack(n))
                if *n == self.setup.count && self.faults.lose_final_ack =>
            {
                self.faults.lose_final_ack = false;
                self.acks_lost += 1;
                return self.log(|| format!("lost final ack {n}"));
            }
            Event::Server(_, Up::Ack(n)) if self.faults.lose_ack => {
                self.faults.lose_ack = false;
                self.acks_lost += 1;
                return self.log(|| format!("lost ack {n}"));
            }
            Event::Client(_, Down::Number(n))
                if n.checksum.is_some() && self.faults.lose_final_number =>
            {
                self.faults.lose_final_number = false;
                return self.log(|| format!("lost final number {}", n.index));
            }
            Event::Client(_, Down::Number(_)) if self.faults.duplicate_next => {
                self.faults.duplicate_next = false;
                copies = 2;
            }
            _ => {}
        }
        let extra = self.faults.delay_next.take().unwrap_or_default();
        let at = self.now + self.latency() + extra;
        let stream = self.streams.get_mut(&sid).expect("known stream");
        let last = match ev {
            Event::Server(..) => &mut stream.last_up,
            Event::Client(..) => &mut stream.last_down,
        };
        let at = at.max(*last);
        *last = at;
        for _ in 0..copies {
            self.enqueue(at, ev.clone());
        }
    }

    /// The earliest moment something happens, if anything will.
    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .streams
            .values()
            .filter_map(|s| s.session.as_ref().and_then(server::Stream::poll_timeout));
        self.queue
            .keys()
            .next()
            .map(|(at, _)| *at)
            .into_iter()
            .chain(self.client.poll_timeout())
            .chain(sessions)
            .min()
    }

    /// Runs every event and timer due by `until`, jumping from deadline to
    /// deadline, and leaves the clock at `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.settle();
            match self.next_deadline() {
                Some(at) if at <= until => self.now = self.now.max(at),
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Handles everything due at `now`.
    fn settle(&mut self) {
        for _ in 0..SPIN_LIMIT {
            if let Some(entry) = self.queue.first_entry() {
                if entry.key().0 <= self.now {
                    let ev = entry.remove();
                    self.deliver(ev);
                    continue;
                }
            }
            if self.client.poll_timeout().is_some_and(|at| at <= self.now) {
                self.client.handle_timeout(self.now);
                self.drain_client();
                continue;
            }
            let due = self.streams.iter().find_map(|(id, s)| {
                let at = s.session.as_ref()?.poll_timeout()?;
                (at <= self.now).then_some(*id)
            });
            if let Some(sid) = due {
                let now = self.now;
                self.session(sid).handle_timeout(now);
                self.drain_server(sid);
                continue;
            }
            return;
        }
        panic!("livelock: a timer stays due after handle_timeout (or events never end)");
    }

    fn session(&mut self, sid: StreamId) -> &mut server::Stream {
        self.streams
            .get_mut(&sid)
            .and_then(|s| s.session.as_mut())
            .expect("a stream with a session")
    }

    fn deliver(&mut self, ev: Event) {
        self.log(|| format!("deliver {ev:?}"));
        let now = self.now;
        match ev {
            Event::Server(sid, up) => {
                let alive = self.streams.get(&sid).and_then(|s| s.session.as_ref());
                if alive.is_none_or(server::Stream::is_ended) {
                    return;
                }
                match up {
                    Up::First(Request::Open {
                        client_id,
                        count,
                        nonce,
                    }) => {
                        assert_eq!(client_id, self.client_id);
                        let fresh = Fresh {
                            seed: self.draw(),
                            token: Secret(
                                [self.draw().to_le_bytes(), self.draw().to_le_bytes()]
                                    .concat()
                                    .try_into()
                                    .expect("16 bytes"),
                            ),
                            incarnation: self.draw(),
                            holder: self.draw(),
                        };
                        let id = self.id_text.clone();
                        let open = server::Open {
                            client_id: &id,
                            count,
                            nonce: nonce.as_bytes(),
                        };
                        self.session(sid).handle_open(now, open, fresh);
                    }
                    Up::First(Request::Resume {
                        client_id,
                        token,
                        next_index,
                    }) => {
                        assert_eq!(client_id, self.client_id);
                        let id = self.id_text.clone();
                        let resume = server::Resume {
                            client_id: &id,
                            token: token.as_bytes(),
                            next_index,
                        };
                        let fresh = Fresh {
                            seed: 0,
                            token: Secret::ZERO,
                            incarnation: 0,
                            holder: self.draw(),
                        };
                        self.session(sid).handle_resume(now, resume, fresh);
                    }
                    Up::Ack(n) => self.session(sid).handle_ack(now, n),
                    Up::Closed => self.session(sid).handle_closed(now),
                }
                self.drain_server(sid);
            }
            Event::Client(sid, down) => {
                if self.current != Some(sid) || self.client.is_finished() {
                    return;
                }
                match down {
                    Down::Attached(a) => {
                        self.client_heard = Some(now);
                        let a = client::Attached {
                            count: a.count,
                            next_index: a.next_index,
                            token: a.token.as_bytes(),
                            ttl: a.ttl,
                            interval: a.interval,
                            ack_every: a.ack_every,
                        };
                        self.client.handle_attached(now, a);
                    }
                    Down::Number(n) => {
                        self.client_heard = Some(now);
                        let before = self.client.received();
                        let number = client::Number {
                            index: n.index,
                            value: n.value,
                            checksum: n.checksum,
                        };
                        self.client.handle_number(now, number);
                        self.check_accepted(sid, before, n);
                    }
                    // Not proof that the store holds the session: the
                    // client's `last_heard` does not move either.
                    Down::Paused(next_index) => self.client.handle_paused(now, next_index),
                    Down::End(end) => {
                        self.current = None;
                        self.client.handle_end(now, end);
                    }
                }
                self.drain_client();
            }
        }
    }

    fn drain_client(&mut self) {
        while let Some(out) = self.client.poll_output() {
            self.log(|| format!("client: {out:?}"));
            match out {
                client::Output::Connect(request) => {
                    self.close_current();
                    self.connect(request);
                }
                client::Output::Ack(n) => {
                    if let Some(sid) = self.current {
                        self.send(sid, Event::Server(sid, Up::Ack(n)));
                    }
                }
                client::Output::Disconnect => self.close_current(),
                client::Output::Finished(outcome) => {
                    if self.outcome.is_some() {
                        self.violation("client finished twice".into());
                    }
                    self.outcome = Some((self.now, outcome));
                }
            }
        }
    }

    fn close_current(&mut self) {
        if let Some(sid) = self.current.take() {
            if self.streams[&sid].session.is_some() {
                self.send(sid, Event::Server(sid, Up::Closed));
            }
        }
    }

    fn connect(&mut self, request: Request) {
        let sid = self.next_stream;
        self.next_stream += 1;
        self.current = Some(sid);
        let reachable = self.now >= self.partition_until;
        let stream = Stream {
            session: reachable.then(|| server::Stream::new(self.setup.server.clone(), self.now)),
            generation: None,
            seed: None,
            broken: !reachable,
            last_up: self.now,
            last_down: self.now,
        };
        self.streams.insert(sid, stream);
        if reachable {
            self.send(sid, Event::Server(sid, Up::First(request)));
        } else {
            // Refused at once or timing out: anywhere up to two seconds.
            let after = self.between(Duration::from_millis(1), Duration::from_secs(2));
            let end = StreamEnd::Transport("network unreachable".into());
            self.enqueue(self.now + after, Event::Client(sid, Down::End(end)));
        }
    }

    fn drain_server(&mut self, sid: StreamId) {
        loop {
            let Some(out) = self.session(sid).poll_output() else {
                return;
            };
            self.log(|| format!("server {sid}: {out:?}"));
            match out {
                Output::Store(op) => {
                    let reply = if self.now < self.store_down_until {
                        self.renewal_failed |= matches!(op, StoreOp::Update { .. });
                        StoreReply::Unavailable("store down".into())
                    } else {
                        self.store.apply(self.now, op.clone())
                    };
                    self.log(|| format!("store: {reply:?}"));
                    if reply == StoreReply::Done {
                        if let StoreOp::Create { record, .. } | StoreOp::Update { record, .. } = op
                        {
                            let stream = self.streams.get_mut(&sid).expect("known stream");
                            stream.generation = Some(record.generation);
                            stream.seed = Some(record.seed);
                            let now = self.now;
                            self.one_stream(record.seed)
                                .attached(record.generation, now);
                        }
                    }
                    let now = self.now;
                    self.session(sid).handle_store(now, reply);
                }
                Output::Attached(a) => self.send(sid, Event::Client(sid, Down::Attached(a))),
                Output::Send(n) => {
                    self.check_sender(sid, n.index);
                    self.send(sid, Event::Client(sid, Down::Number(n)));
                }
                Output::Paused { next_index } => {
                    self.send(sid, Event::Client(sid, Down::Paused(next_index)))
                }
                Output::End(End::ClientGone) => {}
                Output::End(End::Completed { .. }) => {
                    self.send(sid, Event::Client(sid, Down::End(StreamEnd::Ok)))
                }
                Output::End(End::Rejected(reject)) => {
                    let end = StreamEnd::rejected(&reject);
                    self.send(sid, Event::Client(sid, Down::End(end)));
                }
            }
        }
    }
}
