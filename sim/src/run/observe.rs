//! What the hosts of a run tell the runner as it goes ([`Journal`]): each
//! server and client event becomes an observation in the trace, and what
//! the report and the fault triggers need besides (first sends and
//! arrivals, the clients' progress, streams and outcomes).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station_core::client::{Client, Outcome, Request};
use station_core::ClientId;
use station_net::client::Event;
use station_net::StreamEvent;

use crate::clock::SimClock;
use crate::faults::Trigger;
use crate::report::{ClientStream, DataLoss, Progress, ServerEvent};
use crate::scenario::Scenario;
use crate::trace::{ClientName, Host, Observation, TraceEvent};

/// State shared by the runner and every host of one run.
pub(super) struct Journal {
    clock: Arc<SimClock>,
    ids: HashMap<ClientId, usize>,
    /// Server index by host name (the clients' endpoints).
    servers: HashMap<String, usize>,
    state: Mutex<State>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) trace: Vec<Observation>,
    pub(super) server_events: Vec<ServerEvent>,
    /// First arrival of (client, index) at the client.
    pub(super) received: BTreeMap<(usize, u32), Duration>,
    /// First send of (client, index) by any server.
    pub(super) sent: BTreeMap<(usize, u32), Duration>,
    pub(super) progress: Vec<Vec<Progress>>,
    pub(super) outcomes: Vec<Option<(Outcome, Duration)>>,
    pub(super) data_losses: Vec<DataLoss>,
    /// When each client started.
    pub(super) started: Vec<Option<Duration>>,
    /// Each client's streams as it saw them.
    pub(super) streams: Vec<Vec<ClientStream>>,
}

impl State {
    /// When a fault trigger's event first happened, if it has.
    pub(super) fn time_of(&self, event: Trigger) -> Option<Duration> {
        match event {
            Trigger::Received { client, index } => self.received.get(&(client, index)).copied(),
            Trigger::Sent { client, index } => self.sent.get(&(client, index)).copied(),
        }
    }
}

impl Journal {
    /// For a run of `clients` (id, PRNG seed) and `servers` servers.
    pub(super) fn new(clock: &Arc<SimClock>, clients: &[(ClientId, u64)], servers: usize) -> Self {
        let n = clients.len();
        Journal {
            clock: clock.clone(),
            // A reused id names the client that used it first.
            ids: clients
                .iter()
                .enumerate()
                .rev()
                .map(|(i, (id, _))| (*id, i))
                .collect(),
            servers: (0..servers)
                .map(|s| (Scenario::server_host(s), s))
                .collect(),
            state: Mutex::new(State {
                progress: vec![Vec::new(); n],
                outcomes: vec![None; n],
                started: vec![None; n],
                streams: vec![Vec::new(); n],
                ..State::default()
            }),
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn log(&self, at: Duration, host: Host, event: TraceEvent) {
        self.state().trace.push(Observation { at, host, event });
    }

    pub(super) fn client_name(&self, id: &ClientId) -> ClientName {
        self.ids
            .get(id)
            .map_or(ClientName::Unknown(*id), |&i| ClientName::Known(i))
    }

    /// The server a client's endpoint names (the runner named them all).
    fn server(&self, endpoint: &str) -> usize {
        self.servers[endpoint]
    }

    pub(super) fn on_server_event(&self, server: usize, boot: u64, event: &StreamEvent) {
        let at = self.now();
        let seen = match event {
            // The incarnation stays out of the trace, so trace hashes match
            // those recorded before it was observed.
            StreamEvent::Attached {
                client_id,
                generation,
                next_index,
                ..
            } => TraceEvent::StreamAttached {
                client: self.client_name(client_id),
                generation: *generation,
                next_index: *next_index,
            },
            StreamEvent::Sent {
                client_id,
                generation,
                index,
                value,
            } => {
                if let Some(c) = self.ids.get(client_id) {
                    self.state().sent.entry((*c, *index)).or_insert(at);
                }
                TraceEvent::StreamSent {
                    client: self.client_name(client_id),
                    generation: *generation,
                    index: *index,
                    value: *value,
                }
            }
            StreamEvent::Completed { client_id } => TraceEvent::StreamCompleted {
                client: self.client_name(client_id),
            },
        };
        let mut state = self.state();
        state.trace.push(Observation {
            at,
            host: Host::Server { server, boot },
            event: seen,
        });
        state.server_events.push(ServerEvent {
            at,
            server,
            boot,
            event: event.clone(),
        });
    }

    pub(super) fn on_client_event(&self, c: usize, event: Event<'_>, client: &Client) {
        let at = self.now();
        let host = Host::Client(c);
        let seen = match event {
            Event::Connecting { endpoint, request } => {
                self.state().streams[c].push(ClientStream {
                    at,
                    resume: matches!(request, Request::Resume { .. }),
                    attached: false,
                    end: None,
                    ended_at: None,
                });
                let resume = match request {
                    Request::Open { .. } => None,
                    Request::Resume { next_index, .. } => Some(*next_index),
                };
                TraceEvent::Connect {
                    server: self.server(endpoint),
                    resume,
                }
            }
            Event::Attached {
                endpoint,
                next_index,
                ..
            } => {
                if let Some(stream) = self.state().streams[c].last_mut() {
                    stream.attached = true;
                }
                let attached = TraceEvent::Attached {
                    server: self.server(endpoint),
                    next_index,
                };
                if client.is_finished() && client.received() == client.count() {
                    // It held every number: attaching sent the final ack.
                    self.log(at, host, attached);
                    TraceEvent::Ack {
                        next_index: client.acked(),
                    }
                } else {
                    attached
                }
            }
            Event::Number { index } => {
                let snap = client.snapshot();
                let mut state = self.state();
                let progress = &mut state.progress[c];
                let new = snap.next_index == index + 1
                    && progress
                        .last()
                        .is_none_or(|p| p.next_index < snap.next_index);
                if new {
                    progress.push(Progress {
                        at,
                        next_index: snap.next_index,
                        sum: snap.sum,
                        crc: snap.crc,
                    });
                    state.received.entry((c, index)).or_insert(at);
                }
                let number = TraceEvent::Number { index };
                state.trace.push(Observation {
                    at,
                    host,
                    event: number,
                });
                if new && client.acked() == snap.next_index {
                    // This number made the client emit a (cumulative) ack.
                    let ack = TraceEvent::Ack {
                        next_index: snap.next_index,
                    };
                    state.trace.push(Observation {
                        at,
                        host,
                        event: ack,
                    });
                }
                return;
            }
            Event::Failed { endpoint, end } => {
                if let Some(stream) = self.state().streams[c].last_mut() {
                    stream.end = Some(end.clone());
                    stream.ended_at = Some(at);
                }
                TraceEvent::Failed {
                    server: self.server(endpoint),
                    end: end.clone(),
                }
            }
            Event::Paused { endpoint } => TraceEvent::Paused {
                server: self.server(endpoint),
            },
            Event::HeldBack { endpoint } => TraceEvent::HeldBack {
                server: self.server(endpoint),
            },
            Event::Silent { endpoint } => {
                if let Some(stream) = self.state().streams[c].last_mut() {
                    stream.ended_at = Some(at);
                }
                TraceEvent::Silent {
                    server: self.server(endpoint),
                }
            }
        };
        self.log(at, host, seen);
    }
}
