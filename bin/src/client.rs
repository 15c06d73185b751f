//! `station client`: receive a sequence, verify it, print the verdict.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use station_core::client::{Client, Config as ClientConfig, Snapshot};
use station_core::ClientId;
use station_net::client::{ChannelOptions, DriverOptions, Endpoints, Event};

use crate::{exit, report, state_file, ClientArgs};

/// Progress is written to the state file at most this often (and always on
/// attach and at the end): a crash loses at most this much progress, which
/// the server simply sends again.
const SAVE_EVERY: Duration = Duration::from_millis(100);

pub async fn run(args: ClientArgs) -> u8 {
    let mut targets = args.endpoint.clone();
    if let Some(port) = args.port {
        let scheme = if args.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        targets.insert(0, format!("{scheme}://{}:{}", args.host, port));
    }
    let tls_ca = match &args.tls_ca {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return exit::USAGE;
            }
        },
        None => None,
    };
    let opts = ChannelOptions {
        tls_ca,
        ..ChannelOptions::default()
    };
    let endpoints = match Endpoints::tcp(&targets, &opts) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let client = match make_client(&args, cfg) {
        Ok(c) => c,
        Err((code, message)) => {
            eprintln!("error: {message}");
            return code;
        }
    };
    let count = client.count();
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| progress_bar(u64::from(count)));
    let mut last_save: Option<Instant> = None;
    let mut save_error: Option<String> = None;
    let mut next_log = count / 10;
    let observe = |event: Event<'_>, client: &Client| {
        match &event {
            Event::Connecting { endpoint, .. } => {
                tracing::debug!(endpoint, "connecting");
            }
            Event::Attached {
                endpoint,
                next_index,
                ..
            } => {
                tracing::info!(endpoint, next_index, count, "attached");
            }
            Event::Number { .. } => {}
            Event::Failed { endpoint, end } => {
                let msg = format!("stream to {endpoint} ended: {end:?}");
                match &bar {
                    Some(bar) => bar.println(msg),
                    None => tracing::warn!("{msg}"),
                }
            }
            Event::Silent { endpoint } => {
                tracing::warn!(endpoint, "stream went silent; reconnecting")
            }
        }
        let received = client.received();
        match &bar {
            Some(bar) => {
                bar.set_position(u64::from(received));
                bar.set_message(format!("reconnects: {}", client.reconnects()));
            }
            None if received >= next_log && received < count => {
                tracing::info!(
                    received,
                    count,
                    reconnects = client.reconnects(),
                    "progress"
                );
                next_log = received + (count / 10).max(1);
            }
            None => {}
        }
        if let Some(path) = &args.state_file {
            let due = !matches!(event, Event::Number { .. })
                || received == count
                || last_save.is_none_or(|t| t.elapsed() >= SAVE_EVERY);
            if due {
                last_save = Some(Instant::now());
                if let Err(e) = state_file::save(path, &client.snapshot()) {
                    save_error.get_or_insert(e.to_string());
                }
            }
        }
    };
    let outcome =
        station_net::client::run(&endpoints, &DriverOptions::default(), client, observe).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(e) = save_error {
        eprintln!("warning: could not keep the state file: {e}");
    }
    if let (Some(path), true) = (&args.state_file, outcome.verdict.is_success()) {
        if let Err(e) = state_file::remove(path) {
            eprintln!("warning: {e}");
        }
    }
    if args.json {
        println!("{}", report::json(&outcome));
    } else {
        println!("{}", report::text(&outcome));
    }
    report::exit_code(&outcome)
}

/// The client machine's settings from the flags, refused (naming the rule)
/// if they cannot work.
pub(crate) fn config(args: &ClientArgs) -> Result<ClientConfig, String> {
    let cfg = ClientConfig {
        give_up_without_progress: args.give_up_after,
        ..ClientConfig::default()
    };
    cfg.validate()
        .map_err(|e| format!("--give-up-after {:?}: {e}", args.give_up_after))?;
    Ok(cfg)
}

/// A new client, or one restored from the state file.
fn make_client(args: &ClientArgs, cfg: ClientConfig) -> Result<Client, (u8, String)> {
    let now = tokio::time::Instant::now().into_std();
    let seed = rand::random::<u64>();
    let saved = match &args.state_file {
        Some(path) => state_file::load(path).map_err(|e| (exit::STATE_FILE, e.to_string()))?,
        None => None,
    };
    if let Some(saved) = saved {
        check_matches(
            args,
            &saved,
            args.state_file.as_deref().expect("loaded from it"),
        )?;
        tracing::info!(client = %saved.client_id, next_index = saved.next_index, "resuming from state file");
        return Client::restore(now, cfg, saved, seed)
            .map_err(|e| (exit::STATE_FILE, e.to_string()));
    }
    let client_id = args
        .client_id
        .map(ClientId)
        .unwrap_or_else(|| ClientId(uuid::Uuid::new_v4()));
    let count = args
        .count
        .unwrap_or_else(|| rand::random_range(1..=station_core::sequence::MAX_COUNT));
    let client =
        Client::new(now, cfg, client_id, count, seed).map_err(|e| (exit::USAGE, e.to_string()))?;
    if let Some(path) = &args.state_file {
        // Persist the id and open nonce before the first Open, so a crash
        // before `Attached` can repeat the same Open.
        state_file::save(path, &client.snapshot())
            .map_err(|e| (exit::STATE_FILE, e.to_string()))?;
    }
    Ok(client)
}

/// A state file must belong to the session the flags describe.
fn check_matches(args: &ClientArgs, saved: &Snapshot, path: &Path) -> Result<(), (u8, String)> {
    let mismatch = |what: String| {
        Err((
            exit::STATE_FILE,
            format!(
                "state file {} belongs to another session: {what}; remove it or drop the flag",
                path.display()
            ),
        ))
    };
    if let Some(count) = args.count {
        if count != saved.count {
            return mismatch(format!("it has count {}, --count is {count}", saved.count));
        }
    }
    if let Some(id) = args.client_id {
        if id != saved.client_id.0 {
            return mismatch(format!(
                "it has client id {}, --client-id is {id}",
                saved.client_id
            ));
        }
    }
    Ok(())
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta} {msg}",
    )
    .expect("template is valid");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
