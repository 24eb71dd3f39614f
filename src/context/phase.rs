//! Where a request is in its life, and the only code that reads or writes the flag
//! word, the shared lock and the waker behind it.
//!
//! Three parties touch a request at once: the handle ([`Context`](super::Context),
//! cloned into handlers, hooks, tasks and other threads), the layer's response
//! future, and the response body (which completes the request). Each does so only
//! through the named transitions below, and every ordering argument is written once,
//! beside the transition that enforces it.
//!
//! # The two tools
//!
//! - **The flag word** (`flags`): one `AtomicU32`. Cheap reads for the common path,
//!   and one read-modify-write per decision. Two parties that must not both win set
//!   their bit with a read-modify-write (`fetch_or`, compare-and-swap) and look at the
//!   other's bit in the value it returns: of two such operations on one word, one
//!   comes first, so exactly one of them sees the other. When the layer holds the
//!   request's only handle ([`Context::is_sole`](super::Context::is_sole)) there is
//!   no other party, and its decisions are plain stores: a read-modify-write is a
//!   locked instruction, among the dearest a request makes.
//! - **The shared lock** (`shared`): holds what the parties hand each other (an ended
//!   response, a pending error, hooks, edits, listeners, task handles). It is never
//!   held across an await or while user code runs: every transition takes out what
//!   must be called or dropped and returns it, and the caller does that after the
//!   lock is gone. So a poisoned lock can only come from a bug here; it is recovered.
//!
//! # The invariants
//!
//! Each is enforced by one transition, named here, and covered by the test named.
//!
//! 1. **Exactly one of Finish or Close, once.** [`Phase::complete`] claims the outcome
//!    with one compare-and-swap that fails if either bit is set. (Tests:
//!    `events_fire_once_in_order_and_dropping_the_body_closes`, the soak run.)
//! 2. **End before Finish.** End fires when the response leaves the layer
//!    ([`Phase::leave`]), and only then does the body hold the right to complete
//!    (`layer::completion`). A body cannot finish before it exists.
//!    (Test: `events_fire_once_in_order_and_dropping_the_body_closes`.)
//! 3. **Error before End on the error path.** [`Phase::enter_error_path`] runs before
//!    the error is rendered, the Error event fires with it, and End only fires from
//!    [`Phase::leave_on_error_path`] after the rendering.
//!    (Test: `error_listeners_see_each_error_once_even_after_the_head_left`.)
//! 4. **`end` against an error: the first wins.** [`Phase::try_end`] refuses while an
//!    error is pending or the error path is taken; [`Phase::try_signal_error`] refuses
//!    while an `end` is accepted. Both decide under the lock, so one of them sees the
//!    other. An error found later by the layer (an inner `Err`, a panic) meets an
//!    accepted `end` in [`Phase::take_signal`] or [`Phase::enter_error_path`], and the
//!    ended response wins; the error is reported, never dropped. An `end` accepted
//!    before the hooks started goes through them, whichever of the two meets it.
//!    (Tests: `an_accepted_end_wins_over_a_later_emitted_error`,
//!    `an_emitted_error_wins_over_an_end_made_while_it_is_being_handled`,
//!    `an_accepted_end_wins_over_a_later_panic_or_failing_hook`,
//!    `end_errors_and_edits_from_another_thread_are_never_lost`.)
//! 5. **A hook is either refused or run, never lost.** [`Phase::add_hook`] sets `WORK`
//!    with one read-modify-write and refuses if `HOOKS_STARTED` was already set; the
//!    layer sets `HOOKS_STARTED` the same way, and runs the hooks if it saw `WORK`:
//!    [`Phase::claim_untouched`] when it saw no `WORK`, else [`Phase::start_hooks`]
//!    under the lock, which takes every hook added until then.
//!    (Tests: `adding_a_hook_from_a_hook_is_refused`,
//!    `an_end_racing_the_start_of_the_hooks_still_gets_the_hooks`.)
//! 6. **Nothing registered is kept past completion.** Every registration (listener,
//!    hook, `end`, error, task, state, edit) sets its bit with a read-modify-write;
//!    [`Phase::complete`] sees the bit and releases what was kept, or the
//!    registration sees the outcome and acts at once: a hook or an `end` is
//!    refused, an error reported, a listener called or dropped. Error listeners out
//!    being called when the request completes deliver what is queued, and are then
//!    released by that delivery. (Tests in `tests/soak/leaks.rs`:
//!    `contexts_are_released_on_every_path`,
//!    `registrations_after_the_client_left_mid_handler_are_not_kept`,
//!    `error_listeners_busy_when_the_request_completes_deliver_everything_then_go`;
//!    here, `a_dispatch_ending_between_completion_s_claim_and_its_lock_leaves_the_listeners`.)

use std::mem;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

use atomic_waker::AtomicWaker;
use http::Response;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::HooksStarted;
use super::edits::Edit;
use super::events::{ErrorListener, Listeners, OnceListener, Outcome};
use super::hooks::{Hook, Hooks};
use crate::body::Body;
use crate::error::HttpError;

/// Bits of the flag word.
mod flag {
    /// `end()` was accepted in the current phase (before the hooks, or during them).
    pub(super) const END_CALLED: u32 = 1;
    /// `Shared::ended` or `Shared::error` holds something for the layer.
    pub(super) const SIGNAL: u32 = 1 << 1;
    /// After-hooks have started: no more can be added.
    pub(super) const HOOKS_STARTED: u32 = 1 << 2;
    /// The response head has left the layer (Toa's `ended`).
    pub(super) const RESPONDED: u32 = 1 << 3;
    pub(super) const FINISHED: u32 = 1 << 4;
    pub(super) const CLOSED: u32 = 1 << 5;
    /// Something to apply to the response: hooks or deferred edits exist.
    pub(super) const WORK: u32 = 1 << 6;
    /// Some listener is registered.
    pub(super) const LISTENERS: u32 = 1 << 7;
    /// The request is on the error path: new errors are reported, not rendered.
    pub(super) const ERROR_PATH: u32 = 1 << 8;
    /// `catch_stream` was called.
    pub(super) const STREAM_CAUGHT: u32 = 1 << 9;
    /// Someone awaits `done()`: completion must notify.
    pub(super) const WAITING: u32 = 1 << 10;
    /// The caught stream failed and reported its error to the context.
    pub(super) const STREAM_FAILED: u32 = 1 << 11;
    /// A task handle was kept: completion must release it.
    pub(super) const TASKS: u32 = 1 << 12;
    /// Something was put in the state map: completion must clear it.
    pub(super) const STATE: u32 = 1 << 13;
    /// A weak handle was made (`Context::downgrade`): the context is never sole again.
    pub(super) const WEAK: u32 = 1 << 14;
}

/// The response has left, or the request is over (closed before it left): nothing
/// can be registered for the response any more.
const GONE: u32 = flag::RESPONDED | flag::FINISHED | flag::CLOSED;

/// The request's phase: the flag word, the shared lock, the layer's waker and the
/// `done()` waiters.
pub(crate) struct Phase {
    flags: AtomicU32,
    /// Made with the context, not on first use: a lazily made lock (a boxed
    /// `OnceLock`) saved about 20 instructions on a request that registers nothing
    /// and cost about 300 and an allocation on every request that registers anything
    /// (a hook, an edit, `end`, an error). See BENCHMARKS.md.
    shared: Mutex<Shared>,
    /// Wakes the layer's response future when `end` or an error arrives.
    waker: AtomicWaker,
    /// Wakes `done()` waiters on Finish or Close.
    done: Notify,
}

/// What the parties hand each other, behind the lock.
#[derive(Default)]
struct Shared {
    hooks: Hooks,
    /// The response given to `end`, until the layer takes it (boxed: rare, and a
    /// response head is large next to everything else here).
    ended: Option<Box<Response<Body>>>,
    /// An error from `emit_error` or a task, until the layer takes it.
    error: Option<HttpError>,
    edits: Vec<Edit>,
    /// Made when the first listener is added.
    listeners: Option<Box<Listeners>>,
    tasks: Vec<AbortHandle>,
}

impl Shared {
    /// What the hooks start with, and the flags that are spent by it.
    fn start_hooks(&mut self) -> (Started, u32) {
        let ended = self.ended.take();
        // Nothing is left to signal when the ended response was the only thing (an
        // error cannot be pending with it: each refuses the other).
        let spent = if ended.is_some() && self.error.is_none() { flag::SIGNAL } else { 0 };
        let started = Started { hooks: mem::take(&mut self.hooks), edits: mem::take(&mut self.edits), ended };
        (started, flag::END_CALLED | flag::WORK | spent)
    }
}

/// What the context holds for the layer.
pub(crate) enum Signal {
    Error(HttpError),
    End(Response<Body>),
}

/// The layer's decision for an inner response: see [`Phase::claim_untouched`].
pub(crate) enum Claim {
    /// Hooks or edits exist: they run.
    Work,
    /// Nothing asked to change the response, and none can any more; it still has to
    /// be marked as gone ([`Phase::leave`]).
    Untouched,
    /// As `Untouched`, and already marked as gone: End is all that is left.
    UntouchedAndGone,
}

/// What [`Phase::start_hooks`] hands the layer.
pub(crate) struct Started {
    pub(crate) hooks: Hooks,
    pub(crate) edits: Vec<Edit>,
    /// A response given to `end` since the layer last looked: the hooks run on it.
    /// Left in its box: most requests have none, and `Started` stays small to move.
    pub(crate) ended: Option<Box<Response<Body>>>,
}

/// What an error finds when it goes to take the error path.
pub(crate) enum ErrorPath {
    /// The error path is taken: the deferred edits, for the rendered error.
    Entered(Vec<Edit>),
    /// An `end` was accepted first and its response not sent yet: it goes out.
    Ended(Response<Body>),
    /// As `Ended`, and accepted before the hooks started (after the layer last
    /// looked): the hooks run on it, as when the layer sees it first. Only when
    /// the caller asked with `before_hooks`.
    EndedBeforeHooks(Response<Body>),
}

/// What is left to do once the response is marked as gone.
#[derive(Default)]
pub(crate) struct Left {
    /// Edits made after the hooks started, to apply to the response.
    pub(crate) edits: Vec<Edit>,
    /// An `end` that came after the hooks were done: it replaces the response, which
    /// has not left then: the caller checks this one as any other (it may carry an
    /// error) and calls `leave` again. Left in its box, so that `Left` (returned for
    /// every response) stays small to move.
    pub(crate) ended: Option<Box<Response<Body>>>,
    /// An error that came too late to change anything: it is only reported.
    pub(crate) late_error: Option<HttpError>,
}

/// Task handles, hooks, an ended response and edits that were never used.
pub(crate) type Leftovers = (Vec<AbortHandle>, Hooks, Option<Box<Response<Body>>>, Vec<Edit>);

/// What completion takes out, to call and drop outside the lock.
pub(crate) struct Released {
    pub(crate) listeners: Option<Box<Listeners>>,
    /// An error that arrived when nothing could render it any more: to report (the
    /// listeners out being called, if any, deliver it themselves).
    pub(crate) error: Option<HttpError>,
    /// Everything else that was kept: dropped by the caller.
    pub(crate) rest: Leftovers,
    /// Whether anything was ever put in the state map.
    pub(crate) state: bool,
    /// Whether `done()` waiters must be woken once the rest is done.
    pub(crate) waiting: bool,
}

/// The flag word with `set` set and then `clear` cleared: the one rule every way of
/// changing it follows (a swap, a compare-and-swap loop, a plain store).
#[inline]
fn changed(flags: u32, set: u32, clear: u32) -> u32 {
    (flags | set) & !clear
}

impl Phase {
    #[inline(always)]
    pub(crate) fn new() -> Phase {
        Phase {
            flags: AtomicU32::new(0),
            shared: Mutex::new(Shared::default()),
            waker: AtomicWaker::new(),
            done: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // User code never runs while this lock is held, so poisoning can only come
        // from a bug here; the data is still consistent enough to go on.
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // The flag tests are `#[inline]`, as are the context's and the completion's small
    // questions and the helpers `Context::new` calls (the id, a header's slot, the
    // connection): the layer's response future and `Context::new` are generic, so
    // compiled in the user's crate, and there a function of ours not marked so stays
    // an out-of-line call (through the GOT, in the load server's build). In the
    // loopback server, the instructions right after three such calls took a seventh
    // of the future's samples (BENCHMARKS.md, "Small helpers inlined across the
    // crate").
    #[inline]
    fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    #[inline]
    fn has(&self, bits: u32) -> bool {
        self.flags() & bits != 0
    }

    /// Sets `bits` and returns the flags as they were: the one read-modify-write
    /// that orders a registration against the layer's decisions and completion.
    fn set(&self, bits: u32) -> u32 {
        self.flags.fetch_or(bits, Ordering::AcqRel)
    }

    // ---- Questions anyone may ask -------------------------------------------------

    /// The head has left the layer (End fired or is firing).
    #[inline]
    pub(crate) fn is_responded(&self) -> bool {
        self.has(flag::RESPONDED)
    }

    /// Whether a deferred edit names the header `name`. No lock when no edit or hook
    /// was ever added.
    #[cfg(feature = "files")]
    pub(crate) fn edits_header(&self, name: &http::HeaderName) -> bool {
        self.has(flag::WORK) && self.lock().edits.iter().any(|edit| edit.touches(name))
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.has(flag::FINISHED)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.has(flag::CLOSED)
    }

    /// How the request completed, or `None` while it runs.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        outcome_of(self.flags())
    }

    /// The caught stream failed and told the context itself.
    #[inline]
    pub(crate) fn stream_failed(&self) -> bool {
        self.has(flag::STREAM_FAILED)
    }

    /// Nothing is registered that completion would call, wake or release, and no
    /// stream was caught: with no other handle alive, nobody can observe how the
    /// request completes. Asked after [`Context::is_sole`](super::Context::is_sole),
    /// whose fence makes the dropped handles' registrations visible here.
    #[inline]
    pub(crate) fn unobservable(&self) -> bool {
        const OBSERVED: u32 =
            flag::LISTENERS | flag::WAITING | flag::TASKS | flag::STATE | flag::STREAM_CAUGHT;
        self.flags() & OBSERVED == 0
    }

    /// No weak handle to the request was ever made: `Context::downgrade`, the only
    /// maker, sets `WEAK` through the handle it is called on, before that handle can
    /// be dropped; so once that handle is gone, the flag is seen here.
    #[inline]
    pub(crate) fn no_weak_handles(&self) -> bool {
        // Pairs with the release of the handles dropped before.
        std::sync::atomic::fence(Ordering::Acquire);
        self.flags() & flag::WEAK == 0
    }

    /// A weak handle is being made (see [`no_weak_handles`](Self::no_weak_handles)).
    pub(crate) fn note_weak(&self) {
        self.set(flag::WEAK);
    }

    /// Sets `set` and clears `clear` in the flag word, returning the flags as they
    /// were. For the request's sole handle ([`Context::is_sole`](super::Context::is_sole))
    /// a load and a plain store: no other party can write the word then, so they do a
    /// read-modify-write's work without its locked instruction (BENCHMARKS.md has
    /// what one costs). Only the layer's transitions pass `sole`, each computed just
    /// before it, after any user code that could have cloned the handle.
    fn change(&self, sole: bool, set: u32, clear: u32) -> u32 {
        if sole {
            let was = self.flags();
            self.flags.store(changed(was, set, clear), Ordering::Release);
            return was;
        }
        match (set, clear) {
            (set, 0) => self.set(set),
            (0, clear) => self.flags.fetch_and(!clear, Ordering::AcqRel),
            (set, clear) => self
                .flags
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |flags| Some(changed(flags, set, clear)))
                .unwrap_or_else(|flags| flags),
        }
    }

    /// Writes `now` if the word still holds `was`: a compare-and-swap, or for the
    /// sole handle a plain store, which nobody can race (see [`change`](Self::change)).
    /// `Err` carries what the word held instead.
    fn replace(&self, sole: bool, was: u32, now: u32) -> Result<(), u32> {
        if sole {
            self.flags.store(now, Ordering::Release);
            return Ok(());
        }
        self.flags.compare_exchange(was, now, Ordering::AcqRel, Ordering::Acquire).map(drop)
    }

    // ---- Transitions the handle makes ---------------------------------------------

    /// `end(response)`: accepted (`None`) unless an `end` was accepted in this
    /// phase, the response left, the error path was taken, an error is pending
    /// (invariant 4) or the request is over (closed before its response left); a
    /// refused response is handed back, to be dropped outside the lock.
    pub(crate) fn try_end(&self, response: Response<Body>) -> Option<Response<Body>> {
        let mut shared = self.lock();
        if self.has(flag::END_CALLED | GONE | flag::ERROR_PATH) || shared.error.is_some() {
            return Some(response);
        }
        // Stored first, then announced; if the response left in between (the layer
        // decides `leave`'s quick path without this lock), or the request completed
        // (invariant 6), the announcement sees it and takes the response back.
        shared.ended = Some(Box::new(response));
        if self.set(flag::END_CALLED | flag::SIGNAL) & GONE != 0 {
            let ended = shared.ended.take();
            drop(shared);
            return Some(ended.map_or_else(Response::default, |ended| *ended));
        }
        drop(shared);
        self.waker.wake();
        None
    }

    /// An error for the layer to render: accepted while the response has not left,
    /// the request is not over, no error is pending or being rendered and no `end`
    /// was accepted (invariant 4); otherwise handed back, to be reported only.
    pub(crate) fn try_signal_error(&self, error: HttpError) -> Result<(), HttpError> {
        let mut shared = self.lock();
        if self.has(GONE | flag::ERROR_PATH | flag::END_CALLED) || shared.error.is_some() {
            return Err(error);
        }
        shared.error = Some(error);
        if self.set(flag::SIGNAL) & GONE != 0 {
            // The response left, or the request completed, meanwhile: only a report
            // is possible.
            let late = shared.error.take();
            drop(shared);
            return late.map_or(Ok(()), Err);
        }
        drop(shared);
        self.waker.wake();
        Ok(())
    }

    /// Adds an after-hook, or refuses it once the hooks have started (invariant 5),
    /// or the request is over (invariant 6: a hook kept then would never run, nor be
    /// released).
    pub(crate) fn add_hook(&self, hook: Hook) -> Result<(), HooksStarted> {
        let mut shared = self.lock();
        // One read-modify-write: either the layer's decision (which sets
        // HOOKS_STARTED the same way) sees WORK, or this call sees HOOKS_STARTED;
        // and either completion sees WORK, or this call sees its outcome.
        let before = self.set(flag::WORK);
        if before & (flag::HOOKS_STARTED | GONE | flag::ERROR_PATH) != 0 {
            drop(shared);
            // The hook is user code: dropped outside the lock.
            drop(hook);
            return Err(HooksStarted);
        }
        shared.hooks.push(hook);
        Ok(())
    }

    /// Adds a deferred edit. Edits that arrive after the hooks started still apply
    /// (just before the response leaves); once it has left, or the request is over,
    /// they cannot, and are dropped.
    pub(crate) fn add_edit(&self, edit: Edit) {
        let mut shared = self.lock();
        shared.edits.push(edit);
        if self.set(flag::WORK) & GONE != 0 {
            shared.edits.clear();
        }
    }

    /// Keeps a task's handle, to abort it on Close or the error path; aborts it at
    /// once when the request's scope is already cancelled.
    pub(crate) fn add_task(&self, task: AbortHandle) {
        let mut shared = self.lock();
        let flags = self.set(flag::TASKS);
        if flags & flag::FINISHED != 0 {
            // The request is over: the task runs on, unbound.
            return;
        }
        if flags & (flag::CLOSED | flag::ERROR_PATH) != 0 {
            task.abort();
            return;
        }
        shared.tasks.retain(|task| !task.is_finished());
        shared.tasks.push(task);
    }

    /// Something is being put in the state map: completion must clear it. `false`
    /// when the request has completed already: nothing would clear it then, so it
    /// must not be kept.
    pub(crate) fn note_state(&self) -> bool {
        outcome_of(self.set(flag::STATE)).is_none()
    }

    /// Whether this is the request's first caught stream.
    pub(crate) fn catch_stream(&self) -> bool {
        self.set(flag::STREAM_CAUGHT) & flag::STREAM_CAUGHT == 0
    }

    /// The caught stream failed; it reports its error itself.
    pub(crate) fn mark_stream_failed(&self) {
        self.set(flag::STREAM_FAILED);
    }

    /// Keeps an End listener; hands it back to be called at once when End has fired;
    /// drops it (outside the lock) when the request closed before its response left,
    /// so End never will.
    pub(crate) fn add_end_listener(&self, f: OnceListener) -> Option<OnceListener> {
        let mut shared = self.lock();
        let flags = self.set(flag::LISTENERS);
        if flags & flag::RESPONDED != 0 {
            return Some(f);
        }
        if outcome_of(flags).is_some() {
            drop(shared);
            drop(f);
            return None;
        }
        listeners_of(&mut shared).end.push(f);
        None
    }

    /// Keeps a Finish or Close listener while the request runs; hands it back to be
    /// called at once when that outcome already happened; drops it (outside the
    /// lock) when the other one did.
    pub(crate) fn add_outcome_listener(&self, wanted: Outcome, f: OnceListener) -> Option<OnceListener> {
        let mut shared = self.lock();
        match outcome_of(self.set(flag::LISTENERS)) {
            Some(outcome) if outcome == wanted => Some(f),
            Some(_) => {
                drop(shared);
                drop(f);
                None
            }
            None => {
                let listeners = listeners_of(&mut shared);
                match wanted {
                    Outcome::Finished => listeners.finish.push(f),
                    Outcome::Closed => listeners.close.push(f),
                }
                None
            }
        }
    }

    /// Keeps an Error listener until completion; after it, drops it.
    pub(crate) fn add_error_listener(&self, f: ErrorListener) {
        let mut shared = self.lock();
        if outcome_of(self.set(flag::LISTENERS)).is_none() {
            listeners_of(&mut shared).error.push(f);
            return;
        }
        drop(shared);
        drop(f);
    }

    /// Waits for Finish or Close.
    pub(crate) async fn done(&self) -> Outcome {
        self.set(flag::WAITING);
        loop {
            let mut notified = pin!(self.done.notified());
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            notified.await;
        }
    }

    // ---- Transitions the layer makes ----------------------------------------------

    /// Takes what the context holds for the layer: a pending error first (the
    /// request is then on the error path), else an ended response.
    /// `sole` is asked only when there is a signal to take (the common poll has none).
    #[inline(always)]
    pub(crate) fn take_signal(&self, sole: impl FnOnce() -> bool) -> Option<Signal> {
        if !self.has(flag::SIGNAL) {
            return None;
        }
        self.take_pending_signal(sole())
    }

    #[inline(never)]
    fn take_pending_signal(&self, sole: bool) -> Option<Signal> {
        let mut shared = self.lock();
        let signal = match shared.error.take() {
            Some(err) => {
                // Taken to be rendered: from here on the request is on the error path
                // (under the lock, so an `end` that comes after is refused, not
                // accepted and then dropped).
                self.change(sole, flag::ERROR_PATH, 0);
                Some(Signal::Error(err))
            }
            None => shared.ended.take().map(|ended| Signal::End(*ended)),
        };
        if shared.error.is_none() && shared.ended.is_none() {
            self.change(sole, 0, flag::SIGNAL);
        }
        signal
    }

    /// Registers the layer's waker for `end` and errors. True when a signal arrived
    /// before the registration could catch it: poll again instead of waiting.
    pub(crate) fn park(&self, waker: &Waker) -> bool {
        self.waker.register(waker);
        self.has_signal()
    }

    /// An `end` or an error waits for the layer to take it ([`take_signal`](Self::take_signal)).
    #[inline]
    pub(crate) fn has_signal(&self) -> bool {
        self.has(flag::SIGNAL)
    }

    /// The layer's decision for a response nobody may have asked to change: from
    /// here on no hook can be added (invariant 5). With `send`, the same
    /// compare-and-swap also marks the response as gone when nothing is pending.
    /// `sole`: the caller holds the request's only handle, and stores instead.
    ///
    /// `Claim::Work` writes nothing: the layer goes straight on to
    /// [`start_hooks`](Self::start_hooks), whose read-modify-write under the lock
    /// sets `HOOKS_STARTED`, and a hook added in between is taken and run there.
    /// (Setting it here as well cost one more locked instruction on every request
    /// with a hook or an edit; BENCHMARKS.md has what one costs.)
    pub(crate) fn claim_untouched(&self, send: bool, sole: bool) -> Claim {
        let mut flags = self.flags();
        loop {
            if flags & flag::WORK != 0 {
                return Claim::Work;
            }
            let gone = send && flags & flag::SIGNAL == 0;
            let claim = if gone { flag::HOOKS_STARTED | flag::RESPONDED } else { flag::HOOKS_STARTED };
            match self.replace(sole, flags, flags | claim) {
                Ok(()) if gone => return Claim::UntouchedAndGone,
                Ok(()) => return Claim::Untouched,
                Err(now) => flags = now,
            }
        }
    }

    /// Marks the hooks as started and takes them, with the deferred edits: from here
    /// on no hook can be added, so the layer runs them without the lock. Inside the
    /// hooks, `end` may be accepted once more (it skips the remaining hooks).
    ///
    /// Also takes a response given to `end` after the layer last looked (between the
    /// inner response and this call): it was accepted before the hooks, so the hooks
    /// run on it, as on any response ended before them. `sole`: the caller holds the
    /// request's only handle, and the flags are written by a store.
    pub(crate) fn start_hooks(&self, sole: bool) -> Started {
        let mut shared = self.lock();
        let (started, clear) = shared.start_hooks();
        // One swap: hooks started, and WORK is spent (an edit made from now on sets it
        // again, for `leave`).
        self.change(sole, flag::HOOKS_STARTED, clear);
        started
    }

    /// [`start_hooks`](Self::start_hooks) through the request's only handle, made
    /// exclusive (`Arc::get_mut`): no lock to take and release, and the flags
    /// written in place.
    pub(crate) fn start_hooks_exclusive(&mut self) -> Started {
        let (started, clear) =
            self.shared.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).start_hooks();
        let flags = self.flags.get_mut();
        *flags = changed(*flags, flag::HOOKS_STARTED, clear);
        started
    }

    /// Takes the error path: marked under the lock (so no `end` can be accepted
    /// after it), the request's tasks aborted, the deferred edits returned. Unless an
    /// accepted `end` is still waiting: its response is returned instead and the path
    /// is left untaken (invariant 4). `before_hooks`: the caller met its error before
    /// the hooks, and runs them on such a response if they have not started
    /// ([`ErrorPath::EndedBeforeHooks`]; `start_hooks` marks them started then).
    pub(crate) fn enter_error_path(&self, sole: bool, before_hooks: bool) -> ErrorPath {
        let mut shared = self.lock();
        if let Some(ended) = shared.ended.take() {
            // An error cannot be pending beside it (each refuses the other): nothing
            // is left to signal.
            let spent = if shared.error.is_none() { flag::SIGNAL } else { 0 };
            if before_hooks && !self.has(flag::HOOKS_STARTED) {
                self.change(sole, 0, spent);
                return ErrorPath::EndedBeforeHooks(*ended);
            }
            // No hook can be added from here on: none would run.
            self.change(sole, flag::HOOKS_STARTED, spent);
            return ErrorPath::Ended(*ended);
        }
        self.change(sole, flag::ERROR_PATH, 0);
        let edits = mem::take(&mut shared.edits);
        let tasks = mem::take(&mut shared.tasks);
        drop(shared);
        for task in tasks {
            task.abort();
        }
        ErrorPath::Entered(edits)
    }

    /// Marks the response as gone, off the error path. `Err` when an error arrived
    /// while the last hook finished: it still wins, and the request is now on the
    /// error path.
    ///
    /// The common case needs no lock: nothing is pending and nothing is left to
    /// apply, so one compare-and-swap marks the response as gone. `end`,
    /// `emit_error` and the edits announce themselves with a read-modify-write of the
    /// same flags, so either this swap fails (and the locked path handles them) or
    /// they see RESPONDED and stand down. For the `sole` handle, nobody else can
    /// announce anything, and a store does.
    pub(crate) fn leave(&self, sole: bool) -> Result<Left, HttpError> {
        let flags = self.flags();
        if flags & (flag::SIGNAL | flag::WORK) == 0
            && self.replace(sole, flags, flags | flag::RESPONDED).is_ok()
        {
            return Ok(Left::default());
        }
        let mut shared = self.lock();
        if let Some(err) = shared.error.take() {
            self.change(sole, flag::ERROR_PATH, 0);
            return Err(err);
        }
        if let Some(ended) = shared.ended.take() {
            // Not gone yet: a second `end` is refused (END_CALLED), so the caller's
            // next call leaves.
            return Ok(Left { ended: Some(ended), ..Left::default() });
        }
        let edits = mem::take(&mut shared.edits);
        self.change(sole, flag::RESPONDED, 0);
        let late_error = shared.error.take();
        Ok(Left { edits, ended: None, late_error })
    }

    /// Marks the response as gone on the error path (the edits were taken with the
    /// path): only an error that came too late is left.
    pub(crate) fn leave_on_error_path(&self, sole: bool) -> Option<HttpError> {
        let mut shared = self.lock();
        self.change(sole, flag::RESPONDED, 0);
        shared.error.take()
    }

    // ---- Events -------------------------------------------------------------------

    /// The End listeners, taken to be called (once RESPONDED is set, none is added);
    /// `None` without a lock when no listener was ever registered.
    #[inline]
    pub(crate) fn take_end_listeners(&self) -> Option<Vec<OnceListener>> {
        if !self.has(flag::LISTENERS) {
            return None;
        }
        self.lock().listeners.as_mut().map(|l| mem::take(&mut l.end))
    }

    /// Starts delivering `err` to the Error listeners: the listeners, taken out to be
    /// called, or `None` when there are none, or when another thread (or a listener
    /// itself) is delivering already; that one delivers `err` too, in order.
    pub(crate) fn begin_error_dispatch(&self, err: &HttpError) -> Option<Vec<ErrorListener>> {
        if !self.has(flag::LISTENERS) {
            return None;
        }
        let mut shared = self.lock();
        let registered = shared.listeners.as_mut()?;
        if registered.dispatching {
            registered.queued.push(err.clone());
            return None;
        }
        if registered.error.is_empty() {
            return None;
        }
        registered.dispatching = true;
        Some(mem::take(&mut registered.error))
    }

    /// Ends one round of delivery: the next queued error to deliver, the listeners
    /// added meanwhile joined to `listeners` first; or `None` when the queue is empty,
    /// and the listeners are put back (or, when the request completed meanwhile, left
    /// to the caller to drop).
    pub(crate) fn next_error_dispatch(&self, listeners: &mut Vec<ErrorListener>) -> Option<HttpError> {
        next_error_dispatch(&mut self.lock(), listeners)
    }

    /// Claims the outcome (invariant 1) and takes out everything kept for the
    /// request, to be called and dropped by the caller outside the lock. `None` when
    /// the outcome was claimed already, or nothing was ever kept (then the waiters,
    /// if any, are woken here).
    pub(crate) fn complete(&self, outcome: Outcome) -> Option<Released> {
        let bit = match outcome {
            Outcome::Finished => flag::FINISHED,
            Outcome::Closed => flag::CLOSED,
        };
        // Whoever registers something to release does so with a read-modify-write of
        // the same flags, so either it sees this claim (and handles its item at once)
        // or this claim sees its flag and takes the slow path below.
        let mut flags = self.flags();
        loop {
            if flags & (flag::FINISHED | flag::CLOSED) != 0 {
                return None;
            }
            match self.flags.compare_exchange_weak(flags, flags | bit, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => flags = now,
            }
        }
        const HOLDS_SOMETHING: u32 = flag::LISTENERS | flag::WORK | flag::SIGNAL | flag::TASKS | flag::STATE;
        if flags & HOLDS_SOMETHING == 0 {
            // Nothing was ever registered: nothing to call or release. (A `done()`
            // that set WAITING after the swap sees the outcome itself.)
            if flags & flag::WAITING != 0 {
                self.done.notify_waiters();
            }
            return None;
        }
        let mut shared = self.lock();
        let error = shared.error.take();
        let listeners = match shared.listeners.as_mut() {
            // The Error listeners are out being called: they deliver what is queued
            // (this error too) and are released by that dispatch when it ends, with
            // those added meanwhile (`next_error_dispatch`); the rest goes now.
            Some(registered) if registered.dispatching => {
                registered.queued.extend(error.clone());
                registered.released = true;
                Some(Box::new(Listeners {
                    end: mem::take(&mut registered.end),
                    finish: mem::take(&mut registered.finish),
                    close: mem::take(&mut registered.close),
                    ..Listeners::default()
                }))
            }
            _ => shared.listeners.take(),
        };
        let released = Released {
            listeners,
            error,
            rest: (
                mem::take(&mut shared.tasks),
                mem::take(&mut shared.hooks),
                shared.ended.take(),
                mem::take(&mut shared.edits),
            ),
            state: flags & flag::STATE != 0,
            waiting: flags & flag::WAITING != 0,
        };
        drop(shared);
        if outcome == Outcome::Closed {
            for task in &released.rest.0 {
                task.abort();
            }
        }
        Some(released)
    }

    /// Wakes the `done()` waiters, last step of a completion that released things.
    pub(crate) fn wake_waiters(&self) {
        self.done.notify_waiters();
    }
}

/// [`Phase::next_error_dispatch`], under the lock.
fn next_error_dispatch(shared: &mut Shared, listeners: &mut Vec<ErrorListener>) -> Option<HttpError> {
    let registered = listeners_of(shared);
    // Listeners added while these ran join them: they hear every error delivered
    // from now on (those queued meanwhile too), after the ones added before them.
    listeners.append(&mut registered.error);
    if !registered.queued.is_empty() {
        return Some(registered.queued.remove(0));
    }
    if registered.released {
        // The request completed while these ran, and completion took everything
        // else: the listeners are not put back (the caller drops them, outside the
        // lock), and nothing is kept for the request any more. Completion is asked,
        // not the flags: between its claim of the outcome and its taking of the
        // listeners, the listeners must still be there for it to call.
        shared.listeners = None;
        return None;
    }
    registered.error = mem::take(listeners);
    registered.dispatching = false;
    None
}

fn listeners_of(shared: &mut Shared) -> &mut Listeners {
    shared.listeners.get_or_insert_with(Box::default)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Completion claims the outcome, then takes the listeners under the lock. An
    /// error dispatch ending in between must leave them for it: the Finish listener
    /// is still called, and the error listeners are released with the rest.
    #[test]
    fn a_dispatch_ending_between_completion_s_claim_and_its_lock_leaves_the_listeners() {
        let phase = Phase::new();
        phase.add_error_listener(Box::new(|_| {}));
        assert!(phase.add_outcome_listener(Outcome::Finished, Box::new(|_| {})).is_none());
        let mut out = phase.begin_error_dispatch(&HttpError::new(500)).expect("the listeners go out");
        std::thread::scope(|scope| {
            let shared = phase.lock();
            let completing = scope.spawn(|| phase.complete(Outcome::Finished));
            // Completion has claimed the outcome and now waits for the lock.
            while !phase.is_finished() {
                std::thread::yield_now();
            }
            let mut shared = shared;
            assert!(next_error_dispatch(&mut shared, &mut out).is_none());
            drop(shared);
            let released = completing.join().unwrap().expect("completion releases the listeners");
            let listeners = released.listeners.expect("the listeners are completion's to call");
            assert_eq!(listeners.finish.len(), 1, "the Finish listener is called");
            assert_eq!(listeners.error.len(), 1, "the error listener is released with the rest");
        });
        assert!(out.is_empty(), "the dispatched listeners were put back for completion");
    }

    /// A listener added while the listeners are out being called hears the errors
    /// queued behind the one being delivered; once the request completes, the
    /// delivery releases it with the others.
    #[test]
    fn a_listener_added_during_a_delivery_hears_the_errors_queued_behind_it() {
        let phase = Phase::new();
        phase.add_error_listener(Box::new(|_| {}));
        let mut out = phase.begin_error_dispatch(&HttpError::new(500)).expect("the listeners go out");
        phase.add_error_listener(Box::new(|_| {}));
        assert!(phase.begin_error_dispatch(&HttpError::new(501)).is_none(), "queued for the delivery");
        let next = phase.next_error_dispatch(&mut out).expect("the queued error is next");
        assert_eq!(next.status(), 501);
        assert_eq!(out.len(), 2, "the listener added meanwhile hears it");
        // The request completes while they deliver a third error.
        assert!(phase.begin_error_dispatch(&HttpError::new(502)).is_none());
        phase.add_error_listener(Box::new(|_| {}));
        let released = phase.complete(Outcome::Finished).expect("the listeners are released");
        assert!(
            released.listeners.expect("end, finish, close").error.is_empty(),
            "the delivery keeps its own"
        );
        assert_eq!(phase.next_error_dispatch(&mut out).map(|e| e.status().as_u16()), Some(502));
        assert_eq!(out.len(), 3);
        assert!(phase.next_error_dispatch(&mut out).is_none(), "nothing is left to deliver");
        assert!(phase.lock().listeners.is_none(), "the delivery let the listeners go");
    }
}
