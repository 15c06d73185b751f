//! What the client receives ([`Attached`], [`Number`], [`StreamEnd`]) and
//! emits ([`Output`]: requests, acknowledgements, the [`Outcome`]).

use std::fmt;
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

impl Code {
    /// The code as gRPC names it (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`), the
    /// name people look up in gRPC's documentation and in our metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    /// [`Code::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// The one place a stream's end is put into words for people (logs, the
/// demo): `UNAVAILABLE (INJECTED_FAULT): injected fault; retry after
/// 300 ms`. Programs read the fields instead.
impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Ok => f.write_str("OK"),
            StreamEnd::Status {
                code,
                message,
                reason,
                retry_after,
            } => {
                write!(f, "{code}")?;
                if let Some(reason) = reason {
                    write!(f, " ({reason})")?;
                }
                write!(f, ": {message}")?;
                // The server's "not before": the client waits at least this
                // long (longer if its own backoff says so). Zero says nothing.
                if let Some(wait) = retry_after.filter(|w| !w.is_zero()) {
                    write!(f, "; retry after {}", Rounded(wait))?;
                }
                Ok(())
            }
            StreamEnd::Transport(why) => write!(f, "connection failed: {why}"),
            StreamEnd::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}

/// A duration rounded the way a person says it: `300 ms`, `2.1 s`,
/// `1 min 30 s`. A pushback arrives as `299.998154ms` after the trip; its
/// microseconds are noise to a reader.
struct Rounded(Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = (self.0.as_secs_f64() * 1e3).round() as u64;
        if ms < 1_000 {
            return write!(f, "{ms} ms");
        }
        let tenths = (ms + 50) / 100;
        if tenths < 600 {
            return match tenths % 10 {
                0 => write!(f, "{} s", tenths / 10),
                t => write!(f, "{}.{t} s", tenths / 10),
            };
        }
        let secs = (ms + 500) / 1_000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, s) {
            (0, 0) => write!(f, "{m} min"),
            (0, _) => write!(f, "{m} min {s} s"),
            _ => write!(f, "{h} h {m} min"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A person reads `UNAVAILABLE (INJECTED_FAULT): …; retry after 300 ms`,
    /// not the `Debug` of the struct with `299.998154ms` in it.
    #[test]
    fn a_stream_end_reads_as_code_reason_message_and_rounded_wait() {
        let end = StreamEnd::Status {
            code: Code::Unavailable,
            message: "injected fault: every 5th number fails".into(),
            reason: Some(Reason::InjectedFault),
            retry_after: Some(Duration::from_nanos(299_998_154)),
        };
        assert_eq!(
            end.to_string(),
            "UNAVAILABLE (INJECTED_FAULT): injected fault: every 5th number fails; \
             retry after 300 ms"
        );
        let now = StreamEnd::Status {
            code: Code::Unavailable,
            message: "injected fault".into(),
            reason: Some(Reason::InjectedFault),
            retry_after: Some(Duration::ZERO),
        };
        assert_eq!(
            now.to_string(),
            "UNAVAILABLE (INJECTED_FAULT): injected fault"
        );
        let bare = StreamEnd::code_only(Code::ResourceExhausted, "too many");
        assert_eq!(bare.to_string(), "RESOURCE_EXHAUSTED: too many");
        assert_eq!(
            StreamEnd::Transport("tcp connect error".into()).to_string(),
            "connection failed: tcp connect error"
        );
        assert_eq!(Code::DeadlineExceeded.to_string(), "DEADLINE_EXCEEDED");
    }

    #[test]
    fn durations_are_rounded_as_people_say_them() {
        let cases = [
            (Duration::ZERO, "0 ms"),
            (Duration::from_micros(1_499), "1 ms"),
            (Duration::from_micros(999_499), "999 ms"),
            (Duration::from_micros(999_600), "1 s"),
            (Duration::from_millis(2_049), "2 s"),
            (Duration::from_millis(2_051), "2.1 s"),
            (Duration::from_millis(59_949), "59.9 s"),
            (Duration::from_millis(59_950), "1 min"),
            (Duration::from_secs(90), "1 min 30 s"),
            (Duration::from_secs(3 * 3600 + 125), "3 h 2 min"),
        ];
        for (d, text) in cases {
            assert_eq!(Rounded(d).to_string(), text, "{d:?}");
        }
    }
}
