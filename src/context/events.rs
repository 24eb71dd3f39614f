//! Lifecycle events: End, Finish, Close and Error, their listeners, and `done()`.
//!
//! The order is fixed: End (the head left the layer) comes before Finish (the body
//! was fully handed to the server); exactly one of Finish or Close (the response was
//! dropped first: the client went away) fires for every request; each fires at most
//! once. Error fires once for every error the request meets, rendered or not. The
//! rules that make it so are in `phase`; this file calls the listeners.

use std::mem;

use super::Context;
use crate::error::HttpError;

pub(crate) type OnceListener = Box<dyn FnOnce(&Context) + Send>;
pub(crate) type ErrorListener = Box<dyn FnMut(&HttpError) + Send>;

/// Registered listeners, kept until the request completes (in `phase`'s lock).
#[derive(Default)]
pub(crate) struct Listeners {
    pub(super) end: Vec<OnceListener>,
    pub(super) finish: Vec<OnceListener>,
    pub(super) close: Vec<OnceListener>,
    pub(super) error: Vec<ErrorListener>,
    /// The error listeners are out being called; errors that arrive meanwhile wait
    /// in `queued` for that dispatch to deliver them.
    pub(super) dispatching: bool,
    pub(super) queued: Vec<HttpError>,
    /// The request completed while the error listeners were out: completion took
    /// everything else, and the dispatch releases them when it ends.
    pub(super) released: bool,
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
        if let Some(f) = self.phase().add_end_listener(Box::new(f)) {
            call_quietly(|| f(self));
        }
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
        if let Some(f) = self.phase().add_outcome_listener(wanted, f) {
            call_quietly(|| f(self));
        }
    }

    /// Calls `f` for every error this request meets, once each: rendered errors
    /// (before the error response is made) and errors after the head was sent (a body
    /// failing mid-stream, a late task error), which can only be reported.
    ///
    /// Listeners are released when the request completes.
    pub fn on_error(&self, f: impl FnMut(&HttpError) + Send + 'static) {
        self.phase().add_error_listener(Box::new(f));
    }

    /// How the request completed, or `None` while it is still going.
    pub fn outcome(&self) -> Option<Outcome> {
        self.phase().outcome()
    }

    /// Waits until the request completes: Finished or Closed.
    ///
    /// It resolves once the outcome is decided, the moment [`outcome`](Self::outcome)
    /// stops being `None`. The Finish or Close listeners run on the thread that
    /// completed the request, and may still be running then: to act after them, act
    /// in a listener.
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
        self.phase().done().await
    }

    /// Fires End. The caller has marked the response as gone.
    pub(crate) fn emit_end(&self) {
        let Some(listeners) = self.phase().take_end_listeners() else { return };
        for listener in listeners {
            call_quietly(|| listener(self));
        }
    }

    /// Fires Error for one error: the listeners are called outside the lock, and an
    /// error raised meanwhile (by another thread, or a listener) is delivered after
    /// this one, by this call.
    pub(crate) fn emit_error_event(&self, err: &HttpError) {
        self.log_error(err);
        let Some(mut listeners) = self.phase().begin_error_dispatch(err) else { return };
        let mut next = None;
        loop {
            let current = next.as_ref().unwrap_or(err);
            for listener in &mut listeners {
                call_quietly(|| listener(current));
            }
            match self.phase().next_error_dispatch(&mut listeners) {
                Some(queued) => next = Some(queued),
                None => return,
            }
        }
    }

    /// An error that can no longer change the response: listeners and the layer's
    /// error policy hear of it.
    pub(crate) fn report_error(&self, err: &HttpError) {
        self.emit_error_event(err);
        self.tell_policy(err);
    }

    /// Logs an error the request met (under the `tracing` feature): the unexposed
    /// and the 5xx ones.
    fn log_error(&self, err: &HttpError) {
        #[cfg(feature = "tracing")]
        if !err.is_exposed() || err.status().is_server_error() {
            tracing::error!(request_id = self.id(), error = ?err, "request error");
        }
        #[cfg(not(feature = "tracing"))]
        let _ = err;
    }

    /// The app's error policy hears of an error that can no longer change the
    /// response: the hook is told, its answer cannot apply. This can run inside a
    /// body's poll or drop, so a panic in the hook stops here.
    fn tell_policy(&self, err: &HttpError) {
        if let Some(policy) = &self.config().handle_error {
            call_quietly(|| drop(policy(err.clone(), self)));
        }
    }

    /// Fires Finish or Close, once, and releases everything that could keep the
    /// request alive.
    pub(crate) fn complete(&self, outcome: Outcome) {
        let Some(mut released) = self.phase().complete(outcome) else { return };
        if let Some(error) = &released.error {
            // An error that arrived when nothing could render it any more (the
            // request closed before the layer took it): reported, as any late one.
            // Listeners out being called deliver it themselves; these are the rest.
            self.log_error(error);
            if let Some(listeners) = &mut released.listeners {
                for listener in &mut listeners.error {
                    call_quietly(|| listener(error));
                }
            }
            self.tell_policy(error);
        }
        if let Some(listeners) = released.listeners {
            let Listeners { end, finish, close, error, .. } = *listeners;
            let fire = match outcome {
                Outcome::Finished => finish,
                Outcome::Closed => close,
            };
            for listener in fire {
                call_quietly(|| listener(self));
            }
            // User closures are dropped here, outside the lock: their drop code may
            // call back into the context.
            drop((end, error));
        }
        drop((released.error, released.rest));
        if released.state {
            // Last, once listeners had their chance to read it: the state map, which
            // may hold values that hold this context.
            let state = mem::take(&mut *self.state_map());
            drop(state);
        }
        if released.waiting {
            self.phase().wake_waiters();
        }
    }
}

/// Whether errors the request meets are logged: the `tracing` feature is on and a
/// global subscriber is installed. Without one, a body that could still fail needs
/// no context kept for it.
#[inline]
pub(crate) fn errors_are_logged() -> bool {
    #[cfg(feature = "tracing")]
    return tracing::dispatcher::has_been_set();
    #[cfg(not(feature = "tracing"))]
    false
}

/// Runs a listener; a panic in it is contained (listeners run inside the response
/// future or a body's drop, where unwinding would take the connection down).
pub(crate) fn call_quietly(f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        #[cfg(feature = "tracing")]
        tracing::error!("a tower-context listener panicked");
    }
}
