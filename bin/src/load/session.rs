//! One process's part of a load run: sessions started on the ramp's
//! schedule, each with a [`SessionLog`] kept from the driver's events, and
//! the [`Tally`] made of them when the last ends or `--duration` does.
//! [`measure_part`] reads as its steps: connections ([`Connections`]), the
//! timeline's sampler, starting the sessions, collecting their outcomes,
//! then the tally.
//!
//! # What the report's words mean
//!
//! - **Admitted**: some server attached the session (sent `Attached`) at
//!   least once. **Refused at the door**: never admitted, and at least one
//!   of its `Open`s was refused RESOURCE_EXHAUSTED before any `Attached`.
//!   **Held back only**: never admitted, never refused by a server, and at
//!   least one of its `Open`s held back by this process's open throttle
//!   (whatever became of those it sent: unanswered, perhaps).
//!   **Failed after admission**: admitted, not completed (it ended
//!   unverified, or was still running when `--duration` ended): a promise
//!   the server broke, unless it was only admitted too late to finish
//!   (**admitted, unfinished**: those still running, reported apart).
//! - **First schedule**: the session's first `Attached`, at time `t0` with
//!   next index `i0` and interval `d`, makes number `i` due at
//!   `t0 + (i - i0) * d`. **Lateness** of every number is measured against
//!   it, never against a later `Attached`: a server restarts its ticks at
//!   each attach, so a schedule restarted there would forget every
//!   reconnect's gap.
//! - **Stall** of a completed session: how late its final number arrived
//!   on its first schedule, i.e. finishing time minus scheduled finishing
//!   time. It adds up every moment the session spent behind: reconnect
//!   gaps and backoff, refused or slow resumes, server delays.
//! - **Session-seconds**: the seconds of schedule the servers carried. A
//!   completed session counts `(count - i0) * d`, the length of its
//!   schedule (so at 1 s, one per number, as many as a clean run
//!   delivers); an admitted session that did not complete counts the time
//!   from its first `Attached` to its end (or the run's), at most that; a
//!   session never admitted counts nothing. Costs per session-second
//!   divide by this, not by numbers delivered, which undercounts the
//!   sessions a struggling server still carries.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use station_core::client::{
    Client, Code, Config as ClientConfig, Outcome, Request, StreamEnd, Verdict,
};
use station_core::ClientId;
use station_net::client::{ChannelOptions, DriverOptions, Endpoints, Event};
use tokio::task::JoinSet;

use super::tally::{end_kind, lateness, micros, pairs, proc_stats, Measurements, Tally};
use super::Part;
use crate::LoadArgs;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One session's record, updated from its driver's events.
#[derive(Debug)]
pub struct SessionLog {
    started: Instant,
    /// The first `Attached`: when, at which index, with which interval.
    schedule: Option<(Instant, u32, Duration)>,
    /// The current stream's `Attached`, likewise.
    stream_schedule: Option<(Instant, u32, Duration)>,
    /// Streams opened so far.
    streams: u32,
    /// Of which began with `Open`.
    opens: u32,
    /// `Open`s refused RESOURCE_EXHAUSTED before any `Attached`.
    door_refusals: u32,
    /// `Open`s this process's open throttle held back (never sent).
    held_back: u32,
    /// The current stream began with `Open`.
    opening: bool,
    /// The current stream has attached.
    attached: bool,
    /// Counted as waiting in the timeline: no stream attached since the
    /// session started or its last stream ended.
    waiting: bool,
    /// Numbers delivered so far.
    received: u32,
    /// Set when the final number arrives.
    stall: Option<Duration>,
    /// When the driver returned, if it did before the deadline.
    ended: Option<Instant>,
}

impl SessionLog {
    pub fn new(started: Instant) -> Self {
        SessionLog {
            started,
            schedule: None,
            stream_schedule: None,
            streams: 0,
            opens: 0,
            door_refusals: 0,
            held_back: 0,
            opening: false,
            attached: false,
            waiting: false,
            received: 0,
            stall: None,
            ended: None,
        }
    }

    /// Records `event`, seen at `now`; `client` is the session's state
    /// after the driver handled it.
    pub fn observe(
        &mut self,
        m: &Mutex<Measurements>,
        now: Instant,
        event: Event<'_>,
        client: &Client,
    ) {
        match event {
            Event::Connecting { request, .. } => {
                self.streams += 1;
                self.attached = false;
                self.stream_schedule = None;
                self.opening = matches!(request, Request::Open { .. });
                self.opens += u32::from(self.opening);
                let mut m = lock(m);
                if self.streams > 1 {
                    m.reconnects += 1;
                    m.timeline.reconnect(now);
                }
                self.wait(&mut m, now);
            }
            Event::Attached {
                next_index,
                interval,
                ..
            } => {
                self.attached = true;
                self.schedule.get_or_insert((now, next_index, interval));
                self.stream_schedule = Some((now, next_index, interval));
                if std::mem::take(&mut self.waiting) {
                    lock(m).timeline.stops_waiting();
                }
            }
            Event::HeldBack { .. } => {
                self.held_back += 1;
                self.wait(&mut lock(m), now);
            }
            // Counted by the server (`station_pauses_sent_total`); the
            // stall shows in the numbers' lateness.
            Event::Paused { .. } => {}
            Event::Silent { .. } => {
                let mut m = lock(m);
                if self.attached {
                    m.silent_drops += 1;
                } else {
                    m.attach_timeouts += 1;
                }
                m.timeline.stream_end(now);
                self.wait(&mut m, now);
            }
            Event::Failed { end, .. } => {
                let exhausted = matches!(
                    end,
                    StreamEnd::Status {
                        code: Code::ResourceExhausted,
                        ..
                    }
                );
                if exhausted && self.opening && !self.attached {
                    self.door_refusals += 1;
                }
                let mut m = lock(m);
                m.exhausted += u64::from(exhausted);
                *m.stream_ends.entry(end_kind(end)).or_default() += 1;
                m.timeline.stream_end(now);
                self.wait(&mut m, now);
            }
            Event::Number { index } => {
                // A duplicate, or a number the client refused, leaves its
                // count where it was.
                if client.received() <= self.received {
                    return;
                }
                let first = self.received == 0;
                self.received = client.received();
                let mut m = lock(m);
                m.numbers += 1;
                if first {
                    m.first_number
                        .saturating_record(micros(now.saturating_duration_since(self.started)));
                }
                if let Some((at, next, interval)) = self.schedule {
                    let late = lateness(at, next, interval, index, now);
                    m.lateness.saturating_record(micros(late));
                    let stream_late = self.stream_schedule.map_or(late, |(at, next, interval)| {
                        lateness(at, next, interval, index, now)
                    });
                    m.timeline.number(now, late, stream_late);
                    if self.received == client.count() {
                        self.stall = Some(late);
                    }
                }
                if self.received == client.count() {
                    m.timeline.completed(now);
                }
            }
        }
    }

    /// Counts the session as waiting from `now`, unless it already is.
    fn wait(&mut self, m: &mut Measurements, now: Instant) {
        if !std::mem::replace(&mut self.waiting, true) {
            m.timeline.waits(now);
        }
    }

    /// The session's driver returned at `now`.
    fn end(&mut self, m: &Mutex<Measurements>, now: Instant) {
        self.ended = Some(now);
        if std::mem::take(&mut self.waiting) {
            lock(m).timeline.stops_waiting();
        }
    }

    /// Seconds of its schedule this session was carried (module docs),
    /// for a session of `count` numbers that ended at `end`.
    fn session_seconds(&self, count: u32, completed: bool, end: Instant) -> f64 {
        let Some((at, next, interval)) = self.schedule else {
            return 0.0;
        };
        let scheduled = interval.as_secs_f64() * f64::from(count.saturating_sub(next));
        if completed {
            scheduled
        } else {
            end.saturating_duration_since(at)
                .as_secs_f64()
                .min(scheduled)
        }
    }
}

/// Runs this process's part of the load: sessions `i` with
/// `i % part.of == part.index`, each started when the whole run's schedule
/// says (session `i` at `(i + 1) / --ramp-up-rate`), first on endpoint
/// `i mod n` of the n given (then failing over to the next ones).
pub async fn measure_part(args: &LoadArgs, part: Part) -> Result<Tally, String> {
    let mut connections = Connections::new(args)?;
    let measurements = Arc::new(Mutex::new(Measurements::new()));
    let ticker = sample_timeline(measurements.clone());
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let t0 = tokio::time::Instant::now();
    let deadline = t0 + args.duration;
    let mine: Vec<usize> = (part.index..args.sessions)
        .step_by(part.of.max(1))
        .collect();
    // One retry budget for every session of this process, as gRFC A6
    // keeps one per channel: when many streams fail, retries are paced as
    // a whole instead of each session retrying on its own.
    let driver = DriverOptions::default();
    let (logs, tasks) = start_sessions(
        args,
        &mine,
        &mut connections,
        &measurements,
        &driver,
        t0,
        deadline,
    )
    .await?;
    let outcomes = collect_outcomes(tasks, logs.len(), deadline).await?;
    let elapsed = started.elapsed();
    ticker.abort();
    // Sessions still running were cut off at the deadline.
    let stop = deadline.into_std().min(Instant::now());
    let mut tally = tally_sessions(args.count, mine.len(), &logs, &outcomes, stop);
    let m = lock(&measurements);
    add_measurements(&mut tally, &m, &driver, elapsed, cpu_before);
    Ok(tally)
}

/// The connections a process's sessions use, made as they are first
/// needed.
struct Connections<'a> {
    args: &'a LoadArgs,
    /// The shared connections made so far, by first endpoint and
    /// connection (see [`Connections::for_session`]).
    pools: BTreeMap<(usize, usize), Endpoints>,
}

impl<'a> Connections<'a> {
    /// Fails on a bad endpoint now, not in every session.
    fn new(args: &'a LoadArgs) -> Result<Self, String> {
        let connections = Connections {
            args,
            pools: BTreeMap::new(),
        };
        connections.connection(0, 0)?;
        Ok(connections)
    }

    /// How many endpoints sessions are spread over.
    fn endpoints(&self) -> usize {
        self.args.endpoint.len().max(1)
    }

    /// Connection `k` binds source address 127.0.0.(1 + k mod N), or lets
    /// the kernel choose when there is one. The driver starts on the first
    /// endpoint of its list, so a session meant to start on endpoint `f`
    /// gets the list rotated to begin there.
    fn connection(&self, k: usize, first: usize) -> Result<Endpoints, String> {
        let source_addresses = self.args.source_addresses.max(1);
        let opts = ChannelOptions {
            local_address: (source_addresses > 1).then(|| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    0,
                    1 + (k % usize::from(source_addresses)) as u8,
                ))
            }),
            ..ChannelOptions::default()
        };
        let mut order = self.args.endpoint.clone();
        order.rotate_left(first % self.endpoints());
        Endpoints::tcp(&order, &opts).map_err(|e| e.to_string())
    }

    /// Session `i`'s connection. Multiplexed: session `i` (first endpoint
    /// `f = i mod n`) shares pool `(f, i / n mod --connections)`, made when
    /// first needed: each endpoint gets --connections connections for the
    /// sessions starting there (pools connect lazily, to the other
    /// endpoints only on failover). One per session: each session makes
    /// its own.
    fn for_session(&mut self, i: usize) -> Result<Endpoints, String> {
        let n = self.endpoints();
        let first = i % n;
        if self.args.connection_per_session {
            return self.connection(i, first);
        }
        let k = (i / n) % self.args.connections.max(1);
        Ok(match self.pools.get(&(first, k)) {
            Some(shared) => shared.clone(),
            None => {
                let made = self.connection(k * n + first, first)?;
                self.pools.entry((first, k)).or_insert(made).clone()
            }
        })
    }
}

/// Puts every second on the timeline, also one in which nothing happens
/// (every session waiting, or none started yet); runs until aborted.
fn sample_timeline(m: Arc<Mutex<Measurements>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            lock(&m).timeline.tick(Instant::now());
        }
    })
}

/// The CPU time this process has used, in seconds (0 where `/proc`
/// cannot say).
fn own_cpu_seconds() -> f64 {
    proc_stats(std::process::id()).map_or(0.0, |p| p.cpu_seconds)
}

/// A session's task: its slot among the logs, and how it ended.
type Sessions = JoinSet<(usize, Outcome)>;

/// Starts the sessions in `mine`, each when the ramp (counted from `t0`)
/// says, until `deadline`; each runs in a task of its own and keeps a
/// [`SessionLog`].
/// Returns the logs of those started, by slot, and their tasks.
async fn start_sessions(
    args: &LoadArgs,
    mine: &[usize],
    connections: &mut Connections<'_>,
    measurements: &Arc<Mutex<Measurements>>,
    driver: &DriverOptions,
    t0: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> Result<(Vec<Arc<Mutex<SessionLog>>>, Sessions), String> {
    let mut tasks = JoinSet::new();
    let ramp =
        (args.ramp_up_rate > 0).then(|| Duration::from_secs_f64(1.0 / args.ramp_up_rate as f64));
    let mut logs: Vec<Arc<Mutex<SessionLog>>> = Vec::with_capacity(mine.len());
    for &i in mine {
        if let Some(gap) = ramp {
            tokio::time::sleep_until(t0 + gap.mul_f64((i + 1) as f64)).await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let endpoints = connections.for_session(i)?;
        let slot = logs.len();
        let log = Arc::new(Mutex::new(SessionLog::new(Instant::now())));
        logs.push(log.clone());
        let measurements = measurements.clone();
        let count = args.count;
        let seed = args.seed.wrapping_add(i as u64);
        let driver = driver.clone();
        tasks.spawn(async move {
            let id = ClientId::from_random_bytes(rand::random());
            let now = tokio::time::Instant::now().into_std();
            let client = Client::new(now, ClientConfig::default(), id, count, seed)
                .expect("count is validated by clap");
            let observe = |event: Event<'_>, client: &Client| {
                lock(&log).observe(&measurements, Instant::now(), event, client);
            };
            let outcome = station_net::client::run(&endpoints, &driver, client, observe).await;
            lock(&log).end(&measurements, Instant::now());
            (slot, outcome)
        });
    }
    Ok((logs, tasks))
}

/// Waits for the `started` sessions until the deadline, then aborts those
/// still running. Returns each slot's outcome, `None` where it was cut off.
async fn collect_outcomes(
    mut tasks: Sessions,
    started: usize,
    deadline: tokio::time::Instant,
) -> Result<Vec<Option<Outcome>>, String> {
    let mut outcomes: Vec<Option<Outcome>> = (0..started).map(|_| None).collect();
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((slot, outcome)))) => outcomes[slot] = Some(outcome),
            Ok(Some(Err(e))) => return Err(format!("a session task failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
    Ok(outcomes)
}

/// What became of each session (the words of the module docs), for
/// `offered` sessions of `count` numbers, of which `logs` started; those
/// still running count until `stop`.
fn tally_sessions(
    count: u32,
    offered: usize,
    logs: &[Arc<Mutex<SessionLog>>],
    outcomes: &[Option<Outcome>],
    stop: Instant,
) -> Tally {
    let mut tally = Tally {
        offered,
        started: logs.len(),
        ..Tally::default()
    };
    let mut stall = super::tally::histogram();
    let mut opens = super::tally::histogram();
    for (log, outcome) in logs.iter().zip(outcomes) {
        let log = lock(log);
        let completed = outcome
            .as_ref()
            .is_some_and(|o| o.verdict == Verdict::Verified);
        let admitted = log.schedule.is_some();
        tally.finished += usize::from(outcome.is_some());
        tally.completed += usize::from(completed);
        tally.admitted += usize::from(admitted);
        tally.failed_after_admission += usize::from(admitted && !completed);
        tally.admitted_unfinished += usize::from(admitted && outcome.is_none());
        tally.refused_at_door += usize::from(!admitted && log.door_refusals > 0);
        tally.held_back_only +=
            usize::from(!admitted && log.door_refusals == 0 && log.held_back > 0);
        tally.opens_sent += u64::from(log.opens);
        tally.opens_held_back += u64::from(log.held_back);
        tally.session_seconds += log.session_seconds(count, completed, log.ended.unwrap_or(stop));
        tally.interval = tally.interval.or(log.schedule.map(|(_, _, i)| i));
        if completed {
            opens.saturating_record(u64::from(log.opens).max(1));
            if let Some(s) = log.stall {
                stall.saturating_record(micros(s));
            }
        }
        if let Some(o) = outcome.as_ref().filter(|_| !completed) {
            tally
                .failures
                .push(format!("{}: {:?}", o.client_id, o.verdict));
        }
    }
    tally.stall = pairs(&stall);
    tally.opens_per_completed = pairs(&opens);
    tally
}

/// Adds what every session's events counted together (`m`), the retry
/// budget's throttling, and the process's time: `elapsed`, and the CPU
/// time used since `cpu_before`.
fn add_measurements(
    tally: &mut Tally,
    m: &Measurements,
    driver: &DriverOptions,
    elapsed: Duration,
    cpu_before: f64,
) {
    tally.numbers = m.numbers;
    tally.reconnects = m.reconnects;
    tally.silent_drops = m.silent_drops;
    tally.attach_timeouts = m.attach_timeouts;
    tally.exhausted = m.exhausted;
    tally.retries_throttled = driver.budget.stats().throttled;
    tally.stream_ends = m.stream_ends.clone();
    tally.elapsed = elapsed;
    tally.cpu_seconds = own_cpu_seconds() - cpu_before;
    tally.lateness = pairs(&m.lateness);
    tally.first_number = pairs(&m.first_number);
    tally.timeline = m.timeline.tally();
}
