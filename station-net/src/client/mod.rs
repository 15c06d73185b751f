//! The client driver: runs a core [`Client`] over gRPC streams.
//!
//! [`run`] is the core's run loop: drain the client's outputs (open a
//! stream on the current endpoint, send an ack, drop a silent stream), then
//! wait for the first of a server message, the end of the stream, or the
//! client's timer. Reconnection decisions are the core's; the driver only
//! rotates to the next endpoint when a stream fails, so a client given
//! several servers fails over between them.
//!
//! Every session run with the same [`DriverOptions`] (clones share it)
//! spends one retry budget ([`SharedBudget`]), so a process running many
//! sessions -- `station load` -- throttles its retries as a whole when most
//! of its streams fail, instead of multiplying a server's trouble.
//!
//! This file holds the run loop; beside it, `endpoints` holds the servers
//! and the one connection each that sessions share ([`Endpoints`],
//! [`ChannelOptions`]), and `budget` the [`SharedBudget`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use station_core::client::{self, Client, Decision, Outcome, Output, Request, StreamEnd};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

pub use self::budget::SharedBudget;
use self::endpoints::Via;
pub use self::endpoints::{ChannelFactory, ChannelOptions, EndpointError, Endpoints};
use crate::clock::{now, sleep_until};
pub use crate::otel::TraceHeaders;
use crate::proto::client_message::Kind as ClientKind;
use crate::proto::numbers_station_client::NumbersStationClient;
use crate::proto::server_message::Kind as ServerKind;
use crate::proto::{Ack, ClientMessage, Open, Resume, ServerMessage};
use crate::status::{to_stream_end, wire_duration};

mod budget;
mod endpoints;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Driver settings.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// After the final ack, wait this long for the server to end the stream
    /// (so it has deleted the session) before returning.
    pub linger: Duration,
    /// Largest server message accepted (bytes).
    pub max_message_size: usize,
    /// The retry budget the sessions run with these options share.
    /// `default()` makes a new one: to share one across a process's
    /// sessions, run them all with (clones of) one `DriverOptions`.
    pub budget: SharedBudget,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            linger: Duration::from_secs(2),
            max_message_size: 1024,
            budget: SharedBudget::new(),
        }
    }
}

/// What happened, for progress bars, logs and state files.
#[derive(Debug)]
pub enum Event<'a> {
    /// A stream is being opened.
    Connecting {
        /// Endpoint name.
        endpoint: &'a str,
        /// The first message.
        request: &'a Request,
    },
    /// The process's open throttle held back a new session's `Open`: no
    /// stream was opened; the session asks again later.
    HeldBack {
        /// The endpoint it would have gone to.
        endpoint: &'a str,
    },
    /// The server attached the stream.
    Attached {
        /// Endpoint name.
        endpoint: &'a str,
        /// First index the stream sends.
        next_index: u32,
        /// Time between numbers announced by the server.
        interval: Duration,
    },
    /// A number was received (possibly a duplicate, then not counted).
    Number {
        /// Its index.
        index: u32,
    },
    /// The server holds its numbers: its store has not confirmed its
    /// lease (a `Paused`, at most one an interval).
    Paused {
        /// Endpoint name.
        endpoint: &'a str,
    },
    /// The stream ended before completion.
    Failed {
        /// Endpoint name.
        endpoint: &'a str,
        /// How.
        end: &'a StreamEnd,
    },
    /// The stream went silent and was dropped.
    Silent {
        /// Endpoint name.
        endpoint: &'a str,
    },
}

type Call =
    Pin<Box<dyn Future<Output = Result<Response<Streaming<ServerMessage>>, Status>> + Send>>;

/// The current stream, if any. One per session, so the size difference
/// between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
enum Stream {
    None,
    /// Request sent, waiting for response headers.
    Calling {
        tx: mpsc::Sender<ClientMessage>,
        call: Call,
    },
    /// Receiving messages.
    Open {
        tx: mpsc::Sender<ClientMessage>,
        inbound: Streaming<ServerMessage>,
    },
}

/// What woke the driver; lives only until it is handled.
#[allow(clippy::large_enum_variant)]
enum Step {
    Headers(Result<Response<Streaming<ServerMessage>>, Status>),
    Message(Result<Option<ServerMessage>, Status>),
    Timer,
}

impl Stream {
    fn tx(&self) -> Option<&mpsc::Sender<ClientMessage>> {
        match self {
            Stream::None => None,
            Stream::Calling { tx, .. } | Stream::Open { tx, .. } => Some(tx),
        }
    }

    async fn next(&mut self) -> Step {
        match self {
            Stream::None => std::future::pending().await,
            Stream::Calling { call, .. } => Step::Headers(call.await),
            Stream::Open { inbound, .. } => Step::Message(inbound.message().await),
        }
    }
}

/// Runs `client` to its outcome over `endpoints`, reporting progress to
/// `observe` (called with the client after each event, e.g. to snapshot it).
pub async fn run(
    endpoints: &Endpoints,
    opts: &DriverOptions,
    client: Client,
    observe: impl FnMut(Event<'_>, &Client),
) -> Outcome {
    run_in_trace(endpoints, opts, client, &TraceHeaders::none(), observe).await
}

/// [`run`], sending `trace` with every stream of the session, on every
/// server, so that all of them join one trace (see [`crate::otel`]).
pub async fn run_in_trace(
    endpoints: &Endpoints,
    opts: &DriverOptions,
    mut client: Client,
    trace: &TraceHeaders,
    mut observe: impl FnMut(Event<'_>, &Client),
) -> Outcome {
    let mut stream = Stream::None;
    let mut via: Option<Via> = None;
    let mut current = 0usize;
    // Whether the last input was the client's timer: a `Disconnect` then
    // is a silent stream; after a message, the message broke the protocol,
    // which says nothing against the connection that carried it.
    let mut timer_woke = false;
    // The current stream began with an `Open` that was sent and whose
    // fate the open throttle has not heard yet: its `Attached` is an
    // accept; its end, or a silent drop, before one is not.
    let mut opening = false;
    let _seat = opts.budget.join();
    loop {
        // The last input's attempt, if it ended one, goes to the budget
        // first: a throttled retry is pushed back before the deadline is
        // read below.
        if let Some(attempt) = client.poll_attempt() {
            if opts.budget.record(attempt) == Decision::Throttle {
                client.handle_throttled(now());
            }
        }
        while let Some(output) = client.poll_output() {
            match output {
                Output::Connect(request) => {
                    let name = &endpoints.targets[current].name;
                    // Whatever stream came before was settled where it
                    // went: at its `Attached`, its end, or its `Disconnect`.
                    opening = matches!(request, Request::Open { .. });
                    if opening && !opts.budget.ask_open(now(), client.throttle_draw()) {
                        opening = false;
                        client.handle_held_back(now());
                        observe(Event::HeldBack { endpoint: name }, &client);
                        continue;
                    }
                    observe(
                        Event::Connecting {
                            endpoint: name,
                            request: &request,
                        },
                        &client,
                    );
                    let connection = endpoints.connection(current);
                    stream = open(connection.channel.clone(), opts, trace, request);
                    via = Some(Via::new(connection, now()));
                }
                Output::Ack(next_index) => {
                    if let Some(tx) = stream.tx() {
                        // Acks are cumulative: if the buffer is full the next
                        // one carries this one's news.
                        let sent = tx.try_send(ClientMessage {
                            kind: Some(ClientKind::Ack(Ack { next_index })),
                        });
                        if let (Ok(()), Some(via)) = (sent, via.as_mut()) {
                            via.sent = now();
                        }
                    }
                }
                Output::Disconnect => {
                    if std::mem::take(&mut opening) {
                        opts.budget.open_not_accepted(now());
                    }
                    if !matches!(stream, Stream::None) {
                        let endpoint = &endpoints.targets[current].name;
                        observe(Event::Silent { endpoint }, &client);
                        stream = Stream::None;
                        if let (Some(via), true) = (via.take(), timer_woke) {
                            endpoints.replace_if_dead(current, &via, false);
                        }
                        current = (current + 1) % endpoints.len();
                    }
                }
                Output::Finished(outcome) => {
                    linger(stream, opts.linger).await;
                    return outcome;
                }
            }
        }
        let deadline = client.poll_timeout();
        let step = tokio::select! {
            biased;
            step = stream.next() => step,
            _ = sleep_until(deadline) => Step::Timer,
        };
        let now = now();
        let endpoint = endpoints.targets[current].name.as_str();
        timer_woke = matches!(step, Step::Timer);
        let end = match step {
            Step::Timer => {
                // Other streams' messages on this one's connection since its
                // own last: the server is alive, only late for this stream
                // (under load). Keep it rather than resume, which would cost
                // that server a store load and a takeover more.
                if let Some(via) = via.as_mut().filter(|via| via.others_heard()) {
                    via.held = now;
                    client.handle_server_busy(now);
                }
                client.handle_timeout(now);
                continue;
            }
            Step::Headers(Ok(response)) => {
                let tx = match std::mem::replace(&mut stream, Stream::None) {
                    Stream::Calling { tx, .. } => tx,
                    _ => unreachable!("headers only arrive while calling"),
                };
                stream = Stream::Open {
                    tx,
                    inbound: response.into_inner(),
                };
                if let Some(via) = via.as_mut() {
                    via.answered(now);
                }
                continue;
            }
            Step::Message(Ok(Some(msg))) => {
                if let Some(via) = via.as_mut() {
                    via.heard(now);
                }
                match msg.kind {
                    Some(ServerKind::Attached(a)) => {
                        let attached = client::Attached {
                            count: a.count,
                            next_index: a.next_index,
                            token: &a.resume_token,
                            ttl: duration(a.session_ttl),
                            interval: duration(a.interval),
                            ack_every: a.ack_every,
                        };
                        if std::mem::take(&mut opening) {
                            opts.budget.open_accepted(now);
                        }
                        client.handle_attached(now, attached);
                        let event = Event::Attached {
                            endpoint,
                            next_index: a.next_index,
                            interval: attached.interval,
                        };
                        observe(event, &client);
                    }
                    Some(ServerKind::Number(n)) => {
                        client.handle_number(
                            now,
                            client::Number {
                                index: n.index,
                                value: n.value,
                                checksum: n.checksum,
                            },
                        );
                        observe(Event::Number { index: n.index }, &client);
                    }
                    Some(ServerKind::Paused(p)) => {
                        client.handle_paused(now, p.next_index);
                        observe(Event::Paused { endpoint }, &client);
                    }
                    None => {} // A newer server's message kind: ignore it.
                }
                continue;
            }
            Step::Message(Ok(None)) => StreamEnd::Ok,
            Step::Headers(Err(status)) => to_stream_end(&status),
            Step::Message(Err(status)) => message_error(&status),
        };
        stream = Stream::None;
        if std::mem::take(&mut opening) {
            opts.budget.open_not_accepted(now);
        }
        let via = via.take();
        observe(
            Event::Failed {
                endpoint,
                end: &end,
            },
            &client,
        );
        if end != StreamEnd::Ok {
            // The server gave up on hearing from us: our direction of this
            // connection may be dead, so the next stream gets a new one.
            if matches!(
                end,
                StreamEnd::Status {
                    code: client::Code::DeadlineExceeded,
                    ..
                }
            ) {
                if let Some(via) = &via {
                    endpoints.replace_if_dead(current, via, true);
                }
            }
            current = (current + 1) % endpoints.len();
        }
        client.handle_end(now, end);
    }
}

/// How reading the stream's messages failed. tonic reports a message over
/// our decode limit as OUT_OF_RANGE, with no details: the server broke the
/// protocol (its messages are small), it did not reject us. A station
/// never sends OUT_OF_RANGE to a client that keeps to the protocol (its
/// own OUT_OF_RANGE answers a client message over its limit), and every
/// status it sends carries an ErrorInfo reason.
fn message_error(status: &Status) -> StreamEnd {
    match to_stream_end(status) {
        StreamEnd::Status {
            code: client::Code::OutOfRange,
            reason: None,
            message,
            ..
        } => StreamEnd::Protocol(format!("a message over the decode limit: {message}")),
        end => end,
    }
}

fn open(channel: Channel, opts: &DriverOptions, trace: &TraceHeaders, request: Request) -> Stream {
    let first = match request {
        Request::Open {
            client_id,
            count,
            nonce,
        } => ClientKind::Open(Open {
            client_id: client_id.to_string(),
            count,
            open_nonce: nonce.as_bytes().to_vec(),
        }),
        Request::Resume {
            client_id,
            token,
            next_index,
        } => ClientKind::Resume(Resume {
            client_id: client_id.to_string(),
            resume_token: token.as_bytes().to_vec(),
            next_index,
        }),
    };
    let (tx, rx) = mpsc::channel(32);
    tx.try_send(ClientMessage { kind: Some(first) })
        .expect("a new channel has room for the first message");
    let mut grpc =
        NumbersStationClient::new(channel).max_decoding_message_size(opts.max_message_size);
    let mut call = tonic::Request::new(ReceiverStream::new(rx));
    trace.apply(call.metadata_mut());
    let call: Call = Box::pin(async move { grpc.stream(call).await });
    Stream::Calling { tx, call }
}

/// Half-closes the stream and waits briefly for the server to end it, so
/// the final ack is delivered and the session deleted.
async fn linger(stream: Stream, limit: Duration) {
    if let Stream::Open { tx, mut inbound } = stream {
        drop(tx);
        let _ = tokio::time::timeout(limit, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
}

/// A server's duration as the core takes it: missing or negative is zero,
/// anything else as large as it is (the core refuses absurd ones). See
/// [`wire_duration`] for why not prost's conversion.
fn duration(d: Option<prost_types::Duration>) -> Duration {
    d.and_then(wire_duration).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire's durations come from the server: any value must convert
    /// without panicking (prost's conversion panicked on `i64::MIN`
    /// seconds). Huge ones reach the core as they are (it refuses them as a
    /// protocol error); negative or missing ones become zero.
    #[test]
    fn any_wire_duration_converts() {
        let extremes = [i64::MIN, -1, 0, 1, 1 << 62, i64::MAX];
        let nanos = [i32::MIN, -1, 0, 999_999_999, 1_000_000_000, i32::MAX];
        for seconds in extremes {
            for nanos in nanos {
                let d = duration(Some(prost_types::Duration { seconds, nanos }));
                if seconds < 0 || nanos < 0 {
                    assert_eq!(d, Duration::ZERO, "{seconds} {nanos}");
                }
            }
        }
        assert_eq!(duration(None), Duration::ZERO);
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(duration(Some(negative)), Duration::ZERO);
        let d = duration(Some(prost_types::Duration {
            seconds: 1 << 62,
            nanos: 0,
        }));
        assert_eq!(d, Duration::from_secs(1 << 62));
    }
}
