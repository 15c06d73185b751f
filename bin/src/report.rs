//! How outcomes are shown: a human block or one JSON object, and exit codes.

use station_core::client::{Outcome, Verdict};

use crate::exit;

/// The exit code for an outcome.
pub fn exit_code(outcome: &Outcome) -> u8 {
    match outcome.verdict {
        Verdict::Verified => exit::SUCCESS,
        Verdict::ChecksumMismatch => exit::CHECKSUM_MISMATCH,
        Verdict::Expired(_) => exit::EXPIRED,
        Verdict::Rejected { .. } => exit::REJECTED,
        // Only a server's SESSION_EXPIRED is exit 4: a session the client
        // merely believes expired may still be resumed by running again.
        Verdict::ProtocolError(_) | Verdict::Unreachable(_) | Verdict::LikelyExpired(_) => {
            exit::UNREACHABLE
        }
    }
}

/// One line saying whether it worked and why not.
pub fn result_line(outcome: &Outcome) -> String {
    match &outcome.verdict {
        Verdict::Verified => "SUCCESS: all numbers received, checksum verified".into(),
        Verdict::ChecksumMismatch => "FAILURE: checksum mismatch".into(),
        Verdict::Expired(why) => format!("FAILURE: session expired: {why}"),
        Verdict::Rejected {
            code,
            reason: Some(reason),
            message,
        } => format!("FAILURE: session rejected by the server ({code:?}, {reason}): {message}"),
        Verdict::Rejected {
            code,
            reason: None,
            message,
        } => format!("FAILURE: session rejected by the server ({code:?}): {message}"),
        Verdict::ProtocolError(why) => format!("FAILURE: protocol error: {why}"),
        // The messages say which: no server reachable, servers attached
        // but sent nothing new, servers refused, or the client's clock.
        Verdict::Unreachable(why) | Verdict::LikelyExpired(why) => {
            format!("FAILURE: gave up: {why}")
        }
    }
}

fn hex(v: Option<u32>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("0x{v:08x}"))
}

/// The human-readable block printed on stdout.
pub fn text(outcome: &Outcome) -> String {
    format!(
        "client id:       {}\n\
         count:           {}\n\
         received:        {}\n\
         sum:             {}\n\
         server checksum: {}\n\
         client checksum: {}\n\
         reconnects:      {}\n\
         result:          {}",
        outcome.client_id,
        outcome.count,
        outcome.received,
        outcome.sum,
        hex(outcome.server_checksum),
        hex(Some(outcome.client_checksum)),
        outcome.reconnects,
        result_line(outcome),
    )
}

/// The `--json` object.
pub fn json(outcome: &Outcome) -> serde_json::Value {
    serde_json::json!({
        "client_id": outcome.client_id.to_string(),
        "count": outcome.count,
        "received": outcome.received,
        "sum": outcome.sum,
        "server_checksum": outcome.server_checksum,
        "client_checksum": outcome.client_checksum,
        "reconnects": outcome.reconnects,
        "success": outcome.verdict.is_success(),
        "result": result_line(outcome),
        "exit_code": exit_code(outcome),
    })
}
