//! End-to-end tests of issue 5 with real processes: several `station server`
//! processes share one private Redis, `station client` processes fail over
//! between them, and the servers or Redis itself die mid-stream.
//!
//! Every test starts its own `redis-server` (skipped, loudly, when it is not
//! installed; an error when `CI` is set), binds everything to 127.0.0.1 on
//! OS-picked ports, bounds every wait, and kills every child it started when
//! it ends, passing or failing.
//!
//! The numbers are checked independently of the client's own verdict: each
//! session's seed is read straight from Redis (raw RESP, not through the
//! store under test) while the session is live, and the expected sum and
//! CRC-32 are recomputed here from the seed.

use std::time::{Duration, Instant};

use harness::*;
use station_net::testing::{RedisCluster, RedisServer};
use uuid::Uuid;

/// Time between two numbers in every server started here.
const INTERVAL: &str = "20ms";

/// Test helpers: processes, `station stats`, a tiny Redis client.
mod harness {
    use std::fmt;
    use std::fs::File;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use station_core::server::Record;
    use station_net::testing::{command_bytes, RedisCluster, RedisServer, Reply};
    use uuid::Uuid;

    use super::INTERVAL;

    /// The binary under test.
    pub const STATION: &str = env!("CARGO_BIN_EXE_station");

    /// Bound on a server's start, a `station stats` run, a session showing
    /// up in Redis, and the store emptying after the last client.
    pub const SHORT: Duration = Duration::from_secs(10);

    /// A `station` child whose stdout and stderr go to files (so it never
    /// blocks on a full pipe, and its output is there to show on failure).
    /// Killed (SIGKILL) and reaped on drop.
    pub struct Proc {
        pub name: String,
        child: Option<Child>,
        code: Option<Option<i32>>,
        stdout: PathBuf,
        stderr: PathBuf,
    }

    /// A child that has exited, with its output.
    pub struct Finished {
        pub name: String,
        /// `None` if killed by a signal.
        pub code: Option<i32>,
        pub stdout: String,
        pub stderr: String,
    }

    impl fmt::Display for Finished {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "--- {} exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.name, self.code, self.stdout, self.stderr
            )
        }
    }

    impl Finished {
        /// The last stdout line as JSON (the client's `--json` result,
        /// `station stats`' counters).
        pub fn json(&self) -> serde_json::Value {
            let line = self.stdout.lines().last().unwrap_or_else(|| {
                panic!("no output where JSON was expected:\n{self}");
            });
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}):\n{self}"))
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    impl Proc {
        /// Runs `station ARGS`, output to files in `dir`, with no
        /// `STATION_*` variable of the caller's environment leaking in.
        pub fn spawn(dir: &Path, name: &str, args: &[String], log: &str) -> Proc {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let stdout = dir.join(format!("{name}-{n}.stdout"));
            let stderr = dir.join(format!("{name}-{n}.stderr"));
            let file =
                |p: &Path| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let mut cmd = Command::new(STATION);
            cmd.args(args)
                .env("RUST_LOG", log)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(file(&stdout))
                .stderr(file(&stderr));
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("STATION_") {
                    cmd.env_remove(key);
                }
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {STATION}: {e}"));
            Proc {
                name: name.to_string(),
                child: Some(child),
                code: None,
                stdout,
                stderr,
            }
        }

        pub fn stdout(&self) -> String {
            read(&self.stdout)
        }

        fn finished(&self) -> Finished {
            Finished {
                name: self.name.clone(),
                code: self.code.flatten(),
                stdout: read(&self.stdout),
                stderr: read(&self.stderr),
            }
        }

        /// Whether it has exited (reaping it if so).
        pub fn try_exited(&mut self) -> Option<Finished> {
            if self.code.is_none() {
                let child = self.child.as_mut()?;
                let status = child.try_wait().expect("try_wait on our child")?;
                self.code = Some(status.code());
                self.child = None;
            }
            Some(self.finished())
        }

        /// Waits until `deadline` for it to exit; past it, kills it and
        /// panics with its output.
        pub fn wait_until(&mut self, deadline: Instant) -> Finished {
            loop {
                if let Some(done) = self.try_exited() {
                    return done;
                }
                if Instant::now() >= deadline {
                    self.kill();
                    panic!(
                        "{} did not exit in time; killed it.\n{}",
                        self.name,
                        self.finished()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// SIGKILL (like a crash), then reap.
        pub fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                // An error means it already exited, which is fine.
                let _ = child.kill();
                let status = child.wait().ok();
                self.code = Some(status.and_then(|s| s.code()));
            }
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// `station server` on the shared Redis, on a port the OS picked.
    pub struct Server {
        pub proc: Proc,
        pub port: u16,
    }

    impl Server {
        /// Starts one and waits (bounded) for its `listening on` line.
        pub fn start(dir: &Path, name: &str, redis: &RedisServer, prefix: &str) -> Server {
            Self::start_on(dir, name, &redis.url(), prefix, INTERVAL)
        }

        /// Starts one on the store at `store_url`, sending a number every
        /// `interval`.
        pub fn start_on(
            dir: &Path,
            name: &str,
            store_url: &str,
            prefix: &str,
            interval: &str,
        ) -> Server {
            let args = [
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--store",
                store_url,
                "--redis-prefix",
                prefix,
                "--interval",
                interval,
                "--session-ttl",
                "30s",
            ]
            .map(String::from);
            let mut proc = Proc::spawn(dir, name, &args, "info");
            let deadline = Instant::now() + SHORT;
            loop {
                let out = proc.stdout();
                if let Some(line) = out.lines().find(|l| l.starts_with("listening on ")) {
                    let addr: SocketAddr = line["listening on ".len()..]
                        .trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST, "{line}");
                    assert_ne!(addr.port(), 0, "{line}");
                    return Server {
                        proc,
                        port: addr.port(),
                    };
                }
                if let Some(done) = proc.try_exited() {
                    panic!("server {name} exited before listening:\n{done}");
                }
                if Instant::now() >= deadline {
                    proc.kill();
                    panic!(
                        "server {name} printed no `listening on` line within {SHORT:?}:\n{}",
                        proc.finished()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        pub fn endpoint(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }
    }

    /// `station client --json --client-id ID --count N`, with an
    /// `--endpoint` per server in the order given.
    pub fn spawn_client(
        dir: &Path,
        name: &str,
        endpoints: &[&Server],
        count: u32,
        id: Uuid,
        state_file: Option<&Path>,
    ) -> Proc {
        let mut args = vec!["client".to_string(), "--json".into()];
        for server in endpoints {
            args.extend(["--endpoint".into(), server.endpoint()]);
        }
        args.extend(["--count".into(), count.to_string()]);
        args.extend(["--client-id".into(), id.to_string()]);
        args.extend(["--give-up-after".into(), "30s".into()]);
        if let Some(path) = state_file {
            args.extend(["--state-file".into(), path.display().to_string()]);
        }
        Proc::spawn(dir, name, &args, "info")
    }

    /// `station stats --port PORT`, bounded; its JSON.
    pub fn stats(dir: &Path, port: u16) -> serde_json::Value {
        let args = ["stats", "--host", "127.0.0.1", "--port", &port.to_string()].map(String::from);
        let out = Proc::spawn(dir, "stats", &args, "warn").wait_until(Instant::now() + SHORT);
        assert_eq!(out.code, Some(0), "station stats failed:\n{out}");
        out.json()
    }

    /// A counter of `station stats`' JSON.
    pub fn counter(stats: &serde_json::Value, key: &str) -> u64 {
        stats[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {key:?} in {stats}"))
    }

    /// The sum and CRC-32 (zlib's, over big-endian u32s) of the sequence a
    /// session with this seed must deliver, computed here with `crc32fast`
    /// rather than the library's checksum function.
    pub fn expected(seed: u64, count: u32) -> (u64, u32) {
        let mut crc = crc32fast::Hasher::new();
        let mut sum = 0u64;
        for i in 0..count {
            let v = station_core::sequence::value(seed, i);
            sum += u64::from(v);
            crc.update(&v.to_be_bytes());
        }
        (sum, crc.finalize())
    }

    /// Asserts the client exited 0, received `record`'s whole sequence and
    /// verified it: its sum and both checksums equal what the session's
    /// seed gives. Returns its JSON result.
    pub fn assert_verified(out: &Finished, record: &Record) -> serde_json::Value {
        assert_eq!(out.code, Some(0), "client did not succeed:\n{out}");
        let json = out.json();
        let (sum, crc) = expected(record.seed, record.count);
        assert_eq!(json["success"], true, "{out}");
        assert_eq!(json["exit_code"], 0, "{out}");
        assert_eq!(json["client_id"], record.client_id.0.to_string(), "{out}");
        assert_eq!(json["count"], record.count, "{out}");
        assert_eq!(json["received"], record.count, "{out}");
        assert_eq!(
            json["sum"], sum,
            "sum differs from the session's sequence:\n{out}"
        );
        assert_eq!(
            json["server_checksum"], crc,
            "server checksum wrong:\n{out}"
        );
        assert_eq!(
            json["client_checksum"], crc,
            "client checksum wrong:\n{out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
        json
    }

    /// The session record Redis holds for `id`, if any.
    pub fn stored_record(redis: &RedisServer, prefix: &str, id: Uuid) -> Option<Record> {
        let key = format!("{prefix}session:{id}");
        match command_bytes(redis.port(), &[b"HGET", key.as_bytes(), b"record"]) {
            Ok(Reply::Bulk(bytes)) => Some(
                Record::from_bytes(&bytes)
                    .unwrap_or_else(|| panic!("{key} holds no valid record: {bytes:?}")),
            ),
            Ok(Reply::Nil) => None,
            other => panic!("HGET {key} record: {other:?}"),
        }
    }

    /// The session record a Redis Cluster holds for `id`, if any: the
    /// node serving the key's slot answers, the others redirect.
    pub fn cluster_record(cluster: &RedisCluster, prefix: &str, id: Uuid) -> Option<Record> {
        let bucket = station_net::store::redis::bucket_of(&station_core::ClientId(id));
        let key = format!("{prefix}{{{bucket}}}:session:{id}");
        for node in cluster.nodes().iter().filter(|n| n.is_running()) {
            match command_bytes(node.port(), &[b"HGET", key.as_bytes(), b"record"]) {
                Ok(Reply::Bulk(bytes)) => {
                    return Some(
                        Record::from_bytes(&bytes)
                            .unwrap_or_else(|| panic!("{key} holds no valid record: {bytes:?}")),
                    )
                }
                Ok(Reply::Nil) => return None,
                // MOVED from the nodes that do not serve it.
                _ => continue,
            }
        }
        None
    }

    /// Waits (bounded) until the cluster holds `id`'s session.
    pub fn wait_cluster_record(cluster: &RedisCluster, prefix: &str, id: Uuid) -> Record {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some(record) = cluster_record(cluster, prefix, id) {
                assert_eq!(record.client_id.0, id, "record under the wrong key");
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} did not appear in the cluster within {SHORT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until Redis holds `id`'s session, and returns it.
    pub fn wait_record(redis: &RedisServer, prefix: &str, id: Uuid) -> Record {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some(record) = stored_record(redis, prefix, id) {
                assert_eq!(record.client_id.0, id, "record under the wrong key");
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} did not appear in Redis within {SHORT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every key under `prefix` in Redis.
    pub fn keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}*");
        match command_bytes(redis.port(), &[b"KEYS", pattern.as_bytes()]) {
            Ok(Reply::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(k) => String::from_utf8_lossy(&k).into_owned(),
                    other => panic!("KEYS returned {other:?}"),
                })
                .collect(),
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// Waits (bounded) until `station stats` on `port` reports no live
    /// session and Redis holds no key under `prefix`: nothing leaked.
    pub fn assert_store_empties(dir: &Path, port: u16, redis: &RedisServer, prefix: &str) {
        let deadline = Instant::now() + SHORT;
        loop {
            let stats = stats(dir, port);
            let left = keys(redis, prefix);
            if counter(&stats, "live_sessions") == 0 && left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the store did not empty within {SHORT:?} after every client finished: \
                 stats {stats}, keys left {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `next_index` saved in a client's state file, if it is readable.
    pub fn saved_next_index(path: &Path) -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["next_index"].as_u64()
    }
}

/// Issue 5, test 1: two servers on one Redis, 20 clients given both
/// endpoints; one server is SIGKILLed mid-stream. Every client completes
/// with the exact sequence of its session, on the survivor, and the store
/// ends empty.
#[test]
fn clients_fail_over_when_a_server_is_killed() {
    const CLIENTS: usize = 20;
    const COUNT: u32 = 60; // 1.2 s of numbers at 20 ms.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let prefix = "e2e-kill:";
    let mut a = Server::start(dir, "server-a", &redis, prefix);
    let b = Server::start(dir, "server-b", &redis, prefix);

    let started = Instant::now();
    let ids: Vec<Uuid> = (0..CLIENTS).map(|_| Uuid::new_v4()).collect();
    let mut clients: Vec<Proc> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            // Alternate the order so that both servers get streams.
            let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
            spawn_client(dir, &format!("client-{i}"), &order, COUNT, id, None)
        })
        .collect();
    // Each session's seed, to check its numbers independently.
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_record(&redis, prefix, id))
        .collect();
    for record in &records {
        assert_eq!(record.count, COUNT);
    }

    std::thread::sleep(Duration::from_millis(300).saturating_sub(started.elapsed()));
    let on_a = counter(&stats(dir, a.port), "attached_streams");
    a.proc.kill();
    let killed_at = started.elapsed();
    assert!(
        on_a > 0,
        "server A had no stream attached when it was killed: nothing was tested"
    );
    assert!(
        killed_at < Duration::from_millis(1000),
        "A was killed only {killed_at:?} after the clients started; streams last about 1.2 s, \
         so the test may not have cut any (machine too slow?)"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reconnects = 0;
    for (client, record) in clients.iter_mut().zip(&records) {
        let json = assert_verified(&client.wait_until(deadline), record);
        reconnects += json["reconnects"].as_u64().expect("reconnects");
    }
    let survivor = stats(dir, b.port);
    assert!(
        counter(&survivor, "sessions_resumed") >= on_a,
        "{on_a} streams were cut on A, but B resumed fewer sessions: {survivor}"
    );
    assert!(
        reconnects >= on_a,
        "{reconnects} reconnects for {on_a} cut streams"
    );
    assert_store_empties(dir, b.port, &redis, prefix);
    eprintln!(
        "killed A after {killed_at:?} with {on_a} streams attached; {reconnects} reconnects; \
         all {CLIENTS} clients verified in {:?}",
        started.elapsed()
    );
}

/// Issue 5, test 2: Redis is down for 2 s in the middle of the streams of
/// two servers' clients. With a TTL far longer than the outage, every client
/// completes with its exact sequence, and the store ends empty.
#[test]
fn clients_complete_across_a_redis_outage() {
    const CLIENTS: usize = 10;
    const COUNT: u32 = 150; // 3 s of numbers at 20 ms.
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let prefix = "e2e-outage:";
    let a = Server::start(dir, "server-a", &redis, prefix);
    let b = Server::start(dir, "server-b", &redis, prefix);

    let started = Instant::now();
    let ids: Vec<Uuid> = (0..CLIENTS).map(|_| Uuid::new_v4()).collect();
    let mut clients: Vec<Proc> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
            spawn_client(dir, &format!("client-{i}"), &order, COUNT, id, None)
        })
        .collect();
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_record(&redis, prefix, id))
        .collect();

    std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
    let streams = counter(&stats(dir, a.port), "attached_streams")
        + counter(&stats(dir, b.port), "attached_streams");
    assert!(
        streams > 0,
        "no stream attached when Redis went down: nothing was tested"
    );
    redis.stop();
    let stopped_at = started.elapsed();
    for client in &mut clients {
        if let Some(done) = client.try_exited() {
            panic!("a client ended before the outage, so it tested nothing:\n{done}");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reconnects = 0;
    for (client, record) in clients.iter_mut().zip(&records) {
        let json = assert_verified(&client.wait_until(deadline), record);
        reconnects += json["reconnects"].as_u64().expect("reconnects");
    }
    assert_store_empties(dir, a.port, &redis, prefix);
    eprintln!(
        "Redis down from {stopped_at:?} for 2 s with {streams} streams attached; \
         {reconnects} reconnects; all {CLIENTS} clients verified in {:?}",
        started.elapsed()
    );
}

/// Issue 5, test 3: a client opens its session on server A and is SIGKILLed
/// mid-stream; A is killed too. Run again with the same state file and only
/// server B, it resumes the same session (not a new one) and completes with
/// the exact sequence of the session's seed.
#[test]
fn crashed_client_resumes_from_its_state_file_on_another_server() {
    const COUNT: u32 = 150; // 3 s of numbers at 20 ms.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let prefix = "e2e-resume:";
    let mut a = Server::start(dir, "server-a", &redis, prefix);
    let b = Server::start(dir, "server-b", &redis, prefix);
    let state = dir.join("client.state");
    let id = Uuid::new_v4();

    let started = Instant::now();
    let mut first = spawn_client(dir, "client-first", &[&a], COUNT, id, Some(&state));
    let deadline = Instant::now() + SHORT;
    let saved = loop {
        match saved_next_index(&state) {
            Some(n) if n > 5 => break n,
            _ => {}
        }
        if let Some(done) = first.try_exited() {
            panic!("the client ended before it was killed:\n{done}");
        }
        assert!(
            Instant::now() < deadline,
            "state file never showed next_index > 5 within {SHORT:?}: {:?}",
            std::fs::read_to_string(&state)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    first.kill();
    assert_eq!(
        first.try_exited().map(|f| f.code),
        Some(None),
        "killed by a signal"
    );
    assert!(
        saved < u64::from(COUNT),
        "the client was not killed mid-stream"
    );

    let record = stored_record(&redis, prefix, id).expect("the session is in Redis");
    assert_eq!(record.count, COUNT);
    let on_a = stats(dir, a.port);
    assert_eq!(counter(&on_a, "sessions_opened"), 1, "opened on A: {on_a}");
    a.proc.kill();

    let mut second = spawn_client(dir, "client-again", &[&b], COUNT, id, Some(&state));
    let out = second.wait_until(Instant::now() + Duration::from_secs(30));
    assert_verified(&out, &record);
    assert!(
        !state.exists(),
        "the state file must be removed after success:\n{out}"
    );
    let on_b = stats(dir, b.port);
    assert_eq!(
        counter(&on_b, "sessions_opened"),
        0,
        "B opened a new session instead of resuming: {on_b}\n{out}"
    );
    assert!(counter(&on_b, "sessions_resumed") >= 1, "{on_b}\n{out}");
    assert_store_empties(dir, b.port, &redis, prefix);
    eprintln!(
        "client killed at next_index {saved}, resumed on B; verified in {:?}",
        started.elapsed()
    );
}

/// The primary that serves the most of a cluster store's buckets under
/// `prefix`, and those bucket slots.
fn busiest_primary(cluster: &RedisCluster, prefix: &str) -> (u16, Vec<u16>) {
    use station_net::store::redis::{key_slot, BUCKETS};
    let slots: Vec<u16> = (0..BUCKETS)
        .map(|b| key_slot(format!("{prefix}{{{b}}}:").as_bytes()))
        .collect();
    let topology = cluster.topology().expect("cluster topology");
    topology
        .iter()
        .filter(|n| n.primary && !n.failing)
        .map(|n| {
            let mine: Vec<u16> = slots.iter().copied().filter(|&s| n.serves(s)).collect();
            (n.port, mine)
        })
        .max_by_key(|(_, mine)| mine.len())
        .expect("a primary")
}

/// How many of `clients` are still running.
fn running(clients: &mut [Proc]) -> usize {
    clients
        .iter_mut()
        .map(|c| usize::from(c.try_exited().is_none()))
        .sum()
}

/// Issue 12: two servers on a Redis Cluster (three primaries, three
/// replicas), 50 clients at 50 ms a number. While they stream: (a) every
/// bucket slot of one primary migrates to another, keys and all; (b) a
/// replica takes over by `CLUSTER FAILOVER`; (c) a primary is killed
/// (SIGKILL) and its replica takes over by itself. Every client completes
/// with its session's exact sequence, or, only where the cluster lost
/// acknowledged writes, ends saying the store lost its session (never
/// "taken over", never a wrong sequence). Prints how many ended each way.
#[test]
fn cluster_clients_complete_through_resharding_and_failovers() {
    const CLIENTS: usize = 50;
    const COUNT: u32 = 240; // 12 s of numbers at 50 ms.
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let prefix = "e2e-cluster:";
    let a = Server::start_on(dir, "server-a", &cluster.url(), prefix, "50ms");
    let b = Server::start_on(dir, "server-b", &cluster.url(), prefix, "50ms");

    let started = Instant::now();
    let ids: Vec<Uuid> = (0..CLIENTS).map(|_| Uuid::new_v4()).collect();
    let mut clients: Vec<Proc> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
            spawn_client(dir, &format!("client-{i}"), &order, COUNT, id, None)
        })
        .collect();
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_cluster_record(&cluster, prefix, id))
        .collect();
    eprintln!(
        "{CLIENTS} sessions in the cluster after {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1000));

    // (a) Resharding: the busiest primary's bucket slots move away.
    let (from, slots) = busiest_primary(&cluster, prefix);
    let to = cluster
        .topology()
        .expect("topology")
        .into_iter()
        .find(|n| n.primary && n.port != from)
        .expect("another primary")
        .port;
    let live = running(&mut clients);
    let mut moved = 0;
    for &slot in &slots {
        moved += cluster.migrate_slot(slot, to);
    }
    cluster.wait_healthy(Duration::from_secs(20));
    eprintln!(
        "(a) at {:?}, {live} clients streaming: migrated {} bucket slots ({moved} keys) from {from} to {to}",
        started.elapsed(),
        slots.len()
    );
    assert!(
        live > CLIENTS / 2,
        "most clients ended before the resharding"
    );
    assert!(moved > 0, "no session moved");
    std::thread::sleep(Duration::from_millis(1000));

    // (b) Manual failover of the busiest primary.
    let (primary, _) = busiest_primary(&cluster, prefix);
    let topology = cluster.topology().expect("topology");
    let primary_id = topology
        .iter()
        .find(|n| n.port == primary)
        .expect("the primary")
        .id
        .clone();
    let replica = topology
        .iter()
        .find(|n| n.primary_id.as_deref() == Some(primary_id.as_str()))
        .expect("a replica")
        .port;
    let live = running(&mut clients);
    cluster.manual_failover(replica);
    eprintln!(
        "(b) at {:?}, {live} clients streaming: replica {replica} took over from {primary} (CLUSTER FAILOVER)",
        started.elapsed()
    );
    assert!(live > CLIENTS / 2, "most clients ended before the failover");
    std::thread::sleep(Duration::from_millis(1000));

    // (c) kill -9 of the busiest primary; its replica takes over by itself.
    let (victim, _) = busiest_primary(&cluster, prefix);
    let live = running(&mut clients);
    let killed_at = started.elapsed();
    let heir = cluster.kill_and_fail_over(victim);
    eprintln!(
        "(c) at {killed_at:?}, {live} clients streaming: killed primary {victim}; {heir:?} took over after {:?}",
        started.elapsed() - killed_at
    );
    assert!(live > CLIENTS / 2, "most clients ended before the kill");

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut verified, mut lost, mut reconnects) = (0, 0, 0);
    for (client, record) in clients.iter_mut().zip(&records) {
        let out = client.wait_until(deadline);
        if out.code == Some(0) {
            let json = assert_verified(&out, record);
            reconnects += json["reconnects"].as_u64().expect("reconnects");
            verified += 1;
        } else {
            let json = out.json();
            let result = json["result"].as_str().unwrap_or_default();
            assert!(
                result.contains("lost by the session store"),
                "a client failed for another reason than a lost session:\n{out}"
            );
            lost += 1;
        }
    }
    eprintln!(
        "cluster e2e: {verified} clients verified their checksum, {lost} were told the store \
         lost their session; {reconnects} reconnects; {:?} in all",
        started.elapsed()
    );
    assert_eq!(verified + lost, CLIENTS);
    assert_store_empties_cluster(dir, a.port, &cluster, prefix);
}

/// Waits (bounded) until `station stats` on `port` reports no live session
/// and no primary holds a key under `prefix`.
fn assert_store_empties_cluster(
    dir: &std::path::Path,
    port: u16,
    cluster: &RedisCluster,
    prefix: &str,
) {
    let deadline = Instant::now() + SHORT;
    loop {
        let stats = stats(dir, port);
        let pattern = format!("{prefix}*");
        let left: usize = cluster
            .nodes()
            .iter()
            .filter(|n| n.is_running())
            .map(|n| match n.command(&["KEYS", &pattern]) {
                Ok(station_net::testing::Reply::Array(keys)) => keys.len(),
                other => panic!("KEYS on {}: {other:?}", n.port()),
            })
            .sum();
        if counter(&stats, "live_sessions") == 0 && left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not empty within {SHORT:?}: stats {stats}, {left} keys left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How the clients of a Redis restart test ended.
#[derive(Debug, Default)]
struct Ends {
    /// Completed with their session's exact sequence.
    verified: usize,
    /// Told NOT_FOUND: the store lost their session.
    lost: usize,
    /// Told NOT_FOUND: no such session (forgotten) on resuming.
    forgotten: usize,
    /// Sessions whose key was gone right after Redis came back.
    keys_missing: usize,
    /// Clients still streaming when Redis was killed.
    streaming: usize,
}

/// Issue 12: Redis is killed (SIGKILL) while two servers' clients stream,
/// then started again on the same data directory, with `settings` on top
/// of the test server's (AOF on, RDB off). Every client either completes
/// with its exact sequence or ends NOT_FOUND saying the store lost (or
/// forgot) its session: never "taken over", never another sequence.
fn redis_restart_mid_stream(settings: &[&str], label: &str) -> Option<Ends> {
    const CLIENTS: usize = 20;
    const COUNT: u32 = 150; // 3 s of numbers at 20 ms.
    let mut redis = RedisServer::start_with(settings)?;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let prefix = format!("e2e-restart-{label}:");
    let a = Server::start(dir, "server-a", &redis, &prefix);
    let b = Server::start(dir, "server-b", &redis, &prefix);
    let started = Instant::now();
    let ids: Vec<Uuid> = (0..CLIENTS).map(|_| Uuid::new_v4()).collect();
    let mut clients: Vec<Proc> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
            spawn_client(dir, &format!("client-{i}"), &order, COUNT, id, None)
        })
        .collect();
    let records: Vec<_> = ids
        .iter()
        .map(|&id| wait_record(&redis, &prefix, id))
        .collect();
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let mut ends = Ends {
        streaming: running(&mut clients),
        ..Ends::default()
    };
    assert!(ends.streaming > 0, "no client was streaming at the kill");
    redis.restart();
    ends.keys_missing = ids
        .iter()
        .filter(|&&id| stored_record(&redis, &prefix, id).is_none())
        .count();
    let deadline = Instant::now() + Duration::from_secs(40);
    for (client, record) in clients.iter_mut().zip(&records) {
        let out = client.wait_until(deadline);
        if out.code == Some(0) {
            assert_verified(&out, record);
            ends.verified += 1;
            continue;
        }
        let result = out.json()["result"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            result.contains("NotFound"),
            "a client failed otherwise than NOT_FOUND:\n{out}"
        );
        if result.contains("lost by the session store") {
            ends.lost += 1;
        } else if result.contains("forgotten") {
            ends.forgotten += 1;
        } else {
            panic!("NOT_FOUND without saying the session was lost or forgotten:\n{out}");
        }
    }
    eprintln!(
        "redis restart ({label}): {} of {CLIENTS} clients streaming at the kill; {} session keys \
         gone after the restart; clients: {} verified, {} told the store lost the session, {} told \
         it was forgotten; {:?}",
        ends.streaming,
        ends.keys_missing,
        ends.verified,
        ends.lost,
        ends.forgotten,
        started.elapsed()
    );
    Some(ends)
}

/// With `appendfsync always`, Redis writes and fsyncs every write before
/// acknowledging it: a restart loses no session.
#[test]
fn redis_killed_and_restarted_with_aof_always_loses_nothing() {
    let Some(ends) = redis_restart_mid_stream(&["--appendfsync", "always"], "always") else {
        return;
    };
    assert_eq!(ends.keys_missing, 0, "{ends:?}");
    assert_eq!(ends.verified, 20, "{ends:?}");
}

/// With `appendfsync everysec` (Redis's default), a killed process loses
/// what it acknowledged but had not yet written to the file (a machine
/// crash would lose up to a second more); measured and printed.
#[test]
fn redis_killed_and_restarted_with_aof_everysec() {
    let Some(ends) = redis_restart_mid_stream(&["--appendfsync", "everysec"], "everysec") else {
        return;
    };
    assert_eq!(ends.verified + ends.lost + ends.forgotten, 20, "{ends:?}");
}

/// Without persistence a restart loses every session: each client still
/// streaming is told NOT_FOUND, lost or forgotten, and none gets a new
/// session or another sequence.
#[test]
fn redis_restarted_without_persistence_tells_clients_their_session_is_lost() {
    let Some(ends) = redis_restart_mid_stream(&["--appendonly", "no"], "none") else {
        return;
    };
    assert_eq!(ends.keys_missing, 20, "{ends:?}");
    assert_eq!(ends.lost + ends.forgotten, ends.streaming, "{ends:?}");
    assert_eq!(ends.verified, 20 - ends.streaming, "{ends:?}");
}
