//! What the client sends: its messages fed to the session (the first
//! finds the stream a place under `--max-streams`), and the timing of
//! acknowledgements' round trips for the overload signal.

use std::time::Instant;

use station_core::server::{Open, Resume, Stream};
use station_core::{Busy, Reject};
use tokio::sync::OwnedSemaphorePermit;

use crate::clock::now;
use crate::proto::client_message::Kind as ClientKind;
use crate::proto::ClientMessage;
use crate::state::ServerState;
use crate::store::SessionStore;

/// Whether the client acknowledges `n` as soon as it reads it (every
/// `ack_every` numbers from its last acknowledgement, and the last), so
/// that its round trip holds no wait for a batch to fill.
pub(super) fn acknowledged_alone(
    cfg: &crate::ServerConfig,
    acked: u32,
    n: &station_core::server::Number,
) -> bool {
    let ack_every = cfg.session.ack_every().max(1);
    n.checksum.is_some() || (n.index + 1).saturating_sub(acked) % ack_every == 0
}

/// Ends the timing of the number in flight on an accepted acknowledgement
/// up to `next_index`: a sample if it acknowledges exactly that number,
/// none if it went past (the client acknowledged later than it had to,
/// and the wait is not the round trip's).
fn time_ack<S: SessionStore>(
    shared: &ServerState<S>,
    timed: &mut Option<(u32, Instant)>,
    next_index: u32,
) {
    let Some((index, sent)) = *timed else { return };
    if next_index == index + 1 {
        shared
            .overload
            .ack_round_trip(now().saturating_duration_since(sent));
    }
    if next_index > index {
        *timed = None;
    }
}

/// Feeds one client message to the session. The first (`Open` or
/// `Resume`) must find a place under `--max-streams` before any store
/// work; it keeps it in `slot` until the stream ends. An `Ack` the session
/// accepts ends the timing of the number in `timed`.
pub(super) fn handle<S: SessionStore>(
    shared: &ServerState<S>,
    stream: &mut Stream,
    slot: &mut Option<OwnedSemaphorePermit>,
    timed: &mut Option<(u32, Instant)>,
    msg: ClientMessage,
) {
    let now = now();
    let first = matches!(msg.kind, Some(ClientKind::Open(_) | ClientKind::Resume(_)));
    if first && slot.is_none() {
        match shared.slot() {
            Some(permit) => *slot = Some(permit),
            None => return stream.abort(now, Reject::Full(shared.cfg.max_streams)),
        }
    }
    match msg.kind {
        Some(ClientKind::Open(open)) => {
            // An overloaded server refuses new sessions before any store
            // work, but lets every existing session resume: refusing a
            // resume only turns lateness into an expired session, and a
            // slow store into lost ones (ARCHITECTURE.md §2, "Overload").
            if stream.client_id().is_none() {
                // This stream's own place is counted in `held`.
                let others = shared.held().saturating_sub(1);
                if let Err(busy) = shared.overload.admits(others) {
                    return stream.abort(now, Reject::Overloaded(busy));
                }
                if let Err(closed) = shared.admission.admits(now) {
                    return stream.abort(now, Reject::Overloaded(Busy::Store(closed)));
                }
            }
            let open = Open {
                client_id: &open.client_id,
                count: open.count,
                nonce: &open.open_nonce,
            };
            stream.handle_open(now, open, shared.fresh());
        }
        Some(ClientKind::Resume(resume)) => {
            let resume = Resume {
                client_id: &resume.client_id,
                token: &resume.resume_token,
                next_index: resume.next_index,
            };
            stream.handle_resume(now, resume, shared.fresh());
        }
        Some(ClientKind::Ack(ack)) => {
            stream.handle_ack(now, ack.next_index);
            if !stream.is_ended() {
                time_ack(shared, timed, ack.next_index);
            }
        }
        None => stream.abort(now, Reject::Unexpected("empty ClientMessage")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_numbers_the_client_acknowledges_alone_are_timed() {
        let ms = Duration::from_millis;
        let n = |index, last: bool| station_core::server::Number {
            index,
            value: 0,
            checksum: last.then_some(0),
        };
        let every_one = crate::ServerConfig::default();
        assert_eq!(every_one.session.ack_every(), 1);
        assert!((0..40).all(|i| acknowledged_alone(&every_one, i / 2, &n(i, false))));
        // Under 50 ms, clients acknowledge every 16th number from their
        // last acknowledgement, and the last.
        let batched = crate::ServerConfig {
            session: station_core::server::Config::new(ms(10), Duration::from_secs(30)),
            ..crate::ServerConfig::default()
        };
        assert_eq!(batched.session.ack_every(), 16);
        assert!(acknowledged_alone(&batched, 0, &n(15, false)));
        assert!(!acknowledged_alone(&batched, 0, &n(14, false)));
        assert!(!acknowledged_alone(&batched, 0, &n(16, false)));
        assert!(acknowledged_alone(&batched, 16, &n(31, false)));
        // Resumed at 5: it acknowledges 21, 37, …
        assert!(acknowledged_alone(&batched, 5, &n(20, false)));
        assert!(!acknowledged_alone(&batched, 5, &n(15, false)));
        assert!(acknowledged_alone(&batched, 0, &n(7, true)));
    }
}
