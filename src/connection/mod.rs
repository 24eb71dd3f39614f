//! Connections: the transport-level record every request on one socket shares
//! (Actionhero's `Connection`), and the server that makes them.
//!
//! A [`Connection`] is made when a socket is accepted and lives until it closes.
//! Every request that arrives on that socket sees the same one, through
//! [`Context::connection`](crate::Context::connection) or the axum extractor, so it
//! can count what happened on the socket and keep values between requests
//! ([`Connection::params`]).
//!
//! Two servers make them:
//!
//! - [`serve`](crate::serve) (feature "server", on by default): a hyper-util server for HTTP/1.1
//!   and HTTP/2 that also keeps a registry of open connections ([`Connections`](crate::Connections)),
//!   counts requests, limits how many run at once on one connection, gives clients
//!   a fingerprint cookie, lets you destroy one connection, and shuts down
//!   gracefully.
//! - axum's own `axum::serve`, with
//!   `app.into_make_service_with_connect_info::<Connection>()`: every request gets
//!   its socket's `Connection`, but only the socket facts and the params work (see
//!   [below](#under-axums-own-server)).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_context::{Connection, Context, ContextLayer};
//!
//! async fn hello(ctx: Context) -> String {
//!     let Some(conn) = ctx.connection() else { return "no connection".into() };
//!     format!("request {} on connection {} from {}", conn.total(), conn.id(), conn.remote_addr())
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(hello)).layer(ContextLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tower_context::serve(listener, app).await
//! # }
//! ```
//!
//! # Under axum's own server
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_context::Connection;
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|conn: Connection| async move { conn.id().to_owned() }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<Connection>()).await
//! # }
//! ```
//!
//! axum makes the `Connection` when it accepts the socket and hands the same one to
//! every request on it, but it never tells the connection about those requests. So
//! under axum's server:
//!
//! - `id`, `connected_at`, `remote_addr`, `local_addr` and `params` work as under
//!   [`serve`](crate::serve);
//! - `kind` stays [`ConnectionKind::Unknown`]; `pending`, `total` stay 0 and
//!   `message_id` and `fingerprint` stay `None` (no fingerprint is read or sent);
//! - there is no registry, no open/close hooks and no per-connection request limit;
//! - `destroy` only marks the connection (`is_destroyed` turns true): axum keeps
//!   the socket open and keeps serving it.
//!
//! # Behind a TLS acceptor of your own
//!
//! Whether a request is `https` is the transport's word, never the client's: under
//! [`serve`](crate::serve) with `Serve::tls` (feature
//! `tls`) every request is. A server of your own that terminates TLS says so per
//! socket with [`Connection::new_tls`] (or per request with the [`Tls`] marker),
//! here with tokio-rustls and hyper-util:
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::Router;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::service::TowerToHyperService;
//! use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
//! use tower::ServiceExt;
//! use tower_context::Connection;
//!
//! # async fn run(app: Router, tls: Arc<ServerConfig>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let acceptor = TlsAcceptor::from(tls);
//! loop {
//!     let (tcp, remote) = listener.accept().await?;
//!     let (acceptor, app) = (acceptor.clone(), app.clone());
//!     tokio::spawn(async move {
//!         let local = tcp.local_addr()?;
//!         let stream = acceptor.accept(tcp).await?;
//!         let conn = Connection::new_tls(remote, local);
//!         // Every request on this socket carries its TLS connection.
//!         let app = app.map_request(move |mut req: http::Request<_>| {
//!             req.extensions_mut().insert(conn.clone());
//!             req
//!         });
//!         let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
//!         let served = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app)).await;
//!         served.map_err(std::io::Error::other)
//!     });
//! }
//! # }
//! ```

#[cfg(feature = "server")]
pub(crate) mod fingerprint;
mod mailbox;
mod message;

pub(crate) use mailbox::{Delivery, Tag};
pub use mailbox::{MailboxConfig, Overflow, SendError};
pub use message::{Message, SayPayload};

#[cfg(feature = "server")]
pub use fingerprint::Fingerprint;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::SystemTime;

use http::Extensions;
use serde_json::{Map, Value};
use tokio::sync::Notify;

/// The transport connection a request came on: Actionhero's `Connection`.
///
/// One is made per accepted socket, and every request on that socket (HTTP/1.1
/// keep-alive, HTTP/2 streams) shares it; a new socket gets a new one. It is a cheap
/// handle (one `Arc`): clone it freely.
///
/// Get it with [`Context::connection`](crate::Context::connection), or in axum as an
/// extractor (`conn: Connection`, or `Option<Connection>` when the app may run
/// without one). [`serve`](crate::serve) puts it in every request's extensions; axum's server puts
/// it there as `ConnectInfo<Connection>`.
///
/// ```
/// use tower_context::Context;
///
/// async fn handler(ctx: Context) -> String {
///     let Some(conn) = ctx.connection() else { return String::from("not served by a server that tracks connections") };
///     // Remember something for the next requests on this socket.
///     let visits = conn.params().get("visits").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
///     conn.params().insert("visits", visits);
///     format!("{} ({}): visit {visits}", conn.id(), conn.kind())
/// }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: Box<str>,
    connected_at: SystemTime,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
    /// The socket speaks TLS (the server terminated it).
    tls: bool,
    kind: AtomicU8,
    /// The fingerprint of the latest request (see [`Connection::fingerprint`]).
    #[cfg(feature = "server")]
    fingerprint: Mutex<Option<Fingerprint>>,
    pending: AtomicUsize,
    total: AtomicU64,
    /// Requests seen, refused ones included: the sequence behind `message_id`.
    messages: AtomicU64,
    params: Mutex<Map<String, Value>>,
    destroyed: AtomicBool,
    /// Wakes the server's task for this socket when `destroy` is called.
    destroy: Notify,
    /// Push-capable connections only.
    mailbox: Option<mailbox::Mailbox>,
    /// The session of the request that opened a live connection (a WebSocket's
    /// upgrade), kept for the connection's life; its type is the session module's.
    #[cfg(feature = "sessions")]
    session: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// When the record was made, on the monotonic clock.
    #[cfg(feature = "server")]
    started: std::time::Instant,
    /// When a request last finished, in ms since `started`.
    #[cfg(feature = "server")]
    last_activity: AtomicU64,
    /// Rooms joined, in join order.
    rooms: Mutex<Vec<String>>,
    /// The live connections (WebSocket, SSE) that requests on this socket opened.
    carried: Mutex<Carried>,
}

/// The live connections a socket's connection carries: they end when it is
/// destroyed or its server shuts down, since their socket goes with it.
#[derive(Default)]
struct Carried {
    /// Set once they were ended: one carried from then on is ended at once, so a
    /// live connection opened while the server shuts down is not missed.
    ended: bool,
    live: Vec<Connection>,
    /// A request on the socket was answered with a 101: the socket is a WebSocket
    /// (or another protocol) from then on, ours or not.
    #[cfg(feature = "server")]
    upgraded: bool,
}

/// Says that a request came over TLS: for a server of your own that terminates TLS
/// and does not make [`Connection`]s, insert it into every request's extensions
/// (see [`Connection::new_tls`] for the other way). The layer believes it as it
/// believes the transport: requests that carry it are `https`.
///
/// ```
/// use tower_context::connection::Tls;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Tls);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tls;

/// Whether the request these extensions belong to came over TLS, as its transport
/// says: the [`Tls`] marker, or a TLS [`Connection`].
pub(crate) fn came_over_tls(extensions: &Extensions) -> bool {
    extensions.get::<Tls>().is_some() || Connection::from_extensions(extensions).is_some_and(|c| c.is_tls())
}

/// What protocol a [`Connection`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionKind {
    /// Not known yet: no request has arrived, or the server does not tell (axum's).
    Unknown,
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
    /// A WebSocket: pushed to, can chat.
    WebSocket,
    /// A server-sent event stream: pushed to, can chat (receive side).
    ServerSentEvents,
    /// A connection made in process for tests: pushed to, can chat, every verb.
    Test,
}

impl ConnectionKind {
    /// The name Actionhero-style logs use: `"unknown"`, `"http1"` or `"http2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Unknown => "unknown",
            ConnectionKind::Http1 => "http1",
            ConnectionKind::Http2 => "http2",
            ConnectionKind::WebSocket => "websocket",
            ConnectionKind::ServerSentEvents => "sse",
            ConnectionKind::Test => "test",
        }
    }

    /// Whether a connection of this kind can be pushed to and join rooms
    /// (Actionhero's `canChat`: web no, websocket and test yes).
    pub fn can_chat(self) -> bool {
        matches!(self, ConnectionKind::WebSocket | ConnectionKind::ServerSentEvents | ConnectionKind::Test)
    }

    fn from_u8(n: u8) -> ConnectionKind {
        match n {
            1 => ConnectionKind::Http1,
            2 => ConnectionKind::Http2,
            3 => ConnectionKind::WebSocket,
            4 => ConnectionKind::ServerSentEvents,
            5 => ConnectionKind::Test,
            _ => ConnectionKind::Unknown,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ConnectionKind::Unknown => 0,
            ConnectionKind::Http1 => 1,
            ConnectionKind::Http2 => 2,
            ConnectionKind::WebSocket => 3,
            ConnectionKind::ServerSentEvents => 4,
            ConnectionKind::Test => 5,
        }
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A random per-process prefix, so connection ids from two runs do not collide in
/// logs; a counter makes them unique within the process.
static PREFIX: LazyLock<u32> = LazyLock::new(|| getrandom::u32().unwrap_or_else(|_| std::process::id()));
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A new connection's id: the process's prefix and the next number.
fn next_id() -> Box<str> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-{n:x}", *PREFIX).into_boxed_str()
}

impl Connection {
    /// A connection record for a socket accepted by a server of your own.
    ///
    /// [`serve`](crate::serve) and axum's server make these themselves. A server of your own can
    /// make one per socket and insert a clone into every request's extensions; the
    /// counters, kind and fingerprint then stay unset, as under axum's server.
    ///
    /// ```
    /// use tower_context::Connection;
    ///
    /// let conn = Connection::new("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:8080".parse().unwrap());
    /// assert_eq!(conn.remote_addr().port(), 50000);
    /// assert_eq!(conn.total(), 0);
    /// ```
    pub fn new(remote_addr: SocketAddr, local_addr: SocketAddr) -> Connection {
        Connection::make(remote_addr, local_addr, false)
    }

    /// A connection record for a socket whose TLS your server terminated: requests
    /// on it are `https` ([`RequestHeadExt::secure`](crate::RequestHeadExt::secure),
    /// Secure cookies), whatever the request line or proxy headers say.
    ///
    /// [`serve`](crate::serve) makes these itself when it terminates TLS (feature
    /// `tls`). With another TLS acceptor, make one per accepted socket and insert a
    /// clone into every request's extensions, or insert the [`Tls`] marker.
    ///
    /// ```
    /// use tower_context::Connection;
    ///
    /// let conn = Connection::new_tls("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:8443".parse().unwrap());
    /// assert!(conn.is_tls());
    /// ```
    pub fn new_tls(remote_addr: SocketAddr, local_addr: SocketAddr) -> Connection {
        Connection::make(remote_addr, local_addr, true)
    }

    /// A push-capable connection of `kind` (a WebSocket, an SSE stream, or one made
    /// for tests), with a bounded mailbox: what the chat transports make for each
    /// client. A kind that cannot chat gets no mailbox.
    ///
    /// ```
    /// use tower_context::connection::{Connection, ConnectionKind, MailboxConfig, Message};
    ///
    /// let addr = "127.0.0.1:50000".parse().unwrap();
    /// let conn = Connection::live(ConnectionKind::Test, addr, addr, MailboxConfig::default());
    /// assert!(conn.can_chat());
    /// conn.send_message(Message::alert("hi")).unwrap();
    /// ```
    pub fn live(
        kind: ConnectionKind,
        remote_addr: SocketAddr,
        local_addr: SocketAddr,
        mailbox: MailboxConfig,
    ) -> Connection {
        let mailbox = kind.can_chat().then(|| mailbox::Mailbox::new(mailbox));
        Connection::build(next_id(), remote_addr, local_addr, false, kind, mailbox)
    }

    /// A stand-in for a chat connection held by a node that died: its id and the
    /// room it is being swept from, for leave middleware to see. No mailbox.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ghost(id: &str, room: &str) -> Connection {
        let unknown = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
        let conn = Connection::build(id.into(), unknown, unknown, false, ConnectionKind::Unknown, None);
        conn.rooms_list().push(room.to_owned());
        conn
    }

    fn make(remote_addr: SocketAddr, local_addr: SocketAddr, tls: bool) -> Connection {
        Connection::build(next_id(), remote_addr, local_addr, tls, ConnectionKind::Unknown, None)
    }

    fn build(
        id: Box<str>,
        remote_addr: SocketAddr,
        local_addr: SocketAddr,
        tls: bool,
        kind: ConnectionKind,
        mailbox: Option<mailbox::Mailbox>,
    ) -> Connection {
        Connection {
            inner: Arc::new(Inner {
                id,
                connected_at: SystemTime::now(),
                remote_addr,
                local_addr,
                tls,
                kind: AtomicU8::new(kind.to_u8()),
                #[cfg(feature = "server")]
                fingerprint: Mutex::new(None),
                pending: AtomicUsize::new(0),
                total: AtomicU64::new(0),
                messages: AtomicU64::new(0),
                params: Mutex::new(Map::new()),
                destroyed: AtomicBool::new(false),
                destroy: Notify::new(),
                mailbox,
                #[cfg(feature = "sessions")]
                session: std::sync::OnceLock::new(),
                rooms: Mutex::new(Vec::new()),
                carried: Mutex::new(Carried::default()),
                #[cfg(feature = "server")]
                started: std::time::Instant::now(),
                #[cfg(feature = "server")]
                last_activity: AtomicU64::new(0),
            }),
        }
    }

    /// Keeps the session of the request that opened this connection (the first
    /// one kept stays).
    #[cfg(feature = "sessions")]
    pub(crate) fn keep_session(&self, session: Arc<dyn std::any::Any + Send + Sync>) {
        let _ = self.inner.session.set(session);
    }

    /// The session kept by [`keep_session`](Self::keep_session).
    #[cfg(feature = "sessions")]
    pub(crate) fn kept_session(&self) -> Option<&Arc<dyn std::any::Any + Send + Sync>> {
        self.inner.session.get()
    }

    /// The connection's id, unique within the process (Actionhero's `id`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// When the socket was accepted (Actionhero's `connectedAt`).
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// The peer's address, IP and port (Actionhero's `remoteIP` and `remotePort`),
    /// as the socket reports it: the proxy's address when behind a proxy. For the
    /// client's address as proxy headers tell it, see [`TrustProxy`](crate::TrustProxy).
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_addr
    }

    /// The local address the socket was accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Whether the socket speaks TLS that this server terminated (see
    /// [`new_tls`](Self::new_tls)).
    pub fn is_tls(&self) -> bool {
        self.inner.tls
    }

    /// The protocol spoken on the connection (Actionhero's `type`), known once the
    /// first request has arrived under [`serve`](crate::serve).
    pub fn kind(&self) -> ConnectionKind {
        ConnectionKind::from_u8(self.inner.kind.load(Ordering::Relaxed))
    }

    /// How many requests are in flight on the connection now (Actionhero's
    /// `pendingActions`): from the moment [`serve`](crate::serve) hands a request to the app until
    /// its response body has been sent or dropped.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// How many requests the connection has served or is serving (Actionhero's
    /// `totalActions`). Requests refused by the server (over the limit, or after
    /// [`destroy`](Self::destroy)) do not count.
    pub fn total(&self) -> u64 {
        self.inner.total.load(Ordering::Acquire)
    }

    /// The id of the latest request that arrived on the connection (Actionhero's
    /// `messageId`), refused ones included: `"<connection id>.<n>"`, where `n`
    /// counts from 1. `None` before the first request.
    ///
    /// On HTTP/2 several requests run at once, so the latest is not necessarily the
    /// one asking.
    pub fn message_id(&self) -> Option<String> {
        match self.inner.messages.load(Ordering::Acquire) {
            0 => None,
            n => Some(format!("{}.{n}", self.inner.id)),
        }
    }

    /// Values saved on the connection for later requests on it (Actionhero's
    /// `params`): a JSON object, empty at first.
    pub fn params(&self) -> Params<'_> {
        Params { conn: self }
    }

    /// Destroys the connection (Actionhero's `destroy`).
    ///
    /// Under [`serve`](crate::serve), the requests in flight on it finish, then the socket is
    /// closed (HTTP/1.1: no more requests are read; HTTP/2: GOAWAY), and any request
    /// that still arrives is refused with 503. The connection leaves the
    /// [`Connections`](crate::Connections) registry when the socket has closed. Under axum's server it
    /// only marks the connection. Calling it again does nothing.
    ///
    /// The chat's live connections opened on this socket (a WebSocket it was
    /// upgraded to, an SSE stream it serves) are destroyed with it, so the socket
    /// can close: the WebSocket says goodbye, the stream ends.
    pub fn destroy(&self) {
        if let Some(mailbox) = &self.inner.mailbox {
            mailbox.close();
        }
        if !self.inner.destroyed.swap(true, Ordering::AcqRel) {
            // A stored permit: the server's task sees it even if it is not waiting yet.
            self.inner.destroy.notify_one();
        }
        self.end_carried();
    }

    /// Whether [`destroy`](Self::destroy) was called.
    pub fn is_destroyed(&self) -> bool {
        self.inner.destroyed.load(Ordering::Acquire)
    }

    /// Whether the connection can be pushed to and join rooms (Actionhero's
    /// `canChat`): WebSocket, SSE and test connections can, plain HTTP cannot.
    pub fn can_chat(&self) -> bool {
        self.kind().can_chat()
    }

    /// The rooms the connection is in, in the order it joined them (Actionhero's
    /// `rooms`). Only joining and leaving change it.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms_list().clone()
    }

    /// Pushes a message to the client (Actionhero's `sendMessage`): it waits in the
    /// connection's bounded mailbox until the transport sends it. A full mailbox
    /// follows its [`Overflow`] policy.
    ///
    /// # Errors
    ///
    /// [`SendError::NotPushCapable`] for a plain HTTP connection,
    /// [`SendError::Closed`] once destroyed, [`SendError::Full`] when the mailbox
    /// was full under [`Overflow::Disconnect`] (the connection is then destroyed).
    pub fn send_message(&self, message: Message) -> Result<(), SendError> {
        self.push(message.into_bytes())
    }

    /// Pushes encoded bytes: room fan-out shares one encoding between receivers.
    pub(crate) fn push(&self, bytes: bytes::Bytes) -> Result<(), SendError> {
        self.push_tagged(bytes, None)
    }

    /// Pushes a room message with its place in the room's sequence.
    pub(crate) fn push_tagged(
        &self,
        bytes: bytes::Bytes,
        tag: Option<mailbox::Tag>,
    ) -> Result<(), SendError> {
        let mailbox = self.inner.mailbox.as_ref().ok_or(SendError::NotPushCapable)?;
        match mailbox.push(bytes, tag)? {
            mailbox::Pushed::Queued => Ok(()),
            mailbox::Pushed::Overflowed => {
                self.destroy();
                Err(SendError::Full)
            }
        }
    }

    /// The next message for the client, for a transport to send: `None` once the
    /// connection is destroyed and its mailbox drained (or for a connection that
    /// cannot be pushed to). Messages the mailbox had to drop are announced first, as
    /// one `alert` frame with the count.
    pub async fn next_message(&self) -> Option<bytes::Bytes> {
        self.next_delivery().await.map(|(bytes, _)| bytes)
    }

    /// The next message with its place in its room, for transports that resume.
    pub(crate) async fn next_delivery(&self) -> Option<mailbox::Delivery> {
        self.inner.mailbox.as_ref()?.recv().await
    }

    /// Whether the connection was destroyed because its mailbox was full under
    /// [`Overflow::Disconnect`]: it fell behind.
    pub fn fell_behind(&self) -> bool {
        self.inner.mailbox.as_ref().is_some_and(mailbox::Mailbox::overflowed)
    }

    /// How many messages were dropped for this connection because its mailbox was
    /// full (each announced to the client).
    pub fn missed_messages(&self) -> u64 {
        self.inner.mailbox.as_ref().map_or(0, mailbox::Mailbox::dropped)
    }

    /// How many messages wait in the mailbox now.
    pub fn queued_messages(&self) -> usize {
        self.inner.mailbox.as_ref().map_or(0, mailbox::Mailbox::len)
    }

    /// Actionhero's `detailsView`: id, fingerprint, remote IP and port, params,
    /// connectedAt (ms), rooms, totalActions, pendingActions.
    pub fn details(&self) -> Value {
        let connected_at = self
            .inner
            .connected_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        #[cfg(feature = "server")]
        let fingerprint = self.fingerprint().map_or_else(|| self.id().to_owned(), |f| f.as_str().to_owned());
        #[cfg(not(feature = "server"))]
        let fingerprint = self.id().to_owned();
        serde_json::json!({
            "id": self.id(),
            "fingerprint": fingerprint,
            "remoteIP": self.remote_addr().ip().to_string(),
            "remotePort": self.remote_addr().port(),
            "params": Value::Object(self.params_map().clone()),
            "connectedAt": connected_at,
            "rooms": self.rooms(),
            "totalActions": self.total(),
            "pendingActions": self.pending(),
        })
    }

    pub(crate) fn rooms_list(&self) -> MutexGuard<'_, Vec<String>> {
        // No user code runs under this lock.
        self.inner.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection a request carries: put there by [`serve`](crate::serve) (or a server of your
    /// own), or by axum's server as `ConnectInfo<Connection>`.
    #[inline]
    pub(crate) fn from_extensions(extensions: &Extensions) -> Option<Connection> {
        if let Some(conn) = extensions.get::<Connection>() {
            return Some(conn.clone());
        }
        #[cfg(feature = "connect-info")]
        if let Some(info) = extensions.get::<::axum::extract::ConnectInfo<Connection>>() {
            return Some(info.0.clone());
        }
        None
    }

    /// Learns the protocol from a request, once.
    #[cfg(feature = "server")]
    pub(crate) fn observe_version(&self, version: http::Version) {
        let kind = if version == http::Version::HTTP_2 { 2 } else { 1 };
        let _ = self.inner.kind.compare_exchange(0, kind, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Counts a new request in flight, unless `limit` requests already are; true
    /// when counted (in `pending` and `total`).
    #[cfg(feature = "server")]
    pub(crate) fn start_request(&self, limit: Option<usize>) -> bool {
        let counter = &self.inner.pending;
        match limit {
            None => {
                counter.fetch_add(1, Ordering::AcqRel);
            }
            Some(limit) => {
                let counted = counter
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1));
                if counted.is_err() {
                    return false;
                }
            }
        }
        self.inner.total.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// A request counted by `start_request` is done.
    #[cfg(feature = "server")]
    pub(crate) fn end_request(&self) {
        self.touch();
        self.inner.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// A request arrived, refused or not: the sequence behind `message_id`.
    #[cfg(feature = "server")]
    pub(crate) fn count_message(&self) {
        self.inner.messages.fetch_add(1, Ordering::AcqRel);
    }

    #[cfg(feature = "server")]
    fn touch(&self) {
        let since = self.inner.started.elapsed();
        self.inner
            .last_activity
            .store(u64::try_from(since.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long since a request last finished (since the accept, before the first).
    /// A request in flight counts in `pending` instead, so arrivals need no clock.
    #[cfg(feature = "server")]
    pub(crate) fn idle_for(&self) -> std::time::Duration {
        let now = self.inner.started.elapsed();
        let last = std::time::Duration::from_millis(self.inner.last_activity.load(Ordering::Relaxed));
        now.saturating_sub(last)
    }

    /// Completes when [`destroy`](Self::destroy) is called (or was, before).
    #[cfg(feature = "server")]
    pub(crate) fn destroyed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.destroy.notified()
    }

    /// Keeps `live`, a connection a request on this socket opened, so that ending
    /// this one ends it too; ends it at once if this one was ended already.
    pub(crate) fn carry(&self, live: &Connection) {
        {
            let mut carried = self.carried();
            if !carried.ended {
                // Those that ended on their own are let go here: a keep-alive
                // connection may open many streams, one after another.
                carried.live.retain(|c| !c.is_destroyed());
                carried.live.push(live.clone());
                return;
            }
        }
        live.destroy();
    }

    /// Destroys the live connections this one carries, and any it carries later.
    pub(crate) fn end_carried(&self) {
        let live = {
            let mut carried = self.carried();
            carried.ended = true;
            std::mem::take(&mut carried.live)
        };
        for conn in live {
            conn.destroy();
        }
    }

    /// Whether this connection's socket is busy even with no request in flight: it
    /// was upgraded (from the 101 on, before the WebSocket's own connection exists),
    /// or carries a live connection that is still open (an SSE stream).
    #[cfg(feature = "server")]
    pub(crate) fn in_use(&self) -> bool {
        let carried = self.carried();
        carried.upgraded || carried.live.iter().any(|c| !c.is_destroyed())
    }

    /// A request on this socket was answered with a 101 (see
    /// [`in_use`](Self::in_use)).
    #[cfg(feature = "server")]
    pub(crate) fn note_upgraded(&self) {
        self.carried().upgraded = true;
    }

    fn carried(&self) -> MutexGuard<'_, Carried> {
        // No user code runs under this lock (destroying the carried connections
        // happens after it is released).
        self.inner.carried.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn params_map(&self) -> MutexGuard<'_, Map<String, Value>> {
        // No user code runs while this lock is held, so a poisoned lock cannot hold
        // a half-made change.
        self.inner.params.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PartialEq for Connection {
    /// Two handles are equal when they are the same connection.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Connection {}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Connection");
        s.field("id", &self.id())
            .field("kind", &self.kind())
            .field("remote_addr", &self.remote_addr())
            .field("local_addr", &self.local_addr());
        #[cfg(feature = "server")]
        s.field("fingerprint", &self.fingerprint());
        s.field("pending", &self.pending())
            .field("total", &self.total())
            .field("destroyed", &self.is_destroyed())
            .finish_non_exhaustive()
    }
}

/// The values saved on a [`Connection`]: see [`Connection::params`].
///
/// Each call takes a short lock of the map alone.
pub struct Params<'a> {
    conn: &'a Connection,
}

impl Params<'_> {
    /// Saves a value, returning the one it replaced.
    pub fn insert(&self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.conn.params_map().insert(key.into(), value.into())
    }

    /// A clone of the value saved under `key`.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.conn.params_map().get(key).cloned()
    }

    /// Removes and returns the value saved under `key`.
    pub fn remove(&self, key: &str) -> Option<Value> {
        self.conn.params_map().remove(key)
    }

    /// How many values are saved.
    pub fn len(&self) -> usize {
        self.conn.params_map().len()
    }

    /// Whether nothing is saved.
    pub fn is_empty(&self) -> bool {
        self.conn.params_map().is_empty()
    }

    /// Removes every value.
    pub fn clear(&self) {
        self.conn.params_map().clear();
    }

    /// A copy of everything saved, for logs or a details view.
    pub fn to_map(&self) -> Map<String, Value> {
        self.conn.params_map().clone()
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.conn.params_map().iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        Connection::new("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap())
    }

    #[test]
    fn ids_are_unique_and_handles_share_state() {
        let a = conn();
        let b = conn();
        assert_ne!(a.id(), b.id());
        let a2 = a.clone();
        a2.params().insert("user", "ann");
        assert_eq!(a.params().get("user"), Some(Value::from("ann")));
        assert!(b.params().is_empty());
        assert_eq!(a, a2);
        assert_ne!(a, b);
    }

    #[test]
    fn destroy_marks_once() {
        let a = conn();
        assert!(!a.is_destroyed());
        a.destroy();
        a.destroy();
        assert!(a.is_destroyed());
    }

    #[test]
    fn message_id_counts_from_one() {
        let a = conn();
        assert_eq!(a.message_id(), None);
        a.inner.messages.fetch_add(1, Ordering::AcqRel);
        assert_eq!(a.message_id(), Some(format!("{}.1", a.id())));
    }

    #[test]
    fn found_in_extensions() {
        let a = conn();
        let mut ext = Extensions::new();
        assert!(Connection::from_extensions(&ext).is_none());
        ext.insert(a.clone());
        assert_eq!(Connection::from_extensions(&ext), Some(a));
    }

    #[cfg(feature = "connect-info")]
    #[test]
    fn found_in_axum_connect_info() {
        let a = conn();
        let mut ext = Extensions::new();
        ext.insert(::axum::extract::ConnectInfo(a.clone()));
        assert_eq!(Connection::from_extensions(&ext), Some(a));
    }
}
