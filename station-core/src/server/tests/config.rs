//! Server configuration validation.

use super::*;

#[test]
fn config_validation() {
    assert_eq!(Config::default().validate(), Ok(()));
    assert_eq!(Config::default().silence_timeout, Duration::from_secs(5));
    let c = Config {
        window: 0,
        ..Config::default()
    };
    assert!(c.validate().is_err());
    let short = Config::new(SEC, SEC * 2);
    assert_eq!(short.silence_timeout, SEC);
    assert_eq!(short.validate(), Ok(()));
    let mut c = Config::default();
    c.silence_timeout = c.ttl;
    assert!(c.validate().is_err());
    assert_eq!(Config::new(ms(10), SEC * 30).ack_every(), 16);
}

/// The unworkable configurations once accepted, and one per rule: each is
/// refused with a message that names the rule.
#[test]
fn unworkable_configurations_are_refused_with_the_rule() {
    // Sessions would expire between two numbers.
    let err = Config::new(SEC * 40, SEC * 30).validate().unwrap_err();
    assert!(err.contains("interval (40s) plus silence timeout"), "{err}");
    // An ack asked every 64 numbers at 40 ms: 2.52 s against 2.12 s.
    let mut c = Config::new(ms(40), SEC * 30);
    c.window = 256;
    let err = c.validate().unwrap_err();
    assert!(err.contains("acknowledge every 64 numbers"), "{err}");
    // ...which a smaller window fixes.
    c.window = 128;
    assert_eq!(c.validate(), Ok(()));
    // Explicit silence timeouts too short for an ack's round trip.
    let c = Config {
        silence_timeout: ms(200),
        ..Config::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .contains("acknowledge every 1 numbers"));
    // Absurd durations.
    let c = Config {
        ttl: MAX_DURATION * 2,
        ..Config::default()
    };
    assert!(c.validate().unwrap_err().contains("session TTL"));
    let c = Config::new(Duration::from_secs(1 << 62), Duration::from_secs(1 << 62));
    assert!(c.validate().is_err());
    // Just inside the interval rule.
    let mut c = Config::new(SEC * 10, SEC * 30);
    assert_eq!(c.silence_timeout, SEC * 15);
    assert_eq!(c.validate(), Ok(()));
    c.interval = SEC * 15;
    assert_eq!(c.validate(), Ok(()));
    c.interval = SEC * 15 + ms(1);
    assert!(c.validate().is_err());
}

#[test]
fn the_lease_defaults_to_five_seconds_capped_at_a_sixth_of_the_ttl() {
    assert_eq!(Config::default().lease, DEFAULT_LEASE);
    assert_eq!(DEFAULT_LEASE, SEC * 5);
    assert_eq!(Config::new(SEC, SEC * 300).lease, DEFAULT_LEASE);
    // A short TTL gets a short lease, and stays valid.
    let short = Config::new(SEC, SEC * 2);
    assert_eq!(short.lease, SEC / 3);
    assert_eq!(short.validate(), Ok(()));
}

#[test]
fn the_lease_must_be_positive_and_at_most_half_the_ttl() {
    let with_lease = |lease| Config {
        lease,
        ..Config::default()
    };
    for bad in [Duration::ZERO, TTL / 2 + ms(1), TTL, TTL * 2] {
        let err = with_lease(bad).validate().unwrap_err();
        assert!(
            err.contains("lease") && err.contains("half the session TTL"),
            "{err}"
        );
    }
    for good in [ms(1), LEASE, TTL / 2] {
        assert_eq!(with_lease(good).validate(), Ok(()), "{good:?}");
    }
}
