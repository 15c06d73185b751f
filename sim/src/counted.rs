//! What the servers counted: every `station_net::metrics` counter of one
//! run, summed over every server and every boot of a server.
//!
//! The servers count through `station_net::metrics::Counters`, which keeps
//! a server's own atomics (the `Stats` RPC) and reports each count to the
//! `metrics` facade (Prometheus). [`Recorder`] is a facade recorder made
//! current on the run's thread (every host of a run runs there), so it sees
//! each count as it is made: those of a server that later crashes too
//! (its atomics die with it), with the split the `Stats` reply does not
//! carry (rejections by gRPC code, expired and taken-over streams).
//! [`crate::invariants`] compares them with what happened.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use station_net::metrics::{COMPLETED, EXPIRED, OPENED, REJECTIONS, RESUMED, TAKEN_OVER};

use crate::base::lock;
use crate::scenario::Bug;

/// The counts of one run (all servers, all boots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// `station_sessions_opened_total`.
    pub opened: u64,
    /// `station_sessions_resumed_total`.
    pub resumed: u64,
    /// `station_sessions_completed_total`.
    pub completed: u64,
    /// `station_sessions_expired_total`: resumes refused as expired.
    pub expired: u64,
    /// `station_sessions_taken_over_total`.
    pub taken_over: u64,
    /// `station_rejections_total`, by its `code` label (`"NOT_FOUND"`, ...).
    pub rejections: BTreeMap<String, u64>,
}

/// A counter's name and its `code` label, if it has one.
type CounterKey = (String, Option<String>);

/// A `metrics` recorder that keeps the station's counters of one run.
/// Gauges and histograms go nowhere.
pub struct Recorder {
    bug: Bug,
    counters: Mutex<BTreeMap<CounterKey, Arc<AtomicU64>>>,
}

impl Recorder {
    /// An empty recorder; `bug` may plant [`Bug::CompletionCountedAsRejection`].
    pub fn new(bug: Bug) -> Self {
        Recorder {
            bug,
            counters: Mutex::default(),
        }
    }

    fn cell(&self, name: &str, code: Option<&str>) -> Arc<AtomicU64> {
        lock(&self.counters)
            .entry((name.to_owned(), code.map(str::to_owned)))
            .or_default()
            .clone()
    }

    fn get(&self, name: &str) -> u64 {
        lock(&self.counters)
            .get(&(name.to_owned(), None))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// What was counted so far.
    pub fn counted(&self) -> Counted {
        let rejections = lock(&self.counters)
            .iter()
            .filter_map(|((name, code), n)| {
                let n = n.load(Ordering::Relaxed);
                (name == REJECTIONS && n > 0).then(|| (code.clone().unwrap_or_default(), n))
            })
            .collect();
        Counted {
            opened: self.get(OPENED),
            resumed: self.get(RESUMED),
            completed: self.get(COMPLETED),
            expired: self.get(EXPIRED),
            taken_over: self.get(TAKEN_OVER),
            rejections,
        }
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let code = key
            .labels()
            .find(|l| l.key() == "code")
            .map(|l| l.value().to_owned());
        if self.bug == Bug::CompletionCountedAsRejection && key.name() == COMPLETED {
            // The planted bug: a completed session lands in the rejections.
            return Counter::from_arc(self.cell(REJECTIONS, Some("INVALID_ARGUMENT")));
        }
        Counter::from_arc(self.cell(key.name(), code.as_deref()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
