//! After-hooks: Toa's `ctx.after`, run last-added-first once the inner service has
//! produced its response, before the response leaves the layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use crate::Body;
use crate::context::{Context, HooksStarted, flag};
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
    fn push(&mut self, hook: Hook) {
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
    /// On the first poll, calls the hook with the response taken out of `slot`'s box;
    /// from then on, polls the future it returned. The response it returns is put
    /// back in the box.
    fn poll_hook(
        self: Pin<&mut Self>,
        slot: &mut Option<Box<Response<Body>>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), HttpError>>;
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
    fn poll_hook(
        mut self: Pin<&mut Self>,
        slot: &mut Option<Box<Response<Body>>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), HttpError>> {
        loop {
            match self.as_mut().project() {
                HookCellProj::Waiting { hook } => {
                    let Some(hook) = hook.take() else {
                        return Poll::Ready(Err(HttpError::new(500)));
                    };
                    let response = slot.as_deref_mut().map(std::mem::take).unwrap_or_default();
                    let future = hook(response);
                    self.set(HookCell::Running { future });
                }
                HookCellProj::Running { future } => {
                    let next = ready!(future.poll(cx))?;
                    match slot.as_deref_mut() {
                        Some(kept) => *kept = next,
                        None => *slot = Some(Box::new(next)),
                    }
                    return Poll::Ready(Ok(()));
                }
            }
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
    /// already responded or failed): as in Toa, a hook cannot add hooks.
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
        let mut shared = self.lock();
        // One read-modify-write: either the layer's decision (which sets
        // HOOKS_STARTED the same way) sees WORK, or this call sees HOOKS_STARTED.
        let before = self.inner.flags.fetch_or(flag::WORK, std::sync::atomic::Ordering::AcqRel);
        if before & (flag::HOOKS_STARTED | flag::RESPONDED | flag::ERROR_PATH) != 0 {
            return Err(HooksStarted);
        }
        shared.hooks.push(Box::pin(HookCell::Waiting { hook: Some(hook) }));
        Ok(())
    }

    /// Marks the hooks as started and takes them, with the deferred edits: from here
    /// on no hook can be added, so the layer runs them without the lock. Inside the
    /// hooks, `end` may be accepted once more (it skips the remaining hooks).
    ///
    /// Also takes a response given to `end` after the layer last looked (between
    /// the inner response and this call): it was accepted before the hooks, so the
    /// hooks run on it, as on any response ended before them.
    pub(crate) fn start_hooks(&self) -> (Hooks, Vec<crate::context::Edit>, Option<Response<Body>>) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let mut shared = self.lock();
        let ended = shared.ended.take().map(|ended| *ended);
        // Nothing is left to signal when the ended response was the only thing (an
        // error cannot be pending with it: each refuses the other).
        let spent = if ended.is_some() && shared.error.is_none() { flag::SIGNAL } else { 0 };
        // One swap: hooks started, and WORK is spent (an edit made from now on sets it
        // again, for `respond`).
        let _ = self.inner.flags.fetch_update(AcqRel, Acquire, |flags| {
            Some((flags | flag::HOOKS_STARTED) & !(flag::END_CALLED | flag::WORK | spent))
        });
        (std::mem::take(&mut shared.hooks), std::mem::take(&mut shared.edits), ended)
    }

    /// The layer's decision for a response nobody asked to change: `None` when hooks
    /// or edits exist (they run), else from now on none can be added (they would be
    /// refused). With `send`, the same compare-and-swap also marks the response as
    /// gone when nothing is pending (`Some(true)`: `respond`'s own swap is done);
    /// `Some(false)` leaves that to `respond`.
    pub(crate) fn claim_untouched(&self, send: bool) -> Option<bool> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let mut flags = self.flags();
        loop {
            if flags & flag::WORK != 0 {
                self.set(flag::HOOKS_STARTED);
                return None;
            }
            let sent = send && flags & flag::SIGNAL == 0;
            let claim = if sent { flag::HOOKS_STARTED | flag::RESPONDED } else { flag::HOOKS_STARTED };
            match self.inner.flags.compare_exchange_weak(flags, flags | claim, AcqRel, Acquire) {
                Ok(_) => return Some(sent),
                Err(now) => flags = now,
            }
        }
    }
}
