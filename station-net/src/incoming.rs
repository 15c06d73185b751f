//! [`Incoming`]: accepted TCP connections for the server, with an accept loop
//! that backs off when the process runs out of file descriptors.
//!
//! tonic's serve loop logs a failed accept at `trace` level and polls again
//! at once. When the failure is `EMFILE` (or `ENFILE`, `ENOBUFS`, `ENOMEM`)
//! the listener stays readable, because the kernel keeps completing
//! handshakes into the backlog, so that loop spins on a core and says
//! nothing, while every new client waits in the backlog. Here such an error
//! pauses accepting (10 ms, doubling up to 1 s, reset by the next success)
//! and is logged once per episode, with the limit; streams already attached
//! are served all along, since they need no new descriptor. Other accept
//! errors (a connection reset before it was accepted) are per-connection
//! and skipped at once.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_stream::Stream;

use crate::coalesce::Coalesce;

/// First pause after running out of descriptors.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause: how late a freed descriptor may be put to use.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The connections a listener accepts, ready for the server: no Nagle
/// delay, writes coalesced (see [`Coalesce`]).
pub struct Incoming {
    listener: TcpListener,
    /// Set while accepting is paused.
    pause: Option<Pin<Box<Sleep>>>,
    /// The next pause, if accepting fails again.
    next_pause: Duration,
    /// Failures in the current episode of resource exhaustion.
    failures: u64,
}

impl Incoming {
    /// Accepts from `listener`.
    pub fn new(listener: TcpListener) -> Self {
        Incoming {
            listener,
            pause: None,
            next_pause: FIRST_PAUSE,
            failures: 0,
        }
    }

    fn accepted(&mut self, stream: TcpStream) -> Coalesce<TcpStream> {
        if self.failures > 0 {
            tracing::info!(
                refused_attempts = self.failures,
                "accepting connections again: file descriptors are available"
            );
            self.failures = 0;
        }
        self.next_pause = FIRST_PAUSE;
        // Numbers are tiny and latency matters more than packing: no Nagle
        // delay, but frames of the streams ready together share a write.
        let _ = stream.set_nodelay(true);
        Coalesce::new(stream)
    }

    fn exhausted(&mut self, error: &io::Error) {
        if self.failures == 0 {
            tracing::warn!(
                %error,
                open_files_limit = ?open_files_limit(),
                "cannot accept connections: out of file descriptors or memory; \
                 pausing accepts (up to {MAX_PAUSE:?} at a time) until some are freed, \
                 attached streams are still served"
            );
        }
        self.failures += 1;
        self.pause = Some(Box::pin(tokio::time::sleep(self.next_pause)));
        self.next_pause = (self.next_pause * 2).min(MAX_PAUSE);
    }
}

impl Stream for Incoming {
    type Item = io::Result<Coalesce<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(pause) = &mut this.pause {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, _peer)) => return Poll::Ready(Some(Ok(this.accepted(stream)))),
                Err(e) if is_exhaustion(&e) => this.exhausted(&e),
                // One connection's trouble (reset before accept): tonic
                // skips it, and the next accept is not affected.
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// Whether an accept error means the process or system is out of a
/// resource, so accepting again at once would fail again.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The soft limit on open files, for the log line.
fn open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}
