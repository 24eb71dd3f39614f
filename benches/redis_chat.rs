//! Chat across three nodes through a real `redis-server` on loopback (issue 17,
//! point 7), beside the floor of any Redis bus measured in the same run: a bare
//! PUBLISH to a RESP3 subscriber with the same `redis` crate, no envelope, no MAC,
//! no chat.
//!
//! ```text
//! cargo bench --bench redis_chat                         # 5,000 one-at-a-time, 10,000/s for 5 s
//! SERIAL=20000 RATE=10000 SECONDS=10 cargo bench --bench redis_chat
//! ```
//!
//! Two runs:
//! - one at a time: a member of node 0 says a message, timed until a member on
//!   node 1 has it in its mailbox, then the next (delivery latency, unloaded);
//! - sustained: RATE messages a second for SECONDS, each stamped with the time it
//!   was said; members on nodes 1 and 2 take them out as a transport would. Reports
//!   the latency under load, what arrived, and what the bus reported lost: every
//!   message must be delivered or reported, and the target is none lost.
//!
//! Starts its own `redis-server` from PATH on a free port.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManagerConfig;
use serde_json::json;
use tower_context::chat::{Chat, RedisChat};
use tower_context::connection::{Connection, ConnectionKind, MailboxConfig};
use tower_context::cookies::Keys;

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn member() -> Connection {
    let addr = "127.0.0.1:40000".parse().unwrap();
    Connection::live(
        ConnectionKind::Test,
        addr,
        addr,
        MailboxConfig { capacity: 1 << 20, ..Default::default() },
    )
}

/// The floor: PUBLISH on one connection, timed until a RESP3 subscriber on another
/// has it, one at a time.
async fn bare_pubsub(url: &str, n: u64) -> Vec<Duration> {
    let client = redis::Client::open(format!("{url}?protocol=resp3")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ConnectionManagerConfig::new().set_push_sender(tx);
    let mut sub = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await.unwrap();
    sub.subscribe("floor").await.unwrap();
    let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
    let payload = vec![b'x'; 100];
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let started = Instant::now();
        redis::cmd("PUBLISH").arg("floor").arg(&payload).query_async::<u64>(&mut publisher).await.unwrap();
        loop {
            let push = rx.recv().await.unwrap();
            if push.kind == redis::PushKind::Message {
                break;
            }
        }
        times.push(started.elapsed());
    }
    times
}

/// The floor under load: bare PUBLISHes of stamped payloads at `rate` a second
/// (a pipeline per millisecond), timed until a RESP3 subscriber has each.
async fn bare_sustained(url: &str, rate: u64, total: u64, origin: Instant) -> Vec<Duration> {
    let client = redis::Client::open(format!("{url}?protocol=resp3")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let config = ConnectionManagerConfig::new().set_push_sender(tx);
    let mut sub = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await.unwrap();
    sub.subscribe("floor-sustained").await.unwrap();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        while (latencies.len() as u64) < total {
            let Ok(Some(push)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await else { break };
            if push.kind != redis::PushKind::Message {
                continue;
            }
            if let Some(redis::Value::BulkString(payload)) = push.data.get(1) {
                let micros: u64 = std::str::from_utf8(&payload[..12]).unwrap().trim().parse().unwrap();
                latencies.push(origin.elapsed().saturating_sub(Duration::from_micros(micros)));
            }
        }
        latencies
    });
    let mut publisher = client.get_multiplexed_async_connection().await.unwrap();
    paced(rate, total, async |n| {
        let mut pipe = redis::pipe();
        for _ in 0..n {
            let payload = format!("{:>12} {}", origin.elapsed().as_micros(), "x".repeat(87));
            pipe.cmd("PUBLISH").arg("floor-sustained").arg(payload).ignore();
        }
        pipe.query_async::<()>(&mut publisher).await.unwrap();
    })
    .await;
    receiver.await.unwrap()
}

/// Calls `send(n)` every millisecond with how many are due, so `rate` a second go
/// out (catching up after a late tick) until `total` have; returns how long it took.
async fn paced(rate: u64, total: u64, mut send: impl AsyncFnMut(u64)) -> Duration {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    while sent < total {
        ticker.tick().await;
        let due = ((started.elapsed().as_micros() as u64 * rate) / 1_000_000 + rate / 1_000).min(total);
        if due > sent {
            send(due - sent).await;
            sent = due;
        }
    }
    started.elapsed()
}

/// socketioxide's Redis adapter (socketioxide-redis, the same `redis` crate): three
/// `SocketIo` servers on one Redis, a dummy socket (its test harness) on each
/// joined to the room; `io.to(room).emit` on server 0, timed until the socket on
/// server `to` has the packet. One at a time, then sustained like ours.
mod socketioxide_redis_rows {
    use super::*;
    use engineioxide::Packet;
    use socketioxide::SocketIo;
    use socketioxide::adapter::Emitter;
    use socketioxide::extract::SocketRef;
    use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
    use tokio::sync::mpsc::Receiver;

    pub(super) struct Cluster {
        servers: Vec<SocketIo<RedisAdapter<Emitter>>>,
        sockets: Vec<Receiver<Packet>>,
        // Dropping a dummy socket's sender disconnects it.
        _senders: Vec<tokio::sync::mpsc::Sender<Packet>>,
    }

    pub(super) async fn cluster(url: &str) -> Cluster {
        let mut servers = Vec::new();
        let (mut sockets, mut senders) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            // Its driver takes pub/sub messages as RESP3 pushes.
            let client = redis::Client::open(format!("{url}?protocol=resp3")).unwrap();
            let adapter = RedisAdapterCtr::new_with_redis(&client).await.unwrap();
            let (_svc, io) = SocketIo::builder().with_adapter::<RedisAdapter<_>>(adapter).build_svc();
            io.ns("/", async |socket: SocketRef<RedisAdapter<Emitter>>| socket.join("bench")).await.unwrap();
            let (tx, mut rx) = io.new_dummy_sock("/", ()).await;
            rx.recv().await.unwrap(); // its connect packet
            servers.push(io);
            sockets.push(rx);
            senders.push(tx);
        }
        Cluster { servers, sockets, _senders: senders }
    }

    fn stamp_of(packet: &Packet, origin: Instant) -> Option<Duration> {
        let Packet::Message(text) = packet else { return None };
        // 42["message","   MICROS xxx"]
        let micros: u64 = text.as_str().split('"').nth(3)?.split_whitespace().next()?.parse().ok()?;
        Some(origin.elapsed().saturating_sub(Duration::from_micros(micros)))
    }

    pub(super) async fn one_at_a_time(cluster: &mut Cluster, n: u64, origin: Instant) -> Vec<Duration> {
        let mut times = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let started = Instant::now();
            let payload = stamped(origin);
            cluster.servers[0].to("bench").emit("message", &payload).await.unwrap();
            cluster.sockets[1].recv().await.unwrap();
            times.push(started.elapsed());
            // The other sockets' copies, untimed.
            cluster.sockets[0].recv().await.unwrap();
            cluster.sockets[2].recv().await.unwrap();
        }
        times
    }

    pub(super) async fn sustained(
        cluster: Cluster,
        rate: u64,
        total: u64,
        origin: Instant,
    ) -> Vec<Vec<Duration>> {
        let Cluster { servers, sockets, _senders } = cluster;
        let mut sockets = sockets.into_iter();
        let mut own = sockets.next().unwrap();
        tokio::spawn(async move { while own.recv().await.is_some() {} });
        let listeners: Vec<_> = sockets
            .map(|mut rx| {
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(total as usize);
                    while (latencies.len() as u64) < total {
                        let Ok(Some(packet)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
                        else {
                            break;
                        };
                        latencies.extend(stamp_of(&packet, origin));
                    }
                    latencies
                })
            })
            .collect();
        let io = servers[0].clone();
        // The millisecond's messages go out together, as ours and the floor's do (one
        // pipeline per tick), not one round trip after another.
        paced(rate, total, async |n| {
            let emits = (0..n).map(|_| {
                let io = io.clone();
                async move { io.to("bench").emit("message", &stamped(origin)).await.unwrap() }
            });
            futures_util::future::join_all(emits).await;
        })
        .await;
        let mut out = Vec::new();
        for listener in listeners {
            out.push(listener.await.unwrap());
        }
        drop(_senders);
        out
    }
}

/// A message of about 100 bytes on the wire, saying when it was said.
fn stamped(origin: Instant) -> serde_json::Value {
    json!(format!("{:>12} {}", origin.elapsed().as_micros(), "x".repeat(24)))
}

fn said_at(frame: &[u8], origin: Instant) -> Duration {
    let value: serde_json::Value = serde_json::from_slice(frame).unwrap();
    let micros: u64 = value["message"].as_str().unwrap().split_whitespace().next().unwrap().parse().unwrap();
    origin.elapsed().saturating_sub(Duration::from_micros(micros))
}

/// One row of the sustained table (latencies sorted here); its p50 and p99.
fn sustained_row(name: &str, latencies: &mut [Duration], alerts: &str, lost: &str) -> (Duration, Duration) {
    latencies.sort();
    let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
    let max = latencies.last().copied().unwrap_or_default();
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {alerts} | {lost} |",
        latencies.len(),
        ms(p50),
        ms(p99),
        ms(max)
    );
    (p50, p99)
}

fn row(name: &str, times: &mut [Duration], floor: Option<(f64, f64)>) -> (f64, f64) {
    times.sort();
    let (p50, p99) = (ms(percentile(times, 0.5)), ms(percentile(times, 0.99)));
    match floor {
        Some((f50, f99)) => println!(
            "| {name} | {} | {p50:.3} | {p99:.3} | {:.2}x | {:.2}x |",
            times.len(),
            p50 / f50,
            p99 / f99
        ),
        None => println!("| {name} | {} | {p50:.3} | {p99:.3} | 1.00x | 1.00x |", times.len()),
    }
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let serial = env("SERIAL", 5_000);
    let rate = env("RATE", 10_000);
    let seconds = env("SECONDS", 5);
    let server = redis_server::RedisServer::start().expect("redis-server on PATH");
    let url = server.url();

    let mut nodes: Vec<Chat> = Vec::new();
    for i in 0..3 {
        let node = RedisChat::new(&url).keys(Keys::new(["bench secret"])).node_id(format!("node-{i}"));
        nodes.push(node.connect().await.unwrap());
    }
    nodes[0].add_room("bench").await.unwrap();
    let members: Vec<Connection> = (0..3).map(|_| member()).collect();
    for (node, conn) in nodes.iter().zip(&members) {
        node.register(conn).await.unwrap();
        node.join(conn.id(), "bench").await.unwrap();
    }
    let origin = Instant::now();

    println!("| one at a time ({serial} messages) | n | p50 ms | p99 ms | p50 / floor | p99 / floor |");
    println!("|---|---|---|---|---|---|");
    let mut floor_times = bare_pubsub(&url, serial).await;
    let floor = row("bare PUBLISH to a RESP3 subscriber (floor)", &mut floor_times, None);
    let mut times = Vec::with_capacity(serial as usize);
    for _ in 0..serial {
        let started = Instant::now();
        nodes[0].say(&members[0], "bench", stamped(origin)).unwrap();
        members[1].next_message().await.unwrap();
        times.push(started.elapsed());
    }
    row("`Chat::say` on node 0 to a member on node 1", &mut times, Some(floor));
    let mut sio = socketioxide_redis_rows::cluster(&url).await;
    let mut sio_times = socketioxide_redis_rows::one_at_a_time(&mut sio, serial, origin).await;
    row(
        "socketioxide-redis: `io.to(room).emit` on server 0 to a socket on server 1",
        &mut sio_times,
        Some(floor),
    );
    for chat in &nodes {
        chat.flush().await.unwrap();
    }
    for conn in &members {
        while conn.queued_messages() > 0 {
            conn.next_message().await.unwrap();
        }
    }

    // Sustained: the listeners take messages out as they come, recording latency.
    let total = rate * seconds;
    let listeners: Vec<_> = members[1..]
        .iter()
        .cloned()
        .map(|conn| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total as usize);
                let mut alerts = 0u64;
                while (latencies.len() as u64) < total {
                    let Ok(Some(frame)) =
                        tokio::time::timeout(Duration::from_secs(5), conn.next_message()).await
                    else {
                        break;
                    };
                    if frame.windows(7).any(|w| w == b"\"alert\"") {
                        alerts += 1;
                        continue;
                    }
                    latencies.push(said_at(&frame, origin));
                }
                (latencies, alerts)
            })
        })
        .collect();
    let speaker = members[0].clone();
    let chat = nodes[0].clone();
    let took = paced(rate, total, async |n| {
        for _ in 0..n {
            chat.say(&speaker, "bench", stamped(origin)).unwrap();
        }
        while speaker.queued_messages() > 0 {
            speaker.next_message().await.unwrap();
        }
    })
    .await;
    let said = total;
    println!();
    println!(
        "| sustained: {said} messages in {:.2} s ({:.0}/s asked {rate}/s) | received | p50 ms | p99 ms | max ms | alerts | lost (bus) |",
        took.as_secs_f64(),
        said as f64 / took.as_secs_f64()
    );
    println!("|---|---|---|---|---|---|---|");
    let mut results = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (mut latencies, alerts) = listener.await.unwrap();
        let missed = nodes[i + 1].bus_stats().missed;
        let name = format!("member on node {}", i + 1);
        results.push(sustained_row(&name, &mut latencies, &alerts.to_string(), &missed.to_string()));
        assert_eq!(latencies.len() as u64 + missed, said, "delivered or reported, every one");
    }
    let sio_results = socketioxide_redis_rows::sustained(sio, rate, total, origin).await;
    for (i, mut latencies) in sio_results.into_iter().enumerate() {
        let name = format!("socketioxide-redis, socket on server {}", i + 1);
        sustained_row(&name, &mut latencies, "-", "not reported");
    }
    let mut floor = bare_sustained(&url, rate, total, origin).await;
    let (f50, f99) = sustained_row("floor: bare PUBLISH at the same rate", &mut floor, "-", "-");
    for (i, (p50, p99)) in results.into_iter().enumerate() {
        println!(
            "ratio to the floor, node {}: p50 {:.2}x, p99 {:.2}x",
            i + 1,
            ms(p50) / ms(f50),
            ms(p99) / ms(f99)
        );
    }
    drop(server);
}
