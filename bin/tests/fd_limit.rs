//! The server out of file descriptors: it raises its soft limit at start
//! and logs it; when accepting fails for want of descriptors it pauses,
//! says so once, keeps serving the streams it has, and accepts again once
//! descriptors are freed.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Soft and hard limit the server runs under: room for the runtime, the
/// listener and a few connections, then nothing.
const LIMIT: u64 = 64;
/// Idle connections opened to use up the server's descriptors (the rest
/// wait in the listen backlog).
const HOGS: usize = 100;

/// The server's user + system CPU time so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .expect("read /proc stat");
    // In the kernel's clock ticks (USER_HZ).
    Duration::from_secs_f64((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// `cmd` run with at most `limit` file descriptors, soft and hard: through
/// util-linux's `prlimit`, which sets its own limits and execs the command
/// (so the child's pid is the station's), rather than an unsafe `pre_exec`.
fn with_descriptors(limit: u64, cmd: Command) -> Command {
    let mut wrapped = Command::new("prlimit");
    wrapped
        .arg(format!("--nofile={limit}:{limit}"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.stdin(std::process::Stdio::null());
    wrapped
}

#[test]
fn out_of_descriptors_the_server_pauses_accepting_and_keeps_serving() {
    let mut cmd = with_descriptors(
        LIMIT,
        station(["server", "--port", "0", "--interval", "100ms"]),
    );
    cmd.env("RUST_LOG", "info");
    let server = Server::spawn("server with 64 descriptors", cmd);
    let stderr = server.proc.stderr_so_far();
    assert!(
        stderr.contains(&format!("open_files_limit={LIMIT}")),
        "the server logs its limit at start:\n{stderr}"
    );

    // A client attached before the descriptors run out: 40 numbers, 4 s.
    let mut client = spawn_client(server.port, &["--count", "40"]);
    server.wait_stats(Duration::from_secs(10), "the client's stream", |s| {
        s["attached_streams"] == 1 && s["numbers_sent"].as_u64().unwrap_or(0) >= 3
    });

    let addr = format!("127.0.0.1:{}", server.port);
    let hogs: Vec<TcpStream> = (0..HOGS)
        .map(|_| TcpStream::connect(&addr).expect("the kernel completes handshakes"))
        .collect();
    wait_until(Duration::from_secs(5), "accepting fails", || {
        server
            .proc
            .stderr_so_far()
            .contains("cannot accept connections")
    });

    // Paused, not spinning: well under half a core over a second and a half
    // (a spinning accept loop takes a whole one).
    let (cpu0, t0) = (cpu_time(server.proc.id()), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu, wall) = (cpu_time(server.proc.id()) - cpu0, t0.elapsed());
    assert!(
        cpu < wall / 2,
        "the server used {cpu:?} of CPU in {wall:?} while out of descriptors"
    );

    // The attached client is served to the end meanwhile.
    let out = client.finish(CLIENT_TIMEOUT);
    out.assert_code(0);

    // Descriptors freed: new connections are accepted again.
    drop(hogs);
    let out = run_client(server.port, &["--count", "3"]);
    out.assert_code(0);
    let stderr = server.proc.stderr_so_far();
    assert_eq!(
        stderr.matches("cannot accept connections").count(),
        1,
        "said once per episode:\n{stderr}"
    );
    assert!(
        stderr.contains("accepting connections again"),
        "says when it recovers:\n{stderr}"
    );
}
