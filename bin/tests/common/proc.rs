//! One `station` child process of a test: its stdout and stderr drained by
//! a thread each into memory, killed (SIGKILL) and reaped on drop.
//!
//! The tests once had two designs: this one, and (in `redis_e2e.rs`) output
//! written to files in a temporary directory. Both keep a child from ever
//! blocking on a full pipe and keep its output for a failure message;
//! draining is kept because it needs no directory to put files in (most
//! tests have none), lets a test watch the output grow (a server's
//! `listening on` line, a log line) without re-reading files, and leaves
//! nothing on disk. Its cost, two threads per child, is small even with
//! fifty clients.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::STATION;

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
            // Bytes, not `read_line`: output that is not UTF-8 must not
            // stop the draining (the child would then block on the pipe).
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lock(&sink).push_str(&String::from_utf8_lossy(&line)),
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    pub name: String,
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

    /// Stdout parsed as one JSON object (the client's `--json` result,
    /// `station stats`' counters): nothing else may be on stdout.
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
            "{}: exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.name, self.code, self.stdout, self.stderr
        )
    }
}

impl Proc {
    /// Spawns `cmd` (made by [`super::station`]) with stdout and stderr
    /// captured; `name` says which child it is in failure messages.
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

    pub fn name(&self) -> &str {
        &self.name
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

    /// How it ended and its output, if it has ended, without waiting for
    /// it (only, briefly, for its pipes to close).
    pub fn try_exited(&mut self) -> Option<Finished> {
        self.try_status()?;
        Some(self.finished(Duration::from_secs(5)))
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
    pub fn finish(&mut self, limit: Duration) -> Finished {
        self.finish_by(Instant::now() + limit)
    }

    /// [`Proc::finish`] with a deadline, for several processes given one
    /// bound together.
    pub fn finish_by(&mut self, deadline: Instant) -> Finished {
        let limit = deadline.saturating_duration_since(Instant::now());
        if self.wait_for(limit).is_none() {
            self.kill();
            let out = self.finished(Duration::from_secs(1));
            panic!("{} did not exit in time; killed it.\n{out}", self.name);
        }
        self.finished(Duration::from_secs(5))
    }

    /// What it printed, once it has ended; waits at most `drain_limit`
    /// for its pipes to close.
    fn finished(&mut self, drain_limit: Duration) -> Finished {
        Finished {
            name: self.name.clone(),
            code: self.status.and_then(|s| s.code()),
            stdout: self.stdout.finish(drain_limit),
            stderr: self.stderr.finish(drain_limit),
        }
    }

    /// SIGKILL (like a crash), then reap.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            // An error means it already exited, which is fine.
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Sends SIGTERM (through `kill(1)`, no libc needed).
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`TERM`, `STOP`, `CONT`, …) through
    /// `kill(1)`; the process must still be running.
    pub fn signal(&mut self, name: &str) {
        assert!(self.try_status().is_none(), "{} already exited", self.name);
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.id().to_string()])
            .status()
            .expect("run kill(1)")
            .success();
        assert!(ok, "kill -{name} {} failed", self.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
