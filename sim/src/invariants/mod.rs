//! The checks run after every simulation: the five invariants of the
//! simulation's design (sequence, expiry, no leak, one stream, and
//! incarnation fencing seen at the store), precise news of sessions a store
//! lost, "every run ends by itself", the scenario's promised outcomes, the
//! servers' counters against what happened, and every conflict against
//! the store's log. ARCHITECTURE.md §6 states each of them in full.
//!
//! The checker trusts only what it observed: the values servers handed to
//! the transport (observer `Sent` events), the client's running totals
//! after each number, the store's contents, and the fault schedule as
//! applied. The rules themselves are `station_core::testkit::invariants`,
//! shared with the core's harness (which recomputes sums and CRCs with
//! `crc32fast`, not the system's own checksum code); this module gathers
//! the observations per client and words the violations.
//!
//! - `delivery`: what each client got — invariants 1 to 3 (sequence,
//!   expiry, no leak), precise news of a lost session, and the endings the
//!   scenario promised.
//! - `fencing`: invariants 4 and 5 — one stream under the lease, and the
//!   incarnation fence seen at the store.
//! - `servers`: the servers against what the simulation knows — their
//!   counters, and every conflict against the store's log.

mod delivery;
mod fencing;
mod servers;

use std::fmt;
use std::time::Duration;

use station_core::ClientId;
use station_net::StreamEvent;

use crate::report::{Report, ServerEvent};
use crate::scenario::Scenario;

use delivery::{expiry, lost_precisely, no_leak, record_fate, sequence};
use fencing::{incarnation, one_stream};
use servers::{counted, taken_over_truly};

/// Which rule a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// The run did not end by itself, a host failed, or a task panicked.
    Ends,
    /// 1: a completed client holds exactly the server's sequence and its
    /// checksum verifies.
    Sequence,
    /// 2: expired only if cut off for about the TTL; completes otherwise.
    Expiry,
    /// 3: no session state remains once every client finished or expired.
    NoLeak,
    /// 4: once a newer generation attached, an older stream sends no number
    /// later than two leases after (the bounded overlap of the lease).
    OneStream,
    /// 5: a record is only ever written by a stream of its own
    /// incarnation, and within an incarnation its generation only goes up,
    /// by a takeover (seen at the store: every write that changed it).
    Incarnation,
    /// A client whose session a store lost with its data is told so
    /// precisely: `NOT_FOUND` with reason `SESSION_LOST` or
    /// `SESSION_UNKNOWN`, never "expired" (unless it was also cut off for
    /// the TTL), "taken over", or a silently new sequence.
    LostPrecisely,
    /// The scenario's promised outcome for a client.
    Expected,
    /// The servers' counters (summed over every server and boot) tell what
    /// happened: sessions opened, resumed, completed, resumes refused as
    /// expired, streams taken over and rejections by code (see
    /// the private `servers::counted` check for each comparison).
    Counted,
    /// A store answers `Conflict` (and the stream ends `TAKEN_OVER`) only
    /// when another stream wrote a newer generation of the session: never
    /// for a write of its own repeated after its reply was lost, nor for a
    /// record a store rolled back (its writes were lost: `SESSION_LOST`).
    TakenOverTruly,
    /// Once the scenario's trigger is gone, the run is back to a steady
    /// state within the stated bound: no stream failure, reconnect,
    /// takeover or store failure after it, and numbers at their pace
    /// ([`crate::recovery`]; only for scenarios that state a
    /// [`Recovery`](crate::recovery::Recovery)).
    Recovers,
}

/// One broken rule, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub invariant: Invariant,
    /// The client concerned, if one.
    pub client: Option<usize>,
    /// When it happened, where the check knows (the time `detail` names).
    pub at: Option<Duration>,
    /// The number it is about, where one is (the `#<index>` `detail`
    /// names).
    pub index: Option<u32>,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    /// A broken rule, with neither time nor number.
    pub fn new(invariant: Invariant, client: Option<usize>, detail: String) -> Self {
        Violation {
            invariant,
            client,
            at: None,
            index: None,
            detail,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client {
            Some(c) => write!(f, "[{:?}] client-{c}: {}", self.invariant, self.detail),
            None => write!(f, "[{:?}] {}", self.invariant, self.detail),
        }
    }
}

/// Checks `report` against every invariant. Empty means the run passed.
pub fn check(scenario: &Scenario, report: &Report) -> Vec<Violation> {
    let mut v = Vec::new();
    ends(report, &mut v);
    for (c, client) in report.clients.iter().enumerate() {
        let events = client_events(scenario, report, c);
        sequence(c, client, &events, &mut v);
        expiry(scenario, c, client, &mut v);
        let losses: Vec<Duration> = report
            .data_losses
            .iter()
            .filter(|l| l.live.contains(&report.clients[c].id))
            .map(|l| l.at)
            .collect();
        one_stream(
            c,
            &client_server_events(scenario, report, c),
            &losses,
            scenario.session.lease * 2,
            &mut v,
        );
        record_fate(c, report, &events, &mut v);
    }
    no_leak(report, &mut v);
    incarnation(report, &mut v);
    lost_precisely(scenario, report, &mut v);
    counted(report, &mut v);
    taken_over_truly(report, &mut v);
    if let Some(recovery) = &scenario.recovery {
        for (client, at, detail) in crate::recovery::unsteady(recovery, report) {
            v.push(Violation {
                at: Some(at),
                ..Violation::new(Invariant::Recovers, client, detail)
            });
        }
    }
    v
}

fn violation(v: &mut Vec<Violation>, invariant: Invariant, client: Option<usize>, detail: String) {
    v.push(Violation::new(invariant, client, detail));
}

fn ends(report: &Report, v: &mut Vec<Violation>) {
    if let Some(e) = &report.error {
        violation(v, Invariant::Ends, None, format!("simulation stopped: {e}"));
    }
    for (c, client) in report.clients.iter().enumerate() {
        if client.outcome.is_none() {
            violation(v, Invariant::Ends, Some(c), "never finished (hangs)".into());
        }
    }
    for p in crate::run::panics() {
        violation(v, Invariant::Ends, None, format!("a task panicked: {p}"));
    }
}

/// The client (first in plan order) with `id`, for messages.
fn client_of(report: &Report, id: ClientId) -> Option<usize> {
    report.clients.iter().position(|c| c.id == id)
}

/// Server events about client `c`, in order. When a later client reuses
/// the id, the events from its start on are its own.
fn client_events<'r>(scenario: &Scenario, report: &'r Report, c: usize) -> Vec<&'r StreamEvent> {
    client_server_events(scenario, report, c)
        .into_iter()
        .map(|e| &e.event)
        .collect()
}

/// [`client_events`] with their times and hosts.
fn client_server_events<'r>(
    scenario: &Scenario,
    report: &'r Report,
    c: usize,
) -> Vec<&'r ServerEvent> {
    let id = report.clients[c].id;
    let started = |c: usize| {
        report.clients[c]
            .started_at
            .unwrap_or(scenario.clients[c].start)
    };
    let from = started(c);
    let until = (0..report.clients.len())
        .filter(|&k| report.clients[k].id == id && started(k) > from)
        .map(started)
        .min();
    report
        .server_events
        .iter()
        .filter(|e| e.at >= from && until.is_none_or(|t| e.at < t))
        .filter(|e| match &e.event {
            StreamEvent::Attached { client_id, .. }
            | StreamEvent::Sent { client_id, .. }
            | StreamEvent::Completed { client_id } => *client_id == id,
        })
        .collect()
}
