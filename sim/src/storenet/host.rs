//! The store host: accepts the servers' connections and applies each
//! operation to the real `MemoryStore`, at once or through its queue
//! ([`StoreNet::service`]).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::store::MemoryStore;
use tokio::sync::mpsc;

use crate::base::lock;
use crate::clock::SimClock;
use crate::report::Backlog;
use crate::rng::SimRng;
use crate::scenario::{Bug, StoreNet};
use crate::store::{self, WriteLog};
use crate::trace::TraceEvent;

use super::wire::{decode_op, encode_reply, frames, read_frame, write_frame, Frames};
use super::{Abort, PORT};

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
    // One pattern, so `w` drops before `r`, as locals drop in reverse:
    // when the connection is dropped turmoil sends `w`'s FIN, then `r`'s
    // reset if requests were left unread. The order is part of the run.
    let (mut r, mut w) = {
        let (r, w) = stream.into_split();
        (frames(r), w)
    };
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
        if write_frame(&mut w, encode_reply(id, &reply)).await.is_err() {
            return;
        }
    }
}

/// A connection whose operations go through the store's queue: every
/// request is read as it arrives (and queued), answers are written as the
/// queue executes them.
async fn queued(
    mut r: Frames<turmoil::net::tcp::OwnedReadHalf>,
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
        if write_frame(&mut w, encode_reply(done.id, &done.reply))
            .await
            .is_err()
        {
            return;
        }
    }
}
