//! Lifecycle events: End, Finish, Close and Error, their listeners, and `done()`.
//!
//! The order is fixed: End (the head left the layer) comes before Finish (the body
//! was fully handed to the server); exactly one of Finish or Close (the response was
//! dropped first: the client went away) fires for every request; each fires at most
//! once. Error fires once for every error the request meets, rendered or not.

use std::mem;
use std::pin::pin;
use std::sync::Arc;

use crate::BoxError;
use crate::context::{Context, flag};
use crate::error::HttpError;

type OnceListener = Box<dyn FnOnce(&Context) + Send>;
type ErrorListener = Box<dyn FnMut(&HttpError) + Send>;

/// Registered listeners, kept until the request completes.
#[derive(Default)]
pub(crate) struct Listeners {
    end: Vec<OnceListener>,
    finish: Vec<OnceListener>,
    close: Vec<OnceListener>,
    error: Vec<ErrorListener>,
    /// The error listeners are out being called; errors that arrive meanwhile wait
    /// in `queued` for that dispatch to deliver them.
    dispatching: bool,
    queued: Vec<HttpError>,
}

/// How a request completed: see [`Context::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole response was handed to the server (Finish).
    Finished,
    /// The response was dropped before it finished: the client went away (Close).
    Closed,
}

impl Context {
    /// Calls `f` when the response head leaves the layer (Toa's `end` event).
    ///
    /// Added after that moment, `f` runs at once.
    pub fn on_end(&self, f: impl FnOnce(&Context) + Send + 'static) {
        let mut shared = self.lock();
        if self.set_prev(flag::LISTENERS) & flag::RESPONDED != 0 {
            drop(shared);
            call_quietly(|| f(self));
            return;
        }
        shared.listeners().end.push(Box::new(f));
    }

    /// Calls `f` when the whole response has been handed to the server (Toa's
    /// `finish`). Added after Finish, `f` runs at once; after Close, never.
    pub fn on_finish(&self, f: impl FnOnce(&Context) + Send + 'static) {
        self.on_outcome(Outcome::Finished, Box::new(f));
    }

    /// Calls `f` when the response is dropped before it finished: the client went away
    /// mid-handler or mid-body (Toa's `close`). Added after Close, `f` runs at once;
    /// after Finish, never.
    pub fn on_close(&self, f: impl FnOnce(&Context) + Send + 'static) {
        self.on_outcome(Outcome::Closed, Box::new(f));
    }

    /// Registers a Finish or Close listener: kept while the request runs, called at
    /// once if that outcome already happened, dropped if the other one did.
    fn on_outcome(&self, wanted: Outcome, f: OnceListener) {
        let mut shared = self.lock();
        match outcome_of(self.set_prev(flag::LISTENERS)) {
            Some(outcome) if outcome == wanted => {
                drop(shared);
                call_quietly(|| f(self));
            }
            Some(_) => {}
            None => match wanted {
                Outcome::Finished => shared.listeners().finish.push(f),
                Outcome::Closed => shared.listeners().close.push(f),
            },
        }
    }

    /// Calls `f` for every error this request meets, once each: rendered errors
    /// (before the error response is made) and errors after the head was sent (a body
    /// failing mid-stream, a late task error), which can only be reported.
    ///
    /// Listeners are released when the request completes.
    pub fn on_error(&self, f: impl FnMut(&HttpError) + Send + 'static) {
        let mut shared = self.lock();
        if outcome_of(self.set_prev(flag::LISTENERS)).is_none() {
            shared.listeners().error.push(Box::new(f));
        }
    }

    /// How the request completed, or `None` while it is still going.
    pub fn outcome(&self) -> Option<Outcome> {
        outcome_of(self.flags())
    }

    /// Waits until the request completes: Finished or Closed.
    ///
    /// ```
    /// # use tower_context::{Context, Outcome};
    /// # fn f(ctx: Context) {
    /// let watcher = ctx.clone();
    /// tokio::spawn(async move {
    ///     if watcher.done().await == Outcome::Closed {
    ///         eprintln!("{} left early", watcher.id());
    ///     }
    /// });
    /// # }
    /// ```
    pub async fn done(&self) -> Outcome {
        self.set(flag::WAITING);
        loop {
            let mut notified = pin!(self.inner.done.notified());
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            notified.await;
        }
    }

    /// Fires End. The caller has set `RESPONDED` under the lock.
    pub(crate) fn emit_end(&self) {
        if !self.has(flag::LISTENERS) {
            return;
        }
        let listeners = match self.lock().listeners.as_mut() {
            Some(listeners) => mem::take(&mut listeners.end),
            None => return,
        };
        for listener in listeners {
            call_quietly(|| listener(self));
        }
    }

    /// Fires Error for one error.
    pub(crate) fn emit_error_event(&self, err: &HttpError) {
        #[cfg(feature = "tracing")]
        if !err.is_exposed() || err.status().is_server_error() {
            tracing::error!(request_id = self.id(), error = ?err, "request error");
        }
        if !self.has(flag::LISTENERS) {
            return;
        }
        let mut shared = self.lock();
        let Some(registered) = shared.listeners.as_mut() else { return };
        if registered.dispatching {
            // Another thread (or a listener itself) is calling the listeners: it
            // delivers this one too, in order, when it is done with its own.
            registered.queued.push(err.clone());
            return;
        }
        if registered.error.is_empty() {
            return;
        }
        registered.dispatching = true;
        let mut listeners = mem::take(&mut registered.error);
        drop(shared);
        let mut next = None;
        loop {
            let current = next.as_ref().unwrap_or(err);
            for listener in &mut listeners {
                call_quietly(|| listener(current));
            }
            let mut shared = self.lock();
            let registered = shared.listeners();
            if registered.queued.is_empty() {
                // Keep the order: these first, then any added while they ran.
                listeners.append(&mut registered.error);
                registered.error = listeners;
                registered.dispatching = false;
                return;
            }
            next = Some(registered.queued.remove(0));
        }
    }

    /// An error that can no longer change the response: listeners and the layer's
    /// error hook hear of it.
    pub(crate) fn report_error(&self, err: &HttpError) {
        self.emit_error_event(err);
        if let Some(hook) = &self.config().on_error {
            // The response is gone: the hook is told, its answer cannot apply. This can
            // run inside a body's poll or drop, so a panic in the hook stops here.
            call_quietly(|| drop(hook(err.clone(), self)));
        }
    }

    /// Fires Finish or Close, once, and releases everything that could keep the
    /// request alive.
    pub(crate) fn complete(&self, outcome: Outcome) {
        let bit = match outcome {
            Outcome::Finished => flag::FINISHED,
            Outcome::Closed => flag::CLOSED,
        };
        // Claimed with one compare-and-swap: exactly one of Finish or Close. Whoever
        // registers something to release does so with a read-modify-write of the same
        // flags, so either it sees this claim (and handles its item at once) or this
        // claim sees its flag and takes the slow path below.
        let mut flags = self.flags();
        loop {
            if flags & (flag::FINISHED | flag::CLOSED) != 0 {
                return;
            }
            match self.inner.flags.compare_exchange_weak(
                flags,
                flags | bit,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => flags = now,
            }
        }
        const HOLDS_SOMETHING: u32 = flag::LISTENERS | flag::WORK | flag::SIGNAL | flag::TASKS | flag::STATE;
        if flags & HOLDS_SOMETHING == 0 {
            // Nothing was ever registered: nothing to call or release. (A `done()`
            // that set WAITING after the swap sees the outcome itself.)
            if flags & flag::WAITING != 0 {
                self.inner.done.notify_waiters();
            }
            return;
        }
        let mut shared = self.lock();
        let listeners = shared.listeners.take();
        let tasks = mem::take(&mut shared.tasks);
        let hooks = mem::take(&mut shared.hooks);
        let ended = shared.ended.take();
        let error = shared.error.take();
        let edits = mem::take(&mut shared.edits);
        drop(shared);
        if outcome == Outcome::Closed {
            for task in &tasks {
                task.abort();
            }
        }
        if let Some(listeners) = listeners {
            let Listeners { end, finish, close, error: mut error_listeners, .. } = *listeners;
            if let Some(error) = &error {
                // An error that arrived when nothing could render it any more.
                for listener in &mut error_listeners {
                    call_quietly(|| listener(error));
                }
            }
            let fire = match outcome {
                Outcome::Finished => finish,
                Outcome::Closed => close,
            };
            for listener in fire {
                call_quietly(|| listener(self));
            }
            // User closures are dropped here, outside the lock: their drop code may
            // call back into the context.
            drop((end, error_listeners));
        }
        drop((tasks, hooks, ended, error, edits));
        // Last, once listeners had their chance to read it: the state map, which may
        // hold values that hold this context.
        let state = mem::take(&mut *self.state_map());
        drop(state);
        if flags & flag::WAITING != 0 {
            self.inner.done.notify_waiters();
        }
    }

    /// Aborts the request's tasks (the error path cancels the request's scope).
    pub(crate) fn abort_tasks(&self) {
        let tasks = mem::take(&mut self.lock().tasks);
        for task in tasks {
            task.abort();
        }
    }
}

/// The outcome a set of flags records.
fn outcome_of(flags: u32) -> Option<Outcome> {
    if flags & flag::FINISHED != 0 {
        Some(Outcome::Finished)
    } else if flags & flag::CLOSED != 0 {
        Some(Outcome::Closed)
    } else {
        None
    }
}

/// Runs a listener; a panic in it is contained (listeners run inside the response
/// future or a body's drop, where unwinding would take the connection down).
fn call_quietly(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        #[cfg(feature = "tracing")]
        tracing::error!("a tower-context listener panicked");
    }
}

/// The right to complete a request: it fires Finish or Close exactly once. The layer's
/// response future holds it until the response leaves, then the body does.
pub(crate) struct Completion {
    ctx: Context,
    /// Finish or Close has been fired through this completion.
    done: bool,
    expected: Option<u64>,
    sent: u64,
}

impl Completion {
    pub(crate) fn new(ctx: Context) -> Self {
        Completion { ctx, done: false, expected: None, sent: 0 }
    }

    pub(crate) fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// The body's exact length, when known (0 for a body already at its end): a body
    /// that sent that much is complete even if the server drops it without polling
    /// it to the end (hyper does so after an exact Content-Length, and for HEAD).
    pub(crate) fn expect(&mut self, exact: Option<u64>) {
        self.expected = exact;
    }

    pub(crate) fn sent(&mut self, bytes: u64) {
        self.sent = self.sent.saturating_add(bytes);
    }

    pub(crate) fn sent_all(&self) -> bool {
        self.expected == Some(self.sent)
    }

    fn fire(mut self, outcome: Outcome) {
        self.done = true;
        self.ctx.complete(outcome);
    }

    pub(crate) fn finish(self) {
        self.fire(Outcome::Finished);
    }

    pub(crate) fn close(self) {
        self.fire(Outcome::Closed);
    }

    /// The body failed mid-stream: Error, then Close.
    pub(crate) fn fail(self, err: &BoxError) {
        // A caught stream has reported its own error already (whatever the layers
        // above wrapped its error in).
        if !self.ctx.has(flag::STREAM_FAILED) {
            let err = match err.downcast_ref::<HttpError>() {
                Some(http) => http.clone(),
                None => HttpError::new(500).with_source(BodyError(err.to_string())),
            };
            self.ctx.report_error(&err);
        }
        self.fire(Outcome::Closed);
    }
}

impl Completion {
    /// True when nothing can observe how the request completes: this is the only
    /// handle to the context (no other `Context`, no weak reference: nobody can make
    /// one either), and nothing was registered that completion would call, wake or
    /// release (listeners, `done()` waiters, tasks, state, a caught stream).
    pub(crate) fn unobserved(&self) -> bool {
        let inner = &self.ctx.inner;
        if Arc::strong_count(inner) != 1 {
            return false;
        }
        // Pairs with the release of the handles dropped before, so that whatever they
        // did (a `downgrade`, a registration) is seen below.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        const OBSERVED: u32 =
            flag::LISTENERS | flag::WAITING | flag::TASKS | flag::STATE | flag::STREAM_CAUGHT;
        Arc::weak_count(inner) == 0 && self.ctx.flags() & OBSERVED == 0
    }

    /// Lets the context go without completing it: for an unobserved request only.
    pub(crate) fn release(mut self) {
        self.done = true;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.ctx.complete(Outcome::Closed);
        }
    }
}

/// A response body's own error, as the source of the `HttpError` listeners see.
#[derive(Debug)]
struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "response body failed: {}", self.0)
    }
}

impl std::error::Error for BodyError {}
