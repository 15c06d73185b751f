//! What a run observed, one [`Observation`] per event: its trace
//! ([`Report::trace`](crate::Report::trace)).
//!
//! An observation is typed (when, which host, what happened, with its
//! numbers as numbers), so the [`timeline`](crate::timeline) and the tests
//! read fields instead of parsing text. Its [`Display`](fmt::Display) is
//! the trace line — `<seconds>.<micros> <host> <what>` — and those lines
//! are what the trace hash ([`fnv1a`](crate::report::fnv1a)) covers, so
//! their wording is frozen: a changed word changes every recorded hash
//! (the tests below pin each kind).

use std::fmt;
use std::time::Duration;

use station_core::client::{StreamEnd, Verdict};
use station_core::server::{StoreOp, StoreReply};
use station_core::ClientId;

use crate::scenario::{Action, Scenario};

/// One event of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// Simulated time.
    pub at: Duration,
    /// Where it happened.
    pub host: Host,
    /// What happened.
    pub event: TraceEvent,
}

/// Where an event happened: the second word of its trace line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Host {
    /// Client `c` (`c<c>`).
    Client(usize),
    /// A boot of a server (`s<server>.<boot>`; boot 0 first).
    Server {
        /// Server index.
        server: usize,
        /// Which boot.
        boot: u64,
    },
    /// A boot of the store host (`store.<boot>`): its boots.
    StoreBoot(u64),
    /// The store, whatever its kind (`store`): lost data, its queue,
    /// failovers, lost replies.
    Store,
    /// The host that sends stale resumes (`stale`).
    Stale,
    /// The fault schedule (`fault`).
    Fault,
    /// The swarm's draw of fault kinds (`swarm:`, as it always read).
    Swarm,
}

/// A client as a server event names it: by plan index, or by id if the
/// run does not know the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientName {
    /// Client `c` (`c<c>`).
    Known(usize),
    /// An id no client of the run has (`c?<id>`).
    Unknown(ClientId),
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceEvent {
    /// A server or the store host booted.
    Boot,
    /// A server stream attached a session.
    StreamAttached {
        /// Whose.
        client: ClientName,
        /// The stream's generation.
        generation: u64,
        /// First index it sends.
        next_index: u32,
    },
    /// A server stream handed a number to the transport.
    StreamSent {
        /// To whom.
        client: ClientName,
        /// The stream's generation.
        generation: u64,
        /// The number's index.
        index: u32,
        /// Its value.
        value: u32,
    },
    /// A server stream completed its session.
    StreamCompleted {
        /// Whose.
        client: ClientName,
    },
    /// A client started.
    Start {
        /// Its id.
        id: ClientId,
        /// Numbers it asks for.
        count: u32,
    },
    /// A client began connecting a stream to `server`: an `Open`, or a
    /// `Resume` at `resume`.
    Connect {
        /// Server index.
        server: usize,
        /// The resume's index (`None`: an `Open`).
        resume: Option<u32>,
    },
    /// A client's stream attached.
    Attached {
        /// Server index.
        server: usize,
        /// First index the stream sends.
        next_index: u32,
    },
    /// A client received a number (maybe again).
    Number {
        /// Its index.
        index: u32,
    },
    /// A client acknowledged every number below `next_index`.
    Ack {
        /// Numbers held.
        next_index: u32,
    },
    /// A client's stream ended before completion.
    Failed {
        /// Server index.
        server: usize,
        /// How.
        end: StreamEnd,
    },
    /// A server told a client it holds its numbers.
    Paused {
        /// Server index.
        server: usize,
    },
    /// The client process's open throttle held back a new session's
    /// `Open`.
    HeldBack {
        /// Server index it would have gone to.
        server: usize,
    },
    /// A client dropped a stream gone silent.
    Silent {
        /// Server index.
        server: usize,
    },
    /// A client finished.
    Finished {
        /// Its verdict.
        verdict: Verdict,
        /// Numbers received.
        received: u32,
        /// Their sum.
        sum: u64,
        /// The client's checksum.
        crc: u32,
        /// The checksum the server sent, if it did.
        server_crc: Option<u32>,
    },
    /// A store lost its data, and with it these live sessions.
    DataLost {
        /// The clients whose sessions were live in it.
        live: Vec<ClientName>,
    },
    /// The store host's speed changed with operations waiting.
    Queue {
        /// Operations waiting.
        waiting: u64,
        /// The work they hold at the new speed.
        drain: Duration,
    },
    /// The store host's queue emptied `since` after its speed changed.
    QueueEmpty {
        /// Since the speed changed.
        since: Duration,
    },
    /// The store host failed over to a replica `lag` behind.
    FailedOver {
        /// How far behind.
        lag: Duration,
        /// Records taken back.
        rolled_back: usize,
    },
    /// The store host applied `op` and dropped its reply.
    ReplyLost {
        /// The operation.
        op: StoreOp,
        /// The reply lost.
        reply: StoreReply,
    },
    /// A stale `Resume` of `client`'s live session went to `server`.
    StaleResume {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// The index it resumes at.
        next_index: u32,
    },
    /// A stale resume of `client` found no live session to send.
    StaleNoSession {
        /// Client index.
        client: usize,
    },
    /// Fault `index` of the schedule was applied.
    Fault {
        /// Its place in [`Scenario::faults`].
        index: usize,
        /// What it did.
        action: Action,
    },
    /// The swarm's draw (its `Display`).
    Swarm {
        /// The draw, as printed.
        draw: String,
    },
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at;
        write!(
            f,
            "{:>4}.{:06} {} {}",
            at.as_secs(),
            at.subsec_micros(),
            self.host,
            self.event
        )
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Client(c) => write!(f, "c{c}"),
            Host::Server { server, boot } => write!(f, "s{server}.{boot}"),
            Host::StoreBoot(boot) => write!(f, "store.{boot}"),
            Host::Store => f.write_str("store"),
            Host::Stale => f.write_str("stale"),
            Host::Fault => f.write_str("fault"),
            Host::Swarm => f.write_str("swarm:"),
        }
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientName::Known(c) => write!(f, "c{c}"),
            ClientName::Unknown(id) => write!(f, "c?{id}"),
        }
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = Scenario::server_host;
        match self {
            TraceEvent::Boot => f.write_str("boot"),
            TraceEvent::StreamAttached {
                client,
                generation,
                next_index,
            } => write!(f, "attached {client} g{generation} @{next_index}"),
            TraceEvent::StreamSent {
                client,
                generation,
                index,
                value,
            } => write!(f, "sent {client} g{generation} #{index}={value:08x}"),
            TraceEvent::StreamCompleted { client } => write!(f, "completed {client}"),
            TraceEvent::Start { id, count } => write!(f, "start {id} count {count}"),
            TraceEvent::Connect {
                server: s,
                resume: None,
            } => write!(f, "connect {} open", server(*s)),
            TraceEvent::Connect {
                server: s,
                resume: Some(next_index),
            } => write!(f, "connect {} resume @{next_index}", server(*s)),
            TraceEvent::Attached {
                server: s,
                next_index,
            } => write!(f, "attached {} @{next_index}", server(*s)),
            TraceEvent::Number { index } => write!(f, "number #{index}"),
            TraceEvent::Ack { next_index } => write!(f, "ack @{next_index}"),
            TraceEvent::Failed { server: s, end } => write!(f, "failed {}: {end:?}", server(*s)),
            TraceEvent::Paused { server: s } => write!(f, "paused {}", server(*s)),
            TraceEvent::HeldBack { server: s } => write!(f, "held back {}", server(*s)),
            TraceEvent::Silent { server: s } => write!(f, "silent {}", server(*s)),
            TraceEvent::Finished {
                verdict,
                received,
                sum,
                crc,
                server_crc,
            } => write!(
                f,
                "finished {verdict:?} received {received} sum {sum} crc {crc:08x} server crc {server_crc:08x?}"
            ),
            TraceEvent::DataLost { live } => {
                // As the list of names it always was: `["c0", "c3"]`.
                let names: Vec<String> = live.iter().map(ToString::to_string).collect();
                write!(f, "lost its data: live sessions {names:?}")
            }
            TraceEvent::Queue { waiting, drain } => {
                write!(f, "queue: {waiting} operation(s) waiting, {drain:?} of work")
            }
            TraceEvent::QueueEmpty { since } => {
                write!(f, "queue empty {since:?} after its speed changed")
            }
            TraceEvent::FailedOver { lag, rolled_back } => write!(
                f,
                "failed over to a replica {lag:?} behind: {rolled_back} record(s) rolled back"
            ),
            TraceEvent::ReplyLost { op, reply } => {
                write!(f, "lost the reply to {}: {reply:?}", Summary(op))
            }
            TraceEvent::StaleResume {
                client,
                server: s,
                next_index,
            } => write!(f, "resume of c{client} to s{s} @{next_index}"),
            TraceEvent::StaleNoSession { client } => {
                write!(f, "resume of c{client}: no live session")
            }
            TraceEvent::Fault { index, action } => write!(f, "{index}: {action:?}"),
            TraceEvent::Swarm { draw } => f.write_str(draw),
        }
    }
}

/// A short description of a store operation.
struct Summary<'a>(&'a StoreOp);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StoreOp::Load(id) => write!(f, "load {id}"),
            StoreOp::Create { record, .. } => write!(
                f,
                "create {} i{:016x} g{}",
                record.client_id, record.incarnation, record.generation
            ),
            StoreOp::Update {
                record,
                expect_generation,
                ..
            } => write!(
                f,
                "update {} i{:016x} g{}->g{}",
                record.client_id, record.incarnation, expect_generation, record.generation
            ),
            StoreOp::Delete {
                client_id,
                incarnation,
                generation,
            } => write!(f, "delete {client_id} i{incarnation:016x} g{generation}"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The lines as the runner wrote them before the trace was typed
    //! (`format!` at each event): each kind must read exactly so, or the
    //! trace hashes of every recorded seed change.

    use super::*;

    fn line(at_micros: u64, host: Host, event: TraceEvent) -> String {
        Observation {
            at: Duration::from_micros(at_micros),
            host,
            event,
        }
        .to_string()
    }

    fn id() -> ClientId {
        ClientId::from_random_bytes([7; 16])
    }

    #[test]
    fn server_lines_read_as_before() {
        let s = Host::Server { server: 1, boot: 2 };
        assert_eq!(
            line(12_000_345, s, TraceEvent::Boot),
            "  12.000345 s1.2 boot"
        );
        assert_eq!(
            line(
                5,
                s,
                TraceEvent::StreamAttached {
                    client: ClientName::Known(3),
                    generation: 2,
                    next_index: 17
                }
            ),
            "   0.000005 s1.2 attached c3 g2 @17"
        );
        assert_eq!(
            line(
                1_234_567_000,
                s,
                TraceEvent::StreamSent {
                    client: ClientName::Known(0),
                    generation: 1,
                    index: 9,
                    value: 0xbeef
                }
            ),
            "1234.567000 s1.2 sent c0 g1 #9=0000beef"
        );
        assert_eq!(
            line(
                0,
                s,
                TraceEvent::StreamCompleted {
                    client: ClientName::Unknown(id())
                }
            ),
            format!("   0.000000 s1.2 completed c?{}", id())
        );
    }

    #[test]
    fn client_lines_read_as_before() {
        let c = Host::Client(4);
        let cases = [
            (
                TraceEvent::Start { id: id(), count: 8 },
                format!("start {} count 8", id()),
            ),
            (
                TraceEvent::Connect {
                    server: 0,
                    resume: None,
                },
                "connect server-0 open".into(),
            ),
            (
                TraceEvent::Connect {
                    server: 1,
                    resume: Some(5),
                },
                "connect server-1 resume @5".into(),
            ),
            (
                TraceEvent::Attached {
                    server: 2,
                    next_index: 5,
                },
                "attached server-2 @5".into(),
            ),
            (TraceEvent::Number { index: 6 }, "number #6".into()),
            (TraceEvent::Ack { next_index: 7 }, "ack @7".into()),
            (
                TraceEvent::Failed {
                    server: 0,
                    end: StreamEnd::Transport("reset".into()),
                },
                "failed server-0: Transport(\"reset\")".into(),
            ),
            (TraceEvent::Paused { server: 1 }, "paused server-1".into()),
            (
                TraceEvent::HeldBack { server: 1 },
                "held back server-1".into(),
            ),
            (TraceEvent::Silent { server: 0 }, "silent server-0".into()),
            (
                TraceEvent::Finished {
                    verdict: Verdict::Verified,
                    received: 8,
                    sum: 99,
                    crc: 0xab,
                    server_crc: Some(0xab),
                },
                "finished Verified received 8 sum 99 crc 000000ab server crc Some(000000ab)".into(),
            ),
            (
                TraceEvent::Finished {
                    verdict: Verdict::Unreachable("gone".into()),
                    received: 0,
                    sum: 0,
                    crc: 0,
                    server_crc: None,
                },
                "finished Unreachable(\"gone\") received 0 sum 0 crc 00000000 server crc None"
                    .into(),
            ),
        ];
        for (event, what) in cases {
            assert_eq!(line(1_500_000, c, event), format!("   1.500000 c4 {what}"));
        }
    }

    #[test]
    fn store_stale_fault_and_swarm_lines_read_as_before() {
        let cases = [
            (
                Host::StoreBoot(1),
                TraceEvent::Boot,
                "store.1 boot".to_string(),
            ),
            (
                Host::Store,
                TraceEvent::DataLost {
                    live: vec![ClientName::Known(0), ClientName::Known(3)],
                },
                "store lost its data: live sessions [\"c0\", \"c3\"]".into(),
            ),
            (
                Host::Store,
                TraceEvent::DataLost { live: vec![] },
                "store lost its data: live sessions []".into(),
            ),
            (
                Host::Store,
                TraceEvent::Queue {
                    waiting: 12,
                    drain: Duration::from_millis(1500),
                },
                "store queue: 12 operation(s) waiting, 1.5s of work".into(),
            ),
            (
                Host::Store,
                TraceEvent::QueueEmpty {
                    since: Duration::from_millis(250),
                },
                "store queue empty 250ms after its speed changed".into(),
            ),
            (
                Host::Store,
                TraceEvent::FailedOver {
                    lag: Duration::from_secs(2),
                    rolled_back: 1,
                },
                "store failed over to a replica 2s behind: 1 record(s) rolled back".into(),
            ),
            (
                Host::Store,
                TraceEvent::ReplyLost {
                    op: StoreOp::Delete {
                        client_id: id(),
                        incarnation: 0xff,
                        generation: 3,
                    },
                    reply: StoreReply::Done,
                },
                format!(
                    "store lost the reply to delete {} i00000000000000ff g3: Done",
                    id()
                ),
            ),
            (
                Host::Stale,
                TraceEvent::StaleResume {
                    client: 1,
                    server: 0,
                    next_index: 4,
                },
                "stale resume of c1 to s0 @4".into(),
            ),
            (
                Host::Stale,
                TraceEvent::StaleNoSession { client: 2 },
                "stale resume of c2: no live session".into(),
            ),
            (
                Host::Fault,
                TraceEvent::Fault {
                    index: 3,
                    action: Action::Crash(1),
                },
                "fault 3: Crash(1)".into(),
            ),
            (
                Host::Swarm,
                TraceEvent::Swarm {
                    draw: "cut 0.5".into(),
                },
                "swarm: cut 0.5".into(),
            ),
        ];
        for (host, event, what) in cases {
            assert_eq!(line(0, host, event), format!("   0.000000 {what}"));
        }
    }
}
