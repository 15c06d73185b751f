//! Adversarial clients against a real server over loopback.
//!
//! Every test starts its own server on 127.0.0.1 (OS-picked port, 20 ms
//! interval, 4 s TTL), starts a well-behaved session on it with the real
//! client driver, then misbehaves with a raw tonic client that sends
//! hand-built `ClientMessage`s. Each case asserts the exact gRPC status and
//! `ErrorInfo` reason, that its message helps, that the well-behaved session
//! still completes `Verified` without a single reconnection, and that
//! nothing on the server's side panicked. Every wait is bounded.
//!
//! Most cases are rows of a table (`Row`): a stream's first messages, what
//! it does next (`Step`), and the status it must end with, run by `run_row`
//! on a stream of its own. Cases that measure something else (windows,
//! silence, concurrency, raw TCP) are tests of their own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Outcome, Verdict};
use station_core::server::Config as SessionConfig;
use station_core::{ClientId, Reason};
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints, Event};
use station_net::proto::client_message::Kind;
use station_net::proto::numbers_station_client::NumbersStationClient;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{
    Ack, Attached, ClientMessage, Number, Open, Resume, ServerMessage, StatsReply,
};
use station_net::server::MAX_WINDOW;
use station_net::store::MemoryStore;
use station_net::{serve_tcp, Observer, ServeError, ServerConfig, Station, StreamEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

mod common;
use common::{assert_rejected, error_reason};

/// Time between numbers on the default test server.
const INTERVAL: Duration = Duration::from_millis(20);
/// Session TTL on the default test server.
const TTL: Duration = Duration::from_secs(4);
/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Panic detection. Tests run on current-thread runtimes, so every server task
// of a test runs on the test's own (named) thread: a panic hook that records
// thread names tells each test whether anything of its own panicked, even
// inside a spawned task whose panic tokio would otherwise swallow.

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            PANICS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{thread}: {info}"));
            default(info);
        }));
    });
}

fn assert_no_panics() {
    let me = std::thread::current().name().unwrap_or("?").to_string();
    let panics = PANICS.lock().unwrap_or_else(|p| p.into_inner());
    let mine: Vec<_> = panics
        .iter()
        .filter(|p| p.starts_with(&format!("{me}: ")))
        .collect();
    assert!(mine.is_empty(), "something panicked: {mine:#?}");
}

// ---------------------------------------------------------------------------
// A real server on 127.0.0.1.

fn config() -> ServerConfig {
    ServerConfig {
        session: SessionConfig::new(INTERVAL, TTL),
        // Well inside `Server::stop`'s bound, so a connection that never
        // closes shows as a slow shutdown, not a hung one.
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    }
}

struct Server {
    addr: SocketAddr,
    station: Station<MemoryStore>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

async fn start(cfg: ServerConfig) -> Server {
    start_station(Station::new(cfg, MemoryStore::default())).await
}

async fn start_station(station: Station<MemoryStore>) -> Server {
    watch_panics();
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let s = station.clone();
    let task = tokio::spawn(async move {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let on_bound = |a| addr_tx.send(a).unwrap();
        serve_tcp(s, bind, on_bound, async {
            let _ = stopped.await;
        })
        .await
    });
    let addr = timeout(STEP, addr_rx)
        .await
        .expect("server binds in time")
        .expect("server reports its address");
    Server {
        addr,
        station,
        stop,
        task,
    }
}

impl Server {
    /// A new HTTP/2 connection to the server.
    async fn channel(&self) -> Channel {
        self.channel_with(|e| e).await
    }

    async fn channel_with(&self, tune: impl FnOnce(Endpoint) -> Endpoint) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(STEP);
        timeout(STEP, tune(endpoint).connect())
            .await
            .expect("connects in time")
            .expect("connects")
    }

    async fn stats(&self) -> StatsReply {
        self.station.stats().await
    }

    /// Waits until at most `n` streams are attached.
    async fn attached_at_most(&self, n: u64, within: Duration) {
        let waited = timeout(within, async {
            while self.station.attached_streams() > n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "still {} streams attached after {within:?} (expected at most {n})",
            self.station.attached_streams()
        );
    }

    /// Graceful shutdown, bounded; then checks that nothing panicked.
    async fn stop(self) {
        let _ = self.stop.send(());
        let served = timeout(STEP, self.task)
            .await
            .expect("server shuts down within 5 s")
            .expect("serve task did not panic");
        served.expect("serve ended without error");
        assert_no_panics();
    }
}

// ---------------------------------------------------------------------------
// A well-behaved session: the real core client over the real driver, on its
// own connection.

struct Good {
    count: u32,
    id: ClientId,
    task: JoinHandle<Outcome>,
}

fn client_id(n: u64) -> ClientId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes[8..].copy_from_slice(
        &(n ^ 0x5eed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes(),
    );
    ClientId::from_random_bytes(bytes)
}

/// Starts a well-behaved session of `count` numbers and waits until the
/// server attached it.
async fn good(addr: SocketAddr, count: u32, seed: u64) -> Good {
    let (attached_tx, mut attached_rx) = watch::channel(false);
    let id = client_id(seed);
    let task = tokio::spawn(async move {
        let endpoints = Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()).unwrap();
        let client = Client::new(Instant::now(), ClientConfig::default(), id, count, seed).unwrap();
        run(
            &endpoints,
            &DriverOptions::default(),
            client,
            move |e, _| {
                if matches!(e, Event::Attached { .. }) {
                    let _ = attached_tx.send(true);
                }
            },
        )
        .await
    });
    timeout(STEP, attached_rx.wait_for(|a| *a))
        .await
        .expect("the well-behaved session attaches within 5 s")
        .expect("the well-behaved session attaches before finishing");
    Good { count, id, task }
}

impl Good {
    /// Asserts the session completed, verified, undisturbed.
    async fn verified(self) -> Outcome {
        let outcome = timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the well-behaved session finishes in time")
            .expect("the well-behaved session did not panic");
        assert_eq!(outcome.verdict, Verdict::Verified, "{outcome:?}");
        assert_eq!(outcome.received, self.count, "{outcome:?}");
        assert_eq!(outcome.server_checksum, Some(outcome.client_checksum));
        assert_eq!(
            outcome.reconnects, 0,
            "the well-behaved session was disturbed: {outcome:?}"
        );
        outcome
    }
}

// ---------------------------------------------------------------------------
// A raw client: hand-built messages through an mpsc-backed request stream.

fn open(client_id: &str, count: u32, nonce: &[u8]) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Open(Open {
            client_id: client_id.to_string(),
            count,
            open_nonce: nonce.to_vec(),
        })),
    }
}

fn resume(client_id: &str, token: &[u8], next_index: u32) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Resume(Resume {
            client_id: client_id.to_string(),
            resume_token: token.to_vec(),
            next_index,
        })),
    }
}

fn ack(next_index: u32) -> ClientMessage {
    ClientMessage {
        kind: Some(Kind::Ack(Ack { next_index })),
    }
}

struct Raw {
    tx: Option<mpsc::Sender<ClientMessage>>,
    inbound: Option<Streaming<ServerMessage>>,
    /// The call was refused before any response message (trailers only).
    refused: Option<Status>,
    /// Names the stream (a table row) in panics; empty for others.
    label: String,
}

impl Raw {
    /// Starts a stream that first sends `first`, and waits for the response
    /// headers (or the refusal).
    async fn start(channel: &Channel, first: &[ClientMessage]) -> Raw {
        let (tx, rx) = mpsc::channel(64);
        for msg in first {
            tx.try_send(msg.clone())
                .expect("room for the first messages");
        }
        let mut grpc = NumbersStationClient::new(channel.clone());
        let headers = timeout(STEP, grpc.stream(ReceiverStream::new(rx)))
            .await
            .expect("response headers within 5 s");
        match headers {
            Ok(response) => Raw {
                tx: Some(tx),
                inbound: Some(response.into_inner()),
                refused: None,
                label: String::new(),
            },
            Err(status) => Raw {
                tx: Some(tx),
                inbound: None,
                refused: Some(status),
                label: String::new(),
            },
        }
    }

    /// Sends a message; false if the request stream is gone.
    async fn send(&self, msg: ClientMessage) -> bool {
        match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Ends the request stream (END_STREAM): the client half-closes.
    fn half_close(&mut self) {
        self.tx = None;
    }

    async fn next(&mut self) -> Result<Option<ServerMessage>, Status> {
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

    async fn attached(&mut self) -> Attached {
        match self.next().await {
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Attached(a)),
                // `Attached` may be boxed in the generated oneof; this takes either.
            })) => Attached::clone(&a),
            other => panic!("{}: expected Attached, got {other:?}", self.label),
        }
    }

    async fn number(&mut self) -> Number {
        match self.next().await {
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Number(n)),
            })) => n,
            other => panic!("{}: expected a Number, got {other:?}", self.label),
        }
    }

    /// Reads to the end of the stream: the messages, and the final status
    /// (`Code::Ok` for a clean end).
    async fn end(&mut self) -> (Vec<ServerMessage>, Status) {
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
}

/// A clean end of stream.
#[track_caller]
fn assert_ok(status: &Status) {
    assert_eq!(
        status.code(),
        Code::Ok,
        "expected a clean end, got {:?}: {:?}",
        status.code(),
        status.message()
    );
}

/// Reads an attached stream's numbers `from..to`, acknowledging each.
async fn read_and_ack(raw: &mut Raw, from: u32, to: u32) -> Vec<Number> {
    let mut numbers = Vec::new();
    for i in from..to {
        let n = raw.number().await;
        assert_eq!(n.index, i);
        assert!(raw.send(ack(i + 1)).await, "request stream open");
        numbers.push(n);
    }
    numbers
}

// ---------------------------------------------------------------------------
// The table: one row per hostile input on a stream, run by `run_row`.

/// What a row does after its stream's first messages, in order.
#[derive(Clone, Debug)]
enum Step {
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
struct Row {
    name: String,
    /// Sent as the call starts.
    first: Vec<ClientMessage>,
    /// Then done in order.
    steps: Vec<Step>,
    /// How many messages the server may send after the steps before the
    /// status: 0 for a stream refused before it said anything.
    at_most: usize,
    code: Code,
    reason: Reason,
    /// Fragments the status message must contain.
    says: Vec<String>,
}

/// `Row::at_most` for a row that does not bound what comes before the
/// status (`Raw::end` still does).
const ANY: usize = usize::MAX;

impl Row {
    /// A stream that starts with `first` and is refused before any message.
    fn refused(
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
    fn after(self, steps: Vec<Step>, at_most: usize) -> Row {
        Row {
            steps,
            at_most,
            ..self
        }
    }
}

/// Runs `row` on a stream of its own on `channel` and asserts the status
/// it ends with; returns that status. Every failure names the row.
async fn run_row(channel: &Channel, row: &Row) -> Status {
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
async fn run_rows(channel: &Channel, rows: &[Row]) {
    for row in rows {
        run_row(channel, row).await;
    }
}

/// `n` numbers read and acknowledged.
fn acked(n: usize) -> impl Iterator<Item = Step> {
    std::iter::repeat_n(Step::Acked, n)
}

// ---------------------------------------------------------------------------
// Rows: a bad first message.

#[tokio::test]
async fn bad_first_messages_are_rejected_with_exact_codes() {
    let server = start(config()).await;
    let good = good(server.addr, 100, 1).await;
    let channel = server.channel().await;
    let nonce = [7u8; 16];
    let unknown = client_id(99).to_string();
    let long_id = "y".repeat(500);
    let bad = |name, first, says: &[&str]| {
        Row::refused(name, first, Code::InvalidArgument, Reason::BadRequest, says)
    };
    let rows = vec![
        bad(
            "malformed UUID",
            vec![open("not-a-uuid", 10, &nonce)],
            &["\"not-a-uuid\"", "is not a UUID"],
        ),
        bad(
            "UUID in its simple (unhyphenated) form",
            vec![open("67e5504410b1426f9247bb680e5fe0c8", 10, &nonce)],
            &["is not a UUID", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
        ),
        bad(
            "empty client id",
            vec![open("", 10, &nonce)],
            &["client id \"\" is not a UUID"],
        ),
        bad(
            "500-byte client id (echo is truncated)",
            vec![open(&long_id, 10, &nonce)],
            &["is not a UUID", "…"],
        ),
        bad(
            "count 0",
            vec![open(&client_id(10).to_string(), 0, &nonce)],
            &["count 0 is out of range", "1..=65535"],
        ),
        bad(
            "count 65536",
            vec![open(&client_id(11).to_string(), 65_536, &nonce)],
            &["count 65536 is out of range", "1..=65535"],
        ),
        bad(
            "count u32::MAX",
            vec![open(&client_id(12).to_string(), u32::MAX, &nonce)],
            &["count 4294967295 is out of range", "1..=65535"],
        ),
        bad(
            "5-byte open nonce",
            vec![open(&client_id(13).to_string(), 10, &[1, 2, 3, 4, 5])],
            &["nonce", "16 bytes", "got 5"],
        ),
        bad(
            "Ack before Open",
            vec![ack(5)],
            &["Ack before Open or Resume"],
        ),
        bad(
            "empty ClientMessage",
            vec![ClientMessage { kind: None }],
            &["empty ClientMessage"],
        ),
        Row::refused(
            "Resume of an unknown id",
            vec![resume(&unknown, &[9u8; 16], 0)],
            Code::NotFound,
            Reason::SessionUnknown,
            &["no session", &unknown],
        ),
        bad(
            "Resume with a malformed UUID",
            vec![resume(
                "67e55044-10b1-426f-9247-bb680e5fe0cX",
                &[9u8; 16],
                0,
            )],
            &["is not a UUID"],
        ),
        bad(
            "Resume with a 3-byte token",
            vec![resume(&unknown, &[1, 2, 3], 0)],
            &["resume token must be 16 bytes, got 3"],
        ),
        bad(
            "half-close at once (no message)",
            vec![],
            &["closed its side"],
        )
        .after(vec![Step::HalfClose], 0),
    ];
    let rejected_before = server.stats().await.streams_rejected;
    run_rows(&channel, &rows).await;
    let stats = server.stats().await;
    assert_eq!(
        stats.streams_rejected - rejected_before,
        rows.len() as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.sessions_opened, 1,
        "only the good session opened: {stats:?}"
    );
    good.verified().await;
    assert_eq!(server.stats().await.live_sessions, Some(0));
    server.attached_at_most(0, STEP).await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: Resume and Open against live sessions.

#[tokio::test]
async fn resume_and_open_against_live_sessions_are_refused_and_disturb_nobody() {
    let server = start(config()).await;
    let good = good(server.addr, 100, 2).await;
    let channel = server.channel().await;

    // Raw owners too, to see their own streams continue uninterrupted.
    let owner_id = client_id(20).to_string();
    let mut owner = Raw::start(&channel, &[open(&owner_id, 30, &[2u8; 16])]).await;
    let token = owner.attached().await.resume_token;
    let mut values = read_and_ack(&mut owner, 0, 5).await;
    // A short session, for resumes past its end.
    let short_id = client_id(30).to_string();
    let mut short = Raw::start(&channel, &[open(&short_id, 5, &[3u8; 16])]).await;
    let short_token = short.attached().await.resume_token;
    // A session that a same-nonce Open with another count must not reach.
    let twin_id = client_id(70).to_string();
    let mut twin = Raw::start(&channel, &[open(&twin_id, 50, &[7u8; 16])]).await;
    twin.attached().await;

    let mut rows = Vec::new();
    let mut wrong = token.clone();
    wrong[0] ^= 1;
    let victims = [
        (
            "the good session's id",
            good.id.to_string(),
            vec![0xa5u8; 16],
        ),
        (
            "the owner's id, one bit off",
            owner_id.clone(),
            wrong.clone(),
        ),
        ("the owner's id, all zeros", owner_id.clone(), vec![0u8; 16]),
    ];
    for (what, victim, guess) in &victims {
        for next_index in [0, 5, 30] {
            rows.push(Row::refused(
                format!("Resume of {what} with a wrong token at {next_index}"),
                vec![resume(victim, guess, next_index)],
                Code::PermissionDenied,
                Reason::TokenMismatch,
                &["resume token does not match", victim],
            ));
        }
    }
    // A wrong-length token is malformed rather than wrong.
    rows.push(Row::refused(
        "Resume with a 15-byte prefix of the token",
        vec![resume(&owner_id, &token[..15], 0)],
        Code::InvalidArgument,
        Reason::BadRequest,
        &["resume token must be 16 bytes, got 15"],
    ));
    for next_index in [6, 1000, u32::MAX] {
        rows.push(Row::refused(
            format!("Resume at {next_index} of a 5-number session"),
            vec![resume(&short_id, &short_token, next_index)],
            Code::InvalidArgument,
            Reason::BadRequest,
            &[
                &format!("next_index {next_index} is past the end"),
                "count 5",
            ],
        ));
    }
    let victim = good.id.to_string();
    for (what, nonce) in [("another nonce", vec![0x11u8; 16]), ("no nonce", vec![])] {
        rows.push(Row::refused(
            format!("Open of the live good session's id with {what}"),
            vec![open(&victim, 100, &nonce)],
            Code::AlreadyExists,
            Reason::SessionExists,
            &[&format!("session {victim} already exists"), "resume"],
        ));
    }
    // The same nonce but another count is another Open, not a repeat.
    rows.push(Row::refused(
        "Open of a live id with its nonce but another count",
        vec![open(&twin_id, 51, &[7u8; 16])],
        Code::AlreadyExists,
        Reason::SessionExists,
        &["already exists"],
    ));
    run_rows(&channel, &rows).await;

    // The owners' streams carry on: to the end with OK, or for a while.
    values.extend(read_and_ack(&mut owner, 5, 30).await);
    assert!(values.last().unwrap().checksum.is_some());
    let (rest, status) = owner.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);
    read_and_ack(&mut short, 0, 5).await;
    let (rest, status) = short.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);
    read_and_ack(&mut twin, 0, 3).await;
    good.verified().await;
    drop(twin);
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: out-of-order messages on a stream.

#[tokio::test]
async fn protocol_violations_on_a_stream_are_invalid_argument() {
    let server = start(config()).await;
    let good = good(server.addr, 100, 4).await;
    let channel = server.channel().await;
    // A detached session, to resume.
    let spare = client_id(60).to_string();
    let mut first = Raw::start(&channel, &[open(&spare, 100, &[6u8; 16])]).await;
    let token = first.attached().await.resume_token;
    drop(first);

    let violation = |name: String, first: ClientMessage, steps: Vec<Step>, says: &[&str]| {
        Row::refused(
            name,
            vec![first],
            Code::InvalidArgument,
            Reason::BadRequest,
            says,
        )
        .after(steps, ANY)
    };
    let fresh = |n: u64| open(&client_id(n).to_string(), 100, &[4u8; 16]);
    let mut rows = Vec::new();
    // 50 numbers take a second to send; 10_000 is past the count too.
    for (i, beyond) in [50u32, 10_000].into_iter().enumerate() {
        rows.push(violation(
            format!("Ack of {beyond} after one number"),
            fresh(40 + i as u64),
            vec![Step::Attached, Step::Number, Step::Send(ack(beyond))],
            &[
                &format!("ack next_index {beyond} is beyond the"),
                "numbers sent",
            ],
        ));
    }
    rows.push(violation(
        "Ack of 1 after acknowledging 3".into(),
        fresh(50),
        [Step::Attached]
            .into_iter()
            .chain(acked(3))
            .chain([Step::Send(ack(1))])
            .collect(),
        &["ack next_index 1 goes backwards", "already acknowledged 3"],
    ));
    let seconds = [
        (
            "Open after Open",
            fresh(61),
            open(&spare, 100, &[6u8; 16]),
            "Open after the stream's first message",
        ),
        (
            "Resume after Open",
            fresh(62),
            resume(&spare, &token, 0),
            "Resume after the stream's first message",
        ),
        // And on a resumed stream.
        (
            "Open after Resume",
            resume(&spare, &token, 0),
            open(&spare, 100, &[6u8; 16]),
            "Open after the stream's first message",
        ),
    ];
    for (name, first, second, says) in seconds {
        rows.push(violation(
            name.into(),
            first,
            vec![Step::Attached, Step::Send(second)],
            &[says],
        ));
    }
    // Half-closing right after Open: the stream ends promptly.
    rows.push(
        Row::refused(
            "half-close right after Open",
            vec![open(&client_id(100).to_string(), 50, &[1u8; 16])],
            Code::InvalidArgument,
            Reason::BadRequest,
            &["closed its side"],
        )
        .after(vec![Step::HalfClose], 10),
    );
    run_rows(&channel, &rows).await;
    server.attached_at_most(1, STEP).await;
    good.verified().await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: Open of a live id.

#[tokio::test]
async fn a_repeated_open_with_the_same_nonce_attaches_to_the_same_session() {
    let server = start(config()).await;
    let good = good(server.addr, 100, 8).await;
    let channel = server.channel().await;
    let id = client_id(80).to_string();
    let nonce = [8u8; 16];
    let mut first = Raw::start(&channel, &[open(&id, 50, &nonce)]).await;
    let a1 = first.attached().await;
    assert_eq!(a1.resume_token.len(), 16);
    let v1 = first.number().await;

    let mut second = Raw::start(&channel, &[open(&id, 50, &nonce)]).await;
    let a2 = second.attached().await;
    assert_eq!(a2.resume_token, a1.resume_token, "same session, same token");
    assert_eq!((a2.count, a2.next_index), (50, 0));
    let v2 = read_and_ack(&mut second, 0, 3).await;
    assert_eq!(v2[0].value, v1.value, "same session, same sequence");

    // The first stream was taken over: it ends with ABORTED.
    let (_, status) = first.end().await;
    assert_rejected(
        "the first stream",
        &status,
        Code::Aborted,
        Reason::TakenOver,
        &["taken over"],
    );
    // Two sessions live (the good one and this one), not three.
    assert_eq!(server.stats().await.live_sessions, Some(2));
    good.verified().await;
    drop(second);
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Row: messages after completion.

#[tokio::test]
async fn messages_after_completion_are_harmless() {
    let server = start(config()).await;
    let good = good(server.addr, 100, 9).await;
    let channel = server.channel().await;
    let id = client_id(90).to_string();
    let mut raw = Raw::start(&channel, &[open(&id, 3, &[9u8; 16])]).await;
    let token = raw.attached().await.resume_token;
    let numbers = read_and_ack(&mut raw, 0, 3).await;
    assert!(
        numbers[2].checksum.is_some(),
        "the final number carries the checksum"
    );
    let (rest, status) = raw.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);
    // More messages on the finished stream: accepted or refused locally,
    // either way nothing may crash.
    for msg in [
        ack(3),
        ack(4),
        ack(0),
        open(&id, 3, &[9u8; 16]),
        ClientMessage { kind: None },
    ] {
        let _ = timeout(STEP, raw.send(msg))
            .await
            .expect("send does not hang");
    }
    drop(raw);

    // The final ack followed at once by junk: the session completes first.
    let id2 = client_id(91).to_string();
    let mut raw = Raw::start(&channel, &[open(&id2, 2, &[9u8; 16])]).await;
    raw.attached().await;
    raw.number().await;
    raw.number().await;
    for msg in [ack(2), ack(2), ack(7), ack(0)] {
        raw.send(msg).await;
    }
    let (rest, status) = raw.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);

    // The completed session is gone: resuming it is NOT_FOUND.
    let late = Row::refused(
        "Resume of a completed session",
        vec![resume(&id, &token, 3)],
        Code::NotFound,
        Reason::SessionUnknown,
        &["no session", &id],
    );
    run_row(&channel, &late).await;
    good.verified().await;
    let stats = server.stats().await;
    assert_eq!(stats.sessions_completed, 3, "{stats:?}");
    assert_eq!(stats.live_sessions, Some(0), "{stats:?}");
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Row: an oversized message.

#[tokio::test]
async fn an_oversized_message_fails_the_stream_not_the_server() {
    let server = start(config()).await;
    let good = good(server.addr, 100, 11).await;
    let channel = server.channel().await;
    let huge = "x".repeat(10_000);
    let mut codes = Vec::new();

    // As the first message.
    let mut raw = Raw::start(&channel, &[open(&huge, 10, &[1u8; 16])]).await;
    let (msgs, status) = raw.end().await;
    assert!(msgs.is_empty(), "{msgs:?}");
    codes.push(("first message", status));

    // As a later message on an attached stream.
    let mut raw = Raw::start(
        &channel,
        &[open(&client_id(110).to_string(), 50, &[1u8; 16])],
    )
    .await;
    raw.attached().await;
    assert!(raw.send(open(&huge, 10, &[1u8; 16])).await);
    let (_, status) = raw.end().await;
    codes.push(("later message", status));

    // The connection is still usable.
    let mut fine = Raw::start(
        &channel,
        &[open(&client_id(111).to_string(), 2, &[1u8; 16])],
    )
    .await;
    fine.attached().await;
    read_and_ack(&mut fine, 0, 2).await;
    assert_ok(&fine.end().await.1);

    for (what, status) in &codes {
        // tonic reports its decode limit as OUT_OF_RANGE; RESOURCE_EXHAUSTED
        // is what other gRPC stacks use. Either is fine, OK is not.
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "oversized {what}: expected OUT_OF_RANGE or RESOURCE_EXHAUSTED, got {:?}: {:?}",
            status.code(),
            status.message()
        );
        assert!(
            status.message().contains("1024"),
            "oversized {what}: message {:?} does not give the limit",
            status.message()
        );
        if status.code() == Code::ResourceExhausted {
            assert_eq!(error_reason(what, status), Reason::MessageTooLarge);
        }
    }
    good.verified().await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Row: more streams on one connection than the server allows.

#[tokio::test]
async fn more_streams_than_max_concurrent_streams_wait_or_are_refused() {
    const LIMIT: u32 = 4;
    const STREAMS: u64 = 8;
    let server = start(ServerConfig {
        max_concurrent_streams: LIMIT,
        ..config()
    })
    .await;
    let good = good(server.addr, 100, 12).await;
    let channel = server.channel().await;
    // Round 1 opens all streams at once on a fresh connection: the client may
    // not have seen the server's SETTINGS yet. Round 2 reuses the connection.
    for round in 0..2u64 {
        let mut streams = JoinSet::new();
        for i in 0..STREAMS {
            let channel = channel.clone();
            let id = client_id(1000 * (round + 1) + i).to_string();
            streams.spawn(async move { short_session(&channel, &id).await });
        }
        let (max_attached, outcomes) = sample_until_done(&server, &mut streams).await;
        let completed = outcomes.iter().filter(|r| r.is_ok()).count();
        for r in &outcomes {
            if let Err(status) = r {
                // h2 REFUSED_STREAM: retryable, as it should be.
                assert_eq!(
                    status.code(),
                    Code::Unavailable,
                    "round {round}: an extra stream failed oddly: {status:?}"
                );
            }
        }
        assert!(
            completed >= LIMIT as usize,
            "round {round}: only {completed} completed: {outcomes:?}"
        );
        assert!(
            max_attached <= u64::from(LIMIT) + 1,
            "round {round}: {max_attached} streams attached at once \
             (limit {LIMIT} on one connection + the good one)"
        );
        eprintln!(
            "max_concurrent_streams {LIMIT}, round {round}: {completed}/{STREAMS} completed, \
             at most {max_attached} attached"
        );
    }
    good.verified().await;
    drop(channel);
    server.stop().await;
}

/// A complete five-number session on `channel`: `Err` if the stream was
/// refused or failed.
async fn short_session(channel: &Channel, id: &str) -> Result<(), Status> {
    let mut raw = Raw::start(channel, &[open(id, 5, &[12u8; 16])]).await;
    match raw.next().await {
        Ok(Some(ServerMessage {
            kind: Some(ServerKind::Attached(_)),
        })) => {}
        Err(status) => return Err(status),
        other => panic!("expected Attached or a refusal, got {other:?}"),
    }
    read_and_ack(&mut raw, 0, 5).await;
    let (rest, status) = raw.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    match status.code() {
        Code::Ok => Ok(()),
        _ => Err(status),
    }
}

/// Waits for every stream task (bounded), sampling the attached count.
async fn sample_until_done(
    server: &Server,
    streams: &mut JoinSet<Result<(), Status>>,
) -> (u64, Vec<Result<(), Status>>) {
    let mut max = 0;
    let mut outcomes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !streams.is_empty() {
        max = max.max(server.station.attached_streams());
        tokio::select! {
            joined = streams.join_next() => {
                let joined = joined.expect("not empty");
                outcomes.push(joined.expect("a stream task did not panic"));
            }
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            _ = tokio::time::sleep_until(deadline) => panic!("streams did not finish in 10 s"),
        }
    }
    (max, outcomes)
}

// ---------------------------------------------------------------------------
// Row: more sessions than `max_sessions`.

#[tokio::test]
async fn sessions_beyond_max_sessions_are_resource_exhausted() {
    let server = start(ServerConfig {
        max_sessions: 3,
        ..config()
    })
    .await;
    let good = good(server.addr, 100, 13).await;
    let channel = server.channel().await;
    let mut holders = Vec::new();
    for i in 0..2 {
        let mut raw = Raw::start(
            &channel,
            &[open(&client_id(130 + i).to_string(), 200, &[13u8; 16])],
        )
        .await;
        raw.attached().await;
        holders.push(raw);
    }
    assert_eq!(server.station.attached_streams(), 3);

    // A fourth stream, Open or Resume, is refused at once.
    let extra_id = client_id(139).to_string();
    let good_id = good.id.to_string();
    let full = |name, first| {
        Row::refused(
            name,
            vec![first],
            Code::ResourceExhausted,
            Reason::ServerFull,
            &["server is full"],
        )
    };
    let rows = [
        Row {
            says: vec!["server is full".into(), "3 sessions".into()],
            ..full("a fourth Open", open(&extra_id, 10, &[13u8; 16]))
        },
        full("a Resume", resume(&good_id, &[0u8; 16], 0)),
    ];
    run_rows(&channel, &rows).await;
    // A refusal never reaches a session.
    assert_eq!(server.stats().await.live_sessions, Some(3));

    // Once the holders leave, their slots are free again.
    drop(holders);
    server.attached_at_most(1, STEP).await;
    let mut later = Raw::start(&channel, &[open(&extra_id, 2, &[13u8; 16])]).await;
    later.attached().await;
    read_and_ack(&mut later, 0, 2).await;
    assert_ok(&later.end().await.1);
    good.verified().await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: clients that do not read.

/// Counts the numbers each session's streams handed to the transport.
fn sent_counter() -> (Observer, Arc<Mutex<HashMap<ClientId, u32>>>) {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let counts = sent.clone();
    let observer: Observer = Arc::new(move |e: &StreamEvent| {
        if let StreamEvent::Sent { client_id, .. } = e {
            *counts.lock().unwrap().entry(*client_id).or_insert(0) += 1;
        }
    });
    (observer, sent)
}

fn sent_to(sent: &Mutex<HashMap<ClientId, u32>>, id: ClientId) -> u32 {
    sent.lock().unwrap().get(&id).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_reads_is_bounded_by_the_window_and_dropped() {
    // Interval 0: numbers go out as fast as the window allows.
    let session = SessionConfig {
        interval: Duration::ZERO,
        ttl: TTL,
        silence_timeout: Duration::from_secs(1),
        window: 64,
        ..SessionConfig::new(Duration::ZERO, TTL)
    };
    session.validate().unwrap();
    let (observer, sent) = sent_counter();
    let cfg = ServerConfig {
        session,
        ..config()
    };
    let server = start_station(Station::with_observer(
        cfg,
        MemoryStore::default(),
        Some(observer),
    ))
    .await;
    let good = good(server.addr, 3000, 14).await;
    let channel = server.channel().await;
    let id = client_id(140);
    let started = Instant::now();
    // Opens, keeps its request stream open, never polls the responses.
    let mut sloth = Raw::start(&channel, &[open(&id.to_string(), 65_535, &[14u8; 16])]).await;
    good.verified().await;
    server.attached_at_most(0, Duration::from_secs(4)).await;
    let dropped_after = started.elapsed();
    let sent_to_sloth = sent_to(&sent, id);
    assert!(
        (1..=64).contains(&sent_to_sloth),
        "the server sent {sent_to_sloth} unacknowledged numbers (window 64)"
    );
    // Now read what was buffered: the numbers, then why the stream ended.
    let (msgs, status) = sloth.end().await;
    assert!(msgs.len() <= 65, "{} messages", msgs.len());
    assert_rejected(
        "the reader that stopped",
        &status,
        Code::DeadlineExceeded,
        Reason::ClientSilent,
        &["silent"],
    );
    eprintln!(
        "never-reading client: {sent_to_sloth} numbers sent, stream dropped after {dropped_after:?}"
    );
    drop(channel);
    server.stop().await;
}

/// A server with the largest window it accepts, so a client that stops
/// reading has as much as possible in flight when it stops.
async fn widest_window_server(interval: Duration) -> (Server, Arc<Mutex<HashMap<ClientId, u32>>>) {
    let session = SessionConfig {
        interval,
        ttl: TTL,
        // Longer than the good session's 1 s between acknowledgements.
        silence_timeout: Duration::from_secs(2),
        window: MAX_WINDOW,
        ..SessionConfig::new(interval, TTL)
    };
    let (observer, sent) = sent_counter();
    let cfg = ServerConfig {
        session,
        ..config()
    };
    cfg.validate().unwrap();
    let station = Station::with_observer(cfg, MemoryStore::default(), Some(observer));
    (start_station(station).await, sent)
}

/// Opens a session on `channel` and never reads, while `good` runs to
/// completion; returns the stream once the server let go of it (asserting
/// that it did within 4 s and sent at most one window).
async fn stop_reading(
    server: &Server,
    sent: &Mutex<HashMap<ClientId, u32>>,
    channel: &Channel,
    id: ClientId,
    good: Good,
) -> Raw {
    let started = Instant::now();
    let sloth = Raw::start(channel, &[open(&id.to_string(), 65_535, &[15u8; 16])]).await;
    good.verified().await;
    let released = timeout(
        Duration::from_secs(4).saturating_sub(started.elapsed()),
        async {
            while server.station.attached_streams() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    let n = sent_to(sent, id);
    eprintln!(
        "stopped reader: {n} numbers sent; stream {} after {:?}",
        if released.is_ok() {
            "released"
        } else {
            "STILL ATTACHED"
        },
        started.elapsed()
    );
    assert!(
        n <= MAX_WINDOW,
        "the server sent {n} numbers to a client that does not read (window {MAX_WINDOW})"
    );
    assert!(
        released.is_ok(),
        "a stream whose client stopped reading is still attached 4 s later \
         (silence timeout 2 s); {n} numbers sent"
    );
    sloth
}

/// A client on a server with `interval` stops reading while a good session
/// of `good_count` numbers runs; the server lets go of it, and when it
/// reads again it gets what was in flight, then why the stream ended —
/// never a clean end of an incomplete session.
async fn stopped_reader_is_dropped_as_silent(interval: Duration, good_count: u32, seed: u64) {
    let (server, sent) = widest_window_server(interval).await;
    let good = good(server.addr, good_count, seed).await;
    let channel = server.channel().await;
    let mut sloth = stop_reading(&server, &sent, &channel, client_id(seed * 10), good).await;
    let (msgs, status) = sloth.end().await;
    assert!(
        msgs.len() <= 1 + MAX_WINDOW as usize,
        "{} messages",
        msgs.len()
    );
    assert_rejected(
        "the reader that stopped",
        &status,
        Code::DeadlineExceeded,
        Reason::ClientSilent,
        &["silent"],
    );
    drop(channel);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_stopped_by_the_window_and_dropped_as_silent() {
    // 3 ms, not slower: a window of 2048 asks for an acknowledgement every
    // 512 numbers, which must come within the 2 s silence timeout (the
    // server refuses configurations where it cannot).
    stopped_reader_is_dropped_as_silent(Duration::from_millis(3), 200, 15).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_during_a_burst_is_dropped_as_silent() {
    // Interval 0: the whole window is one burst.
    stopped_reader_is_dropped_as_silent(Duration::ZERO, 3000, 16).await;
}

#[tokio::test]
async fn a_client_that_withholds_flow_control_holds_only_its_own_stream() {
    // A client that grants less HTTP/2 window than one session window and
    // stops reading: the server's sends wait on flow control, not on the
    // session. That stream stays (counted under --max-sessions) until its
    // connection goes; everyone else is served meanwhile.
    let (server, sent) = widest_window_server(Duration::ZERO).await;
    let good = good(server.addr, 3000, 17).await;
    let channel = server
        .channel_with(|e| {
            e.initial_stream_window_size(1024)
                .initial_connection_window_size(1024)
                .http2_adaptive_window(false)
        })
        .await;
    let id = client_id(170);
    let _sloth = Raw::start(&channel, &[open(&id.to_string(), 65_535, &[17u8; 16])]).await;
    good.verified().await;
    let n = sent_to(&sent, id);
    assert!(n <= MAX_WINDOW, "{n} numbers sent (window {MAX_WINDOW})");
    assert_eq!(
        server.station.attached_streams(),
        1,
        "only the withholding stream"
    );
    drop(_sloth);
    drop(channel);
    server.attached_at_most(0, STEP).await;
    server.stop().await;
}

#[test]
fn a_window_beyond_http2_flow_control_is_refused() {
    let mut cfg = config();
    // Unpaced: at 20 ms, the widest window's acknowledgement every 512
    // numbers could not come within the silence timeout, a rule of its own.
    cfg.session.interval = Duration::ZERO;
    cfg.session.window = MAX_WINDOW;
    assert_eq!(cfg.validate(), Ok(()));
    cfg.session.window = MAX_WINDOW + 1;
    let err = cfg.validate().unwrap_err();
    assert!(err.contains("HTTP/2"), "{err}");
}

#[tokio::test]
async fn no_number_is_sent_after_an_injected_fault_ends_a_burst() {
    // Not an adversarial client, but the same path as any abort: a stream
    // ended in the middle of a burst must not send the rest of it.
    let session = SessionConfig {
        interval: Duration::ZERO,
        ..SessionConfig::new(Duration::ZERO, TTL)
    };
    let server = start(ServerConfig {
        session,
        fail_every: std::num::NonZeroU64::new(5),
        ..config()
    })
    .await;
    let channel = server.channel().await;
    let mut raw = Raw::start(
        &channel,
        &[open(&client_id(170).to_string(), 100, &[17u8; 16])],
    )
    .await;
    raw.attached().await;
    let (msgs, status) = raw.end().await;
    let indices: Vec<u32> = msgs
        .iter()
        .map(|m| match &m.kind {
            Some(ServerKind::Number(n)) => n.index,
            other => panic!("expected numbers, got {other:?}"),
        })
        .collect();
    assert_rejected(
        "the faulty burst",
        &status,
        Code::Unavailable,
        Reason::InjectedFault,
        &["injected fault"],
    );
    assert_eq!(
        indices,
        (0..4).collect::<Vec<_>>(),
        "numbers 0..4 then the injected failure of number 4, and nothing after it"
    );
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: raw TCP.

/// Reads until the server closes the connection; `false` if it stays open
/// for `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn garbage_and_half_open_connections_do_not_stop_the_server() {
    let server = start(config()).await;
    // Half-open connections, held for the whole test: connected, silent.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // One that sends half of the HTTP/2 preface and stalls.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let good = good(server.addr, 100, 16).await;

    let mut noise = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let mut preface_then_junk = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface_then_junk.extend_from_slice(&[0xff; 512]);
    let mut bad_frame = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A 16 MiB HEADERS frame on stream 1, cut short.
    bad_frame.extend_from_slice(&[0xff, 0xff, 0xff, 0x01, 0x04, 0, 0, 0, 1, 0xde, 0xad]);
    let garbage: [(&str, &[u8]); 5] = [
        ("random bytes", &noise),
        ("zeros", &[0u8; 4096]),
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        ("the HTTP/2 preface then junk", &preface_then_junk),
        ("a huge HTTP/2 frame header", &bad_frame),
    ];
    for (what, bytes) in garbage {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        // The server may close while we are still writing: that is fine.
        let _ = timeout(STEP, conn.write_all(bytes))
            .await
            .expect("write does not hang");
        assert!(
            closed_within(&mut conn, STEP).await,
            "the server kept a connection open after {what}"
        );
    }
    good.verified().await;
    // A new client after all that.
    good_after(&server, 17).await;
    // The half-open connections are still connected and harmless.
    drop(idle);
    drop(stalled);
    server.stop().await;
}

async fn good_after(server: &Server, seed: u64) {
    good(server.addr, 20, seed).await.verified().await;
}

#[tokio::test]
async fn half_open_connections_do_not_block_shutdown() {
    let server = start(config()).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    good_after(&server, 18).await;
    // Graceful shutdown must not wait for clients that never speak.
    let started = Instant::now();
    server.stop().await;
    eprintln!(
        "shutdown with half-open connections took {:?}",
        started.elapsed()
    );
    drop(idle);
    drop(stalled);
}
