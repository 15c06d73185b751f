//! The retry budget (gRFC A6 throttling) and the client's retry timing
//! around it: throttled retries wait longer but never fail the session,
//! the first retry is already jittered, and no server can make a client
//! retry sooner than its backoff and the server's pushback allow.

use super::*;

/// Reports the client's last attempt to `budget`, as an adapter does
/// after every input.
fn settle(c: &mut Client, now: Instant, budget: &mut RetryBudget) -> Option<Decision> {
    let attempt = c.poll_attempt()?;
    let decision = budget.record(attempt);
    if decision == Decision::Throttle {
        c.handle_throttled(now);
    }
    Some(decision)
}

#[test]
fn the_bucket_is_a6s_for_one_session() {
    let mut b = RetryBudget::new();
    // No session: nothing to spend.
    assert!(b.throttling());
    b.join();
    assert_eq!(b.tokens(), 10.0);
    // Four failures leave 6 tokens: still above half.
    for _ in 0..4 {
        assert_eq!(b.record(Attempt::Failed), Decision::Retry);
    }
    // The fifth leaves 5, which is not more than half: throttled.
    assert_eq!(b.record(Attempt::Failed), Decision::Throttle);
    assert_eq!(b.throttled(), 1);
    // One success gives back a tenth of a token: above half again.
    assert_eq!(b.record(Attempt::Succeeded), Decision::Retry);
    assert_eq!(b.tokens(), 5.1);
    assert!(!b.throttling());
    // Failures never take it below zero...
    for _ in 0..20 {
        b.record(Attempt::Failed);
    }
    assert_eq!(b.tokens(), 0.0);
    assert_eq!(b.throttled(), 21);
    // ...and it takes ten successes to buy one failure back: 51 to climb
    // from 0 past the threshold of 5.
    for _ in 0..50 {
        b.record(Attempt::Succeeded);
    }
    assert!(b.throttling(), "{:?}", b.stats());
    b.record(Attempt::Succeeded);
    assert!(!b.throttling(), "{:?}", b.stats());
    // Successes never fill it past the maximum.
    for _ in 0..1000 {
        b.record(Attempt::Succeeded);
    }
    assert_eq!(b.tokens(), 10.0);
    let stats = b.stats();
    assert_eq!(
        (stats.max_tokens, stats.sessions, stats.throttled),
        (10.0, 1, 21)
    );
}

#[test]
fn the_bucket_scales_with_the_sessions_sharing_it() {
    let mut b = RetryBudget::new();
    for _ in 0..100 {
        b.join();
    }
    assert_eq!(b.stats().max_tokens, 1000.0);
    // A few failures among a hundred sessions throttle nobody...
    for _ in 0..499 {
        assert_eq!(b.record(Attempt::Failed), Decision::Retry);
    }
    // ...five per session, summed, throttle everyone.
    assert_eq!(b.record(Attempt::Failed), Decision::Throttle);
    // Leaving takes a share and keeps the bucket as full as it was: half.
    for _ in 0..90 {
        b.leave();
    }
    let s = b.stats();
    assert_eq!((s.sessions, s.max_tokens, s.tokens), (10, 100.0, 50.0));
    assert!(s.throttling);
    for _ in 0..20 {
        b.leave();
    }
    assert_eq!(b.stats().sessions, 0);
    assert_eq!(b.tokens(), 0.0);
    // The next first session starts full.
    b.join();
    assert_eq!(b.tokens(), 10.0);
}

/// Sessions that start while the others fail do not refill the bucket:
/// else a load generator starting sessions against an overloaded server
/// would bring five fast retries with each.
#[test]
fn sessions_joining_a_drained_bucket_find_it_drained() {
    let mut b = RetryBudget::new();
    for _ in 0..10 {
        b.join();
    }
    for _ in 0..100 {
        b.record(Attempt::Failed);
    }
    assert_eq!(b.tokens(), 0.0);
    for _ in 0..1000 {
        b.join();
    }
    assert_eq!(b.stats().max_tokens, 10_100.0);
    assert_eq!(b.record(Attempt::Failed), Decision::Throttle);
    // Half full stays half full.
    let mut b = RetryBudget::new();
    for _ in 0..4 {
        b.join();
    }
    for _ in 0..20 {
        b.record(Attempt::Failed);
    }
    for _ in 0..4 {
        b.join();
    }
    let s = b.stats();
    assert_eq!((s.tokens, s.max_tokens), (40.0, 80.0));
    assert!(s.throttling);
}

#[test]
fn attempts_are_reported_once_per_stream() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    assert_eq!(c.poll_attempt(), None);
    // A stream that attaches and fails is a failed attempt.
    c.handle_attached(t0, attached(10, 0, 1));
    assert_eq!(c.poll_attempt(), None);
    let (now, _) = fail_and_reconnect(&mut c, t0, transport());
    assert_eq!(c.poll_attempt(), Some(Attempt::Failed));
    // One that delivers new numbers succeeded, at its first new number,
    // once; its later failure is not a failed attempt.
    c.handle_attached(now, attached(10, 0, 1));
    feed(&mut c, now, 0..1, 10);
    assert_eq!(c.poll_attempt(), Some(Attempt::Succeeded));
    feed(&mut c, now, 1..3, 10);
    assert_eq!(c.poll_attempt(), None);
    let (now, _) = fail_and_reconnect(&mut c, now, unavailable());
    assert_eq!(c.poll_attempt(), None);
    // Duplicates are no success.
    c.handle_attached(now, attached(10, 3, 1));
    c.handle_number(now, num(2, 10));
    c.handle_timeout(c.poll_timeout().expect("the watchdog"));
    assert_eq!(c.poll_attempt(), Some(Attempt::Failed));
}

#[test]
fn a_throttled_retry_waits_the_largest_backoff_with_jitter() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut waits = Vec::new();
    for seed in 0..50 {
        let mut c = new_client_with(t0, cfg.clone(), 10, seed);
        let mut b = RetryBudget::new();
        b.join();
        let mut now = t0;
        // Four failures at the backoff's pace, then throttled.
        for k in 0..5 {
            c.handle_end(now, transport());
            let decision = settle(&mut c, now, &mut b);
            let at = c.poll_timeout().unwrap();
            if k < 4 {
                assert_eq!(decision, Some(Decision::Retry));
                assert!(at - now <= cfg.backoff_initial * (1 << k));
            } else {
                assert_eq!(decision, Some(Decision::Throttle));
                let wait = at - now;
                assert!(
                    cfg.backoff_max / 2 <= wait && wait <= cfg.backoff_max,
                    "{wait:?}"
                );
                waits.push(wait);
            }
            // Early wake-ups do nothing; the retry comes at `at`.
            c.handle_timeout(at - ms(1));
            assert_eq!(drain(&mut c), []);
            c.handle_timeout(at);
            assert!(matches!(&drain(&mut c)[..], [Output::Connect(_)]));
            now = at;
        }
    }
    // Throttled clients do not come back together.
    waits.sort();
    waits.dedup();
    assert!(waits.len() > 40, "{waits:?}");
    assert!(
        *waits.last().unwrap() - waits[0] > Config::default().backoff_max / 3,
        "{waits:?}"
    );
}

#[test]
fn throttling_keeps_a_longer_pushback() {
    let t0 = Instant::now();
    let mut c = new_client(t0, 10);
    let long = Duration::from_secs(12);
    c.handle_end(t0, with_pushback(unavailable(), long));
    c.handle_throttled(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + long));
}

/// Throttling never fails a session nor moves its give-up: a client whose
/// every retry is throttled gives up with the same verdict, at the same
/// last attempt, as one never throttled -- it only tries less often.
#[test]
fn throttling_never_changes_the_verdict_or_the_deadline() {
    let t0 = Instant::now();
    for seed in 0..20 {
        let run = |throttle: bool| {
            let mut c = new_client_with(t0, Config::default(), 100, seed);
            c.handle_attached(t0, attached(100, 0, 1));
            feed(&mut c, t0, 0..1, 100);
            let mut now = t0 + SEC;
            for attempts in 0..1000 {
                c.handle_end(now, transport());
                if throttle {
                    c.handle_throttled(now);
                }
                if let Some(Output::Finished(o)) = drain(&mut c).last() {
                    return (o.verdict.clone(), now, attempts);
                }
                now = c.poll_timeout().unwrap();
                c.handle_timeout(now);
                drain(&mut c);
            }
            panic!("never gave up");
        };
        let (free_verdict, free_last, free_attempts) = run(false);
        let (verdict, last, attempts) = run(true);
        assert!(matches!(verdict, Verdict::LikelyExpired(_)), "{verdict:?}");
        assert_eq!(
            std::mem::discriminant(&verdict),
            std::mem::discriminant(&free_verdict)
        );
        assert_eq!(
            last, free_last,
            "the last attempt is squeezed in just the same"
        );
        assert!(attempts < free_attempts, "{attempts} vs {free_attempts}");
    }
}

/// After an outage that ends every stream at once (a server crash), the
/// first retries are spread out, not one herd.
#[test]
fn the_first_retry_after_a_failure_is_already_jittered() {
    let t0 = Instant::now();
    let cfg = Config::default();
    let mut delays = Vec::new();
    for seed in 0..200 {
        let mut c = new_client_with(t0, cfg.clone(), 10, seed);
        c.handle_attached(t0, attached(10, 0, 1));
        feed(&mut c, t0, 0..3, 10);
        c.handle_end(t0 + SEC, transport());
        delays.push(c.poll_timeout().unwrap() - (t0 + SEC));
    }
    assert!(
        delays
            .iter()
            .all(|d| cfg.backoff_initial / 2 <= *d && *d <= cfg.backoff_initial),
        "{delays:?}"
    );
    let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    assert!(
        *max - *min >= cfg.backoff_initial * 2 / 5,
        "{min:?}..{max:?}"
    );
    delays.sort();
    delays.dedup();
    assert!(delays.len() > 150, "{} distinct of 200", delays.len());
}

/// A small deterministic generator for the script below.
fn next(state: &mut u64) -> u64 {
    *state = crate::sequence::mix64(*state);
    *state
}

/// Whatever a server says -- ends at once, attaches and ends, sends
/// duplicates, asks for no wait or a long one, breaks the protocol -- the
/// client never retries before both its backoff and the server's pushback
/// allow. The one exception the rules make is the last attempt squeezed in
/// just before the give-up deadline: if it fails, the client gives up.
#[test]
fn no_server_makes_a_client_retry_sooner_than_backoff_and_pushback_allow() {
    let t0 = Instant::now();
    let cfg = Config::default();
    for seed in 0..300u64 {
        let mut rng = seed;
        let mut c = new_client_with(t0, cfg.clone(), 50, seed);
        let mut b = RetryBudget::new();
        b.join();
        // One number in; every stream after it brings nothing new.
        c.handle_attached(t0, attached(50, 0, 1));
        feed(&mut c, t0, 0..1, 50);
        let mut now = t0;
        let mut failures = 0u32;
        let mut squeezed = false;
        for _ in 0..500 {
            let attaches = next(&mut rng) % 2 == 0 && failures > 0;
            if attaches {
                c.handle_attached(now, attached(50, 1, 1));
                if next(&mut rng) % 3 == 0 {
                    // A duplicate: heard, but no progress.
                    c.handle_number(now, num(0, 50));
                }
            }
            drain(&mut c);
            let pushback = match next(&mut rng) % 4 {
                0 => None,
                1 => Some(Duration::ZERO),
                _ => Some(ms(next(&mut rng) % 8000)),
            };
            let end = match next(&mut rng) % 5 {
                0 => StreamEnd::Ok,
                1 => transport(),
                2 => StreamEnd::Protocol("garbage".into()),
                3 => with_pushback(
                    StreamEnd::rejected(&Reject::Overloaded(crate::Busy::Late(ms(1)))),
                    pushback.unwrap_or_default(),
                ),
                _ => with_pushback(unavailable(), pushback.unwrap_or_default()),
            };
            let asked = match &end {
                StreamEnd::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            c.handle_end(now, end);
            failures += 1;
            settle(&mut c, now, &mut b);
            // A squeezed attempt that fails gives up -- unless a server
            // attached on it, which moved the session's expiry.
            assert!(
                !squeezed || attaches || c.is_finished(),
                "seed {seed}: a squeezed attempt failed and the client goes on"
            );
            if c.is_finished() {
                break;
            }
            let at = c.poll_timeout().expect("backing off");
            let wait = at - now;
            if let Some(asked) = asked {
                assert!(
                    wait >= asked,
                    "seed {seed}: waited {wait:?}, asked {asked:?}"
                );
            }
            let base = cfg
                .backoff_initial
                .saturating_mul(1 << (failures - 1).min(20))
                .min(cfg.backoff_max);
            squeezed = wait < base / 2;
            c.handle_timeout(at);
            let out = drain(&mut c);
            assert!(matches!(out.last(), Some(Output::Connect(_))), "{out:?}");
            now = at;
        }
        assert!(c.is_finished(), "seed {seed}: still running");
    }
}
