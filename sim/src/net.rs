//! The only sim-specific transport code: turmoil sockets shaped the way
//! `station-net` takes its transport (as turmoil's grpc example does).
//!
//! - Server: [`incoming`] turns a [`turmoil::net::TcpListener`] into the
//!   stream of accepted connections that [`station_net::serve`] takes.
//! - Client: [`channel_factory`] builds tonic channels whose connector
//!   dials [`turmoil::net::TcpStream`]s, with the same settings as
//!   `Endpoints::tcp` uses over real TCP (`ChannelOptions::apply`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use station_net::client::{ChannelFactory, ChannelOptions};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Endpoint, Uri};

/// The port every simulated server listens on.
pub const PORT: u16 = 9999;

/// An accepted simulated connection, as tonic's server wants it. The flag
/// plants [`Bug::ResumeIndexOff`](crate::Bug::ResumeIndexOff).
#[derive(Debug)]
pub struct SimIo(pub turmoil::net::TcpStream, bool);

impl Connected for SimIo {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if self.1 {
            skew_resume_index(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

/// The planted resume-index bug: flips the low bit of every
/// `Resume.next_index` in bytes a server reads, so the server resumes one
/// number off from where the client asked.
///
/// A `Resume` is encoded as field 1, the 36-byte client id text
/// (`0a 24 ...`), field 2, the 16-byte token (`12 10 ...`), then field 3,
/// the index as a varint (`18 ..`; absent when zero, and then left alone).
/// Flipping bit 0 of the varint's first byte keeps its length.
fn skew_resume_index(bytes: &mut [u8]) {
    const LEN: usize = 2 + 36 + 2 + 16 + 2;
    let mut i = 0;
    while i + LEN <= bytes.len() {
        let b = &bytes[i..i + LEN];
        let uuid = &b[2..38];
        let found = b[0] == 0x0a
            && b[1] == 36
            && b[38] == 0x12
            && b[39] == 16
            && b[56] == 0x18
            && uuid.iter().enumerate().all(|(k, c)| match k {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        if found {
            bytes[i + 57] ^= 1;
            i += LEN;
        } else {
            i += 1;
        }
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts connections on [`PORT`] for as long as the host runs.
///
/// Binding happens before this returns, so a client dialling right after
/// the host (re)starts finds the listener.
pub async fn incoming(skew_resume: bool) -> io::Result<ReceiverStream<io::Result<SimIo>>> {
    let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, PORT)).await?;
    // A small accept task feeding a channel: the simplest `Stream` over an
    // async accept loop without another dependency.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener
                .accept()
                .await
                .map(|(stream, _)| SimIo(stream, skew_resume));
            if tx.send(accepted).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Channels to the simulated host `host`, with the production client's
/// connection settings ([`ChannelOptions::default`]).
pub fn channel_factory(host: &str) -> ChannelFactory {
    let endpoint = Endpoint::from_shared(format!("http://{host}:{PORT}"))
        .expect("simulated host names are valid URIs");
    let endpoint = ChannelOptions::default().apply(endpoint).tcp_nodelay(true);
    let host: Arc<str> = host.into();
    Arc::new(move || {
        let host = host.clone();
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let host = host.clone();
            async move {
                let stream = turmoil::net::TcpStream::connect((&*host, PORT)).await?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }))
    })
}
