//! Adversarial clients against a real server over loopback: hostile
//! messages on a stream (bad first messages, resumes and opens against live
//! sessions, out-of-order messages, repeated opens, messages after
//! completion).
//!
//! Every test starts its own server ([`common::TestServer`], with
//! [`common::server_config`]: 20 ms interval, 4 s TTL), starts a
//! well-behaved session on it with the real client driver, then misbehaves
//! with a raw tonic client that sends hand-built `ClientMessage`s
//! ([`common::raw::Raw`]). Each case asserts the exact gRPC status and
//! `ErrorInfo` reason, that its message helps, that the well-behaved session
//! still completes `Verified` without a single reconnection, and that
//! nothing on the server's side panicked (tests run on current-thread
//! runtimes, so [`common::TestServer::stop`] sees every server task's
//! panics). Every wait is bounded.
//!
//! The cases are rows of a table (`Row`): a stream's first messages, what
//! it does next (`Step`), and the status it must end with, run by `run_row`
//! on a stream of its own. The other adversarial files test limits
//! (`adversarial_limits.rs`), clients that stop reading
//! (`adversarial_readers.rs`) and raw TCP (`adversarial_tcp.rs`).

use std::time::Duration;

use station_core::Reason;
use station_net::proto::ClientMessage;
use tokio::time::timeout;
use tonic::Code;

mod common;

use common::raw::{
    ack, acked, assert_ok, open, read_and_ack, resume, run_row, run_rows, Raw, Row, Step, ANY,
};
use common::{assert_rejected, server_config, session_id, TestServer};

/// Bound on any single wait for the server.
const STEP: Duration = Duration::from_secs(5);

// Rows: a bad first message.

#[tokio::test]
async fn bad_first_messages_are_rejected_with_exact_codes() {
    let server = TestServer::start(server_config()).await;
    let good = server.good(100, 1).await;
    let channel = server.channel().await;
    let nonce = [7u8; 16];
    let unknown = session_id(99).to_string();
    let long_id = "y".repeat(500);
    let bad = |name, first, says: &[&str]| {
        Row::refused(name, first, Code::InvalidArgument, Reason::BadRequest, says)
    };
    let rows = vec![
        bad(
            "malformed UUID",
            vec![open("not-a-uuid", 10, &nonce)],
            &["\"not-a-uuid\"", "is not a UUID"],
        ),
        bad(
            "UUID in its simple (unhyphenated) form",
            vec![open("67e5504410b1426f9247bb680e5fe0c8", 10, &nonce)],
            &["is not a UUID", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
        ),
        bad(
            "empty client id",
            vec![open("", 10, &nonce)],
            &["client id \"\" is not a UUID"],
        ),
        bad(
            "500-byte client id (echo is truncated)",
            vec![open(&long_id, 10, &nonce)],
            &["is not a UUID", "…"],
        ),
        bad(
            "count 0",
            vec![open(&session_id(10).to_string(), 0, &nonce)],
            &["count 0 is out of range", "1..=65535"],
        ),
        bad(
            "count 65536",
            vec![open(&session_id(11).to_string(), 65_536, &nonce)],
            &["count 65536 is out of range", "1..=65535"],
        ),
        bad(
            "count u32::MAX",
            vec![open(&session_id(12).to_string(), u32::MAX, &nonce)],
            &["count 4294967295 is out of range", "1..=65535"],
        ),
        bad(
            "5-byte open nonce",
            vec![open(&session_id(13).to_string(), 10, &[1, 2, 3, 4, 5])],
            &["nonce", "16 bytes", "got 5"],
        ),
        bad(
            "Ack before Open",
            vec![ack(5)],
            &["Ack before Open or Resume"],
        ),
        bad(
            "empty ClientMessage",
            vec![ClientMessage { kind: None }],
            &["empty ClientMessage"],
        ),
        Row::refused(
            "Resume of an unknown id",
            vec![resume(&unknown, &[9u8; 16], 0)],
            Code::NotFound,
            Reason::SessionUnknown,
            &["no session", &unknown],
        ),
        bad(
            "Resume with a malformed UUID",
            vec![resume(
                "67e55044-10b1-426f-9247-bb680e5fe0cX",
                &[9u8; 16],
                0,
            )],
            &["is not a UUID"],
        ),
        bad(
            "Resume with a 3-byte token",
            vec![resume(&unknown, &[1, 2, 3], 0)],
            &["resume token must be 16 bytes, got 3"],
        ),
        bad(
            "half-close at once (no message)",
            vec![],
            &["closed its side"],
        )
        .after(vec![Step::HalfClose], 0),
    ];
    let rejected_before = server.station.stats().await.streams_rejected;
    run_rows(&channel, &rows).await;
    let stats = server.station.stats().await;
    assert_eq!(
        stats.streams_rejected - rejected_before,
        rows.len() as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.sessions_opened, 1,
        "only the good session opened: {stats:?}"
    );
    good.verified().await;
    assert_eq!(server.station.stats().await.live_sessions, Some(0));
    server.attached_at_most(0, STEP).await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: Resume and Open against live sessions.

#[tokio::test]
async fn resume_and_open_against_live_sessions_are_refused_and_disturb_nobody() {
    let server = TestServer::start(server_config()).await;
    let good = server.good(100, 2).await;
    let channel = server.channel().await;

    // Raw owners too, to see their own streams continue uninterrupted.
    let owner_id = session_id(20).to_string();
    let mut owner = Raw::start(&channel, &[open(&owner_id, 30, &[2u8; 16])]).await;
    let token = owner.attached().await.resume_token;
    let mut values = read_and_ack(&mut owner, 0, 5).await;
    // A short session, for resumes past its end.
    let short_id = session_id(30).to_string();
    let mut short = Raw::start(&channel, &[open(&short_id, 5, &[3u8; 16])]).await;
    let short_token = short.attached().await.resume_token;
    // A session that a same-nonce Open with another count must not reach.
    let twin_id = session_id(70).to_string();
    let mut twin = Raw::start(&channel, &[open(&twin_id, 50, &[7u8; 16])]).await;
    twin.attached().await;

    let mut rows = Vec::new();
    let mut wrong = token.clone();
    wrong[0] ^= 1;
    let victims = [
        (
            "the good session's id",
            good.id.to_string(),
            vec![0xa5u8; 16],
        ),
        (
            "the owner's id, one bit off",
            owner_id.clone(),
            wrong.clone(),
        ),
        ("the owner's id, all zeros", owner_id.clone(), vec![0u8; 16]),
    ];
    for (what, victim, guess) in &victims {
        for next_index in [0, 5, 30] {
            rows.push(Row::refused(
                format!("Resume of {what} with a wrong token at {next_index}"),
                vec![resume(victim, guess, next_index)],
                Code::PermissionDenied,
                Reason::TokenMismatch,
                &["resume token does not match", victim],
            ));
        }
    }
    // A wrong-length token is malformed rather than wrong.
    rows.push(Row::refused(
        "Resume with a 15-byte prefix of the token",
        vec![resume(&owner_id, &token[..15], 0)],
        Code::InvalidArgument,
        Reason::BadRequest,
        &["resume token must be 16 bytes, got 15"],
    ));
    for next_index in [6, 1000, u32::MAX] {
        rows.push(Row::refused(
            format!("Resume at {next_index} of a 5-number session"),
            vec![resume(&short_id, &short_token, next_index)],
            Code::InvalidArgument,
            Reason::BadRequest,
            &[
                &format!("next_index {next_index} is past the end"),
                "count 5",
            ],
        ));
    }
    let victim = good.id.to_string();
    for (what, nonce) in [("another nonce", vec![0x11u8; 16]), ("no nonce", vec![])] {
        rows.push(Row::refused(
            format!("Open of the live good session's id with {what}"),
            vec![open(&victim, 100, &nonce)],
            Code::AlreadyExists,
            Reason::SessionExists,
            &[&format!("session {victim} already exists"), "resume"],
        ));
    }
    // The same nonce but another count is another Open, not a repeat.
    rows.push(Row::refused(
        "Open of a live id with its nonce but another count",
        vec![open(&twin_id, 51, &[7u8; 16])],
        Code::AlreadyExists,
        Reason::SessionExists,
        &["already exists"],
    ));
    run_rows(&channel, &rows).await;

    // The owners' streams carry on: to the end with OK, or for a while.
    values.extend(read_and_ack(&mut owner, 5, 30).await);
    assert!(values.last().unwrap().checksum.is_some());
    let (rest, status) = owner.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);
    read_and_ack(&mut short, 0, 5).await;
    let (rest, status) = short.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);
    read_and_ack(&mut twin, 0, 3).await;
    good.verified().await;
    drop(twin);
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: out-of-order messages on a stream.

#[tokio::test]
async fn protocol_violations_on_a_stream_are_invalid_argument() {
    let server = TestServer::start(server_config()).await;
    let good = server.good(100, 4).await;
    let channel = server.channel().await;
    // A detached session, to resume.
    let spare = session_id(60).to_string();
    let mut first = Raw::start(&channel, &[open(&spare, 100, &[6u8; 16])]).await;
    let token = first.attached().await.resume_token;
    drop(first);

    let violation = |name: String, first: ClientMessage, steps: Vec<Step>, says: &[&str]| {
        Row::refused(
            name,
            vec![first],
            Code::InvalidArgument,
            Reason::BadRequest,
            says,
        )
        .after(steps, ANY)
    };
    let fresh = |n: u64| open(&session_id(n).to_string(), 100, &[4u8; 16]);
    let mut rows = Vec::new();
    // 50 numbers take a second to send; 10_000 is past the count too.
    for (i, beyond) in [50u32, 10_000].into_iter().enumerate() {
        rows.push(violation(
            format!("Ack of {beyond} after one number"),
            fresh(40 + i as u64),
            vec![Step::Attached, Step::Number, Step::Send(ack(beyond))],
            &[
                &format!("ack next_index {beyond} is beyond the"),
                "numbers sent",
            ],
        ));
    }
    rows.push(violation(
        "Ack of 1 after acknowledging 3".into(),
        fresh(50),
        [Step::Attached]
            .into_iter()
            .chain(acked(3))
            .chain([Step::Send(ack(1))])
            .collect(),
        &["ack next_index 1 goes backwards", "already acknowledged 3"],
    ));
    let seconds = [
        (
            "Open after Open",
            fresh(61),
            open(&spare, 100, &[6u8; 16]),
            "Open after the stream's first message",
        ),
        (
            "Resume after Open",
            fresh(62),
            resume(&spare, &token, 0),
            "Resume after the stream's first message",
        ),
        // And on a resumed stream.
        (
            "Open after Resume",
            resume(&spare, &token, 0),
            open(&spare, 100, &[6u8; 16]),
            "Open after the stream's first message",
        ),
    ];
    for (name, first, second, says) in seconds {
        rows.push(violation(
            name.into(),
            first,
            vec![Step::Attached, Step::Send(second)],
            &[says],
        ));
    }
    // Half-closing right after Open: the stream ends promptly.
    rows.push(
        Row::refused(
            "half-close right after Open",
            vec![open(&session_id(100).to_string(), 50, &[1u8; 16])],
            Code::InvalidArgument,
            Reason::BadRequest,
            &["closed its side"],
        )
        .after(vec![Step::HalfClose], 10),
    );
    run_rows(&channel, &rows).await;
    server.attached_at_most(1, STEP).await;
    good.verified().await;
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rows: Open of a live id.

#[tokio::test]
async fn a_repeated_open_with_the_same_nonce_attaches_to_the_same_session() {
    let server = TestServer::start(server_config()).await;
    let good = server.good(100, 8).await;
    let channel = server.channel().await;
    let id = session_id(80).to_string();
    let nonce = [8u8; 16];
    let mut first = Raw::start(&channel, &[open(&id, 50, &nonce)]).await;
    let a1 = first.attached().await;
    assert_eq!(a1.resume_token.len(), 16);
    let v1 = first.number().await;

    let mut second = Raw::start(&channel, &[open(&id, 50, &nonce)]).await;
    let a2 = second.attached().await;
    assert_eq!(a2.resume_token, a1.resume_token, "same session, same token");
    assert_eq!((a2.count, a2.next_index), (50, 0));
    let v2 = read_and_ack(&mut second, 0, 3).await;
    assert_eq!(v2[0].value, v1.value, "same session, same sequence");

    // The first stream was taken over: it ends with ABORTED.
    let (_, status) = first.end().await;
    assert_rejected(
        "the first stream",
        &status,
        Code::Aborted,
        Reason::TakenOver,
        &["taken over"],
    );
    // Two sessions live (the good one and this one), not three.
    assert_eq!(server.station.stats().await.live_sessions, Some(2));
    good.verified().await;
    drop(second);
    drop(channel);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Row: messages after completion.

#[tokio::test]
async fn messages_after_completion_are_harmless() {
    let server = TestServer::start(server_config()).await;
    let good = server.good(100, 9).await;
    let channel = server.channel().await;
    let id = session_id(90).to_string();
    let mut raw = Raw::start(&channel, &[open(&id, 3, &[9u8; 16])]).await;
    let token = raw.attached().await.resume_token;
    let numbers = read_and_ack(&mut raw, 0, 3).await;
    assert!(
        numbers[2].checksum.is_some(),
        "the final number carries the checksum"
    );
    let (rest, status) = raw.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);
    // More messages on the finished stream: accepted or refused locally,
    // either way nothing may crash.
    for msg in [
        ack(3),
        ack(4),
        ack(0),
        open(&id, 3, &[9u8; 16]),
        ClientMessage { kind: None },
    ] {
        let _ = timeout(STEP, raw.send(msg))
            .await
            .expect("send does not hang");
    }
    drop(raw);

    // The final ack followed at once by junk: the session completes first.
    let id2 = session_id(91).to_string();
    let mut raw = Raw::start(&channel, &[open(&id2, 2, &[9u8; 16])]).await;
    raw.attached().await;
    raw.number().await;
    raw.number().await;
    for msg in [ack(2), ack(2), ack(7), ack(0)] {
        raw.send(msg).await;
    }
    let (rest, status) = raw.end().await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_ok(&status);

    // The completed session is gone: resuming it is NOT_FOUND.
    let late = Row::refused(
        "Resume of a completed session",
        vec![resume(&id, &token, 3)],
        Code::NotFound,
        Reason::SessionUnknown,
        &["no session", &id],
    );
    run_row(&channel, &late).await;
    good.verified().await;
    let stats = server.station.stats().await;
    assert_eq!(stats.sessions_completed, 3, "{stats:?}");
    assert_eq!(stats.live_sessions, Some(0), "{stats:?}");
    drop(channel);
    server.stop().await;
}
