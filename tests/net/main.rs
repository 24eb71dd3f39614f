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
