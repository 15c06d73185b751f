//! Helpers shared by this crate's integration tests (`mod common;` in each
//! test file): the one test server ([`TestServer`]) and the one way to run
//! a client session against it ([`client`], [`run_client`]), and checks of
//! the error contract.

// Not every test binary uses every helper, nor every re-export.
#![allow(dead_code, unused_imports)]

pub mod raw;
mod server;
pub mod store;

pub use server::{assert_no_panics, connect, serve_fake, watch_panics, Good, Pki, TestServer};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Outcome};
use station_core::server::{Config as SessionConfig, StoreOp, StoreReply};
use station_core::{ClientId, Reason, DOMAIN};
use station_net::client::{run, ChannelOptions, DriverOptions, Endpoints};
use station_net::status::PUSHBACK_KEY;
use station_net::store::{MemoryStore, SessionStore, StoreError};
use station_net::ServerConfig;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Time between numbers on the test server of [`server_config`].
pub const INTERVAL: Duration = Duration::from_millis(20);
/// Session TTL on the test server of [`server_config`].
pub const TTL: Duration = Duration::from_secs(4);

/// The usual test server: a number every [`INTERVAL`], sessions of
/// [`TTL`], and a shutdown grace well inside [`TestServer::stop`]'s bound,
/// so a connection that never closes shows as a slow shutdown, not a hung
/// one.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        session: SessionConfig::new(INTERVAL, TTL),
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    }
}

/// The id of the session whose client is seeded with `seed`: one id per
/// seed.
pub fn session_id(seed: u64) -> ClientId {
    let bytes = seed.to_le_bytes().repeat(2).try_into().expect("16 bytes");
    ClientId::from_random_bytes(bytes)
}

/// A client of `count` numbers with `cfg`, its random source seeded with
/// `seed` and its id [`session_id`]`(seed)`.
pub fn client(cfg: ClientConfig, count: u32, seed: u64) -> Client {
    Client::new(Instant::now(), cfg, session_id(seed), count, seed).expect("a valid client")
}

/// Runs `client` to its end against `endpoints`, with the driver's default
/// options and no observer.
pub async fn run_client(endpoints: &Endpoints, client: Client) -> Outcome {
    run(endpoints, &DriverOptions::default(), client, |_, _| {}).await
}

/// The client driver's endpoints for a loopback port nothing listens on:
/// every attempt is refused at once.
pub fn nothing_listening() -> Endpoints {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = dead.local_addr().expect("bound");
    drop(dead);
    Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()).expect("a valid endpoint")
}

/// The status's `google.rpc.ErrorInfo`, checked as every rejection must
/// carry it: present, in the service's domain, with a reason this version
/// knows whose code is the status's. Returns the reason; `what` names the
/// case in every failure.
#[track_caller]
pub fn error_reason(what: &str, status: &Status) -> Reason {
    let details = status.check_error_details().unwrap_or_else(|e| {
        panic!("{what}: grpc-status-details-bin does not decode ({e}): {status:?}")
    });
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{what}: no ErrorInfo: {status:?}"));
    assert_eq!(info.domain, DOMAIN, "{what}: {status:?}");
    let reason = Reason::parse(&info.reason)
        .unwrap_or_else(|| panic!("{what}: unknown reason {:?}", info.reason));
    assert_eq!(
        reason.code() as i32,
        status.code() as i32,
        "{what}: the reason's code is not the status's: {status:?}"
    );
    reason
}

/// Asserts a rejection exactly: its code, its `ErrorInfo` (see
/// [`error_reason`]) with this reason, and that its message says every one
/// of `says`. `what` names the case in every failure.
#[track_caller]
pub fn assert_rejected(what: &str, status: &Status, code: Code, reason: Reason, says: &[&str]) {
    assert_eq!(
        status.code(),
        code,
        "{what}: expected {code:?}, got {:?}: {:?}",
        status.code(),
        status.message()
    );
    assert_eq!(error_reason(what, status), reason, "{what}: {status:?}");
    for needle in says {
        assert!(
            status.message().contains(needle),
            "{what}: {code:?} message {:?} does not say {needle:?}",
            status.message()
        );
    }
}

/// Asserts the status's code and ErrorInfo; returns its retry delay (from
/// RetryInfo, checked against the pushback trailer), if any.
#[track_caller]
pub fn assert_reason(status: &Status, reason: Reason) -> Option<Duration> {
    assert_eq!(
        status.code() as i32,
        reason.code() as i32,
        "{reason}: {status:?}"
    );
    assert_eq!(error_reason(reason.as_str(), status), reason);
    let details = status
        .check_error_details()
        .expect("grpc-status-details-bin decodes");
    let pushback = status
        .metadata()
        .get(PUSHBACK_KEY)
        .map(|v| v.to_str().unwrap().parse::<i64>().unwrap());
    let delay = details.retry_info().and_then(|r| r.retry_delay);
    match delay {
        Some(d) => assert_eq!(
            pushback,
            Some(d.as_nanos().div_ceil(1_000_000) as i64),
            "pushback agrees with RetryInfo"
        ),
        None => assert!(matches!(pushback, None | Some(-1)), "{pushback:?}"),
    }
    delay
}

/// The memory store, unreachable while `down` is set.
#[derive(Clone, Default)]
pub struct Switchable {
    pub inner: MemoryStore,
    pub down: Arc<AtomicBool>,
}

impl SessionStore for Switchable {
    async fn execute(&self, op: StoreOp) -> StoreReply {
        match self.down.load(Ordering::Relaxed) {
            true => StoreReply::Unavailable("switched off".into()),
            false => self.inner.execute(op).await,
        }
    }

    async fn live_sessions(&self) -> Result<u64, StoreError> {
        match self.down.load(Ordering::Relaxed) {
            true => Err(StoreError::Unavailable("switched off".into())),
            false => self.inner.live_sessions().await,
        }
    }

    fn kind(&self) -> &'static str {
        "switchable"
    }
}
