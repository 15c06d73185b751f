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
                Output::Send(n) => {
                    sent.push(n);
                    s.handle_ack(now, n.index + 1);
                }
                Output::End(end) => {
                    assert_eq!(end, End::Completed);
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
    assert_eq!(
        drain(&mut s),
        [Output::Store(StoreOp::Delete {
            client_id: id(),
            incarnation: INCARNATION,
            generation: 1
        })]
    );
    s.handle_store(t0 + SEC + ms(6), StoreReply::Done);
    assert_eq!(drain(&mut s), [Output::End(End::Completed)]);
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
    assert_eq!(
        drain(&mut s),
        [Output::Store(StoreOp::Delete {
            client_id: id(),
            incarnation: INCARNATION,
            generation: 1
        })]
    );
    s.handle_store(t0 + LEASE + ms(2), StoreReply::Done);
    assert_eq!(drain(&mut s), [Output::End(End::Completed)]);
    assert!(s.is_ended());
}
