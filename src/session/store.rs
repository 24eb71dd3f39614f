//! Where sessions are kept: the [`SessionStore`] trait, the [`Record`] a store keeps
//! per session, and [`MemoryStore`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::{SessionError, now_ms};

/// A boxed future, for the store's object-safe methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a store keeps for one session.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// The session's data, by key.
    pub data: Map<String, Value>,
    /// When the session was made, in milliseconds since the Unix epoch (its
    /// absolute expiry counts from here, and survives [`Session::cycle_id`]).
    ///
    /// [`Session::cycle_id`]: super::Session::cycle_id
    pub created_at: u64,
    /// When the store may forget it, in milliseconds since the Unix epoch (`None`:
    /// never on its own).
    pub expires_at: Option<u64>,
}

impl Record {
    /// A record of `data`, made at `created_at`, kept until `expires_at`.
    pub fn new(data: Map<String, Value>, created_at: u64, expires_at: Option<u64>) -> Record {
        Record { data, created_at, expires_at }
    }

    /// Whether it has expired by `now` (ms since the Unix epoch).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Where sessions are kept. A store is shared by every request (and, for Redis, by
/// every instance); each call is whole: a failed `save` leaves the session as it
/// was. Errors are [`SessionError::Store`] (a 503 on the error path).
pub trait SessionStore: Send + Sync + 'static {
    /// The record kept under `id`, unless there is none or it has expired.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, SessionError>>;

    /// Keeps `record` under `id`, replacing what was there, until its `expires_at`.
    fn save<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>>;

    /// Forgets `id` (nothing to forget is not an error).
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SessionError>>;

    /// Replaces the record kept under `id` only while one is kept there, and says
    /// whether one was: `Ok(false)`, nothing kept, when another request ended the
    /// session meanwhile (a logout), which a request that read it before must not
    /// undo. The default loads, then saves, which leaves a moment between the two:
    /// a store that can do both in one step (Redis: `SET … XX`) should.
    fn update<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<bool, SessionError>> {
        Box::pin(async move {
            let kept = self.load(id).await?;
            if kept.is_none_or(|kept| kept.is_expired(now_ms())) {
                return Ok(false);
            }
            self.save(id, record).await.map(|()| true)
        })
    }

    /// Pushes `id`'s expiry to `record.expires_at`, leaving its data alone (a session
    /// read but not changed, whose idle expiry is due), and only while it is kept (a
    /// session ended meanwhile stays ended). `record` holds the data as this request
    /// read it, so the default, which [`update`](Self::update)s with `record` whole,
    /// keeps the data; but it can undo a save another request made meanwhile: a
    /// store that can change an expiry alone should.
    fn touch<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move { self.update(id, record).await.map(drop) })
    }
}

/// Sessions in this process's memory (the default): gone at a restart and not
/// shared between instances. Expired sessions are swept as sessions are saved.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Record>>,
    saves: AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("sessions", &self.lock().len()).finish()
    }
}

/// Expired records are swept every this many saves (a pass over all of them).
const SWEEP_EVERY: u64 = 1024;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many sessions it holds (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // No user code runs under this lock.
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SessionStore for MemoryStore {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, SessionError>> {
        let now = now_ms();
        let found = self.lock().get(id).filter(|record| !record.is_expired(now)).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        let mut records = self.lock();
        if self.saves.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = now_ms();
            records.retain(|_, record| !record.is_expired(now));
        }
        match records.get_mut(id) {
            Some(kept) => kept.clone_from(record),
            None => {
                records.insert(id.to_owned(), record.clone());
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        self.lock().remove(id);
        Box::pin(std::future::ready(Ok(())))
    }

    fn update<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<bool, SessionError>> {
        let now = now_ms();
        let updated = match self.lock().get_mut(id).filter(|kept| !kept.is_expired(now)) {
            Some(kept) => {
                kept.clone_from(record);
                true
            }
            None => false,
        };
        Box::pin(std::future::ready(Ok(updated)))
    }

    fn touch<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        if let Some(kept) = self.lock().get_mut(id) {
            kept.expires_at = record.expires_at;
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn the_memory_store_sweeps_expired_sessions_and_never_returns_one() {
        let store = MemoryStore::new();
        let now = now_ms();
        block_on(async {
            store.save("live", &Record::new(Map::new(), now, Some(now + 60_000))).await.unwrap();
            let expired = Record::new(Map::new(), now - 10, Some(now - 1));
            store.save("gone", &expired).await.unwrap();
            assert_eq!(store.load("gone").await.unwrap(), None, "expired: not returned, even unswept");
            for n in 0..SWEEP_EVERY {
                store.save(&format!("old-{n}"), &expired).await.unwrap();
            }
            // A sweep ran on the way: of the 1,026 saved, the live one and the few
            // expired ones saved after the sweep are left.
            assert!(store.len() < 5, "{} left", store.len());
            assert!(store.load("live").await.unwrap().is_some());
            let touched = Record::new(Map::new(), now, Some(now + 120_000));
            store.touch("live", &touched).await.unwrap();
            assert_eq!(store.load("live").await.unwrap().unwrap().expires_at, Some(now + 120_000));
        });
    }
}
