//! Deterministic simulations of Numbers Station.
//!
//! The real `station-net` server and client driver run over turmoil's
//! simulated network: tonic over turmoil's TCP, the same code paths as in
//! production — only the socket types ([`net`]) and the clock differ.
//! The session store is either in-process or a host of its own on the
//! simulated network ([`storenet`]). Every run is driven by one seed and
//! is checked against the invariants below when it ends.
//!
//! # Running, sweeping, replaying
//!
//! ```text
//! cargo test -p sim                       # every scenario over its default seeds
//! SIM_SEEDS=500 cargo test -p sim         # sweep seeds 1..=500 in every scenario
//! SIM_SEEDS=2000 cargo test -p sim --test scenarios -- partitions   # one family
//! SIM_SEED=42 cargo test -p sim --test scenarios -- swarm::swarm_with_a_faulty_store_host --exact --nocapture
//! # a long sweep: 100,000 swarm runs, a progress line every 10 s
//! SIM_SEEDS=100000 cargo test -p sim --test scenarios -- swarm::swarm_with_a_faulty_store_host --exact
//! ```
//!
//! - A sweep prints one line per test on stderr: seeds, wall time, seeds
//!   per second, simulated time, the clients' verdicts and reconnections,
//!   failures, and how many seeds exercised each fault kind
//!   ([`Scenario::fault_kinds`]). Sweeps of 1,000 seeds or more also print a
//!   progress line every 10 s (`SIM_PROGRESS=0` turns it off). A scenario
//!   that states a [`Recovery`] adds a line: the latest last disturbance
//!   after the trigger ended over the seeds, against what was allowed, and
//!   how many times the work it held the store's queue took to empty.
//! - A failing run prints the broken invariants, the scenario (for a swarm
//!   run, first the fault kinds and rates it drew), the report, the tail of
//!   its event trace, the seed and the exact one-line replay command (the
//!   `SIM_SEED=...` form above).
//! - `SIM_SEED=<n>` runs that seed only and prints its scenario, report
//!   and trace hash; add `SIM_TRACE=1` for the whole event trace, and
//!   `RUST_LOG=station_net=debug` (or `h2=trace`, `turmoil=trace`) for logs
//!   stamped with simulated time.
//! - `SIM_SEEDS` applies to the scenario sweeps and the `broken` tests;
//!   the `replay` tests run their first seeds (or `SIM_SEED`).
//! - `SIM_FIRST_SEED=<n>` starts the `SIM_SEEDS` seeds at `n` instead of
//!   1 (to split a long sweep, or continue one). A long sweep names each
//!   failing seed on its progress output as soon as it fails.
//! - `SIM_THREADS=<n>` sets the worker threads of a sweep (default: the
//!   machine's parallelism); it does not change any run.
//! - A bug found in the system under test gets a minimal reproduction: a
//!   test in `tests/scenarios/`, `#[ignore]`d (with the reason) until it
//!   is fixed, then kept as a regression test (as `reuse.rs` is for
//!   writes over a reused client id). Run ignored ones with
//!   `cargo test -p sim --test scenarios -- --ignored`.
//!
//! The same seed gives the same run, event for event: the `replay` tests
//! run seeds twice and compare trace hashes.
//!
//! # Looking at a run: timelines
//!
//! ```text
//! SIM_TIMELINE=/tmp/run.html SIM_SEED=42 cargo test -p sim --test scenarios -- partitions::short_outages_complete --exact --nocapture
//! chromium --headless --no-sandbox --disable-gpu --screenshot=/tmp/run.png --window-size=1600,1000 file:///tmp/run.html
//! ```
//!
//! - `SIM_TIMELINE=<path.html>` with `SIM_SEED` writes that run's
//!   [`timeline`]: one self-contained HTML page (inline SVG and CSS, no
//!   script, nothing loaded from elsewhere) and prints `timeline: <path>`.
//!   A relative path is relative to `sim/` (where cargo runs the tests).
//! - A failing sweep writes the timelines of the failed seeds it shows
//!   without being asked, to `target/sim-timelines/<test>-seed-<n>.html`
//!   (or to `SIM_TIMELINE`: then the first failure's only), and its
//!   failure message names each file next to the replay command.
//! - A `broken::*` test with `SIM_TIMELINE` set writes the timeline of
//!   the first seed that caught its bug.
//! - The page: a time axis in seconds; a lane per host (servers with a
//!   row per client, any other host the trace names, clients); server
//!   streams as bars labelled `c<client> g<generation>` (and the
//!   incarnation once the report carries it) with the numbers sent as
//!   ticks; on each client's lane the stream it holds, numbers received
//!   and acknowledgements as ticks, connects, failures and its verdict;
//!   faults as labelled shaded spans (cut, one-way cut, hold, crash,
//!   network settings); broken invariants as numbered red markers (text
//!   in the tooltip) listed under the picture. Ticks closer than 3 px
//!   merge into one mark, so runs of minutes and thousands of numbers
//!   stay readable and the page stays well under 1.5 MB. Hover a mark for
//!   its numbers and times.
//!
//! # Layout
//!
//! - [`scenario`]: [`Scenario`] — hosts, clients and their counts, the
//!   fault schedule, TTL and interval, network and store settings — as
//!   plain data. The builders in `tests/scenarios/` and [`swarm`] draw one
//!   from a seed.
//! - [`swarm`]: swarm testing — each seed draws which fault kinds are on
//!   and at what rates; the run prints its draw first.
//! - [`run`](mod@run): the runner. Builds the turmoil simulation, steps
//!   it, applies faults when they fall due (at a time, or right after a
//!   given number was sent or received), keeps the servers running after
//!   the clients finished until no session is left (or a TTL has passed),
//!   and returns a [`Report`]: per-client outcome, running sums and CRCs,
//!   isolation periods, server stream events, every write that changed a
//!   stored record, store data losses, the event trace and its hash.
//! - [`trace`]: the event trace as typed observations (when, which host,
//!   what happened); each prints as its trace line, the text the trace
//!   hash covers.
//! - [`invariants`]: [`check`] turns a report into [`Violation`]s, by the
//!   rules of `station_core::testkit::invariants` (shared with the core's
//!   harness): what each client got (`delivery`), the lease and the
//!   incarnation fence (`fencing`), the servers' counts and conflicts
//!   (`servers`).
//! - [`recovery`]: for scenarios that state a [`Recovery`], whether the
//!   run got back to a steady state within its bound once the trigger was
//!   gone, and when.
//! - [`sweep`](mod@sweep): runs a builder over seeds on worker threads,
//!   prints seeds per second, fault-kind counts and replay commands.
//! - [`timeline`]: draws one run's [`Report`] as an HTML page.
//! - [`net`]: turmoil sockets shaped for `station_net::serve` and
//!   `station_net::client::Endpoints`.
//! - [`storenet`]: the store host and the servers' [`storenet::NetStore`],
//!   a `SessionStore` over a small length-prefixed protocol
//!   ([`storenet::wire`]), with a per-operation timeout (then
//!   `Unavailable`) and one re-send on a new connection, so a write whose
//!   reply was lost is sent twice. The host's side is `host`, the servers'
//!   `client`.
//! - [`store`]: the real `MemoryStore` on the simulation's clock, with
//!   the planted [`Bug`]s and the write log the invariants read; used by
//!   the in-process stores and by the store host alike.
//! - [`server_store`]: the store each server boot uses, watched (every
//!   answer it hands the server is recorded), and the registry of every
//!   server's current station and store that the runner and its faults
//!   share.
//! - [`clock`]: one simulated clock for every store handle.
//! - [`rng`]: everything random derives from the run's seed.
//! - `base`: the lock helper every module uses.
//!
//! The modules import each other in layers, never in a cycle: `base`,
//! [`clock`], [`rng`], [`net`] and [`scenario`] import none of the
//! crate's; [`store`], [`counted`], [`stale`], [`swarm`] and [`trace`]
//! import those; [`report`] those and [`store`]; [`storenet`] those and
//! [`report`]; [`server_store`] those and [`storenet`]; the faults
//! (private) those and [`server_store`]; and [`run`](mod@run) all of
//! them. Above the runner: [`recovery`], [`invariants`], [`timeline`]
//! and [`sweep`](mod@sweep).
//!
//! # Stores ([`StoreKind`])
//!
//! - `Shared`: one in-process store for every server (standing in for
//!   Redis; it never fails).
//! - `PerBoot`: each server boot has its own (the real `--store memory`);
//!   a crash loses its sessions.
//! - `Host`: the store is the host `store` on the network
//!   ([`storenet`]), with the real `MemoryStore` (so the one store table,
//!   `station_core::store::decide`) on the simulated clock. Its faults:
//!   latency ([`Action::StoreLatency`], [`StoreNet::latency`]); one server
//!   cut off from it but not from its clients ([`Action::CutStore`]) or
//!   stalled ([`Action::HoldStore`]); a limited speed
//!   ([`StoreNet::service`], changed by [`Action::StoreService`]: one
//!   operation at a time, so a queue, and latency that grows with the
//!   load); replies lost after the write was
//!   applied ([`StoreNet::reply_loss`]: the host drops the reply and the
//!   connection); a crash ([`Action::CrashStore`]) and a restart that keeps
//!   its data or loses it ([`Action::RestartStore`]); a failover to a
//!   replica seconds behind, which takes live records back to an older
//!   generation or older progress ([`Action::FailoverStore`]); and replies
//!   lost to takeover writes it applied, so they are sent again
//!   ([`StoreNet::takeover_reply_loss`]).
//!
//! Other faults: cuts, one-way cuts and stalls of a client's links;
//! turmoil's random link failures; latency spikes; server crashes and
//! restarts; a server paused ([`Action::Pause`]: every link it has held —
//! to its clients and to the store — then released, so whatever it sent
//! arrives late, as from a process stopped and woken; its own timers still
//! run meanwhile); client ids reused after expiry
//! ([`ClientPlan::reuse_id_of`]); and a client's `Resume` delivered late
//! by the host `stale` ([`Action::StaleResume`], [`stale`]), which takes
//! the session over while the client still reads its own stream.
//!
//! # What is random, and where it comes from
//!
//! One seed drives everything: the scenario (client counts and start
//! times, fault kinds, times and lengths, latencies, loss rates) via
//! [`SimRng`]; client ids (`ClientId::from_random_bytes`) and client PRNG
//! seeds (nonces, backoff jitter); each server boot's
//! `ServerConfig::rng_seed` (session seeds, tokens, incarnations and
//! holders); which replies the store host loses; and turmoil's network RNG
//! (`Builder::rng_seed`: latencies, random link failures).
//!
//! Runs replay exactly because nothing else is random: the adapter's
//! `select!`s are `biased`, hashing never decides order, and all clocks
//! are turmoil's. One exception is handled by the runner: a crashed
//! host's sockets close in tokio's task-drop order, which depends on
//! process-global task ids (so on what ran before), and each close message
//! draws its latency from the network RNG in that order; the runner gives
//! those messages a fixed latency so the order does not matter.
//!
//! # Invariants checked after every run
//!
//! The invariants are ARCHITECTURE.md §6, stated there once in full; each
//! is an [`Invariant`] variant, checked in [`invariants`] by [`check`]:
//! the five of the design — [`Sequence`](Invariant::Sequence),
//! [`Expiry`](Invariant::Expiry), [`NoLeak`](Invariant::NoLeak),
//! [`OneStream`](Invariant::OneStream) and
//! [`Incarnation`](Invariant::Incarnation) — then
//! [`LostPrecisely`](Invariant::LostPrecisely),
//! [`Counted`](Invariant::Counted) (the servers' counters, read by
//! [`counted`]), [`TakenOverTruly`](Invariant::TakenOverTruly),
//! [`Recovers`](Invariant::Recovers) (for a scenario that states a
//! [`Recovery`]: [`recovery`]), [`Ends`](Invariant::Ends) and
//! [`Expected`](Invariant::Expected) (each client ends as its scenario
//! promised: [`Expect`], [`RecordFate`]).
//!
//! # Scenarios (`tests/scenarios/`)
//!
//! | test | what |
//! |---|---|
//! | `partitions::short_outages_complete` | partitions and stalls under the TTL: all complete |
//! | `expiry::long_outages_expire_exactly_the_clients_cut_off` | outages over the TTL for chosen clients: exactly those expire, the store ends empty |
//! | `expiry::expiry_boundary_at_the_real_ttl` | 30 s TTL, 1 s interval: cut for TTL − 1 interval completes, TTL + 1 interval expires, and a server-side expiry |
//! | `loss::packet_loss_and_latency_spikes_on_long_sequences` | turmoil fail rate, latency spikes and stalls, intervals 1 s to 20 ms |
//! | `crash::server_crash_and_restart_with_the_memory_store` | crash and restart: clear rejections, nobody hangs or succeeds wrongly |
//! | `crash::a_session_lost_in_a_restart_is_rejected_not_expired` | regression: a lost session is "unknown", not "expired" |
//! | `failover::shared_store_failover_after_a_server_crash` | 2–3 servers, one store, one crashes: all fail over and complete |
//! | `finale::*` | final number or final acknowledgement lost |
//! | `swarm::swarm_with_a_faulty_store_host` | swarm testing over every fault kind, the store a host of its own |
//! | `overload::a_store_slowdown_is_recovered_from` | 60–80 clients, two servers, a store host of limited speed slowed 12–25× past the servers' timeout for 8–11 s: all complete, and the run recovers within its bound |
//! | `rare::*` | endings that need rare store answers or timing: a store failover behind (`SESSION_LOST`, never `TAKEN_OVER`), a takeover re-sent after its reply was lost (`Done`, no false conflict), a stale resume taking over a stream its client still reads (ended within two leases) |
//! | `counters::*` | regression runs of the servers' counting (`#[ignore]`d until fixed) |
//! | `reuse::a_paused_server_cannot_write_over_a_reused_id` | regression: a server paused past the TTL wakes after the id was reused; its held refresh must not apply |
//! | `reuse::a_late_delete_cannot_remove_a_reused_id` | a held `Delete` of a completed session arrives after the id was reused |
//! | `replay::*` | same seed twice, same trace hash |
//! | `broken::*` | every planted [`Bug`] (one per rule) is caught by the checker |
//! | `timeline::*` | timelines of a passing, a planted-bug and a long run: well-formed, a lane per host, violations marked, bounded size |
//!
//! # Planted bugs (`broken.rs`)
//!
//! Each [`Bug`] breaks one rule from the simulation's side — the store's
//! table (by rewriting the operation or misreading what is stored before
//! the real `decide` runs), the servers' settings, or bytes on the
//! simulated wire — never production code, and a test shows the default
//! seeds catch it: fencing of `Create`, of `Update` by incarnation (which
//! leaves the old, generation-only fencing) and by generation, and of `Delete`; the
//! takeover's generation bump; expiry too early and too late; deletion on
//! the final acknowledgement; the resume index; the client's give-up
//! deadline; a server that changes numbers after a drop; the servers'
//! counting (a completion counted as a rejection, planted in the recorder
//! the counts reach); and, on the endings `rare.rs` reaches, lost writes
//! told as a takeover, a repeated takeover answered as a conflict, and a
//! taken-over stream's renewal answered `Done`; and, after a store
//! slowdown, retries that amplify (clients without backoff, servers
//! without pushback), which keep the store's queue from draining.
//!
//! # Time
//!
//! Simulated time costs no wall-clock time beyond the steps: with a 10 ms
//! step, a minute of simulated traffic takes tens of milliseconds. Every
//! scenario uses the real client settings; most use the real 30 s TTL and
//! 1 s interval.

mod base;
pub mod clock;
pub mod counted;
mod faults;
pub mod invariants;
pub mod net;
pub mod recovery;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod server_store;
pub mod stale;
pub mod store;
pub mod storenet;
pub mod swarm;
pub mod sweep;
pub mod timeline;
pub mod trace;

pub use invariants::{check, Invariant, Violation};
pub use recovery::Recovery;
pub use report::Report;
pub use rng::SimRng;
pub use run::run;
pub use scenario::{
    Action, Bug, ClientPlan, Expect, Fault, NetPlan, RecordFate, Scenario, StoreKind, StoreNet,
    When,
};
pub use sweep::{replay_command, sweep};

/// Installs a `tracing` subscriber stamped with simulated time when
/// `RUST_LOG` is set (once per process; later calls do nothing).
pub fn init_tracing() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("RUST_LOG").is_none() {
            return;
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(SimElapsedTime)
            .with_test_writer()
            .try_init();
    });
}

/// Log timestamps in simulated time, as turmoil's grpc example does.
struct SimElapsedTime;

impl tracing_subscriber::fmt::time::FormatTime for SimElapsedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:?}", turmoil::sim_elapsed().unwrap_or_default())
    }
}
