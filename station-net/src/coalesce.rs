//! Write coalescing under HTTP/2 connections.
//!
//! Each session is one HTTP/2 stream that sends a ~24-byte frame per tick.
//! h2's connection task is woken for each frame and flushes it on its own:
//! with 100,000 streams over 64 connections that is one `writev` syscall, one
//! loopback segment and one wakeup of the reader per number.
//!
//! [`Coalesce`] sits between h2 and the socket. Writes go to a buffer, and the
//! first flush of buffered data does not write: it yields. It wakes its own
//! task and returns `Pending`, and tokio queues a task that woke itself behind
//! the tasks already ready to run (as `tokio::task::yield_now` does). Those
//! include the streams about to queue frames on this connection, so when the
//! connection task flushes again, their frames are in the buffer too, and one
//! write carries them all.
//!
//! The trade: there is no timer. When the runtime is idle, the cost is one
//! extra poll of the connection task. When it is busy, a frame waits for the
//! tasks that were ready before it, and frames from many streams share a
//! write.
//!
//! A flush still completes only once its data has been written to the socket,
//! so `flush().await` keeps its meaning for any caller, not only h2.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Default buffer limit, bytes: beyond it, writes go out without waiting for
/// a flush.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// Buffers writes to `T` and defers the first flush of them by one pass of
/// the run queue (see the [module docs](self)).
///
/// Reads pass straight through.
pub struct Coalesce<T> {
    inner: T,
    buf: Vec<u8>,
    limit: usize,
    /// The buffered data has had its one deferral: the next flush writes it.
    deferred: bool,
}

impl<T> Coalesce<T> {
    /// Wraps `inner` with a [`DEFAULT_LIMIT`]-byte buffer.
    pub fn new(inner: T) -> Self {
        Self::with_limit(inner, DEFAULT_LIMIT)
    }

    /// Wraps `inner`, buffering up to `limit` bytes. A single write larger
    /// than `limit` bypasses the buffer (after the buffer is written out).
    pub fn with_limit(inner: T, limit: usize) -> Self {
        Coalesce {
            inner,
            buf: Vec::new(),
            limit,
            deferred: false,
        }
    }

    /// The wrapped I/O. Writing to it directly would reorder bytes, so there
    /// is no `get_mut`, and no `into_inner` that could drop buffered bytes.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes the whole buffer to the inner I/O, keeping what is left on
    /// `Pending` or error.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf))?;
            if n == 0 {
                // Retrying would spin.
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        // The deferral belonged to the data just written.
        self.deferred = false;
        Poll::Ready(Ok(()))
    }

    /// Makes room for a `len`-byte write. `Ok(false)`: the write is larger
    /// than the buffer, and goes straight to the inner I/O.
    fn poll_reserve(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len().saturating_add(len) > self.limit {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len <= self.limit))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_reserve(cx, data.len()))? {
            this.buf.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        } else {
            Pin::new(&mut this.inner).poll_write(cx, data)
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().fold(0, |n: usize, b| n.saturating_add(b.len()));
        if ready!(this.poll_reserve(cx, len))? {
            for b in bufs {
                this.buf.extend_from_slice(b);
            }
            Poll::Ready(Ok(len))
        } else {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            if !this.deferred {
                // Yield once, so that tasks ready now can add to this write.
                // `Pending`, not `Ready`: the data is not written, and
                // `Pending` makes the caller flush again when woken (given
                // `Ready`, h2 may flush again within the same poll). The
                // flag makes that flush write: one yield per batch, no spin.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Coalesce<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: fmt::Debug> fmt::Debug for Coalesce<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("buffered", &self.buf.len())
            .field("limit", &self.limit)
            .field("deferred", &self.deferred)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};
    use std::time::Duration;

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;
    use tokio_stream::wrappers::TcpListenerStream;
    use tokio_stream::StreamExt;
    use tonic::transport::{Endpoint, Server, Uri};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    /// Bound on anything that could hang if data were stranded.
    const BOUND: Duration = Duration::from_secs(10);

    /// Counts the write calls that reach the wrapped I/O.
    struct Counting<T> {
        inner: T,
        writes: usize,
    }

    impl<T> Counting<T> {
        fn new(inner: T) -> Self {
            Counting { inner, writes: 0 }
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            Pin::new(&mut this.inner).poll_write(cx, data)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct WakeCount(AtomicUsize);

    impl WakeCount {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Runs `f` for up to [`BOUND`]. Unlike `tokio::time::timeout`, it does
    /// not poll `f` once more when the time is up: that poll would complete a
    /// flush that was left `Pending` without a wake, hiding the bug.
    async fn bounded<F: Future>(f: F) -> io::Result<F::Output> {
        tokio::select! {
            biased;
            () = tokio::time::sleep(BOUND) => Err(io::ErrorKind::TimedOut.into()),
            out = f => Ok(out),
        }
    }

    /// `len` bytes that differ from their neighbours, so that lost or
    /// reordered bytes show.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn read_n(r: &mut (impl AsyncRead + Unpin), n: usize) -> io::Result<Vec<u8>> {
        let mut got = vec![0; n];
        bounded(r.read_exact(&mut got)).await??;
        Ok(got)
    }

    #[tokio::test]
    async fn small_writes_reach_inner_in_one_write() -> io::Result<()> {
        let (a, mut b) = duplex(1 << 20);
        let mut w = Coalesce::new(Counting::new(a));
        let data = pattern(1000 * 24);
        for (i, frame) in data.chunks(24).enumerate() {
            if i % 2 == 0 {
                w.write_all(frame).await?;
            } else {
                let (x, y) = frame.split_at(9);
                let n = w
                    .write_vectored(&[IoSlice::new(x), IoSlice::new(y)])
                    .await?;
                assert_eq!(n, frame.len(), "a small vectored write is taken whole");
            }
        }
        assert_eq!(w.get_ref().writes, 0);

        bounded(w.flush()).await??;
        assert_eq!(w.get_ref().writes, 1);
        assert_eq!(read_n(&mut b, data.len()).await?, data);
        Ok(())
    }

    #[tokio::test]
    async fn writes_past_the_limit_keep_order() -> io::Result<()> {
        let (a, mut b) = duplex(1 << 20);
        let mut w = Coalesce::with_limit(Counting::new(a), 1024);
        let data = pattern(20_000);
        let mut rest = &data[..];
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        };

        w.write_all(take(100)).await?;
        w.write_all(take(5000)).await?; // drains the 100, then bypasses
        for _ in 0..30 {
            w.write_all(take(100)).await?; // fills and drains the buffer
        }
        let (x, y) = (take(700), take(700));
        let n = w
            .write_vectored(&[IoSlice::new(x), IoSlice::new(y)])
            .await?;
        w.write_all(&[x, y].concat()[n..]).await?;
        w.write_all(rest).await?;

        bounded(w.flush()).await??;
        assert!(w.get_ref().writes > 1, "the limit forced early writes");
        assert_eq!(read_n(&mut b, data.len()).await?, data);
        Ok(())
    }

    #[tokio::test]
    async fn backpressure_loses_nothing() -> io::Result<()> {
        // A 64-byte pipe: writes are partial or `Pending` most of the time.
        let (a, mut b) = duplex(64);
        let mut w = Coalesce::with_limit(a, 1000);
        let data = pattern(200_000);

        let send = async {
            let mut rest = &data[..];
            for i in 1.. {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((i * 37 % 3000).min(rest.len()));
                rest = tail;
                w.write_all(chunk).await?;
                if i % 5 == 0 {
                    w.flush().await?;
                }
            }
            w.shutdown().await
        };
        let mut got = Vec::new();
        let (sent, read) = bounded(async { tokio::join!(send, b.read_to_end(&mut got)) }).await?;
        sent?;
        read?;
        assert_eq!(got, data);
        Ok(())
    }

    #[tokio::test]
    async fn first_flush_defers_and_wakes_once() -> io::Result<()> {
        let (a, mut b) = duplex(1024);
        let mut w = Coalesce::new(Counting::new(a));
        let wakes = Arc::new(WakeCount::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut w = Pin::new(&mut w);

        // Nothing buffered: no deferral, no wake.
        assert!(matches!(
            w.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(wakes.get(), 0);

        assert!(matches!(
            w.as_mut().poll_write(&mut cx, b"hello"),
            Poll::Ready(Ok(5))
        ));
        assert!(w.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.get(), 1, "the deferral schedules a re-poll");
        assert_eq!(w.get_ref().writes, 0, "the first flush does not write");

        // A write after the deferral joins the same batch.
        assert!(matches!(
            w.as_mut().poll_write(&mut cx, b", world"),
            Poll::Ready(Ok(7))
        ));
        assert!(matches!(
            w.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(w.get_ref().writes, 1);
        assert_eq!(wakes.get(), 1);

        // Nothing left: no further wakes, so no busy loop.
        assert!(matches!(
            w.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(wakes.get(), 1);
        assert_eq!(w.get_ref().writes, 1);

        // New data is deferred again.
        assert!(matches!(
            w.as_mut().poll_write(&mut cx, b"!"),
            Poll::Ready(Ok(1))
        ));
        assert!(w.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.get(), 2);
        assert!(matches!(
            w.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));

        assert_eq!(read_n(&mut b, 13).await?, b"hello, world!");
        Ok(())
    }

    #[tokio::test]
    async fn flush_await_delivers_everything() -> io::Result<()> {
        let (a, mut b) = duplex(1024);
        let mut w = Coalesce::new(a);
        for round in 0..3u8 {
            let data = [round; 100];
            w.write_all(&data[..40]).await?;
            w.write_all(&data[40..]).await?;
            bounded(w.flush()).await??;
            // Nothing but the flush has run: the bytes must be in the pipe.
            let mut got = [0; 100];
            let n = bounded(b.read(&mut got)).await??;
            assert_eq!(n, 100, "round {round}");
            assert_eq!(got, data);
        }
        Ok(())
    }

    #[tokio::test]
    async fn shutdown_writes_buffered_data_first() -> io::Result<()> {
        let (a, mut b) = duplex(1024);
        let mut w = Coalesce::new(Counting::new(a));
        w.write_all(b"last ").await?;
        w.write_all(b"words").await?;
        bounded(w.shutdown()).await??;
        assert_eq!(w.get_ref().writes, 1);

        let mut got = Vec::new();
        bounded(b.read_to_end(&mut got)).await??;
        assert_eq!(got, b"last words");
        Ok(())
    }

    #[tokio::test]
    async fn tcp_full_duplex_round_trip() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // More than the socket buffers hold, so the client must read while
        // it writes.
        let data = pattern(4 << 20);

        let echo = async {
            let (s, peer) = listener.accept().await?;
            let mut s = Coalesce::new(s);
            assert_eq!(s.connect_info().remote_addr, Some(peer));
            let mut buf = vec![0; 8192];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await?;
                s.flush().await?;
            }
            s.shutdown().await
        };
        let client = async {
            let c = Coalesce::new(TcpStream::connect(addr).await?);
            let (mut r, mut w) = tokio::io::split(c);
            let send = async {
                for chunk in data.chunks(1000) {
                    w.write_all(chunk).await?;
                    w.flush().await?;
                }
                w.shutdown().await
            };
            let mut got = Vec::new();
            let (sent, read) = tokio::join!(send, r.read_to_end(&mut got));
            sent?;
            read?;
            Ok::<_, io::Error>(got)
        };

        let (echoed, got) = bounded(async { tokio::join!(echo, client) }).await?;
        echoed?;
        assert!(got? == data, "echo differs");
        Ok(())
    }

    /// Dials `addr` through [`Coalesce`], for tonic's client.
    #[derive(Clone)]
    struct Dial(SocketAddr);

    impl tower::Service<Uri> for Dial {
        type Response = hyper_util::rt::TokioIo<Coalesce<TcpStream>>;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let addr = self.0;
            Box::pin(async move {
                let s = TcpStream::connect(addr).await?;
                Ok(hyper_util::rt::TokioIo::new(Coalesce::new(s)))
            })
        }
    }

    #[tokio::test]
    async fn grpc_over_coalesce_on_both_sides() -> Result<(), Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = TcpListenerStream::new(listener).map(|s| s.map(Coalesce::new));
        let server = tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming),
        );

        let calls = async {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .connect_with_connector(Dial(addr))
                .await?;
            // Concurrent calls share the one connection, and so its buffers.
            let mut calls = JoinSet::new();
            for _ in 0..200 {
                let mut client = HealthClient::new(channel.clone());
                calls.spawn(async move { client.check(HealthCheckRequest::default()).await });
            }
            let mut ok = 0;
            while let Some(call) = calls.join_next().await {
                assert_eq!(call??.into_inner().status, ServingStatus::Serving as i32);
                ok += 1;
            }
            Ok::<_, Box<dyn std::error::Error>>(ok)
        };
        let ok = bounded(calls).await?;
        server.abort();
        assert_eq!(ok?, 200);
        Ok(())
    }
}
