//! Short `atoll-chaos` runs in the test suite, one after the other: a
//! register history under crashes, pauses and PD kills; one under network
//! partitions (in namespaces; on loopback, crashes and pauses instead);
//! a set history under all of them; a bank history (transactions) under
//! crashes and partitions. Splits and leader moves happen throughout.
//! Every history must check out.

use std::process::Command;

use atoll_tests::proc::binary;

/// Runs one history; returns its summary row's numbers: ok, failed,
/// unknown, faults, and the churn (splits, moves).
fn run(seed: &str, nemesis: &str, workload: &str, secs: &str) -> (Vec<u64>, (u64, u64)) {
    let out = Command::new(binary("atoll-chaos"))
        .args(["--seed", seed, "--histories", "1", "--duration", secs])
        .args(["--nemesis", nemesis, "--workload", workload])
        .output()
        .expect("run atoll-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "atoll-chaos failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 with anomalies"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(seed))
        .unwrap_or_else(|| panic!("no summary row:\n{stdout}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let nums: Vec<u64> = cols[2..6].iter().map(|c| c.parse().unwrap()).collect();
    let (splits, moves) = cols[6].split_once('/').unwrap();
    match workload {
        "register" | "txn-register" => assert!(row.contains("Linearizable"), "{row}"),
        "bank" => assert!(row.contains("bank ok"), "{row}"),
        _ => assert!(row.contains("set ok"), "{row}"),
    }
    println!("{stdout}");
    (nums, (splits.parse().unwrap(), moves.parse().unwrap()))
}

#[test]
fn short_chaos_histories_check_out() {
    for (seed, nemesis, workload) in [
        ("20261125", "kill,pause,pd", "register"),
        ("20261126", "partition", "register"),
        ("20261127", "all", "set"),
        ("20261201", "kill,partition", "bank"),
    ] {
        let (n, (splits, moves)) = run(seed, nemesis, workload, "20");
        let (ok, faults) = (n[0], n[3]);
        assert!(ok > 500, "{seed}: too few ok operations: {n:?}");
        assert!(faults >= 3, "{seed}: too few faults: {n:?}");
        assert!(splits + moves >= 3, "{seed}: too little churn: {splits} splits, {moves} moves");
    }
}
