//! Chat over server-sent events, against a real server on 127.0.0.1 with a raw
//! client: room messages as events with resumable ids, keep-alive comments,
//! `Last-Event-ID` resume from the replay buffer (and an alert past it), leaving the
//! rooms when the client goes away.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::request::Parts;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_context::chat::Chat;
use tower_context::chat::sse::SseChat;
use tower_context::{ContextLayer, HttpError};

async fn start(chat: Chat, keep_replay: usize) -> SocketAddr {
    start_with(chat, keep_replay, |sse| sse).await
}

/// [`start`], with the stream's settings changed by `tune`.
async fn start_with(chat: Chat, keep_replay: usize, tune: impl FnOnce(SseChat) -> SseChat) -> SocketAddr {
    let sse = tune(SseChat::new(chat.clone()).keep_alive(Duration::from_millis(200)));
    chat.keep_replay(keep_replay);
    let app = Router::new()
        .route(
            "/events",
            get(move |parts: Parts| async move { sse.respond(&parts).await.map_err(HttpError::from) }),
        )
        .layer(ContextLayer::new());
    crate::serve_app(app).await
}

/// A raw client and everything it has read so far.
struct Client {
    stream: TcpStream,
    read: String,
}

impl Client {
    async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Client {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map(|id| format!("last-event-id: {id}\r\n")).unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n{resume}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        Client { stream, read: String::new() }
    }

    /// Reads until `text` has arrived (bounded); everything read up to it.
    async fn until(&mut self, text: &str) -> String {
        let mut buf = [0_u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.read.contains(text) {
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("`{text}` did not arrive; read: {}", self.read))
                .unwrap();
            assert!(n > 0, "closed before `{text}`; read: {}", self.read);
            self.read.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let at = self.read.find(text).unwrap() + text.len();
        self.read.drain(..at).collect()
    }

    /// Reads the next event, skipping comments: a keep-alive comes every 200 ms
    /// of quiet, so one may well arrive before the event awaited.
    async fn event(&mut self) -> String {
        loop {
            let chunk = self.until("\n\n").await;
            // The stream's text follows the chunked encoding's framing (its lines
            // end in CRLF; the stream's lines in LF only).
            let text = chunk.rsplit("\r\n").next().unwrap_or_default();
            if !text.trim_end_matches('\n').lines().all(|line| line.starts_with(':')) {
                return chunk;
            }
        }
    }
}

async fn members(chat: &Chat, room: &str, want: u64) {
    for _ in 0..200 {
        if chat.room_status(room).await.unwrap()["membersCount"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{room} never had {want} members: {}", chat.room_status(room).await.unwrap());
}

/// Says `n1` to `n{count}` in `room` while a client that was in it has gone: a
/// member first, so this node numbers the room's messages.
async fn said_while_away(chat: &Chat, addr: SocketAddr, room: &str, count: u64) {
    let first = Client::open(addr, &format!("/events?room={room}"), None).await;
    members(chat, room, 1).await;
    for n in 1..=count {
        chat.broadcast(room, json!(format!("n{n}"))).await.unwrap();
    }
    drop(first);
    members(chat, room, 0).await;
}

#[tokio::test]
async fn room_messages_arrive_as_resumable_events() {
    let chat = Chat::new().with_rooms(["news", "sport"]);
    let addr = start(chat.clone(), 256).await;
    let mut client = Client::open(addr, "/events?room=news&room=sport", None).await;
    let head = client.until("retry: 2000\n\n").await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    members(&chat, "news", 1).await;
    chat.broadcast("news", json!("first")).await.unwrap();
    let got = client.event().await;
    assert!(got.contains("id: news:1\n"), "{got}");
    assert!(
        got.contains(r#"data: {"message":"first","room":"news","from":"0","context":"user","sentAt":"#),
        "{got}"
    );
    chat.broadcast("sport", json!("goal")).await.unwrap();
    let got = client.event().await;
    assert!(got.contains("id: news:1,sport:1\n"), "{got}");
    // Idle: a keep-alive comment.
    client.until(": keep-alive\n\n").await;

    // The client goes away: it leaves its rooms.
    drop(client);
    members(&chat, "news", 0).await;
    members(&chat, "sport", 0).await;

    // Meanwhile three more messages; the client comes back where it stood.
    for n in 2..=4 {
        chat.broadcast("news", json!(format!("news {n}"))).await.unwrap();
    }
    let mut client = Client::open(addr, "/events?room=news&room=sport", Some("news:1,sport:1")).await;
    let got = client.until(r#""message":"news 4""#).await;
    let (two, three, four) =
        (got.find("news 2").expect(&got), got.find("news 3").unwrap(), got.find("news 4").unwrap());
    assert!(two < three && three < four, "in order: {got}");
    for n in 2..=4 {
        assert!(got.contains(&format!("id: news:{n},sport:1\n")), "{got}");
    }
    assert!(!got.contains("first") && !got.contains("missed"), "nothing twice, nothing missed: {got}");
    // And live from there.
    chat.broadcast("news", json!("live again")).await.unwrap();
    let got = client.until("live again").await;
    assert!(got.contains("id: news:5,sport:1\n"), "{got}");
}

#[tokio::test]
async fn a_resume_past_the_replay_buffer_is_announced_not_silent() {
    let chat = Chat::new().with_rooms(["news"]);
    let addr = start(chat.clone(), 2).await;
    said_while_away(&chat, addr, "news", 4).await;
    let mut client = Client::open(addr, "/events?room=news", Some("news:1")).await;
    let got = client.until("n4").await;
    let alert = got.find(r#"{"message":"you missed 1 message(s) in news","context":"alert"}"#).expect(&got);
    let n3 = got.find(r#""message":"n3""#).expect(&got);
    assert!(alert < n3, "the alert comes first: {got}");
    assert!(!got.contains(r#""message":"n2""#), "n2 is past the buffer of 2: {got}");
    assert!(got.contains("id: news:3\n") && got.contains("id: news:4\n"), "{got}");
}

#[tokio::test]
async fn a_room_named_twice_in_last_event_id_is_replayed_once() {
    let chat = Chat::new().with_rooms(["news"]);
    let addr = start(chat.clone(), 256).await;
    said_while_away(&chat, addr, "news", 3).await;
    let mut client = Client::open(addr, "/events?room=news", Some("news:1,news:1,news:1")).await;
    let mut got = client.until(r#""message":"n3""#).await;
    members(&chat, "news", 1).await;
    chat.broadcast("news", json!("live")).await.unwrap();
    got += &client.until(r#""message":"live""#).await;
    for n in ["n2", "n3"] {
        assert_eq!(got.matches(&format!(r#""message":"{n}""#)).count(), 1, "{n} once: {got}");
    }
    assert!(!got.contains(r#""message":"n1""#), "{got}");
    assert!(got.contains("id: news:4\n"), "{got}");
}

#[tokio::test]
async fn a_position_this_node_never_reached_starts_from_now_and_says_so() {
    // A fresh node (a restart, another instance): its numbering of the room starts
    // at 1, so a client's `news:50` names nothing here.
    let chat = Chat::new().with_rooms(["news"]);
    let addr = start(chat.clone(), 256).await;
    let mut client = Client::open(addr, "/events?room=news", Some("news:50")).await;
    let got = client
        .until(r#"{"message":"could not resume news: messages may have been missed","context":"alert"}"#)
        .await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    members(&chat, "news", 1).await;
    chat.broadcast("news", json!("hello")).await.unwrap();
    let got = client.until(r#""message":"hello""#).await;
    assert!(got.contains("id: news:1\n"), "not skipped as if already sent: {got}");
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let chat = Chat::new().with_rooms(["news"]);
    let addr = start(chat.clone(), 256).await;
    let mut client = Client::open(addr, "/events", None).await;
    let got = client.until(r#""message":"a room is required"}"#).await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request"), "{got}");
    // The second room fails after the first was joined: the stream's connection
    // leaves it again.
    let mut client = Client::open(addr, "/events?room=news&room=nowhere", None).await;
    let got = client.until(r#""message":"room does not exist"}"#).await;
    assert!(got.starts_with("HTTP/1.1 404 Not Found"), "{got}");
    members(&chat, "news", 0).await;
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_told_before_it_ends() {
    use tower_context::connection::{MailboxConfig, Overflow};
    let chat = Chat::new().with_rooms(["news"]);
    let mailbox = MailboxConfig { capacity: 2, overflow: Overflow::Disconnect };
    let addr =
        start_with(chat.clone(), 256, |sse| sse.keep_alive(Duration::from_secs(60)).mailbox(mailbox)).await;
    let mut client = Client::open(addr, "/events?room=news", None).await;
    client.until("retry: 2000\n\n").await;
    members(&chat, "news", 1).await;
    // Three messages before the stream's task can run (one thread): the third
    // finds the mailbox full.
    for n in 1..=3 {
        chat.broadcast("news", json!(format!("n{n}"))).await.unwrap();
    }
    let got = client
        .until(
            r#"{"message":"disconnected: this stream fell behind (its mailbox was full)","context":"alert"}"#,
        )
        .await;
    assert!(got.contains(r#""message":"n1""#) && got.contains(r#""message":"n2""#), "{got}");
    assert!(!got.contains(r#""message":"n3""#), "{got}");
    // And the stream ends: the chunked body's last chunk.
    client.until("0\r\n\r\n").await;
    members(&chat, "news", 0).await;
}

#[tokio::test]
async fn a_room_made_again_under_a_destroyed_ones_name_starts_afresh() {
    let chat = Chat::new().with_rooms(["game"]);
    let addr = start(chat.clone(), 256).await;
    let mut client = Client::open(addr, "/events?room=game", None).await;
    members(&chat, "game", 1).await;
    chat.broadcast("game", json!("old game")).await.unwrap();
    client.until(r#""message":"old game""#).await;
    chat.destroy_room("game").await.unwrap();
    drop(client);
    chat.add_room("game").await.unwrap();
    // Even a client asking for everything since the start gets nothing of the old one.
    let mut client = Client::open(addr, "/events?room=game", Some("game:0")).await;
    members(&chat, "game", 1).await;
    chat.broadcast("game", json!("new game")).await.unwrap();
    let got = client.until(r#""message":"new game""#).await;
    assert!(!got.contains("old game") && !got.contains("has been deleted"), "{got}");
    assert!(got.contains("id: game:1\n"), "numbered afresh: {got}");
}

#[tokio::test]
async fn graceful_shutdown_ends_the_streams_and_resolves() {
    let chat = Chat::new().with_rooms(["news"]);
    // Keep-alive comments every 50 ms: write progress that must not hold shutdown.
    let sse = SseChat::new(chat.clone()).keep_alive(Duration::from_millis(50));
    let app = Router::new()
        .route(
            "/events",
            get(move |parts: Parts| async move { sse.respond(&parts).await.map_err(HttpError::from) }),
        )
        .layer(ContextLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // No shutdown timeout: the streams themselves must end.
    let server = tower_context::serve(listener, app).shutdown_timeout(None).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    let connections = server.connections();
    let mut task = tokio::spawn(server.into_future());
    let mut client = Client::open(addr, "/events?room=news", None).await;
    client.until("retry: 2000\n\n").await;
    members(&chat, "news", 1).await;

    let _ = stop.send(());
    // The stream ends (the chunked body's last chunk) and the client leaves its room.
    client.until("0\r\n\r\n").await;
    members(&chat, "news", 0).await;
    tokio::time::timeout(Duration::from_secs(5), &mut task)
        .await
        .expect("the server resolved")
        .unwrap()
        .unwrap();
    assert!(connections.is_empty());
}
