//! [`Body`]: the response body the crate hands to user code (after-hooks, `end`,
//! error rendering), and the two-kind body (the app's own, or a `Body`) that the
//! layer's and the server's responses carry.
//!
//! ```
//! use tower_context::body::Body;
//!
//! let response = http::Response::new(Body::from("hello"));
//! assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(5));
//! ```

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

/// The boxed error type used at the crate's boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body that can hold anything: empty, bytes, or any boxed http body.
///
/// Used wherever the crate hands a response to user code (after-hooks, `end`, error
/// rendering). Full and empty bodies are not boxed.
///
/// ```
/// use tower_context::body::Body;
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
    /// axum's body, already boxed: kept as it is rather than boxed a second time.
    #[cfg(feature = "axum")]
    Axum(axum_core::body::Body),
}

impl Body {
    /// An empty body.
    pub const fn empty() -> Self {
        Body(Kind::Empty)
    }

    /// Wraps any http body; a `Body`, and axum's body under the "axum" feature, are
    /// taken as they are, not boxed again.
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
        // What an axum handler's response carries: a hook, `end` or the error path
        // would otherwise box the box.
        #[cfg(feature = "axum")]
        if let Some(body) = any.downcast_mut::<Option<axum_core::body::Body>>().and_then(Option::take) {
            return Body(Kind::Axum(body));
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
            #[cfg(feature = "axum")]
            Kind::Axum(_) => f.write_str("Body::Axum"),
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
            #[cfg(feature = "axum")]
            Kind::Axum(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Boxed(body) => body.is_end_stream(),
            #[cfg(feature = "axum")]
            Kind::Axum(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Boxed(body) => body.size_hint(),
            #[cfg(feature = "axum")]
            Kind::Axum(body) => body.size_hint(),
        }
    }
}

pin_project! {
    /// A body of type `B`, or one of the crate's own [`Body`]: what a response carries
    /// once the crate may have replaced the app's body (the layer's response body,
    /// and the server's). Like `http_body_util::Either`, but without its cost on every
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

    /// axum's body keeps its frames, its end and its size, and its errors arrive as
    /// errors; it is not boxed again.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn axum_bodies_are_kept_as_they_are() {
        let body = Body::new(axum_core::body::Body::from("hello"));
        assert!(matches!(body.0, Kind::Axum(_)));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        assert!(!http_body::Body::is_end_stream(&body));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        let body = Body::new(axum_core::body::Body::empty());
        assert!(http_body::Body::is_end_stream(&body));

        let failing = futures_util::stream::iter([
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::other("disk gone")),
        ]);
        let mut body = Body::new(axum_core::body::Body::from_stream(failing));
        assert!(matches!(body.0, Kind::Axum(_)));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
    }

    #[test]
    fn size_hints() {
        assert_eq!(http_body::Body::size_hint(&Body::from("abc")).exact(), Some(3));
        assert!(http_body::Body::is_end_stream(&Body::empty()));
        assert!(http_body::Body::is_end_stream(&Body::from("")));
    }
}
