//! The one place where core errors become gRPC statuses and back.

use station_core::client::{Code as ClientCode, StreamEnd};
use station_core::Reject;
use tonic::{Code, Status};

/// The gRPC status for a core rejection. One arm per variant, no `_`, so a
/// new variant forces a decision here.
pub fn to_status(reject: &Reject) -> Status {
    let code = match reject {
        Reject::BadClientId(_)
        | Reject::BadCount(_)
        | Reject::BadNonce(_)
        | Reject::MalformedToken(_)
        | Reject::BadNextIndex { .. }
        | Reject::AckBeyondSent { .. }
        | Reject::AckBackwards { .. }
        | Reject::Unexpected(_) => Code::InvalidArgument,
        Reject::BadToken(_) => Code::PermissionDenied,
        Reject::Unknown(_) | Reject::Expired(_) => Code::NotFound,
        Reject::AlreadyExists(_) => Code::AlreadyExists,
        Reject::Silent(_) => Code::DeadlineExceeded,
        Reject::TakenOver(_) => Code::Aborted,
        Reject::Full(_) | Reject::MessageTooLarge(_) => Code::ResourceExhausted,
        Reject::InjectedFault(_) | Reject::StoreUnavailable(_) | Reject::ShuttingDown => {
            Code::Unavailable
        }
    };
    Status::new(code, reject.to_string())
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
}
