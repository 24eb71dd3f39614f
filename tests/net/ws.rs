//! Chat over a real WebSocket (`tower_context::serve` on 127.0.0.1, a
//! tokio-tungstenite client), frame by frame against what a real Actionhero 29
//! answers (read off one with the reference app in `../shared/reference`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tower_context::chat::Chat;
use tower_context::chat::ws::WebSocketChat;
use tower_context::connection::ConnectionKind;
use tower_context::{Connections, ContextLayer};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn start(chat: Chat) -> (SocketAddr, Connections) {
    start_with(chat, |socket| socket).await
}

/// [`start`], with the chat's WebSocket settings changed by `tune`.
async fn start_with(
    chat: Chat,
    tune: impl FnOnce(WebSocketChat) -> WebSocketChat,
) -> (SocketAddr, Connections) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Connections::new();
    let socket = tune(WebSocketChat::new(chat).max_frame_size(1024).registry(connections.clone()));
    let app = Router::new().route("/ws", socket.route()).layer(ContextLayer::new());
    let server = tower_context::serve(listener, app).with_connections(connections.clone());
    tokio::spawn(async move { server.await });
    (addr, connections)
}

async fn connect(addr: SocketAddr, query: &str) -> Client {
    let (client, _) = connect_async(format!("ws://{addr}/ws{query}")).await.unwrap();
    client
}

/// The next text frame, parsed.
async fn next(client: &mut Client) -> Value {
    loop {
        let frame =
            tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap().unwrap();
        if let Frame::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn send(client: &mut Client, frame: &str) {
    client.send(Frame::text(frame)).await.unwrap();
}

/// Reads the next frame, which must be a close with `code` (and `reason`, if given).
async fn closed_with(client: &mut Client, code: CloseCode, reason: Option<&str>) {
    let closed = tokio::time::timeout(Duration::from_secs(10), client.next()).await.unwrap();
    assert!(
        matches!(closed, Some(Ok(Frame::Close(Some(ref f)))) if f.code == code && reason.is_none_or(|r| f.reason == r)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn actionheros_protocol_frame_by_frame() {
    let (addr, connections) = start(Chat::new().with_rooms(["defaultRoom"])).await;
    let mut ann = connect(addr, "?sessionID=0123456789abcdef0123").await;
    assert_eq!(next(&mut ann).await, json!({"welcome": "Welcome to the actionhero api", "context": "api"}));

    send(&mut ann, r#"{"event":"roomAdd","room":"defaultRoom","messageId":1}"#).await;
    assert_eq!(
        next(&mut ann).await,
        json!({"status": "OK", "context": "response", "data": true, "messageId": 1})
    );
    send(&mut ann, r#"{"event":"roomAdd","room":"defaultRoom","messageId":2}"#).await;
    let again = "Error: connection already in this room (defaultRoom)";
    assert_eq!(
        next(&mut ann).await,
        json!({"status": again, "error": again, "context": "response", "data": {}, "messageId": 2})
    );

    send(&mut ann, r#"{"event":"roomView","room":"defaultRoom","messageId":3}"#).await;
    let view = next(&mut ann).await;
    assert_eq!(view["data"]["membersCount"], 1);
    let ann_id = view["data"]["members"].as_object().unwrap().keys().next().unwrap().clone();

    // Another client joins and speaks; both get the message, the sender too.
    let mut bob = connect(addr, "").await;
    next(&mut bob).await;
    send(&mut bob, r#"{"event":"roomAdd","room":"defaultRoom","messageId":"b1"}"#).await;
    assert_eq!(next(&mut bob).await["data"], true);
    send(&mut bob, r#"{"event":"say","room":"defaultRoom","message":"hello there","messageId":"b2"}"#).await;
    assert_eq!(next(&mut bob).await, json!({"status": "OK", "context": "response", "messageId": "b2"}));
    for client in [&mut ann, &mut bob] {
        let said = next(client).await;
        assert_eq!(said["message"], "hello there");
        assert_eq!(said["room"], "defaultRoom");
        assert_eq!(said["context"], "user");
        assert!(said["sentAt"].as_u64().unwrap() > 1_700_000_000_000);
        assert_ne!(said["from"], ann_id);
    }

    // detailsView without a messageId gets a fresh one; the fingerprint is the
    // client's `sessionID`.
    send(&mut ann, r#"{"event":"detailsView"}"#).await;
    let details = next(&mut ann).await;
    assert_eq!(details["data"]["id"], ann_id.as_str());
    assert_eq!(details["data"]["fingerprint"], "0123456789abcdef0123");
    assert_eq!(details["data"]["rooms"], json!(["defaultRoom"]));
    assert_eq!(details["data"]["remoteIP"], "127.0.0.1");
    assert_eq!(details["messageId"].as_str().unwrap().len(), 36);

    // While open, both are in the server's registry as WebSocket connections.
    let kinds: Vec<ConnectionKind> = connections.iter().map(|c| c.kind()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == ConnectionKind::WebSocket).count(), 2, "{kinds:?}");

    for (frame, error, data) in [
        (r#"{"event":"nope","messageId":6}"#, "verb not found or not allowed (nope)", json!({})),
        (
            r#"{"event":"paramAdd","key":"a","value":"b","messageId":7}"#,
            "verb not found or not allowed (paramAdd)",
            json!({"key": "a", "value": "b"}),
        ),
        (r#"{"event":"roomAdd","room":"noSuchRoom","messageId":8}"#, "room does not exist", json!({})),
        (
            r#"{"event":"roomLeave","room":"otherRoom","messageId":9}"#,
            "connection not in this room (otherRoom)",
            json!({}),
        ),
        (r#"{"event":"say","messageId":10}"#, "both room and message are required", json!({})),
        (r#"{"messageId":13}"#, "verb not found or not allowed (undefined)", json!({})),
    ] {
        send(&mut ann, frame).await;
        let answer = next(&mut ann).await;
        let text = format!("Error: {error}");
        assert_eq!(answer["status"], text.as_str(), "{frame}");
        assert_eq!(answer["error"], text.as_str(), "{frame}");
        assert_eq!(answer["context"], "response");
        assert_eq!(answer["data"], data, "{frame}");
    }

    // Bad input gets an answer and the connection lives on.
    send(&mut ann, "not json").await;
    assert_eq!(next(&mut ann).await["error"], "Error: frames must be JSON text");
    ann.send(Frame::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ann).await["error"], "Error: frames must be JSON text");
    send(&mut ann, "[1,2]").await;
    let answer = next(&mut ann).await;
    assert_eq!(
        (answer["error"].clone(), answer["data"].clone()),
        (json!("Error: verb not found or not allowed (undefined)"), json!([1, 2]))
    );
    send(&mut ann, r#"{"event":"roomLeave","room":"defaultRoom","messageId":11}"#).await;
    assert_eq!(next(&mut ann).await["data"], true);

    // quit: no answer (as from Actionhero), a goodbye, then the close; the
    // connection leaves the registry.
    send(&mut ann, r#"{"event":"quit","messageId":12}"#).await;
    assert_eq!(next(&mut ann).await, json!({"message": "Bye!", "context": "api"}));
    closed_with(&mut ann, CloseCode::Normal, None).await;
    for _ in 0..100 {
        if connections.iter().filter(|c| c.kind() == ConnectionKind::WebSocket).count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(connections.iter().filter(|c| c.kind() == ConnectionKind::WebSocket).count(), 1);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_others_go_on() {
    let chat = Chat::new().with_rooms(["defaultRoom"]);
    let (addr, _) = start(chat.clone()).await;
    let mut big = connect(addr, "").await;
    let mut other = connect(addr, "").await;
    next(&mut big).await;
    next(&mut other).await;
    send(&mut big, &format!(r#"{{"event":"say","room":"defaultRoom","message":"{}"}}"#, "x".repeat(4096)))
        .await;
    closed_with(&mut big, CloseCode::Size, None).await;
    send(&mut other, r#"{"event":"roomAdd","room":"defaultRoom","messageId":1}"#).await;
    assert_eq!(next(&mut other).await["data"], true);
    assert_eq!(chat.room_status("defaultRoom").await.unwrap()["membersCount"], 1);
}

#[tokio::test]
async fn it_works_under_axums_own_server_too() {
    let chat = Chat::new().with_rooms(["defaultRoom"]);
    let app = Router::new().route("/ws", WebSocketChat::new(chat.clone()).route()).layer(ContextLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut client = connect(addr, "").await;
    assert_eq!(next(&mut client).await["context"], "api");
    send(&mut client, r#"{"event":"roomAdd","room":"defaultRoom","messageId":1}"#).await;
    assert_eq!(next(&mut client).await["data"], true);
    send(&mut client, r#"{"event":"say","room":"defaultRoom","message":"hi","messageId":2}"#).await;
    assert_eq!(next(&mut client).await["status"], "OK");
    assert_eq!(next(&mut client).await["message"], "hi");
    assert_eq!(chat.room_status("defaultRoom").await.unwrap()["membersCount"], 1);
    drop(client);
    for _ in 0..200 {
        if chat.room_status("defaultRoom").await.unwrap()["membersCount"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the client that went away is still a member");
}

/// Two servers whose chats are nodes on one Redis (what two demos with the same
/// `REDIS_URL` do): clients of either are in the same rooms.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_servers_on_one_redis_are_one_chat() {
    use tower_context::chat::RedisChat;
    use tower_context::cookies::Keys;

    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    let node = |id: &str| {
        RedisChat::new(redis.url())
            .keys(Keys::new(["shared secret"]))
            .node_id(id)
            .rooms(["defaultRoom"])
            .connect()
    };
    let (one, _) = start(node("one").await.unwrap()).await;
    let (two, _) = start(node("two").await.unwrap()).await;
    let mut ann = connect(one, "").await;
    let mut bob = connect(two, "").await;
    for client in [&mut ann, &mut bob] {
        next(client).await;
        send(client, r#"{"event":"roomAdd","room":"defaultRoom","messageId":1}"#).await;
        assert_eq!(
            next(client).await,
            json!({"status": "OK", "context": "response", "data": true, "messageId": 1})
        );
    }
    send(&mut bob, r#"{"event":"say","room":"defaultRoom","message":"hello from two","messageId":2}"#).await;
    assert_eq!(next(&mut bob).await, json!({"status": "OK", "context": "response", "messageId": 2}));
    let own = next(&mut bob).await;
    let heard = next(&mut ann).await;
    assert_eq!(heard, own, "the same frame on both servers");
    assert_eq!(
        (heard["message"].as_str(), heard["context"].as_str()),
        (Some("hello from two"), Some("user"))
    );

    send(&mut ann, r#"{"event":"roomView","room":"defaultRoom","messageId":3}"#).await;
    let view = next(&mut ann).await;
    assert_eq!(view["data"]["membersCount"], 2);
    assert!(
        view["data"]["members"].get(heard["from"].as_str().unwrap()).is_some(),
        "bob, held by the other server"
    );
}

/// Redis gone: a new client is told the chat store is unavailable (not why) and the
/// socket closes as a server error (1011), instead of a chat that cannot work.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_client_is_told_when_the_chat_store_is_unreachable() {
    use tower_context::chat::RedisChat;
    use tower_context::cookies::Keys;

    let Some(mut redis) = crate::common::redis_server::RedisServer::start() else { return };
    let chat = RedisChat::new(redis.url()).keys(Keys::new(["secret"])).connect().await.unwrap();
    let (addr, _) = start(chat).await;
    redis.kill();
    let mut client = connect(addr, "").await;
    assert_eq!(next(&mut client).await, json!({"message": "chat store unavailable", "context": "alert"}));
    closed_with(&mut client, CloseCode::Error, Some("chat store unavailable")).await;
}

#[tokio::test]
async fn a_client_that_falls_behind_is_closed_with_a_reason_not_a_goodbye() {
    use tower_context::connection::{MailboxConfig, Message, Overflow};
    let mailbox = MailboxConfig { capacity: 2, overflow: Overflow::Disconnect };
    let (addr, connections) = start_with(Chat::new(), |socket| socket.mailbox(mailbox)).await;
    let mut client = connect(addr, "").await;
    assert_eq!(next(&mut client).await["welcome"], "Welcome to the actionhero api");
    let conn = connections.iter().find(|c| c.kind() == ConnectionKind::WebSocket).unwrap();
    // Three pushes with no chance for the server's task to send (this test's runtime
    // has one thread): the third finds the mailbox full.
    for n in 1..=3 {
        let _ = conn.send_message(Message::api(json!({ "n": n })));
    }
    assert!(conn.fell_behind());
    assert_eq!(next(&mut client).await["n"], 1);
    assert_eq!(next(&mut client).await["n"], 2);
    closed_with(&mut client, CloseCode::Policy, Some("mailbox full")).await;
}

#[tokio::test]
async fn frame_values_become_words_as_actionhero_writes_them() {
    // Each answer below was read off a real Actionhero 29 (`../shared/reference`).
    let (addr, _) = start(Chat::new().with_rooms(["defaultRoom"])).await;
    let mut ann = connect(addr, "").await;
    next(&mut ann).await;
    // A message id JavaScript finds false gets a fresh one.
    for id in ["null", "0", r#""""#, "false"] {
        send(&mut ann, &format!(r#"{{"event":"detailsView","messageId":{id}}}"#)).await;
        let answer = next(&mut ann).await;
        assert_eq!(answer["status"], "OK");
        assert_eq!(answer["messageId"].as_str().map(str::len), Some(36), "{id}: {answer}");
    }
    send(&mut ann, r#"{"event":"roomAdd","room":"defaultRoom","messageId":1}"#).await;
    assert_eq!(next(&mut ann).await["status"], "OK");
    // A null message is no message.
    send(&mut ann, r#"{"event":"say","room":"defaultRoom","message":null,"messageId":2}"#).await;
    let answer = next(&mut ann).await;
    assert_eq!(answer["error"], "Error: both room and message are required");
    assert_eq!(answer["data"], json!({"message": null}));
    // Other values are written as JavaScript's `join` writes them.
    for (message, said) in [
        (r#"{"a":1}"#, "[object Object]"),
        ("[1,null,[2,3],{\"a\":1}]", "1,,2,3,[object Object]"),
        ("true", "true"),
        ("1.0", "1"),
        ("1e21", "1e+21"),
        ("1.5e-7", "1.5e-7"),
        ("0", "0"),
        ("12345678901234567890", "12345678901234567000"),
    ] {
        send(
            &mut ann,
            &format!(r#"{{"event":"say","room":"defaultRoom","message":{message},"messageId":3}}"#),
        )
        .await;
        assert_eq!(next(&mut ann).await, json!({"status": "OK", "context": "response", "messageId": 3}));
        assert_eq!(next(&mut ann).await["message"], said, "{message}");
    }
    // Every word after the room is joined by a space, a null one as nothing.
    send(&mut ann, r#"{"event":"say","room":"defaultRoom","message":null,"extra":"b","messageId":4}"#).await;
    next(&mut ann).await;
    assert_eq!(next(&mut ann).await["message"], " b");
    // A room JavaScript finds false stays where it stands: a word, and in the data.
    send(&mut ann, r#"{"event":"roomView","room":null,"messageId":5}"#).await;
    let answer = next(&mut ann).await;
    assert_eq!(answer["error"], "Error: connection not in this room (null)");
    assert_eq!(answer["data"], json!({"room": null}));
}

/// A server for the tests below, with a shutdown signal and what its close hooks
/// saw: the ids of the connections whose sockets closed, in order.
struct Stoppable {
    addr: SocketAddr,
    connections: Connections,
    closed: tokio::sync::mpsc::UnboundedReceiver<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn stoppable(
    configure: impl FnOnce(tower_context::server::Serve<Router>) -> tower_context::server::Serve<Router>,
) -> Stoppable {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Connections::new();
    let socket = WebSocketChat::new(Chat::new()).registry(connections.clone());
    let app = Router::new().route("/ws", socket.route()).layer(ContextLayer::new());
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = configure(tower_context::serve(listener, app))
        .with_connections(connections.clone())
        .on_connection_close(move |conn| {
            let _ = closed_tx.send(conn.id().to_owned());
        })
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        });
    let task = tokio::spawn(server.into_future());
    Stoppable { addr, connections, closed, stop: Some(stop), task }
}

/// The chat's connection for the one WebSocket open.
fn live_of(connections: &Connections) -> tower_context::Connection {
    connections.iter().find(|c| c.kind() == ConnectionKind::WebSocket).expect("the WebSocket")
}

#[tokio::test]
async fn an_upgraded_socket_keeps_its_slot_and_its_place_until_it_closes() {
    let mut server = stoppable(|s| s.max_connections(1)).await;
    let mut client = connect(server.addr, "").await;
    assert_eq!(next(&mut client).await["context"], "api");

    // The only slot is the WebSocket's: a newcomer is turned away (the upgraded
    // socket has no request in flight, yet is not idle).
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    other.write_all(b"GET /ws HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let http = server.connections.iter().find(|c| c.kind() == ConnectionKind::Http1);
    let http = http.expect("the socket is registered while its WebSocket is open");
    assert!(server.closed.try_recv().is_err(), "no close hook ran while the socket is open");

    // Closed by the client: its socket's close hook runs, and the slot is free.
    client.close(None).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), server.closed.recv()).await.unwrap().unwrap();
    assert_eq!(closed, http.id());
    assert!(server.connections.get(http.id()).is_none());
    let mut again = connect(server.addr, "").await;
    assert_eq!(next(&mut again).await["context"], "api");
}

#[tokio::test]
async fn graceful_shutdown_says_goodbye_to_websockets_and_waits_for_them() {
    let mut server = stoppable(|s| s).await;
    let mut client = connect(server.addr, "").await;
    assert_eq!(next(&mut client).await["context"], "api");
    let live = live_of(&server.connections);

    let _ = server.stop.take().unwrap().send(());
    assert_eq!(next(&mut client).await, json!({"message": "Bye!", "context": "api"}));
    closed_with(&mut client, CloseCode::Normal, None).await;
    tokio::time::timeout(Duration::from_secs(5), &mut server.task).await.unwrap().unwrap().unwrap();
    // Resolved only once the socket closed: its close hook ran before.
    assert!(server.closed.try_recv().is_ok());
    assert!(live.is_destroyed());
    assert!(server.connections.is_empty());
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_closed_once_writes_stop_progressing() {
    use tower_context::connection::Message;
    let mut server = stoppable(|s| s.write_timeout(Duration::from_millis(300))).await;
    // The client reads its welcome, then nothing more.
    let mut client = connect(server.addr, "").await;
    assert_eq!(next(&mut client).await["context"], "api");
    let live = live_of(&server.connections);

    // Pushed until the socket's buffers are full and the writes stall: then the
    // WebSocket ends, and with it the socket.
    let page = "x".repeat(64 * 1024);
    tokio::time::timeout(Duration::from_secs(5), async {
        while live.send_message(Message::api(json!({ "page": page }))).is_ok() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the stalled WebSocket was ended");
    // Its socket closed: the close hook ran.
    tokio::time::timeout(Duration::from_secs(5), server.closed.recv()).await.unwrap().unwrap();
    assert!(server.connections.is_empty(), "{:?}", server.connections.iter().collect::<Vec<_>>());
    drop(client);
}

#[tokio::test]
async fn an_upgrade_that_never_happens_leaves_its_socket_free_to_make_room() {
    // A layer replaces the 101 (as an error would): the WebSocket never opens, and
    // the socket is an idle keep-alive one like any other.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Connections::new();
    let socket = WebSocketChat::new(Chat::new()).registry(connections.clone());
    let refuse_upgrades = axum::middleware::map_response(|mut res: axum::response::Response| async move {
        if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            res = axum::response::IntoResponse::into_response((
                http::StatusCode::FORBIDDEN,
                "no upgrades today",
            ));
        }
        res
    });
    let app = Router::new()
        .route("/ws", socket.route())
        .layer(refuse_upgrades)
        .route("/plain", axum::routing::get(|| async { "plain" }))
        .layer(ContextLayer::new());
    let server = tower_context::serve(listener, app).with_connections(connections.clone()).max_connections(1);
    tokio::spawn(async move { server.await });

    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).ends_with("no upgrades today") {
        let mut buf = [0_u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&answer));

    // The only slot is held by that idle socket: it makes room for a newcomer.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"GET /plain HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("plain"), "{answer}");
}

#[tokio::test]
async fn a_websocket_that_is_not_the_chats_holds_its_slot_too() {
    // Any 101 makes the socket busy from then on: eviction, which only frees idle
    // keep-alive sockets, never takes it (destroying it could not close it anyway).
    use axum::extract::ws::WebSocketUpgrade;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = axum::routing::get(|upgrade: WebSocketUpgrade| async move {
        upgrade.on_upgrade(|mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} })
    });
    let app = Router::new().route("/plain-ws", held).layer(ContextLayer::new());
    let connections = Connections::new();
    let server = tower_context::serve(listener, app).with_connections(connections.clone()).max_connections(1);
    tokio::spawn(async move { server.await });
    let (mut first, _) = connect_async(format!("ws://{addr}/plain-ws")).await.unwrap();

    let mut other = TcpStream::connect(addr).await.unwrap();
    other.write_all(b"GET /plain-ws HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(connections.evicted(), 0, "the WebSocket's socket was not taken for idle");
    assert!(connections.iter().all(|c| !c.is_destroyed()));
    first.send(Frame::text("still here")).await.unwrap();
}
