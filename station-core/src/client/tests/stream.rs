//! One stream at a time: opening, resuming where the client left off,
//! numbers in order, acknowledgements and the checksum.

use super::*;

#[test]
fn opens_first_then_resumes_where_it_left_off() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    let out = feed(&mut c, t0, 0..3, 10);
    assert_eq!(out, [Output::Ack(1), Output::Ack(2), Output::Ack(3)]);
    assert_eq!(c.received(), 3);
    let (t1, out) = fail_and_reconnect(&mut c, t0 + SEC, transport());
    assert_eq!(out, [resume(3)]);
    assert_eq!(c.reconnects(), 1);
    // The new stream attaches at 3 and the session continues.
    c.handle_attached(t1, attached(10, 3, 1));
    let out = feed(&mut c, t1, 3..10, 10);
    let outcome = finished(&out);
    assert_eq!(outcome.verdict, Verdict::Verified);
    assert_eq!(outcome.sum, sum(0..10));
    assert_eq!(outcome.received, 10);
    assert_eq!(outcome.reconnects, 1);
    assert!(c.is_finished());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn repeats_open_while_never_attached() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    let (_, out) = fail_and_reconnect(&mut c, t0, transport());
    assert!(
        matches!(&out[..], [Output::Connect(Request::Open { count: 10, .. })]),
        "{out:?}"
    );
}

#[test]
fn duplicates_are_ignored() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 5);
    c.handle_attached(t0, attached(5, 0, 1));
    feed(&mut c, t0, 0..3, 5);
    let out = feed(&mut c, t0, 0..3, 5);
    assert_eq!(out, [], "no acks and no errors for duplicates");
    assert_eq!(c.received(), 3);
    let out = feed(&mut c, t0, 3..5, 5);
    let outcome = finished(&out);
    assert_eq!(outcome.verdict, Verdict::Verified);
    assert_eq!(outcome.sum, sum(0..5));
}

#[test]
fn gap_disconnects_and_resumes_from_next_index() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..2, 10);
    c.handle_number(t0, num(3, 10));
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    assert_eq!(drain(&mut c), [resume(2)]);
    assert_eq!(c.received(), 2);
}

#[test]
fn repeated_protocol_errors_are_fatal() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let max = cfg.max_protocol_errors;
    let mut c = new_client(t0, 10);
    let mut now = t0;
    c.handle_attached(now, attached(10, 0, 1));
    feed(&mut c, now, 0..2, 10);
    for round in 1..=max {
        c.handle_number(now, num(5, 10));
        let out = drain(&mut c);
        if round < max {
            assert_eq!(out, [Output::Disconnect], "round {round}");
            now = c.poll_timeout().unwrap();
            c.handle_timeout(now);
            assert_eq!(drain(&mut c), [resume(2)]);
            c.handle_attached(now, attached(10, 2, 1));
        } else {
            assert_eq!(out[0], Output::Disconnect);
            let outcome = finished(&out);
            assert!(
                matches!(outcome.verdict, Verdict::ProtocolError(ref m) if m.contains("expected number 2")),
                "{outcome:?}"
            );
        }
    }
}

#[test]
fn a_good_number_resets_the_protocol_error_count() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 100);
    let mut now = t0;
    c.handle_attached(now, attached(100, 0, 1));
    for i in 0..20 {
        c.handle_number(now, num(i + 1, 100)); // a gap
        assert_eq!(drain(&mut c), [Output::Disconnect]);
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        assert_eq!(drain(&mut c), [resume(i)]);
        c.handle_attached(now, attached(100, i, 1));
        assert_eq!(feed(&mut c, now, i..i + 1, 100), [Output::Ack(i + 1)]);
    }
    assert!(!c.is_finished());
}

#[test]
fn other_protocol_errors() {
    let t0 = Instant::now();
    // A number before Attached.
    let mut c = new_client(t0, 10);
    c.handle_number(t0, num(0, 10));
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    // A checksum where none belongs, or none on the final number.
    let mut c = new_client(t0, 3);
    c.handle_attached(t0, attached(3, 0, 1));
    c.handle_number(
        t0,
        Number {
            checksum: Some(1),
            ..num(0, 3)
        },
    );
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    assert_eq!(c.received(), 0);
    let mut c = new_client(t0, 1);
    c.handle_attached(t0, attached(1, 0, 1));
    c.handle_number(
        t0,
        Number {
            checksum: None,
            ..num(0, 1)
        },
    );
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    // Attached at another index than asked.
    let mut c = new_client(t0, 3);
    c.handle_attached(t0, attached(3, 1, 1));
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    // Attached twice on one stream.
    let mut c = new_client(t0, 3);
    c.handle_attached(t0, attached(3, 0, 1));
    c.handle_attached(t0, attached(3, 0, 1));
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    // A session of another size, or a malformed token: fatal at once.
    let mut c = new_client(t0, 3);
    c.handle_attached(t0, attached(4, 0, 1));
    let out = drain(&mut c);
    assert_eq!(out[0], Output::Disconnect);
    assert!(matches!(finished(&out).verdict, Verdict::ProtocolError(_)));
    let mut c = new_client(t0, 3);
    c.handle_attached(
        t0,
        Attached {
            token: &[1; 15],
            ..attached(3, 0, 1)
        },
    );
    assert!(matches!(
        finished(&drain(&mut c)).verdict,
        Verdict::ProtocolError(_)
    ));
}

#[test]
fn acks_every_ack_every_and_always_the_final() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 8);
    c.handle_attached(t0, attached(8, 0, 3));
    let mut acks = Vec::new();
    for i in 0..8 {
        for out in feed(&mut c, t0, i..i + 1, 8) {
            match out {
                Output::Ack(n) => acks.push(n),
                Output::Finished(o) => assert_eq!(o.verdict, Verdict::Verified),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(acks, [3, 6, 8]);
    // ack_every counts from where the stream attached.
    let mut c = new_client(t0, 8);
    c.handle_attached(t0, attached(8, 0, 3));
    feed(&mut c, t0, 0..2, 8);
    let (t1, _) = fail_and_reconnect(&mut c, t0, transport());
    c.handle_attached(t1, attached(8, 2, 3));
    assert_eq!(feed(&mut c, t1, 2..5, 8), [Output::Ack(5)]);
    // A server's ack_every of 0 means every number.
    let mut c = new_client(t0, 3);
    c.handle_attached(t0, attached(3, 0, 0));
    assert_eq!(feed(&mut c, t0, 0..2, 3), [Output::Ack(1), Output::Ack(2)]);
}

#[test]
fn checksum_is_verified() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 4);
    c.handle_attached(t0, attached(4, 0, 1));
    let out = feed(&mut c, t0, 0..4, 4);
    assert_eq!(out[out.len() - 2], Output::Ack(4));
    let o = finished(&out);
    assert_eq!(
        o,
        Outcome {
            client_id: id(),
            count: 4,
            received: 4,
            sum: sum(0..4),
            server_checksum: Some(sequence::checksum(SEED, 4)),
            client_checksum: sequence::checksum(SEED, 4),
            reconnects: 0,
            verdict: Verdict::Verified,
        }
    );
    assert!(o.verdict.is_success());
}

#[test]
fn checksum_mismatch_is_reported() {
    let t0 = Instant::now();
    // A wrong value...
    let mut c = new_client(t0, 4);
    c.handle_attached(t0, attached(4, 0, 1));
    feed(&mut c, t0, 0..2, 4);
    c.handle_number(
        t0,
        Number {
            value: 1,
            ..num(2, 4)
        },
    );
    let out = feed(&mut c, t0, 3..4, 4);
    let o = finished(&out);
    assert_eq!(o.verdict, Verdict::ChecksumMismatch);
    assert!(!o.verdict.is_success());
    assert_ne!(o.server_checksum, Some(o.client_checksum));
    // ...or a wrong checksum: still acknowledged, so the server deletes.
    let mut c = new_client(t0, 2);
    c.handle_attached(t0, attached(2, 0, 1));
    feed(&mut c, t0, 0..1, 2);
    c.handle_number(
        t0,
        Number {
            checksum: Some(0),
            ..num(1, 2)
        },
    );
    let out = drain(&mut c);
    assert_eq!(out[0], Output::Ack(2));
    assert_eq!(finished(&out).verdict, Verdict::ChecksumMismatch);
}
