//! One chaos history: a real cluster (PD + stores, each in its own network
//! namespace where possible), concurrent clients, a seeded fault schedule
//! with splits and leader moves beside it, then the checkers. Driven by
//! the `atoll-chaos` binary.

pub mod bank;
pub mod faults;
pub mod tikv;
pub mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_chaos::bank::{check_bank, BankFigures, BankLog, BankReport};
use atoll_chaos::set::{check_set, SetReport};
use atoll_chaos::{check_history, History, Verdict};
use atoll_client::{Config, RawClient, TxnClient};
use parking_lot::Mutex;

use crate::nemesis::{schedule, Kind, Step};
use crate::netns::Network;
use crate::proc::{eventually, split_at, ProcCluster, TEST_PD_CONFIG};
use faults::Applied;
use workload::{Done, SetLog, Shared, Workload};

/// Stores tick every 50 ms (elections in about half a second), and regions
/// are small so that the churn's splits keep happening.
pub const CHAOS_STORE_CONFIG: &str = r#"
log-level = "info"
[raftstore]
raft-base-tick-interval = "50ms"
pd-heartbeat-tick-interval = "1s"
pd-store-heartbeat-tick-interval = "1s"
raft-log-gc-tick-interval = "500ms"
region-max-size = "256KiB"
region-split-size = "128KiB"
"#;

/// What to run.
#[derive(Clone, Debug)]
pub struct Args {
    pub seed: u64,
    pub histories: u32,
    pub duration: Duration,
    pub clients: u64,
    pub stores: usize,
    /// Key ranges (one region each at the start; at most one per client).
    pub groups: u64,
    /// Registers per group.
    pub keys: u64,
    pub nemesis: Vec<Kind>,
    pub workloads: Vec<Workload>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            seed: 1,
            histories: 1,
            duration: Duration::from_secs(30),
            clients: 8,
            stores: 5,
            groups: 4,
            keys: 3,
            nemesis: Kind::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
        }
    }
}

/// What one history produced.
pub struct Report {
    pub seed: u64,
    pub workload: Workload,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub schedule: Vec<Step>,
    pub faults: Vec<Applied>,
    /// Per fault: ok ops/s during it, and the longest time until every key
    /// group was served again after it started / after it healed (None: not
    /// within the fault / the rest of the run).
    pub availability: Vec<FaultAvailability>,
    pub healed_rate: f64,
    pub splits: u64,
    pub moves: u64,
    /// register: the checker's verdict; set / bank: the final read's report.
    pub verdict: Option<Verdict>,
    pub set: Option<SetReport>,
    pub bank: Option<BankReport>,
    pub bank_figures: Option<BankFigures>,
    /// Where the evidence was kept, on an anomaly.
    pub kept: Option<PathBuf>,
}

impl Report {
    /// A checker's rejection, or a fault that did not apply (the history
    /// then checked less than it says).
    pub fn anomalous(&self) -> bool {
        self.faults.iter().any(|f| f.failed.is_some())
            || self.verdict.as_ref().is_some_and(|v| *v != Verdict::Linearizable)
            || self.set.as_ref().is_some_and(|s| !s.ok())
            || self.bank.as_ref().is_some_and(|b| !b.ok())
    }
}

#[derive(Clone, Debug)]
pub struct FaultAvailability {
    pub label: &'static str,
    pub rate: f64,
    pub served_after_start: Option<Duration>,
    pub served_after_heal: Option<Duration>,
}

/// The namespace network for a run, or why it runs on loopback.
pub fn network(stores: usize) -> Result<Arc<Network>, String> {
    Network::create(stores + 1).map(Arc::new)
}

/// Runs one history with `seed` and `workload`.
pub async fn run_history(
    args: &Args,
    seed: u64,
    workload: Workload,
    net: Option<Arc<Network>>,
    keep_dir: &Path,
) -> Report {
    // Every group has its own clients.
    let groups = args.groups.min(args.clients);
    let kinds = args.nemesis.clone();
    assert!(
        net.is_some() || !kinds.contains(&Kind::Partition),
        "partitions need the namespace network (the caller refuses to run without it)"
    );
    let c = match net {
        Some(net) => ProcCluster::start_in(net, args.stores, TEST_PD_CONFIG, CHAOS_STORE_CONFIG),
        None => ProcCluster::start_with(args.stores, TEST_PD_CONFIG, CHAOS_STORE_CONFIG),
    };
    // The stores' election timeout is 500 ms: give up on a silent leader
    // well before that.
    let cfg = Config {
        timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_millis(250),
        max_attempts: 10,
        max_backoff: Duration::from_millis(200),
        ..Config::new(vec![c.pd_addr.clone()])
    };
    let client = Arc::new(RawClient::connect(cfg.clone()).await.expect("connect to PD"));
    let txn = TxnClient::connect(cfg).await.expect("connect to PD");
    let ready = eventually(Duration::from_secs(60), || async {
        client.put(b"chaos-ready", b"1").await.is_ok()
    })
    .await;
    assert!(ready, "the cluster never became writable");
    // (region key, wire key) of a workload key: raw, or transactional.
    let placed = |k: &[u8]| -> (Vec<u8>, Vec<u8>) {
        if workload.transactional() {
            let wire = crate::proc::txn_wire_key(k);
            (atoll_codec::encode_bytes(&wire), wire)
        } else {
            (client.region_key(k), client.wire_key(k))
        }
    };
    for g in 1..groups {
        let (region_key, wire) = placed(&workload::group_start(g));
        split_at(client.pd(), &c.pd_addr, &region_key, &wire).await;
    }
    let pd = c.pd_addr.clone();
    let c = Arc::new(Mutex::new(c));
    let steps = schedule(seed, &kinds, args.stores, args.duration);
    let shared = Arc::new(Shared {
        client: client.clone(),
        start: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
        groups,
        keys_per_group: args.keys,
        history: Mutex::new(History::default()),
        set: Mutex::new(SetLog::default()),
        bank: Mutex::new(BankLog::new((groups * args.keys) as usize, bank::BANK_INITIAL)),
        done: Mutex::new(vec![]),
        journal: Mutex::new(vec![]),
        debug: std::env::var_os("ATOLL_CHAOS_DEBUG").is_some(),
        txn,
        mode: workload.txn_mode().unwrap_or(workload::TxnMode::Optimistic),
    });
    if matches!(workload, Workload::Bank(_) | Workload::TikvBank(_)) {
        bank::bank_setup(&shared).await;
    }
    let mut tasks = vec![];
    for id in 0..args.clients {
        let s = shared.clone();
        tasks.push(match workload {
            Workload::Register => tokio::spawn(workload::register_client(id, seed, s)),
            Workload::Set => tokio::spawn(workload::set_client(id, s)),
            Workload::TxnRegister(_) => tokio::spawn(workload::txn_register_client(id, seed, s)),
            Workload::Bank(_) => tokio::spawn(bank::bank_client(id, seed, s)),
            Workload::TikvBank(_) => tokio::spawn(tikv::bank_client(id, seed, s, pd.clone())),
        });
    }
    let churn_keys: Vec<(Vec<u8>, Vec<u8>)> = (0..groups)
        .flat_map(|g| (0..args.keys).map(move |j| workload::register_key(g, j)))
        .map(|k| placed(&k))
        .collect();
    let churn =
        tokio::spawn(faults::run_churn(client.clone(), pd, churn_keys, seed, shared.stop.clone()));
    let nemesis = tokio::spawn(faults::run_schedule(steps.clone(), c.clone(), shared.start, seed));
    tokio::time::sleep(args.duration).await;
    // The schedule ends healed before the run does.
    let applied = nemesis.await.expect("nemesis");
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (splits, moves) = churn.await.unwrap_or_default();
    let elapsed = shared.start.elapsed().as_nanos() as u64;
    let done = std::mem::take(&mut *shared.done.lock());

    let mut r = Report {
        seed,
        workload,
        ok: 0,
        failed: 0,
        unknown: 0,
        schedule: steps,
        availability: availability(&applied, &done, groups),
        healed_rate: healed_rate(&applied, &done, elapsed),
        faults: applied,
        splits,
        moves,
        verdict: None,
        set: None,
        bank: None,
        bank_figures: None,
        kept: None,
    };
    let history = shared.history.lock().clone();
    match workload {
        Workload::Register | Workload::TxnRegister(_) => {
            for e in &history.events {
                use atoll_chaos::Outcome;
                match e.outcome {
                    Outcome::Unknown => r.unknown += 1,
                    Outcome::Failed => r.failed += 1,
                    _ => r.ok += 1,
                }
            }
            r.verdict = Some(check_history(&history));
        }
        Workload::Set => {
            let log = std::mem::take(&mut *shared.set.lock());
            r.ok = log.acked.len() as u64;
            r.unknown = log.unknown.len() as u64;
            r.failed = log.failed;
            let read = final_read(&client, groups).await;
            r.set = Some(check_set(&log.acked, &log.unknown, &read));
        }
        Workload::Bank(_) | Workload::TikvBank(_) => {
            let log = std::mem::take(&mut *shared.bank.lock());
            r.ok = (log.acked.len() as u64) + log.reads;
            r.unknown = log.unknown.len() as u64;
            r.failed = log.aborted.len() as u64;
            r.bank_figures = Some(log.figures(elapsed as f64 / 1e9));
            let (balances, records) = bank_final_read(&shared.txn, groups, args.keys).await;
            r.bank = Some(check_bank(&log, &balances, &records));
        }
    }
    if r.anomalous() {
        let journal = shared.journal.lock().join("\n");
        r.kept = Some(keep_evidence(&c.lock(), &r, &history, &journal, keep_dir));
    }
    r
}

/// How long the final reads keep trying (everything is healed by then).
const FINAL_READ_WAIT: Duration = Duration::from_secs(60);

/// Every pair in the workloads' key range, page by page through `scan`
/// (start, end, limit); a page that fails is read again, for up to
/// [`FINAL_READ_WAIT`].
async fn read_all<F, Fut>(groups: u64, scan: F) -> Vec<(Vec<u8>, Vec<u8>)>
where
    F: Fn(Vec<u8>, Vec<u8>, u32) -> Fut,
    Fut: std::future::Future<Output = atoll_client::Result<Vec<(Vec<u8>, Vec<u8>)>>>,
{
    const PAGE: u32 = 5000;
    let end = workload::group_start(groups);
    let mut from = workload::group_start(0);
    let mut out = vec![];
    let deadline = Instant::now() + FINAL_READ_WAIT;
    loop {
        let kvs = match scan(from.clone(), end.clone(), PAGE).await {
            Ok(kvs) => kvs,
            Err(e) if Instant::now() > deadline => panic!("the final read never succeeded: {e}"),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let more = kvs.len() == PAGE as usize;
        if let Some((k, _)) = kvs.last().filter(|_| more) {
            from = k.clone();
            from.push(0);
        }
        out.extend(kvs);
        if !more {
            return out;
        }
    }
}

/// Every value the set workload's keys hold.
async fn final_read(client: &RawClient, groups: u64) -> BTreeSet<u64> {
    let kvs =
        read_all(groups, |from, end, limit| async move { client.scan(&from, &end, limit).await })
            .await;
    kvs.iter().filter_map(|(k, _)| workload::set_value(k)).collect()
}

/// The bank's final state in one snapshot: every account's balance and
/// the ids of the transfer records.
async fn bank_final_read(
    txn: &TxnClient,
    groups: u64,
    keys_per_group: u64,
) -> (Vec<Option<u64>>, BTreeSet<u64>) {
    let deadline = Instant::now() + FINAL_READ_WAIT;
    let ts = loop {
        match txn.current_ts().await {
            Ok(ts) => break ts,
            Err(e) if Instant::now() > deadline => panic!("no timestamp for the final read: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let kvs =
        read_all(
            groups,
            |from, end, limit| async move { txn.scan_at(&from, &end, limit, ts).await },
        )
        .await;
    let mut balances = vec![None; (groups * keys_per_group) as usize];
    let mut records = BTreeSet::new();
    for (k, v) in &kvs {
        match bank::bank_key(k, keys_per_group) {
            Some(bank::BankKey::Account(i)) if i < balances.len() => {
                balances[i] = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok())
            }
            Some(bank::BankKey::Record(id)) => {
                records.insert(id);
            }
            _ => {}
        }
    }
    (balances, records)
}

/// Copies the logs and configs next to the history and the schedule into
/// `dir/seed-N`; returns that path.
fn keep_evidence(c: &ProcCluster, r: &Report, h: &History, journal: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("seed-{}-{}", r.seed, r.workload.name()));
    let _ = std::fs::create_dir_all(&out);
    if let Ok(entries) = std::fs::read_dir(c.dir.path()) {
        for e in entries.flatten() {
            if e.path().is_file() {
                let _ = std::fs::copy(e.path(), out.join(e.file_name()));
            }
        }
    }
    let text: String = h.events.iter().map(|e| format!("{e:?}\n")).collect();
    let _ = std::fs::write(out.join("history.txt"), text);
    let _ = std::fs::write(out.join("journal.txt"), journal);
    let mut s: String = r.schedule.iter().map(|s| format!("{s:?}\n")).collect();
    s.push_str("-- as applied --\n");
    s.extend(r.faults.iter().map(|f| format!("{f:?}\n")));
    let _ = std::fs::write(out.join("schedule.txt"), s);
    if let Some(set) = &r.set {
        let _ = std::fs::write(out.join("set-report.txt"), format!("{set:?}\n"));
    }
    if let Some(bank) = &r.bank {
        let _ = std::fs::write(out.join("bank-report.txt"), format!("{bank:#?}\n"));
    }
    out
}

/// ok ops/s outside every fault.
fn healed_rate(faults: &[Applied], done: &[Done], elapsed: u64) -> f64 {
    let in_fault = |t: u64| faults.iter().any(|f| f.start <= t && t < f.healed);
    let faulted: u64 = faults.iter().map(|f| f.healed - f.start).sum();
    let healthy = elapsed.saturating_sub(faulted).max(1);
    let ok = done.iter().filter(|d| d.ok && !in_fault(d.completed)).count();
    ok as f64 / (healthy as f64 / 1e9)
}

/// Per fault: ok ops/s during it, and how long until every key group had a
/// successful operation after it started and after it healed.
fn availability(faults: &[Applied], done: &[Done], groups: u64) -> Vec<FaultAvailability> {
    let served_by = |from: u64, until: u64| -> Option<Duration> {
        let mut last = 0;
        for g in 0..groups {
            let first = done
                .iter()
                .filter(|d| d.ok && d.group == g && d.completed >= from && d.completed < until)
                .map(|d| d.completed)
                .min()?;
            last = last.max(first - from);
        }
        Some(Duration::from_nanos(last))
    };
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ok =
                done.iter().filter(|d| d.ok && f.start <= d.completed && d.completed < f.healed);
            let secs = (f.healed - f.start) as f64 / 1e9;
            let next = faults.get(i + 1).map_or(u64::MAX, |n| n.start);
            FaultAvailability {
                label: f.label,
                rate: ok.count() as f64 / secs.max(1e-9),
                served_after_start: served_by(f.start, f.healed),
                served_after_heal: served_by(f.healed, next),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(faults: Vec<Applied>) -> Report {
        Report {
            seed: 1,
            workload: Workload::Register,
            ok: 1,
            failed: 0,
            unknown: 0,
            schedule: vec![],
            faults,
            availability: vec![],
            healed_rate: 0.0,
            splits: 0,
            moves: 0,
            verdict: Some(Verdict::Linearizable),
            set: None,
            bank: None,
            bank_figures: None,
            kept: None,
        }
    }

    #[test]
    fn a_fault_that_did_not_apply_fails_the_history() {
        let applied = |failed: Option<&str>| Applied {
            label: "kill",
            what: "kill -9 store 0".into(),
            start: 0,
            healed: 1,
            failed: failed.map(str::to_owned),
        };
        assert!(!report(vec![applied(None)]).anomalous());
        assert!(report(vec![applied(None), applied(Some("store 0 is not running"))]).anomalous());
    }
}
