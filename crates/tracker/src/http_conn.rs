//! The status page's connections: at most [`MAX_CONNECTIONS`] at once and
//! [`MAX_PER_SOURCE`] from one source (an IPv4 address or an IPv6 /64), accepted at once and
//! closed at once when over either cap (rather than left waiting in the kernel's queue, where a
//! few dozen idle connections would starve every browser); and each closed when it has made no
//! progress, reading or writing, for [`IDLE`] (a request that trickles in, a client that never
//! reads its answer), or has lived for [`LIFETIME`] (a browser just opens a new one).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::registry::source_of;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections from one source at once: a few browser tabs and a metrics scraper.
pub const MAX_PER_SOURCE: usize = 8;
/// A connection that neither reads nor writes anything for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// No connection lives longer.
pub const LIFETIME: Duration = Duration::from_secs(120);

/// Who holds how many connections.
#[derive(Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// A TCP listener that enforces the caps above.
pub struct Limited {
    inner: TcpListener,
    counts: Arc<Mutex<Counts>>,
}

impl Limited {
    pub fn new(inner: TcpListener) -> Limited {
        Limited {
            inner,
            counts: Arc::default(),
        }
    }

    /// Takes a place for a connection from `addr`, if one is free.
    fn admit(&self, addr: SocketAddr) -> Option<Place> {
        let source = source_of(addr.ip());
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_source.get(&source).copied().unwrap_or(0);
        if c.total >= MAX_CONNECTIONS || mine >= MAX_PER_SOURCE {
            return None;
        }
        c.total += 1;
        *c.per_source.entry(source).or_default() += 1;
        Some(Place {
            counts: self.counts.clone(),
            source,
        })
    }
}

/// One connection's place, given back when it closes.
struct Place {
    counts: Arc<Mutex<Counts>>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.admit(addr) {
                    Some(place) => return (Guarded::new(stream, place), addr),
                    // Over a cap: closed at once (dropped), so the queue never fills.
                    None => tracing::debug!(%addr, "http connection refused: over the cap"),
                },
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its place until it closes, and timing out when idle or too old.
pub struct Guarded {
    stream: TcpStream,
    _place: Place,
    /// Fires at the earlier of the idle deadline and the end of the lifetime.
    timer: Pin<Box<Sleep>>,
    end_of_life: Instant,
}

impl Guarded {
    fn new(stream: TcpStream, place: Place) -> Guarded {
        let now = Instant::now();
        Guarded {
            stream,
            _place: place,
            timer: Box::pin(tokio::time::sleep_until(now + IDLE)),
            end_of_life: now + LIFETIME,
        }
    }

    /// Progress was made: the idle clock starts again.
    fn progressed(&mut self) {
        let next = (Instant::now() + IDLE).min(self.end_of_life);
        self.timer.as_mut().reset(next);
    }

    /// Called when the stream is not ready: an error once the timer has fired.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "http connection idle or too old",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(Ok(v)) => {
                self.progressed();
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.after(cx, r)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.after(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
