//! Fencing and takeover: renewals, deletes and takeovers the store
//! refuses, a taken-over stream's bounded overlap, and repeated `Open`s
//! (ARCHITECTURE.md §2, §6).

use super::*;

#[test]
fn a_renewal_that_finds_the_session_expired_or_gone_says_so() {
    // A stream paused past the TTL finds its session expired (or
    // replaced by a later incarnation); one whose store lost its data
    // finds nothing. Neither is a takeover, and neither is released.
    for (reply, reject) in [
        (StoreReply::ExpiredOrReplaced, Reject::Expired(id())),
        (StoreReply::Vanished, Reject::Lost(id())),
    ] {
        let t0 = Instant::now();
        let mut s = renewing(t0);
        s.handle_store(t0 + SEC * 5, reply);
        let out = drain(&mut s);
        assert_eq!(out, [Output::End(End::Rejected(reject.clone()))]);
        assert_eq!(rejected(&out).code(), crate::client::Code::NotFound);
        assert!(s.is_ended());
    }
}

#[test]
fn renewal_conflict_means_taken_over_and_nothing_is_released() {
    let t0 = Instant::now();
    let mut s = renewing(t0);
    // Numbers go on while the renewal is in flight...
    s.handle_ack(t0 + SEC * 5 + ms(50), 6);
    assert_eq!(tick(&mut s, t0 + SEC * 6), [number(6, 20)]);
    // ...until the store says another stream holds the session: the
    // record is no longer this stream's to write.
    s.handle_store(t0 + SEC * 6 + ms(500), StoreReply::Conflict);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Rejected(Reject::TakenOver(id())))]
    );
    assert!(s.is_ended());
    assert_eq!(s.poll_timeout(), None);
    s.handle_closed(t0 + SEC * 7);
    assert_eq!(drain(&mut s), []);
}

/// Invariant 4: a stream taken over at 6 s (after its renewal of 5 s won)
/// sends no number from 15 s on, 2L after that renewal was asked for,
/// however late the store answers its next one (only `Paused`).
#[test]
fn a_taken_over_stream_sends_nothing_2l_after_its_last_winning_renewal() {
    let t0 = Instant::now();
    let mut s = renewing(t0);
    s.handle_store(t0 + SEC * 5, StoreReply::Done);
    run_acked(&mut s, t0, 20, 6..10);
    // The renewal of 10 s is the one that will lose; unanswered for now.
    s.handle_ack(t0 + SEC * 9 + ms(50), 10);
    s.handle_timeout(t0 + SEC * 10);
    assert_eq!(drain(&mut s), [renewal(20, 1, 10), number(10, 20)]);
    for i in 11..15 {
        s.handle_ack(t0 + SEC * (i - 1) + ms(50), i);
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    s.handle_ack(t0 + SEC * 14 + ms(50), 15);
    // From 15 s, `Paused` in place of number 15, once a second.
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 15));
    s.handle_timeout(t0 + SEC * 15);
    s.handle_timeout(t0 + SEC * 15 + ms(500));
    s.handle_timeout(t0 + SEC * 20);
    assert_eq!(drain(&mut s), [paused(15), paused(15)]);
    assert_eq!(s.sent(), 15);
    s.handle_store(t0 + SEC * 20, StoreReply::Conflict);
    assert_eq!(rejected(&drain(&mut s)), Reject::TakenOver(id()));
}

#[test]
fn delete_conflict_means_taken_over() {
    let t0 = Instant::now();
    let mut s = opened(t0, 1);
    s.handle_ack(t0, 1);
    drain(&mut s);
    s.handle_store(t0, StoreReply::Conflict);
    assert_eq!(rejected(&drain(&mut s)), Reject::TakenOver(id()));
}

#[test]
fn takeover_conflict_means_taken_over() {
    let t0 = Instant::now();
    let mut s = Stream::new(cfg(), t0);
    let resume = Resume {
        client_id: ID,
        token: TOKEN.as_bytes(),
        next_index: 0,
    };
    s.handle_resume(t0, resume, fresh());
    drain(&mut s);
    s.handle_store(t0, StoreReply::Loaded(Lookup::Live(record(5, 1))));
    drain(&mut s);
    s.handle_store(t0, StoreReply::Conflict);
    assert_eq!(rejected(&drain(&mut s)), Reject::TakenOver(id()));
}

#[test]
fn repeated_open_takes_over_from_zero_with_the_live_token() {
    let t0 = Instant::now();
    let mut s = Stream::new(cfg(), t0);
    let other = Fresh {
        seed: 1,
        token: Secret([9; 16]),
        incarnation: 99,
        holder: HOLDER,
    };
    s.handle_open(t0, open_msg(10), other);
    drain(&mut s);
    let live = Record {
        acked: 0,
        ..record(10, 3)
    };
    s.handle_store(t0, StoreReply::Exists(live));
    assert_eq!(
        drain(&mut s),
        [Output::Store(StoreOp::Update {
            record: Record {
                generation: 4,
                ..live
            },
            expect_generation: 3,
            expires_in: LEASED,
        })]
    );
    s.handle_store(t0, StoreReply::Done);
    // The live session's token and seed, not the fresh ones.
    assert_eq!(
        drain(&mut s),
        [attached(Attachment::Reopened, 10, 0), number(0, 10)]
    );
}

#[test]
fn open_of_a_live_id_is_refused_unless_it_repeats_the_same_open() {
    let t0 = Instant::now();
    let cases = [
        (
            "different nonce",
            Record {
                nonce: Secret([4; 16]),
                ..record(10, 1)
            },
            &NONCE[..],
        ),
        ("different count", record(11, 1), &NONCE[..]),
        (
            "no nonce",
            Record {
                nonce: Secret::ZERO,
                ..record(10, 1)
            },
            &[][..],
        ),
    ];
    for (what, live, nonce) in cases {
        let mut s = Stream::new(cfg(), t0);
        let open = Open {
            client_id: ID,
            count: 10,
            nonce,
        };
        s.handle_open(t0, open, fresh());
        drain(&mut s);
        s.handle_store(t0, StoreReply::Exists(live));
        assert_eq!(
            rejected(&drain(&mut s)),
            Reject::AlreadyExists(id()),
            "{what}"
        );
    }
}
