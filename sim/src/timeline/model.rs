//! What a timeline draws ([`Model`]), gathered from the report's fields:
//! server streams from the server events, each client's lane, boots,
//! faults and other hosts from the trace, violations placed in time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use station_core::client::Verdict;
use station_net::StreamEvent;

use super::{clip, seconds};
use crate::invariants::Violation;
use crate::report::Report;
use crate::scenario::{Action, Scenario};
use crate::trace::{Host, TraceEvent};

/// A stream as the server saw it.
pub(super) struct Stream {
    pub(super) client: Option<usize>,
    pub(super) boot: u64,
    pub(super) generation: u64,
    pub(super) incarnation: u64,
    /// Which session of its client (1 = first Open), in order of attach.
    pub(super) session: usize,
    pub(super) from: Duration,
    pub(super) to: Duration,
    pub(super) next_index: u32,
    pub(super) sent: Vec<(Duration, u32)>,
    pub(super) completed: bool,
}

/// A shaded period.
pub(super) struct Span {
    pub(super) from: Duration,
    /// `None`: still on when the run ended.
    pub(super) to: Option<Duration>,
    pub(super) class: &'static str,
    pub(super) label: String,
}

/// A point event.
pub(super) struct Mark {
    pub(super) at: Duration,
    pub(super) class: &'static str,
    pub(super) symbol: &'static str,
    pub(super) title: String,
}

#[derive(Default)]
pub(super) struct ServerLane {
    pub(super) boots: Vec<(Duration, u64)>,
    pub(super) crashes: Vec<Span>,
    /// Streams by client row (`None`: an id the report does not know).
    pub(super) rows: BTreeMap<Option<usize>, Vec<usize>>,
    /// Link faults per client row.
    pub(super) links: BTreeMap<usize, Vec<Span>>,
}

#[derive(Default)]
pub(super) struct ClientLane {
    /// (from, to, label) while attached.
    pub(super) attached: Vec<(Duration, Option<Duration>, String)>,
    pub(super) numbers: Vec<(Duration, u32)>,
    pub(super) duplicates: Vec<(Duration, u32)>,
    pub(super) acks: Vec<(Duration, u32)>,
    pub(super) marks: Vec<Mark>,
    pub(super) spans: Vec<Span>,
    pub(super) isolation: Vec<(Duration, Duration)>,
    pub(super) end: Option<(Duration, bool, String, String)>,
}

/// A broken invariant, placed in time.
pub(super) struct Placed {
    pub(super) number: usize,
    pub(super) at: Duration,
    pub(super) client: Option<usize>,
    pub(super) text: String,
}

pub(super) struct Model {
    pub(super) end: Duration,
    pub(super) streams: Vec<Stream>,
    pub(super) servers: Vec<ServerLane>,
    /// Hosts seen in the trace that are neither servers nor clients.
    pub(super) others: BTreeMap<String, Vec<(Duration, String)>>,
    pub(super) clients: Vec<ClientLane>,
    pub(super) network: Vec<Span>,
    pub(super) network_marks: Vec<Mark>,
    pub(super) faults: Vec<(Duration, Action)>,
    pub(super) violations: Vec<Placed>,
    pub(super) acks_recorded: bool,
}

impl Model {
    pub(super) fn build(scenario: &Scenario, report: &Report, violations: &[Violation]) -> Model {
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
