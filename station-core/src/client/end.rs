//! How a stream ended, and what the client does next: retry (through
//! `backoff.rs`), or finish with a verdict; the glue to the process's
//! retry budget and open throttle.

use std::time::Instant;

use super::backoff::Failure;
use super::{later, Attempt, Client, Output, Phase, StreamEnd, Verdict};
use crate::sequence::mix64;
use crate::Reason;

impl Client {
    /// Handles the end of the current stream (or a failed connection).
    pub fn handle_end(&mut self, now: Instant, end: StreamEnd) {
        if matches!(self.phase, Phase::Done | Phase::Backoff { .. }) {
            return;
        }
        match end {
            StreamEnd::Ok => self.retry(
                now,
                Failure::Protocol,
                "server ended the stream early".into(),
                None,
            ),
            StreamEnd::Transport(why) => self.retry(now, Failure::NoAnswer, why, None),
            StreamEnd::Protocol(why) => self.protocol_error(now, why),
            StreamEnd::Status {
                code,
                message,
                reason,
                retry_after,
            } => {
                // The one retry table: by reason when the server gave one,
                // by code only for statuses the transport made up.
                let retryable = reason.map_or(code.is_retryable(), Reason::is_retryable);
                if retryable {
                    let what = reason.map_or_else(|| format!("{code:?}"), |r| r.to_string());
                    // A status without a reason was made by the transport
                    // (or a proxy): no station answered.
                    let failure = reason.map_or(Failure::NoAnswer, Failure::Refused);
                    return self.retry(now, failure, format!("{what}: {message}"), retry_after);
                }
                let verdict = match reason {
                    Some(Reason::SessionExpired) => Verdict::Expired(message),
                    Some(Reason::SessionLost) => Verdict::Rejected {
                        code,
                        reason,
                        message: format!(
                            "the server lost the session (its store no longer has it); \
                             start a new session (server said: {message})"
                        ),
                    },
                    Some(Reason::SessionUnknown) => Verdict::Rejected {
                        code,
                        reason,
                        message: format!(
                            "the server does not know the session (never opened, already \
                             completed, or forgotten); start a new session (server said: {message})"
                        ),
                    },
                    _ => Verdict::Rejected {
                        code,
                        reason,
                        message,
                    },
                };
                self.finish(verdict)
            }
        }
    }

    pub(super) fn protocol_error(&mut self, now: Instant, why: String) {
        self.protocol_errors += 1;
        if self.protocol_errors >= self.cfg.max_protocol_errors {
            return self.fatal_protocol(why);
        }
        self.out.push_back(Output::Disconnect);
        self.retry(
            now,
            Failure::Protocol,
            format!("protocol error: {why}"),
            None,
        );
    }

    pub(super) fn fatal_protocol(&mut self, why: String) {
        self.out.push_back(Output::Disconnect);
        self.finish(Verdict::ProtocolError(why));
    }

    /// How the last attempt (stream) went, once, for a [`RetryBudget`](super::RetryBudget):
    /// `Succeeded` at its first new number, `Failed` when it ended without
    /// one. Poll after every input, before [`poll_output`](Self::poll_output)'s
    /// results are acted on; an adapter without a budget may ignore it.
    /// If the budget answers [`Decision::Throttle`](super::Decision::Throttle), call
    /// [`handle_throttled`](Self::handle_throttled) before reading
    /// [`poll_timeout`](Self::poll_timeout).
    pub fn poll_attempt(&mut self) -> Option<Attempt> {
        self.attempt.take()
    }

    /// The retry budget refused the retry just scheduled (A6 throttling):
    /// wait longer -- the largest backoff, jittered so throttled clients do
    /// not come back together -- but never past the last moment an attempt
    /// can still succeed, so the session is never failed or given up on
    /// sooner for it. A server's pushback is still honoured (the wait only
    /// grows). A no-op unless backing off.
    pub fn handle_throttled(&mut self, now: Instant) {
        let Phase::Backoff { until } = self.phase else {
            return;
        };
        let wait = self.throttled_wait();
        let at = later(now, wait).min(self.retry_limit);
        self.phase = Phase::Backoff {
            until: until.max(at),
        };
    }

    /// The process's [`OpenThrottle`](super::OpenThrottle) held back the `Open` just emitted: the
    /// adapter did not send it. No stream was opened, so none is counted
    /// and no attempt goes to the retry budget. The client asks again after
    /// a throttled retry's wait, never past its last chance before the
    /// give-up deadline, and a give-up says how many opens were held back.
    /// A no-op unless an `Open` is connecting.
    pub fn handle_held_back(&mut self, now: Instant) {
        if self.token.is_some() || !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        // Undo what `connect` counted for a stream that was never opened.
        self.streams -= 1;
        if self.streams > 0 {
            self.reconnects -= 1;
        }
        self.held_back = self.held_back.saturating_add(1);
        self.hold_back(now);
    }

    /// A draw for the open throttle, from the session's seed and how many
    /// opens it has asked to send: the same seed, the same draws.
    pub fn throttle_draw(&self) -> u64 {
        let asked = u64::from(self.streams) << 32 | u64::from(self.held_back);
        mix64(self.jitter_seed ^ 0x6f70_656e_6472_6177 ^ asked)
    }
}
