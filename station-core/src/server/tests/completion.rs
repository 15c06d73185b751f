//! Completion: the checksum on the final number, and the final
//! acknowledgement deleting the record.

use super::*;

/// Runs a whole session, acknowledging every number, and returns the
/// numbers sent.
fn run_to_completion(count: u32) -> Vec<Number> {
    let t0 = Instant::now();
    let mut s = Stream::new(cfg(), t0);
    s.handle_open(t0, open_msg(count), fresh());
    let mut sent = Vec::new();
    let mut now = t0;
    loop {
        while let Some(out) = s.poll_output() {
            match out {
                Output::Store(StoreOp::Delete {
                    client_id,
                    generation,
                    ..
                }) => {
                    assert_eq!((client_id, generation), (id(), 1));
                    assert_eq!(sent.len() as u32, count, "deleted before the end");
                    s.handle_store(now, StoreReply::Done);
                }
                Output::Store(_) => s.handle_store(now, StoreReply::Done),
                Output::Attached(a) => assert_eq!((a.count, a.next_index), (count, 0)),
                Output::Paused { .. } => panic!("paused with a store that answers at once"),
                Output::Send(n) => {
                    sent.push(n);
                    s.handle_ack(now, n.index + 1);
                }
                Output::End(end) => {
                    assert_eq!(end, End::Completed { deleted: true });
                    assert!(s.is_ended());
                    assert_eq!(s.poll_timeout(), None);
                    return sent;
                }
            }
        }
        now = s.poll_timeout().expect("a live session has a timer");
        s.handle_timeout(now);
    }
}

#[test]
fn checksum_is_on_the_final_number_only() {
    // 12 numbers cross two renewals.
    for count in [1, 2, 7, 12] {
        let sent = run_to_completion(count);
        let expected: Vec<Number> = (0..count)
            .map(|i| Number {
                index: i,
                value: sequence::value(SEED, i),
                checksum: (i + 1 == count).then(|| sequence::checksum(SEED, count)),
            })
            .collect();
        assert_eq!(sent, expected);
    }
}

#[test]
fn final_ack_deletes_and_completes() {
    let t0 = Instant::now();
    let mut s = opened(t0, 2);
    s.handle_ack(t0, 1);
    assert_eq!(tick(&mut s, t0 + SEC), [number(1, 2)]);
    s.handle_ack(t0 + SEC + ms(5), 2);
    assert_eq!(drain(&mut s), [delete(1)]);
    s.handle_store(t0 + SEC + ms(6), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
    assert!(s.is_ended());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn final_ack_during_a_renewal_deletes_after_it() {
    let t0 = Instant::now();
    let mut cfg = Config::new(Duration::ZERO, TTL);
    cfg.window = 1;
    let mut s = opened_with(cfg, t0, 2);
    // The window opens after the lease's renewal point: the ack renews,
    // and the final number goes out without waiting for it.
    s.handle_ack(t0 + LEASE, 1);
    assert_eq!(drain(&mut s), [renewal(2, 1, 1), number(1, 2)]);
    // One store operation at a time: the delete waits for the renewal.
    s.handle_ack(t0 + LEASE, 2);
    assert_eq!(drain(&mut s), []);
    s.handle_store(t0 + LEASE + ms(1), StoreReply::Done);
    assert_eq!(drain(&mut s), [delete(1)]);
    s.handle_store(t0 + LEASE + ms(2), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
    assert!(s.is_ended());
}

/// The client that has everything: acknowledged, final ack in, the delete
/// out. Returns the stream and when the final ack came.
fn deleting(t0: Instant) -> (Stream, Instant) {
    let mut s = opened(t0, 2);
    s.handle_ack(t0 + ms(5), 1);
    assert_eq!(tick(&mut s, t0 + SEC), [number(1, 2)]);
    let acked = t0 + SEC + ms(5);
    s.handle_ack(acked, 2);
    assert_eq!(drain(&mut s), [delete(1)]);
    (s, acked)
}

/// A client half-closes after its final ack, often before the store
/// answered the delete (Redis always is that slow): that is a goodbye, not
/// a protocol error.
#[test]
fn a_half_close_after_the_final_ack_waits_for_the_delete_and_completes() {
    let t0 = Instant::now();
    let (mut s, acked) = deleting(t0);
    s.handle_half_closed(acked + ms(1));
    assert_eq!(drain(&mut s), []);
    assert!(!s.is_ended());
    s.handle_store(acked + ms(20), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
}

#[test]
fn a_half_close_before_the_final_ack_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut s = opened(t0, 2);
    s.handle_ack(t0 + ms(5), 1);
    s.handle_half_closed(t0 + ms(6));
    assert!(matches!(
        &drain(&mut s)[..],
        [
            Output::End(End::Rejected(Reject::Unexpected(_))),
            Output::Store(StoreOp::Update { .. })
        ]
    ));
}

/// A slow or failed delete is tried again (deletes are idempotent) a
/// quarter lease apart, for a lease; the client that has everything hears
/// OK either way, never "store unavailable".
#[test]
fn a_failed_delete_is_retried_then_completes() {
    let t0 = Instant::now();
    let (mut s, acked) = deleting(t0);
    let failed = acked + SEC * 2;
    s.handle_store(
        failed,
        StoreReply::Unavailable("no answer within 2s".into()),
    );
    assert_eq!(drain(&mut s), []);
    let retry = failed + LEASE / 4;
    assert_eq!(s.poll_timeout(), Some(retry));
    s.handle_timeout(retry - ms(1));
    assert_eq!(drain(&mut s), [], "not before its time");
    s.handle_timeout(retry);
    assert_eq!(drain(&mut s), [delete(1)]);
    s.handle_store(retry + ms(3), StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
}

#[test]
fn a_delete_that_keeps_failing_still_completes_within_a_lease() {
    let t0 = Instant::now();
    let (mut s, acked) = deleting(t0);
    let mut now = acked;
    let mut attempts = 1;
    loop {
        now += ms(10);
        s.handle_store(now, StoreReply::Unavailable("refused".into()));
        let out = drain(&mut s);
        if out == [Output::End(End::Completed { deleted: false })] {
            break;
        }
        assert_eq!(out, []);
        now = s.poll_timeout().expect("a retry is due");
        s.handle_timeout(now);
        assert_eq!(drain(&mut s), [delete(1)]);
        attempts += 1;
        assert!(attempts < 10, "retried without end");
    }
    assert!(s.is_ended());
    assert!(now <= acked + LEASE, "gave up at {:?}", now - acked);
    assert_eq!(attempts, 4, "a quarter lease apart for a lease");
}

/// Shutdown and a hang-up neither cut a completing stream short nor stop
/// its delete: it still ends `Completed` once the store answers.
#[test]
fn shutdown_or_a_hang_up_during_the_delete_waits_for_it() {
    let t0 = Instant::now();
    for hang_up in [false, true] {
        let (mut s, acked) = deleting(t0);
        match hang_up {
            true => s.handle_closed(acked + ms(1)),
            false => s.begin_shutdown(acked + ms(1)),
        }
        s.abort(acked + ms(2), Reject::ShuttingDown);
        assert_eq!(drain(&mut s), []);
        s.handle_store(acked + SEC, StoreReply::Unavailable("slow".into()));
        let retry = s.poll_timeout().expect("a retry is due");
        s.handle_timeout(retry);
        assert_eq!(drain(&mut s), [delete(1)]);
        s.handle_store(retry + ms(1), StoreReply::Done);
        assert_eq!(
            drain(&mut s),
            [Output::End(End::Completed { deleted: true })]
        );
    }
}

/// Once the final ack is in, later messages change nothing (a client
/// cannot stretch the delete's retries).
#[test]
fn acks_after_the_final_one_are_ignored() {
    let t0 = Instant::now();
    let (mut s, acked) = deleting(t0);
    s.handle_ack(acked + ms(1), 2);
    s.handle_ack(acked + ms(2), 0);
    assert_eq!(drain(&mut s), []);
}

/// The final ack arrives while a renewal is in flight, and the renewal
/// fails: the delete goes out at the renewal's retry, and completes.
#[test]
fn a_failed_renewal_after_the_final_ack_leads_to_the_delete() {
    let t0 = Instant::now();
    let mut s = last_number_with_renewal_in_flight(t0);
    let acked = t0 + SEC * 5 + ms(50);
    s.handle_ack(acked, 6);
    s.handle_store(acked + ms(10), StoreReply::Unavailable("down".into()));
    assert_eq!(drain(&mut s), []);
    let retry = s.poll_timeout().expect("the delete is due");
    assert_eq!(retry, acked + ms(10) + LEASE / 4);
    s.handle_timeout(retry);
    assert_eq!(drain(&mut s), [delete(1)]);
    s.handle_store(retry, StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [Output::End(End::Completed { deleted: true })]
    );
}
