//! The right to complete a request: Finish or Close, exactly once. The response
//! future holds it until the head leaves, then the response body does.

use crate::body::BoxError;
use crate::context::{Context, Outcome};
use crate::error::HttpError;

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

    #[inline]
    pub(crate) fn ctx(&self) -> &Context {
        &self.ctx
    }

    #[inline]
    pub(crate) fn ctx_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// The body's length, when known: 0 for a body already at its end, else its
    /// exact size, else its `Content-Length`. A body that sent that much is complete
    /// even if the server drops it without polling it to the end (hyper does so at
    /// the end of a `Content-Length`, and for HEAD).
    pub(crate) fn expect(&mut self, exact: Option<u64>) {
        self.expected = exact;
    }

    pub(crate) fn sent(&mut self, bytes: u64) {
        self.sent = self.sent.saturating_add(bytes);
    }

    /// The body sent all it said it would: a server that frames the body by that
    /// length stops there (sending no more even when the body has more).
    pub(crate) fn sent_all(&self) -> bool {
        self.expected.is_some_and(|expected| self.sent >= expected)
    }

    /// The body says it is at its end: Finish, unless it sent less than it said it
    /// would (its exact size, or its `Content-Length`). The client then gets a cut
    /// response (HTTP/1 servers close the connection), so that is an error: Error,
    /// then Close.
    pub(crate) fn end(self) {
        match self.expected {
            Some(expected) if self.sent < expected => {
                let short = ShortBody { sent: self.sent, expected };
                self.fail(&BoxError::from(short));
            }
            _ => self.finish(),
        }
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
        if !self.ctx.phase().stream_failed() {
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
    #[inline]
    pub(crate) fn unobserved(&self) -> bool {
        self.ctx.is_sole() && self.ctx.phase().unobservable()
    }

    /// Lets the context go without completing it: for an unobserved request only.
    #[inline]
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

/// A body that ended before the length it declared.
#[derive(Debug)]
struct ShortBody {
    sent: u64,
    expected: u64,
}

impl std::fmt::Display for ShortBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ended after {} of the {} bytes it declared", self.sent, self.expected)
    }
}

impl std::error::Error for ShortBody {}
