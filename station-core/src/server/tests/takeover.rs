//! Fencing and takeover: refreshes, deletes and takeovers the store refuses,
//! and repeated `Open`s (ARCHITECTURE.md §2).

use super::*;

#[test]
fn a_refresh_that_finds_the_session_expired_or_gone_says_so() {
    // A stream paused past the TTL finds its session expired (or
    // replaced by a later incarnation); one whose store lost its data
    // finds nothing. Neither is a takeover.
    for (reply, reject) in [
        (StoreReply::Expired, Reject::Expired(id())),
        (StoreReply::Missing, Reject::Lost(id())),
    ] {
        let t0 = Instant::now();
        let mut s = opened(t0, 10);
        s.handle_ack(t0, 1);
        s.handle_timeout(t0 + SEC);
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Store(StoreOp::Update { .. })]
        ));
        s.handle_store(t0 + SEC, reply);
        let out = drain(&mut s);
        assert_eq!(out, [Output::End(End::Rejected(reject.clone()))]);
        assert_eq!(rejected(&out).code(), crate::client::Code::NotFound);
    }
}

#[test]
fn refresh_conflict_means_taken_over() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.handle_ack(t0, 1);
    s.handle_timeout(t0 + SEC);
    assert!(matches!(
        &drain(&mut s)[..],
        [Output::Store(StoreOp::Update { .. })]
    ));
    s.handle_store(t0 + SEC, StoreReply::Conflict);
    let out = drain(&mut s);
    assert_eq!(
        out,
        [Output::End(End::Rejected(Reject::TakenOver(id())))],
        "nothing sent"
    );
    assert!(s.is_ended());
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
            expires_in: Duration::from_secs(30),
        })]
    );
    s.handle_store(t0, StoreReply::Done);
    // The live session's token and seed, not the fresh ones.
    assert_eq!(drain(&mut s), [attached(10, 0), number(0, 10)]);
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
