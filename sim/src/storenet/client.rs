//! The servers' side of the store host's protocol.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_core::server::{StoreOp, StoreReply};
use station_net::store::{SessionStore, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::base::lock;
use crate::scenario::StoreNet;

use super::wire::{decode_reply, encode_op, frames, read_frame, write_frame};
use super::{Abort, HOST, PORT};

/// How long a server waits for a connection to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

enum Msg {
    /// Send this frame (request id, body) if its caller still waits.
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
            let (r, mut w) = stream.into_split();
            let mut r = frames(r); // moved into the reader task just below
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
            if !self.written(first_id, connection) || write_frame(&mut w, first).await.is_err() {
                continue;
            }
            loop {
                match self.rx.recv().await {
                    None => return,
                    Some(Msg::Reset(n)) if n == connection => break,
                    Some(Msg::Reset(_)) => {}
                    Some(Msg::Frame(id, frame)) if self.written(id, connection) => {
                        if write_frame(&mut w, frame).await.is_err() {
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
