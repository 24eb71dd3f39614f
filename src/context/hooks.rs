//! After-hooks: Toa's `ctx.after`, run last-added-first once the inner service has
//! produced its response, before the response leaves the layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::{Context, HooksStarted};
use crate::body::Body;
use crate::error::HttpError;

/// An after-hook: the closure and, once it is called, its future, in one allocation
/// (sized for the larger of the two).
pub(crate) type Hook = Pin<Box<dyn RunHook + Send>>;

/// The hooks of a request, last added first out. The first one is kept inline:
/// most requests that have hooks have one.
#[derive(Default)]
pub(crate) struct Hooks {
    first: Option<Hook>,
    rest: Vec<Hook>,
}

impl Hooks {
    pub(crate) fn push(&mut self, hook: Hook) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(hook);
        } else {
            self.rest.push(hook);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Hook> {
        self.rest.pop().or_else(|| self.first.take())
    }

    pub(crate) fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

pub(crate) trait RunHook {
    /// Calls the hook with the response; its future is kept for `poll_hook`. A hook
    /// already started keeps its future, and this response is dropped.
    fn start(self: Pin<&mut Self>, response: Response<Body>);

    /// Polls the hook's future: the response it returns is the next one. A hook never
    /// started fails with a 500.
    fn poll_hook(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Response<Body>, HttpError>>;
}

pin_project! {
    #[project = HookCellProj]
    enum HookCell<F, Fut> {
        Waiting { hook: Option<F> },
        Running { #[pin] future: Fut },
    }
}

impl<F, Fut> RunHook for HookCell<F, Fut>
where
    F: FnOnce(Response<Body>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, HttpError>>,
{
    fn start(mut self: Pin<&mut Self>, response: Response<Body>) {
        if let HookCellProj::Waiting { hook } = self.as_mut().project()
            && let Some(hook) = hook.take()
        {
            let future = hook(response);
            self.set(HookCell::Running { future });
        }
    }

    fn poll_hook(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Response<Body>, HttpError>> {
        match self.project() {
            HookCellProj::Waiting { .. } => Poll::Ready(Err(HttpError::new(500))),
            HookCellProj::Running { future } => future.poll(cx),
        }
    }
}

impl Context {
    /// Adds an after-hook (Toa's `ctx.after`).
    ///
    /// Hooks run in LIFO order after the inner service returned its response (or after
    /// [`end`](Context::end)), before the response leaves the layer. Each receives the
    /// response and returns the next one: it may change the status, headers or body.
    /// A hook that fails sends the request down the error path; a hook that calls
    /// `end` makes its response the final one and the remaining hooks are skipped.
    /// Hooks do not run on the error path.
    ///
    /// Returns [`HooksStarted`] once hooks have begun to run (or the request has
    /// already responded, failed or closed): as in Toa, a hook cannot add hooks.
    ///
    /// ```
    /// # use tower_context::Context;
    /// # fn f(ctx: Context) -> Result<(), tower_context::HooksStarted> {
    /// let started = std::time::Instant::now();
    /// ctx.after(move |mut res| async move {
    ///     let took = format!("{}us", started.elapsed().as_micros());
    ///     if let Ok(value) = took.parse() {
    ///         res.headers_mut().insert("x-response-time", value);
    ///     }
    ///     Ok(res)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn after<F, Fut>(&self, hook: F) -> Result<(), HooksStarted>
    where
        F: FnOnce(Response<Body>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<Body>, HttpError>> + Send + 'static,
    {
        self.phase().add_hook(Box::pin(HookCell::Waiting { hook: Some(hook) }))
    }
}
