//! Short `atoll-chaos` runs in the test suite, one after the other: a
//! register history under crashes, pauses and PD kills; one under network
//! partitions (in namespaces); a set history under all of them; a bank
//! history (transactions) under crashes and partitions; a txn-register
//! history; and a bank history in the mixed mode (optimistic, async
//! commit, 1PC and pessimistic transactions on the same accounts), once
//! through our client and once through the unmodified tikv-client. Splits
//! and leader moves happen throughout. Every history must check out, and
//! must have done work: bank histories count committed transfers and
//! snapshot reads apart. Histories with partitions are SKIPPED where
//! network namespaces cannot be made (never in CI).

use std::process::Command;

use atoll_tests::netns::Network;
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
    if workload.contains("register") {
        assert!(row.contains("Linearizable"), "{row}");
    } else if workload.contains("bank") {
        assert!(row.contains("bank ok"), "{row}");
        let reads = bank_reads(row);
        let transfers = nums_ok(&cols) - reads;
        assert!(transfers >= 100, "{seed}: {transfers} committed transfers: {row}");
        assert!(reads >= 30, "{seed}: {reads} snapshot reads: {row}");
    } else {
        assert!(row.contains("set ok"), "{row}");
    }
    println!("{stdout}");
    (nums, (splits.parse().unwrap(), moves.parse().unwrap()))
}

/// The ok column: committed transfers plus snapshot reads, for a bank.
fn nums_ok(cols: &[&str]) -> u64 {
    cols[2].parse().unwrap()
}

/// The snapshot reads a bank row reports (`bank ok (N snapshot reads; ...`).
fn bank_reads(row: &str) -> u64 {
    let (_, rest) = row.split_once("bank ok (").expect("a bank verdict");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn short_chaos_histories_check_out() {
    let namespaces = Network::create(2).map(drop);
    for (seed, nemesis, workload) in [
        ("20261125", "kill,pause,pd", "register"),
        ("20261126", "partition", "register"),
        ("20261127", "all", "set"),
        ("20261201", "kill,partition", "bank"),
        ("20261204", "kill,pause", "txn-register"),
        ("20261205", "kill,pause,pd", "bank-mixed"),
        ("20261206", "kill,pause,pd", "tikv-bank-mixed"),
    ] {
        if let (true, Err(e)) = (nemesis.contains("partition") || nemesis == "all", &namespaces) {
            atoll_tests::skip(&format!("chaos {seed} {nemesis} {workload}"), e);
            continue;
        }
        let (n, (splits, moves)) = run(seed, nemesis, workload, "20");
        let (ok, faults) = (n[0], n[3]);
        // (Bank histories have their own floors, in `run`.)
        assert!(workload.contains("bank") || ok > 500, "{seed}: too few ok operations: {n:?}");
        assert!(faults >= 3, "{seed}: too few faults: {n:?}");
        assert!(splits + moves >= 3, "{seed}: too little churn: {splits} splits, {moves} moves");
    }
}
