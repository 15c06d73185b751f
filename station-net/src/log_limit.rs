//! Warnings that every stream can raise at once, logged at most once a
//! second per call site.
//!
//! When the store fails, it fails for every stream: a line per stream
//! (a saturated benchmark run once logged 676,000 in a few minutes) costs
//! the CPU the server needs to recover and buries the first line, the one
//! that says what went wrong. A [`LogLimit`] lets one line through per
//! [`PERIOD`] and counts the others into the next one that goes through.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per call site this often.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One call site's budget of log lines: a `static` next to the call.
pub struct LogLimit(Mutex<State>);

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new() -> Self {
        LogLimit(Mutex::new(State {
            last: None,
            suppressed: 0,
        }))
    }

    /// Whether to log at `now`: `Some(suppressed)`, with how many lines were
    /// suppressed since the last one, or `None` (this one is suppressed).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last {
            Some(last) if now < last + PERIOD => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_carrying_the_count_suppressed() {
        let t = LogLimit::new();
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        for k in 1..=5 {
            assert_eq!(t.admit(t0 + PERIOD / 10 * k), None);
        }
        assert_eq!(t.admit(t0 + PERIOD), Some(5));
        // The period restarts at the line that went through.
        assert_eq!(t.admit(t0 + PERIOD * 3 / 2), None);
        assert_eq!(t.admit(t0 + PERIOD * 2), Some(1));
        // A quiet spell lets the next line straight through.
        assert_eq!(t.admit(t0 + PERIOD * 10), Some(0));
    }
}
