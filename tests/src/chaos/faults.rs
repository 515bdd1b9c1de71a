//! Carries out the nemesis schedule on a running cluster, and the churn
//! beside it (splits and leader moves through PD's operator API).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_client::RawClient;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::nemesis::{Fault, Step, Target};
use crate::proc::{hex, http_get, try_http_post, ProcCluster};

/// A fault as it happened: what it hit, and when (ns since the run started).
#[derive(Clone, Debug)]
pub struct Applied {
    pub label: &'static str,
    pub what: String,
    pub start: u64,
    pub healed: u64,
    /// Why the fault, or its healing, did not apply: the history then
    /// checked less than it claims, and fails.
    pub failed: Option<String>,
}

/// The store index PD counts the most leaders on, if PD answers.
fn most_leaders(c: &Mutex<ProcCluster>) -> Option<usize> {
    // PD serves its HTTP API on the client port.
    let pd = c.lock().pd_addr.clone();
    let body = http_get(&pd, "/pd/api/v1/stores").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let best = v["stores"]
        .as_array()?
        .iter()
        .filter(|s| s["state_name"] == "Up")
        .max_by_key(|s| s["leader_count"].as_u64().unwrap_or(0))?;
    let addr = best["address"].as_str()?;
    c.lock().store_index_by_addr(addr)
}

fn resolve(t: Target, c: &Mutex<ProcCluster>, fallback: usize) -> usize {
    match t {
        Target::Store(i) => i,
        Target::MostLeaders => most_leaders(c).unwrap_or(fallback),
    }
}

/// Host of store `i` in the cluster's network (PD is host 0).
fn host(i: usize) -> usize {
    i + 1
}

/// Starts `fault`; returns what it hit, how to undo it, and why it did
/// not apply, if it did not.
fn start(fault: &Fault, c: &Mutex<ProcCluster>, fallback: usize) -> (String, Heal, Option<String>) {
    let stores = c.lock().store_count();
    let others = |x: &[usize]| -> Vec<usize> { (0..stores).filter(|s| !x.contains(s)).collect() };
    let cut = |a: Vec<usize>, b: Vec<usize>| {
        let c = c.lock();
        let net = c.network().expect("partitions need the namespace network");
        net.cut_between(&a, &b).err()
    };
    match fault {
        Fault::Kill(t) => {
            let i = resolve(*t, c, fallback);
            let failed = c.lock().kill_store(i).err();
            (format!("kill -9 store {i}"), Heal::Restart(i), failed)
        }
        Fault::Pause(t) => {
            let i = resolve(*t, c, fallback);
            let failed = c.lock().signal_store(i, true).err();
            (format!("pause store {i}"), Heal::Resume(i), failed)
        }
        Fault::KillPd => {
            let failed = c.lock().kill_pd().err();
            ("kill -9 PD".into(), Heal::RestartPd, failed)
        }
        Fault::Halves { minority } => {
            let rest = others(minority);
            let mut majority: Vec<usize> = rest.iter().map(|&s| host(s)).collect();
            majority.push(0);
            let failed = cut(minority.iter().map(|&s| host(s)).collect(), majority);
            (format!("partition stores {minority:?} | {rest:?} + PD"), Heal::Net, failed)
        }
        Fault::Isolate(t) => {
            let i = resolve(*t, c, fallback);
            let mut rest: Vec<usize> = others(&[i]).into_iter().map(host).collect();
            rest.push(0);
            let failed = cut(vec![host(i)], rest);
            (format!("isolate store {i} from stores and PD"), Heal::Net, failed)
        }
        Fault::Bridge { left, middle, right } => {
            let failed = cut(
                left.iter().map(|&s| host(s)).collect(),
                right.iter().map(|&s| host(s)).collect(),
            );
            (format!("bridge {left:?} <-> {middle} <-> {right:?}"), Heal::Net, failed)
        }
        Fault::OneWay { from, to } => {
            let failed = match c.lock().network() {
                Some(net) => net.cut(host(*from), host(*to)).err(),
                None => Some("partitions need the namespace network".into()),
            };
            (format!("drop store {from} -> store {to}"), Heal::Net, failed)
        }
    }
}

enum Heal {
    Restart(usize),
    Resume(usize),
    RestartPd,
    Net,
}

/// Undoes a fault; why not, if it could not.
fn heal(h: Heal, c: &Mutex<ProcCluster>) -> Option<String> {
    let mut c = c.lock();
    match h {
        Heal::Restart(i) => c.start_store(i),
        Heal::Resume(i) => return c.signal_store(i, false).err(),
        Heal::RestartPd => c.start_pd(),
        Heal::Net => return c.network().and_then(|net| net.heal().err()),
    }
    None
}

/// Runs `steps` (times from `t0`); every fault is healed before it returns.
pub async fn run_schedule(
    steps: Vec<Step>,
    c: Arc<Mutex<ProcCluster>>,
    t0: Instant,
    seed: u64,
) -> Vec<Applied> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stores = c.lock().store_count();
    let mut out = vec![];
    for step in steps {
        tokio::time::sleep_until((t0 + step.at).into()).await;
        let fallback = rng.gen_range(0..stores);
        let cc = c.clone();
        let fault = step.fault.clone();
        let (what, undo, failed) =
            tokio::task::spawn_blocking(move || start(&fault, &cc, fallback))
                .await
                .expect("nemesis start");
        let started = t0.elapsed().as_nanos() as u64;
        tokio::time::sleep(step.hold).await;
        let cc = c.clone();
        let heal_failed =
            tokio::task::spawn_blocking(move || heal(undo, &cc)).await.expect("nemesis heal");
        let healed = t0.elapsed().as_nanos() as u64;
        let failed = failed.or(heal_failed.map(|e| format!("heal: {e}")));
        if let Some(e) = &failed {
            eprintln!("nemesis: {what}: {e}");
        }
        out.push(Applied { label: step.fault.label(), what, start: started, healed, failed });
    }
    out
}

/// Splits and leader moves until `stop`, through PD's operator API: every
/// 1-2.5 s, split the region of a random key there (`keys`: region key and
/// wire key), or move a random
/// region's leader to another of its stores. Returns how many were asked.
pub async fn run_churn(
    client: Arc<RawClient>,
    pd_http: String,
    keys: Vec<(Vec<u8>, Vec<u8>)>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6368_7572_6e00);
    let (mut splits, mut moves) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2500))).await;
        let (region_key, wire_key) = &keys[rng.gen_range(0..keys.len())];
        let split = rng.gen_bool(0.5);
        let Ok(Ok(Some(r))) =
            tokio::time::timeout(Duration::from_secs(1), client.pd().get_region(region_key)).await
        else {
            continue;
        };
        let body = if split {
            if r.region.start_key == *region_key {
                continue;
            }
            format!(
                r#"{{"name":"split-region","region_id":{},"keys":["{}"]}}"#,
                r.region.id,
                hex(wire_key)
            )
        } else {
            let Some(leader) = &r.leader else { continue };
            let others: Vec<u64> = r
                .region
                .peers
                .iter()
                .filter(|p| p.store_id != leader.store_id)
                .map(|p| p.store_id)
                .collect();
            if others.is_empty() {
                continue;
            }
            let to = others[rng.gen_range(0..others.len())];
            format!(
                r#"{{"name":"transfer-leader","region_id":{},"to_store_id":{to}}}"#,
                r.region.id
            )
        };
        let pd = pd_http.clone();
        let sent = tokio::task::spawn_blocking(move || {
            try_http_post(&pd, "/pd/api/v1/operators", &body).is_ok_and(|b| b.contains("\"ok\""))
        })
        .await
        .unwrap_or(false);
        if sent {
            if split {
                splits += 1;
            } else {
                moves += 1;
            }
        }
    }
    (splits, moves)
}
