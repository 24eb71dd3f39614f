//! Whole-process checks: the soak run, the leak rounds and the live-context count.
//! Each reads process-wide counters (live contexts, and the live heap through the
//! counting allocator in `leak_rounds`), so each test here runs alone: it holds
//! [`alone`] for its whole length. They need the `test-util` feature (for
//! `live_contexts`), which `cargo test --all-features` turns on.

use std::sync::{Mutex, MutexGuard};

#[path = "../common/mod.rs"]
mod common;

mod harness;
mod leak_rounds;
mod leaks;
mod live_count;
mod soak;

/// One whole-process test at a time.
fn alone() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
