//! `station server` on an OS-picked loopback port (or, in a network
//! namespace, on that namespace's address), `station client` and `station
//! stats` runs against it, and the checks every test makes of a client's
//! result.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{poll, state_next_index, station, station_in, Finished, Proc, CLIENT_TIMEOUT, SHORT};

/// A `station server` listening on an OS-picked port: on loopback, or on
/// its network namespace's address.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    /// The address it listens on.
    pub host: IpAddr,
    /// The network namespace it runs in, if not this process's.
    pub netns: Option<String>,
}

impl Server {
    /// `station server --port 0 --interval 10ms <extra>`; waits (bounded)
    /// for its `listening on 127.0.0.1:PORT` line.
    pub fn start(extra: &[&str]) -> Server {
        let mut args = vec!["server", "--port", "0", "--interval", "10ms"];
        args.extend_from_slice(extra);
        Server::spawn(format!("server {extra:?}"), station(&args))
    }

    /// Spawns `cmd`, a `station server --port 0 …` command set up by the
    /// caller; waits (bounded) for its first stdout line, which must be
    /// `listening on 127.0.0.1:PORT`.
    pub fn spawn(name: impl Into<String>, cmd: Command) -> Server {
        Server::spawn_in(name, cmd, IpAddr::V4(Ipv4Addr::LOCALHOST), None)
    }

    /// [`Server::spawn`] for a server given `--host host`, in network
    /// namespace `netns` if any (`cmd` made by [`station_in`]): its first
    /// line must be `listening on HOST:PORT`, and [`Server::stats`] runs
    /// in the same namespace.
    pub fn spawn_in(
        name: impl Into<String>,
        cmd: Command,
        host: IpAddr,
        netns: Option<&str>,
    ) -> Server {
        let mut proc = Proc::spawn(name, cmd);
        let what = format!("{} to print its port", proc.name());
        let addr = poll(SHORT, Duration::from_millis(5), &what, || {
            let out = proc.stdout_so_far();
            if let Some(line) = out.lines().next().filter(|_| out.contains('\n')) {
                let addr: SocketAddr = line
                    .strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"))
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                return Ok(addr);
            }
            if let Some(done) = proc.try_exited() {
                panic!("the server exited before listening:\n{done}");
            }
            Err(format!("stderr:\n{}", proc.stderr_so_far()))
        });
        assert_eq!(addr.ip(), host, "not on {host}: {addr}");
        assert_ne!(addr.port(), 0, "no port picked: {addr}");
        Server {
            proc,
            port: addr.port(),
            host,
            netns: netns.map(str::to_string),
        }
    }

    pub fn port_arg(&self) -> String {
        self.port.to_string()
    }

    pub fn endpoint(&self) -> String {
        SocketAddr::new(self.host, self.port).to_string()
    }

    /// `station stats --host H --port P` (bounded, in the server's network
    /// namespace), parsed.
    pub fn stats(&self) -> serde_json::Value {
        let host = self.host.to_string();
        let args = ["stats", "--host", &host, "--port", &self.port_arg()];
        let out = Proc::spawn("stats", station_in(self.netns.as_deref(), args)).finish(SHORT);
        out.assert_code(0);
        out.json()
    }

    /// Polls `stats` until `pred` holds (bounded), returning the last stats.
    pub fn wait_stats(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let what = format!("server stats showing {what}");
        poll(limit, Duration::from_millis(50), &what, || {
            let stats = self.stats();
            if pred(&stats) {
                Ok(stats)
            } else {
                Err(stats.to_string())
            }
        })
    }

    /// Waits until the server holds no session and no stream.
    pub fn wait_idle(&self) -> serde_json::Value {
        self.wait_stats(Duration::from_secs(10), "no live session", |s| {
            s["live_sessions"] == 0 && s["attached_streams"] == 0
        })
    }
}

/// A counter of `station stats`' JSON; panics if there is none.
pub fn counter(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key:?} in {stats}"))
}

/// Spawns `station client --port P <extra>`.
pub fn spawn_client(port: u16, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec!["client", "--port", port.as_str()];
    args.extend_from_slice(extra);
    Proc::spawn(format!("client {extra:?}"), station(&args))
}

/// Runs `station client --port P <extra>` to the end (bounded).
pub fn run_client(port: u16, extra: &[&str]) -> Finished {
    spawn_client(port, extra).finish(CLIENT_TIMEOUT)
}

/// Runs `station <args>` to the end (bounded).
pub fn run_station(args: &[&str]) -> Finished {
    Proc::spawn(format!("station {args:?}"), station(args)).finish(CLIENT_TIMEOUT)
}

/// Waits (at most `limit`) until `client`'s state file `state` holds a
/// `next_index` that `enough` accepts, and returns it; panics, with the
/// client's output, if it ends first (a test then has nothing to kill).
pub fn wait_saved(
    client: &mut Proc,
    state: &Path,
    limit: Duration,
    enough: impl Fn(u64) -> bool,
) -> u64 {
    let what = format!("{}'s progress in {}", client.name(), state.display());
    poll(limit, Duration::from_millis(5), &what, || {
        if let Some(n) = state_next_index(state).filter(|&n| enough(n)) {
            return Ok(n);
        }
        if let Some(done) = client.try_exited() {
            panic!("the client ended before it had saved enough:\n{done}");
        }
        Err(format!("{:?}", std::fs::read_to_string(state)))
    })
}

/// Asserts the process did not panic.
pub fn assert_no_panic(out: &Finished) {
    assert!(
        !out.stderr.contains("panicked"),
        "the process panicked:\n{out}"
    );
    assert_ne!(out.code, Some(101), "the process panicked:\n{out}");
}

/// Checks the client's `--json` result for a verified run of `count`
/// numbers: exit 0, every number received, both checksums equal.
pub fn assert_verified_json(out: &Finished, count: u64) -> serde_json::Value {
    out.assert_code(0);
    let j = out.json();
    assert_eq!(j["success"], true, "{out}");
    assert_eq!(j["exit_code"], 0, "{out}");
    assert_eq!(j["count"], count, "{out}");
    assert_eq!(j["received"], count, "{out}");
    assert!(j["server_checksum"].is_u64(), "{out}");
    assert_eq!(j["server_checksum"], j["client_checksum"], "{out}");
    assert!(
        j["sum"].as_u64().unwrap() <= count * u64::from(u32::MAX),
        "{out}"
    );
    assert!(
        j["result"].as_str().unwrap().starts_with("SUCCESS"),
        "{out}"
    );
    j
}
