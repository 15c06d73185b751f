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
//! text, which is logged here instead (at most once a second: see
//! `log_limit`).

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use station_core::admission::Closed;
use station_core::client::{Code as ClientCode, StreamEnd};
use station_core::{Busy, Reason, Reject, DOMAIN};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{pb, ErrorDetails, ErrorInfo, RetryInfo, StatusExt};

use crate::log_limit::LogLimit;

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
            static WARN: LogLimit = LogLimit::new();
            if let Some(suppressed) = WARN.admit(crate::clock::now()) {
                tracing::warn!(
                    %detail,
                    suppressed,
                    "session store unavailable, the client is told only that \
                     (and `suppressed` more since the last line)"
                );
            }
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
            m.insert("max_streams".to_owned(), max.to_string());
            // The key's old name, for clients that read it: the same count.
            m.insert("max_sessions".to_owned(), max.to_string());
        }
        Reject::Overloaded(Busy::Late(late)) => {
            m.insert("lateness_ms".to_owned(), late.as_millis().to_string());
        }
        Reject::Overloaded(Busy::Limit { held, limit }) => {
            m.insert("streams_held".to_owned(), held.to_string());
            m.insert("session_limit".to_owned(), limit.to_string());
        }
        Reject::Overloaded(Busy::Cpu(percent)) => {
            m.insert("cpu_busy_percent".to_owned(), percent.to_string());
        }
        Reject::Overloaded(Busy::Store(Closed::Queue { inflight, limit })) => {
            m.insert("store_inflight".to_owned(), inflight.to_string());
            m.insert("store_limit".to_owned(), limit.to_string());
        }
        Reject::Overloaded(Busy::Store(Closed::Slow(latency))) => {
            m.insert(
                "store_latency_ms".to_owned(),
                latency.as_millis().to_string(),
            );
        }
        Reject::Overloaded(Busy::Store(Closed::Failing(ago))) => {
            m.insert(
                "store_failed_ms_ago".to_owned(),
                ago.as_millis().to_string(),
            );
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
///
/// The reason comes only from a `google.rpc.ErrorInfo` of our [`DOMAIN`]
/// (another domain's reasons, e.g. a proxy's, mean nothing here; a reason
/// this version does not know is dropped, leaving the code to decide). The
/// pushback comes from `google.rpc.RetryInfo`, else from the
/// `grpc-retry-pushback-ms` header; a negative or unparsable delay is
/// ignored. Details that do not decode are ignored: they come from the
/// network, and the code still says enough.
///
/// The details are decoded here rather than with `tonic_types::StatusExt`,
/// whose `RetryInfo` conversion goes through prost's `Duration` conversion,
/// which overflows (a panic with overflow checks) on a delay of `i64::MIN`
/// seconds: no server may crash the client.
pub fn to_stream_end(status: &Status) -> StreamEnd {
    let code = match client_code(status.code()) {
        ClientCode::Ok => return StreamEnd::Ok,
        code => code,
    };
    let (reason, retry_info) = details(status);
    let retry_after = retry_info.or_else(|| pushback_header(status));
    StreamEnd::Status {
        code,
        message: status.message().to_string(),
        reason,
        retry_after,
    }
}

/// tonic's code as the core names it: one match for every place that
/// needs a code's meaning or its gRPC name ([`ClientCode::as_str`]).
pub(crate) fn client_code(code: Code) -> ClientCode {
    match code {
        Code::Ok => ClientCode::Ok,
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
    }
}

/// The reason (first `ErrorInfo` of our domain) and the retry delay (first
/// `RetryInfo`) in a status's details.
fn details(status: &Status) -> (Option<Reason>, Option<Duration>) {
    let Ok(decoded) = pb::Status::decode(status.details()) else {
        return (None, None);
    };
    let mut reason = None;
    let mut retry_after = None;
    for any in &decoded.details {
        match any.type_url.as_str() {
            ErrorInfo::TYPE_URL if reason.is_none() => {
                reason = pb::ErrorInfo::decode(any.value.as_slice())
                    .ok()
                    .filter(|info| info.domain == DOMAIN)
                    .and_then(|info| Reason::parse(&info.reason));
            }
            RetryInfo::TYPE_URL if retry_after.is_none() => {
                retry_after = pb::RetryInfo::decode(any.value.as_slice())
                    .ok()
                    .and_then(|info| info.retry_delay)
                    .and_then(wire_duration);
            }
            _ => {}
        }
    }
    (reason, retry_after)
}

/// A `google.protobuf.Duration` from the network as a `Duration`; `None` if
/// negative (or of mixed signs).
///
/// Not prost's `TryFrom`: it negates the seconds of a negative duration,
/// which overflows (a panic with overflow checks) for `i64::MIN`.
pub(crate) fn wire_duration(d: prost_types::Duration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u64::try_from(d.nanos).ok()?;
    Some(Duration::from_secs(secs).saturating_add(Duration::from_nanos(nanos)))
}

fn pushback_header(status: &Status) -> Option<Duration> {
    let text = status.metadata().get(PUSHBACK_KEY)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use station_core::ClientId;
    use tonic_types::StatusExt;

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
            Reject::Overloaded(Busy::Late(Duration::from_millis(300))),
            Reject::Overloaded(Busy::Limit {
                held: 900,
                limit: 850,
            }),
            Reject::Overloaded(Busy::Cpu(93)),
            Reject::Overloaded(Busy::Store(Closed::Queue {
                inflight: 900,
                limit: 800,
            })),
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

    /// `max_streams` was `max_sessions` before it was named for what it
    /// counts: a full server sends both, so clients reading the old key
    /// still find it.
    #[test]
    fn a_full_server_names_its_limit_under_both_keys() {
        let status = to_status(&Reject::Full(3));
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "SERVER_FULL");
        let keys: std::collections::BTreeMap<_, _> = info
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("max_sessions", "3"), ("max_streams", "3")]
                .into_iter()
                .collect()
        );
    }

    fn with_details(code: Code, details: tonic_types::ErrorDetails) -> Status {
        Status::with_error_details(code, "message for people", details)
    }

    fn parts(end: StreamEnd) -> (ClientCode, Option<Reason>, Option<Duration>) {
        match end {
            StreamEnd::Status {
                code,
                reason,
                retry_after,
                ..
            } => (code, reason, retry_after),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reasons_and_pushback_are_read_from_the_details() {
        use tonic_types::ErrorDetails;
        for reason in Reason::ALL {
            let details = ErrorDetails::with_error_info(reason.as_str(), DOMAIN, []);
            let end = to_stream_end(&with_details(Code::from(reason.code() as i32), details));
            assert_eq!(parts(end), (reason.code(), Some(reason), None), "{reason}");
        }
        // Another domain's reason, or a reason we do not know: none.
        let foreign = ErrorDetails::with_error_info("SESSION_EXPIRED", "proxy.example", []);
        let end = to_stream_end(&with_details(Code::NotFound, foreign));
        assert_eq!(parts(end).1, None);
        let unknown = ErrorDetails::with_error_info("FROM_THE_FUTURE", DOMAIN, []);
        let end = to_stream_end(&with_details(Code::Unavailable, unknown));
        assert_eq!(parts(end), (ClientCode::Unavailable, None, None));
        // RetryInfo, with or without ErrorInfo.
        let mut details = ErrorDetails::with_retry_info(Some(Duration::from_millis(1500)));
        details.set_error_info("SERVER_FULL", DOMAIN, []);
        let end = to_stream_end(&with_details(Code::ResourceExhausted, details));
        assert_eq!(
            parts(end),
            (
                ClientCode::ResourceExhausted,
                Some(Reason::ServerFull),
                Some(Duration::from_millis(1500))
            )
        );
        // Details that do not decode are ignored.
        let garbage = Status::with_details(Code::Unavailable, "x", vec![0xff, 0x01, 0x02].into());
        assert_eq!(
            parts(to_stream_end(&garbage)),
            (ClientCode::Unavailable, None, None)
        );
    }

    /// A hostile RetryInfo: prost's conversion (used by tonic-types)
    /// overflows on `i64::MIN` seconds. Ours ignores negative delays.
    #[test]
    fn extreme_retry_delays_do_not_panic() {
        for (seconds, nanos, want) in [
            (i64::MIN, 0, None),
            (i64::MIN, i32::MIN, None),
            (-1, 5, None),
            (
                i64::MAX,
                999_999_999,
                Some(Duration::new(i64::MAX as u64, 999_999_999)),
            ),
            (
                i64::MAX,
                i32::MAX,
                Some(Duration::new(i64::MAX as u64 + 2, 147_483_647)),
            ),
        ] {
            let retry = pb::RetryInfo {
                retry_delay: Some(prost_types::Duration { seconds, nanos }),
            };
            let body = pb::Status {
                code: Code::Unavailable as i32,
                message: "x".into(),
                details: vec![prost_types::Any {
                    type_url: RetryInfo::TYPE_URL.into(),
                    value: retry.encode_to_vec(),
                }],
            };
            let status = Status::with_details(Code::Unavailable, "x", body.encode_to_vec().into());
            assert_eq!(parts(to_stream_end(&status)).2, want, "{seconds} {nanos}");
        }
    }

    #[test]
    fn pushback_falls_back_to_the_grpc_header() {
        let mut status = Status::unavailable("busy");
        status
            .metadata_mut()
            .insert(PUSHBACK_KEY, "250".parse().unwrap());
        assert_eq!(
            parts(to_stream_end(&status)).2,
            Some(Duration::from_millis(250))
        );
        // RetryInfo wins over the header.
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2)));
        let mut status = with_details(Code::Unavailable, details);
        status
            .metadata_mut()
            .insert(PUSHBACK_KEY, "250".parse().unwrap());
        assert_eq!(
            parts(to_stream_end(&status)).2,
            Some(Duration::from_secs(2))
        );
        // Negative or garbage: ignored.
        for bad in ["-1", "soon", ""] {
            let mut status = Status::unavailable("busy");
            status
                .metadata_mut()
                .insert(PUSHBACK_KEY, bad.parse().unwrap());
            assert_eq!(parts(to_stream_end(&status)).2, None, "{bad:?}");
        }
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
