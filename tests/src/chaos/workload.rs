//! The clients of a chaos run. Keys live in `groups` key ranges (`c00/`,
//! `c01/`, ...), one region each at the start, so faults hit several
//! regions with different leaders.
//!
//! - register: get / put (unique values) / compare-and-swap on a few keys
//!   per group; every operation goes into the history.
//! - set: unique inserts, each its own key; the final full scan decides.
//!
//! Client `i` works on group `i % groups` only: a client waiting on a
//! region whose leader is gone does not hold up the others, so the
//! throughput of groups led elsewhere shows in the figures.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use atoll_chaos::{Event, History, Op, Outcome};
use atoll_client::{Error, RawClient};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        [Workload::Register, Workload::Set].into_iter().find(|w| w.name() == s)
    }
}

/// The first key of group `g`: where the harness splits.
pub fn group_start(g: u64) -> Vec<u8> {
    format!("c{g:02}/").into_bytes()
}

/// Register `j` of group `g`.
pub fn register_key(g: u64, j: u64) -> Vec<u8> {
    format!("c{g:02}/k{j:02}").into_bytes()
}

/// The key the set workload inserts `value` under, in group `g`.
pub fn set_key(g: u64, value: u64) -> Vec<u8> {
    format!("c{g:02}/s{value:016x}").into_bytes()
}

/// Parses a set key back into its value.
pub fn set_value(key: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(key).ok()?;
    let hex = s.split_once("/s")?.1;
    u64::from_str_radix(hex, 16).ok()
}

/// One finished operation, for availability figures: which key group,
/// whether it succeeded, when it finished (ns since the run started).
#[derive(Clone, Copy, Debug)]
pub struct Done {
    pub group: u64,
    pub ok: bool,
    pub completed: u64,
}

/// What the set clients learnt.
#[derive(Default)]
pub struct SetLog {
    pub acked: BTreeSet<u64>,
    pub unknown: BTreeSet<u64>,
    pub failed: u64,
}

pub struct Shared {
    pub client: Arc<RawClient>,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
    pub groups: u64,
    pub keys_per_group: u64,
    pub history: Mutex<History>,
    pub set: Mutex<SetLog>,
    pub done: Mutex<Vec<Done>>,
    /// `ATOLL_CHAOS_DEBUG` set: report failed reads and operations slower
    /// than 400 ms on stderr.
    pub debug: bool,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// A write's outcome from its error: an undetermined one may have been
/// applied; any other error is a definite failure (a region error for a
/// request never proposed, a store that could not be reached).
fn write_failure(e: &Error) -> Outcome {
    match e {
        Error::Undetermined(_) => Outcome::Unknown,
        _ => Outcome::Failed,
    }
}

fn parse(v: Option<Vec<u8>>) -> Option<u64> {
    v.and_then(|v| String::from_utf8(v).ok()?.parse().ok())
}

/// One register client: random operations on random keys until stopped.
pub async fn register_client(id: u64, seed: u64, s: Arc<Shared>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id << 32));
    let mut next = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let (g, j) = (id % s.groups, rng.gen_range(0..s.keys_per_group));
        let key_id = g * s.keys_per_group + j;
        let k = register_key(g, j);
        next += 1;
        let value = (id << 32) | next;
        let op = match rng.gen_range(0..3) {
            0 => Op::Get,
            1 => Op::Put(value),
            _ => {
                // Most interesting when it can succeed: expect the last read.
                let expected = match s.client.get(&k).await {
                    Ok(cur) => parse(cur),
                    Err(_) if rng.gen_bool(0.2) => None,
                    Err(_) => Some(rng.gen_range(0..value)),
                };
                Op::Cas { expected, new: value }
            }
        };
        let invoked = s.now();
        let outcome = match op {
            Op::Get => match s.client.get(&k).await {
                Ok(v) => Outcome::Read(parse(v)),
                // A failed read changed nothing: it constrains nothing.
                Err(e) => {
                    if s.debug {
                        eprintln!("{:.3} client {id} get {k:?}: {e}", s.now() as f64 / 1e9);
                    }
                    Outcome::Unknown
                }
            },
            Op::Put(v) => match s.client.put(&k, v.to_string().as_bytes()).await {
                Ok(()) => Outcome::Written,
                Err(e) => write_failure(&e),
            },
            Op::Cas { expected, new } => {
                let exp = expected.map(|e| e.to_string().into_bytes());
                let new = new.to_string().into_bytes();
                match s.client.compare_and_swap(&k, exp.as_deref(), &new).await {
                    Ok((swapped, _)) => Outcome::Swapped(swapped),
                    Err(e) => write_failure(&e),
                }
            }
        };
        let completed = s.now();
        if s.debug && completed - invoked > 400_000_000 {
            eprintln!(
                "{:.3} client {id} {op:?} on {:?} took {} ms: {outcome:?}",
                completed as f64 / 1e9,
                String::from_utf8_lossy(&k),
                (completed - invoked) / 1_000_000
            );
        }
        let ok = matches!(outcome, Outcome::Read(_) | Outcome::Written | Outcome::Swapped(_));
        s.done.lock().push(Done { group: g, ok, completed });
        s.history.lock().push(Event { client: id, key: key_id, op, outcome, invoked, completed });
    }
}

/// One set client: inserts unique values until stopped.
pub async fn set_client(id: u64, s: Arc<Shared>) {
    let mut next = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        next += 1;
        let value = (id << 40) | next;
        let g = id % s.groups;
        let res = s.client.put(&set_key(g, value), b"1").await;
        let completed = s.now();
        let mut log = s.set.lock();
        match &res {
            Ok(()) => {
                log.acked.insert(value);
            }
            Err(e) if write_failure(e) == Outcome::Unknown => {
                log.unknown.insert(value);
            }
            Err(_) => log.failed += 1,
        }
        drop(log);
        s.done.lock().push(Done { group: g, ok: res.is_ok(), completed });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keys_round_trip_and_stay_in_their_group() {
        for v in [0, 1, 7, u64::MAX >> 1, (3 << 40) | 17] {
            let k = set_key(v % 8, v);
            assert_eq!(set_value(&k), Some(v));
            assert!(k.starts_with(&group_start(v % 8)));
        }
        assert!(register_key(3, 4).starts_with(&group_start(3)));
        assert!(group_start(9) < group_start(10), "groups sort in order");
        assert_eq!(set_value(b"c01/k02"), None);
    }
}
