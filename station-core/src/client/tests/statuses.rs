//! How the client judges a failed stream: by reason when it has one, else by
//! code, and the server's pushback (ARCHITECTURE.md §2).

use super::*;

#[test]
fn statuses_without_a_reason_are_judged_by_code() {
    let t0 = Instant::now();
    let retried = [
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::ResourceExhausted,
        Code::Aborted,
        Code::Cancelled,
        Code::Unknown,
        Code::Internal,
    ];
    for code in retried {
        let mut c = new_client(t0, 3);
        let end = StreamEnd::code_only(code, "try again");
        let (_, out) = fail_and_reconnect(&mut c, t0, end);
        assert!(
            matches!(&out[..], [Output::Connect(_)]),
            "{code:?}: {out:?}"
        );
    }
    // An early OK end and a broken transport are retried too.
    for end in [StreamEnd::Ok, transport()] {
        let mut c = new_client(t0, 3);
        let (_, out) = fail_and_reconnect(&mut c, t0, end);
        assert!(matches!(&out[..], [Output::Connect(_)]), "{out:?}");
    }
    // Every other code is final; the message is never read, so
    // "expired" in it does not make an expiry.
    let expired_text = Reject::Expired(id()).to_string();
    for code in [
        Code::NotFound,
        Code::PermissionDenied,
        Code::InvalidArgument,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::DataLoss,
        Code::Unauthenticated,
    ] {
        let o = end_after_one_number(t0, StreamEnd::code_only(code, expired_text.clone()));
        assert_eq!(
            o.verdict,
            Verdict::Rejected {
                code,
                reason: None,
                message: expired_text.clone(),
            }
        );
    }
}

/// Attaches a session of 3, takes one number, then ends the stream.
fn end_after_one_number(t0: Instant, end: StreamEnd) -> Outcome {
    let mut c = new_client(t0, 3);
    c.handle_attached(t0, attached(3, 0, 1));
    feed(&mut c, t0, 0..1, 3);
    c.handle_end(t0, end);
    let out = drain(&mut c);
    let o = finished(&out);
    assert_eq!((o.received, o.server_checksum), (1, None));
    assert!(c.is_finished());
    o
}

#[test]
fn statuses_with_a_reason_are_judged_by_reason_not_code() {
    let t0 = Instant::now();
    for reason in Reason::ALL {
        // A code that disagrees with the reason's retryability, so the
        // decision can only come from the reason.
        let code = if reason.is_retryable() {
            Code::InvalidArgument
        } else {
            Code::Unavailable
        };
        let end = StreamEnd::Status {
            code,
            message: "expired".into(),
            reason: Some(reason),
            retry_after: None,
        };
        if reason.is_retryable() {
            let mut c = new_client(t0, 3);
            let (_, out) = fail_and_reconnect(&mut c, t0, end);
            assert!(
                matches!(&out[..], [Output::Connect(_)]),
                "{reason}: {out:?}"
            );
            continue;
        }
        let o = end_after_one_number(t0, end);
        match reason {
            Reason::SessionExpired => {
                assert_eq!(o.verdict, Verdict::Expired("expired".into()))
            }
            Reason::SessionLost | Reason::SessionUnknown => {
                let Verdict::Rejected {
                    reason: got,
                    message,
                    ..
                } = &o.verdict
                else {
                    panic!("{reason}: {o:?}")
                };
                assert_eq!(*got, Some(reason));
                let says = if reason == Reason::SessionLost {
                    "lost the session"
                } else {
                    "does not know the session"
                };
                assert!(message.contains(says), "{message}");
            }
            _ => assert_eq!(
                o.verdict,
                Verdict::Rejected {
                    code,
                    reason: Some(reason),
                    message: "expired".into()
                },
                "{reason}"
            ),
        }
    }
}

#[test]
fn pushback_delays_the_next_attempt() {
    let t0 = Instant::now();
    let cfg = Config::default();
    for wait in [ms(1), SEC * 3, SEC * 20] {
        let mut c = new_client(t0, 10);
        c.handle_attached(t0, attached(10, 0, 1));
        feed(&mut c, t0, 0..1, 10);
        let end = with_pushback(StreamEnd::rejected(&Reject::Full(1)), wait);
        let (at, out) = fail_and_reconnect(&mut c, t0, end);
        assert_eq!(out, [resume(1)], "{wait:?}");
        // At least the pushback, and no later than the backoff would
        // have been anyway if that is longer.
        assert!(at - t0 >= wait, "{wait:?}: {:?}", at - t0);
        assert!(
            at - t0 <= wait.max(cfg.backoff_initial),
            "{wait:?}: {:?}",
            at - t0
        );
    }
    // On a status that is not retried, pushback changes nothing.
    let end = with_pushback(StreamEnd::rejected(&Reject::BadToken(id())), SEC);
    assert!(matches!(
        end_after_one_number(t0, end).verdict,
        Verdict::Rejected { .. }
    ));
}

#[test]
fn pushback_past_the_deadline_gives_up_at_once() {
    let t0 = Instant::now();
    let cfg = Config::default();
    // Attached: the session expires TTL after the last number.
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    let end = with_pushback(StreamEnd::rejected(&Reject::ShuttingDown), TTL);
    c.handle_end(t0 + SEC, end);
    let o = finished(&drain(&mut c));
    assert!(
        matches!(&o.verdict, Verdict::LikelyExpired(m) if m.contains("asked us to wait")),
        "{o:?}"
    );
    // Just inside: waits, and tries once before the expiry.
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    let wait = TTL - SEC - cfg.backoff_initial;
    let end = with_pushback(StreamEnd::rejected(&Reject::ShuttingDown), wait);
    let (at, out) = fail_and_reconnect(&mut c, t0 + SEC, end);
    assert_eq!(out, [resume(1)]);
    assert_eq!(at, t0 + SEC + wait);
    // Never attached: the give-up deadline bounds it instead.
    let mut c = new_client(t0, 10);
    let wait = cfg.give_up_without_progress;
    c.handle_end(
        t0,
        with_pushback(StreamEnd::rejected(&Reject::Full(1)), wait),
    );
    let o = finished(&drain(&mut c));
    assert!(
        matches!(&o.verdict, Verdict::Unreachable(m) if m.contains("asked us to wait")),
        "{o:?}"
    );
    // An absurd pushback is no exception.
    let mut c = new_client(t0, 10);
    let huge = Duration::from_secs(u64::MAX);
    c.handle_end(
        t0,
        with_pushback(StreamEnd::rejected(&Reject::Full(1)), huge),
    );
    assert!(matches!(
        finished(&drain(&mut c)).verdict,
        Verdict::Unreachable(_)
    ));
}
