//! What a server counts: kept per [`Station`](crate::Station) for the
//! `Stats` RPC, and reported through the `metrics` facade for Prometheus
//! (a no-op unless the binary installs an exporter).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use tonic::Code;

/// Numbers handed to the transport.
pub const NUMBERS_SENT: &str = "station_numbers_sent_total";
/// Sessions opened (first `Attached` of a session).
pub const OPENED: &str = "station_sessions_opened_total";
/// Sessions resumed.
pub const RESUMED: &str = "station_sessions_resumed_total";
/// Sessions completed (final ack, record deleted).
pub const COMPLETED: &str = "station_sessions_completed_total";
/// Resumes refused because the session had expired.
pub const EXPIRED: &str = "station_sessions_expired_total";
/// Streams ended because another stream took their session over.
pub const TAKEN_OVER: &str = "station_sessions_taken_over_total";
/// Streams refused or ended with an error status, by code.
pub const REJECTIONS: &str = "station_rejections_total";
/// Store operations that failed or timed out.
pub const STORE_ERRORS: &str = "station_store_errors_total";
/// Store operation latency.
pub const STORE_LATENCY: &str = "station_store_latency_seconds";
/// Streams attached to this server now.
pub const STREAMS_ATTACHED: &str = "station_streams_attached";
/// Sessions live in the store (shared by every server on the store).
pub const SESSIONS_LIVE: &str = "station_sessions_live";
/// Smoothed scheduling lateness the server sheds on (seconds).
pub const LATENESS: &str = "station_scheduling_lateness_seconds";
/// 1 while the server sheds new sessions, else 0.
pub const SHEDDING: &str = "station_shedding";

/// Registers help texts with the installed recorder.
pub fn describe() {
    describe_counter!(NUMBERS_SENT, "Numbers handed to the transport");
    describe_counter!(OPENED, "Sessions opened");
    describe_counter!(RESUMED, "Sessions resumed on this server");
    describe_counter!(COMPLETED, "Sessions completed and deleted");
    describe_counter!(EXPIRED, "Resumes refused because the session had expired");
    describe_counter!(
        TAKEN_OVER,
        "Streams ended because another stream resumed their session"
    );
    describe_counter!(
        REJECTIONS,
        "Streams refused or ended with an error status, by gRPC code"
    );
    describe_counter!(
        STORE_ERRORS,
        "Session store operations that failed or timed out"
    );
    describe_histogram!(
        STORE_LATENCY,
        Unit::Seconds,
        "Session store operation latency"
    );
    describe_gauge!(STREAMS_ATTACHED, "Streams attached to this server");
    describe_gauge!(
        SESSIONS_LIVE,
        "Live sessions in the store (all servers on it)"
    );
    describe_gauge!(
        LATENESS,
        Unit::Seconds,
        "Smoothed lateness of the server's timers (the overload signal)"
    );
    describe_gauge!(SHEDDING, "1 while the server sheds new sessions");
}

/// Reports the overload signal.
pub(crate) fn set_overload(lateness: Duration, shedding: bool) {
    gauge!(LATENESS).set(lateness.as_secs_f64());
    gauge!(SHEDDING).set(if shedding { 1.0 } else { 0.0 });
}

/// Per-server counters; each `record_*` also reports to `metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub numbers_sent: AtomicU64,
    pub opened: AtomicU64,
    pub resumed: AtomicU64,
    pub completed: AtomicU64,
    pub rejected: AtomicU64,
}

impl Counters {
    pub fn number_sent(&self) {
        self.numbers_sent.fetch_add(1, Ordering::Relaxed);
        counter!(NUMBERS_SENT).increment(1);
    }

    pub fn attached(&self, resumed: bool) {
        if resumed {
            self.resumed.fetch_add(1, Ordering::Relaxed);
            counter!(RESUMED).increment(1);
        } else {
            self.opened.fetch_add(1, Ordering::Relaxed);
            counter!(OPENED).increment(1);
        }
    }

    pub fn completed(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        counter!(COMPLETED).increment(1);
    }

    pub fn rejected(&self, code: Code, reject: &station_core::Reject) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        counter!(REJECTIONS, "code" => code_name(code)).increment(1);
        match reject {
            station_core::Reject::Expired(_) => counter!(EXPIRED).increment(1),
            station_core::Reject::TakenOver(_) => counter!(TAKEN_OVER).increment(1),
            _ => {}
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Records one store operation's latency and outcome.
pub(crate) fn store_op(elapsed: Duration, failed: bool) {
    histogram!(STORE_LATENCY).record(elapsed.as_secs_f64());
    if failed {
        counter!(STORE_ERRORS).increment(1);
    }
}

/// Counts an attached stream for as long as it lives.
pub(crate) struct AttachedGauge;

impl AttachedGauge {
    pub fn new() -> Self {
        gauge!(STREAMS_ATTACHED).increment(1.0);
        AttachedGauge
    }
}

impl Drop for AttachedGauge {
    fn drop(&mut self) {
        gauge!(STREAMS_ATTACHED).decrement(1.0);
    }
}

/// Sets the live-sessions gauge.
pub fn set_live_sessions(n: u64) {
    gauge!(SESSIONS_LIVE).set(n as f64);
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
