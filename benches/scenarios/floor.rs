//! The head floor: the least a layer can do that hands the handler the request's
//! head (method, URI, version, and the two headers the benches' requests carry), in
//! an `Arc` put into the extensions; and the lifecycle floor, that plus the least a
//! layer must do to tell each request's end. One definition, shared by the
//! in-process benches (`scenarios`) and the loopback load run's `floor` and
//! `lifecycle` apps (`examples/load_server.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context as TaskContext, Poll, ready};

use http::header::{ACCEPT, COOKIE, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use pin_project_lite::pin_project;

/// What the floor keeps of the request.
#[allow(dead_code)]
pub struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    accept: Option<HeaderValue>,
    cookie: Option<HeaderValue>,
}

/// Captures the head into the request's extensions: the function a
/// `tower::util::MapRequestLayer` runs for every request. Always inlined, as a
/// closure written in its place is: left to the compiler, this shared function was
/// called instead (about 160 instructions a request more), which would flatter every
/// ratio against the floor.
#[inline(always)]
pub fn capture<B>(mut request: Request<B>) -> Request<B> {
    let head = Head::of(&request);
    request.extensions_mut().insert(Arc::new(head));
    request
}

impl Head {
    #[inline(always)]
    pub fn of<B>(request: &Request<B>) -> Head {
        Head {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            accept: request.headers().get(ACCEPT).cloned(),
            cookie: request.headers().get(COOKIE).cloned(),
        }
    }
}

/// The lifecycle floor: the head floor, plus the least any layer must do that tells
/// a request's end (Finish after the body's last frame, Close when the response or
/// its body is dropped first) to a handle the handler holds: keep a second handle
/// while the request runs, wrap the response future, and wrap the body to watch its
/// end. Nothing else: no events to listen to, no hooks, no errors, no panics caught.
/// Not a layer anyone would use; it shows what a row with a lifecycle cannot go below.
#[derive(Clone, Copy)]
pub struct LifecycleLayer;

impl<S> tower::Layer<S> for LifecycleLayer {
    type Service = Lifecycle<S>;

    fn layer(&self, inner: S) -> Lifecycle<S> {
        Lifecycle { inner }
    }
}

/// What the lifecycle floor's handle holds: the captured head, and how it ended.
#[allow(dead_code)]
pub struct Watched {
    head: Head,
    ended: AtomicU8,
}

impl Told for Watched {
    fn ended(&self) -> &AtomicU8 {
        &self.ended
    }
}

/// A floor's handle: where it is told how the request ended.
pub trait Told {
    fn ended(&self) -> &AtomicU8;
}

const FINISHED: u8 = 1;
pub const CLOSED: u8 = 2;

/// Tells the handle, if it is still held here, how the request ended.
pub fn tell<W: Told>(watched: &mut Option<Arc<W>>, how: u8) {
    if let Some(watched) = watched.take() {
        watched.ended().store(how, Ordering::Relaxed);
    }
}

/// The response leaves with its body watched by the handle, unless no other handle
/// is left (then nobody can ever see the end: the handle goes now, as ours does on
/// its untouched path).
#[inline(always)]
pub fn report<B, W: Told>(watched: &mut Option<Arc<W>>, response: Response<B>) -> Response<Reported<B, W>> {
    let watched = watched.take().filter(|watched| Arc::strong_count(watched) > 1);
    response.map(|body| Reported { body, watched })
}

/// The lifecycle floor's service.
#[derive(Clone)]
pub struct Lifecycle<S> {
    inner: S,
}

impl<S, B, ReqB> tower::Service<Request<ReqB>> for Lifecycle<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<B>>,
{
    type Response = Response<Reported<B>>;
    type Error = S::Error;
    type Future = LifecycleFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let watched = Arc::new(Watched { head: Head::of(&request), ended: AtomicU8::new(0) });
        request.extensions_mut().insert(watched.clone());
        LifecycleFuture { future: self.inner.call(request), watched: Some(watched) }
    }
}

pin_project! {
    /// The lifecycle floor's response future: the body it returns holds the handle.
    pub struct LifecycleFuture<F> {
        #[pin]
        future: F,
        watched: Option<Arc<Watched>>,
    }

    impl<F> PinnedDrop for LifecycleFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its response came: Close.
            tell(this.project().watched, CLOSED);
        }
    }
}

impl<F, B, E> Future for LifecycleFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Reported<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        Poll::Ready(Ok(report(this.watched, response)))
    }
}

pin_project! {
    /// The lifecycle floor's body: Finish after its last frame, Close if dropped first.
    pub struct Reported<B, W: Told = Watched> {
        #[pin]
        body: B,
        watched: Option<Arc<W>>,
    }

    impl<B, W: Told> PinnedDrop for Reported<B, W> {
        fn drop(this: Pin<&mut Self>) {
            tell(this.project().watched, CLOSED);
        }
    }
}

impl<B: http_body::Body, W: Told> http_body::Body for Reported<B, W> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        if frame.is_none() || this.body.is_end_stream() {
            tell(this.watched, FINISHED);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
