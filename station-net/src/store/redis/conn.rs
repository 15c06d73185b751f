//! Connections to Redis, one type over the two kinds of deployment:
//!
//! - [`Conn::Single`]: one Redis, or a primary and its replicas given as
//!   several endpoints. Commands go to the endpoint believed to be the
//!   primary; a `READONLY` answer (it was demoted in a failover) or, with
//!   several endpoints, a lost connection makes the store ask every
//!   endpoint for its `ROLE` and move to the one that is the primary.
//! - [`Conn::Cluster`]: Redis Cluster, through redis-rs's async cluster
//!   client, which routes each command by its first key's hash slot,
//!   follows `MOVED` and `ASK`, and retries `TRYAGAIN` during a slot
//!   migration. When a primary dies, that client (redis-rs 1.8) keeps
//!   reconnecting to the dead address and never learns that a replica took
//!   over (measured: requests to its slots timed out until restart, while a
//!   new connection worked at once). So a request that times out or loses
//!   its connection replaces the whole cluster connection (at most once a
//!   second) and is sent once more on the new one, which reads the
//!   current topology from the configured nodes.
//!
//! Both run the same scripts: a batch's keys share a hash slot in the
//! cluster's key layout, so a script never spans nodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, RedisError, RedisResult, ScriptInvocation, ServerErrorKind,
    TlsCertificates, Value,
};

use super::error::RedisStoreError;

/// Each attempt to open a TCP connection to Redis gives up after this.
pub(super) const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// A command sent on an open connection to a cluster node, or a `ROLE`
/// question, gives up after this. Commands to one Redis wait for the
/// store's operation timeout instead (see [`Conn::open`]).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A cluster request, redirections and retries included, gives up after
/// this: under half the store's bound on an operation, so that a request
/// that failed this way can be sent once more on a new connection.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_millis(900);
/// A cluster connection is replaced at most this often.
const CLUSTER_RENEWAL_INTERVAL: Duration = Duration::from_secs(1);

/// What a `--store` URL names.
#[derive(Debug)]
pub(super) enum Target {
    /// One Redis; with several endpoints, a primary and its replicas.
    Single(Vec<ConnectionInfo>),
    /// A Redis Cluster, reached through any of these nodes at first.
    Cluster(Vec<ConnectionInfo>),
}

/// The URL schemes of a cluster, and the plain scheme of each of its nodes.
const CLUSTER_SCHEMES: [(&str, &str); 4] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
    ("valkey+cluster://", "valkey://"),
    ("valkeys+cluster://", "valkeys://"),
];

impl Target {
    /// Parses the store URL:
    ///
    /// - `redis://host:port/db` (or `rediss://` for TLS): one Redis, with
    ///   redis-rs's URL syntax (`redis://user:password@host:port/db`,
    ///   `?protocol=resp3`, `#insecure` for TLS without verification);
    /// - `redis://a:6379,redis://b:6379`: a primary and its replicas,
    ///   whole URLs separated by commas, tried in that order;
    /// - `redis+cluster://h1:p1,h2:p2/?…` (or `rediss+cluster://`): a
    ///   cluster; the user, password, path, query and fragment apply to
    ///   every node, as if each were `redis://user:password@hN:pN/?…`.
    ///
    /// Errors never repeat the URL (it may hold a password).
    pub(super) fn parse(url: &str) -> Result<Target, RedisStoreError> {
        for (scheme, node_scheme) in CLUSTER_SCHEMES {
            if let Some(rest) = url.strip_prefix(scheme) {
                return cluster_nodes(node_scheme, rest).map(Target::Cluster);
            }
        }
        if url.trim().is_empty() {
            return Err(RedisStoreError::EmptyUrl);
        }
        let endpoints = url
            .split(',')
            .enumerate()
            .map(|(i, part)| {
                part.into_connection_info()
                    .map_err(|source| RedisStoreError::BadEndpoint {
                        endpoint: i + 1,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target::Single(endpoints))
    }
}

/// The nodes of `redis+cluster://[user:password@]h1:p1,h2:p2[/db][?q][#f]`,
/// given what follows the scheme.
fn cluster_nodes(node_scheme: &str, rest: &str) -> Result<Vec<ConnectionInfo>, RedisStoreError> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if hosts.is_empty() {
        return Err(RedisStoreError::NoClusterNode);
    }
    hosts
        .split(',')
        .enumerate()
        .map(|(i, host)| {
            if host.is_empty() {
                return Err(RedisStoreError::EmptyClusterNode { node: i + 1 });
            }
            format!("{node_scheme}{userinfo}{host}{tail}")
                .into_connection_info()
                .map_err(|source| RedisStoreError::BadClusterNode {
                    node: i + 1,
                    source,
                })
        })
        .collect()
}

/// A connection to Redis of either kind. Cheap to clone: clones share the
/// underlying connections.
#[derive(Clone)]
pub(super) enum Conn {
    Single(Single),
    Cluster(Cluster),
}

impl Conn {
    /// Opens a connection to `target` without waiting for Redis: it
    /// connects on first use, and fails only on bad settings. `root_ca` is
    /// a PEM bundle trusted for `rediss://` instead of the system's roots.
    ///
    /// With one Redis, a command waits up to `response_timeout` for its
    /// reply: a slow Redis answers late, and a reply given up on is work
    /// Redis does anyway. (A timed-out reply does not close the
    /// connection, so this does not slow the detection of a dead one.) A
    /// cluster keeps [`RESPONSE_TIMEOUT`]: there a timeout is how a failed
    /// primary is noticed and the connection replaced.
    pub(super) fn open(
        target: Target,
        root_ca: Option<&[u8]>,
        response_timeout: Duration,
    ) -> Result<Conn, RedisStoreError> {
        let certs = || TlsCertificates {
            client_tls: None,
            root_cert: root_ca.map(<[u8]>::to_vec),
        };
        match target {
            Target::Single(endpoints) => {
                let clients = endpoints
                    .into_iter()
                    .map(|info| match root_ca {
                        Some(_) => Client::build_with_tls(info, certs()),
                        None => Client::open(info),
                    })
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(RedisStoreError::Settings)?;
                Single::new(clients.into(), response_timeout).map(Conn::Single)
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes)
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
                    // Retries cover redirections, TRYAGAIN during a slot
                    // migration and a failover's few seconds; the overall
                    // timeout above bounds them all.
                    .retries(12)
                    .min_retry_wait(20)
                    .max_retry_wait(250)
                    .retry_wait_formula(10, 2);
                if root_ca.is_some() {
                    builder = builder.certs(certs());
                }
                let client = builder.build().map_err(RedisStoreError::ClusterSettings)?;
                Ok(Conn::Cluster(Cluster::new(client)))
            }
        }
    }

    /// Runs a script. With one Redis, retries once where the first attempt
    /// certainly did not run (it could not connect, or reached a replica);
    /// the cluster client does its own retrying. A retry is safe either way:
    /// every script is idempotent (a write applied before is `done` again,
    /// never a false conflict).
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Conn::Single(single) => single.invoke(inv).await,
            Conn::Cluster(cluster) => cluster.invoke(inv).await,
        }
    }

    /// Sends a command: with one Redis, to it; in a cluster, where the
    /// cluster client routes it by its key (or its kind).
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(single) => cmd.query_async(&mut single.current().1).await,
            Conn::Cluster(cluster) => cmd.query_async(&mut cluster.connection()).await,
        }
    }
}

/// Sends `cmd` to the primary that serves hash slot `slot` in a cluster.
pub(super) async fn query_slot_primary<T: FromRedisValue>(
    cluster: &ClusterConnection,
    slot: u16,
    cmd: Cmd,
) -> RedisResult<T> {
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )));
    let value = cluster.clone().route_command(cmd, route).await?;
    Ok(redis::from_redis_value(value)?)
}

/// A Redis Cluster: the cluster client, and the connection in use.
#[derive(Clone)]
pub(super) struct Cluster {
    client: Arc<ClusterClient>,
    current: Arc<Mutex<CurrentCluster>>,
}

struct CurrentCluster {
    epoch: u64,
    since: tokio::time::Instant,
    conn: ClusterConnection,
}

impl Cluster {
    fn new(client: ClusterClient) -> Cluster {
        let conn = client.get_pending_async_connection_with_config(ClusterConfig::new());
        Cluster {
            client: Arc::new(client),
            current: Arc::new(Mutex::new(CurrentCluster {
                epoch: 0,
                since: tokio::time::Instant::now(),
                conn,
            })),
        }
    }

    /// The connection in use.
    pub(super) fn connection(&self) -> ClusterConnection {
        self.current().1
    }

    fn current(&self) -> (u64, ClusterConnection) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (current.epoch, current.conn.clone())
    }

    /// `invoke_async` sends EVALSHA; on NOSCRIPT (a node that restarted, or
    /// joined after the scripts were loaded) it sends SCRIPT LOAD, which
    /// the cluster client sends to every node, and EVALSHA again.
    async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        let (epoch, mut conn) = self.current();
        let first = inv.invoke_async::<T>(&mut conn).await;
        match &first {
            Err(e) if stuck(e) && self.renew(epoch, e) => {
                inv.invoke_async(&mut self.connection()).await
            }
            _ => first,
        }
    }

    /// Replaces the connection of epoch `seen` with a new one, unless it
    /// was replaced since or less than [`CLUSTER_RENEWAL_INTERVAL`] ago.
    /// Returns whether the connection now in use is newer than `seen`.
    fn renew(&self, seen: u64, why: &RedisError) -> bool {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.epoch != seen {
            return true;
        }
        if current.since.elapsed() < CLUSTER_RENEWAL_INTERVAL {
            return false;
        }
        tracing::warn!("redis cluster: {why}; reconnecting to read the current topology");
        current.conn = self
            .client
            .get_pending_async_connection_with_config(ClusterConfig::new());
        current.epoch += 1;
        current.since = tokio::time::Instant::now();
        true
    }
}

/// Whether a cluster request failed in a way a new connection may cure.
fn stuck(e: &RedisError) -> bool {
    e.is_timeout()
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == ErrorKind::ClusterConnectionNotFound
}

/// One Redis, or a primary and its replicas.
#[derive(Clone)]
pub(super) struct Single {
    /// The endpoints, in the order given.
    clients: Arc<[Client]>,
    /// How long a command waits for its reply.
    response_timeout: Duration,
    /// The endpoint in use and its connection manager, with an epoch that
    /// grows each time they are replaced.
    current: Arc<Mutex<Current>>,
    /// Held while looking for the primary, so that many failing operations
    /// start one search.
    search: Arc<tokio::sync::Mutex<()>>,
}

struct Current {
    epoch: u64,
    index: usize,
    conn: ConnectionManager,
}

/// A connection manager for `client`, connecting lazily.
fn manager(client: &Client, response_timeout: Duration) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
        // Few, quick reconnection attempts per failure: the caller's own
        // retries (the client's) are the long-term ones, and each
        // operation must end within the store's bound.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    client.get_connection_manager_lazy(config)
}

/// Whether Redis refused a write because it is a replica now.
fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || e.code() == Some("READONLY")
        || e.to_string().contains("READONLY")
}

impl Single {
    fn new(clients: Arc<[Client]>, response_timeout: Duration) -> Result<Single, RedisStoreError> {
        let first = clients.first().ok_or(RedisStoreError::NoEndpoint)?;
        let conn = manager(first, response_timeout).map_err(RedisStoreError::Settings)?;
        Ok(Single {
            clients,
            response_timeout,
            current: Arc::new(Mutex::new(Current {
                epoch: 0,
                index: 0,
                conn,
            })),
            search: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The epoch and connection in use.
    fn current(&self) -> (u64, ConnectionManager) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (current.epoch, current.conn.clone())
    }

    async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        let (epoch, mut conn) = self.current();
        let first = inv.invoke_async::<T>(&mut conn).await;
        let Err(e) = &first else { return first };
        if is_read_only(e) || (self.clients.len() > 1 && lost_connection(e)) {
            tracing::warn!(
                "redis: {e}; looking for the primary among {} endpoint(s)",
                self.clients.len()
            );
            self.find_primary(epoch).await;
            let (_, mut conn) = self.current();
            inv.invoke_async(&mut conn).await
        } else if e.is_connection_refusal() {
            // The manager has started a new connection attempt; a Redis
            // that just came back answers this one.
            inv.invoke_async(&mut conn).await
        } else {
            first
        }
    }

    /// Asks every endpoint for its `ROLE` (concurrently, each bounded) and
    /// moves to the first, in the order given, that is a primary. Does
    /// nothing if another search replaced the connection since `seen`, or
    /// if no endpoint is a primary now (the next failure searches again).
    async fn find_primary(&self, seen: u64) {
        let _searching = self.search.lock().await;
        if self.current().0 != seen {
            return;
        }
        let mut asking = tokio::task::JoinSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let client = client.clone();
            asking.spawn(async move { (i, role(client).await) });
        }
        let mut roles = vec![Err("not asked".to_string()); self.clients.len()];
        // Each question is bounded in time, so this loop is too.
        while let Some(answer) = asking.join_next().await {
            if let Ok((i, r)) = answer {
                roles[i] = r;
            }
        }
        let Some(index) = roles
            .iter()
            .position(|r| matches!(r, Ok(r) if r == "master"))
        else {
            let seen: Vec<String> = roles
                .iter()
                .map(|r| match r {
                    Ok(role) => role.clone(),
                    Err(e) => format!("unreachable ({e})"),
                })
                .collect();
            tracing::warn!("redis: no endpoint is a primary now; roles: {seen:?}");
            return;
        };
        match manager(&self.clients[index], self.response_timeout) {
            Ok(conn) => {
                let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
                if current.index != index {
                    tracing::warn!(
                        "redis: endpoint {} is the primary now (was endpoint {})",
                        index + 1,
                        current.index + 1
                    );
                }
                current.epoch += 1;
                current.index = index;
                current.conn = conn;
            }
            Err(e) => tracing::warn!("redis: cannot connect to the new primary: {e}"),
        }
    }
}

/// Whether the connection failed (rather than Redis answering an error).
fn lost_connection(e: &RedisError) -> bool {
    e.is_connection_refusal() || e.is_connection_dropped() || (e.is_io_error() && !e.is_timeout())
}

/// The role (`master`, `slave`, `sentinel`) of the Redis behind `client`,
/// asked on a fresh connection, bounded in time.
async fn role(client: Client) -> Result<String, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let ask = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let reply: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        let first = reply
            .into_iter()
            .next()
            .ok_or_else(|| RedisError::from((ErrorKind::Parse, "empty ROLE reply")))?;
        Ok::<String, RedisError>(redis::from_redis_value(first)?)
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT + RESPONSE_TIMEOUT, ask).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}
