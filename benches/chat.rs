//! Room fan-out in process (issue 16, point 8): one 100-byte message said in a room
//! of 1,000 members, until the last member's mailbox holds it, side by side with
//! the pattern of axum's chat example (one `tokio::sync::broadcast` channel per
//! room, each member a receiver) doing the same in the same run.
//!
//! ```text
//! cargo bench --bench chat                  # 2,000 messages, 1,000 members
//! MESSAGES=10000 MEMBERS=1000 cargo bench --bench chat
//! ```
//!
//! Reports, per message: allocations in all and per receiver (a counting global
//! allocator), the time until the last mailbox holds it (p50, p99) and deliveries per
//! second on one core; then the same until every member has taken it out (as a
//! transport does), beside the broadcast channel timed the same way.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tower_context::chat::Chat;
use tower_context::connection::{Connection, ConnectionKind, MailboxConfig};

mod counting;

use counting::ALLOCATIONS;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

struct Row {
    name: &'static str,
    allocations: f64,
    times: Vec<Duration>,
    members: usize,
}

impl Row {
    fn print(&mut self) {
        self.times.sort();
        let total: Duration = self.times.iter().sum();
        let deliveries = (self.times.len() * self.members) as f64 / total.as_secs_f64();
        println!(
            "| {} | {:.1} | {:.4} | {:.3} | {:.3} | {:.2} M |",
            self.name,
            self.allocations,
            self.allocations / self.members as f64,
            percentile(&self.times, 0.5).as_secs_f64() * 1e3,
            percentile(&self.times, 0.99).as_secs_f64() * 1e3,
            deliveries / 1e6,
        );
    }
}

/// A room of `members` test connections on one node.
fn room(members: usize, rt: &tokio::runtime::Runtime) -> (Chat, Vec<Connection>) {
    let chat = Chat::new().with_rooms(["room"]);
    let addr = "127.0.0.1:1".parse().unwrap();
    let config = MailboxConfig { capacity: 64, ..MailboxConfig::default() };
    let conns: Vec<Connection> =
        (0..members).map(|_| Connection::live(ConnectionKind::Test, addr, addr, config)).collect();
    rt.block_on(async {
        for conn in &conns {
            chat.register(conn).await.unwrap();
            chat.join(conn.id(), "room").await.unwrap();
        }
    });
    (chat, conns)
}

/// `say` timed until the last mailbox holds the message (`taken`: and until every
/// member has taken it out, as a transport does).
fn ours(messages: usize, members: usize, taken: bool, rt: &tokio::runtime::Runtime) -> Row {
    let (chat, conns) = room(members, rt);
    let text = "x".repeat(100);
    let mut times = Vec::with_capacity(messages);
    let mut allocations = 0;
    for _ in 0..messages {
        let message = json!(text.as_str());
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = Instant::now();
        chat.say(&conns[0], "room", message).unwrap();
        if !taken {
            times.push(started.elapsed());
            allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        }
        rt.block_on(async {
            for conn in &conns {
                conn.next_message().await;
            }
        });
        if taken {
            times.push(started.elapsed());
            allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        }
    }
    let name = if taken {
        "tower-context `Chat::say`, until every member has taken it"
    } else {
        "tower-context `Chat::say`, until the last mailbox holds it"
    };
    Row { name, allocations: allocations as f64 / messages as f64, times, members }
}

/// The axum chat example's pattern: the message encoded once and sent on the room's
/// broadcast channel, timed until every receiver has taken it.
fn broadcast_channel(messages: usize, members: usize) -> Row {
    let (tx, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(64);
    let mut receivers: Vec<_> = (0..members).map(|_| tx.subscribe()).collect();
    let text = "x".repeat(100);
    let mut times = Vec::with_capacity(messages);
    let mut allocations = 0;
    for _ in 0..messages {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = Instant::now();
        let encoded =
            serde_json::to_vec(&json!({"message": text, "room": "room", "context": "user"})).unwrap();
        let _ = tx.send(bytes::Bytes::from(encoded));
        for rx in &mut receivers {
            let _ = rx.try_recv();
        }
        times.push(started.elapsed());
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
    }
    Row {
        name: "axum chat example's pattern (`broadcast` channel per room), until every receiver has taken it",
        allocations: allocations as f64 / messages as f64,
        times,
        members,
    }
}

/// socketioxide's in-process rooms: 1,000 sockets (its test harness's dummy
/// sockets, whose packets land in a channel each) joined to a room, the message
/// emitted to the room, timed until every socket has it queued; then each takes it.
fn socketioxide(messages: usize, members: usize, rt: &tokio::runtime::Runtime) -> Row {
    use socketioxide::SocketIo;
    use socketioxide::extract::SocketRef;

    let (_svc, io) = SocketIo::new_svc();
    io.ns("/", async |socket: SocketRef| socket.join("room"));
    let mut sockets = rt.block_on(async {
        let mut sockets = Vec::with_capacity(members);
        for _ in 0..members {
            sockets.push(io.new_dummy_sock("/", ()).await);
        }
        // Each socket's connect handler (the join) runs before the first emit; its
        // connect packet is taken out.
        while io.to("room").sockets().len() < members {
            tokio::task::yield_now().await;
        }
        for (_, rx) in &mut sockets {
            rx.recv().await;
        }
        sockets
    });
    let text = "x".repeat(100);
    let mut times = Vec::with_capacity(messages);
    let mut allocations = 0;
    for _ in 0..messages {
        let payload = json!({"message": text.as_str(), "room": "room", "context": "user"});
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = Instant::now();
        rt.block_on(io.to("room").emit("message", &payload)).unwrap();
        times.push(started.elapsed());
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        // The sockets' side, untimed: each takes its packet out.
        rt.block_on(async {
            for (_, rx) in &mut sockets {
                rx.recv().await;
            }
        });
    }
    Row {
        name: "socketioxide in-process rooms (`io.to(room).emit`), until every socket's channel holds it",
        allocations: allocations as f64 / messages as f64,
        times,
        members,
    }
}

fn main() {
    let messages = env("MESSAGES", 2000);
    let members = env("MEMBERS", 1000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("{messages} messages of 100 bytes to a room of {members} members, one core\n");
    println!("| fan-out | allocations per message | per receiver | p50 ms | p99 ms | deliveries/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    ours(messages, members, false, &rt).print();
    ours(messages, members, true, &rt).print();
    broadcast_channel(messages, members).print();
    socketioxide(messages, members, &rt).print();
}
