//! Live contexts counted, for leak tests and the soak run, and a sessions clock a
//! test can move (feature `test-util`; not for production: it counts on every
//! request).

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The count of live contexts, for leak tests: each thread counts in a counter of its
/// own, which only that thread writes, so counting is a plain load and store, no
/// locked instruction. A context made on one thread and dropped on another adds one
/// to the first thread's counter and takes one from the second's: the sum stays right.
static COUNTERS: Mutex<Vec<Arc<AtomicIsize>>> = Mutex::new(Vec::new());
/// The counts of threads that have exited (and of contexts dropped while one exits).
static EXITED: AtomicIsize = AtomicIsize::new(0);

fn counters() -> MutexGuard<'static, Vec<Arc<AtomicIsize>>> {
    COUNTERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A thread's counter, listed while the thread lives; its count moves to `EXITED`
/// when the thread exits, so the list does not grow with threads that come and go.
struct Counter(Arc<AtomicIsize>);

impl Counter {
    fn new() -> Counter {
        let counter = Arc::new(AtomicIsize::new(0));
        counters().push(counter.clone());
        Counter(counter)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let mut counters = counters();
        counters.retain(|counter| !Arc::ptr_eq(counter, &self.0));
        EXITED.fetch_add(self.0.load(Ordering::Acquire), Ordering::AcqRel);
    }
}

thread_local! {
    static COUNTER: Counter = Counter::new();
}

pub(crate) fn count_live(delta: isize) {
    let counted = COUNTER.try_with(|Counter(counter)| {
        // Only this thread writes its counter: no other write can come in between.
        counter.store(counter.load(Ordering::Relaxed) + delta, Ordering::Release);
    });
    if counted.is_err() {
        EXITED.fetch_add(delta, Ordering::AcqRel);
    }
}

/// How many contexts exist right now in this process. For leak tests.
#[doc(hidden)]
pub fn live_contexts() -> usize {
    let counters = counters();
    let total: isize = counters.iter().map(|counter| counter.load(Ordering::Acquire)).sum::<isize>()
        + EXITED.load(Ordering::Acquire);
    usize::try_from(total).unwrap_or(0)
}

#[cfg(feature = "sessions")]
thread_local! {
    /// How far this thread's sessions clock runs ahead of the system's, in ms.
    static SESSIONS_CLOCK_AHEAD_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Moves the sessions' clock forward on this thread: expiry tests wait without
/// sleeping, so a slow machine cannot make a young session look old. Only this
/// thread's sessions see it (a `#[tokio::test]` runs its app on its own thread).
#[cfg(feature = "sessions")]
#[doc(hidden)]
pub fn advance_sessions_clock(by: std::time::Duration) {
    let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    SESSIONS_CLOCK_AHEAD_MS.with(|ahead| ahead.set(ahead.get().saturating_add(by)));
}

#[cfg(feature = "sessions")]
pub(crate) fn sessions_clock_ahead_ms() -> u64 {
    SESSIONS_CLOCK_AHEAD_MS.try_with(std::cell::Cell::get).unwrap_or(0)
}
