//! Settings and announcements the client must refuse or survive: absurd
//! durations, bad counts, unworkable configurations.

use super::*;

/// A hostile server announced durations of 2^62 s: computing the
/// watchdog and give-up deadlines from them overflowed `Instant` and the
/// client panicked. Such an `Attached` is now a protocol error.
#[test]
fn absurd_durations_in_attached_are_protocol_errors() {
    let t0 = Instant::now();
    let huge = Duration::from_secs(1 << 62);
    let just_over = MAX_DURATION + Duration::from_nanos(1);
    for (ttl, interval) in [(huge, SEC), (TTL, huge), (huge, huge), (just_over, SEC)] {
        let mut c = new_client(t0, 10);
        c.handle_attached(
            t0,
            Attached {
                ttl,
                interval,
                ..attached(10, 0, 1)
            },
        );
        assert_eq!(drain(&mut c), [Output::Disconnect], "{ttl:?} {interval:?}");
        assert!(!c.is_finished());
        // Not attached: the retry opens again.
        let at = c.poll_timeout().unwrap();
        c.handle_timeout(at);
        assert!(matches!(
            &drain(&mut c)[..],
            [Output::Connect(Request::Open { .. })]
        ));
    }
    // The longest valid settings are accepted, and their deadlines
    // computed without overflow.
    let mut c = new_client(t0, 10);
    c.handle_attached(
        t0,
        Attached {
            ttl: MAX_DURATION,
            interval: MAX_DURATION,
            ..attached(10, 0, 1)
        },
    );
    assert_eq!(drain(&mut c), []);
    assert!(c.poll_timeout().unwrap() > t0 + MAX_DURATION * 3);
    c.handle_end(t0 + SEC, transport());
    assert!(c.poll_timeout().is_some());
}

/// Absurd client settings (refused by `Config::validate`, but the
/// machine must not trust that it was called) do not panic either.
#[test]
fn absurd_config_durations_do_not_panic() {
    let t0 = Instant::now();
    let huge = Duration::from_secs(1 << 62);
    let cfg = Config {
        backoff_initial: huge,
        backoff_max: huge,
        give_up_without_progress: huge,
        attach_timeout: huge,
        silence_intervals: u32::MAX,
        silence_grace: huge,
        max_protocol_errors: 1,
    };
    let mut c = new_client_with(t0, cfg, 10, 1);
    assert!(c.poll_timeout().is_some());
    c.handle_timeout(t0 + SEC);
    c.handle_attached(t0 + SEC, attached(10, 0, 1));
    feed(&mut c, t0 + SEC, 0..1, 10);
    assert!(c.poll_timeout().is_some());
    c.handle_end(t0 + SEC * 2, transport());
    let _ = c.poll_timeout();
    drain(&mut c);
}

#[test]
fn count_is_validated() {
    let t0 = Instant::now();
    for bad in [0, MAX_COUNT + 1, u32::MAX] {
        let r = Client::new(t0, Config::default(), id(), bad, 1);
        assert_eq!(r.unwrap_err(), Reject::BadCount(bad));
    }
    for good in [1, MAX_COUNT] {
        assert!(Client::new(t0, Config::default(), id(), good, 1).is_ok());
    }
}

#[test]
fn config_validation_names_the_rule() {
    assert_eq!(Config::default().validate(), Ok(()));
    let d = Config::default;
    let cases = [
        (
            Config {
                backoff_initial: Duration::ZERO,
                ..d()
            },
            "reconnection delay",
        ),
        (
            Config {
                backoff_max: ms(10),
                ..d()
            },
            "at most the largest",
        ),
        (
            Config {
                give_up_without_progress: ms(100),
                ..d()
            },
            "retry even once",
        ),
        (
            Config {
                attach_timeout: Duration::ZERO,
                ..d()
            },
            "attach timeout",
        ),
        (
            Config {
                silence_intervals: 0,
                ..d()
            },
            "exceed one interval",
        ),
        (
            Config {
                silence_grace: Duration::ZERO,
                ..d()
            },
            "exceed one interval",
        ),
        (
            Config {
                max_protocol_errors: 0,
                ..d()
            },
            "max_protocol_errors",
        ),
        (
            Config {
                give_up_without_progress: MAX_DURATION * 2,
                ..d()
            },
            "give-up time",
        ),
    ];
    for (cfg, says) in cases {
        let err = cfg.validate().unwrap_err();
        assert!(err.contains(says), "{cfg:?}: {err}");
    }
}
