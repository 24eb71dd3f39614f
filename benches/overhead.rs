//! Per-request cost of `ContextLayer` against the crates it replaces, in one run.
//!
//! ```text
//! cargo bench --bench overhead
//! ```
//!
//! BENCHMARKS.md turns the figures into overheads over the bare service and ratios
//! between rows.

use criterion::{Criterion, criterion_group, criterion_main};

mod scenarios;

struct Timer<'a, 'c> {
    group: criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    rt: &'a tokio::runtime::Runtime,
}

impl scenarios::Visit for Timer<'_, '_> {
    fn visit<S: scenarios::Scenario<B>, B: scenarios::ScenarioBody>(&mut self, name: &str, svc: S) {
        let rt = self.rt;
        self.group.bench_function(name, |b| b.to_async(rt).iter(|| scenarios::drive(&svc)));
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut timer = Timer { group: c.benchmark_group("per_request"), rt: &rt };
    scenarios::each(&mut timer);
    timer.group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
