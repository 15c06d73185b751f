//! Recovery: once a trigger is gone, the run returns to a steady state
//! within a stated bound ([`Recovery`], checked as
//! [`Invariant::Recovers`](crate::Invariant::Recovers)).
//!
//! A store that slows down past the servers' timeout ends streams; their
//! clients resume, and every resume costs the store a load and a takeover.
//! If that extra work keeps the store behind after whatever slowed it is
//! gone, the loop sustains itself: a metastable failure. The invariants
//! say what must hold in any run; this says that the run gets *out*.
//!
//! What counts as a disturbance, all observed (none inferred):
//!
//! - a client's stream that ended other than OK (a status, a broken
//!   connection) or that the client dropped for silence;
//! - a client's connection attempt other than its first (a reconnect);
//! - a server's `Attached` of a generation above 1 (a takeover: a resume,
//!   or an `Open` repeated after its `Attached` was lost);
//! - a store answer `Unavailable` handed to a server (an operation the
//!   store failed, or that timed out).
//!
//! The promise has two parts, both measured from what the trigger left
//! behind: a store that was slow still holds a queue when it is fast
//! again ([`Report::store_backlogs`]: how much work, measured when its
//! speed changed back, and when it was next empty).
//!
//! 1. **The store drains**: its queue is empty within
//!    [`DRAIN_ALLOWANCE`] times the work it held when the trigger ended.
//!    A queue that never empties, or empties only after the clients gave
//!    up, is the loop itself.
//! 2. **Then everything settles**: from the moment it emptied, within
//!    [`Recovery::bound`] (derived from the settings: see
//!    [`Recovery::after_store_slowdown`]) comes the last disturbance, and
//!    after that no running client waits longer than [`Recovery::pace`]
//!    for its next number (once it had its first).
//!
//! A run's recovery time ([`recovery_time`]) is its last disturbance,
//! counted from the trigger's end.

use std::fmt;
use std::time::Duration;

use station_core::client::{Config as ClientConfig, StreamEnd};
use station_core::server::StoreReply;
use station_net::{ServerConfig, StreamEvent};

use crate::report::Report;
use crate::scenario::Scenario;

/// How much longer than the work it held when the trigger ended the store
/// may take to empty its queue: what keeps arriving meanwhile (the healthy
/// load, a sixth of the store's capacity in the overload scenarios, and
/// the resumes and renewals of the recovery) may take up to two thirds of
/// its time. Measured (`sim/tests/scenarios/overload.rs`, 200 seeds): at
/// most 2.0 with the real clients and servers; retries that amplify keep
/// it from emptying until the clients give up (8 times and more).
pub const DRAIN_ALLOWANCE: u32 = 3;

pub use crate::scenario::Recovery;

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trigger ends at {:?}; the store's queue empty within {DRAIN_ALLOWANCE} times its work then, steady {:?} after that, then a number at least every {:?}",
            self.from, self.bound, self.pace
        )
    }
}

/// How a run came out of its trigger ([`Recovery::measure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// When the trigger really ended.
    pub ended: Duration,
    /// The work the store held then, at its normal speed.
    pub drain: Duration,
    /// When its queue was next empty (`None`: never, in the run).
    pub emptied: Option<Duration>,
    /// From when the run must be steady: [`Recovery::bound`] after the
    /// queue emptied, or after the latest it was allowed to.
    pub settled: Duration,
    /// The last disturbance, counted from `ended` (zero: none after it).
    pub recovery_time: Duration,
}

impl Recovered {
    /// The latest the queue was allowed to empty.
    pub fn drain_deadline(&self) -> Duration {
        self.ended + self.drain * DRAIN_ALLOWANCE
    }
}

impl Recovery {
    /// The recovery expected of `scenario` after a store slowdown that
    /// ends at `from`.
    ///
    /// The bound, from the settings the system really runs with (the
    /// clients' defaults, the servers' defaults, the scenario's store and
    /// network), counts from the moment the store's queue is empty again
    /// (so it is healthy: what is asked of it from then on is answered at
    /// once) and adds up the longest each step of a recovery can take:
    ///
    /// 1. The store's give-up (`op_timeout`, twice with a re-send): an
    ///    operation sent before the queue emptied fails no later, and none
    ///    sent after fails. So this is the last store failure, and the
    ///    last end of a stream a store failure ends.
    /// 2. The larger of the admission gate's failure cooldown (new sessions
    ///    are refused that long after the last failed operation, so a
    ///    client opening then is refused once more) and the clients'
    ///    silence allowance (a stream whose lease ran out while its last
    ///    renewal waited sends no number, only `Paused`; a client that did
    ///    not heed it would drop the stream that long after its last
    ///    number).
    /// 3. The longest a client waits before trying again: its largest
    ///    backoff (a throttled retry waits that too), or the servers'
    ///    pushback (`retry_after` plus up to half of it), whichever is
    ///    longer. Its reconnect is the last disturbance it causes: the
    ///    store is healthy by then, so the attempt succeeds.
    /// 4. That attempt's attach: the connection's two handshake legs, the
    ///    request and the answer at the network's largest latency, and two
    ///    store round trips (a load and a takeover) — then the takeover's
    ///    `Attached`, and a pace, after which its numbers flow.
    ///
    /// Plus five turmoil steps (timers fire on step boundaries). No lease
    /// appears: a renewal the store failed is retried a quarter lease later
    /// while the lease lasts, and once the queue is empty that retry
    /// succeeds without a disturbance.
    pub fn after_store_slowdown(scenario: &Scenario, from: Duration) -> Self {
        let client = ClientConfig::default();
        let server = ServerConfig::default();
        let gate = station_core::admission::Config::new(server.store_timeout);
        let store = &scenario.store_net;
        let interval = scenario.session.interval;
        let give_up = store.op_timeout * if store.resend { 2 } else { 1 };
        let silence = interval * client.silence_intervals + client.silence_grace;
        let pushback = server.retry_after + server.retry_after / 2;
        let wait = client.backoff_max.max(pushback);
        let store_trip = store.latency * 2 + store.service;
        let attach = scenario.net.max_latency * 4 + store_trip * 2;
        let pace = Self::pace_of(scenario);
        let steps = scenario.tick * 5;
        Recovery {
            from,
            bound: give_up + gate.failure_cooldown.max(silence) + wait + attach + pace + steps,
            pace,
        }
    }

    /// The longest a client may wait for its next number in a steady
    /// state: an interval, plus the most the network's latency can vary
    /// between two numbers, the servers' timer slack, and a turmoil step at
    /// either end.
    pub fn pace_of(scenario: &Scenario) -> Duration {
        scenario.session.interval
            + scenario
                .net
                .max_latency
                .saturating_sub(scenario.net.min_latency)
            + ServerConfig::default().tick_slack
            + scenario.tick * 2
    }

    /// How `report`'s run came out of the trigger. The trigger ended at
    /// the first change of the store's speed from [`Recovery::from`] on
    /// (else at `from`, with nothing to drain).
    pub fn measure(&self, report: &Report) -> Recovered {
        let (ended, drain, emptied) = report
            .store_backlogs
            .iter()
            .find(|b| b.at >= self.from)
            .map_or((self.from, Duration::ZERO, Some(self.from)), |b| {
                (b.at, b.drain, b.emptied)
            });
        let deadline = ended + drain * DRAIN_ALLOWANCE;
        let settled = emptied.unwrap_or(deadline).min(deadline) + self.bound;
        let recovery_time = disturbances(report)
            .last()
            .map_or(Duration::ZERO, |d| d.at.saturating_sub(ended));
        Recovered {
            ended,
            drain,
            emptied,
            settled,
            recovery_time,
        }
    }
}

/// One observed disturbance: when, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disturbance {
    /// Simulated time.
    pub at: Duration,
    /// What happened, for messages.
    pub what: String,
}

/// Every disturbance of the run (see the module docs), in time order.
pub fn disturbances(report: &Report) -> Vec<Disturbance> {
    let mut all = Vec::new();
    for (c, client) in report.clients.iter().enumerate() {
        for (i, stream) in client.streams.iter().enumerate() {
            if i > 0 {
                all.push(Disturbance {
                    at: stream.at,
                    what: format!(
                        "client-{c} reconnected ({})",
                        if stream.resume { "resume" } else { "open" }
                    ),
                });
            }
            let failed = !matches!(stream.end, Some(StreamEnd::Ok));
            if let (true, Some(at)) = (failed, stream.ended_at) {
                let how = match &stream.end {
                    Some(end) => format!("{end:?}"),
                    None => "dropped for silence".to_string(),
                };
                all.push(Disturbance {
                    at,
                    what: format!("client-{c}'s stream ended: {how}"),
                });
            }
        }
    }
    for e in &report.server_events {
        if let StreamEvent::Attached { generation, .. } = &e.event {
            if *generation > 1 {
                let c = report.clients.iter().position(|c| match &e.event {
                    StreamEvent::Attached { client_id, .. } => *client_id == c.id,
                    _ => false,
                });
                all.push(Disturbance {
                    at: e.at,
                    what: format!(
                        "server-{} took over client-{} at generation {generation}",
                        e.server,
                        c.map_or("?".to_string(), |c| c.to_string())
                    ),
                });
            }
        }
    }
    for a in &report.answers {
        if let StoreReply::Unavailable(why) = &a.reply {
            all.push(Disturbance {
                at: a.at,
                what: format!("server-{} heard Unavailable ({why})", a.server),
            });
        }
    }
    all.sort_by_key(|d| d.at);
    all
}

/// How long after the trigger ended the last disturbance came (zero if
/// none came after it).
pub fn recovery_time(recovery: &Recovery, report: &Report) -> Duration {
    recovery.measure(report).recovery_time
}

/// Disturbances after the run should have settled listed one by one; the
/// rest are counted.
const LISTED: usize = 5;

/// What breaks the recovery promise: a queue that did not empty in time,
/// the disturbances after the run should have settled (the first few, then
/// how many), and each client that waited longer than [`Recovery::pace`]
/// for a number after it (its longest wait). Each with the client it
/// concerns, if one, and when: the trigger's end for the queue, the
/// disturbance's time, the number's arrival.
pub fn unsteady(recovery: &Recovery, report: &Report) -> Vec<(Option<usize>, Duration, String)> {
    let out = recovery.measure(report);
    let mut found: Vec<(Option<usize>, Duration, String)> = Vec::new();
    let deadline = out.drain_deadline();
    if out.emptied.is_none_or(|at| at > deadline) {
        found.push((
            None,
            out.ended,
            format!(
                "the store's queue held {:?} of work when the trigger ended at {:?}, and was empty again {} (allowed: by {deadline:?}, {DRAIN_ALLOWANCE} times that work)",
                out.drain,
                out.ended,
                out.emptied
                    .map_or("never".to_string(), |at| format!("at {at:?}"))
            ),
        ));
    }
    let settled = out.settled;
    let late: Vec<Disturbance> = disturbances(report)
        .into_iter()
        .filter(|d| d.at > settled)
        .collect();
    for d in late.iter().take(LISTED) {
        found.push((
            None,
            d.at,
            format!(
                "at {:?}, {:?} after the trigger ended at {:?}, past {settled:?} when the run should have been steady ({:?} after the store's queue emptied, {}): {}",
                d.at,
                d.at - out.ended,
                out.ended,
                recovery.bound,
                out.emptied
                    .map_or("never".to_string(), |at| format!("at {at:?}")),
                d.what
            ),
        ));
    }
    if late.len() > LISTED {
        let last = &late[late.len() - 1];
        found.push((
            None,
            last.at,
            format!(
                "and {} more disturbances after {settled:?}, the last at {:?}: {}",
                late.len() - LISTED,
                last.at,
                last.what
            ),
        ));
    }
    for (c, client) in report.clients.iter().enumerate() {
        let mut longest: Option<(Duration, Duration)> = None;
        for pair in client.progress.windows(2) {
            let (before, next) = (pair[0].at, pair[1].at);
            if next <= settled {
                continue;
            }
            let waited = next - before.max(settled);
            if waited > recovery.pace && longest.is_none_or(|(w, _)| waited > w) {
                longest = Some((waited, next));
            }
        }
        if let Some((waited, at)) = longest {
            found.push((
                Some(c),
                at,
                format!(
                    "waited {waited:?} for the number it got at {at:?}, after the run should have been steady at {settled:?} (pace {:?})",
                    recovery.pace
                ),
            ));
        }
    }
    found
}
