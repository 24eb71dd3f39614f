//! Connections: Actionhero's per-connection record (placeholder, being built).

use std::net::SocketAddr;

use http::Extensions;

/// The transport connection a request came on.
#[derive(Clone, Debug)]
pub struct Connection {
    remote_addr: SocketAddr,
}

impl Connection {
    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The connection a request carries, if a server or axum put one there.
    pub(crate) fn from_extensions(extensions: &Extensions) -> Option<Connection> {
        extensions.get::<Connection>().cloned()
    }
}
