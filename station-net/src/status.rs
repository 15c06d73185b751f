//! Where core errors become gRPC statuses and back. Which code a rejection
//! gets is decided once, by `Reject::code` in the core.

use station_core::client::{Code as ClientCode, StreamEnd};
use station_core::Reject;
use tonic::{Code, Status};

/// The gRPC status for a core rejection: its code ([`Reject::code`]) and its
/// human message.
pub fn to_status(reject: &Reject) -> Status {
    Status::new(Code::from(reject.code() as i32), reject.to_string())
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
