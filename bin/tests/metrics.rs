//! `station server --metrics-addr`: Prometheus text, scraped over HTTP.

mod common;

use std::time::Duration;

use common::metrics::scrape_port;
use common::{dead_port, run_client, wait_until, Server};

/// The value of a sample line `name{labels} value` or `name value`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_sessions_numbers_and_rejections() {
    // A free port for the exporter (it binds by itself).
    let metrics_port = dead_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&["--metrics-addr", &addr, "--fail-every", "7"]);
    let mut text = String::new();
    wait_until(
        Duration::from_secs(10),
        "the metrics endpoint answers",
        || scrape_port(metrics_port).is_some(),
    );
    run_client(server.port, &["--count", "20"]).assert_code(0);
    // An Open with a count of 0 never leaves the client (usage error), so
    // provoke a server-side rejection instead: resume an unknown session.
    wait_until(
        Duration::from_secs(10),
        "counters reach the exporter",
        || {
            text = scrape_port(metrics_port).unwrap_or_default();
            sample(&text, "station_sessions_completed_total") == Some(1.0)
        },
    );
    assert_eq!(
        sample(&text, "station_sessions_opened_total"),
        Some(1.0),
        "{text}"
    );
    let sent = sample(&text, "station_numbers_sent_total").expect("numbers sent");
    assert!(sent >= 20.0, "{text}");
    // --fail-every 7 over 20+ numbers: at least two injected UNAVAILABLEs.
    let unavailable =
        sample(&text, "station_rejections_total{code=\"UNAVAILABLE\"}").unwrap_or(0.0);
    assert!(unavailable >= 2.0, "{text}");
    assert!(
        sample(&text, "station_sessions_resumed_total").unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert!(text.contains("# HELP station_numbers_sent_total"), "{text}");
    assert!(text.contains("station_store_latency_seconds"), "{text}");
}
