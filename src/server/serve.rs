//! [`serve`]: a hyper-util server (HTTP/1.1 and HTTP/2) that gives every socket a
//! [`Connection`] and every request on it that connection.
//!
//! The accept loop takes a permit (the max-connections bound), accepts, and spawns
//! one task per socket. That task registers the connection, runs the open hooks and
//! drives hyper's connection future until the socket closes, asking it to shut down
//! gracefully on `destroy` or server shutdown, and dropping it when no request
//! arrived in time. The registration and the permit travel with the socket: when
//! hyper hands it over to an upgrade (a WebSocket), the task watches it on until
//! the upgraded stream drops it. On shutdown, the task ends the live connections
//! its socket carries (the chat's WebSocket or SSE stream), and past the shutdown
//! timeout it drops the socket, or cuts an upgraded one.
//!
//! Between hyper and the app, [`ConnService`] counts each request, refuses it when
//! the connection is destroyed or over its limit, resolves the client's fingerprint
//! and puts the `Connection` in the request's extensions.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tower::Service;

use super::Connections;
use super::fingerprint::{FingerprintConfig, Resolved, valid_cookie_name};
use super::limit::{DEFAULT_SIMULTANEOUS, Pending, TOO_MANY};
use super::stall::{Clock, Stall, Watched};
use crate::body::{Body, BoxError, EitherBody};
use crate::connection::Connection;
use crate::error::HttpError;

/// Serves `app` on `listener`, HTTP/1.1 (with keep-alive) and HTTP/2 (with prior
/// knowledge, h2c), making one [`Connection`] per accepted socket.
///
/// Every request reaches `app` with its socket's `Connection` in its extensions, so
/// [`Context::connection`](crate::Context::connection) and the axum extractor find
/// it, and with the client's [`Fingerprint`](crate::connection::Fingerprint) beside it. Await the
/// returned [`Serve`] to run the server; configure it first with its methods:
///
/// | setting | default |
/// |---|---|
/// | [`simultaneous_requests`](Serve::simultaneous_requests) | 5 per connection; more get 429 |
/// | [`max_connections`](Serve::max_connections) | 10 000 open sockets; then the longest idle one makes room, or the newcomer gets 503 |
/// | [`idle_timeout`](Serve::idle_timeout) | 60 s with no request in flight |
/// | [`write_timeout`](Serve::write_timeout) | 30 s without write progress (a client that stopped reading) |
/// | [`shutdown_timeout`](Serve::shutdown_timeout) | 30 s for connections to close on graceful shutdown; then they are dropped |
/// | [`header_read_timeout`](Serve::header_read_timeout) | 30 s to send a request head |
/// | [`fingerprint_cookie`](Serve::fingerprint_cookie) | `sessionID` |
/// | [`fingerprint_max_age`](Serve::fingerprint_max_age) | one hour |
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use tower_context::{Context, ContextLayer};
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new()
///     .route("/", get(|ctx: Context| async move {
///         let conn = ctx.connection().expect("served by tower_context::serve");
///         format!("request {} on {}", conn.total(), conn.id())
///     }))
///     .layer(ContextLayer::new());
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// tower_context::serve(listener, app)
///     .simultaneous_requests(10)
///     .header_read_timeout(Duration::from_secs(10))
///     .on_connection_open(|conn| println!("{} open from {}", conn.id(), conn.remote_addr()))
///     .on_connection_close(|conn| println!("{} closed after {} requests", conn.id(), conn.total()))
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); })
///     .await
/// # }
/// ```
///
/// `app` is any `Clone` tower service taking `Request<hyper::body::Incoming>`, such as
/// an axum `Router`. Its errors become 500 responses (not exposed); the server
/// itself never stops on a bad client.
pub fn serve<S, B>(listener: TcpListener, app: S) -> Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Serve { listener, app, config: Config::default(), connections: Connections::new(), signal: None }
}

type Hook = Arc<dyn Fn(&Connection) + Send + Sync>;
type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The server [`serve`] returns: configure it, then `.await` it.
///
/// It resolves when the server has shut down (see
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown)); without a shutdown
/// signal it runs forever.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    app: S,
    config: Config,
    connections: Connections,
    signal: Option<Signal>,
}

struct Config {
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    simultaneous: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout: Duration,
    idle_timeout: Option<Duration>,
    http2_keep_alive: Option<Duration>,
    write_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    fingerprint: FingerprintConfig,
    on_open: Vec<Hook>,
    on_close: Vec<Hook>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            #[cfg(feature = "tls")]
            tls: None,
            simultaneous: Some(DEFAULT_SIMULTANEOUS),
            max_connections: Some(10_000),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(60)),
            http2_keep_alive: Some(Duration::from_secs(20)),
            write_timeout: Some(Duration::from_secs(30)),
            shutdown_timeout: Some(Duration::from_secs(30)),
            fingerprint: FingerprintConfig::default(),
            on_open: Vec::new(),
            on_close: Vec::new(),
        }
    }
}

impl<S> Serve<S> {
    /// How many requests may be in flight at once on one connection (Actionhero's
    /// `simultaneousActions`, default 5); `None` for no limit. 0 counts as 1.
    ///
    /// A request over the limit is answered at once with 429 and the message "you
    /// have too many pending requests", without reaching the app. HTTP/1.1 serves the
    /// requests of one connection one after another (pipelined ones included), so in
    /// practice the limit matters for HTTP/2, where a client can multiplex.
    pub fn simultaneous_requests(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.config.simultaneous = limit.into().map(|n| n.max(1));
        self
    }

    /// How many sockets may be open at once (default 10 000); `None` for no bound.
    /// 0 counts as 1.
    ///
    /// At the bound a new client never waits unanswered: the HTTP connection idle
    /// longest (no request in flight) is closed to make room for it
    /// ([`Connections::evicted`](crate::Connections::evicted) counts these); when every
    /// connection has a request in flight, the newcomer is answered at once with `503
    /// Service Unavailable` and `Retry-After: 1` and closed
    /// ([`Connections::refused`](crate::Connections::refused)). Together with
    /// [`header_read_timeout`](Self::header_read_timeout) and
    /// [`idle_timeout`](Self::idle_timeout) this keeps a flood of idle sockets from
    /// taking the server down.
    pub fn max_connections(mut self, max: impl Into<Option<usize>>) -> Self {
        self.config.max_connections = max.into().map(|n| n.max(1));
        self
    }

    /// How long a client has to send a complete request head (default 30 s;
    /// at least 1 ms).
    ///
    /// It counts from the accept for the first request (a client that connects and
    /// sends nothing, or half a request, is disconnected when it runs out) and, on
    /// HTTP/1.1, from the end of the previous response for each later one, so a
    /// slow-loris client that drips its headers is disconnected too, and an idle
    /// keep-alive connection is closed. On HTTP/2 it only bounds the first request.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = bounded(timeout);
        self
    }

    /// Terminates TLS on every accepted socket with `config` (feature `tls`): the
    /// handshake must finish within the [header read
    /// timeout](Self::header_read_timeout), a client that fails it is dropped, and
    /// every request on the socket is `https` (a [TLS
    /// `Connection`](crate::Connection::new_tls), so `secure()` is true and Secure
    /// cookies are allowed and set by default). For HTTP/2 over TLS, offer it in
    /// `config.alpn_protocols` (`h2`, then `http/1.1`).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use tower_context::server::rustls::{ServerConfig, crypto::ring, pki_types::{CertificateDer, PrivateKeyDer}};
    ///
    /// # async fn run(app: axum::Router, certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tls = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_single_cert(certs, key)?;
    /// tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
    /// tower_context::serve(listener, app).tls(Arc::new(tls)).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.config.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// How long a connection may stay open with no request in flight (default 60 s;
    /// `None` for no bound). An idle connection is closed gracefully (HTTP/2:
    /// GOAWAY), so idle clients cannot hold every
    /// [`max_connections`](Self::max_connections) slot. HTTP/1.1 keep-alive
    /// connections are also bounded by the [header read
    /// timeout](Self::header_read_timeout).
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.idle_timeout = timeout.into().map(bounded);
        self
    }

    /// How long a response may make no write progress (default 30 s; `None` for no
    /// bound): a client that stops reading fills its receive window and our send
    /// buffer, and then holds its connection; past this time the connection is
    /// closed. Pipelined requests behind the unread response go with it. A socket
    /// upgraded to a WebSocket is watched the same way: a write to it that makes no
    /// progress fails, and the WebSocket ends.
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.write_timeout = timeout.into().map(bounded);
        self
    }

    /// How long [graceful shutdown](Self::with_graceful_shutdown) waits for the
    /// open connections to close (default 30 s; `None` to wait for ever): past it,
    /// the sockets still open are closed at once, requests in flight and all, and the
    /// server's future resolves. A socket upgraded to a WebSocket that is not the
    /// chat's is among them: the server cannot end it any other way.
    pub fn shutdown_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.shutdown_timeout = timeout.into().map(bounded);
        self
    }

    /// How often an HTTP/2 connection is pinged (default every 20 s; `None` for
    /// never). A peer that does not answer within the same time is closed: a dead
    /// client does not keep its slot until the kernel gives up on it.
    pub fn http2_keep_alive(mut self, every: impl Into<Option<Duration>>) -> Self {
        self.config.http2_keep_alive = every.into().map(bounded);
        self
    }

    /// The cookie the client's fingerprint is kept in (default `sessionID`). A name
    /// that is not a valid cookie name is ignored.
    pub fn fingerprint_cookie(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if valid_cookie_name(&name) {
            self.config.fingerprint.cookie = name;
        }
        self
    }

    /// The lifetime of the fingerprint cookie the server sets (default one hour,
    /// sent as `Max-Age` and `Expires`); `None` for a session cookie.
    pub fn fingerprint_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.config.fingerprint.max_age = max_age;
        self
    }

    /// Runs `hook` with each new connection, before its first request is read
    /// (Actionhero's connection middleware `create`). Hooks run in the order they
    /// were added; a panic in one is caught and ignored.
    pub fn on_connection_open<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Connection) + Send + Sync + 'static,
    {
        self.config.on_open.push(Arc::new(hook));
        self
    }

    /// Runs `hook` with each connection once its socket has closed and it has left
    /// the registry (Actionhero's connection middleware `destroy`), whatever closed
    /// it. Hooks run in the order they were added; a panic in one is caught and
    /// ignored.
    pub fn on_connection_close<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Connection) + Send + Sync + 'static,
    {
        self.config.on_close.push(Arc::new(hook));
        self
    }

    /// Keeps the open connections in `connections`, a registry you made first (so
    /// the app can hold it), instead of the server's own.
    pub fn with_connections(mut self, connections: Connections) -> Self {
        self.connections = connections;
        self
    }

    /// The registry of this server's open connections.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Shuts down gracefully when `signal` completes: the server stops accepting,
    /// every connection finishes the requests it has in flight and closes (HTTP/2
    /// connections get GOAWAY, idle HTTP/1.1 ones close at once), and then the
    /// server's future resolves.
    ///
    /// The chat's live connections on the server's sockets are destroyed: a
    /// WebSocket client gets its goodbye and a close frame, an SSE stream ends.
    /// Whatever is still open after the [shutdown timeout](Self::shutdown_timeout)
    /// (30 s by default) is dropped, so the future resolves even with a request that
    /// never finishes.
    ///
    /// ```no_run
    /// # async fn run(app: axum::Router) -> std::io::Result<()> {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let server = tokio::spawn(
    ///     tower_context::serve(listener, app).with_graceful_shutdown(async { stopped.await.ok(); }).into_future(),
    /// );
    /// // …
    /// let _ = stop.send(());
    /// # let _ = server.await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Some(Box::pin(signal));
        self
    }
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("simultaneous_requests", &self.config.simultaneous)
            .field("max_connections", &self.config.max_connections)
            .field("header_read_timeout", &self.config.header_read_timeout)
            .field("shutdown_timeout", &self.config.shutdown_timeout)
            .field("fingerprint_cookie", &self.config.fingerprint.cookie)
            .field("connections", &self.connections.len())
            .field("graceful_shutdown", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<S, B> Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn run(self) -> io::Result<()> {
        let Serve { listener, app, config, connections, signal } = self;
        let config = Arc::new(config);
        let builder = Arc::new(http_builder(&config));
        let permits = config.max_connections.map(|max| Arc::new(Semaphore::new(max)));
        let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        // Each socket's task holds a receiver: the sender sees them all gone once
        // every connection has closed.
        let (shutdown, watching) = watch::channel(Stage::Serving);

        loop {
            let (stream, remote_addr) = tokio::select! {
                biased;
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Running out of file descriptors and the like: give the
                        // open connections a moment to close instead of spinning.
                        if !is_connection_error(&err) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    }
                },
            };
            let socket = Socket {
                stream,
                remote_addr,
                app: app.clone(),
                config: Arc::clone(&config),
                connections: connections.clone(),
                builder: Arc::clone(&builder),
                shutdown: watching.clone(),
                permit: None,
            };
            match &permits {
                None => drop(tokio::spawn(serve_socket(socket))),
                Some(permits) => drop(tokio::spawn(with_slot(Arc::clone(permits), socket))),
            }
        }

        drop(listener);
        drop(watching);
        shutdown.send_replace(Stage::Closing);
        let closed = match config.shutdown_timeout {
            Some(limit) => tokio::time::timeout(limit, shutdown.closed()).await.is_ok(),
            None => {
                shutdown.closed().await;
                true
            }
        };
        if !closed {
            // Every task hears this at once and ends without awaiting anything more.
            shutdown.send_replace(Stage::Dropping);
            shutdown.closed().await;
        }
        Ok(())
    }
}

/// A `max_connections` slot for a new socket.
enum Slot {
    Taken(OwnedSemaphorePermit),
    /// None could be made free: the next socket is turned away.
    Full,
}

/// How long a new client may wait for a slot that an idle connection frees.
const FREEING: Duration = Duration::from_millis(200);

/// A free slot; when there is none, the connection idle longest is closed to make
/// one, and the slot it frees is taken. `Full` when no connection is idle (or none
/// freed its slot in time).
async fn take_slot(permits: &Arc<Semaphore>, connections: &Connections) -> Slot {
    if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
        return Slot::Taken(permit);
    }
    // Nothing idle: a slot may still come free in a moment.
    connections.evict_idle();
    match tokio::time::timeout(FREEING, Arc::clone(permits).acquire_owned()).await {
        Ok(Ok(permit)) => Slot::Taken(permit),
        _ => Slot::Full,
    }
}

/// Serves a socket once it has a `max_connections` slot; turns it away when none can
/// be had (see `take_slot`).
async fn with_slot<S, B>(permits: Arc<Semaphore>, mut socket: Socket<S>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match take_slot(&permits, &socket.connections).await {
        Slot::Taken(permit) => {
            socket.permit = Some(permit);
            serve_socket(socket).await;
        }
        Slot::Full => {
            socket.connections.note_refused();
            refuse(socket.stream).await;
        }
    }
}

/// Answers a socket the server has no room for: `503` with `Retry-After`, then
/// closes it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain\r\n\
content-length: 20\r\nconnection: close\r\n\r\nserver at capacity\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new());
    if let Some(every) = config.http2_keep_alive {
        http2.keep_alive_interval(every).keep_alive_timeout(every);
    }
    builder
}

/// An accepted socket and what its task needs.
struct Socket<S> {
    stream: TcpStream,
    remote_addr: SocketAddr,
    app: S,
    config: Arc<Config>,
    connections: Connections,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<Stage>,
    permit: Option<OwnedSemaphorePermit>,
}

async fn serve_socket<S, B>(socket: Socket<S>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Socket { stream, remote_addr, app, config, connections, builder, shutdown, permit } = socket;
    let Ok(local_addr) = stream.local_addr() else { return };
    // Small responses go out at once rather than waiting for Nagle.
    let _ = stream.set_nodelay(true);
    #[cfg(feature = "tls")]
    if let Some(acceptor) = &config.tls {
        // The handshake is bounded like a request head: a client that starts one and
        // stalls is dropped, as it is when the server shuts down meanwhile (nothing
        // reached the app yet). Nothing is registered until it succeeds.
        let (mut shutdown, mut gone) = (shutdown, false);
        let handshake = tokio::time::timeout(config.header_read_timeout, acceptor.accept(stream));
        tokio::pin!(handshake);
        let stream = loop {
            tokio::select! {
                done = &mut handshake => match done {
                    Ok(Ok(stream)) => break stream,
                    _ => return,
                },
                stage = next_stage(&mut shutdown, &mut gone), if !gone => if stage != Stage::Serving {
                    return;
                },
            }
        };
        let conn = Connection::new_tls(remote_addr, local_addr);
        let open = Open::new(conn.clone(), connections, Arc::clone(&config), permit);
        return drive(stream, conn, open, app, config, builder, shutdown).await;
    }
    let conn = Connection::new(remote_addr, local_addr);
    let open = Open::new(conn.clone(), connections, Arc::clone(&config), permit);
    drive(stream, conn, open, app, config, builder, shutdown).await;
}

/// What the server tells every socket's task.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Serving,
    /// Shutting down: finish what is in flight, end the live connections, close.
    Closing,
    /// The shutdown timeout ran out: close now, whatever is in flight.
    Dropping,
}

/// What the server said when it last spoke; `Closing` when it is gone (its future
/// was dropped), as then no one is left to say more.
async fn next_stage(shutdown: &mut watch::Receiver<Stage>, gone: &mut bool) -> Stage {
    match shutdown.changed().await {
        Ok(()) => *shutdown.borrow_and_update(),
        Err(_) => {
            *gone = true;
            Stage::Closing
        }
    }
}

/// How hyper's part of a socket ended.
enum Served {
    /// Hyper's connection future resolved: the socket closed, or was handed to an
    /// upgrade and lives on there.
    Resolved,
    /// The task dropped the socket.
    Dropped,
}

/// Serves one socket until it closes: its HTTP connection, then, if it was
/// upgraded (a WebSocket), the upgraded stream.
///
/// `open` (with the max-connections permit) goes into the socket's wrapper, which
/// hyper hands over to an upgrade: it is dropped with the socket, whoever holds it
/// then, so an upgraded socket keeps its slot, its place in the registry and its
/// close hooks until it really closes. This task lives as long too, so shutdown
/// waits for upgraded sockets as well.
async fn drive<I, S, B>(
    io: I,
    conn: Connection,
    open: Open,
    app: S,
    config: Arc<Config>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<Stage>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (closed_tx, closed) = oneshot::channel();
    let mut open = open;
    open.closed = Some(closed_tx);
    let stall = Stall::new();
    let io = Watched { io, stall: stall.clone(), _held: open };
    let mut task = SocketTask { conn, config, stall, shutdown, gone: false };
    match task.serve_http(io, app, &builder).await {
        Served::Resolved => task.watch_upgraded(closed).await,
        Served::Dropped => {}
    }
}

/// What one socket's task watches: its connection, write progress, the server.
struct SocketTask {
    conn: Connection,
    config: Arc<Config>,
    stall: Stall,
    shutdown: watch::Receiver<Stage>,
    /// The server is gone: nothing more will be heard from it.
    gone: bool,
}

impl SocketTask {
    /// Drives hyper's connection until it resolves, or drops it: gracefully closed
    /// on `destroy` or server shutdown, dropped when no request arrived in time, when
    /// writes stall, or when the shutdown timeout runs out.
    async fn serve_http<I, S, B>(
        &mut self,
        io: Watched<I, Open>,
        app: S,
        builder: &auto::Builder<TokioExecutor>,
    ) -> Served
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let config = Arc::clone(&self.config);
        let conn = self.conn.clone();
        let service =
            ConnService { app, conn: conn.clone(), config: Arc::clone(&config), stall: self.stall.clone() };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let first_request = tokio::time::sleep(config.header_read_timeout);
        tokio::pin!(first_request);
        let mut waiting_for_first = true;
        // Asked to close (idle, destroy or shutdown): hyper is asked once.
        let mut closing = false;
        let idle = tokio::time::sleep(config.idle_timeout.unwrap_or(Duration::MAX / 4));
        tokio::pin!(idle);
        let timer = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(timer);
        let mut writes = Clock::new(config.write_timeout, timer);
        loop {
            tokio::select! {
                biased;
                _ = connection.as_mut() => return Served::Resolved,
                // A client that stopped reading: its connection (and anything pipelined
                // behind the unread response) is dropped, not kept for ever.
                () = writes.stalled(&self.stall) => return Served::Dropped,
                // No request in flight since the deadline was set: close gracefully.
                // Otherwise the deadline moves to a full timeout after the last activity.
                () = &mut idle, if !closing && config.idle_timeout.is_some() => {
                    let timeout = config.idle_timeout.unwrap_or_default();
                    let since = conn.idle_for();
                    if conn.pending() == 0 && since >= timeout {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    } else {
                        // A request in flight (a stream, a long poll) holds the socket
                        // however long it runs: look again a whole timeout later, not
                        // at once (its start is no activity that moves the deadline).
                        let rest = if conn.pending() > 0 { timeout } else { timeout.saturating_sub(since) };
                        idle.as_mut().reset(tokio::time::Instant::now() + rest.max(Duration::from_millis(1)));
                    }
                }
                // `destroy` has ended the live connections on this socket already.
                () = conn.destroyed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                stage = next_stage(&mut self.shutdown, &mut self.gone), if !self.gone => match stage {
                    Stage::Serving => {}
                    // An SSE stream in flight ends only when its live connection does.
                    Stage::Closing if !closing => {
                        closing = true;
                        conn.end_carried();
                        connection.as_mut().graceful_shutdown();
                    }
                    Stage::Closing => conn.end_carried(),
                    Stage::Dropping => return Served::Dropped,
                },
                // Before hyper knows the protocol it has no timeout of its own, so a
                // socket that never brings a request is dropped here. Nothing reached
                // the app yet, so nothing is cut short.
                () = &mut first_request, if waiting_for_first => {
                    waiting_for_first = false;
                    if conn.message_id().is_none() {
                        return Served::Dropped;
                    }
                }
            }
        }
    }

    /// Watches a socket that hyper handed to an upgrade, until its new owner drops
    /// it (`closed`; at once when there was no upgrade and hyper dropped it). The
    /// task cannot drop the socket any more, so it cuts it: when writes stall, and
    /// when the shutdown timeout runs out. Shutdown ends the chat's live connection
    /// on it, which closes the socket with a goodbye.
    async fn watch_upgraded(&mut self, mut closed: oneshot::Receiver<Infallible>) {
        // Armed when the request asked for the upgrade; a CONNECT, which asks
        // without the header, is armed here.
        self.stall.arm_cut();
        let timer = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(timer);
        let mut writes = Clock::new(self.config.write_timeout, timer);
        let mut cut = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut closed => return,
                () = writes.stalled(&self.stall), if !cut => {
                    cut = true;
                    self.stall.cut();
                }
                stage = next_stage(&mut self.shutdown, &mut self.gone), if !self.gone => match stage {
                    Stage::Serving => {}
                    Stage::Closing => self.conn.end_carried(),
                    // The socket's owner may never poll it again: the server does
                    // not wait for it.
                    Stage::Dropping => {
                        self.stall.cut();
                        return;
                    }
                },
            }
        }
    }
}

/// An open connection: registered while it lives; on drop (the socket closed, or
/// the task ended any other way) it leaves the registry, the close hooks run, then
/// its max-connections permit is released and the socket's task is told.
struct Open {
    conn: Connection,
    connections: Connections,
    config: Arc<Config>,
    _permit: Option<OwnedSemaphorePermit>,
    closed: Option<oneshot::Sender<Infallible>>,
}

impl Open {
    fn new(
        conn: Connection,
        connections: Connections,
        config: Arc<Config>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Open {
        connections.insert(&conn);
        run_hooks(&config.on_open, &conn);
        Open { conn, connections, config, _permit: permit, closed: None }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.connections.remove(&self.conn);
        run_hooks(&self.config.on_close, &self.conn);
    }
}

fn run_hooks(hooks: &[Hook], conn: &Connection) {
    for hook in hooks {
        // A hook's panic must not take the accept loop, the socket's cleanup or
        // the other hooks with it.
        let _ = catch_unwind(AssertUnwindSafe(|| hook(conn)));
    }
}

/// Between hyper and the app, one per socket.
struct ConnService<S> {
    app: S,
    conn: Connection,
    config: Arc<Config>,
    /// The socket's: a request that asks for an upgrade arms its cut.
    stall: Stall,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<ConnectionBody<B>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let conn = &self.conn;
        conn.observe_version(request.version());
        conn.count_message();
        let Resolved { fingerprint, set_cookie } = self.config.fingerprint.resolve(request.headers());
        conn.set_fingerprint(fingerprint.clone());

        if conn.is_destroyed() {
            let mut response =
                HttpError::new(503).message("this connection was destroyed").into_http_response();
            if request.version() != Version::HTTP_2 {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return ResponseFuture::refused(response, set_cookie);
        }
        let Some(pending) = Pending::start(conn, self.config.simultaneous) else {
            return ResponseFuture::refused(
                HttpError::new(429).message(TOO_MANY).into_http_response(),
                set_cookie,
            );
        };
        let http1 = (request.version() != Version::HTTP_2).then(|| conn.clone());
        if http1.is_some() && request.headers().contains_key(header::UPGRADE) {
            // Armed before any 101 goes out, so that a read the upgrade's owner
            // leaves waiting, however soon, can be woken by a cut.
            self.stall.arm_cut();
        }
        request.extensions_mut().insert(conn.clone());
        request.extensions_mut().insert(fingerprint);
        ResponseFuture {
            state: State::NotReady { app: self.app.clone(), request: Some(request) },
            pending: Some(pending),
            set_cookie,
            http1,
        }
    }
}

pin_project! {
    /// The app's response, or the server's refusal, with the request's pending
    /// guard and fingerprint cookie.
    struct ResponseFuture<S, F> {
        #[pin]
        state: State<S, F>,
        pending: Option<Pending>,
        set_cookie: Option<HeaderValue>,
        // The connection of an HTTP/1 request, to say `connection: close` when it
        // was destroyed while the request ran.
        http1: Option<Connection>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        NotReady { app: S, request: Option<Request<Incoming>> },
        Called { #[pin] future: F },
        Refused { response: Option<Response<Body>> },
    }
}

impl<S, F> ResponseFuture<S, F> {
    fn refused(response: Response<Body>, set_cookie: Option<HeaderValue>) -> Self {
        ResponseFuture {
            state: State::Refused { response: Some(response) },
            pending: None,
            set_cookie,
            http1: None,
        }
    }
}

impl<S, B> Future for ResponseFuture<S, S::Future>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ConnectionBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let response = loop {
            match this.state.as_mut().project() {
                StateProj::NotReady { app, request } => {
                    if let Err(err) = ready!(app.poll_ready(cx)) {
                        break own(HttpError::from_error(err).into_http_response());
                    }
                    let Some(request) = request.take() else {
                        break own(HttpError::new(500).into_http_response());
                    };
                    let future = app.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    break match ready!(future.poll(cx)) {
                        Ok(response) => response.map(|body| ConnectionBody::new(EitherBody::Inner { body })),
                        Err(err) => own(HttpError::from_error(err).into_http_response()),
                    };
                }
                StateProj::Refused { response } => {
                    break own(response.take().unwrap_or_default());
                }
            }
        };
        let mut response = response;
        if let Some(cookie) = this.set_cookie.take()
            && !sets_cookie(response.headers(), &cookie)
        {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if let Some(conn) = this.http1.take() {
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                // In use from now on, though no request is in flight: never evicted.
                conn.note_upgraded();
            }
            if conn.is_destroyed() {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        let pending = this.pending.take();
        if !http_body::Body::is_end_stream(response.body()) {
            response.body_mut().pending = pending;
        }
        Poll::Ready(Ok(response))
    }
}

/// Whether the app's response already sets the cookie `ours` sets (the session
/// layer's signed `sessionID`, say): then the app's wins, and the fingerprint is
/// what it set from the next request on.
fn sets_cookie(headers: &http::HeaderMap, ours: &HeaderValue) -> bool {
    let name = ours.as_bytes().split(|&b| b == b'=').next().unwrap_or_default();
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|line| line.as_bytes().strip_prefix(name).is_some_and(|rest| rest.first() == Some(&b'=')))
}

fn own<B>(response: Response<Body>) -> Response<ConnectionBody<B>> {
    response.map(|body| ConnectionBody::new(EitherBody::Own { body }))
}

pin_project! {
    /// The response body the server sends: the app's, or one of its own; the
    /// request counts as pending until it ends.
    struct ConnectionBody<B> {
        #[pin]
        kind: EitherBody<B>,
        pending: Option<Pending>,
    }
}

impl<B> ConnectionBody<B> {
    fn new(kind: EitherBody<B>) -> Self {
        ConnectionBody { kind, pending: None }
    }
}

impl<B> http_body::Body for ConnectionBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut kind = this.kind;
        let frame = ready!(http_body::Body::poll_frame(kind.as_mut(), cx));
        let done = frame.is_none() || http_body::Body::is_end_stream(&*kind);
        if done || matches!(frame, Some(Err(_))) {
            this.pending.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.kind)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.kind)
    }
}

/// A timeout or period as the server keeps it: at least 1 ms, and at most a century,
/// so that adding it to a clock reading cannot overflow (hyper adds them to
/// `Instant::now()`, which panics past its range: `Duration::MAX` would end every
/// connection's task).
fn bounded(duration: Duration) -> Duration {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    duration.clamp(Duration::from_millis(1), CENTURY)
}
