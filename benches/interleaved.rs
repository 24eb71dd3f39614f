//! Time per request for every scenario, measured interleaved: each round times a
//! batch of requests of every scenario in turn, so all rows of one round see the
//! same machine. Overheads and ratios are taken within a round, then the median
//! over the rounds is reported. On a shared VM whose speed drifts by tens of percent
//! over a minute, this is steadier than timing each row on its own (as criterion
//! does, in `benches/overhead.rs`).
//!
//! ```text
//! cargo bench --bench interleaved                  # 21 rounds of 20,000 requests
//! ROUNDS=31 BATCH=50000 cargo bench --bench interleaved
//! SCENARIO=untouched,hook cargo bench --bench interleaved   # bare + rows naming either
//! ```

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

mod scenarios;

type Run = Box<dyn FnMut(&Runtime, u32) -> Duration>;

#[derive(Default)]
struct Collect {
    rows: Vec<(String, Run)>,
}

impl scenarios::Visit for Collect {
    fn visit<S, B>(&mut self, name: &str, svc: S)
    where
        S: tower::Service<scenarios::Req, Response = http::Response<B>> + Clone + 'static,
        S::Error: std::fmt::Debug,
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: std::fmt::Debug,
    {
        let run = move |rt: &Runtime, n: u32| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..n {
                    scenarios::drive(&svc).await;
                }
            });
            start.elapsed()
        };
        self.rows.push((name.to_owned(), Box::new(run)));
    }
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// The pairs the targets of issue 8 compare: (ours, theirs, target ratio).
const TARGETS: [(&str, &str, f64); 4] = [
    ("ContextLayer untouched", "tower-cookies CookieManagerLayer untouched", 0.75),
    ("ContextLayer one after-hook", "axum from_fn adding a header", 1.0),
    (
        "ContextLayer cookie read + signed set (Keygrip, default)",
        "tower-cookies cookie read + signed set",
        0.75,
    ),
    (
        "ContextLayer cookie read + signed set (cookie-crate format)",
        "tower-cookies cookie read + signed set",
        0.75,
    ),
];

/// The rows that show what any layer handing out a per-request handle pays: a bare
/// `Arc` in the extensions, and the same with the request head captured.
const FLOORS: [&str; 2] =
    ["floor: Arc handle in the extensions, nothing else", "floor with the request head captured"];

fn main() {
    let rounds = env("ROUNDS", 21).max(1);
    let batch = env("BATCH", 20_000).max(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut collect = Collect::default();
    scenarios::each(&mut collect);
    let mut rows = collect.rows;
    // `SCENARIO=text`: only the bare baseline and the rows whose name contains it.
    if let Ok(only) = std::env::var("SCENARIO") {
        let mut index = 0;
        rows.retain(|(name, _)| {
            index += 1;
            index == 1 || only.split(',').any(|part| name.contains(part))
        });
    }
    for (_, run) in &mut rows {
        run(&rt, batch / 10 + 1);
    }

    // ns per request, per row and round.
    let mut times = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        // Start each round at another row, so no row always runs right after another.
        let start = round as usize % rows.len();
        for i in (start..rows.len()).chain(0..start) {
            let took = rows[i].1(&rt, batch);
            times[i].push(took.as_nanos() as f64 / f64::from(batch));
        }
    }

    let bare = times[0].clone();
    let added: Vec<Vec<f64>> =
        times.iter().map(|row| row.iter().zip(&bare).map(|(t, b)| t - b).collect()).collect();
    println!("{rounds} rounds of {batch} requests per row; medians over the rounds\n");
    println!("| scenario | ns/request | added ns |\n|---|---:|---:|");
    for (i, (name, _)) in rows.iter().enumerate() {
        let t = median(&mut times[i].clone());
        if i == 0 {
            println!("| {name} | {t:.0} | — |");
        } else {
            println!("| {name} | {t:.0} | {:+.0} |", median(&mut added[i].clone()));
        }
    }

    println!(
        "\n| target | ratio (median of rounds) | quartiles | target | holds? |\n|---|---:|---:|---:|---|"
    );
    let index = |name: &str| rows.iter().position(|(n, _)| n == name);
    for (ours, theirs, target) in TARGETS {
        let (Some(a), Some(b)) = (index(ours), index(theirs)) else { continue };
        let mut ratios: Vec<f64> = added[a].iter().zip(&added[b]).map(|(x, y)| x / y).collect();
        let mid = median(&mut ratios);
        let q1 = ratios[ratios.len() / 4];
        let q3 = ratios[(ratios.len() * 3) / 4];
        let holds = if mid <= target { "yes" } else { "no" };
        println!("| {ours} / {theirs} | {mid:.2} | {q1:.2}–{q3:.2} | ≤ {target} | {holds} |");
    }

    // How each floor row compares with the two untouched rows.
    println!("\n| floor | its overhead / tower-cookies' untouched | / ours untouched |\n|---|---:|---:|");
    let (Some(theirs), Some(ours)) = (index(TARGETS[0].1), index(TARGETS[0].0)) else { return };
    for floor in FLOORS {
        let Some(f) = index(floor) else { continue };
        let over = |b: usize| {
            let mut ratios: Vec<f64> = added[f].iter().zip(&added[b]).map(|(x, y)| x / y).collect();
            let mid = median(&mut ratios);
            format!("{mid:.2} ({:.2}–{:.2})", ratios[ratios.len() / 4], ratios[(ratios.len() * 3) / 4])
        };
        println!("| {floor} | {} | {} |", over(theirs), over(ours));
    }
}
