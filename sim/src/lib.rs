//! Deterministic simulations of Numbers Station (DESIGN §5).
//!
//! The real `station-net` server and client driver run over turmoil's
//! simulated network: tonic over turmoil's TCP, the same code paths as in
//! production — only the socket types ([`net`]) and the clock differ.
//! Every run is driven by one seed and is checked against the invariants
//! of DESIGN §5 when it ends.
//!
//! # Running, sweeping, replaying
//!
//! ```text
//! cargo test -p sim                       # every scenario over its default seeds
//! SIM_SEEDS=500 cargo test -p sim         # sweep seeds 1..=500 in every scenario
//! SIM_SEEDS=2000 cargo test -p sim --test scenarios -- partitions   # one family
//! SIM_SEED=42 cargo test -p sim --test scenarios -- partitions::short_outages_complete --exact --nocapture
//! ```
//!
//! - A sweep prints one line per test on stderr: seeds, wall time, seeds
//!   per second, simulated time, the clients' verdicts and reconnections.
//! - A failing run prints the broken invariants, the scenario, the report,
//!   the tail of its event trace, the seed and the exact one-line replay
//!   command (the last form above).
//! - `SIM_SEED=<n>` runs that seed only and prints its report and trace
//!   hash; add `SIM_TRACE=1` for the whole event trace, and
//!   `RUST_LOG=station_net=debug` (or `h2=trace`, `turmoil=trace`) for logs
//!   stamped with simulated time.
//! - `SIM_SEEDS` applies to the scenario sweeps and the `broken` tests;
//!   the `replay` tests run their first seeds (or `SIM_SEED`).
//! - `SIM_THREADS=<n>` sets the worker threads of a sweep (default: the
//!   machine's parallelism); it does not change any run.
//! - A bug found in the system under test gets a minimal reproduction: a
//!   test in `tests/scenarios/`, `#[ignore]`d (with the reason) until it
//!   is fixed, then kept as a regression test. Run ignored ones with
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
//!   fault schedule, TTL and interval, network settings — as plain data.
//!   The builders in `tests/scenarios/` draw one from a seed.
//! - [`run`](mod@run): the harness. Builds the turmoil simulation, steps
//!   it, applies faults when they fall due (at a time, or right after a
//!   given number was sent or received), keeps the servers running after
//!   the clients finished until no session is left (or a TTL has passed),
//!   and returns a [`Report`]: per-client outcome, running sums and CRCs,
//!   isolation periods, server stream events, store contents, the event
//!   trace and its hash.
//! - [`invariants`]: [`check`] turns a report into [`Violation`]s.
//! - [`sweep`](mod@sweep): runs a builder over seeds on worker threads,
//!   prints seeds per second and replay commands.
//! - [`timeline`]: draws one run's [`Report`] as an HTML page.
//! - [`net`]: turmoil sockets shaped for `station_net::serve` and
//!   `station_net::client::Endpoints`.
//! - [`clock`]: one simulated clock for every store handle.
//! - [`store`]: the `MemoryStore` on that clock, with test-only [`Bug`]s.
//! - [`rng`]: everything random derives from the run's seed.
//!
//! # What is random, and where it comes from
//!
//! One seed drives everything: the scenario (client counts and start
//! times, fault times and lengths, latencies, loss rates) via [`SimRng`];
//! client ids (`ClientId::from_random_bytes`) and client PRNG seeds
//! (nonces, backoff jitter); each server boot's `ServerConfig::rng_seed`
//! (session seeds and tokens); and turmoil's network RNG
//! (`Builder::rng_seed`: latencies, random link failures).
//!
//! Runs replay exactly because nothing else is random: the adapter's
//! `select!`s are `biased`, hashing never decides order, and all clocks
//! are turmoil's. One exception is handled by the harness: a crashed
//! host's sockets close in tokio's task-drop order, which depends on
//! process-global task ids (so on what ran before), and each close message
//! draws its latency from the network RNG in that order; the harness gives
//! those messages a fixed latency so the order does not matter.
//!
//! # Invariants checked after every run
//!
//! 1. **Sequence**: every client that completes holds exactly what the
//!    servers sent: each index has one value in a session, whatever stream
//!    or server sent it, and the client's running sum and CRC after every
//!    number, its final sum and checksum, and the server's checksum all
//!    equal what the checker recomputes from the servers' values.
//! 2. **Expiry**: a client is rejected as expired only if the fault
//!    schedule left it no way to a running server for at least the TTL
//!    less two intervals (its last exchange can precede the scheduled
//!    cut-off by a number and its lost acknowledgement). The converse is
//!    each scenario's promise: clients cut off for well under the TTL must
//!    complete.
//! 3. **No leak**: a session whose final acknowledgement arrived is gone
//!    from the store at once; a TTL after the last client finished, no
//!    session is live and no stream attached.
//! 4. **One stream**: once a stream of generation `g + 1` attached a
//!    session, no stream of an older generation sends for it.
//!
//! Also: every run ends by itself (turmoil's `simulation_duration`), no
//! host fails and no task panics, and each client ends as its scenario
//! promised ([`Expect`], [`Finale`]).
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
//! | `replay::*` | same seed twice, same trace hash |
//! | `broken::*` | injected bugs ([`Bug`]) are caught by the checker |
//! | `timeline::*` | timelines of a passing, a planted-bug and a long run: well-formed, a lane per host, violations marked, bounded size |
//!
//! # Time
//!
//! Simulated time costs no wall-clock time beyond the steps: with a 10 ms
//! step, a minute of simulated traffic takes tens of milliseconds. Every
//! scenario uses the real client settings; most use the real 30 s TTL and
//! 1 s interval.
#![forbid(unsafe_code)]

pub mod clock;
mod faults;
pub mod invariants;
pub mod net;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod store;
pub mod sweep;
pub mod timeline;

pub use invariants::{check, Invariant, Violation};
pub use report::Report;
pub use rng::SimRng;
pub use run::run;
pub use scenario::{
    Action, Bug, ClientPlan, Expect, Fault, Finale, NetPlan, Scenario, StoreKind, When,
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
