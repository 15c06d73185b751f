//! The first message: `Open` and `Resume` are validated, and a resume
//! attaches where the client asks (or is refused).

use super::*;

#[test]
fn count_is_validated() {
    let t0 = Instant::now();
    for bad in [0, MAX_COUNT + 1, u32::MAX] {
        let mut s = Stream::new(cfg(), t0);
        s.handle_open(t0, open_msg(bad), fresh());
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!(rejected(&out), Reject::BadCount(bad));
        assert!(s.is_ended());
    }
    for good in [1, MAX_COUNT] {
        let mut s = Stream::new(cfg(), t0);
        s.handle_open(t0, open_msg(good), fresh());
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Store(StoreOp::Create { record, .. })] if record.count == good),
            "{out:?}"
        );
        assert_eq!(s.client_id(), Some(id()));
    }
}

#[test]
fn malformed_client_ids_are_rejected() {
    let t0 = Instant::now();
    for bad in ["", "nope", "67e5504410b1426f9247bb680e5fe0c8"] {
        let mut s = Stream::new(cfg(), t0);
        s.handle_open(
            t0,
            Open {
                client_id: bad,
                count: 5,
                nonce: &[],
            },
            fresh(),
        );
        assert!(matches!(rejected(&drain(&mut s)), Reject::BadClientId(_)));
        let mut s = Stream::new(cfg(), t0);
        s.handle_resume(
            t0,
            Resume {
                client_id: bad,
                token: TOKEN.as_bytes(),
                next_index: 0,
            },
            fresh(),
        );
        assert!(matches!(rejected(&drain(&mut s)), Reject::BadClientId(_)));
        assert_eq!(s.client_id(), None);
    }
}

#[test]
fn nonce_must_be_empty_or_16_bytes() {
    let t0 = Instant::now();
    for (len, ok) in [(0, true), (1, false), (15, false), (16, true), (17, false)] {
        let nonce = vec![1u8; len];
        let mut s = Stream::new(cfg(), t0);
        let open = Open {
            client_id: ID,
            count: 5,
            nonce: &nonce,
        };
        s.handle_open(t0, open, fresh());
        let out = drain(&mut s);
        if ok {
            let expected = if len == 0 {
                Secret::ZERO
            } else {
                Secret([1; 16])
            };
            assert!(
                matches!(&out[..], [Output::Store(StoreOp::Create { record, .. })] if record.nonce == expected),
                "{out:?}"
            );
        } else {
            assert_eq!(rejected(&out), Reject::BadNonce(len));
        }
    }
}

#[test]
fn token_must_be_16_bytes() {
    let t0 = Instant::now();
    for len in [0, 15, 17, 32] {
        let token = vec![7u8; len];
        let mut s = Stream::new(cfg(), t0);
        s.handle_resume(
            t0,
            Resume {
                client_id: ID,
                token: &token,
                next_index: 0,
            },
            fresh(),
        );
        assert_eq!(rejected(&drain(&mut s)), Reject::MalformedToken(len));
    }
}

#[test]
fn resume_of_unknown_session() {
    let r = resume_rejection(Lookup::Missing, TOKEN.as_bytes(), 0);
    assert_eq!(r, Reject::Unknown(id()));
}

#[test]
fn resume_of_expired_session() {
    let r = resume_rejection(Lookup::Expired, TOKEN.as_bytes(), 0);
    assert_eq!(r, Reject::Expired(id()));
    assert!(r.to_string().contains("expired"));
}

#[test]
fn resume_with_wrong_token() {
    let live = Lookup::Live(record(10, 1));
    let r = resume_rejection(live, &[8; 16], 3);
    assert_eq!(r, Reject::BadToken(id()));
    // The token is checked first: a stranger learns nothing about the count.
    let r = resume_rejection(Lookup::Live(record(10, 1)), &[8; 16], 11);
    assert_eq!(r, Reject::BadToken(id()));
}

#[test]
fn resume_past_the_end() {
    let r = resume_rejection(Lookup::Live(record(10, 1)), TOKEN.as_bytes(), 11);
    assert_eq!(
        r,
        Reject::BadNextIndex {
            next_index: 11,
            count: 10
        }
    );
}

#[test]
fn resume_mid_sequence_sends_from_next_index() {
    let t0 = Instant::now();
    let (s, out) = resumed(t0, 10, 4, 6);
    assert_eq!(out, [attached(Attachment::Resumed, 10, 6), number(6, 10)]);
    assert_eq!(s.sent(), 7);
    assert_eq!(s.poll_timeout(), Some(t0 + SEC));
}

#[test]
fn resume_at_count_waits_for_the_final_ack_then_deletes() {
    let t0 = Instant::now();
    let (mut s, out) = resumed(t0, 10, 1, 10);
    assert_eq!(
        out,
        [attached(Attachment::Resumed, 10, 10)],
        "nothing is sent"
    );
    // It waits for the final ack, not forever.
    assert_eq!(s.poll_timeout(), Some(t0 + s.cfg.silence_timeout));
    s.handle_timeout(t0 + SEC);
    assert_eq!(drain(&mut s), []);
    s.handle_ack(t0 + SEC, 10);
    assert_eq!(drain(&mut s), [delete(2)]);
    assert_eq!(s.poll_timeout(), None, "only the store can move it on");
    s.handle_store(t0 + SEC, StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
    assert!(s.is_ended());
}

#[test]
fn resume_at_count_without_final_ack_goes_silent() {
    let t0 = Instant::now();
    let (mut s, _) = resumed(t0, 10, 1, 10);
    let silence = s.cfg.silence_timeout;
    s.handle_timeout(t0 + silence);
    assert_eq!(rejected(&drain(&mut s)), Reject::Silent(silence));
}
