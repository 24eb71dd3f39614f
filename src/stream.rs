//! Streaming bodies: Toa's `ctx.catchStream`, and the first-frame option.
//!
//! Hyper writes the response head before it polls the body, so a stream that fails
//! halfway cannot change the status any more. [`Context::catch_stream`] makes that
//! failure visible instead of silent: the error reaches the context (Error event,
//! the layer's `handle_error` policy), the stream is dropped at once so its cleanup runs,
//! the response ends early (the server cuts the connection's response short) and
//! Close fires.
//!
//! A stream that fails *before* its first byte (a missing file, a refused upstream)
//! can do better: with [`ContextLayer::first_frame`](crate::ContextLayer::first_frame) (or [`FirstFrame`] on one
//! response) the layer polls the first frame before it lets the head go, so such a
//! failure becomes a proper error response with a status and a negotiated body.
//!
//! ```
//! use axum::{Router, routing::get};
//! use bytes::Bytes;
//! use futures_util::stream;
//! use http::Response;
//! use tower_context::body::Body;
//! use tower_context::{Context, ContextLayer, HttpError};
//!
//! async fn download(ctx: Context) -> Result<Response<Body>, HttpError> {
//!     let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from("chunk"))]);
//!     let body = ctx.catch_byte_stream(chunks)?;
//!     Ok(Response::new(Body::new(body)))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/download", get(download))
//!     .layer(ContextLayer::new().first_frame(true));
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{Body, BoxError};
use crate::context::{Context, WeakContext};
use crate::error::HttpError;

/// Returned by [`Context::catch_stream`] when the request already caught one: as in
/// Toa, a request has one caught stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAlreadyCaught;

impl fmt::Display for StreamAlreadyCaught {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this request already has a caught stream")
    }
}

impl std::error::Error for StreamAlreadyCaught {}

impl From<StreamAlreadyCaught> for HttpError {
    fn from(err: StreamAlreadyCaught) -> Self {
        HttpError::from_error(err)
    }
}

/// Put this in a response's extensions to have the layer poll the body's first frame
/// before the head goes out, for this response only (see [`ContextLayer::first_frame`](crate::ContextLayer::first_frame)).
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstFrame;

/// The error a caught body ends with after it reported its stream's failure to the
/// context; the server sees it and cuts the response short.
#[derive(Debug)]
pub struct StreamFailed;

impl fmt::Display for StreamFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response stream failed; the error went to the request's context")
    }
}

impl std::error::Error for StreamFailed {}

impl Context {
    /// Watches a response body for failure: Toa's `ctx.catchStream`.
    ///
    /// When the body fails, its error goes to the context (rendered as an error
    /// response if the head has not left yet, reported to `on_error` listeners and the
    /// layer's error policy otherwise), the body is dropped at once, the response ends early
    /// and Close fires. If the response is replaced before the body was sent (by
    /// `end` or an error), dropping the caught body runs the same cleanup.
    ///
    /// A request catches one stream; a second call is [`StreamAlreadyCaught`].
    pub fn catch_stream<B>(&self, body: B) -> Result<CaughtBody<B>, StreamAlreadyCaught>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        if !self.phase().catch_stream() {
            return Err(StreamAlreadyCaught);
        }
        Ok(CaughtBody { body: Some(body), ctx: self.downgrade() })
    }

    /// [`catch_stream`](Self::catch_stream) for a `Stream` of byte chunks.
    pub fn catch_byte_stream<S, T, E>(
        &self,
        stream: S,
    ) -> Result<CaughtBody<ByteStream<S>>, StreamAlreadyCaught>
    where
        S: Stream<Item = Result<T, E>>,
        T: Into<Bytes>,
        E: Into<BoxError>,
    {
        self.catch_stream(ByteStream { stream })
    }
}

pin_project! {
    /// A body watched by [`Context::catch_stream`].
    pub struct CaughtBody<B> {
        #[pin]
        body: Option<B>,
        // Weak: a caught body kept somewhere by mistake does not keep the request.
        ctx: WeakContext,
    }
}

impl<B> fmt::Debug for CaughtBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaughtBody").field("live", &self.body.is_some()).finish()
    }
}

impl<B> http_body::Body for CaughtBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Some(body) = this.body.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match body.poll_frame(cx) {
            Poll::Ready(Some(Err(err))) => {
                // Drop the stream now: its cleanup must not wait for the server.
                this.body.set(None);
                let err = HttpError::from_stream_error(err.into());
                match this.ctx.upgrade() {
                    Some(ctx) => {
                        ctx.phase().mark_stream_failed();
                        ctx.emit_error(err);
                    }
                    None => drop(err),
                }
                Poll::Ready(Some(Err(Box::new(StreamFailed))))
            }
            Poll::Ready(None) => {
                this.body.set(None);
                Poll::Ready(None)
            }
            other => other.map(|frame| frame.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map_or(SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

pin_project! {
    /// A `Stream` of byte chunks as an http body: see [`Context::catch_byte_stream`].
    pub struct ByteStream<S> {
        #[pin]
        stream: S,
    }
}

impl<S, T, E> http_body::Body for ByteStream<S>
where
    S: Stream<Item = Result<T, E>>,
    T: Into<Bytes>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project()
            .stream
            .poll_next(cx)
            .map(|item| item.map(|r| r.map(|chunk| Frame::data(chunk.into())).map_err(Into::into)))
    }
}

/// A body whose first frame was polled early, sent before the rest.
pub(crate) struct Prefixed {
    first: Option<Frame<Bytes>>,
    rest: Body,
}

impl Prefixed {
    pub(crate) fn body(first: Frame<Bytes>, rest: Body) -> Body {
        let first = match first.into_data() {
            Ok(data) if http_body::Body::is_end_stream(&rest) => return Body::from(data),
            Ok(data) => Frame::data(data),
            // Anything else (trailers among them) keeps its frame.
            Err(frame) => frame,
        };
        Body::new(Prefixed { first: Some(first), rest })
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && http_body::Body::is_end_stream(&self.rest)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = http_body::Body::size_hint(&self.rest);
        let len = self.first.as_ref().and_then(Frame::data_ref).map_or(0, |d| d.len() as u64);
        // Built afresh: lower first, then an upper that is never below it.
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(len));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(len).max(hint.lower()));
        }
        hint
    }
}
