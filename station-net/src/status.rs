//! Where core errors become gRPC statuses and back. Which code a rejection
//! gets is decided once, by `Reject::code` in the core.
//!
//! Every status the server sends for a rejection is built here, by
//! [`to_status`] or [`to_status_with_retry`], and carries:
//!
//! - `google.rpc.ErrorInfo { reason, domain }` in `grpc-status-details-bin`:
//!   `reason` is [`Reject::reason`] (e.g. `SESSION_EXPIRED`), `domain` is
//!   [`DOMAIN`]. Clients decide by the reason, never by the message.
//! - for UNAVAILABLE and RESOURCE_EXHAUSTED with a retryable reason,
//!   `google.rpc.RetryInfo { retry_delay }` and the `grpc-retry-pushback-ms`
//!   trailer of gRFC A6, both saying when to come back. A
//!   RESOURCE_EXHAUSTED that retrying cannot fix (an oversized message)
//!   carries `grpc-retry-pushback-ms: -1`, A6's "do not retry".
//!
//! The message is for people. It never holds the session store's own error
//! text, which is logged here instead.

use std::collections::HashMap;
use std::time::Duration;

use station_core::client::{Code as ClientCode, StreamEnd};
use station_core::{Reason, Reject, DOMAIN};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// gRFC A6's pushback trailer: milliseconds to wait before retrying, or a
/// negative number for "do not retry".
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// What a client is told when the session store failed. The store's own
/// error may name hosts, keys or scripts: it goes to the server's log.
pub const STORE_UNAVAILABLE_MESSAGE: &str = "session store unavailable; retry shortly";

/// The retry delay [`to_status`] sends when its caller has no better
/// estimate. The server always gives one ([`to_status_with_retry`]).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The gRPC status for a core rejection: its code ([`Reject::code`]), its
/// human message and its `ErrorInfo`; a retryable UNAVAILABLE or
/// RESOURCE_EXHAUSTED comes back after [`DEFAULT_RETRY_AFTER`].
pub fn to_status(reject: &Reject) -> Status {
    to_status_with_retry(reject, None)
}

/// [`to_status`], telling the client to come back after `retry_after`
/// (when the status is one that carries a retry delay at all: see the
/// module docs; `None` means [`DEFAULT_RETRY_AFTER`]).
pub fn to_status_with_retry(reject: &Reject, retry_after: Option<Duration>) -> Status {
    let reason = reject.reason();
    let code = Code::from(reason.code() as i32);
    let message = match reject {
        Reject::StoreUnavailable(detail) => {
            tracing::warn!(%detail, "session store unavailable (the client is told only that)");
            STORE_UNAVAILABLE_MESSAGE.to_owned()
        }
        other => other.to_string(),
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), DOMAIN, error_metadata(reject));
    let mut metadata = MetadataMap::new();
    match pushback(reason, retry_after) {
        Pushback::None => {}
        Pushback::After(delay) => {
            details.set_retry_info(Some(delay));
            metadata.insert(PUSHBACK_KEY, MetadataValue::from(millis(delay)));
        }
        Pushback::Never => {
            metadata.insert(PUSHBACK_KEY, MetadataValue::from(-1i64));
        }
    }
    Status::with_error_details_and_metadata(code, message, details, metadata)
}

/// What a status says about retrying, beyond its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pushback {
    /// Nothing: the code does not call for it (gRFC A6 pushback is for the
    /// codes a retry policy would retry).
    None,
    /// RetryInfo and pushback: come back after this long.
    After(Duration),
    /// Pushback -1: retrying cannot help.
    Never,
}

fn pushback(reason: Reason, retry_after: Option<Duration>) -> Pushback {
    match reason.code() {
        ClientCode::Unavailable | ClientCode::ResourceExhausted if reason.is_retryable() => {
            Pushback::After(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
        }
        ClientCode::Unavailable | ClientCode::ResourceExhausted => Pushback::Never,
        _ => Pushback::None,
    }
}

/// Whole milliseconds, rounded up so that a client never comes back early.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

/// `ErrorInfo.metadata`: facts a program may use, never secrets (no token,
/// no store text). The client id is the client's own, already validated.
fn error_metadata(reject: &Reject) -> HashMap<String, String> {
    let mut m = HashMap::new();
    match reject {
        Reject::BadToken(id)
        | Reject::Unknown(id)
        | Reject::Expired(id)
        | Reject::Lost(id)
        | Reject::AlreadyExists(id)
        | Reject::TakenOver(id) => {
            m.insert("client_id".to_owned(), id.to_string());
        }
        Reject::BadCount(count) => {
            m.insert("count".to_owned(), count.to_string());
        }
        Reject::BadNextIndex { next_index, count } => {
            m.insert("next_index".to_owned(), next_index.to_string());
            m.insert("count".to_owned(), count.to_string());
        }
        Reject::Full(max) => {
            m.insert("max_sessions".to_owned(), max.to_string());
        }
        Reject::Overloaded(late) => {
            m.insert("lateness_ms".to_owned(), late.as_millis().to_string());
        }
        Reject::Silent(timeout) => {
            m.insert(
                "silence_timeout_ms".to_owned(),
                timeout.as_millis().to_string(),
            );
        }
        Reject::BadClientId(_)
        | Reject::BadNonce(_)
        | Reject::MalformedToken(_)
        | Reject::AckBeyondSent { .. }
        | Reject::AckBackwards { .. }
        | Reject::MessageTooLarge(_)
        | Reject::Unexpected(_)
        | Reject::InjectedFault(_)
        | Reject::StoreUnavailable(_)
        | Reject::ShuttingDown => {}
    }
    m
}

/// How the client sees a failed stream or call.
pub fn to_stream_end(status: &Status) -> StreamEnd {
    let code = match status.code() {
        Code::Ok => return StreamEnd::Ok,
        Code::Cancelled => ClientCode::Cancelled,
        Code::Unknown => ClientCode::Unknown,
        Code::InvalidArgument => ClientCode::InvalidArgument,
        Code::DeadlineExceeded => ClientCode::DeadlineExceeded,
        Code::NotFound => ClientCode::NotFound,
        Code::AlreadyExists => ClientCode::AlreadyExists,
        Code::PermissionDenied => ClientCode::PermissionDenied,
        Code::ResourceExhausted => ClientCode::ResourceExhausted,
        Code::FailedPrecondition => ClientCode::FailedPrecondition,
        Code::Aborted => ClientCode::Aborted,
        Code::OutOfRange => ClientCode::OutOfRange,
        Code::Unimplemented => ClientCode::Unimplemented,
        Code::Internal => ClientCode::Internal,
        Code::Unavailable => ClientCode::Unavailable,
        Code::DataLoss => ClientCode::DataLoss,
        Code::Unauthenticated => ClientCode::Unauthenticated,
    };
    StreamEnd::Status {
        code,
        message: status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station_core::ClientId;

    #[test]
    fn rejections_map_to_documented_codes() {
        let id = ClientId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let cases = [
            (Reject::Expired(id), Code::NotFound),
            (Reject::Unknown(id), Code::NotFound),
            (Reject::BadCount(0), Code::InvalidArgument),
            (Reject::BadToken(id), Code::PermissionDenied),
            (Reject::AlreadyExists(id), Code::AlreadyExists),
            (Reject::Full(3), Code::ResourceExhausted),
            (Reject::TakenOver(id), Code::Aborted),
            (Reject::ShuttingDown, Code::Unavailable),
            (Reject::InjectedFault("x"), Code::Unavailable),
        ];
        for (reject, code) in cases {
            let status = to_status(&reject);
            assert_eq!(status.code(), code, "{reject:?}");
            assert_eq!(status.message(), reject.to_string());
        }
        assert!(to_status(&Reject::Expired(id))
            .message()
            .contains("expired"));
    }

    /// One rejection of every kind.
    fn every_rejection() -> Vec<Reject> {
        let id = ClientId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        vec![
            Reject::bad_client_id("nope"),
            Reject::BadCount(0),
            Reject::BadNonce(3),
            Reject::MalformedToken(2),
            Reject::BadNextIndex {
                next_index: 9,
                count: 5,
            },
            Reject::BadToken(id),
            Reject::Unknown(id),
            Reject::Expired(id),
            Reject::Lost(id),
            Reject::AlreadyExists(id),
            Reject::AckBeyondSent { ack: 9, sent: 2 },
            Reject::AckBackwards { ack: 1, acked: 2 },
            Reject::MessageTooLarge("2000 bytes, limit 1024".into()),
            Reject::Unexpected("x"),
            Reject::Silent(Duration::from_secs(5)),
            Reject::TakenOver(id),
            Reject::Full(3),
            Reject::Overloaded(Duration::from_millis(300)),
            Reject::InjectedFault("x"),
            Reject::StoreUnavailable("redis://10.0.0.7:6379: NOSCRIPT".into()),
            Reject::ShuttingDown,
        ]
    }

    fn pushback_ms(status: &Status) -> Option<String> {
        status
            .metadata()
            .get(PUSHBACK_KEY)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn every_rejection_carries_its_reason_and_code_in_error_info() {
        let mut reasons = std::collections::BTreeSet::new();
        for reject in every_rejection() {
            let status = to_status(&reject);
            let reason = reject.reason();
            reasons.insert(reason);
            assert_eq!(status.code() as i32, reason.code() as i32, "{reject:?}");
            let details = status.check_error_details().expect("details decode");
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.reason, reason.as_str(), "{reject:?}");
            assert_eq!(info.domain, DOMAIN);
            assert_eq!(Reason::parse(&info.reason), Some(reason));
        }
        // The list above has one rejection of every variant, and between
        // them they send every reason.
        assert_eq!(
            reasons.into_iter().collect::<Vec<_>>(),
            Reason::ALL.to_vec(),
            "a reason no rejection sends"
        );
    }

    #[test]
    fn unavailable_and_resource_exhausted_carry_retry_info_and_pushback() {
        let delay = Duration::from_millis(1500);
        for reject in every_rejection() {
            let status = to_status_with_retry(&reject, Some(delay));
            let details = status.get_error_details();
            let reason = reject.reason();
            match status.code() {
                Code::Unavailable | Code::ResourceExhausted if reason.is_retryable() => {
                    let retry = details.retry_info().expect("RetryInfo");
                    assert_eq!(retry.retry_delay, Some(delay), "{reject:?}");
                    assert_eq!(pushback_ms(&status).as_deref(), Some("1500"), "{reject:?}");
                }
                Code::Unavailable | Code::ResourceExhausted => {
                    // Only an oversized message: retrying it cannot help.
                    assert_eq!(reason, Reason::MessageTooLarge);
                    assert!(details.retry_info().is_none());
                    assert_eq!(pushback_ms(&status).as_deref(), Some("-1"));
                }
                _ => {
                    assert!(details.retry_info().is_none(), "{reject:?}");
                    assert_eq!(pushback_ms(&status), None, "{reject:?}");
                }
            }
        }
        // Without an estimate, the default; sub-millisecond rounds up.
        let status = to_status(&Reject::Full(1));
        assert_eq!(
            status.get_error_details().retry_info().unwrap().retry_delay,
            Some(DEFAULT_RETRY_AFTER)
        );
        let status = to_status_with_retry(&Reject::ShuttingDown, Some(Duration::from_micros(1)));
        assert_eq!(pushback_ms(&status).as_deref(), Some("1"));
        let status = to_status_with_retry(&Reject::ShuttingDown, Some(Duration::ZERO));
        assert_eq!(pushback_ms(&status).as_deref(), Some("0"));
    }

    #[test]
    fn store_error_text_never_reaches_the_client() {
        let status = to_status(&Reject::StoreUnavailable(
            "redis://10.0.0.7:6379: NOSCRIPT station:session:abc".into(),
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), STORE_UNAVAILABLE_MESSAGE);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "STORE_UNAVAILABLE");
        assert!(info.metadata.is_empty(), "{:?}", info.metadata);
        let raw = format!("{:?}", status.details());
        assert!(!raw.contains("10.0.0.7") && !raw.contains("NOSCRIPT"));
    }

    #[test]
    fn error_info_names_the_session_but_no_secret() {
        let id = ClientId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let status = to_status(&Reject::BadToken(id));
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "TOKEN_MISMATCH");
        assert_eq!(
            info.metadata.get("client_id").map(String::as_str),
            Some("67e55044-10b1-426f-9247-bb680e5fe0c8")
        );
        assert_eq!(info.metadata.len(), 1);
    }

    #[test]
    fn core_codes_carry_their_wire_numbers() {
        for n in 0..=16 {
            let status = Status::new(Code::from(n), "x");
            let StreamEnd::Status { code, .. } = to_stream_end(&status) else {
                assert_eq!(n, 0, "only OK has no status");
                continue;
            };
            assert_eq!(code as i32, n, "{code:?}");
        }
    }
}
