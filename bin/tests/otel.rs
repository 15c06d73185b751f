//! OpenTelemetry traces end to end: an OTLP trace receiver runs inside the
//! test, two `station server` processes share one private Redis and export
//! to it, and a `station client` given both servers opens its session on
//! the first, which is stopped (SIGTERM), and resumes it on the second.
//! One trace must hold the client's session span and both servers' stream
//! spans, each with its store operations as children; no exported byte may
//! carry the session's resume token.
//!
//! Nothing here sets the exporters' batch delay: the spans arrive only
//! because each process flushes them when it stops, which is what is
//! tested. Every wait is bounded; every child is killed when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::*;
use common::{counter, poll, station, Proc, Server, CLIENT_TIMEOUT, SHORT};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use station_net::testkit::RedisServer;
use uuid::Uuid;

/// An OTLP/gRPC trace receiver on 127.0.0.1, keeping every request.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    // Serves until dropped with the test.
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collect {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        lock(&self.0).push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the receiver");
        let collect = Collect::default();
        let requests = collect.0.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("its address");
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collect))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Receiver {
            addr,
            requests,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Seen> {
        let mut seen = Vec::new();
        for request in lock(&self.requests).iter() {
            for rs in &request.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    seen.push(Seen {
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        start: span.start_time_unix_nano,
                        attributes: attributes(&span.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        seen
    }

    /// Every request as the bytes that came over the wire (re-encoded).
    fn bytes(&self) -> Vec<Vec<u8>> {
        lock(&self.requests)
            .iter()
            .map(|r| r.encode_to_vec())
            .collect()
    }
}

/// One span as received, its ids in hex and its attributes as text.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// Nanoseconds since the Unix epoch.
    start: u64,
    attributes: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

impl Seen {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn pid(&self) -> Option<u32> {
        self.resource.get("process.pid")?.parse().ok()
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn unix_nanos() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_nanos()).expect("before 2554")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4648 base64, `url` for the URL-safe alphabet, with `=` padding.
fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = match url {
        false => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The forms a 16-byte token could take in an export: its bytes, hex in
/// either case, base64 in either alphabet with or without padding, and
/// its decimal bytes as Rust's `Debug` prints them (without the brackets,
/// so that a longer array holding it matches too).
fn token_forms(token: &[u8]) -> Vec<Vec<u8>> {
    let hex = hex(token);
    let mut forms = vec![token.to_vec(), hex.clone().into_bytes()];
    forms.push(hex.to_uppercase().into_bytes());
    for url in [false, true] {
        let b64 = base64(token, url);
        forms.push(b64.trim_end_matches('=').as_bytes().to_vec());
        forms.push(b64.into_bytes());
    }
    let debug = format!("{token:?}");
    forms.push(debug.trim_matches(['[', ']']).as_bytes().to_vec());
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `station server` on `redis` exporting traces to `receiver`: a number
/// every 20 ms, a lease of 100 ms (so streams renew mid-stream), and no
/// drain period (a stopped server ends its streams at once).
fn server(name: &str, redis: &RedisServer, receiver: &Receiver) -> Server {
    let mut cmd = station([
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--store",
        redis.url().as_str(),
        "--redis-prefix",
        "otel:",
        "--interval",
        "20ms",
        "--lease",
        "100ms",
        "--drain-period",
        "0s",
        "--otlp-endpoint",
        receiver.endpoint().as_str(),
    ]);
    cmd.env("RUST_LOG", "info");
    Server::spawn(name, cmd)
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
fn stop(proc: &mut Proc) {
    proc.terminate();
    let out = proc.finish(SHORT);
    out.assert_code(0);
}

#[test]
fn a_session_resumed_on_a_second_server_is_one_trace() {
    const COUNT: u32 = 100; // 2 s of numbers at 20 ms.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let receiver = Receiver::start();
    let mut a = server("server-a", &redis, &receiver);
    let mut b = server("server-b", &redis, &receiver);
    let (a_pid, b_pid) = (a.proc.id(), b.proc.id());

    // The client tries its endpoints in order: A first.
    let id = Uuid::new_v4();
    let mut args = vec!["client".to_string(), "--json".into()];
    for s in [&a, &b] {
        args.extend(["--endpoint".into(), s.endpoint()]);
    }
    args.extend(["--count".into(), COUNT.to_string()]);
    args.extend(["--client-id".into(), id.to_string()]);
    args.extend(["--give-up-after".into(), "30s".into()]);
    args.extend(["--otlp-endpoint".into(), receiver.endpoint()]);
    let mut cmd = station(&args);
    cmd.env("RUST_LOG", "info");
    let mut client = Proc::spawn("client", cmd);

    let record = wait_record(&redis, "otel:", id);
    let stats = a.wait_stats(SHORT, "the session opened on A", |s| {
        counter(s, "sessions_opened") == 1 && counter(s, "numbers_sent") >= 10
    });
    assert_eq!(counter(&stats, "attached_streams"), 1, "{stats}");
    let started = Instant::now();
    let stopping = unix_nanos();
    stop(&mut a.proc);
    let out = client.finish(CLIENT_TIMEOUT);
    let json = assert_verified(&out, &record);
    assert!(json["reconnects"].as_u64() >= Some(1), "{out}");
    let resumed = counter(&b.stats(), "sessions_resumed");
    assert_eq!(resumed, 1, "the session did not resume on B");
    stop(&mut b.proc);
    eprintln!(
        "A stopped; the client verified on B {:?} later",
        started.elapsed()
    );

    // Both servers and the client have exited, each flushing its spans on
    // the way out; the receiver may still be taking the last request.
    let want = |spans: &[Seen]| {
        let streams = spans.iter().filter(|s| s.name == "stream").count();
        let sessions = spans.iter().filter(|s| s.name == "session").count();
        (streams >= 2 && sessions >= 1)
            .then_some(())
            .ok_or_else(|| format!("{streams} stream and {sessions} session spans"))
    };
    poll(
        SHORT,
        Duration::from_millis(20),
        "the exported spans",
        || want(&receiver.spans()),
    );
    let spans = receiver.spans();
    for s in &spans {
        eprintln!(
            "{} trace={} span={} parent={} pid={:?} {:?}",
            s.name,
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.pid(),
            s.attributes
        );
    }

    // The client's session span is the root of the trace.
    let sessions: Vec<&Seen> = spans.iter().filter(|s| s.name == "session").collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = sessions[0];
    assert_eq!(
        session.resource.get("service.name").map(String::as_str),
        Some("station-client")
    );
    assert_eq!(session.attr("session.id"), Some(id.to_string().as_str()));
    assert!(session.parent_span_id.is_empty(), "{session:?}");
    let trace = &session.trace_id;

    // Both streams are in it, each a child of the session span, each
    // exported by the server that ran it.
    let streams: Vec<&Seen> = spans.iter().filter(|s| s.name == "stream").collect();
    assert_eq!(streams.len(), 2, "{streams:?}");
    for s in &streams {
        assert_eq!(
            &s.trace_id, trace,
            "a stream outside the session's trace: {s:?}"
        );
        assert_eq!(s.parent_span_id, session.span_id, "{s:?}");
        assert_eq!(s.attr("session.id"), Some(id.to_string().as_str()), "{s:?}");
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("station-server")
        );
        let incarnation = format!("{:016x}", record.incarnation);
        assert_eq!(s.attr("station.incarnation"), Some(incarnation.as_str()));
    }
    let on = |pid: u32| {
        *streams
            .iter()
            .find(|s| s.pid() == Some(pid))
            .unwrap_or_else(|| panic!("no stream span from pid {pid}: {streams:?}"))
    };
    let (first, second) = (on(a_pid), on(b_pid));
    assert_ne!(
        first.resource.get("service.instance.id"),
        second.resource.get("service.instance.id")
    );
    assert_eq!(first.attr("server.port"), Some(a.port.to_string().as_str()));
    assert_eq!(
        second.attr("server.port"),
        Some(b.port.to_string().as_str())
    );
    assert_eq!(first.attr("station.attach"), Some("open"), "{first:?}");
    assert_eq!(first.attr("station.generation"), Some("1"), "{first:?}");
    assert_eq!(first.attr("station.end"), Some("rejected"), "{first:?}");
    assert_eq!(
        first.attr("station.reason"),
        Some("SHUTTING_DOWN"),
        "{first:?}"
    );
    assert_eq!(second.attr("station.attach"), Some("resume"), "{second:?}");
    assert_eq!(second.attr("station.generation"), Some("2"), "{second:?}");
    assert_eq!(second.attr("station.end"), Some("completed"), "{second:?}");
    assert_eq!(second.attr("station.deleted"), Some("true"), "{second:?}");

    // Store operations are children of the stream that ran them.
    let children = |stream: &Seen| -> Vec<&Seen> {
        spans
            .iter()
            .filter(|s| s.name == "store" && s.parent_span_id == stream.span_id)
            .collect()
    };
    let store_ops = |stream: &Seen| -> Vec<String> {
        children(stream)
            .into_iter()
            .inspect(|s| {
                assert_eq!(&s.trace_id, trace);
                assert_eq!(s.attr("db.system.name"), Some("redis"), "{s:?}");
                assert_eq!(s.pid(), stream.pid(), "{s:?}");
            })
            .map(|s| {
                let op = s.attr("db.operation.name").unwrap_or("?");
                format!("{op}:{}", s.attr("station.reply").unwrap_or("?"))
            })
            .collect()
    };
    let (on_a, on_b) = (store_ops(first), store_ops(second));
    eprintln!("store operations: on A {on_a:?}, on B {on_b:?}");
    assert_eq!(
        on_a.first().map(String::as_str),
        Some("create:done"),
        "{on_a:?}"
    );
    assert!(
        on_a.iter().any(|op| op == "update:done"),
        "no renewal on A: {on_a:?}"
    );
    // A's last write, the release of the session when its stream ended,
    // runs as the stream is dropped: still its child.
    assert!(
        children(first).iter().any(|s| s.start > stopping),
        "no store operation on A after it was told to stop: {on_a:?}"
    );
    assert!(on_b.iter().any(|op| op == "load:live"), "{on_b:?}");
    assert!(on_b.iter().any(|op| op == "delete:done"), "{on_b:?}");
    let orphans: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == "store")
        .filter(|s| !streams.iter().any(|t| t.span_id == s.parent_span_id))
        .collect();
    assert!(
        orphans.is_empty(),
        "store spans outside a stream: {orphans:?}"
    );

    // The token: in no attribute and nowhere in the exported bytes.
    let forms = token_forms(&record.token.0);
    for request in receiver.bytes() {
        for form in &forms {
            assert!(
                !contains(&request, form),
                "the resume token appears in an export as {:?}",
                String::from_utf8_lossy(form)
            );
        }
    }
    let hex_token = hex(&record.token.0);
    for s in &spans {
        for value in s.attributes.values().chain(s.resource.values()) {
            assert!(!value.to_lowercase().contains(&hex_token), "{s:?}");
        }
    }
}

/// The token scan must find a token where there is one, in every form it
/// looks for, or its silence above proves nothing.
#[test]
fn the_token_scan_finds_every_form() {
    let token: Vec<u8> = (0..16u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(200))
        .collect();
    assert_eq!(base64(b"foobar", false), "Zm9vYmFy");
    assert_eq!(base64(b"fo", false), "Zm8=");
    assert_eq!(base64(&[0xfb, 0xff], true), "-_8=");
    for form in token_forms(&token) {
        let mut export = b"attribute: ".to_vec();
        export.extend_from_slice(&form);
        assert!(contains(&export, &form));
    }
    let written = format!("x{}y", hex(&token));
    assert!(contains(written.as_bytes(), &token_forms(&token)[1]));
    assert!(!contains(b"nothing here", &token_forms(&token)[1]));
}
