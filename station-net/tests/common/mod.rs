//! Helpers shared by this crate's integration tests (`mod common;` in each
//! test file that needs them).

#![allow(dead_code)] // Not every test binary uses every helper.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use station_core::server::{StoreOp, StoreReply};
use station_core::{Reason, DOMAIN};
use station_net::store::{MemoryStore, SessionStore, StoreError};
use tonic::{Code, Status};
use tonic_types::StatusExt;

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

/// A server of `station` on 127.0.0.1 (an OS-picked port), serving until
/// the returned sender is dropped or fired.
pub async fn serve<S: station_net::store::SessionStore>(
    station: &station_net::Station<S>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = station.clone();
    tokio::spawn(async move {
        let bind: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
        station_net::serve_tcp(s, bind, |a| addr_tx.send(a).expect("waited for"), async {
            let _ = stopped.await;
        })
        .await
        .expect("the server runs");
    });
    (addr_rx.await.expect("the server binds"), stop)
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
