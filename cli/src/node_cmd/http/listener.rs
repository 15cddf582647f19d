//! The HTTP interface's listener: at most [`MAX_CONNECTIONS`] connections at once, and a
//! connection whose client stops taking what it is sent (a write stalled for
//! [`WRITE_STALL`]) is closed, so that a reader that never reads (an event stream left open
//! in a stopped program, a hostile client) cannot hold a place for ever.

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
}

impl Limited {
    /// The outcome of a write (or flush) that returned `r`: a pending one arms the stall
    /// timer, and fails once it fires; a finished one disarms it.
    fn stalled<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall = None;
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
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
