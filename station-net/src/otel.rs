//! Traces: a span per stream on the server, the store operations it runs as
//! its children, and the W3C trace context a client sends so that every
//! stream of its session, on every server, joins one trace.
//!
//! The spans are `tracing` spans at `DEBUG` level under the target
//! [`TARGET`]; an OpenTelemetry layer (the binary's `--otlp-endpoint`)
//! exports them. Without one nothing is interested in them, so each is
//! disabled at its call site and costs a branch: the default `info` log
//! filter does not enable them either.
//!
//! The spans carry ids (session, incarnation, generation), how a stream
//! attached and how it ended; never a resume token or a record.
//!
//! | span | attributes |
//! |---|---|
//! | `stream` (server kind) | `rpc.*`, `server.address`, `server.port`, `session.id`, `station.attach` (`open`, `resume`, `reopen`), `station.incarnation`, `station.generation`, `station.end` (`completed`, `client_gone`, `rejected`), `station.reason` (the rejection's reason), `station.deleted` |
//! | `store` (client kind, child of `stream`) | `db.system.name` (`memory`, `redis`, `redis-cluster`), `db.operation.name` (`load`, `create`, `update`, `delete`), `station.reply` |

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use station_core::server::{Attachment, End, Lookup, StoreOp, StoreReply, Stream};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span here: what an OpenTelemetry layer's
/// filter lets through.
pub const TARGET: &str = "station_net::otel";

/// The trace context a client sends on every stream of one session (the
/// `traceparent` and, if any, `tracestate` request metadata).
#[derive(Clone, Debug, Default)]
pub struct TraceHeaders(MetadataMap);

impl TraceHeaders {
    /// No trace context: servers start a trace per stream.
    pub fn none() -> Self {
        TraceHeaders::default()
    }

    /// The W3C trace context of `cx` (e.g. the session span's), written by
    /// OpenTelemetry's propagator. Empty if `cx` holds no valid span.
    pub fn from_context(cx: &opentelemetry::Context) -> Self {
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut fields);
        let mut map = MetadataMap::new();
        for (key, value) in fields {
            // The propagator writes lowercase ASCII names and values; a
            // field that would not fit gRPC metadata is left out.
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(key.as_bytes()),
                MetadataValue::try_from(value.as_str()),
            ) {
                map.insert(key, value);
            }
        }
        TraceHeaders(map)
    }

    /// Whether there is a context to send.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `traceparent` value, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.0.get("traceparent").and_then(|v| v.to_str().ok())
    }

    /// Adds the context to a request's metadata.
    pub(crate) fn apply(&self, metadata: &mut MetadataMap) {
        for entry in self.0.iter() {
            if let KeyAndValueRef::Ascii(key, value) = entry {
                metadata.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Reads request metadata for the propagator.
struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The span of one stream, a child of the trace context the client sent.
/// A missing or malformed `traceparent` starts a new trace: never an
/// error. Disabled (and nothing read) when no layer wants it.
pub(crate) fn stream_span<T>(request: &tonic::Request<T>) -> Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "stream",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "numbersstation.v1.NumbersStation",
        rpc.method = "Stream",
        server.address = Empty,
        server.port = Empty,
        session.id = Empty,
        station.attach = Empty,
        station.incarnation = Empty,
        station.generation = Empty,
        station.end = Empty,
        station.reason = Empty,
        station.deleted = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(local) = request.local_addr() {
        span.record("server.address", tracing::field::display(local.ip()));
        span.record("server.port", local.port());
    }
    let parent = TraceContextPropagator::new().extract_with_context(
        &opentelemetry::Context::new(),
        &Metadata(request.metadata()),
    );
    // Fails only if no OpenTelemetry layer is installed (then there is no
    // trace to join) or the span has started (it has not).
    let _ = span.set_parent(parent);
    span
}

/// Records how the stream attached and which session it holds.
pub(crate) fn attached(span: &Span, stream: &Stream, how: Attachment) {
    if span.is_disabled() {
        return;
    }
    let how = match how {
        Attachment::Opened => "open",
        Attachment::Resumed => "resume",
        Attachment::Reopened => "reopen",
    };
    span.record("station.attach", how);
    identify(span, stream);
}

/// Records how the stream ended.
pub(crate) fn ended(span: &Span, stream: &Stream, end: &End) {
    if span.is_disabled() {
        return;
    }
    // A stream refused before it attached still names the session it
    // asked for, if the core knows it.
    identify(span, stream);
    match end {
        End::Completed { deleted } => {
            span.record("station.end", "completed");
            span.record("station.deleted", *deleted);
        }
        End::ClientGone => gone(span),
        End::Rejected(reject) => {
            span.record("station.end", "rejected");
            span.record("station.reason", reject.reason().as_str());
        }
    }
}

/// Records that the client went away (its stream was reset or its
/// connection broke) before the stream ended otherwise.
pub(crate) fn gone(span: &Span) {
    span.record("station.end", "client_gone");
}

fn identify(span: &Span, stream: &Stream) {
    if let Some(id) = stream.client_id() {
        span.record("session.id", tracing::field::display(id.0));
    }
    if let Some(incarnation) = stream.incarnation() {
        // An id, not a quantity: hexadecimal, as a string.
        span.record(
            "station.incarnation",
            tracing::field::display(format_args!("{incarnation:016x}")),
        );
    }
    if let Some(generation) = stream.generation() {
        span.record(
            "station.generation",
            i64::try_from(generation).unwrap_or(i64::MAX),
        );
    }
}

/// The span of one store operation: a child of the stream whose span is
/// entered (the driver enters it while it polls the stream, and while it
/// settles the release or delete a stream leaves behind), or none outside
/// a stream (a health check, a count), so that no store call starts a
/// trace of its own. Only the operation's kind is recorded, never its
/// record.
pub(crate) fn store_span(op: &StoreOp, system: &'static str) -> Span {
    let parent = Span::current();
    if parent.is_none() {
        return Span::none();
    }
    let operation = match op {
        StoreOp::Load(_) => "load",
        StoreOp::Create { .. } => "create",
        StoreOp::Update { .. } => "update",
        StoreOp::Delete { .. } => "delete",
    };
    tracing::debug_span!(
        target: TARGET,
        parent: &parent,
        "store",
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        station.reply = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

/// Records a store operation's answer.
pub(crate) fn store_reply(span: &Span, reply: &StoreReply) {
    if span.is_disabled() {
        return;
    }
    let reply = match reply {
        StoreReply::Loaded(Lookup::Live(_)) => "live",
        StoreReply::Loaded(Lookup::Expired) => "expired",
        StoreReply::Loaded(Lookup::Missing) => "missing",
        StoreReply::Done => "done",
        StoreReply::Exists(_) => "exists",
        StoreReply::Conflict => "conflict",
        StoreReply::ExpiredOrReplaced => "expired",
        StoreReply::Vanished => "missing",
        StoreReply::Unavailable(why) => {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", why.as_str());
            "unavailable"
        }
    };
    span.record("station.reply", reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_the_context_they_were_made_from() {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sc = SpanContext::new(trace, span, TraceFlags::SAMPLED, true, TraceState::NONE);
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let headers = TraceHeaders::from_context(&cx);
        assert_eq!(
            headers.traceparent(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let mut request = tonic::Request::new(());
        headers.apply(request.metadata_mut());
        let back = TraceContextPropagator::new().extract_with_context(
            &opentelemetry::Context::new(),
            &Metadata(request.metadata()),
        );
        assert_eq!(back.span().span_context().trace_id(), trace);
        assert_eq!(back.span().span_context().span_id(), span);
        // No span, no header.
        assert!(TraceHeaders::from_context(&opentelemetry::Context::new()).is_empty());
    }

    #[test]
    fn a_bad_traceparent_yields_no_parent() {
        use opentelemetry::trace::TraceContextExt;
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let mut request = tonic::Request::new(());
            if let Ok(v) = MetadataValue::try_from(bad) {
                request.metadata_mut().insert("traceparent", v);
            }
            let cx = TraceContextPropagator::new().extract_with_context(
                &opentelemetry::Context::new(),
                &Metadata(request.metadata()),
            );
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
        }
    }
}
