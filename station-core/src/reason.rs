//! Machine-readable error reasons and the one retry table.
//!
//! Every status a server sends carries a [`Reason`] (on the wire:
//! `google.rpc.ErrorInfo { reason, domain: DOMAIN }`). Clients decide by the
//! reason, never by the message, which is for people. Whether a client
//! should try again is decided here, once, by [`Reason::is_retryable`] for
//! statuses that carry a reason and [`Code::is_retryable`] for those that
//! do not (failures of the transport, reported by gRPC libraries). The
//! .proto and the README print the same table.

use crate::client::Code;

/// `google.rpc.ErrorInfo.domain` of every reason this service sends.
pub const DOMAIN: &str = "numbersstation.v1";

/// Why a server refused or ended a stream, as a stable identifier.
///
/// The strings ([`Reason::as_str`]) are part of the wire contract: never
/// renamed, only added to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The session existed but stayed detached longer than the TTL.
    SessionExpired,
    /// No session with this id is known: never opened, already completed,
    /// or forgotten (by a server restart, or a store that lost its data).
    SessionUnknown,
    /// The session's record vanished from the store while a stream held it
    /// (a store restarted without persistence, or lost writes in failover).
    SessionLost,
    /// The resume token does not match the session's.
    TokenMismatch,
    /// `Open` for an id whose session is live.
    SessionExists,
    /// Another stream resumed this session.
    TakenOver,
    /// The server holds as many sessions as it is allowed to.
    ServerFull,
    /// The server or its store is at capacity: new sessions are refused
    /// (resumes never are).
    Overloaded,
    /// The session store did not answer.
    StoreUnavailable,
    /// The server is shutting down.
    ShuttingDown,
    /// Fault injection (`--fail-every`, `--go-offline-for`).
    InjectedFault,
    /// The request is malformed or breaks the protocol.
    BadRequest,
    /// A client message exceeded the server's size limit.
    MessageTooLarge,
    /// The client sent nothing the server waited for within its silence
    /// timeout.
    ClientSilent,
}

impl Reason {
    /// Every reason, in the order of the table in the .proto and README.
    pub const ALL: [Reason; 14] = [
        Reason::SessionExpired,
        Reason::SessionUnknown,
        Reason::SessionLost,
        Reason::TokenMismatch,
        Reason::SessionExists,
        Reason::TakenOver,
        Reason::ServerFull,
        Reason::Overloaded,
        Reason::StoreUnavailable,
        Reason::ShuttingDown,
        Reason::InjectedFault,
        Reason::BadRequest,
        Reason::MessageTooLarge,
        Reason::ClientSilent,
    ];

    /// The stable identifier sent as `ErrorInfo.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SessionExpired => "SESSION_EXPIRED",
            Reason::SessionUnknown => "SESSION_UNKNOWN",
            Reason::SessionLost => "SESSION_LOST",
            Reason::TokenMismatch => "TOKEN_MISMATCH",
            Reason::SessionExists => "SESSION_EXISTS",
            Reason::TakenOver => "TAKEN_OVER",
            Reason::ServerFull => "SERVER_FULL",
            Reason::Overloaded => "OVERLOADED",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::InjectedFault => "INJECTED_FAULT",
            Reason::BadRequest => "BAD_REQUEST",
            Reason::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Reason::ClientSilent => "CLIENT_SILENT",
        }
    }

    /// Parses [`Reason::as_str`]; `None` for reasons this version does not
    /// know (a newer server), which clients then judge by code alone.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The gRPC status code sent with this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::SessionExpired | Reason::SessionUnknown | Reason::SessionLost => Code::NotFound,
            Reason::TokenMismatch => Code::PermissionDenied,
            Reason::SessionExists => Code::AlreadyExists,
            Reason::TakenOver => Code::Aborted,
            Reason::ServerFull | Reason::Overloaded | Reason::MessageTooLarge => {
                Code::ResourceExhausted
            }
            Reason::StoreUnavailable | Reason::ShuttingDown | Reason::InjectedFault => {
                Code::Unavailable
            }
            Reason::BadRequest => Code::InvalidArgument,
            Reason::ClientSilent => Code::DeadlineExceeded,
        }
    }

    /// Whether a client should try again (with backoff, honouring any
    /// `RetryInfo`) after a status with this reason.
    ///
    /// `TakenOver` too: only a `Resume` with our token takes a session over,
    /// i.e. one of our own earlier streams that won the race to the store
    /// after we gave up on it; resuming again takes the session back.
    pub fn is_retryable(self) -> bool {
        match self {
            Reason::TakenOver
            | Reason::ServerFull
            | Reason::Overloaded
            | Reason::StoreUnavailable
            | Reason::ShuttingDown
            | Reason::InjectedFault
            | Reason::ClientSilent => true,
            Reason::SessionExpired
            | Reason::SessionUnknown
            | Reason::SessionLost
            | Reason::TokenMismatch
            | Reason::SessionExists
            | Reason::BadRequest
            | Reason::MessageTooLarge => false,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_and_is_listed_once() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
            assert_eq!(Reason::ALL.iter().position(|x| x == r), Some(i));
        }
        assert_eq!(Reason::parse("NO_SUCH_REASON"), None);
    }

    const PROTO: &str = include_str!("../../proto/numbersstation/v1/station.proto");
    const README: &str = include_str!("../../README.md");

    /// `UNAVAILABLE` for `Code::Unavailable`: the wire name of a code.
    fn code_name(code: Code) -> String {
        let mut name = String::new();
        for (i, c) in format!("{code:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// Checks one printed reason table: rows of (reason, code, yes/no).
    fn check_reason_table(doc: &str, rows: Vec<(String, String, String)>) {
        let mut seen = Vec::new();
        for (reason, code, retry) in rows {
            let Some(r) = Reason::parse(&reason) else {
                continue;
            };
            assert!(!seen.contains(&r), "{doc}: {r} listed twice");
            seen.push(r);
            assert_eq!(code, code_name(r.code()), "{doc}: code of {r}");
            let expected = if r.is_retryable() { "yes" } else { "no" };
            assert_eq!(retry, expected, "{doc}: retry of {r}");
        }
        assert_eq!(seen, Reason::ALL.to_vec(), "{doc}: every reason, in order");
    }

    /// Checks one printed "retry by code" list against `Code::is_retryable`.
    fn check_code_list(doc: &str, list: &str) {
        let listed: Vec<&str> = list
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | '`' | '.'))
            .filter(|w| !w.is_empty())
            .collect();
        for code in ALL_CODES {
            let name = code_name(code);
            assert_eq!(
                listed.contains(&name.as_str()),
                code.is_retryable(),
                "{doc}: {name} in the retry-by-code list"
            );
        }
        assert_eq!(
            listed.len(),
            ALL_CODES.iter().filter(|c| c.is_retryable()).count(),
            "{doc}: {listed:?}"
        );
    }

    #[test]
    fn the_proto_prints_the_retry_table_the_code_follows() {
        // The rows under the `reason code retry meaning` header, up to the
        // next empty comment line.
        let rows = PROTO
            .lines()
            .skip_while(|l| {
                l.split_whitespace().collect::<Vec<_>>()[..]
                    != ["//", "reason", "code", "retry", "meaning"]
            })
            .skip(1)
            .take_while(|l| l.trim() != "//")
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|w| w.len() >= 3)
            .map(|w| (w[0].clone(), w[1].clone(), w[2].clone()))
            .collect();
        check_reason_table("station.proto", rows);
        let line = PROTO
            .lines()
            .find_map(|l| l.strip_prefix("//   retry by code:"))
            .expect("station.proto has a retry-by-code line");
        check_code_list("station.proto", line);
        assert!(PROTO.contains(&format!("domain \"{DOMAIN}\"")));
        assert!(PROTO.contains(&format!("package {DOMAIN};")));
    }

    #[test]
    fn the_readme_prints_the_retry_table_the_code_follows() {
        let cell = |c: &str| c.trim().trim_matches('`').to_owned();
        let rows = README
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.split('|').skip(1).map(cell).collect::<Vec<_>>())
            .filter(|c| c.len() >= 3)
            .map(|c| (c[0].clone(), c[1].clone(), c[2].clone()))
            .collect();
        check_reason_table("README.md", rows);
        let line = README
            .lines()
            .find_map(|l| l.strip_prefix("Retried by code:"))
            .expect("README has a `Retried by code:` line");
        check_code_list("README.md", line);
        assert!(README.contains(DOMAIN));
    }

    #[test]
    fn code_names_are_the_wire_names() {
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Ok), "OK");
        for (i, c) in ALL_CODES.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn reasons_and_codes_agree_on_retrying_but_for_oversized_messages() {
        // A client that reads only codes still behaves, except that it
        // would resend a message the server will always refuse.
        for r in Reason::ALL {
            if r != Reason::MessageTooLarge {
                assert_eq!(r.is_retryable(), r.code().is_retryable(), "{r}");
            }
        }
        assert!(!Reason::MessageTooLarge.is_retryable());
    }
}
