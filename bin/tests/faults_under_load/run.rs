//! How a case runs: a private Redis, `station server` and `station load`
//! as child processes; the fault put in place once the load is steady;
//! and the reference run without a fault.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use station_net::testkit::RedisServer;

use crate::common::{dead_port, metrics, poll, station_in, Proc, Server, SHORT};
use crate::outcome::Outcome;
use crate::{CONNECTIONS, COUNT, INTERVAL, RAMP_UP_RATE, RUN_LIMIT, SESSIONS, STEADY};

/// One case at a time (module docs).
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Unix time now, in seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A private Redis without persistence (a Redis under load that writes an
/// append-only file measures the disk too).
pub(crate) fn redis() -> Option<RedisServer> {
    RedisServer::start_with(&["--appendonly", "no"])
}

/// `station server` on `redis` (or the memory store), on `host` in
/// `netns` if given, with its defaults but the interval, and its metrics
/// on a free loopback port (in its own namespace: only reachable from
/// there).
pub(crate) fn server(
    redis: Option<&RedisServer>,
    host: IpAddr,
    netns: Option<&str>,
) -> (Server, SocketAddr) {
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, dead_port()));
    let (host_arg, metrics_arg) = (host.to_string(), metrics.to_string());
    let mut args = vec![
        "server",
        "--host",
        &host_arg,
        "--port",
        "0",
        "--interval",
        INTERVAL,
        "--metrics-addr",
        &metrics_arg,
    ];
    let url = redis.map(RedisServer::url);
    if let Some(url) = &url {
        args.extend(["--store", url, "--redis-prefix", "faults:"]);
    }
    let mut cmd = station_in(netns, &args);
    cmd.env("RUST_LOG", "info");
    (Server::spawn_in("server", cmd, host, netns), metrics)
}

/// The store operations `server` has done so far (`None` before the first:
/// the exporter lists the counter only then).
fn store_ops(metrics: SocketAddr) -> Option<u64> {
    let page = metrics::scrape(metrics)?;
    metrics::sum(&page, "station_store_latency_seconds_count").map(|n| n as u64)
}

/// Runs the load against `server` (from namespace `load_ns`, if given);
/// once every session is attached and [`STEADY`] has passed, puts a fault
/// in place with `put` for `hold`, then removes it (drops it: a fault
/// undoes itself on drop, also when a test panics); waits for the load to
/// end.
pub(crate) fn under_load<F>(
    case: &str,
    mut server: Server,
    metrics: SocketAddr,
    load_ns: Option<&str>,
    fault: Option<(Duration, &dyn Fn() -> F)>,
) -> Outcome {
    let endpoint = server.endpoint();
    let pid = server.proc.id().to_string();
    let (sessions, count) = (SESSIONS.to_string(), COUNT.to_string());
    let (ramp, connections) = (RAMP_UP_RATE.to_string(), CONNECTIONS.to_string());
    let duration = format!("{}s", RUN_LIMIT.as_secs());
    let args = [
        "load",
        "--endpoint",
        &endpoint,
        "--sessions",
        &sessions,
        "--count",
        &count,
        "--ramp-up-rate",
        &ramp,
        "--connections",
        &connections,
        "--duration",
        &duration,
        "--server-pid",
        &pid,
        "--json",
    ];
    let mut load = Proc::spawn(format!("load ({case})"), station_in(load_ns, args));
    let all = format!("{SESSIONS} attached streams");
    poll(
        Duration::from_secs(30),
        Duration::from_millis(250),
        &all,
        || {
            if let Some(done) = load.try_exited() {
                panic!("the load ended before every session attached:\n{done}");
            }
            let stats = server.stats();
            match stats["attached_streams"].as_u64() {
                Some(n) if n >= SESSIONS as u64 => Ok(()),
                _ => Err(stats.to_string()),
            }
        },
    );
    let attached = unix_now();
    std::thread::sleep(STEADY);
    let window = fault.map(|(hold, put)| {
        let start = unix_now();
        let fault = put();
        std::thread::sleep(hold);
        drop(fault);
        (start, unix_now())
    });
    let out = load.finish(RUN_LIMIT + SHORT);
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("the load printed no JSON report ({e}):\n{out}"));
    // A session's record goes once its final acknowledgement is in: wait
    // (bounded) for the deletes to be counted.
    poll(SHORT, Duration::from_millis(200), "no live session", || {
        let stats = server.stats();
        if stats["live_sessions"] == 0 {
            Ok(())
        } else {
            Err(stats.to_string())
        }
    });
    // The metrics of a server in another namespace are out of reach.
    let store_ops = server.netns.is_none().then(|| store_ops(metrics)).flatten();
    server.proc.kill();
    let outcome = Outcome {
        case: case.to_string(),
        report,
        attached,
        fault: window,
        server: server.proc.finish(SHORT),
        store_ops,
    };
    outcome.print();
    outcome
}

/// The same load on Redis without a fault, run once for every test that
/// needs it; `None` (said loudly) without Redis.
pub(crate) fn reference() -> Option<&'static Outcome> {
    static REFERENCE: OnceLock<Option<Outcome>> = OnceLock::new();
    let reference = REFERENCE.get_or_init(|| {
        let redis = redis()?;
        let (server, metrics) = server(Some(&redis), loopback(), None);
        Some(under_load::<()>(
            "no fault, on Redis",
            server,
            metrics,
            None,
            None,
        ))
    });
    reference.as_ref()
}

pub(crate) fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
