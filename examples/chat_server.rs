//! The smallest chat server: `Chat` with one room over `WebSocketChat`, served by
//! `tower_context::serve`. The WebSocket load run (`benches/ws.sh`) drives it.
//!
//! ```text
//! cargo run --release --example chat_server -- 127.0.0.1:4100
//! ```

use axum::Router;
use tower_context::ContextLayer;
use tower_context::chat::Chat;
use tower_context::chat::ws::WebSocketChat;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4100".into());
    let chat = Chat::new().with_rooms(["bench"]);
    let app = Router::new().route("/ws", WebSocketChat::new(chat).route()).layer(ContextLayer::new());
    // One worker thread: the clients get the other core.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("chat server {} listening on {addr}", std::process::id());
        // Up to 20,000 sockets: the idle-memory run opens 10,000 at once.
        tower_context::serve(listener, app).max_connections(20_000).await
    })
}
