//! The bank workload through the unmodified `tikv-client` 0.4 crate
//! (`tikv-bank[-MODE]`): the server tested with the client applications
//! use, in each of its commit modes (`TransactionOptions::new_optimistic()`,
//! `.use_async_commit()`, `.try_one_pc()`, `new_pessimistic()` with
//! `get_for_update`; `-mixed` picks one per transaction). The accounts are
//! created and the final state read through Atoll's client, and the same
//! check (`atoll_chaos::bank`) decides.
//!
//! tikv-client's errors do not tell a certain abort from a lost answer: a
//! failed transfer is recorded as one that may have committed, and its
//! record decides. tikv-client 0.4 can also hang for good on a region
//! whose PD lookup failed (see the README's known upstream bugs), so every
//! operation has a deadline ([`OP_DEADLINE`]), after which the client is
//! replaced by a fresh one and the transfer counts as undetermined.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_chaos::bank::Transfer;
use atoll_chaos::Outcome;
use rand::Rng;
use tikv_client::{CheckLevel, Config, TimestampExt, TransactionClient, TransactionOptions};

use super::bank::{account, balance, bank_rng, record_key};
use super::workload::{Shared, TxnMode};

/// Longest a tikv-client operation may take before its client is replaced.
pub const OP_DEADLINE: Duration = Duration::from_secs(8);

/// tikv-client's options for one transaction of `mode` (not `Mixed`).
pub fn options(mode: TxnMode) -> TransactionOptions {
    let o = match mode {
        TxnMode::AsyncCommit => TransactionOptions::new_optimistic().use_async_commit(),
        TxnMode::OnePc => TransactionOptions::new_optimistic().try_one_pc(),
        TxnMode::Pessimistic => TransactionOptions::new_pessimistic(),
        TxnMode::Optimistic | TxnMode::Mixed => TransactionOptions::new_optimistic(),
    };
    // A transaction dropped at its deadline must not panic the client.
    o.drop_check(CheckLevel::Warn)
}

/// A client of PD `pd` (API V2, default keyspace), retried for up to 60 s.
pub async fn connect(pd: &str) -> TransactionClient {
    let cfg = Config::default().with_default_keyspace().with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TransactionClient::new_with_config(vec![pd.to_owned()], cfg.clone()).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "no tikv-client: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn amount_of(v: Option<Vec<u8>>, key: &[u8]) -> tikv_client::Result<u64> {
    v.as_deref().and_then(balance).ok_or_else(|| {
        tikv_client::Error::StringError(format!(
            "account {:?} missing",
            String::from_utf8_lossy(key)
        ))
    })
}

/// Moves `amount` from account key `from` to `to` in one transaction with
/// `options`, writing `record` (key, value): `Ok(false)` if the source had
/// too little. Pessimistic transactions lock both accounts as they read
/// them. Rolled back on an error.
pub async fn transfer(
    client: &TransactionClient,
    options: TransactionOptions,
    (from, to): (Vec<u8>, Vec<u8>),
    amount: u64,
    record: (Vec<u8>, String),
) -> tikv_client::Result<bool> {
    let pessimistic = options.is_pessimistic();
    let mut t = client.begin_with_options(options).await?;
    let res = async {
        let (a, b) = if pessimistic {
            (t.get_for_update(from.clone()).await?, t.get_for_update(to.clone()).await?)
        } else {
            (t.get(from.clone()).await?, t.get(to.clone()).await?)
        };
        let (a, b) = (amount_of(a, &from)?, amount_of(b, &to)?);
        if a < amount {
            t.rollback().await?;
            return Ok(false);
        }
        t.put(from, (a - amount).to_string()).await?;
        t.put(to, (b + amount).to_string()).await?;
        t.put(record.0, record.1).await?;
        t.commit().await?;
        Ok(true)
    }
    .await;
    if res.is_err() {
        let _ = t.rollback().await;
    }
    res
}

/// The balances of `keys` (in order; `None`: missing or not a number) in
/// one snapshot at a fresh timestamp, and that timestamp.
pub async fn snapshot_balances(
    client: &TransactionClient,
    keys: &[Vec<u8>],
) -> tikv_client::Result<(u64, Vec<Option<u64>>)> {
    let ts = client.current_timestamp().await?;
    let version = ts.version();
    let mut snap = client.snapshot(ts, TransactionOptions::new_optimistic());
    let pairs: Vec<_> = snap.batch_get(keys.to_vec()).await?.collect();
    let mut out = vec![None; keys.len()];
    for p in pairs {
        let k = Vec::from(p.0);
        if let Some(i) = keys.iter().position(|key| *key == k) {
            out[i] = balance(&p.1);
        }
    }
    Ok((version, out))
}

/// One bank client over tikv-client: the `bank` workload's transfers and
/// snapshot reads (a quarter of its operations), recorded the same way.
pub async fn bank_client(id: u64, seed: u64, s: Arc<Shared>, pd: String) {
    let mut rng = bank_rng(id, seed);
    let g = id % s.groups;
    let n = (s.groups * s.keys_per_group) as usize;
    let accounts: Vec<Vec<u8>> = (0..n).map(|i| account(&s, i)).collect();
    let mut client = connect(&pd).await;
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        if rng.gen_bool(0.25) {
            let read = tokio::time::timeout(OP_DEADLINE, snapshot_balances(&client, &accounts));
            let read = match read.await {
                Ok(r) => r.ok(),
                Err(_) => {
                    client = connect(&pd).await;
                    None
                }
            };
            s.record_read(id, g, read).await;
            continue;
        }
        seq += 1;
        let tid = (id << 40) | seq;
        let x = s.pick_transfer(&mut rng, g);
        let (mode, async_too) = s.mode.pick(&mut rng);
        let opts = if async_too { options(mode).use_async_commit() } else { options(mode) };
        let record = (record_key(g, tid), format!("{},{},{}", x.from, x.to, x.amount));
        let keys = (accounts[x.from].clone(), accounts[x.to].clone());
        let invoked = s.now();
        let run =
            tokio::time::timeout(OP_DEADLINE, transfer(&client, opts, keys, x.amount, record));
        let (outcome, what) = match run.await {
            Ok(Ok(committed)) => (Ok(committed), format!("{committed}")),
            Ok(Err(e)) => (Err(Outcome::Unknown), format!("{e}")),
            Err(_) => {
                client = connect(&pd).await;
                (Err(Outcome::Unknown), "past its deadline".into())
            }
        };
        if s.debug && outcome.is_err() {
            eprintln!(
                "{:.3} client {id} tikv-client {mode:?} transfer: {what}",
                s.now() as f64 / 1e9
            );
        }
        let Transfer { from, to, amount } = x;
        s.journal.lock().push(format!(
            "{invoked} {} client {id} transfer {tid:x} {from}->{to} {amount}: tikv-client {mode:?}: {what}",
            s.now()
        ));
        s.record_transfer(g, tid, x, outcome, invoked).await;
    }
}
