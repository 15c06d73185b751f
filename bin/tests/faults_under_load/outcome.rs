//! What one run under load showed: the load's JSON report read back, its
//! per-second timeline, how soon the run was on time again after the
//! fault, and what is printed and asserted.

use std::time::Duration;

use crate::common::Finished;
use crate::{ON_TIME, RECOVERY_LIMIT, SESSIONS};

/// What one run under load showed.
pub(crate) struct Outcome {
    pub(crate) case: String,
    pub(crate) report: serde_json::Value,
    /// When every session was attached (Unix seconds).
    pub(crate) attached: f64,
    /// When the fault was put in place and removed.
    pub(crate) fault: Option<(f64, f64)>,
    pub(crate) server: Finished,
    /// The server's store operations over the run, if it was reachable.
    pub(crate) store_ops: Option<u64>,
}

/// One second of the load's timeline.
pub(crate) struct Second {
    pub(crate) unix: u64,
    pub(crate) numbers: u64,
    pub(crate) waiting: u64,
    pub(crate) reconnects: u64,
    pub(crate) stream_ends: u64,
    pub(crate) completed: u64,
    /// p99 lateness on the delivering stream's schedule, and on the
    /// session's first schedule, ms.
    pub(crate) stream_p99: f64,
    pub(crate) p99: f64,
}

impl Second {
    fn on_time(&self) -> bool {
        self.numbers > 0 && self.waiting == 0 && self.stream_p99 < ON_TIME
    }
}

impl Outcome {
    pub(crate) fn count(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key:?} in the load report: {}", self.report))
    }

    pub(crate) fn failed(&self) -> u64 {
        SESSIONS as u64 - self.count("completed")
    }

    fn reconnects_per_session(&self) -> f64 {
        self.count("reconnects") as f64 / SESSIONS as f64
    }

    pub(crate) fn timeline(&self) -> Vec<Second> {
        let rows = self.report["timeline"].as_array().expect("a timeline");
        rows.iter()
            .map(|r| {
                let n = |k: &str| r[k].as_u64().expect("a count");
                Second {
                    unix: n("unix_second"),
                    numbers: n("numbers"),
                    waiting: n("waiting"),
                    reconnects: n("reconnects"),
                    stream_ends: n("stream_ends"),
                    completed: n("completed"),
                    stream_p99: r["stream_lateness_ms"]["p99"].as_f64().expect("p99"),
                    p99: r["lateness_ms"]["p99"].as_f64().expect("p99"),
                }
            })
            .collect()
    }

    /// The first second in which a session completed: after it, fewer
    /// numbers arrive by design, so nothing later is judged.
    fn horizon(&self) -> u64 {
        let timeline = self.timeline();
        timeline
            .iter()
            .find(|s| s.completed > 0)
            .or(timeline.last())
            .map_or(0, |s| s.unix)
    }

    /// How many whole seconds from every session's attaching until the
    /// fault (without one, until sessions began to complete) were on
    /// time, and the late ones. On a shared machine other processes make
    /// a second late now and then; a machine that cannot carry the load
    /// makes most of them late, and then a fault's effect cannot be told
    /// apart: failure messages say so.
    fn before_fault(&self) -> String {
        let until = self.fault.map_or(self.horizon() as f64, |(start, _)| start);
        let seconds: Vec<Second> = self
            .timeline()
            .into_iter()
            .filter(|s| s.unix as f64 >= self.attached && (s.unix + 1) as f64 <= until)
            .collect();
        let late: Vec<String> = seconds
            .iter()
            .filter(|s| !s.on_time())
            .map(|s| {
                format!(
                    "{}: p99 {:.1} ms, {} waiting",
                    s.unix, s.stream_p99, s.waiting
                )
            })
            .collect();
        format!(
            "{} of {} whole seconds before the fault on time (late: {late:?})",
            seconds.len() - late.len(),
            seconds.len()
        )
    }

    /// Time from the fault's end to the start of the first second, wholly
    /// or partly after it, that was on time ([`Second::on_time`]); zero if
    /// the second the fault ended in already was. `Err` if none was before
    /// sessions began to complete.
    fn recovery(&self) -> Result<Duration, String> {
        let (_, end) = self.fault.expect("a run with a fault");
        let horizon = self.horizon();
        self.timeline()
            .iter()
            .filter(|s| (s.unix + 1) as f64 > end && s.unix < horizon)
            .find(|s| s.on_time())
            .map(|s| Duration::from_secs_f64((s.unix as f64 - end).max(0.0)))
            .ok_or_else(|| {
                format!("not on time again before sessions began to complete ({horizon})")
            })
    }

    /// Prints the figures and the timeline from a little before the fault
    /// to the horizon.
    pub(crate) fn print(&self) {
        let recovery = match self.fault.map(|_| self.recovery()) {
            Some(Ok(d)) => format!(
                "back on time {:.1} s after the fault's end",
                d.as_secs_f64()
            ),
            Some(Err(e)) => e,
            None => "no fault".into(),
        };
        println!(
            "\n=== {}: {} sessions, {} failed, {} reconnects ({:.3} per session), \
             {recovery}; lateness p99 {:.1} ms max {:.1} ms on first schedules, stall p99 {:.1} ms; \
             store operations {}",
            self.case,
            SESSIONS,
            self.failed(),
            self.count("reconnects"),
            self.reconnects_per_session(),
            self.report["lateness_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            self.report["lateness_ms"]["max"].as_f64().unwrap_or(f64::NAN),
            self.report["stall_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            self.store_ops
                .map_or("unknown".to_string(), |n| n.to_string()),
        );
        println!(
            "streams ended: {} by the server or transport, {} dropped silent by their client, \
             {} attach timeouts",
            self.report["stream_ends"],
            self.count("silent_drops"),
            self.count("attach_timeouts")
        );
        println!("{}", self.before_fault());
        // Seconds counted from the fault's end (or every session's
        // attaching).
        let (start, end) = self.fault.unwrap_or((self.attached, self.attached));
        println!("  second  numbers  waiting  reconnects  stream ends  completed  p99 stream ms  p99 first ms");
        let from = (start - 3.0) as u64;
        let to = self.horizon() + 1;
        for s in self
            .timeline()
            .iter()
            .filter(|s| s.unix >= from && s.unix <= to)
        {
            let mark =
                if self.fault.is_some() && (s.unix + 1) as f64 > start && (s.unix as f64) < end {
                    " fault"
                } else {
                    ""
                };
            println!(
                "  {:>+6.1}  {:>7}  {:>7}  {:>10}  {:>11}  {:>9}  {:>13.1}  {:>12.1}{mark}",
                s.unix as f64 - end,
                s.numbers,
                s.waiting,
                s.reconnects,
                s.stream_ends,
                s.completed,
                s.stream_p99,
                s.p99
            );
        }
    }

    /// Asserts the promises: every session completed, and the run was
    /// back on time within [`RECOVERY_LIMIT`] of the fault's end.
    pub(crate) fn assert_recovered(&self) {
        assert_eq!(self.failed(), 0, "sessions failed:\n{self}");
        let recovery = self.recovery().unwrap_or_else(|e| panic!("{e}:\n{self}"));
        assert!(
            recovery <= RECOVERY_LIMIT,
            "back on time only {recovery:?} after the fault's end:\n{self}"
        );
    }
}

impl std::fmt::Display for Outcome {
    /// What a failure shows: the load's report but its timeline (printed
    /// above), how the run did before the fault, and the server's
    /// warnings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut report = self.report.clone();
        report["timeline"] = serde_json::Value::Null;
        writeln!(f, "load report: {report}")?;
        writeln!(f, "{}", self.before_fault())?;
        writeln!(f, "server exit code {:?}; its warnings:", self.server.code)?;
        let warnings: Vec<&str> = self
            .server
            .stderr
            .lines()
            .filter(|l| !l.contains(" INFO ") && !l.contains(" DEBUG "))
            .collect();
        for line in warnings.iter().take(40) {
            writeln!(f, "  {line}")?;
        }
        if warnings.len() > 40 {
            writeln!(f, "  … {} more", warnings.len() - 40)?;
        }
        Ok(())
    }
}
