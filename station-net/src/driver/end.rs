//! How a stream's end is accounted for: counters, the observer, a log
//! line and the status to end the body with. Beside `store`, which settles
//! a stream that ended while its body was gone, and below `driver`: both
//! call it, and it calls neither.

use station_core::server::{End, Stream};
use tonic::Status;

use crate::clock::now;
use crate::state::{ServerState, StreamEvent};
use crate::store::SessionStore;

/// Accounts for the end of the stream; the status to end it with, if any.
pub(super) fn finish<S: SessionStore>(
    shared: &ServerState<S>,
    stream: &Stream,
    end: End,
) -> Option<Status> {
    let client = stream.client_id();
    match end {
        End::Completed { deleted } => {
            shared.counters.completed();
            if let (true, Some(client_id)) = (deleted, client) {
                shared.observe(|| StreamEvent::Completed { client_id });
            }
            match deleted {
                true => tracing::debug!(?client, "session completed"),
                false => tracing::warn!(
                    ?client,
                    "session completed, but the store did not confirm its delete; \
                     its record expires on its own"
                ),
            }
            None
        }
        End::ClientGone => {
            tracing::debug!(?client, sent = stream.sent(), "client went away");
            None
        }
        End::Rejected(reject) => {
            let status = shared.status(&reject, now());
            // Never attached: the stream was refused, not ended (an
            // expired session found by a resume, unlike one found by a
            // renewal).
            let refused = stream.generation().is_none();
            shared.counters.rejected(status.code(), &reject, refused);
            tracing::debug!(?client, %reject, "stream ended");
            Some(status)
        }
    }
}
