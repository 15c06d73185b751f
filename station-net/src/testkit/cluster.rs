//! [`RedisCluster`]: six private `redis-server`s joined into a Redis
//! Cluster, with the faults tests inflict on it (a slot migrated, a manual
//! failover, a primary killed).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::resp::{command, command_bytes, text, Reply};
use super::{find_on_path, free_port, log_tail, missing, RedisServer};

/// How long [`RedisCluster`] waits for the cluster to form or heal.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// A private Redis Cluster for one test: six `redis-server
/// --cluster-enabled yes` processes on free loopback ports, each in its own
/// data directory, joined by `redis-cli --cluster create …
/// --cluster-replicas 1` into three primaries with one replica each. Every
/// process is killed on drop.
///
/// Nodes time out after 1.5 s (`cluster-node-timeout 1500`), so a killed
/// primary's replica takes over within a few seconds, and a cluster with a
/// primary down still serves the other primaries' slots
/// (`cluster-require-full-coverage no`). Nodes keep an append-only file,
/// like [`RedisServer`].
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    cli: PathBuf,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// A primary (else a replica).
    pub primary: bool,
    /// Marked failing (`fail` or `fail?`) by the node asked.
    pub failing: bool,
    /// The node's primary, for a replica.
    pub primary_id: Option<String>,
    /// Slots served, as inclusive ranges.
    pub slots: Vec<(u16, u16)>,
    /// The configuration epoch the node asked knows it by.
    pub config_epoch: u64,
}

impl ClusterNode {
    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits (bounded) until every
    /// node reports `cluster_state:ok` and every replica is in sync.
    ///
    /// Returns `None`, after a loud message, when `redis-server` or
    /// `redis-cli` is missing; panics instead when `CI` is set. Panics if the
    /// cluster does not form within 30 s.
    pub fn start() -> Option<RedisCluster> {
        let cli = find_on_path("redis-cli").or_else(|| {
            missing("redis-cli")?;
            None
        })?;
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(RedisServer::launch(false, &|_, _| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    "1500".into(),
                    // A free port of its own for the cluster bus, rather
                    // than port + 10000, which may be taken or too large.
                    "--cluster-port".into(),
                    free_port().to_string(),
                    "--cluster-require-full-coverage".into(),
                    "no".into(),
                ]
            })?);
        }
        let cluster = RedisCluster { nodes, cli };
        cluster.create();
        cluster.wait_healthy(CLUSTER_TIMEOUT);
        Some(cluster)
    }

    /// `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`,
    /// bounded; panics with its output if it fails.
    fn create(&self) {
        let out = self.nodes[0].dir.path().join("cluster-create.log");
        let file = std::fs::File::create(&out).expect("create log file");
        let mut cmd = Command::new(&self.cli);
        cmd.args(["--cluster", "create"]);
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone file"))
            .stderr(file);
        let mut child = cmd.spawn().expect("run redis-cli");
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait on redis-cli") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli --cluster create did not finish within {CLUSTER_TIMEOUT:?}:\n{}",
                    log_tail(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "redis-cli --cluster create failed ({status}):\n{}",
            log_tail(&out)
        );
    }

    /// `redis+cluster://127.0.0.1:p1,…` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node listening on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// The cluster as a running node sees it (`CLUSTER NODES`): the first
    /// running node whose view can be read.
    pub fn topology(&self) -> Result<Vec<ClusterNode>, String> {
        let mut last = String::from("no node is running");
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match text(node.port, &["CLUSTER", "NODES"]) {
                Ok(view) => return parse_nodes(&view),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The primary serving `slot` now, as the cluster sees it.
    pub fn primary_of(&self, slot: u16) -> Result<ClusterNode, String> {
        self.topology()?
            .into_iter()
            .find(|n| n.primary && !n.failing && n.serves(slot))
            .ok_or_else(|| format!("no healthy primary serves slot {slot}"))
    }

    /// Waits until every running node says `cluster_state:ok`, agrees on
    /// which primary serves every slot and on every running node's
    /// configuration epoch and the current epoch, no running node is marked
    /// failing, and every running replica's link to its primary is up.
    /// Panics with what was last seen after `limit`.
    ///
    /// The epochs matter to what comes next: a failover started while one
    /// node has not yet heard of an epoch bump (a migrated slot's target
    /// bumps its own without consensus) is decided on different epochs by
    /// different nodes.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let problem = self.health_problem();
            let Some(problem) = problem else { return };
            if Instant::now() >= deadline {
                panic!(
                    "the cluster was not healthy within {limit:?}: {problem}\n{}",
                    self.views()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What is wrong with the cluster now, if anything.
    fn health_problem(&self) -> Option<String> {
        let mut views = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let info = match text(node.port, &["CLUSTER", "INFO"]) {
                Ok(info) => info,
                Err(e) => return Some(e),
            };
            if !info.contains("cluster_state:ok") {
                return Some(format!("node {} is not cluster_state:ok", node.port));
            }
            let current_epoch = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("cluster_current_epoch:"))
                .unwrap_or("?")
                .to_string();
            let view = match text(node.port, &["CLUSTER", "NODES"]).and_then(|v| parse_nodes(&v)) {
                Ok(view) => view,
                Err(e) => return Some(e),
            };
            let Some(me) = view.iter().find(|n| n.port == node.port) else {
                return Some(format!("node {} is not in its own view", node.port));
            };
            if !me.primary {
                let replication = match text(node.port, &["INFO", "replication"]) {
                    Ok(r) => r,
                    Err(e) => return Some(e),
                };
                if !replication.contains("master_link_status:up") {
                    return Some(format!("replica {} is not in sync", node.port));
                }
            }
            let running: Vec<u16> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.port)
                .collect();
            if let Some(bad) = view.iter().find(|n| running.contains(&n.port) && n.failing) {
                return Some(format!("node {} sees {} failing", node.port, bad.port));
            }
            let mut owners: Vec<(u16, u16, u16)> = view
                .iter()
                .filter(|n| n.primary && !n.failing)
                .flat_map(|n| n.slots.iter().map(move |&(lo, hi)| (lo, hi, n.port)))
                .collect();
            owners.sort_unstable();
            let mut epochs: Vec<(u16, u64)> = view
                .iter()
                .filter(|n| running.contains(&n.port))
                .map(|n| (n.port, n.config_epoch))
                .collect();
            epochs.sort_unstable();
            views.push((node.port, owners, epochs, current_epoch));
        }
        let (first_port, first, first_epochs, first_current) = views.first()?;
        let covered: u32 = first
            .iter()
            .map(|&(lo, hi, _)| u32::from(hi - lo) + 1)
            .sum();
        if covered != 16384 {
            return Some(format!(
                "node {first_port} sees {covered} of 16384 slots served"
            ));
        }
        if let Some((port, other, ..)) = views.iter().find(|(_, v, ..)| v != first) {
            let only = |a: &[(u16, u16, u16)], b: &[(u16, u16, u16)]| {
                a.iter()
                    .filter(|r| !b.contains(r))
                    .map(|(lo, hi, by)| format!("{lo}-{hi}@{by}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return Some(format!(
                "nodes {first_port} and {port} disagree on who serves which slots \
                 (only {first_port} sees [{}], only {port} sees [{}])",
                only(first, other),
                only(other, first)
            ));
        }
        if let Some((port, _, epochs, current)) = views
            .iter()
            .find(|(_, _, e, c)| e != first_epochs || c != first_current)
        {
            return Some(format!(
                "nodes {first_port} and {port} disagree on the epochs: current \
                 {first_current} and {current}, configuration {first_epochs:?} and {epochs:?}"
            ));
        }
        None
    }

    /// Every running node's `CLUSTER NODES`, for a failure's message.
    fn views(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| {
                let view = text(n.port, &["CLUSTER", "NODES"]).unwrap_or_else(|e| e);
                format!("CLUSTER NODES on {}:\n{view}", n.port)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Moves `slot` to the primary on `to_port`, keys and all, as
    /// `redis-cli --cluster reshard` does: `CLUSTER SETSLOT … IMPORTING` on
    /// the target, `MIGRATING` on the source, `MIGRATE` the keys in
    /// batches, then `SETSLOT … NODE` on both and every other primary.
    /// While it runs, clients are redirected with `ASK`. Returns how many
    /// keys moved. Panics on failure (bounded: at most 10 s of batches).
    pub fn migrate_slot(&self, slot: u16, to_port: u16) -> usize {
        let nodes = self.topology().expect("cluster topology");
        let source = nodes
            .iter()
            .find(|n| n.primary && n.serves(slot))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
            .clone();
        let target = nodes
            .iter()
            .find(|n| n.port == to_port && n.primary)
            .unwrap_or_else(|| panic!("no primary on port {to_port}"))
            .clone();
        if source.port == target.port {
            return 0;
        }
        let slot_s = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let reply = text(port, args).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(reply, "OK", "{} on port {port}", args.join(" "));
        };
        ok(
            target.port,
            &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &source.id],
        );
        ok(
            source.port,
            &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &target.id],
        );
        let mut moved = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys = match command(source.port, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]) {
                Ok(Reply::Array(keys)) => keys
                    .into_iter()
                    .filter_map(|k| match k {
                        Reply::Bulk(k) => Some(k),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
                other => panic!("GETKEYSINSLOT {slot}: {other:?}"),
            };
            if keys.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} still had keys after 10 s of MIGRATE"
            );
            let port = to_port.to_string();
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                b"127.0.0.1",
                port.as_bytes(),
                b"",
                b"0",
                b"5000",
                b"REPLACE",
                b"KEYS",
            ];
            args.extend(keys.iter().map(Vec::as_slice));
            match command_bytes(source.port, &args) {
                Ok(Reply::Status(s)) if s == "OK" || s == "NOKEY" => moved += keys.len(),
                other => panic!("MIGRATE of slot {slot}: {other:?}"),
            }
        }
        let node_args = ["CLUSTER", "SETSLOT", &slot_s, "NODE", &target.id];
        ok(target.port, &node_args);
        ok(source.port, &node_args);
        for other in nodes
            .iter()
            .filter(|n| n.primary && !n.failing && n.port != source.port && n.port != target.port)
        {
            // Best effort, as redis-cli does: the epoch spreads it anyway.
            let _ = command(other.port, &node_args);
        }
        moved
    }

    /// A manual failover: `CLUSTER FAILOVER` on the replica on
    /// `replica_port`, which becomes the primary of its primary's slots
    /// once it has caught up. Waits (bounded) until it is a primary and the
    /// cluster is healthy.
    ///
    /// Not for a primary a slot was just migrated to: Redis 7.0 has (twice
    /// in CI, once in 12 local runs) left such a slot claimed by no node in
    /// the new primary's own view, or by the demoted one in others', and
    /// the views never converged.
    pub fn manual_failover(&self, replica_port: u16) {
        let reply = text(replica_port, &["CLUSTER", "FAILOVER"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply, "OK", "CLUSTER FAILOVER on {replica_port}");
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let role = match command(replica_port, &["ROLE"]) {
                Ok(Reply::Array(parts)) => parts.first().and_then(Reply::text),
                _ => None,
            };
            if role.as_deref() == Some("master") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{replica_port} did not become a primary within {CLUSTER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_healthy(CLUSTER_TIMEOUT);
    }

    /// Kills the node on `port` (`SIGKILL`, like a crash) and, if it was a
    /// primary, waits (bounded) until its replica has taken over its slots
    /// and the cluster is healthy again without it. Returns the port of the
    /// replica that took over, if it was a primary.
    pub fn kill_and_fail_over(&mut self, port: u16) -> Option<u16> {
        let before = self.topology().expect("cluster topology");
        let killed = before
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
            .clone();
        self.node_mut(port).stop();
        if !killed.primary {
            return None;
        }
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let heir = loop {
            let heir = self.topology().ok().and_then(|now| {
                let slot = killed.slots.first()?.0;
                now.into_iter()
                    .find(|n| n.primary && !n.failing && n.port != port && n.serves(slot))
            });
            if let Some(heir) = heir {
                break heir.port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over from the killed primary {port} within {CLUSTER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.wait_healthy_without(port, CLUSTER_TIMEOUT);
        Some(heir)
    }

    /// As [`wait_healthy`](Self::wait_healthy), but tolerating that the
    /// nodes see the stopped node on `gone` as failing.
    fn wait_healthy_without(&self, gone: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self.health_problem() {
                None => return,
                Some(p) if Instant::now() >= deadline => panic!(
                    "the cluster did not heal within {limit:?} after {gone} died: {p}\n{}",
                    self.views()
                ),
                Some(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Parses `CLUSTER NODES`.
fn parse_nodes(view: &str) -> Result<Vec<ClusterNode>, String> {
    view.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("unreadable CLUSTER NODES line {line:?}");
            if f.len() < 8 {
                return Err(bad());
            }
            // ip:port@busport[,hostname]
            let port = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let mut slots = Vec::new();
            for range in &f[8..] {
                if range.starts_with('[') {
                    continue; // a slot being imported or migrated
                }
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                slots.push((
                    lo.parse().map_err(|_| bad())?,
                    hi.parse().map_err(|_| bad())?,
                ));
            }
            Ok(ClusterNode {
                id: f[0].to_string(),
                port,
                primary: flags.contains(&"master"),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                primary_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
                config_epoch: f[6].parse().map_err(|_| bad())?,
            })
        })
        .collect()
}
