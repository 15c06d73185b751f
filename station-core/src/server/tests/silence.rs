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
    // During a renewal: asked again a quarter lease later while the lease
    // holds (until 10 s), numbers still flowing; then the stream ends,
    // with no release (the store is down).
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
    // Too close to the lease's end to ask again.
    s.handle_store(t0 + SEC * 9, StoreReply::Unavailable("down".into()));
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Rejected(Reject::StoreUnavailable(
            "down".into()
        )))]
    );
    assert!(s.is_ended());
}
