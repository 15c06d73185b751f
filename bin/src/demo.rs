//! `station demo`: a real server and a few clients in one process, talking
//! gRPC over loopback, with faults injected, so one command shows resumption
//! working end to end.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use station_core::client::{Client, Config as ClientConfig};
use station_core::server::Config as SessionConfig;
use station_core::ClientId;
use station_net::client::{ChannelOptions, DriverOptions, Endpoints, Event};
use station_net::store::MemoryStore;
use station_net::{serve_tcp, ServerConfig, Station};
use tokio::sync::oneshot;

use crate::{exit, outcome, DemoArgs};

pub async fn run(args: DemoArgs) -> u8 {
    let started = Instant::now();
    let cfg = ServerConfig {
        session: SessionConfig::new(args.interval, Duration::from_secs(30)),
        fail_every: NonZeroU64::new(args.fail_every),
        go_offline_for: args.interval * 3,
        ..ServerConfig::default()
    };
    let store = MemoryStore::default();
    let station = Station::new(cfg, store);
    let (bound_tx, bound_rx) = oneshot::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_tcp(
        station.clone(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        |addr| {
            let _ = bound_tx.send(addr);
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let addr = match bound_rx.await {
        Ok(addr) => addr,
        Err(_) => {
            let why = match server.await {
                Ok(Err(e)) => e.to_string(),
                _ => "server task ended".into(),
            };
            eprintln!("error: cannot start the demo server: {why}");
            return exit::SERVER_ERROR;
        }
    };
    // Two lines, each within an 80-column terminal.
    println!(
        "demo server on {addr}: one number every {}",
        humantime::format_duration(args.interval)
    );
    println!(
        "faults: every {}th number fails, then the server refuses requests for {}",
        args.fail_every,
        humantime::format_duration(args.interval * 3)
    );
    let endpoints = match Endpoints::tcp(&[addr.to_string()], &ChannelOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::SERVER_ERROR;
        }
    };
    let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
    let _logs_above_bars = bars.as_ref().map(crate::bars::activate);
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let count = rand::random_range(40..=120);
        let id = ClientId(uuid::Uuid::new_v4());
        let now = tokio::time::Instant::now().into_std();
        let client = Client::new(now, ClientConfig::default(), id, count, rand::random())
            .expect("count is in range");
        let bar = bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(u64::from(count)));
            bar.set_style(
                // A fixed width, so the clients' bars line up whatever
                // their counts and messages.
                ProgressStyle::with_template("client {prefix} {bar:50} {pos:>3}/{len:<3} {msg}")
                    .expect("template is valid"),
            );
            bar.set_prefix(format!("{}", i + 1));
            bar
        });
        let endpoints = endpoints.clone();
        tasks.push(tokio::spawn(async move {
            let observe = |event: Event<'_>, client: &Client| {
                if let Some(bar) = &bar {
                    bar.set_position(u64::from(client.received()));
                    bar.set_message(format!("reconnects: {}", client.reconnects()));
                } else if let Event::Failed { end, .. } = event {
                    eprintln!("client {}: stream ended: {end}; resuming", i + 1);
                }
            };
            let outcome =
                station_net::client::run(&endpoints, &DriverOptions::default(), client, observe)
                    .await;
            if let Some(bar) = bar {
                bar.finish_with_message(outcome::result_line(&outcome));
            }
            outcome
        }));
    }
    let mut all_ok = true;
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                eprintln!("error: a client task failed: {e}");
                all_ok = false;
            }
        }
    }
    println!();
    all_ok &= outcomes.iter().all(|o| o.verdict.is_success());
    print!("{}", outcome::outcomes_table(&outcomes));
    let stats = Some(station.stats().await);
    let _ = stop_tx.send(());
    if let Ok(Err(e)) = server.await {
        eprintln!("error: server stopped with: {e}");
        all_ok = false;
    }
    if let Some(s) = stats {
        println!(
            "server: {} numbers sent, {} sessions completed, {} streams ended by faults or errors, \
             {} sessions left in the store",
            s.numbers_sent,
            s.sessions_completed,
            s.streams_rejected,
            s.live_sessions.map_or("?".into(), |n| n.to_string())
        );
        all_ok &= s.live_sessions == Some(0);
    }
    println!(
        "demo {} in {:.1}s",
        if all_ok { "PASSED" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if all_ok {
        exit::SUCCESS
    } else {
        exit::REJECTED
    }
}
