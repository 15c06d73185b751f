//! What a run produced: [`Report`].

use std::fmt;
use std::time::Duration;

use station_core::client::{Outcome, StreamEnd};
use station_core::server::{Lookup, StoreOp, StoreReply};
use station_core::ClientId;
use station_net::StreamEvent;

use crate::counted::Counted;
use crate::scenario::{Expect, RecordFate};
use crate::store::StoreWrite;
use crate::trace::Observation;

/// Everything observed in one run, for the invariant checks.
#[derive(Debug)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Per client, in plan order.
    pub clients: Vec<ClientReport>,
    /// Every server stream event, in the order they happened.
    pub server_events: Vec<ServerEvent>,
    /// When the last client finished (`None` if one never did).
    pub clients_done_at: Option<Duration>,
    /// What the store held for each client right after the last client
    /// finished.
    pub store_at_done: Vec<Lookup>,
    /// What the store held for each client when the run ended.
    pub store_at_end: Vec<Lookup>,
    /// Live sessions in every store when the run ended.
    pub live_at_end: u64,
    /// Streams still attached on running servers when the run ended.
    pub attached_at_end: u64,
    /// Simulated time when the run ended.
    pub ended_at: Duration,
    /// turmoil steps taken.
    pub steps: u64,
    /// Why the simulation stopped early (a host failed, or clients were
    /// still running at the time limit).
    pub error: Option<String>,
    /// The event trace: every event, in order ([`Observation`]'s
    /// `Display` is its trace line).
    pub trace: Vec<Observation>,
    /// FNV-1a hash of [`Report::trace`].
    pub trace_hash: u64,
    /// Every write that changed what a store holds, in order.
    pub store_writes: Vec<StoreWrite>,
    /// Every time a store lost its data (a store host restarted empty, or
    /// a server with a per-boot store crashed).
    pub data_losses: Vec<DataLoss>,
    /// Every store answer a server received, in order.
    pub answers: Vec<Answer>,
    /// What the servers counted, over every boot of every server.
    pub counted: Counted,
    /// The store host's queue each time its speed changed
    /// ([`crate::Action::StoreService`]).
    pub store_backlogs: Vec<Backlog>,
}

/// The store host's queue when its speed changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// Simulated time.
    pub at: Duration,
    /// Operations waiting (the one executing not included).
    pub waiting: u64,
    /// How long the store takes, at its new speed, to execute every
    /// operation it holds (the one executing included).
    pub drain: Duration,
    /// When the queue was next empty (the store idle), if it was before
    /// the run ended or the speed changed again.
    pub emptied: Option<Duration>,
}

/// A store answer as a server received it (the one its stream was handed:
/// after the store handle's own re-send, before the server's timeout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Simulated time it arrived.
    pub at: Duration,
    /// The server.
    pub server: usize,
    /// The operation.
    pub op: StoreOp,
    /// The answer.
    pub reply: StoreReply,
}

/// One stream of a client, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStream {
    /// When the client began connecting it.
    pub at: Duration,
    /// It began with `Resume` (else `Open`).
    pub resume: bool,
    /// The client received `Attached` on it.
    pub attached: bool,
    /// How it ended, if the client saw an end (`None`: still open when the
    /// client finished, or dropped by the client for silence).
    pub end: Option<StreamEnd>,
    /// When it ended (with [`ClientStream::end`], or dropped for silence).
    pub ended_at: Option<Duration>,
}

/// A store lost its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataLoss {
    /// Simulated time.
    pub at: Duration,
    /// The client ids whose sessions were live in it.
    pub live: Vec<ClientId>,
}

/// One client's side of a run.
#[derive(Debug)]
pub struct ClientReport {
    /// Its id.
    pub id: ClientId,
    /// Numbers asked for.
    pub count: u32,
    /// What the scenario promised.
    pub expect: Expect,
    /// What the scenario promised about its session after completion.
    pub record_fate: RecordFate,
    /// When it started (`None`: it never did; a client reusing an id waits
    /// for the id's first user to finish).
    pub started_at: Option<Duration>,
    /// How it ended (`None`: still running when the run stopped).
    pub outcome: Option<Outcome>,
    /// When it finished.
    pub finished_at: Option<Duration>,
    /// After each new number: (time, numbers held, running sum, CRC).
    pub progress: Vec<Progress>,
    /// Periods during which the fault schedule left it no working stream
    /// to any running server (partitioned in either direction, held, or
    /// server down), while it ran.
    pub isolation: Vec<(Duration, Duration)>,
    /// Its streams, in order.
    pub streams: Vec<ClientStream>,
}

/// The client's running totals after one new number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// When it arrived.
    pub at: Duration,
    /// Numbers held.
    pub next_index: u32,
    /// Sum of the numbers held.
    pub sum: u64,
    /// CRC-32 of the numbers held.
    pub crc: u32,
}

/// A server stream event, with where and when.
#[derive(Clone, Debug)]
pub struct ServerEvent {
    /// Simulated time.
    pub at: Duration,
    /// Server index.
    pub server: usize,
    /// Which boot of that server (0 first).
    pub boot: u64,
    /// What happened.
    pub event: StreamEvent,
}

/// After an outage ends, how long a client may take to have a working
/// stream again: turmoil's TCP does not retransmit, so a connection that
/// lost a message is dead for good, and the worst case (a one-way cut of
/// acknowledgements: the server's silence timeout, the attach timeout of a
/// resume on the half-dead connection, then a new connection) is about
/// 11 s. Outages separated by less than this count as one.
pub const RECOVERY: Duration = Duration::from_secs(12);

impl ClientReport {
    /// Longest isolation period, periods separated by less than
    /// [`RECOVERY`] counted as one (with the gap).
    pub fn longest_isolation(&self) -> Duration {
        let mut periods = self.isolation.clone();
        periods.sort();
        let mut longest = Duration::ZERO;
        let mut current: Option<(Duration, Duration)> = None;
        for (from, to) in periods {
            current = match current {
                Some((start, end)) if from < end + RECOVERY => Some((start, end.max(to))),
                _ => Some((from, to)),
            };
            if let Some((start, end)) = current {
                longest = longest.max(end - start);
            }
        }
        longest
    }
}

/// FNV-1a, 64 bits, over `lines` as text, each ended by a newline: a
/// stable hash (std's `DefaultHasher` may change between Rust releases).
pub fn fnv1a<T: fmt::Display>(lines: &[T]) -> u64 {
    use fmt::Write as _;
    use std::hash::Hasher as _;
    let mut hasher = fnv::FnvHasher::default();
    let mut line = String::new();
    for item in lines {
        line.clear();
        let _ = writeln!(line, "{item}");
        hasher.write(line.as_bytes());
    }
    hasher.finish()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "run {} seed {}: ended at {:?} after {} steps, trace hash {:016x}",
            self.scenario, self.seed, self.ended_at, self.steps, self.trace_hash
        )?;
        if let Some(e) = &self.error {
            writeln!(f, "  simulation error: {e}")?;
        }
        for (i, c) in self.clients.iter().enumerate() {
            let verdict = c.outcome.as_ref().map_or("still running".to_string(), |o| {
                format!(
                    "{:?} received {}/{} reconnects {}",
                    o.verdict, o.received, o.count, o.reconnects
                )
            });
            writeln!(
                f,
                "  client-{i} {}: {verdict}; finished {:?}; longest isolation {:?}; store at end {:?}",
                c.id,
                c.finished_at,
                c.longest_isolation(),
                self.store_at_end.get(i)
            )?;
        }
        writeln!(
            f,
            "  live sessions at end {}, attached streams at end {}",
            self.live_at_end, self.attached_at_end
        )
    }
}
