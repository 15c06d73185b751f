//! Why the server refuses or ends a stream.

use crate::client::Code;
use crate::{ClientId, Reason};

/// Longest client-supplied text echoed back in an error message.
const ECHO_LIMIT: usize = 64;

/// A reason the server refuses a request or ends a stream early.
///
/// Each variant is one fact a client can act on, with exactly one gRPC
/// status code ([`Reject::code`]), which `station-net` sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// The client id is not a UUID.
    #[error("client id {0:?} is not a UUID (expected e.g. 67e55044-10b1-426f-9247-bb680e5fe0c8)")]
    BadClientId(String),
    /// The count is outside 1..=65535.
    #[error("count {0} is out of range: ask for 1..=65535 numbers")]
    BadCount(u32),
    /// The open nonce is neither empty nor 16 bytes.
    #[error("open nonce must be empty or 16 bytes, got {0} bytes")]
    BadNonce(usize),
    /// The resume token is not 16 bytes.
    #[error("resume token must be 16 bytes, got {0} bytes")]
    MalformedToken(usize),
    /// A `Resume` asked to start past the end of the sequence.
    #[error("next_index {next_index} is past the end of the sequence (count {count})")]
    BadNextIndex {
        /// What the client asked for.
        next_index: u32,
        /// The session's count.
        count: u32,
    },
    /// The resume token does not match the session's.
    #[error("resume token does not match session {0}")]
    BadToken(ClientId),
    /// No session with this id is known (never opened, or completed).
    // Must not say "expired": clients read that word as "known expired"
    // (ARCHITECTURE.md §2), and here the server does not know.
    #[error("no session {0}: never opened here, already completed, or forgotten")]
    Unknown(ClientId),
    /// The session existed but stayed detached longer than the TTL.
    #[error("session {0} expired: detached for longer than the session TTL")]
    Expired(ClientId),
    /// The record vanished from the store while this stream held it: the
    /// store restarted without its data, or lost writes in a failover.
    #[error("session {0} was lost by the session store (restarted without its data?); it cannot be resumed")]
    Lost(ClientId),
    /// `Open` for an id whose session is live.
    #[error("session {0} already exists and is live; resume it with its token")]
    AlreadyExists(ClientId),
    /// An `Ack` for numbers that were never sent.
    #[error("ack next_index {ack} is beyond the {sent} numbers sent")]
    AckBeyondSent {
        /// The acknowledged next index.
        ack: u32,
        /// How many numbers this session has sent so far.
        sent: u32,
    },
    /// An `Ack` lower than one already received.
    #[error("ack next_index {ack} goes backwards (already acknowledged {acked})")]
    AckBackwards {
        /// The acknowledged next index.
        ack: u32,
        /// The highest acknowledgement so far.
        acked: u32,
    },
    /// A client message exceeded the server's decode limit.
    #[error("client message too large: {0}")]
    MessageTooLarge(String),
    /// A message that is not valid at this point of the conversation.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The client sent no first message, or no acknowledgement the server
    /// was waiting for, within the server's silence timeout (and what its
    /// lateness excused): the wait, all of it.
    #[error("the client was silent for longer than {0:?}")]
    Silent(std::time::Duration),
    /// Another stream resumed this session.
    #[error("session {0} was taken over by another stream")]
    TakenOver(ClientId),
    /// The server refuses more sessions.
    #[error("server is full: {0} sessions held or attaching")]
    Full(usize),
    /// The server cannot take a new session without failing those it has
    /// admitted: it refuses new sessions (never resumes) until it can.
    #[error("server is overloaded ({0}); come back later")]
    Overloaded(Busy),
    /// Fault injection (`--fail-every`, `--go-offline-for`).
    #[error("injected fault: {0}")]
    InjectedFault(&'static str),
    /// The session store did not answer.
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
    /// The server is shutting down.
    #[error("server is shutting down; resume on another server or later")]
    ShuttingDown,
}

impl Reject {
    /// The machine-readable reason this rejection is sent with. One arm
    /// per variant, no `_`, so a new variant forces a decision here.
    pub fn reason(&self) -> Reason {
        match self {
            Reject::BadClientId(_)
            | Reject::BadCount(_)
            | Reject::BadNonce(_)
            | Reject::MalformedToken(_)
            | Reject::BadNextIndex { .. }
            | Reject::AckBeyondSent { .. }
            | Reject::AckBackwards { .. }
            | Reject::Unexpected(_) => Reason::BadRequest,
            Reject::BadToken(_) => Reason::TokenMismatch,
            Reject::Unknown(_) => Reason::SessionUnknown,
            Reject::Expired(_) => Reason::SessionExpired,
            Reject::Lost(_) => Reason::SessionLost,
            Reject::AlreadyExists(_) => Reason::SessionExists,
            Reject::Silent(_) => Reason::ClientSilent,
            Reject::TakenOver(_) => Reason::TakenOver,
            Reject::Full(_) => Reason::ServerFull,
            Reject::Overloaded(_) => Reason::Overloaded,
            Reject::MessageTooLarge(_) => Reason::MessageTooLarge,
            Reject::InjectedFault(_) => Reason::InjectedFault,
            Reject::StoreUnavailable(_) => Reason::StoreUnavailable,
            Reject::ShuttingDown => Reason::ShuttingDown,
        }
    }

    /// The gRPC status code this rejection is sent with: its reason's.
    pub fn code(&self) -> Code {
        self.reason().code()
    }

    /// Builds [`Reject::BadClientId`], truncating what is echoed back.
    pub fn bad_client_id(text: &str) -> Self {
        let mut echo: String = text.chars().take(ECHO_LIMIT).collect();
        if echo.len() < text.len() {
            echo.push('…');
        }
        Reject::BadClientId(echo)
    }
}

/// Why an overloaded server refuses new sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// It runs this late on average (its timers, or its numbers'
    /// acknowledgements over their usual round trip).
    #[error("it runs {0:?} late")]
    Late(std::time::Duration),
    /// Its session store is at its limit ([`crate::admission`]).
    #[error("{0}")]
    Store(#[from] crate::admission::Closed),
    /// It holds as many streams as it has learned it carries on time.
    #[error("it holds {held} streams, at or over the {limit} it has learned it carries on time")]
    Limit {
        /// Streams held now.
        held: u64,
        /// The learned limit.
        limit: u64,
    },
    /// Its process has kept this share (in percent) of the processors it
    /// may run on busy over the last second, at `--shed-when-busy` or not
    /// yet well under it: near what it carries on time.
    #[error("its processors are {0} % busy")]
    Cpu(u8),
}
