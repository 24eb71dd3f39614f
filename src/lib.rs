//! A per-request [`Context`] for tower and axum: Toa's context and Actionhero's
//! connection, as tower layers.
//!
//! Add one layer and every request carries a `Context`:
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_context::{Context, ContextLayer, HttpError, throw};
//!
//! async fn hello(ctx: Context) -> Result<String, HttpError> {
//!     let Some(name) = ctx.uri().query() else {
//!         throw!(400, "say who you are: /?ann");
//!     };
//!     Ok(format!("hello {name}, this is request {}", ctx.id()))
//! }
//!
//! let app: Router = Router::new().route("/", get(hello)).layer(ContextLayer::new());
//! ```
//!
//! # A tour
//!
//! ## After-hooks and deferred edits
//!
//! [`Context::after`] adds a hook that runs once the handler has produced its
//! response, before the response leaves the layer; hooks run last-added-first, and
//! each can replace the response. [`Context::set_header`] and its siblings shape a
//! response you do not hold yet.
//!
//! ```
//! use http::HeaderValue;
//! use tower_context::{Context, HttpError};
//!
//! async fn handler(ctx: Context) -> &'static str {
//!     ctx.set_header(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
//!     ctx.after(|mut res| async move {
//!         res.headers_mut().insert("x-powered-by", HeaderValue::from_static("tower-context"));
//!         Ok::<_, HttpError>(res)
//!     })
//!     .expect("hooks have not started");
//!     "done"
//! }
//! ```
//!
//! ## Ending early
//!
//! [`Context::end`] answers now, from anywhere: the handler's future is dropped at
//! its next await point and the ended response goes out (after the hooks).
//!
//! ```
//! use tower_context::{Context, Ended};
//! use http::Response;
//!
//! async fn handler(ctx: Context) -> Ended {
//!     ctx.end(Response::new(String::from("short answer")))
//! }
//! ```
//!
//! ## Errors
//!
//! [`throw!`], [`ensure!`] and [`HttpError`] make errors that the layer renders one
//! way everywhere: JSON, problem+json or text by the request's `Accept` header, 5xx
//! details hidden, CORS and rate-limit headers kept. Inner `Err`s, panics, failing
//! hooks and [`Context::emit_error`] all take that path.
//!
//! ## Lifecycle events
//!
//! End (head sent), Finish (body done) and Close (client gone first) fire in that
//! order, exactly one of Finish and Close per request: [`Context::on_end`],
//! [`Context::on_finish`], [`Context::on_close`], [`Context::on_error`] and
//! [`Context::done`].
//!
//! ```
//! use tower_context::Context;
//!
//! async fn handler(ctx: Context) -> &'static str {
//!     ctx.on_close(|ctx| eprintln!("{}: client went away", ctx.id()));
//!     ctx.on_finish(|ctx| eprintln!("{}: sent", ctx.id()));
//!     "hello"
//! }
//! ```
//!
//! ## Tasks bound to the request
//!
//! [`Context::spawn`] runs a task that is aborted when the client goes away, and whose
//! error becomes the request's error while the response has not left.
//!
//! ## Cookies
//!
//! [`Context::cookies`] is a jar that parses the request's `Cookie` header only as
//! reads need it, and whose changes go out as `Set-Cookie` on every path. Signed and private cookies use [`Keys`], newest first:
//! a cookie verified by an older key is re-signed with the newest. With
//! [`SignedFormat::KEYGRIP`] signatures are byte-compatible with Koa, Toa and
//! Express. Without keys, reading or setting a signed cookie is an error.
//!
//! ```
//! use tower_context::{Context, ContextLayer, HttpError, Keys, SignedFormat, cookies::Cookie, throw};
//!
//! async fn login(ctx: Context) -> Result<&'static str, HttpError> {
//!     ctx.cookies().set_signed(Cookie::new("user", "ann"))?;
//!     Ok("welcome")
//! }
//!
//! async fn me(ctx: Context) -> Result<String, HttpError> {
//!     let Some(user) = ctx.cookies().get_signed("user")? else { throw!(401, "not logged in") };
//!     Ok(format!("you are {user}"))
//! }
//!
//! async fn logout(ctx: Context) -> Result<&'static str, HttpError> {
//!     ctx.cookies().remove_signed("user")?; // user and user.sig
//!     Ok("bye")
//! }
//!
//! let layer = ContextLayer::new()
//!     .keys(Keys::new(["this-years-secret", "last-years-secret"]))
//!     .signed_format(SignedFormat::KEYGRIP);
//! ```
//!
//! ## Streams
//!
//! [`Context::catch_stream`] makes a failing response stream visible (Error, then
//! Close, the stream dropped at once); [`ContextLayer::first_frame`] turns a stream
//! that fails before its first byte into a real error response. See [`stream`].
//!
//! ## Request and response helpers
//!
//! [`HeaderExt`] and [`RequestHeadExt`] give `Request`, `Parts`, `HeaderMap` and
//! `Context` Koa's request aliases (`accepts`, `is`, `fresh`, `ip`, `host`, `query`,
//! ...); [`response`] has `redirect`, `attachment`, `etag` and friends;
//! [`conditional`] answers fresh requests with 304. Which proxies are believed is the
//! layer's [`TrustProxy`].
//!
//! ## Connections
//!
//! [`serve`] is a hyper server that keeps one [`Connection`] per socket (Actionhero's
//! connection: id, counters, params, fingerprint, `destroy`), with a registry, a
//! per-connection request limit and guards against idle and slow clients.
//! `ctx.connection()` reaches it from any request.
//!
//! ## Chat: rooms over WebSocket and SSE
//!
//! [`chat::Chat`] is Actionhero's rooms for live connections: a registry, membership,
//! middleware, verbs and `say`, on one node or several through a [`chat::Bus`].
//! `chat::ws` (feature `ws`) speaks Actionhero's WebSocket protocol,
//! [`chat::sse`] streams rooms as server-sent events that resume after a reconnect.
//! Every push goes through the connection's bounded mailbox
//! ([`Connection::send_message`]).
//!
//! ## Files
//!
//! With the `files` feature, `ctx.send_file(path)` serves a file from the public
//! roots given to the layer (`ContextLayer::public_files`), searched in order, with
//! ranges, `If-Range`, conditional requests and Actionhero's `Cache-Control`; a
//! missing file is a rendered `404 that file is not found`. See the `files` module.
//!
//! ## Bypassing the context (Toa's `ctx.respond = false`)
//!
//! There is no flag to set: a handler that must write to the connection itself
//! (a WebSocket or another protocol upgrade) returns the `101 Switching Protocols`
//! response as usual and takes over the upgraded connection through hyper's
//! `hyper::upgrade::on`. The layer passes such a response through; the context then
//! completes when that response's (empty) body is done, not when the upgraded
//! connection closes.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | extractors (`Context`, `Cookies`, `Connection`) and `IntoResponse` for `HttpError` and `Ended`; needs only `axum-core` |
//! | `server` | yes | [`serve`]: the connection-tracking hyper server |
//! | `files` | no | `files`: `Context::send_file` and `PublicFiles`, Actionhero's `sendFile` on tower-http's file serving (several roots, ranges, `If-Range`, Actionhero's `Cache-Control`); the chat WebSocket's `file` event |
//! | `ws` | no | `chat::ws`: chat over WebSocket, Actionhero's protocol (brings the `axum` crate) |
//! | `redis` | no | `chat::RedisChat`: chat across instances on Redis (and `session::RedisStore` with `sessions`) |
//! | `sessions` | no | `ctx.session()`: per-client data kept across requests (`session` module) |
//! | `tower-sessions` | no | `session::TowerSessionsStore`: any tower-sessions store behind `ctx.session()` |
//! | `tls` | no | [`serve`] terminates TLS itself (rustls, ring provider): see `server::Serve::tls` |
//! | `connect-info` | no | `Connection` as axum's connect info, for `axum::serve` (brings the `axum` crate) |
//! | `tracing` | yes | logs errors that are not exposed or are 5xx (as Toa does) as `tracing` events; install a subscriber to see them |
//! | `test-util` | no | `live_contexts()`, a count of live contexts for leak tests (counts on every request: not for production) |
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Ground: these import nothing above them.
pub mod body;
pub mod error;
mod fresh;
mod negotiate;
pub mod proxy;

// The per-request record and what it is made of.
pub mod connection;
pub mod context;
pub mod cookies;

// Phase 2: the live connection. It uses the connection record, never the layer.
pub mod chat;
#[cfg(feature = "sessions")]
pub mod session;

// Helpers: they may use the context, never the layer.
pub mod conditional;
#[cfg(feature = "files")]
pub mod files;
pub mod request;
pub mod response;
pub mod stream;

// The layer, the server and the glue.
#[cfg(feature = "axum")]
mod axum;
pub mod layer;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "test-util")]
mod test_util;

pub use connection::{Connection, ConnectionKind};
pub use context::{Context, Ended, ErrorAction, HooksStarted, Outcome};
pub use cookies::{CookieError, Cookies, Keys, SignedFormat};
pub use error::{BoxError, ErrorFormat, HttpError};
#[cfg(feature = "files")]
pub use files::PublicFiles;
pub use layer::{ContextLayer, ContextService};
pub use proxy::TrustProxy;
pub use request::{HeaderExt, RequestHeadExt};
#[cfg(feature = "server")]
pub use server::{Connections, serve};
#[cfg(all(feature = "test-util", feature = "sessions"))]
pub use test_util::advance_sessions_clock;
#[cfg(feature = "test-util")]
pub use test_util::live_contexts;

pub use http;

#[doc(hidden)]
pub mod __private {
    pub use crate::error::macros::{__start, ApplyArg, ApplyError, Arg, ErrorArg};
    pub use serde_json::json;
}
