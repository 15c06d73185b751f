//! Backoff and giving up: delays, what resets them, and the deadlines past
//! which no retry can succeed.

use super::*;

fn backoff_delays(seed: u64, n: usize) -> Vec<Duration> {
    let t0 = Instant::now();
    let mut c = new_client_with(t0, Config::default(), 5, seed);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..n {
        c.handle_end(now, transport());
        assert_eq!(drain(&mut c), []);
        let at = c.poll_timeout().unwrap();
        delays.push(at - now);
        now = at;
        c.handle_timeout(now);
        assert!(matches!(&drain(&mut c)[..], [Output::Connect(_)]));
    }
    delays
}

#[test]
fn backoff_grows_exponentially_capped_and_jittered_deterministically() {
    let cfg = Config::default();
    let delays = backoff_delays(11, 12);
    for (k, d) in delays.iter().enumerate() {
        let base = cfg
            .backoff_initial
            .saturating_mul(1 << k)
            .min(cfg.backoff_max);
        assert!(
            base / 2 <= *d && *d <= base,
            "delay {k} is {d:?}, base {base:?}"
        );
    }
    assert!(delays[..4].windows(2).all(|w| w[1] > w[0]), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= cfg.backoff_max));
    assert!(delays[8..].iter().all(|d| *d >= cfg.backoff_max / 2));
    // Same seed, same delays; another seed, other delays.
    assert_eq!(backoff_delays(11, 12), delays);
    assert_ne!(backoff_delays(12, 12), delays);
    // Jitter: not all at the same point of their range.
    let capped: Vec<_> = delays[8..].to_vec();
    assert!(capped.windows(2).any(|w| w[0] != w[1]), "{capped:?}");
}

#[test]
fn only_progress_resets_the_backoff() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut c = new_client(t0, 10);
    let mut now = t0;
    for _ in 0..6 {
        let (at, _) = fail_and_reconnect(&mut c, now, transport());
        now = at;
    }
    // Attaching is not progress: the backoff keeps growing.
    c.handle_attached(now, attached(10, 0, 1));
    let (at, out) = fail_and_reconnect(&mut c, now, transport());
    assert!(at - now >= cfg.backoff_max / 2, "{:?}", at - now);
    assert!(matches!(&out[..], [Output::Connect(_)]), "{out:?}");
    now = at;
    // A new number is.
    c.handle_attached(now, attached(10, 0, 1));
    feed(&mut c, now, 0..1, 10);
    c.handle_end(now, transport());
    let delay = c.poll_timeout().unwrap() - now;
    assert!(delay <= cfg.backoff_initial, "{delay:?}");
}

/// A server that attaches and then ends every stream UNAVAILABLE (as
/// `--fail-every 1` does) used to keep the client retrying forever:
/// each `Attached` reset the backoff and the give-up deadline.
#[test]
fn a_server_that_attaches_then_always_fails_is_given_up_on() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let limit = t0 + cfg.give_up_without_progress;
    let mut c = new_client(t0, 3);
    let mut now = t0;
    let mut attempts = 0;
    let outcome = loop {
        assert!(
            attempts < 10_000,
            "still retrying after {attempts} attempts"
        );
        attempts += 1;
        c.handle_attached(now, attached(3, 0, 1));
        assert_eq!(drain(&mut c), []);
        c.handle_end(now, unavailable());
        let out = drain(&mut c);
        if let Some(Output::Finished(o)) = out.last() {
            break o.clone();
        }
        now = c.poll_timeout().expect("backing off");
        assert!(now <= limit, "retrying at {:?}", now - t0);
        c.handle_timeout(now);
        assert!(matches!(&drain(&mut c)[..], [Output::Connect(_)]));
    };
    assert!(
        matches!(&outcome.verdict, Verdict::Unreachable(m) if m.contains("no progress")),
        "{outcome:?}"
    );
    assert!(
        now + cfg.backoff_max >= limit,
        "gave up early: {:?}",
        now - t0
    );
    // Backed off, not hammering: a handful of attempts in a minute.
    assert!((5..40).contains(&attempts), "{attempts} attempts");
}

#[test]
fn gives_up_as_likely_expired_rather_than_retry_past_the_ttl() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut c = new_client(t0, 100);
    c.handle_attached(t0, attached(100, 0, 1));
    feed(&mut c, t0 + SEC, 0..1, 100);
    let deadline = t0 + SEC + TTL;
    let mut now = t0 + SEC * 2;
    let mut attempts = Vec::new();
    loop {
        c.handle_end(now, transport());
        let out = drain(&mut c);
        if let Some(Output::Finished(o)) = out.last() {
            assert!(
                matches!(o.verdict, Verdict::LikelyExpired(ref m) if m.contains("most likely expired (no server confirmed it)")),
                "{o:?}"
            );
            break;
        }
        let at = c.poll_timeout().unwrap();
        assert!(
            at <= deadline - cfg.backoff_initial,
            "attempt at {:?}",
            at - t0
        );
        now = at;
        c.handle_timeout(now);
        assert_eq!(drain(&mut c), [resume(1)]);
        attempts.push(now - t0);
    }
    // The last attempt is squeezed in just before the deadline, once.
    assert_eq!(now, deadline - cfg.backoff_initial, "{attempts:?}");
    assert_eq!(attempts.iter().filter(|a| **a == now - t0).count(), 1);
    assert!(attempts.len() > 5);
}

#[test]
fn gives_up_at_the_deadline_even_if_a_failure_comes_late() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    c.handle_attached(t0, attached(10, 0, 1));
    // The stream is cut off and the watchdog only notices after the TTL.
    c.handle_end(t0 + TTL, transport());
    let o = finished(&drain(&mut c));
    assert!(matches!(o.verdict, Verdict::LikelyExpired(_)), "{o:?}");
}

#[test]
fn gives_up_as_unreachable_when_never_attached() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut c = new_client(t0, 10);
    let mut now = t0;
    loop {
        c.handle_end(now, transport());
        let out = drain(&mut c);
        if let Some(Output::Finished(o)) = out.last() {
            assert!(matches!(o.verdict, Verdict::Unreachable(_)), "{o:?}");
            assert!(now >= t0 + cfg.give_up_without_progress - cfg.backoff_initial);
            break;
        }
        now = c.poll_timeout().unwrap();
        assert!(now < t0 + cfg.give_up_without_progress);
        c.handle_timeout(now);
        assert!(matches!(
            &drain(&mut c)[..],
            [Output::Connect(Request::Open { .. })]
        ));
    }
}
