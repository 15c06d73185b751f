//! A deterministic harness that runs the core end to end, without I/O.
//!
//! One [`Client`] talks to one server [`Session`] per stream (a new session
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::client::{self, Client, Outcome, Request, StreamEnd, Verdict};
use crate::sequence::{self, mix64, RunningChecksum};
use crate::server::{self, End, Fresh, Lookup, Output, Record, Session, StoreOp, StoreReply};
use crate::store::{self, Write};
use crate::{ClientId, Reject, Secret};

/// The session store as documented on [`StoreOp`], with expiry.
///
/// A record expires when `now >= expires_at`; it is then remembered as
/// expired (`Lookup::Expired`) for the rest of the run. `Delete` forgets a
/// record outright.
#[derive(Debug, Default)]
pub(crate) struct ModelStore {
    live: BTreeMap<ClientId, (Record, Instant)>,
    expired: BTreeMap<ClientId, Instant>,
}

impl ModelStore {
    fn expire(&mut self, now: Instant) {
        let due: Vec<ClientId> = self
            .live
            .iter()
            .filter(|(_, (_, at))| now >= *at)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (_, at) = self.live.remove(&id).expect("listed above");
            self.expired.insert(id, at);
        }
    }

    /// Performs `op` atomically at `now`, as [`store::decide`] says.
    pub(crate) fn apply(&mut self, now: Instant, op: StoreOp) -> StoreReply {
        self.expire(now);
        let id = match &op {
            StoreOp::Load(id) => *id,
            StoreOp::Create { record, .. } | StoreOp::Update { record, .. } => record.client_id,
            StoreOp::Delete { client_id, .. } => *client_id,
        };
        let stored = match self.live.get(&id) {
            Some((record, _)) => Lookup::Live(*record),
            None if self.expired.contains_key(&id) => Lookup::Expired,
            None => Lookup::Missing,
        };
        let (reply, write) = store::decide(&stored, &op);
        match write {
            Write::Nothing => {}
            Write::Put { record, expires_in } => {
                self.expired.remove(&id);
                self.live.insert(id, (record, now + expires_in));
            }
            Write::Remove => {
                self.live.remove(&id);
            }
        }
        reply
    }

    /// The live record for `id` at `now`, with its expiry.
    pub(crate) fn live(&mut self, now: Instant, id: ClientId) -> Option<(Record, Instant)> {
        self.expire(now);
        self.live.get(&id).copied()
    }

    /// How many records are live at `now`.
    pub(crate) fn live_count(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.live.len()
    }
}

/// One fault or stretch of time.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Let time run.
    Run(Duration),
    /// Reset the client's current stream: both sides are told.
    Drop,
    /// Deliver the next message this much later (later messages of the
    /// same stream and direction queue behind it).
    Delay(Duration),
    /// Deliver the next `Number` twice.
    Duplicate,
    /// Lose the next `Ack`.
    LoseAck,
    /// Lose the next number that carries the checksum.
    LoseFinalNumber,
    /// Lose the next final `Ack`.
    LoseFinalAck,
    /// Cut the network off for this long: open streams go half-open (every
    /// message on them is lost and nobody is told), and connections fail
    /// until it is back.
    Partition(Duration),
    /// The server process dies and restarts at once: every session vanishes
    /// without a word, the client's connection is reset, the (shared) store
    /// keeps its records.
    Crash,
    /// The store answers `Unavailable` to everything for this long.
    StoreOutage(Duration),
}

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
    session: Option<Session>,
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
    /// Per session (seed): the latest generation that sent, and by which
    /// stream.
    senders: BTreeMap<u64, (u64, StreamId)>,
    outcome: Option<(Instant, Outcome)>,
    longest_delay: Duration,
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

    /// Applies one operation.
    pub(crate) fn apply(&mut self, op: &Op) {
        self.log(|| format!("op {op:?}"));
        match op {
            Op::Run(d) => {
                let until = self.now + *d;
                self.run_until(until);
            }
            Op::Drop => {
                if let Some(sid) = self.current {
                    let stream = &self.streams[&sid];
                    if stream.session.is_some() && !stream.broken {
                        self.break_stream(sid);
                        let (a, b) = (self.latency(), self.latency());
                        let reset = StreamEnd::Transport("connection reset".into());
                        self.enqueue(self.now + a, Event::Client(sid, Down::End(reset)));
                        self.enqueue(self.now + b, Event::Server(sid, Up::Closed));
                    }
                }
            }
            Op::Delay(d) => {
                self.faults.delay_next = Some(*d);
                self.longest_delay = self.longest_delay.max(*d);
            }
            Op::Duplicate => self.faults.duplicate_next = true,
            Op::LoseAck => self.faults.lose_ack = true,
            Op::LoseFinalNumber => self.faults.lose_final_number = true,
            Op::LoseFinalAck => self.faults.lose_final_ack = true,
            Op::Partition(d) => {
                self.partition_until = self.partition_until.max(self.now + *d);
                let open: Vec<StreamId> = self
                    .streams
                    .iter()
                    .filter(|(_, s)| s.session.is_some() && !s.broken)
                    .map(|(id, _)| *id)
                    .collect();
                open.into_iter().for_each(|sid| self.break_stream(sid));
            }
            Op::Crash => {
                let ids: Vec<StreamId> = self.streams.keys().copied().collect();
                for sid in ids {
                    if self.streams[&sid].session.is_none() {
                        continue;
                    }
                    let was_open = !self.streams[&sid].broken;
                    self.break_stream(sid);
                    self.streams.get_mut(&sid).expect("listed").session = None;
                    if was_open && self.current == Some(sid) {
                        let after = self.latency();
                        let reset = StreamEnd::Transport("connection reset by peer".into());
                        self.enqueue(self.now + after, Event::Client(sid, Down::End(reset)));
                    }
                }
            }
            Op::StoreOutage(d) => {
                self.store_down_until = self.store_down_until.max(self.now + *d);
            }
        }
        self.settle();
    }

    /// Marks a stream broken and loses everything in flight on it.
    fn break_stream(&mut self, sid: StreamId) {
        self.streams.get_mut(&sid).expect("known stream").broken = true;
        self.queue.retain(|_, ev| ev.stream() != sid);
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
            .filter_map(|s| s.session.as_ref().and_then(Session::poll_timeout));
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

    fn session(&mut self, sid: StreamId) -> &mut Session {
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
                if alive.is_none_or(Session::is_ended) {
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
                    Down::End(end) => {
                        self.current = None;
                        self.client.handle_end(now, end);
                    }
                }
                self.drain_client();
            }
        }
    }

    /// Checks the client's progress on one number: at most one step, in
    /// order, from one session's sequence.
    fn check_accepted(&mut self, sid: StreamId, before: u32, n: server::Number) {
        let after = self.client.received();
        if after == before {
            return;
        }
        if after != before + 1 || n.index != before {
            return self.violation(format!(
                "client went from {before} to {after} numbers on number {}",
                n.index
            ));
        }
        self.last_progress = Some(self.now);
        let seed = self.streams[&sid]
            .seed
            .expect("a sending stream has a record");
        match self.accepted_seed {
            None => self.accepted_seed = Some(seed),
            Some(s) if s != seed => {
                self.violation(format!("number {} comes from another session", n.index))
            }
            Some(_) => {}
        }
        if n.value != sequence::value(seed, n.index) {
            self.violation(format!("number {} has the wrong value", n.index));
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
            session: reachable.then(|| Session::new(self.setup.server.clone(), self.now)),
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
                Output::End(End::ClientGone) => {}
                Output::End(End::Completed) => {
                    self.send(sid, Event::Client(sid, Down::End(StreamEnd::Ok)))
                }
                Output::End(End::Rejected(reject)) => {
                    let end = StreamEnd::rejected(&reject);
                    self.send(sid, Event::Client(sid, Down::End(end)));
                }
            }
        }
    }

    /// Only the stream holding the session's current generation may send,
    /// and generations that sent never go back: two streams never deliver
    /// one session at once.
    fn check_sender(&mut self, sid: StreamId, index: u32) {
        let stream = &self.streams[&sid];
        let (generation, seed) = (stream.generation, stream.seed);
        let stored = self.store.live(self.now, self.client_id).map(|(r, _)| r);
        let (Some(generation), Some(seed)) = (generation, seed) else {
            return self.violation(format!("stream {sid} sent {index} without a record"));
        };
        if stored.map(|r| (r.generation, r.seed)) != Some((generation, seed)) {
            return self.violation(format!(
                "stream {sid} (generation {generation}) sent {index} while the store holds {stored:?}"
            ));
        }
        match self.senders.get(&seed) {
            Some((g, s)) if *g > generation || (*g == generation && *s != sid) => {
                let (g, s) = (*g, *s);
                self.violation(format!(
                    "stream {sid} (generation {generation}) sent {index} after stream {s} (generation {g})"
                ));
            }
            _ => {}
        }
        self.senders.insert(seed, (generation, sid));
    }

    fn all_ended(&self) -> bool {
        self.streams
            .values()
            .all(|s| s.session.as_ref().is_none_or(Session::is_ended))
    }

    /// Runs without new faults until the client has finished, every stream
    /// has ended and nothing is in flight; then lets the TTL pass.
    pub(crate) fn finish(&mut self) {
        let limit = self.now + Duration::from_secs(4 * 3600);
        while self.outcome.is_none() || !self.all_ended() || !self.queue.is_empty() {
            match self.next_deadline() {
                None => {
                    return self
                        .violation("stuck: nothing is scheduled but the run is not over".into())
                }
                Some(at) if at > limit => {
                    return self.violation("the run does not end".into());
                }
                Some(at) => {
                    self.now = self.now.max(at);
                    self.settle();
                }
            }
        }
        let after = self.now + self.setup.server.ttl + Duration::from_secs(1);
        self.now = after;
        let live = self.store.live_count(self.now);
        if live != 0 {
            self.violation(format!("{live} session(s) still live a TTL after the end"));
        }
    }

    /// The invariants (ARCHITECTURE.md §6):
    ///
    /// 1. the client finished; if `Verified`, it holds exactly the sequence
    ///    of the session's seed and the checksums agree; whatever the
    ///    verdict, what it holds is a gapless prefix of that sequence;
    /// 2. `Expired` only if the client was really cut off for the TTL:
    ///    nothing heard from a server for at least `ttl` minus what the
    ///    network accounts for (latency, injected delays, lost acks) and
    ///    the client's last-moment squeeze (`backoff_initial`);
    ///    `Unreachable` only if no number it did not hold arrived for
    ///    `give_up_without_progress`;
    ///    no other verdict;
    /// 3. no session is live once the TTL has passed after the end;
    /// 4. only the current generation's stream sends (checked as it sends).
    pub(crate) fn check(&mut self) {
        let Some((at, outcome)) = self.outcome.clone() else {
            return self.violation("the client never finished".into());
        };
        let seed = self.accepted_seed;
        let prefix = |n: u32| -> (u64, u32) {
            let Some(seed) = seed else { return (0, 0) };
            let mut crc = RunningChecksum::new();
            let sum = (0..n)
                .map(|i| {
                    let v = sequence::value(seed, i);
                    crc.push(v);
                    u64::from(v)
                })
                .sum();
            (sum, crc.value())
        };
        if (outcome.sum, outcome.client_checksum) != prefix(outcome.received) {
            self.violation(format!("the client's sums are not its prefix: {outcome:?}"));
        }
        let ttl = self.setup.server.ttl;
        match &outcome.verdict {
            Verdict::Verified => {
                let seed = seed.expect("verified means numbers were accepted");
                let expected = sequence::checksum(seed, self.setup.count);
                if outcome.received != self.setup.count
                    || outcome.server_checksum != Some(expected)
                    || outcome.client_checksum != expected
                {
                    self.violation(format!("verified but not the sequence: {outcome:?}"));
                }
            }
            Verdict::Expired(why) => {
                let slack = self.setup.client.backoff_initial
                    + self.setup.max_latency * 2
                    + self.longest_delay
                    + self.setup.server.interval * self.acks_lost;
                match self.client_heard {
                    Some(heard) if at - heard + slack >= ttl => {}
                    heard => self.violation(format!(
                        "expired after only {:?} cut off (slack {slack:?}): {why}",
                        heard.map(|h| at - h)
                    )),
                }
            }
            Verdict::Unreachable(why) => {
                let cfg = &self.setup.client;
                let since = self.last_progress.unwrap_or(self.start);
                if at - since + cfg.backoff_initial < cfg.give_up_without_progress {
                    self.violation(format!("unreachable too early: {why}"));
                }
            }
            other => self.violation(format!("unexpected verdict {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn run(count: u32, seed: u64, ops: &[Op]) -> Outcome {
        let (violations, outcome, trace) =
            Harness::run(Instant::now(), Setup::new(count), seed, ops, true);
        assert!(
            violations.is_empty(),
            "{violations:#?}\n{}",
            trace.unwrap_or_default()
        );
        outcome.expect("checked")
    }

    #[test]
    fn model_store_follows_the_documented_semantics() {
        let t0 = Instant::now();
        let id = ClientId::from_random_bytes([1; 16]);
        let rec = |generation| Record {
            client_id: id,
            token: Secret([1; 16]),
            nonce: Secret::ZERO,
            seed: 1,
            count: 3,
            acked: 0,
            generation,
            incarnation: 1,
            holder: generation,
        };
        let mut s = ModelStore::default();
        assert_eq!(
            s.apply(t0, StoreOp::Load(id)),
            StoreReply::Loaded(Lookup::Missing)
        );
        let create = |generation| StoreOp::Create {
            record: rec(generation),
            expires_in: secs(30),
        };
        assert_eq!(s.apply(t0, create(1)), StoreReply::Done);
        assert_eq!(s.apply(t0, create(5)), StoreReply::Exists(rec(1)));
        let update = |expect, generation, expires_in| StoreOp::Update {
            record: rec(generation),
            expect_generation: expect,
            expires_in,
        };
        // Expecting a generation the store never reached: it lost writes.
        assert_eq!(s.apply(t0, update(2, 3, secs(30))), StoreReply::Missing);
        assert_eq!(s.apply(t0, update(1, 2, secs(10))), StoreReply::Done);
        assert_eq!(
            s.apply(t0 + secs(9), StoreOp::Load(id)),
            StoreReply::Loaded(Lookup::Live(rec(2)))
        );
        // Expiry is exclusive: gone at exactly `expires_in`.
        assert_eq!(
            s.apply(t0 + secs(10), StoreOp::Load(id)),
            StoreReply::Loaded(Lookup::Expired)
        );
        assert_eq!(
            s.apply(t0 + secs(10), update(2, 3, secs(30))),
            StoreReply::Expired
        );
        let delete = |generation| StoreOp::Delete {
            client_id: id,
            incarnation: 1,
            generation,
        };
        // Nothing of ours is live to delete.
        assert_eq!(s.apply(t0 + secs(10), delete(2)), StoreReply::Done);
        // An expired record is replaced by a new one.
        assert_eq!(s.apply(t0 + secs(11), create(1)), StoreReply::Done);
        assert_eq!(s.live_count(t0 + secs(11)), 1);
        assert_eq!(s.apply(t0 + secs(11), delete(0)), StoreReply::Conflict);
        assert_eq!(s.apply(t0 + secs(11), delete(1)), StoreReply::Done);
        assert_eq!(
            s.apply(t0 + secs(11), StoreOp::Load(id)),
            StoreReply::Loaded(Lookup::Missing)
        );
        assert_eq!(s.live_count(t0 + secs(11)), 0);
    }

    #[test]
    fn undisturbed_sessions_take_one_interval_per_number() {
        for count in [1, 2, 10, 200] {
            let t0 = Instant::now();
            let mut h = Harness::new(t0, Setup::new(count), 7, false);
            h.finish();
            h.check();
            assert!(h.violations.is_empty(), "{:?}", h.violations);
            let (at, outcome) = h.outcome.clone().unwrap();
            assert_eq!(outcome.verdict, Verdict::Verified);
            assert_eq!(outcome.reconnects, 0);
            let took = at - t0;
            let expected = secs(u64::from(count - 1));
            assert!(took >= expected && took < expected + secs(1), "{took:?}");
            // Completed sessions are deleted, not left to expire.
            assert_eq!(h.store.live.len() + h.store.expired.len(), 0);
        }
    }

    #[test]
    fn drops_are_resumed() {
        let ops = [
            Op::Run(secs(3)),
            Op::Drop,
            Op::Run(secs(4)),
            Op::Drop,
            Op::Drop,
            Op::Run(Duration::from_millis(10)),
            Op::Drop,
        ];
        let outcome = run(20, 1, &ops);
        assert_eq!(outcome.verdict, Verdict::Verified);
        assert!(outcome.reconnects >= 2, "{outcome:?}");
    }

    #[test]
    fn a_partition_shorter_than_the_ttl_is_survived() {
        // Shorter than the TTL by more than the client's largest backoff.
        let ops = [Op::Run(secs(5)), Op::Partition(secs(24)), Op::Run(secs(1))];
        let outcome = run(20, 2, &ops);
        assert_eq!(outcome.verdict, Verdict::Verified);
    }

    #[test]
    fn a_partition_longer_than_the_ttl_expires() {
        let ops = [Op::Run(secs(5)), Op::Partition(secs(40))];
        let outcome = run(20, 3, &ops);
        assert!(
            matches!(outcome.verdict, Verdict::Expired(_)),
            "{outcome:?}"
        );
        assert!(outcome.received >= 5);
    }

    #[test]
    fn lost_final_messages_are_recovered() {
        let outcome = run(5, 4, &[Op::LoseFinalNumber]);
        assert_eq!(outcome.verdict, Verdict::Verified);
        assert_eq!(outcome.reconnects, 1);
        // A lost final ack leaves the record to expire; `finish` checks it.
        let outcome = run(5, 5, &[Op::LoseFinalAck]);
        assert_eq!(outcome.verdict, Verdict::Verified);
    }

    /// The `Attached` of the first `Open` is lost: the client repeats its
    /// `Open` (same nonce), the server attaches it to the session it
    /// created (a takeover from 0), and the first stream, still sending
    /// into the void, is fenced out at its next refresh.
    #[test]
    fn a_repeated_open_recovers_a_lost_attached() {
        let mut setup = Setup {
            min_latency: Duration::from_millis(10),
            max_latency: Duration::from_millis(10),
            ..Setup::new(10)
        };
        // Longer than the client's attach timeout, so the first stream is
        // still sending when the repeated `Open` takes over.
        setup.server.silence_timeout = secs(10);
        let ops = [Op::Run(Duration::from_millis(15)), Op::Partition(secs(1))];
        let (violations, outcome, trace) = Harness::run(Instant::now(), setup, 6, &ops, true);
        let trace = trace.unwrap();
        assert!(violations.is_empty(), "{violations:?}\n{trace}");
        let outcome = outcome.unwrap();
        assert_eq!(outcome.verdict, Verdict::Verified, "{trace}");
        assert!(trace.contains("store: Exists"), "{trace}");
        assert!(trace.contains("End(Rejected(TakenOver"), "{trace}");
    }

    #[test]
    fn runs_are_deterministic() {
        let ops = [
            Op::Run(secs(2)),
            Op::Partition(secs(7)),
            Op::Duplicate,
            Op::Delay(secs(2)),
            Op::Run(secs(3)),
            Op::Drop,
        ];
        let t0 = Instant::now();
        let (_, a, ta) = Harness::run(t0, Setup::new(30), 9, &ops, true);
        let (_, b, tb) = Harness::run(t0, Setup::new(30), 9, &ops, true);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        let (_, _, tc) = Harness::run(t0, Setup::new(30), 10, &ops, true);
        assert_ne!(ta, tc);
    }

    /// Two `Resume`s of one client race in the store: a stale one (the
    /// client gave up on its stream while the server was still loading)
    /// and the current one. Both load generation 1; the stale one's
    /// takeover lands first, so the current stream's takeover conflicts
    /// and ends with ABORTED. The client must resume again (and win), not
    /// give up: a takeover can only come from a holder of its token.
    #[test]
    fn a_stale_resume_winning_the_store_race_does_not_end_the_client() {
        let t0 = Instant::now();
        let cfg = server::Config::default();
        let ttl = cfg.ttl;
        let mut store = ModelStore::default();
        let id = ClientId::from_random_bytes([2; 16]);
        let token = Secret([5; 16]);
        let live = Record {
            client_id: id,
            token,
            nonce: Secret::ZERO,
            seed: 99,
            count: 10,
            acked: 4,
            generation: 1,
            incarnation: 7,
            holder: 1,
        };
        let create = StoreOp::Create {
            record: live,
            expires_in: ttl,
        };
        assert_eq!(store.apply(t0, create), StoreReply::Done);
        let snapshot = client::Snapshot {
            client_id: id,
            count: 10,
            nonce: Secret::ZERO,
            token: Some(token),
            next_index: 4,
            sum: (0..4).map(|i| u64::from(sequence::value(99, i))).sum(),
            crc: {
                let mut crc = RunningChecksum::new();
                (0..4).for_each(|i| crc.push(sequence::value(99, i)));
                crc.value()
            },
            server_checksum: None,
        };
        let mut c = Client::restore(t0, client::Config::default(), snapshot, 1).unwrap();
        let id_text = id.to_string();
        // Each stream draws its own holder.
        let fresh = |holder| Fresh {
            seed: 0,
            token: Secret::ZERO,
            incarnation: 0,
            holder,
        };
        let resume = |s: &mut Session, holder| {
            let r = server::Resume {
                client_id: &id_text,
                token: token.as_bytes(),
                next_index: 4,
            };
            s.handle_resume(t0, r, fresh(holder));
        };
        // The stale stream and the current one both load generation 1.
        let mut stale = Session::new(cfg.clone(), t0);
        let mut current = Session::new(cfg, t0);
        resume(&mut stale, 2);
        resume(&mut current, 3);
        for s in [&mut stale, &mut current] {
            let Some(Output::Store(op)) = s.poll_output() else {
                panic!()
            };
            let reply = store.apply(t0, op);
            assert_eq!(reply, StoreReply::Loaded(Lookup::Live(live)));
            s.handle_store(t0, reply);
        }
        // The stale takeover lands first.
        let Some(Output::Store(op)) = stale.poll_output() else {
            panic!()
        };
        stale.handle_store(t0, store.apply(t0, op));
        assert!(matches!(stale.poll_output(), Some(Output::Attached(_))));
        let Some(Output::Store(op)) = current.poll_output() else {
            panic!()
        };
        let reply = store.apply(t0, op);
        assert_eq!(reply, StoreReply::Conflict);
        current.handle_store(t0, reply);
        let Some(Output::End(End::Rejected(reject))) = current.poll_output() else {
            panic!()
        };
        assert_eq!(reject, Reject::TakenOver(id));
        // The client hears ABORTED on its current stream and resumes.
        while c.poll_output().is_some() {}
        let end = StreamEnd::rejected(&reject);
        c.handle_end(t0, end);
        assert_eq!(c.poll_output(), None);
        let at = c.poll_timeout().expect("retrying");
        c.handle_timeout(at);
        assert!(matches!(
            c.poll_output(),
            Some(client::Output::Connect(Request::Resume {
                next_index: 4,
                ..
            }))
        ));
        // That resume takes the session back; the stale stream's next
        // refresh fails and it ends without sending again.
        let mut again = Session::new(server::Config::default(), at);
        let r = server::Resume {
            client_id: &id_text,
            token: token.as_bytes(),
            next_index: 4,
        };
        again.handle_resume(at, r, fresh(4));
        while let Some(out) = again.poll_output() {
            if let Output::Store(op) = out {
                let reply = store.apply(at, op);
                again.handle_store(at, reply);
            }
        }
        assert_eq!(store.live(at, id).map(|(r, _)| r.generation), Some(3));
        while stale.poll_output().is_some() {}
        stale.handle_timeout(t0 + Duration::from_secs(1));
        let Some(Output::Store(op)) = stale.poll_output() else {
            panic!()
        };
        stale.handle_store(t0 + Duration::from_secs(1), store.apply(at, op));
        assert_eq!(
            stale.poll_output(),
            Some(Output::End(End::Rejected(Reject::TakenOver(id))))
        );
    }

    fn ms(range: std::ops::Range<u64>) -> impl Strategy<Value = Duration> {
        range.prop_map(Duration::from_millis)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => ms(0..3_000).prop_map(Op::Run),
            3 => Just(Op::Drop),
            // Up to beyond the client's attach timeout (5 s) and the
            // server's silence timeout (5 s).
            2 => ms(0..8_000).prop_map(Op::Delay),
            1 => Just(Op::Duplicate),
            2 => Just(Op::LoseAck),
            1 => Just(Op::LoseFinalNumber),
            1 => Just(Op::LoseFinalAck),
            // Short, around the TTL (30 s), or well beyond it.
            1 => prop_oneof![
                6 => ms(0..10_000),
                2 => ms(20_000..40_000),
                1 => ms(40_000..70_000),
            ]
            .prop_map(Op::Partition),
            1 => Just(Op::Crash),
            1 => ms(0..20_000).prop_map(Op::StoreOutage),
        ]
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000)
    }

    /// A server and client configuration drawn from the whole space the
    /// flags reach, biased towards the edges of the validation rules.
    fn configs() -> impl Strategy<Value = (server::Config, client::Config)> {
        let interval = prop_oneof![
            Just(Duration::ZERO),
            ms(1..100),
            ms(100..5_000),
            ms(5_000..60_000),
        ];
        let ttl = prop_oneof![ms(1..5_000), ms(5_000..60_000), ms(60_000..300_000)];
        let silence = proptest::option::of(prop_oneof![ms(0..1_000), ms(1_000..60_000)]);
        let window = prop_oneof![1u32..8, 8u32..=2048];
        let client = (0u32..4, ms(0..3_000), ms(0..500), ms(0..20_000));
        (interval, ttl, silence, window, client).prop_map(
            |(interval, ttl, silence, window, (k, grace, backoff, give_up))| {
                let mut server = server::Config::new(interval, ttl);
                if let Some(silence) = silence {
                    server.silence_timeout = silence;
                }
                server.window = window;
                let client = client::Config {
                    silence_intervals: k,
                    silence_grace: grace,
                    backoff_initial: backoff,
                    give_up_without_progress: give_up.max(Duration::from_secs(10)),
                    ..client::Config::default()
                };
                (server, client)
            },
        )
    }

    #[test]
    fn the_configurations_of_the_issue_are_refused() {
        assert!(server::Config::new(secs(40), secs(30)).validate().is_err());
        let mut c = server::Config::new(Duration::from_millis(40), secs(30));
        c.window = 256;
        assert!(c.validate().is_err());
        // Run anyway, they do fail: the rules are not mere caution. The
        // first expires at its first refresh; the second has every stream
        // ended for silence before its first acknowledgement (64 numbers).
        for (server, count) in [(server::Config::new(secs(40), secs(30)), 5), (c, 200)] {
            let setup = Setup {
                server,
                ..Setup::new(count)
            };
            let (_, outcome, _) = Harness::run(Instant::now(), setup, 1, &[], false);
            let outcome = outcome.expect("finished");
            assert!(
                outcome.verdict != Verdict::Verified || outcome.reconnects > 0,
                "{outcome:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(),
            ..ProptestConfig::default()
        })]

        /// Every configuration is either refused at start or completes an
        /// undisturbed session: nothing valid fails on its own.
        #[test]
        fn every_configuration_is_refused_or_completes_a_session(
            seed: u64,
            count in 1u32..=20,
            (server, client) in configs(),
        ) {
            if server.validate().is_err() || client.validate().is_err() {
                return Ok(());
            }
            let setup = Setup { server, client, ..Setup::new(count) };
            let (violations, outcome, _) = Harness::run(Instant::now(), setup.clone(), seed, &[], false);
            let verified = outcome.as_ref().is_some_and(|o| o.verdict == Verdict::Verified);
            let clean = outcome.as_ref().is_some_and(|o| o.reconnects == 0);
            if !violations.is_empty() || !verified || !clean {
                let (_, _, trace) = Harness::run(Instant::now(), setup.clone(), seed, &[], true);
                prop_assert!(
                    false,
                    "{:?}\n{:#?}\n{:?}\n{}",
                    setup, violations, outcome, trace.unwrap_or_default()
                );
            }
        }

        #[test]
        fn faults_never_break_the_invariants(
            seed: u64,
            count in 1u32..=200,
            max_latency_ms in 1u64..=150,
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let t0 = Instant::now();
            let setup = Setup {
                max_latency: Duration::from_millis(max_latency_ms),
                ..Setup::new(count)
            };
            let (violations, _, _) = Harness::run(t0, setup.clone(), seed, &ops, false);
            if !violations.is_empty() {
                let (_, _, trace) = Harness::run(t0, setup, seed, &ops, true);
                prop_assert!(false, "{:#?}\n{}", violations, trace.unwrap_or_default());
            }
        }

        /// The same with no pacing: numbers as fast as the window (8)
        /// allows, acknowledged in batches of 2.
        #[test]
        fn faults_never_break_the_invariants_unpaced(
            seed: u64,
            count in 1u32..=2_000,
            max_latency_ms in 1u64..=150,
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let t0 = Instant::now();
            let mut server = server::Config::new(Duration::ZERO, Duration::from_secs(30));
            server.window = 8;
            let setup = Setup {
                server,
                max_latency: Duration::from_millis(max_latency_ms),
                ..Setup::new(count)
            };
            let (violations, _, _) = Harness::run(t0, setup.clone(), seed, &ops, false);
            if !violations.is_empty() {
                let (_, _, trace) = Harness::run(t0, setup, seed, &ops, true);
                prop_assert!(false, "{:#?}\n{}", violations, trace.unwrap_or_default());
            }
        }
    }
}
