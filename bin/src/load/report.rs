//! The report of a load run, as text for people and JSON for
//! `bench/summarize.py` and `bench/run.sh`. The words are defined in
//! [`super::session`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::tally::{mean, percentiles, percentiles_ms, ProcStats, Tally};
use super::timeline::{self, SecondTally};

/// The report.
pub struct LoadReport {
    /// Sessions asked for (`--sessions`).
    pub sessions: usize,
    /// Of which started; the rest the ramp had not reached when
    /// `--duration` ended.
    pub started: usize,
    pub completed: usize,
    /// Started sessions that ended unverified.
    pub failed: usize,
    /// Started sessions still running when `--duration` ended.
    pub unfinished: usize,
    pub admitted: usize,
    pub failed_after_admission: usize,
    /// Of which still running when `--duration` ended.
    pub admitted_unfinished: usize,
    pub refused_at_door: usize,
    /// Never admitted nor refused, some `Open` held back by the throttle.
    pub held_back_only: usize,
    /// `Open` attempts per completed session: mean, p99, max.
    pub opens_per_completed: [f64; 3],
    /// `Open`s sent by every session, admitted or not.
    pub opens_sent: u64,
    /// `Open`s the open throttle held back (never sent).
    pub opens_held_back: u64,
    pub numbers: u64,
    pub session_seconds: f64,
    pub reconnects: u64,
    pub silent_drops: u64,
    pub attach_timeouts: u64,
    pub exhausted: u64,
    /// Retries the process's retry budget deferred.
    pub retries_throttled: u64,
    pub stream_ends: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub interval: Option<Duration>,
    pub lateness_ms: [f64; 3],
    pub stall_ms: [f64; 3],
    pub first_number_ms: [f64; 3],
    pub server: Option<(ProcStats, ProcStats)>,
    /// CPU seconds the load itself spent (all its processes): on one
    /// machine, what the server did not get.
    pub load_cpu_seconds: f64,
    pub failures: Vec<String>,
    /// Second by second: see [`super::timeline`].
    pub timeline: BTreeMap<u64, SecondTally>,
}

impl LoadReport {
    /// The report of a merged tally; `server` is the server's figures
    /// before and after, if its pid was given.
    pub fn new(tally: Tally, server: Option<(ProcStats, ProcStats)>) -> Self {
        let [_, p99, max] = percentiles(&tally.opens_per_completed);
        LoadReport {
            sessions: tally.offered,
            started: tally.started,
            completed: tally.completed,
            failed: tally.finished - tally.completed,
            unfinished: tally.started - tally.finished,
            admitted: tally.admitted,
            failed_after_admission: tally.failed_after_admission,
            admitted_unfinished: tally.admitted_unfinished,
            refused_at_door: tally.refused_at_door,
            held_back_only: tally.held_back_only,
            opens_per_completed: [mean(&tally.opens_per_completed), p99, max],
            opens_sent: tally.opens_sent,
            opens_held_back: tally.opens_held_back,
            numbers: tally.numbers,
            session_seconds: tally.session_seconds,
            reconnects: tally.reconnects,
            silent_drops: tally.silent_drops,
            attach_timeouts: tally.attach_timeouts,
            exhausted: tally.exhausted,
            retries_throttled: tally.retries_throttled,
            elapsed: tally.elapsed,
            interval: tally.interval,
            lateness_ms: percentiles_ms(&tally.lateness),
            stall_ms: percentiles_ms(&tally.stall),
            first_number_ms: percentiles_ms(&tally.first_number),
            server,
            load_cpu_seconds: tally.cpu_seconds,
            stream_ends: tally.stream_ends,
            failures: tally.failures,
            timeline: tally.timeline,
        }
    }

    /// Whether every session asked for completed: the exit status.
    pub fn succeeded(&self) -> bool {
        self.completed == self.sessions
    }

    pub fn never_started(&self) -> usize {
        self.sessions - self.started
    }

    /// Started, never admitted, never refused at the door and never held
    /// back: no server answered (unreachable, timeouts, other errors).
    pub fn never_admitted_otherwise(&self) -> usize {
        self.started - self.admitted - self.refused_at_door - self.held_back_only
    }

    /// `Open`s sent in all for each completed session; `None` when none
    /// completed.
    fn opens_sent_per_completed(&self) -> Option<f64> {
        (self.completed > 0).then(|| self.opens_sent as f64 / self.completed as f64)
    }

    fn numbers_per_second(&self) -> f64 {
        self.numbers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn server_cpu_seconds(&self) -> Option<f64> {
        self.server
            .map(|(idle, end)| end.cpu_seconds - idle.cpu_seconds)
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "sessions:        {} ({} completed, {} failed, {} unfinished, {} never started)\n\
             admission:       {} admitted ({} failed after admission, {} of them still running at the end), \
             {} refused at the door, \
             {} held back by this process only, \
             {} never admitted otherwise\n\
             opens:           per completed session mean {:.2}  p99 {:.0}  max {:.0}; \
             {} sent in all ({} per completed session), {} held back by the open throttle\n\
             elapsed:         {:.2} s\n\
             numbers:         {} ({:.0}/s), {:.0} session-seconds\n\
             reconnects:      {} ({} silent streams dropped, {} attach timeouts, {} RESOURCE_EXHAUSTED)\n\
             lateness ms:     p50 {:.2}  p99 {:.2}  max {:.2}  (on each session's first schedule)\n",
            self.sessions,
            self.completed,
            self.failed,
            self.unfinished,
            self.never_started(),
            self.admitted,
            self.failed_after_admission,
            self.admitted_unfinished,
            self.refused_at_door,
            self.held_back_only,
            self.never_admitted_otherwise(),
            self.opens_per_completed[0],
            self.opens_per_completed[1],
            self.opens_per_completed[2],
            self.opens_sent,
            self.opens_sent_per_completed()
                .map_or_else(|| "–".to_string(), |r| format!("{r:.2}")),
            self.opens_held_back,
            self.elapsed.as_secs_f64(),
            self.numbers,
            self.numbers_per_second(),
            self.session_seconds,
            self.reconnects,
            self.silent_drops,
            self.attach_timeouts,
            self.exhausted,
            self.lateness_ms[0],
            self.lateness_ms[1],
            self.lateness_ms[2],
        );
        out += &format!(
            "retries throttled by the retry budget: {}\n",
            self.retries_throttled
        );
        if let Some(interval) = self.interval.filter(|i| !i.is_zero()) {
            let ms = interval.as_secs_f64() * 1000.0;
            out += &format!(
                "lateness/interval: p50 {:.2}%  p99 {:.2}%  max {:.2}%\n",
                100.0 * self.lateness_ms[0] / ms,
                100.0 * self.lateness_ms[1] / ms,
                100.0 * self.lateness_ms[2] / ms
            );
        }
        out += &format!(
            "stall ms:        p50 {:.2}  p99 {:.2}  max {:.2}  (per completed session: finish minus scheduled finish)\n\
             first number ms: p50 {:.2}  p99 {:.2}  max {:.2}\n\
             load cpu:        {:.2} s\n",
            self.stall_ms[0],
            self.stall_ms[1],
            self.stall_ms[2],
            self.first_number_ms[0],
            self.first_number_ms[1],
            self.first_number_ms[2],
            self.load_cpu_seconds
        );
        if let (Some((idle, end)), Some(cpu)) = (self.server, self.server_cpu_seconds()) {
            let per_session =
                end.peak_rss.saturating_sub(idle.rss) as f64 / self.started.max(1) as f64;
            out += &format!(
                "server cpu:      {:.2} s ({:.1} µs per session-second)\n\
                 server rss:      idle {:.1} MiB, peak {:.1} MiB, {:.0} B/session above idle\n",
                cpu,
                cpu * 1e6 / self.session_seconds.max(1e-9),
                idle.rss as f64 / 1048576.0,
                end.peak_rss as f64 / 1048576.0,
                per_session
            );
        }
        for f in self.failures.iter().take(5) {
            out += &format!("failure:         {f}\n");
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let server = self.server.map(|(idle, end)| {
            serde_json::json!({
                "cpu_seconds": end.cpu_seconds - idle.cpu_seconds,
                "idle_rss_bytes": idle.rss,
                "peak_rss_bytes": end.peak_rss,
                "rss_bytes_per_session_above_idle":
                    end.peak_rss.saturating_sub(idle.rss) as f64 / self.started.max(1) as f64,
            })
        });
        let p = |v: [f64; 3]| serde_json::json!({"p50": v[0], "p99": v[1], "max": v[2]});
        serde_json::json!({
            "sessions": self.sessions,
            "started": self.started,
            "never_started": self.never_started(),
            "completed": self.completed,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "admitted": self.admitted,
            "failed_after_admission": self.failed_after_admission,
            "admitted_unfinished": self.admitted_unfinished,
            "refused_at_door": self.refused_at_door,
            "held_back_only": self.held_back_only,
            "never_admitted_otherwise": self.never_admitted_otherwise(),
            "opens_per_completed_session": {
                "mean": self.opens_per_completed[0],
                "p99": self.opens_per_completed[1],
                "max": self.opens_per_completed[2],
            },
            "opens_sent": self.opens_sent,
            "opens_sent_per_completed_session": self.opens_sent_per_completed(),
            "opens_held_back": self.opens_held_back,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "numbers": self.numbers,
            "numbers_per_second": self.numbers_per_second(),
            "session_seconds": self.session_seconds,
            "reconnects": self.reconnects,
            "silent_drops": self.silent_drops,
            "attach_timeouts": self.attach_timeouts,
            "resource_exhausted": self.exhausted,
            "retries_throttled": self.retries_throttled,
            "stream_ends": self.stream_ends,
            "interval_ms": self.interval.map(|i| i.as_secs_f64() * 1000.0),
            "lateness_ms": p(self.lateness_ms),
            "stall_ms": p(self.stall_ms),
            "first_number_ms": p(self.first_number_ms),
            "server": server,
            "load_cpu_seconds": self.load_cpu_seconds,
            "failures": self.failures.iter().take(20).collect::<Vec<_>>(),
            "timeline": timeline::rows(&self.timeline),
        })
    }
}
