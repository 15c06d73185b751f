//! Connecting and attaching: each stream starts with an `Open` or, once a
//! token is held, a `Resume`, and is checked against the session when the
//! server's `Attached` comes.

use std::time::Instant;

use super::{Attached, Client, Output, Phase, Request};
use crate::ids::Secret;
use crate::server::MAX_DURATION;

impl Client {
    pub(super) fn connect(&mut self, now: Instant) {
        let request = match self.token {
            None => Request::Open {
                client_id: self.client_id,
                count: self.count,
                nonce: self.nonce,
            },
            Some(token) => Request::Resume {
                client_id: self.client_id,
                token,
                next_index: self.next_index,
            },
        };
        if self.streams > 0 {
            self.reconnects += 1;
        }
        self.streams += 1;
        self.stream_attached = false;
        self.stream_progressed = false;
        self.phase = Phase::Connecting {
            since: now,
            look: None,
        };
        self.out.push_back(Output::Connect(request));
    }

    /// Handles the server's `Attached` on the current stream.
    pub fn handle_attached(&mut self, now: Instant, a: Attached<'_>) {
        match self.phase {
            Phase::Connecting { .. } => {}
            // No stream is current: a late message from one already dropped.
            // And once finished, the client emits nothing more.
            Phase::Done | Phase::Backoff { .. } => return,
            Phase::Streaming { .. } => {
                return self.protocol_error(now, "Attached twice on one stream".into())
            }
        }
        let token = match Secret::from_slice(a.token) {
            Some(t) => t,
            None => return self.fatal_protocol(format!("resume token of {} bytes", a.token.len())),
        };
        if a.count != self.count {
            return self.fatal_protocol(format!(
                "server attached a session of {} numbers, we asked for {}",
                a.count, self.count
            ));
        }
        if a.ttl > MAX_DURATION || a.interval > MAX_DURATION {
            // Not a setting any valid server uses (its own validation
            // refuses them); deadlines computed from them are meaningless.
            return self.protocol_error(
                now,
                format!(
                    "server announced a session TTL of {:?} and an interval of {:?} (at most {:?} is valid)",
                    a.ttl, a.interval, MAX_DURATION
                ),
            );
        }
        if a.next_index != self.next_index {
            return self.protocol_error(
                now,
                format!(
                    "server attached at index {}, we asked for {}",
                    a.next_index, self.next_index
                ),
            );
        }
        self.token = Some(token);
        self.ttl = Some(a.ttl);
        self.interval = a.interval;
        self.ack_every = a.ack_every.max(1);
        self.acked = self.next_index;
        // The session is alive (the server just refreshed it), but this is
        // not progress: the backoff and the give-up clock go on until a
        // number arrives.
        self.last_heard = Some(now);
        self.stream_attached = true;
        self.phase = Phase::Streaming {
            last: now,
            look: None,
        };
        if self.next_index == self.count {
            // We held everything already; only the final ack was missing.
            self.finish_complete();
        }
    }

    /// Whether a message of kind `what` may be taken: on an attached stream,
    /// `Some` of when its last message came. A message while backing off
    /// (a late one from a dropped stream) or once finished is ignored, and
    /// one before `Attached` breaks the protocol.
    pub(super) fn on_attached_stream(&mut self, now: Instant, what: &str) -> Option<Instant> {
        match self.phase {
            Phase::Streaming { last, .. } => Some(last),
            Phase::Done | Phase::Backoff { .. } => None,
            Phase::Connecting { .. } => {
                self.protocol_error(now, format!("{what} before Attached"));
                None
            }
        }
    }
}
