//! [`ResponseFuture`]: the request's life while the layer owns it, as a few named
//! steps. Each step looks at one state and says what comes next ([`Step`]); the
//! loop in `drive` moves between them. Every exit goes through `respond.rs`.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Bytes;
use http::{Method, Response, header};
use http_body::Body as _;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::completion::Completion;
use super::respond::{self, fail, first_frame_failed, respond, send_ended, send_head};
use crate::body::{Body, BoxError};
use crate::context::{
    Claim, Context, Hook, Hooks, Signal, Started, apply_edits, errors_are_logged, invalid_status,
    is_valid_status,
};
use crate::error::render::kept as kept_on_error;
use crate::error::{HttpError, Thrown, panic_error};
use crate::stream::{FirstFrame, Prefixed};

pin_project! {
    /// The future of [`ContextService`](super::ContextService). Not boxed: its states
    /// are pinned in place.
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
        // The response is inside the running hook (its argument, then its future's):
        // between two hooks it is only ever in hand, never kept here.
        // `before`: what an error in the running hook keeps of the response it took
        // (`head_for_hooks`).
        Hooks { pending: Hooks, running: Option<Hook>, before: Option<Box<Response<Body>>> },
        // Waiting for the body's first frame before the head may go (first-frame mode).
        // Boxed: this state is rare, and the response future stays small (it is moved
        // around by every layer above).
        FirstFrame { response: Option<Box<Response<Body>>> },
        Failed { error: Option<HttpError> },
        Done,
    }
}

/// What a step decided.
enum Step<B> {
    /// Wait: the waker is registered.
    Pending,
    /// The response leaves the layer.
    Ready(Response<ResponseBody<B>>),
    /// Run the after-hooks on this response (the deferred edits apply first).
    Hooks(Response<Body>),
    /// Poll this response's first frame before its head goes.
    FirstFrame(Box<Response<Body>>),
    /// Look again: a signal came while the waker was registered, or a hook finished.
    Again,
    /// The response leaves the layer, and is already where `poll` returns it from.
    Placed,
}

type Output<B> = Result<Response<ResponseBody<B>>, std::convert::Infallible>;

impl<F> ResponseFuture<F> {
    #[inline]
    pub(super) fn new(future: F, completion: Option<Completion>, catch_panic: bool) -> Self {
        let owner = completion.is_some();
        ResponseFuture { state: State::Inner { future }, completion, owner, catch_panic }
    }

    /// A request that failed before the inner service could take it (`poll_ready`'s
    /// error, or a panic in `call`).
    #[inline]
    pub(super) fn failed(error: HttpError, completion: Option<Completion>, catch_panic: bool) -> Self {
        let owner = completion.is_some();
        ResponseFuture { state: State::Failed { error: Some(error) }, completion, owner, catch_panic }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError> + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Output<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(mut completion) = this.completion.take() else {
            assert!(!*this.owner, "ResponseFuture polled after completion");
            let output = ready!(this.state.as_mut().poll_passthrough(*this.catch_panic, cx));
            this.state.set(State::Done);
            return Poll::Ready(output);
        };
        // Held in a local while the request runs, so that even an unwinding panic (with
        // catch_panic off) drops it and fires Close. `sent` is where the response that
        // leaves is put: the untouched one is written there directly, not carried out
        // of `drive` in a step (two copies of it fewer; BENCHMARKS.md).
        let mut sent = None;
        drive(this.state.as_mut(), completion.ctx_mut(), *this.catch_panic, cx, &mut sent);
        let Some(response) = sent.as_mut() else {
            *this.completion = Some(completion);
            return Poll::Pending;
        };
        // Whatever the state still holds (the inner future, a hook) is dropped now,
        // before the context's handles are counted (`hand_over`): a handle it held no
        // longer keeps the context alive. (Dropped after, it cost a copy of the
        // response more.)
        this.state.set(State::Done);
        hand_over(completion, response);
        // The response goes straight from where `drive` put it (a binding of it would
        // be one more copy); `sent` holds it, so the `Pending` here is never taken.
        sent.map_or(Poll::Pending, |response| Poll::Ready(Ok(response)))
    }
}

/// The response leaves: its body takes over the request's completion (Finish at its
/// end, Close if dropped first), unless nobody could ever see either.
// By reference and always inlined: the response stays where `poll` holds it (each
// move of it is a 192-byte copy).
#[inline(always)]
fn hand_over<B>(completion: Completion, response: &mut Response<ResponseBody<B>>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if completion.unobserved() && body_cannot_report(completion.ctx(), response) {
        // The context goes now rather than riding along with the body.
        completion.release();
    } else {
        // The length the server frames the body by: its exact size, or a
        // `Content-Length` set by hand (or by a file service, on a streamed body).
        let expected = response.body().expected_length(response.headers());
        response.body_mut().watch(completion, expected);
    }
}

/// The request's life when this layer owns it: each state's step, until one lets
/// the response go (put into `out`) or waits (`out` left empty).
fn drive<F, B, E>(
    mut state: Pin<&mut State<F>>,
    ctx: &mut Context,
    catch: bool,
    cx: &mut TaskContext<'_>,
    out: &mut Option<Response<ResponseBody<B>>>,
) where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError> + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let mut step = match state.as_mut().project() {
            StateProj::Inner { future } => poll_inner(future, ctx, catch, cx, out),
            StateProj::Hooks { pending, running, before } => {
                poll_hooks(pending, running, before, ctx, catch, cx)
            }
            StateProj::FirstFrame { response } => poll_first_frame(response, ctx, catch, cx),
            StateProj::Failed { error } => {
                inner_failed(ctx, error.take().unwrap_or_else(|| HttpError::new(500)))
            }
            StateProj::Done => panic!("ResponseFuture polled after completion"),
        };
        if let Step::Hooks(response) = step {
            // The response goes straight on to the first hook, whose state is made first.
            state.set(State::Hooks { pending: Hooks::default(), running: None, before: None });
            step = match state.as_mut().project() {
                StateProj::Hooks { pending, running, before } => {
                    let response = start_hooks(ctx, response, pending, before);
                    next_hook(ctx, response, pending, running, before, false, catch, cx)
                }
                // (Not reached: the state was just set.)
                _ => Step::Again,
            };
        }
        match step {
            Step::Pending | Step::Placed => return,
            Step::Ready(response) => {
                *out = Some(response);
                return;
            }
            Step::FirstFrame(response) => state.set(State::FirstFrame { response: Some(response) }),
            // (`start_hooks` never asks for the hooks again.)
            Step::Hooks(_) | Step::Again => {}
        }
    }
}

/// Runs user code (a poll, a hook call), turning a panic into a 500 when `catch` is on.
#[inline]
fn guarded<T>(catch: bool, f: impl FnOnce() -> T) -> Result<T, HttpError> {
    if catch { catch_unwind(AssertUnwindSafe(f)).map_err(panic_error) } else { Ok(f()) }
}

/// Waits for a wake-up. Only a future that waits needs waking by `end` or an error
/// (one that was ready never registers); a signal that came in between is caught by
/// the check made after registering.
#[inline]
fn park<B>(ctx: &Context, cx: &TaskContext<'_>) -> Step<B> {
    if ctx.phase().park(cx.waker()) { Step::Again } else { Step::Pending }
}

/// The inner future: a signal from the context first, else one poll.
#[inline]
fn poll_inner<F, B, E>(
    future: Pin<&mut F>,
    ctx: &Context,
    catch: bool,
    cx: &mut TaskContext<'_>,
    out: &mut Option<Response<ResponseBody<B>>>,
) -> Step<B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError> + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match ctx.take_signal() {
        Some(Signal::Error(err)) => return Step::Ready(fail(ctx, err, None)),
        Some(Signal::End(ended)) => return Step::Hooks(ended),
        None => {}
    }
    let err = match guarded(catch, || future.poll(cx)) {
        Ok(Poll::Pending) => return park(ctx, cx),
        Ok(Poll::Ready(Ok(response))) => return inner_response(ctx, response, out),
        Ok(Poll::Ready(Err(err))) => HttpError::from_service_error(err),
        Err(panic) => panic,
    };
    inner_failed(ctx, err)
}

/// An error from the inner service (its `Err`, or a panic) meets what the context
/// holds: a signalled error came first (it is rendered, this one only told), or an
/// accepted `end` did (its response goes on to the hooks, this error only told, never
/// silently dropped); else this error is rendered.
fn inner_failed<B>(ctx: &Context, err: HttpError) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match ctx.take_signal() {
        Some(Signal::Error(signalled)) => {
            ctx.report_error(&err);
            Step::Ready(fail(ctx, signalled, None))
        }
        Some(Signal::End(ended)) => {
            ctx.report_error(&err);
            Step::Hooks(ended)
        }
        None => fail_before_hooks(ctx, err, None),
    }
}

/// The error path for an error met before the hooks: an `end` accepted since the
/// layer last looked still goes to the hooks ([`respond::fail_before_hooks`]).
fn fail_before_hooks<B>(ctx: &Context, err: HttpError, prior: Option<Response<Body>>) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match respond::fail_before_hooks(ctx, err, prior) {
        respond::Failed::Sent(sent) => Step::Ready(sent),
        respond::Failed::ToHooks(ended) => Step::Hooks(ended),
    }
}

/// The inner service's response meets what the context holds: an error signalled
/// meanwhile wins, then an accepted `end`, then an error the response carries
/// (axum handlers return errors this way); the loser is reported.
// Always inlined: the response is built in place instead of copied out and in.
#[inline(always)]
fn inner_response<B>(
    ctx: &Context,
    mut response: Response<B>,
    out: &mut Option<Response<ResponseBody<B>>>,
) -> Step<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let thrown = response.extensions_mut().remove::<Thrown>();
    let signal = ctx.take_signal();
    if let (Some(_), Some(Thrown(other))) = (&signal, &thrown) {
        ctx.report_error(other);
    }
    match (signal, thrown) {
        (Some(Signal::Error(err)), _) => Step::Ready(fail(ctx, err, Some(response.map(Body::new)))),
        (Some(Signal::End(ended)), _) => {
            drop(response);
            Step::Hooks(ended)
        }
        (None, Some(Thrown(err))) => fail_before_hooks(ctx, err, Some(response.map(Body::new))),
        (None, None) if !is_valid_status(response.status()) => {
            let err = invalid_status(response.status());
            fail_before_hooks(ctx, err, Some(response.map(Body::new)))
        }
        (None, None) => untouched(ctx, response, out),
    }
}

/// A response nobody may have asked to change: it goes out with the inner body as
/// it is, unless hooks or edits exist (they run) or its first frame must be polled.
#[inline(always)]
fn untouched<B>(ctx: &Context, response: Response<B>, out: &mut Option<Response<ResponseBody<B>>>) -> Step<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let first_frame = wants_first_frame(ctx, &response);
    match ctx.phase().claim_untouched(!first_frame, ctx.is_sole()) {
        Claim::Work => Step::Hooks(response.map(Body::new)),
        Claim::Untouched if first_frame => Step::FirstFrame(Box::new(response.map(Body::new))),
        Claim::Untouched => Step::Ready(respond(ctx, response.map(ResponseBody::inner))),
        Claim::UntouchedAndGone => {
            // Written where `poll` returns it from, not carried there in a step.
            let response = out.insert(response.map(ResponseBody::inner));
            send_head(ctx, response, None);
            Step::Placed
        }
    }
}

/// Takes the hooks into `pending` and applies the deferred edits: the response is
/// the first hook's.
// Always inlined: the response goes on from the step to the first hook's call
// without a copy into this function and one out (callgrind: one copy and about 50
// instructions fewer on the hook and `end` rows).
#[inline(always)]
fn start_hooks(
    ctx: &mut Context,
    response: Response<Body>,
    pending: &mut Hooks,
    before: &mut Option<Box<Response<Body>>>,
) -> Response<Body> {
    let Started { hooks, edits, ended } = ctx.start_hooks();
    *pending = hooks;
    // An `end` that came just now wins over the inner response, as it would have a
    // moment earlier (the inner one is dropped here, outside the lock).
    let mut response = ended.map_or(response, |ended| *ended);
    // Taken apart and put back rather than `apply_edits_to` in place: on this path
    // the in-place form cost one more copy of the response (callgrind, hook row).
    let edited = !edits.is_empty();
    if edited {
        let (mut parts, body) = response.into_parts();
        apply_edits(edits, &mut parts.status, &mut parts.headers);
        response = Response::from_parts(parts, body);
    }
    *before = head_for_hooks(&response, edited);
    response
}

/// What an error in the next hook keeps of the response going into it, since the
/// hook takes the response itself: its status and headers (not its framing: the
/// body is gone), for the error to keep Toa's listed headers and a swallowed error
/// its edits. Copied only when there is something to keep: one of those headers, or
/// the deferred edits' (`keep`, also once a copy was made for an earlier hook).
fn head_for_hooks(response: &Response<Body>, keep: bool) -> Option<Box<Response<Body>>> {
    let headers = response.headers();
    if !keep && (headers.is_empty() || !headers.keys().any(kept_on_error)) {
        return None;
    }
    let mut head = Response::new(Body::empty());
    *head.status_mut() = response.status();
    *head.headers_mut() = response.headers().clone();
    for framing in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONTENT_TYPE] {
        head.headers_mut().remove(framing);
    }
    Some(Box::new(head))
}

/// Calls the hooks left, last added first, from this response on; with none left the
/// response goes. Each hook is polled as soon as it is called (most are ready at
/// once), so only one that waits goes round `drive`'s loop to `poll_hooks`. A signal
/// that came before a call, or while a hook ran, ends the hooks ([`cut_short`]).
// Eight arguments: the three parts of the hooks' state, whether `before` is stale
// (it is not for the first hook after `start_hooks`), and the poll's own.
#[allow(clippy::too_many_arguments)]
fn next_hook<B>(
    ctx: &Context,
    mut response: Response<Body>,
    pending: &mut Hooks,
    running: &mut Option<Hook>,
    before: &mut Option<Box<Response<Body>>>,
    mut refresh: bool,
    catch: bool,
    cx: &mut TaskContext<'_>,
) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    loop {
        let Some(hook) = pending.pop() else { return hooks_done(ctx, response) };
        if let Some(signal) = ctx.take_signal() {
            return cut_short(ctx, signal, pending, Some(response));
        }
        if refresh {
            *before = head_for_hooks(&response, before.is_some());
        }
        refresh = true;
        let hook = running.insert(hook);
        let polled = guarded(catch, || {
            hook.as_mut().start(response);
            // The call itself may have signalled: its future is not polled then.
            if ctx.phase().has_signal() { Poll::Pending } else { hook.as_mut().poll_hook(cx) }
        });
        response = match polled {
            Ok(Poll::Ready(Ok(next))) => next,
            Ok(Poll::Pending) => return park(ctx, cx),
            Err(err) | Ok(Poll::Ready(Err(err))) => {
                *running = None;
                return Step::Ready(fail(ctx, err, before.take().map(|head| *head)));
            }
        };
        *running = None;
        if let Some(signal) = ctx.take_signal() {
            return cut_short(ctx, signal, pending, Some(response));
        }
    }
}

/// The running hook: a signal that woke it, or came while it ran, ends the hooks
/// ([`cut_short`]); the response it returns goes to the next one.
fn poll_hooks<B>(
    pending: &mut Hooks,
    running: &mut Option<Hook>,
    before: &mut Option<Box<Response<Body>>>,
    ctx: &Context,
    catch: bool,
    cx: &mut TaskContext<'_>,
) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // Every hook is started as it is taken, so one always runs here.
    let Some(hook) = running.as_mut() else { return Step::Ready(fail(ctx, HttpError::new(500), None)) };
    if let Some(signal) = ctx.take_signal() {
        *running = None;
        return cut_short(ctx, signal, pending, before.take().map(|head| *head));
    }
    match guarded(catch, || hook.as_mut().poll_hook(cx)) {
        Ok(Poll::Pending) => park(ctx, cx),
        Err(err) | Ok(Poll::Ready(Err(err))) => {
            *running = None;
            Step::Ready(fail(ctx, err, before.take().map(|head| *head)))
        }
        Ok(Poll::Ready(Ok(next))) => {
            *running = None;
            match ctx.take_signal() {
                Some(signal) => cut_short(ctx, signal, pending, Some(next)),
                None => next_hook(ctx, next, pending, running, before, true, catch, cx),
            }
        }
    }
}

/// A signal ends the hooks: an error takes the error path (`prior`: the response a
/// hook just returned), an `end` skips the hooks left and its response goes.
fn cut_short<B>(ctx: &Context, signal: Signal, pending: &mut Hooks, prior: Option<Response<Body>>) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Step::Ready(match signal {
        Signal::Error(err) => fail(ctx, err, prior),
        Signal::End(ended) => {
            pending.clear();
            send_ended(ctx, ended)
        }
    })
}

/// Every hook ran: the response goes, or first its first frame is polled.
fn hooks_done<B>(ctx: &Context, response: Response<Body>) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if wants_first_frame(ctx, &response) {
        return Step::FirstFrame(Box::new(response));
    }
    Step::Ready(respond(ctx, response.map(ResponseBody::replaced)))
}

/// First-frame mode: the head waits for the body's first frame, so a body that fails
/// before it becomes a real error response.
fn poll_first_frame<B>(
    response: &mut Option<Box<Response<Body>>>,
    ctx: &Context,
    catch: bool,
    cx: &mut TaskContext<'_>,
) -> Step<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // The body may wait on something that `end` or an error cuts short.
    ctx.phase().park(cx.waker());
    match ctx.take_signal() {
        Some(Signal::Error(err)) => {
            let prior = response.take().map(|r| r.map(|_| Body::empty()));
            return Step::Ready(fail(ctx, err, prior));
        }
        Some(Signal::End(ended)) => return Step::Ready(send_ended(ctx, ended)),
        None => {}
    }
    let Some(pending) = response.as_mut() else {
        return Step::Ready(respond(ctx, Response::default()));
    };
    let first = match guarded(catch, || Pin::new(pending.body_mut()).poll_frame(cx)) {
        Ok(Poll::Pending) => return Step::Pending,
        Ok(Poll::Ready(Some(Ok(frame)))) => Some(frame),
        Ok(Poll::Ready(None)) => None,
        Ok(Poll::Ready(Some(Err(err)))) => {
            return Step::Ready(first_frame_failed(ctx, response.take(), Ok(err)));
        }
        Err(panic) => return Step::Ready(first_frame_failed(ctx, response.take(), Err(panic))),
    };
    let (parts, rest) = response.take().unwrap_or_default().into_parts();
    let body = match first {
        Some(frame) => Prefixed::body(frame, rest),
        None => Body::empty(),
    };
    Step::Ready(respond(ctx, Response::from_parts(parts, ResponseBody::replaced(body))))
}

/// Whether nothing would hear of this body failing: it is already at its end, or
/// there is no app-level error policy and no log to tell (listeners are checked by
/// `Completion::unobserved`).
fn body_cannot_report<B: http_body::Body>(ctx: &Context, response: &Response<B>) -> bool {
    response.body().is_end_stream() || (ctx.config().handle_error.is_none() && !errors_are_logged())
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
    E: Into<BoxError> + 'static,
{
    /// A nested layer: the outer one owns the request. Errors and panics become
    /// responses that carry the error, for the outer layer to render.
    fn poll_passthrough(self: Pin<&mut Self>, catch: bool, cx: &mut TaskContext<'_>) -> Poll<Output<B>> {
        let err = match self.project() {
            StateProj::Inner { future } => match guarded(catch, || future.poll(cx)) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(response))) => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                Ok(Poll::Ready(Err(err))) => HttpError::from_service_error(err),
                Err(panic) => panic,
            },
            StateProj::Failed { error } => error.take().unwrap_or_else(|| HttpError::new(500)),
            StateProj::Hooks { .. } | StateProj::FirstFrame { .. } | StateProj::Done => {
                panic!("ResponseFuture polled after completion")
            }
        };
        Poll::Ready(Ok(err.into_http_response().map(ResponseBody::replaced)))
    }
}
