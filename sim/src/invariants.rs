//! The checks run after every simulation: the five invariants of the
//! simulation's design (sequence, expiry, no leak, one stream, and
//! incarnation fencing seen at the store), precise news of sessions a store
//! lost, "every run ends by itself", the scenario's promised outcomes, the
//! servers' counters against what happened, and every conflict against
//! the store's log.
//!
//! The checker trusts only what it observed: the values servers handed to
//! the transport (observer `Sent` events), the client's running totals
//! after each number, the store's contents, and the fault schedule as
//! applied. The rules themselves are `station_core::testkit::invariants`,
//! shared with the core's harness (which recomputes sums and CRCs with
//! `crc32fast`, not the system's own checksum code); this module gathers
//! the observations per client and words the violations.

use std::fmt;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use station_core::client::{Code, StreamEnd, Verdict};
use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::testkit::invariants::{self, OneStream, SentValues};
use station_core::{ClientId, Reason, Reject};
use station_net::StreamEvent;

use crate::report::{ClientReport, Report, ServerEvent};
use crate::scenario::{Expect, RecordFate, Scenario};

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
    /// the private `counted` check for each comparison).
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

/// Every `Conflict` a server received ([`Report::answers`]) is justified
/// by a write the store logged before it: a record of the same
/// incarnation at a generation newer than the one the operation expected,
/// written by another stream (another holder: a takeover's own write,
/// found again by its repeat, does not count).
fn taken_over_truly(report: &Report, v: &mut Vec<Violation>) {
    for a in &report.answers {
        if a.reply != StoreReply::Conflict {
            continue;
        }
        let (id, incarnation, expected, holder) = match &a.op {
            StoreOp::Update {
                record,
                expect_generation,
                ..
            } => (
                record.client_id,
                record.incarnation,
                *expect_generation,
                Some(record.holder),
            ),
            StoreOp::Delete {
                client_id,
                incarnation,
                generation,
            } => (*client_id, *incarnation, *generation, None),
            StoreOp::Load(_) | StoreOp::Create { .. } => continue,
        };
        let justified = report.store_writes.iter().any(|w| {
            w.at <= a.at
                && matches!(&w.after, Lookup::Live(r)
                    if r.client_id == id
                        && r.incarnation == incarnation
                        && r.generation > expected
                        && holder.is_none_or(|h| r.holder != h))
        });
        if !justified {
            let detail = format!(
                "at {:?} server-{} heard Conflict to {:?}, but no other stream had written a generation after {expected}",
                a.at, a.server, a.op
            );
            v.push(Violation {
                at: Some(a.at),
                ..Violation::new(Invariant::TakenOverTruly, client_of(report, id), detail)
            });
        }
    }
}

/// The servers' counts ([`Report::counted`]: every count of every server
/// and boot, those of servers that later crashed included) against what
/// happened: the store's answers as the servers received them
/// ([`Report::answers`]), the servers' `Attached` events, and each
/// client's streams as it saw them. Where a count can exceed what any
/// client saw — a status or an `Attached` lost on a connection that broke,
/// or sent to a client that had already left the stream — the clients'
/// view is a lower bound only.
///
/// - **completed** = the `Delete`s the store answered `Done` to a server.
///   Every `Delete` follows a final acknowledgement the stream processed
///   (on an attached stream, or in its release once the client hung up),
///   and its `Done` means the session is deleted; the server must count
///   exactly those.
/// - **opened** = the sessions attached at least once (distinct
///   incarnations in the servers' `Attached` events): a session's first
///   attach is always an `Open`'s (a resume needs the token that only an
///   `Attached` carries), also when the stream that created it was gone
///   before its answer and a repeated `Open` attached it. At least the
///   clients that saw `Attached` on an `Open`.
/// - **resumed**: at least the `Attached` clients saw on a `Resume`; at
///   most the servers' `Attached` of generation 2 or more (each resume
///   takes the session over; a repeated `Open` does too, so this is a
///   bound, not an equality).
/// - **expired**: at least the `SESSION_EXPIRED` statuses clients saw; at
///   most the `Loaded(Expired)` and `ExpiredOrReplaced` answers servers received
///   (the only ways a server learns of an expiry; a stream already ended
///   ignores its answer).
/// - **taken over**: at least the `TAKEN_OVER` statuses clients saw; at
///   most the `Conflict` answers servers received.
/// - **rejections**, per gRPC code: at least the statuses with a reason
///   (so made by a server, not the transport) clients saw with that code.
fn counted(report: &Report, v: &mut Vec<Violation>) {
    let got = &report.counted;
    let mut wrong = |what: &str, count: u64, rule: String| {
        violation(
            v,
            Invariant::Counted,
            None,
            format!("servers counted {count} {what}, but {rule}"),
        )
    };
    let answered = |op: fn(&StoreOp) -> bool, reply: fn(&StoreReply) -> bool| {
        report
            .answers
            .iter()
            .filter(|a| op(&a.op) && reply(&a.reply))
            .count() as u64
    };
    let streams = || report.clients.iter().flat_map(|c| c.streams.iter());
    let seen = |reason: Reason| {
        streams()
            .filter(|s| matches!(&s.end, Some(StreamEnd::Status { reason: Some(r), .. }) if *r == reason))
            .count() as u64
    };

    // Every Delete follows a processed final acknowledgement, and a
    // completion is counted once per such stream: when its delete is
    // answered Done, or when the stream gives up retrying it (the record
    // then expires on its own).
    let deleted = answered(
        |op| matches!(op, StoreOp::Delete { .. }),
        |r| *r == StoreReply::Done,
    );
    let completing: BTreeSet<(ClientId, u64, u64)> = report
        .answers
        .iter()
        .filter_map(|a| match a.op {
            StoreOp::Delete {
                client_id,
                incarnation,
                generation,
            } => Some((client_id, incarnation, generation)),
            _ => None,
        })
        .collect();
    if got.completed < deleted {
        wrong(
            "sessions completed",
            got.completed,
            format!("the store answered Done to {deleted} Delete(s) (each after a final acknowledgement)"),
        );
    }
    if got.completed > completing.len() as u64 {
        wrong(
            "sessions completed",
            got.completed,
            format!(
                "only {} stream(s) asked to delete a completed session",
                completing.len()
            ),
        );
    }

    // A session is opened when the store applies its Create (whether or
    // not its stream lives to attach; a repeated Open re-attaching it is
    // a resume).
    let created = answered(
        |op| matches!(op, StoreOp::Create { .. }),
        |r| *r == StoreReply::Done,
    );
    let opened_seen = report
        .clients
        .iter()
        .filter(|c| c.streams.iter().any(|s| !s.resume && s.attached))
        .count() as u64;
    if got.opened != created {
        wrong(
            "sessions opened",
            got.opened,
            format!("the store answered Done to {created} Create(s)"),
        );
    }
    // A client sees its Open attached only if some Create of its session
    // was applied: confirmed to a server, or its answer lost (then the
    // server heard Unavailable, and a repeated Open re-attached it).
    let unconfirmed = answered(
        |op| matches!(op, StoreOp::Create { .. }),
        |r| matches!(r, StoreReply::Unavailable(_)),
    );
    if got.opened + unconfirmed < opened_seen {
        wrong(
            "sessions opened",
            got.opened,
            format!(
                "{opened_seen} client(s) saw their Open attached, and only {unconfirmed} Create(s) went unconfirmed"
            ),
        );
    }

    let resumed_seen = streams().filter(|s| s.resume && s.attached).count() as u64;
    let takeovers = report
        .server_events
        .iter()
        .filter(|e| matches!(e.event, StreamEvent::Attached { generation, .. } if generation >= 2))
        .count() as u64;
    if got.resumed < resumed_seen {
        wrong(
            "sessions resumed",
            got.resumed,
            format!("clients saw {resumed_seen} Resume(s) attached"),
        );
    }
    if got.resumed > takeovers {
        wrong(
            "sessions resumed",
            got.resumed,
            format!("servers attached only {takeovers} stream(s) by a takeover"),
        );
    }

    // Resumes refused as expired: streams that never attached (a stream
    // whose session expired under it is a NOT_FOUND rejection, not this).
    let expired_seen = streams()
        .filter(|s| {
            !s.attached
                && matches!(&s.end, Some(StreamEnd::Status { reason: Some(r), .. }) if *r == Reason::SessionExpired)
        })
        .count() as u64;
    let expired_answers = answered(
        |_| true,
        |r| {
            matches!(
                r,
                StoreReply::ExpiredOrReplaced | StoreReply::Loaded(Lookup::Expired)
            )
        },
    );
    if got.expired < expired_seen {
        wrong(
            "resumes refused as expired",
            got.expired,
            format!("clients saw {expired_seen} SESSION_EXPIRED"),
        );
    }
    if got.expired > expired_answers {
        wrong(
            "resumes refused as expired",
            got.expired,
            format!("the store answered only {expired_answers} time(s) that a session had expired"),
        );
    }

    let taken_seen = seen(Reason::TakenOver);
    let conflicts = answered(|_| true, |r| *r == StoreReply::Conflict);
    if got.taken_over < taken_seen {
        wrong(
            "streams taken over",
            got.taken_over,
            format!("clients saw {taken_seen} TAKEN_OVER"),
        );
    }
    if got.taken_over > conflicts {
        wrong(
            "streams taken over",
            got.taken_over,
            format!("the store answered Conflict only {conflicts} time(s)"),
        );
    }

    let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
    for s in streams() {
        if let Some(StreamEnd::Status {
            code,
            reason: Some(_),
            ..
        }) = &s.end
        {
            *by_code.entry(code_label(*code)).or_default() += 1;
        }
    }
    for (code, n) in by_code {
        let counted = got.rejections.get(&code).copied().unwrap_or(0);
        if counted < n {
            wrong(
                &format!("{code} rejections"),
                counted,
                format!("clients saw {n} {code} status(es) from servers"),
            );
        }
    }
}

/// The `code` label `station_net::metrics` counts rejections under.
fn code_label(code: Code) -> String {
    let name = format!("{code:?}");
    // `NotFound` -> `NOT_FOUND`.
    let mut label = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            label.push('_');
        }
        label.push(ch.to_ascii_uppercase());
    }
    label
}

/// The client (first in plan order) with `id`, for messages.
fn client_of(report: &Report, id: ClientId) -> Option<usize> {
    report.clients.iter().position(|c| c.id == id)
}

/// Every write that changed a stored record obeys the write rule
/// ([`invariants::write_rule`]).
///
/// Two exceptions, where a store lost writes of the session (a failover to
/// a replica behind took its record back to an older generation): the
/// record is removed by the `Delete` of a newer generation of its
/// incarnation, as the store table says (ARCHITECTURE.md §5: "same or
/// older generation"), since that stream completed the session; and a
/// stream of a generation the store lost refreshes a record a later
/// takeover wrote at the same generation number again (the fence compares
/// incarnation and generation, not the holder).
fn incarnation(report: &Report, v: &mut Vec<Violation>) {
    for w in &report.store_writes {
        let id = w.op.client_id();
        let lost_before = report
            .data_losses
            .iter()
            .any(|l| l.at <= w.at && l.live.contains(&id));
        let completes_older = match (&w.before, &w.after, &w.op) {
            (
                Lookup::Live(old),
                Lookup::Missing,
                StoreOp::Delete {
                    incarnation,
                    generation,
                    ..
                },
            ) => old.incarnation == *incarnation && old.generation < *generation,
            _ => false,
        };
        // After a rollback, the takeover that followed may have drawn a
        // generation number again: a stream of the lost generation still
        // passes the fence, which compares incarnation and generation only.
        let generation_again = match (&w.before, &w.after, &w.op) {
            (
                Lookup::Live(old),
                Lookup::Live(new),
                StoreOp::Update {
                    expect_generation, ..
                },
            ) => {
                old.incarnation == new.incarnation
                    && old.generation == new.generation
                    && old.generation == *expect_generation
                    && old.holder != new.holder
            }
            _ => false,
        };
        if lost_before && (completes_older || generation_again) {
            continue;
        }
        let wrong = invariants::write_rule(&w.before, &w.after, &w.op);
        if let Some(detail) = wrong {
            let detail = format!("at {:?}: {detail} (reply {:?})", w.at, w.reply);
            v.push(Violation {
                at: Some(w.at),
                ..Violation::new(Invariant::Incarnation, client_of(report, id), detail)
            });
        }
    }
}

/// Clients running when a store lost their sessions end `Verified`, or
/// `NOT_FOUND` with the lost or unknown session's own message, or expired
/// if they were also cut off for about the TTL.
fn lost_precisely(scenario: &Scenario, report: &Report, v: &mut Vec<Violation>) {
    for loss in &report.data_losses {
        for id in &loss.live {
            for (c, client) in report.clients.iter().enumerate() {
                let running = client.id == *id
                    && client.started_at.is_some_and(|t| t <= loss.at)
                    && client.finished_at.is_none_or(|t| t > loss.at);
                let Some(outcome) = client.outcome.as_ref().filter(|_| running) else {
                    continue;
                };
                let precise = match &outcome.verdict {
                    Verdict::Verified => true,
                    Verdict::Rejected {
                        code: Code::NotFound,
                        reason,
                        ..
                    } => matches!(reason, Some(Reason::SessionLost | Reason::SessionUnknown)),
                    Verdict::Expired(_) | Verdict::LikelyExpired(_) => {
                        client.longest_isolation() >= expiry_threshold(scenario)
                    }
                    _ => false,
                };
                if !precise {
                    let detail = format!(
                        "its session was lost with the store's data at {:?}, and it ended {:?} (longest cut-off {:?}), not NOT_FOUND SESSION_LOST or SESSION_UNKNOWN",
                        loss.at,
                        outcome.verdict,
                        client.longest_isolation()
                    );
                    v.push(Violation {
                        at: Some(loss.at),
                        ..Violation::new(Invariant::LostPrecisely, Some(c), detail)
                    });
                }
            }
        }
    }
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

/// A session's values as sent, keyed by index. A session starts with a
/// generation-1 `Attached` (a `Create`), or with the client's first
/// `Attached` whatever its generation; takeovers keep it.
fn incarnations(c: usize, events: &[&StreamEvent], v: &mut Vec<Violation>) -> Vec<SentValues> {
    let mut sessions: Vec<SentValues> = Vec::new();
    for e in events {
        match e {
            StreamEvent::Attached { generation: 1, .. } => sessions.push(SentValues::default()),
            // A session whose first `Attached` was never sent: its `Create`
            // was applied but the answer lost, and the repeated `Open`
            // took it over.
            StreamEvent::Attached { .. } if sessions.is_empty() => {
                sessions.push(SentValues::default())
            }
            StreamEvent::Attached { .. } | StreamEvent::Completed { .. } => {}
            StreamEvent::Sent {
                index,
                value,
                generation,
                ..
            } => {
                let Some(session) = sessions.last_mut() else {
                    let detail = format!("#{index} sent before any Attached");
                    v.push(Violation {
                        index: Some(*index),
                        ..Violation::new(Invariant::Sequence, Some(c), detail)
                    });
                    continue;
                };
                if let Err(first) = session.sent(*index, *value) {
                    let detail = format!(
                        "#{index} sent as {first:08x} and later as {value:08x} (generation {generation}) in one session"
                    );
                    v.push(Violation {
                        index: Some(*index),
                        ..Violation::new(Invariant::Sequence, Some(c), detail)
                    });
                }
            }
        }
    }
    sessions
}

fn sequence(c: usize, client: &ClientReport, events: &[&StreamEvent], v: &mut Vec<Violation>) {
    let sessions = incarnations(c, events, v);
    let Some(outcome) = &client.outcome else {
        return;
    };
    match outcome.verdict {
        Verdict::Verified => {}
        Verdict::ChecksumMismatch => {
            return violation(
                v,
                Invariant::Sequence,
                Some(c),
                format!(
                    "checksum mismatch: server {:08x?}, client {:08x}",
                    outcome.server_checksum, outcome.client_checksum
                ),
            )
        }
        _ => return,
    }
    let count = client.count;
    let Some(prefixes) = sessions.iter().rev().find_map(|s| s.prefixes(count)) else {
        return violation(
            v,
            Invariant::Sequence,
            Some(c),
            format!("Verified, but no server session sent all {count} numbers"),
        );
    };
    for p in &client.progress {
        if !prefixes.holds(p.next_index, p.sum, p.crc) {
            let (sum, crc) = prefixes.get(p.next_index).unwrap_or_default();
            let detail = format!(
                "after {} numbers (at {:?}) the client held sum {} crc {:08x}; the server's first {} give sum {sum} crc {crc:08x}",
                p.next_index, p.at, p.sum, p.crc, p.next_index,
            );
            return v.push(Violation {
                at: Some(p.at),
                ..Violation::new(Invariant::Sequence, Some(c), detail)
            });
        }
    }
    if !invariants::verified(count, outcome, Some(&prefixes)) {
        let (total, crc) = prefixes.get(count).expect("the prefixes cover the count");
        violation(
            v,
            Invariant::Sequence,
            Some(c),
            format!(
                "Verified with received {}/{count} sum {} crc {:08x} server crc {:08x?}; the server's sequence gives sum {total} crc {crc:08x}",
                outcome.received, outcome.sum, outcome.client_checksum, outcome.server_checksum
            ),
        );
    }
}

/// The longest cut-off that must count as "about the TTL": a client is
/// cut off from just after its last exchange, which can precede the
/// start of the scheduled outage by up to two intervals (a number, then
/// its lost acknowledgement).
fn expiry_threshold(scenario: &Scenario) -> Duration {
    let slack = (scenario.session.interval * 2).saturating_add(scenario.expiry_slack);
    invariants::expiry_threshold(scenario.session.ttl, slack)
}

fn expiry(scenario: &Scenario, c: usize, client: &ClientReport, v: &mut Vec<Violation>) {
    let Some(outcome) = &client.outcome else {
        return;
    };
    let isolation = client.longest_isolation();
    let verdict = &outcome.verdict;
    let justified_expiry = isolation >= expiry_threshold(scenario);
    match verdict {
        Verdict::Verified => {}
        // A server's SESSION_EXPIRED, or the client's own clock: both
        // claim the session is gone, and must be justified alike.
        Verdict::Expired(_) | Verdict::LikelyExpired(_) if justified_expiry => {}
        Verdict::Expired(message) | Verdict::LikelyExpired(message) => violation(
            v,
            Invariant::Expiry,
            Some(c),
            format!(
                "rejected as expired ({message}) but its longest cut-off was {isolation:?} (TTL {:?})",
                scenario.session.ttl
            ),
        ),
        Verdict::Rejected {
            code: Code::NotFound,
            ..
        } if client.expect == Expect::CompleteOrRejected => {}
        _ if client.expect == Expect::Any => {}
        other => violation(
            v,
            Invariant::Expected,
            Some(c),
            format!("ended {other:?}, which no scenario allows"),
        ),
    }
    let expected = match client.expect {
        Expect::Complete => matches!(verdict, Verdict::Verified),
        Expect::Expire => matches!(verdict, Verdict::Expired(_) | Verdict::LikelyExpired(_)),
        Expect::CompleteOrExpire => matches!(
            verdict,
            Verdict::Verified | Verdict::Expired(_) | Verdict::LikelyExpired(_)
        ),
        Expect::CompleteOrRejected => matches!(
            verdict,
            Verdict::Verified
                | Verdict::Expired(_)
                | Verdict::LikelyExpired(_)
                | Verdict::Rejected {
                    code: Code::NotFound,
                    ..
                }
        ),
        Expect::Any => true,
        Expect::ExpiredByServer => {
            *verdict == Verdict::Expired(Reject::Expired(client.id).to_string())
        }
    };
    if !expected {
        violation(
            v,
            Invariant::Expected,
            Some(c),
            format!(
                "expected {:?}, ended {verdict:?} (longest cut-off {isolation:?})",
                client.expect
            ),
        );
    }
}

/// Invariant 4 as the lease bounds it. A stream sends only while its last
/// confirmed lease write was asked for less than two leases ago; a takeover
/// applied after that write makes the next renewal conflict, and the write
/// before it was asked for before the takeover, so an older generation's
/// stream sends no number later than `bound` (two leases) after the newer one
/// attached. What it sends before then are the same values (invariant 1
/// checks them), and it never writes again (invariant 5).
///
/// A store that lost writes of the session (at each of `losses`) may have
/// taken its generation back (a failover to a replica behind), so
/// generations attached before a loss do not bound the streams after it:
/// the rule starts again.
fn one_stream(
    c: usize,
    events: &[&ServerEvent],
    losses: &[Duration],
    bound: Duration,
    v: &mut Vec<Violation>,
) {
    let mut rule = OneStream::new(bound);
    let mut losses = losses.iter().peekable();
    for e in events {
        if losses.next_if(|&&at| at <= e.at).is_some() {
            while losses.next_if(|&&at| at <= e.at).is_some() {}
            rule = OneStream::new(bound);
        }
        match &e.event {
            StreamEvent::Attached { generation, .. } => rule.attached(*generation, e.at),
            StreamEvent::Sent {
                generation, index, ..
            } => {
                // Streams are named by (server, boot).
                if let Err(detail) = rule.sent((e.server, e.boot), *generation, *index, e.at) {
                    v.push(Violation {
                        at: Some(e.at),
                        index: Some(*index),
                        ..Violation::new(Invariant::OneStream, Some(c), detail)
                    });
                }
            }
            StreamEvent::Completed { .. } => {}
        }
    }
}

/// A session whose final acknowledgement arrived is deleted: at once, or,
/// if the store fails the delete, once a retry lands (within a lease) or
/// by its own expiry, so it is judged when the run ends, not when the
/// client finished. The scenario may also promise whether that happens.
fn record_fate(c: usize, report: &Report, events: &[&StreamEvent], v: &mut Vec<Violation>) {
    // Only the client's last session counts.
    let completed = events
        .iter()
        .rev()
        .find(|e| {
            matches!(
                e,
                StreamEvent::Attached { generation: 1, .. } | StreamEvent::Completed { .. }
            )
        })
        .is_some_and(|e| matches!(e, StreamEvent::Completed { .. }));
    let at_done = report.store_at_done.get(c);
    // Judged when the last client finished, unless the delete was only
    // confirmed later (a retry landed): then when the run ended.
    let id = report.clients[c].id;
    let deleted_at = report
        .server_events
        .iter()
        .rev()
        .find(|e| matches!(e.event, StreamEvent::Completed { client_id } if client_id == id))
        .map(|e| e.at);
    let judged = match (deleted_at, report.clients_done_at) {
        (Some(deleted), Some(done)) if deleted > done => report.store_at_end.get(c),
        _ => at_done,
    };
    if let (true, Some(Lookup::Live(record))) = (completed, judged) {
        violation(
            v,
            Invariant::NoLeak,
            Some(c),
            format!("session completed but still live in the store: {record:?}"),
        );
    }
    let verified = report.clients[c]
        .outcome
        .as_ref()
        .is_some_and(|o| o.verdict == Verdict::Verified);
    match report.clients[c].record_fate {
        RecordFate::Any => {}
        RecordFate::DeletedOnAck if !(verified && completed) => violation(
            v,
            Invariant::Expected,
            Some(c),
            "the final acknowledgement should have completed (deleted) the session".into(),
        ),
        RecordFate::LeftToExpire if !verified || completed || !matches!(at_done, Some(Lookup::Live(_))) => {
            violation(
                v,
                Invariant::Expected,
                Some(c),
                format!(
                    "the final acknowledgement was lost: the session should be left to expire (completed {completed}, store {at_done:?})"
                ),
            )
        }
        RecordFate::DeletedOnAck | RecordFate::LeftToExpire => {}
    }
}

fn no_leak(report: &Report, v: &mut Vec<Violation>) {
    if let Some(leak) = invariants::live_leak(report.live_at_end) {
        let live: Vec<usize> = report
            .store_at_end
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, Lookup::Live(_)))
            .map(|(c, _)| c)
            .collect();
        violation(
            v,
            Invariant::NoLeak,
            None,
            format!("{leak} (clients {live:?})"),
        );
    }
    if let Some(leak) = invariants::attached_leak(report.attached_at_end) {
        violation(v, Invariant::NoLeak, None, leak);
    }
}
