//! When the client tries again: exponential backoff with jitter, the
//! server's pushback, the retry budget's throttling, and giving up at the
//! session's expiry or when no progress came for too long -- saying only
//! what the client knows (ARCHITECTURE.md §2).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{later, Attempt, Client, Phase, Verdict};
use crate::sequence::mix64;
use crate::Reason;

/// How an attempt failed, before any `Attached` on its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// No station answered: the connection failed or broke, a status came
    /// without a reason (made by the transport or a proxy), or no
    /// `Attached` came in time.
    NoAnswer,
    /// A station refused the stream with a retryable reason.
    Refused(Reason),
    /// A server broke the protocol.
    Protocol,
}

/// What happened to the attempts since the last new number: what a
/// give-up says, since "no server reachable", "servers attached but sent
/// nothing new" and "servers refused" call for different actions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SinceProgress {
    /// Attempts no station answered.
    unanswered: u32,
    /// Streams that attached, then failed before a new number.
    attached: u32,
    /// Streams refused before attaching, by reason, in the order first seen.
    refused: Vec<(Reason, u32)>,
    /// Streams that broke the protocol before attaching.
    protocol: u32,
    /// Opens the process's open throttle held back.
    held_back: u32,
}

impl SinceProgress {
    fn count(&mut self, attached: bool, failure: Failure) {
        match failure {
            _ if attached => self.attached += 1,
            Failure::NoAnswer => self.unanswered += 1,
            Failure::Protocol => self.protocol += 1,
            Failure::Refused(reason) => match self.refused.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => self.refused.push((reason, 1)),
            },
        }
    }

    /// E.g. "no server reachable (4 attempts)", or several such parts
    /// joined by "; " when attempts failed in different ways.
    fn describe(&self) -> String {
        let times = |n: u32, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        let mut parts = Vec::with_capacity(4);
        if self.unanswered > 0 {
            parts.push(format!(
                "no server reachable ({})",
                times(self.unanswered, "attempt", "attempts")
            ));
        }
        if self.attached > 0 {
            parts.push(format!(
                "servers attached the session but sent no new number ({})",
                times(self.attached, "stream", "streams")
            ));
        }
        if !self.refused.is_empty() {
            let mut by_reason = String::new();
            for (i, (reason, n)) in self.refused.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(by_reason, "{sep}{reason} ×{n}");
            }
            parts.push(format!("servers refused the session ({by_reason})"));
        }
        if self.protocol > 0 {
            parts.push(format!(
                "servers broke the protocol ({})",
                times(self.protocol, "stream", "streams")
            ));
        }
        if self.held_back > 0 {
            parts.push(format!(
                "this process held back {} (its servers had accepted few of its opens lately)",
                times(self.held_back, "open", "opens")
            ));
        }
        if parts.is_empty() {
            // Only reached if giving up before any attempt failed, which
            // `retry` never does; kept honest anyway.
            parts.push("no attempt failed".into());
        }
        parts.join("; ")
    }
}

/// Which deadline a give-up met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// By our clock the session's TTL has run out since a server last
    /// heard from us.
    Expiry,
    /// No new number for `give_up_without_progress`.
    NoProgress,
}

impl Client {
    /// A retryable failure: back off, or give up if no retry can succeed.
    ///
    /// `pushback` is the server's "not before" (RetryInfo): the next attempt
    /// waits at least that long. If that is past the last moment an attempt
    /// can still succeed (the session's expiry, or the give-up deadline),
    /// the client gives up at once rather than disobey the server or sleep
    /// into a deadline it cannot meet.
    pub(super) fn retry(
        &mut self,
        now: Instant,
        failure: Failure,
        why: String,
        pushback: Option<Duration>,
    ) {
        self.failures = self.failures.saturating_add(1);
        // A stream that delivered a new number was a success, whatever
        // ended it; only the attempts after it count as failed.
        if !self.stream_progressed {
            self.since_progress.count(self.stream_attached, failure);
            self.attempt = Some(Attempt::Failed);
        }
        let delay = self.backoff();
        // The server forgets the session `ttl` after it last heard from us,
        // which was no earlier than we last heard from it.
        let expiry = match (self.last_heard, self.ttl) {
            (Some(heard), Some(ttl)) => Some(later(heard, ttl)),
            _ => None,
        };
        let stalled = later(self.last_progress, self.cfg.give_up_without_progress);
        let deadline = expiry.map_or(stalled, |e| e.min(stalled));
        let met = match expiry {
            Some(e) if e <= stalled => Deadline::Expiry,
            _ => Deadline::NoProgress,
        };
        // Squeeze in a last attempt just before the deadline rather than
        // sleeping past it -- once: a failure at that last moment gives up
        // (`at == now` although `delay` is not zero), or a failure reported
        // at the same instant would retry in a tight loop.
        let last_chance = self.last_chance(deadline, now);
        let mut at = later(now, delay).min(last_chance);
        if let Some(wait) = pushback {
            let not_before = later(now, wait);
            if not_before > last_chance && now < deadline {
                let left = deadline.saturating_duration_since(now);
                return self.give_up(
                    met,
                    format!(
                        "{why}; the server asked us to wait {wait:?}, but only {left:?} are left"
                    ),
                );
            }
            at = at.max(not_before);
        }
        if now >= deadline || at < now || (at == now && !delay.is_zero()) {
            return self.give_up(met, why);
        }
        self.retry_limit = last_chance.max(at);
        self.phase = Phase::Backoff { until: at };
    }

    /// The open just emitted was held back (see
    /// [`handle_held_back`](Client::handle_held_back)): ask again after a
    /// throttled retry's wait, or give up if the last chance has come. An
    /// `Open` has no session to expire, so only the no-progress deadline
    /// applies.
    pub(super) fn hold_back(&mut self, now: Instant) {
        self.since_progress.held_back += 1;
        let deadline = later(self.last_progress, self.cfg.give_up_without_progress);
        let last_chance = self.last_chance(deadline, now);
        // Never the same instant (a configuration with no backoff), which
        // would ask again in a tight loop until a draw let an open go; at
        // or past the last chance, `at` is not after `now` either.
        let wait = self.throttled_wait().max(self.cfg.backoff_initial);
        let at = later(now, wait).min(last_chance);
        if at <= now {
            return self.give_up(
                Deadline::NoProgress,
                "the last open was held back too".into(),
            );
        }
        self.retry_limit = last_chance;
        self.phase = Phase::Backoff { until: at };
    }

    /// The last moment to start an attempt before `deadline`: one initial
    /// backoff ahead of it (or `now`, if that is already past).
    fn last_chance(&self, deadline: Instant, now: Instant) -> Instant {
        deadline
            .checked_sub(self.cfg.backoff_initial)
            .unwrap_or(now)
    }

    /// Ends the session at a give-up deadline, saying what the client
    /// knows: never `Expired`, which only a server's `SESSION_EXPIRED` may
    /// claim (`handle_end`).
    fn give_up(&mut self, met: Deadline, last_error: String) {
        let happened = self.since_progress.describe();
        let verdict = match (met, self.ttl) {
            (Deadline::Expiry, Some(ttl)) => Verdict::LikelyExpired(format!(
                "the session has most likely expired (no server confirmed it): no server let \
                 us resume within its TTL ({ttl:?}) of the last time one heard from us; \
                 {happened} (last error: {last_error})"
            )),
            _ => {
                let limit = self.cfg.give_up_without_progress;
                let mut message =
                    format!("no progress for {limit:?}: {happened} (last error: {last_error})");
                if self.token.is_some() && self.ttl.is_none() {
                    // Restored from a snapshot and not attached since: we
                    // cannot tell whether the session outlived our absence.
                    message.push_str(
                        "; no server said whether the session is still live: it may have \
                         expired, or a later attempt may resume it",
                    );
                }
                Verdict::Unreachable(message)
            }
        };
        self.finish(verdict)
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// clients that failed together do not return together -- from the
    /// first retry on (a server's crash ends every stream at once).
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .cfg
            .backoff_initial
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max);
        equal_jitter(
            base,
            mix64(self.jitter_seed.wrapping_add(u64::from(self.failures))),
        )
    }

    /// How long a throttled retry waits: the largest backoff, with equal
    /// jitter drawn apart from the backoff's.
    pub(super) fn throttled_wait(&self) -> Duration {
        // Held-back opens do not count as failures, so they change the draw.
        let n = u64::from(self.failures) | u64::from(self.held_back) << 32;
        let r = mix64(self.jitter_seed ^ 0x7468_726f_7474_6c65 ^ n);
        equal_jitter(self.cfg.backoff_max, r)
    }
}

/// Half of `base`, plus a part of the other half chosen by `r`.
fn equal_jitter(base: Duration, r: u64) -> Duration {
    let half = base / 2;
    half + half.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64)
}
