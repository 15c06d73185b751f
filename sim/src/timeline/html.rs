//! The page around the picture, written with `maud`: the summary, the
//! lanes top to bottom with the time axis over them, and the violations,
//! key and faults under it.

use std::time::Duration;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::draw::{
    client_lane, other_events, stream_bar, violation_markers, Canvas, Px, AXIS, BUCKET, CLIENT_H,
    MAX_LISTED, NET_H, OTHER_H, RIGHT, ROW_H, SERVER_H, WIDTH,
};
use super::model::{Mark, Model, Placed};
use super::seconds;
use crate::report::Report;
use crate::scenario::Scenario;

/// The page's style sheet, inline.
const STYLE: &str = include_str!("style.css");

/// The whole page.
pub(super) fn page(scenario: &Scenario, report: &Report, m: &Model) -> String {
    let end = m.end.as_secs_f64().max(0.001);
    let mut c = Canvas {
        svg: String::new(),
        end,
    };
    let height = lanes(&mut c, scenario, m);
    let title = format!("{} — seed {} — sim timeline", scenario.name, report.seed);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                // Written as XML (every element closed), as the rest.
                (PreEscaped(r#"<meta charset="utf-8"/>"#))
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (summary(scenario, report, m))
                svg xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(format!("{height:.0}"))
                    viewBox=(format!("0 0 {WIDTH} {height:.0}")) role="img" {
                    rect class="paper" x="0" y="0" width=(WIDTH) height=(format!("{height:.0}")) {}
                    // The grid goes over the lanes (drawn in one pass with
                    // what is in them), faint enough not to hide anything.
                    (PreEscaped(&c.svg))
                    (axis(&c, end, height))
                }
                (legend(m))
            }
        }
    };
    page.into_string()
}

/// Draws every lane; returns the picture's height.
fn lanes(c: &mut Canvas, scenario: &Scenario, m: &Model) -> f64 {
    let network = !m.network.is_empty()
        || !m.network_marks.is_empty()
        || m.violations.iter().any(|v| v.client.is_none());
    let mut y = AXIS;
    let mut odd = false;

    // Network-wide faults, and violations of no one client.
    if network {
        c.lane("network", y, NET_H, odd, "");
        for span in &m.network {
            let band = if span.label.starts_with("fail rate") {
                0.0
            } else {
                1.0
            };
            c.span(span, y + 2.0 + band * 13.0, 12.0, true);
        }
        for mark in &m.network_marks {
            c.mark(mark, y + 25.0);
        }
        let global: Vec<&Placed> = m.violations.iter().filter(|v| v.client.is_none()).collect();
        violation_markers(c, &global, y + NET_H / 2.0);
        y += NET_H;
        odd = !odd;
    }

    // Servers: a header row, then a row per client streamed to.
    for (s, lane) in m.servers.iter().enumerate() {
        let rows = lane.rows.len() as f64;
        let h = SERVER_H + rows * ROW_H;
        let host = Scenario::server_host(s);
        let boots = lane.boots.len();
        let note = match boots {
            0 | 1 => String::new(),
            n => format!("{n} boots"),
        };
        c.lane(&host, y, h, odd, &note);
        for span in &lane.crashes {
            c.span(span, y + 1.0, h - 2.0, true);
        }
        for &(at, boot) in &lane.boots {
            let mark = Mark {
                at,
                class: "boot",
                symbol: "▲",
                title: format!("{host} boot {boot}"),
            };
            c.mark(&mark, y + 19.0);
            if boot > 0 {
                c.text(c.x(at) + 8.0, y + 18.0, "small", &format!("boot {boot}"));
            }
        }
        let mut ry = y + SERVER_H;
        for (client, streams) in &lane.rows {
            let name = client.map_or("c?".to_string(), |c| format!("c{c}"));
            c.text(22.0, ry + 15.0, "rowname", &format!("└ {name}"));
            if let Some(spans) = client.and_then(|cl| lane.links.get(&cl)) {
                for span in spans {
                    c.span(span, ry + 1.0, ROW_H - 2.0, false);
                }
            }
            for (k, &i) in streams.iter().enumerate() {
                let next = streams
                    .get(k + 1)
                    .map_or(WIDTH - RIGHT, |&j| c.x(m.streams[j].from));
                stream_bar(c, &m.streams[i], ry, &name, next);
            }
            ry += ROW_H;
        }
        y += h;
        odd = !odd;
    }

    // Hosts the trace names that are neither servers nor clients.
    for (host, events) in &m.others {
        c.lane(host, y, OTHER_H, odd, "");
        other_events(c, events, y);
        y += OTHER_H;
        odd = !odd;
    }

    // Clients.
    for (i, lane) in m.clients.iter().enumerate() {
        let host = Scenario::client_host(i);
        let note = scenario
            .clients
            .get(i)
            .map_or(String::new(), |p| format!("{} numbers", p.count));
        c.lane(&host, y, CLIENT_H, odd, &note);
        client_lane(c, lane, i, y);
        let mine: Vec<&Placed> = m
            .violations
            .iter()
            .filter(|v| v.client == Some(i))
            .collect();
        violation_markers(c, &mine, y + CLIENT_H - 9.0);
        y += CLIENT_H;
        odd = !odd;
    }
    y + 8.0
}

/// The time axis over `end` seconds, with grid lines down to `height`.
fn axis(c: &Canvas, end: f64, height: f64) -> Markup {
    let step = axis_step(end);
    let ticks =
        std::iter::successors(Some(0.0), |t| Some(t + step)).take_while(|t| *t <= end + 1e-9);
    html! {
        @for t in ticks {
            @let x = c.x(Duration::from_secs_f64(t));
            line class="grid" x1=(Px(x)) x2=(Px(x)) y1=(Px(AXIS - 6.0)) y2=(Px(height - 4.0)) {}
            text x=(Px(x)) y="16" class="axis" {
                @if step >= 1.0 { (format!("{t:.0} s")) } @else { (format!("{t:.1} s")) }
            }
        }
    }
}

/// A round step giving at most about 16 grid lines over `end` seconds.
fn axis_step(end: f64) -> f64 {
    const STEPS: [f64; 15] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| end / s <= 16.0)
        .unwrap_or(7200.0)
}

/// The lines above the picture: the run's settings and outcome.
fn summary(scenario: &Scenario, report: &Report, m: &Model) -> Markup {
    let verdicts: Vec<String> = m
        .clients
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let v = l.end.as_ref().map_or("?", |e| e.2.as_str());
            format!("c{i} {v}")
        })
        .collect();
    let line = format!(
        "{} server(s), {} client(s), store {:?}, bug {:?}; interval {}, TTL {}; ended at {} after {} steps; trace hash {:016x}; {}",
        m.servers.len(),
        m.clients.len(),
        scenario.store,
        scenario.bug,
        seconds(scenario.session.interval),
        seconds(scenario.session.ttl),
        seconds(report.ended_at),
        report.steps,
        report.trace_hash,
        verdicts.join(", "),
    );
    let ok = m.violations.is_empty();
    html! {
        p class="summary" { (line) }
        @if let Some(e) = &report.error {
            p class="error" { "simulation stopped: " (e) }
        }
        p class={ "verdict " (if ok { "ok" } else { "bad" }) } {
            @if ok {
                "no invariant broken"
            } @else {
                (m.violations.len()) " invariant violation(s), listed below"
            }
        }
    }
}

/// What is under the picture: the violations, the key, the faults.
fn legend(m: &Model) -> Markup {
    html! {
        @if !m.violations.is_empty() {
            h2 { "Violations" }
            ol class="violations" {
                @for v in m.violations.iter().take(MAX_LISTED) {
                    li value=(v.number) { "at " (seconds(v.at)) ": " (v.text) }
                }
            }
            @if m.violations.len() > MAX_LISTED {
                p class="error" {
                    "… and " (m.violations.len() - MAX_LISTED)
                    " more (the test's output lists them all)"
                }
            }
        }
        h2 { "Key" }
        ul class="key" {
            li {
                "Server rows: a bar per stream, from " i { "Attached" } " to its last number, labelled "
                b { "c<client> [i<incarnation>] g<generation>" }
                " (✓: completed); ticks at the bottom: numbers sent."
            }
            li {
                "Client lanes: the bar is the stream it holds (server, attached " b { "@" } "index); "
                span class="sw number" {} " number received (" span class="sw dup" {} " again), "
                @if m.acks_recorded {
                    span class="sw ack" {} " ack @n sent (cumulative: it holds every number below n)"
                } @else {
                    "acknowledgements: not recorded in this report's trace"
                }
                "; ○ connect, " span class="failedkey" { "×" }
                " stream failed or went silent (⊗: and a reconnect at once), ✓/✗ end and verdict; "
                span class="sw isolated" {} " isolated by the fault schedule."
            }
            li {
                "Faults: " span class="sw cut" {} " cut, " span class="sw oneway" {}
                " one direction cut, " span class="sw hold" {} " held (stall), "
                span class="sw crash" {} " crashed, " span class="sw net" {}
                " network-wide setting, ◆ other fault."
            }
            li {
                span class="vkey" { "3" } " broken invariant (" span class="vkey" { "3–7" }
                " several close together), placed at the time its text names, else when the number it names was sent, else when the client finished; listed above."
            }
            li {
                "Ticks closer than " (BUCKET)
                " px are merged into one wider mark; hover any mark for its numbers and times."
            }
        }
        @if !m.faults.is_empty() {
            details {
                summary { "Faults applied (" (m.faults.len()) ")" }
                ol class="faults" start="0" {
                    @for (at, action) in &m.faults {
                        li { (seconds(*at)) ": " (format!("{action:?}")) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_stay_few() {
        for end in [0.5, 3.0, 45.0, 200.0, 700.0, 5000.0] {
            let step = axis_step(end);
            assert!(end / step <= 16.0, "{end}: {step}");
        }
    }

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut c = Canvas {
            svg: String::new(),
            end: 1.0,
        };
        c.lane(r#"a<b & "c">"#, 0.0, 40.0, false, "x < y");
        assert!(
            c.svg
                .contains(r#"data-host="a&lt;b &amp; &quot;c&quot;&gt;""#),
            "{}",
            c.svg
        );
        assert!(
            c.svg.contains(">a&lt;b &amp; &quot;c&quot;&gt;</text>"),
            "{}",
            c.svg
        );
        assert!(c.svg.contains(">x &lt; y</text>"), "{}", c.svg);
    }
}
