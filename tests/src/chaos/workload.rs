//! The clients of a chaos run. Keys live in `groups` key ranges (`c00/`,
//! `c01/`, ...), one region each at the start, so faults hit several
//! regions with different leaders.
//!
//! - register: get / put (unique values) / compare-and-swap on a few keys
//!   per group; every operation goes into the history.
//! - set: unique inserts, each its own key; the final full scan decides.
//! - txn-register: the register workload through transactions (a get is a
//!   snapshot read, a put a one-key transaction, a compare-and-swap a
//!   read-modify-write transaction); the same linearizability check.
//! - bank: transfers between accounts (3 per group) through transactions,
//!   each writing a record of itself, beside snapshot reads of every
//!   account; checked by `atoll_chaos::bank` (clients in `super::bank`).
//!
//! - tikv-bank: the bank through the unmodified tikv-client crate
//!   (`super::tikv`).
//!
//! The transactional workloads run in one [`TxnMode`] each (`bank-async`,
//! `txn-register-1pc`, ...): how their transactions lock and commit;
//! `-mixed` picks a mode per transaction, so every mode meets the others'
//! locks on the same keys.
//!
//! Client `i` works on group `i % groups` only: a client waiting on a
//! region whose leader is gone does not hold up the others, so the
//! throughput of groups led elsewhere shows in the figures.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use atoll_chaos::bank::BankLog;
use atoll_chaos::{Event, History, Op, Outcome};
use atoll_client::{Error, RawClient, Transaction, TxnClient, TxnOptions};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

/// How a transactional workload's transactions lock and commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnMode {
    /// Two-phase commit, conflicts found at commit.
    Optimistic,
    AsyncCommit,
    /// 1PC where one region holds every key, else two phases.
    OnePc,
    /// Keys read for writing are locked first (`get_for_update`,
    /// `lock_keys`), waiting for other holders.
    Pessimistic,
    /// A mode per transaction, at random.
    Mixed,
}

impl TxnMode {
    pub const ALL: [TxnMode; 5] = [
        TxnMode::Optimistic,
        TxnMode::AsyncCommit,
        TxnMode::OnePc,
        TxnMode::Pessimistic,
        TxnMode::Mixed,
    ];

    /// The commit mode of one writing transaction of a run in `self`:
    /// `self`, or for `Mixed` one at random, with async commit beside 1PC
    /// half the time (as TiDB runs them). The one draw order every client
    /// shares, so a seed replays the same modes whichever library runs it.
    pub fn pick(self, rng: &mut impl Rng) -> (TxnMode, bool) {
        if self != TxnMode::Mixed {
            return (self, false);
        }
        let mode = TxnMode::ALL[rng.gen_range(0..4)];
        let async_too = mode == TxnMode::OnePc && rng.gen_bool(0.5);
        (mode, async_too)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
    TxnRegister(TxnMode),
    Bank(TxnMode),
    /// The bank through the unmodified tikv-client crate (`super::tikv`).
    TikvBank(TxnMode),
}

impl Workload {
    pub const ALL: [Workload; 17] = [
        Workload::Register,
        Workload::Set,
        Workload::TxnRegister(TxnMode::Optimistic),
        Workload::TxnRegister(TxnMode::AsyncCommit),
        Workload::TxnRegister(TxnMode::OnePc),
        Workload::TxnRegister(TxnMode::Pessimistic),
        Workload::TxnRegister(TxnMode::Mixed),
        Workload::Bank(TxnMode::Optimistic),
        Workload::Bank(TxnMode::AsyncCommit),
        Workload::Bank(TxnMode::OnePc),
        Workload::Bank(TxnMode::Pessimistic),
        Workload::Bank(TxnMode::Mixed),
        Workload::TikvBank(TxnMode::Optimistic),
        Workload::TikvBank(TxnMode::AsyncCommit),
        Workload::TikvBank(TxnMode::OnePc),
        Workload::TikvBank(TxnMode::Pessimistic),
        Workload::TikvBank(TxnMode::Mixed),
    ];

    pub fn name(self) -> &'static str {
        use TxnMode::*;
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::TxnRegister(Optimistic) => "txn-register",
            Workload::TxnRegister(AsyncCommit) => "txn-register-async",
            Workload::TxnRegister(OnePc) => "txn-register-1pc",
            Workload::TxnRegister(Pessimistic) => "txn-register-pessimistic",
            Workload::TxnRegister(Mixed) => "txn-register-mixed",
            Workload::Bank(Optimistic) => "bank",
            Workload::Bank(AsyncCommit) => "bank-async",
            Workload::Bank(OnePc) => "bank-1pc",
            Workload::Bank(Pessimistic) => "bank-pessimistic",
            Workload::Bank(Mixed) => "bank-mixed",
            Workload::TikvBank(Optimistic) => "tikv-bank",
            Workload::TikvBank(AsyncCommit) => "tikv-bank-async",
            Workload::TikvBank(OnePc) => "tikv-bank-1pc",
            Workload::TikvBank(Pessimistic) => "tikv-bank-pessimistic",
            Workload::TikvBank(Mixed) => "tikv-bank-mixed",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Its transactions' mode; `None` for the raw workloads.
    pub fn txn_mode(self) -> Option<TxnMode> {
        match self {
            Workload::TxnRegister(m) | Workload::Bank(m) | Workload::TikvBank(m) => Some(m),
            Workload::Register | Workload::Set => None,
        }
    }

    /// Does it use the transactional key space (`x` keys)?
    pub fn transactional(self) -> bool {
        self.txn_mode().is_some()
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
    pub txn: TxnClient,
    /// How the transactional clients' transactions run.
    pub mode: TxnMode,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
    pub groups: u64,
    pub keys_per_group: u64,
    pub history: Mutex<History>,
    pub set: Mutex<SetLog>,
    pub bank: Mutex<BankLog>,
    pub done: Mutex<Vec<Done>>,
    /// One line per bank transfer (times, mode, start ts, outcome with
    /// the commit ts), kept with the evidence of an anomaly.
    pub journal: Mutex<Vec<String>>,
    /// `ATOLL_CHAOS_DEBUG` set: report failed reads and operations slower
    /// than 400 ms on stderr.
    pub debug: bool,
}

impl Shared {
    pub(super) fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Begins a transaction that writes, in a mode from `TxnMode::pick`.
    pub(super) async fn begin_write(&self, rng: &mut impl Rng) -> Result<Transaction, Error> {
        let options = match self.mode.pick(rng) {
            (TxnMode::AsyncCommit, _) => TxnOptions::optimistic().use_async_commit(),
            (TxnMode::OnePc, true) => TxnOptions::optimistic().use_async_commit().try_one_pc(),
            (TxnMode::OnePc, false) => TxnOptions::optimistic().try_one_pc(),
            (TxnMode::Pessimistic, _) => TxnOptions::pessimistic(),
            (TxnMode::Optimistic | TxnMode::Mixed, _) => TxnOptions::optimistic(),
        };
        self.txn.begin_with(options).await
    }

    /// Records a finished register operation of key group `group` in the
    /// history and the availability log; true if it succeeded.
    fn record(&self, group: u64, e: Event) -> bool {
        let ok = matches!(e.outcome, Outcome::Read(_) | Outcome::Written | Outcome::Swapped(_));
        self.done.lock().push(Done { group, ok, completed: e.completed });
        self.history.lock().push(e);
        ok
    }
}

/// A write's outcome from its error: an undetermined one may have been
/// applied; any other error is a definite failure (a region error for a
/// request never proposed, a store that could not be reached; for a
/// transaction, anything but an unanswered commit of its primary key).
pub(super) fn write_failure(e: &Error) -> Outcome {
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
        s.record(g, Event { client: id, key: key_id, op, outcome, invoked, completed });
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

/// Pause of a transactional client after a failed operation: PD down (no
/// timestamps) or a conflict fails fast, and a client would not spin.
pub(super) const FAILED_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// One transactional register client: the register workload's operations,
/// each one transaction.
pub async fn txn_register_client(id: u64, seed: u64, s: Arc<Shared>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id << 32));
    let mut next = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let (g, j) = (id % s.groups, rng.gen_range(0..s.keys_per_group));
        let key_id = g * s.keys_per_group + j;
        let k = register_key(g, j);
        next += 1;
        let value = (id << 32) | next;
        let invoked = s.now();
        let (op, outcome) = match rng.gen_range(0..3) {
            0 => {
                let read = async { s.txn.begin().await?.get(&k).await };
                // A failed read changed nothing: it constrains nothing.
                (Op::Get, read.await.map_or(Outcome::Unknown, |v| Outcome::Read(parse(v))))
            }
            1 => {
                let write = async {
                    let mut t = s.begin_write(&mut rng).await?;
                    let res = async {
                        if t.options().pessimistic {
                            t.lock_keys(std::slice::from_ref(&k)).await?;
                        }
                        t.put(&k, value.to_string().as_bytes())?;
                        t.commit().await
                    }
                    .await;
                    release_on_error(&mut t, &res).await;
                    res
                };
                let outcome = match write.await {
                    Ok(_) => Outcome::Written,
                    Err(e) => write_failure(&e),
                };
                (Op::Put(value), outcome)
            }
            _ => {
                // Read-modify-write: swap if the snapshot holds the value
                // last seen (or, sometimes, an absent one).
                let expected = match s.txn.begin().await {
                    Ok(t) => match t.get(&k).await {
                        Ok(cur) if rng.gen_bool(0.8) => parse(cur),
                        _ => None,
                    },
                    Err(_) => None,
                };
                let cas = async {
                    let mut t = s.begin_write(&mut rng).await?;
                    let res = async {
                        let current = match t.options().pessimistic {
                            true => t.get_for_update(&k).await?,
                            false => t.get(&k).await?,
                        };
                        if parse(current) != expected {
                            // Never committed either way: no swap.
                            let _ = t.rollback().await;
                            return Ok(false);
                        }
                        t.put(&k, value.to_string().as_bytes())?;
                        t.commit().await.map(|_| true)
                    }
                    .await;
                    release_on_error(&mut t, &res).await;
                    res
                };
                let outcome = match cas.await {
                    Ok(swapped) => Outcome::Swapped(swapped),
                    Err(e) => write_failure(&e),
                };
                (Op::Cas { expected, new: value }, outcome)
            }
        };
        let completed = s.now();
        let event = Event { client: id, key: key_id, op, outcome, invoked, completed };
        if !s.record(g, event) {
            tokio::time::sleep(FAILED_PAUSE).await;
        }
    }
}

/// A transaction that failed before its commit would keep its pessimistic
/// locks until their TTL ran out, holding up every client that needs the
/// keys: roll it back, as an application does (a no-op once `commit`
/// ran: only an active transaction rolls back).
pub(super) async fn release_on_error<T>(t: &mut Transaction, res: &Result<T, Error>) {
    if res.is_err() {
        let _ = t.rollback().await;
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

    #[test]
    fn mixed_picks_every_mode_and_the_others_draw_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for mode in &TxnMode::ALL[..4] {
            let before = rng.clone().gen::<u64>();
            assert_eq!(mode.pick(&mut rng), (*mode, false));
            assert_eq!(rng.gen::<u64>(), before, "{mode:?} drew from the rng");
        }
        let mut seen = BTreeSet::new();
        for _ in 0..400 {
            let (mode, async_too) = TxnMode::Mixed.pick(&mut rng);
            assert_ne!(mode, TxnMode::Mixed);
            assert!(!async_too || mode == TxnMode::OnePc, "async beside {mode:?}");
            seen.insert(format!("{mode:?} {async_too}"));
        }
        let want = [
            "AsyncCommit false",
            "OnePc false",
            "OnePc true",
            "Optimistic false",
            "Pessimistic false",
        ];
        assert_eq!(seen, want.iter().map(|s| s.to_string()).collect());
    }
}
