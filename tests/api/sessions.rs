//! Sessions through the layer (feature `sessions`): lazy loading, saving once and
//! only when changed, the signed id cookie and what is never adopted, `cycle_id`,
//! `flush`, expiry, a failing store, two requests at once, and the stores (memory,
//! any tower-sessions store, Redis).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode, header};
use tower::ServiceExt;
use tower_context::session::{BoxFuture, Expiry, MemoryStore, Record, SessionError, SessionStore, Sessions};
use tower_context::{Context, ContextLayer, HttpError, Keys, advance_sessions_clock};

/// A memory store that counts what it is asked and can be made to fail.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    loads: AtomicUsize,
    saves: AtomicUsize,
    deletes: AtomicUsize,
    failing: AtomicBool,
    failing_deletes: AtomicBool,
    failing_saves: AtomicBool,
}

impl Counting {
    fn check(&self) -> Result<(), SessionError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SessionError::Store("connection refused".into()));
        }
        Ok(())
    }

    /// A save (or an update) is counted, and refused when saves are set to fail.
    fn saving(&self) -> Result<(), SessionError> {
        self.check()?;
        if self.failing_saves.load(Ordering::SeqCst) {
            return Err(SessionError::Store("save refused".into()));
        }
        Ok(())
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.loads.load(Ordering::SeqCst),
            self.saves.load(Ordering::SeqCst),
            self.deletes.load(Ordering::SeqCst),
        )
    }
}

impl SessionStore for Counting {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Record>, SessionError>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.check()?;
            self.inner.load(id).await
        })
    }

    fn save<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<(), SessionError>> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.saving()?;
            self.inner.save(id, record).await
        })
    }

    /// Counted as a save: one round trip, as in a store that updates in one step.
    fn update<'a>(&'a self, id: &'a str, record: &'a Record) -> BoxFuture<'a, Result<bool, SessionError>> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.saving()?;
            self.inner.update(id, record).await
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SessionError>> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.check()?;
            if self.failing_deletes.load(Ordering::SeqCst) {
                return Err(SessionError::Store("delete refused".into()));
            }
            self.inner.delete(id).await
        })
    }
}

async fn visits(ctx: Context) -> Result<String, HttpError> {
    let session = ctx.session();
    let n = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", n).await?;
    Ok(n.to_string())
}

async fn read(ctx: Context) -> Result<String, HttpError> {
    Ok(ctx.session().get::<u64>("visits").await?.map_or("none".into(), |n| n.to_string()))
}

async fn login(ctx: Context) -> Result<String, HttpError> {
    ctx.session().cycle_id().await?;
    ctx.session().insert("user", "ann").await?;
    Ok("in".into())
}

async fn logout(ctx: Context) -> Result<String, HttpError> {
    ctx.session().flush().await?;
    Ok("out".into())
}

fn app_with(sessions: Sessions, keys: Option<Keys>) -> Router {
    let mut layer = ContextLayer::new().sessions(sessions);
    if let Some(keys) = keys {
        layer = layer.keys(keys);
    }
    Router::new()
        .route("/visits", get(visits))
        .route("/read", get(read))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .route("/handle-only", get(|ctx: Context| async move { format!("{:?}", ctx.session()) }))
        .route("/plain", get(|| async { "plain" }))
        .route(
            "/extracted",
            get(|session: tower_context::session::Session| async move {
                Ok::<_, HttpError>(format!("{:?}", session.get::<u64>("visits").await?))
            }),
        )
        .layer(layer)
}

fn app(store: Arc<Counting>) -> Router {
    app_with(Sessions::shared(store), Some(Keys::new(["session secret"])))
}

/// A client's cookies, as a browser keeps them.
#[derive(Default, Clone)]
struct Browser {
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn header(&self) -> String {
        self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn take(&mut self, headers: &HeaderMap) {
        for line in headers.get_all(header::SET_COOKIE) {
            let line = line.to_str().unwrap();
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !attributes.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_owned(), value.to_owned()));
    }

    async fn get_page(&mut self, app: &Router, path: &str) -> (StatusCode, Vec<String>, String) {
        let mut req = Request::get(path);
        if !self.cookies.is_empty() {
            req = req.header(header::COOKIE, self.header());
        }
        let res = app.clone().oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let set: Vec<String> = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        self.take(res.headers());
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        (status, set, String::from_utf8(body.to_vec()).unwrap())
    }
}

#[tokio::test]
async fn a_request_that_does_not_use_the_session_costs_no_store_round_trip() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    for path in ["/plain", "/handle-only"] {
        let (status, set, _) = browser.get_page(&app, path).await;
        assert_eq!((status, set.len()), (StatusCode::OK, 0), "{path}");
    }
    assert_eq!(store.counts(), (0, 0, 0));
}

#[tokio::test]
async fn values_survive_and_are_saved_once_only_when_changed() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    let (_, set, body) = browser.get_page(&app, "/visits").await;
    assert_eq!(body, "1");
    assert_eq!(set.len(), 2, "{set:?}");
    let id = browser.get("sessionID").unwrap().to_owned();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(set[0], format!("sessionID={id}; HttpOnly; SameSite=Lax; Path=/"));
    assert!(set[1].starts_with("sessionID.sig="), "{}", set[1]);
    // A fresh session: nothing to load, one save.
    assert_eq!(store.counts(), (0, 1, 0));

    let (_, set, body) = browser.get_page(&app, "/visits").await;
    assert_eq!((body.as_str(), set.len()), ("2", 0), "the id is unchanged: no cookie sent again");
    assert_eq!(store.counts(), (1, 2, 0));
    let (_, set, body) = browser.get_page(&app, "/read").await;
    assert_eq!((body.as_str(), set.len()), ("2", 0));
    assert_eq!(store.counts(), (2, 2, 0), "read, not changed: not saved");
    let (_, _, body) = browser.get_page(&app, "/extracted").await;
    assert_eq!(body, "Some(2)", "the axum extractor is the same session");
    assert_eq!(store.inner.len(), 1);
}

#[tokio::test]
async fn made_up_tampered_and_unknown_ids_are_never_adopted() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let chosen = "0123456789abcdef0123456789abcdef";

    // An id the client made up, unsigned.
    let mut attacker = Browser::default();
    attacker.set("sessionID", chosen);
    let (_, _, body) = attacker.get_page(&app, "/visits").await;
    assert_eq!(body, "1");
    assert_ne!(attacker.get("sessionID"), Some(chosen), "a fresh id, not the client's");

    // A real session's signature under another value.
    let mut victim = Browser::default();
    victim.get_page(&app, "/visits").await;
    victim.get_page(&app, "/visits").await;
    let mut forger = victim.clone();
    forger.set("sessionID", chosen);
    let (_, _, body) = forger.get_page(&app, "/read").await;
    assert_eq!(body, "none", "a tampered cookie reads as no session");

    // Correctly signed, but unknown to this store (made by another app with the
    // same keys): not adopted either.
    let elsewhere = app_with(Sessions::memory(), Some(Keys::new(["session secret"])));
    let mut stranger = Browser::default();
    stranger.get_page(&elsewhere, "/visits").await;
    let foreign = stranger.get("sessionID").unwrap().to_owned();
    let (_, _, body) = stranger.get_page(&app, "/visits").await;
    assert_eq!(body, "1");
    assert_ne!(stranger.get("sessionID"), Some(foreign.as_str()));
}

#[tokio::test]
async fn cycle_id_keeps_the_data_under_a_new_id_and_forgets_the_old() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let before = browser.get("sessionID").unwrap().to_owned();
    let (_, set, _) = browser.get_page(&app, "/login").await;
    let after = browser.get("sessionID").unwrap().to_owned();
    assert_ne!(before, after);
    assert_eq!(set.len(), 2, "the new id, signed: {set:?}");
    assert!(store.inner.load(&before).await.unwrap().is_none(), "the old id is forgotten");
    let (_, _, body) = browser.get_page(&app, "/read").await;
    assert_eq!(body, "1", "the data came along");
    let mut old = browser.clone();
    old.set("sessionID", &before);
    assert_eq!(old.get_page(&app, "/read").await.2, "none");
}

#[tokio::test]
async fn flush_ends_the_session_and_removes_the_cookie() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let (_, set, _) = browser.get_page(&app, "/logout").await;
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set[0].starts_with("sessionID=; ") && set[0].contains("Max-Age=0"), "{}", set[0]);
    assert!(set[1].starts_with("sessionID.sig=; ") && set[1].contains("Max-Age=0"), "{}", set[1]);
    assert!(store.inner.is_empty());
    assert_eq!(browser.get_page(&app, "/read").await.2, "none");
}

/// Expiry is tested on the sessions' clock, moved forward by the test on its own
/// thread, in steps of seconds: a slow machine cannot make a young session look old,
/// and the real time that passes between two steps is far inside the margins.
#[tokio::test]
async fn sessions_expire_when_idle_and_when_old() {
    let later = |s| advance_sessions_clock(Duration::from_secs(s));
    let idle = app_with(
        Sessions::new(MemoryStore::new()).expiry(Expiry::idle(Duration::from_secs(60))),
        Some(Keys::new(["k"])),
    );
    let mut browser = Browser::default();
    browser.get_page(&idle, "/visits").await;
    // Read (not changed) past a quarter of the idle time: the expiry is pushed back.
    later(40);
    assert_eq!(browser.get_page(&idle, "/read").await.2, "1");
    later(40);
    assert_eq!(browser.get_page(&idle, "/read").await.2, "1", "kept alive by the last read");
    later(10);
    assert_eq!(browser.get_page(&idle, "/read").await.2, "1", "a read within a quarter");
    // That read was not written: the expiry still counts from the one before it
    // (at 80 s: it ends at 140 s).
    later(55);
    assert_eq!(browser.get_page(&idle, "/read").await.2, "none", "idle too long");

    let absolute = app_with(
        Sessions::memory().expiry(Expiry::absolute(Duration::from_millis(59_500))),
        Some(Keys::new(["k"])),
    );
    let mut browser = Browser::default();
    let (_, set, _) = browser.get_page(&absolute, "/visits").await;
    assert!(set[0].ends_with("; Max-Age=60"), "the cookie lasts as long, in whole seconds up: {}", set[0]);
    later(30);
    assert_eq!(browser.get_page(&absolute, "/visits").await.2, "2", "still young, and used");
    later(25);
    assert_eq!(browser.get_page(&absolute, "/read").await.2, "2", "used, but not made younger");
    later(10);
    assert_eq!(browser.get_page(&absolute, "/read").await.2, "none", "too old, however used");
}

#[tokio::test]
async fn a_session_signed_with_an_older_key_gets_its_cookie_again_with_its_own_attributes() {
    let store = Arc::new(MemoryStore::new());
    let sessions = || Sessions::shared(store.clone()).expiry(Expiry::absolute(Duration::from_secs(3600)));
    let before = app_with(sessions(), Some(Keys::new(["old"])));
    let rotated = app_with(sessions(), Some(Keys::new(["new", "old"])));
    let mut browser = Browser::default();
    browser.get_page(&before, "/visits").await;
    let id = browser.get("sessionID").unwrap().to_owned();
    let (status, set, body) = browser.get_page(&rotated, "/read").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"));
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set.iter().any(|line| line.starts_with(&format!("sessionID={id}; "))), "the same id: {set:?}");
    assert!(set.iter().any(|line| line.starts_with("sessionID.sig=")), "{set:?}");
    for line in &set {
        for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=3600"] {
            assert!(line.contains(attribute), "{attribute} in {line}");
        }
    }
    // Signed with the new key: readable once the old one is dropped.
    let after = app_with(sessions(), Some(Keys::new(["new"])));
    assert_eq!(browser.get_page(&after, "/read").await.2, "1");
}

#[tokio::test]
async fn a_store_that_fails_is_a_503_and_nothing_is_sent_half() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let id = browser.get("sessionID").unwrap().to_owned();
    store.failing.store(true, Ordering::SeqCst);
    let (status, set, body) = browser.get_page(&app, "/visits").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("session store unavailable") && !body.contains("connection refused"), "{body}");
    assert!(set.iter().all(|c| !c.starts_with("sessionID")), "{set:?}");
    // Fails on save too (a fresh session: nothing to load).
    let mut fresh = Browser::default();
    let (status, set, _) = fresh.get_page(&app, "/visits").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(set.iter().all(|c| !c.starts_with("sessionID")), "no cookie for a session not saved: {set:?}");
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(browser.get("sessionID"), Some(id.as_str()));
    assert_eq!(browser.get_page(&app, "/read").await.2, "1", "what was saved before is intact");
}

#[tokio::test]
async fn a_logout_the_store_cannot_record_fails_whole() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    store.failing_deletes.store(true, Ordering::SeqCst);
    let (status, set, _) = browser.get_page(&app, "/logout").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(set.iter().all(|c| !c.starts_with("sessionID")), "the cookie stays: {set:?}");
    store.failing_deletes.store(false, Ordering::SeqCst);
    assert_eq!(browser.get_page(&app, "/read").await.2, "1", "the session is as it was");
    browser.get_page(&app, "/logout").await;
    assert_eq!(browser.get_page(&app, "/read").await.2, "none");
}

#[tokio::test]
async fn a_login_the_store_cannot_save_fails_whole() {
    let store = Arc::new(Counting::default());
    let app = app(store.clone());
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let id = browser.get("sessionID").unwrap().to_owned();
    store.failing_saves.store(true, Ordering::SeqCst);
    let (status, set, _) = browser.get_page(&app, "/login").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(set.iter().all(|c| !c.starts_with("sessionID")), "the cookie stays: {set:?}");
    store.failing_saves.store(false, Ordering::SeqCst);
    assert_eq!(browser.get("sessionID"), Some(id.as_str()));
    assert_eq!(browser.get_page(&app, "/read").await.2, "1", "the old id still holds the session");

    // A delete that fails after the new record was saved: the new id is never sent.
    store.failing_deletes.store(true, Ordering::SeqCst);
    let (status, set, _) = browser.get_page(&app, "/login").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(set.iter().all(|c| !c.starts_with("sessionID")), "the cookie stays: {set:?}");
    store.failing_deletes.store(false, Ordering::SeqCst);
    assert_eq!(browser.get_page(&app, "/read").await.2, "1", "the old id still holds the session");

    let (status, set, _) = browser.get_page(&app, "/login").await;
    assert_eq!(status, StatusCode::OK);
    assert!(set.iter().any(|c| c.starts_with("sessionID=")), "{set:?}");
    assert_ne!(browser.get("sessionID"), Some(id.as_str()), "a new id after the login");
    assert_eq!(browser.get_page(&app, "/read").await.2, "1", "the data came along");
    assert_eq!(store.inner.load(&id).await.unwrap(), None, "the old id is forgotten");
}

#[tokio::test]
async fn a_store_without_its_own_touch_keeps_the_data_when_the_expiry_is_pushed_back() {
    // `Counting` has no `touch`: the trait's default updates the record whole.
    let store = Arc::new(Counting::default());
    let app = app_with(
        Sessions::shared(store.clone()).expiry(Expiry::idle(Duration::from_secs(4))),
        Some(Keys::new(["k"])),
    );
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    assert_eq!(store.counts().1, 1);
    // Past a quarter of the idle time (and far from all of it): this read pushes the
    // expiry back.
    advance_sessions_clock(Duration::from_millis(1100));
    assert_eq!(browser.get_page(&app, "/read").await.2, "1");
    assert_eq!(store.counts().1, 2, "the touch went to the store, as a save");
    assert_eq!(browser.get_page(&app, "/read").await.2, "1", "the data survived the touch");
}

#[tokio::test]
async fn pushing_an_idle_expiry_back_never_undoes_another_requests_save() {
    let store = Arc::new(MemoryStore::new());
    let (read_started_tx, read_started) = tokio::sync::mpsc::channel::<()>(1);
    let (written_tx, written) = tokio::sync::mpsc::channel::<()>(1);
    let written = Arc::new(tokio::sync::Mutex::new(written));
    let slow_read = get(move |ctx: Context| {
        let (read_started_tx, written) = (read_started_tx.clone(), written.clone());
        async move {
            let visits = ctx.session().get::<u64>("visits").await?;
            read_started_tx.send(()).await.unwrap();
            written.lock().await.recv().await;
            Ok::<_, HttpError>(format!("{visits:?}"))
        }
    });
    let app = Router::new().route("/visits", get(visits)).route("/slow-read", slow_read).layer(
        ContextLayer::new()
            .keys(Keys::new(["k"]))
            .sessions(Sessions::shared(store.clone()).expiry(Expiry::idle(Duration::from_secs(800)))),
    );
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let id = browser.get("sessionID").unwrap().to_owned();
    // Past a quarter of the idle time, so the read will push the expiry back.
    advance_sessions_clock(Duration::from_secs(300));
    let (mut reader, mut writer) = (browser.clone(), browser.clone());
    let (app_r, app_w) = (app.clone(), app.clone());
    let reading = tokio::spawn(async move { reader.get_page(&app_r, "/slow-read").await });
    let mut read_started = read_started;
    read_started.recv().await.unwrap();
    assert_eq!(writer.get_page(&app_w, "/visits").await.2, "2");
    written_tx.send(()).await.unwrap();
    assert_eq!(reading.await.unwrap().2, "Some(1)");
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record.data["visits"], 2, "the writer's save stands");
}

/// A request that read the session before a logout and writes it after does not
/// bring the session back: the store is only updated, never made again, and the
/// cookie is left to what the logout sent. (With a stolen id, one slow request
/// would otherwise outlive the victim's logout.) Nor does it undo a login that
/// cycled the id meanwhile: its response leaves the new cookie alone.
#[tokio::test]
async fn a_request_that_read_the_session_before_a_logout_does_not_bring_it_back() {
    let store = Arc::new(MemoryStore::new());
    let (started_tx, mut started) = tokio::sync::mpsc::channel::<()>(1);
    let (out_tx, out) = tokio::sync::mpsc::channel::<()>(1);
    let out = Arc::new(tokio::sync::Mutex::new(out));
    let slow_write = get(move |ctx: Context| {
        let (started_tx, out) = (started_tx.clone(), out.clone());
        async move {
            let visits = ctx.session().get::<u64>("visits").await?.unwrap_or(0);
            started_tx.send(()).await.unwrap();
            out.lock().await.recv().await;
            ctx.session().insert("visits", visits + 100).await?;
            Ok::<_, HttpError>("written")
        }
    });
    let app = Router::new()
        .route("/visits", get(visits))
        .route("/read", get(read))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .route("/slow-write", slow_write)
        .layer(ContextLayer::new().keys(Keys::new(["k"])).sessions(Sessions::shared(store.clone())));
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let id = browser.get("sessionID").unwrap().to_owned();
    let (mut slow, app_s) = (browser.clone(), app.clone());
    let writing = tokio::spawn(async move { slow.get_page(&app_s, "/slow-write").await });
    started.recv().await.unwrap();
    let mut victim = browser.clone();
    assert_eq!(victim.get_page(&app, "/logout").await.2, "out");
    out_tx.send(()).await.unwrap();
    let (_, set, body) = writing.await.unwrap();
    assert_eq!(body, "written");
    assert!(store.load(&id).await.unwrap().is_none(), "the ended session stays ended");
    assert!(set.iter().all(|line| !line.starts_with("sessionID")), "{set:?}");
    assert_eq!(browser.get_page(&app, "/read").await.2, "none", "the old cookie opens nothing");

    // A login meanwhile (a new id): the slow request's response sends no cookie
    // over the new one, and the new session holds.
    let mut user = Browser::default();
    user.get_page(&app, "/visits").await;
    let (mut slow, app_s) = (user.clone(), app.clone());
    let writing = tokio::spawn(async move { slow.get_page(&app_s, "/slow-write").await });
    started.recv().await.unwrap();
    assert_eq!(user.get_page(&app, "/login").await.2, "in");
    let new_id = user.get("sessionID").unwrap().to_owned();
    out_tx.send(()).await.unwrap();
    let (_, set, _) = writing.await.unwrap();
    assert!(set.iter().all(|line| !line.starts_with("sessionID")), "{set:?}");
    assert!(store.load(&new_id).await.unwrap().is_some(), "the new session holds");
    assert_eq!(user.get_page(&app, "/read").await.2, "1", "with the data the login carried");
}

#[tokio::test]
async fn two_requests_of_one_client_at_once_the_last_save_wins() {
    let store = Arc::new(MemoryStore::new());
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let (first_saved_tx, first_saved) = tokio::sync::watch::channel(false);
    let first_saved = Arc::new(tokio::sync::Mutex::new(first_saved));
    let write = |key: &'static str, wait_for_first: bool| {
        let (barrier, first_saved_tx, first_saved) =
            (barrier.clone(), first_saved_tx.clone(), first_saved.clone());
        get(move |ctx: Context| async move {
            let session = ctx.session();
            session.insert(key, true).await?;
            // Both have loaded the session before either saves.
            barrier.wait().await;
            if wait_for_first {
                first_saved.lock().await.wait_for(|saved| *saved).await.unwrap();
            } else {
                ctx.after(move |res| async move {
                    let _ = first_saved_tx.send(true);
                    Ok(res)
                })
                .unwrap();
            }
            Ok::<_, HttpError>(key)
        })
    };
    let app = Router::new()
        .route("/visits", get(visits))
        .route("/a", write("a", false))
        .route("/b", write("b", true))
        .layer(ContextLayer::new().keys(Keys::new(["k"])).sessions(Sessions::shared(store.clone())));
    let mut browser = Browser::default();
    browser.get_page(&app, "/visits").await;
    let id = browser.get("sessionID").unwrap().to_owned();
    let (mut a, mut b) = (browser.clone(), browser.clone());
    let (app_a, app_b) = (app.clone(), app.clone());
    let (ra, rb) =
        tokio::join!(
            async move { a.get_page(&app_a, "/a").await },
            async move { b.get_page(&app_b, "/b").await }
        );
    assert_eq!((ra.0, rb.0), (StatusCode::OK, StatusCode::OK));
    // "a" saved first (its after-hook, registered after the session's, ran after the
    // save), then "b" saved its whole copy, which never had "a".
    let record = store.load(&id).await.unwrap().unwrap();
    let keys: Vec<&String> = record.data.keys().collect();
    assert_eq!(keys, ["visits", "b"], "the last save wins, whole");
}

#[tokio::test]
async fn keys_and_configuration_are_required() {
    let no_keys = app_with(Sessions::memory(), None);
    let (status, set, _) = Browser::default().get_page(&no_keys, "/visits").await;
    assert_eq!((status, set.len()), (StatusCode::INTERNAL_SERVER_ERROR, 0));
    let unconfigured = Router::new()
        .route("/visits", get(visits))
        .route("/handle-only", get(|ctx: Context| async move { format!("{:?}", ctx.session()) }))
        .layer(ContextLayer::new().keys(Keys::new(["k"])));
    let (status, _, _) = Browser::default().get_page(&unconfigured, "/visits").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // A session asked for but never used costs nothing, configured or not.
    let (status, set, _) = Browser::default().get_page(&unconfigured, "/handle-only").await;
    assert_eq!((status, set.len()), (StatusCode::OK, 0));
}

#[cfg(feature = "tower-sessions")]
#[tokio::test]
async fn any_tower_sessions_store_works() {
    use tower_context::session::TowerSessionsStore;

    let store = Arc::new(TowerSessionsStore::new(tower_sessions::MemoryStore::default()));
    let app = app_with(Sessions::shared(store.clone()), Some(Keys::new(["k"])));
    let mut browser = Browser::default();
    for n in 1..=3 {
        assert_eq!(browser.get_page(&app, "/visits").await.2, n.to_string());
    }
    let id = browser.get("sessionID").unwrap().to_owned();
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record.data["visits"], 3);
    browser.get_page(&app, "/login").await;
    assert!(
        store.load(&id).await.unwrap().is_none(),
        "cycled: the old id deleted in the tower-sessions store"
    );
    assert_eq!(browser.get_page(&app, "/read").await.2, "3");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_sessions_are_shared_by_instances_and_expire_in_redis() {
    use tower_context::session::RedisStore;

    let Some(server) = crate::common::redis_server::RedisServer::start() else { return };
    let instance = |_: u8| async {
        let store = RedisStore::connect(&server.url()).await.unwrap();
        app_with(
            Sessions::new(store).expiry(Expiry::idle(Duration::from_secs(60))),
            Some(Keys::new(["shared"])),
        )
    };
    let (one, two) = (instance(1).await, instance(2).await);
    let mut browser = Browser::default();
    assert_eq!(browser.get_page(&one, "/visits").await.2, "1");
    assert_eq!(browser.get_page(&two, "/visits").await.2, "2", "the other instance sees the session");
    assert_eq!(browser.get_page(&one, "/read").await.2, "2");
    let id = browser.get("sessionID").unwrap().to_owned();
    let ttl = server.command(&format!("PTTL tower-context:session:{id}"));
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((50_000..=60_000).contains(&ttl), "Redis drops it with the session: {ttl} ms");
    browser.get_page(&two, "/logout").await;
    assert_eq!(server.command(&format!("EXISTS tower-context:session:{id}")).trim(), ":0");
    // An update of an ended session does not make it again (`SET … XX`).
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let record = Record::new(serde_json::Map::new(), 1, None);
    assert!(!store.update(&id, &record).await.unwrap());
    assert_eq!(server.command(&format!("EXISTS tower-context:session:{id}")).trim(), ":0");
    store.save(&id, &record).await.unwrap();
    assert!(store.update(&id, &record).await.unwrap());
}
