//! [`Connections`]: the registry of a server's open connections.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::connection::Connection;

/// The open connections of a [`serve`](crate::serve) server, by id (Actionhero's
/// `api.connections`).
///
/// A connection is added when its socket is accepted and removed when the socket has
/// closed, whatever closed it (the client, a timeout, [`destroy`](Self::destroy),
/// shutdown). A cheap handle: clones share one registry. Get the server's with
/// [`Serve::connections`](crate::server::Serve::connections), or make one first and give it
/// to the server with [`Serve::with_connections`](crate::server::Serve::with_connections),
/// so the app itself can hold it.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use tower_context::Connections;
///
/// # async fn run() -> std::io::Result<()> {
/// let connections = Connections::new();
/// let registry = connections.clone();
/// let app = Router::new().route(
///     "/connections",
///     get(move || async move { format!("{} open", registry.len()) }),
/// );
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// tower_context::serve(listener, app).with_connections(connections).await
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Connections {
    map: Arc<Mutex<HashMap<Box<str>, Connection>>>,
    counts: Arc<Counts>,
}

/// What the server did when every `max_connections` slot was taken.
#[derive(Default)]
struct Counts {
    evicted: AtomicU64,
    refused: AtomicU64,
}

impl Connections {
    /// An empty registry.
    pub fn new() -> Connections {
        Connections::default()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Box<str>, Connection>> {
        // No user code runs under this lock.
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// The open connections at this moment, in no particular order (a snapshot: the
    /// registry is not locked while you iterate).
    pub fn iter(&self) -> std::vec::IntoIter<Connection> {
        self.map().values().cloned().collect::<Vec<_>>().into_iter()
    }

    /// The open connection with this id.
    pub fn get(&self, id: &str) -> Option<Connection> {
        self.map().get(id).cloned()
    }

    /// Destroys the open connection with this id (see [`Connection::destroy`]):
    /// its requests in flight finish, then its socket closes and it leaves the
    /// registry. Returns whether such a connection was open.
    pub fn destroy(&self, id: &str) -> bool {
        let Some(conn) = self.get(id) else { return false };
        conn.destroy();
        true
    }

    /// How many idle connections were closed to make room for a new one when every
    /// [`max_connections`](crate::server::Serve::max_connections) slot was taken.
    pub fn evicted(&self) -> u64 {
        self.counts.evicted.load(Ordering::Relaxed)
    }

    /// How many new connections were answered `503 Service Unavailable` (with
    /// `Retry-After`) because every slot was taken by a connection with a request in
    /// flight.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// Closes the HTTP connection that has been idle longest (no request in flight),
    /// if there is one: room for a new client. Live chat connections are not taken.
    pub(crate) fn evict_idle(&self) -> bool {
        use crate::connection::ConnectionKind;
        let idle = self
            .iter()
            .filter(|c| {
                matches!(c.kind(), ConnectionKind::Unknown | ConnectionKind::Http1 | ConnectionKind::Http2)
            })
            .filter(|c| c.pending() == 0 && !c.is_destroyed())
            // An upgraded socket (a WebSocket) or one with an SSE stream open has no
            // request in flight, yet is in use.
            .filter(|c| !c.in_use())
            .max_by_key(Connection::idle_for);
        let Some(conn) = idle else { return false };
        conn.destroy();
        self.counts.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(crate) fn note_refused(&self) {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn insert(&self, conn: &Connection) {
        self.map().insert(Box::from(conn.id()), conn.clone());
    }

    pub(crate) fn remove(&self, conn: &Connection) {
        self.map().remove(conn.id());
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("len", &self.len())
            .field("evicted", &self.evicted())
            .field("refused", &self.refused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_destroy_remove() {
        let registry = Connections::new();
        let conn = Connection::new("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        registry.insert(&conn);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.get(conn.id()), Some(conn.clone()));
        assert_eq!(registry.iter().collect::<Vec<_>>(), vec![conn.clone()]);
        assert!(registry.destroy(conn.id()));
        assert!(conn.is_destroyed());
        // Still listed until its socket has closed.
        assert_eq!(registry.len(), 1);
        registry.remove(&conn);
        assert!(registry.is_empty());
        assert!(!registry.destroy(conn.id()));
    }
}
