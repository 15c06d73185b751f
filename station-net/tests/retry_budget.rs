//! The driver's retry budget over real sockets: sessions run with one
//! `DriverOptions` share one budget, spend it on failed attempts, are
//! throttled (later retries, not failures), and leave it when they end.
//! The sessions hold resume tokens: a crowd's opens are bounded first by
//! the open throttle (`open_throttle.rs`), its resumes by this budget alone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::client::{Client, Config as ClientConfig, Verdict};
use station_core::Secret;
use station_net::client::{run, DriverOptions, Event};

mod common;

#[tokio::test]
async fn sessions_sharing_options_share_one_budget_and_are_throttled_not_failed() {
    let endpoints = common::nothing_listening();
    let opts = DriverOptions::default();
    let give_up = Duration::from_secs(2);
    let cfg = ClientConfig {
        give_up_without_progress: give_up,
        ..ClientConfig::default()
    };
    let attempts = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for seed in 1..=20u64 {
        let (endpoints, opts, cfg, attempts) = (
            endpoints.clone(),
            opts.clone(),
            cfg.clone(),
            Arc::clone(&attempts),
        );
        tasks.spawn(async move {
            // A session that holds a resume token, as after a crash.
            let mut snapshot = common::client(cfg.clone(), 10, seed).snapshot();
            snapshot.token = Some(Secret([seed as u8; 16]));
            let c = Client::restore(Instant::now(), cfg, snapshot, seed).unwrap();
            let (mut sent, mut held) = (0u32, 0u32);
            let outcome = run(&endpoints, &opts, c, |e, _| match e {
                Event::Connecting { .. } => sent += 1,
                Event::HeldBack { .. } => held += 1,
                _ => {}
            })
            .await;
            attempts.fetch_add(sent, Ordering::Relaxed);
            (outcome, sent, held)
        });
    }
    let mut held_back = 0;
    while let Some(done) = tasks.join_next().await {
        let (outcome, sent, held) = done.unwrap();
        held_back += u64::from(held);
        let Verdict::Unreachable(why) = &outcome.verdict else {
            panic!("{outcome:?}");
        };
        // Every attempt went out, none was held back (resumes never
        // are), and the give-up says so.
        assert!(sent >= 2 && held == 0, "sent {sent}, held back {held}");
        assert!(why.contains("no server reachable"), "{why}");
        assert!(!why.contains("held back"), "{why}");
    }
    assert_eq!(held_back, 0);
    assert_eq!(opts.budget.open_stats().requests, 0);
    let elapsed = started.elapsed();
    let stats = opts.budget.stats();
    eprintln!(
        "{} attempts by 20 sessions in {elapsed:?}; budget {stats:?}",
        attempts.load(Ordering::Relaxed)
    );
    // Throttled retries were late, not failed: nobody gave up before the
    // last attempt squeezed in before its deadline.
    assert!(
        elapsed >= give_up - ClientConfig::default().backoff_initial,
        "{elapsed:?}"
    );
    // Twenty sessions' failures drained the pooled bucket and throttled.
    assert!(stats.throttled > 0, "{stats:?}");
    // Every session left, taking its share.
    assert_eq!(stats.sessions, 0, "{stats:?}");
    assert_eq!(stats.max_tokens, 0.0, "{stats:?}");
}
