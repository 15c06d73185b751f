//! One task per stream: runs a core [`Session`] over a gRPC stream.
//!
//! The loop is the core's run loop and nothing more: drain the session's
//! outputs (send a message, run a store operation and feed its answer back),
//! then wait for the first of shutdown, a client message, or the session's
//! timer. Every protocol decision is the session's.

use std::sync::Arc;

use station_core::server::{End, Open, Output, Resume, Session, StoreOp, StoreReply};
use station_core::Reject;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::{Status, Streaming};

use crate::clock::{now, sleep_until};
use crate::metrics;
use crate::proto::client_message::Kind as ClientKind;
use crate::proto::server_message::Kind as ServerKind;
use crate::proto::{Attached, ClientMessage, Number, ServerMessage};
use crate::server::{Shared, StreamEvent};
use crate::status::to_status;
use crate::store::SessionStore;

type Tx = mpsc::Sender<Result<ServerMessage, Status>>;
type Permit = mpsc::OwnedPermit<Result<ServerMessage, Status>>;

/// Drives one stream until it ends. `_slot` holds this stream's place under
/// `--max-sessions` and is released on return.
pub(crate) async fn drive<S: SessionStore>(
    shared: Arc<Shared<S>>,
    mut inbound: Streaming<ClientMessage>,
    tx: Tx,
    _slot: OwnedSemaphorePermit,
) {
    let _gauge = metrics::AttachedGauge::new();
    // Keep one buffer slot for the final status, so a client whose buffer is
    // full (the write-timeout case) still learns why its stream ended.
    let Ok(last_word) = tx.clone().reserve_owned().await else {
        return; // The client is already gone.
    };
    let mut session = Session::new(shared.cfg.session.clone(), now());
    let mut resumed = false;
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                Output::Store(op) => {
                    let reply = execute(&shared, op).await;
                    session.handle_store(now(), reply);
                }
                Output::Attached(a) => {
                    shared.counters.attached(resumed);
                    let msg = ServerKind::Attached(Box::new(Attached {
                        count: a.count,
                        next_index: a.next_index,
                        resume_token: a.token.as_bytes().to_vec(),
                        session_ttl: prost_types::Duration::try_from(a.ttl).ok(),
                        interval: prost_types::Duration::try_from(a.interval).ok(),
                        ack_every: a.ack_every,
                    }));
                    if send(&shared, &mut session, &tx, msg).await {
                        if let (Some(client_id), Some(generation)) =
                            (session.client_id(), session.generation())
                        {
                            shared.observe(|| StreamEvent::Attached {
                                client_id,
                                generation,
                                next_index: a.next_index,
                            });
                        }
                    }
                }
                Output::Send(n) => {
                    if let Some(fault) = shared.inject_fault(now()) {
                        session.abort(fault);
                        continue;
                    }
                    let msg = ServerKind::Number(Number {
                        index: n.index,
                        value: n.value,
                        checksum: n.checksum,
                    });
                    if send(&shared, &mut session, &tx, msg).await {
                        shared.counters.number_sent();
                        if let (Some(client_id), Some(generation)) =
                            (session.client_id(), session.generation())
                        {
                            shared.observe(|| StreamEvent::Sent {
                                client_id,
                                generation,
                                index: n.index,
                                value: n.value,
                            });
                        }
                    }
                }
                Output::End(end) => return finish(&shared, &session, last_word, end),
            }
        }
        let deadline = session.poll_timeout();
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => session.begin_shutdown(now()),
            msg = inbound.message() => match msg {
                Ok(Some(msg)) => {
                    resumed |= matches!(msg.kind, Some(ClientKind::Resume(_)));
                    handle(&shared, &mut session, msg);
                }
                Ok(None) => session.abort(Reject::Unexpected(
                    "client closed its side of the stream before the session completed",
                )),
                // tonic reports its own decode limit as OUT_OF_RANGE; every
                // other error here means the client or connection went away.
                Err(status) if status.code() == tonic::Code::OutOfRange => {
                    session.abort(Reject::MessageTooLarge(status.message().to_owned()))
                }
                Err(_) => session.handle_closed(now()),
            },
            _ = sleep_until(deadline) => session.handle_timeout(now()),
        }
    }
}

/// Feeds one client message to the session.
fn handle<S: SessionStore>(shared: &Shared<S>, session: &mut Session, msg: ClientMessage) {
    let now = now();
    match msg.kind {
        Some(ClientKind::Open(open)) => {
            let open = Open {
                client_id: &open.client_id,
                count: open.count,
                nonce: &open.open_nonce,
            };
            session.handle_open(now, open, shared.fresh());
        }
        Some(ClientKind::Resume(resume)) => {
            let resume = Resume {
                client_id: &resume.client_id,
                token: &resume.resume_token,
                next_index: resume.next_index,
            };
            session.handle_resume(now, resume);
        }
        Some(ClientKind::Ack(ack)) => session.handle_ack(now, ack.next_index),
        None => session.abort(Reject::Unexpected("empty ClientMessage")),
    }
}

/// Runs one store operation, bounded by the store timeout.
async fn execute<S: SessionStore>(shared: &Shared<S>, op: StoreOp) -> StoreReply {
    let timeout = shared.cfg.store_timeout;
    let started = tokio::time::Instant::now();
    let reply = match tokio::time::timeout(timeout, shared.store.execute(op)).await {
        Ok(reply) => reply,
        Err(_) => StoreReply::Unavailable(format!("no answer within {timeout:?}")),
    };
    let failed = matches!(reply, StoreReply::Unavailable(_));
    if failed {
        tracing::warn!(?reply, "session store failed");
    }
    metrics::store_op(started.elapsed(), failed);
    reply
}

/// Sends one message; a client that is gone or does not read ends the
/// session. Returns whether the message was queued.
async fn send<S: SessionStore>(
    shared: &Shared<S>,
    session: &mut Session,
    tx: &Tx,
    kind: ServerKind,
) -> bool {
    let msg = Ok(ServerMessage { kind: Some(kind) });
    match tokio::time::timeout(shared.cfg.write_timeout, tx.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => {
            session.handle_closed(now());
            false
        }
        Err(_) => {
            session.abort(Reject::Silent(shared.cfg.write_timeout));
            false
        }
    }
}

fn finish<S: SessionStore>(shared: &Shared<S>, session: &Session, last_word: Permit, end: End) {
    let client = session.client_id();
    match end {
        End::Completed => {
            shared.counters.completed();
            if let Some(client_id) = client {
                shared.observe(|| StreamEvent::Completed { client_id });
            }
            tracing::debug!(?client, "session completed");
        }
        End::ClientGone => tracing::debug!(?client, sent = session.sent(), "client went away"),
        End::Rejected(reject) => {
            let status = to_status(&reject);
            shared.counters.rejected(status.code(), &reject);
            tracing::debug!(?client, %reject, "stream ended");
            last_word.send(Err(status));
        }
    }
}
