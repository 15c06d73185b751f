//! Faults under load, with real processes and real kernel networking. In
//! each case `station load` runs [`SESSIONS`] sessions of [`COUNT`]
//! numbers at [`INTERVAL`] against one `station server`; once every
//! session is attached and the run is on time, one fault is put in place,
//! held, and removed:
//!
//! - the server's Redis frozen (`SIGSTOP`, then `SIGCONT`);
//! - the server's Redis starved of CPU: pinned (`taskset`) to one core
//!   with busy loops, at the lowest priority (`renice 19`);
//! - the server paused (`SIGSTOP`);
//! - a silent network blackhole between the load and the server, each on
//!   a host of its own (a network namespace, `common/netns.rs`), made with
//!   `iptables -j DROP` (root only: skipped, loudly, where `ip netns add`
//!   is refused, and a failure instead when `CI` is set).
//!
//! Each case asserts that no session failed and that the run was back on
//! time within [`RECOVERY_LIMIT`] of the fault's end: read from the load's
//! per-second timeline (`bin/src/load/timeline.rs`), the first second
//! after it in which numbers arrived, no session was without an attached
//! stream, and the p99 lateness of the numbers on their stream's schedule
//! was under [`ON_TIME`]. It prints failed sessions, reconnects per
//! session, that recovery time and the timeline around the fault (run with
//! `-- --nocapture` to see them on success); the server pause also prints
//! the store operations its resumes added, against a run without a fault.
//! `bench/run.sh faults` runs the same cases at full scale.
//!
//! The cases run one at a time: they measure time, and two at once on a
//! small machine would measure each other.
//!
//! Layout: the cases and their settings here; `run.rs` starts the
//! processes and runs one case ([`run::under_load`]); `faults.rs` holds
//! the faults, each undone on drop; `outcome.rs` reads the load's report
//! and timeline and judges the recovery.

#[path = "../common/mod.rs"]
mod common;
mod faults;
mod outcome;
mod run;

use std::time::Duration;

use common::netns::Hosts;
use faults::{have, Starved, Stopped};
use outcome::Second;
use run::{loopback, one_at_a_time, redis, reference, server, under_load};

/// Sessions in every run.
const SESSIONS: usize = 2_000;
/// Numbers per session: 30 s of schedule, so every session is still
/// running [`RECOVERY_LIMIT`] after the longest fault's end.
const COUNT: u32 = 300;
/// Time between two numbers.
const INTERVAL: &str = "100ms";
/// Sessions started per second: all started within 2 s.
const RAMP_UP_RATE: u32 = 1_000;
/// HTTP/2 connections the sessions share.
const CONNECTIONS: u32 = 16;
/// How long a fault is held.
const HOLD: Duration = Duration::from_secs(5);
/// How long Redis is starved of CPU.
const STARVE: Duration = Duration::from_secs(8);
/// On time: p99 lateness under this.
const ON_TIME: f64 = 50.0;
/// Back on time within this of a fault's end.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// Steady running before a fault: three whole seconds of the timeline at
/// least, to show whether the run was on time before it.
const STEADY: Duration = Duration::from_millis(3_500);
/// What the resumes after a server pause may add to a run's store
/// operations, at most (a target the server pause case prints against).
const RESUMES_MAY_ADD: f64 = 0.10;
/// Bound on a load run (its `--duration`), and on waiting for it.
const RUN_LIMIT: Duration = Duration::from_secs(80);

#[test]
fn redis_frozen_for_5s_under_load() {
    let _one = one_at_a_time();
    let Some(redis) = redis() else { return };
    let redis_pid = redis.pid().expect("running");
    let (server, metrics) = server(Some(&redis), loopback(), None);
    let freeze = || Stopped::new(redis_pid);
    let outcome = under_load(
        "Redis frozen (SIGSTOP) 5 s",
        server,
        metrics,
        None,
        Some((HOLD, &freeze)),
    );
    outcome.assert_recovered();
}

#[test]
fn redis_starved_of_cpu_under_load() {
    let _one = one_at_a_time();
    if !have("taskset", &["-V"]) || !have("renice", &["--version"]) {
        return;
    }
    let Some(redis) = redis() else { return };
    let redis_pid = redis.pid().expect("running");
    let (server, metrics) = server(Some(&redis), loopback(), None);
    let starve = || Starved::new(redis_pid);
    let outcome = under_load(
        &format!("Redis starved of CPU {} s", STARVE.as_secs()),
        server,
        metrics,
        None,
        Some((STARVE, &starve)),
    );
    outcome.assert_recovered();
}

/// The server paused: every client's stream falls silent, so every
/// session resumes. Prints what those resumes cost the store, against
/// the same load without a fault.
#[test]
fn server_paused_for_5s_under_load() {
    let _one = one_at_a_time();
    let Some(reference) = reference() else { return };
    let Some(redis) = redis() else { return };
    let (server, metrics) = server(Some(&redis), loopback(), None);
    let server_pid = server.proc.id();
    let pause = || Stopped::new(server_pid);
    let outcome = under_load(
        "server paused (SIGSTOP) 5 s",
        server,
        metrics,
        None,
        Some((HOLD, &pause)),
    );
    // Printed, not asserted: the resumes cost about three operations
    // each, on sessions that cost seven without a fault, so the figure is
    // steady (+41 to +47 % so far) and well over what is aimed at.
    match (outcome.store_ops, reference.store_ops) {
        (Some(with), Some(without)) => {
            let added = (with as f64 - without as f64) / without as f64;
            println!(
                "store operations: {with} with the pause, {without} without: the resumes added \
                 {:+} ({:+.1} %; aimed at: at most {:+.0} %, {})",
                with as i64 - without as i64,
                100.0 * added,
                100.0 * RESUMES_MAY_ADD,
                if added <= RESUMES_MAY_ADD {
                    "met"
                } else {
                    "missed"
                }
            )
        }
        other => println!("store operations unknown: {other:?}"),
    }
    outcome.assert_recovered();
}

/// The server and the load on hosts of their own (network namespaces
/// joined by a veth pair), and every packet between them dropped, both
/// ways, for 5 s: no RST, no ICMP, nothing to tell either side but its
/// own timers.
#[test]
fn network_blackhole_for_5s_under_load() {
    let _one = one_at_a_time();
    let Some(hosts) = Hosts::create() else { return };
    // Servers in tests bind 127.0.0.1; this one binds its namespace's veth
    // address, which only the load's namespace can reach (nothing else is
    // on that link), so it is as private as loopback.
    let (server, metrics) = server(None, hosts.server_ip(), Some(&hosts.server));
    let blackhole = || hosts.blackhole();
    let outcome = under_load(
        "network blackhole (iptables DROP) 5 s",
        server,
        metrics,
        Some(&hosts.client),
        Some((HOLD, &blackhole)),
    );
    outcome.assert_recovered();
}

/// The load alone on Redis: what the faults are measured against. Every
/// session completes, and the timeline the other cases judge by accounts
/// for every number, reconnect, stream end and completion of the run.
#[test]
fn no_fault_under_load() {
    let _one = one_at_a_time();
    let Some(outcome) = reference() else { return };
    assert_eq!(
        outcome.failed(),
        0,
        "sessions failed without a fault:\n{outcome}"
    );
    let timeline = outcome.timeline();
    let total = |f: fn(&Second) -> u64| timeline.iter().map(f).sum::<u64>();
    let ends: u64 = outcome.report["stream_ends"]
        .as_object()
        .expect("stream ends")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum::<u64>()
        + outcome.count("silent_drops")
        + outcome.count("attach_timeouts");
    assert_eq!(
        [
            total(|s| s.numbers),
            total(|s| s.reconnects),
            total(|s| s.stream_ends),
            total(|s| s.completed),
        ],
        [
            outcome.count("numbers"),
            outcome.count("reconnects"),
            ends,
            SESSIONS as u64
        ],
        "the timeline does not add up to the run:\n{outcome}"
    );
}
