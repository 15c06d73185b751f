//! What the store answered: the one place a [`StoreReply`] moves the
//! stream on (attached, renewed, deleted), is retried, or ends it.

use std::time::Instant;

use super::{Attachment, Lookup, Pending, Phase, StoreReply, Stream};
use crate::sequence::MAX_COUNT;
use crate::Reject;

impl Stream {
    /// Handles the store's answer to the last [`Output::Store`](super::Output::Store).
    pub fn handle_store(&mut self, now: Instant, reply: StoreReply) {
        match self.phase {
            Phase::Ended => return,
            Phase::Releasing => {
                // A renewal in flight when the stream ended: release once
                // it is known to hold; the release's own answer ends all.
                match (self.pending.take(), reply) {
                    (Some(Pending::Renew { .. }), StoreReply::Done) => self.release(now),
                    _ => self.phase = Phase::Ended,
                }
                return;
            }
            Phase::Idle | Phase::Attaching | Phase::Attached => {}
        }
        let Some(pending) = self.pending.take() else {
            // An adapter bug, not client input: end the stream rather than
            // take the server down.
            return self.fail_by_store(Reject::StoreUnavailable(
                "store answered with no request outstanding".into(),
            ));
        };
        if let StoreReply::Unavailable(why) = reply {
            // A failed write costs nothing while there is time to ask
            // again: ask a quarter lease later (a store that fails at once
            // must not be asked in a loop) rather than send the client,
            // and its resume, to a store in trouble.
            // Past the lease, a renewal is asked no more often than a
            // healthy stream writes (once a lease): a store in trouble is
            // not sent four times its usual writes by the streams waiting
            // on it.
            let wait = match self.complete || now < self.lease_until {
                true => self.cfg.lease / 4,
                false => self.cfg.lease,
            };
            let retry_at = now + wait;
            match pending {
                // The client has everything: a renewal no longer matters,
                // and a delete is idempotent, so retry it within a lease;
                // after that, the session is still complete, and its
                // record expires on its own.
                Pending::Renew { .. } | Pending::Delete if self.complete => {
                    if retry_at < self.delete_until() {
                        self.delete_at = retry_at;
                        return self.advance(now);
                    }
                    return self.completed(false);
                }
                // A renewal is asked again for as long as the record can
                // still be alive. Past the lease no number is sent (the
                // fence holds), but the stream waits for the store rather
                // than end: an ended stream comes back as a resume, which
                // costs a store in trouble more than a retry does.
                Pending::Renew { .. } if retry_at < self.record_alive_until() => {
                    self.renew_at = retry_at;
                    return self.advance(now);
                }
                _ => return self.fail_by_store(Reject::StoreUnavailable(why)),
            }
        }
        if let StoreReply::Exists(live) | StoreReply::Loaded(Lookup::Live(live)) = &reply {
            // The store is shared and outlives this code: never trust a
            // record that could not have been written by a session.
            let plausible = (1..=MAX_COUNT).contains(&live.count)
                && live.acked <= live.count
                && Some(live.client_id) == self.client_id;
            if !plausible {
                return self.fail_by_store(Reject::StoreUnavailable(format!(
                    "store returned an implausible record for {:?}",
                    self.client_id
                )));
            }
        }
        match (pending, reply) {
            (Pending::Create { asked }, StoreReply::Done) => {
                self.attach(now, asked, 0, Attachment::Opened)
            }
            (Pending::Create { .. }, StoreReply::Exists(live)) => {
                let ours = self.record.expect("Create is sent with a record");
                let same_open =
                    !ours.nonce.is_zero() && live.nonce == ours.nonce && live.count == ours.count;
                if same_open {
                    // The client repeats an `Open` whose `Attached` it never
                    // received: attach it to the session it created.
                    self.take_over(now, live, 0, Attachment::Reopened);
                } else {
                    self.fail(now, Reject::AlreadyExists(ours.client_id));
                }
            }
            (Pending::Load { next_index, token }, StoreReply::Loaded(lookup)) => match lookup {
                Lookup::Live(live) if live.token != token => {
                    self.fail(now, Reject::BadToken(live.client_id))
                }
                Lookup::Live(live) if next_index > live.count => self.fail(
                    now,
                    Reject::BadNextIndex {
                        next_index,
                        count: live.count,
                    },
                ),
                Lookup::Live(live) => self.take_over(now, live, next_index, Attachment::Resumed),
                Lookup::Expired => self.fail(now, Reject::Expired(self.load_id())),
                Lookup::Missing => self.fail(now, Reject::Unknown(self.load_id())),
            },
            (
                Pending::TakeOver {
                    next_index,
                    asked,
                    how,
                },
                StoreReply::Done,
            ) => self.attach(now, asked, next_index, how),
            (Pending::Renew { asked }, StoreReply::Done) => {
                self.leased(asked);
                self.advance(now);
            }
            (Pending::Delete, StoreReply::Done) => self.completed(true),
            (
                Pending::TakeOver { .. } | Pending::Renew { .. } | Pending::Delete,
                StoreReply::Conflict,
            ) => self.fail_by_store(Reject::TakenOver(self.record_id())),
            (Pending::TakeOver { .. } | Pending::Renew { .. }, StoreReply::ExpiredOrReplaced) => {
                self.fail_by_store(Reject::Expired(self.record_id()))
            }
            (Pending::TakeOver { .. } | Pending::Renew { .. }, StoreReply::Vanished) => {
                self.fail_by_store(Reject::Lost(self.record_id()))
            }
            (pending, reply) => self.fail_by_store(Reject::StoreUnavailable(format!(
                "store answered {reply:?} to {pending:?}"
            ))),
        }
    }
}
