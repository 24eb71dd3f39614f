//! Chat over WebSocket (feature `ws`): Actionhero's JSON protocol on axum's
//! WebSocket, under [`serve`](crate::serve) or `axum::serve`.
//!
//! ```no_run
//! use axum::Router;
//! use tower_context::chat::{Chat, ws::WebSocketChat};
//! use tower_context::ContextLayer;
//!
//! # async fn run() -> std::io::Result<()> {
//! let chat = Chat::new().with_rooms(["defaultRoom"]);
//! let app = Router::new().route("/ws", WebSocketChat::new(chat).route()).layer(ContextLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tower_context::serve(listener, app).await
//! # }
//! ```
//!
//! The protocol, frame by frame (every frame is a JSON text frame):
//! - On connect the server says `{"welcome": "...", "context": "api"}`.
//! - Each client frame `{"event": VERB, "messageId"?: ID, "room"?: ROOM, ...}` runs the
//!   verb with the words `room` (when present) then the other values in the order
//!   the client wrote them. The answer is `{"status": "OK", "context": "response",
//!   "data": ..., "messageId": ID}`, or `{"status": "Error: ...", "error": "Error: ...",
//!   "context": "response", "data": <the frame without event, messageId and room>,
//!   "messageId": ID}`. `ID` is the client's, else a fresh one.
//! - Room messages arrive as `{"message", "room", "from", "context": "user", "sentAt"}`.
//! - `quit` or `exit` (or [`Chat::destroy`]) is not answered: the server says
//!   `{"message": "Bye!", "context": "api"}` and closes (code 1000).
//!
//! Bad input gets a clear answer and harms nothing else: a frame that is not JSON,
//! or a binary frame, is answered with an error response (Actionhero stays silent)
//! and the connection is kept; a frame over the size limit closes the connection
//! with code 1009; a client that stops reading meets its mailbox's overflow policy.
//! The client's fingerprint is `?sessionID=` (the same value as its HTTP requests'
//! `sessionID` cookie shares it), else the HTTP connection's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::RawQuery;
use axum::extract::ws::{CloseFrame, Message as Frame, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{Chat, ChatError, Verb, VerbSet};
use crate::connection::{Connection, ConnectionKind, MailboxConfig, Message};

/// The close code for a frame over the size limit (RFC 6455 "message too big").
const TOO_BIG: u16 = 1009;

/// How many answers may wait in a client's mailbox for a `file` event to be
/// answered.
#[cfg(feature = "files")]
const FILE_BACKLOG: usize = 4;

/// Serves chat clients over WebSocket: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct WebSocketChat {
    chat: Chat,
    mailbox: MailboxConfig,
    max_frame: usize,
    welcome: String,
    #[cfg(feature = "server")]
    registry: Option<crate::server::Connections>,
    /// Where `file` events read from.
    #[cfg(feature = "files")]
    files: Option<crate::files::PublicFiles>,
    /// The largest file a `file` event sends.
    #[cfg(feature = "files")]
    max_file: u64,
}

impl WebSocketChat {
    /// Chat over `chat`, with a mailbox of 256 messages (dropping the oldest when
    /// full), frames of at most 64 KiB, and Actionhero's welcome.
    pub fn new(chat: Chat) -> Self {
        WebSocketChat {
            chat,
            mailbox: MailboxConfig::default(),
            max_frame: 64 * 1024,
            welcome: "Welcome to the actionhero api".to_owned(),
            #[cfg(feature = "server")]
            registry: None,
            #[cfg(feature = "files")]
            files: None,
            #[cfg(feature = "files")]
            max_file: 1024 * 1024,
        }
    }

    /// Answers `{"event": "file", "file": PATH}` with the file from `files`
    /// (feature `files`), as Actionhero's socket does, up to 1 MiB (see
    /// [`max_file_size`](Self::max_file_size)). The answer is `{"status": "OK",
    /// "context": "response", "content", "encoding", "mime", "length",
    /// "lastModified", "messageId"}`: `content` is the text of a text file
    /// (`encoding: "utf8"`) and base64 for anything else (`encoding: "base64"`), where
    /// Actionhero sends every file as a string and so corrupts binary ones; `length`
    /// counts the file's bytes, `lastModified` is as JavaScript writes a date. A
    /// missing file is the error answer `Error: that file is not found`. Without this,
    /// a `file` event is refused like any verb this socket does not allow.
    ///
    /// ```
    /// use tower_context::PublicFiles;
    /// use tower_context::chat::{Chat, ws::WebSocketChat};
    ///
    /// let socket = WebSocketChat::new(Chat::new()).public_files(PublicFiles::new(["public"]));
    /// ```
    #[cfg(feature = "files")]
    #[must_use]
    pub fn public_files(mut self, files: crate::files::PublicFiles) -> Self {
        self.files = Some(files);
        self
    }

    /// The largest file a `file` event sends (1 MiB unless set); a larger one is
    /// answered with an error. Base64 makes a binary file's frame a third larger.
    #[cfg(feature = "files")]
    #[must_use]
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file = bytes;
        self
    }

    /// Lists each client in `connections` while its socket is open (kind
    /// `WebSocket`), beside the server's HTTP connections: pass the server's
    /// registry ([`Serve::connections`](crate::server::Serve::connections)).
    #[cfg(feature = "server")]
    #[must_use]
    pub fn registry(mut self, connections: crate::server::Connections) -> Self {
        self.registry = Some(connections);
        self
    }

    /// Each client's mailbox: its size and overflow policy.
    #[must_use]
    pub fn mailbox(mut self, mailbox: MailboxConfig) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// The largest frame a client may send; a larger one closes it with 1009.
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.max(1);
        self
    }

    /// The text of the welcome message.
    #[must_use]
    pub fn welcome(mut self, text: impl Into<String>) -> Self {
        self.welcome = text.into();
        self
    }

    /// A `GET` route that upgrades to the chat protocol.
    pub fn route<S: Clone + Send + Sync + 'static>(self) -> MethodRouter<S> {
        get(
            move |upgrade: WebSocketUpgrade,
                  http: Option<Connection>,
                  ctx: Option<axum::Extension<crate::Context>>,
                  RawQuery(query): RawQuery| {
                let socket = self.clone();
                async move { socket.upgrade_in(upgrade, http.as_ref(), query.as_deref(), ctx.as_deref()) }
            },
        )
    }

    /// Upgrades one request: `http` is the connection it came on (for the client's
    /// address), `query` its query string (for `sessionID`).
    pub fn upgrade(
        &self,
        upgrade: WebSocketUpgrade,
        http: Option<&Connection>,
        query: Option<&str>,
    ) -> Response {
        self.upgrade_in(upgrade, http, query, None)
    }

    /// [`upgrade`](Self::upgrade), keeping the session of the request's `ctx` (under
    /// [`ContextLayer`](crate::ContextLayer)) with the connection.
    fn upgrade_in(
        &self,
        upgrade: WebSocketUpgrade,
        http: Option<&Connection>,
        query: Option<&str>,
        ctx: Option<&crate::Context>,
    ) -> Response {
        let unknown = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let (remote, local) = http.map_or((unknown, unknown), |c| (c.remote_addr(), c.local_addr()));
        let conn = Connection::live(ConnectionKind::WebSocket, remote, local, self.mailbox);
        // The socket's connection ends this one when it is destroyed or its server
        // shuts down: the upgraded socket is closed with a goodbye. Carried only once
        // the upgrade happened: one that never does (the client left, an error
        // replaced the 101) must not leave the socket looking busy.
        let carrier = http.cloned();
        #[cfg(feature = "server")]
        {
            let given = query.and_then(|q| session_id(q)).and_then(crate::connection::Fingerprint::parse);
            if let Some(fingerprint) = given.or_else(|| http.and_then(Connection::fingerprint)) {
                conn.set_fingerprint(fingerprint);
            }
        }
        #[cfg(not(feature = "server"))]
        let _ = query;
        #[cfg(feature = "sessions")]
        if let Some(ctx) = ctx {
            conn.keep_session_of(ctx);
        }
        #[cfg(not(feature = "sessions"))]
        let _ = ctx;
        let this = self.clone();
        // tungstenite reads in 128 KiB chunks by default, allocated up front for every
        // socket: most of an idle client's memory. Chat frames are small.
        upgrade
            .read_buffer_size(4 * 1024)
            .write_buffer_size(4 * 1024)
            .max_message_size(self.max_frame)
            .max_frame_size(self.max_frame)
            .on_upgrade(move |socket| async move {
                if let Some(http) = carrier {
                    http.carry(&conn);
                }
                this.run(socket, conn).await;
            })
    }

    async fn run(self, mut socket: WebSocket, conn: Connection) {
        if let Err(_err) = self.chat.register(&conn).await {
            // The store cannot be reached: say so (its reason stays on the server,
            // as over HTTP), and close as a server error.
            #[cfg(feature = "tracing")]
            tracing::error!(error = %_err, connection = conn.id(), "chat registration failed");
            let alert = Message::alert("chat store unavailable");
            if let Ok(text) = Utf8Bytes::try_from(alert.into_bytes()) {
                let _ = socket.send(Frame::Text(text)).await;
            }
            let frame = CloseFrame { code: 1011, reason: Utf8Bytes::from("chat store unavailable") };
            let _ = socket.send(Frame::Close(Some(frame))).await;
            return;
        }
        #[cfg(feature = "server")]
        if let Some(registry) = &self.registry {
            registry.insert(&conn);
        }
        let welcome = Message::api(serde_json::json!({ "welcome": self.welcome }));
        let _ = conn.send_message(welcome);
        let close = loop {
            tokio::select! {
                outgoing = conn.next_message() => match outgoing {
                    Some(bytes) => {
                        let Ok(text) = Utf8Bytes::try_from(bytes) else { continue };
                        if socket.send(Frame::Text(text)).await.is_err() {
                            break None;
                        }
                    }
                    // Destroyed for falling behind: the close says so.
                    None if conn.fell_behind() => break Some((1008, "mailbox full")),
                    // Destroyed and drained: say goodbye.
                    None => break Some((1000, "")),
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Frame::Text(text))) => self.answer(&conn, text.as_bytes()).await,
                    Some(Ok(Frame::Binary(_))) => {
                        let err = Message::error("frames must be JSON text", Value::Null, fresh_id());
                        let _ = conn.send_message(err);
                    }
                    Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                    Some(Ok(Frame::Close(_))) | None => break None,
                    Some(Err(err)) => break too_big(err).then_some((TOO_BIG, "frame too large")),
                },
            }
        };
        if let Some((code, reason)) = close {
            if code == 1000 {
                let bye = Message::api(serde_json::json!({ "message": "Bye!" }));
                if let Ok(text) = Utf8Bytes::try_from(bye.into_bytes()) {
                    let _ = socket.send(Frame::Text(text)).await;
                }
            }
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            let _ = socket.send(Frame::Close(Some(frame))).await;
        }
        self.chat.destroy(&conn).await;
        #[cfg(feature = "server")]
        if let Some(registry) = &self.registry {
            registry.remove(&conn);
        }
    }

    /// Runs one client frame and queues the answer.
    async fn answer(&self, conn: &Connection, frame: &[u8]) {
        let mut de = serde_json::Deserializer::from_slice(frame);
        let parsed = de.deserialize_any(FrameVisitor).and_then(|parsed| de.end().map(|()| parsed));
        let reply = match parsed {
            // Actionhero stays silent here; a clear answer helps the client.
            Err(_) => Message::error("frames must be JSON text", Value::Null, fresh_id()),
            Ok(Inbound::Other(value)) => {
                Message::error(&ChatError::VerbNotAllowed("undefined".into()).to_string(), value, fresh_id())
            }
            Ok(Inbound::Object(fields)) => match self.run_verb(conn, fields).await {
                Some(reply) => reply,
                None => return,
            },
        };
        let _ = conn.send_message(reply);
    }

    /// Runs a verb frame: its answer, or `None` when it was sent already.
    async fn run_verb(&self, conn: &Connection, fields: Vec<(String, Value)>) -> Option<Message> {
        let mut event = None;
        let mut message_id = None;
        let mut room = None;
        let mut rest = Vec::new();
        for (key, value) in fields {
            match key.as_str() {
                "event" => event = Some(value),
                "messageId" => message_id = Some(value),
                // As Actionhero: a room that JavaScript finds false (null, "", 0) is
                // not taken out, and stays a word where it stands.
                "room" if truthy(&value) => room = Some(value),
                _ => rest.push((key, value)),
            }
        }
        let id = message_id.filter(truthy).unwrap_or_else(|| Value::from(fresh_id()));
        let data = Value::Object(rest.iter().cloned().collect());
        #[cfg(feature = "files")]
        if let (Some(files), Some(Value::String(name))) = (&self.files, &event)
            && name == "file"
        {
            // A file answer can be large: while the client has not read what is
            // queued for it, it gets no more of them (memory stays bounded by a few
            // files, not by the mailbox's count of messages).
            if conn.queued_messages() >= FILE_BACKLOG {
                let busy =
                    format!("{FILE_BACKLOG} or more answers are waiting: read them before asking for a file");
                return Some(Message::error(&busy, data, id));
            }
            let file = rest.iter().find(|(key, _)| key == "file").map(|(_, value)| value);
            return Some(crate::files::socket::answer(files, file, self.max_file, data, id).await);
        }
        let mut words = room.iter().chain(rest.iter().map(|(_, v)| v));
        let verb = match &event {
            // `say` joins its words after the room as JavaScript's `join` does (null
            // is ""), and a room that is false in JavaScript is none.
            Some(Value::String(name)) if name == "say" => {
                let room = words.next().filter(|room| truthy(room)).map(word).unwrap_or_default();
                Verb::parse(name, std::iter::once(room).chain(words.map(joined_word)))
            }
            Some(Value::String(name)) => Verb::parse(name, words.map(word)),
            Some(other) => Err(ChatError::VerbNotAllowed(word(other))),
            None => Err(ChatError::VerbNotAllowed("undefined".into())),
        };
        match verb {
            // The answer goes before the message itself, as from Actionhero.
            Ok(Verb::Say { room, message })
                if VerbSet::for_kind(conn.kind())
                    .allows(&Verb::Say { room: String::new(), message: String::new() }) =>
            {
                let _ = self.chat.say_answering(conn, &room, Value::String(message), |result| {
                    let reply = match result {
                        Ok(()) => Message::ok(Value::Null, id),
                        Err(err) => Message::error(&err.to_string(), data, id),
                    };
                    let _ = conn.send_message(reply);
                });
                None
            }
            Ok(verb) => Some(match self.chat.verb(conn, verb).await {
                Ok(answer) => Message::ok(answer, id),
                Err(err) => Message::error(&err.to_string(), data, id),
            }),
            Err(err) => Some(Message::error(&err.to_string(), data, id)),
        }
    }
}

/// A JSON value as a verb's word, as Actionhero (JavaScript's `String`) writes it:
/// text as it is, `null`, `true`, numbers as JavaScript prints them, an array's
/// items joined by commas, any object `[object Object]`.
fn word(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => js_number(n),
        Value::Array(items) => items.iter().map(joined_word).collect::<Vec<_>>().join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// A value as JavaScript's `join` writes an item: `null` is empty.
fn joined_word(value: &Value) -> String {
    if value.is_null() { String::new() } else { word(value) }
}

/// Whether JavaScript finds the value true: not null, false, 0 or "".
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A number as JavaScript prints it: integers without a fraction, and an exponent
/// (`1e+21`, `1.5e-7`) from 1e21 up and below 1e-6.
fn js_number(n: &serde_json::Number) -> String {
    let Some(x) = n.as_f64() else { return n.to_string() };
    if x == 0.0 {
        return "0".to_owned();
    }
    let magnitude = x.abs();
    if (1e-6..1e21).contains(&magnitude) {
        // Rust prints the shortest text that reads back as the same number, as
        // JavaScript does, without an exponent in this range.
        return format!("{x}");
    }
    let text = format!("{x:e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => format!("{mantissa}e+{exponent}"),
        _ => text,
    }
}

/// A fresh message id, in the shape of a random UUID (as Actionhero makes them).
fn fresh_id() -> String {
    let mut b = [0_u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = std::process::id().to_le_bytes().repeat(4).try_into().unwrap_or([0; 16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The `sessionID` of a query string.
#[cfg(feature = "server")]
fn session_id(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| pair.strip_prefix("sessionID="))
}

/// Whether a socket error is a frame over the size limit.
fn too_big(err: axum::Error) -> bool {
    err.into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|err| matches!(*err, tungstenite::Error::Capacity(_)))
}

/// A client frame: an object with its keys in the order written (a JSON map would
/// sort them, and a verb's words follow the client's order), or any other value.
enum Inbound {
    Object(Vec<(String, Value)>),
    Other(Value),
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Inbound;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Inbound, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.push((key, value));
        }
        Ok(Inbound::Object(fields))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Inbound, A::Error> {
        let value = serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Inbound::Other(value))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Inbound, E> {
        Ok(Inbound::Other(Value::from(v)))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Inbound, E> {
        Ok(Inbound::Other(Value::from(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Inbound, E> {
        Ok(Inbound::Other(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Inbound, E> {
        Ok(Inbound::Other(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Inbound, E> {
        Ok(Inbound::Other(Value::from(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Inbound, E> {
        Ok(Inbound::Other(Value::Null))
    }
}
