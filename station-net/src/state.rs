//! What every stream of one server shares ([`ServerState`]), and what its
//! streams report ([`StreamEvent`]). It sits between `config` below and
//! `driver` and `server` above: the driver reads and counts through it, the
//! server builds it, and it knows neither.
//!
//! The state is small: the store handle, a random source for new sessions,
//! counters, the overload signal, the fault injector and the shutdown token.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use station_core::server::Fresh;
use station_core::{ClientId, Reason, Reject, Secret};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::admission::Admission;
use crate::config::ServerConfig;
use crate::metrics::Counters;
use crate::overload::Overload;
use crate::status::to_status_with_retry;
use crate::store::SessionStore;

/// What a server's streams do, for simulations and tests that check
/// invariants across servers (e.g. that two streams never deliver one
/// session at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// `Attached` was sent.
    Attached {
        /// The session.
        client_id: ClientId,
        /// The incarnation of the session (drawn at Open, kept across
        /// takeovers).
        incarnation: u64,
        /// The generation the stream holds.
        generation: u64,
        /// First index the stream sends.
        next_index: u32,
    },
    /// A number was handed to the transport.
    Sent {
        /// The session.
        client_id: ClientId,
        /// The generation the stream holds.
        generation: u64,
        /// Index of the number.
        index: u32,
        /// Its value.
        value: u32,
    },
    /// The session completed and was deleted.
    Completed {
        /// The session.
        client_id: ClientId,
    },
}

/// Receives [`StreamEvent`]s. Called inline on the stream's task: keep it
/// cheap.
pub type Observer = Arc<dyn Fn(&StreamEvent) + Send + Sync>;

/// What every stream of one server shares: its configuration, store,
/// counters, overload signal, admission, fault injector and shutdown.
pub(crate) struct ServerState<S: SessionStore> {
    pub cfg: ServerConfig,
    /// When the service was made: the origin of tick-slack slots.
    pub epoch: Instant,
    pub observer: Option<Observer>,
    pub store: S,
    rng: Mutex<ChaCha12Rng>,
    pub counters: Counters,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    slots: Arc<Semaphore>,
    faults: Faults,
    pub overload: Arc<Overload>,
    pub admission: Admission,
    /// New sessions refused `OVERLOADED` a second, for the pushback.
    refusals: Mutex<Refusals>,
}

/// Past this many `OVERLOADED` refusals a second, their pushback grows in
/// proportion (see `ServerState::refusal_factor`).
pub const REFUSALS_PER_SECOND: u64 = 1_000;
/// The pushback grows to at most this many times `retry_after`: 10 s at
/// the default 2 s, 15 s with its jitter, a quarter of the 60 s a client
/// waits for a first number before it gives up; longer would turn a
/// session admitted late into one that gives up before its first number.
const MAX_PUSHBACK_FACTOR: f64 = 5.0;

/// Counts refusals by whole seconds since the server started.
#[derive(Debug, Default)]
struct Refusals {
    second: u64,
    this: u64,
    last: u64,
}

impl Refusals {
    /// Counts one refusal at `now`; returns the refusals of the last whole
    /// second or of this one so far, whichever is more.
    fn count(&mut self, epoch: Instant, now: Instant) -> u64 {
        let second = now.saturating_duration_since(epoch).as_secs();
        // A refusal timed before another thread's rolled the second over
        // counts in the current one, rather than rolling back.
        if second > self.second {
            self.last = if second == self.second + 1 {
                self.this
            } else {
                0
            };
            self.this = 0;
            self.second = second;
        }
        self.this += 1;
        self.this.max(self.last)
    }
}

/// Fault injection state, shared by all streams of the server.
struct Faults {
    every: Option<NonZeroU64>,
    offline_for: Duration,
    numbers: AtomicU64,
    offline_until: Mutex<Option<Instant>>,
}

impl<S: SessionStore> ServerState<S> {
    pub(crate) fn new(cfg: ServerConfig, store: S, observer: Option<Observer>) -> Self {
        let faults = Faults {
            every: cfg.fail_every,
            offline_for: cfg.go_offline_for,
            numbers: AtomicU64::new(0),
            offline_until: Mutex::new(None),
        };
        ServerState {
            epoch: crate::clock::now(),
            overload: Arc::new(Overload::new(cfg.shed_when_late, cfg.shed_when_busy)),
            admission: Admission::new(cfg.store_timeout),
            refusals: Mutex::new(Refusals::default()),
            slots: Arc::new(Semaphore::new(cfg.max_streams)),
            rng: Mutex::new(server_rng(cfg.rng_seed)),
            cfg,
            observer,
            store,
            counters: Counters::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            faults,
        }
    }

    pub(crate) fn observe(&self, event: impl FnOnce() -> StreamEvent) {
        if let Some(observer) = &self.observer {
            observer(&event());
        }
    }

    /// Randomness for a new stream: a CSPRNG, because tokens are secrets.
    pub(crate) fn fresh(&self) -> Fresh {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut token = [0u8; Secret::LEN];
        rng.fill_bytes(&mut token);
        Fresh {
            seed: rng.next_u64(),
            token: Secret(token),
            incarnation: rng.next_u64(),
            holder: rng.next_u64(),
        }
    }

    /// Counts a number about to be sent; `Some` if fault injection says it
    /// must fail instead.
    pub(crate) fn inject_fault(&self, now: Instant) -> Option<Reject> {
        let every = self.faults.every?;
        let n = self.faults.numbers.fetch_add(1, Ordering::Relaxed) + 1;
        if n % every.get() != 0 {
            return None;
        }
        if !self.faults.offline_for.is_zero() {
            *self
                .faults
                .offline_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(now + self.faults.offline_for);
        }
        Some(Reject::InjectedFault(
            "every n-th number fails (--fail-every)",
        ))
    }

    /// How long the server stays offline after an injected failure
    /// (`--go-offline-for`); zero when it is not offline.
    pub(crate) fn offline_left(&self, now: Instant) -> Duration {
        let until = self
            .faults
            .offline_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// When a stream that sees shutdown begin at `now` should end: at once
    /// without a drain period, else at a random moment within it.
    pub(crate) fn drain_end(&self, now: Instant) -> Option<Instant> {
        let period = self.cfg.drain_period;
        (!period.is_zero()).then(|| now + self.jitter(Duration::ZERO, period))
    }

    /// Streams holding a place under `--max-streams` now.
    pub(crate) fn held(&self) -> u64 {
        let free = self.slots.available_permits();
        self.cfg.max_streams.saturating_sub(free) as u64
    }

    /// A place under `--max-streams`, if one is free.
    pub(crate) fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// When a client refused for `reject` should come back: the server's
    /// best estimate, sent as `RetryInfo` and `grpc-retry-pushback-ms` with
    /// the UNAVAILABLE and RESOURCE_EXHAUSTED statuses that call for it.
    pub(crate) fn retry_after(&self, reject: &Reject, now: Instant) -> Option<Duration> {
        match reject.reason() {
            // Exactly when the injected outage ends (zero without one).
            Reason::InjectedFault => Some(self.offline_left(now)),
            // This server is going away: resume elsewhere now, spread over
            // one interval so the other servers are not hit all at once.
            Reason::ShuttingDown => Some(self.jitter(Duration::ZERO, self.cfg.session.interval)),
            reason @ (Reason::ServerFull | Reason::Overloaded | Reason::StoreUnavailable) => {
                let mut base = self.cfg.retry_after;
                if reason == Reason::Overloaded {
                    base = base.mul_f64(self.refusal_factor(now));
                }
                Some(self.jitter(base, base / 2))
            }
            _ => None,
        }
    }

    /// How many times `retry_after` an `OVERLOADED` refusal at `now` waits:
    /// the refusals a second over [`REFUSALS_PER_SECOND`], from 1 to
    /// [`MAX_PUSHBACK_FACTOR`]. Each refusal is a stream the server must
    /// accept, read and answer, and at about 10,000 a second (twice its
    /// capacity offered, BENCHMARKS.md) the refused took the core the
    /// admitted needed. With the wait in proportion to the rate, N waiting
    /// clients settle at about 20 × √N refusals a second rather than
    /// N / 2.5 s, until the cap.
    fn refusal_factor(&self, now: Instant) -> f64 {
        let rate = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(self.epoch, now);
        (rate as f64 / REFUSALS_PER_SECOND as f64).clamp(1.0, MAX_PUSHBACK_FACTOR)
    }

    /// `base` plus a uniformly random part of `spread`.
    fn jitter(&self, base: Duration, spread: Duration) -> Duration {
        let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return base;
        }
        let extra = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64()
            % nanos;
        base.saturating_add(Duration::from_nanos(extra))
    }

    /// The status ending a stream for `reject`, with its retry delay.
    pub(crate) fn status(&self, reject: &Reject, now: Instant) -> Status {
        to_status_with_retry(reject, self.retry_after(reject, now))
    }
}

/// The server's generator: ChaCha12, a CSPRNG (tokens are secrets), from
/// the OS, or from `seed` so that a recorded seed (a simulation's, a
/// test's) replays the same tokens and sessions. Named rather than
/// `StdRng`, which rand may change in any release.
fn server_rng(seed: Option<u64>) -> ChaCha12Rng {
    match seed {
        Some(seed) => ChaCha12Rng::seed_from_u64(seed),
        None => ChaCha12Rng::from_os_rng(),
    }
}

#[cfg(test)]
mod tests {
    use station_core::Busy;

    use super::*;
    use crate::store::MemoryStore;

    /// A seed replays the same draws in every release: the generator is
    /// named (ChaCha12 from rand_chacha), and these are its first values
    /// for seed 7. A change here changes every recorded run.
    #[test]
    fn a_seed_replays_the_same_draws() {
        let mut rng = server_rng(Some(7));
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, PINNED);
        // The OS's seed is another stream.
        assert_ne!(server_rng(None).next_u64(), PINNED[0]);
    }

    const PINNED: [u64; 3] = [
        559_256_596_868_823_998,
        5_664_742_077_951_270_790,
        2_631_283_358_781_127_885,
    ];

    #[test]
    fn the_pushback_of_refused_sessions_grows_with_how_many_are_refused() {
        let shared = &ServerState::new(ServerConfig::default(), MemoryStore::default(), None);
        let base = shared.cfg.retry_after;
        let refused = Reject::Overloaded(Busy::Late(Duration::from_millis(300)));
        let at = |s: u64| shared.epoch + Duration::from_secs(s) + Duration::from_millis(500);
        let pushback = |now| shared.retry_after(&refused, now).expect("a pushback");

        // Few refusals: `retry_after` plus up to half again.
        let first = pushback(at(1));
        assert!(first >= base && first < base * 3 / 2, "{first:?}");
        // 5,000 in one second: five times that, for the rest of it...
        for _ in 0..5_000 {
            pushback(at(1));
        }
        let busy = pushback(at(1));
        assert!(busy >= base * 5 && busy < base * 15 / 2, "{busy:?}");
        // ... and the next, whose few refusals are judged by the last.
        let next = pushback(at(2));
        assert!(next >= base * 5, "{next:?}");
        // A quiet second later: back to `retry_after`.
        let quiet = pushback(at(4));
        assert!(quiet < base * 3 / 2, "{quiet:?}");
        // Never more than the cap, however many.
        for _ in 0..100_000 {
            pushback(at(5));
        }
        let most = pushback(at(5));
        let cap = base.mul_f64(MAX_PUSHBACK_FACTOR);
        assert!(most >= cap && most <= cap * 3 / 2, "{most:?}");
        // Other refusals keep the plain pushback.
        let full = shared.retry_after(&Reject::Full(3), at(5)).unwrap();
        assert!(full < base * 3 / 2, "{full:?}");
    }
}
