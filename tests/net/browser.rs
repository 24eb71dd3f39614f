//! The chat page in a real browser: headless Chromium (Debian's `chromium`; `.ci/run`
//! installs it), driven over the DevTools protocol, opens two pages of the demo's
//! chat; both join `defaultRoom`, see each other, and what one says reaches the
//! other. Skipped with one line when no Chromium is installed, except under CI,
//! where a missing browser fails the run.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tower_context::ContextLayer;
use tower_context::chat::ws::WebSocketChat;
use tower_context::chat::{Chat, ChatMiddleware};

const PAGE: &str = include_str!("../../examples/chat.html");

async fn start() -> SocketAddr {
    let chat = Chat::new().with_rooms(["defaultRoom"]);
    chat.add_middleware(ChatMiddleware::new("announce").join(|chat, conn, room| {
        let _ = chat.announce(room, format!("{} joined", conn.id()).into());
        Ok(())
    }));
    let app = Router::new()
        .route("/chat", get(|| async { axum::response::Html(PAGE) }))
        .route("/ws", WebSocketChat::new(chat).route())
        .layer(ContextLayer::new());
    crate::serve_app(app).await
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists())
}

/// A DevTools connection to the browser: commands by id, page sessions flattened.
struct DevTools {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl DevTools {
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket.send(Frame::text(command.to_string())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Frame::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page; its session id.
    async fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": url })).await;
        let attached = self
            .call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }))
            .await;
        attached["sessionId"].as_str().unwrap().to_owned()
    }

    async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        self.call(Some(session), "Runtime.evaluate", params).await["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is true on the page.
    async fn wait_for(&mut self, session: &str, expression: &str) {
        for _ in 0..200 {
            if self.eval(session, expression).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let log = self.eval(session, "document.body.innerText").await;
        panic!("timed out waiting for `{expression}`; the page says: {log}");
    }
}

#[tokio::test]
async fn two_pages_join_and_chat_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI must have Chromium: .ci/run installs it");
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
        return;
    };
    let addr = start().await;
    let profile = std::env::temp_dir().join(format!("tower-context-chromium-{}", std::process::id()));
    let mut child = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Chromium prints where its DevTools listen.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited without DevTools");
    })
    .await
    .unwrap();
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (socket, _) = connect_async(endpoint).await.unwrap();
    let mut tools = DevTools { socket, next: 0 };

    let url = format!("http://{addr}/chat");
    let ann = tools.open(&url).await;
    tools.wait_for(&ann, "document.body.dataset.joined === 'yes'").await;
    let bob = tools.open(&url).await;
    tools.wait_for(&bob, "document.body.dataset.joined === 'yes'").await;
    // Each sees two members (ann's list refreshes on bob's join announcement).
    for page in [&ann, &bob] {
        tools.wait_for(page, "document.body.dataset.members === '2'").await;
    }
    let say = "document.getElementById('text').value = 'hello from bob'; \
               document.getElementById('say').requestSubmit(); true";
    assert_eq!(tools.eval(&bob, say).await, json!(true));
    tools.wait_for(&ann, "document.getElementById('log').innerText.includes('hello from bob')").await;
    tools.wait_for(&bob, "document.getElementById('log').innerText.includes('hello from bob (you)')").await;

    drop(tools);
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(profile);
}
