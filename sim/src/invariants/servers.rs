//! The servers against what the simulation knows: their counters
//! ([`Invariant::Counted`]) and every conflict they heard
//! ([`Invariant::TakenOverTruly`]) against the store's log.

use std::collections::{BTreeMap, BTreeSet};

use station_core::client::{Code, StreamEnd};
use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::{ClientId, Reason};
use station_net::StreamEvent;

use crate::report::Report;

use super::{client_of, violation, Invariant, Violation};

/// The servers' counts ([`Report::counted`]: every count of every server
/// and boot, those of servers that later crashed included) against what
/// happened: the store's answers as the servers received them
/// ([`Report::answers`]), the servers' `Attached` events, and each
/// client's streams as it saw them. Where a count can exceed what any
/// client saw — a status or an `Attached` lost on a connection that broke,
/// or sent to a client that had already left the stream — the clients'
/// view is a lower bound only.
///
/// - **completed**: at least the `Delete`s the store answered `Done` to a
///   server, at most the streams that asked for a delete. Every `Delete`
///   follows a final acknowledgement the stream processed (on an attached
///   stream, or in its release once the client hung up); a stream that
///   gives up retrying its delete still completes (the record then expires
///   on its own).
/// - **opened** = the `Create`s the store answered `Done`: a session is
///   opened when the store applies its `Create`, whether or not its stream
///   lives to attach (a repeated `Open` re-attaching it is a resume). At
///   least the clients that saw `Attached` on an `Open`, less the
///   `Create`s whose answer was lost (`Unavailable`).
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
pub(super) fn counted(report: &Report, v: &mut Vec<Violation>) {
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
    // Distinct streams: one that retried its delete counts once.
    let completing = report
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
        .collect::<BTreeSet<(ClientId, u64, u64)>>()
        .len() as u64;
    within(
        &mut wrong,
        "sessions completed",
        got.completed,
        (
            deleted,
            format!(
                "the store answered Done to {deleted} Delete(s) (each after a final \
                 acknowledgement)"
            ),
        ),
        (
            completing,
            format!("only {completing} stream(s) asked to delete a completed session"),
        ),
    );

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
    within(
        &mut wrong,
        "sessions resumed",
        got.resumed,
        (
            resumed_seen,
            format!("clients saw {resumed_seen} Resume(s) attached"),
        ),
        (
            takeovers,
            format!("servers attached only {takeovers} stream(s) by a takeover"),
        ),
    );

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
    within(
        &mut wrong,
        "resumes refused as expired",
        got.expired,
        (
            expired_seen,
            format!("clients saw {expired_seen} SESSION_EXPIRED"),
        ),
        (
            expired_answers,
            format!("the store answered only {expired_answers} time(s) that a session had expired"),
        ),
    );

    let taken_seen = seen(Reason::TakenOver);
    let conflicts = answered(|_| true, |r| *r == StoreReply::Conflict);
    within(
        &mut wrong,
        "streams taken over",
        got.taken_over,
        (taken_seen, format!("clients saw {taken_seen} TAKEN_OVER")),
        (
            conflicts,
            format!("the store answered Conflict only {conflicts} time(s)"),
        ),
    );

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

/// Reports a count below `floor` or above `ceiling`, each with the rule
/// that bound stands for: most counters are bounded from both sides,
/// by what clients saw and by what the store answered.
fn within(
    wrong: &mut impl FnMut(&str, u64, String),
    what: &str,
    count: u64,
    (floor, below): (u64, String),
    (ceiling, above): (u64, String),
) {
    if count < floor {
        wrong(what, count, below);
    }
    if count > ceiling {
        wrong(what, count, above);
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

/// Every `Conflict` a server received ([`Report::answers`]) is justified
/// by a write the store logged before it: a record of the same
/// incarnation at a generation newer than the one the operation expected,
/// written by another stream (another holder: a takeover's own write,
/// found again by its repeat, does not count).
pub(super) fn taken_over_truly(report: &Report, v: &mut Vec<Violation>) {
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
