//! What each client got: invariants 1 to 3 (sequence, expiry, no leak),
//! precise news of a session a store lost, and the endings the scenario
//! promised ([`Invariant::Expected`]).

use std::time::Duration;

use station_core::client::{Code, Verdict};
use station_core::server::Lookup;
use station_core::testkit::invariants::{self, SentValues};
use station_core::{Reason, Reject};
use station_net::StreamEvent;

use crate::report::{ClientReport, Report};
use crate::scenario::{Expect, RecordFate, Scenario};

use super::{violation, Invariant, Violation};

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

pub(super) fn sequence(
    c: usize,
    client: &ClientReport,
    events: &[&StreamEvent],
    v: &mut Vec<Violation>,
) {
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

pub(super) fn expiry(scenario: &Scenario, c: usize, client: &ClientReport, v: &mut Vec<Violation>) {
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

/// A session whose final acknowledgement arrived is deleted: at once, or,
/// if the store fails the delete, once a retry lands (within a lease) or
/// by its own expiry, so it is judged when the run ends, not when the
/// client finished. The scenario may also promise whether that happens.
pub(super) fn record_fate(
    c: usize,
    report: &Report,
    events: &[&StreamEvent],
    v: &mut Vec<Violation>,
) {
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

pub(super) fn no_leak(report: &Report, v: &mut Vec<Violation>) {
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

/// Clients running when a store lost their sessions end `Verified`, or
/// `NOT_FOUND` with the lost or unknown session's own message, or expired
/// if they were also cut off for about the TTL.
pub(super) fn lost_precisely(scenario: &Scenario, report: &Report, v: &mut Vec<Violation>) {
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
