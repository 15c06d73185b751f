//! Overload over a real loopback server: a server that runs late (its
//! runtime starved, or its clients' acknowledgements coming back late)
//! sheds new sessions with `OVERLOADED` and `RetryInfo`, keeps the sessions
//! it holds (their resumes included), learns a limit it then admits under,
//! and does not end late acknowledgements as silence; shedding is off
//! unless configured.
//!
//! The starved servers run on a runtime of their own (`Isolated`); every
//! server binds 127.0.0.1 on an OS-picked port; every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use station_core::server::Config as SessionConfig;
use station_core::Reason;
use station_net::overload::Overload;
use station_net::proto::client_message::Kind;
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{Ack, ClientMessage, ServerMessage};
use station_net::store::MemoryStore;
use station_net::{ServerConfig, Station};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tonic_types::StatusExt;

mod common;

use common::raw::{id, open, resume, Raw};
use common::{assert_reason, server_config, TestServer, INTERVAL};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

/// A server on a runtime of its own (one thread), so that a test can
/// starve that runtime without starving its own client.
struct Isolated {
    addr: SocketAddr,
    station: Station<MemoryStore>,
    hog: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Isolated {
    fn start(cfg: ServerConfig) -> Isolated {
        let station = Station::new(cfg, MemoryStore::default());
        let hog = Arc::new(AtomicBool::new(false));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let (s, h) = (station.clone(), hog.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // While `hog` is set, hold the runtime's only thread 50 ms
                // at a time, as a server with too much work would.
                tokio::spawn(async move {
                    loop {
                        if h.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        } else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        tokio::task::yield_now().await;
                    }
                });
                let server = TestServer::with_station(s).await;
                addr_tx.send(server.addr).unwrap();
                let _ = stopped.await;
                let _ = server.shut_down().await;
            });
        });
        let addr = addr_rx.recv_timeout(STEP).expect("server binds in time");
        Isolated {
            addr,
            station,
            hog,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A new HTTP/2 connection to the server, bounded.
    async fn channel(&self) -> Channel {
        common::connect(Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()).await
    }

    /// Waits (bounded) until the overload signal reads `shedding`.
    async fn until_shedding(&self, shedding: bool) {
        self.until(&format!("shedding {shedding}"), |o| {
            o.shedding().is_some() == shedding
        })
        .await
    }

    /// Waits (bounded) until `done` holds of the overload signal.
    async fn until(&self, what: &str, done: impl Fn(&Overload) -> bool) {
        for _ in 0..500 {
            if done(self.station.overload()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "overload signal never reached {what} (lateness {:?})",
            self.station.overload().lateness()
        );
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.hog.store(false, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_sheds_new_sessions_with_retry_info() {
    let retry_after = Duration::from_millis(700);
    let server = Isolated::start(ServerConfig {
        shed_when_late: Some(Duration::from_millis(20)),
        retry_after,
        ..server_config()
    });
    let ch = server.channel().await;
    // A session attached before the overload keeps its stream.
    let mut kept = Raw::start(&ch, &[open(&id(1), 1000, &[1; 16])]).await;
    let token = kept.attached().await.resume_token;
    // Not shedding before the hog (waited for: a loaded machine may have
    // made the new server's first ticks late).
    server.until_shedding(false).await;

    server.hog.store(true, Ordering::Relaxed);
    server.until_shedding(true).await;
    for i in 2..4 {
        let status = Raw::start(&ch, &[open(&id(i), 10, &[1; 16])])
            .await
            .rejection()
            .await;
        let delay = assert_reason(&status, Reason::Overloaded).expect("RetryInfo");
        assert!(
            delay >= retry_after && delay < retry_after * 3 / 2,
            "{delay:?}"
        );
        let details = status.get_error_details();
        let late: u64 = details.error_info().unwrap().metadata["lateness_ms"]
            .parse()
            .unwrap();
        assert!(late >= 10, "lateness_ms {late}");
    }
    assert!(
        matches!(kept.next().await, Ok(Some(_))),
        "the attached session still gets numbers"
    );
    // An existing session may always come back: shedding its resume would
    // only let it expire.
    let mut resumed = Raw::start(&ch, &[resume(&id(1), &token, 0)]).await;
    assert_eq!(resumed.attached().await.next_index, 0);
    assert!(server.station.overload().shedding().is_some());

    // Caught up: new sessions are admitted again.
    server.hog.store(false, Ordering::Relaxed);
    server.until_shedding(false).await;
    let admitted = first_admitted(&ch, 10, Duration::from_millis(100)).await;
    assert!(admitted.is_some(), "never admitted once caught up");
}

/// Opens new sessions, one every `pause`, until one is admitted (at most
/// 50 tries), each refusal being `OVERLOADED`; returns the admitted stream.
async fn first_admitted(ch: &Channel, first_id: u64, pause: Duration) -> Option<Raw> {
    for i in 0..50 {
        let mut raw = Raw::start(ch, &[open(&id(first_id + i), 10, &[1; 16])]).await;
        match raw.next().await {
            Ok(Some(ServerMessage {
                kind: Some(ServerKind::Attached(_)),
            })) => return Some(raw),
            Err(status) => assert_reason(&status, Reason::Overloaded)
                .map(drop)
                .unwrap_or(()),
            other => panic!("expected Attached or OVERLOADED, got {other:?}"),
        }
        tokio::time::sleep(pause).await;
    }
    None
}

/// Reads `raw`'s numbers and acknowledges each `delay` milliseconds
/// (read at each number) after it arrived, in order, until its stream ends.
async fn acknowledge(mut raw: Raw, delay: Arc<AtomicU64>) -> Result<Option<ServerMessage>, Status> {
    let (due, mut acks) = mpsc::unbounded_channel();
    let tx = raw.sender();
    tokio::spawn(async move {
        while let Some((at, next_index)) = acks.recv().await {
            tokio::time::sleep_until(at).await;
            let ack = Kind::Ack(Ack { next_index });
            if tx.send(ClientMessage { kind: Some(ack) }).await.is_err() {
                return;
            }
        }
    });
    loop {
        let msg = match raw.next().await {
            Ok(Some(msg)) => msg,
            end => return end,
        };
        if let Some(ServerKind::Number(n)) = msg.kind {
            let wait = Duration::from_millis(delay.load(Ordering::Relaxed));
            let _ = due.send((tokio::time::Instant::now() + wait, n.index + 1));
        }
    }
}

/// Acknowledgements that come back late are overload the scheduling probe
/// does not see (a saturated server's numbers and acknowledgements wait in
/// its connections' queues while its timers run on time): the median round
/// trip over its baseline sheds new sessions and teaches a limit, and once
/// the round trips are back, new sessions are admitted again. The streams
/// whose acknowledgements ran late are not ended for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_coming_back_late_shed_new_sessions() {
    // Enough that late round trips (one every 650 ms a stream) still fill
    // windows: 150 a second.
    const STREAMS: u64 = 100;
    // 50 ms: acknowledged one number at a time.
    let mut session = SessionConfig::new(Duration::from_millis(50), Duration::from_secs(60));
    session.silence_timeout = Duration::from_secs(30);
    let server = Isolated::start(ServerConfig {
        session,
        shed_when_late: Some(Duration::from_millis(100)),
        ..server_config()
    });
    let ch = server.channel().await;
    let delay = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..STREAMS {
        let mut raw = Raw::start(&ch, &[open(&id(200 + i), 1000, &[1; 16])]).await;
        raw.attached().await;
        clients.push(tokio::spawn(acknowledge(raw, delay.clone())));
    }
    // A second of prompt acknowledgements: their round trip is the
    // baseline, and nothing is shed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(server.station.overload().shedding().is_none());
    assert_eq!(server.station.overload().limit(), None);

    // Acknowledgements 600 ms late, the server's runtime idle otherwise.
    delay.store(600, Ordering::Relaxed);
    server.until_shedding(true).await;
    let status = Raw::start(&ch, &[open(&id(1), 10, &[1; 16])])
        .await
        .rejection()
        .await;
    assert_reason(&status, Reason::Overloaded).expect("RetryInfo");
    server.until("a limit", |o| o.limit().is_some()).await;

    // Prompt again: shedding stops, and under the limit (never below 90 %
    // of the streams held) a new session is admitted (bounded wait: the
    // last late acknowledgements are still coming back).
    delay.store(0, Ordering::Relaxed);
    server.until_shedding(false).await;
    let admitted = first_admitted(&ch, 2, Duration::from_millis(100)).await;
    assert!(admitted.is_some(), "never admitted once on time again");
    for client in clients {
        if client.is_finished() {
            panic!("a stream ended: {:?}", client.await);
        }
        client.abort();
    }
}

/// A late acknowledgement is not a dead client: while the server's own
/// round trips say it runs late, it waits that much longer before it ends
/// a stream for silence. Here the clients' acknowledgements fall behind in
/// two steps, the second leaving each stream 1.2 s without one against a
/// silence timeout of 1 s; the streams take that step one after another,
/// as a server falls behind its connections one at a time, so round trips
/// keep coming back. A server that judged silence by the timeout alone
/// would end them all `CLIENT_SILENT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_server_does_not_end_late_acknowledgements_as_silence() {
    const STREAMS: u64 = 100;
    let mut session = SessionConfig::new(Duration::from_millis(50), Duration::from_secs(60));
    session.silence_timeout = Duration::from_secs(1);
    let server = Isolated::start(ServerConfig {
        session,
        shed_when_late: Some(Duration::from_millis(100)),
        ..server_config()
    });
    let ch = server.channel().await;
    let mut delays = Vec::new();
    let mut clients = Vec::new();
    for i in 0..STREAMS {
        let mut raw = Raw::start(&ch, &[open(&id(300 + i), 1000, &[1; 16])]).await;
        raw.attached().await;
        let delay = Arc::new(AtomicU64::new(0));
        clients.push(tokio::spawn(acknowledge(raw, delay.clone())));
        delays.push(delay);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 600 ms late: a gap shorter than the timeout, and evidence.
    for delay in &delays {
        delay.store(600, Ordering::Relaxed);
    }
    server
        .until("lateness of 400 ms", |o| {
            o.lateness() >= Duration::from_millis(400)
        })
        .await;
    // 1.8 s late, one stream every 10 ms.
    for delay in &delays {
        delay.store(1800, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for client in clients {
        if client.is_finished() {
            panic!("a stream ended: {:?}", client.await);
        }
        client.abort();
    }
    // What the streams were excused (and `/metrics` shows) is the peak,
    // held while round trips were missing.
    let excused = server.station.overload().silence_excused();
    assert!(excused >= Duration::from_millis(400), "{excused:?}");
}

/// After running late, a server admits new sessions only while it holds
/// fewer streams than it learned it carries on time, however on time it is
/// again: a door that reopened at once would admit the same overload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ran_late_admits_only_under_the_limit_it_learned() {
    const HELD: u64 = 80;
    // The held streams never ack: a silence timeout well past the test's
    // end keeps them attached on a slow machine.
    let mut session = SessionConfig::new(INTERVAL, Duration::from_secs(60));
    session.silence_timeout = Duration::from_secs(30);
    let server = Isolated::start(ServerConfig {
        session,
        shed_when_late: Some(Duration::from_millis(20)),
        ..server_config()
    });
    let ch = server.channel().await;
    let mut held = Vec::new();
    let mut token = Vec::new();
    for i in 0..HELD {
        let mut raw = Raw::start(&ch, &[open(&id(100 + i), 1000, &[1; 16])]).await;
        token = raw.attached().await.resume_token;
        held.push(raw);
    }
    assert_eq!(server.station.overload().limit(), None);

    // Late for a while with 80 streams held: the limit is cut to 72.
    server.hog.store(true, Ordering::Relaxed);
    server.until_shedding(true).await;
    server.until("a limit", |o| o.limit().is_some()).await;
    server.hog.store(false, Ordering::Relaxed);
    server.until_shedding(false).await;
    let limit = server.station.overload().limit().expect("a limit learned");
    assert!(limit < HELD, "limit {limit}");

    // On time again, and still refused: 80 streams are held.
    let status = Raw::start(&ch, &[open(&id(1), 10, &[1; 16])])
        .await
        .rejection()
        .await;
    assert_reason(&status, Reason::Overloaded).expect("RetryInfo");
    let info = status.get_error_details();
    let meta = &info.error_info().expect("ErrorInfo").metadata;
    assert_eq!(meta["streams_held"], HELD.to_string(), "{meta:?}");
    assert!(
        meta["session_limit"].parse::<u64>().unwrap() < HELD,
        "{meta:?}"
    );

    // A session already admitted may always come back: its resume takes
    // over its own place (the last held stream ends, taken over).
    let mut resumed = Raw::start(&ch, &[resume(&id(100 + HELD - 1), &token, 0)]).await;
    assert_eq!(resumed.attached().await.next_index, 0);

    // Sessions end and make room: a new one is admitted (bounded wait).
    // (Refused until the dropped streams' places are freed.)
    held.truncate(40);
    let admitted = first_admitted(&ch, 2, Duration::from_millis(20)).await;
    assert!(admitted.is_some(), "never admitted with 40 streams held");
}

#[tokio::test]
async fn shedding_is_off_unless_configured() {
    let station = Station::new(server_config(), MemoryStore::default());
    assert!(!station.overload().enabled());
    station
        .overload()
        .observe(std::time::Instant::now(), Duration::from_secs(10), 0);
    assert!(station.overload().shedding().is_none());
    let server = TestServer::with_station(station).await;
    let ch = server.channel().await;
    Raw::start(&ch, &[open(&id(1), 10, &[1; 16])])
        .await
        .attached()
        .await;
}
