//! Actionhero's chat behaviours (SEMANTICS.md, and answers read off a real Actionhero
//! 29) against the public API. Every scenario runs on one node, on three nodes of
//! `LocalBus::cluster(3)`, and (feature `redis`) on three nodes over a real
//! `redis-server`, with the connections spread over the nodes.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tower_context::chat::{Chat, ChatError, ChatMiddleware, LocalBus, Verb};
use tower_context::connection::{Connection, ConnectionKind, MailboxConfig, Message, Overflow, SendError};

tokio::task_local! {
    /// The nodes of the scenario running, for `inbox` to flush.
    static NODES: Vec<Chat>;
}

/// The nodes a scenario runs on: `nodes[i % len]` holds the i-th connection.
async fn on_both<F, Fut>(scenario: F)
where
    F: Fn(Vec<Chat>) -> Fut,
    Fut: Future<Output = ()>,
{
    scenario(vec![Chat::new()]).await;
    scenario(LocalBus::cluster(3)).await;
    #[cfg(feature = "redis")]
    if let Some(server) = crate::common::redis_server::RedisServer::start() {
        let nodes = redis_cluster(&server.url(), 3).await;
        NODES.scope(nodes.clone(), scenario(nodes)).await;
        drop(server);
    }
}

/// `n` nodes sharing one Redis.
#[cfg(feature = "redis")]
pub(crate) async fn redis_cluster(url: &str, n: usize) -> Vec<Chat> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let chat = tower_context::chat::RedisChat::new(url)
            .keys(tower_context::cookies::Keys::new(["cluster secret"]))
            .node_id(format!("node-{i}"))
            .connect()
            .await
            .unwrap();
        nodes.push(chat);
    }
    nodes
}

fn live(kind: ConnectionKind) -> Connection {
    let addr = "127.0.0.1:40000".parse().unwrap();
    Connection::live(kind, addr, addr, MailboxConfig::default())
}

/// `n` test connections, the i-th registered on `nodes[i % len]`.
async fn clients(nodes: &[Chat], n: usize) -> Vec<Connection> {
    let mut out = Vec::new();
    for i in 0..n {
        let conn = live(ConnectionKind::Test);
        nodes[i % nodes.len()].register(&conn).await.unwrap();
        out.push(conn);
    }
    out
}

/// `chat`, after making `rooms` (awaited: on Redis they exist when this returns).
async fn with_rooms<'a>(chat: &Chat, rooms: impl IntoIterator<Item = &'a str>) -> Chat {
    for room in rooms {
        chat.add_room(room).await.unwrap();
    }
    chat.clone()
}

/// The messages waiting for `conn` now, parsed (on Redis, once every node has
/// handled what every node published).
async fn inbox(conn: &Connection) -> Vec<Value> {
    if let Ok(nodes) = NODES.try_with(Clone::clone) {
        for node in nodes {
            node.flush().await.unwrap();
        }
    }
    let mut out = Vec::new();
    while conn.queued_messages() > 0 {
        let bytes = tokio::time::timeout(Duration::from_secs(1), conn.next_message()).await.unwrap().unwrap();
        out.push(serde_json::from_slice(&bytes).unwrap());
    }
    out
}

/// What each said message carries apart from its time: (message, room, from).
fn said(frames: &[Value]) -> Vec<(String, String, String)> {
    frames
        .iter()
        .map(|f| {
            assert_eq!(f["context"], "user");
            assert!(f["sentAt"].as_u64().unwrap() > 1_700_000_000_000);
            (
                f["message"].as_str().unwrap().to_owned(),
                f["room"].as_str().unwrap().to_owned(),
                f["from"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_room_registry_answers_as_actionhero() {
    on_both(|nodes| async move {
        let chat = &nodes[0];
        chat.add_room("lobby").await.unwrap();
        assert_eq!(chat.add_room("lobby").await.unwrap_err().to_string(), "room exists");
        assert_eq!(chat.add_room("").await.unwrap_err().to_string(), "a room is required");
        assert!(nodes[nodes.len() - 1].room_exists("lobby").await.unwrap());
        assert_eq!(nodes[nodes.len() - 1].rooms().await.unwrap(), ["lobby"]);
        assert_eq!(chat.room_status("").await.unwrap_err().to_string(), "a room is required");
        assert_eq!(chat.room_status("nope").await.unwrap_err().to_string(), "room does not exist");
        assert_eq!(
            chat.room_status("lobby").await.unwrap(),
            json!({"room": "lobby", "members": {}, "membersCount": 0})
        );
        assert_eq!(chat.destroy_room("nope").await.unwrap_err().to_string(), "room does not exist");
    })
    .await;
}

#[tokio::test]
async fn join_and_leave_in_actionheros_order_with_its_errors() {
    on_both(|nodes| async move {
        let chat = with_rooms(&nodes[0], ["defaultRoom"]).await;
        let c = clients(&nodes, 3).await;
        for conn in &c {
            // Any node can join a connection held by any node.
            chat.join(conn.id(), "defaultRoom").await.unwrap();
        }
        let again = chat.join(c[1].id(), "defaultRoom").await.unwrap_err();
        assert_eq!(again.to_string(), "connection already in this room (defaultRoom)");
        assert_eq!(chat.join(c[1].id(), "noSuchRoom").await.unwrap_err().to_string(), "room does not exist");
        assert_eq!(
            chat.leave(c[1].id(), "otherRoom").await.unwrap_err().to_string(),
            "connection not in this room (otherRoom)"
        );
        let status = chat.room_status("defaultRoom").await.unwrap();
        assert_eq!(status["membersCount"], 3);
        for conn in &c {
            assert_eq!(status["members"][conn.id()]["id"], conn.id());
            assert!(status["members"][conn.id()]["joinedAt"].as_u64().unwrap() > 1_700_000_000_000);
            assert_eq!(conn.rooms(), ["defaultRoom"]);
        }
        chat.leave(c[2].id(), "defaultRoom").await.unwrap();
        assert!(c[2].rooms().is_empty());
        assert_eq!(nodes[nodes.len() - 1].room_status("defaultRoom").await.unwrap()["membersCount"], 2);
        let unknown = chat.join("no-such-connection", "defaultRoom").await.unwrap_err();
        assert_eq!(unknown, ChatError::NoSuchConnection("no-such-connection".into()));
    })
    .await;
}

#[tokio::test]
async fn rooms_are_listed_in_join_order_and_two_joins_at_once_count_once() {
    on_both(|nodes| async move {
        let chat = with_rooms(&nodes[0], ["b", "a", "c"]).await;
        let conn = &clients(&nodes, 1).await[0];
        for room in ["c", "a", "b"] {
            chat.join(conn.id(), room).await.unwrap();
        }
        assert_eq!(conn.rooms(), ["c", "a", "b"]);
        let other = &clients(&nodes, 2).await[1];
        let (x, y) = tokio::join!(chat.join(other.id(), "a"), nodes[nodes.len() - 1].join(other.id(), "a"));
        assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "exactly one of two joins wins");
        assert_eq!(other.rooms(), ["a"]);
        assert_eq!(chat.room_status("a").await.unwrap()["membersCount"], 2);
    })
    .await;
}

#[tokio::test]
async fn say_reaches_every_member_on_every_node_the_sender_too() {
    on_both(|nodes| async move {
        let chat = with_rooms(&nodes[0], ["defaultRoom", "other"]).await;
        let c = clients(&nodes, 4).await;
        for conn in &c[..3] {
            chat.join(conn.id(), "defaultRoom").await.unwrap();
        }
        chat.join(c[3].id(), "other").await.unwrap();
        // The sender's own node runs the say; members anywhere get it.
        let senders_node = &nodes[1 % nodes.len()];
        senders_node.say(&c[1], "defaultRoom", json!("hello there")).unwrap();
        for conn in &c[..3] {
            assert_eq!(
                said(&inbox(conn).await),
                [("hello there".into(), "defaultRoom".into(), c[1].id().to_owned())]
            );
        }
        assert!(inbox(&c[3]).await.is_empty(), "not a member");
        assert_eq!(
            senders_node.say(&c[1], "other", json!("x")).unwrap_err().to_string(),
            "connection not in this room (other)"
        );
        assert_eq!(
            senders_node.say(&c[1], "", json!("x")).unwrap_err().to_string(),
            "both room and message are required"
        );
        assert_eq!(
            senders_node.say(&c[1], "defaultRoom", Value::Null).unwrap_err().to_string(),
            "both room and message are required"
        );
        // A server-side broadcast comes from "0" and needs no membership.
        nodes[nodes.len() - 1].broadcast("other", json!("maintenance at noon")).await.unwrap();
        assert_eq!(said(&inbox(&c[3]).await), [("maintenance at noon".into(), "other".into(), "0".into())]);
    })
    .await;
}

#[tokio::test]
async fn join_and_leave_middleware_can_veto() {
    on_both(|nodes| async move {
        for chat in &nodes {
            chat.add_middleware(ChatMiddleware::new("vipRoom join veto").join(|_, _, room| {
                if room == "vipRoom" { Err("joining rooms blocked".into()) } else { Ok(()) }
            }));
            chat.add_middleware(ChatMiddleware::new("hotelRoom leave veto").leave(|_, conn, room| {
                if room == "hotelRoom" && !conn.is_destroyed() {
                    Err("Hotel California".into())
                } else {
                    Ok(())
                }
            }));
        }
        let chat = with_rooms(&nodes[0], ["vipRoom", "hotelRoom"]).await;
        let c = clients(&nodes, 2).await;
        let vetoed = chat.join(c[1].id(), "vipRoom").await.unwrap_err();
        assert_eq!(vetoed.to_string(), "joining rooms blocked");
        assert!(c[1].rooms().is_empty(), "a veto leaves the rooms unchanged");
        chat.join(c[1].id(), "hotelRoom").await.unwrap();
        assert_eq!(chat.leave(c[1].id(), "hotelRoom").await.unwrap_err().to_string(), "Hotel California");
        assert_eq!(c[1].rooms(), ["hotelRoom"]);
        // A destroyed connection leaves all the same: no ghost member.
        nodes[1 % nodes.len()].destroy(&c[1]).await;
        assert!(c[1].rooms().is_empty());
        assert_eq!(chat.room_status("hotelRoom").await.unwrap()["membersCount"], 0);
        assert_eq!(c[1].send_message(Message::alert("late")), Err(SendError::Closed));
    })
    .await;
}

/// Adds Actionhero's example middleware (the reference app's `chatRooms.js`) to
/// every node.
fn example_middleware(nodes: &[Chat], on_receive_calls: Arc<AtomicUsize>) {
    for chat in nodes {
        let only = |name: &'static str| move |room: &str| room == name;
        let stamped = only("stampedRoom");
        let calls = on_receive_calls.clone();
        chat.add_middleware(ChatMiddleware::new("stampedRoom once").on_say_receive(
            move |conn, room, mut payload| {
                if stamped(room) {
                    calls.fetch_add(1, Ordering::SeqCst);
                    payload.message = Value::from(format!(
                        "{} - From: {}",
                        payload.message.as_str().unwrap_or(""),
                        conn.id()
                    ));
                }
                Some(payload)
            },
        ));
        let quiet = only("quietRoom");
        chat.add_middleware(ChatMiddleware::new("quietRoom filter").on_say_receive(
            move |_, room, payload| {
                if quiet(room) && payload.message.as_str().is_some_and(|m| m.contains("secret")) {
                    None
                } else {
                    Some(payload)
                }
            },
        ));
        let tagged = only("taggedRoom");
        chat.add_middleware(ChatMiddleware::new("taggedRoom per receiver").say(
            move |conn, room, mut payload| {
                if tagged(room) {
                    payload.message = Value::from(format!(
                        "{} - To: {}",
                        payload.message.as_str().unwrap_or(""),
                        conn.id()
                    ));
                }
                Ok(Some(payload))
            },
        ));
        // Registered in reverse on purpose: priority decides.
        let ordered = only("orderedRoom");
        chat.add_middleware(ChatMiddleware::new("orderedRoom 2").priority(2000).say(
            move |_, room, mut payload| {
                if ordered(room) {
                    payload.message =
                        Value::from(format!("{} MIDDLEWARE 2", payload.message.as_str().unwrap_or("")));
                }
                Ok(Some(payload))
            },
        ));
        chat.add_middleware(ChatMiddleware::new("orderedRoom 1").priority(1000).say(
            move |_, room, mut payload| {
                if ordered(room) {
                    payload.message = Value::from("MIDDLEWARE 1");
                }
                Ok(Some(payload))
            },
        ));
        let blocked = only("blockedRoom");
        chat.add_middleware(ChatMiddleware::new("blockedRoom").say(move |_, room, payload| {
            if blocked(room) { Err("messages blocked".into()) } else { Ok(Some(payload)) }
        }));
        let echoless = only("echolessRoom");
        chat.add_middleware(ChatMiddleware::new("echolessRoom").say(move |conn, room, payload| {
            if echoless(room) && conn.id() == payload.from { Ok(None) } else { Ok(Some(payload)) }
        }));
        chat.add_middleware(ChatMiddleware::new("announcedRoom join").join(|chat, conn, room| {
            if room == "announcedRoom" {
                chat.announce(room, Value::from(format!("I have entered the room: {}", conn.id())))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }));
        chat.add_middleware(ChatMiddleware::new("announcedRoom leave").leave(|chat, conn, room| {
            if room == "announcedRoom" {
                chat.announce(room, Value::from(format!("I have left the room: {}", conn.id())))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }));
    }
}

#[tokio::test]
async fn say_middleware_runs_once_per_message_and_once_per_receiver() {
    on_both(|nodes| async move {
        let calls = Arc::new(AtomicUsize::new(0));
        example_middleware(&nodes, calls.clone());
        let rooms = [
            "stampedRoom",
            "quietRoom",
            "taggedRoom",
            "orderedRoom",
            "blockedRoom",
            "echolessRoom",
            "announcedRoom",
        ];
        let chat = with_rooms(&nodes[0], rooms).await;
        let c = clients(&nodes, 3).await;
        for room in rooms {
            for conn in &c[..2] {
                chat.join(conn.id(), room).await.unwrap();
            }
        }
        // announcedRoom: each join is announced once it is made, the joiner included
        // (as Actionhero's bus delivers after the join).
        let first = said(&inbox(&c[0]).await);
        assert_eq!(
            first,
            [
                (format!("I have entered the room: {}", c[0].id()), "announcedRoom".into(), "0".into()),
                (format!("I have entered the room: {}", c[1].id()), "announcedRoom".into(), "0".into()),
            ]
        );
        inbox(&c[1]).await;
        let node_of = |i: usize| &nodes[i % nodes.len()];
        let (a, b) = (&c[0], &c[1]);

        node_of(0).say(a, "stampedRoom", json!("hi")).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "onSayReceive runs once, not per receiver");
        for conn in [a, b] {
            assert_eq!(said(&inbox(conn).await)[0].0, format!("hi - From: {}", a.id()));
        }

        node_of(1).say(b, "quietRoom", json!("the secret plan")).unwrap();
        node_of(1).say(b, "quietRoom", json!("lunch")).unwrap();
        for conn in [a, b] {
            assert_eq!(said(&inbox(conn).await).iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["lunch"]);
        }

        node_of(0).say(a, "taggedRoom", json!("hey")).unwrap();
        for conn in [a, b] {
            assert_eq!(said(&inbox(conn).await)[0].0, format!("hey - To: {}", conn.id()));
        }

        node_of(0).say(a, "orderedRoom", json!("x")).unwrap();
        assert_eq!(said(&inbox(b).await)[0].0, "MIDDLEWARE 1 MIDDLEWARE 2");
        inbox(a).await;

        node_of(0).say(a, "blockedRoom", json!("anyone?")).unwrap();
        assert!(
            inbox(a).await.is_empty() && inbox(b).await.is_empty(),
            "a failing say drops it for that receiver"
        );

        node_of(1).say(b, "echolessRoom", json!("no echo")).unwrap();
        assert!(inbox(b).await.is_empty(), "dropped for the sender only");
        assert_eq!(said(&inbox(a).await)[0].0, "no echo");

        // A leave is announced once it is made: the leaver does not hear it.
        nodes[2 % nodes.len()].leave(b.id(), "announcedRoom").await.unwrap();
        assert!(inbox(b).await.is_empty());
        assert_eq!(
            said(&inbox(a).await),
            [(format!("I have left the room: {}", b.id()), "announcedRoom".into(), "0".into())]
        );
    })
    .await;
}

#[tokio::test]
async fn destroying_a_room_tells_its_members_and_removes_them() {
    on_both(|nodes| async move {
        let left = Arc::new(Mutex::new(Vec::new()));
        for chat in &nodes {
            let left = left.clone();
            chat.add_middleware(ChatMiddleware::new("no leaving").leave(move |_, conn, room| {
                left.lock().unwrap().push(format!("{room} {}", conn.id()));
                Err("you may not leave".into())
            }));
        }
        let chat = with_rooms(&nodes[0], ["doomed"]).await;
        let c = clients(&nodes, 2).await;
        for conn in &c {
            chat.join(conn.id(), "doomed").await.unwrap();
        }
        nodes[nodes.len() - 1].destroy_room("doomed").await.unwrap();
        for conn in &c {
            assert_eq!(
                said(&inbox(conn).await),
                [("this room has been deleted".into(), "doomed".into(), "0".into())]
            );
            assert!(conn.rooms().is_empty());
        }
        assert_eq!(left.lock().unwrap().len(), 2, "leave middleware ran for each member");
        assert!(!chat.room_exists("doomed").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn send_to_reaches_a_connection_on_any_node_and_times_out_when_its_node_is_gone() {
    let nodes = LocalBus::cluster(3);
    let c = clients(&nodes, 3).await;
    nodes[0].send_to(c[2].id(), Message::api(json!({"welcome": "hi"}))).await.unwrap();
    assert_eq!(inbox(&c[2]).await, [json!({"welcome": "hi", "context": "api"})]);
    let unknown = nodes[0].send_to("nobody", Message::alert("x")).await.unwrap_err();
    assert_eq!(unknown.to_string(), "connection not found (nobody)");
    // Node 1 dies without goodbye: calls to it time out with Actionhero's text.
    let mut nodes = nodes;
    let gone = nodes.remove(1);
    drop(gone);
    let timeout = nodes[0].send_to(c[1].id(), Message::alert("x")).await.unwrap_err();
    assert_eq!(timeout.to_string(), "RPC Timeout");
}

#[tokio::test]
async fn verbs_follow_the_transports_allow_list() {
    let chat = Chat::new().with_rooms(["defaultRoom"]);
    let ws = live(ConnectionKind::WebSocket);
    chat.register(&ws).await.unwrap();
    assert_eq!(chat.verb(&ws, Verb::RoomAdd("defaultRoom".into())).await.unwrap(), json!(true));
    let view = chat.verb(&ws, Verb::RoomView("defaultRoom".into())).await.unwrap();
    assert_eq!(view["membersCount"], 1);
    assert_eq!(
        chat.verb(&ws, Verb::Say { room: "defaultRoom".into(), message: "hello".into() }).await.unwrap(),
        Value::Null
    );
    let refused = chat.verb(&ws, Verb::ParamAdd { key: "a".into(), value: "b".into() }).await.unwrap_err();
    assert_eq!(refused.to_string(), "verb not found or not allowed (paramAdd)");
    let details = chat.verb(&ws, Verb::DetailsView).await.unwrap();
    assert_eq!(details["id"], ws.id());
    assert_eq!(details["rooms"], json!(["defaultRoom"]));
    assert_eq!(details["remoteIP"], "127.0.0.1");
    assert_eq!(details["remotePort"], 40000);
    for key in ["fingerprint", "params", "connectedAt", "totalActions", "pendingActions"] {
        assert!(details.get(key).is_some(), "{key}");
    }
    assert_eq!(chat.verb(&ws, Verb::RoomLeave("defaultRoom".into())).await.unwrap(), json!(true));
    let not_member = chat.verb(&ws, Verb::RoomView("defaultRoom".into())).await.unwrap_err();
    assert_eq!(not_member.to_string(), "connection not in this room (defaultRoom)");

    // The test transport may use every verb.
    let test = live(ConnectionKind::Test);
    chat.register(&test).await.unwrap();
    chat.verb(&test, Verb::parse("paramAdd", ["color=blue"]).unwrap()).await.unwrap();
    assert_eq!(chat.verb(&test, Verb::ParamView("color".into())).await.unwrap(), "blue");
    assert_eq!(chat.verb(&test, Verb::ParamsView).await.unwrap(), json!({"color": "blue"}));
    chat.verb(&test, Verb::ParamsDelete).await.unwrap();
    assert_eq!(chat.verb(&test, Verb::ParamsView).await.unwrap(), json!({}));
    chat.verb(&test, Verb::Quit).await.unwrap();
    assert!(test.is_destroyed());

    // A plain HTTP connection cannot chat and has no verbs.
    let web = Connection::new("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
    assert!(!web.can_chat());
    assert_eq!(chat.register(&web).await.unwrap_err().to_string(), "this connection cannot chat");
    assert_eq!(web.send_message(Message::alert("x")), Err(SendError::NotPushCapable));
    let refused = chat.verb(&web, Verb::DetailsView).await.unwrap_err();
    assert_eq!(refused.to_string(), "verb not found or not allowed (detailsView)");
}

#[tokio::test]
async fn a_full_mailbox_follows_its_policy_and_nothing_is_lost_silently() {
    let chat = Chat::new().with_rooms(["busy"]);
    let addr = "127.0.0.1:40000".parse().unwrap();
    let slow = Connection::live(
        ConnectionKind::Test,
        addr,
        addr,
        MailboxConfig { capacity: 3, overflow: Overflow::DropOldest },
    );
    let strict = Connection::live(
        ConnectionKind::Test,
        addr,
        addr,
        MailboxConfig { capacity: 3, overflow: Overflow::Disconnect },
    );
    let speaker = live(ConnectionKind::Test);
    for conn in [&slow, &strict, &speaker] {
        chat.register(conn).await.unwrap();
        chat.join(conn.id(), "busy").await.unwrap();
    }
    for n in 0..5 {
        chat.say(&speaker, "busy", json!(format!("m{n}"))).unwrap();
    }
    // DropOldest: two dropped, counted, and announced before the rest.
    assert_eq!(slow.missed_messages(), 2);
    let frames = inbox(&slow).await;
    assert_eq!(frames[0], json!({"message": "you missed 2 messages", "missed": 2, "context": "alert"}));
    assert_eq!(said(&frames[1..]).iter().map(|s| s.0.clone()).collect::<Vec<_>>(), ["m2", "m3", "m4"]);
    // Disconnect: the fourth message destroyed the connection; its transport drains
    // what was queued and closes.
    assert!(strict.is_destroyed());
    let mut kept = Vec::new();
    while let Some(bytes) = strict.next_message().await {
        kept.push(serde_json::from_slice::<Value>(&bytes).unwrap()["message"].clone());
    }
    assert_eq!(kept, [json!("m0"), json!("m1"), json!("m2")]);
}

/// The in-process store, with a join that waits until the test lets it go, and a
/// record of the connections registered and unregistered.
#[derive(Default)]
struct GatedRooms {
    inner: tower_context::chat::MemoryRooms,
    gate: Arc<tokio::sync::Notify>,
    joining: Arc<tokio::sync::Notify>,
    registered: Mutex<Vec<String>>,
    unregistered: Mutex<Vec<String>>,
}

impl tower_context::chat::RoomStore for GatedRooms {
    fn add_room(&self, room: &str) -> tower_context::chat::BoxFuture<Result<(), ChatError>> {
        self.inner.add_room(room)
    }
    fn remove_room(
        &self,
        room: &str,
    ) -> tower_context::chat::BoxFuture<Result<Vec<tower_context::chat::Member>, ChatError>> {
        self.inner.remove_room(room)
    }
    fn room_exists(&self, room: &str) -> tower_context::chat::BoxFuture<Result<bool, ChatError>> {
        self.inner.room_exists(room)
    }
    fn rooms(&self) -> tower_context::chat::BoxFuture<Result<Vec<String>, ChatError>> {
        self.inner.rooms()
    }
    fn join(
        &self,
        room: &str,
        member: tower_context::chat::Member,
    ) -> tower_context::chat::BoxFuture<Result<(), ChatError>> {
        let (joined, gate, joining) =
            (self.inner.join(room, member), self.gate.clone(), self.joining.clone());
        Box::pin(async move {
            let result = joined.await;
            joining.notify_one();
            gate.notified().await;
            result
        })
    }
    fn leave(&self, room: &str, connection: &str) -> tower_context::chat::BoxFuture<Result<bool, ChatError>> {
        self.inner.leave(room, connection)
    }
    fn members(
        &self,
        room: &str,
    ) -> tower_context::chat::BoxFuture<Result<Vec<tower_context::chat::Member>, ChatError>> {
        self.inner.members(room)
    }
    fn register(
        &self,
        connection: &str,
        node: &str,
    ) -> tower_context::chat::BoxFuture<Result<(), ChatError>> {
        self.registered.lock().unwrap().push(connection.to_owned());
        self.inner.register(connection, node)
    }
    fn unregister(&self, connection: &str) -> tower_context::chat::BoxFuture<Result<(), ChatError>> {
        self.unregistered.lock().unwrap().push(connection.to_owned());
        self.inner.unregister(connection)
    }
    fn node_of(&self, connection: &str) -> tower_context::chat::BoxFuture<Result<Option<String>, ChatError>> {
        self.inner.node_of(connection)
    }
}

/// `chat` with a room `r`, a connection registered on it, and that connection's
/// join of `r` running in a task of its own.
async fn joining_r(chat: &Chat) -> (Chat, Connection, tokio::task::JoinHandle<Result<(), ChatError>>) {
    let chat = with_rooms(chat, ["r"]).await;
    let conn = live(ConnectionKind::Test);
    chat.register(&conn).await.unwrap();
    let joining = tokio::spawn({
        let (chat, id) = (chat.clone(), conn.id().to_owned());
        async move { chat.join(&id, "r").await }
    });
    (chat, conn, joining)
}

fn gated_chat() -> (Chat, Arc<GatedRooms>) {
    let rooms = Arc::new(GatedRooms::default());
    let chat = Chat::node("gated", Arc::new(LocalBus::default()), rooms.clone());
    (chat, rooms)
}

#[tokio::test]
async fn a_connection_destroyed_while_its_join_is_stored_is_no_member() {
    let (chat, rooms) = gated_chat();
    let (chat, conn, joining) = joining_r(&chat).await;
    rooms.joining.notified().await;
    // The store has the member; the client goes away before the join is done.
    chat.destroy(&conn).await;
    rooms.gate.notify_one();
    let joined = joining.await.unwrap();
    assert_eq!(joined.unwrap_err().to_string(), format!("connection not found ({})", conn.id()));
    assert_eq!(chat.room_status("r").await.unwrap()["membersCount"], 0);
    assert!(conn.rooms().is_empty(), "{:?}", conn.rooms());
}

#[tokio::test]
async fn an_sse_request_dropped_while_it_joins_leaves_nothing_behind() {
    let (chat, rooms) = gated_chat();
    let chat = with_rooms(&chat, ["r"]).await;
    let sse = tower_context::chat::sse::SseChat::new(chat.clone());
    let (parts, ()) = http::Request::get("/events?room=r").body(()).unwrap().into_parts();
    let responding = tokio::spawn(async move { sse.respond(&parts).await.map(|_| ()) });
    rooms.joining.notified().await;
    // The client goes away: hyper drops the handler's future.
    responding.abort();
    assert!(responding.await.unwrap_err().is_cancelled());
    rooms.gate.notify_one();
    let id = rooms.registered.lock().unwrap()[0].clone();
    for _ in 0..200 {
        if rooms.unregistered.lock().unwrap().contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*rooms.unregistered.lock().unwrap(), vec![id.clone()], "forgotten by the store");
    assert!(chat.connection(&id).is_none(), "forgotten by the node");
    assert_eq!(chat.room_status("r").await.unwrap()["membersCount"], 0);
}

/// The in-process bus, whose first `watch` waits for the test (and then fails, a
/// subscription Redis refused, when `fail_first`), counting every `watch` and
/// recording the `watch`es that succeed and every `unwatch`, in order.
#[derive(Default)]
struct HeldBus {
    inner: LocalBus,
    fail_first: bool,
    gate: Arc<tokio::sync::Notify>,
    entered: Arc<tokio::sync::Notify>,
    watches: AtomicUsize,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl tower_context::chat::Bus for HeldBus {
    fn attach(&self, node: tower_context::chat::Node) {
        self.inner.attach(node);
    }
    fn publish(&self, from: &str, room: &str, payload: bytes::Bytes) {
        self.inner.publish(from, room, payload);
    }
    fn call(
        &self,
        to: &str,
        command: tower_context::chat::Command,
        timeout: Duration,
    ) -> tower_context::chat::BoxFuture<Result<(), ChatError>> {
        self.inner.call(to, command, timeout)
    }
    fn watch(&self, _node: &str, _room: &str) -> tower_context::chat::BoxFuture<Result<(), ChatError>> {
        let first = self.watches.fetch_add(1, Ordering::SeqCst) == 0;
        let fails = first && self.fail_first;
        let (gate, entered, calls) = (self.gate.clone(), self.entered.clone(), self.calls.clone());
        Box::pin(async move {
            if first {
                entered.notify_one();
                gate.notified().await;
            }
            if fails {
                return Err(ChatError::Store("subscribe refused".into()));
            }
            // Subscribed once the call returns.
            calls.lock().unwrap().push("watch");
            Ok(())
        })
    }
    fn unwatch(&self, _node: &str, _room: &str) {
        self.calls.lock().unwrap().push("unwatch");
    }
}

#[tokio::test]
async fn a_join_during_a_first_join_whose_subscription_fails_is_still_heard() {
    let bus = Arc::new(HeldBus { fail_first: true, ..HeldBus::default() });
    let chat = Chat::node("flaky", bus.clone(), Arc::new(tower_context::chat::MemoryRooms::default()));
    let chat = with_rooms(&chat, ["r"]).await;
    let (a, b) = (live(ConnectionKind::Test), live(ConnectionKind::Test));
    chat.register(&a).await.unwrap();
    chat.register(&b).await.unwrap();
    let first = tokio::spawn({
        let (chat, id) = (chat.clone(), a.id().to_owned());
        async move { chat.join(&id, "r").await }
    });
    bus.entered.notified().await;
    // The first join's subscription is under way: the second joins meanwhile.
    chat.join(b.id(), "r").await.unwrap();
    bus.gate.notify_one();
    assert!(first.await.unwrap().is_err(), "the first join's subscription failed");
    assert_eq!(bus.watches.load(Ordering::SeqCst), 2, "the second joiner asked the bus too");
    let status = chat.room_status("r").await.unwrap();
    assert_eq!(status["membersCount"], 1);
    assert!(status["members"].get(b.id()).is_some(), "{status}");
    assert_eq!(a.rooms(), Vec::<String>::new());
}

#[tokio::test]
async fn a_connection_destroyed_while_its_room_is_subscribed_leaves_the_node_unsubscribed() {
    let bus = Arc::new(HeldBus::default());
    let chat = Chat::node("held", bus.clone(), Arc::new(tower_context::chat::MemoryRooms::default()));
    let (chat, conn, joining) = joining_r(&chat).await;
    bus.entered.notified().await;
    // Its destroy leaves the room, the last member here, before the bus has
    // subscribed for it.
    chat.destroy(&conn).await;
    bus.gate.notify_one();
    let joined = joining.await.unwrap();
    assert_eq!(joined.unwrap_err().to_string(), format!("connection not found ({})", conn.id()));
    let calls = bus.calls.lock().unwrap().clone();
    assert_eq!(calls.last(), Some(&"unwatch"), "the node stops hearing the room: {calls:?}");
    assert_eq!(chat.room_status("r").await.unwrap()["membersCount"], 0);
}
