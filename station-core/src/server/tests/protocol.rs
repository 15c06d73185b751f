//! Clients and stores that break the protocol: acknowledgements out of
//! range, messages out of order, store answers that do not fit.

use super::*;

#[test]
fn acks_must_not_go_backwards() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.handle_ack(t0 + ms(10), 1);
    assert_eq!(drain(&mut s), []);
    assert_eq!(tick(&mut s, t0 + SEC), [number(1, 10)]);
    s.handle_ack(t0 + SEC, 2);
    s.handle_ack(t0 + SEC, 2); // a repeat is fine
    assert_eq!(drain(&mut s), []);
    s.handle_ack(t0 + SEC + ms(100), 1);
    // A broken client still leaves its session to resume, released with
    // what it acknowledged.
    assert_eq!(
        drain(&mut s),
        [
            Output::End(End::Rejected(Reject::AckBackwards { ack: 1, acked: 2 })),
            release(10, 1, 2, TTL)
        ]
    );
    assert!(!s.is_ended());
    s.handle_store(t0 + SEC + ms(100), StoreReply::Done);
    assert!(s.is_ended());
}

#[test]
fn acks_must_not_pass_what_was_sent() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.handle_ack(t0, 2);
    assert_eq!(
        rejected(&drain(&mut s)),
        Reject::AckBeyondSent { ack: 2, sent: 1 }
    );
}

#[test]
fn out_of_order_messages_are_rejected() {
    let t0 = Instant::now();
    // Ack before Open or Resume.
    let mut s = Stream::new(cfg(), t0);
    s.handle_ack(t0, 0);
    assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
    // A second Open, and a Resume after an Open.
    let mut s = opened(t0, 10);
    s.handle_open(t0, open_msg(10), fresh());
    assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
    let mut s = opened(t0, 10);
    let resume = Resume {
        client_id: ID,
        token: TOKEN.as_bytes(),
        next_index: 0,
    };
    s.handle_resume(t0, resume, fresh());
    assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
    // Ack while attaching.
    let mut s = creating(t0, 10);
    s.handle_ack(t0, 0);
    assert!(matches!(rejected(&drain(&mut s)), Reject::Unexpected(_)));
    // The store's late answer after the end is ignored.
    s.handle_store(t0, StoreReply::Done);
    assert_eq!(drain(&mut s), []);
    // Input after the end is ignored.
    s.handle_ack(t0, 0);
    s.handle_timeout(t0 + Duration::from_secs(100));
    s.handle_closed(t0);
    s.begin_shutdown(t0);
    assert_eq!(drain(&mut s), []);
}

#[test]
fn store_answer_without_request_ends_the_stream() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.handle_store(t0, StoreReply::Done);
    assert!(matches!(
        rejected(&drain(&mut s)),
        Reject::StoreUnavailable(_)
    ));
}

#[test]
fn store_answer_that_does_not_fit_ends_the_stream() {
    let t0 = Instant::now();
    let mut s = creating(t0, 10);
    s.handle_store(t0, StoreReply::Conflict);
    assert!(matches!(
        rejected(&drain(&mut s)),
        Reject::StoreUnavailable(_)
    ));
}
