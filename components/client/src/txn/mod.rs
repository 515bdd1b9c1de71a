//! Transactions over TiKV's Percolator protocol, as TiKV's own clients run
//! them: reads at the start timestamp (resolving the locks of finished or
//! abandoned transactions on the way), writes buffered until `commit`,
//! then one of three commits ([`TxnOptions`]):
//! - two-phase commit: prewrite every key (one request per region), commit
//!   the primary key (the commit point), then the secondaries;
//! - async commit: every lock carries the transaction's commit rule (the
//!   primary lists the secondaries; each store answers a `min_commit_ts`),
//!   so the transaction is committed once every prewrite succeeded, at the
//!   largest `min_commit_ts`; the commits that follow only clean up;
//! - 1PC: when one request carries every key, the store writes the commit
//!   records at once (no locks).
//!
//! Outcomes are exact: `Ok` means committed; [`Error::Aborted`] means
//! nothing was committed and never will be (the locks left behind are
//! rolled back by whoever meets them); only a commit point whose answer
//! never came, after retrying it as long as allowed, is
//! [`Error::Undetermined`]. An async-commit transaction whose prewrite
//! answers were lost settles its own fate the way a reader would
//! (CheckSecondaryLocks) before it answers Undetermined.
//!
//! While a transaction holds locks, a heartbeat keeps its primary's TTL
//! ahead of the clock (every [`LOCK_TTL_MS`]/3): readers roll back a transaction
//! only when its owner stopped beating. A reader rolls back a transaction
//! whose primary holds no lock only once the lock it met has expired, so
//! a secondary prewritten before its primary never kills a live
//! transaction; an expired async-commit lock is settled by asking every
//! key of its transaction (CheckSecondaryLocks). Pessimistic locks wait on
//! the store for other transactions' locks (its
//! `pessimistic-txn.wait-for-lock-timeout`); a lock whose wait would close
//! a cycle fails with [`Error::Deadlock`]. API V2 clusters only (the
//! keyspace's `x` keys).

mod commit;
mod heartbeat;
mod read;
mod resolve;
mod transaction;
mod write;

use std::sync::Arc;
use std::time::Duration;

use atoll_codec::api::ApiVersion;
use atoll_pd_client::PdClient;
use atoll_proto::kvrpcpb::{KeyError, LockInfo};

use crate::keys::KeyMap;
use crate::raw::{Config, Error, RawClient, Result, KEYSPACE};
pub use transaction::Transaction;

/// Lock TTL of prewrites and pessimistic locks (TiKV's default); the
/// heartbeat extends it while the transaction runs.
pub const LOCK_TTL_MS: u64 = 3000;
/// Between two heartbeats: a third of the TTL, so one lost beat leaves
/// the lock alive.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(LOCK_TTL_MS / 3);
/// No heartbeat extends a lock past this age (client-go's `MaxTxnTTL`
/// bounds a transaction the same way): a transaction forgotten by a live
/// process does not block its keys forever.
const MAX_TXN_TTL_MS: u64 = 60 * 60 * 1000;
/// Keys at most in an async-commit transaction (the primary's lock lists
/// every other; client-go's `async-commit.keys-limit`); larger ones commit
/// in two phases.
const ASYNC_COMMIT_KEYS: usize = 256;
/// Keys per prewrite or commit request (the rest go in further requests).
const KEYS_PER_REQUEST: usize = 256;
/// Sends of a primary commit whose answers were lost before the outcome
/// is reported undetermined.
const COMMIT_ATTEMPTS: usize = 10;

/// A transactional client; cheap to clone (one region cache and
/// connection pool behind it).
#[derive(Clone)]
pub struct TxnClient {
    inner: Arc<RawClient>,
}

/// How a transaction locks and commits (tikv-client's `TransactionOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnOptions {
    pub pessimistic: bool,
    /// Commit as soon as every prewrite succeeded (no commit round trip
    /// before the answer).
    pub async_commit: bool,
    /// Commit in the prewrite itself when one request carries every key;
    /// otherwise as the other options say.
    pub one_pc: bool,
}

impl TxnOptions {
    pub fn optimistic() -> Self {
        TxnOptions::default()
    }

    pub fn pessimistic() -> Self {
        TxnOptions { pessimistic: true, ..TxnOptions::default() }
    }

    pub fn use_async_commit(self) -> Self {
        TxnOptions { async_commit: true, ..self }
    }

    pub fn try_one_pc(self) -> Self {
        TxnOptions { one_pc: true, ..self }
    }
}

/// How a key error ends a command.
enum KeyOutcome {
    /// Another transaction's lock is in the way: resolve it and retry.
    Locked(Box<LockInfo>),
    /// The store could not tell whether it applied (raftstore's
    /// `undetermined: ...`).
    Undetermined(String),
    /// A rule said no (conflict, lock not found, ...): final.
    Refused(String),
}

fn classify(e: KeyError) -> KeyOutcome {
    if let Some(l) = e.locked {
        return KeyOutcome::Locked(Box::new(l));
    }
    if e.abort.starts_with("undetermined: ") {
        return KeyOutcome::Undetermined(e.abort);
    }
    KeyOutcome::Refused(describe(&e))
}

fn describe(e: &KeyError) -> String {
    if let Some(c) = &e.conflict {
        return format!(
            "write conflict on {:?}: start_ts {} met a commit at {} (txn {})",
            String::from_utf8_lossy(&c.key),
            c.start_ts,
            c.conflict_commit_ts,
            c.conflict_ts
        );
    }
    if let Some(a) = &e.already_exist {
        return format!("key {:?} already exists", String::from_utf8_lossy(&a.key));
    }
    if !e.retryable.is_empty() {
        return e.retryable.clone();
    }
    if !e.abort.is_empty() {
        return e.abort.clone();
    }
    format!("{e:?}")
}

impl TxnClient {
    pub async fn connect(cfg: Config) -> Result<TxnClient> {
        let (pd, api) = RawClient::connect_pd(&cfg).await?;
        if api != ApiVersion::V2 {
            return Err(Error::Invalid(format!(
                "transactions need an API V2 cluster (keyspace `x` keys); this one runs {api}"
            )));
        }
        let keys = KeyMap::v2_txn(pd.load_keyspace(KEYSPACE).await?.id);
        Ok(TxnClient { inner: Arc::new(RawClient::with_keys(pd, keys, cfg)) })
    }

    pub fn pd(&self) -> &PdClient {
        self.inner.pd()
    }

    /// A fresh timestamp from PD's TSO.
    pub async fn current_ts(&self) -> Result<u64> {
        Ok(self.inner.pd().get_ts().await?)
    }

    /// An optimistic two-phase-commit transaction: conflicts are found at
    /// commit.
    pub async fn begin(&self) -> Result<Transaction> {
        self.begin_with(TxnOptions::optimistic()).await
    }

    /// A pessimistic transaction: `lock_keys` / `get_for_update` lock keys
    /// when called; other writes are checked at commit as optimistic ones.
    pub async fn begin_pessimistic(&self) -> Result<Transaction> {
        self.begin_with(TxnOptions::pessimistic()).await
    }

    /// A transaction as `options` say.
    pub async fn begin_with(&self, options: TxnOptions) -> Result<Transaction> {
        Ok(Transaction::new(self.clone(), self.current_ts().await?, options))
    }

    /// The value of `key` as of timestamp `ts` (a read-only snapshot).
    pub async fn get_at(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        self.get_wire(&self.inner.keys.wire(key), ts).await
    }

    /// Pairs in `[start, end)` (empty end = unbounded) as of `ts`, at most `limit`.
    pub async fn scan_at(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        ts: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let k = &self.inner.keys;
        let pairs = self.scan_wire(k.wire(start), k.wire_end(end), limit, ts).await?;
        Ok(pairs.into_iter().map(|(w, v)| (k.user(w), v)).collect())
    }
}

/// The physical part (ms since the epoch) of a TSO timestamp.
fn physical_ms(ts: u64) -> u64 {
    ts >> 18
}

/// Has a lock of transaction `lock_ts` with `ttl_ms` run out at `now`?
fn expired(lock_ts: u64, ttl_ms: u64, now: u64) -> bool {
    physical_ms(lock_ts).saturating_add(ttl_ms) < physical_ms(now)
}
