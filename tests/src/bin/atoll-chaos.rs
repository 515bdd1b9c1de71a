//! `atoll-chaos`: real clusters (PD + stores as processes, each in its own
//! network namespace when the harness may create them, else on loopback
//! with kill/pause/PD faults only), concurrent clients, faults on a
//! seeded schedule with splits and leader moves beside them, and the
//! checkers on every history. Exits 1 on any anomaly, with the evidence
//! kept under `<target dir>/chaos-failures/`.
//!
//! Usage: `atoll-chaos [--seed N] [--histories N] [--duration SECS]
//! [--clients N] [--stores N] [--groups N] [--keys N]
//! [--nemesis kill,pause,partition,pd,all] [--workload W,...|all]`, W one of
//! register, set, txn-register[-MODE], bank[-MODE], tikv-bank[-MODE] (the
//! bank through the unmodified tikv-client crate), MODE one of async, 1pc,
//! pessimistic, mixed (default: all of them, in turn).
//! History `i` runs with seed `seed + i` and workload `i % workloads`. The
//! partition nemesis needs network namespaces: without them atoll-chaos
//! refuses to start rather than run something else.
//! `ATOLL_CHAOS_DEBUG=1` reports failed reads, slow operations and the
//! errors of tikv-client transfers.

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_chaos::bank::BankFigures;
use atoll_tests::chaos::workload::Workload;
use atoll_tests::chaos::{network, run_history, Args, Report};
use atoll_tests::nemesis::Kind;

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--seed" => a.seed = num(value()?)?,
            "--histories" => a.histories = num(value()?)? as u32,
            "--duration" => a.duration = Duration::from_secs(num(value()?)?.max(5)),
            "--clients" => a.clients = num(value()?)?.max(1),
            "--stores" => a.stores = (num(value()?)? as usize).clamp(3, 9),
            "--groups" => a.groups = num(value()?)?.clamp(1, 99),
            "--keys" => a.keys = num(value()?)?.clamp(1, 99),
            "--nemesis" => {
                a.nemesis = vec![];
                for k in value()?.split(',') {
                    match (k, Kind::parse(k)) {
                        ("all", _) => a.nemesis = Kind::ALL.to_vec(),
                        (_, Some(kind)) => a.nemesis.push(kind),
                        _ => {
                            return Err(format!(
                                "unknown nemesis {k:?} (kill, pause, partition, pd, all)"
                            ))
                        }
                    }
                }
                a.nemesis.sort();
                a.nemesis.dedup();
            }
            "--workload" => {
                a.workloads = vec![];
                for w in value()?.split(',') {
                    if w == "all" {
                        a.workloads.extend(Workload::ALL);
                        continue;
                    }
                    a.workloads.push(Workload::parse(w).ok_or_else(|| {
                        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                        format!("unknown workload {w:?} ({}, all)", names.join(", "))
                    })?);
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{}", d.as_millis()))
}

fn print_history(r: &Report) {
    let verdict = match (&r.verdict, &r.set, &r.bank) {
        (Some(v), ..) => format!("{v:?}"),
        (_, Some(s), _) if s.ok() => {
            format!("set ok ({} unknown present, {} absent)", s.unknown_present, s.unknown_absent)
        }
        (_, Some(s), _) => {
            format!("SET: {} lost, {} unexpected", s.lost.len(), s.unexpected.len())
        }
        (.., Some(b)) if b.ok() => {
            let f = r.bank_figures.expect("a bank history has figures");
            format!(
                "bank ok ({} snapshot reads, {:.0}% failed; {:.1} transfers/s, p99 {} ms; {} unknown applied, {} not)",
                b.reads,
                f.failed_read_share * 100.0,
                f.transfers_per_sec,
                f.commit_p99_ms,
                b.unknown_applied,
                b.unknown_not_applied
            )
        }
        (.., Some(b)) => format!(
            "BANK: {} bad snapshot reads, {} lost, {} aborted visible, {} unexpected, balances {}",
            b.bad_reads.len(),
            b.lost.len(),
            b.visible_aborted.len(),
            b.unexpected.len(),
            if b.balance_mismatch.is_some() { "WRONG" } else { "ok" }
        ),
        _ => "-".into(),
    };
    let during: Vec<f64> = r.availability.iter().map(|a| a.rate).collect();
    let avg_during =
        if during.is_empty() { 0.0 } else { during.iter().sum::<f64>() / during.len() as f64 };
    println!(
        "{:>8} {:>9} {:>8} {:>7} {:>8} {:>6} {:>6} {:>9.0} {:>9.0}  {verdict}",
        r.seed,
        r.workload.name(),
        r.ok,
        r.failed,
        r.unknown,
        r.faults.len(),
        format!("{}/{}", r.splits, r.moves),
        avg_during,
        r.healed_rate,
    );
    for (f, a) in r.faults.iter().zip(&r.availability) {
        println!(
            "           {:>6.1}s {:<44} {:>6.0} ok/s, all keys served {:>5} ms after start, {:>5} ms after heal",
            f.start as f64 / 1e9,
            f.what,
            a.rate,
            ms(a.served_after_start),
            ms(a.served_after_heal),
        );
        if let Some(e) = &f.failed {
            println!("           FAULT NOT APPLIED: {e}");
        }
    }
    if let Some(p) = &r.kept {
        println!("           evidence kept in {}", p.display());
    }
}

/// Per bank workload: the means over its histories of transfers/s and of
/// the share of failed snapshot reads, and the median and worst of their
/// commit p99s.
fn print_bank_figures(bank: &BTreeMap<&'static str, Vec<BankFigures>>) {
    if bank.is_empty() {
        return;
    }
    println!("\nper bank workload: histories, mean transfers/s, mean share of failed snapshot reads, commit p99 median / worst");
    for (name, figures) in bank {
        let n = figures.len() as f64;
        let mut p99: Vec<u64> = figures.iter().map(|f| f.commit_p99_ms).collect();
        p99.sort_unstable();
        println!(
            "  {name:<24} {:>4} {:>8.1}/s {:>6.1}% {:>7} / {} ms",
            figures.len(),
            figures.iter().map(|f| f.transfers_per_sec).sum::<f64>() / n,
            figures.iter().map(|f| f.failed_read_share).sum::<f64>() / n * 100.0,
            p99[p99.len() / 2],
            p99[p99.len() - 1],
        );
    }
}

/// Per fault kind over all histories: count, mean ok/s during, and the
/// worst time until every key was served again.
#[derive(Default)]
struct KindTotals {
    count: u64,
    rate_sum: f64,
    worst_start: Option<Duration>,
    never_in_fault: u64,
    worst_heal: Option<Duration>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("atoll-chaos: {e}");
            std::process::exit(2);
        }
    };
    let exe = std::env::current_exe().expect("current exe");
    let keep_dir = exe.parent().expect("exe dir").join("chaos-failures");
    let want_net = args.nemesis.contains(&Kind::Partition);
    println!(
        "atoll-chaos: seed {} histories {} duration {}s clients {} stores {} groups {}x{} keys nemesis {:?} workloads {:?}",
        args.seed,
        args.histories,
        args.duration.as_secs(),
        args.clients,
        args.stores,
        args.groups,
        args.keys,
        args.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>(),
        args.workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
    );
    println!(
        "{:>8} {:>9} {:>8} {:>7} {:>8} {:>6} {:>6} {:>9} {:>9}  verdict",
        "seed", "workload", "ok", "failed", "unknown", "faults", "sp/mv", "ok/s flt", "ok/s ok"
    );
    let mut bad = 0;
    let mut ops = 0;
    let mut totals: BTreeMap<&'static str, KindTotals> = BTreeMap::new();
    let mut bank: BTreeMap<&'static str, Vec<BankFigures>> = BTreeMap::new();
    for i in 0..args.histories {
        let seed = args.seed.wrapping_add(u64::from(i));
        let workload = args.workloads[i as usize % args.workloads.len()];
        let net = if want_net {
            match network(args.stores) {
                Ok(n) => Some(n),
                Err(e) => {
                    // Running something else would pass while checking
                    // nothing it was asked to.
                    eprintln!(
                        "atoll-chaos: the partition nemesis needs network namespaces (root, `ip netns`), and they cannot be made: {e}; run without it (--nemesis kill,pause,pd)"
                    );
                    std::process::exit(2);
                }
            }
        } else {
            None
        };
        let r = run_history(&args, seed, workload, net, &keep_dir).await;
        ops += r.ok + r.failed + r.unknown;
        if r.anomalous() {
            bad += 1;
        }
        for a in &r.availability {
            let t = totals.entry(a.label).or_default();
            t.count += 1;
            t.rate_sum += a.rate;
            match a.served_after_start {
                Some(d) => t.worst_start = t.worst_start.max(Some(d)),
                None => t.never_in_fault += 1,
            }
            t.worst_heal = t.worst_heal.max(a.served_after_heal);
        }
        if let Some(f) = r.bank_figures {
            bank.entry(r.workload.name()).or_default().push(f);
        }
        print_history(&r);
    }
    print_bank_figures(&bank);
    println!("\nper fault kind: count, mean ok/s during, worst time to all keys served after start (faults never recovered from within) / after heal");
    for (label, t) in &totals {
        println!(
            "  {label:<20} {:>4} {:>8.0} ok/s {:>7} ms ({} never) {:>7} ms",
            t.count,
            t.rate_sum / t.count.max(1) as f64,
            ms(t.worst_start),
            t.never_in_fault,
            ms(t.worst_heal),
        );
    }
    println!("{} histories, {ops} operations, {bad} with anomalies", args.histories);
    std::process::exit(if bad == 0 { 0 } else { 1 });
}
