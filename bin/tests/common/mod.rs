//! The one process harness of the end-to-end tests (`bin/tests/*.rs`): run
//! the real `station` binary as child processes, read their output without
//! ever blocking on it, wait for things with a bound on every wait, and kill
//! every child on drop, even when a test fails.
//!
//! - `proc.rs`: one child process ([`Proc`]) and how it ended ([`Finished`]);
//! - `server.rs`: `station server` ([`Server`]), clients, `station stats`,
//!   and checks of a client's result;
//! - `redis.rs`: servers on a private Redis or Redis Cluster, and the
//!   session records read straight from it (used by `redis_e2e.rs`);
//! - `netns.rs`: two network namespaces joined by a veth pair, removed on
//!   drop, for faults of a real network (used by `faults_under_load/`);
//! - `metrics.rs`: a server's `/metrics`, scraped and read as samples.

#![allow(dead_code)] // Not every test binary uses every helper.

pub mod metrics;
pub mod netns;
mod proc;
pub mod redis;
mod server;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use proc::{Finished, Proc};
pub use server::*;

/// The binary under test.
pub const STATION: &str = env!("CARGO_BIN_EXE_station");

/// Upper bound for any single client run in these tests.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on a server's start, a `station stats` run, a session showing up
/// in the store, and the store emptying after the last client.
pub const SHORT: Duration = Duration::from_secs(10);

/// A `station` command with quiet, deterministic logging (a caller wanting
/// more sets `RUST_LOG` again; the last setting wins).
pub fn station<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    station_in(None, args)
}

/// [`station`], run in network namespace `netns` if one is given (through
/// `ip netns exec`, which execs it: the child's pid is the station's).
pub fn station_in<I, S>(netns: Option<&str>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = match netns {
        None => Command::new(STATION),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, STATION]);
            cmd
        }
    };
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    // Flags are also read from the environment: keep the caller's out.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STATION_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Calls `probe` every `every` until it returns `Ok`, for at most `limit`;
/// then panics naming `what` and the last `Err` (what was seen instead).
/// Every wait of the harness goes through here, so none is unbounded.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last seen: {last}"
            ),
        }
        std::thread::sleep(every);
    }
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll(limit, Duration::from_millis(10), what, || {
        cond().then_some(()).ok_or_else(|| "not yet".to_string())
    })
}

/// A loopback port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// The `next_index` in a client state file, if it exists and parses.
pub fn state_next_index(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["next_index"].as_u64()
}
