//! The open throttle ([`OpenThrottle`]): client-side adaptive throttling
//! (Google's SRE book, "Handling Overload"), for `Open`s only.
//!
//! The retry budget ([`RetryBudget`](super::RetryBudget)) paces each
//! retry; it cannot bound how many a crowd sends. A process running
//! thousands of sessions against a full server keeps every waiting session
//! retrying at its backoff's pace: at three times a server's capacity, a
//! load generator's waiting sessions opened 670,000 to 935,000 streams in
//! four minutes, most of them refused opens, and in two runs of six
//! attaches went unanswered long enough for admitted sessions to expire
//! (ARCHITECTURE.md §2, BENCHMARKS.md).
//!
//! So the process counts, over the last [`WINDOW`], the `Open`s its
//! sessions asked to send (`requests`: each held back, and each sent once
//! its fate is known) and those a server attached (`accepts`), and holds
//! back each new one, before it is sent, with probability
//!
//! ```text
//! max(0, (requests − K × accepts − RESERVE) / (requests + 1))
//! ```
//!
//! (as gRPC-Go's adaptive throttler does for its lookups). An open still
//! in flight counts for nothing yet: a process that starts hundreds of
//! sessions at once against an idle server would otherwise hold most of
//! them back for want of accepts that are only on their way. [`K`] is the
//! book's 2: the servers see about twice the opens they take, enough to
//! notice at once when they have room again. Held-back opens count as
//! requests, so the share held back rises until what reaches the servers
//! is about `K` times what they accept, spread over time rather than sent
//! in bursts. [`RESERVE`] keeps one session's own few retries (`station
//! client`) out of it, and lets a process whose servers accepted nothing
//! lately (an outage) probe them about once a second.
//!
//! The book keeps two minutes of history; this keeps [`WINDOW`], ten
//! seconds. The opens sent grow with the accepts in the window, so after
//! an outage the pace grows by about e every 0.6 window: in a test at 700
//! opens a second a process is back at full pace 42 s after the server
//! is (within a minute), where two minutes of history would take about
//! ten, longer than any new session waits.
//!
//! Only `Open`s: a `Resume` is an admitted session, which the servers
//! serve before new ones; holding it back would only risk its expiry. A
//! held-back open waits as a throttled retry does and asks again; it is
//! never sent, and the give-up rules do not change
//! ([`Client::handle_held_back`](super::Client::handle_held_back)).
//!
//! Time and the random draw are inputs, and the arithmetic is in
//! integers, so a simulation replays it exactly.

use std::time::{Duration, Instant};

/// How many opens the servers may see for each one they attached.
pub const K: u64 = 2;
/// Requests a window holds nobody back for.
pub const RESERVE: u64 = 10;
/// How far back the counts go.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The window is kept in this many slices, forgotten one at a time.
const SLICES: usize = 10;
const SLICE: Duration = Duration::from_secs(WINDOW.as_secs() / SLICES as u64);

/// Opens asked for, accepted and held back in one slice of the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    accepts: u64,
    held_back: u64,
}

/// The counts behind the open throttle. Pure bookkeeping: the adapter
/// holds one per process (behind a lock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenThrottle {
    /// The first moment seen: slices are numbered from it.
    origin: Option<Instant>,
    /// The slice `now` falls in, counted from `origin`.
    current: u64,
    /// The window, by slice number modulo `SLICES`.
    slices: [Counts; SLICES],
    /// Opens held back so far.
    held_back: u64,
}

/// The open throttle's state, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThrottleStats {
    /// Opens asked for in the window: held back, or sent and answered.
    pub requests: u64,
    /// Opens a server attached in the window.
    pub accepts: u64,
    /// Opens held back in the window.
    pub held_back_lately: u64,
    /// The chance a new open is held back now, from 0 to 1.
    pub hold_ratio: f64,
    /// Opens held back so far.
    pub held_back: u64,
}

impl OpenThrottle {
    /// No history: nothing is held back.
    pub fn new() -> Self {
        Self::default()
    }

    /// A session asks to send an `Open` at `now`; `draw` is a random
    /// number (any `u64`, uniformly drawn). Says whether to send it
    /// (`true`: report how it went with [`accepted`](Self::accepted) or
    /// [`not_accepted`](Self::not_accepted)) or hold it back (counted as
    /// a request now).
    pub fn ask(&mut self, now: Instant, draw: u64) -> bool {
        self.advance(now);
        let (held, of) = self.odds();
        let hold = draw % of < held;
        if hold {
            let slice = self.slice();
            slice.requests += 1;
            slice.held_back += 1;
            self.held_back += 1;
        }
        !hold
    }

    /// A server attached an `Open` this process sent.
    pub fn accepted(&mut self, now: Instant) {
        self.advance(now);
        let slice = self.slice();
        slice.requests += 1;
        slice.accepts += 1;
    }

    /// An `Open` this process sent ended without an `Attached`: refused,
    /// unanswered in time, or its connection failed.
    pub fn not_accepted(&mut self, now: Instant) {
        self.advance(now);
        self.slice().requests += 1;
    }

    /// Opens held back so far.
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    /// The window's counts as of `now`, for metrics.
    pub fn stats(&mut self, now: Instant) -> ThrottleStats {
        self.advance(now);
        let (held, of) = self.odds();
        let c = self.window();
        ThrottleStats {
            requests: c.requests,
            accepts: c.accepts,
            held_back_lately: c.held_back,
            hold_ratio: held as f64 / of as f64,
            held_back: self.held_back,
        }
    }

    /// The chance a new open is held back: `held` in `of`.
    fn odds(&self) -> (u64, u64) {
        let c = self.window();
        let allowed = c.accepts.saturating_mul(K).saturating_add(RESERVE);
        (c.requests.saturating_sub(allowed), c.requests + 1)
    }

    fn window(&self) -> Counts {
        self.slices.iter().fold(Counts::default(), |sum, c| Counts {
            requests: sum.requests + c.requests,
            accepts: sum.accepts + c.accepts,
            held_back: sum.held_back + c.held_back,
        })
    }

    fn slice(&mut self) -> &mut Counts {
        &mut self.slices[(self.current % SLICES as u64) as usize]
    }

    /// Moves the window to `now`, forgetting the slices it passed. A `now`
    /// before the current slice (callers on several threads read the clock
    /// before taking the lock) counts in the current one.
    fn advance(&mut self, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let at = (now.saturating_duration_since(origin).as_nanos() / SLICE.as_nanos()) as u64;
        if at <= self.current {
            return;
        }
        for n in (self.current + 1..=at).take(SLICES) {
            self.slices[(n % SLICES as u64) as usize] = Counts::default();
        }
        self.current = at;
    }
}
