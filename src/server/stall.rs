//! Write progress: a socket whose client stopped reading (its receive window and our
//! send buffer full) makes no write progress, and would hold its connection, its
//! slot and its buffers for ever. [`Watched`] wraps the socket and records since
//! when a write has been waiting; the connection's task closes it past
//! `write_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Since when the socket's writes have been waiting, shared with the connection's
/// task.
#[derive(Clone)]
pub(super) struct Stall {
    origin: Instant,
    /// Milliseconds since `origin` plus one when a write began waiting; 0 when none
    /// is waiting.
    since: Arc<AtomicU64>,
    /// Told when a write begins waiting: the connection's task arms its timer only
    /// then, so an idle or flowing connection costs no wake-ups.
    began: Arc<tokio::sync::Notify>,
}

impl Stall {
    pub(super) fn new() -> Stall {
        Stall {
            origin: Instant::now(),
            since: Arc::new(AtomicU64::new(0)),
            began: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// How long a write has been waiting, if one is.
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.origin.elapsed().saturating_sub(Duration::from_millis(at - 1))),
        }
    }

    /// Completes when a write begins waiting (at once if one began since the last
    /// call).
    pub(super) fn began(&self) -> tokio::sync::futures::Notified<'_> {
        self.began.notified()
    }

    fn waiting(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.since.store(now + 1, Ordering::Relaxed);
            self.began.notify_one();
        }
    }

    fn progressed(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    fn track<T>(&self, polled: Poll<T>) -> Poll<T> {
        match polled {
            Poll::Pending => self.waiting(),
            Poll::Ready(_) => self.progressed(),
        }
        polled
    }
}

/// A socket whose writes are watched for progress.
pub(super) struct Watched<I> {
    pub(super) io: I,
    pub(super) stall: Stall,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.stall.track(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.stall.track(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.stall.track(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
