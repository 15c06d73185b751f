//! The driver's retry budget over real sockets: sessions run with one
//! `DriverOptions` share one budget, spend it on failed attempts, are
//! throttled (later retries, not failures), and leave it when they end.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use station_core::client::{Config as ClientConfig, Verdict};
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
            let c = common::client(cfg, 10, seed);
            run(&endpoints, &opts, c, |e, _| {
                if matches!(e, Event::Connecting { .. }) {
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome.unwrap();
        assert!(
            matches!(&outcome.verdict, Verdict::Unreachable(m) if m.contains("no server reachable")),
            "{outcome:?}"
        );
    }
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
