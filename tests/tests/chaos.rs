//! A short `atoll-chaos` run in the test suite: one history of kills and
//! pauses against a real cluster, checked for linearizability.

use std::process::Command;

use atoll_tests::proc::binary;

#[test]
fn a_short_chaos_history_is_linearizable() {
    let out = Command::new(binary("atoll-chaos"))
        .args(["--seed", "20261125", "--histories", "1", "--duration", "15"])
        .output()
        .expect("run atoll-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "atoll-chaos failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 not linearizable"), "{stdout}");
    // The nemesis did something and the clients got work done.
    let row = stdout.lines().find(|l| l.trim_start().starts_with("20261125")).expect("summary row");
    let cols: Vec<u64> = row.split_whitespace().filter_map(|c| c.parse().ok()).collect();
    assert!(cols.len() >= 5, "{row}");
    let (ok, faults) = (cols[1], cols[4]);
    assert!(ok > 1000, "too few ok operations: {row}");
    assert!(faults >= 2, "too few faults: {row}");
}
