//! How outcomes are shown: a human block, a table row, or one JSON object,
//! and exit codes.

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
        } => format!("FAILURE: session rejected by the server ({code} {reason}): {message}"),
        Verdict::Rejected {
            code,
            reason: None,
            message,
        } => format!("FAILURE: session rejected by the server ({code}): {message}"),
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

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers, so that their digits line up.
    Right,
}

/// A plain-text table: a header row, then `rows`, each column as wide as
/// its widest cell and two spaces apart. The last column is not padded, so
/// a long last cell (a result line) breaks no alignment and leaves no
/// trailing blanks.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(t, _)| t.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = columns.iter().map(|(t, _)| t.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let (w, align) = (widths[i], columns[i].1);
            if i > 0 {
                line.push_str("  ");
            }
            match align {
                Align::Right => line.push_str(&format!("{cell:>w$}")),
                Align::Left if i == last => line.push_str(cell),
                Align::Left => line.push_str(&format!("{cell:<w$}")),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The demo's summary: one row per client.
pub fn outcomes_table(outcomes: &[Outcome]) -> String {
    use Align::{Left, Right};
    let columns = [
        ("client", Right),
        ("numbers", Right),
        ("received", Right),
        ("sum", Right),
        ("server crc", Left),
        ("client crc", Left),
        ("reconnects", Right),
        ("result", Left),
    ];
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let result = if o.verdict.is_success() {
                "SUCCESS".to_string()
            } else {
                result_line(o)
            };
            vec![
                (i + 1).to_string(),
                o.count.to_string(),
                o.received.to_string(),
                o.sum.to_string(),
                hex(o.server_checksum),
                hex(Some(o.client_checksum)),
                o.reconnects.to_string(),
                result,
            ]
        })
        .collect();
    table(&columns, &rows)
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

#[cfg(test)]
mod tests {
    use super::*;
    use station_core::client::Code;
    use station_core::{ClientId, Reason};

    fn outcome(count: u32, verdict: Verdict) -> Outcome {
        Outcome {
            client_id: ClientId(uuid::Uuid::nil()),
            count,
            received: count,
            sum: u64::from(count) * 1_000_000,
            server_checksum: Some(0xdead_beef),
            client_checksum: 0xdead_beef,
            reconnects: count / 10,
            verdict,
        }
    }

    #[test]
    fn the_demo_summary_is_a_table_whose_columns_line_up() {
        let rejected = Verdict::Rejected {
            code: Code::NotFound,
            reason: Some(Reason::SessionLost),
            message: "gone".into(),
        };
        let text = outcomes_table(&[
            outcome(7, Verdict::Verified),
            outcome(120, Verdict::Verified),
            outcome(40, rejected),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("client  numbers  received"), "{text}");
        // Right-aligned numbers end where their header ends.
        let end = lines[0].find("numbers").unwrap() + "numbers".len();
        for line in &lines[1..] {
            assert!(line.as_bytes()[end - 1].is_ascii_digit(), "{text}");
            assert_eq!(line.as_bytes()[end], b' ', "{text}");
        }
        // Every row's result starts in the same column.
        let result = lines[0].find("result").unwrap();
        assert_eq!(&lines[1][result..], "SUCCESS", "{text}");
        assert_eq!(
            &lines[3][result..],
            "FAILURE: session rejected by the server (NOT_FOUND SESSION_LOST): gone",
            "{text}"
        );
        assert!(text.lines().all(|l| l == l.trim_end()), "{text}");
    }
}
