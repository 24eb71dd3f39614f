//! Sessions (feature `sessions`): per-client data kept across requests, WebSocket
//! connections and (with a shared store) instances. Actionhero's
//! `connection.session`, koa-session's `ctx.session`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_context::session::Sessions;
//! use tower_context::{Context, ContextLayer, HttpError, Keys};
//!
//! async fn visits(ctx: Context) -> Result<String, HttpError> {
//!     let session = ctx.session();
//!     let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", visits).await?;
//!     Ok(format!("visit number {visits}\n"))
//! }
//!
//! let app: Router = Router::new().route("/visits", get(visits)).layer(
//!     ContextLayer::new()
//!         .keys(Keys::new(["a long random secret"]))
//!         .sessions(Sessions::memory()),
//! );
//! ```
//!
//! How it behaves:
//! - **Lazy.** A request that never calls a session method that needs the data
//!   makes no store round trip, sends no cookie and adds no after-hook.
//! - **Saved once, when changed.** After the handler, before the response leaves
//!   (an after-hook, added when the session is first used), the session is saved if
//!   its data changed, its id was cycled or it was flushed (a session first used
//!   inside an after-hook, when no more hooks can be added, is saved by calling
//!   [`Session::save`]); a store that fails turns the response into a 503 `session store
//!   unavailable`, and neither the cookie nor anything else is sent half-done. With
//!   an idle expiry, a session read but not changed has its expiry pushed back
//!   ([`SessionStore::touch`]: the expiry alone where the store can, else the
//!   record as this request read it) once a quarter of the idle time has gone by,
//!   not on every request.
//! - **The id.** A random 128-bit value (32 hex digits) in the `sessionID` cookie,
//!   signed with the layer's [`Keys`](crate::Keys) in Keygrip's format
//!   (`sessionID` and `sessionID.sig`), whatever the layer's
//!   [`SignedFormat`](crate::SignedFormat): the value stays the id, so
//!   [`serve`](crate::serve)'s fingerprint (Actionhero's, read from the same cookie)
//!   is the session id, one per client. An id the client made up, a signed id the
//!   store does not know (expired, flushed) and a tampered cookie all read as no
//!   session: the client gets a fresh id when something is saved, never its own (no
//!   session fixation). Call [`Session::cycle_id`] after a login.
//! - **Two requests of one client at once** each load the session, change their
//!   copy and save it whole: the one saved last wins, and the other's changes are
//!   lost. Keep what must add up from concurrent requests (counters, carts edited in
//!   two tabs) in your database, not in the session. But an ended session stays
//!   ended: a request that read it before another ended it (a logout, or a login
//!   that cycled the id) only updates the store ([`SessionStore::update`]), finds
//!   nothing, and drops its changes; it never makes the session again, and leaves
//!   the cookie to what the other request sent.
//! - **A request that fails** (the handler's `Err`, a panic, a failing hook) does
//!   not save: the error path runs no after-hooks. If a change must stay even then
//!   (a count of failed logins), call [`Session::save`] before returning the error.
//!   A flushed or cycled id is deleted only after the new record is saved, and the
//!   cookie set only after both, so a logout or a login the store cannot record
//!   fails whole (503), leaving the old id as it was.
//! - **Over WebSocket**, [`WebSocketChat`](crate::chat::ws::WebSocketChat) keeps the
//!   upgrade request's session with the connection ([`Connection::session`]); there
//!   is no response to save on, so call [`Session::save`] after changing it. A
//!   session the client has no cookie for yet (new, or cycled) cannot be saved there
//!   ([`SessionError::NoResponse`]): start it over HTTP.

#[cfg(feature = "redis")]
mod redis;
mod store;
#[cfg(feature = "tower-sessions")]
mod tower;

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use store::{BoxFuture, MemoryStore, Record, SessionStore};
#[cfg(feature = "tower-sessions")]
pub use tower::TowerSessionsStore;

use crate::connection::Connection;
use crate::context::{Context, WeakContext};
use crate::cookies::{Cookie, CookieError, Cookies, SameSite};
use crate::error::HttpError;

/// Milliseconds since the Unix epoch (under `test-util`, plus what this thread's
/// tests moved the clock by: `advance_sessions_clock`).
pub(crate) fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    #[cfg(feature = "test-util")]
    let now = now.saturating_add(crate::test_util::sessions_clock_ahead_ms());
    now
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// When a session expires: after a time without use (idle), a time after it was
/// made (absolute), or whichever comes first. The default is one day idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    idle: Option<Duration>,
    absolute: Option<Duration>,
}

/// The end of the year 9999, in milliseconds since the epoch: the latest expiry a
/// store is given (a date type's range, and far inside Redis's).
pub(crate) const LATEST_MS: u64 = 253_402_300_799_000;

impl Default for Expiry {
    fn default() -> Self {
        Expiry::idle(Duration::from_secs(24 * 3600))
    }
}

impl Expiry {
    /// Expires after `idle` without being saved (reading it pushes the expiry back,
    /// at most once per quarter of `idle`).
    pub const fn idle(idle: Duration) -> Expiry {
        Expiry { idle: Some(idle), absolute: None }
    }

    /// Expires `absolute` after it was made, used or not (a cycled id keeps the
    /// time); the cookie gets a matching `Max-Age`.
    pub const fn absolute(absolute: Duration) -> Expiry {
        Expiry { idle: None, absolute: Some(absolute) }
    }

    /// Both: whichever comes first.
    pub const fn idle_and_absolute(idle: Duration, absolute: Duration) -> Expiry {
        Expiry { idle: Some(idle), absolute: Some(absolute) }
    }

    /// Never on its own (until flushed; a store may still evict).
    pub const fn never() -> Expiry {
        Expiry { idle: None, absolute: None }
    }

    /// When a session made at `created_at` and saved `now` expires: at the latest
    /// `LATEST_MS`, so an expiry meant as "forever" (`Duration::MAX`) is still one
    /// every store can keep.
    fn expires_at(&self, now: u64, created_at: u64) -> Option<u64> {
        let idle = self.idle.map(|idle| now.saturating_add(ms(idle)));
        let absolute = self.absolute.map(|absolute| created_at.saturating_add(ms(absolute)));
        let at = match (idle, absolute) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        at.map(|at| at.min(LATEST_MS))
    }
}

/// Sessions for a [`ContextLayer`](crate::ContextLayer): the store, the expiry and
/// the cookie's name. Given to [`ContextLayer::sessions`](crate::ContextLayer::sessions).
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    expiry: Expiry,
    cookie: Arc<str>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions").field("expiry", &self.expiry).field("cookie", &self.cookie).finish()
    }
}

impl Sessions {
    /// Sessions in `store`, expiring after a day idle, in the `sessionID` cookie.
    pub fn new(store: impl SessionStore) -> Sessions {
        Sessions::shared(Arc::new(store))
    }

    /// Sessions in a store shared with other code (to look into it, say).
    pub fn shared(store: Arc<dyn SessionStore>) -> Sessions {
        Sessions { store, expiry: Expiry::default(), cookie: Arc::from("sessionID") }
    }

    /// Sessions in this process's memory ([`MemoryStore`]).
    pub fn memory() -> Sessions {
        Sessions::new(MemoryStore::new())
    }

    /// When sessions expire.
    #[must_use]
    pub fn expiry(mut self, expiry: Expiry) -> Sessions {
        self.expiry = expiry;
        self
    }

    /// The cookie the id is kept in (default `sessionID`, the fingerprint cookie of
    /// [`serve`](crate::serve), so the fingerprint is the session id).
    #[must_use]
    pub fn cookie_name(mut self, name: impl Into<String>) -> Sessions {
        self.cookie = Arc::from(name.into());
        self
    }
}

/// Why a session could not be read or saved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The store could not be reached or refused: `session store unavailable
    /// (REASON)`. A 503 on the error path (the reason kept from the client).
    Store(String),
    /// A value could not be turned into JSON or back into the type asked for.
    Data(String),
    /// The layer has no [`Keys`](crate::Keys) to sign the id with.
    NoKeys,
    /// The layer has no [`Sessions`]: call
    /// [`ContextLayer::sessions`](crate::ContextLayer::sessions).
    NotConfigured,
    /// A session held by a connection (a WebSocket's) that its client has no cookie
    /// for yet (a new one, or a cycled id): there is no response left to send the
    /// cookie on. Start the session (or cycle it) over HTTP.
    NoResponse,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Store(reason) => write!(f, "session store unavailable ({reason})"),
            SessionError::Data(reason) => write!(f, "session data could not be converted: {reason}"),
            SessionError::NoKeys => f.write_str("sessions need the layer's keys (ContextLayer::keys)"),
            SessionError::NotConfigured => {
                f.write_str("sessions are not configured (ContextLayer::sessions)")
            }
            SessionError::NoResponse => {
                f.write_str("this session's new id has no response to go out on (start it over HTTP)")
            }
        }
    }
}

impl std::error::Error for SessionError {}

/// A store that cannot be reached is a 503 `session store unavailable` (the reason
/// only in the logs); anything else is the app's bug, a 500.
impl From<SessionError> for HttpError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Store(_) => {
                HttpError::new(503).message("session store unavailable").expose(true).with_source(err)
            }
            _ => HttpError::new(500).message(err.to_string()).with_source(err),
        }
    }
}

/// A client's session: see the [module docs](self). A cheap handle (one `Arc`);
/// every clone is the same session.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

struct Inner {
    sessions: Option<Sessions>,
    cookies: Cookies,
    /// The request, to hang the save on once the session is first used (weak: the
    /// session lives in the request's state).
    ctx: WeakContext,
    state: tokio::sync::Mutex<State>,
    /// Kept by a connection whose response has gone: a new id cannot reach the
    /// client any more.
    detached: std::sync::atomic::AtomicBool,
}

/// Puts a session's data back from the record it was lent to, when the save is done
/// or its future dropped.
struct Restore<'a> {
    data: &'a mut Map<String, Value>,
    record: Record,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.data = std::mem::take(&mut self.record.data);
    }
}

#[derive(Default)]
struct State {
    loaded: bool,
    /// The session's id, once it has one (a fresh session gets one when saved).
    id: Option<String>,
    /// Whether the store holds this session under `id`.
    stored: bool,
    /// An id whose record is to be deleted at the next save (cycled or flushed).
    stale: Option<String>,
    data: Map<String, Value>,
    created_at: u64,
    expires_at: Option<u64>,
    changed: bool,
    /// Flushed with a cookie out there: remove it unless a new session is saved.
    remove_cookie: bool,
}

impl State {
    /// Forgets the session this request had (flushed, or ended by another request):
    /// a value inserted afterwards starts a new session, with a new id, made `now`.
    fn start_afresh(&mut self, now: u64) {
        self.id = None;
        self.stored = false;
        self.data.clear();
        self.created_at = now;
        self.expires_at = None;
        self.changed = false;
    }
}

/// A new session id: 128 bits from the operating system's random source, as 32 hex
/// digits. Its failure (practically unheard of) is an error, never a weaker id.
fn new_id() -> Result<String, SessionError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| SessionError::Data(format!("no random id: {err}")))?;
    let mut id = String::with_capacity(32);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    Ok(id)
}

/// Whether a cookie's (signed) value has the shape of an id this crate makes.
fn well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn data_error(err: serde_json::Error) -> SessionError {
    SessionError::Data(err.to_string())
}

impl Session {
    fn new(sessions: Option<Sessions>, ctx: &Context) -> Session {
        Session {
            inner: Arc::new(Inner {
                sessions,
                cookies: ctx.cookies().clone(),
                ctx: ctx.downgrade(),
                state: tokio::sync::Mutex::new(State::default()),
                detached: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    fn sessions(&self) -> Result<&Sessions, SessionError> {
        self.inner.sessions.as_ref().ok_or(SessionError::NotConfigured)
    }

    /// Locks the state, loading the session first if this is the first use.
    async fn loaded(&self) -> Result<tokio::sync::MutexGuard<'_, State>, SessionError> {
        let sessions = self.sessions()?;
        let mut state = self.inner.state.lock().await;
        if state.loaded {
            return Ok(state);
        }
        let now = now_ms();
        let presented = match self.inner.cookies.get_keygrip(&sessions.cookie) {
            Ok(id) => id.filter(|(id, _)| well_formed(id)),
            Err(CookieError::NoKeys) => return Err(SessionError::NoKeys),
            // A cookie we cannot read is no session.
            Err(_) => None,
        };
        if let Some((id, rotated)) = presented
            && let Some(record) = sessions.store.load(&id).await?
            && !record.is_expired(now)
        {
            if rotated {
                // Signed with an older key: `sessionID.sig` is being sent again with the
                // default attributes. Both go again with the session's own (a lasting
                // cookie must not get a signature that ends with the browser session).
                let cookie = session_cookie(sessions, id.clone(), record.created_at, now);
                let _ = self.inner.cookies.set_keygrip(cookie);
            }
            state.id = Some(id);
            state.stored = true;
            state.data = record.data;
            state.created_at = record.created_at;
            state.expires_at = record.expires_at;
        } else {
            state.created_at = now;
        }
        state.loaded = true;
        // Saved after the response, now that there may be something to save. From a
        // hook (hooks have started), or once the request is gone, the caller saves.
        if let Some(ctx) = self.inner.ctx.upgrade() {
            let saving = self.clone();
            let _ = ctx.after(move |response| async move {
                saving.save().await?;
                Ok(response)
            });
        }
        Ok(state)
    }

    /// The value under `key`, as a `T`: `Ok(None)` when there is none. Error: it does
    /// not convert to a `T`; the store's, on first use.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded().await?;
        match state.data.get(key) {
            Some(value) => T::deserialize(value).map(Some).map_err(data_error),
            None => Ok(None),
        }
    }

    /// Puts `value` under `key` (saved after the response: only if it differs from
    /// what was there).
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(data_error)?;
        let mut state = self.loaded().await?;
        match state.data.get_mut(key) {
            Some(slot) if *slot == value => return Ok(()),
            Some(slot) => *slot = value,
            None => {
                state.data.insert(key.to_owned(), value);
            }
        }
        state.changed = true;
        Ok(())
    }

    /// Takes the value under `key` out, as a `T`.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.loaded().await?;
        match state.data.remove(key) {
            Some(value) => {
                state.changed = true;
                T::deserialize(value).map(Some).map_err(data_error)
            }
            None => Ok(None),
        }
    }

    /// Removes every value; the session (and its id) stays.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        if !state.data.is_empty() {
            state.data.clear();
            state.changed = true;
        }
        Ok(())
    }

    /// Gives the session a new id, keeping its data (call it after a login, so an id
    /// known before cannot ride on the new rights); the old id is forgotten.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        let new = new_id()?;
        if std::mem::take(&mut state.stored) {
            state.stale = state.id.take();
        }
        state.id = Some(new);
        state.changed = true;
        Ok(())
    }

    /// Ends the session: its data and its record go, and the cookie is removed
    /// (a value inserted afterwards starts a new session with a new id).
    pub async fn flush(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        if std::mem::take(&mut state.stored) {
            state.stale = state.id.take();
            state.remove_cookie = true;
        }
        state.start_afresh(now_ms());
        Ok(())
    }

    /// The session's id, if it has one yet (a fresh session gets one when first
    /// saved).
    pub async fn id(&self) -> Result<Option<String>, SessionError> {
        Ok(self.loaded().await?.id.clone())
    }

    /// Every key, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let mut keys: Vec<String> = self.loaded().await?.data.keys().cloned().collect();
        keys.sort();
        Ok(keys)
    }

    /// Saves the session now if it changed (or its idle expiry is due to be pushed
    /// back): what the layer does after each response, and what code holding a
    /// session without a response (a WebSocket's) calls itself. A failed save leaves
    /// it unsaved and sends no cookie.
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut state = self.inner.state.lock().await;
        if !state.loaded {
            // Never used (or never configured): nothing to save.
            return Ok(());
        }
        let sessions = self.sessions()?;
        let now = now_ms();
        let st = &mut *state;
        let expires_at = sessions.expiry.expires_at(now, st.created_at);
        // Read, not changed: push the idle expiry back once it has moved by a quarter
        // of the idle time (not when the absolute expiry holds it where it is).
        let touch = !st.changed
            && st.stored
            && sessions.expiry.idle.is_some_and(|idle| {
                expires_at.unwrap_or(u64::MAX)
                    > st.expires_at.unwrap_or(u64::MAX).saturating_add(ms(idle) / 4)
            });
        if self.inner.detached.load(std::sync::atomic::Ordering::Relaxed) && st.changed && !st.stored {
            // A connection has no response left to carry a new cookie.
            return Err(SessionError::NoResponse);
        }
        if st.changed || touch {
            if st.id.is_none() {
                st.id = Some(new_id()?);
            }
            let id = st.id.as_deref().unwrap_or_default();
            // The data goes back into the session even if this future is dropped
            // while the store works. A touch carries it too: a store that cannot
            // change an expiry alone (the trait's default) saves the record whole,
            // and must not save it empty.
            let record = Record::new(std::mem::take(&mut st.data), st.created_at, expires_at);
            let kept = Restore { data: &mut st.data, record };
            // A session read from the store is only updated, never made again: if
            // another request ended it meanwhile (a logout), this one must not bring
            // it back.
            let still_kept = match (st.changed, st.stored) {
                (true, true) => sessions.store.update(id, &kept.record).await?,
                (true, false) => sessions.store.save(id, &kept.record).await.map(|()| true)?,
                (false, _) => sessions.store.touch(id, &kept.record).await.map(|()| true)?,
            };
            drop(kept);
            if still_kept {
                st.expires_at = expires_at;
            } else {
                // Ended by another request (a logout, or a login that cycled the
                // id): so it is for this one too. Its cookie is left alone: the
                // request that ended the session has sent what the client keeps
                // now (a removal, or the new id).
                st.start_afresh(now);
            }
        }
        // A cycled or flushed id's record goes only once the new one is saved, and the
        // cookie is set only after both: a login or logout the store cannot record
        // fails whole, the old id still working (a new record saved before a failed
        // delete is never sent, and expires unused).
        if let Some(stale) = &st.stale {
            sessions.store.delete(stale).await?;
            st.stale = None;
        }
        if st.changed {
            if !st.stored {
                let id = st.id.clone().unwrap_or_default();
                let cookie = session_cookie(sessions, id, st.created_at, now);
                self.inner.cookies.set_keygrip(cookie).map_err(|err| match err {
                    CookieError::NoKeys => SessionError::NoKeys,
                    other => SessionError::Data(other.to_string()),
                })?;
            }
            st.stored = true;
            st.changed = false;
            st.remove_cookie = false;
        }
        if st.remove_cookie {
            let _ = self.inner.cookies.remove_signed(sessions.cookie.to_string());
            st.remove_cookie = false;
        }
        Ok(())
    }
}

/// The session's cookie: `sessionID` for the whole site, out of scripts' reach, and
/// with an absolute expiry, lasting as long as the session has left.
fn session_cookie(sessions: &Sessions, id: String, created_at: u64, now: u64) -> Cookie<'static> {
    let mut cookie = Cookie::build((sessions.cookie.to_string(), id))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .build();
    if let Some(absolute) = sessions.expiry.absolute {
        let left = created_at.saturating_add(ms(absolute)).saturating_sub(now);
        // Whole seconds, rounded up: a browser drops a `Max-Age=0` cookie at once.
        let seconds = i64::try_from(left.div_ceil(1000)).unwrap_or(i64::MAX);
        cookie.set_max_age(cookie::time::Duration::seconds(seconds));
    }
    cookie
}

impl Context {
    /// This request's session (feature `sessions`): see the [`session`](crate::session)
    /// module. Nothing is loaded until a method needs the data; it is saved after the
    /// response if it changed.
    ///
    /// Without [`ContextLayer::sessions`](crate::ContextLayer::sessions), its methods
    /// fail with [`SessionError::NotConfigured`].
    pub fn session(&self) -> Session {
        if let Some(session) = self.state().get::<Session>() {
            return session;
        }
        let sessions = self.config().feature::<Sessions>().cloned();
        let session = Session::new(sessions, self);
        self.state().insert(session.clone());
        session
    }
}

impl Connection {
    /// The session of the request that opened this connection (a WebSocket's
    /// upgrade, through [`WebSocketChat`](crate::chat::ws::WebSocketChat)): the same
    /// session that client's HTTP requests see. Changes made here are saved by
    /// [`Session::save`].
    pub fn session(&self) -> Option<Session> {
        self.kept_session()?.clone().downcast::<Session>().ok().map(|session| (*session).clone())
    }

    /// Keeps the session of `ctx` with this connection, if the layer has sessions
    /// (what `WebSocketChat` does at the upgrade).
    pub fn keep_session_of(&self, ctx: &Context) {
        if ctx.config().feature::<Sessions>().is_some() {
            let session = ctx.session();
            session.inner.detached.store(true, std::sync::atomic::Ordering::Relaxed);
            self.keep_session(Arc::new(session));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_meant_as_forever_is_the_latest_date_a_store_keeps() {
        let now = now_ms();
        assert_eq!(Expiry::idle(Duration::MAX).expires_at(now, now), Some(LATEST_MS));
        assert_eq!(Expiry::absolute(Duration::MAX).expires_at(now, now - 5), Some(LATEST_MS));
        assert_eq!(Expiry::idle(Duration::from_secs(1)).expires_at(now, now), Some(now + 1000));
        assert_eq!(Expiry::never().expires_at(now, now), None);
    }
}
