//! Where core errors become gRPC statuses and back. Which code a rejection
//! gets is decided once, by `Reject::code` in the core.

use std::time::Duration;

use prost::Message;
use station_core::client::{Code as ClientCode, StreamEnd};
use station_core::{Reason, Reject, DOMAIN};
use tonic::{Code, Status};
use tonic_types::{pb, ErrorInfo, RetryInfo};

/// gRFC A6's server pushback header: milliseconds to wait before retrying.
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The gRPC status for a core rejection: its code ([`Reject::code`]) and its
/// human message.
pub fn to_status(reject: &Reject) -> Status {
    Status::new(Code::from(reject.code() as i32), reject.to_string())
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
    let (reason, retry_info) = details(status);
    let retry_after = retry_info.or_else(|| pushback_header(status));
    StreamEnd::Status {
        code,
        message: status.message().to_string(),
        reason,
        retry_after,
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
    let text = status.metadata().get(PUSHBACK_HEADER)?.to_str().ok()?;
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
            .insert(PUSHBACK_HEADER, "250".parse().unwrap());
        assert_eq!(
            parts(to_stream_end(&status)).2,
            Some(Duration::from_millis(250))
        );
        // RetryInfo wins over the header.
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2)));
        let mut status = with_details(Code::Unavailable, details);
        status
            .metadata_mut()
            .insert(PUSHBACK_HEADER, "250".parse().unwrap());
        assert_eq!(
            parts(to_stream_end(&status)).2,
            Some(Duration::from_secs(2))
        );
        // Negative or garbage: ignored.
        for bad in ["-1", "soon", ""] {
            let mut status = Status::unavailable("busy");
            status
                .metadata_mut()
                .insert(PUSHBACK_HEADER, bad.parse().unwrap());
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
