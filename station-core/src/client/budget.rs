//! The retry budget ([`RetryBudget`]): gRFC A6's retry throttling, a token
//! bucket that failed attempts drain and successful ones refill, so a
//! process whose streams mostly fail stops multiplying its load by
//! retrying (ARCHITECTURE.md §2, "Retries and giving up").
//!
//! A6's bucket, per session: `max_tokens` 10, `token_ratio` 0.1. A failed
//! attempt (a stream that ended without a new number) takes one token; a
//! successful one (a stream that delivered a new number) gives back 0.1;
//! retries are throttled while the tokens are at most half the maximum.
//! So a client keeps retrying at its backoff's pace while failures stay
//! under about one in ten successes, on top of a reserve of five.
//!
//! **Scale.** A6 keeps one bucket per channel. `station load` runs
//! thousands of sessions over one channel per server, and one bucket of 10
//! there would throttle them all after five failures in a crowd of
//! thousands -- a broken connection would silence everyone's retries, and
//! a few successes would lift it again, so it would flap at every
//! incident. Instead each session [`join`](RetryBudget::join)s with its own
//! A6 allowance (10 tokens of room) and [`leave`](RetryBudget::leave)s
//! taking its share: the pooled bucket is `10 × sessions` tokens, throttled
//! at half. Joining and leaving keep the bucket as full, as a fraction, as
//! it was: sessions that start while the others fail (a load generator
//! keeps starting them) join a drained bucket drained, rather than each
//! bringing five fast retries of its own to an overloaded server.
//! One session alone (`station client`) is exactly A6; a crowd is
//! throttled when its failures, summed, outrun a tenth of its successes by
//! five per session -- a fleet-wide outage, not one unlucky stream, which
//! the pool absorbs.
//!
//! Tokens are counted in thousandths, so the arithmetic is exact and the
//! same on every platform (simulations replay it bit for bit).

/// A6's `max_tokens`, per session.
pub const MAX_TOKENS: u64 = 10;
/// Thousandths of a token, the unit of the bucket.
const MILLI: u64 = 1000;
/// A6's `token_ratio` (0.1), in thousandths of a token.
const TOKEN_RATIO: u64 = MILLI / 10;

/// How an attempt (one stream) ended, as the budget counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The stream delivered a number the client did not hold.
    Succeeded,
    /// The stream ended (or never attached) without delivering one.
    Failed,
}

/// What the budget says about the retry after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Retry at the backoff's pace.
    Retry,
    /// The budget is spent: retry, but only after a longer wait
    /// ([`Client::handle_throttled`](super::Client::handle_throttled)).
    Throttle,
}

/// The shared retry budget: a token bucket scaled by the sessions using it.
/// Pure bookkeeping: the adapter holds one per process (behind a lock) and
/// feeds it what [`Client::poll_attempt`](super::Client::poll_attempt)
/// reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Tokens now, in thousandths, at most `max`.
    tokens: u64,
    /// `MAX_TOKENS` per session, in thousandths.
    max: u64,
    sessions: u64,
    throttled: u64,
}

/// The budget's state, for metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetStats {
    /// Tokens in the bucket now.
    pub tokens: f64,
    /// The bucket's size now: `MAX_TOKENS` per session using it.
    pub max_tokens: f64,
    /// Sessions using the budget now.
    pub sessions: u64,
    /// Whether retries are throttled now.
    pub throttling: bool,
    /// Retries throttled so far.
    pub throttled: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryBudget {
    /// An empty budget: no session yet, so no tokens.
    pub fn new() -> Self {
        RetryBudget {
            tokens: 0,
            max: 0,
            sessions: 0,
            throttled: 0,
        }
    }

    /// A session starts using the budget: the bucket grows by one
    /// session's allowance, filled as full as the bucket is (the first
    /// session's, full).
    pub fn join(&mut self) {
        self.tokens += match self.sessions {
            0 => MAX_TOKENS * MILLI,
            n => self.tokens / n,
        };
        self.sessions += 1;
        self.max += MAX_TOKENS * MILLI;
        self.tokens = self.tokens.min(self.max);
    }

    /// A session stops using the budget: it takes its share of what is
    /// left, so the bucket stays as full (as a fraction) as it was, and a
    /// drained bucket stays drained while the crowd that drained it thins.
    pub fn leave(&mut self) {
        if self.sessions == 0 {
            return;
        }
        self.tokens -= self.tokens / self.sessions;
        self.sessions -= 1;
        self.max -= MAX_TOKENS * MILLI;
        self.tokens = self.tokens.min(self.max);
    }

    /// Counts an attempt; after a failure, says whether its retry may go at
    /// the backoff's pace or is throttled (A6: the failure is counted
    /// first, then the bucket is compared with its threshold).
    pub fn record(&mut self, attempt: Attempt) -> Decision {
        match attempt {
            Attempt::Succeeded => {
                self.tokens = (self.tokens + TOKEN_RATIO).min(self.max);
                Decision::Retry
            }
            Attempt::Failed => {
                self.tokens = self.tokens.saturating_sub(MILLI);
                if self.throttling() {
                    self.throttled += 1;
                    Decision::Throttle
                } else {
                    Decision::Retry
                }
            }
        }
    }

    /// Whether a retry now would be throttled: tokens at most half the
    /// maximum. With no session the budget is empty and throttles.
    pub fn throttling(&self) -> bool {
        self.tokens <= self.max / 2
    }

    /// Tokens now.
    pub fn tokens(&self) -> f64 {
        self.tokens as f64 / MILLI as f64
    }

    /// Retries throttled so far.
    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    /// Everything at once, for metrics.
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            tokens: self.tokens(),
            max_tokens: self.max as f64 / MILLI as f64,
            sessions: self.sessions,
            throttling: self.throttling(),
            throttled: self.throttled,
        }
    }
}
