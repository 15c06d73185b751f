//! A stream driven by hand: hand-built `ClientMessage`s through an
//! mpsc-backed request stream, for tests of what the server does with
//! what a well-behaved client never sends. And the table that runs such
//! streams by the row (`Row`, `run_row`).

use std::time::Duration;

use station_core::Reason;
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{Ack, Attached, ClientMessage, Number, Open, Resume, ServerMessage};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::{assert_rejected, session_id};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

/// [`session_id`]`(n)`, as a stream's first message carries it.
pub fn id(n: u64) -> String {
    session_id(n).to_string()
}

pub fn open(client_id: &str, count: u32, nonce: &[u8]) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Open(Open {
            client_id: client_id.to_string(),
            count,
            open_nonce: nonce.to_vec(),
        })),
    }
}

pub fn resume(client_id: &str, token: &[u8], next_index: u32) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Resume(Resume {
            client_id: client_id.to_string(),
            resume_token: token.to_vec(),
            next_index,
        })),
    }
}

pub fn ack(next_index: u32) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Ack(Ack { next_index })),
    }
}

/// One stream, driven by hand.
pub struct Raw {
    tx: Option<mpsc::Sender<ClientMessage>>,
    inbound: Option<Streaming<ServerMessage>>,
    /// The call was refused before any response message (trailers only).
    refused: Option<Status>,
    /// Names the stream (a table row) in panics; empty for others.
    pub label: String,
}

impl Raw {
    /// Starts a stream that first sends `first`, and waits for the response
    /// headers (or the refusal).
    pub async fn start(channel: &Channel, first: &[ClientMessage]) -> Raw {
        let (tx, rx) = mpsc::channel(64);
        for msg in first {
            tx.try_send(msg.clone())
                .expect("room for the first messages");
        }
        let mut grpc = NumbersStationClient::new(channel.clone());
        let headers = timeout(STEP, grpc.stream(ReceiverStream::new(rx)))
            .await
            .expect("response headers within 5 s");
        Raw::answered(Some(tx), headers.map(|r| r.into_inner()))
    }

    /// A stream whose call the test made itself (e.g. with another codec):
    /// `tx` feeds its request stream, if it is to be fed through `send`.
    pub fn answered(
        tx: Option<mpsc::Sender<ClientMessage>>,
        headers: Result<Streaming<ServerMessage>, Status>,
    ) -> Raw {
        let (inbound, refused) = match headers {
            Ok(inbound) => (Some(inbound), None),
            Err(status) => (None, Some(status)),
        };
        Raw {
            tx,
            inbound,
            refused,
            label: String::new(),
        }
    }

    /// A sender on the request stream, for a task of the test's own.
    pub fn sender(&self) -> mpsc::Sender<ClientMessage> {
        self.tx.clone().expect("not half-closed")
    }

    /// Sends a message; false if the request stream is gone.
    pub async fn send(&self, msg: ClientMessage) -> bool {
        match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Ends the request stream (END_STREAM): the client half-closes.
    pub fn half_close(&mut self) {
        self.tx = None;
    }

    pub async fn next(&mut self) -> Result<Option<ServerMessage>, Status> {
        if let Some(status) = self.refused.take() {
            return Err(status);
        }
        let inbound = self.inbound.as_mut().expect("the stream has not ended yet");
        let Ok(msg) = timeout(STEP, inbound.message()).await else {
            panic!(
                "{}: no server message nor end of the stream within 5 s",
                self.label
            );
        };
        if !matches!(msg, Ok(Some(_))) {
            self.inbound = None;
        }
        msg
    }

    pub async fn attached(&mut self) -> Attached {
        match self.next().await {
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Attached(a)),
                // `Attached` may be boxed in the generated oneof; this takes either.
            })) => Attached::clone(&a),
            other => panic!("{}: expected Attached, got {other:?}", self.label),
        }
    }

    pub async fn number(&mut self) -> Number {
        match self.next().await {
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Number(n)),
            })) => n,
            other => panic!("{}: expected a Number, got {other:?}", self.label),
        }
    }

    /// Reads to the end of the stream: the messages, and the final status
    /// (`Code::Ok` for a clean end).
    pub async fn end(&mut self) -> (Vec<ServerMessage>, Status) {
        let mut msgs = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(msg)) => msgs.push(msg),
                Ok(None) => return (msgs, Status::ok("")),
                Err(status) => return (msgs, status),
            }
            assert!(
                msgs.len() <= 70_000,
                "{}: the stream never ends",
                self.label
            );
        }
    }

    /// Reads until the stream ends with an error status (within 1000
    /// messages); a clean end fails the test.
    pub async fn rejection(&mut self) -> Status {
        for _ in 0..1000 {
            match self.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended OK, expected a rejection"),
                Err(status) => return status,
            }
        }
        panic!("no rejection after 1000 messages");
    }
}

/// A clean end of stream.
#[track_caller]
pub fn assert_ok(status: &Status) {
    assert_eq!(
        status.code(),
        Code::Ok,
        "expected a clean end, got {:?}: {:?}",
        status.code(),
        status.message()
    );
}

/// Reads an attached stream's numbers `from..to`, acknowledging each.
pub async fn read_and_ack(raw: &mut Raw, from: u32, to: u32) -> Vec<Number> {
    let mut numbers = Vec::new();
    for i in from..to {
        let n = raw.number().await;
        assert_eq!(n.index, i);
        assert!(raw.send(ack(i + 1)).await, "request stream open");
        numbers.push(n);
    }
    numbers
}

// The table: one row per hostile input on a stream, run by `run_row`.

/// What a row does after its stream's first messages, in order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Waits for `Attached`.
    Attached,
    /// Reads the next number (checking its index) without acknowledging it.
    Number,
    /// Reads the next number and acknowledges it.
    Acked,
    Send(ClientMessage),
    /// Ends the request stream (END_STREAM): the client half-closes.
    HalfClose,
}

/// One hostile input and exactly how the server must answer it.
pub struct Row {
    pub name: String,
    /// Sent as the call starts.
    pub first: Vec<ClientMessage>,
    /// Then done in order.
    pub steps: Vec<Step>,
    /// How many messages the server may send after the steps before the
    /// status: 0 for a stream refused before it said anything.
    pub at_most: usize,
    pub code: Code,
    pub reason: Reason,
    /// Fragments the status message must contain.
    pub says: Vec<String>,
}

/// `Row::at_most` for a row that does not bound what comes before the
/// status (`Raw::end` still does).
pub const ANY: usize = usize::MAX;

impl Row {
    /// A stream that starts with `first` and is refused before any message.
    pub fn refused(
        name: impl Into<String>,
        first: Vec<ClientMessage>,
        code: Code,
        reason: Reason,
        says: &[&str],
    ) -> Row {
        Row {
            name: name.into(),
            first,
            steps: Vec::new(),
            at_most: 0,
            code,
            reason,
            says: says.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The same row with `steps` after the first messages, and up to
    /// `at_most` messages before the status.
    pub fn after(self, steps: Vec<Step>, at_most: usize) -> Row {
        Row {
            steps,
            at_most,
            ..self
        }
    }
}

/// Runs `row` on a stream of its own on `channel` and asserts the status
/// it ends with; returns that status. Every failure names the row.
pub async fn run_row(channel: &Channel, row: &Row) -> Status {
    let name = &row.name;
    let mut raw = Raw::start(channel, &row.first).await;
    raw.label = name.clone();
    let mut index = 0;
    for step in &row.steps {
        match step {
            Step::Attached => {
                raw.attached().await;
            }
            Step::Number | Step::Acked => {
                let n = raw.number().await;
                assert_eq!(n.index, index, "{name}: numbers out of order");
                index += 1;
                if matches!(step, Step::Acked) {
                    assert!(raw.send(ack(index)).await, "{name}: request stream open");
                }
            }
            Step::Send(msg) => {
                assert!(raw.send(msg.clone()).await, "{name}: request stream open");
            }
            Step::HalfClose => raw.half_close(),
        }
    }
    let (msgs, status) = raw.end().await;
    assert!(
        msgs.len() <= row.at_most,
        "{name}: {} messages before the status, at most {} expected: {msgs:?}",
        msgs.len(),
        row.at_most
    );
    let says: Vec<&str> = row.says.iter().map(String::as_str).collect();
    assert_rejected(name, &status, row.code, row.reason, &says);
    assert!(
        status.message().len() < 300,
        "{name}: message echoes too much ({} bytes)",
        status.message().len()
    );
    status
}

/// Runs every row, one after the other, each on its own stream.
pub async fn run_rows(channel: &Channel, rows: &[Row]) {
    for row in rows {
        run_row(channel, row).await;
    }
}

/// `n` numbers read and acknowledged.
pub fn acked(n: usize) -> impl Iterator<Item = Step> {
    std::iter::repeat_n(Step::Acked, n)
}
