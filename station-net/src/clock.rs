//! The adapter's only clock. It reads tokio's clock, so paused test clocks
//! and turmoil's simulated time drive the core machines.

use std::time::Instant;

/// Now, on tokio's clock.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Sleeps until `deadline`, or forever if there is none (a machine with
/// nothing to time out).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
