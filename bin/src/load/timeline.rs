//! A run's timeline: what happened in each second of the wall clock, so
//! that a fault's effect, and the recovery from it, can be read second by
//! second (`bench/run.sh faults`, `bin/tests/faults_under_load/`). The
//! run's totals cannot show when a run got back on time.
//!
//! Each second counts the numbers delivered in it and how late they were,
//! twice: on the session's first schedule, as the report's lateness is
//! (after a reconnect a session stays behind it for good, as the server
//! restarts its ticks at each attach), and on the schedule of the stream
//! that delivered them, counted from that stream's `Attached` (what a
//! session suffers now: on time again once its new stream is). A session
//! with no stream delivers nothing, so is in neither: each second also
//! says how many sessions were *waiting* at most (started, not ended, and
//! without an attached stream: opening, or between a stream's end and the
//! next one's `Attached`). It also counts streams opened again, streams
//! that ended early, and sessions completed. Seconds are those of the
//! Unix clock, so several worker processes' timelines merge, and so a
//! caller can place its own events (a fault's start and end) on them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::tally::{micros, pairs, percentiles_ms, MAX_VALUE};

/// The seconds of one process's run, as it goes.
pub struct Timeline {
    /// An instant and the Unix time at it: later instants are placed on
    /// the Unix clock from the monotonic one, so a clock step in the run
    /// moves nothing.
    origin: Instant,
    origin_unix: Duration,
    seconds: BTreeMap<u64, Second>,
    /// Sessions waiting now.
    waiting: u64,
}

/// One second, as it is counted.
struct Second {
    counts: Counts,
    lateness: Histogram<u64>,
    stream_lateness: Histogram<u64>,
}

/// A second's counts.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Numbers delivered (duplicates not counted).
    pub numbers: u64,
    /// Streams opened after a session's first.
    pub reconnects: u64,
    /// Streams that ended before their session completed, however (the
    /// server ended them, the transport failed, the client dropped them).
    pub stream_ends: u64,
    /// Sessions whose final number arrived.
    pub completed: u64,
    /// The most sessions waiting at once.
    pub waiting: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.numbers += other.numbers;
        self.reconnects += other.reconnects;
        self.stream_ends += other.stream_ends;
        self.completed += other.completed;
        // Each process's most at once, added: at least the run's.
        self.waiting += other.waiting;
    }
}

/// One second as a process hands it on: its counts and its two lateness
/// histograms (µs) as (value, count) pairs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SecondTally {
    pub counts: Counts,
    pub lateness: Vec<(u64, u64)>,
    pub stream_lateness: Vec<(u64, u64)>,
}

/// Lateness within one second needs less precision than over the run (two
/// significant digits: 1 % of the value), and a run holds hundreds of
/// seconds, two histograms each.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_VALUE, 2).expect("bounds are valid")
}

fn record_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value.clamp(1, MAX_VALUE), count);
    }
}

impl Timeline {
    /// A timeline starting now: its first second is the current one, even
    /// if nothing happens in it.
    pub fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut timeline = Timeline {
            origin: Instant::now(),
            origin_unix: unix,
            seconds: BTreeMap::new(),
            waiting: 0,
        };
        timeline.second(timeline.origin);
        timeline
    }

    /// The Unix second `at` falls in.
    pub fn unix_second(&self, at: Instant) -> u64 {
        (self.origin_unix + at.saturating_duration_since(self.origin)).as_secs()
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let key = self.unix_second(at);
        let waiting = self.waiting;
        self.seconds.entry(key).or_insert_with(|| Second {
            counts: Counts {
                waiting,
                ..Counts::default()
            },
            lateness: histogram(),
            stream_lateness: histogram(),
        })
    }

    /// Makes sure the second `at` falls in is on the timeline, with the
    /// sessions waiting now, though nothing else happens in it: called
    /// several times a second, so that no second is missing.
    pub fn tick(&mut self, at: Instant) {
        self.second(at);
    }

    /// One more session waits (it started, or its stream ended).
    pub fn waits(&mut self, at: Instant) {
        self.waiting += 1;
        let waiting = self.waiting;
        let s = self.second(at);
        s.counts.waiting = s.counts.waiting.max(waiting);
    }

    /// One session less waits (a stream attached, or it ended).
    pub fn stops_waiting(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// A number delivered at `at`, `late` on its session's first schedule
    /// and `stream_late` on its stream's.
    pub fn number(&mut self, at: Instant, late: Duration, stream_late: Duration) {
        let s = self.second(at);
        s.counts.numbers += 1;
        s.lateness.saturating_record(micros(late));
        s.stream_lateness.saturating_record(micros(stream_late));
    }

    pub fn reconnect(&mut self, at: Instant) {
        self.second(at).counts.reconnects += 1;
    }

    pub fn stream_end(&mut self, at: Instant) {
        self.second(at).counts.stream_ends += 1;
    }

    pub fn completed(&mut self, at: Instant) {
        self.second(at).counts.completed += 1;
    }

    /// The seconds so far, by Unix second.
    pub fn tally(&self) -> BTreeMap<u64, SecondTally> {
        self.seconds
            .iter()
            .map(|(&key, s)| {
                let tally = SecondTally {
                    counts: s.counts,
                    lateness: pairs(&s.lateness),
                    stream_lateness: pairs(&s.stream_lateness),
                };
                (key, tally)
            })
            .collect()
    }
}

/// Adds `other`'s seconds to `into`'s (a worker's timeline to the run's).
pub fn merge(into: &mut BTreeMap<u64, SecondTally>, other: BTreeMap<u64, SecondTally>) {
    for (key, theirs) in other {
        let mine = into.entry(key).or_default();
        mine.counts.add(theirs.counts);
        let merged = |a: &[(u64, u64)], b: &[(u64, u64)]| {
            let mut h = histogram();
            record_pairs(&mut h, a);
            record_pairs(&mut h, b);
            pairs(&h)
        };
        mine.lateness = merged(&mine.lateness, &theirs.lateness);
        mine.stream_lateness = merged(&mine.stream_lateness, &theirs.stream_lateness);
    }
}

/// The timeline as the JSON report gives it: one object per second from
/// the first to the last, empty seconds included (a second in which
/// nothing arrived is itself a finding), each with its Unix second, its
/// offset from the first, its counts, and p50/p99/max of both latenesses
/// in milliseconds (zeros when no number arrived).
pub fn rows(seconds: &BTreeMap<u64, SecondTally>) -> Vec<serde_json::Value> {
    let (Some(&first), Some(&last)) = (seconds.keys().next(), seconds.keys().next_back()) else {
        return Vec::new();
    };
    let p = |v: [f64; 3]| serde_json::json!({"p50": v[0], "p99": v[1], "max": v[2]});
    let empty = SecondTally::default();
    (first..=last)
        .map(|key| {
            let s = seconds.get(&key).unwrap_or(&empty);
            serde_json::json!({
                "unix_second": key,
                "second": key - first,
                "numbers": s.counts.numbers,
                "reconnects": s.counts.reconnects,
                "stream_ends": s.counts.stream_ends,
                "completed": s.counts.completed,
                "waiting": s.counts.waiting,
                "lateness_ms": p(percentiles_ms(&s.lateness)),
                "stream_lateness_ms": p(percentiles_ms(&s.stream_lateness)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(numbers: u64, waiting: u64, lateness_us: &[u64]) -> SecondTally {
        let mut h = histogram();
        for &v in lateness_us {
            h.record(v).unwrap();
        }
        SecondTally {
            counts: Counts {
                numbers,
                reconnects: 1,
                stream_ends: 2,
                completed: 3,
                waiting,
            },
            lateness: pairs(&h),
            stream_lateness: pairs(&h),
        }
    }

    /// Two workers' timelines merge second by second (through their JSON,
    /// as the parent reads them), and the rows fill the seconds in which
    /// no worker saw anything.
    #[test]
    fn timelines_merge_by_second_and_rows_keep_empty_seconds() {
        let one = BTreeMap::from([(100, second(10, 1, &[1_000; 10])), (101, second(5, 0, &[]))]);
        let other = BTreeMap::from([
            (100, second(10, 2, &[90_000; 10])),
            (103, second(1, 0, &[])),
        ]);
        let mut merged = BTreeMap::new();
        for part in [one, other] {
            let wire = serde_json::to_string(&part).unwrap();
            merge(&mut merged, serde_json::from_str(&wire).unwrap());
        }
        let rows = rows(&merged);
        let seconds: Vec<u64> = rows
            .iter()
            .map(|r| r["unix_second"].as_u64().unwrap())
            .collect();
        assert_eq!(seconds, [100, 101, 102, 103]);
        assert_eq!(rows[0]["second"], 0);
        assert_eq!(rows[3]["second"], 3);
        let first = &rows[0];
        assert_eq!(
            [
                &first["numbers"],
                &first["reconnects"],
                &first["stream_ends"],
                &first["completed"],
                &first["waiting"]
            ],
            [20, 2, 4, 6, 3]
        );
        // Half the numbers 1 ms late, half 90 ms: the p99 is the late half's.
        let p99 = first["lateness_ms"]["p99"].as_f64().unwrap();
        assert!((89.0..=91.0).contains(&p99), "{p99}");
        assert_eq!(first["stream_lateness_ms"], first["lateness_ms"]);
        // Nothing happened at 102: a row of zeros, not a gap.
        assert_eq!(rows[2]["numbers"], 0);
        assert_eq!(rows[2]["lateness_ms"]["p99"], 0.0);
    }

    /// The instant-to-second mapping follows the monotonic clock from the
    /// origin, and a timeline starts with the second it was made in.
    #[test]
    fn seconds_follow_the_monotonic_clock() {
        let mut t = Timeline::new();
        let origin = t.unix_second(t.origin);
        assert_eq!(t.tally().keys().copied().collect::<Vec<_>>(), [origin]);
        let later = t.origin + Duration::from_millis(2_500);
        let expected = (t.origin_unix + Duration::from_millis(2_500)).as_secs();
        assert_eq!(t.unix_second(later), expected);
        t.waits(later);
        t.waits(later);
        t.stops_waiting();
        // A second first seen now starts with the one still waiting.
        t.tick(later + Duration::from_secs(1));
        let tally = t.tally();
        assert_eq!(tally[&expected].counts.waiting, 2);
        assert_eq!(tally[&(expected + 1)].counts.waiting, 1);
    }
}
