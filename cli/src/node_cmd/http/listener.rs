//! The HTTP interface's listener: at most [`MAX_CONNECTIONS`] connections at once, and none
//! held for ever by a client that does nothing. A connection is closed when its client stops
//! taking what it is sent (a write stalled for [`WRITE_STALL`]: an event stream left open in a
//! stopped program, a hostile reader), and when the server waits to read while it has written
//! nothing for [`IDLE`] (an idle keep-alive connection, a request trickled in byte by byte;
//! the server's own timers do not run under `axum::serve`). Event streams write a comment every
//! 15 s, so they are never idle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Most connections the HTTP server holds at once.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// How long a write may wait for the client to take data before the connection is closed.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(10);
/// How long the server may wait to read with nothing written meanwhile (and at first, for
/// the first request) before the connection is closed.
pub(super) const IDLE: Duration = Duration::from_secs(30);

/// A TCP listener that accepts a connection only while fewer than [`MAX_CONNECTIONS`] are open.
pub(super) struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    /// `listener`, holding at most [`MAX_CONNECTIONS`] connections at once.
    pub(super) fn new(listener: TcpListener) -> LimitedListener {
        LimitedListener {
            inner: listener,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// A connection holding one of the listener's permits until it closes.
pub(super) struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Armed while a write waits for the client; when it fires the write fails.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// [`IDLE`] after the last write (or the accept); a read still waiting when it fires fails.
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Limited {
    /// The outcome of a write (or flush) that returned `r`: a pending one arms the stall
    /// timer, and fails once it fires; a finished one disarms it.
    fn stalled<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall = None;
                if r.is_ok() {
                    self.idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timer = self
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the HTTP client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the HTTP connection was idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.stalled(r, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.stalled(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait as if it were full.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    return (
                        Limited {
                            stream,
                            _permit: permit,
                            stall: None,
                            idle: Box::pin(tokio::time::sleep(IDLE)),
                        },
                        addr,
                    )
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on serving.
                    warn!("HTTP interface: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
