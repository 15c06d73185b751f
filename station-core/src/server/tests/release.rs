//! The release: a stream that ends for any reason but the store's, while
//! attached, says `End` first, then sets the session's exact expiry, `ttl`
//! after the stream last worked (ARCHITECTURE.md §2), or deletes it if the
//! final acknowledgement had arrived.

use super::*;

/// Opens a session of 20 at `t0` and runs it to number 3 (sent at t0 + 3
/// s), everything acknowledged by t0 + 2.05 s and number 3 not yet.
fn running(t0: Instant) -> Stream {
    let mut s = opened(t0, 20);
    run_acked(&mut s, t0, 20, 1..4);
    s
}

/// Answers the release and checks that only then the stream is over.
fn answer_release(s: &mut Stream, now: Instant, reply: StoreReply) {
    assert!(!s.is_ended(), "ended before its release was answered");
    assert_eq!(s.poll_timeout(), None, "nothing to wait for but the store");
    s.handle_store(now, reply);
    assert_eq!(drain(s), []);
    assert!(s.is_ended());
}

#[test]
fn a_drop_right_after_an_ack_releases_for_a_full_ttl_from_then() {
    let t0 = Instant::now();
    let mut s = running(t0);
    s.handle_ack(t0 + SEC * 3 + ms(20), 4);
    s.handle_closed(t0 + SEC * 3 + ms(30));
    // Everything sent was acknowledged: the stream worked until the drop.
    assert_eq!(
        drain(&mut s),
        [Output::End(End::ClientGone), release(20, 1, 4, TTL)]
    );
    answer_release(&mut s, t0 + SEC * 3 + ms(40), StoreReply::Done);
}

#[test]
fn a_drop_while_a_number_is_unacknowledged_releases_for_ttl_from_when_it_was_sent() {
    let t0 = Instant::now();
    let mut s = running(t0);
    // Numbers 3 (sent at 3 s) and 4 (at 4 s) unacknowledged: the server
    // has been waiting for the client since 3 s.
    assert_eq!(tick(&mut s, t0 + SEC * 4), [number(4, 20)]);
    s.handle_closed(t0 + SEC * 4 + ms(500));
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::ClientGone),
            release(20, 1, 3, TTL - SEC - ms(500))
        ]
    );
    answer_release(&mut s, t0 + SEC * 5, StoreReply::Done);
}

#[test]
fn the_release_counts_from_the_last_ack_or_sign_of_life() {
    let t0 = Instant::now();
    // A partial ack at 4.2 s (of number 3, not 4): waiting since then.
    let mut s = running(t0);
    assert_eq!(tick(&mut s, t0 + SEC * 4), [number(4, 20)]);
    s.handle_ack(t0 + SEC * 4 + ms(200), 4);
    s.handle_closed(t0 + SEC * 4 + ms(500));
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::ClientGone),
            release(20, 1, 4, TTL - ms(300))
        ]
    );
    // A repeated ack at 3.6 s moves nothing forward but proves the client
    // alive: counted from then, not from number 3 at 3 s.
    let mut s = running(t0);
    s.handle_ack(t0 + SEC * 3 + ms(600), 3);
    s.handle_closed(t0 + SEC * 3 + ms(900));
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::ClientGone),
            release(20, 1, 3, TTL - ms(300))
        ]
    );
}

#[test]
fn silence_shutdown_abort_and_protocol_violations_release_too() {
    let t0 = Instant::now();
    let silence = cfg().silence_timeout;
    // Silent since number 3 went out: ttl from then, a silence ago.
    let mut s = running(t0);
    s.handle_timeout(t0 + SEC * 3 + silence);
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::Rejected(Reject::Silent(silence))),
            release(20, 1, 3, TTL - silence)
        ]
    );
    answer_release(&mut s, t0 + SEC * 9, StoreReply::Done);
    type Ending = fn(&mut Stream, Instant);
    let ends: [(&str, Ending, Reject); 4] = [
        (
            "shutdown",
            |s, now| s.begin_shutdown(now),
            Reject::ShuttingDown,
        ),
        (
            "abort",
            |s, now| s.abort(now, Reject::Full(7)),
            Reject::Full(7),
        ),
        (
            "ack beyond what was sent",
            |s, now| s.handle_ack(now, 9),
            Reject::AckBeyondSent { ack: 9, sent: 4 },
        ),
        (
            "second open",
            |s, now| s.handle_open(now, open_msg(20), fresh()),
            Reject::Unexpected("Open after the stream's first message"),
        ),
    ];
    for (what, end, reject) in ends {
        let mut s = running(t0);
        end(&mut s, t0 + SEC * 3 + ms(800));
        assert_eq!(
            drain(&mut s),
            [
                Output::End(End::Rejected(reject)),
                release(20, 1, 3, TTL - ms(800))
            ],
            "{what}"
        );
        answer_release(&mut s, t0 + SEC * 4, StoreReply::Done);
    }
}

#[test]
fn any_answer_to_the_release_ends_the_stream_and_nothing_else_does() {
    let t0 = Instant::now();
    for reply in [
        StoreReply::Done,
        StoreReply::Conflict,
        StoreReply::ExpiredOrReplaced,
        StoreReply::Vanished,
        StoreReply::Unavailable("down".into()),
    ] {
        let mut s = running(t0);
        s.handle_closed(t0 + SEC * 3 + ms(100));
        assert_eq!(drain(&mut s).len(), 2);
        // The client is gone: its messages, timers and the shutdown say
        // nothing more, and leave the release outstanding.
        s.handle_ack(t0 + SEC * 3 + ms(200), 4);
        s.handle_timeout(t0 + SEC * 60);
        s.handle_closed(t0 + SEC * 60);
        s.begin_shutdown(t0 + SEC * 60);
        s.abort(t0 + SEC * 60, Reject::Full(1));
        assert_eq!(drain(&mut s), []);
        answer_release(&mut s, t0 + SEC * 61, reply);
    }
}

#[test]
fn a_release_waits_for_the_renewal_in_flight() {
    let t0 = Instant::now();
    let mut s = running(t0);
    s.handle_ack(t0 + SEC * 3 + ms(50), 4);
    assert_eq!(tick(&mut s, t0 + SEC * 4), [number(4, 20)]);
    s.handle_ack(t0 + SEC * 4 + ms(50), 5);
    s.handle_timeout(t0 + SEC * 5);
    assert_eq!(drain(&mut s), [renewal(20, 1, 5), number(5, 20)]);
    // One store operation at a time: no release yet.
    s.handle_closed(t0 + SEC * 5 + ms(500));
    assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
    assert!(!s.is_ended());
    assert_eq!(s.poll_timeout(), None);
    // The renewal held: release, ttl after number 5 went out.
    s.handle_store(t0 + SEC * 6, StoreReply::Done);
    assert_eq!(drain(&mut s), [release(20, 1, 5, TTL - SEC)]);
    answer_release(&mut s, t0 + SEC * 6, StoreReply::Done);
}

#[test]
fn a_renewal_refused_after_the_end_ends_the_stream_without_a_release() {
    let t0 = Instant::now();
    for reply in [
        StoreReply::Conflict,
        StoreReply::ExpiredOrReplaced,
        StoreReply::Vanished,
        StoreReply::Unavailable("down".into()),
    ] {
        let mut s = opened(t0, 20);
        run_acked(&mut s, t0, 20, 1..5);
        s.handle_timeout(t0 + SEC * 5);
        assert_eq!(drain(&mut s), [renewal(20, 1, 4), number(5, 20)]);
        s.begin_shutdown(t0 + SEC * 5 + ms(100));
        assert_eq!(rejected(&drain(&mut s)), Reject::ShuttingDown);
        assert!(!s.is_ended());
        // The session is no longer this stream's to release.
        s.handle_store(t0 + SEC * 6, reply.clone());
        assert_eq!(drain(&mut s), [], "{reply:?}");
        assert!(s.is_ended());
    }
}

#[test]
fn streams_not_attached_or_complete_end_without_a_release() {
    let t0 = Instant::now();
    // Attaching: the create's lease stands; its late answer is ignored.
    let mut s = creating(t0, 20);
    s.handle_closed(t0 + ms(5));
    assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
    assert!(s.is_ended());
    s.handle_store(t0 + ms(10), StoreReply::Done);
    assert_eq!(drain(&mut s), []);
    // Complete: the delete in flight decides, and shutdown waits for it
    // (the completion module has the cases of the delete itself).
    let mut s = opened(t0, 1);
    s.handle_ack(t0 + ms(50), 1);
    assert!(matches!(
        &drain(&mut s)[..],
        [Output::Store(StoreOp::Delete { .. })]
    ));
    s.begin_shutdown(t0 + ms(60));
    assert_eq!(drain(&mut s), []);
    s.handle_store(t0 + ms(70), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
    assert!(s.is_ended());
}

/// A client that has everything acknowledges the last number and may hang
/// up at once. If a renewal was in flight then, the delete had not gone
/// out yet: the stream still deletes, once the renewal is answered, and
/// ends `Completed` (counted, though nobody hears it).
#[test]
fn a_client_that_hangs_up_after_its_final_ack_still_has_its_session_deleted() {
    let t0 = Instant::now();
    let mut s = last_number_with_renewal_in_flight(t0);
    // The final acknowledgement waits for the renewal's answer.
    s.handle_ack(t0 + SEC * 5 + ms(50), 6);
    assert_eq!(drain(&mut s), []);
    s.handle_closed(t0 + SEC * 5 + ms(60));
    assert_eq!(drain(&mut s), []);
    assert!(!s.is_ended());
    s.handle_store(t0 + SEC * 5 + ms(70), StoreReply::Done);
    assert_eq!(drain(&mut s), [delete(1)]);
    s.handle_store(t0 + SEC * 5 + ms(80), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
    assert!(s.is_ended());
    let mut s = opened(t0, 2);
    s.handle_ack(t0 + ms(50), 1);
    s.handle_timeout(t0 + SEC);
    assert_eq!(drain(&mut s), [number(1, 2)]);
    s.handle_ack(t0 + SEC + ms(50), 2);
    let delete = drain(&mut s);
    assert!(matches!(
        &delete[..],
        [Output::Store(StoreOp::Delete { .. })]
    ));
    // Hung up with the delete already out: it still completes.
    s.handle_closed(t0 + SEC + ms(60));
    assert_eq!(drain(&mut s), []);
    s.handle_store(t0 + SEC + ms(90), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
    assert!(s.is_ended());
}

/// ARCHITECTURE.md §2: the session expires `ttl` after the stream last
/// worked, which for a stream whose client acknowledged everything is when
/// it ended, not when the store got round to answering the renewal in
/// flight then.
#[test]
fn a_release_deferred_behind_a_renewal_counts_from_when_the_stream_ended() {
    let t0 = Instant::now();
    let mut s = renewing(t0);
    s.handle_ack(t0 + SEC * 5 + ms(50), 6);
    s.handle_closed(t0 + SEC * 5 + ms(500));
    assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
    // Answered 2 s late: the release must still end at t0 + 35.5 s.
    s.handle_store(t0 + SEC * 7 + ms(500), StoreReply::Done);
    assert_eq!(drain(&mut s), [release(20, 1, 6, TTL - SEC * 2)]);
}
