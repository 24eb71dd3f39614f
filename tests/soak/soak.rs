//! The soak run (issue 9, point 3) in `cargo test`: the harness's 200 clients against
//! a real server on 127.0.0.1 for a few seconds (`SOAK_SECS`, `SOAK_CLIENTS` to
//! change). `scripts/soak.sh` runs the full 60 s version in release.

use crate::harness;

#[test]
fn two_hundred_clients_for_a_few_seconds() {
    let _alone = crate::alone();
    let report = harness::run(harness::Config::from_env(4));
    eprintln!("{report}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{report}\n{failures:#?}");
}
