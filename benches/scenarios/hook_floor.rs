//! The hook floor: the lifecycle floor, plus the least a layer must do to let a
//! handle the handler holds add an after-hook, run on the response before it leaves.
//! It sits beside the one-after-hook target, as the lifecycle floor sits beside the
//! untouched one. Only in process: the loopback run has no hook.
//!
//! Least on every count this crate allows itself: the hook's closure and its future
//! share one allocation (sized for the larger), the handle keeps one hook only (a
//! later one replaces it), hooks cannot fail, and the hook is taken without the lock
//! when no other handle is left. The hook sees the crate's own `Body`, which keeps a
//! full body's bytes in place rather than boxing it (axum's `Body` would box the
//! benches' `Full` once more). No `end`, no errors, no panics caught.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll, ready};

use http::{Request, Response};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tower_context::body::{Body as HookBody, BoxError};

use super::floor::{CLOSED, Head, Reported, Told, report, tell};

/// The hook floor's layer.
#[derive(Clone, Copy)]
pub struct HookFloorLayer;

impl<S> tower::Layer<S> for HookFloorLayer {
    type Service = HookFloor<S>;

    fn layer(&self, inner: S) -> HookFloor<S> {
        HookFloor { inner }
    }
}

/// The hook floor's handle: the captured head, how the request ended, and the hook.
pub struct Hooked {
    #[allow(dead_code)]
    head: Head,
    ended: AtomicU8,
    hook: Mutex<Option<Hook>>,
}

impl Told for Hooked {
    fn ended(&self) -> &AtomicU8 {
        &self.ended
    }
}

/// A hook, once called: the response it is given in, the next one out.
type Hook = Pin<Box<dyn Run + Send>>;

trait Run {
    /// The first call hands the response to the closure; every call polls its future.
    fn run(
        self: Pin<&mut Self>,
        response: Option<Response<HookBody>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Response<HookBody>>;
}

pin_project! {
    #[project = CellProj]
    enum Cell<F, Fut> {
        Waiting { hook: Option<F> },
        Running { #[pin] future: Fut },
    }
}

impl<F, Fut> Run for Cell<F, Fut>
where
    F: FnOnce(Response<HookBody>) -> Fut,
    Fut: Future<Output = Response<HookBody>>,
{
    fn run(
        mut self: Pin<&mut Self>,
        response: Option<Response<HookBody>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Response<HookBody>> {
        if let (CellProj::Waiting { hook }, Some(response)) = (self.as_mut().project(), response) {
            let hook = hook.take().expect("a hook is called once");
            self.set(Cell::Running { future: hook(response) });
        }
        match self.project() {
            CellProj::Running { future } => future.poll(cx),
            CellProj::Waiting { .. } => panic!("a hook polled before it was called"),
        }
    }
}

impl Hooked {
    /// Adds the hook (replacing one added before).
    pub fn after<F, Fut>(&self, hook: F)
    where
        F: FnOnce(Response<HookBody>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<HookBody>> + Send + 'static,
    {
        let hook: Hook = Box::pin(Cell::Waiting { hook: Some(hook) });
        *self.hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }
}

/// The hook, if one was added: without the lock when no other handle is left.
fn take_hook(hooked: &mut Arc<Hooked>) -> Option<Hook> {
    match Arc::get_mut(hooked) {
        Some(only) => only.hook.get_mut().unwrap_or_else(PoisonError::into_inner).take(),
        None => hooked.hook.lock().unwrap_or_else(PoisonError::into_inner).take(),
    }
}

/// The hook floor's service.
#[derive(Clone)]
pub struct HookFloor<S> {
    inner: S,
}

type Output<B> = Response<Reported<Either<B, HookBody>, Hooked>>;

impl<S, B, ReqB> tower::Service<Request<ReqB>> for HookFloor<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<B>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Output<B>;
    type Error = S::Error;
    type Future = HookFloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let hooked =
            Arc::new(Hooked { head: Head::of(&request), ended: AtomicU8::new(0), hook: Mutex::new(None) });
        request.extensions_mut().insert(hooked.clone());
        HookFloorFuture { state: State::Inner { future: self.inner.call(request) }, hooked: Some(hooked) }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Hook { hook: Hook },
    }
}

pin_project! {
    /// The hook floor's response future: the inner future, then the hook if any.
    pub struct HookFloorFuture<F> {
        #[pin]
        state: State<F>,
        hooked: Option<Arc<Hooked>>,
    }

    impl<F> PinnedDrop for HookFloorFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its response came: Close.
            tell(this.project().hooked, CLOSED);
        }
    }
}

impl<F, B, E> Future for HookFloorFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Output<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let hooked = match this.state.as_mut().project() {
            StateProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                let Some(mut hook) = this.hooked.as_mut().and_then(take_hook) else {
                    return Poll::Ready(Ok(report(this.hooked, response.map(Either::Left))));
                };
                match hook.as_mut().run(Some(response.map(HookBody::new)), cx) {
                    Poll::Ready(hooked) => hooked,
                    Poll::Pending => {
                        this.state.set(State::Hook { hook });
                        return Poll::Pending;
                    }
                }
            }
            StateProj::Hook { hook } => ready!(hook.as_mut().run(None, cx)),
        };
        Poll::Ready(Ok(report(this.hooked, hooked.map(Either::Right))))
    }
}
