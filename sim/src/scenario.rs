//! What a run simulates: [`Scenario`].
//!
//! A scenario is plain data — hosts, clients, the fault schedule, network
//! settings — drawn from a seed by the scenario builders in the tests, so a
//! failing run can be printed and replayed. The runner ([`crate::run()`])
//! turns it into a turmoil simulation and a [`Report`](crate::Report).

use std::fmt;
use std::time::Duration;

use station_core::server::Config as SessionConfig;

/// Everything one run needs besides its seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short name, for messages.
    pub name: String,
    /// Interval, TTL and the rest of the servers' session settings.
    pub session: SessionConfig,
    /// Number of server hosts (`server-0`, `server-1`, ...).
    pub servers: usize,
    /// Where sessions live.
    pub store: StoreKind,
    /// The store host's own settings (with [`StoreKind::Host`]).
    pub store_net: StoreNet,
    /// The swarm settings this scenario was drawn with, printed first
    /// (see [`crate::swarm`]); `None` for hand-made scenarios.
    pub swarm: Option<String>,
    /// A bug injected into the system under test (tests of the checker).
    pub bug: Bug,
    /// The clients (`client-0`, `client-1`, ...), one host each.
    pub clients: Vec<ClientPlan>,
    /// Faults, applied in order of their due times (ties by position).
    pub faults: Vec<Fault>,
    /// Latency and loss of every link.
    pub net: NetPlan,
    /// turmoil's step: hosts and network advance this much per step.
    pub tick: Duration,
    /// The run fails if clients are still running after this much
    /// simulated time: every run ends by itself.
    pub limit: Duration,
    /// Subtracted from the cut-off that justifies an expiry (invariant 2),
    /// for schedules that do not leave a client time to reconnect after
    /// an outage ends before the TTL is up (the swarm's: up to the 5 s
    /// backoff cap plus a connection's setup).
    pub expiry_slack: Duration,
    /// The run must be back to a steady state this long after the fault
    /// schedule's trigger ends ([`crate::recovery`]); `None`: not checked.
    pub recovery: Option<Recovery>,
}

/// Where the servers keep sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A host of its own (`store`) on the simulated network, which the
    /// servers reach through [`crate::storenet::NetStore`]: it has latency,
    /// can be partitioned from single servers, can lose replies after
    /// applying a write, and can crash and restart with or without its data.
    Host,
    /// One in-process store handed to every server host (standing in for
    /// Redis): it outlives server crashes.
    Shared,
    /// Each server boot makes its own in-memory store: a crash loses every
    /// session the server held, as with the real `--store memory`.
    PerBoot,
}

/// Settings of the store host ([`StoreKind::Host`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoreNet {
    /// Largest latency of a server's link to the store at the start (the
    /// smallest is the network's [`NetPlan::min_latency`]).
    pub latency: Duration,
    /// Probability that the store, having applied an operation, loses its
    /// reply (and closes the connection): an ambiguous outcome.
    pub reply_loss: f64,
    /// How long a server waits for one answer before giving up on it (and
    /// on the connection).
    pub op_timeout: Duration,
    /// How long the store takes to execute one operation. It executes one
    /// at a time, in the order they arrive from every server (a
    /// single-threaded store, as Redis is): an operation waits behind
    /// those before it, so its latency grows with the load, and operations
    /// a server gave up on still cost their turn. Zero: no queue, every
    /// operation executes as it arrives. [`Action::StoreService`] changes
    /// it during a run (a store starved of CPU, say).
    pub service: Duration,
    /// Whether a server sends an operation again, once, after a timeout
    /// (on a new connection): a write whose reply was lost is re-sent.
    pub resend: bool,
    /// Probability that the store loses its reply to a takeover write (an
    /// `Update` to the next generation) it applied, on top of
    /// [`StoreNet::reply_loss`]: takeovers are few, so this is how runs
    /// reach a takeover re-sent after its reply was lost.
    pub takeover_reply_loss: f64,
}

impl Default for StoreNet {
    fn default() -> Self {
        StoreNet {
            latency: Duration::from_millis(3),
            reply_loss: 0.0,
            op_timeout: Duration::from_millis(600),
            service: Duration::ZERO,
            resend: true,
            takeover_reply_loss: 0.0,
        }
    }
}

/// A deliberate bug planted in the system under test, to show that the
/// invariant checker catches broken systems: one per rule. All are planted
/// from the simulation's side (the store the servers use, the settings,
/// or bytes on the simulated wire); no production code changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// None: the real system.
    None,
    /// Expiry too early: the store forgets sessions after a third of the
    /// time it was asked to keep them; clients cut off well under the TTL
    /// come back to an expired session.
    ForgetsEarly,
    /// Expiry too late: the store keeps sessions three times as long as it
    /// was asked to; abandoned sessions outlive the TTL.
    ForgetsLate,
    /// A resumed session continues with another seed (a server that
    /// changes numbers after a drop).
    ReseedsOnResume,
    /// Deletion on the final acknowledgement: deleting a completed session
    /// does nothing (a leak until expiry).
    KeepsCompleted,
    /// Create fencing: a `Create` replaces a live record instead of
    /// answering `Exists`.
    CreateOverwritesLive,
    /// Update fencing by incarnation, gone (as before it was added): an
    /// `Update` compares the generation only, so a paused stream of an
    /// expired session writes over a later session that reused the id.
    UpdateIgnoresIncarnation,
    /// Update fencing by generation: an `Update` of a stream that was taken
    /// over still applies (its generation is not compared).
    UpdateIgnoresGeneration,
    /// Delete fencing: a `Delete` removes the record whatever its
    /// incarnation, so a late delete of an old session removes a new one.
    DeleteIgnoresIncarnation,
    /// The takeover's generation bump: a takeover writes the record at the
    /// generation it found instead of the next one.
    TakeoverKeepsGeneration,
    /// The resume index: the server resumes a session one number off from
    /// the `next_index` the client asked for (planted by flipping the low
    /// bit of `Resume.next_index` on the server's side of the wire).
    ResumeIndexOff,
    /// The client's give-up deadline: clients give up a third of the TTL
    /// after they last heard from a server (planted by announcing a third of
    /// the TTL in `Attached` while the store keeps sessions the full TTL).
    GivesUpEarly,
    /// The servers' counting: a completed session is counted as a
    /// rejection (`INVALID_ARGUMENT`) instead (planted in the recorder
    /// the counts reach, [`crate::counted::Recorder`]).
    CompletionCountedAsRejection,
    /// Lost writes told as a takeover: an `Update` that finds its
    /// incarnation at an older generation than it expects (a store that
    /// failed over to a replica behind it) is answered `Conflict`, so the
    /// client hears `TAKEN_OVER` instead of `SESSION_LOST`.
    LostWritesSeenAsConflict,
    /// Idempotence of a takeover: a takeover write sent again after its
    /// reply was lost finds its own record and is answered `Conflict` (a
    /// generation check before the repeat check), a false takeover.
    RepeatedTakeoverConflicts,
    /// Fencing of a stale lease: the renewal of a stream that was taken
    /// over is answered `Done` (without writing), so the stale stream
    /// keeps its lease and sends past the two-lease bound.
    StaleRenewalDone,
    /// Retries that amplify: clients retry a failed stream after 1 ms
    /// whatever happened (their backoff, and so their throttled wait,
    /// configured to 1 ms) and servers ask for no wait in their `RetryInfo`
    /// (planted in the settings both are started with). Against a store
    /// whose latency grows with its load, every failure comes straight
    /// back as more store work: the loop that keeps a store overloaded
    /// after whatever slowed it is gone ([`crate::recovery`]).
    RetriesWithoutBackoff,
}

/// One client: what it asks for, when, and where.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// Numbers asked for.
    pub count: u32,
    /// When the client starts (simulated time).
    pub start: Duration,
    /// Server indices, in the order the client tries them.
    pub endpoints: Vec<usize>,
    /// What the scenario promises about this client's outcome.
    pub expect: Expect,
    /// What the scenario promises about its session once it completed.
    pub record_fate: RecordFate,
    /// Use client `k`'s id instead of a fresh one: an id reused. The
    /// client starts at `start` or once client `k` finished, whichever is
    /// later (an id is reused after its first user gave up).
    pub reuse_id_of: Option<usize>,
}

/// What happens to a completed client's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFate {
    /// Either (faults may or may not lose the final acknowledgement).
    Any,
    /// The final acknowledgement arrives: the session is deleted at once.
    DeletedOnAck,
    /// The final acknowledgement is lost: the session stays until it
    /// expires (and must then be gone).
    LeftToExpire,
}

/// The outcome a scenario promises for a client (on top of the invariants
/// every run is checked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Must end `Verified`.
    Complete,
    /// Must end `Expired`.
    Expire,
    /// `Verified`, or `Expired` if the schedule cut it off for about the
    /// TTL or longer.
    CompleteOrExpire,
    /// `Verified`, or a clear rejection (`NOT_FOUND`: its session was lost
    /// with a crashed server, or it expired).
    CompleteOrRejected,
    /// Must end `Expired` because the *server* said so (`NOT_FOUND`,
    /// "expired"), not because the client gave up by itself.
    ExpiredByServer,
    /// Anything: only the invariants are checked (a client whose id a
    /// later client reuses, which may find its id taken if it is still
    /// trying to open).
    Any,
}

/// When a fault is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At this simulated time.
    At(Duration),
    /// `delay` after client `client` received number `index` for the first
    /// time (a cut-off "right after a delivery").
    Received {
        /// Client index.
        client: usize,
        /// Number index.
        index: u32,
        /// Extra delay.
        delay: Duration,
    },
    /// `delay` after a server first sent number `index` to client
    /// `client` (to lose that very message).
    Sent {
        /// Client index.
        client: usize,
        /// Number index.
        index: u32,
        /// Extra delay.
        delay: Duration,
    },
    /// `delay` after fault number `fault` was applied.
    After {
        /// Index in [`Scenario::faults`].
        fault: usize,
        /// Extra delay.
        delay: Duration,
    },
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Drop every message between the client and these servers (turmoil
    /// `partition`; a TCP connection across it is dead for good).
    Cut {
        /// Client index.
        client: usize,
        /// Server indices.
        servers: Vec<usize>,
    },
    /// Undo a [`Action::Cut`] (turmoil `repair`).
    Heal {
        /// Client index.
        client: usize,
        /// Server indices.
        servers: Vec<usize>,
    },
    /// Drop the messages in one direction only: from the client to the
    /// servers (`upstream`: acknowledgements and requests are lost, numbers
    /// still arrive) or back (turmoil `partition_oneway`).
    CutOneway {
        /// Client index.
        client: usize,
        /// Server indices.
        servers: Vec<usize>,
        /// Client to servers if true, servers to client if false.
        upstream: bool,
    },
    /// Undo a [`Action::CutOneway`] (turmoil `repair_oneway`).
    HealOneway {
        /// Client index.
        client: usize,
        /// Server indices.
        servers: Vec<usize>,
        /// As in the cut.
        upstream: bool,
    },
    /// Hold every message between the client and these servers until
    /// released (turmoil `hold`: a stall, connections survive).
    Hold {
        /// Client index.
        client: usize,
        /// Server indices.
        servers: Vec<usize>,
    },
    /// Deliver what was held (turmoil `release`).
    Release {
        /// Client index.
        client: usize,
        /// Server indices.
        servers: Vec<usize>,
    },
    /// Stop the server's software (turmoil `crash`).
    Crash(usize),
    /// Start the server's software again (turmoil `bounce`).
    Restart(usize),
    /// Probability that a message breaks its link (turmoil `fail_rate`).
    FailRate(f64),
    /// Largest message latency on every client-server link.
    MaxLatency(Duration),
    /// Pause the server: hold every link it has (to every client and to the
    /// store). Nothing it sends arrives and nothing reaches it until
    /// [`Action::Unpause`], when everything held is delivered at once: to
    /// the rest of the system it is a process stopped (GC pause,
    /// `kill -STOP`) and woken. Its own timers still run meanwhile.
    Pause(usize),
    /// Release what [`Action::Pause`] held.
    Unpause(usize),
    /// Partition the server from the store host (not from its clients).
    CutStore(usize),
    /// Undo a [`Action::CutStore`].
    HealStore(usize),
    /// Hold the server's link to the store host (not to its clients): its
    /// store operations wait, and arrive when [`Action::ReleaseStore`]d.
    HoldStore(usize),
    /// Deliver what [`Action::HoldStore`] held.
    ReleaseStore(usize),
    /// Largest latency of every server's link to the store host.
    StoreLatency(Duration),
    /// The store host's time per operation from now on
    /// ([`StoreNet::service`]): a store that slows down under the same
    /// load, so its queue grows.
    StoreService(Duration),
    /// Crash the store host.
    CrashStore,
    /// Start the store host again, with the data it had, or empty.
    RestartStore {
        /// Start empty: every session it held is lost.
        lose_data: bool,
    },
    /// The store host fails over to a replica that missed the writes of
    /// the last `lag`: every live record that was written since goes back
    /// to what it was then (an older generation, or older progress), if it
    /// was live then under the same incarnation. The store lost writes.
    FailoverStore {
        /// How far behind the replica was.
        lag: Duration,
    },
    /// A stale `Resume` of the client's session reaches `server`: as from
    /// an earlier connection of the client's that a partition left
    /// half-open, delivered late, carrying the session's token and
    /// progress. It takes the session over while the client still reads
    /// and acknowledges its own stream, so that stream, now stale, runs
    /// to the two-lease bound (invariant 4) instead of ending for silence.
    StaleResume {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
    },
}

impl Action {
    /// The fault kind, as counted by sweeps.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Cut { .. } | Action::Heal { .. } => "client-cut",
            Action::CutOneway { .. } | Action::HealOneway { .. } => "client-oneway-cut",
            Action::Hold { .. } | Action::Release { .. } => "client-stall",
            Action::Crash(_) | Action::Restart(_) => "server-crash",
            Action::FailRate(_) => "packet-loss",
            Action::MaxLatency(_) => "latency-spike",
            Action::Pause(_) | Action::Unpause(_) => "server-pause",
            Action::CutStore(_) | Action::HealStore(_) => "store-partition",
            Action::HoldStore(_) | Action::ReleaseStore(_) => "store-stall",
            Action::StoreLatency(_) => "store-latency",
            Action::StoreService(_) => "store-overload",
            Action::CrashStore => "store-crash",
            Action::RestartStore { lose_data: false } => "store-restart-keeps-data",
            Action::RestartStore { lose_data: true } => "store-restart-loses-data",
            Action::FailoverStore { .. } => "store-failover-behind",
            Action::StaleResume { .. } => "stale-resume",
        }
    }
}

/// A fault and when it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When.
    pub when: When,
    /// What.
    pub action: Action,
}

/// Network settings at the start of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetPlan {
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency (exponentially distributed in between).
    pub max_latency: Duration,
    /// Probability that a message breaks its link (turmoil drops it and
    /// everything in flight, and the link stays down until repaired).
    pub fail_rate: f64,
    /// Probability that a broken link is repaired at each message.
    pub repair_rate: f64,
}

impl Default for NetPlan {
    fn default() -> Self {
        NetPlan {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(50),
            fail_rate: 0.0,
            repair_rate: 1.0,
        }
    }
}

impl Scenario {
    /// A scenario with the production session settings (1 s interval,
    /// 30 s TTL), one server, the given clients and no faults.
    pub fn new(name: impl Into<String>, clients: Vec<ClientPlan>) -> Self {
        Scenario {
            name: name.into(),
            session: SessionConfig::default(),
            servers: 1,
            store: StoreKind::Shared,
            store_net: StoreNet::default(),
            swarm: None,
            bug: Bug::None,
            clients,
            faults: Vec::new(),
            net: NetPlan::default(),
            tick: Duration::from_millis(10),
            limit: Duration::from_secs(600),
            expiry_slack: Duration::ZERO,
            recovery: None,
        }
    }

    /// Host name of server `i`.
    pub fn server_host(i: usize) -> String {
        format!("server-{i}")
    }

    /// Host name of client `i`.
    pub fn client_host(i: usize) -> String {
        format!("client-{i}")
    }

    /// The fault kinds this run exercises, for sweep statistics.
    pub fn fault_kinds(&self) -> std::collections::BTreeSet<&'static str> {
        let mut kinds: std::collections::BTreeSet<&'static str> =
            self.faults.iter().map(|f| f.action.kind()).collect();
        if self.net.fail_rate > 0.0 {
            kinds.insert("packet-loss");
        }
        if self.store == StoreKind::Host {
            kinds.insert("store-host");
            if self.store_net.reply_loss > 0.0 {
                kinds.insert("store-reply-loss");
            }
            if self.store_net.takeover_reply_loss > 0.0 {
                kinds.insert("store-takeover-reply-loss");
            }
        }
        if self.clients.iter().any(|c| c.reuse_id_of.is_some()) {
            kinds.insert("client-id-reuse");
        }
        kinds
    }
}

impl ClientPlan {
    /// A client of `count` numbers starting at `start` on server 0.
    pub fn new(count: u32, start: Duration, expect: Expect) -> Self {
        ClientPlan {
            count,
            start,
            endpoints: vec![0],
            expect,
            record_fate: RecordFate::Any,
            reuse_id_of: None,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(swarm) = &self.swarm {
            writeln!(f, "swarm: {swarm}")?;
        }
        writeln!(
            f,
            "scenario {}: {} server(s), store {:?}, bug {:?}, interval {:?}, ttl {:?}, tick {:?}, net {:?}",
            self.name,
            self.servers,
            self.store,
            self.bug,
            self.session.interval,
            self.session.ttl,
            self.tick,
            self.net
        )?;
        if self.store == StoreKind::Host {
            writeln!(f, "  store host: {:?}", self.store_net)?;
        }
        if let Some(recovery) = &self.recovery {
            writeln!(f, "  recovery: {recovery}")?;
        }
        for (i, c) in self.clients.iter().enumerate() {
            writeln!(
                f,
                "  client-{i}: count {} start {:?} endpoints {:?} expect {:?} record fate {:?}{}",
                c.count,
                c.start,
                c.endpoints,
                c.expect,
                c.record_fate,
                c.reuse_id_of
                    .map_or(String::new(), |k| format!(" reuses the id of client-{k}"))
            )?;
        }
        for (i, fault) in self.faults.iter().enumerate() {
            writeln!(f, "  fault {i}: {:?} when {:?}", fault.action, fault.when)?;
        }
        Ok(())
    }
}

/// When a trigger ends, and how long the run may take to be steady again
/// (plain data here; what it means, and how it is derived and checked, is
/// in [`crate::recovery`], which imports this module and not the reverse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// When the trigger ended (simulated time): the fault that ends it is
    /// due then (and applies at the first step from then on).
    pub from: Duration,
    /// The last disturbance comes at most this long after the store's
    /// queue emptied: see [`Recovery::after_store_slowdown`].
    pub bound: Duration,
    /// Once settled, the longest a running client may wait for its next
    /// number.
    pub pace: Duration,
}
