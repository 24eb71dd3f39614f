//! The crate's behaviour through its public API, driven in process with
//! `ServiceExt::oneshot` (tower-http's way): no sockets, so one binary runs all of it.
//! Anything about connections, streaming or disconnects is in `tests/net`.

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod cookies;
mod core;
mod errors;
mod helpers;
mod proxy;
mod races;
#[cfg(feature = "sessions")]
mod sessions;
