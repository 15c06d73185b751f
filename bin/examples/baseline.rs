//! A bare baseline for benchmarks: the same gRPC method and message shapes
//! as the real server, with no sessions, no store and no core. Each stream
//! sends `Attached`, then `count` numbers one per interval from a simple
//! generator, the last with its CRC-32, and discards acknowledgements.
//!
//! `station load` can target it, so the cost of the real server's session
//! machinery is the difference between the two in one run:
//!
//! ```sh
//! cargo run --release --example baseline -- --port 50052 --interval 0s
//! ```
//!
//! `--ack-every 1` has its clients acknowledge every number, as the
//! station's do, so both directions carry the same messages.

use std::net::SocketAddr;
use std::time::Duration;

use station_net::proto::client_message::Kind as ClientKind;
use station_net::proto::numbers_station_server::{NumbersStation, NumbersStationServer};
use station_net::proto::server_message::Kind as ServerKind;
use station_net::proto::{Attached, ClientMessage, Number, ServerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

struct Baseline {
    interval: Duration,
    /// What `Attached` asks of clients: `u32::MAX` (never acknowledge, the
    /// default) or 1 (acknowledge every number, as the station's clients
    /// do), so a run can compare the same messages in both directions.
    ack_every: u32,
}

#[tonic::async_trait]
impl NumbersStation for Baseline {
    type StreamStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ClientMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let count = match inbound.message().await? {
            Some(ClientMessage {
                kind: Some(ClientKind::Open(open)),
            }) => open.count,
            _ => return Err(Status::invalid_argument("the baseline only serves Open")),
        };
        let (interval, ack_every) = (self.interval, self.ack_every);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let attached = ServerKind::Attached(Box::new(Attached {
                count,
                next_index: 0,
                resume_token: vec![0; 16],
                session_ttl: prost_types::Duration::try_from(Duration::from_secs(30)).ok(),
                interval: prost_types::Duration::try_from(interval).ok(),
                ack_every,
            }));
            if tx
                .send(Ok(ServerMessage {
                    kind: Some(attached),
                }))
                .await
                .is_err()
            {
                return;
            }
            let mut ticks = tokio::time::interval(interval.max(Duration::from_nanos(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut crc = crc32fast::Hasher::new();
            let mut state: u64 = rand::random();
            // Clients asked to acknowledge are read while the stream waits
            // for its tick, as a server that uses acknowledgements must:
            // unread until the last number, they cost this baseline 70 %
            // more memory per client (BENCHMARKS.md).
            let mut reading = ack_every != u32::MAX;
            for index in 0..count {
                if !interval.is_zero() {
                    loop {
                        tokio::select! {
                            biased;
                            _ = ticks.tick() => break,
                            msg = inbound.message(), if reading => {
                                reading = matches!(msg, Ok(Some(_)));
                            }
                        }
                    }
                }
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let value = (state >> 32) as u32 ^ state as u32;
                crc.update(&value.to_be_bytes());
                let checksum = (index + 1 == count).then(|| crc.clone().finalize());
                let number = ServerKind::Number(Number {
                    index,
                    value,
                    checksum,
                });
                if tx
                    .send(Ok(ServerMessage { kind: Some(number) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Drain acks until the client closes, so the stream ends cleanly.
            while let Ok(Some(_)) = inbound.message().await {}
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 50052u16;
    let mut interval = Duration::from_secs(1);
    let mut ack_every = u32::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or("every flag takes a value")?;
        match flag.as_str() {
            "--port" => port = value.parse()?,
            "--interval" => interval = humantime::parse_duration(&value)?,
            "--ack-every" => ack_every = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(10_000))
            .add_service(NumbersStationServer::new(Baseline {
                interval,
                ack_every,
            }))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
