//! Response bodies: [`Body`], the replaceable body hooks and errors use, and
//! [`ResponseBody`], what [`ContextService`](crate::ContextService) returns.
//!
//! `ResponseBody` keeps the inner service's body as it is unless something had to
//! replace it (a hook, `end`, an error), so the untouched path boxes nothing. It also
//! watches the body to the end: Finish when the last frame has gone, Close when it is
//! dropped first (the client went away).

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::events::Completion;

/// A response body that can hold anything: empty, bytes, or any boxed http body.
///
/// Used wherever the crate hands a response to user code (after-hooks, `end`, error
/// rendering). Full and empty bodies are not boxed.
///
/// ```
/// use tower_context::Body;
///
/// let body = Body::from("hello");
/// let body = Body::from(String::from("hello"));
/// let body = Body::empty();
/// ```
pub struct Body(Kind);

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty body.
    pub const fn empty() -> Self {
        Body(Kind::Empty)
    }

    /// Wraps any http body; a `Body` is taken as it is, not boxed again.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        let any = &mut slot as &mut dyn Any;
        if let Some(body) = any.downcast_mut::<Option<Body>>() {
            return body.take().unwrap_or_default();
        }
        // The common full and empty bodies are taken apart instead of boxed.
        if any.is::<Option<http_body_util::Empty<Bytes>>>() {
            return Body::empty();
        }
        if let Some(full) = any.downcast_mut::<Option<http_body_util::Full<Bytes>>>().and_then(Option::take) {
            return Body::from_full(full);
        }
        match slot {
            Some(body) => Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync())),
            None => Body::empty(),
        }
    }
}

impl Body {
    /// The bytes of a `Full` body. `Full` is always ready, so one poll with a waker
    /// that does nothing yields its only frame.
    fn from_full(mut full: http_body_util::Full<Bytes>) -> Body {
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        match http_body::Body::poll_frame(Pin::new(&mut full), &mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Body::from(data),
                Err(_) => Body::empty(),
            },
            _ => Body::empty(),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Empty => f.write_str("Body::Empty"),
            Kind::Full(bytes) => f.debug_tuple("Body::Full").field(bytes).finish(),
            Kind::Boxed(_) => f.write_str("Body::Boxed"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        if bytes.is_empty() { Body::empty() } else { Body(Kind::Full(Some(bytes))) }
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::from(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::from(Bytes::from(s))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::from(Bytes::from(v))
    }
}

impl From<&'static [u8]> for Body {
    fn from(v: &'static [u8]) -> Self {
        Body::from(Bytes::from_static(v))
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Body::empty()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

pin_project! {
    /// The body of every response [`ContextService`](crate::ContextService) returns.
    ///
    /// It is the inner service's body, untouched, unless a hook, `end` or an error
    /// replaced it with a [`Body`]. It reports the end of the response to the
    /// [`Context`](crate::Context): Finish after the last frame, Close if it is
    /// dropped before that, Error (then Close) if the body itself fails.
    pub struct ResponseBody<B> {
        #[pin]
        kind: EitherBody<B>,
        completion: Option<Completion>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(completion) = this.completion.take() {
                if completion.sent_all() { completion.finish() } else { completion.close() }
            }
        }
    }
}

pin_project! {
    /// A body of type `B`, or one of the crate's own [`Body`]: what a response carries
    /// once the crate may have replaced the app's body (`ResponseBody`, and the
    /// server's body). Like `http_body_util::Either`, but without its cost on every
    /// frame (measured: about 90 instructions per request more).
    #[project = EitherBodyProj]
    pub(crate) enum EitherBody<B> {
        Inner { #[pin] body: B },
        Own { body: Body },
    }
}

impl<B> http_body::Body for EitherBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            EitherBodyProj::Inner { body } => body.poll_frame(cx).map(|p| p.map(|r| r.map_err(Into::into))),
            EitherBodyProj::Own { body } => Pin::new(body).poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            EitherBody::Inner { body } => body.is_end_stream(),
            EitherBody::Own { body } => http_body::Body::is_end_stream(body),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            EitherBody::Inner { body } => body.size_hint(),
            EitherBody::Own { body } => http_body::Body::size_hint(body),
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody { kind: EitherBody::Inner { body }, completion: None }
    }

    pub(crate) fn replaced(body: Body) -> Self {
        ResponseBody { kind: EitherBody::Own { body }, completion: None }
    }

    /// Hands the request's completion to this body, which fires Finish or Close.
    pub(crate) fn watch(&mut self, mut completion: Completion)
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (hint, at_end) =
            (http_body::Body::size_hint(&self.kind), http_body::Body::is_end_stream(&self.kind));
        completion.expect(if at_end { Some(0) } else { hint.exact() });
        self.completion = Some(completion);
    }
}

#[cfg(test)]
impl<B> ResponseBody<B> {
    /// Whether this body carries the request's completion (Finish/Close).
    pub(crate) fn is_watched(&self) -> bool {
        self.completion.is_some()
    }
}

/// An empty body: what middleware that must make a response of this type on its
/// own (tower-http's `CorsLayer` answering a preflight, for one) gets.
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        ResponseBody::replaced(Body::empty())
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            EitherBody::Inner { body } => f.debug_tuple("ResponseBody::Inner").field(body).finish(),
            EitherBody::Own { body } => f.debug_tuple("ResponseBody::Replaced").field(body).finish(),
        }
    }
}

impl<B> http_body::Body for ResponseBody<B>
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
        let this = self.project();
        let mut kind = this.kind;
        if this.completion.is_none() {
            // Nothing to report (an unobserved request, or one already complete).
            return http_body::Body::poll_frame(kind, cx);
        }
        let polled = ready!(http_body::Body::poll_frame(kind.as_mut(), cx));
        let end = http_body::Body::is_end_stream(&*kind);
        match polled {
            None => {
                if let Some(completion) = this.completion.take() {
                    completion.finish();
                }
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                if let Some(completion) = this.completion.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        completion.sent(data.remaining() as u64);
                    }
                    // Trailers are always the last frame; servers stop polling there.
                    if end || frame.is_trailers() {
                        if let Some(completion) = this.completion.take() {
                            completion.finish();
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                if let Some(completion) = this.completion.take() {
                    completion.fail(&err);
                }
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.kind)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_not_boxed_twice() {
        let inner = Body::from("abc");
        let body = Body::new(inner);
        assert!(matches!(body.0, Kind::Full(Some(_))));
        let body = Body::new(http_body_util::Full::new(Bytes::from_static(b"x")));
        assert!(matches!(body.0, Kind::Full(Some(ref b)) if b == "x"));
        let body = Body::new(http_body_util::Empty::<Bytes>::new());
        assert!(matches!(body.0, Kind::Empty));
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::empty::<
            Result<http_body::Frame<Bytes>, std::convert::Infallible>,
        >()));
        assert!(matches!(body.0, Kind::Boxed(_)));
    }

    #[test]
    fn size_hints() {
        assert_eq!(http_body::Body::size_hint(&Body::from("abc")).exact(), Some(3));
        assert!(http_body::Body::is_end_stream(&Body::empty()));
        assert!(http_body::Body::is_end_stream(&Body::from("")));
    }
}
