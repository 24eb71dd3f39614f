//! Time per request for every scenario, measured interleaved: each round times a
//! batch of requests of every scenario in turn, so all rows of one round see the
//! same machine. Overheads and ratios are taken within a round, then the median
//! over the rounds is reported. On a shared VM whose speed drifts by tens of percent
//! over a minute, this is steadier than timing each row on its own (as criterion
//! does, in `benches/overhead.rs`).
//!
//! The rounds run in several processes, one after another (3 by default): a process
//! can land on a faster or slower address-space layout for some rows, and that stays
//! for its whole life, so one process is one draw. The medians are over the rounds of
//! all of them; the median of each process is shown too.
//!
//! ```text
//! cargo bench --bench interleaved                  # 3 processes × 21 rounds of 20,000
//! ROUNDS=31 BATCH=50000 PROCESSES=5 cargo bench --bench interleaved
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
    fn visit<S: scenarios::Scenario<B>, B: scenarios::ScenarioBody>(&mut self, name: &str, svc: S) {
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

/// Requests per row and round (`BATCH`).
fn batch() -> u32 {
    env("BATCH", 20_000).max(1)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// The pairs the targets compare (issues 8, 18 and 20): (ours, theirs, target ratio).
const TARGETS: [(&str, &str, f64); 8] = [
    ("ContextLayer untouched", "floor with the request head captured", 1.5),
    ("ContextLayer one after-hook", "axum from_fn adding a header", 2.0),
    ("ContextLayer end", "ContextLayer one after-hook", 1.0),
    ("ContextLayer thrown error as JSON", "axum handler answering the same error JSON itself", 1.5),
    (
        "ContextLayer cookie read + signed set (Keygrip, default)",
        "tower-cookies cookie read + signed set",
        0.9,
    ),
    (
        "ContextLayer cookie read + signed set (cookie-crate format)",
        "tower-cookies cookie read + signed set",
        0.9,
    ),
    (
        "ContextLayer doing the peer stack's work",
        "peer stack: tower-cookies, CatchPanicLayer, from_fn header, map_response JSON errors",
        0.6,
    ),
    (
        "ContextLayer session read + write (MemoryStore)",
        "tower-sessions SessionManagerLayer read + write (MemoryStore)",
        0.75,
    ),
];

/// The untouched pair the floor rows are set against.
const UNTOUCHED: (&str, &str) = ("ContextLayer untouched", "tower-cookies CookieManagerLayer untouched");

/// The rows that show what any layer handing out a per-request handle pays: a bare
/// `Arc` in the extensions, the same with the request head captured, that with the
/// locked instructions a context adds, and the head floor that tells its handle the
/// request's end.
const FLOORS: [&str; 4] = [
    "floor: Arc handle in the extensions, nothing else",
    "floor with the request head captured",
    "floor with the request head captured, and six locked instructions",
    LIFECYCLE_FLOOR,
];

/// The lifecycle floor: the least a layer with a lifecycle can cost, shown beside
/// the untouched target, which is set against the head floor.
const LIFECYCLE_FLOOR: &str = "lifecycle floor: the head floor, its handle told the request's end";

/// The targets with a floor row beside them: the untouched one (the lifecycle floor)
/// and the one-after-hook one (the hook floor: that floor, plus a hook its handle
/// adds).
const BESIDE: [((&str, &str, f64), &str); 2] =
    [(TARGETS[0], LIFECYCLE_FLOOR), (TARGETS[1], scenarios::HOOK_FLOOR)];

/// Set in the processes the first one starts: they measure and print raw times.
const CHILD: &str = "INTERLEAVED_CHILD";

fn main() {
    let processes = env("PROCESSES", 3).max(1);
    if processes == 1 || std::env::var_os(CHILD).is_some() {
        let (names, times) = measure();
        if std::env::var_os(CHILD).is_some() {
            for (name, row) in names.iter().zip(&times) {
                let row: Vec<String> = row.iter().map(f64::to_string).collect();
                println!("{name}\t{}", row.join(","));
            }
        } else {
            // One process: all rounds are its own.
            let all = std::iter::once(0..times[0].len()).collect::<Vec<_>>();
            report(&names, &times, &all);
        }
        return;
    }

    // Each process's rows, one after another: rounds stay paired across rows.
    let mut names: Vec<String> = Vec::new();
    let mut times: Vec<Vec<f64>> = Vec::new();
    let mut spans = Vec::new();
    for _ in 0..processes {
        let exe = std::env::current_exe().expect("the bench's own path");
        let output = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(CHILD, "1")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("a measuring process");
        assert!(output.status.success(), "a measuring process failed");
        let text = String::from_utf8_lossy(&output.stdout);
        let start = times.first().map_or(0, Vec::len);
        for (i, (name, row)) in text.lines().filter_map(|line| line.split_once('\t')).enumerate() {
            if names.len() == i {
                names.push(name.to_owned());
                times.push(Vec::new());
            }
            times[i].extend(row.split(',').filter_map(|t| t.parse::<f64>().ok()));
        }
        spans.push(start..times[0].len());
    }
    report(&names, &times, &spans);
}

/// Every row's ns per request, round by round, in this process.
fn measure() -> (Vec<String>, Vec<Vec<f64>>) {
    let rounds = env("ROUNDS", 21).max(1);
    let batch = batch();
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

    let mut times = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        // Start each round at another row, so no row always runs right after another.
        let start = round as usize % rows.len();
        for i in (start..rows.len()).chain(0..start) {
            let took = rows[i].1(&rt, batch);
            times[i].push(took.as_nanos() as f64 / f64::from(batch));
        }
    }
    (rows.into_iter().map(|(name, _)| name).collect(), times)
}

/// The median and the quartiles of `values` (which it sorts).
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    let mid = median(values);
    (mid, values[values.len() / 4], values[(values.len() * 3) / 4])
}

/// Prints the tables: `spans` are the rounds of each process.
fn report(names: &[String], times: &[Vec<f64>], spans: &[std::ops::Range<usize>]) {
    let rounds = times[0].len();
    let bare = &times[0];
    let added: Vec<Vec<f64>> =
        times.iter().map(|row| row.iter().zip(bare).map(|(t, b)| t - b).collect()).collect();
    let batch = batch();
    println!(
        "{} process(es), {rounds} rounds in all of {batch} requests per row; medians over the rounds\n",
        spans.len()
    );
    println!(
        "| scenario | ns/request | added ns | added ns, lowest–highest process median |\n|---|---:|---:|---:|"
    );
    for (i, name) in names.iter().enumerate() {
        let t = median(&mut times[i].clone());
        if i == 0 {
            println!("| {name} | {t:.0} | — | — |");
            continue;
        }
        let per: Vec<f64> = spans.iter().map(|span| median(&mut added[i][span.clone()].to_vec())).collect();
        let low = per.iter().copied().fold(f64::INFINITY, f64::min);
        let high = per.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!("| {name} | {t:.0} | {:+.0} | {low:+.0} – {high:+.0} |", median(&mut added[i].clone()));
    }

    let index = |name: &str| names.iter().position(|n| n == name);
    let ratios =
        |a: usize, b: usize| -> Vec<f64> { added[a].iter().zip(&added[b]).map(|(x, y)| x / y).collect() };
    // The median of each process's rounds.
    let each = |all: &[f64]| -> String {
        let medians: Vec<String> =
            spans.iter().map(|span| format!("{:.2}", median(&mut all[span.clone()].to_vec()))).collect();
        medians.join(", ")
    };
    println!(
        "\n| target | ratio (median of rounds) | quartiles | each process | target | holds? |\n|---|---:|---:|---:|---:|---|"
    );
    for (ours, theirs, target) in TARGETS {
        let (Some(a), Some(b)) = (index(ours), index(theirs)) else { continue };
        let mut all = ratios(a, b);
        let per = each(&all);
        let (mid, q1, q3) = spread(&mut all);
        let holds = if mid <= target { "yes" } else { "no" };
        println!("| {ours} / {theirs} | {mid:.2} | {q1:.2}–{q3:.2} | {per} | ≤ {target} | {holds} |");
    }

    // How each floor row compares with the two untouched rows.
    if let (Some(theirs), Some(ours)) = (index(UNTOUCHED.1), index(UNTOUCHED.0)) {
        println!(
            "\n| floor | its overhead / tower-cookies' untouched | each process | / ours untouched |\n|---|---:|---:|---:|"
        );
        for floor in FLOORS {
            let Some(f) = index(floor) else { continue };
            let mut over_theirs = ratios(f, theirs);
            let per = each(&over_theirs);
            let (mid, q1, q3) = spread(&mut over_theirs);
            let (ours_mid, ours_q1, ours_q3) = spread(&mut ratios(f, ours));
            println!(
                "| {floor} | {mid:.2} ({q1:.2}–{q3:.2}) | {per} | {ours_mid:.2} ({ours_q1:.2}–{ours_q3:.2}) |"
            );
        }
    }

    // The targets that have a floor beside them: the floor's own ratio to the target's
    // reference (where the target sits against it), and ours against the floor.
    println!(
        "\n| beside the targets | ratio (median of rounds) | quartiles | each process |\n|---|---:|---:|---:|"
    );
    for ((ours_name, reference, _), floor) in BESIDE {
        let (Some(ours), Some(reference_row), Some(f)) = (index(ours_name), index(reference), index(floor))
        else {
            continue;
        };
        for (name, a, b) in [
            (format!("{floor} / {reference}"), f, reference_row),
            (format!("{ours_name} / {floor}"), ours, f),
        ] {
            let mut all = ratios(a, b);
            let per = each(&all);
            let (mid, q1, q3) = spread(&mut all);
            println!("| {name} | {mid:.2} | {q1:.2}–{q3:.2} | {per} |");
        }
    }
}
