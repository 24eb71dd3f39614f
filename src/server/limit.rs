//! The per-connection limit of requests in flight (Actionhero's
//! `simultaneousActions`) and the guard that counts one request in flight.

use crate::connection::Connection;

/// Actionhero's default `simultaneousActions`.
pub(crate) const DEFAULT_SIMULTANEOUS: usize = 5;

/// What a refused request is told.
pub(crate) const TOO_MANY: &str = "you have too many pending requests";

/// One request in flight on a connection: counted in `pending` while it lives.
///
/// The server moves it into the response body, so a streaming response stays
/// pending until its last frame has gone (or the client went away).
pub(crate) struct Pending {
    conn: Connection,
}

impl Pending {
    /// Counts a new request in flight, unless `limit` requests already are.
    pub(crate) fn start(conn: &Connection, limit: Option<usize>) -> Option<Pending> {
        conn.start_request(limit).then(|| Pending { conn: conn.clone() })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.conn.end_request();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_refuses_over_the_limit() {
        let conn = Connection::new("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let a = Pending::start(&conn, Some(2)).unwrap();
        let b = Pending::start(&conn, Some(2)).unwrap();
        assert!(Pending::start(&conn, Some(2)).is_none());
        assert_eq!(conn.pending(), 2);
        assert_eq!(conn.total(), 2);
        drop(a);
        assert_eq!(conn.pending(), 1);
        let c = Pending::start(&conn, Some(2)).unwrap();
        let unlimited: Vec<_> = (0..10).filter_map(|_| Pending::start(&conn, None)).collect();
        assert_eq!(conn.pending(), 12);
        drop((b, c, unlimited));
        assert_eq!(conn.pending(), 0);
        assert_eq!(conn.total(), 13);
    }
}
