//! `station load`: many sessions against one or more servers, for
//! benchmarks.
//!
//! Opens `--sessions` sessions multiplexed over `--connections` HTTP/2
//! connections per endpoint (or one connection each,
//! `--connection-per-session`, spread over `--source-addresses`), session
//! `i` first on endpoint `i mod n`, verifies every checksum, and reports
//! what became of every session asked for (completed, failed after
//! admission, refused at the door, never admitted otherwise, or never
//! started), numbers per second and per session-second, how late each
//! number arrived against its session's first schedule, each completed
//! session's stall, the first-number latency, and — given the server's
//! pid — its CPU time and memory from `/proc`; the JSON report adds a
//! [`timeline`] of the run second by second. The words are defined in
//! [`session`]. Bounded in count and time.
//!
//! `--processes P` splits one run over P worker processes (this binary,
//! started again with `--worker K`): worker K runs sessions `i` with
//! `i % P == K` on the one global schedule, with its own descriptors and
//! runtime, and prints a [`Tally`] with its raw histograms. The parent
//! merges them, so percentiles are over every number of the run, not an
//! average of per-process percentiles.
//!
//! Layout: [`session`] runs a process's part and defines the words,
//! [`tally`] holds what is counted and merges it, [`timeline`] counts it
//! per second, [`report`] prints it.

mod report;
mod session;
mod tally;
#[cfg(test)]
mod tests;
mod timeline;

use std::net::Ipv4Addr;
use std::process::Stdio;

pub use report::LoadReport;
use tally::{proc_stats, Tally};

use crate::{exit, LoadArgs};

/// Which sessions a process runs: those with `i % of == index`.
#[derive(Clone, Copy, Debug)]
struct Part {
    index: usize,
    of: usize,
}

/// Whether an endpoint (`host:port`, optionally with a scheme) names an
/// IPv4 loopback address (or `localhost`).
fn is_ipv4_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs the load described by `args` and returns its report: in this
/// process, or split over `--processes` workers and merged.
pub async fn measure(args: &LoadArgs) -> Result<LoadReport, String> {
    validate(args)?;
    let idle = args.server_pid.and_then(proc_stats);
    let tally = if args.processes > 1 {
        run_workers(args).await?
    } else {
        session::measure_part(args, Part { index: 0, of: 1 }).await?
    };
    let end = args.server_pid.and_then(proc_stats);
    Ok(LoadReport::new(tally, idle.zip(end)))
}

fn validate(args: &LoadArgs) -> Result<(), String> {
    if args.endpoint.is_empty() {
        return Err("give at least one --endpoint".into());
    }
    if args.source_addresses > 1 {
        if let Some(e) = args.endpoint.iter().find(|e| !is_ipv4_loopback(e)) {
            return Err(format!(
                "--source-addresses binds 127.0.0.x, which reaches loopback servers only; \
                 {e} is not an IPv4 loopback address"
            ));
        }
    }
    Ok(())
}

/// Starts `--processes` copies of this binary with the same arguments and
/// `--worker K`, and merges what they print.
async fn run_workers(args: &LoadArgs) -> Result<Tally, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..args.processes {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(std::env::args_os().skip(1))
            .args(["--worker", &k.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start load worker {k}: {e}"))?;
        workers.spawn(async move { (k, child.wait_with_output().await) });
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let (k, output) = joined.map_err(|e| format!("a load worker task failed: {e}"))?;
        let output = output.map_err(|e| format!("load worker {k}: {e}"))?;
        let part: Tally = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("load worker {k} ({}) printed no tally: {e}", output.status))?;
        tally.merge(part);
    }
    Ok(tally)
}

/// `station load`.
pub async fn run(args: LoadArgs) -> u8 {
    if let Some(index) = args.worker {
        // A worker of `--processes`: its part, as a tally for the parent.
        let part = Part {
            index: usize::from(index),
            of: usize::from(args.processes),
        };
        return match session::measure_part(&args, part).await {
            Ok(tally) => {
                println!(
                    "{}",
                    serde_json::to_string(&tally).expect("a tally serializes")
                );
                exit::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::USAGE
            }
        };
    }
    match measure(&args).await {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.succeeded() {
                exit::SUCCESS
            } else {
                exit::REJECTED
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}
