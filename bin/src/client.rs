//! `station client`: receive a sequence, verify it, print the verdict.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::MultiProgress;
use station_core::client::{Client, Config as ClientConfig, Snapshot, Verdict};
use station_core::{ClientId, Reason};
use station_net::client::{ChannelOptions, DriverOptions, Endpoints, Event, TraceHeaders};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::state_file::StateError;
use crate::{exit, outcome, state_file, ClientArgs};

/// Progress is written to the state file at most this often (and always on
/// attach and at the end): a crash loses at most this much progress, which
/// the server simply sends again.
const SAVE_EVERY: Duration = Duration::from_millis(100);

pub async fn run(args: ClientArgs) -> u8 {
    let mut targets = args.endpoint.clone();
    if let Some(port) = args.port {
        let scheme = if args.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        targets.insert(0, crate::url(scheme, &args.host, port));
    }
    let tls_ca = match &args.tls_ca {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return exit::USAGE;
            }
        },
        None => None,
    };
    let opts = ChannelOptions {
        tls_ca,
        ..ChannelOptions::default()
    };
    let endpoints = match Endpoints::tcp(&targets, &opts) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let client = match make_client(&args, cfg) {
        Ok(c) => c,
        Err((code, message)) => {
            eprintln!("error: {message}");
            return code;
        }
    };
    let count = client.count();
    let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
    let bar = bars
        .as_ref()
        .map(|bars| crate::bars::progress_bar(bars, u64::from(count)));
    let _logs_above_bar = bars.as_ref().map(crate::bars::activate);
    let mut last_save: Option<Instant> = None;
    let mut save_error: Option<String> = None;
    let mut next_log = count / 10;
    let mut paused = false;
    let observe = |event: Event<'_>, client: &Client| {
        match &event {
            Event::Connecting { endpoint, .. } => {
                paused = false;
                tracing::debug!(endpoint, "connecting");
            }
            Event::Attached {
                endpoint,
                next_index,
                ..
            } => {
                tracing::info!(endpoint, next_index, count, "attached");
            }
            Event::Number { .. } => paused = false,
            // Once a pause: a `Paused` comes every interval while it lasts.
            Event::Paused { endpoint } if !std::mem::replace(&mut paused, true) => {
                tracing::warn!(
                    endpoint,
                    "the server holds its numbers: its session store is slow to confirm the \
                     session; waiting"
                );
            }
            Event::Paused { .. } => {}
            Event::Failed { endpoint, end } => {
                tracing::warn!("stream to {endpoint} ended: {end}");
            }
            Event::HeldBack { endpoint } => tracing::warn!(
                endpoint,
                "holding the open back: the servers have accepted few of this process's opens lately"
            ),
            Event::Silent { endpoint } => {
                tracing::warn!(endpoint, "stream went silent; reconnecting")
            }
        }
        let received = client.received();
        match &bar {
            Some(bar) => {
                bar.set_position(u64::from(received));
                bar.set_message(format!("reconnects: {}", client.reconnects()));
            }
            None if received >= next_log && received < count => {
                tracing::info!(
                    received,
                    count,
                    reconnects = client.reconnects(),
                    "progress"
                );
                next_log = received + (count / 10).max(1);
            }
            None => {}
        }
        if let Some(path) = &args.state_file {
            let due = !matches!(event, Event::Number { .. })
                || received == count
                || last_save.is_none_or(|t| t.elapsed() >= SAVE_EVERY);
            if due {
                last_save = Some(Instant::now());
                if let Err(e) = state_file::save(path, &client.snapshot()) {
                    save_error.get_or_insert(e.to_string());
                }
            }
        }
    };
    // One span for the session: its trace context goes with every stream,
    // so the servers' spans of all of them join its trace. Without
    // --otlp-endpoint it has no context, and nothing is sent.
    let session = tracing::debug_span!(
        target: station_net::otel::TARGET,
        "session",
        session.id = %client.client_id().0,
        station.count = count,
        station.verdict = tracing::field::Empty,
        station.reconnects = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let trace = TraceHeaders::from_context(&session.context());
    let driver = DriverOptions::default();
    let outcome = station_net::client::run_in_trace(&endpoints, &driver, client, &trace, observe)
        .instrument(session.clone())
        .await;
    session.record("station.verdict", outcome::result_line(&outcome).as_str());
    session.record("station.reconnects", outcome.reconnects);
    let verified = matches!(outcome.verdict, Verdict::Verified);
    session.record("otel.status_code", if verified { "OK" } else { "ERROR" });
    drop(session);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(e) = save_error {
        eprintln!("warning: could not keep the state file: {e}");
    }
    if let Some(path) = &args.state_file {
        match settle_state_file(path, &outcome.verdict) {
            Ok(Some(note)) => eprintln!("{note}"),
            Ok(None) => {}
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    if args.json {
        println!("{}", outcome::json(&outcome));
    } else {
        println!("{}", outcome::text(&outcome));
    }
    outcome::exit_code(&outcome)
}

/// What becomes of the state file once the client has its verdict:
/// removed after success; moved aside to `<path>.ended` when a server said
/// the session is gone for good (expired, unknown, lost, its token refused,
/// its id held by another client: running the same command again would
/// only repeat the failure), with a note that says so; kept otherwise (no
/// server reachable, a session the client only believes expired, protocol
/// errors, a checksum mismatch, or a rejection without one of those
/// reasons, e.g. UNIMPLEMENTED from a service that is not a station: fix
/// the flags and the same command resumes). Only a server's word ends a
/// session: when the client gave up on its own, the note says that running
/// the same command again resumes it, or learns from a server that it
/// expired.
fn settle_state_file(path: &Path, verdict: &Verdict) -> Result<Option<String>, StateError> {
    let gone = match verdict {
        Verdict::Expired(_) => true,
        Verdict::Rejected {
            reason: Some(reason),
            ..
        } => matches!(
            reason,
            Reason::SessionExpired
                | Reason::SessionUnknown
                | Reason::SessionLost
                | Reason::TokenMismatch
                | Reason::SessionExists
        ),
        _ => false,
    };
    match verdict {
        Verdict::Verified => state_file::remove(path).map(|()| None),
        Verdict::Unreachable(_) | Verdict::LikelyExpired(_) if path.exists() => Ok(Some(format!(
            "the state file {} is kept: run the same command again to resume the session \
             (a server will say if it has expired)",
            path.display()
        ))),
        _ if gone => {
            let mut ended = path.as_os_str().to_owned();
            ended.push(".ended");
            let ended = std::path::PathBuf::from(ended);
            match std::fs::rename(path, &ended) {
                Ok(()) => Ok(Some(format!(
                    "the session cannot be resumed: its state file is now {}; run the \
                     same command again to start a new session",
                    ended.display()
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StateError::Io(path.into(), e)),
            }
        }
        _ => Ok(None),
    }
}

/// The client machine's settings from the flags, refused (naming the rule)
/// if they cannot work.
pub(crate) fn config(args: &ClientArgs) -> Result<ClientConfig, String> {
    let cfg = ClientConfig {
        give_up_without_progress: args.give_up_after,
        ..ClientConfig::default()
    };
    cfg.validate()
        .map_err(|e| format!("--give-up-after {:?}: {e}", args.give_up_after))?;
    Ok(cfg)
}

/// A new client, or one restored from the state file.
fn make_client(args: &ClientArgs, cfg: ClientConfig) -> Result<Client, (u8, String)> {
    let now = tokio::time::Instant::now().into_std();
    let seed = rand::random::<u64>();
    let saved = match &args.state_file {
        Some(path) => state_file::load(path).map_err(|e| (exit::STATE_FILE, e.to_string()))?,
        None => None,
    };
    if let Some(saved) = saved {
        check_matches(
            args,
            &saved,
            args.state_file.as_deref().expect("loaded from it"),
        )?;
        tracing::info!(client = %saved.client_id, next_index = saved.next_index, "resuming from state file");
        return Client::restore(now, cfg, saved, seed)
            .map_err(|e| (exit::STATE_FILE, e.to_string()));
    }
    let client_id = args
        .client_id
        .map(ClientId)
        .unwrap_or_else(|| ClientId(uuid::Uuid::new_v4()));
    let count = args
        .count
        .unwrap_or_else(|| rand::random_range(1..=station_core::sequence::MAX_COUNT));
    let client =
        Client::new(now, cfg, client_id, count, seed).map_err(|e| (exit::USAGE, e.to_string()))?;
    if let Some(path) = &args.state_file {
        // Persist the id and open nonce before the first Open, so a crash
        // before `Attached` can repeat the same Open.
        state_file::save(path, &client.snapshot())
            .map_err(|e| (exit::STATE_FILE, e.to_string()))?;
    }
    Ok(client)
}

/// A state file must belong to the session the flags describe.
fn check_matches(args: &ClientArgs, saved: &Snapshot, path: &Path) -> Result<(), (u8, String)> {
    let mismatch = |what: String| {
        Err((
            exit::STATE_FILE,
            format!(
                "state file {} belongs to another session: {what}; remove it or drop the flag",
                path.display()
            ),
        ))
    };
    if let Some(count) = args.count {
        if count != saved.count {
            return mismatch(format!("it has count {}, --count is {count}", saved.count));
        }
    }
    if let Some(id) = args.client_id {
        if id != saved.client_id.0 {
            return mismatch(format!(
                "it has client id {}, --client-id is {id}",
                saved.client_id
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use station_core::client::Code;

    /// Regression: after exit 4 or 5 the state file stayed, so the same
    /// command repeated the failure. A dead session's file is moved aside
    /// (and the note says what to do); a resumable one stays.
    #[test]
    fn a_dead_sessions_state_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let ended = dir.path().join("state.json.ended");
        let dead = [
            Verdict::Expired("expired".into()),
            Verdict::Rejected {
                code: Code::PermissionDenied,
                reason: Some(Reason::TokenMismatch),
                message: "token".into(),
            },
        ];
        for verdict in dead {
            std::fs::write(&path, "{}").unwrap();
            let note = settle_state_file(&path, &verdict).unwrap().unwrap();
            assert!(
                note.contains("state.json.ended") && note.contains("again"),
                "{note}"
            );
            assert!(!path.exists() && ended.exists(), "{verdict:?}");
        }
        // Given up by the client, not ended by a server: kept, and the
        // note says how to go on.
        std::fs::remove_file(&ended).unwrap();
        for verdict in [
            Verdict::Unreachable("down".into()),
            Verdict::LikelyExpired("by our clock".into()),
        ] {
            std::fs::write(&path, "{}").unwrap();
            let note = settle_state_file(&path, &verdict).unwrap().unwrap();
            assert!(
                note.contains("kept") && note.contains("same command again"),
                "{note}"
            );
            assert!(path.exists() && !ended.exists(), "{verdict:?}");
        }
        let alive = [
            Verdict::ProtocolError("bad".into()),
            Verdict::ChecksumMismatch,
            // Not a station (no reason): the flags may be wrong; keep the
            // session to resume once they are fixed.
            Verdict::Rejected {
                code: Code::Unimplemented,
                reason: None,
                message: "unknown service".into(),
            },
        ];
        for verdict in alive {
            std::fs::write(&path, "{}").unwrap();
            assert_eq!(settle_state_file(&path, &verdict).unwrap(), None);
            assert!(path.exists(), "{verdict:?}");
        }
        assert_eq!(settle_state_file(&path, &Verdict::Verified).unwrap(), None);
        assert!(!path.exists());
        // No file (never written): nothing to do.
        let gone = Verdict::Expired("expired".into());
        assert_eq!(settle_state_file(&path, &gone).unwrap(), None);
    }
}
