//! [`ResponseBody`]: the body of every response the layer returns, and the one that
//! completes the request (Finish after its last frame, Close if dropped first).
//!
//! It keeps the inner service's body as it is unless something had to replace it (a
//! hook, `end`, an error), so the untouched path boxes nothing.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::completion::Completion;
use crate::body::{Body, BoxError, EitherBody};

pin_project! {
    /// The body of every response [`ContextService`](crate::ContextService) returns.
    ///
    /// It is the inner service's body, untouched, unless a hook, `end` or an error
    /// replaced it with a [`Body`]. It reports the end of the response to the
    /// [`Context`](crate::Context): Finish after the last frame (or once it has sent
    /// the length its `Content-Length` declares, where the server stops), Close if
    /// it is dropped before that, Error (then Close) if the body itself fails or
    /// ends short of the length it declared.
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

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody { kind: EitherBody::Inner { body }, completion: None }
    }

    pub(crate) fn replaced(body: Body) -> Self {
        ResponseBody { kind: EitherBody::Own { body }, completion: None }
    }

    /// Hands the request's completion to this body, which fires Finish or Close;
    /// `expected`: how many bytes it is to send, when known
    /// ([`expected_length`](Self::expected_length)).
    pub(crate) fn watch(&mut self, mut completion: Completion, expected: Option<u64>) {
        completion.expect(expected);
        self.completion = Some(completion);
    }
}

impl<B> ResponseBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// How many bytes this body is to send: 0 at its end, else its exact size, else
    /// what the response's `Content-Length` declares.
    pub(crate) fn expected_length(&self, headers: &http::HeaderMap) -> Option<u64> {
        if http_body::Body::is_end_stream(&self.kind) {
            return Some(0);
        }
        http_body::Body::size_hint(&self.kind).exact().or_else(|| declared_length(headers))
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
                    completion.end();
                }
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                if let Some(completion) = this.completion.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        completion.sent(data.remaining() as u64);
                    }
                    // Trailers are always the last frame; servers stop polling there.
                    if (end || frame.is_trailers())
                        && let Some(completion) = this.completion.take()
                    {
                        completion.end();
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

/// The length a `Content-Length` header gives the body, which a server frames it by
/// (hyper's HTTP/1 sends that many bytes and no more, and drops the body there),
/// unless a `Transfer-Encoding` says otherwise. `None` when absent or not a plain number.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some_and(|other| other != value) {
        return None;
    }
    let text = value.to_str().ok()?;
    // Digits only: `u64::from_str` would take a leading `+`.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};

    use super::declared_length;

    fn headers(pairs: &[(http::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_declared_length_is_a_plain_number_the_server_frames_by() {
        assert_eq!(declared_length(&headers(&[(CONTENT_LENGTH, "10")])), Some(10));
        assert_eq!(declared_length(&headers(&[(CONTENT_LENGTH, "10"), (CONTENT_LENGTH, "10")])), Some(10));
        assert_eq!(declared_length(&headers(&[])), None);
        for odd in ["+10", "-1", "", " 10", "1e3", "18446744073709551616"] {
            assert_eq!(declared_length(&headers(&[(CONTENT_LENGTH, odd)])), None, "{odd:?}");
        }
        assert_eq!(declared_length(&headers(&[(CONTENT_LENGTH, "10"), (CONTENT_LENGTH, "11")])), None);
        assert_eq!(
            declared_length(&headers(&[(CONTENT_LENGTH, "10"), (TRANSFER_ENCODING, "chunked")])),
            None
        );
    }
}
