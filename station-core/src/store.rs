//! The store contract, decided in one place: [`decide`].
//!
//! A store keeps one record per client id, each live until its expiry and
//! then remembered as expired for a while. For every [`StoreOp`] the reply
//! and the write depend only on what is stored for the id and on the op,
//! and [`decide`] computes both. [`step`] adds expiry: given the stored
//! [`Stored`] entry and the time, it says what to reply and how the entry
//! changes; the in-process stores (`MemoryStore`, the harness's and the
//! simulation's models) call it under their lock. The Redis scripts
//! implement the same table in Lua, and the store conformance tests hold
//! every store to it.
//!
//! # Fencing
//!
//! A write names the record it expects by its *incarnation* (random, drawn
//! when the session was opened) and *generation* (bumped by each takeover).
//! Both are compared, so a stream that was paused past the TTL cannot write
//! over a later session that reuses the client id: the later one starts at
//! generation 1 again, but with another incarnation.
//!
//! # Idempotence
//!
//! A write whose reply was lost may be sent again (by the adapter after a
//! timeout, or by a Redis cluster client after a dropped connection). The
//! stored record is then exactly the one the write carries, *holder*
//! (random, drawn by the writing stream) included: it was applied, and the
//! answer is `Done` without writing again (a lease write,
//! which keeps the generation, simply applies again: same record, expiry
//! counted from now). Two rival
//! takeovers to the same generation carry different holders, so the loser
//! still sees a conflict. A repeated `Delete` finds nothing of its
//! incarnation left and is `Done` as well.

use std::time::{Duration, Instant};

use crate::ids::ClientId;
pub use crate::server::Record;

/// What a session wants from the store. Answer with
/// [`Stream::handle_store`](crate::server::Stream::handle_store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Look the session up. Answer [`StoreReply::Loaded`].
    Load(ClientId),
    /// Insert a new record unless a live one exists for the id (an expired
    /// one is replaced). Answer `Done`, or `Exists` with the live record.
    /// Idempotent: a live record with this incarnation and holder is this
    /// very write, applied before: `Done`.
    Create {
        /// The new record.
        record: Record,
        /// Time from now until it expires.
        expires_in: Duration,
    },
    /// Replace the record if the stored one is live, of `record`'s
    /// incarnation and at `expect_generation`, and set its expiry. Answer
    /// `Done`; `Conflict` if a newer generation of the incarnation holds it;
    /// `Expired` if it expired (or another incarnation replaced it);
    /// `Missing` if there is none.
    ///
    /// Idempotent: if the stored record already has `record`'s incarnation,
    /// generation and holder, this write (or its twin) was applied before
    /// and its reply lost: answer `Done` without writing again.
    Update {
        /// The new contents (its generation may be `expect_generation + 1`).
        record: Record,
        /// Generation the stored record must have.
        expect_generation: u64,
        /// Time from now until it expires.
        expires_in: Duration,
    },
    /// Delete the record if it is live at this incarnation and generation.
    /// Answer `Done`, also when nothing of this incarnation is left to
    /// delete (a repeated delete, or an expired or lost record); `Conflict`
    /// if a newer generation of the incarnation holds it (left untouched).
    Delete {
        /// Which session.
        client_id: ClientId,
        /// Incarnation the stored record must have.
        incarnation: u64,
        /// Generation the stored record must have.
        generation: u64,
    },
}

impl StoreOp {
    /// The client id the operation is about.
    pub fn client_id(&self) -> ClientId {
        match self {
            StoreOp::Load(id) => *id,
            StoreOp::Create { record, .. } | StoreOp::Update { record, .. } => record.client_id,
            StoreOp::Delete { client_id, .. } => *client_id,
        }
    }
}

/// A store lookup result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The session is live.
    Live(Record),
    /// The session expired recently (stores remember this for a while so
    /// the client can be told precisely).
    Expired,
    /// No such session.
    Missing,
}

/// The store's answer to a [`StoreOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreReply {
    /// Answer to `Load`.
    Loaded(Lookup),
    /// `Create`, `Update` or `Delete` was applied.
    Done,
    /// `Create` refused: this live record holds the id.
    Exists(Record),
    /// `Update` or `Delete` refused: a newer generation of the same
    /// incarnation holds the session (it was taken over).
    Conflict,
    /// `Update` refused: the session expired, or a later incarnation of its
    /// id replaced it (which can only happen after it expired).
    ExpiredOrReplaced,
    /// `Update` refused: no record at all, though the stream held one: it
    /// vanished. The store lost it (a restart without persistence, a
    /// failover that lost writes), or a stream that took it over completed
    /// it. (A `Load` that finds no record is [`Lookup::Missing`]: nothing
    /// was expected there.)
    Vanished,
    /// The store failed or timed out.
    Unavailable(String),
}

/// What a store must write for one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Nothing.
    Nothing,
    /// Store `record`, live for `expires_in` from now.
    Put {
        /// The new contents.
        record: Record,
        /// Time from now until it expires.
        expires_in: Duration,
    },
    /// Remove the record.
    Remove,
}

/// The reply to `op` and the write that goes with it, given what the store
/// holds for the op's client id now.
pub fn decide(stored: &Lookup, op: &StoreOp) -> (StoreReply, Write) {
    use StoreReply as R;
    let done = |write| (R::Done, write);
    match (op, stored) {
        (StoreOp::Load(_), stored) => (R::Loaded(stored.clone()), Write::Nothing),

        (StoreOp::Create { record, .. }, Lookup::Live(live)) if written_by(live, record) => {
            done(Write::Nothing)
        }
        (StoreOp::Create { .. }, Lookup::Live(live)) => (R::Exists(*live), Write::Nothing),
        (StoreOp::Create { record, expires_in }, Lookup::Expired | Lookup::Missing) => {
            done(Write::Put {
                record: *record,
                expires_in: *expires_in,
            })
        }

        (
            StoreOp::Update {
                record,
                expect_generation,
                expires_in,
            },
            Lookup::Live(live),
        ) if live.incarnation == record.incarnation => {
            if live.generation == *expect_generation {
                // A lease write (sent again or not) or a takeover.
                done(Write::Put {
                    record: *record,
                    expires_in: *expires_in,
                })
            } else if written_by(live, record) {
                // A takeover applied before, its reply lost.
                done(Write::Nothing)
            } else if live.generation < *expect_generation {
                // Older than what this stream was confirmed to hold: the
                // store lost writes (a failover to a replica that had not
                // seen them), not a takeover.
                (R::Vanished, Write::Nothing)
            } else {
                (R::Conflict, Write::Nothing)
            }
        }
        // Another incarnation holds the id: ours expired before it came.
        (StoreOp::Update { .. }, Lookup::Live(_) | Lookup::Expired) => {
            (R::ExpiredOrReplaced, Write::Nothing)
        }
        (StoreOp::Update { .. }, Lookup::Missing) => (R::Vanished, Write::Nothing),

        (
            StoreOp::Delete {
                incarnation,
                generation,
                ..
            },
            Lookup::Live(live),
        ) if live.incarnation == *incarnation => {
            if live.generation <= *generation {
                // Ours, or an older generation that a store losing writes
                // brought back: the session is complete either way.
                done(Write::Remove)
            } else {
                (R::Conflict, Write::Nothing)
            }
        }
        // Nothing of this incarnation left to delete: deleted already (a
        // repeated delete), expired, or lost.
        (StoreOp::Delete { .. }, _) => done(Write::Nothing),
    }
}

/// What an in-process store keeps for one client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The record.
    pub record: Record,
    /// When it stops being live (exclusive: at this instant it is expired).
    pub expires_at: Instant,
}

/// How [`step`] changes the entry of the operation's client id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Leave it as it is (or absent).
    Keep,
    /// Store this entry, replacing any.
    Put(Stored),
    /// Remove it.
    Remove,
}

/// What `stored` amounts to at `now`: live before its expiry, then
/// remembered as expired for `remember_expired`, then as good as missing.
pub fn lookup(stored: Option<&Stored>, now: Instant, remember_expired: Duration) -> Lookup {
    match stored {
        Some(s) if now < s.expires_at => Lookup::Live(s.record),
        Some(s) if now.duration_since(s.expires_at) < remember_expired => Lookup::Expired,
        Some(_) | None => Lookup::Missing,
    }
}

/// Performs `op` at `now` on `stored`, the entry for its client id:
/// [`decide`] on its [`lookup`], the write made an entry with an absolute
/// expiry. An entry past remembering is removed as it is met, so a store
/// that is never swept still forgets it.
///
/// Pure: `now` is a value the caller read from its own clock.
pub fn step(
    stored: Option<&Stored>,
    now: Instant,
    remember_expired: Duration,
    op: &StoreOp,
) -> (StoreReply, Change) {
    let state = lookup(stored, now, remember_expired);
    let (reply, write) = decide(&state, op);
    let change = match write {
        Write::Put { record, expires_in } => Change::Put(Stored {
            record,
            expires_at: now + expires_in,
        }),
        Write::Remove => Change::Remove,
        Write::Nothing if stored.is_some() && state == Lookup::Missing => Change::Remove,
        Write::Nothing => Change::Keep,
    };
    (reply, change)
}

/// Whether `stored` is what the write of `ours` put there: the very same
/// record. Its holder makes it one stream's alone.
fn written_by(stored: &Record, ours: &Record) -> bool {
    stored == ours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(incarnation: u64, generation: u64, holder: u64) -> Record {
        crate::testkit::fixtures::fenced(incarnation, generation, holder)
    }

    const TTL: Duration = Duration::from_secs(30);

    fn update(record: Record, expect_generation: u64) -> StoreOp {
        StoreOp::Update {
            record,
            expect_generation,
            expires_in: TTL,
        }
    }

    fn delete(incarnation: u64, generation: u64) -> StoreOp {
        StoreOp::Delete {
            client_id: rec(0, 0, 0).client_id,
            incarnation,
            generation,
        }
    }

    #[test]
    fn updates_are_fenced_by_incarnation_and_generation() {
        let live = Lookup::Live(rec(1, 3, 7));
        let put = |record| Write::Put {
            record,
            expires_in: TTL,
        };
        // A refresh by the holder, and a takeover.
        assert_eq!(
            decide(&live, &update(rec(1, 3, 7), 3)),
            (StoreReply::Done, put(rec(1, 3, 7)))
        );
        assert_eq!(
            decide(&live, &update(rec(1, 4, 8), 3)),
            (StoreReply::Done, put(rec(1, 4, 8)))
        );
        // A stale stream of the same incarnation: taken over.
        assert_eq!(
            decide(&live, &update(rec(1, 2, 5), 2)),
            (StoreReply::Conflict, Write::Nothing)
        );
        // A store that lost the takeover to generation 3: not a takeover.
        assert_eq!(
            decide(&Lookup::Live(rec(1, 2, 6)), &update(rec(1, 3, 7), 3)),
            (StoreReply::Vanished, Write::Nothing)
        );
        // A paused stream of an earlier incarnation at the same generation.
        assert_eq!(
            decide(&live, &update(rec(2, 3, 7), 3)),
            (StoreReply::ExpiredOrReplaced, Write::Nothing)
        );
        assert_eq!(
            decide(&Lookup::Expired, &update(rec(1, 3, 7), 3)),
            (StoreReply::ExpiredOrReplaced, Write::Nothing)
        );
        assert_eq!(
            decide(&Lookup::Missing, &update(rec(1, 3, 7), 3)),
            (StoreReply::Vanished, Write::Nothing)
        );
    }

    #[test]
    fn repeated_writes_are_done_once_and_rivals_still_conflict() {
        // The takeover to generation 4 by holder 8 was applied; its reply
        // was lost and it is sent again.
        let after = Lookup::Live(rec(1, 4, 8));
        assert_eq!(
            decide(&after, &update(rec(1, 4, 8), 3)),
            (StoreReply::Done, Write::Nothing)
        );
        // A rival takeover from generation 3 by another stream.
        assert_eq!(
            decide(&after, &update(rec(1, 4, 9), 3)),
            (StoreReply::Conflict, Write::Nothing)
        );
        // A repeated create, and a create by another open.
        let created = Lookup::Live(rec(5, 1, 6));
        let create = |record| StoreOp::Create {
            record,
            expires_in: TTL,
        };
        assert_eq!(
            decide(&created, &create(rec(5, 1, 6))),
            (StoreReply::Done, Write::Nothing)
        );
        assert_eq!(
            decide(&created, &create(rec(6, 1, 2))),
            (StoreReply::Exists(rec(5, 1, 6)), Write::Nothing)
        );
        // A repeated delete finds nothing and is done.
        assert_eq!(
            decide(&created, &delete(5, 1)),
            (StoreReply::Done, Write::Remove)
        );
        assert_eq!(
            decide(&Lookup::Missing, &delete(5, 1)),
            (StoreReply::Done, Write::Nothing)
        );
    }

    #[test]
    fn deletes_touch_only_their_own_generation_of_their_incarnation() {
        let live = Lookup::Live(rec(1, 3, 7));
        assert_eq!(
            decide(&live, &delete(1, 2)),
            (StoreReply::Conflict, Write::Nothing)
        );
        assert_eq!(
            decide(&live, &delete(1, 4)),
            (StoreReply::Done, Write::Remove),
            "a store that lost generation 4 still holds the session, complete"
        );
        assert_eq!(
            decide(&live, &delete(2, 3)),
            (StoreReply::Done, Write::Nothing),
            "a later incarnation is not ours to delete"
        );
        assert_eq!(
            decide(&Lookup::Expired, &delete(1, 3)),
            (StoreReply::Done, Write::Nothing)
        );
    }

    #[test]
    fn step_expires_remembers_then_forgets() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let remember = secs(5);
        let entry = Stored {
            record: rec(1, 1, 2),
            expires_at: t0 + TTL,
        };
        let load = StoreOp::Load(entry.record.client_id);
        let at = |dt| step(Some(&entry), t0 + dt, remember, &load);
        let loaded = |lookup| StoreReply::Loaded(lookup);
        assert_eq!(
            at(TTL - secs(1)),
            (loaded(Lookup::Live(entry.record)), Change::Keep)
        );
        // Expiry is exclusive: expired at exactly `expires_at`.
        assert_eq!(at(TTL), (loaded(Lookup::Expired), Change::Keep));
        // Past remembering: missing, and dropped while there.
        assert_eq!(
            at(TTL + remember),
            (loaded(Lookup::Missing), Change::Remove)
        );
        // A write's expiry counts from `now`.
        let create = StoreOp::Create {
            record: rec(2, 1, 3),
            expires_in: TTL,
        };
        let now = t0 + TTL;
        assert_eq!(
            step(Some(&entry), now, remember, &create),
            (
                StoreReply::Done,
                Change::Put(Stored {
                    record: rec(2, 1, 3),
                    expires_at: now + TTL
                })
            )
        );
        assert_eq!(create.client_id(), entry.record.client_id);
        assert_eq!(delete(1, 1).client_id(), entry.record.client_id);
    }
}
