//! [`Context`]: the per-request handle every layer, handler, hook and task can hold.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_context::{Context, ContextLayer};
//!
//! async fn handler(ctx: Context) -> String {
//!     ctx.on_finish(|ctx| println!("{} sent", ctx.id()));
//!     format!("{} {}", ctx.method(), ctx.uri())
//! }
//!
//! let app: Router = Router::new().route("/", get(handler)).layer(ContextLayer::new());
//! ```
//!
//! The handle's methods are grouped by idea: the request head here and in `head`,
//! after-hooks in `hooks`, lifecycle events in `events`, deferred edits in `edits`,
//! the typed map in `state`. Where the request is in its life (and every ordering
//! rule between `end`, errors, hooks and completion) lives in one place: `phase`.

mod config;
mod edits;
mod events;
mod head;
mod hooks;
mod phase;
mod state;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Extensions, Method, Request, Response, Uri, Version};

pub use config::ErrorAction;
pub use events::Outcome;
pub(crate) use events::errors_are_logged;
pub use state::StateMap;

pub(crate) use config::{Config, SharedConfig};
pub(crate) use edits::{
    Edit, apply as apply_edits, apply_to as apply_edits_to, invalid_status, is_valid_status,
};
pub(crate) use hooks::{Hook, Hooks};
pub(crate) use phase::{Claim, ErrorPath, Left, Signal, Started};

use crate::body::{Body, BoxError};
use crate::connection::Connection;
use crate::cookies::Cookies;
use crate::error::HttpError;
use crate::proxy::{self, ProxyHeaders, TrustProxy};
use head::{Captured, Id};
use phase::Phase;

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
    method: Method,
    uri: Uri,
    version: Version,
    headers: Captured,
    config: SharedConfig,
    /// Where the request is in its life: the only home of the flag word, the shared
    /// lock and the waker.
    pub(crate) phase: Phase,
    state: Mutex<Extensions>,
    /// Made on first use: a request nobody asks about parses no cookies.
    cookies: OnceLock<Cookies>,
    connection: Option<Connection>,
    /// The transport says the request came over TLS.
    tls: bool,
}

#[cfg(feature = "test-util")]
impl Drop for Inner {
    fn drop(&mut self) {
        crate::test_util::count_live(-1);
    }
}

/// A weak handle: it does not keep the request alive (a caught body, a task).
#[derive(Clone)]
pub(crate) struct WeakContext(Weak<Inner>);

impl WeakContext {
    pub(crate) fn upgrade(&self) -> Option<Context> {
        self.0.upgrade().map(|inner| Context { inner })
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
    pub(crate) fn new<B>(request: &Request<B>, config: SharedConfig) -> Context {
        #[cfg(feature = "test-util")]
        crate::test_util::count_live(1);
        let id = request
            .extensions()
            .get::<tower_http::request_id::RequestId>()
            .and_then(|id| Id::adopt(id.header_value()))
            .unwrap_or_else(Id::generate);
        let connection = Connection::from_extensions(request.extensions());
        let tls = connection.as_ref().is_some_and(Connection::is_tls)
            || request.extensions().get::<crate::connection::Tls>().is_some();
        // The context (several hundred bytes) is built on the stack and copied into
        // its allocation once: `new_cyclic` allocates first and writes the closure's
        // result there, for one locked increment of the count; `Arc::new` copies it
        // twice and came out no faster (BENCHMARKS.md). The captured headers are
        // filled into the context being built, not built apart and moved in.
        let inner = Arc::new_cyclic(|_| {
            let mut inner = Inner {
                id,
                method: request.method().clone(),
                uri: request.uri().clone(),
                version: request.version(),
                headers: Captured::empty(),
                config,
                phase: Phase::new(),
                state: Mutex::new(Extensions::new()),
                cookies: OnceLock::new(),
                connection,
                tls,
            };
            inner.headers.fill(request.headers());
            inner
        });
        Context { inner }
    }

    pub(crate) fn phase(&self) -> &Phase {
        &self.inner.phase
    }

    /// What the context holds for the layer (an `end`, an error), taken with the
    /// plain stores of the sole handle when it is one. Asks `is_sole` only when
    /// something is pending: the common poll finds nothing, inline.
    #[inline(always)]
    pub(crate) fn take_signal(&self) -> Option<phase::Signal> {
        self.inner.phase.take_signal(|| self.is_sole())
    }

    /// Starts the hooks ([`Phase::start_hooks`]). The request's only handle takes
    /// them without the lock: one locked instruction (`Arc::get_mut`'s) instead of
    /// two.
    pub(crate) fn start_hooks(&mut self) -> phase::Started {
        if self.is_sole()
            && let Some(inner) = Arc::get_mut(&mut self.inner)
        {
            return inner.phase.start_hooks_exclusive();
        }
        // Another handle is alive (a sole one is always made exclusive). `is_sole`
        // is asked first because it reads plainly, where `get_mut` failing would
        // still cost its compare-and-swap.
        self.inner.phase.start_hooks(false)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether this is the only handle to the request: no other `Context` is alive,
    /// and no weak one was ever made, so none can appear but from this one. Then
    /// nobody else can touch the request, and everything the dropped handles did is
    /// seen by the caller.
    ///
    /// The counts alone would not do: a weak handle could be upgraded and dropped
    /// between their two reads. [`downgrade`](Self::downgrade) marks the flags before
    /// it makes one ([`Phase::no_weak_handles`]), so with one strong handle left, the
    /// flags say whether one was ever made.
    #[inline]
    pub(crate) fn is_sole(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
            && self.inner.phase.no_weak_handles()
            && Arc::weak_count(&self.inner) == 0
    }

    /// The only maker of weak handles: it marks the flags first (see `is_sole`).
    pub(crate) fn downgrade(&self) -> WeakContext {
        self.inner.phase.note_weak();
        WeakContext(Arc::downgrade(&self.inner))
    }

    /// The jar, if anything touched it: the layer writes its changes.
    #[inline]
    pub(crate) fn touched_cookies(&self) -> Option<&Cookies> {
        self.inner.cookies.get()
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
    /// `cache-control`, `content-length`, `content-type`, `cookie`, `forwarded`, `host`,
    /// `if-modified-since`, `if-none-match`, `origin`, `referer`, `user-agent`,
    /// `x-forwarded-for`, `x-forwarded-host`, `x-forwarded-proto` and `x-sessionid`;
    /// with the `files` feature also `if-match`, `if-range`, `if-unmodified-since` and
    /// `range`, which `send_file` needs. Several lines of one header are joined into
    /// one value (`; ` for cookies, `, ` for the rest). For any other header, read the
    /// request itself. `referrer` finds `referer`.
    pub fn header(&self, name: impl AsRef<str>) -> Option<&HeaderValue> {
        self.inner.headers.get(name.as_ref())
    }

    /// The request's `Accept`, for the error renderer: its slot is known, so it is
    /// not looked up by name.
    pub(crate) fn accept_header(&self) -> Option<&HeaderValue> {
        self.inner.headers.at(head::ACCEPT)
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
            Cookies::new(
                self.inner.headers.at(head::COOKIE).cloned(),
                &self.config().cookies,
                self.is_secure(),
            )
        })
    }

    /// Whether the request came over TLS, as far as the layer may believe.
    fn is_secure(&self) -> bool {
        // TLS is https whatever a proxy says, and a proxy nobody trusts says nothing:
        // neither needs the forwarding headers looked up.
        if self.came_over_tls() {
            return true;
        }
        if matches!(self.config().trust_proxy, TrustProxy::None) {
            return false;
        }
        let headers = ProxyHeaders {
            forwarded: self.header("forwarded"),
            x_forwarded_for: self.header("x-forwarded-for"),
            x_forwarded_proto: self.header("x-forwarded-proto"),
            x_forwarded_host: self.header("x-forwarded-host"),
        };
        let peer = self.connection().map(|c| c.remote_addr().ip());
        let believed = proxy::resolve(&self.config().trust_proxy, peer, headers).proto;
        proxy::protocol(self.came_over_tls(), believed) == "https"
    }

    /// Whether the transport says the request came over TLS.
    pub(crate) fn came_over_tls(&self) -> bool {
        self.inner.tls
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
    /// the error path, or its response has left, or the client went away before it
    /// could (Close), `end` is ignored.
    pub fn end<B>(&self, response: Response<B>) -> Ended
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match self.phase().try_end(response.map(Body::new)) {
            None => Ended { first: true },
            // A refused response is dropped here, outside the lock: its body is user
            // code.
            Some(refused) => {
                drop(refused);
                Ended { first: false }
            }
        }
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
    /// goes to the `on_error` listeners and the layer's error policy only.
    pub fn emit_error(&self, error: impl Into<HttpError>) {
        if let Err(error) = self.phase().try_signal_error(error.into()) {
            self.report_error(&error);
        }
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
            if let Err(err) = task.await
                && let Some(ctx) = weak.upgrade()
            {
                ctx.emit_error(err);
            }
        });
        self.phase().add_task(handle.abort_handle());
        handle
    }

    /// Toa's `ended`: the response head has left the layer (End has fired).
    pub fn is_ended(&self) -> bool {
        self.phase().is_responded()
    }

    /// Toa's `finished`: the whole response body was handed to the server.
    pub fn is_finished(&self) -> bool {
        self.phase().is_finished()
    }

    /// Toa's `closed`: the response was dropped before it finished (the client went
    /// away, or the server gave up on it).
    pub fn is_closed(&self) -> bool {
        self.phase().is_closed()
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;

    use super::*;

    fn made() -> Context {
        Context::new(&Request::new(()), SharedConfig::default())
    }

    #[test]
    fn a_context_is_sole_only_while_no_other_handle_is_or_was_alive() {
        let ctx = made();
        assert!(ctx.is_sole());
        let other = ctx.clone();
        assert!(!ctx.is_sole() && !other.is_sole());
        drop(other);
        assert!(ctx.is_sole());

        // The state holds no handle of its own.
        ctx.state().insert(7_u8);
        assert!(ctx.is_sole());

        // A weak handle, even one gone again, leaves its maker's mark: it could have
        // been upgraded between the two counts.
        let caught = ctx.catch_stream(Empty::<Bytes>::new()).unwrap();
        assert!(!ctx.is_sole());
        drop(caught);
        assert!(!ctx.is_sole());
    }

    #[cfg(feature = "sessions")]
    #[test]
    fn a_session_makes_the_context_shared_for_good() {
        let ctx = made();
        drop(ctx.session());
        assert!(!ctx.is_sole());
    }

    #[tokio::test]
    async fn a_spawned_task_makes_the_context_shared_for_good() {
        let ctx = made();
        ctx.spawn(async { Ok::<_, HttpError>(()) }).await.unwrap();
        assert!(!ctx.is_sole());
    }
}
