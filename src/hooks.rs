//! After-hooks: Toa's `ctx.after`, run last-added-first once the inner service has
//! produced its response, before the response leaves the layer.

use std::future::Future;
use std::pin::Pin;

use http::Response;

use crate::Body;
use crate::context::{Context, HooksStarted, flag};
use crate::error::HttpError;

pub(crate) type HookFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, HttpError>> + Send>>;
pub(crate) type Hook = Box<dyn FnOnce(Response<Body>) -> HookFuture + Send>;

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
        shared.hooks.push(Box::new(move |response| Box::pin(hook(response))));
        Ok(())
    }

    /// Marks the hooks as started and takes them, with the deferred edits: from here
    /// on no hook can be added, so the layer runs them without the lock. Inside the
    /// hooks, `end` may be accepted once more (it skips the remaining hooks).
    pub(crate) fn start_hooks(&self) -> (Vec<Hook>, Vec<crate::context::Edit>) {
        let mut shared = self.lock();
        self.set(flag::HOOKS_STARTED);
        // WORK is spent: an edit made from now on sets it again, for `respond`.
        self.clear(flag::END_CALLED | flag::WORK);
        (std::mem::take(&mut shared.hooks), std::mem::take(&mut shared.edits))
    }

    /// The layer's decision for a response nobody asked to change: true when no hook
    /// or edit exists, and from now on none can be added (they would be refused).
    pub(crate) fn claim_untouched(&self) -> bool {
        let before = self.inner.flags.fetch_or(flag::HOOKS_STARTED, std::sync::atomic::Ordering::AcqRel);
        before & flag::WORK == 0
    }
}
