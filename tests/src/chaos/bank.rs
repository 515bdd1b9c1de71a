//! The bank workload's clients (`bank[-MODE]`): transfers between
//! accounts (3 per group) through Atoll's transactions, each writing a
//! record of itself, beside snapshot reads of every account; what they
//! learn goes into `atoll_chaos::bank`'s log, which checks it. The
//! tikv-client clients (`super::tikv`) record into the same log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use atoll_chaos::bank::Transfer;
use atoll_chaos::Outcome;
use atoll_client::{Error, Transaction};
use rand::{Rng, SeedableRng};

use super::workload::{release_on_error, write_failure, Done, Shared, FAILED_PAUSE};

/// Starting balance of every account.
pub const BANK_INITIAL: u64 = 100;

/// Account `j` of group `g`.
pub fn account_key(g: u64, j: u64) -> Vec<u8> {
    format!("c{g:02}/a{j:02}").into_bytes()
}

/// The record transfer `id` writes, in the group of its source account.
pub fn record_key(g: u64, id: u64) -> Vec<u8> {
    format!("c{g:02}/t{id:016x}").into_bytes()
}

/// Parses a key of the bank's key range: an account index or a record id.
pub enum BankKey {
    Account(usize),
    Record(u64),
}

pub fn bank_key(key: &[u8], keys_per_group: u64) -> Option<BankKey> {
    let s = std::str::from_utf8(key).ok()?;
    let g: u64 = s.get(1..3)?.parse().ok()?;
    let rest = s.get(3..)?;
    if let Some(j) = rest.strip_prefix("/a") {
        return Some(BankKey::Account((g * keys_per_group + j.parse::<u64>().ok()?) as usize));
    }
    Some(BankKey::Record(u64::from_str_radix(rest.strip_prefix("/t")?, 16).ok()?))
}

pub(super) fn account(s: &Shared, i: usize) -> Vec<u8> {
    let i = i as u64;
    account_key(i / s.keys_per_group, i % s.keys_per_group)
}

pub(super) fn balance(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Every account's balance in one snapshot (index order; `None` = missing).
async fn read_accounts(s: &Shared) -> Result<(u64, Vec<Option<u64>>), Error> {
    let n = (s.groups * s.keys_per_group) as usize;
    let t = s.txn.begin().await?;
    let keys: Vec<Vec<u8>> = (0..n).map(|i| account(s, i)).collect();
    let got = t.batch_get(&keys).await?;
    let mut out = vec![None; n];
    for (k, v) in got {
        if let Some(BankKey::Account(i)) = bank_key(&k, s.keys_per_group) {
            out[i] = balance(&v);
        }
    }
    Ok((t.start_ts(), out))
}

/// Runs `x` in `t`, writing its record under `record`: its commit ts, or
/// `None` if the source account had too little.
async fn transfer_in(
    s: &Shared,
    t: &mut Transaction,
    x: Transfer,
    record: Vec<u8>,
) -> Result<Option<u64>, Error> {
    let (from, to, amount) = (x.from, x.to, x.amount);
    let got = read_for_write(t, &[account(s, from), account(s, to)]).await?;
    let get = |i: usize| {
        let k = account(s, i);
        got.iter().find(|(key, _)| *key == k).and_then(|(_, v)| balance(v))
    };
    let (Some(a), Some(b)) = (get(from), get(to)) else {
        return Err(Error::Server(format!("accounts {from} / {to} missing")));
    };
    if a < amount {
        let _ = t.rollback().await;
        return Ok(None);
    }
    t.put(&account(s, from), (a - amount).to_string().as_bytes())?;
    t.put(&account(s, to), (b + amount).to_string().as_bytes())?;
    t.put(&record, format!("{from},{to},{amount}").as_bytes())?;
    t.commit().await
}

/// Reads `keys` for writing them: locked first and read at the latest
/// commit in a pessimistic transaction, else from its snapshot.
async fn read_for_write(
    t: &mut Transaction,
    keys: &[Vec<u8>],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
    if !t.options().pessimistic {
        return t.batch_get(keys).await;
    }
    t.lock_keys(keys).await?;
    let mut out = vec![];
    for k in keys {
        if let Some(v) = t.get_for_update(k).await? {
            out.push((k.clone(), v));
        }
    }
    Ok(out)
}

/// Creates the accounts (once: a retried setup finds them there).
pub async fn bank_setup(s: &Shared) {
    let n = (s.groups * s.keys_per_group) as usize;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "could not create the bank's accounts");
        let Ok((_, balances)) = read_accounts(s).await else { continue };
        if balances.iter().all(Option::is_some) {
            return;
        }
        assert!(balances.iter().all(Option::is_none), "half-created accounts: {balances:?}");
        let Ok(mut t) = s.txn.begin().await else { continue };
        for i in 0..n {
            t.put(&account(s, i), BANK_INITIAL.to_string().as_bytes()).expect("active");
        }
        let _ = t.commit().await;
    }
}

/// One bank client: transfers from an account of its group to any other
/// account, and (a quarter of the time) a snapshot read of every account.
pub async fn bank_client(id: u64, seed: u64, s: Arc<Shared>) {
    let mut rng = bank_rng(id, seed);
    let g = id % s.groups;
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        if rng.gen_bool(0.25) {
            let res = read_accounts(&s).await;
            s.record_read(id, g, res.ok()).await;
            continue;
        }
        seq += 1;
        let tid = (id << 40) | seq;
        let transfer = s.pick_transfer(&mut rng, g);
        let Transfer { from, to, amount } = transfer;
        let run = async {
            let mut t = match s.begin_write(&mut rng).await {
                Ok(t) => t,
                Err(e) => return (String::new(), Err(e)),
            };
            let what = format!("start {} {:?}", t.start_ts(), t.options());
            let res = transfer_in(&s, &mut t, transfer, record_key(g, tid)).await;
            release_on_error(&mut t, &res).await;
            (what, res)
        };
        let invoked = s.now();
        let (what, res) = run.await;
        let completed = s.now();
        s.journal.lock().push(format!(
            "{invoked} {completed} client {id} transfer {tid:x} {from}->{to} {amount}: {what}: {res:?}"
        ));
        let outcome = match res {
            Ok(committed) => Ok(committed.is_some()),
            Err(e) => Err(write_failure(&e)),
        };
        s.record_transfer(g, tid, transfer, outcome, invoked).await;
    }
}

/// Bank client `id`'s random choices.
pub(super) fn bank_rng(id: u64, seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ (id << 32) ^ 0x62616e6b)
}

impl Shared {
    /// A transfer from an account of group `g` to any other account.
    pub(super) fn pick_transfer(&self, rng: &mut impl Rng, g: u64) -> Transfer {
        let n = (self.groups * self.keys_per_group) as usize;
        let from = (g * self.keys_per_group + rng.gen_range(0..self.keys_per_group)) as usize;
        let to = (from + rng.gen_range(1..n)) % n;
        Transfer { from, to, amount: rng.gen_range(1..=5u64) }
    }

    /// Records a bank client's snapshot read of every account (`None`:
    /// it failed), pausing after a failure.
    pub(super) async fn record_read(
        &self,
        client: u64,
        g: u64,
        read: Option<(u64, Vec<Option<u64>>)>,
    ) {
        let completed = self.now();
        let ok = read.is_some();
        match read {
            Some((ts, balances)) => {
                let sum: u64 = balances.iter().flatten().sum();
                self.journal.lock().push(format!(
                    "{completed} client {client} read at {ts}: {balances:?} sum {sum}"
                ));
                if !self.bank.lock().read(ts, balances.clone()) && self.debug {
                    eprintln!("client {client}: bad snapshot at {ts}: {balances:?}");
                }
            }
            None => self.bank.lock().failed_reads += 1,
        }
        self.done.lock().push(Done { group: g, ok, completed });
        if !ok {
            tokio::time::sleep(FAILED_PAUSE).await;
        }
    }

    /// Records transfer `tid` begun at `invoked`: `Ok(committed)` (false:
    /// the source had too little), or how it failed (`Outcome::Unknown`
    /// when it may have committed); pauses after a failure.
    pub(super) async fn record_transfer(
        &self,
        g: u64,
        tid: u64,
        transfer: Transfer,
        outcome: Result<bool, Outcome>,
        invoked: u64,
    ) {
        let completed = self.now();
        {
            let mut log = self.bank.lock();
            match outcome {
                Ok(true) => {
                    log.acked.insert(tid, transfer);
                    log.commit_ns.push(completed - invoked);
                }
                Ok(false) => {}
                Err(Outcome::Unknown) => {
                    log.unknown.insert(tid, transfer);
                }
                Err(_) => {
                    log.aborted.insert(tid, transfer);
                }
            }
        }
        self.done.lock().push(Done { group: g, ok: outcome.is_ok(), completed });
        if outcome.is_err() {
            tokio::time::sleep(FAILED_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::workload::group_start;

    #[test]
    fn bank_keys_parse_back() {
        assert!(matches!(bank_key(&account_key(2, 1), 3), Some(BankKey::Account(7))));
        assert!(matches!(bank_key(&record_key(3, 0xabc), 3), Some(BankKey::Record(0xabc))));
        assert!(bank_key(b"c01/k02", 3).is_none());
        assert!(record_key(1, u64::MAX).starts_with(&group_start(1)));
    }
}
