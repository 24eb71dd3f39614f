//! Conditional GET: answer `304 Not Modified` when the client's cached copy is fresh
//! (koa-conditional-get).
//!
//! A `GET` or `HEAD` request that carries `If-None-Match` or `If-Modified-Since`,
//! answered with a 2xx response whose `ETag` or `Last-Modified` matches, becomes a
//! 304 with no body. The handler still runs (it has to, to produce the validators);
//! what is saved is the body on the wire. Set the validators with
//! [`response::etag`](crate::response::etag) and
//! [`response::last_modified`](crate::response::last_modified).
//!
//! Two ways to switch it on:
//! - [`ConditionalGetLayer`], a tower layer that works with or without
//!   [`ContextLayer`](crate::ContextLayer). Put it inside `ContextLayer` (in axum: add
//!   it with `.layer(..)` before `ContextLayer`), so that the context sees the 304 it
//!   produces and its Finish event fires normally.
//! - [`conditional_get`], an after-hook for one request, which also sees validators
//!   that other after-hooks set.
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::{HeaderMap, StatusCode};
//! use tower_context::ContextLayer;
//! use tower_context::conditional::ConditionalGetLayer;
//! use tower_context::response::etag;
//!
//! async fn page() -> (HeaderMap, &'static str) {
//!     let mut headers = HeaderMap::new();
//!     etag(&mut headers, "v42").expect("a valid etag");
//!     (headers, "a big page")
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(page))
//!     .layer(ConditionalGetLayer::new())
//!     .layer(ContextLayer::new());
//! ```
//!
//! # Freshness
//!
//! The rules are those of Koa's `ctx.fresh` (the `fresh` package) with one
//! correction from RFC 9110 §13.2.2: when `If-None-Match` is present,
//! `If-Modified-Since` is ignored.
//! - Only `GET` and `HEAD`, and only 2xx and 304 responses, can be fresh.
//! - A request with `Cache-Control: no-cache` is never fresh.
//! - `If-None-Match: *` is fresh when the response has any status above; otherwise
//!   some listed entity tag must equal the response's `ETag` by weak comparison
//!   (`W/"a"` matches `"a"`).
//! - `If-Modified-Since` is fresh when the response's `Last-Modified` is not later.
//!   A date that does not parse, on either side, is stale.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::context::{Context, HooksStarted};
use crate::fresh::Validators;
use crate::request::validators;

/// Turns a response into a 304 with the headers a 304 may carry.
fn not_modified(status: &mut StatusCode, headers: &mut HeaderMap) {
    *status = StatusCode::NOT_MODIFIED;
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
}

/// Answers fresh responses to this request with `304 Not Modified` and no body, as an
/// after-hook (see [the module docs](self)).
///
/// Call it early (in a handler or a layer that has the [`Context`]); the hook runs
/// after the handler, so it sees the validators the handler and later-added hooks
/// set.
///
/// ```
/// use http::HeaderMap;
/// use tower_context::{Context, HttpError, conditional::conditional_get, response::etag};
///
/// async fn page(ctx: Context) -> Result<(HeaderMap, &'static str), HttpError> {
///     conditional_get(&ctx)?;
///     let mut headers = HeaderMap::new();
///     etag(&mut headers, "v42").expect("a valid etag");
///     Ok((headers, "a big page"))
/// }
/// ```
///
/// # Errors
///
/// [`HooksStarted`] when called from a hook or after the response left.
pub fn conditional_get(ctx: &Context) -> Result<(), HooksStarted> {
    let Some(validators) = validators(ctx.method(), ctx) else { return Ok(()) };
    ctx.after(move |mut response| async move {
        if validators.fresh(response.status(), response.headers()) {
            let (mut parts, _) = response.into_parts();
            not_modified(&mut parts.status, &mut parts.headers);
            response = Response::from_parts(parts, crate::body::Body::default());
        }
        Ok::<_, crate::error::HttpError>(response)
    })
}

/// A tower layer that answers fresh responses with `304 Not Modified` and no body.
///
/// See [the module docs](self) for where to put it and the freshness rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConditionalGetLayer {
    _priv: (),
}

impl ConditionalGetLayer {
    /// The layer.
    pub fn new() -> Self {
        ConditionalGetLayer::default()
    }
}

impl<S> Layer<S> for ConditionalGetLayer {
    type Service = ConditionalGet<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConditionalGet { inner }
    }
}

/// The service [`ConditionalGetLayer`] makes.
#[derive(Clone, Debug)]
pub struct ConditionalGet<S> {
    inner: S,
}

impl<S> ConditionalGet<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ConditionalGet { inner }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConditionalGet<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ConditionalBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let validators = validators(request.method(), request.headers());
        ResponseFuture { inner: self.inner.call(request), validators }
    }
}

pin_project! {
    /// The response future of [`ConditionalGet`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        validators: Option<Validators>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ConditionalBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let fresh = this.validators.as_ref().is_some_and(|v| v.fresh(response.status(), response.headers()));
        let (mut parts, body) = response.into_parts();
        let body = if fresh {
            not_modified(&mut parts.status, &mut parts.headers);
            ConditionalBody::empty()
        } else {
            ConditionalBody::inner(body)
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

pin_project! {
    /// The response body of [`ConditionalGet`]: the inner body, or nothing for a 304.
    pub struct ConditionalBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] inner: B },
        Empty,
    }
}

impl<B> ConditionalBody<B> {
    fn inner(inner: B) -> Self {
        ConditionalBody { kind: Kind::Inner { inner } }
    }

    fn empty() -> Self {
        ConditionalBody { kind: Kind::Empty }
    }
}

impl<B: HttpBody> HttpBody for ConditionalBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { inner } => inner.poll_frame(cx),
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { inner } => inner.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { inner } => inner.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

impl<B> std::fmt::Debug for ConditionalBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self.kind, Kind::Empty) { "Empty" } else { "Inner" };
        f.debug_tuple("ConditionalBody").field(&kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method};

    use super::*;

    fn validators(pairs: &[(&str, &'static str)]) -> Validators {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        crate::request::validators(&Method::GET, &headers).unwrap_or_default()
    }

    fn response(pairs: &[(&str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    const OK: StatusCode = StatusCode::OK;

    #[test]
    fn etags_compare_weakly_and_in_lists() {
        let res = response(&[("etag", "\"abc\"")]);
        assert!(validators(&[("if-none-match", "\"abc\"")]).fresh(OK, &res));
        assert!(validators(&[("if-none-match", "W/\"abc\"")]).fresh(OK, &res));
        assert!(validators(&[("if-none-match", "\"x\", \"a,b\" ,W/\"abc\"")]).fresh(OK, &res));
        assert!(!validators(&[("if-none-match", "\"abcd\"")]).fresh(OK, &res));
        let weak = response(&[("etag", "W/\"abc\"")]);
        assert!(validators(&[("if-none-match", "\"abc\"")]).fresh(OK, &weak));
        assert!(validators(&[("if-none-match", "*")]).fresh(OK, &HeaderMap::new()));
        assert!(!validators(&[("if-none-match", "\"abc\"")]).fresh(OK, &HeaderMap::new()));
    }

    #[test]
    fn dates() {
        let res = response(&[("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        assert!(validators(&[("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")]).fresh(OK, &res));
        assert!(validators(&[("if-modified-since", "Wed, 02 Jan 2030 00:00:00 GMT")]).fresh(OK, &res));
        assert!(!validators(&[("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")]).fresh(OK, &res));
        assert!(!validators(&[("if-modified-since", "yesterday")]).fresh(OK, &res));
        assert!(
            !validators(&[("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")])
                .fresh(OK, &HeaderMap::new())
        );
    }

    #[test]
    fn if_none_match_overrides_if_modified_since() {
        let res = response(&[("etag", "\"new\""), ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        let v = validators(&[
            ("if-none-match", "\"old\""),
            ("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        assert!(!v.fresh(OK, &res));
    }

    #[test]
    fn status_method_and_no_cache() {
        let res = response(&[("etag", "\"a\"")]);
        let v = validators(&[("if-none-match", "\"a\"")]);
        assert!(v.fresh(StatusCode::NOT_MODIFIED, &res));
        assert!(!v.fresh(StatusCode::NOT_FOUND, &res));
        assert!(!v.fresh(StatusCode::FOUND, &res));
        assert!(
            !validators(&[("if-none-match", "\"a\""), ("cache-control", "max-age=0, No-Cache")])
                .fresh(OK, &res)
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        assert!(crate::request::validators(&Method::POST, &headers).is_none());
        assert!(crate::request::validators(&Method::HEAD, &headers).is_some());
        assert!(crate::request::validators(&Method::GET, &HeaderMap::new()).is_none());
        let mut lines = HeaderMap::new();
        lines.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        lines.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        assert!(crate::request::validators(&Method::GET, &lines).is_some_and(|v| v.fresh(OK, &res)));
    }
}
