//! A YCSB-style load tool: the core workloads (load, A, B, C, E) against
//! Atoll (PD + 3 stores) and against a 3-member etcd on loopback, with the
//! same keys, values, threads and request mix. Reports ops/s and
//! p50/p99/p999 latency (HdrHistogram) per workload as a table and JSON, and
//! the Atoll/etcd throughput ratio. Without `--pd` / `--etcd` it starts both
//! clusters itself in a temporary directory (`make bench`).
//!
//! Workloads (YCSB core): load = insert every record; A = 50% read / 50%
//! update; B = 95/5; C = read only; E = 95% short scans / 5% inserts. Keys
//! are chosen with YCSB's Zipfian distribution (theta 0.99).
//!
//! `--txn`: Atoll is also driven through transactions (`TxnClient`), once
//! per `--txn-keys` setting (default 1 and 4 keys per transaction): a read
//! is a snapshot read of that many keys, an update or insert a transaction
//! writing that many keys, a scan a snapshot scan. Rows `atoll-txnN`
//! count transactions per second.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

#[derive(Parser, Clone)]
struct Args {
    /// Which systems to drive: atoll, etcd or both.
    #[arg(long, default_value = "both")]
    target: String,
    /// Workloads to run, in order (load first populates the records).
    #[arg(long, default_value = "load,a,b,c,e", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Records inserted by `load`.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Operations per workload (A, B, C, E).
    #[arg(long, default_value_t = 20_000)]
    operations: u64,
    /// Key length in bytes (`user` + zero-padded record number).
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Longest scan in workload E.
    #[arg(long, default_value_t = 50)]
    max_scan: u32,
    /// Use this Atoll cluster (PD endpoint) instead of starting one.
    #[arg(long)]
    pd: Option<String>,
    /// Use this etcd (comma-separated client URLs) instead of starting one.
    #[arg(long)]
    etcd: Option<String>,
    /// Also drive Atoll through transactions (rows `atoll-txnN`).
    #[arg(long)]
    txn: bool,
    /// Keys per transaction with `--txn`, one run each.
    #[arg(long, default_value = "1,4", value_delimiter = ',')]
    txn_keys: Vec<usize>,
}

/// YCSB's Zipfian generator over `[0, n)` (Gray et al., "Quickly generating
/// billion-record synthetic databases"), theta = 0.99.
struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64) -> Self {
        let theta = 0.99;
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf { n, theta, alpha, zetan, eta }
    }

    fn sample(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.n as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64 % self.n
    }
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Update,
    Insert,
    Scan,
}

/// The request mix of a workload: (fraction, op) pairs summing to 1.
fn mix(workload: &str) -> Option<Vec<(f64, Op)>> {
    Some(match workload {
        "a" => vec![(0.5, Op::Read), (0.5, Op::Update)],
        "b" => vec![(0.95, Op::Read), (0.05, Op::Update)],
        "c" => vec![(1.0, Op::Read)],
        "e" => vec![(0.95, Op::Scan), (0.05, Op::Insert)],
        _ => return None,
    })
}

fn key(i: u64, size: usize) -> Vec<u8> {
    let digits = size.saturating_sub(4).max(1);
    format!("user{i:0digits$}").into_bytes()
}

/// One system under test.
#[derive(Clone)]
enum Db {
    Atoll(Arc<atoll_client::RawClient>),
    /// Transactions of this many keys.
    AtollTxn(atoll_client::TxnClient, usize),
    Etcd(etcd_client::KvClient),
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Db {
    /// Keys each operation touches.
    fn keys_per_op(&self) -> usize {
        match self {
            Db::AtollTxn(_, n) => *n,
            _ => 1,
        }
    }

    async fn read(&self, keys: Vec<Vec<u8>>) -> Result<(), String> {
        match self {
            Db::Atoll(c) => c.get(&keys[0]).await.map(|_| ()).map_err(err),
            Db::AtollTxn(c, _) => {
                let t = c.begin().await.map_err(err)?;
                t.batch_get(&keys).await.map(|_| ()).map_err(err)
            }
            Db::Etcd(c) => c.clone().get(keys[0].clone(), None).await.map(|_| ()).map_err(err),
        }
    }

    async fn write(&self, keys: Vec<Vec<u8>>, v: Vec<u8>) -> Result<(), String> {
        match self {
            Db::Atoll(c) => c.put(&keys[0], &v).await.map_err(err),
            Db::AtollTxn(c, _) => {
                let mut t = c.begin().await.map_err(err)?;
                for k in &keys {
                    t.put(k, &v).map_err(err)?;
                }
                t.commit().await.map(|_| ()).map_err(err)
            }
            Db::Etcd(c) => c.clone().put(keys[0].clone(), v, None).await.map(|_| ()).map_err(err),
        }
    }

    async fn scan(&self, start: Vec<u8>, limit: u32) -> Result<(), String> {
        match self {
            Db::Atoll(c) => c.scan(&start, b"", limit).await.map(|_| ()).map_err(err),
            Db::AtollTxn(c, _) => {
                let t = c.begin().await.map_err(err)?;
                t.scan(&start, b"", limit).await.map(|_| ()).map_err(err)
            }
            Db::Etcd(c) => {
                // Everything from `start` on, `limit` keys (etcd's "\0" range end = to the end).
                let opts = etcd_client::GetOptions::new()
                    .with_range(vec![0u8])
                    .with_limit(i64::from(limit));
                c.clone().get(start, Some(opts)).await.map(|_| ()).map_err(err)
            }
        }
    }
}

struct Outcome {
    ops: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

/// Runs one workload with `threads` clients; latency in microseconds.
async fn run_workload(db: &Db, a: &Args, workload: &str, inserted: Arc<AtomicU64>) -> Outcome {
    let value = vec![b'x'; a.value_size];
    let total =
        if workload == "load" { a.records.div_ceil(db.keys_per_op() as u64) } else { a.operations };
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let zipf = Arc::new(Zipf::new(a.records.max(2)));
    let start = Instant::now();
    let mut tasks = vec![];
    for t in 0..a.threads {
        let (db, next, errors, zipf, inserted, value) = (
            db.clone(),
            next.clone(),
            errors.clone(),
            zipf.clone(),
            inserted.clone(),
            value.clone(),
        );
        let (workload, key_size, max_scan) = (workload.to_owned(), a.key_size, a.max_scan);
        let ops = mix(&workload);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 1);
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let op = match &ops {
                    None => Op::Insert,
                    Some(m) => {
                        let mut x: f64 = rng.gen();
                        m.iter()
                            .find(|(p, _)| {
                                x -= p;
                                x < 0.0
                            })
                            .map_or(m[m.len() - 1].1, |(_, op)| *op)
                    }
                };
                let existing = inserted.load(Ordering::Relaxed).max(1);
                let per_op = db.keys_per_op();
                let pick =
                    |rng: &mut rand::rngs::StdRng| key(zipf.sample(rng) % existing, key_size);
                let picks = |rng: &mut rand::rngs::StdRng| (0..per_op).map(|_| pick(rng)).collect();
                let t0 = Instant::now();
                let res = match op {
                    Op::Read => db.read(picks(&mut rng)).await,
                    Op::Update => db.write(picks(&mut rng), value.clone()).await,
                    Op::Insert => {
                        let id = inserted.fetch_add(per_op as u64, Ordering::Relaxed);
                        let keys = (id..id + per_op as u64).map(|i| key(i, key_size)).collect();
                        db.write(keys, value.clone()).await
                    }
                    Op::Scan => db.scan(pick(&mut rng), rng.gen_range(1..=max_scan)).await,
                };
                let us = t0.elapsed().as_micros() as u64;
                hist.saturating_record(us.max(1));
                if res.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for t in tasks {
        if let Ok(h) = t.await {
            hist.add(h).expect("same bounds");
        }
    }
    Outcome {
        ops: total,
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        hist,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A 3-member etcd cluster on loopback, killed on drop.
struct EtcdCluster {
    children: Vec<Child>,
    client_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    fn start() -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let peers: Vec<(String, String)> = (0..3)
            .map(|_| {
                (
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("http://127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let initial: Vec<String> =
            peers.iter().enumerate().map(|(i, (_, p))| format!("e{i}={p}")).collect();
        let mut children = vec![];
        for (i, (client, peer)) in peers.iter().enumerate() {
            let log =
                std::fs::File::create(dir.path().join(format!("etcd{i}.log"))).expect("log file");
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .args(["--data-dir", &dir.path().join(format!("e{i}")).display().to_string()])
                .args(["--listen-client-urls", client, "--advertise-client-urls", client])
                .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--log-level", "warn"])
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("etcd (Debian package etcd-server) is installed by `make deps`");
            children.push(child);
        }
        EtcdCluster {
            children,
            client_urls: peers.into_iter().map(|(c, _)| c).collect(),
            _dir: dir,
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const BENCH_STORE_CONFIG: &str = r#"
log-level = "warn"
[raftstore]
raft-base-tick-interval = "100ms"
pd-heartbeat-tick-interval = "5s"
"#;

async fn connect(system: &str, a: &Args) -> (Db, Box<dyn std::any::Any>) {
    match system {
        s if s.starts_with("atoll") => {
            let (pd, guard): (String, Box<dyn std::any::Any>) = match &a.pd {
                Some(pd) => (pd.clone(), Box::new(())),
                None => {
                    let c = atoll_tests::proc::ProcCluster::start_with(3, "", BENCH_STORE_CONFIG);
                    (c.pd_addr.clone(), Box::new(c))
                }
            };
            let client =
                atoll_client::RawClient::connect(atoll_client::Config::new(vec![pd.clone()]))
                    .await
                    .expect("connect to PD");
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.put(b"ycsb-ready", b"1").await.is_err() {
                assert!(Instant::now() < deadline, "Atoll never became writable");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if a.pd.is_none() {
                // A fresh cluster still splits at keyspace boundaries and
                // balances leaders in its first seconds: let that settle.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            match s.strip_prefix("atoll-txn") {
                Some(n) => {
                    let cfg = atoll_client::Config::new(vec![pd]);
                    let txn = atoll_client::TxnClient::connect(cfg).await.expect("connect to PD");
                    (Db::AtollTxn(txn, n.parse().expect("keys per transaction")), guard)
                }
                None => (Db::Atoll(Arc::new(client)), guard),
            }
        }
        _ => {
            let (urls, guard): (Vec<String>, Box<dyn std::any::Any>) = match &a.etcd {
                Some(e) => (e.split(',').map(str::to_owned).collect(), Box::new(())),
                None => {
                    let c = EtcdCluster::start();
                    (c.client_urls.clone(), Box::new(c))
                }
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(c) = etcd_client::Client::connect(urls.clone(), None).await {
                    let mut kv = c.kv_client();
                    if kv.put("ycsb-ready", "1", None).await.is_ok() {
                        return (Db::Etcd(kv), guard);
                    }
                }
                assert!(Instant::now() < deadline, "etcd never became writable");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

struct Row {
    system: String,
    workload: String,
    ops_per_sec: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    errors: u64,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let mut systems: Vec<String> = match a.target.as_str() {
        "both" => vec!["atoll".into(), "etcd".into()],
        "atoll" => vec!["atoll".into()],
        "etcd" => vec!["etcd".into()],
        other => panic!("--target must be atoll, etcd or both, not {other}"),
    };
    if a.txn {
        assert!(a.txn_keys.iter().all(|n| *n > 0), "--txn-keys must be positive");
        systems.extend(a.txn_keys.iter().map(|n| format!("atoll-txn{n}")));
    }
    for w in &a.workloads {
        assert!(w == "load" || mix(w).is_some(), "unknown workload {w:?} (load, a, b, c, e)");
    }
    println!(
        "YCSB: {} threads, {} records, {} ops per workload, {}-byte keys, {}-byte values",
        a.threads, a.records, a.operations, a.key_size, a.value_size
    );
    let mut rows: Vec<Row> = vec![];
    for system in &systems {
        let (db, guard) = connect(system, &a).await;
        let inserted = Arc::new(AtomicU64::new(if a.workloads.iter().any(|w| w == "load") {
            0
        } else {
            a.records
        }));
        for w in &a.workloads {
            let o = run_workload(&db, &a, w, inserted.clone()).await;
            rows.push(Row {
                system: system.clone(),
                workload: w.clone(),
                ops_per_sec: o.ops as f64 / o.secs,
                p50: o.hist.value_at_quantile(0.5),
                p99: o.hist.value_at_quantile(0.99),
                p999: o.hist.value_at_quantile(0.999),
                errors: o.errors,
            });
        }
        drop(guard);
    }
    println!(
        "{:<10} {:<9} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "system", "workload", "ops/s", "p50_us", "p99_us", "p999_us", "errors"
    );
    for r in &rows {
        println!(
            "{:<10} {:<9} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
            r.system, r.workload, r.ops_per_sec, r.p50, r.p99, r.p999, r.errors
        );
    }
    let mut ratios = vec![];
    for w in &a.workloads {
        let get = |s: &str| {
            rows.iter().find(|r| r.system == s && &r.workload == w).map(|r| r.ops_per_sec)
        };
        if let (Some(x), Some(e)) = (get("atoll"), get("etcd")) {
            println!("ratio atoll/etcd ops/s, workload {w}: {:.2}", x / e);
            ratios.push(serde_json::json!({"workload": w, "atoll_over_etcd": x / e}));
        }
    }
    let json = serde_json::json!({
        "threads": a.threads, "records": a.records, "operations": a.operations,
        "key_size": a.key_size, "value_size": a.value_size,
        "results": rows.iter().map(|r| serde_json::json!({
            "system": r.system, "workload": r.workload, "ops_per_sec": r.ops_per_sec,
            "p50_us": r.p50, "p99_us": r.p99, "p999_us": r.p999, "errors": r.errors,
        })).collect::<Vec<_>>(),
        "ratios": ratios,
    });
    println!("JSON {json}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_stays_in_range_and_favours_low_ranks() {
        let z = Zipf::new(1000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > counts[500], "{:?}", &counts[..12]);
        assert!(counts.iter().filter(|c| **c > 0).count() > 500, "the tail is reached too");
    }

    #[test]
    fn mixes_sum_to_one_and_keys_have_the_asked_size() {
        for w in ["a", "b", "c", "e"] {
            let total: f64 = mix(w).unwrap().iter().map(|(p, _)| p).sum();
            assert!((total - 1.0).abs() < 1e-9, "{w}");
        }
        assert!(mix("z").is_none());
        assert_eq!(key(42, 16).len(), 16);
        assert_eq!(key(42, 16), b"user000000000042");
    }
}
