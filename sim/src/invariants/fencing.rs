//! Invariants 4 and 5: one stream at a time under the lease, and the
//! incarnation fence as the store's write log shows it.

use std::time::Duration;

use station_core::server::{Lookup, StoreOp};
use station_core::testkit::invariants::{self, OneStream};
use station_net::StreamEvent;

use crate::report::{Report, ServerEvent};

use super::{client_of, Invariant, Violation};

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
pub(super) fn one_stream(
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
pub(super) fn incarnation(report: &Report, v: &mut Vec<Violation>) {
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
