//! Pacing: one number per interval, one lease renewal per lease that the
//! numbers do not wait for, numbers held at the lease's end, and the
//! window (ARCHITECTURE.md §2).

use super::*;

#[test]
fn numbers_are_paced_one_per_interval_with_one_renewal_per_lease() {
    let t0 = Instant::now();
    let count = 12;
    let mut s = Stream::new(cfg(), t0);
    // The lease counts from when the create was asked for (t0 + 10 ms),
    // not from its answer (t0 + 20 ms), which paces the numbers.
    s.handle_open(t0 + ms(10), open_msg(count), fresh());
    drain(&mut s);
    let attach_at = t0 + ms(20);
    s.handle_store(attach_at, StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [attached(Attachment::Opened, count, 0), number(0, count)]
    );
    for i in 1..count {
        let due = attach_at + SEC * i;
        // The previous number is acknowledged 50 ms after it was sent.
        s.handle_ack(due - SEC + ms(50), i);
        assert_eq!(drain(&mut s), []);
        // The renewal has a timer of its own, a lease after the last was
        // asked for (t0 + 5.01 s, t0 + 10.01 s), carrying the acks so far.
        if i == 5 || i == 10 {
            let renew_at = t0 + ms(10) + LEASE * (i / 5);
            assert_eq!(s.poll_timeout(), Some(renew_at), "renewal {i}");
            s.handle_timeout(renew_at);
            assert_eq!(drain(&mut s), [renewal(count, 1, i)]);
            s.handle_store(renew_at, StoreReply::Done);
            assert_eq!(drain(&mut s), []);
        }
        assert_eq!(s.poll_timeout(), Some(due), "number {i}");
        // Early timers do nothing.
        s.handle_timeout(due - ms(1));
        assert_eq!(drain(&mut s), []);
        assert_eq!(
            tick(&mut s, due),
            [number(i, count)],
            "exactly one number per tick"
        );
    }
    assert_eq!(s.sent(), count);
    // Everything sent: the lease is still renewed while the stream waits
    // for the final acknowledgement, up to the silence timeout.
    let silence = attach_at + SEC * (count - 1) + s.cfg.silence_timeout;
    let renew_at = t0 + ms(10) + LEASE * 3;
    assert!(renew_at < silence);
    assert_eq!(s.poll_timeout(), Some(renew_at));
}

#[test]
fn numbers_do_not_wait_for_the_renewal() {
    let t0 = Instant::now();
    // The renewal comes first, the number due with it right behind.
    let mut s = renewing(t0);
    // Unanswered, it holds up nothing until the lease's end.
    for i in 6..10 {
        s.handle_ack(t0 + SEC * (i - 1) + ms(50), i);
        assert_eq!(s.poll_timeout(), Some(t0 + SEC * i));
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    // Its answer sends nothing (nothing is due) and asks for nothing: the
    // next renewal counts from t0 + 5 s, when this one was asked for.
    s.handle_store(t0 + SEC * 9 + ms(500), StoreReply::Done);
    assert_eq!(drain(&mut s), []);
    s.handle_ack(t0 + SEC * 9 + ms(50), 10);
    assert_eq!(
        renewing_tick(&mut s, t0 + SEC * 10, renewal(20, 1, 10)),
        [number(10, 20)]
    );
}

#[test]
fn numbers_stop_at_the_lease_end_until_a_late_renewal_is_answered() {
    let t0 = Instant::now();
    let mut s = renewing(t0);
    for i in 6..10 {
        s.handle_ack(t0 + SEC * (i - 1) + ms(50), i);
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    s.handle_ack(t0 + SEC * 9 + ms(50), 10);
    // The create was asked for at t0: the lease ends at t0 + 10 s. With
    // everything acknowledged there is no silence timer either: only the
    // store's answer can let numbers go on. Meanwhile each held number is
    // a `Paused`.
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 10));
    for late in [t0 + SEC * 10, t0 + SEC * 11] {
        s.handle_timeout(late);
        assert_eq!(drain(&mut s), [paused(10)], "no number past the lease");
    }
    assert_eq!(s.sent(), 10);
    // The answer at 11.5 s extends the lease to t0 + 15 s (2L after 5 s,
    // when the renewal was asked for), which is already due for renewal:
    // the next renewal at once, then the numbers held up, in a burst.
    let answer = t0 + SEC * 11 + ms(500);
    s.handle_store(answer, StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [renewal(20, 1, 10), number(10, 20), number(11, 20)]
    );
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 12));
    // That renewal is still unanswered: numbers go on until t0 + 15 s...
    for i in 12..15 {
        s.handle_ack(t0 + SEC * (i - 1) + ms(50), i);
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    s.handle_ack(t0 + SEC * 14 + ms(50), 15);
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 15), "a Paused for 15");
    // ...and its answer leases until t0 + 21.5 s, renewing from 16.5 s.
    s.handle_store(t0 + SEC * 15 + ms(100), StoreReply::Done);
    assert_eq!(drain(&mut s), [number(15, 20)]);
    s.handle_ack(t0 + SEC * 15 + ms(150), 16);
    assert_eq!(tick(&mut s, t0 + SEC * 16), [number(16, 20)]);
    s.handle_ack(t0 + SEC * 16 + ms(50), 17);
    s.handle_timeout(t0 + SEC * 17);
    assert_eq!(drain(&mut s), [renewal(20, 1, 17), number(17, 20)]);
}

#[test]
fn a_silent_stream_held_at_the_lease_end_still_times_out() {
    let t0 = Instant::now();
    let mut cfg = cfg();
    cfg.silence_timeout = SEC * 15;
    let mut s = opened_with(cfg, t0, 20);
    for i in 1..5 {
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    s.handle_timeout(t0 + SEC * 5);
    assert_eq!(drain(&mut s), [renewal(20, 1, 0), number(5, 20)]);
    for i in 6..10 {
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    // Held for the store (a `Paused` in place of each number)...
    for i in 10..15 {
        assert_eq!(tick(&mut s, t0 + SEC * i), [paused(10)]);
    }
    // ...but waiting for the client too.
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 15));
    s.handle_timeout(t0 + SEC * 15);
    assert_eq!(rejected(&drain(&mut s)), Reject::Silent(SEC * 15));
    // The release waits for the renewal, and still counts from number 0.
    s.handle_store(t0 + SEC * 16, StoreReply::Done);
    assert_eq!(drain(&mut s), [release(20, 1, 0, TTL - SEC * 16)]);
}

#[test]
fn pacing_after_a_resume_renews_at_the_new_generation() {
    let t0 = Instant::now();
    let (mut s, out) = resumed(t0, 20, 3, 4);
    assert_eq!(out, [attached(Attachment::Resumed, 20, 4), number(4, 20)]);
    for i in 5..9 {
        s.handle_ack(t0 + SEC * (i - 5) + ms(100), i);
        assert_eq!(tick(&mut s, t0 + SEC * (i - 4)), [number(i, 20)]);
    }
    s.handle_ack(t0 + SEC * 4 + ms(100), 9);
    // The takeover, asked for at t0, was the first lease.
    let out = renewing_tick(&mut s, t0 + SEC * 5, renewal(20, 4, 9));
    assert_eq!(out, [number(9, 20)]);
    assert_eq!(s.poll_timeout(), Some(t0 + SEC * 6));
}

#[test]
fn window_limits_numbers_beyond_the_ack() {
    let t0 = Instant::now();
    let mut cfg = Config::new(Duration::ZERO, TTL);
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
    // An ack of 3 opens room for exactly 3 more, at once (within the lease).
    s.handle_ack(t0 + ms(2), 3);
    let out = drain(&mut s);
    assert_eq!(out, (8..11).map(|i| number(i, 100)).collect::<Vec<_>>());
    assert_eq!(s.sent(), 11);
    // Past the lease's renewal point, the ack that opens the window
    // renews, and the numbers follow it without waiting.
    s.handle_ack(t0 + LEASE, 5);
    assert_eq!(
        drain(&mut s),
        [renewal(100, 1, 5), number(11, 100), number(12, 100)]
    );
    s.handle_store(t0 + LEASE, StoreReply::Done);
    assert_eq!(drain(&mut s), []);
    // The window holds at every step until the end.
    let mut acked = 5;
    let now = t0 + LEASE + ms(1);
    while !s.is_ended() {
        acked = (acked + 5).min(s.sent());
        s.handle_ack(now, acked);
        while let Some(out) = s.poll_output() {
            match out {
                Output::Store(_) => s.handle_store(now, StoreReply::Done),
                Output::Send(n) => assert!(n.index < acked + 8, "{n:?} acked {acked}"),
                Output::End(end) => assert_eq!(end, End::Completed { deleted: true }),
                Output::Attached(_) => panic!("attached twice"),
                Output::Paused { .. } => panic!("paused with a store that answers at once"),
            }
        }
    }
    assert_eq!(acked, 100);
}

/// The module docs: each lease write sets the record to live `ttl + L`,
/// "which covers every moment the stream can work before its next write",
/// so a server that dies without releasing never leaves a session that
/// expires early. With an interval that does not divide the lease, the
/// renewal does not wait for the next number: it has a timer of its own.
#[test]
fn lease_writes_cover_every_moment_the_stream_works_before_the_next_write() {
    let t0 = Instant::now();
    let cfg = Config::new(SEC * 3, TTL);
    assert_eq!((cfg.lease, cfg.validate()), (LEASE, Ok(())));
    let mut s = opened_with(cfg, t0, 20);
    s.handle_ack(t0 + ms(50), 1);
    s.handle_timeout(t0 + SEC * 3);
    drain(&mut s);
    // The renewal is due at 5 s, before the number due at 6 s.
    assert_eq!(s.poll_timeout(), Some(t0 + LEASE));
    s.handle_timeout(t0 + LEASE);
    assert_eq!(drain(&mut s), [renewal(20, 1, 1)]);
    s.handle_store(t0 + LEASE, StoreReply::Done);
    let stored_until = t0 + LEASE + LEASED;
    // Everything acknowledged at 5.5 s, before the number due at 6 s.
    s.handle_ack(t0 + SEC * 5 + ms(500), 2);
    assert_eq!(drain(&mut s), []);
    // Were the server to die now, the session would deserve to live
    // until what a release would set.
    s.handle_closed(t0 + SEC * 5 + ms(500));
    let out = drain(&mut s);
    let Some(Output::Store(StoreOp::Update { expires_in, .. })) = out.last() else {
        panic!("{out:?}");
    };
    let deserved = t0 + SEC * 5 + ms(500) + *expires_in;
    assert!(
        deserved <= stored_until,
        "the store keeps the session {:?} too short",
        deserved - stored_until
    );
}

/// Woken late (a coalesced timer, a busy runtime) with a number overdue
/// and the lease run out under a renewal still in flight: no number is
/// sent (a `Paused` instead), and no deadline is left due, or the adapter
/// would wake again at once, and again, until the store answers.
#[test]
fn a_lease_run_out_under_a_renewal_in_flight_leaves_no_timer_due() {
    let t0 = Instant::now();
    let mut s = renewing(t0);
    for i in 6..9 {
        s.handle_ack(t0 + SEC * (i - 1) + ms(50), i);
        assert_eq!(tick(&mut s, t0 + SEC * i), [number(i, 20)]);
    }
    // Number 9 was due at 9 s; the create's lease ran out at 10 s.
    s.handle_ack(t0 + SEC * 8 + ms(50), 9);
    let late = t0 + SEC * 10 + ms(500);
    s.handle_timeout(late);
    assert_eq!(drain(&mut s), [paused(9)]);
    assert!(
        s.poll_timeout().is_none_or(|at| at > late),
        "{:?} is due again at {late:?}",
        s.poll_timeout()
    );
    // The renewal's answer (asked at 5 s) sends what is due, behind the
    // next renewal, due since 10 s.
    s.handle_store(late, StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [renewal(20, 1, 9), number(9, 20), number(10, 20)]
    );
}

/// An attach answered after the lease it grants ran out (a store slower
/// than two leases) sends no number until a renewal is confirmed: a newer
/// stream may have taken over meanwhile.
#[test]
fn an_attach_answered_after_its_lease_ran_out_sends_after_a_renewal() {
    let t0 = Instant::now();
    let mut s = creating(t0, 20);
    let late = t0 + LEASE * 2 + SEC;
    s.handle_store(late, StoreReply::Done);
    assert_eq!(
        drain(&mut s),
        [attached(Attachment::Opened, 20, 0), paused(0)]
    );
    // The renewal is due (since 5 s) at once.
    assert_eq!(s.poll_timeout(), Some(t0 + LEASE));
    s.handle_timeout(late);
    assert_eq!(drain(&mut s), [renewal(20, 1, 0)]);
    s.handle_store(late + ms(10), StoreReply::Done);
    assert_eq!(drain(&mut s), [number(0, 20)]);
}
