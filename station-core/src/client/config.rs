//! Client settings ([`Config`]) and the rules that make them workable
//! ([`Config::validate`]).

use std::time::Duration;

use crate::server::{ACK_ROUND_TRIP, MAX_DURATION};

/// Client settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// First reconnection delay (before jitter).
    pub backoff_initial: Duration,
    /// Largest reconnection delay.
    pub backoff_max: Duration,
    /// Give up if no server sent a number we did not hold for this long
    /// (counted from the first attempt until the first number). An `Attached` alone is not progress,
    /// so a server that attaches and then fails every stream cannot keep
    /// the client retrying forever.
    pub give_up_without_progress: Duration,
    /// Wait this long for `Attached` after connecting.
    pub attach_timeout: Duration,
    /// Drop a stream silent for this many intervals plus `silence_grace`.
    pub silence_intervals: u32,
    /// Added to the silence allowance (network latency, server pauses).
    pub silence_grace: Duration,
    /// Give up after this many consecutive protocol violations by servers.
    pub max_protocol_errors: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            give_up_without_progress: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(5),
            silence_intervals: 3,
            silence_grace: Duration::from_secs(2),
            max_protocol_errors: 5,
        }
    }
}

impl Config {
    /// Checks that the settings can work; the error names the rule broken.
    ///
    /// 1. `backoff_initial` is positive (zero reconnects in a tight loop)
    ///    and at most `backoff_max`;
    /// 2. `give_up_without_progress` is longer than `backoff_initial` (else
    ///    no failure is ever retried);
    /// 3. `attach_timeout` is positive;
    /// 4. the watchdog allows more than one interval between messages
    ///    (`silence_intervals` at least 1), plus at least a round trip
    ///    ([`ACK_ROUND_TRIP`](crate::server::ACK_ROUND_TRIP)) of grace: a
    ///    working server sends one number per interval, and one whose
    ///    window is full waits for our acknowledgement's round trip;
    /// 5. `max_protocol_errors` is at least 1;
    /// 6. no duration is longer than [`MAX_DURATION`].
    ///
    /// How the watchdog fits the server's TTL is known only at `Attached`;
    /// see [`Client`](super::Client).
    pub fn validate(&self) -> Result<(), String> {
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return Err(format!(
                "the first reconnection delay ({:?}) must be positive and at most the largest \
                 ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.give_up_without_progress <= self.backoff_initial {
            return Err(format!(
                "giving up after {:?} without progress leaves no time to retry even once \
                 (the first reconnection waits {:?})",
                self.give_up_without_progress, self.backoff_initial
            ));
        }
        if self.attach_timeout.is_zero() {
            return Err("the attach timeout must be positive".into());
        }
        if self.silence_intervals == 0 || self.silence_grace < ACK_ROUND_TRIP {
            return Err(format!(
                "the silence allowance ({} intervals + {:?}) must exceed one interval by at \
                 least {ACK_ROUND_TRIP:?}: a working server sends a number every interval, \
                 and waits a round trip for acknowledgements when its window is full",
                self.silence_intervals, self.silence_grace
            ));
        }
        if self.max_protocol_errors == 0 {
            return Err("max_protocol_errors must be at least 1".into());
        }
        for (name, d) in [
            ("largest reconnection delay", self.backoff_max),
            ("give-up time", self.give_up_without_progress),
            ("attach timeout", self.attach_timeout),
            ("silence grace", self.silence_grace),
        ] {
            if d > MAX_DURATION {
                return Err(format!("{name} ({d:?}) is longer than {MAX_DURATION:?}"));
            }
        }
        Ok(())
    }
}
