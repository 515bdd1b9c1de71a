//! `atoll-chaos`: a real cluster (PD + stores as processes on loopback),
//! concurrent register clients, faults on a seeded schedule, and the
//! linearizability checker on the recorded history.
//!
//! First version: loopback only, nemeses `kill` (SIGKILL + restart) and
//! `pause` (SIGSTOP/SIGCONT past the election timeout), workload
//! `register` (get / put / compare-and-swap on a few keys). Network
//! partitions in namespaces, PD faults and the set workload are to come.
//!
//! Usage: `atoll-chaos [--seed N] [--histories N] [--duration SECS]
//! [--clients N] [--keys N] [--nemesis kill,pause]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_chaos::{check_history, Event, History, Op, Outcome, Verdict};
use atoll_client::{Config, Error, RawClient};
use atoll_tests::proc::{eventually, ProcCluster, TEST_PD_CONFIG, TEST_STORE_CONFIG};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

struct Args {
    seed: u64,
    histories: u32,
    duration: Duration,
    clients: u64,
    keys: u64,
    kill: bool,
    pause: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seed: 1,
        histories: 1,
        duration: Duration::from_secs(20),
        clients: 8,
        keys: 5,
        kill: true,
        pause: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--seed" => a.seed = num(value()?)?,
            "--histories" => a.histories = num(value()?)? as u32,
            "--duration" => a.duration = Duration::from_secs(num(value()?)?),
            "--clients" => a.clients = num(value()?)?.max(1),
            "--keys" => a.keys = num(value()?)?.max(1),
            "--nemesis" => {
                let v = value()?;
                let kinds: Vec<&str> = v.split(',').collect();
                if let Some(bad) = kinds.iter().find(|k| !["kill", "pause", "all"].contains(k)) {
                    return Err(format!("unknown nemesis {bad:?} (kill, pause, all)"));
                }
                let all = kinds.contains(&"all");
                a.kill = all || kinds.contains(&"kill");
                a.pause = all || kinds.contains(&"pause");
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// What one history produced.
#[derive(Default)]
struct Summary {
    ok: u64,
    failed: u64,
    unknown: u64,
    faults: Vec<String>,
    verdict: Option<Verdict>,
}

fn outcome_of_write<T>(res: &Result<T, Error>) -> Option<Outcome> {
    match res {
        Ok(_) => None,
        Err(Error::Undetermined(_)) => Some(Outcome::Unknown),
        // Region errors and connections never made: not applied.
        Err(_) => Some(Outcome::Failed),
    }
}

fn parse(v: Option<Vec<u8>>) -> Option<u64> {
    v.and_then(|v| String::from_utf8(v).ok()?.parse().ok())
}

/// One client: random operations on random keys until `stop`.
async fn run_client(
    id: u64,
    client: Arc<RawClient>,
    keys: u64,
    seed: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id << 32));
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.gen_range(0..keys);
        let k = format!("chaos-{key}").into_bytes();
        next += 1;
        let value = (id << 32) | next;
        let op = match rng.gen_range(0..3) {
            0 => Op::Get,
            1 => Op::Put(value),
            _ => Op::Cas {
                expected: if rng.gen_bool(0.2) { None } else { Some(rng.gen_range(0..value)) },
                new: value,
            },
        };
        // CAS is most interesting when it can succeed: expect the last read.
        let op = match op {
            Op::Cas { .. } => match client.get(&k).await {
                Ok(cur) => Op::Cas { expected: parse(cur), new: value },
                Err(_) => op,
            },
            op => op,
        };
        let invoked = start.elapsed().as_nanos() as u64;
        let outcome = match op {
            Op::Get => match client.get(&k).await {
                Ok(v) => Outcome::Read(parse(v)),
                Err(_) => Outcome::Unknown,
            },
            Op::Put(v) => {
                let r = client.put(&k, v.to_string().as_bytes()).await;
                outcome_of_write(&r).unwrap_or(Outcome::Written)
            }
            Op::Cas { expected, new } => {
                let exp = expected.map(|e| e.to_string().into_bytes());
                let r =
                    client.compare_and_swap(&k, exp.as_deref(), new.to_string().as_bytes()).await;
                match (&r, outcome_of_write(&r)) {
                    (Ok((swapped, _)), _) => Outcome::Swapped(*swapped),
                    (_, o) => o.unwrap_or(Outcome::Unknown),
                }
            }
        };
        let completed = start.elapsed().as_nanos() as u64;
        history.lock().push(Event { client: id, key, op, outcome, invoked, completed });
    }
}

/// Faults until `stop`: every few seconds, kill or pause a random store,
/// hold it a while, then heal.
async fn run_nemesis(
    c: Arc<Mutex<ProcCluster>>,
    args: (bool, bool),
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let (kill, pause) = args;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut log = vec![];
    let stores = c.lock().store_count();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
        if stop.load(Ordering::Relaxed) || !(kill || pause) {
            continue;
        }
        let victim = rng.gen_range(0..stores);
        let hold = Duration::from_millis(rng.gen_range(1000..4000));
        let do_kill = kill && (!pause || rng.gen_bool(0.5));
        if do_kill {
            c.lock().kill_store(victim);
            log.push(format!("kill store {victim} for {}ms", hold.as_millis()));
            tokio::time::sleep(hold).await;
            c.lock().start_store(victim);
        } else {
            c.lock().signal_store(victim, true);
            log.push(format!("pause store {victim} for {}ms", hold.as_millis()));
            tokio::time::sleep(hold).await;
            c.lock().signal_store(victim, false);
        }
    }
    log
}

async fn run_history(args: &Args, seed: u64) -> Summary {
    let c = ProcCluster::start_with(3, TEST_PD_CONFIG, TEST_STORE_CONFIG);
    let cfg = Config {
        timeout: Duration::from_secs(2),
        max_attempts: 10,
        max_backoff: Duration::from_millis(200),
        ..Config::new(vec![c.pd_addr.clone()])
    };
    let client = Arc::new(RawClient::connect(cfg).await.expect("connect to PD"));
    let ready = eventually(Duration::from_secs(60), || async {
        client.put(b"chaos-ready", b"1").await.is_ok()
    })
    .await;
    assert!(ready, "the cluster never became writable");
    let c = Arc::new(Mutex::new(c));
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(History::default()));
    let mut tasks = vec![];
    for id in 0..args.clients {
        let (client, stop, history) = (client.clone(), stop.clone(), history.clone());
        tasks.push(tokio::spawn(run_client(id, client, args.keys, seed, start, stop, history)));
    }
    let nemesis = tokio::spawn(run_nemesis(c.clone(), (args.kill, args.pause), seed, stop.clone()));
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let faults = nemesis.await.unwrap_or_default();
    let h = history.lock().clone();
    let mut s = Summary { faults, ..Summary::default() };
    for e in &h.events {
        match e.outcome {
            Outcome::Unknown => s.unknown += 1,
            Outcome::Failed => s.failed += 1,
            _ => s.ok += 1,
        }
    }
    let verdict = check_history(&h);
    if verdict != Verdict::Linearizable {
        let dir = c.lock().dir.path().to_path_buf();
        let path = dir.join("history.txt");
        let text: String = h.events.iter().map(|e| format!("{e:?}\n")).collect();
        let _ = std::fs::write(&path, text);
        eprintln!("history written to {}", path.display());
        // Keep the logs: the cluster's drop keeps its directory when asked.
        std::env::set_var("ATOLL_KEEP_TEST_DIR", "1");
    }
    s.verdict = Some(verdict);
    s
}

static OPS_TOTAL: AtomicU64 = AtomicU64::new(0);

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("atoll-chaos: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "atoll-chaos: seed {} histories {} duration {}s clients {} keys {} nemesis{}{}",
        args.seed,
        args.histories,
        args.duration.as_secs(),
        args.clients,
        args.keys,
        if args.kill { " kill" } else { "" },
        if args.pause { " pause" } else { "" },
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>7}  verdict",
        "history", "ok", "failed", "unknown", "faults"
    );
    let mut bad = 0;
    for i in 0..args.histories {
        let seed = args.seed.wrapping_add(u64::from(i));
        let s = run_history(&args, seed).await;
        OPS_TOTAL.fetch_add(s.ok + s.failed + s.unknown, Ordering::Relaxed);
        let verdict = match &s.verdict {
            Some(Verdict::Linearizable) => "linearizable".to_string(),
            Some(v) => {
                bad += 1;
                format!("{v:?}")
            }
            None => "-".into(),
        };
        println!(
            "{:>8} {:>8} {:>8} {:>8} {:>7}  {verdict}",
            seed,
            s.ok,
            s.failed,
            s.unknown,
            s.faults.len()
        );
        for f in &s.faults {
            println!("           {f}");
        }
    }
    println!(
        "{} histories, {} operations, {bad} not linearizable",
        args.histories,
        OPS_TOTAL.load(Ordering::Relaxed)
    );
    std::process::exit(if bad == 0 { 0 } else { 1 });
}
