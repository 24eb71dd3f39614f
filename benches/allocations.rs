//! Heap allocations per request for every scenario, counted by a global allocator.
//!
//! ```text
//! cargo bench --bench allocations
//! ```
//!
//! Prints one row per scenario: allocations per request, and the difference from the
//! bare service (what the layer adds). Counts are exact and repeatable, unlike times.
//! `SCENARIO=untouched` runs only the scenarios whose name contains that text (and
//! the bare baseline), which is handy under `valgrind --tool=callgrind`;
//! `SCENARIO==name` (an `=` before the whole name) runs only the scenario of that
//! name, for a name that is part of another's.

use std::sync::atomic::Ordering;

mod counting;
mod scenarios;

use counting::ALLOCATIONS;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Requests per scenario; `ROUNDS=n` changes it (benches/callgrind.sh uses two
/// counts to take the fixed start-up cost out).
fn rounds() -> u64 {
    std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1000)
}

struct Counter {
    rt: tokio::runtime::Runtime,
    bare: Option<f64>,
    /// Only scenarios whose name contains this (and the bare baseline) run: for
    /// profiling one path under callgrind.
    only: Option<String>,
}

impl scenarios::Visit for Counter {
    fn visit<S: scenarios::Scenario<B>, B: scenarios::ScenarioBody>(&mut self, name: &str, svc: S) {
        let wanted = |only: &String| match only.strip_prefix('=') {
            Some(exact) => name == exact,
            None => name.contains(only.as_str()),
        };
        if self.bare.is_some() && self.only.as_ref().is_some_and(|only| !wanted(only)) {
            return;
        }
        // Warm up: first-use allocations (lazy statics, runtime internals) are not
        // per-request costs.
        for _ in 0..10 {
            self.rt.block_on(scenarios::drive(&svc));
        }
        let rounds = rounds();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..rounds {
            self.rt.block_on(scenarios::drive(&svc));
        }
        #[allow(clippy::cast_precision_loss)]
        let per_request = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / rounds.max(1) as f64;
        let bare = *self.bare.get_or_insert(per_request);
        println!("{name:<50} {per_request:>8.2} {:>+8.2}", per_request - bare);
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too, so keep it quick.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    println!("{:<50} {:>8} {:>8}", "scenario", "allocs", "added");
    let only = std::env::var("SCENARIO").ok();
    scenarios::each(&mut Counter { rt, bare: None, only });
}
