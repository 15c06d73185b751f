//! What an operator and a user see, with the real binary: log lines in
//! `--log-format json`, the demo's output, and the alert rules and Grafana
//! dashboard of `deploy/`, whose every metric name must be one a server
//! exports.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::metrics::scrape_port;
use common::{dead_port, poll, spawn_client, station, wait_until, Finished, Server, SHORT};
use station_net::testkit::RedisServer;

/// Each line of `text` as a JSON log event, with the fields a log
/// pipeline indexes: an RFC 3339 `timestamp`, a `level`, a `target` and a
/// `message`. Panics naming the first line that is not one.
fn json_events(text: &str, out: &Finished) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{out}"));
            let timestamp = event["timestamp"].as_str().unwrap_or_default();
            assert!(
                timestamp.len() >= 20 && timestamp.as_bytes()[10] == b'T',
                "no RFC 3339 timestamp in {line}"
            );
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&event["level"].as_str().unwrap_or_default()),
                "no level in {line}"
            );
            assert!(event["target"].is_string(), "no target in {line}");
            assert!(event["message"].is_string(), "no message in {line}");
            event
        })
        .collect()
}

/// Every line the server, and a client meeting injected faults, write to
/// stderr with `--log-format json` is one JSON object with a timestamp,
/// level, target, message and the event's fields; the client's warnings
/// put the status in words (code, reason, message), not `Debug`.
#[test]
fn json_logs_are_one_event_per_line() {
    let mut cmd = station([
        "--log-format",
        "json",
        "server",
        "--port",
        "0",
        "--interval",
        "10ms",
        "--fail-every",
        "5",
    ]);
    cmd.env("RUST_LOG", "info");
    let mut server = Server::spawn("server --log-format json", cmd);

    let client = spawn_client(server.port, &["--count", "20", "--log-format", "json"])
        .finish(common::CLIENT_TIMEOUT);
    client.assert_code(0);
    let events = json_events(&client.stderr, &client);
    let warnings: Vec<&str> = events
        .iter()
        .filter(|e| e["level"] == "WARN")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        !warnings.is_empty(),
        "--fail-every 5 over 20 numbers ends streams, each a warning\n{client}"
    );
    for w in &warnings {
        assert!(
            w.contains("ended: UNAVAILABLE (INJECTED_FAULT): injected fault"),
            "{w}"
        );
        assert!(!w.contains("Status {"), "Debug output in a warning: {w}");
    }

    server.proc.terminate();
    let out = server.proc.finish(SHORT);
    out.assert_code(0);
    let events = json_events(&out.stderr, &out);
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for expected in ["serving", "SIGTERM received", "stopped"] {
        assert!(messages.contains(&expected), "no {expected:?} event\n{out}");
    }
    // The event's fields sit beside the message, for the pipeline to index.
    let serving = events.iter().find(|e| e["message"] == "serving").unwrap();
    assert_eq!(serving["store"], "memory", "{serving}");
    assert!(
        serving["bound"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{serving}"
    );
}

/// `station demo` (stderr not a terminal, so no bars) tells stream ends in
/// words and ends with a table of its clients, one row each, columns
/// lined up.
#[test]
fn demo_prints_stream_ends_in_words_and_a_summary_table() {
    let out = common::run_station(&[
        "demo",
        "--clients",
        "3",
        "--interval",
        "10ms",
        "--fail-every",
        "5",
    ]);
    out.assert_code(0);
    let ends: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("stream ended"))
        .collect();
    assert!(!ends.is_empty(), "no stream end reported\n{out}");
    for line in &ends {
        assert!(
            line.contains("stream ended: UNAVAILABLE (INJECTED_FAULT): injected fault"),
            "{line}"
        );
    }
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("client  numbers"))
        .unwrap_or_else(|| panic!("no table header\n{out}"));
    let result = lines[header].find("result").expect("a result column");
    for (i, row) in lines[header + 1..header + 4].iter().enumerate() {
        assert!(
            row.trim_start().starts_with(&(i + 1).to_string()),
            "{row}\n{out}"
        );
        assert_eq!(row.get(result..), Some("SUCCESS"), "{row}\n{out}");
    }
    assert!(out.last_line().starts_with("demo PASSED"), "{out}");
}

/// The names of the samples in a Prometheus text exposition (a summary's
/// `_sum` and `_count` are names of their own, as PromQL sees them).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let body = exposition.split("\r\n\r\n").nth(1).unwrap_or(exposition);
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `station_…` identifier in `text`: metric names in PromQL,
/// whether in a query, a description or a test's input series. Metric
/// names are `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn station_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("station_"))
        .map(str::to_string)
        .collect()
}

fn deploy_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The dashboard's queries (every `expr` and template query) and the alert
/// rules, with their unit tests, name only metrics a real server exports.
/// A counter appears only once it counts, so two servers make them all
/// count: one on memory sees sessions complete, resume and be refused; one
/// on a private Redis sees its store fail.
#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana/station-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 8, "too few queries found: {queries:?}");
    let mut wanted = BTreeSet::new();
    for q in &queries {
        let names = station_names(q);
        assert!(!names.is_empty(), "a dashboard query names no metric: {q}");
        wanted.extend(names);
    }
    for rules in [
        "prometheus/station-alerts.yml",
        "prometheus/station-alerts.test.yml",
    ] {
        wanted.extend(station_names(&deploy_file(rules)));
    }

    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mut exported = traffic_on_memory();
    exported.extend(store_failure_on_redis(&mut redis));
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "deploy/ names metrics the server does not export: {missing:?}\n\
         exported: {exported:?}"
    );
    // What is checked: the names every panel and alert stands on.
    for name in [
        "station_store_errors_total",
        "station_rejections_total",
        "station_scheduling_lateness_seconds",
        "station_shedding",
        "station_cpu_full",
        "station_store_latency_seconds_count",
    ] {
        assert!(wanted.contains(name), "{name} is not used: {wanted:?}");
    }
}

/// Metric names scraped from memory-store servers after a session that
/// resumes (injected faults) and completes, and after a refusal at the door
/// (`--max-streams 1`: a long session holds the one place). Two servers:
/// a holder that faults would free its place between streams, and the
/// client meant to be refused could slip in there.
fn traffic_on_memory() -> BTreeSet<String> {
    let mut names = faults_on_memory();
    names.extend(refusal_on_memory());
    names
}

fn faults_on_memory() -> BTreeSet<String> {
    let metrics_port = dead_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&["--metrics-addr", &metrics_addr, "--fail-every", "7"]);
    wait_until(SHORT, "the metrics endpoint answers", || {
        scrape_port(metrics_port).is_some()
    });
    common::run_client(server.port, &["--count", "20"]).assert_code(0);
    // The client may exit before the server has handled its final ack.
    scrape_until(metrics_port, "station_sessions_completed_total")
}

fn refusal_on_memory() -> BTreeSet<String> {
    let metrics_port = dead_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&["--metrics-addr", &metrics_addr, "--max-streams", "1"]);
    let mut holder = spawn_client(server.port, &["--count", "3000"]);
    server.wait_stats(SHORT, "the long session attached", |s| {
        s["attached_streams"] == 1
    });
    let mut refused = spawn_client(server.port, &["--count", "5"]);
    let text = poll(
        SHORT,
        Duration::from_millis(50),
        "a refusal at the door",
        || {
            let text = scrape_port(metrics_port).unwrap_or_default();
            match text.contains("station_rejections_total{code=\"RESOURCE_EXHAUSTED\"}") {
                true => Ok(text),
                false => Err(text),
            }
        },
    );
    refused.kill();
    holder.kill();
    sample_names(&text)
}

/// Metric names scraped from a server on `redis` once its store failed:
/// Redis is stopped under a session whose lease renewals then fail.
fn store_failure_on_redis(redis: &mut RedisServer) -> BTreeSet<String> {
    let metrics_port = dead_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(&[
        "--store",
        &redis.url(),
        "--metrics-addr",
        &metrics_addr,
        "--lease",
        "100ms",
    ]);
    let mut holder = spawn_client(server.port, &["--count", "3000"]);
    server.wait_stats(SHORT, "the session attached", |s| {
        s["attached_streams"] == 1
    });
    redis.stop();
    let names = scrape_until(metrics_port, "station_store_errors_total");
    holder.kill();
    names
}

/// Scrapes (bounded) until a sample named `name` shows; returns the names.
fn scrape_until(port: u16, name: &str) -> BTreeSet<String> {
    poll(SHORT, Duration::from_millis(50), name, || {
        let names = sample_names(&scrape_port(port).unwrap_or_default());
        match names.contains(name) {
            true => Ok(names),
            false => Err(format!("{names:?}")),
        }
    })
}

/// Every PromQL query of a Grafana dashboard: panel targets' `expr`, and
/// template variables' `query` and `definition`.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(q)) => out.push(q.clone()),
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(q) = q.get("query").and_then(|q| q.as_str()) {
                            out.push(q.to_string());
                        }
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}
