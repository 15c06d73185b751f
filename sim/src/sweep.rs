//! Seed sweeps: run a scenario builder over many seeds, check every run,
//! and print how to replay a failure.
//!
//! Environment:
//!
//! - `SIM_SEED=<n>`: run only seed `n`, print its report and trace hash
//!   (and its whole trace with `SIM_TRACE=1`).
//! - `SIM_SEEDS=<count>`: sweep seeds `1..=count` instead of the test's
//!   default.
//! - `SIM_THREADS=<n>`: worker threads per sweep (default: the machine's
//!   parallelism). Seeds are independent, so the result is the same.
//! - `SIM_TIMELINE=<path.html>`: write the [timeline](mod@crate::timeline) of
//!   the `SIM_SEED` run, or of a sweep's first failing seed, there. A
//!   failing sweep writes the timelines of the seeds it shows even without
//!   it (under `target/sim-timelines/`), and names the files.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use station_core::client::Verdict;

use crate::invariants::{check, Violation};
use crate::run::run;
use crate::scenario::Scenario;
use crate::timeline;

/// The test binary that holds the scenarios (`sim/tests/scenarios/`).
pub const TEST_BINARY: &str = "scenarios";

/// Trace lines shown for a failing run.
const TRACE_TAIL: usize = 60;

/// The outcome of one seed.
#[derive(Debug)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// Hash of the run's event trace.
    pub trace_hash: u64,
    /// Simulated time the run took.
    pub sim_time: Duration,
    /// Broken invariants (empty: passed).
    pub violations: Vec<Violation>,
    /// The scenario, report and trace tail, kept for failures only.
    pub details: Option<String>,
    /// Each client's verdict, by kind (`Verified`, `Expired`, ...).
    pub verdicts: Vec<&'static str>,
    /// Reconnections of all clients.
    pub reconnects: u64,
    /// The fault kinds the run exercised ([`Scenario::fault_kinds`]).
    pub fault_kinds: Vec<&'static str>,
    /// The run's [timeline](mod@crate::timeline) page, kept for a `SIM_SEED`
    /// run when `SIM_TIMELINE` is set (others are drawn again when needed:
    /// see [`write_timeline`]).
    pub timeline: Option<String>,
    /// For a scenario that states a [`Recovery`](crate::Recovery): how
    /// the run came out of its trigger.
    pub recovery: Option<crate::recovery::Recovered>,
}

/// The path of a test inside the scenarios binary, from the calling
/// module's `module_path!()` (use the [`test_path!`](crate::test_path)
/// macro).
pub fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, inner)) => format!("{inner}::{name}"),
        None => name.to_string(),
    }
}

/// The one-line command that replays `seed` of `test`.
pub fn replay_command(test: &str, seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test -p sim --test {TEST_BINARY} -- {test} --exact --nocapture")
}

/// The seeds to run: `SIM_SEED`, else `SIM_SEEDS` seeds (default
/// `default`) from `SIM_FIRST_SEED` (default 1), so a long sweep can be
/// split or continued.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SIM_SEED") {
        return vec![seed];
    }
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1);
    (first..first + env_u64("SIM_SEEDS").unwrap_or(default)).collect()
}

/// `SIM_SEED`, else `1..=default` (ignoring `SIM_SEEDS`: for tests whose
/// cost grows faster than their seeds, such as the replay tests).
pub fn seed_or_first(default: u64) -> Vec<u64> {
    match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=default).collect(),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// Runs and checks `build(seed)` for every seed, on worker threads.
pub fn run_seeds(seeds: &[u64], build: &(dyn Fn(u64) -> Scenario + Sync)) -> Vec<SeedResult> {
    let threads = env_u64("SIM_THREADS")
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(seeds.len()));
    let progress = Progress::new(seeds.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { return };
                let result = run_one(seed, build);
                progress.done(&result);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(result);
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|r| r.seed);
    results
}

fn run_one(seed: u64, build: &(dyn Fn(u64) -> Scenario + Sync)) -> SeedResult {
    let scenario = build(seed);
    let report = run(&scenario, seed);
    let violations = check(&scenario, &report);
    let single = std::env::var_os("SIM_SEED").is_some();
    let details = (!violations.is_empty() || single).then(|| {
        let mut text = format!("{scenario}{report}");
        let show_all = std::env::var_os("SIM_TRACE").is_some_and(|v| v != "0");
        let skip = if show_all {
            0
        } else {
            report.trace.len().saturating_sub(TRACE_TAIL)
        };
        if skip > 0 {
            text += &format!(
                "  trace (last {TRACE_TAIL} of {} lines; SIM_TRACE=1 shows all):\n",
                report.trace.len()
            );
        } else {
            text += &format!("  trace ({} lines):\n", report.trace.len());
        }
        for line in &report.trace[skip..] {
            text += &format!("    {line}\n");
        }
        text
    });
    let timeline = (single && timeline::requested())
        .then(|| timeline::render(&scenario, &report, &violations));
    let verdicts = report
        .clients
        .iter()
        .map(|c| match &c.outcome {
            None => "unfinished",
            Some(o) => verdict_kind(&o.verdict),
        })
        .collect();
    let reconnects = report
        .clients
        .iter()
        .filter_map(|c| c.outcome.as_ref())
        .map(|o| u64::from(o.reconnects))
        .sum();
    let recovery = scenario.recovery.as_ref().map(|r| r.measure(&report));
    SeedResult {
        recovery,
        fault_kinds: scenario.fault_kinds().into_iter().collect(),
        seed,
        trace_hash: report.trace_hash,
        sim_time: report.ended_at,
        violations,
        details,
        verdicts,
        reconnects,
        timeline,
    }
}

/// Writes the timeline of `result`'s run to [`timeline::path_for`] and
/// returns a line naming the file. The page kept in `result` if any, else
/// the seed is run again (runs replay exactly; the line says so if this one
/// did not).
pub fn write_timeline(
    test: &str,
    result: &SeedResult,
    build: &(dyn Fn(u64) -> Scenario + Sync),
) -> String {
    let mut note = String::new();
    let html = match &result.timeline {
        Some(html) => html.clone(),
        None => {
            let scenario = build(result.seed);
            let report = run(&scenario, result.seed);
            if report.trace_hash != result.trace_hash {
                note = format!(
                    " (NOTE: drawn from a second run whose trace hash {:016x} differs from {:016x})",
                    report.trace_hash, result.trace_hash
                );
            }
            timeline::render(&scenario, &report, &check(&scenario, &report))
        }
    };
    let path = timeline::path_for(test, result.seed);
    let path = std::path::absolute(&path).unwrap_or(path);
    match timeline::write(&path, &html) {
        Ok(()) => format!("timeline: {}{note}", path.display()),
        Err(e) => format!("timeline: could not write {}: {e}", path.display()),
    }
}

fn verdict_kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Verified => "verified",
        Verdict::ChecksumMismatch => "checksum-mismatch",
        Verdict::Expired(_) => "expired",
        Verdict::LikelyExpired(_) => "likely-expired",
        Verdict::Rejected { .. } => "rejected",
        Verdict::ProtocolError(_) => "protocol-error",
        Verdict::Unreachable(_) => "unreachable",
    }
}

/// Sweeps `test` (see [`test_path!`](crate::test_path)) over its seeds
/// and panics, with the replay command, if any run breaks an invariant.
/// Prints seeds per second when done.
pub fn sweep(test: &str, default_seeds: u64, build: impl Fn(u64) -> Scenario + Sync) {
    let seeds = seeds(default_seeds);
    let started = Instant::now();
    let results = run_seeds(&seeds, &build);
    let failed: Vec<&SeedResult> = results
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    summary(test, &results, failed.len(), started.elapsed());
    if seeds.len() == 1 {
        if let Some(details) = &results[0].details {
            println!("{details}");
        }
        println!(
            "seed {} trace hash {:016x}",
            results[0].seed, results[0].trace_hash
        );
        if failed.is_empty() && timeline::requested() {
            println!("{}", write_timeline(test, &results[0], &build));
        }
    }
    if failed.is_empty() {
        if seeds.len() > 1 && timeline::requested() {
            // Straight to stderr, past the test harness's capture.
            let _ = std::io::stderr().write_all(
                b"SIM_TIMELINE: no timeline written: it draws one seed (SIM_SEED) or a failure\n",
            );
        }
        return;
    }
    let mut text = String::new();
    let mut picture = String::new();
    for (i, r) in failed.iter().take(3).enumerate() {
        text += &format!("\n=== {test} seed {} FAILED ===\n", r.seed);
        for v in &r.violations {
            text += &format!("  {v}\n");
        }
        if let Some(details) = &r.details {
            text += details;
        }
        text += &format!("  replay: {}\n", replay_command(test, r.seed));
        // SIM_TIMELINE names one file: the first failure's.
        if i == 0 || !timeline::requested() {
            let line = write_timeline(test, r, &build);
            text += &format!("  {line}\n");
            if i == 0 {
                picture = format!("its {line}\n");
            }
        }
    }
    let first = failed[0].seed;
    let seeds_failed: Vec<u64> = failed.iter().map(|r| r.seed).collect();
    panic!(
        "{text}\n{} of {} seeds failed: {seeds_failed:?}\nreplay the first with:\n  {}\n{picture}",
        failed.len(),
        results.len(),
        replay_command(test, first)
    );
}

/// One line per sweep, straight to stderr so the test harness does not
/// capture it.
fn summary(test: &str, results: &[SeedResult], failed: usize, took: Duration) {
    let secs = took.as_secs_f64().max(1e-9);
    let simulated: Duration = results.iter().map(|r| r.sim_time).sum();
    let mut verdicts = std::collections::BTreeMap::new();
    for v in results.iter().flat_map(|r| &r.verdicts) {
        *verdicts.entry(*v).or_insert(0u64) += 1;
    }
    let verdicts: Vec<String> = verdicts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    let reconnects: u64 = results.iter().map(|r| r.reconnects).sum();
    let mut kinds = std::collections::BTreeMap::new();
    for k in results.iter().flat_map(|r| &r.fault_kinds) {
        *kinds.entry(*k).or_insert(0u64) += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let kinds = if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.join(", ")
    };
    let mut line = format!(
        "sim {test}: {} seed(s) in {:.1}s = {:.1} seeds/s ({:.0} s simulated; clients: {}; {reconnects} reconnects), {failed} failed; seeds per fault kind: {kinds}\n",
        results.len(),
        secs,
        results.len() as f64 / secs,
        simulated.as_secs_f64(),
        verdicts.join(", "),
    );
    let recoveries: Vec<(u64, crate::recovery::Recovered)> = results
        .iter()
        .filter_map(|r| r.recovery.map(|o| (r.seed, o)))
        .collect();
    if let Some((seed, slowest)) = recoveries.iter().max_by_key(|(_, o)| o.recovery_time) {
        // Allowed: to the settling point, counted from the trigger's end.
        let allowed = |o: &crate::recovery::Recovered| o.settled.saturating_sub(o.ended);
        let margin = |o: &crate::recovery::Recovered| {
            allowed(o).as_secs_f64() - o.recovery_time.as_secs_f64()
        };
        let (tightest, tight_seed) = recoveries
            .iter()
            .map(|(seed, o)| (margin(o), *seed))
            .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a });
        let factor = |o: &crate::recovery::Recovered| {
            o.emptied.map_or(f64::INFINITY, |at| {
                (at - o.ended).as_secs_f64() / o.drain.as_secs_f64().max(1e-9)
            })
        };
        let (worst_drain, drain_seed) = recoveries
            .iter()
            .map(|(seed, o)| (factor(o), *seed))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        line += &format!(
            "  recovery: last disturbance at most {:?} after the trigger ended (seed {seed}, allowed {:?}); the least time to spare {tightest:.3}s (seed {tight_seed}); the store's queue emptied within {worst_drain:.2} times the work it held then (seed {drain_seed})\n",
            slowest.recovery_time,
            allowed(slowest),
        );
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The test path of `name` in the calling module of the scenarios binary.
#[macro_export]
macro_rules! test_path {
    ($name:expr) => {
        $crate::sweep::test_path(module_path!(), $name)
    };
}

/// A progress line on stderr every [`PROGRESS_EVERY`] during long sweeps
/// (`SIM_PROGRESS=0` turns it off).
struct Progress {
    total: usize,
    started: Instant,
    state: Mutex<(usize, usize, Instant)>,
    on: bool,
}

/// How often a long sweep reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    fn new(total: usize) -> Self {
        let now = Instant::now();
        let on = total >= 1000 && std::env::var_os("SIM_PROGRESS").is_none_or(|v| v != "0");
        Progress {
            total,
            started: now,
            state: Mutex::new((0, 0, now)),
            on,
        }
    }

    fn done(&self, result: &SeedResult) {
        if !self.on {
            return;
        }
        let failed = !result.violations.is_empty();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        state.1 += usize::from(failed);
        if failed {
            let first = result.violations.first().map(ToString::to_string);
            let line = format!(
                "  ... seed {} FAILED: {}\n",
                result.seed,
                first.unwrap_or_default()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if state.2.elapsed() < PROGRESS_EVERY && state.0 < self.total {
            return;
        }
        state.2 = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "  ... {}/{} seeds, {} failed, {:.1} seeds/s, {:.0}s so far\n",
            state.0,
            self.total,
            state.1,
            state.0 as f64 / secs,
            secs
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}
