//! What a server counts: kept per [`Station`](crate::Station) for the
//! `Stats` RPC, and reported through the `metrics` facade for Prometheus
//! (a no-op unless the binary installs an exporter).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use station_core::server::Attachment;
use tonic::Code;

/// Numbers handed to the transport.
pub const NUMBERS_SENT: &str = "station_numbers_sent_total";
/// `Paused` messages sent in place of a number whose lease the store has
/// not confirmed.
pub const PAUSES_SENT: &str = "station_pauses_sent_total";
/// Sessions opened: created in the store by an `Open` (counted once,
/// whether or not its stream lived to attach).
pub const OPENED: &str = "station_sessions_opened_total";
/// Streams that re-attached an existing session: a `Resume`, or an `Open`
/// repeated by a client that never received its `Attached`.
pub const RESUMED: &str = "station_sessions_resumed_total";
/// Sessions completed (final ack, record deleted).
pub const COMPLETED: &str = "station_sessions_completed_total";
/// Resumes refused because the session had expired (not streams whose
/// session expired under them: those are NOT_FOUND rejections).
pub const EXPIRED: &str = "station_sessions_expired_total";
/// Streams ended because another stream took their session over.
pub const TAKEN_OVER: &str = "station_sessions_taken_over_total";
/// Streams refused or ended with an error status, by code.
pub const REJECTIONS: &str = "station_rejections_total";
/// Store operations that failed or timed out.
pub const STORE_ERRORS: &str = "station_store_errors_total";
/// Store operation latency.
pub const STORE_LATENCY: &str = "station_store_latency_seconds";
/// Streams attached to this server now: `Attached` sent, not yet ended.
pub const STREAMS_ATTACHED: &str = "station_streams_attached";
/// Sessions live in the store (shared by every server on the store).
pub const SESSIONS_LIVE: &str = "station_sessions_live";
/// Smoothed lateness the server sheds on (seconds): the larger of its
/// timers' scheduling delay and the acknowledgements' median round trip
/// over its baseline.
pub const LATENESS: &str = "station_scheduling_lateness_seconds";
/// Median round trip of a number and its acknowledgement over the last
/// quarter second (absent until a quarter second has enough of them).
pub const ACK_ROUND_TRIP: &str = "station_ack_round_trip_seconds";
/// How much longer than the silence timeout attached streams wait for
/// their clients while the server runs late (seconds).
pub const SILENCE_EXCUSED: &str = "station_silence_excused_seconds";
/// 1 while the server sheds new sessions because it runs late, else 0.
pub const SHEDDING: &str = "station_shedding";
/// Share of the processors the process may run on that it kept busy over
/// the last second (absent unless `--shed-when-busy` is on).
pub const CPU_BUSY: &str = "station_cpu_busy_ratio";
/// 1 while new sessions are refused because the processors are busy.
pub const CPU_FULL: &str = "station_cpu_full";
/// The learned limit on streams held (absent until one is learned).
pub const SESSION_LIMIT: &str = "station_session_limit";
/// Streams refused before they attached (never admitted), by reason.
pub const REFUSED: &str = "station_streams_refused_total";
/// Attached streams the server ended with an error status, by reason.
pub const FAILED: &str = "station_streams_failed_total";
/// Store operations in flight (those that cannot answer at once).
pub const STORE_INFLIGHT: &str = "station_store_operations_in_flight";
/// The adaptive limit on store operations in flight beyond which new
/// sessions are refused.
pub const ADMISSION_LIMIT: &str = "station_admission_limit";

/// Registers help texts with the installed recorder.
pub fn describe() {
    describe_counter!(NUMBERS_SENT, "Numbers handed to the transport");
    describe_counter!(
        PAUSES_SENT,
        "Paused messages sent: numbers held while the store had not confirmed a stream's lease"
    );
    describe_counter!(OPENED, "Sessions opened");
    describe_counter!(
        RESUMED,
        "Streams that re-attached an existing session (resumes, repeated opens)"
    );
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
    describe_gauge!(
        STREAMS_ATTACHED,
        "Streams attached to this server (Attached sent, not yet ended)"
    );
    describe_gauge!(
        SESSIONS_LIVE,
        "Live sessions in the store (all servers on it); NaN when the last sample failed"
    );
    describe_gauge!(
        LATENESS,
        Unit::Seconds,
        "Smoothed lateness the server sheds on: its timers' delay, or acknowledgements' round trip over its baseline, whichever is larger"
    );
    describe_gauge!(
        ACK_ROUND_TRIP,
        Unit::Seconds,
        "Median round trip of a number and its acknowledgement over the last quarter second"
    );
    describe_gauge!(
        SILENCE_EXCUSED,
        Unit::Seconds,
        "How much longer than the silence timeout attached streams wait for their clients' acknowledgements: the server's highest lateness of the last 5-10 s"
    );
    describe_gauge!(
        SHEDDING,
        "1 while the server sheds new sessions because it runs late (station_cpu_full: because its processors are busy)"
    );
    describe_gauge!(
        CPU_BUSY,
        "Share of the processors the server may run on that it kept busy over the last second"
    );
    describe_gauge!(
        CPU_FULL,
        "1 while new sessions are refused because the server's processors are busy"
    );
    describe_gauge!(
        SESSION_LIMIT,
        "Streams the server has learned it carries on time; new sessions wait while it holds this many"
    );
    describe_counter!(
        REFUSED,
        "Streams refused before they attached (never admitted), by reason"
    );
    describe_counter!(
        FAILED,
        "Attached streams ended with an error status, by reason"
    );
    describe_gauge!(
        STORE_INFLIGHT,
        "Session store operations in flight (stores that answer at once are not counted)"
    );
    describe_gauge!(
        ADMISSION_LIMIT,
        "Adaptive limit on store operations in flight beyond which new sessions are refused"
    );
}

/// Reports the store's side of admission.
pub(crate) fn set_admission(inflight: u32, limit: u32) {
    gauge!(STORE_INFLIGHT).set(f64::from(inflight));
    gauge!(ADMISSION_LIMIT).set(f64::from(limit));
}

/// Reports the acknowledgements' median round trip of a window, if it
/// had enough of them to say.
pub(crate) fn set_ack_round_trip(median: Option<Duration>) {
    if let Some(median) = median {
        gauge!(ACK_ROUND_TRIP).set(median.as_secs_f64());
    }
}

/// Reports the processors' share, and whether new sessions are refused on it.
pub(crate) fn set_cpu_busy(share: f64, full: bool) {
    gauge!(CPU_BUSY).set(share);
    set_cpu_full(full);
}

/// Reports whether new sessions are refused on the processors' share (from
/// the start, before a whole second has been measured: nobody is refused).
pub(crate) fn set_cpu_full(full: bool) {
    gauge!(CPU_FULL).set(if full { 1.0 } else { 0.0 });
}

/// Reports the overload signal, and the silence it excuses.
pub(crate) fn set_overload(
    lateness: Duration,
    excused: Duration,
    shedding: bool,
    limit: Option<u64>,
) {
    gauge!(LATENESS).set(lateness.as_secs_f64());
    gauge!(SILENCE_EXCUSED).set(excused.as_secs_f64());
    gauge!(SHEDDING).set(if shedding { 1.0 } else { 0.0 });
    if let Some(limit) = limit {
        gauge!(SESSION_LIMIT).set(limit as f64);
    }
}

/// Per-server counters; each `record_*` also reports to `metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub numbers_sent: AtomicU64,
    pub opened: AtomicU64,
    pub resumed: AtomicU64,
    pub completed: AtomicU64,
    pub rejected: AtomicU64,
    /// Streams attached now (shared with each stream's [`AttachedGauge`]).
    pub attached: Arc<AtomicU64>,
}

impl Counters {
    pub fn number_sent(&self) {
        self.numbers_sent.fetch_add(1, Ordering::Relaxed);
        counter!(NUMBERS_SENT).increment(1);
    }

    /// A `Paused` went out in place of a held number.
    pub fn pause_sent(&self) {
        counter!(PAUSES_SENT).increment(1);
    }

    /// The store created a session (its `Create` was applied).
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        counter!(OPENED).increment(1);
    }

    /// A stream attached: a re-attachment counts as a resume (an open was
    /// counted when the store created the session).
    pub fn attached(&self, how: Attachment) {
        match how {
            Attachment::Opened => {}
            Attachment::Resumed | Attachment::Reopened => {
                self.resumed.fetch_add(1, Ordering::Relaxed);
                counter!(RESUMED).increment(1);
            }
        }
    }

    /// Counts a stream as attached until the guard drops.
    pub fn attached_gauge(&self) -> AttachedGauge {
        self.attached.fetch_add(1, Ordering::Relaxed);
        gauge!(STREAMS_ATTACHED).increment(1.0);
        AttachedGauge(self.attached.clone())
    }

    pub fn completed(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        counter!(COMPLETED).increment(1);
    }

    /// A stream ended with an error status; `refused` if it never
    /// attached (its first message was turned down).
    pub fn rejected(&self, code: Code, reject: &station_core::Reject, refused: bool) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        counter!(REJECTIONS, "code" => crate::status::client_code(code).as_str()).increment(1);
        let reason = reject.reason().as_str();
        match refused {
            true => counter!(REFUSED, "reason" => reason).increment(1),
            false => counter!(FAILED, "reason" => reason).increment(1),
        }
        match reject {
            station_core::Reject::Expired(_) if refused => counter!(EXPIRED).increment(1),
            station_core::Reject::TakenOver(_) => counter!(TAKEN_OVER).increment(1),
            _ => {}
        }
    }

    /// Acquire pairs with the gauge's release: a reader that sees a stream
    /// detached also sees the counts made before it let go.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Acquire)
    }
}

/// Records one store operation's latency and outcome.
pub(crate) fn store_op(elapsed: Duration, failed: bool) {
    histogram!(STORE_LATENCY).record(elapsed.as_secs_f64());
    if failed {
        counter!(STORE_ERRORS).increment(1);
    }
}

/// Counts an attached stream until dropped (at the stream's end).
pub(crate) struct AttachedGauge(Arc<AtomicU64>);

impl Drop for AttachedGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
        gauge!(STREAMS_ATTACHED).decrement(1.0);
    }
}

/// Sets the live-sessions gauge from a sample of the store: the count, or
/// NaN ("unknown", which Prometheus shows as a gap) when the store could
/// not be asked, counted as a store error. A failed sample never leaves
/// the last good value standing as if it were current.
pub fn set_live_sessions(sample: Result<u64, &crate::store::StoreError>) {
    match sample {
        Ok(n) => gauge!(SESSIONS_LIVE).set(n as f64),
        Err(_) => {
            gauge!(SESSIONS_LIVE).set(f64::NAN);
            counter!(STORE_ERRORS).increment(1);
        }
    }
}
