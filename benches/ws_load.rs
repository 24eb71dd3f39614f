//! The WebSocket load run's client (see `benches/ws.sh`, which starts the server and
//! raises the file limit): memory per idle WebSocket connection on the server, and
//! room frames delivered per second across many connections, every loss accounted.
//!
//! ```text
//! bash benches/ws.sh                       # 10,000 idle; 1,000 members x 200 messages
//! IDLE=2000 MEMBERS=500 MESSAGES=100 bash benches/ws.sh
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The server's resident memory, from /proc.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn idle_memory(url: &str, pid: &str, idle: u64) {
    let before = rss_kib(pid);
    let mut sockets = Vec::with_capacity(idle as usize);
    for _ in 0..idle {
        let (mut socket, _) = connect_async(url).await.expect("connect");
        socket.next().await; // the welcome: the server has set the client up
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / idle as f64;
    println!("| idle WebSocket connections | {idle} |");
    println!("| server RSS before / after | {before} KiB / {after} KiB |");
    println!("| server memory per idle connection | {:.1} KiB (target <= 16 KiB) |", per / 1024.0);
    drop(sockets);
}

async fn fan_out(url: &str, members: u64, messages: u64) {
    let delivered = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut speaker = None;
    for i in 0..members {
        let (mut socket, _) = connect_async(url).await.expect("connect");
        socket.next().await;
        socket.send(Message::text(r#"{"event":"roomAdd","room":"bench","messageId":0}"#)).await.unwrap();
        socket.next().await; // joined
        if i == 0 {
            speaker = Some(socket);
            continue;
        }
        let (delivered, missed) = (delivered.clone(), missed.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                match value["context"].as_str() {
                    Some("user") => delivered.fetch_add(1, Ordering::Relaxed),
                    Some("alert") => {
                        missed.fetch_add(value["missed"].as_u64().unwrap_or(0), Ordering::Relaxed)
                    }
                    _ => 0,
                };
            }
        }));
    }
    let mut speaker = speaker.expect("at least one member");
    let receivers = members - 1;
    let expected = receivers * messages;
    let body = "x".repeat(100);
    let started = Instant::now();
    for n in 0..messages {
        let frame = format!(r#"{{"event":"say","room":"bench","message":"{body}","messageId":{n}}}"#);
        speaker.send(Message::text(frame)).await.unwrap();
    }
    // The speaker reads its own answers and messages, so its mailbox never fills.
    tokio::spawn(async move { while speaker.next().await.is_some() {} });
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.load(Ordering::Relaxed) + missed.load(Ordering::Relaxed) < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let (got, lost) = (delivered.load(Ordering::Relaxed), missed.load(Ordering::Relaxed));
    println!("| room members (receivers) | {receivers} |");
    println!("| messages said | {messages} |");
    println!("| frames delivered | {got} in {:.2} s |", took.as_secs_f64());
    println!("| frames per second delivered | {:.0} (target >= 100,000) |", got as f64 / took.as_secs_f64());
    println!("| dropped and reported (alert frames) | {lost} |");
    println!("| lost without a report | {} |", expected.saturating_sub(got + lost));
    for reader in readers {
        reader.abort();
    }
}

fn main() {
    let addr = std::env::var("SERVER").unwrap_or_else(|_| "127.0.0.1:4100".into());
    let pid = std::env::var("SERVER_PID").unwrap_or_default();
    let url = format!("ws://{addr}/ws");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        println!("| measure | value |\n|---|---|");
        let idle = env("IDLE", 10_000);
        if idle > 0 && !pid.is_empty() {
            idle_memory(&url, &pid, idle).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        fan_out(&url, env("MEMBERS", 1000), env("MESSAGES", 200)).await;
    });
}
