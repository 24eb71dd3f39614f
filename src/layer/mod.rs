//! [`ContextLayer`], [`ContextService`] and [`ResponseFuture`]: the life of a request,
//! read top to bottom in this folder.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_context::{Context, ContextLayer, ErrorFormat};
//!
//! let app: Router = Router::new()
//!     .route("/", get(|ctx: Context| async move { format!("request {}", ctx.id()) }))
//!     .layer(ContextLayer::new().error_format(ErrorFormat::ProblemJson));
//! ```
//!
//! 1. [`ContextService::call`] (here) finds the request's [`Context`] in its
//!    extensions (a nested layer reuses it and only passes through) or makes one and
//!    inserts it, then calls the inner service.
//! 2. The [`ResponseFuture`] (`future.rs`) polls the inner future, and before each
//!    poll looks for a signal from the context: an `end` or an error from anywhere.
//!    An inner response goes out untouched when nothing asked to change it;
//!    otherwise the deferred edits apply, then the after-hooks run, last added first.
//! 3. Every exit is in `respond.rs`: one `respond` for a response, one `fail` for
//!    every error (inner `Err`, a response carrying an `HttpError`, a hook's error, a
//!    panic, `emit_error`, a task's error): Error fires, the app's error policy
//!    decides, and the error is rendered. On every path: Set-Cookie for the jar's
//!    changes, no body for HEAD and 204/205/304, End fires.
//! 4. The [`ResponseBody`] (`body.rs`) then holds the request's completion
//!    (`completion.rs`): Finish at its end, Close if it is dropped first.

mod body;
mod completion;
mod future;
mod respond;

use std::convert::Infallible;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service};

pub use body::ResponseBody;
pub use future::ResponseFuture;

use crate::body::{Body, BoxError};
use crate::context::{Config, Context, ErrorAction, SharedConfig};
use crate::cookies::{Keys, SignedFormat};
use crate::error::{ErrorFormat, HttpError, panic_error};
use crate::proxy::TrustProxy;
use completion::Completion;

/// Gives every request a [`Context`]: the one line to adopt the crate.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_context::{Context, ContextLayer};
///
/// let app: Router = Router::new()
///     .route("/", get(|ctx: Context| async move { format!("request {}", ctx.id()) }))
///     .layer(ContextLayer::new());
/// ```
///
/// The service it makes never fails (`Error = Infallible`): every error becomes a
/// rendered response, so it fits under `axum::Router::layer` as it is.
///
/// Layers can be stacked freely: a `ContextLayer` that finds a [`Context`] already in
/// the request (an outer `ContextLayer` made it) reuses it and only passes through;
/// the outer layer, with its settings, owns the request's hooks, errors and events.
/// An error or panic inside a nested layer reaches the outer one as a response that
/// carries the error, and is rendered there.
#[derive(Clone, Default)]
pub struct ContextLayer {
    config: SharedConfig,
}

impl fmt::Debug for ContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.config, f)
    }
}

impl ContextLayer {
    /// Every feature with its defaults: panics caught, errors negotiated.
    pub fn new() -> Self {
        ContextLayer::default()
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(self.config.make_mut());
        self
    }

    /// Gives every request a session ([`Context::session`](crate::Context::session)),
    /// kept in `sessions`' store under a signed id cookie: see the
    /// [`session`](crate::session) module. Needs [`keys`](Self::keys).
    #[cfg(feature = "sessions")]
    #[must_use]
    pub fn sessions(self, sessions: crate::session::Sessions) -> Self {
        self.with(|config| {
            config.set_feature(sessions);
        })
    }

    /// Whether a panic in the inner service or a hook becomes a 500 response (the
    /// default) or unwinds to the server.
    #[must_use]
    pub fn catch_panic(self, enabled: bool) -> Self {
        self.with(|c| c.catch_panic = enabled)
    }

    /// How error bodies are written; [`ErrorFormat::Negotiate`] by default.
    #[must_use]
    pub fn error_format(self, format: ErrorFormat) -> Self {
        self.with(|c| c.error_format = format)
    }

    /// The app-level error policy, Toa's `options.onerror`: it sees every error with
    /// the request's context and decides what goes out (see [`ErrorAction`]).
    ///
    /// It is also told of errors that come after the response head left (a body that
    /// fails mid-stream); its answer cannot change anything then.
    ///
    /// ```
    /// use tower_context::{ContextLayer, ErrorAction};
    ///
    /// let layer = ContextLayer::new().handle_error(|err, ctx| {
    ///     if err.status() == 404 && ctx.uri().path().starts_with("/legacy/") {
    ///         return ErrorAction::Render(err.message("gone for good").expose(true));
    ///     }
    ///     ErrorAction::Render(err)
    /// });
    /// ```
    #[must_use]
    pub fn handle_error<F>(self, policy: F) -> Self
    where
        F: Fn(HttpError, &Context) -> ErrorAction + Send + Sync + 'static,
    {
        self.with(|c| c.handle_error = Some(Arc::new(policy)))
    }

    /// The old name of [`handle_error`](Self::handle_error), which says what it does
    /// apart from [`Context::on_error`] (a listener).
    #[deprecated(since = "0.2.0", note = "renamed to `handle_error`; `Context::on_error` is the listener")]
    #[must_use]
    pub fn on_error<F>(self, policy: F) -> Self
    where
        F: Fn(HttpError, &Context) -> ErrorAction + Send + Sync + 'static,
    {
        self.handle_error(policy)
    }

    /// Replaces the built-in error bodies with your own schema.
    ///
    /// The renderer makes the status and body; the layer still keeps the whitelisted
    /// headers, applies the error's own headers and `x-content-type-options: nosniff`,
    /// writes cookies and drops the body of a HEAD response.
    #[must_use]
    pub fn render_error<F>(self, renderer: F) -> Self
    where
        F: Fn(&HttpError, &Context) -> Response<Body> + Send + Sync + 'static,
    {
        self.with(|c| c.renderer = Some(Arc::new(renderer)))
    }

    /// Polls each response body's first frame before the head leaves the layer, so a
    /// stream that fails before its first byte becomes a real error response instead
    /// of a 200 that stops short. Off by default; [`FirstFrame`](crate::stream::FirstFrame) turns it on for one
    /// response.
    ///
    /// The trade-off: the head waits for the first frame, so time to first byte
    /// becomes the time to the first frame (fine for a file or an upstream that answers
    /// at once; for a stream that stays quiet before its first event, such as some SSE
    /// feeds, send an early comment frame or leave this off for that route). The one
    /// frame is held, then sent first; nothing more is buffered. Bodies that are
    /// already complete (full bytes, empty) are not touched.
    #[must_use]
    pub fn first_frame(self, enabled: bool) -> Self {
        self.with(|c| c.first_frame = enabled)
    }

    /// The keys for signed and private cookies, newest first (see [`Keys`]).
    ///
    /// ```
    /// use tower_context::ContextLayer;
    /// use tower_context::cookies::Keys;
    ///
    /// let layer = ContextLayer::new().keys(Keys::new(["2025-06 secret", "2025-01 secret"]));
    /// ```
    #[must_use]
    pub fn keys(self, keys: Keys) -> Self {
        self.with(|c| c.cookies.keys = Some(keys))
    }

    /// The format of signed cookies: [`SignedFormat::KEYGRIP`] by default (Koa's,
    /// Toa's and Express's), or [`SignedFormat::Cookie`] to share signed cookies with
    /// axum-extra or tower-cookies.
    #[must_use]
    pub fn signed_format(self, format: SignedFormat) -> Self {
        self.with(|c| c.cookies.format = format)
    }

    /// How many of a request's cookie pairs the jar reads at most (256 by default;
    /// browsers keep about 180 per site). A `Cookie` header of tens of thousands of
    /// pairs then costs no more than a browser's largest; cookies past the limit read
    /// as absent, and [`Cookies::truncated`](crate::Cookies::truncated) says so. 0
    /// counts as 1.
    #[must_use]
    pub fn max_cookie_pairs(self, pairs: usize) -> Self {
        self.with(|c| c.cookies.max_pairs = pairs.max(1))
    }

    /// Whether a `Secure` cookie may be set on a request that is not secure. Off by
    /// default: such a cookie is refused with [`CookieError::SecureOverHttp`](crate::CookieError::SecureOverHttp), as Koa
    /// does, since the browser would not send it back over http. Turn it on behind a
    /// TLS-terminating proxy you cannot mark as trusted.
    #[must_use]
    pub fn allow_secure_cookies_over_http(self, allow: bool) -> Self {
        self.with(|c| c.cookies.secure_over_http = allow)
    }

    /// The public roots [`Context::send_file`] searches (feature `files`); see
    /// [`PublicFiles`](crate::files::PublicFiles). Without them `send_file` fails
    /// with a 500.
    ///
    /// ```
    /// use tower_context::{ContextLayer, PublicFiles};
    ///
    /// let layer = ContextLayer::new().public_files(PublicFiles::new(["public"]));
    /// ```
    #[cfg(feature = "files")]
    #[must_use]
    pub fn public_files(self, files: crate::files::PublicFiles) -> Self {
        self.with(|config| {
            config.set_feature(files);
        })
    }

    /// Which proxies' `X-Forwarded-*` and `Forwarded` headers are believed;
    /// [`TrustProxy::None`] by default. See [the `proxy` module](crate::proxy).
    ///
    /// ```
    /// use tower_context::{ContextLayer, TrustProxy};
    ///
    /// let layer = ContextLayer::new().trust_proxy(TrustProxy::Hops(1));
    /// ```
    #[must_use]
    pub fn trust_proxy(self, trust: TrustProxy) -> Self {
        self.with(|c| c.trust_proxy = trust)
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextService { inner, config: self.config.clone(), not_ready: None }
    }
}

/// The service [`ContextLayer`] makes.
pub struct ContextService<S> {
    inner: S,
    config: SharedConfig,
    /// An error the inner service gave in `poll_ready`, rendered by the next `call`.
    not_ready: Option<HttpError>,
}

impl<S: Clone> Clone for ContextService<S> {
    fn clone(&self) -> Self {
        ContextService { inner: self.inner.clone(), config: self.config.clone(), not_ready: None }
    }
}

impl<S: fmt::Debug> fmt::Debug for ContextService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextService").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ContextService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError> + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none()
            && let Err(err) = ready!(self.inner.poll_ready(cx))
        {
            self.not_ready = Some(HttpError::from_service_error(err));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // One look into the extensions: insert, and put back an outer layer's context
        // if there was one (then this layer only passes through).
        let ctx = Context::new(&request, self.config.clone());
        let completion = match request.extensions_mut().insert(ctx.clone()) {
            None => Some(Completion::new(ctx)),
            Some(outer) => {
                // Nested layers are rare: the context made here is simply dropped (no
                // completion was made for it, so no event fires).
                request.extensions_mut().insert(outer);
                None
            }
        };
        let catch_panic = self.config.catch_panic;
        if let Some(err) = self.not_ready.take() {
            return ResponseFuture::failed(err, completion, catch_panic);
        }
        if !catch_panic {
            return ResponseFuture::new(self.inner.call(request), completion, catch_panic);
        }
        // The whole future is built inside the guard, so the inner one goes straight
        // into it instead of out of the guard and then into the state (futures can be
        // large; what is left is the one move out of the guard's result). The
        // completion stays outside until the call has returned: a panic leaves it
        // here, for the error response.
        let mut completion = Some(completion);
        let inner = &mut self.inner;
        let built = catch_unwind(AssertUnwindSafe(|| {
            ResponseFuture::new(inner.call(request), completion.take().flatten(), catch_panic)
        }));
        built.unwrap_or_else(|panic| {
            ResponseFuture::failed(panic_error(panic), completion.flatten(), catch_panic)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{Empty, Full};
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// Serves one request through `layer`, the handler doing `register` with its
    /// context and answering with `body`; whether the response's body carries the
    /// request's completion.
    async fn watched<B>(layer: ContextLayer, register: fn(&Context), body: B) -> bool
    where
        B: http_body::Body<Data = Bytes> + Clone + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let svc = layer.layer(service_fn(move |req: Request<()>| {
            if let Some(ctx) = req.extensions().get::<Context>() {
                register(ctx);
            }
            let body = body.clone();
            async move { Ok::<_, Infallible>(Response::new(body)) }
        }));
        let Ok(res) = svc.oneshot(Request::new(())).await;
        res.body().is_watched()
    }

    fn full() -> Full<Bytes> {
        Full::new(Bytes::from_static(b"hello"))
    }

    #[tokio::test]
    async fn an_unobserved_request_lets_its_context_go_with_the_head() {
        // A body at its end cannot fail: nothing could ever be told.
        assert!(!watched(ContextLayer::new(), |_| {}, Empty::<Bytes>::new()).await);
        // A body that could still fail, but no subscriber is installed in this test
        // process, so nothing would log its failure either.
        assert!(!watched(ContextLayer::new(), |_| {}, full()).await);
    }

    /// An inner future that keeps a handle to the request's context after it has
    /// returned its response, until it is dropped.
    struct KeepsItsHandle {
        _handle: Option<Context>,
    }

    impl std::future::Future for KeepsItsHandle {
        type Output = Result<Response<Full<Bytes>>, Infallible>;

        fn poll(self: std::pin::Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Self::Output> {
            Poll::Ready(Ok(Response::new(full())))
        }
    }

    #[tokio::test]
    async fn a_finished_inner_future_is_dropped_before_the_context_is_let_go() {
        // The handle the finished future holds is gone before the layer asks whether
        // anyone else could see the request complete: nobody can, so the body does
        // not carry the context.
        let svc = ContextLayer::new().layer(service_fn(|req: Request<()>| KeepsItsHandle {
            _handle: req.extensions().get::<Context>().cloned(),
        }));
        let Ok(res) = svc.oneshot(Request::new(())).await;
        assert!(!res.body().is_watched());
    }

    #[tokio::test]
    async fn an_observed_request_keeps_its_context_until_the_body_ends() {
        let hooked = ContextLayer::new().handle_error(|err, _| ErrorAction::Render(err));
        assert!(watched(hooked, |_| {}, full()).await, "the app's error policy hears of a failing body");
        assert!(watched(ContextLayer::new(), |ctx| ctx.on_finish(|_| {}), Empty::<Bytes>::new()).await);
        assert!(watched(ContextLayer::new(), |ctx| ctx.on_close(|_| {}), full()).await);
        assert!(
            watched(
                ContextLayer::new(),
                |ctx| {
                    ctx.state().insert(1_u8);
                },
                Empty::<Bytes>::new()
            )
            .await
        );
        assert!(
            watched(ContextLayer::new(), |ctx| drop(ctx.spawn(async { Ok::<(), HttpError>(()) })), full())
                .await
        );
    }

    /// The inner service failed, and the layer looked for a signal just before an
    /// `end` from another thread was accepted: on the error path it meets that
    /// `end`, which was accepted before the hooks, so it goes to them, as when the
    /// layer sees it first; the error is reported. (The window is a few instructions
    /// wide: this takes the layer's step on its own, at the moment after it.)
    #[tokio::test]
    async fn an_end_accepted_just_after_the_layer_looked_still_goes_to_the_hooks() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (tx, rx) = std::sync::mpsc::channel();
        let mut svc = ContextLayer::new().layer(service_fn(move |req: Request<()>| {
            tx.send(req.extensions().get::<Context>().cloned().expect("a context")).unwrap();
            std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>()
        }));
        let future = svc.ready().await.unwrap().call(Request::new(()));
        let ctx = rx.recv().unwrap();
        let reported = Arc::new(AtomicUsize::new(0));
        let r = reported.clone();
        ctx.on_error(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        ctx.after(|res| async move { Ok(res) }).unwrap();
        assert!(ctx.end(Response::new(Body::from("ended"))).is_first());

        let respond::Failed::ToHooks(ended) =
            respond::fail_before_hooks::<Empty<Bytes>>(&ctx, HttpError::new(500), None)
        else {
            panic!("the ended response goes to the hooks, not out");
        };
        assert_eq!(http_body_util::BodyExt::collect(ended.into_body()).await.unwrap().to_bytes(), "ended");
        assert_eq!(reported.load(Ordering::SeqCst), 1, "the error is reported");
        assert!(!ctx.is_ended(), "nothing has left yet");
        assert!(ctx.after(|res| async move { Ok(res) }).is_ok(), "the hooks have not started");
        drop(future);
    }
}
