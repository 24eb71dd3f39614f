//! Chat across nodes on a real `redis-server` when things go wrong: connections
//! killed, the server restarted empty, a node dying without goodbye, envelopes that
//! are garbage, forged or too large. (The whole chat suite also runs on three Redis
//! nodes: `tests/api/chat.rs`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tower_context::chat::{Chat, ChatMiddleware, Gap, RedisChat};
use tower_context::connection::{Connection, ConnectionKind, MailboxConfig};
use tower_context::cookies::Keys;

use crate::common::redis_server::RedisServer;

const PREFIX: &str = "tower-context:chat:";
const SECRET: &str = "cluster secret";

fn builder(url: &str, id: &str) -> RedisChat {
    RedisChat::new(url).keys(Keys::new([SECRET])).node_id(id).rpc_timeout(Duration::from_secs(2))
}

async fn node(url: &str, id: &str, lease: Duration) -> Chat {
    builder(url, id).lease(lease).connect().await.unwrap()
}

/// A test connection with room for every message of these tests.
fn client() -> Connection {
    let addr = "127.0.0.1:40000".parse().unwrap();
    Connection::live(
        ConnectionKind::Test,
        addr,
        addr,
        MailboxConfig { capacity: 100_000, ..Default::default() },
    )
}

/// Moves what is in `conn`'s mailbox now into `out`, parsed.
async fn drain(conn: &Connection, out: &mut Vec<Value>) {
    while conn.queued_messages() > 0 {
        let bytes = conn.next_message().await.unwrap();
        out.push(serde_json::from_slice(&bytes).unwrap());
    }
}

/// Stops a wait for an event that never comes; never what a test asserts.
const GUARD: Duration = Duration::from_secs(30);

/// Polls `check` every 10 ms for up to five seconds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Room `r` made, a listener held by `a` and a speaker held by `b`, both in it.
async fn listener_and_speaker(a: &Chat, b: &Chat) -> (Connection, Connection) {
    a.add_room("r").await.unwrap();
    let (listener, speaker) = (client(), client());
    a.register(&listener).await.unwrap();
    b.register(&speaker).await.unwrap();
    a.join(listener.id(), "r").await.unwrap();
    b.join(speaker.id(), "r").await.unwrap();
    (listener, speaker)
}

/// The id of the one RESP3 client of `server` (a node's connection, made while it is
/// the only node), to kill it alone.
fn only_node_client(server: &RedisServer) -> String {
    server
        .command("CLIENT LIST")
        .lines()
        .find(|line| line.contains("resp=3"))
        .and_then(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .expect("the node's connection is listed")
        .to_owned()
}

/// The number in a said `mN`.
fn number(frame: &Value) -> Option<u64> {
    frame["message"].as_str()?.strip_prefix('m')?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_and_a_restarted_server_lose_nothing_unreported() {
    let Some(mut server) = RedisServer::start() else { return };
    let lease = Duration::from_millis(300);
    let a = node(&server.url(), "a", lease).await;
    // Node a's connection, to kill it alone.
    let a_client = only_node_client(&server);
    let b = node(&server.url(), "b", lease).await;
    let (listener, speaker) = listener_and_speaker(&a, &b).await;
    let gaps: Arc<Mutex<Vec<Gap>>> = Arc::default();
    let seen = gaps.clone();
    a.on_gap(move |gap| seen.lock().unwrap().push(gap.clone()));

    let mut frames = Vec::new();
    let mut said = 0u64;
    let say = |n: u64| b.say(&speaker, "r", json!(format!("m{n}"))).unwrap();
    // Node a alone cut off: what b says meanwhile is lost to a, and must be reported.
    // Then every connection cut, then the server restarted empty.
    for fault in ["kill a", "kill all", "restart"] {
        for _ in 0..50 {
            say(said);
            said += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            drain(&listener, &mut frames).await;
        }
        let reconnects = a.bus_stats().reconnects;
        match fault {
            "kill a" => assert!(server.command(&format!("CLIENT KILL ID {a_client}")).starts_with(":1")),
            "kill all" => assert!(server.command("CLIENT KILL TYPE pubsub").starts_with(":2")),
            _ => server.restart(),
        }
        // Node a notices the fault; then a message said after that reaches it: the
        // bus reconnected and resubscribed by itself. (b keeps talking meanwhile.)
        let guard = Instant::now() + GUARD;
        let mut noticed: Option<u64> = None;
        loop {
            if noticed.is_none() && a.bus_stats().reconnects > reconnects {
                noticed = Some(said);
            }
            say(said);
            said += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            drain(&listener, &mut frames).await;
            if noticed.is_some_and(|first| frames.iter().filter_map(number).any(|n| n >= first)) {
                break;
            }
            let state = if noticed.is_some() { "nothing got through since" } else { "node a never noticed" };
            assert!(Instant::now() < guard, "{fault}: {state}");
        }
    }
    for _ in 0..50 {
        say(said);
        said += 1;
    }
    // The restarted server came back empty: each node recorded again what it holds.
    eventually("both nodes are back in the registry", async || {
        server.command(&format!("SCARD {PREFIX}nodes")).trim() == ":2"
    })
    .await;
    eventually("the room and its members are back", async || {
        a.room_status("r").await.is_ok_and(|status| status["membersCount"] == 2)
    })
    .await;
    for chat in [&a, &b] {
        chat.flush().await.unwrap();
    }
    drain(&listener, &mut frames).await;

    let delivered: Vec<u64> = frames.iter().filter_map(number).collect();
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "in order, none twice: {delivered:?}");
    let alerted: u64 = frames
        .iter()
        .filter(|f| f["context"] == "alert")
        .map(|f| {
            assert_eq!(f["room"], "r");
            let missed = f["missed"].as_u64().unwrap();
            let plural = if missed == 1 { "" } else { "s" };
            assert_eq!(f["message"], format!("{missed} message{plural} in this room may have been missed"));
            missed
        })
        .sum();
    assert_eq!(delivered.len() as u64 + alerted, said, "every message delivered or reported missed");
    let reported: u64 = gaps.lock().unwrap().iter().map(|g| g.missed).sum();
    assert_eq!(reported, alerted, "the app's callback heard of the same losses");
    assert!(gaps.lock().unwrap().iter().all(|g| g.node == "b" && g.room.as_deref() == Some("r")));
    let stats = a.bus_stats();
    assert!(stats.reconnects >= 3, "{stats:?}");
    assert_eq!((stats.missed, stats.rejected), (alerted, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_without_goodbye_has_its_members_swept_within_two_leases() {
    use futures_util::StreamExt;

    let Some(server) = RedisServer::start() else { return };
    // The call to the dead node must time out before its lease lapses, at least
    // two thirds of a lease after it died: a lease of 2 s leaves that 300 ms call
    // over a second to spare on a machine that stalls.
    let lease = Duration::from_millis(2000);
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let chat = builder(&server.url(), id).lease(lease).rpc_timeout(Duration::from_millis(300));
        nodes.push(chat.connect().await.unwrap());
    }
    let left: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for chat in &nodes {
        let (left, here) = (left.clone(), chat.id().to_owned());
        chat.add_middleware(ChatMiddleware::new("goodbyes").leave(move |chat, conn, room| {
            left.lock().unwrap().push((here.clone(), conn.id().to_owned()));
            chat.announce(room, json!(format!("{} has left", conn.id()))).unwrap();
            Ok(())
        }));
    }
    nodes[0].add_room("r").await.unwrap();
    let conns: Vec<Connection> = (0..3).map(|_| client()).collect();
    for (chat, conn) in nodes.iter().zip(&conns) {
        chat.register(conn).await.unwrap();
        chat.join(conn.id(), "r").await.unwrap();
    }
    assert_eq!(nodes[0].room_status("r").await.unwrap()["membersCount"], 3);

    // What Redis does with the leases, in its own order: renewed (`set`), lapsed
    // (`expired`). Time on this machine is not what is tested (load stretches it);
    // the lease's length and the number of rounds of tending are.
    assert!(server.command("CONFIG SET notify-keyspace-events K$x").starts_with("+OK"));
    let mut events = redis::Client::open(server.url()).unwrap().get_async_pubsub().await.unwrap();
    events.psubscribe(format!("__keyspace@0__:{PREFIX}lease:*")).await.unwrap();
    let mut events = events.into_on_message();
    let ttl = server.command(&format!("PTTL {PREFIX}lease:c"));
    let ttl: u64 = ttl.trim().trim_start_matches(':').parse().expect(&ttl);
    assert!(
        u128::from(ttl) <= lease.as_millis(),
        "the dead node's lease lapses within one lease: {ttl} ms left"
    );

    let dead = nodes.pop().unwrap();
    drop(dead);
    // Before it is swept, a call to the node holding the connection times out.
    let timed_out = nodes[0].send_to(conns[2].id(), tower_context::connection::Message::alert("x")).await;
    assert_eq!(timed_out.unwrap_err().to_string(), "RPC Timeout");
    // Its lease lapses (it is not renewed: the node is gone). Then each living node
    // renews its lease twice: one whole round of tending (renew, look for lapsed
    // leases, sweep, run the leave middleware) between the two, begun after the
    // lapse. The sweep is due by then: lapse within one lease, then one round (a
    // third of a lease) makes two leases at most.
    let rounds = async {
        let mut lapsed = false;
        let mut renewed = [0, 0];
        while renewed.iter().any(|n| *n < 2) {
            let event = events.next().await.expect("the event stream lasts");
            let (key, what) = (event.get_channel_name().to_owned(), event.get_payload::<String>().unwrap());
            let node = key.rsplit(':').next().unwrap_or_default();
            match (node, what.as_str()) {
                ("c", "expired") => lapsed = true,
                ("a", "set") if lapsed => renewed[0] += 1,
                ("b", "set") if lapsed => renewed[1] += 1,
                _ => {}
            }
        }
    };
    tokio::time::timeout(GUARD, rounds)
        .await
        .expect("the dead node's lease lapsed and the living nodes tended");

    assert_eq!(
        nodes[0].room_status("r").await.unwrap()["membersCount"],
        2,
        "the dead node's member is swept"
    );
    let status = nodes[1].room_status("r").await.unwrap();
    assert!(status["members"].get(conns[2].id()).is_none(), "no ghost member: {status}");
    // The leave middleware ran once for it, on a node that lives (the sweeper, in
    // its round, before its next renewal).
    let left = left.lock().unwrap().clone();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].0 != "c" && left[0].1 == conns[2].id());
    // What it said went out in that round too: a flush now takes it to every node.
    for chat in &nodes {
        chat.flush().await.unwrap();
    }
    let mut heard = Vec::new();
    drain(&conns[0], &mut heard).await;
    assert_eq!(heard.last().unwrap()["message"], format!("{} has left", conns[2].id()));
    // Its connections are forgotten too.
    let gone = nodes[0].send_to(conns[2].id(), tower_context::connection::Message::alert("x")).await;
    assert_eq!(gone.unwrap_err().to_string(), format!("connection not found ({})", conns[2].id()));
}

/// An envelope as a node seals it (see `src/chat/redis/envelope.rs`), under the
/// chat's key derived from `secret`.
fn envelope(secret: &str, header: Value, payload: &[u8]) -> Vec<u8> {
    let mut body = serde_json::to_vec(&header).unwrap();
    body.push(b'\n');
    body.extend_from_slice(payload);
    let hmac = |key: &[u8], data: &[u8]| {
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap().chain_update(data).finalize().into_bytes()
    };
    let key = hmac(secret.as_bytes(), b"tower-context/chat-envelopes/v1");
    [hmac(&key, &body).as_slice(), &body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_that_fail_are_dropped_and_counted_and_the_node_carries_on() {
    let Some(server) = RedisServer::start() else { return };
    let a = builder(&server.url(), "a").max_envelope(2048).connect().await.unwrap();
    let b = node(&server.url(), "b", Duration::from_secs(3)).await;
    let (listener, speaker) = listener_and_speaker(&a, &b).await;

    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let room_channel = format!("{PREFIX}room:r");
    let publish = async |raw: &mut redis::aio::MultiplexedConnection, channel: &str, bytes: Vec<u8>| {
        redis::cmd("PUBLISH").arg(channel).arg(bytes).query_async::<u64>(raw).await.unwrap()
    };
    let said = |text: &str| {
        serde_json::to_vec(
            &json!({"message": text, "room": "r", "from": "0", "context": "user", "sentAt": 1}),
        )
        .unwrap()
    };
    let header = |seq: u64| json!({"n": "forger", "i": 1, "s": seq, "k": "m", "c": room_channel, "r": "r"});
    // Sealed under the cluster's key, a hand-made envelope is delivered: the
    // rejections below are for what they are, not for a wrong format.
    publish(&mut raw, &room_channel, envelope(SECRET, header(1), &said("well formed"))).await;
    publish(&mut raw, &format!("{PREFIX}node:a"), b"garbage".to_vec()).await;
    publish(&mut raw, &room_channel, vec![0; 64]).await;
    publish(&mut raw, &room_channel, envelope("wrong key", header(2), &said("forged"))).await;
    let replayed =
        envelope(SECRET, json!({"n": "forger", "i": 1, "s": 3, "k": "m", "c": "elsewhere", "r": "r"}), b"{}");
    publish(&mut raw, &room_channel, replayed).await;
    eventually("four envelopes rejected", async || a.bus_stats().rejected == 4).await;

    // Too large for node a (2 KiB): dropped, counted, and reported as a gap once the
    // next message from b shows one is missing.
    b.say(&speaker, "r", json!("x".repeat(4096))).unwrap();
    b.say(&speaker, "r", json!("still here")).unwrap();
    b.flush().await.unwrap();
    let mut frames = Vec::new();
    drain(&listener, &mut frames).await;
    let messages: Vec<&str> = frames.iter().map(|f| f["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["well formed", "1 message in this room may have been missed", "still here"]);
    let stats = a.bus_stats();
    assert_eq!((stats.rejected, stats.gaps, stats.missed), (5, 1, 1));
    assert_eq!(b.bus_stats().rejected, 3, "b, in the room, refused the three bad room envelopes, not a's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_message_is_reported_when_the_node_is_back() {
    use futures_util::StreamExt;

    let Some(server) = RedisServer::start() else { return };
    let a = node(&server.url(), "a", Duration::from_secs(3)).await;
    let a_client = only_node_client(&server);
    let b = node(&server.url(), "b", Duration::from_secs(3)).await;
    let (listener, speaker) = listener_and_speaker(&a, &b).await;
    b.say(&speaker, "r", json!("before")).unwrap();
    b.flush().await.unwrap();
    let gaps: Arc<Mutex<Vec<Gap>>> = Arc::default();
    let seen = gaps.clone();
    a.on_gap(move |gap| seen.lock().unwrap().push(gap.clone()));

    // The test's own connections, opened before the server asks for a password.
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let mut watch = client.get_async_pubsub().await.unwrap();
    watch.subscribe(format!("{PREFIX}room:r")).await.unwrap();
    let mut published = watch.into_on_message();
    // Node a is cut off and cannot come back (its new connections are refused)
    // until b's next message is surely out; b says nothing after it.
    let (killed,): (u64,) = redis::pipe()
        .cmd("CONFIG")
        .arg(&["SET", "requirepass", "locked out"][..])
        .ignore()
        .cmd("CLIENT")
        .arg(&["KILL", "ID", &a_client][..])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    b.say(&speaker, "r", json!("lost while away")).unwrap();
    tokio::time::timeout(Duration::from_secs(5), published.next()).await.unwrap().unwrap();
    redis::cmd("CONFIG").arg(&["SET", "requirepass", ""][..]).query_async::<()>(&mut raw).await.unwrap();

    // Back, a asks b where it is; b's mark shows one message a never had.
    let mut frames = Vec::new();
    eventually("the loss is reported", async || {
        drain(&listener, &mut frames).await;
        frames.iter().any(|f| f["context"] == "alert")
    })
    .await;
    let messages: Vec<&str> = frames.iter().map(|f| f["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["before", "1 message in this room may have been missed"]);
    assert_eq!(*gaps.lock().unwrap(), [Gap::new("b", Some("r".into()), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_the_same_id_leaves_no_ghost_and_is_heard() {
    let Some(server) = RedisServer::start() else { return };
    let lease = Duration::from_secs(30);
    let (a, b) = (node(&server.url(), "a", lease).await, node(&server.url(), "b", lease).await);
    // `old`, held by a, is the one the restart must not leave behind.
    let (old, listener) = listener_and_speaker(&a, &b).await;
    for n in 0..5 {
        a.say(&old, "r", json!(format!("m{n}"))).unwrap();
    }
    a.flush().await.unwrap();
    // The process dies and comes back at once, long before its lease runs out.
    drop(a);
    let a = node(&server.url(), "a", lease).await;
    let status = b.room_status("r").await.unwrap();
    assert_eq!(status["membersCount"], 1, "the old life's member is gone: {status}");
    // Its numbering starts again: the others hear it, not take it for repeats.
    let speaker = client();
    a.register(&speaker).await.unwrap();
    a.join(speaker.id(), "r").await.unwrap();
    a.say(&speaker, "r", json!("m5")).unwrap();
    for chat in [&a, &b] {
        chat.flush().await.unwrap();
    }
    let mut frames = Vec::new();
    drain(&listener, &mut frames).await;
    let heard: Vec<u64> = frames.iter().filter_map(number).collect();
    assert_eq!(heard, [0, 1, 2, 3, 4, 5]);
    assert_eq!(b.bus_stats().missed, 0);
}
