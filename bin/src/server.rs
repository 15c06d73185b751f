//! `station server` and `station stats`.

use std::net::SocketAddr;
use std::time::Duration;

use station_core::server::Config as SessionConfig;
use station_net::proto::station_admin_client::StationAdminClient;
use station_net::proto::StatsRequest;
use station_net::store::{MemoryStore, RedisStore, SessionStore, StoreConfig};
use station_net::{serve_tcp, ServerConfig, Station};
use tonic::transport::{Identity, ServerTlsConfig};

use crate::{exit, ServerArgs, StatsArgs};

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> u8 {
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if let Some(addr) = args.metrics_addr {
        let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install();
        if let Err(e) = installed {
            eprintln!("error: cannot serve metrics on {addr}: {e}");
            return exit::SERVER_ERROR;
        }
        station_net::metrics::describe();
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let addr = SocketAddr::new(args.host, args.port);
    // The server bounds every store operation itself; the store's own
    // bound is a backstop that must not cut those deadlines short.
    let store_cfg = StoreConfig {
        batch_linger: args.redis_batch_linger,
        operation_timeout: cfg.store_timeout.max(cfg.attach_timeout) + Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let result = if args.store == "memory" {
        let store = MemoryStore::new(store_cfg);
        let sweeper = store.spawn_sweeper(Duration::from_secs(1));
        let result = serve(cfg, store, addr).await;
        sweeper.abort();
        result
    } else if ["redis", "valkey"]
        .iter()
        .any(|s| args.store.starts_with(s))
    {
        match RedisStore::connect(&args.store, &args.redis_prefix, store_cfg).await {
            Ok(store) => serve(cfg, store, addr).await,
            Err(e) => Err(e.to_string()),
        }
    } else {
        eprintln!(
            "error: --store must be `memory` or a Redis URL (redis://, rediss://, \
             redis+cluster://), not {:?}",
            args.store
        );
        return exit::USAGE;
    };
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::SERVER_ERROR
        }
    }
}

fn tls(args: &ServerArgs) -> Result<Option<ServerTlsConfig>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}

pub(crate) fn config(args: &ServerArgs) -> Result<ServerConfig, String> {
    let mut session = SessionConfig::new(args.interval, args.session_ttl);
    if let Some(silence) = args.silence_timeout {
        session.silence_timeout = silence;
    }
    if let Some(lease) = args.lease {
        session.lease = lease;
    }
    session.window = args.window;
    let max_streams = max_streams(args.max_streams, std::env::var("STATION_MAX_SESSIONS").ok())?;
    if max_streams == 0 {
        return Err("--max-streams must be at least 1".into());
    }
    let cfg = ServerConfig {
        session,
        max_streams,
        fail_every: args.fail_every,
        go_offline_for: args.go_offline_for,
        tick_slack: args.tick_slack,
        max_message_size: args.max_message_size,
        max_concurrent_streams: args.max_streams_per_connection,
        keepalive_interval: args.keepalive,
        keepalive_timeout: args.keepalive,
        tls: tls(args)?,
        retry_after: args.retry_after,
        shed_when_late: Some(args.shed_when_late).filter(|d| !d.is_zero()),
        shed_when_busy: (args.shed_when_busy > 0).then(|| f64::from(args.shed_when_busy) / 100.0),
        drain_period: args.drain_period.unwrap_or(args.interval.saturating_mul(3)),
        health_every: args.health_every,
        ..ServerConfig::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

async fn serve<S: SessionStore>(
    cfg: ServerConfig,
    store: S,
    addr: SocketAddr,
) -> Result<(), String> {
    let kind = store.kind();
    let gauge_store = store.clone();
    // Live sessions are a store-wide fact; sample them for the gauge. On
    // Redis a sample scans every key (paced, so it takes a while at
    // scale): 15 s apart, a common scrape interval, never back to back.
    let sampler = tokio::spawn(async move {
        loop {
            let sample = gauge_store.live_sessions().await;
            if let Err(e) = &sample {
                tracing::debug!("cannot count live sessions: {e}");
            }
            station_net::metrics::set_live_sessions(sample.as_ref().copied());
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
    });
    let interval = cfg.session.interval;
    let ttl = cfg.session.ttl;
    let station = Station::new(cfg, store);
    let result = serve_tcp(
        station,
        addr,
        |bound| {
            // On stdout, so scripts and tests can read the port picked for 0.
            println!("listening on {bound}");
            tracing::info!(%bound, store = kind, ?interval, ?ttl, "serving");
        },
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string());
    sampler.abort();
    result
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        biased;
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
    // A second signal stops at once: streams end with their connections,
    // and their sessions expire on their own after the TTL.
    tokio::spawn(async {
        let second = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).ok();
                let term = async {
                    match term.as_mut() {
                        Some(t) => drop(t.recv().await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        };
        second.await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(i32::from(crate::exit::SERVER_ERROR));
    });
}

/// `station stats`: prints a server's counters as JSON.
pub async fn stats(args: StatsArgs) -> u8 {
    let url = crate::url("http", &args.host, args.port);
    let result = async {
        let mut admin = StationAdminClient::connect(url.clone())
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        admin
            .stats(StatsRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{url}: {}", s.message()))
    }
    .await;
    match result {
        Ok(s) => {
            // `live_sessions` is null when the store could not be asked,
            // and `live_sessions_error` says why; the rest still stands.
            let error = (!s.live_sessions_error.is_empty()).then_some(&s.live_sessions_error);
            if let Some(e) = error {
                eprintln!("warning: live sessions unknown: {e}");
            }
            let json = serde_json::json!({
                "live_sessions": s.live_sessions,
                "live_sessions_error": error,
                "attached_streams": s.attached_streams,
                "numbers_sent": s.numbers_sent,
                "sessions_opened": s.sessions_opened,
                "sessions_resumed": s.sessions_resumed,
                "sessions_completed": s.sessions_completed,
                "streams_rejected": s.streams_rejected,
            });
            println!("{json}");
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::UNREACHABLE
        }
    }
}

/// `--max-streams`, else `STATION_MAX_STREAMS`, else the variable's old
/// name `STATION_MAX_SESSIONS` (a deployment that still sets it must not
/// fall back to the default unnoticed), else the default.
fn max_streams(given: Option<usize>, old_env: Option<String>) -> Result<usize, String> {
    if let Some(n) = given {
        return Ok(n);
    }
    match old_env {
        Some(v) => {
            let n = v
                .trim()
                .parse()
                .map_err(|_| format!("STATION_MAX_SESSIONS={v:?} is not a number of streams"))?;
            tracing::warn!(
                "STATION_MAX_SESSIONS is the old name of STATION_MAX_STREAMS; it is read \
                 since STATION_MAX_STREAMS is not set"
            );
            Ok(n)
        }
        None => Ok(ServerConfig::default().max_streams),
    }
}

#[cfg(test)]
mod tests {
    use super::max_streams;

    #[test]
    fn the_old_environment_variable_is_read_when_the_new_one_is_not_set() {
        // The flag or STATION_MAX_STREAMS (clap gives both as `given`) wins.
        assert_eq!(max_streams(Some(5), Some("9".into())), Ok(5));
        assert_eq!(max_streams(None, Some(" 9 ".into())), Ok(9));
        assert_eq!(max_streams(None, None), Ok(250_000));
        let bad = max_streams(None, Some("many".into())).unwrap_err();
        assert_eq!(
            bad,
            r#"STATION_MAX_SESSIONS="many" is not a number of streams"#
        );
    }
}
