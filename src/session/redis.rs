//! [`RedisStore`]: sessions in Redis (features `sessions` and `redis`), shared by every
//! instance on the same Redis.

use redis::aio::ConnectionManager;

use super::SessionError;
use super::store::{BoxFuture, Record, SessionStore};

/// Sessions in Redis (7.0 or later), one string key per session (`PREFIX` + id,
/// JSON), expiring with the session. On the `redis` crate's connection manager, the one Redis client
/// of this crate (the chat's, if you like: pass a clone).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn store_error(err: redis::RedisError) -> SessionError {
    SessionError::Store(err.to_string())
}

impl RedisStore {
    /// A store on an existing connection manager, its keys under
    /// `tower-context:session:`.
    pub fn new(conn: ConnectionManager) -> RedisStore {
        RedisStore { conn, prefix: "tower-context:session:".into() }
    }

    /// Connects to the Redis at `url` (`redis://host:port/[db]`).
    pub async fn connect(url: &str) -> Result<RedisStore, SessionError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        Ok(RedisStore::new(ConnectionManager::new(client).await.map_err(store_error)?))
    }

    /// The prefix of the keys (apps sharing a Redis differ here).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisStore {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

fn encode(record: &Record) -> Vec<u8> {
    let value = serde_json::json!({
        "data": record.data,
        "createdAt": record.created_at,
        "expiresAt": record.expires_at,
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Option<Record> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let data = match value.get_mut("data")?.take() {
        serde_json::Value::Object(data) => data,
        _ => return None,
    };
    let created_at = value.get("createdAt")?.as_u64()?;
    let expires_at = value.get("expiresAt").and_then(serde_json::Value::as_u64);
    Some(Record::new(data, created_at, expires_at))
}

impl SessionStore for RedisStore {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, SessionError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let key = self.key(id);
            let (bytes, expires): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("PEXPIRETIME")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(store_error)?;
            // A record that is not ours (or garbled) is no session. Redis's expiry is
            // the one that counts (a touch moves it, not the JSON's field).
            Ok(bytes.as_deref().and_then(decode).map(|mut record| {
                record.expires_at = u64::try_from(expires).ok();
                record
            }))
        })
    }

    fn save<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(id)).arg(encode(record));
            if let Some(at) = record.expires_at {
                // Whole milliseconds since the epoch: Redis drops it then.
                cmd.arg("PXAT").arg(at.max(1));
            }
            cmd.query_async::<()>(&mut conn).await.map_err(store_error)
        })
    }

    /// `SET … XX`: in one step, only while the key is there.
    fn update<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<bool, SessionError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(id)).arg(encode(record)).arg("XX");
            if let Some(at) = record.expires_at {
                cmd.arg("PXAT").arg(at.max(1));
            }
            let set: Option<String> = cmd.query_async(&mut conn).await.map_err(store_error)?;
            Ok(set.is_some())
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            redis::cmd("DEL").arg(self.key(id)).query_async::<()>(&mut conn).await.map_err(store_error)
        })
    }

    /// The expiry alone (`PEXPIREAT`), so a save made meanwhile stands. The record's
    /// own `expiresAt` stays as saved; Redis's expiry is the one that counts.
    fn touch<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            let Some(at) = record.expires_at else { return Ok(()) };
            redis::cmd("PEXPIREAT")
                .arg(self.key(id))
                .arg(at.max(1))
                .query_async::<()>(&mut conn)
                .await
                .map_err(store_error)
        })
    }
}
