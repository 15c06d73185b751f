//! Shared helpers for the end-to-end tests: spawn the real `station` binary,
//! read its output without blocking forever, and kill every child process on
//! drop, even when a test fails.

#![allow(dead_code)] // Not every test binary uses every helper.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const STATION: &str = env!("CARGO_BIN_EXE_station");

/// Upper bound for any single client run in these tests.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A `station` command with quiet, deterministic logging.
pub fn station<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(STATION);
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

/// Collects everything a pipe yields, on a thread, so a child never blocks
/// on a full pipe and a test can look at the text so far.
struct Drain {
    text: Arc<Mutex<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    fn new<R: Read + Send + 'static>(pipe: R) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lock(&sink).push_str(&line),
                }
            }
        });
        Drain {
            text,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> String {
        lock(&self.text).clone()
    }

    /// Waits (bounded) for the pipe to close, then returns everything.
    fn finish(&mut self, limit: Duration) -> String {
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + limit;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        self.snapshot()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running `station` process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    name: String,
    child: Child,
    stdout: Drain,
    stderr: Drain,
    status: Option<ExitStatus>,
}

/// How a process ended and what it printed.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The last line of stdout, where the client prints its verdict.
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    /// Stdout parsed as the client's one `--json` object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{self}"))
    }

    /// Asserts the exit code, showing the output if it differs.
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, Some(expected), "unexpected exit code:\n{self}");
        self
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> Proc {
        let name = name.into();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({STATION}): {e}"));
        let stdout = Drain::new(child.stdout.take().expect("piped"));
        let stderr = Drain::new(child.stderr.take().expect("piped"));
        Proc {
            name,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_so_far(&self) -> String {
        self.stdout.snapshot()
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr.snapshot()
    }

    /// The exit status if the process has ended, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits at most `limit` for the process to end, else `None`.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits at most `limit` for the process to end and returns its output;
    /// panics (after killing it) if it does not end in time.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let status = self.wait_for(limit);
        if status.is_none() {
            self.kill();
            panic!(
                "{} did not exit within {limit:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                self.name,
                self.stdout.finish(Duration::from_secs(1)),
                self.stderr.finish(Duration::from_secs(1)),
            );
        }
        Finished {
            code: status.and_then(|s| s.code()),
            stdout: self.stdout.finish(Duration::from_secs(5)),
            stderr: self.stderr.finish(Duration::from_secs(5)),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Sends SIGTERM (through `kill(1)`, no libc needed).
    pub fn terminate(&mut self) {
        assert!(self.try_status().is_none(), "{} already exited", self.name);
        let ok = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("run kill(1)")
            .success();
        assert!(ok, "kill -TERM {} failed", self.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `station server` listening on an OS-picked loopback port.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
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
    /// caller; waits (bounded) for its `listening on 127.0.0.1:PORT` line.
    pub fn spawn(name: impl Into<String>, cmd: Command) -> Server {
        let mut proc = Proc::spawn(name, cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let out = proc.stdout_so_far();
            if let Some(line) = out.lines().next().filter(|_| out.contains('\n')) {
                let addr = line
                    .strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"));
                assert!(addr.starts_with("127.0.0.1:"), "not on loopback: {addr}");
                let port = addr.rsplit(':').next().unwrap();
                break port.parse::<u16>().expect("a port number");
            }
            if let Some(status) = proc.try_status() {
                panic!(
                    "server exited ({status}) before listening\n{}",
                    proc.stderr_so_far()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server did not print its port within 10s\n{}",
                proc.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        Server { proc, port }
    }

    pub fn port_arg(&self) -> String {
        self.port.to_string()
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `station stats --port P`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let out = Proc::spawn("stats", station(["stats", "--port", &self.port_arg()]))
            .finish(Duration::from_secs(10));
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
        let deadline = Instant::now() + limit;
        loop {
            let stats = self.stats();
            if pred(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "server stats never showed {what} within {limit:?}; last: {stats}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the server holds no session and no stream.
    pub fn wait_idle(&self) -> serde_json::Value {
        self.wait_stats(Duration::from_secs(10), "no live session", |s| {
            s["live_sessions"] == 0 && s["attached_streams"] == 0
        })
    }
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

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks the client's `--json` result for a verified run of `count` numbers.
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
