//! Test fixtures, for this crate's tests and for other crates' tests.
//!
//! [`RedisServer`] runs a throwaway `redis-server` on a free loopback port,
//! and [`RedisCluster`] six of them joined into a Redis Cluster (three
//! primaries, each with a replica), so tests of
//! [`RedisStore`](crate::store::RedisStore) need no Redis set up
//! beforehand and never touch a Redis someone else runs (on 6379 or
//! anywhere else). [`command`] sends one command to a Redis with a tiny
//! client of its own (not the `redis` crate under test). Only the standard
//! library is used, so the module costs nothing to build into the library.
//!
//! This file runs single servers (plain or TLS); `cluster` joins six into
//! a cluster, and `resp` is the tiny client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use self::cluster::{ClusterNode, RedisCluster};
pub use self::resp::{command, command_bytes, Reply};

mod cluster;
mod resp;

/// How long a starting server has to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried by [`RedisServer::start`] before giving up (another process
/// may take the free port between our check and the server's bind).
const START_ATTEMPTS: usize = 3;

/// A private `redis-server` for one test, killed (and its data directory
/// removed) on drop.
///
/// It listens on `127.0.0.1` only, on a port picked free at start, with its
/// data in a fresh temporary directory. RDB snapshots are off and the
/// append-only file is on, so data written before [`stop`](Self::stop)
/// is still there after [`restart`](Self::restart).
///
/// ```no_run
/// # async fn demo() {
/// use station_net::store::{RedisStore, StoreConfig};
/// use station_net::testkit::RedisServer;
///
/// let Some(redis) = RedisServer::start() else { return }; // skipped, said so
/// let store = RedisStore::connect(&redis.url(), "test:", StoreConfig::default())
///     .await
///     .expect("valid URL");
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    /// Removed when the server is dropped (after it is stopped).
    dir: tempfile::TempDir,
    /// Settings after the defaults (later ones win in `redis-server`).
    extra: Vec<String>,
    /// Listens with TLS only, on `port` (plain port off).
    tls: bool,
    child: Option<Child>,
}

/// Whether Redis tests must run: in CI a missing Redis is an error.
fn missing(what: &str) -> Option<std::convert::Infallible> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} not on PATH but CI is set: install it");
    }
    eprintln!(
        "\n*** SKIPPING Redis test: {what} is not on PATH. ***\n\
         *** Install Redis to run it (set CI=1 to make this an error). ***\n"
    );
    None
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// Returns `None`, after printing a loud skip message, when
    /// `redis-server` is not on `PATH`; panics instead if the `CI`
    /// environment variable is set, so CI never silently skips the Redis
    /// tests. Panics if the server does not come up within 10 s.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with more settings after the defaults,
    /// e.g. `["--appendfsync", "always"]` or `["--appendonly", "no"]` (a
    /// later setting overrides an earlier one).
    pub fn start_with(settings: &[&str]) -> Option<RedisServer> {
        let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        Self::launch(false, &|_, _| settings.clone())
    }

    /// Starts a server whose extra settings `settings` gives for the port
    /// and directory of each attempt (so it can pick fresh ports and write
    /// files there). A TLS server's port is its `--tls-port`: it listens
    /// on no plain port, so it is started with `--port 0`.
    fn launch(tls: bool, settings: &dyn Fn(u16, &Path) -> Vec<String>) -> Option<RedisServer> {
        let binary = find_on_path("redis-server").or_else(|| {
            missing("redis-server")?;
            None
        })?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let dir = make_dir(port);
            let mut server = RedisServer {
                binary: binary.clone(),
                port: if tls { 0 } else { port },
                extra: settings(port, dir.path()),
                dir,
                tls,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => {
                    server.port = port;
                    return Some(server);
                }
                // Dropping `server` removes its directory.
                Err(e) => last_error = e,
            }
        }
        let with = if tls { " with TLS" } else { "" };
        panic!("could not start redis-server{with} after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// The server's data directory (its log is `redis.log` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one command to this server; see [`command`].
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        command(self.port, args)
    }

    /// Starts a server that speaks TLS only (`--tls-port`, `--port 0`),
    /// with this certificate and key (PEM), not asking clients for
    /// certificates; waits until its log says it is ready. Its URL is
    /// [`tls_url`](Self::tls_url); [`command`] cannot talk to it.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<RedisServer> {
        Self::launch(true, &|port, dir| {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            std::fs::write(&cert, cert_pem).expect("write the certificate");
            std::fs::write(&key, key_pem).expect("write the key");
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
    }

    /// `rediss://localhost:{port}/0`, for a server started with
    /// [`start_tls`](Self::start_tls) (the name its certificate is for).
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}/0", self.port)
    }

    /// `redis://127.0.0.1:{port}/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (between `stop` and
    /// `restart` it is not).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's process id while it runs, for tests that signal it
    /// (for example `kill -STOP` to make it hang without closing sockets).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (`SIGKILL`, like a crash) and waits for it to exit.
    /// Its data directory stays for [`restart`](Self::restart). Connections
    /// to it fail from now on. Does nothing if it is already stopped.
    ///
    /// Writes it acknowledged survive: Redis hands each write to the
    /// append-only file before replying, and a killed process's writes are
    /// already in the kernel.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port
    /// with the same data directory, and waits until it answers `PING`
    /// (with its data loaded). Panics if it does not come back within 10 s.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// Spawns the server and waits for it; on failure nothing runs.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("set above");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited at start ({status}); log:\n{}",
                    self.port,
                    log_tail(&log)
                ));
            }
            // Checking the pid makes sure the answer comes from our server,
            // not from another one that holds the port.
            let up = if self.tls {
                ready_in_log(&log, pid)
            } else {
                answers(self.port, pid)
            };
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    log_tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // The directory goes with the field, once the server is stopped.
        self.stop();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nobody listens on right now (never Redis's default 6379,
/// where a real Redis may run).
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 for a free port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if port != 6379 {
            return port;
        }
    }
}

/// A new, empty directory for one server's data.
fn make_dir(port: u16) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("station-redis-{port}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a directory for redis-server: {e}"))
}

/// Whether the Redis on `port` is process `pid` and answers `PING` (so it
/// has finished loading its data).
fn answers(port: u16, pid: u32) -> bool {
    let exchange = || -> std::io::Result<bool> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        conn.set_read_timeout(Some(Duration::from_millis(500)))?;
        conn.set_write_timeout(Some(Duration::from_millis(500)))?;
        conn.write_all(b"INFO server\r\nPING\r\n")?;
        // Read until the reply to PING (the last one) has arrived.
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(b"\r\n+PONG\r\n") && !contains(&reply, b"\r\n-") {
            let n = conn.read(&mut buf)?;
            if n == 0 || reply.len() > 1 << 20 {
                return Ok(false);
            }
            reply.extend_from_slice(&buf[..n]);
        }
        let pid_line = format!("\r\nprocess_id:{pid}\r\n");
        Ok(reply.ends_with(b"\r\n+PONG\r\n") && contains(&reply, pid_line.as_bytes()))
    };
    exchange().unwrap_or(false)
}

/// Whether process `pid`'s log says it accepts connections.
fn ready_in_log(log: &Path, pid: u32) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let me = format!("{pid}:M ");
    text.lines()
        .any(|l| l.starts_with(&me) && l.contains("Ready to accept connections"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(no log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
