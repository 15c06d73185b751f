//! Stale resumes ([`Action::StaleResume`](crate::Action::StaleResume)):
//! the host `stale` sends a client's `Resume` to a server late, as an
//! earlier connection of the client's that a partition left half-open
//! would deliver it, and then reads what the server sends without ever
//! acknowledging (nobody is left at that end to do so).
//!
//! It takes the session over while the client still reads and
//! acknowledges its own stream: that stream, now stale, is not ended by
//! its silence timeout, and only the lease bounds how long it sends
//! (ARCHITECTURE.md §2, takeover; §6, invariant 4).

use std::sync::{Arc, Mutex};

use station_core::{ClientId, Secret};
use station_net::proto::client_message::Kind as ClientKind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::{ClientMessage, Resume};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::base::lock;
use crate::net;
use crate::scenario::Scenario;

/// The host's name.
pub const HOST: &str = "stale";

/// One stale `Resume`.
#[derive(Clone, Debug)]
pub struct Stale {
    /// Server index it reaches.
    pub server: usize,
    /// The session's id.
    pub client_id: ClientId,
    /// Its token.
    pub token: Secret,
    /// The index it resumes at.
    pub next_index: u32,
}

/// The runner's end: sends stale resumes to the host.
pub type Sender = mpsc::UnboundedSender<Stale>;

/// The host's end, taken by its first (and only) boot.
pub type Inbox = Arc<Mutex<Option<mpsc::UnboundedReceiver<Stale>>>>;

/// A channel from the runner to the host.
pub fn channel() -> (Sender, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Arc::new(Mutex::new(Some(rx))))
}

/// Runs the host: each stale resume on a stream of its own.
pub async fn serve(inbox: Inbox) {
    let Some(mut rx) = lock(&inbox).take() else {
        return std::future::pending().await;
    };
    while let Some(stale) = rx.recv().await {
        tokio::spawn(stream(stale));
    }
    std::future::pending().await
}

/// Sends the `Resume` and reads until the server ends the stream (for
/// silence, at the latest), keeping its own side open: a half-closed
/// stream would be a protocol error, not a stale connection.
async fn stream(stale: Stale) {
    let channel = net::channel_factory(&Scenario::server_host(stale.server))();
    let (tx, rx) = mpsc::channel(1);
    let resume = ClientKind::Resume(Resume {
        client_id: stale.client_id.to_string(),
        resume_token: stale.token.as_bytes().to_vec(),
        next_index: stale.next_index,
    });
    if tx.try_send(ClientMessage { kind: Some(resume) }).is_err() {
        return;
    }
    let Ok(response) = NumbersStationClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut inbound = response.into_inner();
    while let Ok(Some(_)) = inbound.message().await {}
    drop(tx);
}
