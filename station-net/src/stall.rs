//! Streams whose client stopped reading keep their clocks.
//!
//! A stream's driver runs when hyper polls its response body (see
//! `driver`), and hyper polls a body only while it can send: once a chunk
//! waits for the client's HTTP/2 flow-control window, hyper waits for the
//! window, not for the body. A client that stops reading behind a window
//! smaller than the session's would stop its stream's clock with it: no
//! tick, no lease renewal, no silence timeout, no shutdown, for as long as
//! it keeps the connection open.
//!
//! So each driver sits in a [`Cell`] that one [`Stalls`] sweeper per server
//! can also reach. Every [`SWEEP_EVERY`] the sweeper looks at the streams
//! hyper has not polled since its last look. One whose driver was due more
//! than [`GRACE`] ago is *stalled*: the sweeper drives it itself, queueing
//! what it yields for hyper to take once the window opens, and keeps doing
//! so at every sweep until hyper polls it again. A stalled stream's ticks
//! and renewals are thus at most a grace and a sweep late the first time
//! and a sweep late after that, and its silence timeout ends it (counted,
//! its record released, its place freed) within the silence timeout plus
//! [`GRACE`] plus [`SWEEP_EVERY`]. Its client hears the end when it reads
//! again: the status follows the numbers already queued for it.
//!
//! The sweeper polls with the waker hyper last gave the stream, so the
//! stream's timer and store answers still wake hyper's task, which takes
//! over again as soon as it can send. At shutdown it polls every stream
//! hyper left idle once, so a stalled stream learns of it too.
//!
//! Costs: per stream, a shared cell (two counters, a mutex only a sweep
//! ever contends, hyper's waker) beside the boxed driver, and a registry
//! slot; per sweep, one pass over the streams reading two atomics each.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::now;

/// How often the sweeper looks for stalled streams.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// How long past its due time a stream hyper has not polled is left to
/// hyper: a busy runtime runs tasks late, and a stream merely late is not
/// stalled (driving it from the sweeper would only move its work).
pub const GRACE: Duration = Duration::from_millis(500);

/// Most messages the sweeper queues for one stream: a window of numbers
/// at its largest, `Attached` and the end (and a `Paused`, which is never
/// queued twice in a row: see [`Drive::is_filler`]).
const MAX_QUEUED: usize = crate::config::MAX_WINDOW as usize + 2;

/// A stream's driver, as the sweeper sees it.
pub(crate) trait Drive: Send {
    /// What it yields for hyper to send.
    type Item: Send;

    /// Runs the stream: its next message, `None` once it has ended.
    fn poll_drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>>;

    /// When it next has something to do, if ever (its timer's deadline),
    /// as time since the server's epoch (see [`Stalls::new`]).
    fn due(&self) -> Option<Duration>;

    /// Whether `item` only says the stream is alive (a `Paused`): queued
    /// after another such, it says nothing new and is dropped, so that a
    /// stream held for the store yields no more than the queue's bound.
    fn is_filler(_item: &Self::Item) -> bool {
        false
    }
}

/// One stream's driver, shared by its response body and the sweeper.
pub(crate) struct Cell<D: Drive> {
    /// Polls by hyper (the sweeper's own are not counted).
    polls: AtomicU64,
    /// The driver's due time as of its last poll ([`stamp`]).
    due: AtomicU64,
    inner: Mutex<Inner<D>>,
}

struct Inner<D: Drive> {
    /// `None` once the body was dropped.
    driver: Option<Pin<Box<D>>>,
    /// What the sweeper drove out of a stalled stream, in order, for hyper.
    queued: VecDeque<D::Item>,
    /// The waker of hyper's task for this stream, last seen.
    waker: Option<Waker>,
}

impl<D: Drive> Cell<D> {
    /// The body's poll: what the sweeper queued first, then the driver.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<D::Item>> {
        self.polls.fetch_add(1, Relaxed);
        let mut inner = lock(&self.inner);
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        if let Some(item) = inner.queued.pop_front() {
            return Poll::Ready(Some(item));
        }
        let Some(driver) = inner.driver.as_mut() else {
            return Poll::Ready(None);
        };
        let poll = driver.as_mut().poll_drive(cx);
        self.due.store(stamp(driver.due()), Relaxed);
        poll
    }

    /// The body is gone: drops the driver (which settles its session)
    /// and lets go of hyper's task.
    pub(crate) fn close(&self) {
        let (driver, waker) = {
            let mut inner = lock(&self.inner);
            (inner.driver.take(), inner.waker.take())
        };
        drop((driver, waker)); // Outside the lock: settling may take a while.
    }

    /// Drives the stream from the sweeper until it waits again. False if
    /// hyper holds it now (then it is not stalled) or it is gone.
    fn drive(&self) -> bool {
        let Ok(mut guard) = self.inner.try_lock() else {
            return false;
        };
        let inner = &mut *guard;
        let Some(driver) = inner.driver.as_mut() else {
            return false;
        };
        let waker = inner.waker.clone().unwrap_or_else(|| Waker::noop().clone());
        let mut cx = Context::from_waker(&waker);
        // The session sends at most its window beyond the client's
        // acknowledgement, then waits; but a client may acknowledge what it
        // never read, so the queue has a bound of its own (beyond it, the
        // stream waits on flow control, as it would without the sweeper).
        while inner.queued.len() < MAX_QUEUED {
            match driver.as_mut().poll_drive(&mut cx) {
                Poll::Ready(Some(item))
                    if D::is_filler(&item) && inner.queued.back().is_some_and(D::is_filler) => {}
                Poll::Ready(Some(item)) => inner.queued.push_back(item),
                Poll::Ready(None) => {
                    // Ended: what is left for hyper is queued, and the
                    // driver (its session, its span, its hold on the
                    // server) need not wait for a client that may never
                    // read again.
                    let driver = inner.driver.take();
                    self.due.store(u64::MAX, Relaxed);
                    drop(guard);
                    drop(driver);
                    return true;
                }
                Poll::Pending => break,
            }
        }
        self.due.store(stamp(driver.due()), Relaxed);
        true
    }
}

/// Every stream of one server, for the sweeper.
pub(crate) struct Stalls<D: Drive> {
    /// The origin of the drivers' due times.
    epoch: Instant,
    entries: Mutex<Vec<Entry<D>>>,
    /// Whether the sweeper runs (it starts with the first stream).
    started: AtomicBool,
}

struct Entry<D: Drive> {
    cell: Arc<Cell<D>>,
    /// `cell.polls` at the last sweep.
    seen: u64,
    /// Driven by the sweeper at the last sweep, and not polled since.
    stalled: bool,
}

impl<D: Drive> Stalls<D> {
    /// No streams yet; due times count from `epoch`.
    pub(crate) fn new(epoch: Instant) -> Self {
        Stalls {
            epoch,
            entries: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
        }
    }
}

impl<D: Drive + 'static> Stalls<D> {
    /// Registers a new stream's driver, starting the sweeper with the
    /// first one (it needs the runtime, which a stream's creation has).
    pub(crate) fn register(
        self: &Arc<Self>,
        driver: D,
        shutdown: &CancellationToken,
    ) -> Arc<Cell<D>> {
        let cell = Arc::new(Cell {
            polls: AtomicU64::new(0),
            // Not due until hyper's first poll says when.
            due: AtomicU64::new(u64::MAX),
            inner: Mutex::new(Inner {
                driver: Some(Box::pin(driver)),
                queued: VecDeque::new(),
                waker: None,
            }),
        });
        lock(&self.entries).push(Entry {
            cell: cell.clone(),
            seen: 0,
            stalled: false,
        });
        if !self.started.swap(true, Relaxed) {
            // Unconstrained: one sweep may drive thousands of streams, and
            // tokio's per-poll budget (128 timer and channel polls) would
            // otherwise make all but the first few see their timers as
            // pending until the next sweep.
            let sweeper = sweep_until_gone(Arc::downgrade(self), shutdown.clone());
            tokio::spawn(tokio::task::unconstrained(sweeper));
        }
        cell
    }

    /// One sweep at `now`: drives the stalled streams (and, the first time
    /// shutdown is seen, every stream: one that stalled since the last
    /// sweep is not idle yet, but hyper cannot tell it). How many it drove.
    pub(crate) fn sweep(&self, now: Instant, shutdown_news: bool) -> usize {
        let now = stamp(Some(now.saturating_duration_since(self.epoch)));
        let grace = u64::try_from(GRACE.as_nanos()).unwrap_or(u64::MAX);
        let mut due = Vec::new();
        lock(&self.entries).retain_mut(|entry| {
            // Only the sweeper's own handle left: the stream is gone.
            if Arc::strong_count(&entry.cell) == 1 {
                return false;
            }
            let polls = entry.cell.polls.load(Relaxed);
            let idle = polls == entry.seen;
            entry.seen = polls;
            if !idle {
                entry.stalled = false;
            }
            let late = idle && now >= entry.cell.due.load(Relaxed).saturating_add(grace);
            if entry.stalled || late || shutdown_news {
                // Shutdown alone does not make a stream stalled: hyper's
                // task, woken by it, polls the ones that can send.
                entry.stalled = entry.stalled || late;
                due.push(entry.cell.clone());
            }
            true
        });
        // Outside the registry's lock: new streams need it.
        due.iter().filter(|cell| cell.drive()).count()
    }
}

/// The sweeper: sweeps every [`SWEEP_EVERY`] until the server is gone.
async fn sweep_until_gone<D: Drive + 'static>(
    stalls: Weak<Stalls<D>>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saw_shutdown = false;
    loop {
        every.tick().await;
        let Some(stalls) = stalls.upgrade() else {
            return;
        };
        let news = !saw_shutdown && shutdown.is_cancelled();
        saw_shutdown |= news;
        let driven = stalls.sweep(now(), news);
        if driven > 0 {
            tracing::debug!(driven, "drove streams whose clients stopped reading");
        }
    }
}

/// A time since the epoch as nanoseconds, for an atomic; `u64::MAX` for
/// never.
fn stamp(since_epoch: Option<Duration>) -> u64 {
    since_epoch.map_or(u64::MAX, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver that yields `ready` items, then waits (or ends, once
    /// `ends`); due at `due`.
    struct Fake {
        ready: u32,
        ends: bool,
        due: Option<Duration>,
        drives: Arc<AtomicU64>,
    }

    impl Drive for Fake {
        type Item = u32;

        fn poll_drive(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u32>> {
            self.drives.fetch_add(1, Relaxed);
            match self.ready {
                0 if self.ends => Poll::Ready(None),
                0 => Poll::Pending,
                n => {
                    self.ready -= 1;
                    Poll::Ready(Some(n))
                }
            }
        }

        fn due(&self) -> Option<Duration> {
            self.due
        }
    }

    fn poll(cell: &Cell<Fake>) -> Poll<Option<u32>> {
        cell.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn only_streams_hyper_left_idle_past_their_due_time_are_driven() {
        let epoch = now();
        let stalls = Arc::new(Stalls::new(epoch));
        let shutdown = CancellationToken::new();
        let drives = Arc::new(AtomicU64::new(0));
        let due = Duration::from_secs(1);
        let fake = Fake {
            ready: 0,
            ends: false,
            due: Some(due),
            drives: drives.clone(),
        };
        let cell = stalls.register(fake, &shutdown);
        assert_eq!(poll(&cell), Poll::Pending);

        // Polled by hyper since the last sweep, or not yet late: left alone.
        assert_eq!(stalls.sweep(epoch + due + GRACE, false), 0);
        assert_eq!(stalls.sweep(epoch + due, false), 0);
        // Idle and late: driven, and what it yields is queued in order.
        lock(&cell.inner).driver.as_mut().unwrap().ready = 2;
        assert_eq!(stalls.sweep(epoch + due + GRACE, false), 1);
        assert_eq!(drives.load(Relaxed), 4, "hyper's poll, then three");
        // Still idle: driven at every sweep, due or not.
        assert_eq!(stalls.sweep(epoch, false), 1);
        // hyper takes the queue first, then polls the driver again.
        assert_eq!(poll(&cell), Poll::Ready(Some(2)));
        assert_eq!(poll(&cell), Poll::Ready(Some(1)));
        assert_eq!(poll(&cell), Poll::Pending);
        assert_eq!(stalls.sweep(epoch, false), 0, "hyper polls it again");
        // Shutdown reaches every idle stream once.
        assert_eq!(stalls.sweep(epoch, true), 1);
        assert_eq!(stalls.sweep(epoch, false), 0);
        // A dropped body leaves the registry at the next sweep.
        cell.close();
        drop(cell);
        assert_eq!(stalls.sweep(epoch + due + GRACE, true), 0);
        assert!(lock(&stalls.entries).is_empty());
    }

    #[tokio::test]
    async fn a_stream_that_ends_while_stalled_lets_go_of_its_driver() {
        let epoch = now();
        let stalls = Arc::new(Stalls::new(epoch));
        let fake = Fake {
            ready: 0,
            ends: false,
            due: Some(Duration::ZERO),
            drives: Arc::default(),
        };
        let cell = stalls.register(fake, &CancellationToken::new());
        assert_eq!(poll(&cell), Poll::Pending);
        assert_eq!(stalls.sweep(epoch, false), 0);
        {
            let mut inner = lock(&cell.inner);
            let driver = inner.driver.as_mut().unwrap();
            driver.ready = 1;
            driver.ends = true;
        }
        assert_eq!(stalls.sweep(epoch + GRACE, false), 1);
        assert!(lock(&cell.inner).driver.is_none(), "dropped at its end");
        // hyper still gets what was queued, then the end.
        assert_eq!(poll(&cell), Poll::Ready(Some(1)));
        assert_eq!(poll(&cell), Poll::Ready(None));
    }
}
