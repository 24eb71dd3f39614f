//! [`TowerSessionsStore`]: any tower-sessions store (tower-sessions-core's
//! `SessionStore`) behind `ctx.session()` (feature `tower-sessions`).

use std::fmt;

use cookie::time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record as TowerRecord};
use tower_sessions_core::session_store::SessionStore as TowerStore;

use super::store::{BoxFuture, Record, SessionStore};
use super::{SessionError, now_ms};

/// The key under which the session's creation time rides in the tower-sessions
/// record's data (its record has no field for it; the absolute expiry needs it).
const CREATED: &str = "__tower_context_created_at";

/// Any tower-sessions store (`MemoryStore`, `RedisStore`, `PostgresStore`, ...)
/// as this crate's [`SessionStore`]. Ids are the same 128 bits in both (ours are
/// hex in the cookie, theirs an `i128`).
///
/// ```
/// use tower_context::session::{Sessions, TowerSessionsStore};
///
/// let sessions = Sessions::new(TowerSessionsStore::new(tower_sessions::MemoryStore::default()));
/// ```
pub struct TowerSessionsStore<S> {
    store: S,
}

impl<S: fmt::Debug> fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TowerSessionsStore").field(&self.store).finish()
    }
}

impl<S> TowerSessionsStore<S> {
    /// Wraps a tower-sessions store.
    pub fn new(store: S) -> TowerSessionsStore<S> {
        TowerSessionsStore { store }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.store
    }
}

fn id_of(id: &str) -> Result<Id, SessionError> {
    u128::from_str_radix(id, 16)
        .map(|bits| Id(i128::from_ne_bytes(bits.to_ne_bytes())))
        .map_err(|_| SessionError::Data(format!("not a session id: {id}")))
}

fn store_error(err: tower_sessions_core::session_store::Error) -> SessionError {
    SessionError::Store(err.to_string())
}

/// No expiry is the latest date (the end of 9999): far enough ahead for any store.
fn date_of(ms: Option<u64>) -> OffsetDateTime {
    let ms = ms.unwrap_or(super::LATEST_MS).min(super::LATEST_MS);
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl<S: TowerStore> SessionStore for TowerSessionsStore<S> {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, SessionError>> {
        Box::pin(async move {
            let Some(record) = self.store.load(&id_of(id)?).await.map_err(store_error)? else {
                return Ok(None);
            };
            let expires_at =
                u64::try_from(record.expiry_date.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            let mut data: serde_json::Map<String, serde_json::Value> = record.data.into_iter().collect();
            let created_at = data.remove(CREATED).and_then(|v| v.as_u64()).unwrap_or(expires_at);
            let record = Record::new(data, created_at, Some(expires_at));
            Ok((!record.is_expired(now_ms())).then_some(record))
        })
    }

    fn save<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let mut data: std::collections::HashMap<String, serde_json::Value> =
                record.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            data.insert(CREATED.to_owned(), record.created_at.into());
            let record = TowerRecord { id: id_of(id)?, data, expiry_date: date_of(record.expires_at) };
            self.store.save(&record).await.map_err(store_error)
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move { self.store.delete(&id_of(id)?).await.map_err(store_error) })
    }
}
