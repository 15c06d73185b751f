//! What the client receives ([`Attached`], [`Number`], [`StreamEnd`]) and
//! emits ([`Output`]: requests, acknowledgements, the [`Outcome`]).

use std::time::Duration;

use crate::ids::{ClientId, Secret};
use crate::{Reason, Reject};

/// The first message of a new stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Start the session.
    Open {
        /// Our id.
        client_id: ClientId,
        /// Numbers wanted.
        count: u32,
        /// Lets us repeat this `Open` if its reply is lost.
        nonce: Secret,
    },
    /// Continue the session.
    Resume {
        /// Our id.
        client_id: ClientId,
        /// From `Attached`.
        token: Secret,
        /// Numbers we hold.
        next_index: u32,
    },
}

/// The server's `Attached`, as received.
#[derive(Clone, Copy, Debug)]
pub struct Attached<'a> {
    /// Numbers in the session.
    pub count: u32,
    /// First index the stream will send.
    pub next_index: u32,
    /// Resume token bytes.
    pub token: &'a [u8],
    /// Session TTL.
    pub ttl: Duration,
    /// Time between numbers.
    pub interval: Duration,
    /// Acknowledge at least every this many numbers.
    pub ack_every: u32,
}

/// A number as received: the same message the server sends.
pub use crate::server::Number;

/// A gRPC status code; each variant's value is its number on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Whether a failure with this code is worth retrying: the server was
    /// unavailable, full, gave up waiting for us, or the transport broke
    /// (which HTTP/2 reports as CANCELLED, UNKNOWN or INTERNAL).
    ///
    /// ABORTED too: a stream is taken over only by a `Resume` with our
    /// token, i.e. by one of our own earlier streams whose `Resume` was still
    /// in the server's pipeline when we gave up on it and won the race to
    /// the store. Resuming again takes the session back (gRPC documents
    /// ABORTED as "retry at a higher level").
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Cancelled
                | Code::Unknown
                | Code::Internal
        )
    }
}

/// How a stream ended, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server ended the stream with status OK.
    Ok,
    /// The server ended it with an error status.
    Status {
        /// The status code.
        code: Code,
        /// The server's message, for people: never used to decide.
        message: String,
        /// The machine-readable reason (`google.rpc.ErrorInfo` of our
        /// domain), if the status carried one we know. Statuses made by the
        /// transport carry none and are judged by `code` alone.
        reason: Option<Reason>,
        /// How long the server asked us to wait before trying again
        /// (`google.rpc.RetryInfo`, or `grpc-retry-pushback-ms`).
        retry_after: Option<Duration>,
    },
    /// Connecting failed or the connection broke without a status.
    Transport(String),
    /// The server's bytes broke the protocol below the message level: a
    /// message over the client's decode limit (tonic reports it as
    /// OUT_OF_RANGE with no details; no station ends a stream to a client
    /// that way). Counts as a protocol error, not a rejection.
    Protocol(String),
}

impl StreamEnd {
    /// A status that carries no reason (made by the transport, or by a
    /// server that predates reasons): judged by its code alone.
    pub fn code_only(code: Code, message: impl Into<String>) -> Self {
        StreamEnd::Status {
            code,
            message: message.into(),
            reason: None,
            retry_after: None,
        }
    }

    /// How a server's rejection reaches the client: its code, reason and
    /// message, without pushback.
    pub fn rejected(reject: &Reject) -> Self {
        StreamEnd::Status {
            code: reject.code(),
            message: reject.to_string(),
            reason: Some(reject.reason()),
            retry_after: None,
        }
    }
}

/// The final result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every number arrived and the checksums agree.
    Verified,
    /// Every number arrived but the checksums differ.
    ChecksumMismatch,
    /// A server said the session expired (`SESSION_EXPIRED`): it is gone.
    /// The only verdict that claims so; the message is the server's.
    Expired(String),
    /// By the client's own clock the session must have expired (its TTL
    /// passed since a server last heard from us) before any server let it
    /// resume, but no server said so: a server may still hold it (a slow
    /// clock, a lease renewed late), and only asking one again can tell.
    LikelyExpired(String),
    /// A server refused the session for a reason retrying cannot fix.
    Rejected {
        /// The status code.
        code: Code,
        /// The server's reason, if it gave one.
        reason: Option<Reason>,
        /// What happened: for a lost or forgotten session our own words,
        /// else the server's message.
        message: String,
    },
    /// Servers kept breaking the protocol.
    ProtocolError(String),
    /// No new number within `give_up_without_progress`; the message says
    /// what happened since the last one: no server reachable, servers that
    /// attached but sent nothing new, or servers that refused (by reason).
    Unreachable(String),
}

impl Verdict {
    /// Whether the client succeeded.
    pub fn is_success(&self) -> bool {
        *self == Verdict::Verified
    }
}

/// What the client ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Our id.
    pub client_id: ClientId,
    /// Numbers asked for.
    pub count: u32,
    /// Numbers received.
    pub received: u32,
    /// Sum of the numbers received.
    pub sum: u64,
    /// The checksum the server sent with the final number.
    pub server_checksum: Option<u32>,
    /// Our checksum over the numbers received.
    pub client_checksum: u32,
    /// Streams opened after the first.
    pub reconnects: u32,
    /// Success, or why not.
    pub verdict: Verdict,
}

/// An action for the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Drop the current stream, if any, open a new one and send this first.
    Connect(Request),
    /// Send `Ack { next_index }` on the current stream.
    Ack(u32),
    /// Drop the current stream: it went silent. A `Connect` follows later.
    Disconnect,
    /// Done; no more outputs. The adapter may keep the stream open briefly so
    /// the final `Ack` is delivered.
    Finished(Outcome),
}
