//! `--otlp-endpoint`: OpenTelemetry traces exported over OTLP/gRPC.
//!
//! The spans are `station_net::otel`'s (a span per stream and store
//! operation on a server, one per session on a client); this file only
//! builds the exporter and the layer that turns `tracing` spans into
//! OpenTelemetry ones, and flushes them at exit.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::resource::{EnvResourceDetector, Resource, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::filter::Targets;

/// How long the last export may take at exit, so that a collector that is
/// down delays a stopping process by no more than this.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// The exporting half: spans ended so far are sent in batches on a thread
/// of the SDK's; [`Traces::shutdown`] sends the rest.
pub struct Traces(SdkTracerProvider);

/// Starts exporting to `endpoint` (`host:port` or `http://host:port`) as
/// `service` (unless `OTEL_SERVICE_NAME` says otherwise), and returns the
/// tracer for the `tracing` layer. Call within the tokio runtime: the
/// exporter's gRPC channel runs on it.
pub fn start(endpoint: &str, service: &'static str) -> Result<(Traces, SdkTracer), String> {
    let endpoint = match endpoint.contains("://") {
        true => endpoint.to_owned(),
        false => format!("http://{endpoint}"),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build();
    let tracer = provider.tracer("station");
    Ok((Traces(provider), tracer))
}

/// What the spans come from: the service, a fresh instance id per process
/// (several servers on one host tell apart), its pid and version; the
/// standard `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` override.
fn resource(service: &'static str) -> Resource {
    let builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new("service.name", service),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.is_empty() => builder.with_service_name(name),
        _ => builder,
    }
    .build()
}

/// What the OpenTelemetry layer takes: the trace spans (`DEBUG`, so the
/// default log filter leaves them off) and the station's own events from
/// `INFO` up, which become events of the span they happen in (a store
/// failure, a stream's warning). Not the exporter's own crates (tonic,
/// hyper, h2): their events would feed the exporter with itself.
pub fn filter() -> Targets {
    Targets::new()
        .with_target("station", Level::INFO)
        .with_target("station_net", Level::INFO)
        .with_target(station_net::otel::TARGET, Level::DEBUG)
}

impl Traces {
    /// Exports every span still waiting (bounded by [`FLUSH_LIMIT`]) and
    /// stops. Blocks: call it outside the runtime's tasks (the export
    /// itself runs on the runtime, which must still be alive).
    pub fn shutdown(self) {
        if let Err(e) = self.0.shutdown_with_timeout(FLUSH_LIMIT) {
            eprintln!("warning: not every trace span was exported: {e}");
        }
    }
}
