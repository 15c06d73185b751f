//! What a server stream receives ([`Open`], [`Resume`]) and what it emits
//! ([`Output`]: store operations, `Attached`, numbers and the end).

use std::time::Duration;

use crate::ids::Secret;
use crate::store::StoreOp;
use crate::Reject;

/// An `Open` as received, before validation.
#[derive(Clone, Copy, Debug)]
pub struct Open<'a> {
    /// Claimed client id (text).
    pub client_id: &'a str,
    /// Requested count.
    pub count: u32,
    /// Open nonce: empty or 16 bytes.
    pub nonce: &'a [u8],
}

/// A `Resume` as received, before validation.
#[derive(Clone, Copy, Debug)]
pub struct Resume<'a> {
    /// Claimed client id (text).
    pub client_id: &'a str,
    /// Presented token.
    pub token: &'a [u8],
    /// First index the client wants.
    pub next_index: u32,
}

/// How a stream came to hold its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// An `Open` created the session.
    Opened,
    /// A `Resume` took the session over.
    Resumed,
    /// An `Open` repeated with the nonce of the one that created the
    /// session (its client never received that `Attached`) took the session
    /// over. It opens nothing, so it counts as a resume, not a second open.
    Reopened,
}

/// The reply that attaches a stream, sent before any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    /// How the stream attached (for counting; not sent).
    pub how: Attachment,
    /// Numbers in the session.
    pub count: u32,
    /// First index this stream sends.
    pub next_index: u32,
    /// The resume token.
    pub token: Secret,
    /// Session TTL.
    pub ttl: Duration,
    /// Time between numbers.
    pub interval: Duration,
    /// Acknowledge at least every this many numbers.
    pub ack_every: u32,
}

/// One number to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    /// Index in the sequence.
    pub index: u32,
    /// The value.
    pub value: u32,
    /// The sequence's checksum, on the final number only.
    pub checksum: Option<u32>,
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The final acknowledgement arrived: end the stream with status OK,
    /// whatever else happened meanwhile (shutdown, the client hanging up).
    /// `deleted` says whether the store confirmed the record's delete; if
    /// it never did, within a lease of retries, the record expires on its
    /// own, as any session's does.
    Completed {
        /// The store confirmed the delete.
        deleted: bool,
    },
    /// The client went away first; nothing to send.
    ClientGone,
    /// End the stream with this error status.
    Rejected(Reject),
}

/// An action for the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Perform this store operation, then call
    /// [`Stream::handle_store`](super::Stream::handle_store).
    Store(StoreOp),
    /// Send `Attached`.
    Attached(Attached),
    /// Send this number.
    Send(Number),
    /// Send `Paused`: a number is due but held, since the lease ran out
    /// (the module docs of [`crate::server`]).
    Paused {
        /// The held number's index.
        next_index: u32,
    },
    /// End the stream: the last output for the client. Only the release
    /// (a store operation, see the module docs of [`crate::server`]) may
    /// follow it.
    End(End),
}
