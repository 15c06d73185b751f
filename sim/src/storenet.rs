//! The store as a host of its own ([`StoreKind::Host`]): a small
//! request/response protocol over turmoil's TCP between the servers
//! ([`NetStore`], behind the same `SessionStore` trait as every store) and
//! the `store` host ([`serve`]), which applies each operation to the real
//! `MemoryStore` on the simulation's clock.
//!
//! Being on the network gives the store the faults a real one has: latency,
//! a partition from one server but not from its clients, a reply lost after
//! the write was applied (the host drops the reply and the connection, at
//! [`StoreNet::reply_loss`]), and crashes that keep or lose its data.
//!
//! With [`StoreNet::service`] (or once [`Action::StoreService`] sets one)
//! the host is also a store of limited speed: one worker executes every
//! operation in the order they arrived, each taking the service time, so
//! operations queue and latency grows with the load, as on a
//! single-threaded store whose CPU is the limit. Without it, operations
//! execute as they arrive, as before the queue existed.
//!
//! [`Action::StoreService`]: crate::Action::StoreService
//!
//! # Wire format
//!
//! Frames are a big-endian `u32` length and then that many bytes: a `u64`
//! request id, a tag byte and the fields.
//!
//! | request | tag | fields |
//! |---|---|---|
//! | `Load` | 0 | client id (36 bytes of text) |
//! | `Create` | 1 | record (`Record::to_bytes`), expiry (`u64` ns) |
//! | `Update` | 2 | record, expected generation (`u64`), expiry (`u64` ns) |
//! | `Delete` | 3 | client id, incarnation (`u64`), generation (`u64`) |
//!
//! | reply | tag | fields |
//! |---|---|---|
//! | `Loaded(Live)` | 0 | record |
//! | `Loaded(Expired)` | 1 | |
//! | `Loaded(Missing)` | 2 | |
//! | `Done` | 3 | |
//! | `Exists` | 4 | record |
//! | `Conflict` | 5 | |
//! | `ExpiredOrReplaced` | 6 | |
//! | `Vanished` | 7 | |
//! | `Unavailable` | 8 | message (UTF-8) |
//!
//! # The client side
//!
//! A [`NetStore`] multiplexes every stream's operations of one server boot
//! over one connection, matched to replies by request id. An operation not
//! answered within [`StoreNet::op_timeout`] drops the connection it was
//! sent on, if that is still the current one (it may be dead for good:
//! turmoil's TCP does not retransmit), losing the answers of every other
//! operation on it, and, with
//! [`StoreNet::resend`], is sent once more on a new one: a write whose reply
//! was lost arrives twice, which the store's idempotence must absorb. If
//! that fails too, the answer is `Unavailable`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::store::{MemoryStore, SessionStore, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::base::lock;
use crate::clock::SimClock;
use crate::report::Backlog;
use crate::rng::SimRng;
use crate::scenario::{Bug, StoreNet};
use crate::store::{self, WriteLog};
use crate::trace::TraceEvent;

/// The store host's name.
pub const HOST: &str = "store";
/// The port it listens on.
pub const PORT: u16 = 6379;
/// Largest frame either side accepts.
const MAX_FRAME: usize = 1024;
/// How long a server waits for a connection to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn put_id(out: &mut Vec<u8>, id: &ClientId) {
    out.extend_from_slice(id.to_string().as_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_nanos(out: &mut Vec<u8>, d: Duration) {
    put_u64(out, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// A cursor over a frame's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("frame too short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn id(&mut self) -> io::Result<ClientId> {
        let text = std::str::from_utf8(self.take(36)?).map_err(|_| bad("client id"))?;
        ClientId::parse(text).map_err(|_| bad("client id"))
    }

    fn record(&mut self) -> io::Result<Record> {
        Record::from_bytes(self.take(Record::ENCODED_LEN)?).ok_or_else(|| bad("record"))
    }

    fn nanos(&mut self) -> io::Result<Duration> {
        Ok(Duration::from_nanos(self.u64()?))
    }

    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

/// A request frame (length prefix included).
pub fn encode_op(id: u64, op: &StoreOp) -> Vec<u8> {
    let mut out = vec![0; 4];
    put_u64(&mut out, id);
    match op {
        StoreOp::Load(client) => {
            out.push(0);
            put_id(&mut out, client);
        }
        StoreOp::Create { record, expires_in } => {
            out.push(1);
            out.extend_from_slice(&record.to_bytes());
            put_nanos(&mut out, *expires_in);
        }
        StoreOp::Update {
            record,
            expect_generation,
            expires_in,
        } => {
            out.push(2);
            out.extend_from_slice(&record.to_bytes());
            put_u64(&mut out, *expect_generation);
            put_nanos(&mut out, *expires_in);
        }
        StoreOp::Delete {
            client_id,
            incarnation,
            generation,
        } => {
            out.push(3);
            put_id(&mut out, client_id);
            put_u64(&mut out, *incarnation);
            put_u64(&mut out, *generation);
        }
    }
    finish(out)
}

/// Parses a request frame's body (without the length prefix).
pub fn decode_op(body: &[u8]) -> io::Result<(u64, StoreOp)> {
    let mut f = Fields(body);
    let id = f.u64()?;
    let op = match f.u8()? {
        0 => StoreOp::Load(f.id()?),
        1 => StoreOp::Create {
            record: f.record()?,
            expires_in: f.nanos()?,
        },
        2 => StoreOp::Update {
            record: f.record()?,
            expect_generation: f.u64()?,
            expires_in: f.nanos()?,
        },
        3 => StoreOp::Delete {
            client_id: f.id()?,
            incarnation: f.u64()?,
            generation: f.u64()?,
        },
        _ => return Err(bad("unknown request tag")),
    };
    f.end()?;
    Ok((id, op))
}

/// A reply frame (length prefix included).
pub fn encode_reply(id: u64, reply: &StoreReply) -> Vec<u8> {
    let mut out = vec![0; 4];
    put_u64(&mut out, id);
    match reply {
        StoreReply::Loaded(Lookup::Live(record)) => {
            out.push(0);
            out.extend_from_slice(&record.to_bytes());
        }
        StoreReply::Loaded(Lookup::Expired) => out.push(1),
        StoreReply::Loaded(Lookup::Missing) => out.push(2),
        StoreReply::Done => out.push(3),
        StoreReply::Exists(record) => {
            out.push(4);
            out.extend_from_slice(&record.to_bytes());
        }
        StoreReply::Conflict => out.push(5),
        StoreReply::ExpiredOrReplaced => out.push(6),
        StoreReply::Vanished => out.push(7),
        StoreReply::Unavailable(why) => {
            out.push(8);
            let why = why.as_bytes();
            out.extend_from_slice(&why[..why.len().min(MAX_FRAME - 16)]);
        }
    }
    finish(out)
}

/// Parses a reply frame's body (without the length prefix).
pub fn decode_reply(body: &[u8]) -> io::Result<(u64, StoreReply)> {
    let mut f = Fields(body);
    let id = f.u64()?;
    let reply = match f.u8()? {
        0 => StoreReply::Loaded(Lookup::Live(f.record()?)),
        1 => StoreReply::Loaded(Lookup::Expired),
        2 => StoreReply::Loaded(Lookup::Missing),
        3 => StoreReply::Done,
        4 => StoreReply::Exists(f.record()?),
        5 => StoreReply::Conflict,
        6 => StoreReply::ExpiredOrReplaced,
        7 => StoreReply::Vanished,
        8 => {
            let rest = f.take(f.0.len())?;
            StoreReply::Unavailable(String::from_utf8_lossy(rest).into_owned())
        }
        _ => return Err(bad("unknown reply tag")),
    };
    f.end()?;
    Ok((id, reply))
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(out.len() - 4).expect("frames are small");
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads one frame's body.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(bad("frame too long"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

// ---------------------------------------------------------------------
// The store host.

/// The store host's state; it outlives the host's boots.
pub struct StoreHost {
    /// The data: kept across a restart, or replaced by an empty store.
    data: Mutex<MemoryStore>,
    bug: Bug,
    clock: Arc<SimClock>,
    writes: WriteLog,
    reply_loss: f64,
    /// Draws which replies are lost (seeded; the host runs on the
    /// simulation's one thread, in a fixed order).
    rng: Mutex<SimRng>,
    takeover_reply_loss: f64,
    /// Draws which takeover replies are lost: a stream of its own, so
    /// that runs without this fault draw exactly as before it existed.
    takeover_rng: Mutex<SimRng>,
    /// Time per operation ([`StoreNet::service`]); `None` until one is
    /// set: operations then execute as they arrive, with no queue (so runs
    /// without this setting replay as before it existed).
    service: Mutex<Option<Duration>>,
    /// What the queue holds.
    load: Mutex<QueueLoad>,
    /// The queue each time the speed changed, and when it emptied after.
    backlogs: Mutex<Vec<Backlog>>,
    /// What the store did, for the trace.
    log: Box<dyn Fn(TraceEvent) + Send + Sync>,
}

impl StoreHost {
    /// A store host with empty data.
    pub fn new(
        clock: &Arc<SimClock>,
        bug: Bug,
        plan: &StoreNet,
        seed: u64,
        writes: &WriteLog,
        log: impl Fn(TraceEvent) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(StoreHost {
            data: Mutex::new(store::memory(clock)),
            bug,
            clock: clock.clone(),
            writes: writes.clone(),
            reply_loss: plan.reply_loss,
            rng: Mutex::new(SimRng::new(seed)),
            takeover_reply_loss: plan.takeover_reply_loss,
            takeover_rng: Mutex::new(SimRng::new(crate::rng::derive(seed, &[1]))),
            service: Mutex::new((!plan.service.is_zero()).then_some(plan.service)),
            load: Mutex::default(),
            backlogs: Mutex::default(),
            log: Box::new(log),
        })
    }

    /// Sets the time per operation from `now` on ([`Action::StoreService`]):
    /// operations go through the store's queue from then on, whatever the
    /// value. Returns the queue as it is then (the store then notes when it
    /// is next empty: [`StoreHost::backlogs`]).
    ///
    /// [`Action::StoreService`]: crate::Action::StoreService
    pub fn set_service(&self, service: Duration, now: Duration) -> Backlog {
        *lock(&self.service) = Some(service);
        let load = *lock(&self.load);
        let waiting = u32::try_from(load.waiting).unwrap_or(u32::MAX);
        let left = load.busy_until.saturating_sub(now);
        let backlog = Backlog {
            at: now,
            waiting: load.waiting,
            drain: left + service * waiting,
            emptied: (waiting == 0 && left.is_zero()).then_some(now),
        };
        lock(&self.backlogs).push(backlog);
        backlog
    }

    fn service(&self) -> Option<Duration> {
        *lock(&self.service)
    }

    /// The queue each time the speed changed, with when it was next empty.
    pub fn backlogs(&self) -> Vec<Backlog> {
        lock(&self.backlogs).clone()
    }

    /// The queue is empty at `now`: the first time since the speed last
    /// changed, that is when it emptied.
    fn emptied(&self, now: Duration) {
        let mut backlogs = lock(&self.backlogs);
        if let Some(last) = backlogs.last_mut().filter(|b| b.emptied.is_none()) {
            last.emptied = Some(now);
            let since = now - last.at;
            drop(backlogs);
            (self.log)(TraceEvent::QueueEmpty { since });
        }
    }

    /// The data now.
    pub fn data(&self) -> MemoryStore {
        lock(&self.data).clone()
    }

    /// Replaces the data with an empty store (a restart without
    /// persistence); returns the ids that were live.
    pub fn lose_data(&self, ids: &[ClientId]) -> Vec<ClientId> {
        let mut data = lock(&self.data);
        let live = ids
            .iter()
            .copied()
            .filter(|id| matches!(store::lookup(&data, *id), Lookup::Live(_)))
            .collect();
        *data = store::memory(&self.clock);
        live
    }

    fn apply(&self, op: StoreOp) -> StoreReply {
        let data = self.data();
        store::apply(&data, self.bug, op, self.clock.elapsed(), &self.writes)
    }

    /// Fails over to a replica that missed the writes of the last `lag`
    /// (at `now`): each live record of `ids` written since goes back to
    /// the last record of the same incarnation the replica had seen, as
    /// long as that one would still be live. Returns the ids changed.
    ///
    /// Such a rollback is not a write of any stream's, so it is not logged
    /// as one; the runner reports it as a loss of data.
    pub fn fail_over(&self, ids: &[ClientId], now: Duration, lag: Duration) -> Vec<ClientId> {
        let seen_until = now.saturating_sub(lag);
        let data = self.data();
        let writes = lock(&self.writes);
        let mut changed = Vec::new();
        for &id in ids {
            let Lookup::Live(current) = store::lookup(&data, id) else {
                continue;
            };
            let ours = |w: &&store::StoreWrite| w.op.client_id() == id;
            if !writes.iter().filter(ours).any(|w| w.at > seen_until) {
                continue; // The replica has everything.
            }
            let Some(last) = writes.iter().filter(ours).rfind(|w| w.at <= seen_until) else {
                continue;
            };
            let (Lookup::Live(old), Some(asked)) = (last.after.clone(), expires_in(&last.op))
            else {
                continue;
            };
            let left = (last.at + asked).saturating_sub(now);
            if old.incarnation != current.incarnation || old == current || left.is_zero() {
                continue;
            }
            store::force_put(&data, old, left);
            changed.push(id);
        }
        if !changed.is_empty() {
            (self.log)(TraceEvent::FailedOver {
                lag,
                rolled_back: changed.len(),
            });
        }
        changed
    }

    /// With [`StoreNet::takeover_reply_loss`], for a takeover write (an
    /// `Update` to the next generation): what is stored before it, to tell
    /// its first application from a repeat.
    fn takeover_applied_first(&self, op: &StoreOp) -> Option<Lookup> {
        let takeover = matches!(op, StoreOp::Update { record, expect_generation, .. }
            if record.generation == expect_generation + 1);
        (takeover && self.takeover_reply_loss > 0.0).then(|| self.lookup(op))
    }

    fn lookup(&self, op: &StoreOp) -> Lookup {
        store::lookup(&self.data(), op.client_id())
    }

    /// Whether the reply is lost: at [`StoreNet::reply_loss`], and for a
    /// takeover write the store just applied (not its repeat) at
    /// [`StoreNet::takeover_reply_loss`].
    fn loses_reply(&self, takeover_applied: bool) -> bool {
        if self.reply_loss > 0.0 && lock(&self.rng).chance(self.reply_loss) {
            return true;
        }
        takeover_applied && lock(&self.takeover_rng).chance(self.takeover_reply_loss)
    }
}

/// How long a write asked its record to live.
fn expires_in(op: &StoreOp) -> Option<Duration> {
    match op {
        StoreOp::Create { expires_in, .. } | StoreOp::Update { expires_in, .. } => {
            Some(*expires_in)
        }
        StoreOp::Load(_) | StoreOp::Delete { .. } => None,
    }
}

/// Runs the store host: accepts servers' connections and answers them.
pub async fn serve(host: Arc<StoreHost>) -> io::Result<()> {
    let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, PORT)).await?;
    // One queue per boot (a restarted store starts idle), started when
    // first needed.
    let queue = Queue::default();
    *lock(&host.load) = QueueLoad::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream, host.clone(), queue.clone()));
    }
}

/// The way into a boot's queue, once its worker ([`execute`]) runs.
type Queue = Arc<Mutex<Option<mpsc::UnboundedSender<Queued>>>>;

/// The sender into `queue`, starting its worker on this runtime (the store
/// host's) if it does not run yet.
fn enqueue(queue: &Queue, host: &Arc<StoreHost>) -> mpsc::UnboundedSender<Queued> {
    lock(queue)
        .get_or_insert_with(|| {
            let (tx, inbox) = mpsc::unbounded_channel();
            tokio::spawn(execute(inbox, host.clone()));
            tx
        })
        .clone()
}

/// What the store's queue holds.
#[derive(Clone, Copy, Debug, Default)]
struct QueueLoad {
    /// Operations waiting, not yet executing.
    waiting: u64,
    /// When the one executing is done.
    busy_until: Duration,
}

/// An operation waiting in the store's queue ([`StoreNet::service`]).
struct Queued {
    /// When it arrived.
    arrived: Duration,
    id: u64,
    op: StoreOp,
    /// Where its connection waits for the answer.
    reply: mpsc::UnboundedSender<Executed>,
}

/// An operation the queue executed, back to its connection.
struct Executed {
    id: u64,
    /// The operation (for the trace, should its reply be lost).
    op: StoreOp,
    reply: StoreReply,
    /// Its reply is lost (see [`StoreHost::loses_reply`]).
    lost: bool,
}

/// Applies `op` as the store host does, and tells whether its reply is
/// lost.
fn execute_one(host: &StoreHost, op: StoreOp) -> (StoreReply, bool) {
    let takeover = host.takeover_applied_first(&op);
    let reply = host.apply(op.clone());
    let lost = host.loses_reply(takeover.is_some_and(|before| before != host.lookup(&op)));
    (reply, lost)
}

/// The store's one worker, with [`StoreNet::service`]: executes queued
/// operations one at a time, in the order they arrived, each taking the
/// service time from the later of its arrival and the end of the one
/// before. The times are kept exactly, so the store's throughput is one
/// operation per service time even where turmoil's steps are coarser;
/// only when an answer leaves is rounded up to a step. An operation whose
/// server gave up (its connection gone) still takes its turn, as a real
/// store executes what it has read.
async fn execute(mut inbox: mpsc::UnboundedReceiver<Queued>, host: Arc<StoreHost>) {
    let mut busy_until = Duration::ZERO;
    while let Some(q) = inbox.recv().await {
        let service = host.service().unwrap_or_default();
        busy_until = busy_until.max(q.arrived) + service;
        {
            let mut load = lock(&host.load);
            load.waiting = load.waiting.saturating_sub(1);
            load.busy_until = busy_until;
        }
        let now = host.clock.elapsed();
        if busy_until > now {
            tokio::time::sleep(busy_until - now).await;
        }
        let (reply, lost) = execute_one(&host, q.op.clone());
        let _ = q.reply.send(Executed {
            id: q.id,
            op: q.op,
            reply,
            lost,
        });
        if lock(&host.load).waiting == 0 {
            host.emptied(host.clock.elapsed());
        }
    }
}

async fn connection(stream: turmoil::net::TcpStream, host: Arc<StoreHost>, queue: Queue) {
    let (mut r, mut w) = stream.into_split();
    loop {
        if host.service().is_some() {
            let queue = enqueue(&queue, &host);
            return queued(r, w, host, queue).await;
        }
        let Ok(body) = read_frame(&mut r).await else {
            return;
        };
        let Ok((id, op)) = decode_op(&body) else {
            return;
        };
        let (reply, lost) = execute_one(&host, op.clone());
        if lost {
            // Applied, but the server never hears: the connection drops.
            (host.log)(TraceEvent::ReplyLost { op, reply });
            return;
        }
        if w.write_all(&encode_reply(id, &reply)).await.is_err() {
            return;
        }
    }
}

/// A connection whose operations go through the store's queue: every
/// request is read as it arrives (and queued), answers are written as the
/// queue executes them.
async fn queued(
    mut r: turmoil::net::tcp::OwnedReadHalf,
    mut w: turmoil::net::tcp::OwnedWriteHalf,
    host: Arc<StoreHost>,
    queue: mpsc::UnboundedSender<Queued>,
) {
    let (tx, mut executed) = mpsc::unbounded_channel();
    let clock = host.clock.clone();
    let counter = host.clone();
    let _reader = Abort(tokio::spawn(async move {
        while let Ok(body) = read_frame(&mut r).await {
            let Ok((id, op)) = decode_op(&body) else {
                return;
            };
            let queued = Queued {
                arrived: clock.elapsed(),
                id,
                op,
                reply: tx.clone(),
            };
            lock(&counter.load).waiting += 1;
            if queue.send(queued).is_err() {
                return;
            }
        }
    }));
    while let Some(done) = executed.recv().await {
        if done.lost {
            (host.log)(TraceEvent::ReplyLost {
                op: done.op,
                reply: done.reply,
            });
            return;
        }
        if w.write_all(&encode_reply(done.id, &done.reply))
            .await
            .is_err()
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------
// The servers' side.

enum Msg {
    /// Send this frame (request id, bytes) if its caller still waits.
    Frame(u64, Vec<u8>),
    /// Drop connection number `n` if it is still the current one: the
    /// next frame opens a new one. A reset asked for because of an older
    /// connection leaves a newer one alone, or timeouts on one connection
    /// would each kill the next, and the operations on it, in a chain that
    /// never ends while operations keep coming.
    Reset(u64),
}

/// A caller waiting for its answer.
struct Waiting {
    reply: oneshot::Sender<StoreReply>,
    /// The connection its frame was written on, once written.
    on: Option<u64>,
}

struct Inner {
    calls: mpsc::UnboundedSender<Msg>,
    pending: Mutex<HashMap<u64, Waiting>>,
    next_id: AtomicU64,
    op_timeout: Duration,
    resend: bool,
}

/// A server's handle on the store host: a `SessionStore` over the
/// simulated network. Make one per server boot with [`NetStore::new`] and
/// spawn its connection task on that boot's runtime.
#[derive(Clone)]
pub struct NetStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetStore").finish()
    }
}

/// The connection task of a [`NetStore`]; spawn it on the server's runtime.
pub struct Connection {
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Connections made so far: the current one's number.
    connections: u64,
}

impl NetStore {
    /// A handle and its connection task.
    pub fn new(plan: &StoreNet) -> (NetStore, Connection) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            calls: tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            op_timeout: plan.op_timeout,
            resend: plan.resend,
        });
        (
            NetStore {
                inner: inner.clone(),
            },
            Connection {
                inner,
                rx,
                connections: 0,
            },
        )
    }
}

impl SessionStore for NetStore {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        let inner = &self.inner;
        let attempts = if inner.resend { 2 } else { 1 };
        for _ in 0..attempts {
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&inner.pending).insert(
                id,
                Waiting {
                    reply: tx,
                    on: None,
                },
            );
            if inner
                .calls
                .send(Msg::Frame(id, encode_op(id, &op)))
                .is_err()
            {
                break;
            }
            if let Ok(Ok(reply)) = tokio::time::timeout(inner.op_timeout, rx).await {
                return reply;
            }
            let written = lock(&inner.pending).remove(&id).and_then(|w| w.on);
            if let Some(connection) = written {
                let _ = inner.calls.send(Msg::Reset(connection));
            }
        }
        StoreReply::Unavailable(format!(
            "the store host did not answer within {:?} ({attempts} attempt(s))",
            inner.op_timeout
        ))
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "the simulated store host does not count sessions".into(),
        ))
    }

    fn kind(&self) -> &'static str {
        "sim-store-host"
    }
}

impl Connection {
    /// Runs until the server's runtime stops.
    pub async fn run(mut self) {
        loop {
            // Wait for something to send.
            let first = loop {
                match self.rx.recv().await {
                    None => return,
                    Some(Msg::Reset(_)) => continue,
                    Some(Msg::Frame(id, frame)) if self.waiting(id) => break (id, frame),
                    Some(Msg::Frame(..)) => continue,
                }
            };
            let (first_id, first) = first;
            let connect = turmoil::net::TcpStream::connect((HOST, PORT));
            let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await else {
                // Its caller times out and tries again.
                continue;
            };
            self.connections += 1;
            let connection = self.connections;
            let (mut r, mut w) = stream.into_split();
            let inner = self.inner.clone();
            let reader = Abort(tokio::spawn(async move {
                while let Ok(body) = read_frame(&mut r).await {
                    let Ok((id, reply)) = decode_reply(&body) else {
                        return;
                    };
                    if let Some(waiting) = lock(&inner.pending).remove(&id) {
                        let _ = waiting.reply.send(reply);
                    }
                }
            }));
            if !self.written(first_id, connection) || w.write_all(&first).await.is_err() {
                continue;
            }
            loop {
                match self.rx.recv().await {
                    None => return,
                    Some(Msg::Reset(n)) if n == connection => break,
                    Some(Msg::Reset(_)) => {}
                    Some(Msg::Frame(id, frame)) if self.written(id, connection) => {
                        if w.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                    Some(Msg::Frame(..)) => {}
                }
            }
            drop(reader);
        }
    }

    /// Whether request `id`'s caller still waits for it (frames of callers
    /// that gave up are not sent late).
    fn waiting(&self, id: u64) -> bool {
        lock(&self.inner.pending).contains_key(&id)
    }

    /// Whether request `id`'s caller still waits for it; if so, notes that
    /// its frame goes out on `connection`.
    fn written(&self, id: u64, connection: u64) -> bool {
        match lock(&self.inner.pending).get_mut(&id) {
            Some(waiting) => {
                waiting.on = Some(connection);
                true
            }
            None => false,
        }
    }
}

/// Aborts a task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station_core::Secret;

    fn record() -> Record {
        Record {
            client_id: ClientId::from_random_bytes([9; 16]),
            token: Secret([1; 16]),
            nonce: Secret([2; 16]),
            seed: 77,
            count: 10,
            acked: 3,
            generation: 4,
            incarnation: 0xfeed,
            holder: 0xbeef,
        }
    }

    #[test]
    fn every_operation_and_reply_round_trips() {
        let r = record();
        let ops = [
            StoreOp::Load(r.client_id),
            StoreOp::Create {
                record: r,
                expires_in: Duration::from_millis(1500),
            },
            StoreOp::Update {
                record: r,
                expect_generation: 3,
                expires_in: Duration::from_secs(30),
            },
            StoreOp::Delete {
                client_id: r.client_id,
                incarnation: 5,
                generation: 6,
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let frame = encode_op(i as u64, &op);
            assert_eq!(decode_op(&frame[4..]).unwrap(), (i as u64, op));
        }
        let replies = [
            StoreReply::Loaded(Lookup::Live(r)),
            StoreReply::Loaded(Lookup::Expired),
            StoreReply::Loaded(Lookup::Missing),
            StoreReply::Done,
            StoreReply::Exists(r),
            StoreReply::Conflict,
            StoreReply::ExpiredOrReplaced,
            StoreReply::Vanished,
            StoreReply::Unavailable("down".into()),
        ];
        for (i, reply) in replies.into_iter().enumerate() {
            let frame = encode_reply(i as u64, &reply);
            assert_eq!(decode_reply(&frame[4..]).unwrap(), (i as u64, reply));
        }
        assert!(decode_op(&[0; 9]).is_err());
        assert!(decode_reply(&[0; 8]).is_err());
    }
}
