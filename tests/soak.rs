//! The short soak (issue 9, point 3) that runs with `cargo test`: the code of
//! `examples/soak.rs`, 200 clients against a real server on 127.0.0.1 for a few
//! seconds (`SOAK_SECS` for longer). `scripts/soak.sh` runs the full 60 s version in
//! release.

#[path = "../examples/soak.rs"]
mod soak;

#[test]
fn two_hundred_clients_for_a_few_seconds() {
    let secs = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let report = soak::run(soak::Config { duration: std::time::Duration::from_secs(secs), clients: 200 });
    eprintln!("{report}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{report}\n{failures:#?}");
}
