//! When the client tries again: exponential backoff with jitter, the
//! server's pushback, and giving up at the session's expiry or when no
//! progress came for too long (ARCHITECTURE.md §2).

use std::time::{Duration, Instant};

use super::{later, Client, Phase, Verdict};
use crate::sequence::mix64;

impl Client {
    /// A retryable failure: back off, or give up if no retry can succeed.
    ///
    /// `pushback` is the server's "not before" (RetryInfo): the next attempt
    /// waits at least that long. If that is past the last moment an attempt
    /// can still succeed (the session's expiry, or the give-up deadline),
    /// the client gives up at once rather than disobey the server or sleep
    /// into a deadline it cannot meet.
    pub(super) fn retry(&mut self, now: Instant, why: String, pushback: Option<Duration>) {
        self.failures = self.failures.saturating_add(1);
        let delay = self.backoff();
        // The server forgets the session `ttl` after it last heard from us,
        // which was no earlier than we last heard from it.
        let expiry = match (self.last_heard, self.ttl) {
            (Some(heard), Some(ttl)) => Some(later(heard, ttl)),
            _ => None,
        };
        let stalled = later(self.last_progress, self.cfg.give_up_without_progress);
        let deadline = expiry.map_or(stalled, |e| e.min(stalled));
        let expired = expiry.is_some_and(|e| e <= stalled);
        // Squeeze in a last attempt just before the deadline rather than
        // sleeping past it -- once: a failure at that last moment gives up
        // (`at == now` although `delay` is not zero), or a failure reported
        // at the same instant would retry in a tight loop.
        let last_chance = deadline
            .checked_sub(self.cfg.backoff_initial)
            .unwrap_or(now);
        let mut at = later(now, delay).min(last_chance);
        if let Some(wait) = pushback {
            let not_before = later(now, wait);
            if not_before > last_chance && now < deadline {
                let left = deadline.saturating_duration_since(now);
                return self.give_up(
                    expired,
                    format!(
                        "{why}; the server asked us to wait {wait:?}, but only {left:?} are left"
                    ),
                );
            }
            at = at.max(not_before);
        }
        if now >= deadline || at < now || (at == now && !delay.is_zero()) {
            return self.give_up(expired, why);
        }
        self.phase = Phase::Backoff { until: at };
    }

    /// Ends the session at its give-up deadline: the session's expiry if
    /// `expired`, else `give_up_without_progress`.
    fn give_up(&mut self, expired: bool, why: String) {
        let verdict = if expired {
            Verdict::Expired(format!(
                "could not resume before the session expired (last error: {why})"
            ))
        } else if self.ttl.is_some() {
            let limit = self.cfg.give_up_without_progress;
            Verdict::Unreachable(format!(
                "no progress for {limit:?}: servers attached the session but sent no new number (last error: {why})"
            ))
        } else if self.token.is_some() {
            // Restored from a snapshot and never attached since: we cannot
            // tell whether the session outlived our absence.
            Verdict::Expired(format!(
                "could not resume the session in time; it may have expired (last error: {why})"
            ))
        } else {
            Verdict::Unreachable(format!(
                "no server attached the session (last error: {why})"
            ))
        };
        self.finish(verdict)
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// clients that failed together do not return together.
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .cfg
            .backoff_initial
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max);
        let half = base / 2;
        let r = mix64(self.jitter_seed.wrapping_add(u64::from(self.failures)));
        let jitter = half.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64);
        half + jitter
    }
}
