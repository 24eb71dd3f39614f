//! Every way out of the layer, in one place: [`respond`] for a response, [`fail`]
//! for an error, and [`send_head`], the last steps both share.
//!
//! The calls go one way: `respond` may hand an error to `fail` (a response that
//! carries one, or an error that arrived while the last hook finished); `fail` never
//! calls `respond`. Where an accepted `end` wins over an error, `fail` sends the
//! ended response itself through `leave`, which both share.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response};

use super::body::ResponseBody;
use crate::body::{Body, BoxError};
use crate::context::{
    Context, Edit, ErrorAction, ErrorPath, Left, Signal, apply_edits, apply_edits_to, invalid_status,
    is_valid_status,
};
use crate::error::{ErrorFormat, HttpError, Thrown, panic_error, render};

type Sent<B> = Response<ResponseBody<B>>;

/// An error on its way to the error path.
pub(super) enum Failure {
    /// A new error: Error fires, the app's policy decides, and it is rendered.
    New(HttpError),
    /// An error the listeners and the policy were told of already (a caught
    /// stream's, when nothing was left to render it with): a plain 500.
    Told,
}

impl From<HttpError> for Failure {
    fn from(err: HttpError) -> Self {
        Failure::New(err)
    }
}

/// The exit of every path that has a response: it leaves the layer, unless it
/// carries an error or an error beat it (then the error path).
pub(super) fn respond<B>(ctx: &Context, response: Sent<B>) -> Sent<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match leave(ctx, response) {
        Leaving::Sent(sent) => sent,
        Leaving::Failed(err, prior) => fail(ctx, err, Some(prior)),
    }
}

/// Sends a response given to `end`, as it is (no hook runs on it from here).
pub(super) fn send_ended<B>(ctx: &Context, ended: Response<Body>) -> Sent<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    respond(ctx, ended.map(ResponseBody::replaced))
}

/// What [`leave`] did.
enum Leaving<B> {
    /// The response left.
    Sent(Sent<B>),
    /// It stayed: this error goes down the error path, with the response's head.
    Failed(HttpError, Response<Body>),
}

/// Marks the response as gone and sends it; unless it carries an error (a hook's
/// result, an ended response) or an error arrived while the last hook finished:
/// that error and the response's head come back, for the error path.
fn leave<B>(ctx: &Context, mut response: Sent<B>) -> Leaving<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    loop {
        if let Some(Thrown(err)) = response.extensions_mut().remove::<Thrown>() {
            return Leaving::Failed(err, response.map(|_| Body::empty()));
        }
        if !is_valid_status(response.status()) {
            return Leaving::Failed(invalid_status(response.status()), response.map(|_| Body::empty()));
        }
        let Left { edits, ended, late_error } = match ctx.phase().leave(ctx.is_sole()) {
            Ok(left) => left,
            Err(err) => return Leaving::Failed(err, response.map(|_| Body::empty())),
        };
        if let Some(ended) = ended {
            // `end` arrived after the hooks were done but before the response left:
            // its response goes instead, once checked as this one was. The one that
            // lost, and its body (user code), are dropped here, outside the lock.
            drop(std::mem::replace(&mut response, (*ended).map(ResponseBody::replaced)));
            continue;
        }
        // Edits made after the hooks started (from a hook, a task) still apply.
        apply_edits_to(edits, &mut response);
        send_head(ctx, &mut response, late_error);
        return Leaving::Sent(response);
    }
}

/// The error path: Error fires, the app's policy decides, the error is rendered.
/// `prior` is the response that was about to go out, if any: its kept headers
/// survive, and a swallowed error sends it.
pub(super) fn fail<B>(ctx: &Context, failure: impl Into<Failure>, prior: Option<Response<Body>>) -> Sent<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match fail_at(ctx, failure.into(), prior, false) {
        Failed::Sent(sent) => sent,
        // Not asked for the hooks, the error path never hands an `end` back to run
        // them; were it to, the response goes as any other ended one.
        Failed::ToHooks(ended) => send_ended(ctx, ended),
    }
}

/// Where the error path came out: see [`fail_before_hooks`].
pub(super) enum Failed<B> {
    /// The response leaves the layer.
    Sent(Sent<B>),
    /// An `end` accepted before the hooks: they run on its response.
    ToHooks(Response<Body>),
}

/// [`fail`] for an error met before the hooks started (the inner service's `Err`,
/// panic or thrown error): an `end` accepted since the layer last looked comes back
/// for the hooks to run on (the error is reported), as they do when the layer sees
/// that `end` first.
pub(super) fn fail_before_hooks<B>(ctx: &Context, err: HttpError, prior: Option<Response<Body>>) -> Failed<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fail_at(ctx, Failure::New(err), prior, true)
}

// Always inlined into its two callers, where the `Failed` it returns folds away:
// out of line, the thrown-error path cost about 85 instructions a request more
// (callgrind).
#[inline(always)]
fn fail_at<B>(ctx: &Context, failure: Failure, prior: Option<Response<Body>>, before_hooks: bool) -> Failed<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut failure, mut prior) = (failure, prior);
    let edits = loop {
        match ctx.phase().enter_error_path(ctx.is_sole(), before_hooks) {
            ErrorPath::Entered(edits) => break edits,
            ErrorPath::EndedBeforeHooks(ended) => {
                drop(prior);
                if let Failure::New(err) = &failure {
                    ctx.report_error(err);
                }
                return Failed::ToHooks(ended);
            }
            ErrorPath::Ended(ended) => {
                // An `end` accepted before this error came to light wins over it, as
                // it does when the layer sees the end first: its response goes out,
                // and the error is only reported.
                drop(prior);
                if let Failure::New(err) = &failure {
                    ctx.report_error(err);
                }
                match leave(ctx, ended.map(ResponseBody::replaced)) {
                    Leaving::Sent(sent) => return Failed::Sent(sent),
                    // The ended response carries an error of its own: that one goes
                    // down the path, now taken (the ended response is spent).
                    Leaving::Failed(err, carrier) => (failure, prior) = (Failure::New(err), Some(carrier)),
                }
            }
        }
    };
    let response = match failure {
        Failure::New(err) => decide(ctx, err, prior, edits),
        Failure::Told => render_error(ctx, &HttpError::new(500), prior, edits),
    };
    let mut response = response;
    if !is_valid_status(response.status()) {
        // A swallowed error or the policy's response can still carry a status HTTP
        // does not have: it never goes out.
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    let late_error = ctx.phase().leave_on_error_path(ctx.is_sole());
    let mut response = response.map(ResponseBody::replaced);
    send_head(ctx, &mut response, late_error);
    Failed::Sent(response)
}

/// Error fires, then the app's error policy decides what goes out. An error raised
/// while deciding (a replacement that says something else than the error given, or
/// the policy's panic) fires Error too, so none goes unreported (Toa's app-level
/// `onerror` logs those).
fn decide(ctx: &Context, err: HttpError, prior: Option<Response<Body>>, edits: Vec<Edit>) -> Response<Body> {
    ctx.emit_error_event(&err);
    let Some(policy) = &ctx.config().handle_error else {
        return render_error(ctx, &err, prior, edits);
    };
    // Kept to tell the error given back from a replacement.
    let original = err.clone();
    let action = catch_unwind(AssertUnwindSafe(|| policy(err, ctx))).unwrap_or_else(|panic| {
        let err = panic_error(panic);
        ctx.emit_error_event(&err);
        ErrorAction::Render(err)
    });
    match action {
        ErrorAction::Render(err) => {
            if !err.says_the_same_as(&original) && !err.is_panic() {
                ctx.emit_error_event(&err);
            }
            render_error(ctx, &err, prior, edits)
        }
        ErrorAction::Respond(response) => keep_earlier_headers(response, prior, edits),
        ErrorAction::Swallow => {
            let mut response = prior.unwrap_or_default();
            apply_edits_to(edits, &mut response);
            response
        }
    }
}

/// The policy's own response, with the headers set before the error (the deferred
/// edits' among them, CORS for one) that it does not set itself. Its status and
/// body framing are its own.
fn keep_earlier_headers(
    response: Response<Body>,
    prior: Option<Response<Body>>,
    edits: Vec<Edit>,
) -> Response<Body> {
    let before = head_before(prior, edits);
    let (mut parts, body) = response.into_parts();
    let mut last = None;
    for (name, value) in &before.headers {
        let framing = name == header::CONTENT_TYPE
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING;
        if framing || (last != Some(name) && parts.headers.contains_key(name)) {
            continue;
        }
        last = Some(name);
        parts.headers.append(name, value.clone());
    }
    Response::from_parts(parts, body)
}

/// The head of what was about to go out before the error, with the deferred edits
/// applied: the headers an error response may keep. Its body (user code) is dropped.
fn head_before(prior: Option<Response<Body>>, edits: Vec<Edit>) -> http::response::Parts {
    let (mut before, body) = prior.unwrap_or_default().into_parts();
    drop(body);
    apply_edits(edits, &mut before.status, &mut before.headers);
    before
}

/// Renders an error with the layer's renderer or format, keeping the whitelisted
/// headers of what was set before it.
fn render_error(
    ctx: &Context,
    err: &HttpError,
    prior: Option<Response<Body>>,
    edits: Vec<Edit>,
) -> Response<Body> {
    let before = head_before(prior, edits);
    let mut response = match &ctx.config().renderer {
        Some(renderer) => catch_unwind(AssertUnwindSafe(|| renderer(err, ctx)))
            .unwrap_or_else(|panic| render::render_body(&panic_error(panic), ErrorFormat::Json)),
        None => {
            let format = ctx.config().error_format.resolve(ctx.accept_header());
            render::render_body(err, format)
        }
    };
    render::apply_headers(&mut response, err, Some(&before.headers));
    response
}

/// The body failed before its first frame (first-frame mode): a real error response.
/// `failure` is the body's error, or the panic it raised.
pub(super) fn first_frame_failed<B>(
    ctx: &Context,
    pending: Option<Box<Response<Body>>>,
    failure: Result<BoxError, HttpError>,
) -> Sent<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // The handler's headers (CORS, vary, ...) count as set before the error.
    let prior = pending.map(|r| r.map(|_| Body::empty()));
    let err = match failure {
        Err(panic) => panic,
        // A caught stream already told the context: its error (or an `end` that beat
        // it) is what goes out.
        Ok(_) if ctx.phase().stream_failed() => match ctx.take_signal() {
            Some(Signal::Error(reported)) => reported,
            Some(Signal::End(ended)) => {
                drop(prior);
                return send_ended(ctx, ended);
            }
            None => return fail(ctx, Failure::Told, prior),
        },
        Ok(err) => HttpError::from_stream_error(err),
    };
    fail(ctx, err, prior)
}

/// The last steps of every path, once the response is marked as gone: Set-Cookie,
/// the body rules of HEAD and 204/205/304 (no body; no `Content-Type`,
/// `Content-Length` or `Transfer-Encoding` for the three), End, and an error that
/// came too late.
pub(super) fn send_head<B>(ctx: &Context, response: &mut Sent<B>, late_error: Option<HttpError>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if let Some(jar) = ctx.touched_cookies() {
        jar.write(response.headers_mut());
    }
    if matches!(response.status().as_u16(), 204 | 205 | 304) {
        // No content, so nothing to describe or frame (Koa removes the same three).
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        *response.body_mut() = ResponseBody::replaced(Body::empty());
    } else if ctx.method() == Method::HEAD {
        // The head tells the length the body would have had, when it is known.
        if !response.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(length) = http_body::Body::size_hint(response.body()).exact()
        {
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
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
