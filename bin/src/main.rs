//! `station`: the Numbers Station server, client, load generator and demo.
//!
//! Layout: `main.rs` parses flags and wires things together; `server.rs`,
//! `client.rs`, `load/` (many sessions, measured: `session.rs` runs them,
//! `tally.rs`, `timeline.rs` and `report.rs` count and print) and
//! `demo.rs` run the subcommands; `state_file.rs` keeps a client's
//! progress on disk; `outcome.rs` prints outcomes; `bars.rs` draws progress
//! bars that log lines do not break; `traces.rs` exports traces over
//! OTLP (`--otlp-endpoint`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod bars;
mod client;
mod demo;
mod load;
mod outcome;
mod server;
mod state_file;
mod traces;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// Every number arrived and the checksum verified.
    pub const SUCCESS: u8 = 0;
    /// Bad flags (clap's own code), or settings that cannot work together.
    pub const USAGE: u8 = 2;
    /// Every number arrived but the checksums differ.
    pub const CHECKSUM_MISMATCH: u8 = 3;
    /// A server said the session expired (`SESSION_EXPIRED`).
    pub const EXPIRED: u8 = 4;
    /// A server refused the session (bad token, already exists, ...).
    pub const REJECTED: u8 = 5;
    /// Gave up: no server reachable, no new number within
    /// `--give-up-after`, the session most likely expired (no server
    /// confirmed it), or servers broke the protocol.
    pub const UNREACHABLE: u8 = 6;
    /// The state file is corrupt, or belongs to another session.
    pub const STATE_FILE: u8 = 7;
    /// The server failed to start or stopped with an error.
    pub const SERVER_ERROR: u8 = 8;
}

#[derive(Parser, Debug)]
#[command(
    name = "station",
    version,
    about = "Numbers Station: random numbers streamed over gRPC, resumable across disconnections",
    after_help = "Every flag can also be set from the environment variable shown with it.\n\
                  Durations accept 250ms, 1s, 30s, 1m (a bare number means seconds).\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text for people, or as one JSON object per
    /// line (timestamp, level, target, message and fields) for a log
    /// pipeline.
    #[arg(
        long,
        global = true,
        env = "STATION_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start and matched once: the size of the largest flags
// struct costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve sessions over gRPC.
    Server(ServerArgs),
    /// Receive a sequence of numbers and verify it.
    #[command(
        after_help = "Exit codes: 0 verified, 2 usage error, 3 checksum mismatch, \
                            4 a server said the session expired, 5 session rejected, \
                            6 gave up (no server reachable, no progress within --give-up-after, \
                            the session most likely expired unconfirmed, or protocol error), \
                            7 bad state file."
    )]
    Client(ClientArgs),
    /// Run a server and a few clients in this process, with faults injected.
    Demo(DemoArgs),
    /// Print a server's counters (live sessions, attached streams, ...).
    Stats(StatsArgs),
    /// Generate load: many sessions over a few connections, with a report.
    Load(LoadArgs),
}

/// `station server` flags.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on. Anything but loopback exposes the service; see
    /// the README's security notes.
    #[arg(long, env = "STATION_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "STATION_PORT")]
    pub port: u16,
    /// Time between two numbers of a session.
    #[arg(long, env = "STATION_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long a disconnected session is kept.
    #[arg(long, env = "STATION_SESSION_TTL", default_value = "30s", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// Fail every N-th number with UNAVAILABLE (fault injection).
    #[arg(long, env = "STATION_FAIL_EVERY")]
    pub fail_every: Option<std::num::NonZeroU64>,
    /// After an injected failure, refuse new requests for this long.
    #[arg(long, env = "STATION_GO_OFFLINE_FOR", default_value = "0s", value_parser = parse_duration)]
    pub go_offline_for: Duration,
    /// Most streams holding or attaching a session at once; more get
    /// RESOURCE_EXHAUSTED [default: 250000]. Its old names,
    /// `--max-sessions` and `STATION_MAX_SESSIONS`, still work.
    #[arg(long, alias = "max-sessions", env = "STATION_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Shed new sessions (Open: RESOURCE_EXHAUSTED, reason OVERLOADED) while
    /// the server runs this late on average (its timers, or its numbers'
    /// acknowledgements over their usual round trip), and learn from it how
    /// many streams the server carries on time; 0s never sheds or limits.
    #[arg(long, env = "STATION_SHED_WHEN_LATE", default_value = "250ms", value_parser = parse_duration)]
    pub shed_when_late: Duration,
    /// Refuse new sessions (RESOURCE_EXHAUSTED, reason OVERLOADED) while
    /// the server keeps this percentage of the processors it may run on
    /// (its affinity mask and cgroup quota, in whole processors) busy over
    /// a second, until it is 5 points under (or half the setting): the
    /// door shuts as the processors fill, not only once the server runs
    /// late. 0 never does.
    #[arg(long, env = "STATION_SHED_WHEN_BUSY", default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub shed_when_busy: u8,
    /// When a full or overloaded server, or one whose store failed, tells
    /// clients to come back (RetryInfo, grpc-retry-pushback-ms), plus a
    /// random 0-50 %; OVERLOADED past 1,000 refusals a second, up to 5
    /// times that, in proportion to them.
    #[arg(long, env = "STATION_RETRY_AFTER", default_value = "2s", value_parser = parse_duration)]
    pub retry_after: Duration,
    /// On SIGTERM or SIGINT: health says NOT_SERVING at once and new
    /// streams are refused, while attached streams go on and end at random
    /// moments over this period (default: three intervals), so their
    /// clients resume elsewhere spread out. A second signal exits at once.
    #[arg(long, env = "STATION_DRAIN_PERIOD", value_parser = parse_duration)]
    pub drain_period: Option<Duration>,
    /// How often health checks that the session store answers; health is
    /// NOT_SERVING while it does not. 0s never checks.
    #[arg(long, env = "STATION_HEALTH_EVERY", default_value = "1s", value_parser = parse_duration)]
    pub health_every: Duration,
    /// Session store: `memory`, or a Redis URL: redis://127.0.0.1:6379/0 (one
    /// Redis; rediss:// for TLS), redis://a:6379,redis://b:6379 (a primary and
    /// its replicas), redis+cluster://h1:7000,h2:7001 (Redis Cluster).
    #[arg(long, env = "STATION_STORE", default_value = "memory")]
    pub store: String,
    /// Prefix of every Redis key, to share one Redis between deployments.
    #[arg(long, env = "STATION_REDIS_PREFIX", default_value = "station:")]
    pub redis_prefix: String,
    /// Redis: how long a batch of lease writes waits for more before it is
    /// sent, trading up to this much store latency for fewer script calls
    /// (0s: send each batch at once). Numbers do not wait for lease writes.
    #[arg(long, env = "STATION_REDIS_BATCH_LINGER", default_value = "2ms", value_parser = parse_duration)]
    pub redis_batch_linger: Duration,
    /// End a stream whose client sends nothing the server waits for for this
    /// long [default: 3 intervals + 2s, at most half the TTL]; longer, by
    /// its recent lateness, while the server runs late.
    #[arg(long, env = "STATION_SILENCE_TIMEOUT", value_parser = parse_duration)]
    pub silence_timeout: Option<Duration>,
    /// How often a stream renews its hold on its session in the store: one
    /// store write per lease per session. A taken-over stream sends nothing
    /// later than two leases after the takeover [default: 5s, at most a
    /// sixth of the TTL].
    #[arg(long, env = "STATION_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// Most numbers sent ahead of the client's acknowledgements (at most
    /// 2048, so that a window always fits HTTP/2's default stream window).
    #[arg(long, env = "STATION_WINDOW", default_value_t = 64)]
    pub window: u32,
    /// Most concurrent streams on one HTTP/2 connection.
    #[arg(
        long,
        env = "STATION_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 10_000
    )]
    pub max_streams_per_connection: u32,
    /// Largest client message accepted, in bytes.
    #[arg(long, env = "STATION_MAX_MESSAGE_SIZE", default_value_t = 1024)]
    pub max_message_size: usize,
    /// Timer slack: ticks due within this much of each other are sent
    /// together, in fewer writes (numbers are up to this much late; 0s: exact).
    #[arg(long, env = "STATION_TICK_SLACK", default_value = "5ms", value_parser = parse_duration)]
    pub tick_slack: Duration,
    /// HTTP/2 keepalive PING interval.
    #[arg(long, env = "STATION_KEEPALIVE", default_value = "10s", value_parser = parse_duration)]
    pub keepalive: Duration,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "STATION_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// PEM certificate chain: serve TLS instead of plaintext (with --tls-key).
    #[arg(long, env = "STATION_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "STATION_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Export OpenTelemetry traces over OTLP/gRPC to this collector
    /// (host:port or http://host:port; 4317 is the usual port): a span per
    /// stream, child of the trace context (W3C traceparent) the client
    /// sent, with the store operations it runs as its children. Off
    /// without it.
    #[arg(long, env = "STATION_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// `station client` flags.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Server host (with --port).
    #[arg(long, env = "STATION_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Server port. Required unless --endpoint is given.
    #[arg(long, env = "STATION_PORT", required_unless_present = "endpoint")]
    pub port: Option<u16>,
    /// A server as host:port (or https://host:port with --tls-ca); repeat to
    /// fail over between several servers.
    #[arg(long = "endpoint", env = "STATION_ENDPOINTS", value_delimiter = ',')]
    pub endpoint: Vec<String>,
    /// How many numbers, 1..=65535 [default: random].
    #[arg(long, env = "STATION_COUNT", value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub count: Option<u32>,
    /// Client id (a UUID) [default: a random version 4 UUID].
    #[arg(long, env = "STATION_CLIENT_ID")]
    pub client_id: Option<uuid::Uuid>,
    /// Keep progress in this file so a crashed client can be run again and
    /// continue; removed on success.
    #[arg(long, env = "STATION_STATE_FILE")]
    pub state_file: Option<std::path::PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long, env = "STATION_JSON")]
    pub json: bool,
    /// PEM certificate of the authority that signed the servers' TLS
    /// certificates; makes --port connect with TLS.
    #[arg(long, env = "STATION_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Give up if no server sends a new number for this long (servers that
    /// attach the session but fail every stream do not count).
    #[arg(long, env = "STATION_GIVE_UP_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub give_up_after: Duration,
    /// Export an OpenTelemetry span for the session over OTLP/gRPC to this
    /// collector (host:port or http://host:port), and send its trace
    /// context (W3C traceparent) on every stream, so that the servers'
    /// spans of all of them join one trace. Off without it.
    #[arg(long, env = "STATION_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// `station demo` flags.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Time between numbers.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Inject a failure every N numbers (server-wide).
    #[arg(long, default_value_t = 25)]
    pub fail_every: u64,
}

/// `station load` flags.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Server(s) as host:port; sessions are spread over them.
    #[arg(long = "endpoint", required = true, value_delimiter = ',')]
    pub endpoint: Vec<String>,
    /// Sessions to run.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// HTTP/2 connections per endpoint to multiplex the sessions over.
    #[arg(long, default_value_t = 16, conflicts_with = "connection_per_session")]
    pub connections: usize,
    /// Give every session its own connection, as separate client processes
    /// would have (instead of multiplexing them over --connections).
    #[arg(long)]
    pub connection_per_session: bool,
    /// Spread connections over this many source addresses, 127.0.0.1 to
    /// 127.0.0.N, each with its own ephemeral ports (Linux gives about
    /// 28,000 per address and server): for loopback servers only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addresses: u8,
    /// Numbers per session.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub count: u32,
    /// Sessions started per second (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub ramp_up_rate: u64,
    /// Stop after this long, counting unfinished sessions.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seed for the sessions' client-side randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Split the sessions over this many processes (each with its own
    /// runtime and descriptor limit), merging their histograms into one
    /// report. --connections counts for the whole run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub processes: u16,
    /// Internal: run part K of --processes and print its raw tally.
    #[arg(long, hide = true, requires = "processes")]
    pub worker: Option<u16>,
}

/// `station stats` flags.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Server host.
    #[arg(long, env = "STATION_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Server port.
    #[arg(long, env = "STATION_PORT")]
    pub port: u16,
}

/// `scheme://host:port`, with an IPv6 literal in brackets (`::1` becomes
/// `http://[::1]:50051`): without them the URI is invalid.
pub fn url(scheme: &str, host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// Parses `250ms`, `1s`, `1m30s` (humantime), or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (try 250ms, 1s, 30s)"))
}

/// Logs on stderr, filtered by `RUST_LOG` (else `default`); with `otlp`
/// (the endpoint and the service name), traces too, returned to be flushed
/// at exit. Call within the runtime.
fn init_tracing(
    format: LogFormat,
    default: &str,
    otlp: Option<(&str, &'static str)>,
) -> Result<Option<traces::Traces>, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Through the progress bars while they are drawn.
    let logs = tracing_subscriber::fmt::layer().with_writer(bars::LogWriter);
    let logs = match format {
        // Colour codes only for a person at a terminal, not in log files.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        // The event's message and fields at the top level beside
        // `timestamp`, `level` and `target`, as log pipelines index them.
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let (traces, tracer) = match otlp {
        Some((endpoint, service)) => {
            let (traces, tracer) = traces::start(endpoint, service)?;
            (Some(traces), Some(tracer))
        }
        None => (None, None),
    };
    // Each layer with its own filter: the log filter does not decide what
    // is traced, nor the other way round.
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Every span of a kind comes from one line of one file:
            // where, which target and which thread say nothing.
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_filter(traces::filter())
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .init();
    Ok(traces)
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does by itself: each connection is a descriptor, and the stock soft limit
/// (1,024) is far below what one server or load generator holds. Logs the
/// limit in force.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files_limit = limit, "file descriptor limit"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::SERVER_ERROR);
        }
    };
    let (default_filter, otlp) = match &cli.command {
        Command::Server(args) => (
            "info",
            args.otlp_endpoint.as_deref().map(|e| (e, "station-server")),
        ),
        Command::Client(args) => (
            "warn",
            args.otlp_endpoint.as_deref().map(|e| (e, "station-client")),
        ),
        Command::Demo(_) | Command::Stats(_) => ("warn", None),
        Command::Load(_) => ("warn,station=info", None),
    };
    // Within the runtime: the trace exporter's channel runs on it.
    let traces = {
        let _runtime = runtime.enter();
        match init_tracing(cli.log_format, default_filter, otlp) {
            Ok(traces) => traces,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::USAGE);
            }
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => {
                raise_open_files_limit();
                server::run(args).await
            }
            Command::Client(args) => client::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Stats(args) => server::stats(args).await,
            Command::Load(args) => {
                raise_open_files_limit();
                load::run(args).await
            }
        }
    });
    // Spans ended last (the streams a stopping server ended, a client's
    // session) are still queued: send them while the runtime, which the
    // exporter's channel runs on, is alive.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("soon").is_err());
    }

    fn server_config(args: &[&str]) -> Result<station_net::ServerConfig, String> {
        let argv = ["station", "server", "--port", "0"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Server(args) => server::config(&args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_streams_keeps_its_old_flag_name() {
        let old = server_config(&["--max-sessions", "7"]).expect("valid");
        let new = server_config(&["--max-streams", "7"]).expect("valid");
        assert_eq!((old.max_streams, new.max_streams), (7, 7));
    }

    #[test]
    fn unworkable_server_settings_are_refused_with_the_rule() {
        let cases: [(&[&str], &str); 4] = [
            (
                &["--interval", "40s", "--session-ttl", "30s"],
                "plus silence timeout",
            ),
            (
                &["--interval", "40ms", "--window", "256"],
                "acknowledge every 64",
            ),
            (&["--silence-timeout", "100ms"], "acknowledge every 1"),
            (&["--session-ttl", "1000d"], "session TTL"),
        ];
        for (args, rule) in cases {
            let err = server_config(args).unwrap_err();
            assert!(err.contains(rule), "{args:?}: {err}");
        }
        assert!(server_config(&[]).is_ok());
        assert!(server_config(&["--interval", "40ms", "--window", "128"]).is_ok());
        // A huge interval is refused, not an overflow.
        assert!(server_config(&["--interval", "100000000000d"]).is_err());
    }

    #[test]
    fn unworkable_client_settings_are_refused_with_the_rule() {
        let parse = |give_up: &str| {
            let argv = [
                "station",
                "client",
                "--port",
                "1",
                "--give-up-after",
                give_up,
            ];
            match Cli::try_parse_from(argv).expect("flags parse").command {
                Command::Client(args) => client::config(&args),
                other => panic!("{other:?}"),
            }
        };
        assert!(parse("60s").is_ok());
        let err = parse("0s").unwrap_err();
        assert!(
            err.contains("--give-up-after") && err.contains("retry"),
            "{err}"
        );
        assert!(parse("1000d").is_err());
    }

    #[test]
    fn count_out_of_range_is_a_usage_error() {
        for bad in ["0", "65536", "4294967295", "-1"] {
            let err = Cli::try_parse_from(["station", "client", "--port", "1", "--count", bad])
                .unwrap_err();
            assert_eq!(err.exit_code(), i32::from(exit::USAGE), "{bad}");
        }
        assert!(
            Cli::try_parse_from(["station", "client", "--port", "1", "--count", "65535"]).is_ok()
        );
    }

    /// Regression: `--host ::1` built `http://::1:N`, which no URI parser
    /// accepts. IPv6 literals get brackets; names and IPv4 do not.
    #[tokio::test]
    async fn ipv6_hosts_get_brackets_in_urls() {
        use station_net::client::{ChannelOptions, Endpoints};
        assert_eq!(url("http", "::1", 50051), "http://[::1]:50051");
        assert_eq!(url("https", "fe80::1", 1), "https://[fe80::1]:1");
        assert_eq!(url("http", "127.0.0.1", 2), "http://127.0.0.1:2");
        assert_eq!(url("http", "localhost", 3), "http://localhost:3");
        let opts = ChannelOptions::default();
        assert!(Endpoints::tcp(&[url("http", "::1", 50051)], &opts).is_ok());
        assert!(Endpoints::tcp(&["http://::1:50051".into()], &opts).is_err());
    }
}
