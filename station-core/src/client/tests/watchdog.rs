//! The watchdog and attach timeout, and a finished client staying finished.

use super::*;

#[test]
fn watchdog_drops_a_silent_stream() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0 + SEC, 0..1, 10);
    // 3 intervals plus 2 s of grace after the last message.
    let silent_at = t0 + SEC + SEC * 3 + Duration::from_secs(2);
    assert_eq!(c.poll_timeout(), Some(silent_at));
    c.handle_timeout(silent_at - ms(1));
    assert_eq!(drain(&mut c), []);
    c.handle_timeout(silent_at);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    let at = c.poll_timeout().unwrap();
    c.handle_timeout(at);
    assert_eq!(drain(&mut c), [resume(1)]);
    assert_eq!(
        c.poll_timeout(),
        Some(at + Config::default().attach_timeout)
    );
}

#[test]
fn the_watchdog_fires_well_before_the_session_expires() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(
        t0,
        Attached {
            interval: SEC * 10,
            ..attached(10, 0, 1)
        },
    );
    feed(&mut c, t0, 0..1, 10);
    // 3 intervals + 2 s would be 32 s, past the 30 s TTL.
    assert_eq!(c.poll_timeout(), Some(t0 + SEC * 20));
    c.handle_timeout(t0 + SEC * 20);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    assert!(!c.is_finished());
}

#[test]
fn attach_timeout_drops_the_connection() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut c = new_client(t0, 10);
    assert_eq!(c.poll_timeout(), Some(t0 + cfg.attach_timeout));
    c.handle_timeout(t0 + cfg.attach_timeout - ms(1));
    assert_eq!(drain(&mut c), []);
    c.handle_timeout(t0 + cfg.attach_timeout);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    assert!(c.poll_timeout().unwrap() > t0 + cfg.attach_timeout);
}

#[test]
fn finished_is_final() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 2);
    c.handle_attached(t0, attached(2, 0, 1));
    feed(&mut c, t0, 0..2, 2);
    assert!(c.is_finished());
    c.handle_attached(t0, attached(2, 0, 1));
    c.handle_number(t0, num(1, 2));
    c.handle_number(t0, num(5, 2));
    c.handle_end(t0, transport());
    c.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.poll_timeout(), None);
    // Messages of a dropped stream while backing off are ignored too.
    let mut c = new_client(t0, 2);
    c.handle_end(t0, transport());
    c.handle_attached(t0, attached(2, 0, 1));
    c.handle_number(t0, num(0, 2));
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.received(), 0);
}

/// A watchdog that fires late (the process was stopped) looks once more
/// before it judges: the server's last word may be waiting, unread.
#[test]
fn a_late_watchdog_looks_again_before_it_judges() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    let silent_at = c.poll_timeout().unwrap();
    // Woken two seconds late: look until a moment from now.
    let woke = silent_at + Duration::from_secs(2);
    c.handle_timeout(woke);
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.poll_timeout(), Some(woke + LOOK));
    // What was waiting is read: the stream ended with the server's word.
    c.handle_end(woke + ms(1), unavailable());
    assert_eq!(drain(&mut c), []);
    assert!(c.poll_timeout().unwrap() > woke + ms(1));

    // Nothing was waiting: once the look is over, the stream went silent,
    // even if that timer is late too (it looks only once).
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    c.handle_timeout(woke);
    c.handle_timeout(woke + LOOK + Duration::from_secs(2));
    assert_eq!(drain(&mut c), [Output::Disconnect]);

    // A number read during the look is a live stream: the next late
    // timer looks again.
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    c.handle_timeout(woke);
    feed(&mut c, woke + ms(1), 1..2, 10);
    let next = c.poll_timeout().unwrap();
    assert!(next > woke + LOOK, "a fresh silence allowance");
    c.handle_timeout(next + Duration::from_secs(2));
    assert_eq!(drain(&mut c), []);

    // A late attach timeout looks again too.
    let mut c = new_client(t0, 10);
    let due = c.poll_timeout().unwrap();
    c.handle_timeout(due + Duration::from_secs(2));
    assert_eq!(drain(&mut c), []);
    c.handle_timeout(due + Duration::from_secs(2) + LOOK);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
}

/// Timers handled about on time (scheduling jitter) judge at once.
#[test]
fn a_watchdog_on_time_judges_at_once() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    let silent_at = c.poll_timeout().unwrap();
    c.handle_timeout(silent_at + LATE_WAKE - ms(1));
    assert_eq!(drain(&mut c), [Output::Disconnect]);
}

/// A `Paused` keeps the stream (the watchdog starts over), but the
/// watchdog fires at the latest half the TTL after the server last proved
/// the session alive, so that the resume still finds it.
#[test]
fn paused_keeps_the_stream_for_half_the_ttl() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    let silence = c.poll_timeout().unwrap() - t0;
    let cap = t0 + TTL / 2;
    for k in 1..15 {
        let at = t0 + SEC * k;
        c.handle_paused(at, 1);
        assert_eq!(drain(&mut c), []);
        assert_eq!(c.poll_timeout(), Some((at + silence).min(cap)), "at {k} s");
    }
    c.handle_timeout(cap);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    assert!(!c.is_finished());
}

/// `Paused` at an index other than the next, or before `Attached`, breaks
/// the protocol.
#[test]
fn paused_out_of_place_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_paused(t0, 0);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..2, 10);
    c.handle_paused(t0 + SEC, 1);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
}

/// A `Paused` is answered with an ack of what the client holds, if it has
/// not acked it yet: the server, holding its numbers, would otherwise take
/// the client's silence (it acks every `ack_every`) for a dead client.
#[test]
fn paused_acks_what_is_held() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 5));
    feed(&mut c, t0, 0..3, 10);
    assert_eq!(drain(&mut c), []);
    c.handle_paused(t0 + SEC, 3);
    assert_eq!(drain(&mut c), [Output::Ack(3)]);
    c.handle_paused(t0 + SEC * 2, 3);
    assert_eq!(drain(&mut c), [], "acked already");
}

/// A server that is alive but late for this stream (its connection carries
/// other streams' numbers) keeps the stream at each watchdog, as a
/// `Paused` does and within the same bound; outside a stream it says
/// nothing, and past the bound the watchdog judges.
#[test]
fn a_busy_server_keeps_the_stream_for_half_the_ttl() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_server_busy(t0);
    assert_eq!(drain(&mut c), [], "no stream yet: nothing to keep");
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..1, 10);
    let silence = c.poll_timeout().unwrap() - t0;
    let cap = t0 + TTL / 2;
    let mut due = t0 + silence;
    while due < cap {
        assert_eq!(c.poll_timeout(), Some(due));
        c.handle_server_busy(due);
        c.handle_timeout(due);
        assert_eq!(drain(&mut c), []);
        due = (due + silence).min(cap);
    }
    assert_eq!(c.poll_timeout(), Some(cap));
    c.handle_server_busy(cap);
    c.handle_timeout(cap);
    assert_eq!(drain(&mut c), [Output::Disconnect]);
    assert!(!c.is_finished());
}
