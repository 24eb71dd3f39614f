//! Real sockets: a real hyper server (ours, `tower_context::serve`, or axum's) on
//! 127.0.0.1 and a real client, for everything about connections, keep-alive,
//! streaming and clients that go away.

#[path = "../common/mod.rs"]
mod common;

#[cfg(feature = "ws")]
mod browser;
mod connection;
#[cfg(feature = "files")]
mod files;
mod lifecycle;
#[cfg(feature = "redis")]
mod redis;
mod server;
mod sse;
mod streaming;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "ws")]
mod ws;

/// Serves `app` with `tower_context::serve` on a free port of 127.0.0.1, in a task;
/// its address.
async fn serve_app(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { tower_context::serve(listener, app).await });
    addr
}
