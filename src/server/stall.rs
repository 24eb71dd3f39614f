//! Write progress: a socket whose client stopped reading (its receive window and our
//! send buffer full) makes no write progress, and would hold its connection, its
//! slot and its buffers for ever. [`Watched`] wraps the socket and records since
//! when a write has been waiting; the connection's task closes it past
//! `write_timeout`.
//!
//! After an upgrade (a WebSocket) hyper hands the socket, `Watched` and all, to the
//! upgraded stream's owner, so the connection's task can no longer drop it. It
//! [cuts](Stall::cut) it instead: from then on every read and write fails, and one
//! that was waiting is woken to fail, so its owner lets the socket go.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
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
    cut: Arc<Cut>,
}

/// Whether the socket was cut, and who waits on it. A read and a write may wait in
/// different tasks (a split WebSocket), so each has its own waker.
#[derive(Default)]
struct Cut {
    done: AtomicBool,
    /// Set once a request on the socket asks for an upgrade: only an upgraded socket
    /// is cut, so only then do waiting calls leave their wakers (a locked
    /// instruction or two on every read that waits, which a plain HTTP connection,
    /// dropped rather than cut, is spared).
    armed: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Stall {
    pub(super) fn new() -> Stall {
        Stall {
            origin: Instant::now(),
            since: Arc::new(AtomicU64::new(0)),
            began: Arc::new(tokio::sync::Notify::new()),
            cut: Arc::new(Cut::default()),
        }
    }

    /// From now on the socket may be [cut](Self::cut): a call that waits leaves its
    /// waker for it. Called when a request asks for an upgrade.
    pub(super) fn arm_cut(&self) {
        self.cut.armed.store(true, Ordering::Release);
    }

    /// Makes every later read and write on the socket fail, and wakes the ones
    /// waiting (since [`arm_cut`](Self::arm_cut)) so that they do.
    pub(super) fn cut(&self) {
        self.cut.done.store(true, Ordering::Release);
        self.cut.reader.wake();
        self.cut.writer.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.done.load(Ordering::Acquire)
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

/// The `write_timeout` clock of one socket's task: armed only while a write waits,
/// so an idle or flowing connection has no timer.
pub(super) struct Clock<'a> {
    limit: Option<Duration>,
    sleep: Pin<&'a mut tokio::time::Sleep>,
    armed: bool,
}

impl<'a> Clock<'a> {
    /// A clock for writes that may wait `limit` (`None`: for ever); `sleep` is its
    /// timer, any deadline.
    pub(super) fn new(limit: Option<Duration>, sleep: Pin<&'a mut tokio::time::Sleep>) -> Clock<'a> {
        Clock { limit, sleep, armed: false }
    }

    /// Completes when a write has waited past the limit; never without one. It may
    /// be dropped and called again (as in a `select!` loop) without losing time.
    pub(super) async fn stalled(&mut self, stall: &Stall) {
        let Some(limit) = self.limit else { return std::future::pending().await };
        loop {
            if !self.armed {
                stall.began().await;
                self.armed = true;
                self.sleep.as_mut().reset(tokio::time::Instant::now() + limit);
            }
            self.sleep.as_mut().await;
            match stall.stalled_for() {
                Some(waited) if waited >= limit => return,
                Some(waited) => self.sleep.as_mut().reset(tokio::time::Instant::now() + (limit - waited)),
                None => self.armed = false,
            }
        }
    }
}

/// A socket whose writes are watched for progress, and that can be cut.
///
/// `_held` lives exactly as long as the socket: hyper drops it with its connection,
/// or hands it over to an upgrade and it is dropped with the upgraded stream.
pub(super) struct Watched<I, H> {
    pub(super) io: I,
    pub(super) stall: Stall,
    pub(super) _held: H,
}

/// What a read or write on a cut socket returns.
fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the server closed this connection")
}

/// Which way a socket call goes: each way has its own waker for a cut.
#[derive(Clone, Copy)]
enum Way {
    Read,
    Write,
}

impl<I, H> Watched<I, H> {
    /// `polled`, unless the socket is cut (then an error, whatever the inner socket
    /// did); a call left waiting once the cut is armed (when a request asks for an
    /// upgrade, before it is answered) is woken when the socket is cut. The waker is
    /// stored before the flag is read, so a cut in between is not missed.
    fn unless_cut<T>(
        &self,
        way: Way,
        cx: &TaskContext<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_pending() && self.stall.cut.armed.load(Ordering::Acquire) {
            let cut = &self.stall.cut;
            match way {
                Way::Read => cut.reader.register(cx.waker()),
                Way::Write => cut.writer.register(cx.waker()),
            }
        }
        if self.stall.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        polled
    }
}

impl<I: AsyncRead + Unpin, H: Unpin> AsyncRead for Watched<I, H> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.unless_cut(Way::Read, cx, polled)
    }
}

impl<I: AsyncWrite + Unpin, H: Unpin> AsyncWrite for Watched<I, H> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        let polled = self.stall.track(polled);
        self.unless_cut(Way::Write, cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        let polled = self.stall.track(polled);
        self.unless_cut(Way::Write, cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        let polled = self.stall.track(polled);
        self.unless_cut(Way::Write, cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.unless_cut(Way::Write, cx, polled)
    }
}
