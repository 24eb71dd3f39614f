//! [`serve`]: a hyper-util server (HTTP/1.1 and HTTP/2) that keeps one
//! [`Connection`](crate::Connection) per socket, a registry of open ones
//! ([`Connections`]), a per-connection request limit, client fingerprints, and
//! guards against idle and slow clients (feature `server`, on by default).
//!
//! Every setting and its default is listed under [`serve`]: the request limit,
//! `max_connections`, the idle, header-read and write timeouts, and the shutdown
//! timeout, which bounds how long [graceful shutdown](Serve::with_graceful_shutdown)
//! waits before it drops the connections still open (chat WebSockets and SSE
//! streams are ended first, with a goodbye).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_context::{Context, ContextLayer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new()
//!     .route("/", get(|ctx: Context| async move {
//!         let conn = ctx.connection().expect("served by tower_context::serve");
//!         format!("request {} on {}", conn.total(), conn.id())
//!     }))
//!     .layer(ContextLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tower_context::serve(listener, app).await
//! # }
//! ```

mod fingerprint;
mod limit;
mod registry;
mod serve;
mod stall;

pub use registry::Connections;
pub use serve::{Serve, serve};

/// The rustls that [`Serve::tls`] takes its configuration from (feature `tls`).
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
