//! What a client says when it gives up: only what it knows. `Expired` only
//! when a server said `SESSION_EXPIRED`; `LikelyExpired` when its own clock
//! says so; otherwise `Unreachable`, saying what happened since the last
//! new number.

use super::*;

/// A snapshot of a session attached and 7 numbers in, as a state file
/// holds it after the process was killed.
fn snapshot_after_a_crash(t0: Instant) -> Snapshot {
    let mut c = new_client(t0, 40);
    c.handle_attached(t0, attached(40, 0, 1));
    feed(&mut c, t0, 0..7, 40);
    c.snapshot()
}

/// Ends every stream with `end` at once, until the client gives up
/// (bounded); returns the outcome.
fn fail_until_given_up(c: &mut Client, mut now: Instant, end: impl Fn() -> StreamEnd) -> Outcome {
    for _ in 0..10_000 {
        c.handle_end(now, end());
        let out = drain(c);
        if let Some(Output::Finished(o)) = out.last() {
            return o.clone();
        }
        now = c.poll_timeout().expect("backing off");
        c.handle_timeout(now);
        assert!(matches!(&drain(c)[..], [Output::Connect(_)]));
    }
    panic!("never gave up");
}

fn restored(t1: Instant, give_up: Duration, snap: Snapshot) -> Client {
    let cfg = Config {
        give_up_without_progress: give_up,
        ..Config::default()
    };
    let mut c = Client::restore(t1, cfg, snap, 5).unwrap();
    assert_eq!(drain(&mut c), [resume(7)]);
    c
}

/// A client restored from its state file that reaches no server cannot
/// know whether the session outlived its absence: it used to say "session
/// expired" (and the state file was thrown away), although the server
/// still held it.
#[test]
fn a_restored_client_that_reaches_no_server_is_unreachable_not_expired() {
    let t0 = Instant::now();
    let snap = snapshot_after_a_crash(t0);
    let t1 = t0 + ms(1500);
    let mut c = restored(t1, 3 * SEC, snap);
    let refused =
        || StreamEnd::code_only(Code::Unavailable, "tcp connect error: Connection refused");
    let o = fail_until_given_up(&mut c, t1, refused);
    let Verdict::Unreachable(m) = &o.verdict else {
        panic!("{o:?}")
    };
    assert!(m.contains("no server reachable"), "{m}");
    assert!(m.contains("Connection refused"), "{m}");
    assert!(m.contains("may have expired"), "{m}");
    assert!(!m.contains("attached"), "{m}");
    assert_eq!(o.received, 7);
}

/// The same when every server answers, but refuses: the store is down.
#[test]
fn a_restored_client_refused_by_every_server_is_unreachable_not_expired() {
    let t0 = Instant::now();
    let snap = snapshot_after_a_crash(t0);
    let t1 = t0 + ms(1500);
    let mut c = restored(t1, 3 * SEC, snap);
    let store_down = || StreamEnd::rejected(&Reject::StoreUnavailable("down".into()));
    let o = fail_until_given_up(&mut c, t1, store_down);
    let Verdict::Unreachable(m) = &o.verdict else {
        panic!("{o:?}")
    };
    assert!(
        m.contains("servers refused the session (STORE_UNAVAILABLE ×"),
        "{m}"
    );
    assert!(m.contains("may have expired"), "{m}");
    assert!(!m.contains("no server reachable"), "{m}");
}

/// A client that attached in this process knows the TTL, and its clock
/// can tell that the session must have expired; it still does not claim
/// what no server said.
#[test]
fn expiry_by_the_clients_own_clock_is_likely_not_confirmed() {
    let t0 = Instant::now();
    let cfg = Config {
        give_up_without_progress: Duration::from_secs(300),
        ..Config::default()
    };
    let mut c = new_client_with(t0, cfg, 100, 1);
    c.handle_attached(t0, attached(100, 0, 1));
    feed(&mut c, t0, 0..3, 100);
    let o = fail_until_given_up(&mut c, t0 + SEC, transport);
    let Verdict::LikelyExpired(m) = &o.verdict else {
        panic!("{o:?}")
    };
    assert!(
        m.contains("most likely expired (no server confirmed it)"),
        "{m}"
    );
    assert!(m.contains("no server reachable"), "{m}");
}

/// Only a server's word makes `Expired`, even for a restored client.
#[test]
fn a_servers_session_expired_is_expired() {
    let t0 = Instant::now();
    let snap = snapshot_after_a_crash(t0);
    let mut c = restored(t0 + SEC, 3 * SEC, snap);
    c.handle_end(t0 + SEC, StreamEnd::rejected(&Reject::Expired(id())));
    let o = finished(&drain(&mut c));
    assert!(matches!(o.verdict, Verdict::Expired(_)), "{o:?}");
}

/// A client whose server died after sending numbers: every attempt since
/// the last number found no server. It used to say "servers attached the
/// session but sent no new number", because the session had attached once.
#[test]
fn a_dead_server_is_reported_as_unreachable_not_as_attached() {
    let t0 = Instant::now();
    let cfg = Config {
        give_up_without_progress: 5 * SEC,
        ..Config::default()
    };
    let mut c = new_client_with(t0, cfg, 100, 1);
    c.handle_attached(t0, attached(100, 0, 1));
    feed(&mut c, t0, 0..4, 100);
    // The server is killed: the stream breaks, then nothing listens.
    c.handle_end(t0 + SEC, transport());
    let now = c.poll_timeout().unwrap();
    c.handle_timeout(now);
    drain(&mut c);
    let refused = || StreamEnd::Transport("tcp connect error: Connection refused".into());
    let o = fail_until_given_up(&mut c, now, refused);
    let Verdict::Unreachable(m) = &o.verdict else {
        panic!("{o:?}")
    };
    assert!(m.starts_with("no progress for 5s: "), "{m}");
    assert!(m.contains("no server reachable"), "{m}");
    assert!(
        m.contains("last error: tcp connect error: Connection refused"),
        "{m}"
    );
    // The stream that broke had delivered numbers: not a failed attempt.
    assert!(!m.contains("attached"), "{m}");
}

/// Each way of failing is told apart, with refusals by reason, and what
/// counts starts again at each new number.
#[test]
fn the_give_up_message_says_what_happened_since_the_last_number() {
    let t0 = Instant::now();
    let cfg = Config {
        give_up_without_progress: 20 * SEC,
        ..Config::default()
    };
    let mut c = new_client_with(t0, cfg, 100, 1);
    let mut now = t0;
    // Failures before the first number are forgotten once it arrives.
    for _ in 0..3 {
        (now, _) = fail_and_reconnect(&mut c, now, transport());
    }
    c.handle_attached(now, attached(100, 0, 1));
    feed(&mut c, now, 0..1, 100);
    let script = [
        // Ends the stream that delivered the number: not counted.
        transport(),
        StreamEnd::rejected(&Reject::Overloaded(crate::Busy::Late(ms(300)))),
        StreamEnd::rejected(&Reject::Full(5)),
        StreamEnd::rejected(&Reject::Overloaded(crate::Busy::Late(ms(300)))),
        transport(),
    ];
    for end in script {
        (now, _) = fail_and_reconnect(&mut c, now, end);
    }
    c.handle_attached(now, attached(100, 1, 1));
    let o = fail_until_given_up(&mut c, now, unavailable);
    let Verdict::Unreachable(m) = &o.verdict else {
        panic!("{o:?}")
    };
    assert!(m.contains("no server reachable (1 attempt)"), "{m}");
    assert!(
        m.contains("servers attached the session but sent no new number (1 stream)"),
        "{m}"
    );
    assert!(
        m.contains("servers refused the session (OVERLOADED ×2, SERVER_FULL ×1, INJECTED_FAULT ×"),
        "{m}"
    );
    assert!(!m.contains("may have expired"), "{m}");
}
