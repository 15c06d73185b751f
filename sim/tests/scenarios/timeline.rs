//! Timelines (`sim::timeline`, `SIM_TIMELINE`): a run drawn as one
//! self-contained HTML page. These tests draw a passing seed, a seed of a
//! planted bug and a long dense run, and check that each page is
//! well-formed, has one lane per host, marks what broke, and stays small.
//! The pages are left in the target directory for a person to open (the
//! test prints their paths).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sim::sweep::{run_seeds, seeds};
use sim::trace::{Host, Observation, TraceEvent};
use sim::{check, run, timeline, Bug, ClientPlan, Expect, Report, Scenario};
use station_net::StreamEvent;

/// Largest page for the runs drawn here: ticks closer than a few pixels
/// are merged, so even minutes of numbers every 20 ms stay well below.
const MAX_BYTES: usize = 1_500_000;

/// Draws `build(seed)` and returns the page and what was checked.
fn draw(scenario: &Scenario, seed: u64, name: &str) -> (String, Report, Vec<sim::Violation>) {
    let report = run(scenario, seed);
    let violations = check(scenario, &report);
    let html = timeline::render(scenario, &report, &violations);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.html"));
    timeline::write(&path, &html).expect("write the timeline");
    println!(
        "{name}: seed {seed}, {} bytes, {} violation(s): {}",
        html.len(),
        violations.len(),
        path.display()
    );
    (html, report, violations)
}

/// Checks that every tag is closed in order (the page is written as XML:
/// every element closed, `<`, `>`, `&` and double quotes escaped in
/// text).
fn assert_well_formed(html: &str) {
    let body = html
        .strip_prefix("<!DOCTYPE html>")
        .expect("starts with a doctype");
    let mut open: Vec<&str> = Vec::new();
    let mut rest = body;
    let mut tags = 0;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("every tag ends") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "a '<' inside a tag: {tag:.80}");
        if let Some(name) = tag.strip_prefix('/') {
            let top = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name, "</{name}> closes <{top}>");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().expect("a tag name");
            open.push(name);
        }
        tags += 1;
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "never closed: {open:?}");
    assert!(tags > 10, "only {tags} tags");
    for loads in [
        "<script", "<link", "<img", "<iframe", " src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(loads), "the page loads something: {loads}");
    }
}

/// The `data-host` of every lane, with how often each appears.
fn lanes(html: &str) -> BTreeMap<String, usize> {
    let mut lanes = BTreeMap::new();
    for piece in html.split(r#"<g class="lane" data-host=""#).skip(1) {
        let host = &piece[..piece.find('"').expect("quoted host")];
        *lanes.entry(host.to_string()).or_default() += 1;
    }
    lanes
}

fn hosts(scenario: &Scenario) -> Vec<String> {
    let servers = (0..scenario.servers).map(Scenario::server_host);
    let clients = (0..scenario.clients.len()).map(Scenario::client_host);
    servers.chain(clients).collect()
}

/// One lane per server and client, and besides those only the network
/// lane and lanes of other hosts the trace names (a store host).
fn assert_one_lane_per_host(html: &str, scenario: &Scenario, report: &Report) {
    let lanes = lanes(html);
    for host in hosts(scenario) {
        assert_eq!(lanes.get(&host), Some(&1), "lane of {host}: {lanes:?}");
    }
    let traced = |host: &str| report.trace.iter().any(|o| o.host.to_string() == host);
    let extra: Vec<_> = lanes
        .iter()
        .filter(|(l, _)| *l != "network" && !hosts(scenario).contains(l))
        .filter(|(l, n)| **n != 1 || !traced(l))
        .collect();
    assert!(extra.is_empty(), "lanes of no host: {extra:?}");
}

/// Text as the page escapes it (`maud`'s escaping: `'` is left as is).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[test]
fn a_failover_run_draws_every_host_stream_and_crash() {
    // Seed 1 of the failover family: several servers, a crash, clients
    // that move between servers.
    let seed = 1;
    let scenario = crate::failover::failover(seed);
    let (html, report, violations) = draw(&scenario, seed, "timeline-failover");
    assert!(violations.is_empty(), "{violations:#?}");
    assert_well_formed(&html);
    assert_one_lane_per_host(&html, &scenario, &report);
    assert!(html.len() < MAX_BYTES, "{} bytes", html.len());
    assert!(
        !html.contains(r#"class="violation""#),
        "no violation marked"
    );
    // Each client's first stream is a bar labelled with its incarnation
    // (top 16 bits) and generation.
    for (c, client) in report.clients.iter().enumerate() {
        let incarnation = report
            .server_events
            .iter()
            .find_map(|e| match e.event {
                StreamEvent::Attached {
                    client_id,
                    incarnation,
                    generation: 1,
                    ..
                } if client_id == client.id => Some(incarnation),
                _ => None,
            })
            .unwrap_or_else(|| panic!("c{c} never attached at generation 1"));
        let label = format!(r#"class="barlabel">c{c} i{:04x} g1"#, incarnation >> 48);
        assert!(html.contains(&label), "no bar {label}");
    }
    assert!(
        html.contains(r#"class="span crash""#),
        "the crash is shaded"
    );
    assert!(
        html.contains(r#"class="tick sent""#),
        "numbers sent are ticks"
    );
    assert!(
        html.contains(r#"class="tick number""#),
        "numbers received are ticks"
    );
}

#[test]
fn a_planted_bug_is_marked_on_its_timeline() {
    // The first seed of the short-outages family on which a server that
    // changes numbers after a drop is caught.
    let build = |seed| {
        let mut s = crate::partitions::short_outages(seed);
        s.bug = Bug::ReseedsOnResume;
        s
    };
    let results = run_seeds(&seeds(20), &build);
    let caught = results
        .iter()
        .find(|r| !r.violations.is_empty())
        .expect("the planted bug is caught within the default seeds");
    let scenario = build(caught.seed);
    let (html, report, violations) = draw(&scenario, caught.seed, "timeline-planted-bug");
    assert_eq!(violations, caught.violations, "the seed replays");
    assert_well_formed(&html);
    assert_one_lane_per_host(&html, &scenario, &report);
    assert!(html.len() < MAX_BYTES, "{} bytes", html.len());
    // A marker per violation, or per group of violations close in time.
    let markers = html.matches(r#"<g class="violation">"#).count();
    assert!(
        (1..=violations.len()).contains(&markers),
        "{markers} markers for {} violations",
        violations.len()
    );
    for (i, v) in violations.iter().enumerate() {
        let text = escape(&v.to_string());
        let tooltip = html
            .split("<title>")
            .skip(1)
            .filter_map(|t| t.split("</title>").next())
            .flat_map(|t| t.split('\n'))
            .find(|l| l.starts_with(&format!("violation {} at ", i + 1)));
        assert!(
            tooltip.is_some_and(|l| l.ends_with(&format!(": {text}"))),
            "marker {} has its text in a tooltip: {tooltip:?}",
            i + 1
        );
        assert!(
            html.contains(&format!(": {text}</li>")),
            "violation {} is listed under the picture",
            i + 1
        );
    }
    // Outages are drawn on the lanes of the clients they cut off.
    assert!(
        html.contains(r#"class="span cut""#)
            || html.contains(r#"class="span hold""#)
            || html.contains(r#"class="span oneway""#),
        "faults are shaded"
    );
}

#[test]
fn a_long_dense_run_stays_readable_and_small() {
    // A loss run of numbers every 20 ms for minutes: thousands of ticks
    // per client, merged where they crowd.
    let (seed, scenario) = (1..=40)
        .map(|seed| (seed, crate::loss::lossy(seed)))
        .find(|(_, s)| s.session.interval == Duration::from_millis(20))
        .expect("a 20 ms loss run within 40 seeds");
    let (html, report, violations) = draw(&scenario, seed, "timeline-long-dense");
    assert!(violations.is_empty(), "{violations:#?}");
    assert_well_formed(&html);
    assert_one_lane_per_host(&html, &scenario, &report);
    let numbers: u32 = scenario.clients.iter().map(|c| c.count).sum();
    assert!(numbers > 5_000, "only {numbers} numbers");
    assert!(html.contains("tick agg"), "crowded ticks are merged");
    assert!(
        html.len() < MAX_BYTES,
        "{} bytes for {numbers} numbers",
        html.len()
    );
}

/// A run that breaks an invariant on every seed: the store keeps
/// completed sessions.
fn leaky(_seed: u64) -> Scenario {
    let mut s = Scenario::new(
        "leaky store",
        vec![ClientPlan::new(3, Duration::ZERO, Expect::Complete)],
    );
    s.bug = Bug::KeepsCompleted;
    s
}

#[test]
fn a_failing_sweep_names_its_timeline_file() {
    let test = sim::test_path!("a_failing_sweep_names_its_timeline_file");
    let failed = std::panic::catch_unwind(|| sim::sweep(&test, 1, leaky))
        .expect_err("a leaky store fails the sweep");
    let message = failed
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    let line = message
        .lines()
        .find_map(|l| l.strip_prefix("its timeline: "))
        .unwrap_or_else(|| panic!("the failure names no timeline:\n{message}"));
    let path = line.split(" (NOTE").next().expect("a path");
    let html = std::fs::read_to_string(path).expect("the named file exists");
    assert_well_formed(&html);
    assert!(html.contains(r#"<g class="violation">"#), "{path}");
    assert!(html.contains("[NoLeak]"), "{path}");
}

#[test]
fn a_host_the_timeline_does_not_know_gets_a_lane_of_its_own() {
    // A store host (or any host added later) has its events traced under
    // its own name: the timeline gives it a lane without being taught.
    let scenario = Scenario::new(
        "plain",
        vec![ClientPlan::new(4, Duration::ZERO, Expect::Complete)],
    );
    let mut report = run(&scenario, 1);
    report.trace.push(Observation {
        at: Duration::from_millis(1500),
        host: Host::Store,
        event: TraceEvent::FailedOver {
            lag: Duration::from_secs(2),
            rolled_back: 1,
        },
    });
    report.trace.push(Observation {
        at: Duration::from_millis(2250),
        host: Host::Store,
        event: TraceEvent::QueueEmpty {
            since: Duration::from_millis(750),
        },
    });
    let html = timeline::render(&scenario, &report, &check(&scenario, &report));
    assert_well_formed(&html);
    assert_one_lane_per_host(&html, &scenario, &report);
    assert_eq!(lanes(&html).get("store"), Some(&1));
    assert!(
        html.contains("failed over to a replica 2s behind: 1 record(s) rolled back at 1.500 s"),
        "its events are marked"
    );
    // The client's acknowledgements are drawn: four numbers, the last
    // acknowledged by the final ack.
    assert!(html.contains(r#"class="tick ack""#), "acks are ticks");
    assert!(html.contains("ack @4 at "), "the final ack");
}
