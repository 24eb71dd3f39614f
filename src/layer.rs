//! [`ContextLayer`], [`ContextService`] and [`ResponseFuture`]: the life of a request.
//!
//! 1. `call` finds the request's [`Context`] in its extensions (a nested layer reuses
//!    it and only passes through) or makes one and inserts it.
//! 2. The response future polls the inner future, and before each poll looks for a
//!    signal from the context: an `end` or an error from anywhere.
//! 3. An inner response goes out untouched when nothing asked to change it. Otherwise
//!    the deferred edits apply, then the after-hooks run, last added first.
//! 4. Every error (inner `Err`, a response carrying an `HttpError`, a hook's error, a
//!    panic, `emit_error`, a task's error) takes one error path: Error fires, the
//!    app's error hook decides, and the error is rendered.
//! 5. On every path: Set-Cookie for the jar's changes, no body for HEAD and
//!    204/205/304, End fires, and the body takes over the request's completion
//!    (Finish at its end, Close if dropped first).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body as _;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::context::{Context, apply_edits, flag};
use crate::error::{ErrorFormat, HttpError, Thrown, panic_error, render};
use crate::events::Completion;
use crate::hooks::{Hook, Hooks};
use crate::stream::{FirstFrame, Prefixed};
use crate::{Body, BoxError};

/// What the app-level error hook ([`ContextLayer::on_error`]) decides.
#[derive(Debug)]
pub enum ErrorAction {
    /// Render this error (the one given, or a replacement).
    Render(HttpError),
    /// Send this response instead of a rendered error.
    Respond(Response<Body>),
    /// Swallow the error and send the response that was about to go out (Toa's
    /// `onerror` returning `true`): the response that carried the error, or an empty
    /// one with the deferred edits applied.
    Swallow,
}

type ErrorHook = dyn Fn(HttpError, &Context) -> ErrorAction + Send + Sync;
type Renderer = dyn Fn(&HttpError, &Context) -> Response<Body> + Send + Sync;

/// The layer's settings, shared by every request through the context.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) catch_panic: bool,
    pub(crate) error_format: ErrorFormat,
    pub(crate) on_error: Option<Arc<ErrorHook>>,
    pub(crate) renderer: Option<Arc<Renderer>>,
    pub(crate) cookies: crate::cookies::CookieConfig,
    pub(crate) trust_proxy: crate::proxy::TrustProxy,
    pub(crate) first_frame: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            catch_panic: true,
            error_format: ErrorFormat::Negotiate,
            on_error: None,
            renderer: None,
            cookies: crate::cookies::CookieConfig::default(),
            trust_proxy: crate::proxy::TrustProxy::default(),
            first_frame: false,
        }
    }
}

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
    config: Arc<Config>,
}

impl fmt::Debug for ContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextLayer")
            .field("catch_panic", &self.config.catch_panic)
            .field("error_format", &self.config.error_format)
            .field("on_error", &self.config.on_error.is_some())
            .field("render_error", &self.config.renderer.is_some())
            .finish()
    }
}

impl ContextLayer {
    /// Every feature with its defaults: panics caught, errors negotiated.
    pub fn new() -> Self {
        ContextLayer::default()
    }

    /// Changes the settings; other modules' builder methods go through here.
    pub(crate) fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
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

    /// The app-level error hook, Toa's `options.onerror`: it sees every error with the
    /// request's context and decides what goes out (see [`ErrorAction`]).
    ///
    /// It is also told of errors that come after the response head left (a body that
    /// fails mid-stream); its answer cannot change anything then.
    ///
    /// ```
    /// use tower_context::{ContextLayer, ErrorAction};
    ///
    /// let layer = ContextLayer::new().on_error(|err, ctx| {
    ///     if err.status() == 404 && ctx.uri().path().starts_with("/legacy/") {
    ///         return ErrorAction::Render(err.message("gone for good").expose(true));
    ///     }
    ///     ErrorAction::Render(err)
    /// });
    /// ```
    #[must_use]
    pub fn on_error<F>(self, hook: F) -> Self
    where
        F: Fn(HttpError, &Context) -> ErrorAction + Send + Sync + 'static,
    {
        self.with(|c| c.on_error = Some(Arc::new(hook)))
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
    config: Arc<Config>,
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
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(err) = ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(HttpError::from_error(err));
            }
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
        let owner = completion.is_some();
        let catch_panic = self.config.catch_panic;
        let failed = |error, completion| ResponseFuture {
            state: State::Failed { error: Some(error) },
            completion,
            owner,
            catch_panic,
        };
        if let Some(err) = self.not_ready.take() {
            return failed(err, completion);
        }
        if !catch_panic {
            return ResponseFuture {
                state: State::Inner { future: self.inner.call(request) },
                completion,
                owner,
                catch_panic,
            };
        }
        // The whole future is built inside the guard, so the inner one goes straight
        // into it instead of out of the guard and then into the state (futures can be
        // large; what is left is the one move out of the guard's result). The
        // completion stays outside until the call has returned: a panic leaves it
        // here, for the error response.
        let mut completion = Some(completion);
        let inner = &mut self.inner;
        let built = catch_unwind(AssertUnwindSafe(|| {
            let future = inner.call(request);
            ResponseFuture {
                state: State::Inner { future },
                completion: completion.take().flatten(),
                owner,
                catch_panic,
            }
        }));
        built.unwrap_or_else(|panic| failed(panic_error(panic), completion.flatten()))
    }
}

pin_project! {
    /// The future of [`ContextService`]. Not boxed: its states are pinned in place.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        // Present while this layer owns the request's lifecycle (it made the context)
        // and the response has not left; it holds the context. Dropped with the
        // future: Close.
        completion: Option<Completion>,
        owner: bool,
        catch_panic: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        // Boxed: these states are rare, and the response future stays small (it is
        // moved around by every layer above).
        Hooks { response: Option<Box<Response<Body>>>, pending: Hooks, running: Option<Hook> },
        // Waiting for the body's first frame before the head may go (first-frame mode).
        FirstFrame { response: Option<Box<Response<Body>>> },
        Failed { error: Option<HttpError> },
        Done,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").field("owner", &self.owner).finish_non_exhaustive()
    }
}

/// What the context holds for the layer.
enum Signal {
    Error(HttpError),
    End(Response<Body>),
}

impl Context {
    fn take_signal(&self) -> Option<Signal> {
        if !self.has(flag::SIGNAL) {
            return None;
        }
        let mut shared = self.lock();
        let signal = match shared.error.take() {
            Some(err) => {
                // Taken to be rendered: from here on the request is on the error path
                // (under the lock, so an `end` that comes after is refused, not accepted
                // and then dropped).
                self.set(flag::ERROR_PATH);
                Some(Signal::Error(err))
            }
            None => shared.ended.take().map(|ended| Signal::End(*ended)),
        };
        if shared.error.is_none() && shared.ended.is_none() {
            self.clear(flag::SIGNAL);
        }
        signal
    }
}

/// An error from the inner service (its `Err`, or a panic) meets what the context
/// holds: a signalled error came first (it is rendered, this one only told), or an
/// accepted `end` did (its response goes on to the hooks, this error only told, never
/// silently dropped); else this error is rendered.
fn settle(ctx: &Context, err: HttpError) -> Result<Response<Body>, HttpError> {
    match ctx.take_signal() {
        Some(Signal::Error(signalled)) => {
            ctx.report_error(&err);
            Err(signalled)
        }
        Some(Signal::End(ended)) => {
            ctx.report_error(&err);
            Ok(ended)
        }
        None => Err(err),
    }
}

/// Runs user code (a poll, a hook call), turning a panic into a 500 when `catch` is on.
fn guarded<T>(catch: bool, f: impl FnOnce() -> T) -> Result<T, HttpError> {
    if catch { catch_unwind(AssertUnwindSafe(f)).map_err(panic_error) } else { Ok(f()) }
}

type Output<B> = Result<Response<ResponseBody<B>>, Infallible>;

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let output = match this.completion.take() {
            Some(completion) => {
                // Held in a local while the request runs, so that even an unwinding
                // panic (with catch_panic off) drops it and fires Close.
                let polled = poll_owner(this.state.as_mut(), completion.ctx(), *this.catch_panic, cx);
                match polled {
                    Poll::Pending => {
                        *this.completion = Some(completion);
                        return Poll::Pending;
                    }
                    Poll::Ready(mut response) => {
                        if completion.unobserved() && body_cannot_report(completion.ctx(), &response) {
                            // Nobody can ever see Finish or Close: the context goes now
                            // rather than riding along with the body.
                            completion.release();
                        } else {
                            // The body takes over: Finish at its end, Close if dropped
                            // first.
                            response.body_mut().watch(completion);
                        }
                        Ok(response)
                    }
                }
            }
            None if *this.owner => panic!("ResponseFuture polled after completion"),
            None => ready!(this.state.as_mut().poll_passthrough(*this.catch_panic, cx)),
        };
        // Whatever the state still holds (the inner future, a hook) is dropped now.
        this.state.set(State::Done);
        Poll::Ready(output)
    }
}

/// The request's life when this layer owns it; see the module docs.
fn poll_owner<F, B, E>(
    mut state: Pin<&mut State<F>>,
    ctx: &Context,
    catch_panic: bool,
    cx: &mut TaskContext<'_>,
) -> Poll<Response<ResponseBody<B>>>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        match state.as_mut().project() {
            StateProj::Inner { future } => {
                let polled = match ctx.take_signal() {
                    Some(signal) => Ok(Poll::Ready(Err(signal))),
                    None => guarded(catch_panic, || future.poll(cx)).map(|p| p.map(Ok)),
                };
                let response = match polled {
                    Ok(Poll::Pending) => {
                        // Only a future that waits needs waking by `end` or an error;
                        // one that was ready never registers. Check again after
                        // registering, for a signal that came in between.
                        ctx.inner.waker.register(cx.waker());
                        if ctx.has(flag::SIGNAL) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    Ok(Poll::Ready(Err(Signal::Error(err)))) => {
                        return Poll::Ready(fail(ctx, err, None));
                    }
                    Ok(Poll::Ready(Err(Signal::End(ended)))) => ended,
                    Err(err) => match settle(ctx, err) {
                        Ok(ended) => ended,
                        Err(err) => return Poll::Ready(fail(ctx, err, None)),
                    },
                    Ok(Poll::Ready(Ok(Err(err)))) => match settle(ctx, HttpError::from_error(err)) {
                        Ok(ended) => ended,
                        Err(err) => return Poll::Ready(fail(ctx, err, None)),
                    },
                    Ok(Poll::Ready(Ok(Ok(mut response)))) => {
                        let thrown = response.extensions_mut().remove::<Thrown>();
                        match (ctx.take_signal(), thrown) {
                            (Some(Signal::Error(err)), thrown) => {
                                if let Some(Thrown(other)) = thrown {
                                    ctx.report_error(&other);
                                }
                                let prior = response.map(Body::new);
                                return Poll::Ready(fail(ctx, err, Some(prior)));
                            }
                            (Some(Signal::End(ended)), thrown) => {
                                if let Some(Thrown(other)) = thrown {
                                    ctx.report_error(&other);
                                }
                                drop(response);
                                ended
                            }
                            (None, Some(Thrown(err))) => {
                                let prior = response.map(Body::new);
                                return Poll::Ready(fail(ctx, err, Some(prior)));
                            }
                            (None, None) => {
                                let first_frame = wants_first_frame(ctx, &response);
                                match ctx.claim_untouched(!first_frame) {
                                    None => response.map(Body::new),
                                    Some(_) if first_frame => {
                                        let response = Some(Box::new(response.map(Body::new)));
                                        state.set(State::FirstFrame { response });
                                        continue;
                                    }
                                    // Nothing asked to change the response: it goes out
                                    // with the inner body as it is.
                                    Some(true) => {
                                        let mut response = response.map(ResponseBody::inner);
                                        send_head(ctx, &mut response, None);
                                        return Poll::Ready(response);
                                    }
                                    Some(false) => {
                                        let response = response.map(ResponseBody::inner);
                                        return Poll::Ready(respond(ctx, response, false));
                                    }
                                }
                            }
                        }
                    }
                };
                state.set(start_hooks(ctx, response));
            }
            StateProj::Hooks { response, pending, running } => {
                if running.is_none() {
                    // Last added, first run.
                    let Some(hook) = pending.pop() else {
                        let response = *response.take().unwrap_or_default();
                        if wants_first_frame(ctx, &response) {
                            state.set(State::FirstFrame { response: Some(Box::new(response)) });
                            continue;
                        }
                        state.set(State::Done);
                        let response = response.map(ResponseBody::replaced);
                        return Poll::Ready(respond(ctx, response, false));
                    };
                    *running = Some(hook);
                }
                // A signal that came before this hook's first poll, or woke it.
                if let Some(signal) = ctx.take_signal() {
                    *running = None;
                    return Poll::Ready(match signal {
                        Signal::Error(err) => fail(ctx, err, None),
                        Signal::End(ended) => {
                            pending.clear();
                            send_ended(ctx, ended)
                        }
                    });
                }
                let Some(hook) = running.as_mut() else { continue };
                // The first poll calls the hook with the response; the one it returns
                // goes back into the same box.
                match guarded(catch_panic, || hook.as_mut().poll_hook(response, cx)) {
                    Ok(Poll::Pending) => {
                        // As for the inner future: only a hook that waits needs waking
                        // by `end` or an error, and a signal that came in between is
                        // caught by the check after registering.
                        ctx.inner.waker.register(cx.waker());
                        if ctx.has(flag::SIGNAL) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    Err(err) | Ok(Poll::Ready(Err(err))) => {
                        *running = None;
                        return Poll::Ready(fail(ctx, err, None));
                    }
                    Ok(Poll::Ready(Ok(()))) => {
                        *running = None;
                        match ctx.take_signal() {
                            Some(Signal::Error(err)) => {
                                let next = response.take().map(|next| *next);
                                return Poll::Ready(fail(ctx, err, next));
                            }
                            Some(Signal::End(ended)) => {
                                pending.clear();
                                return Poll::Ready(send_ended(ctx, ended));
                            }
                            None => {}
                        }
                    }
                }
            }
            StateProj::FirstFrame { response } => {
                ctx.inner.waker.register(cx.waker());
                match ctx.take_signal() {
                    Some(Signal::Error(err)) => {
                        let prior = response.take().map(|r| r.map(|_| Body::empty()));
                        return Poll::Ready(fail(ctx, err, prior));
                    }
                    Some(Signal::End(ended)) => {
                        return Poll::Ready(send_ended(ctx, ended));
                    }
                    None => {}
                }
                let Some(pending) = response.as_mut() else { continue };
                let polled = guarded(catch_panic, || Pin::new(pending.body_mut()).poll_frame(cx));
                let first = match polled {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Some(Ok(frame)))) => Some(frame),
                    Ok(Poll::Ready(None)) => None,
                    Ok(Poll::Ready(Some(Err(err)))) => {
                        return Poll::Ready(first_frame_failed(ctx, response.take(), Ok(err)));
                    }
                    Err(panic) => return Poll::Ready(first_frame_failed(ctx, response.take(), Err(panic))),
                };
                let (parts, rest) = response.take().unwrap_or_default().into_parts();
                let body = match first {
                    Some(frame) => Prefixed::body(frame, rest),
                    None => Body::empty(),
                };
                let response = Response::from_parts(parts, ResponseBody::replaced(body));
                return Poll::Ready(respond(ctx, response, false));
            }
            StateProj::Failed { error } => {
                let err = error.take().unwrap_or_else(|| HttpError::new(500));
                match settle(ctx, err) {
                    Ok(ended) => state.set(start_hooks(ctx, ended)),
                    Err(err) => {
                        state.set(State::Done);
                        return Poll::Ready(fail(ctx, err, None));
                    }
                }
            }
            StateProj::Done => panic!("ResponseFuture polled after completion"),
        }
    }
}

/// The body failed before its first frame (first-frame mode): a real error response.
/// `failure` is the body's error, or the panic it raised.
fn first_frame_failed<B>(
    ctx: &Context,
    pending: Option<Box<Response<Body>>>,
    failure: Result<BoxError, HttpError>,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // The handler's headers (CORS, vary, ...) count as set before the error.
    let prior = pending.map(|r| r.map(|_| Body::empty()));
    let err = match failure {
        Err(panic) => panic,
        Ok(_) if ctx.has(flag::STREAM_FAILED) => {
            // A caught stream already told the context: its error (or an `end` that
            // beat it) is what goes out.
            match ctx.take_signal() {
                Some(Signal::Error(reported)) => reported,
                Some(Signal::End(ended)) => {
                    drop(prior);
                    return send_ended(ctx, ended);
                }
                None => return fail_reported(ctx, prior),
            }
        }
        Ok(err) => HttpError::from_error(err),
    };
    fail(ctx, err, prior)
}

/// Whether nothing would hear of this body failing: it is already at its end, or
/// there is no app-level error hook and no tracing to tell (listeners are checked by
/// `Completion::unobserved`).
fn body_cannot_report<B: http_body::Body>(ctx: &Context, response: &Response<B>) -> bool {
    response.body().is_end_stream() || (ctx.config().on_error.is_none() && !cfg!(feature = "tracing"))
}

/// Whether the layer should poll this response's first frame before sending the head.
/// Bodies whose length is known (full bytes) cannot fail before their first frame.
fn wants_first_frame<T: http_body::Body>(ctx: &Context, response: &Response<T>) -> bool {
    (ctx.config().first_frame || response.extensions().get::<FirstFrame>().is_some())
        && !response.body().is_end_stream()
        && response.body().size_hint().exact().is_none()
        && ctx.method() != Method::HEAD
        && !matches!(response.status().as_u16(), 204 | 205 | 304)
}

impl<F, B, E> State<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    /// A nested layer: the outer one owns the request. Errors and panics become
    /// responses that carry the error, for the outer layer to render.
    fn poll_passthrough(self: Pin<&mut Self>, catch: bool, cx: &mut TaskContext<'_>) -> Poll<Output<B>> {
        let err = match self.project() {
            StateProj::Inner { future } => match guarded(catch, || future.poll(cx)) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(response))) => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                Ok(Poll::Ready(Err(err))) => HttpError::from_error(err),
                Err(panic) => panic,
            },
            StateProj::Failed { error } => error.take().unwrap_or_else(|| HttpError::new(500)),
            StateProj::Hooks { .. } | StateProj::FirstFrame { .. } | StateProj::Done => {
                panic!("ResponseFuture polled after completion")
            }
        };
        Poll::Ready(Ok(err.into_response().map(ResponseBody::replaced)))
    }
}

/// Applies the deferred edits and moves to the hooks.
fn start_hooks<F>(ctx: &Context, response: Response<Body>) -> State<F> {
    let (pending, edits, ended) = ctx.start_hooks();
    // An `end` that came just now wins over the inner response, as it would have a
    // moment earlier (the inner one is dropped here, outside the lock).
    let response = ended.unwrap_or(response);
    let response = if edits.is_empty() {
        response
    } else {
        let (mut parts, body) = response.into_parts();
        apply_edits(edits, &mut parts.status, &mut parts.headers);
        Response::from_parts(parts, body)
    };
    State::Hooks { response: Some(Box::new(response)), pending, running: None }
}

/// Sends a response given to `end`, as it is (no hook runs on it from here).
fn send_ended<B>(ctx: &Context, ended: Response<Body>) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    respond(ctx, ended.map(ResponseBody::replaced), false)
}

/// The error path: Error fires, the app's hook decides, the error is rendered.
fn fail<B>(ctx: &Context, err: HttpError, prior: Option<Response<Body>>) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    error_response(ctx, Some(err), prior)
}

/// The error path for an error that listeners and the app's hook were already told
/// of (a caught stream's, when nothing was left to render it with): a plain 500.
fn fail_reported<B>(ctx: &Context, prior: Option<Response<Body>>) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    error_response(ctx, None, prior)
}

/// `fail` and `fail_reported`: `err` is `None` when the error was told already.
fn error_response<B>(
    ctx: &Context,
    err: Option<HttpError>,
    prior: Option<Response<Body>>,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let edits = match enter_error_path(ctx) {
        ErrorPath::Entered(edits) => edits,
        ErrorPath::Ended(ended) => {
            // An `end` accepted before this error came to light wins over it, as it
            // does when the layer sees the end first: its response goes out, and the
            // error is only reported.
            drop(prior);
            if let Some(err) = &err {
                ctx.report_error(err);
            }
            return send_ended(ctx, ended);
        }
    };
    let Some(err) = err else {
        let response = render_error(ctx, &HttpError::new(500), prior, edits);
        return respond(ctx, response.map(ResponseBody::replaced), true);
    };
    ctx.emit_error_event(&err);
    let action = match &ctx.config().on_error {
        Some(hook) => catch_unwind(AssertUnwindSafe(|| hook(err, ctx)))
            .unwrap_or_else(|panic| ErrorAction::Render(panic_error(panic))),
        None => ErrorAction::Render(err),
    };
    let response = match action {
        ErrorAction::Render(err) => render_error(ctx, &err, prior, edits),
        ErrorAction::Respond(response) => response,
        ErrorAction::Swallow => {
            let (mut parts, body) = prior.unwrap_or_default().into_parts();
            apply_edits(edits, &mut parts.status, &mut parts.headers);
            Response::from_parts(parts, body)
        }
    };
    respond(ctx, response.map(ResponseBody::replaced), true)
}

/// What an error finds when it goes to take the error path.
enum ErrorPath {
    /// The error path is taken: the deferred edits, for the rendered error.
    Entered(Vec<crate::context::Edit>),
    /// An `end` was accepted first and its response not sent yet: it goes out.
    Ended(Response<Body>),
}

/// Marks the error path under the lock (so no `end` can be accepted after it),
/// cancels the request's tasks, and returns the deferred edits; unless an accepted
/// `end` is still waiting, which is returned instead, the path left untaken.
fn enter_error_path(ctx: &Context) -> ErrorPath {
    let mut shared = ctx.lock();
    if let Some(ended) = shared.ended.take() {
        // An error cannot be pending beside it (each refuses the other): nothing is
        // left to signal. No hook can be added from here on: none would run.
        if shared.error.is_none() {
            ctx.clear(flag::SIGNAL);
        }
        ctx.set(flag::HOOKS_STARTED);
        return ErrorPath::Ended(*ended);
    }
    ctx.set(flag::ERROR_PATH);
    let edits = std::mem::take(&mut shared.edits);
    drop(shared);
    ctx.abort_tasks();
    ErrorPath::Entered(edits)
}

/// Renders an error with the layer's renderer or format, keeping the whitelisted
/// headers of what was set before it.
fn render_error(
    ctx: &Context,
    err: &HttpError,
    prior: Option<Response<Body>>,
    edits: Vec<crate::context::Edit>,
) -> Response<Body> {
    let (mut before, body) = prior.unwrap_or_default().into_parts();
    drop(body);
    apply_edits(edits, &mut before.status, &mut before.headers);
    let mut response = match &ctx.config().renderer {
        Some(renderer) => catch_unwind(AssertUnwindSafe(|| renderer(err, ctx)))
            .unwrap_or_else(|panic| render::render_body(&panic_error(panic), ErrorFormat::Json)),
        None => {
            let format = ctx.config().error_format.resolve(ctx.header("accept"));
            render::render_body(err, format)
        }
    };
    render::apply_headers(&mut response, err, Some(&before.headers));
    response
}

/// Every path ends here: cookies, body rules, End. (The caller then hands the
/// request's completion to the body.)
fn respond<B>(
    ctx: &Context,
    mut response: Response<ResponseBody<B>>,
    on_error_path: bool,
) -> Response<ResponseBody<B>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if !on_error_path {
        // A hook's result or an ended response may carry an error too.
        if let Some(Thrown(err)) = response.extensions_mut().remove::<Thrown>() {
            return fail(ctx, err, Some(response.map(|_| Body::empty())));
        }
    }
    // The common case needs no lock: nothing is pending and nothing is left to apply,
    // so one compare-and-swap marks the response as gone. `end`, `emit_error` and the
    // edits announce themselves with a read-modify-write of the same flags, so either
    // this swap fails (and the locked path below handles them) or they see
    // RESPONDED and stand down.
    let flags = ctx.flags();
    let quiet = !on_error_path
        && flags & (flag::SIGNAL | flag::WORK) == 0
        && ctx
            .inner
            .flags
            .compare_exchange(
                flags,
                flags | flag::RESPONDED,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok();
    let mut replaced = None;
    let mut edits = Vec::new();
    let mut late_error = None;
    if !quiet {
        let mut shared = ctx.lock();
        if !on_error_path {
            if let Some(err) = shared.error.take() {
                // An error arrived while the last hook finished: it still wins.
                ctx.set(flag::ERROR_PATH);
                drop(shared);
                return fail(ctx, err, Some(response.map(|_| Body::empty())));
            }
            if let Some(ended) = shared.ended.take() {
                // `end` arrived after the hooks were done but before the response left.
                replaced = Some(std::mem::replace(&mut response, (*ended).map(ResponseBody::replaced)));
            }
            // Edits made after the hooks started (from a hook, a task) still apply.
            edits = std::mem::take(&mut shared.edits);
        }
        ctx.set(flag::RESPONDED);
        late_error = shared.error.take();
        drop(shared);
    }
    // The response that lost, and its body (user code), go outside the lock.
    drop(replaced);
    if !edits.is_empty() {
        let (mut parts, body) = response.into_parts();
        apply_edits(edits, &mut parts.status, &mut parts.headers);
        response = Response::from_parts(parts, body);
    }
    send_head(ctx, &mut response, late_error);
    response
}

/// The last steps of every path, once the response is marked as gone: Set-Cookie,
/// the body rules of HEAD and 204/205/304, End, and an error that came too late.
fn send_head<B>(ctx: &Context, response: &mut Response<ResponseBody<B>>, late_error: Option<HttpError>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if let Some(jar) = ctx.inner.cookies.get() {
        jar.write(response.headers_mut());
    }

    let status = response.status();
    let head = ctx.method() == Method::HEAD;
    let no_body = matches!(status.as_u16(), 204 | 205 | 304);
    if head || no_body {
        let hint = http_body::Body::size_hint(response.body());
        if head && !no_body && !response.headers().contains_key(header::CONTENT_LENGTH) {
            if let Some(length) = hint.exact() {
                response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
        }
        if !http_body::Body::is_end_stream(response.body()) {
            *response.body_mut() = ResponseBody::replaced(Body::empty());
        }
    }
    ctx.emit_end();
    if let Some(err) = late_error {
        ctx.report_error(&err);
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
        // A body that could still fail: tracing would log its failure.
        assert_eq!(watched(ContextLayer::new(), |_| {}, full()).await, cfg!(feature = "tracing"));
    }

    #[tokio::test]
    async fn an_observed_request_keeps_its_context_until_the_body_ends() {
        let hooked = ContextLayer::new().on_error(|err, _| ErrorAction::Render(err));
        assert!(watched(hooked, |_| {}, full()).await, "the app's error hook hears of a failing body");
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
}
