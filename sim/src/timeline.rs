//! A run drawn as a picture: [`render`] turns one seed's [`Report`] into a
//! self-contained HTML page (inline SVG and CSS; no script, no external
//! resource), to be opened in any browser.
//!
//! - One lane per host: a lane for network-wide faults (when there are
//!   any), each server (with a row per client it streamed to), every
//!   other host seen in the trace (a store host, say), then each client.
//! - Server streams are bars from `Attached` to their last event,
//!   labelled with client, incarnation (its top 16 bits, in hex) and
//!   generation; the numbers they sent are ticks on the bar.
//! - On a client's lane: the stream it held (bar, labelled with the
//!   server and the index it attached at), numbers received above it
//!   (duplicates in orange), acknowledgements below it, connects (○),
//!   failed or silent streams (×), its end (✓ or ✗ with the verdict), and
//!   a dark red line while the fault schedule left it isolated.
//! - Faults are shaded spans with labels: cuts (red), one-way cuts
//!   (purple), holds (amber) on the client's lane and on the server's row
//!   for that client; crashes (grey) over the server's lane; fault rate
//!   and latency changes on the network lane.
//! - Broken invariants are numbered red markers with the text in a
//!   tooltip, listed again under the picture.
//!
//! Everything drawn comes from the [`Report`] (server events, the client
//! reports, the event trace, read by its fields) and the [`Violation`]s
//! (placed at their time, or at the number they are about), so the
//! picture follows the trace as it grows: events of hosts it does not
//! draw otherwise get a lane of their own, named by the host. Ticks
//! closer than a few pixels are merged into one mark whose tooltip gives
//! the range, so a run of minutes and thousands of numbers stays readable
//! and the file stays small.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use station_core::client::Verdict;
use station_net::StreamEvent;

use crate::invariants::Violation;
use crate::report::Report;
use crate::scenario::{Action, Scenario};
use crate::trace::{Host, TraceEvent};

/// Width of the picture, in pixels.
const WIDTH: f64 = 1560.0;
/// Left margin holding the lane names.
const GUTTER: f64 = 130.0;
/// Right margin.
const RIGHT: f64 = 40.0;
/// Height of the time axis at the top.
const AXIS: f64 = 28.0;
/// Ticks closer than this many pixels are drawn as one.
const BUCKET: f64 = 3.0;
/// Rough width of one character of the 11 px monospace font.
const CHAR: f64 = 6.7;
/// Violations listed under the picture, and in one marker's tooltip: a
/// broken run can break a rule at every number.
const MAX_LISTED: usize = 200;
const MAX_IN_TOOLTIP: usize = 20;
/// One colour per client (cycled).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    "#d62728", "#ff7f0e",
];

/// Where the timeline of `seed` of `test` goes: `SIM_TIMELINE` if set,
/// else `sim-timelines/<test>-seed-<seed>.html` in the target directory
/// (`CARGO_TARGET_DIR`, else the `target` directory holding the running
/// test binary, else the system's temporary directory).
pub fn path_for(test: &str, seed: u64) -> PathBuf {
    if let Some(path) = std::env::var_os("SIM_TIMELINE").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let name: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    target_dir()
        .join("sim-timelines")
        .join(format!("{name}-seed-{seed}.html"))
}

/// Whether `SIM_TIMELINE` asks for a timeline.
pub fn requested() -> bool {
    std::env::var_os("SIM_TIMELINE").is_some_and(|p| !p.is_empty())
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// Writes `html` (from [`render`]) to `path`, creating its directory.
pub fn write(path: &Path, html: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, html)
}

/// The run as a self-contained HTML page.
pub fn render(scenario: &Scenario, report: &Report, violations: &[Violation]) -> String {
    let model = Model::build(scenario, report, violations);
    let mut out = String::with_capacity(64 * 1024);
    page(&mut out, scenario, report, &model);
    out
}

// ---------------------------------------------------------------------
// What is drawn, gathered from the report.

/// A stream as the server saw it.
struct Stream {
    client: Option<usize>,
    boot: u64,
    generation: u64,
    incarnation: u64,
    /// Which session of its client (1 = first Open), in order of attach.
    session: usize,
    from: Duration,
    to: Duration,
    next_index: u32,
    sent: Vec<(Duration, u32)>,
    completed: bool,
}

/// A shaded period.
struct Span {
    from: Duration,
    /// `None`: still on when the run ended.
    to: Option<Duration>,
    class: &'static str,
    label: String,
}

/// A point event.
struct Mark {
    at: Duration,
    class: &'static str,
    symbol: &'static str,
    title: String,
}

#[derive(Default)]
struct ServerLane {
    boots: Vec<(Duration, u64)>,
    crashes: Vec<Span>,
    /// Streams by client row (`None`: an id the report does not know).
    rows: BTreeMap<Option<usize>, Vec<usize>>,
    /// Link faults per client row.
    links: BTreeMap<usize, Vec<Span>>,
}

#[derive(Default)]
struct ClientLane {
    /// (from, to, label) while attached.
    attached: Vec<(Duration, Option<Duration>, String)>,
    numbers: Vec<(Duration, u32)>,
    duplicates: Vec<(Duration, u32)>,
    acks: Vec<(Duration, u32)>,
    marks: Vec<Mark>,
    spans: Vec<Span>,
    isolation: Vec<(Duration, Duration)>,
    end: Option<(Duration, bool, String, String)>,
}

/// A broken invariant, placed in time.
struct Placed {
    number: usize,
    at: Duration,
    client: Option<usize>,
    text: String,
}

struct Model {
    end: Duration,
    streams: Vec<Stream>,
    servers: Vec<ServerLane>,
    /// Hosts seen in the trace that are neither servers nor clients.
    others: BTreeMap<String, Vec<(Duration, String)>>,
    clients: Vec<ClientLane>,
    network: Vec<Span>,
    network_marks: Vec<Mark>,
    faults: Vec<(Duration, Action)>,
    violations: Vec<Placed>,
    acks_recorded: bool,
}

impl Model {
    fn build(scenario: &Scenario, report: &Report, violations: &[Violation]) -> Model {
        let index: BTreeMap<_, _> = report
            .clients
            .iter()
            .enumerate()
            .map(|(c, r)| (r.id, c))
            .collect();
        let mut m = Model {
            end: report.ended_at,
            streams: Vec::new(),
            servers: (0..scenario.servers)
                .map(|_| ServerLane::default())
                .collect(),
            others: BTreeMap::new(),
            clients: (0..report.clients.len())
                .map(|_| ClientLane::default())
                .collect(),
            network: Vec::new(),
            network_marks: Vec::new(),
            faults: Vec::new(),
            violations: Vec::new(),
            acks_recorded: false,
        };

        // Streams, from the server events.
        let mut sessions: BTreeMap<Option<usize>, usize> = BTreeMap::new();
        // (server, boot, client) -> latest stream.
        let mut current: BTreeMap<(usize, u64, Option<usize>), usize> = BTreeMap::new();
        for e in &report.server_events {
            m.end = m.end.max(e.at);
            if e.server >= m.servers.len() {
                m.servers.resize_with(e.server + 1, ServerLane::default);
            }
            match &e.event {
                StreamEvent::Attached {
                    client_id,
                    incarnation,
                    generation,
                    next_index,
                } => {
                    let client = index.get(client_id).copied();
                    let session = sessions.entry(client).or_default();
                    if *generation == 1 || *session == 0 {
                        *session += 1;
                    }
                    let i = m.streams.len();
                    m.streams.push(Stream {
                        client,
                        boot: e.boot,
                        generation: *generation,
                        incarnation: *incarnation,
                        session: *session,
                        from: e.at,
                        to: e.at,
                        next_index: *next_index,
                        sent: Vec::new(),
                        completed: false,
                    });
                    current.insert((e.server, e.boot, client), i);
                    m.servers[e.server].rows.entry(client).or_default().push(i);
                }
                StreamEvent::Sent {
                    client_id,
                    index: n,
                    ..
                } => {
                    let client = index.get(client_id).copied();
                    if let Some(&i) = current.get(&(e.server, e.boot, client)) {
                        m.streams[i].to = e.at;
                        m.streams[i].sent.push((e.at, *n));
                    }
                }
                StreamEvent::Completed { client_id } => {
                    let client = index.get(client_id).copied();
                    if let Some(&i) = current.get(&(e.server, e.boot, client)) {
                        m.streams[i].to = e.at;
                        m.streams[i].completed = true;
                    }
                }
                // Kinds of event added later are not drawn (yet).
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }

        // Clients, boots, faults and unknown hosts, from the trace.
        let mut seen: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); m.clients.len()];
        let mut open: Vec<OpenFault> = Vec::new();
        for o in &report.trace {
            m.end = m.end.max(o.at);
            match (o.host, &o.event) {
                (Host::Client(c), event) if c < m.clients.len() => {
                    m.client_event(c, o.at, event, &mut seen[c]);
                }
                (Host::Server { server, boot }, TraceEvent::Boot) => {
                    if server >= m.servers.len() {
                        m.servers.resize_with(server + 1, ServerLane::default);
                    }
                    m.servers[server].boots.push((o.at, boot));
                }
                // Their streams are drawn from the server events.
                (Host::Server { .. }, _) => {}
                (Host::Fault, TraceEvent::Fault { action, .. }) => {
                    m.fault(scenario, o.at, action, &mut open);
                }
                // Any other host (the store, the stale resumes, hosts added
                // later) gets a lane of its own, by name.
                (host, event) => m
                    .others
                    .entry(host.to_string())
                    .or_default()
                    .push((o.at, event.to_string())),
            }
        }
        for f in open {
            m.close_fault(f, None);
        }
        if scenario.net.fail_rate > 0.0 {
            m.network.insert(
                0,
                Span {
                    from: Duration::ZERO,
                    to: m
                        .faults
                        .iter()
                        .find(|(_, action)| matches!(action, Action::FailRate(_)))
                        .map(|(at, _)| *at),
                    class: "net",
                    label: format!("fail rate {}", scenario.net.fail_rate),
                },
            );
        }

        for (c, r) in report.clients.iter().enumerate() {
            let lane = &mut m.clients[c];
            lane.isolation = r.isolation.clone();
            if let Some(outcome) = &r.outcome {
                let at = r.finished_at.unwrap_or(m.end);
                let ok = outcome.verdict == Verdict::Verified;
                let short = verdict_label(&outcome.verdict);
                let long = format!(
                    "{:?}: received {}/{}, {} reconnects",
                    outcome.verdict, outcome.received, outcome.count, outcome.reconnects
                );
                lane.end = Some((at, ok, short, long));
            } else {
                lane.end = Some((
                    m.end,
                    false,
                    "still running".into(),
                    "never finished".into(),
                ));
            }
        }

        for (i, v) in violations.iter().enumerate() {
            let at = violation_time(report, &m, v).min(m.end);
            m.violations.push(Placed {
                number: i + 1,
                at,
                client: v.client.filter(|&c| c < m.clients.len()),
                text: v.to_string(),
            });
        }
        m
    }

    fn client_event(
        &mut self,
        c: usize,
        at: Duration,
        event: &TraceEvent,
        seen: &mut BTreeSet<u32>,
    ) {
        let lane = &mut self.clients[c];
        let close = |lane: &mut ClientLane| {
            if let Some(last) = lane.attached.last_mut() {
                if last.1.is_none() {
                    last.1 = Some(at);
                }
            }
        };
        let mark = |class, symbol| Mark {
            at,
            class,
            symbol,
            title: event.to_string(),
        };
        match event {
            TraceEvent::Number { index } => {
                if seen.insert(*index) {
                    lane.numbers.push((at, *index));
                } else {
                    lane.duplicates.push((at, *index));
                }
            }
            TraceEvent::Ack { next_index } => {
                lane.acks.push((at, *next_index));
                self.acks_recorded = true;
            }
            TraceEvent::Attached { server, next_index } => {
                close(lane);
                lane.attached
                    .push((at, None, format!("s{server} @{next_index}")));
            }
            TraceEvent::Connect { .. } => {
                close(lane);
                lane.marks.push(mark("connect", "○"));
            }
            TraceEvent::Failed { .. } => {
                close(lane);
                lane.marks.push(mark("failed", "×"));
            }
            TraceEvent::Silent { .. } => {
                close(lane);
                lane.marks.push(mark("silent", "×"));
            }
            TraceEvent::Finished { .. } => close(lane),
            TraceEvent::Start { .. } => lane.marks.push(mark("start", "▸")),
            _ => lane.marks.push(mark("other", "·")),
        }
    }

    fn fault(
        &mut self,
        scenario: &Scenario,
        at: Duration,
        action: &Action,
        open: &mut Vec<OpenFault>,
    ) {
        self.faults.push((at, action.clone()));
        let names = |servers: &[usize]| {
            servers
                .iter()
                .map(|s| format!("s{s}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let oneway = |upstream: bool| {
            if upstream {
                "acks lost"
            } else {
                "numbers lost"
            }
        };
        let opened = match action {
            Action::Cut { client, servers } => Some(OpenFault {
                key: ("cut", Some(*client), servers.clone()),
                from: at,
                class: "cut",
                label: format!("cut {}", names(servers)),
            }),
            Action::CutOneway {
                client,
                servers,
                upstream,
            } => Some(OpenFault {
                key: (oneway(*upstream), Some(*client), servers.clone()),
                from: at,
                class: "oneway",
                label: format!("{} {}", oneway(*upstream), names(servers)),
            }),
            Action::Hold { client, servers } => Some(OpenFault {
                key: ("hold", Some(*client), servers.clone()),
                from: at,
                class: "hold",
                label: format!("hold {}", names(servers)),
            }),
            Action::Crash(s) => Some(OpenFault {
                key: ("crash", None, vec![*s]),
                from: at,
                class: "crash",
                label: "crashed".into(),
            }),
            Action::FailRate(p) => {
                self.close_matching(open, &("fail", None, vec![]), at);
                (*p > 0.0).then(|| OpenFault {
                    key: ("fail", None, vec![]),
                    from: at,
                    class: "net",
                    label: format!("fail rate {p}"),
                })
            }
            Action::MaxLatency(d) => {
                self.close_matching(open, &("latency", None, vec![]), at);
                (*d != scenario.net.max_latency).then(|| OpenFault {
                    key: ("latency", None, vec![]),
                    from: at,
                    class: "net",
                    label: format!("max latency {}", seconds(*d)),
                })
            }
            Action::Heal { client, servers } => {
                self.close_matching(open, &("cut", Some(*client), servers.clone()), at);
                None
            }
            Action::HealOneway {
                client,
                servers,
                upstream,
            } => {
                let key = (oneway(*upstream), Some(*client), servers.clone());
                self.close_matching(open, &key, at);
                None
            }
            Action::Release { client, servers } => {
                self.close_matching(open, &("hold", Some(*client), servers.clone()), at);
                None
            }
            Action::Restart(s) => {
                self.close_matching(open, &("crash", None, vec![*s]), at);
                None
            }
            Action::Pause(_)
            | Action::Unpause(_)
            | Action::CutStore(_)
            | Action::HealStore(_)
            | Action::HoldStore(_)
            | Action::ReleaseStore(_)
            | Action::StoreLatency(_)
            | Action::StoreService(_)
            | Action::CrashStore
            | Action::RestartStore { .. }
            | Action::FailoverStore { .. }
            | Action::StaleResume { .. } => {
                self.network_marks.push(Mark {
                    at,
                    class: "fault",
                    symbol: "◆",
                    title: format!("{}: {action:?}", action_name(action)),
                });
                None
            }
        };
        open.extend(opened);
    }

    fn close_matching(&mut self, open: &mut Vec<OpenFault>, key: &FaultKey, at: Duration) {
        let (kind, client, servers) = key;
        let found = open.iter().position(|f| &f.key == key).or_else(|| {
            open.iter().position(|f| {
                f.key.0 == *kind
                    && f.key.1 == *client
                    && f.key.2.iter().any(|s| servers.contains(s))
            })
        });
        if let Some(i) = found {
            let f = open.remove(i);
            self.close_fault(f, Some(at));
        }
    }

    fn close_fault(&mut self, f: OpenFault, to: Option<Duration>) {
        let span = |f: &OpenFault| Span {
            from: f.from,
            to,
            class: f.class,
            label: f.label.clone(),
        };
        match (&f.key.1, f.class) {
            (None, "crash") => {
                for &s in &f.key.2 {
                    if let Some(lane) = self.servers.get_mut(s) {
                        lane.crashes.push(span(&f));
                    }
                }
            }
            (None, _) => self.network.push(span(&f)),
            (Some(c), _) => {
                for &s in &f.key.2 {
                    if let Some(lane) = self.servers.get_mut(s) {
                        lane.links.entry(*c).or_default().push(span(&f));
                    }
                }
                if let Some(lane) = self.clients.get_mut(*c) {
                    lane.spans.push(span(&f));
                }
            }
        }
    }
}

/// (kind, client, servers) of a fault that lasts until undone.
type FaultKey = (&'static str, Option<usize>, Vec<usize>);

struct OpenFault {
    key: FaultKey,
    from: Duration,
    class: &'static str,
    label: String,
}

/// The name of `action`'s kind (its variant), for a mark's tooltip.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Cut { .. } => "Cut",
        Action::Heal { .. } => "Heal",
        Action::CutOneway { .. } => "CutOneway",
        Action::HealOneway { .. } => "HealOneway",
        Action::Hold { .. } => "Hold",
        Action::Release { .. } => "Release",
        Action::Crash(_) => "Crash",
        Action::Restart(_) => "Restart",
        Action::FailRate(_) => "FailRate",
        Action::MaxLatency(_) => "MaxLatency",
        Action::Pause(_) => "Pause",
        Action::Unpause(_) => "Unpause",
        Action::CutStore(_) => "CutStore",
        Action::HealStore(_) => "HealStore",
        Action::HoldStore(_) => "HoldStore",
        Action::ReleaseStore(_) => "ReleaseStore",
        Action::StoreLatency(_) => "StoreLatency",
        Action::StoreService(_) => "StoreService",
        Action::CrashStore => "CrashStore",
        Action::RestartStore { .. } => "RestartStore",
        Action::FailoverStore { .. } => "FailoverStore",
        Action::StaleResume { .. } => "StaleResume",
    }
}

fn verdict_label(v: &Verdict) -> String {
    match v {
        Verdict::Verified => "verified".into(),
        Verdict::ChecksumMismatch => "checksum mismatch".into(),
        Verdict::Expired(_) => "expired".into(),
        Verdict::LikelyExpired(_) => "likely expired".into(),
        Verdict::Rejected { code, .. } => format!("rejected {code:?}"),
        Verdict::ProtocolError(_) => "protocol error".into(),
        Verdict::Unreachable(_) => "unreachable".into(),
        #[allow(unreachable_patterns)] // verdicts added later
        other => clip(&format!("{other:?}"), 24),
    }
}

/// When a violation happened: its time, else the last time the number it
/// is about was sent to its client, else when its client finished, else
/// the end of the run.
fn violation_time(report: &Report, m: &Model, v: &Violation) -> Duration {
    if let Some(at) = v.at {
        return at;
    }
    if let (Some(c), Some(n)) = (v.client, v.index) {
        let sent = m
            .streams
            .iter()
            .filter(|s| s.client == Some(c))
            .flat_map(|s| s.sent.iter())
            .filter(|(_, i)| *i == n)
            .map(|(at, _)| *at)
            .max();
        if let Some(at) = sent {
            return at;
        }
    }
    v.client
        .and_then(|c| report.clients.get(c))
        .and_then(|c| c.finished_at)
        .unwrap_or(m.end)
}

// ---------------------------------------------------------------------
// Drawing.

/// `12.345 s`: seconds, with milliseconds when there are any.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to about `chars` characters.
fn clip(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut s: String = text.chars().take(chars.saturating_sub(1)).collect();
    s.push('…');
    s
}

struct Canvas {
    svg: String,
    end: f64,
}

impl Canvas {
    fn x(&self, at: Duration) -> f64 {
        let span = WIDTH - GUTTER - RIGHT;
        GUTTER + (at.as_secs_f64() / self.end).clamp(0.0, 1.0) * span
    }

    fn x_end(&self, to: Option<Duration>) -> f64 {
        to.map_or(WIDTH - RIGHT, |t| self.x(t))
    }

    fn text(&mut self, x: f64, y: f64, class: &str, text: &str) {
        let _ = write!(
            self.svg,
            r#"<text x="{x:.1}" y="{y:.1}" class="{class}">{}</text>"#,
            escape(text)
        );
    }

    /// A lane's background and name.
    /// A lane's background, name and a second line under the name.
    fn lane(&mut self, host: &str, y: f64, h: f64, odd: bool, note: &str) {
        let _ = write!(
            self.svg,
            r#"<g class="lane" data-host="{}"><rect class="bg{}" x="0" y="{y:.1}" width="{WIDTH}" height="{h:.1}"/>"#,
            escape(host),
            if odd { " odd" } else { "" },
        );
        self.text(8.0, y + 15.0, "lanename", host);
        if !note.is_empty() && h >= 30.0 {
            self.text(8.0, y + 28.0, "small", note);
        }
        self.svg.push_str("</g>");
    }

    fn span(&mut self, span: &Span, y: f64, h: f64, labelled: bool) {
        let x0 = self.x(span.from);
        let x1 = self.x_end(span.to).max(x0 + 2.0);
        let until = span.to.map_or("the end".into(), seconds);
        let _ = write!(
            self.svg,
            r#"<rect class="span {}" x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}"><title>{} from {} to {until}</title></rect>"#,
            span.class,
            x1 - x0,
            escape(&span.label),
            seconds(span.from),
        );
        if labelled {
            // A narrow span's label runs on past it (its tooltip has it all).
            let room = ((x1 - x0 - 4.0).max(20.0 * CHAR) / (CHAR * 0.9)) as usize;
            if room >= 3 {
                let label = clip(&span.label, room);
                self.text(
                    x0 + 2.0,
                    y + 9.0,
                    &format!("spanlabel {}", span.class),
                    &label,
                );
            }
        }
    }

    fn mark(&mut self, mark: &Mark, y: f64) {
        let x = self.x(mark.at);
        let _ = write!(
            self.svg,
            r#"<text x="{x:.1}" y="{y:.1}" class="mark {}">{}<title>{} at {}</title></text>"#,
            mark.class,
            mark.symbol,
            escape(&mark.title),
            seconds(mark.at),
        );
    }

    /// Ticks for `items` (time, index) from `y` down `h` pixels; ticks
    /// closer than [`BUCKET`] pixels become one wider mark. Tooltips read
    /// `<what> <sigil><index>` (`sent #7`, `ack @8`).
    fn ticks(
        &mut self,
        items: &[(Duration, u32)],
        (y, h): (f64, f64),
        class: &str,
        (what, sigil): (&str, char),
    ) {
        let mut i = 0;
        while i < items.len() {
            let bucket = (self.x(items[i].0) / BUCKET).floor();
            let mut j = i + 1;
            while j < items.len() && (self.x(items[j].0) / BUCKET).floor() == bucket {
                j += 1;
            }
            let group = &items[i..j];
            let (t0, first) = group[0];
            let (t1, last) = group[group.len() - 1];
            if group.len() == 1 {
                let x = self.x(t0);
                let _ = write!(
                    self.svg,
                    r#"<line class="tick {class}" x1="{x:.1}" x2="{x:.1}" y1="{y:.1}" y2="{:.1}"><title>{what} {sigil}{first} at {}</title></line>"#,
                    y + h,
                    seconds(t0),
                );
            } else {
                let x = bucket * BUCKET;
                let (lo, hi) = (first.min(last), first.max(last));
                let _ = write!(
                    self.svg,
                    r#"<rect class="tick agg {class}" x="{x:.1}" y="{y:.1}" width="{BUCKET}" height="{h:.1}"><title>{what} {sigil}{lo}–{sigil}{hi}: {} between {} and {}</title></rect>"#,
                    group.len(),
                    seconds(t0),
                    seconds(t1),
                );
            }
            i = j;
        }
    }
}

fn colour(client: Option<usize>) -> &'static str {
    client.map_or("#555555", |c| PALETTE[c % PALETTE.len()])
}

/// Heights.
const NET_H: f64 = 30.0;
const SERVER_H: f64 = 24.0;
const ROW_H: f64 = 22.0;
const OTHER_H: f64 = 26.0;
const CLIENT_H: f64 = 66.0;

fn page(out: &mut String, scenario: &Scenario, report: &Report, m: &Model) {
    let end = m.end.as_secs_f64().max(0.001);
    let mut c = Canvas {
        svg: String::new(),
        end,
    };
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
        violation_markers(&mut c, &global, y + NET_H / 2.0);
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
                stream_bar(&mut c, &m.streams[i], ry, &name, next);
            }
            ry += ROW_H;
        }
        y += h;
        odd = !odd;
    }

    // Hosts the trace names that are neither servers nor clients.
    for (host, events) in &m.others {
        c.lane(host, y, OTHER_H, odd, "");
        other_events(&mut c, events, y);
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
        client_lane(&mut c, lane, i, y);
        let mine: Vec<&Placed> = m
            .violations
            .iter()
            .filter(|v| v.client == Some(i))
            .collect();
        violation_markers(&mut c, &mine, y + CLIENT_H - 9.0);
        y += CLIENT_H;
        odd = !odd;
    }
    let height = y + 8.0;

    // The time axis, with grid lines over every lane.
    let mut axis = String::new();
    let step = axis_step(end);
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let x = c.x(Duration::from_secs_f64(t));
        let label = if step >= 1.0 {
            format!("{t:.0} s")
        } else {
            format!("{t:.1} s")
        };
        let _ = write!(
            axis,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"/><text x="{x:.1}" y="16" class="axis">{label}</text>"#,
            AXIS - 6.0,
            height - 4.0
        );
        t += step;
    }

    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/>
<title>{title}</title>
<style>{STYLE}</style>
</head><body>
<h1>{title}</h1>
"#,
        title = escape(&format!(
            "{} — seed {} — sim timeline",
            scenario.name, report.seed
        )),
    );
    summary(out, scenario, report, m);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img">
<rect class="paper" x="0" y="0" width="{WIDTH}" height="{height:.0}"/>
"#
    );
    // The grid goes over the lanes (drawn in one pass with what is in
    // them), faint enough not to hide anything.
    out.push_str(&c.svg);
    out.push_str(&axis);
    out.push_str("\n</svg>\n");
    legend(out, m);
    out.push_str("</body></html>\n");
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

/// A server stream's bar; its label goes inside, or after it if it does
/// not fit and the row is free up to `next` (where the next bar starts).
fn stream_bar(c: &mut Canvas, s: &Stream, y: f64, name: &str, next: f64) {
    let x0 = c.x(s.from);
    let x1 = c.x(s.to).max(x0 + 3.0);
    let colour = colour(s.client);
    let inc = format!("{:04x}", s.incarnation >> 48);
    let label = format!("{name} i{inc} g{}", s.generation);
    let first = s.sent.first().map(|(_, n)| *n);
    let last = s.sent.last().map(|(_, n)| *n);
    let title = format!(
        "{name}, session {} (incarnation {}), generation {}, boot {}: attached at {} from #{}; {}{}",
        s.session,
        inc,
        s.generation,
        s.boot,
        seconds(s.from),
        s.next_index,
        match (first, last) {
            (Some(a), Some(b)) => format!("sent #{a}–#{b} until {}", seconds(s.to)),
            _ => "sent nothing".into(),
        },
        if s.completed { "; completed" } else { "" },
    );
    let _ = write!(
        c.svg,
        r#"<rect class="stream" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" style="fill:{colour};stroke:{colour}"><title>{}</title></rect>"#,
        y + 2.0,
        x1 - x0,
        ROW_H - 4.0,
        escape(&title)
    );
    let room = ((x1 - x0 - 4.0) / CHAR) as usize;
    let text = if s.completed {
        format!("{label} ✓")
    } else {
        label
    };
    let width = text.chars().count() as f64 * CHAR;
    if room >= text.chars().count() {
        c.text(x0 + 3.0, y + 12.0, "barlabel", &text);
    } else if x1 + 4.0 + width < next - 2.0 {
        c.text(x1 + 4.0, y + 12.0, "barlabel", &text);
    } else if room >= 3 {
        c.text(x0 + 3.0, y + 12.0, "barlabel", &clip(&text, room));
    }
    c.ticks(&s.sent, (y + 13.0, ROW_H - 15.0), "sent", ("sent", '#'));
}

/// A client's lane, top to bottom: fault labels and its verdict, numbers
/// received, the stream it holds (with connects and failures on it),
/// acknowledgements, isolation, then violations (drawn by the caller).
fn client_lane(c: &mut Canvas, lane: &ClientLane, i: usize, y: f64) {
    const NUMBERS: f64 = 14.0;
    const BAR: f64 = 25.0;
    const ACKS: f64 = 37.0;
    const ISOLATED: f64 = 46.0;
    let colour = colour(Some(i));
    for span in &lane.spans {
        c.span(span, y + 1.0, ISOLATED - 1.0, true);
    }
    for &(from, to) in &lane.isolation {
        let (x0, x1) = (c.x(from), c.x(to));
        let _ = write!(
            c.svg,
            r#"<rect class="isolated" x="{x0:.1}" y="{:.1}" width="{:.1}" height="3"><title>isolated (no working stream to a running server) from {} to {}</title></rect>"#,
            y + ISOLATED,
            (x1 - x0).max(1.0),
            seconds(from),
            seconds(to)
        );
    }
    for (from, to, label) in &lane.attached {
        let x0 = c.x(*from);
        let x1 = c.x_end(*to).max(x0 + 2.0);
        let _ = write!(
            c.svg,
            r#"<rect class="held" x="{x0:.1}" y="{:.1}" width="{:.1}" height="11" style="fill:{colour};stroke:{colour}"><title>attached {} from {} to {}</title></rect>"#,
            y + BAR,
            x1 - x0,
            escape(label),
            seconds(*from),
            to.map_or("the end".into(), seconds),
        );
        let room = ((x1 - x0 - 10.0) / (CHAR * 0.9)) as usize;
        if room >= label.chars().count() {
            c.text(x0 + 7.0, y + BAR + 9.0, "heldlabel", label);
        }
    }
    c.ticks(
        &lane.numbers,
        (y + NUMBERS, 10.0),
        "number",
        ("received", '#'),
    );
    c.ticks(
        &lane.duplicates,
        (y + NUMBERS, 10.0),
        "dup",
        ("received again", '#'),
    );
    c.ticks(&lane.acks, (y + ACKS, 8.0), "ack", ("ack", '@'));
    for mark in &lane.marks {
        c.mark(mark, y + BAR + 10.0);
    }
    if let Some((at, ok, short, long)) = &lane.end {
        let x = c.x(*at);
        let class = if *ok { "ok" } else { "bad" };
        let symbol = if *ok { "✓" } else { "✗" };
        let _ = write!(
            c.svg,
            r#"<text x="{x:.1}" y="{:.1}" class="end {class}">{symbol}<title>{} at {}</title></text>"#,
            y + BAR + 11.0,
            escape(long),
            seconds(*at)
        );
        let width = short.chars().count() as f64 * CHAR;
        let lx = if x + 8.0 + width < WIDTH - 2.0 {
            x + 6.0
        } else {
            x - 4.0 - width
        };
        c.text(lx, y + 10.0, &format!("endlabel {class}"), short);
    }
}

fn other_events(c: &mut Canvas, events: &[(Duration, String)], y: f64) {
    let mut i = 0;
    while i < events.len() {
        let bucket = (c.x(events[i].0) / BUCKET).floor();
        let mut j = i + 1;
        while j < events.len() && (c.x(events[j].0) / BUCKET).floor() == bucket {
            j += 1;
        }
        let group = &events[i..j];
        let title = if group.len() == 1 {
            format!("{} at {}", group[0].1, seconds(group[0].0))
        } else {
            format!(
                "{} events from {} to {}, first: {}",
                group.len(),
                seconds(group[0].0),
                seconds(group[group.len() - 1].0),
                group[0].1
            )
        };
        let x = c.x(group[0].0);
        let _ = write!(
            c.svg,
            r#"<line class="tick other" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"><title>{}</title></line>"#,
            y + 5.0,
            y + OTHER_H - 5.0,
            escape(&title)
        );
        i = j;
    }
}

/// Numbered red markers at `y`; markers closer than a marker's width
/// become one (`3–7`) whose tooltip lists them all.
fn violation_markers(c: &mut Canvas, placed: &[&Placed], y: f64) {
    let mut sorted = placed.to_vec();
    sorted.sort_by_key(|v| (v.at, v.number));
    let mut i = 0;
    while i < sorted.len() {
        let x = c.x(sorted[i].at);
        let mut j = i + 1;
        while j < sorted.len() && c.x(sorted[j].at) - x < 48.0 {
            j += 1;
        }
        let group = &sorted[i..j];
        let label = match group {
            [one] => one.number.to_string(),
            _ => {
                let lo = group.iter().map(|v| v.number).min().unwrap_or_default();
                let hi = group.iter().map(|v| v.number).max().unwrap_or_default();
                format!("{lo}–{hi}")
            }
        };
        let w = (label.chars().count() as f64 * 7.0 + 8.0).max(16.0);
        let _ = write!(
            c.svg,
            r#"<g class="violation"><rect x="{:.1}" y="{:.1}" width="{w:.1}" height="16" rx="8"/><text x="{x:.1}" y="{:.1}">{label}</text>"#,
            x - w / 2.0,
            y - 8.0,
            y + 4.0,
        );
        let mut titles: Vec<String> = group
            .iter()
            .take(MAX_IN_TOOLTIP)
            .map(|v| format!("violation {} at {}: {}", v.number, seconds(v.at), v.text))
            .collect();
        if group.len() > MAX_IN_TOOLTIP {
            titles.push(format!("… and {} more", group.len() - MAX_IN_TOOLTIP));
        }
        let _ = write!(c.svg, "<title>{}</title></g>", escape(&titles.join("\n")));
        i = j;
    }
}

fn summary(out: &mut String, scenario: &Scenario, report: &Report, m: &Model) {
    let verdicts: Vec<String> = m
        .clients
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let v = l.end.as_ref().map_or("?", |e| e.2.as_str());
            format!("c{i} {v}")
        })
        .collect();
    let _ = writeln!(
        out,
        "<p class=\"summary\">{} server(s), {} client(s), store {:?}, bug {:?}; interval {}, TTL {}; ended at {} after {} steps; trace hash {:016x}; {}</p>",
        m.servers.len(),
        m.clients.len(),
        scenario.store,
        scenario.bug,
        seconds(scenario.session.interval),
        seconds(scenario.session.ttl),
        seconds(report.ended_at),
        report.steps,
        report.trace_hash,
        escape(&verdicts.join(", ")),
    );
    if let Some(e) = &report.error {
        let _ = writeln!(
            out,
            "<p class=\"error\">simulation stopped: {}</p>",
            escape(e)
        );
    }
    let _ = writeln!(
        out,
        "<p class=\"verdict {}\">{}</p>",
        if m.violations.is_empty() { "ok" } else { "bad" },
        if m.violations.is_empty() {
            "no invariant broken".to_string()
        } else {
            format!(
                "{} invariant violation(s), listed below",
                m.violations.len()
            )
        }
    );
}

fn legend(out: &mut String, m: &Model) {
    if !m.violations.is_empty() {
        out.push_str("<h2>Violations</h2>\n<ol class=\"violations\">\n");
        for v in m.violations.iter().take(MAX_LISTED) {
            let _ = writeln!(
                out,
                "<li value=\"{}\">at {}: {}</li>",
                v.number,
                seconds(v.at),
                escape(&v.text)
            );
        }
        out.push_str("</ol>\n");
        if m.violations.len() > MAX_LISTED {
            let _ = writeln!(
                out,
                "<p class=\"error\">… and {} more (the test's output lists them all)</p>",
                m.violations.len() - MAX_LISTED
            );
        }
    }
    let acks = if m.acks_recorded {
        "<span class=\"sw ack\"></span> ack @n sent (cumulative: it holds every number below n)"
    } else {
        "acknowledgements: not recorded in this report's trace"
    };
    let _ = writeln!(
        out,
        r#"<h2>Key</h2>
<ul class="key">
<li>Server rows: a bar per stream, from <i>Attached</i> to its last number, labelled <b>c&lt;client&gt; [i&lt;incarnation&gt;] g&lt;generation&gt;</b> (✓: completed); ticks at the bottom: numbers sent.</li>
<li>Client lanes: the bar is the stream it holds (server, attached <b>@</b>index); <span class="sw number"></span> number received (<span class="sw dup"></span> again), {acks}; ○ connect, <span class="failedkey">×</span> stream failed or went silent (⊗: and a reconnect at once), ✓/✗ end and verdict; <span class="sw isolated"></span> isolated by the fault schedule.</li>
<li>Faults: <span class="sw cut"></span> cut, <span class="sw oneway"></span> one direction cut, <span class="sw hold"></span> held (stall), <span class="sw crash"></span> crashed, <span class="sw net"></span> network-wide setting, ◆ other fault.</li>
<li><span class="vkey">3</span> broken invariant (<span class="vkey">3–7</span> several close together), placed at the time its text names, else when the number it names was sent, else when the client finished; listed above.</li>
<li>Ticks closer than {BUCKET} px are merged into one wider mark; hover any mark for its numbers and times.</li>
</ul>"#
    );
    if !m.faults.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Faults applied ({})</summary><ol class=\"faults\" start=\"0\">",
            m.faults.len()
        );
        for (at, action) in &m.faults {
            let text = format!("{action:?}");
            let _ = writeln!(out, "<li>{}: {}</li>", seconds(*at), escape(&text));
        }
        out.push_str("</ol></details>\n");
    }
}

const STYLE: &str = r#"
body { font: 13px/1.4 ui-sans-serif, "DejaVu Sans", sans-serif; margin: 12px 16px; color: #222; }
h1 { font-size: 17px; margin: 0 0 4px; }
h2 { font-size: 14px; margin: 14px 0 4px; }
p { margin: 2px 0; }
.verdict.bad, .error { color: #c62828; font-weight: bold; }
.verdict.ok { color: #2e7d32; }
svg { display: block; margin: 8px 0; font: 11px "DejaVu Sans Mono", ui-monospace, monospace; }
svg text { fill: #222; }
.paper { fill: #fff; }
.bg { fill: #fff; }
.bg.odd { fill: #f3f5f8; }
.lanename { font-weight: bold; font-size: 12px; }
.rowname { fill: #555; }
.axis { text-anchor: middle; fill: #444; }
.grid { stroke: #000; stroke-opacity: 0.12; stroke-width: 1; }
.small { font-size: 10px; fill: #555; }
.stream { fill-opacity: 0.28; stroke-width: 1; }
.held { fill-opacity: 0.55; stroke-width: 1; }
.barlabel { font-size: 10.5px; }
.heldlabel { font-size: 9.5px; fill: #fff; font-weight: bold; }
.tick { stroke-width: 1; }
.tick.sent { stroke: #222; }
.tick.number { stroke: #1b5e20; }
.tick.dup { stroke: #ef6c00; stroke-width: 2; }
.tick.ack { stroke: #0d47a1; }
.tick.other { stroke: #6a1b9a; stroke-width: 2; }
.tick.agg { stroke: none; }
.tick.agg.sent { fill: #222; }
.tick.agg.number { fill: #1b5e20; }
.tick.agg.dup { fill: #ef6c00; }
.tick.agg.ack { fill: #0d47a1; }
.span { stroke: none; }
.span.cut { fill: #e53935; fill-opacity: 0.2; }
.span.oneway { fill: #8e24aa; fill-opacity: 0.18; }
.span.hold { fill: #fb8c00; fill-opacity: 0.25; }
.span.crash { fill: #424242; fill-opacity: 0.28; }
.span.net { fill: #00897b; fill-opacity: 0.2; }
.spanlabel { font-size: 9.5px; font-weight: bold; }
.spanlabel.cut { fill: #b71c1c; }
.spanlabel.oneway { fill: #6a1b9a; }
.spanlabel.hold { fill: #e65100; }
.spanlabel.crash { fill: #212121; }
.spanlabel.net { fill: #00695c; }
.isolated { fill: #8b0000; }
.mark { text-anchor: middle; font-size: 12px; }
.mark.connect { fill: #333; }
.mark.failed { fill: #c62828; font-weight: bold; font-size: 14px; }
.mark.silent { fill: #ef6c00; font-weight: bold; font-size: 14px; }
.mark.start { fill: #333; }
.mark.boot { fill: #2e7d32; font-size: 10px; }
.mark.fault { fill: #6a1b9a; }
.end { text-anchor: middle; font-size: 16px; font-weight: bold; }
.end.ok, .endlabel.ok { fill: #2e7d32; }
.end.bad, .endlabel.bad { fill: #c62828; }
.endlabel { font-size: 10.5px; font-weight: bold; }
.violation rect { fill: #d50000; stroke: #fff; stroke-width: 1.5; }
.violation text { fill: #fff; font-weight: bold; text-anchor: middle; font-size: 11px; }
ol.violations li { color: #b71c1c; font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
ul.key li { margin: 2px 0; }
.sw { display: inline-block; width: 14px; height: 10px; vertical-align: middle; }
.sw.number { background: #1b5e20; width: 2px; }
.sw.dup { background: #ef6c00; width: 2px; }
.sw.ack { background: #0d47a1; width: 2px; }
.sw.isolated { background: #8b0000; height: 3px; }
.sw.cut { background: rgba(229,57,53,0.35); }
.sw.oneway { background: rgba(142,36,170,0.3); }
.sw.hold { background: rgba(251,140,0,0.4); }
.sw.crash { background: rgba(66,66,66,0.4); }
.sw.net { background: rgba(0,137,123,0.3); }
.failedkey { color: #c62828; font-weight: bold; }
.vkey { background: #d50000; color: #fff; font-weight: bold; border-radius: 8px; padding: 0 5px; font-size: 11px; }
ol.faults { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn axis_steps_stay_few() {
        for end in [0.5, 3.0, 45.0, 200.0, 700.0, 5000.0] {
            let step = axis_step(end);
            assert!(end / step <= 16.0, "{end}: {step}");
        }
    }
}
