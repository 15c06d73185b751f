//! The open throttle (the SRE book's client-side adaptive throttling) and
//! the client's side of it: a held-back open is no stream, waits as a
//! throttled retry does, and never changes how the client gives up.

use super::*;
use crate::client::throttle::{K, RESERVE, WINDOW};
use crate::sequence::mix64;

/// Sends an open and reports it refused: `true` if it was sent.
fn refused(t: &mut OpenThrottle, now: Instant, draw: u64) -> bool {
    let sent = t.ask(now, draw);
    if sent {
        t.not_accepted(now);
    }
    sent
}

#[test]
fn a_process_with_few_opens_is_never_held_back() {
    let t0 = Instant::now();
    let mut t = OpenThrottle::new();
    // The reserve: eleven opens in a window, however they went, and
    // whatever the draw, all go.
    for i in 0..=RESERVE {
        assert!(refused(&mut t, t0 + ms(i), 0), "open {i}");
    }
    let s = t.stats(t0);
    assert_eq!((s.requests, s.accepts, s.held_back), (11, 0, 0));
    // The twelfth is held back with odds (11 − 10) in 12: draw 0 of 12
    // holds, every other one sends.
    assert_eq!(s.hold_ratio, 1.0 / 12.0);
    assert!(!t.ask(t0, 12));
    // Held back, it counts at once: now (12 − 10) in 13.
    assert!(refused(&mut t, t0, 2));
    assert_eq!(t.held_back(), 1);
    assert_eq!(t.stats(t0).held_back_lately, 1);
}

/// Opens in flight count for nothing: a process that starts hundreds of
/// sessions at once against an idle server sends them all, though no
/// accept has come back yet.
#[test]
fn opens_in_flight_hold_nothing_back() {
    let t0 = Instant::now();
    let mut t = OpenThrottle::new();
    for i in 0..1000 {
        assert!(t.ask(t0, 0), "open {i}");
    }
    assert_eq!(t.stats(t0).requests, 0);
    for _ in 0..1000 {
        t.accepted(t0);
    }
    let s = t.stats(t0);
    assert_eq!((s.requests, s.accepts, s.hold_ratio), (1000, 1000, 0.0));
}

#[test]
fn each_accept_allows_k_more_opens() {
    let t0 = Instant::now();
    let mut t = OpenThrottle::new();
    for _ in 0..5 {
        assert!(t.ask(t0, 0));
        t.accepted(t0);
    }
    // 5 accepts allow 5 × K + RESERVE = 20 requests before any open may
    // be held back: 15 more refused ones still go, even with the draw
    // most likely to hold.
    for i in 0..=(5 * K + RESERVE - 5) {
        assert!(refused(&mut t, t0, 0), "open {i}");
    }
    assert!(!t.ask(t0, 0));
    let s = t.stats(t0);
    assert_eq!((s.requests, s.accepts, s.held_back), (22, 5, 1));
    // Odds (22 − 20) in 23.
    assert_eq!(s.hold_ratio, 2.0 / 23.0);
}

#[test]
fn the_window_forgets_what_is_older_than_ten_seconds() {
    let t0 = Instant::now();
    let mut t = OpenThrottle::new();
    for _ in 0..1000 {
        refused(&mut t, t0, 1);
    }
    assert!(t.stats(t0).hold_ratio > 0.98);
    // Still counted 9.5 s on (the first slice is a second wide).
    assert_eq!(t.stats(t0 + ms(9_500)).requests, 1000);
    // Forgotten ten seconds on: nothing held back.
    let later = t0 + WINDOW;
    let s = t.stats(later);
    assert_eq!((s.requests, s.hold_ratio, s.held_back_lately), (0, 0.0, 0));
    assert!(s.held_back > 900, "{s:?}");
    assert!(refused(&mut t, later, 0));
    // A clock read before the lock (another thread's, earlier) counts in
    // the current slice, and does not bring the old counts back.
    assert!(refused(&mut t, t0, 0));
    assert_eq!(t.stats(later).requests, 2);
    // A jump over many windows forgets everything.
    let far = t0 + WINDOW * 1000;
    assert_eq!(t.stats(far).requests, 0);
}

/// Asks `per_tick` opens every 10 ms from `start` for `ticks` ticks, of a
/// server that attaches at most `room` a tick (none while `down`).
/// Returns, for each tick, (sent, attached).
fn crowd(
    t: &mut OpenThrottle,
    start: Instant,
    ticks: u32,
    per_tick: u32,
    room: u32,
    draws: &mut u64,
) -> Vec<(u32, u32)> {
    (0..ticks)
        .map(|tick| {
            let now = start + ms(10) * tick;
            let (mut sent, mut taken) = (0, 0);
            for _ in 0..per_tick {
                *draws += 1;
                if t.ask(now, mix64(*draws)) {
                    sent += 1;
                    if taken < room {
                        taken += 1;
                        t.accepted(now);
                    } else {
                        t.not_accepted(now);
                    }
                }
            }
            (sent, taken)
        })
        .collect()
}

/// A crowd asks for 2,000 opens a second of a server that attaches at most
/// 700 of them a second and refuses the rest. What reaches the server
/// settles at about K times what it attaches, instead of all 2,000 (plus
/// their retries, which this leaves out), and the server stays full.
#[test]
fn a_crowd_sends_about_k_opens_for_each_one_taken() {
    let t0 = Instant::now();
    let mut t = OpenThrottle::new();
    let mut draws = 0;
    let ticks = crowd(&mut t, t0, 6_000, 20, 7, &mut draws);
    // The last 30 s.
    let (sent, taken) = ticks[3_000..]
        .iter()
        .fold((0, 0), |(s, a), (ts, ta)| (s + ts, a + ta));
    // The server was kept full, or within a thousandth of it: 700 a second.
    assert!(taken >= 20_979, "{taken}");
    let ratio = f64::from(sent) / f64::from(taken);
    assert!(
        (1.95..=2.1).contains(&ratio),
        "sent {sent} for {taken} taken: {ratio:.3}"
    );
    // So of the 2,000 asked for a second, about 1,400 are sent.
    let s = t.stats(t0 + ms(60_000));
    assert!((0.25..0.35).contains(&s.hold_ratio), "{s:?}");
}

/// After a server answered nothing for a while, the process probes it with
/// its reserve, and once it is back the pace recovers within a minute.
#[test]
fn after_an_outage_the_pace_recovers_within_a_minute() {
    let t0 = Instant::now();
    let mut t = OpenThrottle::new();
    let mut draws = 0;
    // 30 s of a server that answers nothing, asked 2,000 opens a second.
    let down = crowd(&mut t, t0, 3_000, 20, 0, &mut draws);
    let probes: u32 = down[1_000..].iter().map(|(s, _)| s).sum();
    // After the first window: about the reserve a window, not 40,000.
    assert!(probes <= 40, "{probes}");
    // Back, with room for 700 a second.
    let back = t0 + ms(30_000);
    let up = crowd(&mut t, back, 12_000, 20, 7, &mut draws);
    let full = up
        .iter()
        .position(|&(_, taken)| taken == 7)
        .expect("never took a full tick");
    let full_for_a_second = up
        .windows(100)
        .position(|w| w.iter().all(|&(_, taken)| taken == 7))
        .expect("never full for a second");
    assert!(full_for_a_second <= 6_000, "{} s", full_for_a_second / 100);
    // A full tick came before that, once the server was back.
    assert!(full > 0, "full in the first tick after a 30 s outage");
}

#[test]
fn a_held_back_open_is_no_stream_and_is_asked_again_after_a_throttled_wait() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut c = new_client(t0, 10);
    let first_draw = c.throttle_draw();
    c.handle_held_back(t0);
    assert_eq!(drain(&mut c), []);
    assert_eq!(c.reconnects(), 0);
    // It waits a throttled retry's wait: half the largest backoff, plus up
    // to half again.
    let at = c.poll_timeout().unwrap();
    let wait = at - t0;
    assert!(
        wait >= cfg.backoff_max / 2 && wait <= cfg.backoff_max,
        "{wait:?}"
    );
    c.handle_timeout(at);
    let out = drain(&mut c);
    assert!(
        matches!(&out[..], [Output::Connect(Request::Open { .. })]),
        "{out:?}"
    );
    // The second ask draws anew.
    assert_ne!(c.throttle_draw(), first_draw);
    // The first stream actually opened is no reconnect, and no attempt
    // went to the retry budget.
    assert_eq!(c.reconnects(), 0);
    assert_eq!(c.poll_attempt(), None);
    // After a refused open, a held-back retry undoes only its own count.
    let (now, out) = fail_and_reconnect(&mut c, at, unavailable());
    assert!(
        matches!(&out[..], [Output::Connect(Request::Open { .. })]),
        "{out:?}"
    );
    assert_eq!(c.reconnects(), 1);
    c.handle_held_back(now);
    assert_eq!(c.reconnects(), 0);
    // Two held-back waits of one session differ (the draw moves on).
    let w1 = c.poll_timeout().unwrap() - now;
    let next = c.poll_timeout().unwrap();
    c.handle_timeout(next);
    drain(&mut c);
    c.handle_held_back(next);
    assert_ne!(c.poll_timeout().unwrap() - next, w1);
}

#[test]
fn a_resume_is_never_held_back() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    feed(&mut c, t0, 0..3, 10);
    let (now, out) = fail_and_reconnect(&mut c, t0 + SEC, transport());
    assert!(
        matches!(&out[..], [Output::Connect(Request::Resume { .. })]),
        "{out:?}"
    );
    let before = (c.reconnects(), c.poll_timeout());
    c.handle_held_back(now);
    assert_eq!((c.reconnects(), c.poll_timeout()), before);
    assert_eq!(drain(&mut c), []);
}

#[test]
fn held_back_opens_give_up_at_the_last_chance_and_say_so() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut c = new_client(t0, 10);
    let mut now = t0;
    let mut asked = 0;
    // Every open held back, bounded by the give-up time.
    let outcome = loop {
        asked += 1;
        assert!(asked < 100, "never gave up");
        c.handle_held_back(now);
        let out = drain(&mut c);
        if let [Output::Finished(o)] = &out[..] {
            break o.clone();
        }
        assert_eq!(out, []);
        now = c.poll_timeout().unwrap();
        assert!(now < t0 + cfg.give_up_without_progress, "{:?}", now - t0);
        c.handle_timeout(now);
        let out = drain(&mut c);
        assert!(
            matches!(&out[..], [Output::Connect(Request::Open { .. })]),
            "{out:?}"
        );
    };
    // It gave up at its last chance, as a refused retry would have.
    assert_eq!(now, t0 + cfg.give_up_without_progress - cfg.backoff_initial);
    let Verdict::Unreachable(why) = &outcome.verdict else {
        panic!("{outcome:?}");
    };
    assert!(
        why.contains(&format!("this process held back {asked} opens")),
        "{why}"
    );
    assert_eq!(outcome.reconnects, 0);
}
