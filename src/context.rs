//! [`Context`]: the per-request handle every layer, handler, hook and task can hold.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicIsize, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, Weak};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode, Uri, Version};
use tokio::sync::Notify;

use crate::connection::Connection;
use crate::cookies::Cookies;
use crate::error::HttpError;
use crate::events::Listeners;
use crate::hooks::Hooks;
use crate::layer::Config;
use crate::{Body, BoxError};

/// The per-request context: Toa's `ctx` for tower.
///
/// [`ContextLayer`](crate::ContextLayer) makes one for every request and puts it in
/// the request extensions; handlers take it as an axum extractor, tower services find
/// it with `req.extensions().get::<Context>()`. It is a cheap handle (one `Arc`):
/// clone it into hooks, listeners and tasks freely. Everything it holds that could
/// point back at it (hooks, listeners, task handles, the state map) is released when
/// the request completes, so a hook that captured a clone does not leak the request.
///
/// ```
/// use axum::{Router, routing::get, http::HeaderValue};
/// use tower_context::{Context, ContextLayer};
///
/// async fn handler(ctx: Context) -> &'static str {
///     ctx.set_header(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
///     ctx.after(|mut res| async move {
///         res.headers_mut().insert("x-hooked", HeaderValue::from_static("yes"));
///         Ok(res)
///     })
///     .expect("hooks have not started yet");
///     ctx.on_finish(|ctx| println!("{} finished", ctx.id()));
///     "hello"
/// }
///
/// let app: Router = Router::new().route("/", get(handler)).layer(ContextLayer::new());
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<Inner>,
}

/// The state behind a [`Context`].
pub(crate) struct Inner {
    id: Id,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: Captured,
    pub(crate) config: Arc<Config>,
    pub(crate) flags: AtomicU32,
    /// Wakes the layer's response future when `end` or an error arrives.
    pub(crate) waker: AtomicWaker,
    /// Wakes `done()` waiters on Finish or Close.
    pub(crate) done: Notify,
    pub(crate) shared: Mutex<Shared>,
    state: Mutex<Extensions>,
    /// Made on first use: a request nobody asks about parses no cookies.
    pub(crate) cookies: OnceLock<Cookies>,
    connection: Option<Connection>,
}

/// What the layer and the handle share, behind one lock that is never held across an
/// await or while user code runs.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) hooks: Hooks,
    /// The response given to `end`, until the layer takes it (boxed: rare, and a
    /// response head is large next to everything else here).
    pub(crate) ended: Option<Box<Response<Body>>>,
    /// An error from `emit_error` or a task, until the layer takes it.
    pub(crate) error: Option<HttpError>,
    pub(crate) edits: Vec<Edit>,
    /// Made when the first listener is added.
    pub(crate) listeners: Option<Box<Listeners>>,
    pub(crate) tasks: Vec<tokio::task::AbortHandle>,
}

/// Flag bits of `Inner::flags`.
pub(crate) mod flag {
    /// `end()` was accepted in the current phase (before the hooks, or during them).
    pub(crate) const END_CALLED: u32 = 1;
    /// `Shared::ended` or `Shared::error` holds something for the layer.
    pub(crate) const SIGNAL: u32 = 1 << 1;
    /// After-hooks have started: no more can be added.
    pub(crate) const HOOKS_STARTED: u32 = 1 << 2;
    /// The response head has left the layer (Toa's `ended`).
    pub(crate) const RESPONDED: u32 = 1 << 3;
    pub(crate) const FINISHED: u32 = 1 << 4;
    pub(crate) const CLOSED: u32 = 1 << 5;
    /// Something to apply to the response: hooks or deferred edits exist. Set with
    /// one atomic read-modify-write against `HOOKS_STARTED`, so a hook is either
    /// refused or seen by the layer, never silently lost.
    pub(crate) const WORK: u32 = 1 << 6;
    /// Some listener is registered.
    pub(crate) const LISTENERS: u32 = 1 << 7;
    /// The request is on the error path: new errors are reported, not rendered.
    pub(crate) const ERROR_PATH: u32 = 1 << 8;
    /// `catch_stream` was called.
    pub(crate) const STREAM_CAUGHT: u32 = 1 << 9;
    /// Someone awaits `done()`: completion must notify.
    pub(crate) const WAITING: u32 = 1 << 10;
    /// The caught stream failed and reported its error to the context.
    pub(crate) const STREAM_FAILED: u32 = 1 << 11;
    /// A task handle was kept: completion must release it.
    pub(crate) const TASKS: u32 = 1 << 12;
    /// Something was put in the state map: completion must clear it.
    pub(crate) const STATE: u32 = 1 << 13;
}

impl Shared {
    pub(crate) fn listeners(&mut self) -> &mut Listeners {
        self.listeners.get_or_insert_with(Box::default)
    }
}

/// A response edit made before there was a response to edit.
pub(crate) enum Edit {
    Status(StatusCode),
    Insert(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
    Remove(HeaderName),
    Vary(HeaderName),
}

/// The count of live contexts, for leak tests: each thread counts in a counter of its
/// own, which only that thread writes, so counting is a plain load and store, no
/// locked instruction. A context made on one thread and dropped on another adds one
/// to the first thread's counter and takes one from the second's: the sum stays right.
static COUNTERS: Mutex<Vec<Arc<AtomicIsize>>> = Mutex::new(Vec::new());
/// The counts of threads that have exited (and of contexts dropped while one exits).
static EXITED: AtomicIsize = AtomicIsize::new(0);

fn counters() -> MutexGuard<'static, Vec<Arc<AtomicIsize>>> {
    COUNTERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A thread's counter, listed while the thread lives; its count moves to `EXITED`
/// when the thread exits, so the list does not grow with threads that come and go.
struct Counter(Arc<AtomicIsize>);

impl Counter {
    fn new() -> Counter {
        let counter = Arc::new(AtomicIsize::new(0));
        counters().push(counter.clone());
        Counter(counter)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let mut counters = counters();
        counters.retain(|counter| !Arc::ptr_eq(counter, &self.0));
        EXITED.fetch_add(self.0.load(Ordering::Acquire), Ordering::AcqRel);
    }
}

thread_local! {
    static COUNTER: Counter = Counter::new();
}

fn count_live(delta: isize) {
    let counted = COUNTER.try_with(|Counter(counter)| {
        // Only this thread writes its counter: no other write can come in between.
        counter.store(counter.load(Ordering::Relaxed) + delta, Ordering::Release);
    });
    if counted.is_err() {
        EXITED.fetch_add(delta, Ordering::AcqRel);
    }
}

/// How many contexts exist right now in this process. For leak tests.
#[doc(hidden)]
pub fn live_contexts() -> usize {
    let counters = counters();
    let total: isize = counters.iter().map(|counter| counter.load(Ordering::Acquire)).sum::<isize>()
        + EXITED.load(Ordering::Acquire);
    usize::try_from(total).unwrap_or(0)
}

impl Drop for Inner {
    fn drop(&mut self) {
        count_live(-1);
    }
}

/// What `end` returned: whether this call decided the response.
///
/// The first `end` before the hooks wins (and the first one inside them); later
/// calls, calls after an error was emitted, and calls after the response has left the
/// layer are ignored. A handler may return it (under the "axum" feature it is a
/// response; the layer sends the ended one instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "`end` may have been ignored; check `is_first` or return it from the handler"]
pub struct Ended {
    first: bool,
}

impl Ended {
    /// True when this call's response is the one that will be sent.
    pub fn is_first(self) -> bool {
        self.first
    }
}

/// Returned by [`Context::after`] once hooks can no longer be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HooksStarted;

impl fmt::Display for HooksStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("can't add a hook after the hooks have started")
    }
}

impl std::error::Error for HooksStarted {}

impl From<HooksStarted> for HttpError {
    fn from(err: HooksStarted) -> Self {
        HttpError::from_error(err)
    }
}

impl Context {
    pub(crate) fn new<B>(request: &Request<B>, config: Arc<Config>) -> Context {
        count_live(1);
        let id = request
            .extensions()
            .get::<tower_http::request_id::RequestId>()
            .and_then(|id| Id::adopt(id.header_value()))
            .unwrap_or_else(Id::generate);
        Context {
            inner: Arc::new(Inner {
                id,
                method: request.method().clone(),
                uri: request.uri().clone(),
                version: request.version(),
                headers: Captured::capture(request.headers()),
                config,
                flags: AtomicU32::new(0),
                waker: AtomicWaker::new(),
                done: Notify::new(),
                shared: Mutex::new(Shared::default()),
                state: Mutex::new(Extensions::new()),
                cookies: OnceLock::new(),
                connection: Connection::from_extensions(request.extensions()),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic in user code never happens while this lock is held (user code is
        // always called after it is released), so poisoning can only come from a bug
        // here; the data is still consistent enough to go on.
        self.inner.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn flags(&self) -> u32 {
        self.inner.flags.load(Ordering::Acquire)
    }

    pub(crate) fn has(&self, bits: u32) -> bool {
        self.flags() & bits != 0
    }

    pub(crate) fn set(&self, bits: u32) {
        self.inner.flags.fetch_or(bits, Ordering::AcqRel);
    }

    /// Sets `bits` and returns the flags as they were: the one read-modify-write
    /// that orders a registration against the layer's decisions and completion.
    pub(crate) fn set_prev(&self, bits: u32) -> u32 {
        self.inner.flags.fetch_or(bits, Ordering::AcqRel)
    }

    pub(crate) fn clear(&self, bits: u32) {
        self.inner.flags.fetch_and(!bits, Ordering::AcqRel);
    }

    pub(crate) fn state_map(&self) -> MutexGuard<'_, Extensions> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The request's id: tower-http's [`RequestId`](tower_http::request_id::RequestId)
    /// when a `SetRequestIdLayer` ran before this layer, else one made here, unique
    /// within the process.
    pub fn id(&self) -> &str {
        self.inner.id.as_str()
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.inner.method
    }

    /// The request URI as it reached the layer.
    pub fn uri(&self) -> &Uri {
        &self.inner.uri
    }

    /// The HTTP version of the request.
    pub fn version(&self) -> Version {
        self.inner.version
    }

    /// A request header the context keeps (case-insensitive name).
    ///
    /// The context does not copy the whole header map; it keeps the headers the crate
    /// itself reads: `accept`, `accept-charset`, `accept-encoding`, `accept-language`,
    /// `cache-control`, `content-type`, `cookie`, `forwarded`, `host`, `if-modified-since`,
    /// `if-none-match`, `origin`, `referer`, `user-agent`, `x-forwarded-for`,
    /// `x-forwarded-host`, `x-forwarded-proto` and `x-sessionid`. Several lines of one
    /// header are joined into one value (`; ` for cookies, `, ` for the rest). For any
    /// other header, read the request itself. `referrer` finds `referer`.
    pub fn header(&self, name: impl AsRef<str>) -> Option<&HeaderValue> {
        self.inner.headers.get(name.as_ref())
    }

    /// The connection the request came on, when the server recorded one (see
    /// [`Connection`]).
    pub fn connection(&self) -> Option<&Connection> {
        self.inner.connection.as_ref()
    }

    /// The request's cookie jar (Toa's `ctx.cookies`). The `Cookie` header is parsed
    /// as reads need it; changes become `Set-Cookie` headers on whatever response
    /// goes out, on every path.
    pub fn cookies(&self) -> &Cookies {
        self.inner.cookies.get_or_init(|| {
            Cookies::new(self.header("cookie").cloned(), &self.config().cookies, self.is_secure())
        })
    }

    /// Whether the request came over TLS, as far as the layer may believe.
    pub(crate) fn is_secure(&self) -> bool {
        crate::request::RequestExt::secure(self)
    }

    /// The typed per-request map (Toa's `ctx.state`).
    ///
    /// It lives until the request completes: `on_finish` and `on_close` listeners can
    /// still read it, then it is cleared (so a value that holds this context does not
    /// keep it alive).
    ///
    /// ```
    /// # use tower_context::Context;
    /// # fn f(ctx: Context) {
    /// #[derive(Clone)]
    /// struct User(String);
    /// ctx.state().insert(User("ann".into()));
    /// let user: Option<User> = ctx.state().get();
    /// # }
    /// ```
    pub fn state(&self) -> State<'_> {
        State { ctx: self }
    }

    /// Stops processing and responds with `response`: Toa's `ctx.end`.
    ///
    /// Callable from anywhere: a handler, an inner layer, a hook, a spawned task. The
    /// layer drops the inner future at once (the handler does not run past its current
    /// await point), runs the after-hooks that have not run yet, and sends this
    /// response. Called from inside a hook, the remaining hooks are skipped. The first
    /// call wins (and, inside the hooks, the first call there); [`Ended::is_first`]
    /// says whether this one did. Between `end` and an error from
    /// [`emit_error`](Self::emit_error) or a task, whichever comes first wins: after
    /// an accepted `end` such errors are reported to listeners, not rendered. So are a
    /// panic or an error that comes to light after it (a handler that ends, then
    /// panics in the same poll; a hook that ends, then fails): the ended response
    /// still goes out, through the hooks that had not started. Once the request is on
    /// the error path, or its response has left, `end` is ignored.
    pub fn end<B>(&self, response: Response<B>) -> Ended
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let response = response.map(Body::new);
        let mut shared = self.lock();
        let refused =
            self.has(flag::END_CALLED | flag::RESPONDED | flag::ERROR_PATH) || shared.error.is_some();
        // Stored first, then announced; if the response left in between (the layer
        // decides without this lock), the announcement sees it and takes it back.
        let taken_back = if refused {
            Some(response)
        } else {
            shared.ended = Some(Box::new(response));
            if self.set_prev(flag::END_CALLED | flag::SIGNAL) & flag::RESPONDED != 0 {
                shared.ended.take().map(|ended| *ended)
            } else {
                None
            }
        };
        drop(shared);
        // A refused response is dropped outside the lock: its body is user code.
        if let Some(response) = taken_back {
            drop(response);
            return Ended { first: false };
        }
        self.inner.waker.wake();
        Ended { first: true }
    }

    /// Ends with a small JSON body, Toa's `ctx.end(message)`: status 200 and
    /// `{"message":"…"}`.
    ///
    /// ```
    /// # use tower_context::Context;
    /// # fn f(ctx: Context) {
    /// let _ = ctx.end_with_message("process stopped");
    /// # }
    /// ```
    pub fn end_with_message(&self, message: &str) -> Ended {
        let body = serde_json::json!({ "message": message }).to_string();
        let mut response = Response::new(Body::from(body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.end(response)
    }

    /// Reports an error, Toa's `ctx.emit('error', err)`.
    ///
    /// While the response has not left the layer, the request stops and the error is
    /// rendered (the first such error wins, and an accepted [`end`](Self::end) wins
    /// over later errors). Otherwise the response can no longer change: the error
    /// goes to the `on_error` listeners and the layer's error hook only.
    pub fn emit_error(&self, error: impl Into<HttpError>) {
        let error = error.into();
        let mut shared = self.lock();
        if self.has(flag::RESPONDED | flag::ERROR_PATH | flag::END_CALLED) || shared.error.is_some() {
            drop(shared);
            self.report_error(&error);
            return;
        }
        shared.error = Some(error);
        if self.set_prev(flag::SIGNAL) & flag::RESPONDED != 0 {
            // The response left meanwhile: only a report is possible.
            let late = shared.error.take();
            drop(shared);
            if let Some(error) = late {
                self.report_error(&error);
            }
            return;
        }
        drop(shared);
        self.inner.waker.wake();
    }

    /// Runs `task` on the Tokio runtime, bound to this request (Toa's `ctx.thunk`
    /// scope).
    ///
    /// The task is aborted if the client goes away (Close) or the request takes the
    /// error path. If it returns an error while the response has not left the layer,
    /// the request takes the error path with it; later, the error is reported to
    /// listeners. The task holds the context weakly, so it does not keep the request
    /// alive.
    ///
    /// # Panics
    ///
    /// Like `tokio::spawn`, when called outside a Tokio runtime.
    pub fn spawn<F, E>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HttpError> + 'static,
    {
        let weak = self.downgrade();
        let handle = tokio::spawn(async move {
            if let Err(err) = task.await {
                if let Some(inner) = weak.upgrade() {
                    Context { inner }.emit_error(err);
                }
            }
        });
        let mut shared = self.lock();
        let flags = self.set_prev(flag::TASKS);
        if flags & (flag::CLOSED | flag::ERROR_PATH) != 0 && flags & flag::FINISHED == 0 {
            // The request's scope is already cancelled.
            handle.abort();
        } else if flags & flag::FINISHED == 0 {
            shared.tasks.retain(|task| !task.is_finished());
            shared.tasks.push(handle.abort_handle());
        }
        handle
    }

    fn edit(&self, edit: Edit) {
        let mut shared = self.lock();
        shared.edits.push(edit);
        // Edits that arrive after the hooks started still apply (just before the
        // response leaves); once it has left they cannot, and are dropped.
        if self.set_prev(flag::WORK) & flag::RESPONDED != 0 {
            shared.edits.clear();
        }
    }

    /// Sets the response status, applied when the response leaves the inner service
    /// (before the hooks run), so a layer or handler without the response in hand
    /// can still shape it. Edits made later (from a hook, say) apply just before the
    /// response leaves the layer.
    pub fn set_status(&self, status: StatusCode) {
        self.edit(Edit::Status(status));
    }

    /// Sets a response header (replacing any value), applied like [`set_status`](Self::set_status).
    /// On the error path only headers the error rendering keeps survive.
    pub fn set_header(&self, name: HeaderName, value: HeaderValue) {
        self.edit(Edit::Insert(name, value));
    }

    /// Appends a response header value, applied like [`set_status`](Self::set_status).
    pub fn append_header(&self, name: HeaderName, value: HeaderValue) {
        self.edit(Edit::Append(name, value));
    }

    /// Removes a response header, applied like [`set_status`](Self::set_status).
    pub fn remove_header(&self, name: HeaderName) {
        self.edit(Edit::Remove(name));
    }

    /// Adds a field to the response's `Vary` header (merged, no duplicates, `*` wins),
    /// applied like [`set_status`](Self::set_status).
    pub fn vary(&self, field: HeaderName) {
        self.edit(Edit::Vary(field));
    }

    /// Toa's `ended`: the response head has left the layer (End has fired).
    pub fn is_ended(&self) -> bool {
        self.has(flag::RESPONDED)
    }

    /// Toa's `finished`: the whole response body was handed to the server.
    pub fn is_finished(&self) -> bool {
        self.has(flag::FINISHED)
    }

    /// Toa's `closed`: the response was dropped before it finished (the client went
    /// away, or the server gave up on it).
    pub fn is_closed(&self) -> bool {
        self.has(flag::CLOSED)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id())
            .field("method", self.method())
            .field("uri", self.uri())
            .field("ended", &self.is_ended())
            .field("finished", &self.is_finished())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Applies the deferred edits to a response's head.
pub(crate) fn apply_edits(edits: Vec<Edit>, status: &mut StatusCode, headers: &mut HeaderMap) {
    for edit in edits {
        match edit {
            Edit::Status(s) => *status = s,
            Edit::Insert(name, value) => {
                headers.insert(name, value);
            }
            Edit::Append(name, value) => {
                headers.append(name, value);
            }
            Edit::Remove(name) => {
                headers.remove(name);
            }
            Edit::Vary(field) => crate::response::vary(headers, field.as_str()),
        }
    }
}

/// The typed per-request map: see [`Context::state`].
///
/// Each call takes a short lock of the map alone, never held while other context
/// methods run; do not call `state()` methods from inside [`State::with_mut`].
pub struct State<'a> {
    ctx: &'a Context,
}

impl State<'_> {
    fn map(&self) -> MutexGuard<'_, Extensions> {
        self.ctx.state_map()
    }

    /// Inserts a value, returning the one of the same type it replaced.
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let mut map = self.map();
        self.ctx.set(flag::STATE);
        map.insert(value)
    }

    /// A clone of the value of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map().get::<T>().cloned()
    }

    /// Whether a value of type `T` is present.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.map().get::<T>().is_some()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map().remove::<T>()
    }

    /// Runs `f` on the value of type `T` in place.
    pub fn with_mut<T: Send + Sync + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.map().get_mut::<T>().map(f)
    }
}

/// The request id: one adopted from tower-http, or a number from this process,
/// written out (inline, no allocation) the first time someone asks for it.
enum Id {
    Made { n: u64, text: OnceLock<IdText> },
    Adopted(HeaderValue),
}

struct IdText {
    buf: [u8; 26],
    len: u8,
}

static PREFIX: LazyLock<u32> = LazyLock::new(|| {
    // Random per process, so ids from two runs of a server do not collide in logs.
    #[allow(clippy::cast_possible_truncation)]
    let bits = RandomState::new().build_hasher().finish() as u32;
    bits
});
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Ids are handed to threads in blocks, so making one touches no shared cache line.
const ID_BLOCK: u64 = 1024;

thread_local! {
    static ID_RANGE: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

fn next_id() -> u64 {
    ID_RANGE.with(|range| {
        let (mut next, mut end) = range.get();
        if next == end {
            next = NEXT.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        range.set((next + 1, end));
        next
    })
}

impl Id {
    fn adopt(value: &HeaderValue) -> Option<Id> {
        value.to_str().ok().filter(|s| !s.is_empty()).map(|_| Id::Adopted(value.clone()))
    }

    fn generate() -> Id {
        Id::Made { n: next_id(), text: OnceLock::new() }
    }

    fn as_str(&self) -> &str {
        match self {
            Id::Made { n, text } => {
                let text = text.get_or_init(|| IdText::write(*n));
                std::str::from_utf8(&text.buf[..usize::from(text.len)]).unwrap_or_default()
            }
            Id::Adopted(value) => value.to_str().unwrap_or_default(),
        }
    }
}

impl IdText {
    /// `<process prefix, 8 hex digits>-<n in hex>`.
    fn write(n: u64) -> IdText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0_u8; 26];
        let prefix = *PREFIX;
        for (i, slot) in buf[..8].iter_mut().enumerate() {
            *slot = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        buf[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            buf[9 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        #[allow(clippy::cast_possible_truncation)]
        let len = (9 + digits) as u8;
        IdText { buf, len }
    }
}

/// The request headers the crate reads, captured in one pass over the header map.
///
/// Compact on purpose: the context is made for every request, and most requests
/// carry only a few of these headers. Each name has a one-byte slot; values sit
/// inline up to `INLINE`, then in a vector that is allocated only past that.
pub(crate) struct Captured {
    /// Per name of `CAPTURED`: 0 when absent, else 1 + the value's index.
    slots: [u8; CAPTURED.len()],
    inline: [Option<HeaderValue>; INLINE],
    more: Vec<HeaderValue>,
    len: u8,
}

const INLINE: usize = 6;

const CAPTURED: [&str; 18] = [
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-type",
    "cookie",
    "forwarded",
    "host",
    "if-modified-since",
    "if-none-match",
    "origin",
    "referer",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-sessionid",
];

const COOKIE_SLOT: usize = 6;

/// The slot of a lowercase header name (as `HeaderName::as_str` gives it).
fn slot(name: &str) -> Option<usize> {
    // A match on the string compiles to a switch on length, then a compare or two:
    // cheaper than walking the list for every request header.
    Some(match name {
        "accept" => 0,
        "accept-charset" => 1,
        "accept-encoding" => 2,
        "accept-language" => 3,
        "cache-control" => 4,
        "content-type" => 5,
        "cookie" => 6,
        "forwarded" => 7,
        "host" => 8,
        "if-modified-since" => 9,
        "if-none-match" => 10,
        "origin" => 11,
        "referer" => 12,
        "user-agent" => 13,
        "x-forwarded-for" => 14,
        "x-forwarded-host" => 15,
        "x-forwarded-proto" => 16,
        "x-sessionid" => 17,
        _ => return None,
    })
}

impl Captured {
    // Inlined so the captured headers are written where the context is built, not
    // returned and copied there.
    #[inline]
    fn capture(headers: &HeaderMap) -> Captured {
        let mut captured =
            Captured { slots: [0; CAPTURED.len()], inline: Default::default(), more: Vec::new(), len: 0 };
        for (name, value) in headers {
            let Some(index) = slot(name.as_str()) else {
                continue;
            };
            match captured.slots[index] {
                0 => {
                    let at = usize::from(captured.len);
                    if at < INLINE {
                        captured.inline[at] = Some(value.clone());
                    } else {
                        captured.more.push(value.clone());
                    }
                    // At most 18 names, so the count always fits in a byte.
                    captured.len += 1;
                    captured.slots[index] = captured.len;
                }
                stored => {
                    let separator: &[u8] = if index == COOKIE_SLOT { b"; " } else { b", " };
                    if let Some(first) = captured.value_mut(usize::from(stored) - 1) {
                        let mut joined = Vec::with_capacity(first.len() + 2 + value.len());
                        joined.extend_from_slice(first.as_bytes());
                        joined.extend_from_slice(separator);
                        joined.extend_from_slice(value.as_bytes());
                        // Two valid values joined by a visible separator stay valid.
                        if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                            *first = joined;
                        }
                    }
                }
            }
        }
        captured
    }

    fn value_mut(&mut self, at: usize) -> Option<&mut HeaderValue> {
        match at.checked_sub(INLINE) {
            None => self.inline[at].as_mut(),
            Some(beyond) => self.more.get_mut(beyond),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&HeaderValue> {
        // Referrer is the spelling the header's name should have had.
        let name = if name.eq_ignore_ascii_case("referrer") { "referer" } else { name };
        let index = match slot(name) {
            Some(index) => index,
            None => CAPTURED.iter().position(|c| c.eq_ignore_ascii_case(name))?,
        };
        let at = usize::from(self.slots[index]).checked_sub(1)?;
        match at.checked_sub(INLINE) {
            None => self.inline[at].as_ref(),
            Some(beyond) => self.more.get(beyond),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_unique_and_well_formed() {
        let a = Id::generate();
        let b = Id::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_eq!(a.as_str().as_bytes()[8], b'-');
    }

    #[test]
    fn slots_match_the_list() {
        assert_eq!(CAPTURED[COOKIE_SLOT], "cookie");
        for (index, name) in CAPTURED.iter().enumerate() {
            assert_eq!(slot(name), Some(index), "{name}");
        }
        assert_eq!(slot("x-other"), None);
    }

    #[test]
    fn ids_from_one_thread_are_consecutive_within_a_block() {
        let a = next_id();
        let b = next_id();
        assert!(b == a + 1 || b % ID_BLOCK == 1 || a % ID_BLOCK == 0, "{a} {b}");
    }

    #[test]
    fn capture_joins_repeated_headers() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        headers.append("accept", HeaderValue::from_static("text/html"));
        headers.append("accept", HeaderValue::from_static("*/*"));
        headers.append("x-other", HeaderValue::from_static("x"));
        let captured = Captured::capture(&headers);
        assert_eq!(captured.get("Cookie").unwrap(), "a=1; b=2");
        assert_eq!(captured.get("accept").unwrap(), "text/html, */*");
        assert!(captured.get("x-other").is_none());
        let mut headers = HeaderMap::new();
        headers.insert("referer", HeaderValue::from_static("/from"));
        assert_eq!(Captured::capture(&headers).get("Referrer").unwrap(), "/from");
    }

    #[test]
    fn every_captured_header_is_kept_past_the_inline_ones() {
        let mut headers = HeaderMap::new();
        for (i, name) in CAPTURED.iter().enumerate() {
            headers.insert(*name, HeaderValue::from(i));
        }
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let captured = Captured::capture(&headers);
        for (i, name) in CAPTURED.iter().enumerate() {
            let want = if *name == "x-forwarded-for" { format!("{i}, 10.0.0.1") } else { i.to_string() };
            assert_eq!(captured.get(name).unwrap(), want.as_str(), "{name}");
        }
    }
}
