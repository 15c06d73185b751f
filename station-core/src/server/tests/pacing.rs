//! Pacing: one number per interval, a refresh before each burst, the expiry
//! each refresh sets, and the window (ARCHITECTURE.md §2).

use super::*;

#[test]
fn numbers_are_paced_one_per_interval_with_a_refresh_before_each() {
    let t0 = Instant::now();
    let count = 5;
    let mut s = Stream::new(cfg(), t0);
    s.handle_open(t0 + ms(10), open_msg(count), fresh());
    drain(&mut s);
    let attach_at = t0 + ms(20);
    s.handle_store(attach_at, StoreReply::Done);
    // Attached and the first number at once.
    assert_eq!(drain(&mut s), [attached(count, 0), number(0, count)]);
    for i in 1..count {
        let due = attach_at + SEC * i;
        assert_eq!(s.poll_timeout(), Some(due), "number {i}");
        // Early timers do nothing.
        s.handle_timeout(due - ms(1));
        assert_eq!(drain(&mut s), []);
        // The previous number is acknowledged 50 ms after it was sent.
        let ack_at = due - SEC + ms(50);
        s.handle_ack(ack_at, i);
        assert_eq!(drain(&mut s), []);
        let (op, out) = tick(&mut s, due);
        let mut expected = record(count, 1);
        expected.acked = i;
        assert_eq!(
            op,
            StoreOp::Update {
                record: expected,
                expect_generation: 1,
                // The client has acknowledged everything sent: the
                // stream works now, so the record lives a full TTL.
                expires_in: Duration::from_secs(30),
            }
        );
        assert_eq!(out, [number(i, count)], "exactly one number per tick");
    }
    assert_eq!(s.sent(), count);
    // Everything sent: only the silence timer is left.
    assert_eq!(
        s.poll_timeout(),
        Some(attach_at + SEC * (count - 1) + s.cfg.silence_timeout)
    );
}

#[test]
fn pacing_after_a_resume_uses_the_new_generation() {
    let t0 = Instant::now();
    let (mut s, out) = resumed(t0, 10, 3, 4);
    assert_eq!(out, [attached(10, 4), number(4, 10)]);
    s.handle_ack(t0 + ms(100), 5);
    let (op, out) = tick(&mut s, t0 + SEC);
    let expected = Record {
        acked: 5,
        generation: 4,
        ..record(10, 3)
    };
    assert_eq!(
        op,
        StoreOp::Update {
            record: expected,
            expect_generation: 4,
            expires_in: Duration::from_secs(30),
        }
    );
    assert_eq!(out, [number(5, 10)]);
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 2));
}

fn refresh_expiry(op: &StoreOp) -> Duration {
    match op {
        StoreOp::Update { expires_in, .. } => *expires_in,
        other => panic!("expected a refresh, got {other:?}"),
    }
}

#[test]
fn refresh_expiry_counts_from_when_the_stream_last_worked() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    // No ack for a while (still under the silence timeout): the expiry
    // is not pushed forward by the server's own sending; the stream last
    // worked when number 0 went out at t0.
    let (op, _) = tick(&mut s, t0 + SEC);
    assert_eq!(refresh_expiry(&op), Duration::from_secs(29));
    let (op, _) = tick(&mut s, t0 + SEC * 2);
    assert_eq!(refresh_expiry(&op), Duration::from_secs(28));
    // A repeated (not advancing) ack proves the client alive: counted
    // from then at the next tick.
    s.handle_ack(t0 + SEC * 2 + ms(500), 0);
    assert_eq!(drain(&mut s), []);
    let (op, _) = tick(&mut s, t0 + SEC * 3);
    assert_eq!(refresh_expiry(&op), Duration::from_secs(30) - ms(500));
    // Progress that moves the deserved expiry (t0 + 33.2 s) more than
    // half an interval past the stored one (t0 + 32.5 s): refreshed at
    // once, without sending.
    s.handle_ack(t0 + SEC * 3 + ms(200), 2);
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Store(StoreOp::Update { expires_in, .. })]
        if *expires_in == Duration::from_secs(30)),
        "{out:?}"
    );
    s.handle_store(t0 + SEC * 3 + ms(200), StoreReply::Done);
    assert_eq!(drain(&mut s), [], "no number is due");
    // Catching up a round trip later stays within the tolerance.
    s.handle_ack(t0 + SEC * 3 + ms(300), 4);
    assert_eq!(drain(&mut s), []);
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 4));
    // Everything acknowledged: a full TTL from now.
    let (op, out) = tick(&mut s, t0 + SEC * 4);
    assert_eq!(refresh_expiry(&op), Duration::from_secs(30));
    assert_eq!(out, [number(4, 10)]);
}

/// Numbers were held up for seconds, then everything is acknowledged
/// between two ticks, then the stream breaks before the next tick. The
/// store must already say "ttl after the catch-up", not "ttl after the
/// stall began".
#[test]
fn acks_after_a_stall_refresh_the_expiry_at_once() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    for i in 1..4 {
        let (op, _) = tick(&mut s, t0 + SEC * i);
        assert_eq!(refresh_expiry(&op), Duration::from_secs(30 - u64::from(i)));
    }
    s.handle_ack(t0 + SEC * 3 + ms(300), 4);
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Store(StoreOp::Update { expires_in, record, .. })]
        if *expires_in == Duration::from_secs(30) && record.acked == 4),
        "{out:?}"
    );
    s.handle_store(t0 + SEC * 3 + ms(300), StoreReply::Done);
    assert_eq!(drain(&mut s), []);
    s.handle_closed(t0 + SEC * 3 + ms(900));
    assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
}

/// ARCHITECTURE.md §2: a stream reset just after an ack arrived. The record must
/// live `ttl` after the last moment the stream demonstrably worked, not
/// `ttl` after the ack persisted by the previous refresh.
#[test]
fn expiry_after_a_drop_is_not_a_tick_early() {
    let t0 = Instant::now();
    let mut s = opened(t0, 10);
    s.handle_ack(t0 + ms(20), 1);
    let (op, _) = tick(&mut s, t0 + SEC);
    // Persisted at t0 + 1 s: lives until t0 + 31 s, not t0 + 30.02 s.
    assert_eq!(refresh_expiry(&op), Duration::from_secs(30));
    s.handle_ack(t0 + SEC + ms(20), 2);
    s.handle_closed(t0 + SEC + ms(30));
    assert_eq!(drain(&mut s), [Output::End(End::ClientGone)]);
}

#[test]
fn window_limits_numbers_beyond_the_ack() {
    let t0 = Instant::now();
    let mut cfg = Config::new(Duration::ZERO, Duration::from_secs(30));
    cfg.window = 8;
    assert_eq!(cfg.ack_every(), 2);
    let mut s = Stream::new(cfg.clone(), t0);
    s.handle_open(t0, open_msg(100), fresh());
    drain(&mut s);
    s.handle_store(t0, StoreReply::Done);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1 + 8, "Attached and one window: {out:?}");
    assert_eq!(s.sent(), 8);
    // Window full: no tick, only the silence timer.
    assert_eq!(s.poll_timeout(), Some(t0 + cfg.silence_timeout));
    s.handle_timeout(t0 + ms(1));
    assert_eq!(drain(&mut s), []);
    // An ack of 3 opens room for exactly 3 more (after a refresh).
    s.handle_ack(t0 + ms(2), 3);
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Store(StoreOp::Update { .. })]),
        "{out:?}"
    );
    s.handle_store(t0 + ms(2), StoreReply::Done);
    let out = drain(&mut s);
    assert_eq!(out, (8..11).map(|i| number(i, 100)).collect::<Vec<_>>());
    assert_eq!(s.sent(), 11);
    // The window holds at every step until the end.
    let mut acked = 3;
    while !s.is_ended() {
        acked = (acked + 5).min(s.sent());
        s.handle_ack(t0 + ms(3), acked);
        while let Some(out) = s.poll_output() {
            match out {
                Output::Store(_) => s.handle_store(t0 + ms(3), StoreReply::Done),
                Output::Send(n) => assert!(n.index < acked + 8, "{n:?} acked {acked}"),
                Output::End(end) => assert_eq!(end, End::Completed),
                Output::Attached(_) => panic!("attached twice"),
            }
        }
    }
    assert_eq!(acked, 100);
}
