//! How a stream ends without completing: silence timeouts, shutdown, abort,
//! the client leaving and the store failing.

use super::*;

#[test]
fn silent_before_the_first_message() {
    let t0 = Instant::now();
    let mut s = Stream::new(cfg(), t0);
    let silence = s.cfg.silence_timeout;
    assert_eq!(s.poll_timeout(), Some(t0 + silence));
    s.handle_timeout(t0 + silence - ms(1));
    assert_eq!(drain(&mut s), [], "early timeout is a no-op");
    s.handle_timeout(t0 + silence);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Rejected(Reject::Silent(silence)))]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn silent_while_numbers_are_unacknowledged() {
    let t0 = Instant::now();
    let mut s = opened(t0, 100);
    let silence = s.cfg.silence_timeout;
    assert_eq!(silence, Duration::from_secs(5));
    // Numbers keep coming each second while the client says nothing...
    for i in 1..5 {
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 100)]);
    }
    // ...until the silence timeout, counted from the first unacked number;
    // due with the lease's renewal, it ends the stream instead.
    assert_eq!(s.poll_timeout(), Some(t0 + silence));
    s.handle_timeout(t0 + silence);
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::Rejected(Reject::Silent(silence))),
            release(100, 1, 0, TTL - silence)
        ]
    );
}

/// A server that runs late itself may not have read the acknowledgement it
/// waits for: it waits that much longer, up to what the TTL allows, and
/// the release still counts the TTL from when the stream last worked.
#[test]
fn a_server_running_late_waits_that_much_longer_for_its_client() {
    let t0 = Instant::now();
    let mut s = opened(t0, 100);
    let silence = s.cfg.silence_timeout;
    s.handle_running_late(SEC * 2);
    for i in 1..5 {
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 100)]);
    }
    // The plain timeout passes with the renewal: the stream goes on.
    assert_eq!(
        renewing_tick(&mut s, t0 + silence, renewal(100, 1, 0)),
        [number(5, 100)]
    );
    assert_eq!(tick(&mut s, t0 + SEC * 6), [number(6, 100)]);
    assert_eq!(s.poll_timeout(), Some(t0 + silence + SEC * 2));
    s.handle_timeout(t0 + silence + SEC * 2);
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::Rejected(Reject::Silent(silence + SEC * 2))),
            release(100, 1, 0, TTL - silence - SEC * 2)
        ]
    );
}

#[test]
fn what_lateness_excuses_is_bounded_by_the_ttl_and_goes_with_it() {
    let t0 = Instant::now();
    // Its one number went out at t0; the final acknowledgement never comes.
    let mut s = opened(t0, 1);
    let silence = s.cfg.silence_timeout;
    // An hour late excuses no more than a working stream may be quiet: an
    // interval less than the TTL in all. The lease is renewed meanwhile.
    s.handle_running_late(SEC * 3600);
    for k in 1..=5 {
        assert_eq!(renewing_tick(&mut s, t0 + LEASE * k, renewal(1, 1, 0)), []);
    }
    assert_eq!(s.poll_timeout(), Some(t0 + TTL - SEC));
    // On time again: the plain timeout, long past, ends it; the session
    // still expires a TTL after the stream last worked.
    s.handle_running_late(Duration::ZERO);
    assert_eq!(s.poll_timeout(), Some(t0 + silence));
    s.handle_timeout(t0 + SEC * 26);
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::Rejected(Reject::Silent(silence))),
            release(1, 1, 0, TTL - SEC * 26)
        ]
    );
}

/// A stream that never sent its first message has no session to keep: the
/// server's lateness excuses nothing there.
#[test]
fn lateness_excuses_no_silence_before_the_first_message() {
    let t0 = Instant::now();
    let mut s = Stream::new(cfg(), t0);
    let silence = s.cfg.silence_timeout;
    s.handle_running_late(SEC * 3);
    assert_eq!(s.poll_timeout(), Some(t0 + silence));
    s.handle_timeout(t0 + silence);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Rejected(Reject::Silent(silence)))]
    );
}

#[test]
fn acks_restart_the_silence_timer() {
    let t0 = Instant::now();
    let mut s = opened(t0, 100);
    run_acked(&mut s, t0, 100, 1..20);
    assert!(!s.is_ended());
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 20));
}

#[test]
fn silent_waiting_for_the_final_ack() {
    let t0 = Instant::now();
    let mut s = opened(t0, 1);
    let silence = s.cfg.silence_timeout;
    assert_eq!(s.poll_timeout(), Some(t0 + silence));
    s.handle_timeout(t0 + silence);
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::Rejected(Reject::Silent(silence))),
            release(1, 1, 0, TTL - silence)
        ]
    );
}

#[test]
fn early_timeouts_are_no_ops() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    for early in [t0, t0 + ms(1), t0 + SEC - ms(1)] {
        s.handle_timeout(early);
        assert_eq!(drain(&mut s), []);
        assert_eq!(s.poll_timeout(), Some(t0 + SEC));
    }
    // While a store operation is outstanding nothing times out but silence.
    let mut s = creating(t0, 10);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(drain(&mut s), []);
}

#[test]
fn shutdown_and_abort_end_the_stream() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.begin_shutdown(t0);
    assert_eq!(rejected(&drain(&mut s)), Reject::ShuttingDown);
    s.begin_shutdown(t0);
    assert_eq!(drain(&mut s), []);
    let mut s = Stream::new(cfg(), t0);
    s.begin_shutdown(t0);
    assert_eq!(rejected(&drain(&mut s)), Reject::ShuttingDown);
    let mut s = opened(t0, 10);
    s.abort(t0, Reject::InjectedFault("every 3rd"));
    assert_eq!(rejected(&drain(&mut s)), Reject::InjectedFault("every 3rd"));
    s.abort(t0, Reject::Full(1));
    assert_eq!(drain(&mut s), []);
}

#[test]
fn client_gone_ends_quietly_and_releases() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.handle_closed(t0 + ms(300));
    // Number 0 was never acknowledged: ttl from when it went out.
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::ClientGone),
            release(10, 1, 0, TTL - ms(300))
        ]
    );
    s.handle_closed(t0 + ms(400));
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn store_unavailable_ends_the_stream() {
    let t0 = Instant::now();
    // During attach.
    let mut s = creating(t0, 10);
    s.handle_store(t0, StoreReply::Unavailable("timeout".into()));
    assert_eq!(
        rejected(&drain(&mut s)),
        Reject::StoreUnavailable("timeout".into())
    );
    // During a renewal: asked again a quarter lease later, numbers still
    // flowing while the lease holds (until 10 s: the create at 0 s was the
    // last write confirmed), none after it; the stream ends, with no
    // release (the store is down), only once the record cannot be alive
    // any more (that create set it to live TTL + L).
    let mut s = renewing(t0);
    s.handle_ack(t0 + SEC * 5 + ms(50), 6);
    let failed = t0 + SEC * 7;
    s.handle_store(failed, StoreReply::Unavailable("timeout".into()));
    assert_eq!(drain(&mut s), [number(6, 20), number(7, 20)]);
    let retry = failed + LEASE / 4;
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 8));
    s.handle_ack(t0 + SEC * 7 + ms(50), 8);
    s.handle_timeout(retry);
    assert_eq!(drain(&mut s), [renewal(20, 1, 8), number(8, 20)]);
    s.handle_ack(retry + ms(50), 9);
    let lease_end = t0 + SEC * 10;
    let alive_until = t0 + LEASED;
    let mut ended = None;
    let mut retries = 0;
    let mut pauses = 0;
    let mut at = t0 + SEC * 9;
    s.handle_store(at, StoreReply::Unavailable("down".into()));
    for _ in 0..100 {
        for out in drain(&mut s) {
            match out {
                Output::Send(n) => {
                    assert!(
                        at < lease_end,
                        "{n:?} sent at {:?}, past the lease",
                        at - t0
                    );
                    s.handle_ack(at + ms(50), n.index + 1);
                }
                Output::End(end) => ended = Some((at, end)),
                other => panic!("at {:?}: {other:?}", at - t0),
            }
        }
        if ended.is_some() {
            break;
        }
        at = s.poll_timeout().expect("a retry is due");
        s.handle_timeout(at);
        let asked = drain(&mut s);
        pauses += asked
            .iter()
            .filter(|o| matches!(o, Output::Paused { .. }))
            .count();
        if let [Output::Store(StoreOp::Update { .. }), ..] = asked[..] {
            retries += 1;
            s.handle_store(at, StoreReply::Unavailable("down".into()));
        } else if at >= lease_end {
            assert!(
                asked.iter().all(|o| matches!(o, Output::Paused { .. })),
                "{asked:?} at {:?}, past the lease",
                at - t0
            );
        } else {
            assert!(
                asked.iter().all(|o| matches!(o, Output::Send(_))),
                "{asked:?}"
            );
            assert!(at < lease_end, "{asked:?} at {:?}, past the lease", at - t0);
        }
    }
    let (at, end) = ended.expect("the stream ends");
    assert_eq!(end, End::Rejected(Reject::StoreUnavailable("down".into())));
    assert!(
        at + LEASE >= alive_until && at < alive_until,
        "ended at {:?}; the record lives until {:?}",
        at - t0,
        alive_until - t0
    );
    // A lease apart past the lease (10 s to 35 s), not a quarter lease.
    assert_eq!(retries, 5, "retries past the lease");
    // One a second from the lease's end (10 s) to the stream's.
    let held = (at - lease_end).as_secs() as usize;
    assert!(
        pauses.abs_diff(held) <= 1,
        "{pauses} Paused in {held} s past the lease"
    );
    assert!(s.is_ended());
}

#[test]
fn a_renewal_that_lands_late_lets_the_stream_go_on() {
    let t0 = Instant::now();
    let mut s = renewing(t0);
    s.handle_ack(t0 + SEC * 5 + ms(50), 6);
    // The renewal asked at 5 s fails at 11 s, past the lease (10 s).
    s.handle_store(t0 + SEC * 11, StoreReply::Unavailable("timeout".into()));
    assert_eq!(drain(&mut s), [paused(6)], "no number past the lease");
    // A `Paused` a second in place of number 6 until the retry.
    let retry = t0 + SEC * 11 + LEASE;
    for beat in 1..LEASE.as_secs() as u32 {
        assert_eq!(s.poll_timeout(), Some(t0 + SEC * (11 + beat)));
        s.handle_timeout(t0 + SEC * (11 + beat));
        assert_eq!(drain(&mut s), [paused(6)]);
    }
    assert_eq!(s.poll_timeout(), Some(retry));
    s.handle_timeout(retry);
    assert!(matches!(
        drain(&mut s)[..],
        [
            Output::Store(StoreOp::Update { .. }),
            Output::Paused { next_index: 6 }
        ]
    ));
    // The store is back: the numbers that fell due go out.
    s.handle_store(retry + ms(10), StoreReply::Done);
    let sent = drain(&mut s);
    assert!(
        !sent.is_empty() && sent.iter().all(|o| matches!(o, Output::Send(_))),
        "{sent:?}"
    );
    assert!(!s.is_ended());
}
