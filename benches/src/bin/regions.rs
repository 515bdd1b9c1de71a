//! Many idle regions: `--regions` regions, each with 3 replicas on 3
//! in-process stores (RocksDB, simulated network), so every store holds
//! every region. After elections settle, it measures the process's CPU time
//! and resident memory over an idle window, with hibernation on (the
//! default) and off, and prints per-store figures as a table and JSON.
//! Run with `make bench`.

use std::time::{Duration, Instant};

use atoll_engine_rocks::{RocksConfig, RocksEngine};
use atoll_proto::metapb;
use atoll_raftstore::Config;
use atoll_tests::sim::{wait_until, Cluster};
use atoll_util::ReadableDuration;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Regions per store (every store holds a replica of each).
    #[arg(long, default_value_t = 10_000)]
    regions: usize,
    /// Seconds of idleness measured per case.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Raft base tick in milliseconds.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
}

const STORES: u64 = 3;
const FIRST_ID: u64 = 1_000_000;

fn regions(n: usize) -> Vec<metapb::Region> {
    let bound = |i: usize| {
        if i == 0 || i == n {
            vec![]
        } else {
            atoll_codec::encode_bytes(format!("r{i:08}").as_bytes())
        }
    };
    (0..n)
        .map(|i| {
            let id = FIRST_ID + i as u64 * 4;
            metapb::Region {
                id,
                start_key: bound(i),
                end_key: bound(i + 1),
                region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
                peers: (1..=STORES)
                    .map(|s| metapb::Peer { id: id + s, store_id: s, ..Default::default() })
                    .collect(),
                ..Default::default()
            }
        })
        .collect()
}

/// utime + stime of this process, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

struct Outcome {
    hibernate: bool,
    setup_secs: f64,
    ticking: usize,
    cpu_pct_per_store: f64,
    rss_mib_per_store: f64,
}

fn run(a: &Args, hibernate: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let engines: Vec<RocksEngine> = (1..=STORES)
        .map(|s| {
            RocksEngine::open(dir.path().join(format!("store{s}")), &RocksConfig::default())
                .unwrap()
        })
        .collect();
    let cfg = Config {
        raft_base_tick_interval: ReadableDuration::millis(a.tick_ms),
        hibernate_regions: hibernate,
        ..Config::default()
    };
    let start = Instant::now();
    let mut c = Cluster::with_regions(cfg.clone(), engines, regions(a.regions));
    c.start_all();
    // Elections, then (with hibernation) every region goes to sleep.
    let settle = Duration::from_millis(
        a.tick_ms * (cfg.raft_election_timeout_ticks as u64 * 2 + cfg.hibernate_ticks() + 20),
    );
    let ticking = |c: &Cluster<RocksEngine>| {
        c.systems.values().map(|s| s.handle().ticking_count()).sum::<usize>()
    };
    if hibernate {
        wait_until(Duration::from_secs(300), || ticking(&c) == 0);
    } else {
        std::thread::sleep(settle);
    }
    let setup_secs = start.elapsed().as_secs_f64();
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let cpu = cpu_secs() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let out = Outcome {
        hibernate,
        setup_secs,
        ticking: ticking(&c),
        cpu_pct_per_store: cpu / wall * 100.0 / STORES as f64,
        rss_mib_per_store: rss_mib() / STORES as f64,
    };
    c.shutdown();
    out
}

fn main() {
    let a = Args::parse();
    println!(
        "{} regions x {STORES} replicas on {STORES} in-process stores, {}ms tick, {}s idle window",
        a.regions, a.tick_ms, a.idle_secs
    );
    println!(
        "{:<10} {:>10} {:>14} {:>18} {:>18}",
        "hibernate", "setup_s", "ticking", "idle_cpu_%/store", "rss_MiB/store"
    );
    let mut json = vec![];
    for hibernate in [true, false] {
        let o = run(&a, hibernate);
        println!(
            "{:<10} {:>10.1} {:>14} {:>18.1} {:>18.1}",
            o.hibernate, o.setup_secs, o.ticking, o.cpu_pct_per_store, o.rss_mib_per_store
        );
        json.push(format!(
            r#"{{"hibernate":{},"regions":{},"setup_secs":{:.1},"ticking_regions":{},"idle_cpu_pct_per_store":{:.2},"rss_mib_per_store":{:.1}}}"#,
            o.hibernate, a.regions, o.setup_secs, o.ticking, o.cpu_pct_per_store, o.rss_mib_per_store
        ));
    }
    println!("JSON [{}]", json.join(","));
}
