//! Chat over server-sent events: the receive side for clients that cannot or need
//! not speak WebSocket. A client opens `GET /events?room=a&room=b`; it joins those
//! rooms (as a connection of kind `ServerSentEvents`) and gets each room message as
//! an event; it leaves them when it goes away.
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::request::Parts;
//! use tower_context::chat::{Chat, sse::SseChat};
//! use tower_context::{ContextLayer, HttpError};
//!
//! let sse = SseChat::new(Chat::new().with_rooms(["news"]));
//! let app: Router = Router::new()
//!     .route("/events", get(move |parts: Parts| async move { sse.respond(&parts).await.map_err(HttpError::from) }))
//!     .layer(ContextLayer::new());
//! ```
//!
//! Every event is `data: <the JSON message>`; room messages carry an `id` that says
//! where the stream stands in each of its rooms (`room:seq,room:seq`, room names
//! percent-encoded). A client that reconnects sends it back as `Last-Event-ID` (a
//! browser's `EventSource` does so by itself) and first gets what it missed, from a
//! bounded replay buffer per room (256 messages by default); when more were missed
//! than the buffer holds, an `alert` event says how many. A comment line every 15 s
//! keeps idle streams open through proxies. Resuming works on the node that served
//! the stream: each node numbers its rooms' messages itself. A position past what
//! this node has numbered (another node's, or one from before a restart) cannot be
//! resumed: the stream starts from now, after an `alert` event saying so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::{Chat, ChatError};
use crate::body::{Body, BoxError};
use crate::connection::{Connection, ConnectionKind, MailboxConfig, Message};

/// Characters of a room name that would break an event id.
const ID: &AsciiSet = &CONTROLS.add(b',').add(b':').add(b'%').add(b' ');

/// Serves chat rooms as server-sent event streams: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct SseChat {
    chat: Chat,
    mailbox: MailboxConfig,
    keep_alive: Duration,
}

impl SseChat {
    /// Streams over `chat`, which from now on keeps 256 messages per room for
    /// resuming clients (see [`Chat::keep_replay`]).
    pub fn new(chat: Chat) -> Self {
        chat.keep_replay(256);
        SseChat { chat, mailbox: MailboxConfig::default(), keep_alive: Duration::from_secs(15) }
    }

    /// Each stream's mailbox: its size and overflow policy.
    #[must_use]
    pub fn mailbox(mut self, mailbox: MailboxConfig) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// How often an idle stream gets a comment line (default 15 s).
    #[must_use]
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every.max(Duration::from_millis(10));
        self
    }

    /// Answers one request: the rooms are its `room` query parameters, the resume
    /// point its `Last-Event-ID` header.
    ///
    /// # Errors
    ///
    /// `a room is required` without a room; what joining a room fails with (`room
    /// does not exist`, a middleware's veto). As an [`HttpError`](crate::HttpError)
    /// these are 4xx responses.
    pub async fn respond(&self, parts: &Parts) -> Result<Response<Body>, ChatError> {
        let rooms = rooms_of(parts.uri.query().unwrap_or(""));
        if rooms.is_empty() {
            return Err(ChatError::RoomRequired);
        }
        let http = Connection::from_extensions(&parts.extensions)
            .or_else(|| parts.extensions.get::<crate::Context>().and_then(|ctx| ctx.connection().cloned()));
        let unknown = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let (remote, local) = http.as_ref().map_or((unknown, unknown), |c| (c.remote_addr(), c.local_addr()));
        let conn = Connection::live(ConnectionKind::ServerSentEvents, remote, local, self.mailbox);
        // Until the stream takes the connection over, a request dropped while the
        // store works (the client went away) destroys it.
        let unclaimed = Unclaimed { chat: &self.chat, conn: Some(conn.clone()), rooms: &rooms };
        if let Err(err) = self.chat.register(&conn).await {
            unclaimed.claim();
            return Err(err);
        }
        for room in &rooms {
            // On an error `unclaimed` destroys the connection, in a task of its own: a
            // client that leaves meanwhile cannot cut that short.
            self.chat.join(conn.id(), room).await?;
        }
        unclaimed.claim();
        // The socket's connection ends the stream when it is destroyed or its server
        // shuts down; otherwise the stream would hold the socket open for ever.
        if let Some(http) = &http {
            http.carry(&conn);
        }
        let resume = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(positions)
            .unwrap_or_default();
        let mut stream = Stream {
            chat: self.chat.clone(),
            conn: conn.clone(),
            keep_alive: self.keep_alive,
            sent: BTreeMap::new(),
            ready: vec![Bytes::from_static(b"retry: 2000\n\n")],
            waiting: None,
            told_behind: false,
        };
        // One position per room (a header naming a room twice counts once), and only
        // for the rooms asked for.
        let resume: BTreeMap<String, u64> =
            resume.into_iter().filter(|(room, _)| rooms.contains(room)).collect();
        let mut replays = Vec::with_capacity(resume.len());
        for (room, after) in resume {
            match self.chat.replay_since(&room, after) {
                Some(replay) => {
                    // Every room's position first: each replayed event's id names them all.
                    stream.sent.insert(room.clone(), after);
                    replays.push((room, replay));
                }
                None => {
                    // Not a position of this node's: the stream starts from now, and says so.
                    let text = format!("could not resume {room}: messages may have been missed");
                    stream.ready.push(event(None, Message::alert(text).bytes()));
                }
            }
        }
        for (room, replay) in replays {
            if replay.missed > 0 {
                let text = format!("you missed {} message(s) in {room}", replay.missed);
                stream.ready.push(event(None, Message::alert(text).bytes()));
            }
            for (seq, bytes) in replay.messages {
                stream.sent.insert(room.clone(), seq);
                stream.ready.push(event(Some(&stream.sent), &bytes));
            }
        }
        stream.ready.reverse();
        let mut response = Response::new(Body::new(stream));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response)
    }
}

/// The `room` parameters of a query string, decoded, without duplicates.
fn rooms_of(query: &str) -> Vec<String> {
    let mut rooms: Vec<String> = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("room=") else { continue };
        let room = percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned();
        if !room.is_empty() && !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    rooms
}

/// A connection made for a stream not made yet: destroyed if dropped unclaimed, and
/// taken out of the rooms it was joining.
struct Unclaimed<'a> {
    chat: &'a Chat,
    conn: Option<Connection>,
    rooms: &'a [String],
}

impl Unclaimed<'_> {
    fn claim(mut self) {
        self.conn = None;
    }
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.chat.destroy_joining(&conn, self.rooms.to_vec());
        }
    }
}

/// A `Last-Event-ID`: `room:seq` pairs; anything malformed is ignored.
fn positions(id: &str) -> Vec<(String, u64)> {
    id.split(',')
        .filter_map(|pair| {
            let (room, seq) = pair.trim().rsplit_once(':')?;
            Some((percent_decode_str(room).decode_utf8().ok()?.into_owned(), seq.parse().ok()?))
        })
        .collect()
}

/// One event: its id (where the stream stands), and the message as its data.
fn event(sent: Option<&BTreeMap<String, u64>>, data: &[u8]) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(sent) = sent {
        out.push_str("id: ");
        for (i, (room, seq)) in sent.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            let _ = write!(out, "{separator}{}:{seq}", utf8_percent_encode(room, ID));
        }
        out.push('\n');
    }
    out.push_str("data: ");
    // A JSON message is one line: no newline can split the event.
    out.push_str(&String::from_utf8_lossy(data));
    out.push_str("\n\n");
    Bytes::from(out)
}

type Next = Pin<Box<dyn Future<Output = Option<Option<crate::connection::Delivery>>> + Send>>;

/// The event stream of one client; dropping it (the client went away) leaves its
/// rooms.
struct Stream {
    chat: Chat,
    conn: Connection,
    keep_alive: Duration,
    /// Where the stream stands in each room.
    sent: BTreeMap<String, u64>,
    /// Events to send before the next message, last first.
    ready: Vec<Bytes>,
    waiting: Option<Next>,
    /// Whether the client was told it fell behind.
    told_behind: bool,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.ready.pop() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            let waiting = this.waiting.get_or_insert_with(|| {
                let (conn, every) = (this.conn.clone(), this.keep_alive);
                Box::pin(async move { tokio::time::timeout(every, conn.next_delivery()).await.ok() })
            });
            let next = match waiting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            this.waiting = None;
            match next {
                // Nothing for a while: a comment keeps proxies from closing it.
                None => return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))))),
                // Destroyed for falling behind: a last event says so (once: the
                // stream ends when it has gone).
                Some(None) if this.conn.fell_behind() && !this.told_behind => {
                    this.told_behind = true;
                    let text = "disconnected: this stream fell behind (its mailbox was full)";
                    this.ready.push(event(None, Message::alert(text).bytes()));
                }
                // Destroyed and drained.
                Some(None) => return Poll::Ready(None),
                Some(Some((bytes, None))) => this.ready.push(event(None, &bytes)),
                Some(Some((bytes, Some(tag)))) => {
                    let room = tag.room.to_string();
                    // A message replayed already comes again live: sent once.
                    if this.sent.get(&room).is_some_and(|sent| *sent >= tag.seq) {
                        continue;
                    }
                    this.sent.insert(room, tag.seq);
                    this.ready.push(event(Some(&this.sent), &bytes));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.chat.destroy_now(&self.conn);
    }
}
